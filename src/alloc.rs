//! Fallible allocation for the allocating convenience functions.

use std::alloc::{alloc_zeroed, Layout};
use std::mem::{ManuallyDrop, MaybeUninit};

use crate::error::{Error, Result};

/// Largest buffer, in bytes, that the allocating API creates: 16 GiB. The allocation-free
/// `*_into` forms have no such limit (the caller owns the memory).
pub const MAX_ALLOC_BYTES: usize = 1 << 34;

/// (Crate-internal: public only so that the sealed `Float` trait can require it.)
/// Element types whose all-zero bit pattern is the value zero (`T::default()`), so a
/// zeroed allocation is an initialised buffer of them.
pub trait ZeroBits: Copy + Default + sealed::Sealed {}

mod sealed {
    pub trait Sealed {}
}

macro_rules! zero_bits {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl ZeroBits for $t {}
    )*};
}
zero_bits!(f32, f64, u8, u16, u32, usize);

/// An output slot that a kernel writes before anything reads it.
///
/// The fast kernels write their element-wise outputs through `&mut [Out<T>]`, which the
/// type system keeps write-only: a kernel cannot read an output it has not written. The
/// `*_into` functions pass the caller's initialised buffer ([`as_uninit_mut`]); the
/// allocating functions pass fresh memory ([`uninit_vec`]) and skip the zero-fill pass that
/// they would otherwise pay for a buffer about to be overwritten.
pub(crate) type Out<T> = MaybeUninit<T>;

/// The elements of an initialised slice as write-only output slots.
///
/// # Safety
/// The caller must store only initialised values through the result (never
/// `MaybeUninit::uninit()`), so that `s` is still fully initialised when the borrow ends.
pub(crate) unsafe fn as_uninit_mut<T: Copy>(s: &mut [T]) -> &mut [Out<T>] {
    let len = s.len();
    // SAFETY: `MaybeUninit<T>` has the size, alignment and ABI of `T`, so the pointer and
    // length describe the same memory, borrowed mutably for the same lifetime. Every `T` is
    // a valid `MaybeUninit<T>`; the caller's promise keeps the converse true on return.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<Out<T>>(), len) }
}

/// Fills every slot of `s` with `v` and returns it as the initialised slice it now is.
pub(crate) fn fill_init<T: Copy>(s: &mut [Out<T>], v: T) -> &mut [T] {
    s.fill(Out::new(v));
    let len = s.len();
    // SAFETY: every element was just written, and `MaybeUninit<T>` has the size, alignment
    // and ABI of `T`: the same memory, borrowed mutably for the same lifetime, as `T`s.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<T>(), len) }
}

/// `n` uninitialised output slots, or the errors of [`zeroed_vec`] (the same size limit).
pub(crate) fn uninit_vec<T: ZeroBits>(op: &'static str, n: usize) -> Result<Vec<Out<T>>> {
    check_size::<T>(op, n)?;
    let mut v: Vec<Out<T>> = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| Error::AllocationFailed { op, elements: n })?;
    advise_huge_pages(v.as_mut_ptr().cast(), n * std::mem::size_of::<T>());
    // No code: `MaybeUninit` slots need no initialisation.
    v.resize_with(n, MaybeUninit::uninit);
    Ok(v)
}

/// Alignment, in bytes, of the buffers the crate allocates: a cache line, the width of an
/// AVX-512 vector. The system allocator places large blocks 16 bytes past a page boundary;
/// measured (one thread, 2-core AVX-512 machine, medians of 150 calls) with `x` and `y`
/// placed 0, 16 and 32 bytes past a 64-byte boundary: batch and group norm on
/// (50, 32, 32, 32) 4–6 % slower off the boundary, on (8, 64, 56, 56) 2–4 %, on
/// (8, 256, 14, 14) at most 3 %.
pub(crate) const ALIGN_BYTES: usize = 64;

/// A `Vec` whose elements are used from `offset` on, chosen so that they start on an
/// [`ALIGN_BYTES`] boundary (the first `offset` elements are padding, initialised like the
/// rest). Derefs to the aligned elements. A buffer from [`Aligned::from_vec`] (offset 0)
/// keeps the `Vec`'s own placement.
pub(crate) struct Aligned<T> {
    vec: Vec<T>,
    offset: usize,
}

impl<T> Aligned<T> {
    /// `vec` as it is (offset 0).
    pub(crate) fn from_vec(vec: Vec<T>) -> Self {
        Aligned { vec, offset: 0 }
    }

