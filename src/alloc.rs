//! Fallible allocation for the allocating convenience functions.

use crate::error::{Error, Result};

/// Largest buffer, in bytes, that the allocating API creates: 16 GiB. The allocation-free
/// `*_into` forms have no such limit (the caller owns the memory).
pub const MAX_ALLOC_BYTES: usize = 1 << 34;

/// A zero-filled `Vec` of `n` elements, or an error if it would exceed [`MAX_ALLOC_BYTES`]
/// or the allocator refuses.
pub(crate) fn zeroed_vec<T: Copy + Default>(op: &'static str, n: usize) -> Result<Vec<T>> {
    let bytes = n
        .checked_mul(std::mem::size_of::<T>())
        .ok_or_else(|| Error::too_large(op, format!("{n} elements overflow the byte count")))?;
    if bytes > MAX_ALLOC_BYTES {
        return Err(Error::too_large(
            op,
            format!("{n} elements ({bytes} bytes) exceed the allocation limit of {MAX_ALLOC_BYTES} bytes"),
        ));
    }
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| Error::AllocationFailed { op, elements: n })?;
    v.resize(n, T::default());
    Ok(v)
}
