//! Batch norm and group norm on arrays: wrappers of [`crate::norm`] (fast kernels) and, in
//! [`naive`], of [`crate::norm::naive`]. Shapes, parameters, caches, errors and determinism
//! as there; every array must be in standard layout (see the [module docs](super)).

use ndarray::{
    Array2, Array4, ArrayView1, ArrayView2, ArrayView4, ArrayViewMut1, ArrayViewMut2,
    ArrayViewMut4, Ix2, Ix4,
};

use super::{array_op, norm_grads, slice_mut_op, slice_op, view_mut_op, view_op, NormGrads};
use crate::error::Result;
use crate::norm::{BatchNormCache, BatchNormParams, GroupNormCache, GroupNormParams};
use crate::Float;

const BN: &str = "batch_norm";
const SBN: &str = "spatial_batch_norm";
const GN: &str = "group_norm";

/// Defines the six allocating wrappers over the kernel module `$k` (which has the
/// `norm::naive` signatures).
macro_rules! norm_wrappers {
    ($k:path, $name:literal) => {
        use $k as k;

        #[doc = concat!("[`", $name, "::batch_norm_forward`] on arrays: `x` `(N, D)`, `gamma`,")]
        /// `beta` and the running statistics `D` values each; returns `y` `(N, D)` and the
        /// cache for the backward (train mode updates the running statistics in place).
        ///
        /// # Errors
        ///
        /// As the slice function, and if an array is not in standard layout.
        pub fn batch_norm_forward<T: Float>(
            x: ArrayView2<'_, T>,
            gamma: ArrayView1<'_, T>,
            beta: ArrayView1<'_, T>,
            running_mean: ArrayViewMut1<'_, T>,
            running_var: ArrayViewMut1<'_, T>,
            p: &BatchNormParams,
        ) -> Result<(Array2<T>, BatchNormCache<T>)> {
            let (y, cache) = k::batch_norm_forward(
                view_op(BN, "x", &x)?,
                slice_op(BN, "gamma", &gamma)?,
                slice_op(BN, "beta", &beta)?,
                slice_mut_op(BN, "running_mean", running_mean)?,
                slice_mut_op(BN, "running_var", running_var)?,
                p,
            )?;
            Ok((array_op(BN, y)?, cache))
        }

        #[doc = concat!("[`", $name, "::batch_norm_backward`] on arrays: gradients for `x` `(N, D)`.")]
        ///
        /// # Errors
        ///
        /// As the slice function, and if an array is not in standard layout.
        pub fn batch_norm_backward<T: Float>(
            dout: ArrayView2<'_, T>,
            x: ArrayView2<'_, T>,
            gamma: ArrayView1<'_, T>,
            cache: &BatchNormCache<T>,
        ) -> Result<NormGrads<T, Ix2>> {
            let g = k::batch_norm_backward(
                view_op(BN, "dout", &dout)?,
                view_op(BN, "x", &x)?,
                slice_op(BN, "gamma", &gamma)?,
                cache,
            )?;
            norm_grads(BN, g)
        }

        #[doc = concat!("[`", $name, "::spatial_batch_norm_forward`] on arrays: `x` `(N, C, H, W)`,")]
        /// per-channel `gamma`, `beta` and running statistics; returns `y` `(N, C, H, W)` and
        /// the cache (train mode updates the running statistics in place).
        ///
        /// # Errors
        ///
        /// As the slice function, and if an array is not in standard layout.
        pub fn spatial_batch_norm_forward<T: Float>(
            x: ArrayView4<'_, T>,
            gamma: ArrayView1<'_, T>,
            beta: ArrayView1<'_, T>,
            running_mean: ArrayViewMut1<'_, T>,
            running_var: ArrayViewMut1<'_, T>,
            p: &BatchNormParams,
        ) -> Result<(Array4<T>, BatchNormCache<T>)> {
            let (y, cache) = k::spatial_batch_norm_forward(
                view_op(SBN, "x", &x)?,
                slice_op(SBN, "gamma", &gamma)?,
                slice_op(SBN, "beta", &beta)?,
                slice_mut_op(SBN, "running_mean", running_mean)?,
                slice_mut_op(SBN, "running_var", running_var)?,
                p,
            )?;
            Ok((array_op(SBN, y)?, cache))
        }

        #[doc = concat!("[`", $name, "::spatial_batch_norm_backward`] on arrays: gradients for `x` `(N, C, H, W)`.")]
        ///
        /// # Errors
        ///
        /// As the slice function, and if an array is not in standard layout.
        pub fn spatial_batch_norm_backward<T: Float>(
            dout: ArrayView4<'_, T>,
            x: ArrayView4<'_, T>,
            gamma: ArrayView1<'_, T>,
            cache: &BatchNormCache<T>,
        ) -> Result<NormGrads<T, Ix4>> {
            let g = k::spatial_batch_norm_backward(
                view_op(SBN, "dout", &dout)?,
                view_op(SBN, "x", &x)?,
                slice_op(SBN, "gamma", &gamma)?,
                cache,
            )?;
            norm_grads(SBN, g)
        }

        #[doc = concat!("[`", $name, "::group_norm_forward`] on arrays: `x` `(N, C, H, W)`,")]
        /// per-channel `gamma` and `beta`; returns `y` `(N, C, H, W)` and the cache.
        ///
        /// # Errors
        ///
        /// As the slice function, and if an array is not in standard layout.
        pub fn group_norm_forward<T: Float>(
            x: ArrayView4<'_, T>,
            gamma: ArrayView1<'_, T>,
            beta: ArrayView1<'_, T>,
            p: &GroupNormParams,
        ) -> Result<(Array4<T>, GroupNormCache<T>)> {
            let (y, cache) = k::group_norm_forward(
                view_op(GN, "x", &x)?,
                slice_op(GN, "gamma", &gamma)?,
                slice_op(GN, "beta", &beta)?,
                p,
            )?;
            Ok((array_op(GN, y)?, cache))
        }

        #[doc = concat!("[`", $name, "::group_norm_backward`] on arrays: gradients for `x` `(N, C, H, W)`.")]
        ///
        /// # Errors
        ///
        /// As the slice function, and if an array is not in standard layout.
        pub fn group_norm_backward<T: Float>(
            dout: ArrayView4<'_, T>,
            x: ArrayView4<'_, T>,
            gamma: ArrayView1<'_, T>,
            cache: &GroupNormCache<T>,
        ) -> Result<NormGrads<T, Ix4>> {
            let g = k::group_norm_backward(
                view_op(GN, "dout", &dout)?,
                view_op(GN, "x", &x)?,
                slice_op(GN, "gamma", &gamma)?,
                cache,
            )?;
            norm_grads(GN, g)
        }
    };
}