    /// The first `n` elements of `vec` from its first [`ALIGN_BYTES`] boundary on (`vec`
    /// has room: [`padded`]`(n)` elements); the rest is dropped.
    fn placed(mut vec: Vec<T>, n: usize) -> Self {
        let offset = align_offset(vec.as_ptr());
        vec.truncate(offset + n);
        Aligned { vec, offset }
    }

    /// The whole `Vec` (padding included) and the offset of the first element.
    #[cfg(feature = "ndarray")]
    pub(crate) fn into_raw_parts(self) -> (Vec<T>, usize) {
        (self.vec, self.offset)
    }

    /// The elements as a `Vec`: moved when the offset is 0, else shifted down in place
    /// (one pass over the elements, no allocation).
    pub(crate) fn into_vec(mut self) -> Vec<T> {
        self.vec.drain(..self.offset);
        self.vec
    }
}

impl<T> std::ops::Deref for Aligned<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.vec[self.offset..]
    }
}

impl<T> std::ops::DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.vec[self.offset..]
    }
}

/// Elements of padding that place `ptr + offset` on an [`ALIGN_BYTES`] boundary (0 where no
/// offset can: zero-sized or oddly placed elements).
fn align_offset<T>(ptr: *const T) -> usize {
    let size = std::mem::size_of::<T>();
    let gap = (ALIGN_BYTES - ptr.addr() % ALIGN_BYTES) % ALIGN_BYTES;
    if size == 0 || !gap.is_multiple_of(size) {
        0
    } else {
        gap / size
    }
}

/// Elements of padding to allocate beyond `n` so that [`align_offset`] always fits.
fn padded<T>(op: &'static str, n: usize) -> Result<usize> {
    let pad = ALIGN_BYTES / std::mem::size_of::<T>().max(1);
    n.checked_add(pad)
        .ok_or_else(|| Error::too_large(op, format!("{n} elements and alignment overflow usize")))
}

/// `n` uninitialised output slots starting on an [`ALIGN_BYTES`] boundary, or the errors
/// of [`zeroed_vec`] (the same size limit, padding included).
pub(crate) fn uninit_aligned<T: ZeroBits>(op: &'static str, n: usize) -> Result<Aligned<Out<T>>> {
    let mut a = Aligned::placed(uninit_vec::<T>(op, padded::<T>(op, n)?)?, n);
    // The padding is initialised too, so that the whole `Vec` can be assumed initialised.
    fill_init(&mut a.vec[..a.offset], T::default());
    Ok(a)
}

/// The [`Aligned`] buffer of slots that have all been written.
///
/// # Safety
/// Every element of `a` (from its offset on) must have been initialised.
pub(crate) unsafe fn assume_init_aligned<T>(a: Aligned<Out<T>>) -> Aligned<T> {
    // SAFETY: the padding before the offset was initialised by `uninit_aligned`, the rest
    // by the caller.
    Aligned {
        offset: a.offset,
        vec: unsafe { assume_init_vec(a.vec) },
    }
}

/// `n` zeros starting on an [`ALIGN_BYTES`] boundary ([`zeroed_vec`] with padding).
pub(crate) fn zeroed_aligned<T: ZeroBits>(op: &'static str, n: usize) -> Result<Aligned<T>> {
    Ok(Aligned::placed(
        zeroed_vec::<T>(op, padded::<T>(op, n)?)?,
        n,
    ))
}

/// `n` zeros starting on an [`ALIGN_BYTES`] boundary, zeroed in parallel
/// ([`zeroed_vec_par`] with padding): the allocating functions' workspaces.
pub(crate) fn zeroed_aligned_par<T: ZeroBits + Send>(
    op: &'static str,
    n: usize,
) -> Result<Aligned<T>> {
    Ok(Aligned::placed(
        zeroed_vec_par::<T>(op, padded::<T>(op, n)?)?,
        n,
    ))
}

/// Buffers of at least this many bytes are advised to use transparent huge pages.
const HUGE_PAGE_ADVICE_BYTES: usize = 4 << 20;

