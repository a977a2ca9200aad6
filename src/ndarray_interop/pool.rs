//! Max pooling on arrays: wrappers of [`crate::pool`] (fast kernels) and, in [`naive`], of
//! [`crate::pool::naive`]. Shapes, parameters, tie and NaN rules, errors and determinism as
//! there; every array must be in standard layout (see the [module docs](super)).

use ndarray::{Array4, ArrayView4, ArrayViewMut4};

use super::{array_op, view_mut_op, view_op};
use crate::error::Result;
use crate::pool::{MaxPool2dIndices, MaxPool2dParams};
use crate::Float;

const OP: &str = "max_pool2d";

/// The allocating forward and backward over the kernel module `$k`.
macro_rules! pool_wrappers {
    ($k:path, $name:literal) => {
        use $k as k;

        #[doc = concat!("[`", $name, "::forward`] on arrays: `x` `(N, C, H, W)` → `(N, C, OH, OW)`.")]
        ///
        /// # Errors
        ///
        /// As the slice function, and if `x` is not in standard layout.
        pub fn forward<T: Float>(x: ArrayView4<'_, T>, p: &MaxPool2dParams) -> Result<Array4<T>> {
            array_op(OP, k::forward(view_op(OP, "x", &x)?, p)?)
        }

        #[doc = concat!("[`", $name, "::backward`] on arrays: `dx` `(N, C, H, W)` from `dout` and `x`.")]
        ///
        /// # Errors
        ///
        /// As the slice function, and if an array is not in standard layout.
        pub fn backward<T: Float>(
            dout: ArrayView4<'_, T>,
            x: ArrayView4<'_, T>,
            p: &MaxPool2dParams,
        ) -> Result<Array4<T>> {
            let dx = k::backward(view_op(OP, "dout", &dout)?, view_op(OP, "x", &x)?, p)?;
            array_op(OP, dx)
        }
    };
}

pool_wrappers!(crate::pool, "crate::pool");

/// [`crate::pool::forward_with_indices`] on arrays: the output `(N, C, OH, OW)` and the
/// winners' indices for [`backward_with_indices`].
///
/// # Errors
///
/// As the slice function, and if `x` is not in standard layout.
pub fn forward_with_indices<T: Float>(
    x: ArrayView4<'_, T>,
    p: &MaxPool2dParams,
) -> Result<(Array4<T>, MaxPool2dIndices)> {
    let (out, idx) = crate::pool::forward_with_indices(view_op(OP, "x", &x)?, p)?;
    Ok((array_op(OP, out)?, idx))
}

/// [`crate::pool::backward_with_indices`] on arrays: `dx` `(N, C, H, W)` from `dout` and the
/// forward's indices (no access to `x`).
///
/// # Errors
///
/// As the slice function, and if `dout` is not in standard layout.
pub fn backward_with_indices<T: Float>(
    dout: ArrayView4<'_, T>,
    indices: &MaxPool2dIndices,
    p: &MaxPool2dParams,
) -> Result<Array4<T>> {
    let dx = crate::pool::backward_with_indices(view_op(OP, "dout", &dout)?, indices, p)?;
    array_op(OP, dx)
}

/// [`crate::pool::forward_into`] on arrays: writes `(N, C, OH, OW)` into `out`.
/// Allocation-free.
///
/// # Errors
///
/// As the slice function, and if an array is not in standard layout.
pub fn forward_into<T: Float>(
    x: ArrayView4<'_, T>,
    p: &MaxPool2dParams,
    out: ArrayViewMut4<'_, T>,
) -> Result<()> {
    crate::pool::forward_into(view_op(OP, "x", &x)?, p, view_mut_op(OP, "out", out)?)
}

/// [`crate::pool::backward_into`] on arrays: writes `dx` `(N, C, H, W)`. Allocation-free.
///
/// # Errors
///
/// As the slice function, and if an array is not in standard layout.
pub fn backward_into<T: Float>(
    dout: ArrayView4<'_, T>,
    x: ArrayView4<'_, T>,
    p: &MaxPool2dParams,
    dx: ArrayViewMut4<'_, T>,
) -> Result<()> {
    crate::pool::backward_into(
        view_op(OP, "dout", &dout)?,
        view_op(OP, "x", &x)?,
        p,
        view_mut_op(OP, "dx", dx)?,
    )
}

/// [`crate::pool::forward_with_indices_into`] on arrays: writes the output into `out` and
/// the winners into `indices` (from [`MaxPool2dIndices::new`]). Allocation-free.
///
/// # Errors
///
/// As the slice function, and if an array is not in standard layout.
pub fn forward_with_indices_into<T: Float>(
    x: ArrayView4<'_, T>,
    p: &MaxPool2dParams,
    out: ArrayViewMut4<'_, T>,
    indices: &mut MaxPool2dIndices,
) -> Result<()> {
    crate::pool::forward_with_indices_into(
        view_op(OP, "x", &x)?,
        p,
        view_mut_op(OP, "out", out)?,
        indices,
    )
}

/// [`crate::pool::backward_with_indices_into`] on arrays: writes `dx` `(N, C, H, W)`.
/// Allocation-free.
///
/// # Errors
///
/// As the slice function, and if an array is not in standard layout.
pub fn backward_with_indices_into<T: Float>(
    dout: ArrayView4<'_, T>,
    indices: &MaxPool2dIndices,
    p: &MaxPool2dParams,
    dx: ArrayViewMut4<'_, T>,
) -> Result<()> {
    crate::pool::backward_with_indices_into(
        view_op(OP, "dout", &dout)?,
        indices,
        p,
        view_mut_op(OP, "dx", dx)?,
    )
}

/// Wrappers of the reference kernels [`crate::pool::naive`].
pub mod naive {
    use super::*;
    pool_wrappers!(crate::pool::naive, "crate::pool::naive");
}