norm_wrappers!(crate::norm, "crate::norm");

/// [`crate::norm::batch_norm_forward_into`] on arrays: writes `y` `(N, D)` and `cache`.
/// Allocation-free.
///
/// # Errors
///
/// As the slice function, and if an array is not in standard layout.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward_into<T: Float>(
    x: ArrayView2<'_, T>,
    gamma: ArrayView1<'_, T>,
    beta: ArrayView1<'_, T>,
    running_mean: ArrayViewMut1<'_, T>,
    running_var: ArrayViewMut1<'_, T>,
    p: &BatchNormParams,
    y: ArrayViewMut2<'_, T>,
    cache: &mut BatchNormCache<T>,
) -> Result<()> {
    crate::norm::batch_norm_forward_into(
        view_op(BN, "x", &x)?,
        slice_op(BN, "gamma", &gamma)?,
        slice_op(BN, "beta", &beta)?,
        slice_mut_op(BN, "running_mean", running_mean)?,
        slice_mut_op(BN, "running_var", running_var)?,
        p,
        view_mut_op(BN, "y", y)?,
        cache,
    )
}

/// [`crate::norm::batch_norm_backward_into`] on arrays: writes `dx` `(N, D)`, `dgamma` and
/// `dbeta`. Allocation-free.
///
/// # Errors
///
/// As the slice function, and if an array is not in standard layout.
pub fn batch_norm_backward_into<T: Float>(
    dout: ArrayView2<'_, T>,
    x: ArrayView2<'_, T>,
    gamma: ArrayView1<'_, T>,
    cache: &BatchNormCache<T>,
    dx: ArrayViewMut2<'_, T>,
    dgamma: ArrayViewMut1<'_, T>,
    dbeta: ArrayViewMut1<'_, T>,
) -> Result<()> {
    crate::norm::batch_norm_backward_into(
        view_op(BN, "dout", &dout)?,
        view_op(BN, "x", &x)?,
        slice_op(BN, "gamma", &gamma)?,
        cache,
        view_mut_op(BN, "dx", dx)?,
        slice_mut_op(BN, "dgamma", dgamma)?,
        slice_mut_op(BN, "dbeta", dbeta)?,
    )
}