/// Advises the kernel (Linux) to back the fresh buffer `ptr .. ptr + bytes` with transparent
/// huge pages, before anything touches it. A large buffer from the allocator is fresh
/// mapped memory; the kernels' first writes then fault it in 2 MiB pages instead of 4 KiB
/// ones — 512 times fewer page faults. Advice only: contents and validity are unchanged,
/// and a refusal (or a system with huge pages off) changes nothing but speed.
fn advise_huge_pages(ptr: *mut u8, bytes: usize) {
    #[cfg(all(target_os = "linux", not(miri)))]
    if bytes >= HUGE_PAGE_ADVICE_BYTES {
        const PAGE: usize = 4096;
        let start = (ptr as usize).next_multiple_of(PAGE);
        let end = (ptr as usize + bytes) / PAGE * PAGE;
        if end > start {
            // SAFETY: `start .. end` lies inside the caller's live allocation (rounded inwards
            // to whole pages); MADV_HUGEPAGE neither frees nor changes memory, it only sets a
            // paging preference on the mapping. The result is ignored (advice).
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(all(target_os = "linux", not(miri))))]
    let _ = (ptr, bytes, HUGE_PAGE_ADVICE_BYTES);
}

/// The `Vec<T>` of slots that have all been written.
///
/// # Safety
/// Every element of `v` must have been initialised.
pub(crate) unsafe fn assume_init_vec<T>(v: Vec<Out<T>>) -> Vec<T> {
    let mut v = ManuallyDrop::new(v);
    let (ptr, len, cap) = (v.as_mut_ptr(), v.len(), v.capacity());
    // SAFETY: the allocation came from a `Vec<MaybeUninit<T>>`, whose layout for capacity
    // `cap` is that of a `Vec<T>` (same size and alignment per element); `ManuallyDrop`
    // keeps the old `Vec` from freeing it; the caller guarantees the `len` elements are
    // initialised.
    unsafe { Vec::from_raw_parts(ptr.cast::<T>(), len, cap) }
}

/// `Err(TooLarge)` if `n` elements of `T` exceed [`MAX_ALLOC_BYTES`] (or `usize`).
fn check_size<T>(op: &'static str, n: usize) -> Result<Layout> {
    let too_large = || {
        Error::too_large(
            op,
            format!(
                "{n} elements of {} bytes exceed the allocation limit of {MAX_ALLOC_BYTES} bytes",
                std::mem::size_of::<T>()
            ),
        )
    };
    let layout = Layout::array::<T>(n).map_err(|_| too_large())?;
    if layout.size() > MAX_ALLOC_BYTES {
        return Err(too_large());
    }
    Ok(layout)
}

/// A zero-filled `Vec` of `n` elements, or an error if it would exceed [`MAX_ALLOC_BYTES`]
/// or the allocator refuses.
///
/// The memory comes from `alloc_zeroed` (calloc): large buffers are fresh pages the OS has
/// already zeroed, so there is no separate zeroing pass — measured here, allocating and then
/// filling a 51 MB tensor took 46 ms with `vec![0.0; n]`-style zeroing and 26 ms this way.
pub(crate) fn zeroed_vec<T: ZeroBits>(op: &'static str, n: usize) -> Result<Vec<T>> {
    let layout = check_size::<T>(op, n)?;
    if layout.size() == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe { alloc_zeroed(layout) }.cast::<T>();
    if ptr.is_null() {
        return Err(Error::AllocationFailed { op, elements: n });
    }
    advise_huge_pages(ptr.cast(), layout.size());
    // SAFETY: `ptr` comes from the global allocator with `Layout::array::<T>(n)`, the size
    // and alignment a `Vec<T>` of capacity `n` deallocates with, and its `n` elements are
    // initialised: all bits zero, which is the value zero for every `ZeroBits` type.
    Ok(unsafe { Vec::from_raw_parts(ptr, n, n) })
}

/// A zero-filled `Vec` of `n` elements like [`zeroed_vec`], zeroed by the current rayon
/// pool's threads in parallel. For the allocating functions' workspaces: calloc zero-fills
/// reused heap memory on the calling thread, a serial pass that measured 1–2 ms of a 5 ms
/// resnet_3x3_14 forward at 8–16 threads (16-core machine); this spreads it (and the page
/// faults of fresh memory) over the pool.
pub(crate) fn zeroed_vec_par<T: ZeroBits + Send>(op: &'static str, n: usize) -> Result<Vec<T>> {
    use rayon::prelude::*;
    /// Elements each task zeroes (256 KiB of `f32`).
    const CHUNK: usize = 1 << 16;
    let mut v = uninit_vec::<T>(op, n)?;
    let chunks = v
        .par_chunks_mut(CHUNK)
        .with_min_len(crate::threads::min_len(1));
    chunks.for_each(|c| {
        fill_init(c, T::default());
    });
    // SAFETY: the chunks cover `v`, and every one was filled just above.
    Ok(unsafe { assume_init_vec(v) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_and_checked() {
        let p = zeroed_vec_par::<f32>("t", 3 << 16 | 5).unwrap();
        assert!(p.len() == 3 << 16 | 5 && p.iter().all(|x| x.to_bits() == 0));
        assert!(zeroed_vec_par::<f32>("t", usize::MAX).is_err());
        let v = zeroed_vec::<f64>("t", 120).unwrap();
        assert_eq!(v.len(), 120);
        assert!(v.iter().all(|x| x.to_bits() == 0));
        assert!(zeroed_vec::<u8>("t", 0).unwrap().is_empty());
        assert!(zeroed_vec::<f32>("t", usize::MAX).is_err());
        assert!(zeroed_vec::<f32>("t", MAX_ALLOC_BYTES / 4 + 1).is_err());
    }

    #[test]
    fn large_buffers_advised_huge_pages_are_ordinary_memory() {
        // Above the huge-page advice size: still all zeros, writable, readable.
        let n = 3 * HUGE_PAGE_ADVICE_BYTES / 4 + 5;
        let mut v = zeroed_vec::<f32>("t", n).unwrap();
        assert!(v.iter().all(|x| x.to_bits() == 0));
        v[n - 1] = 2.0;
        let mut u = uninit_vec::<f32>("t", n).unwrap();
        for (i, o) in u.iter_mut().enumerate() {
            o.write(i as f32);
        }
        // SAFETY: every slot was written just above.
        let u = unsafe { assume_init_vec(u) };
        assert_eq!((u[n - 1], v[n - 1], v[0]), ((n - 1) as f32, 2.0, 0.0));
    }

    #[test]
    fn aligned_buffers_start_on_the_boundary() {
        for n in [0, 1, 5, 1000, 3 << 20] {
            let z = zeroed_aligned::<f32>("t", n).unwrap();
            assert_eq!((z.len(), z.as_ptr().addr() % ALIGN_BYTES), (n, 0));
            assert!(z.iter().all(|x| x.to_bits() == 0));
            let p = zeroed_aligned_par::<f64>("t", n).unwrap();
            assert_eq!((p.len(), p.as_ptr().addr() % ALIGN_BYTES), (n, 0));
            let mut u = uninit_aligned::<f32>("t", n).unwrap();
            assert_eq!((u.len(), u.as_ptr().addr() % ALIGN_BYTES), (n, 0));
            for (i, o) in u.iter_mut().enumerate() {
                o.write(i as f32);
            }
            // SAFETY: every slot was written just above.
            let u = unsafe { assume_init_aligned(u) };
            let v = u.into_vec();
            assert!(v.len() == n && v.iter().enumerate().all(|(i, &x)| x == i as f32));
        }
        let kept = Aligned::from_vec(vec![1u8, 2, 3]);
        assert_eq!(*kept, [1, 2, 3]);
        assert_eq!(kept.into_vec(), [1, 2, 3]);
        assert!(uninit_aligned::<f32>("t", usize::MAX).is_err());
        assert!(zeroed_aligned::<f32>("t", usize::MAX - 3).is_err());
        assert!(zeroed_aligned_par::<f32>("t", MAX_ALLOC_BYTES / 4).is_err());
    }

    #[test]
    fn uninit_written_then_assumed() {
        let mut v = uninit_vec::<f32>("t", 37).unwrap();
        assert_eq!(v.len(), 37);
        for (i, o) in v.iter_mut().enumerate() {
            o.write(i as f32);
        }
        // SAFETY: every slot was written just above.
        let v = unsafe { assume_init_vec(v) };
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as f32));
        assert!(uninit_vec::<f64>("t", usize::MAX).is_err());
        assert!(uninit_vec::<f32>("t", MAX_ALLOC_BYTES / 4 + 1).is_err());
        let mut slots = uninit_vec::<f32>("t", 5).unwrap();
        let init = fill_init(&mut slots, 1.5);
        init[4] = 2.0;
        assert_eq!(init, [1.5, 1.5, 1.5, 1.5, 2.0]);
        let mut s = [1.0f64, 2.0];
        // SAFETY: only initialised values are stored.
        let slots = unsafe { as_uninit_mut(&mut s) };
        slots[1].write(5.0);
        assert_eq!(s, [1.0, 5.0]);
    }
}