/// [`crate::norm::spatial_batch_norm_forward_into`] on arrays: writes `y` `(N, C, H, W)`
/// and `cache`. Allocation-free.
///
/// # Errors
///
/// As the slice function, and if an array is not in standard layout.
#[allow(clippy::too_many_arguments)]
pub fn spatial_batch_norm_forward_into<T: Float>(
    x: ArrayView4<'_, T>,
    gamma: ArrayView1<'_, T>,
    beta: ArrayView1<'_, T>,
    running_mean: ArrayViewMut1<'_, T>,
    running_var: ArrayViewMut1<'_, T>,
    p: &BatchNormParams,
    y: ArrayViewMut4<'_, T>,
    cache: &mut BatchNormCache<T>,
) -> Result<()> {
    crate::norm::spatial_batch_norm_forward_into(
        view_op(SBN, "x", &x)?,
        slice_op(SBN, "gamma", &gamma)?,
        slice_op(SBN, "beta", &beta)?,
        slice_mut_op(SBN, "running_mean", running_mean)?,
        slice_mut_op(SBN, "running_var", running_var)?,
        p,
        view_mut_op(SBN, "y", y)?,
        cache,
    )
}

/// [`crate::norm::spatial_batch_norm_backward_into`] on arrays: writes `dx`
/// `(N, C, H, W)`, `dgamma` and `dbeta`. Allocation-free.
///
/// # Errors
///
/// As the slice function, and if an array is not in standard layout.
pub fn spatial_batch_norm_backward_into<T: Float>(
    dout: ArrayView4<'_, T>,
    x: ArrayView4<'_, T>,
    gamma: ArrayView1<'_, T>,
    cache: &BatchNormCache<T>,
    dx: ArrayViewMut4<'_, T>,
    dgamma: ArrayViewMut1<'_, T>,
    dbeta: ArrayViewMut1<'_, T>,
) -> Result<()> {
    crate::norm::spatial_batch_norm_backward_into(
        view_op(SBN, "dout", &dout)?,
        view_op(SBN, "x", &x)?,
        slice_op(SBN, "gamma", &gamma)?,
        cache,
        view_mut_op(SBN, "dx", dx)?,
        slice_mut_op(SBN, "dgamma", dgamma)?,
        slice_mut_op(SBN, "dbeta", dbeta)?,
    )
}

/// [`crate::norm::group_norm_forward_into`] on arrays: writes `y` `(N, C, H, W)` and
/// `cache`. Allocation-free.
///
/// # Errors
///
/// As the slice function, and if an array is not in standard layout.
pub fn group_norm_forward_into<T: Float>(
    x: ArrayView4<'_, T>,
    gamma: ArrayView1<'_, T>,
    beta: ArrayView1<'_, T>,
    p: &GroupNormParams,
    y: ArrayViewMut4<'_, T>,
    cache: &mut GroupNormCache<T>,
) -> Result<()> {
    crate::norm::group_norm_forward_into(
        view_op(GN, "x", &x)?,
        slice_op(GN, "gamma", &gamma)?,
        slice_op(GN, "beta", &beta)?,
        p,
        view_mut_op(GN, "y", y)?,
        cache,
    )
}

/// [`crate::norm::group_norm_backward_into`] on arrays: writes `dx` `(N, C, H, W)`,
/// `dgamma` and `dbeta`, using `workspace` (at least
/// [`crate::norm::group_norm_backward_workspace_len`] `f64`s). Allocation-free.
///
/// # Errors
///
/// As the slice function, and if an array is not in standard layout.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward_into<T: Float>(
    dout: ArrayView4<'_, T>,
    x: ArrayView4<'_, T>,
    gamma: ArrayView1<'_, T>,
    cache: &GroupNormCache<T>,
    dx: ArrayViewMut4<'_, T>,
    dgamma: ArrayViewMut1<'_, T>,
    dbeta: ArrayViewMut1<'_, T>,
    workspace: &mut [f64],
) -> Result<()> {
    crate::norm::group_norm_backward_into(
        view_op(GN, "dout", &dout)?,
        view_op(GN, "x", &x)?,
        slice_op(GN, "gamma", &gamma)?,
        cache,
        view_mut_op(GN, "dx", dx)?,
        slice_mut_op(GN, "dgamma", dgamma)?,
        slice_mut_op(GN, "dbeta", dbeta)?,
        workspace,
    )
}

/// Wrappers of the reference kernels [`crate::norm::naive`].
pub mod naive {
    use super::*;
    norm_wrappers!(crate::norm::naive, "crate::norm::naive");
}
