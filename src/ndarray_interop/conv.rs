//! Convolution on arrays: wrappers of [`crate::conv`] (fast kernels) and, in [`naive`], of
//! [`crate::conv::naive`]. Shapes, parameters, errors and determinism as there; every array
//! must be in standard layout (see the [module docs](super)).
//!
//! The workspace of the `_into` forms is a plain slice of at least
//! [`crate::conv::forward_workspace_len`] / [`crate::conv::backward_workspace_len`]
//! elements of the geometry, which [`crate::conv::Conv2dGeometry::new`] computes from the
//! shapes (`Shape::new(x.shape())`).

use ndarray::{Array1, Array4, ArrayView1, ArrayView4, ArrayViewMut1, ArrayViewMut4};

use super::{array_op, slice_mut_op, slice_op, view_mut_op, view_op};
use crate::conv::Conv2dParams;
use crate::error::Result;
use crate::Float;

const OP: &str = "conv2d";

/// Gradients of a convolution as arrays.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2dGrads<T> {
    /// `∂L/∂x`, `(N, C, H, W)`.
    pub dx: Array4<T>,
    /// `∂L/∂w`, `(F, C/groups, KH, KW)`.
    pub dw: Array4<T>,
    /// `∂L/∂b`, `F` values.
    pub db: Array1<T>,
}

fn grads<T: Float>(g: crate::conv::Conv2dGrads<T>) -> Result<Conv2dGrads<T>> {
    Ok(Conv2dGrads {
        dx: array_op(OP, g.dx)?,
        dw: array_op(OP, g.dw)?,
        db: Array1::from_vec(g.db),
    })
}

fn bias<'a, T: Float>(b: Option<&ArrayView1<'a, T>>) -> Result<Option<&'a [T]>> {
    b.map(|b| slice_op(OP, "b", b)).transpose()
}

/// The allocating forward and backward over the kernel module `$k`.
macro_rules! conv_wrappers {
    ($k:path, $name:literal) => {
        use $k as k;

        #[doc = concat!("[`", $name, "::forward`] on arrays: `x` `(N, C, H, W)`, `w`")]
        /// `(F, C/groups, KH, KW)`, optional bias of `F` values; returns `(N, F, OH, OW)`.
        ///
        /// # Errors
        ///
        /// As the slice function, and if an array is not in standard layout.
        pub fn forward<T: Float>(
            x: ArrayView4<'_, T>,
            w: ArrayView4<'_, T>,
            b: Option<ArrayView1<'_, T>>,
            p: &Conv2dParams,
        ) -> Result<Array4<T>> {
            let out = k::forward(
                view_op(OP, "x", &x)?,
                view_op(OP, "w", &w)?,
                bias(b.as_ref())?,
                p,
            )?;
            array_op(OP, out)
        }

        #[doc = concat!("[`", $name, "::backward`] on arrays: `dx`, `dw`, `db` from `dout`")]
        /// `(N, F, OH, OW)` and the forward's `x` and `w`.
        ///
        /// # Errors
        ///
        /// As the slice function, and if an array is not in standard layout.
        pub fn backward<T: Float>(
            dout: ArrayView4<'_, T>,
            x: ArrayView4<'_, T>,
            w: ArrayView4<'_, T>,
            p: &Conv2dParams,
        ) -> Result<Conv2dGrads<T>> {
            grads(k::backward(
                view_op(OP, "dout", &dout)?,
                view_op(OP, "x", &x)?,
                view_op(OP, "w", &w)?,
                p,
            )?)
        }
    };
}

conv_wrappers!(crate::conv, "crate::conv");

/// [`crate::conv::forward_into`] on arrays: writes `(N, F, OH, OW)` into `out`, using
/// `workspace` (at least [`crate::conv::forward_workspace_len`] elements). Allocation-free.
///
/// # Errors
///
/// As the slice function (including a wrong `out` shape or a short workspace), and if an
/// array is not in standard layout.
pub fn forward_into<T: Float>(
    x: ArrayView4<'_, T>,
    w: ArrayView4<'_, T>,
    b: Option<ArrayView1<'_, T>>,
    p: &Conv2dParams,
    out: ArrayViewMut4<'_, T>,
    workspace: &mut [T],
) -> Result<()> {
    crate::conv::forward_into(
        view_op(OP, "x", &x)?,
        view_op(OP, "w", &w)?,
        bias(b.as_ref())?,
        p,
        view_mut_op(OP, "out", out)?,
        workspace,
    )
}

/// [`crate::conv::backward_into`] on arrays: writes `dx` `(N, C, H, W)`, `dw`
/// `(F, C/groups, KH, KW)` and `db` (`F` values), using `workspace` (at least
/// [`crate::conv::backward_workspace_len`] elements). Allocation-free.
///
/// # Errors
///
/// As the slice function, and if an array is not in standard layout.
#[allow(clippy::too_many_arguments)]
pub fn backward_into<T: Float>(
    dout: ArrayView4<'_, T>,
    x: ArrayView4<'_, T>,
    w: ArrayView4<'_, T>,
    p: &Conv2dParams,
    dx: ArrayViewMut4<'_, T>,
    dw: ArrayViewMut4<'_, T>,
    db: ArrayViewMut1<'_, T>,
    workspace: &mut [T],
) -> Result<()> {
    crate::conv::backward_into(
        view_op(OP, "dout", &dout)?,
        view_op(OP, "x", &x)?,
        view_op(OP, "w", &w)?,
        p,
        view_mut_op(OP, "dx", dx)?,
        view_mut_op(OP, "dw", dw)?,
        slice_mut_op(OP, "db", db)?,
        workspace,
    )
}

/// Wrappers of the reference kernels [`crate::conv::naive`].
pub mod naive {
    use super::*;
    conv_wrappers!(crate::conv::naive, "crate::conv::naive");
}
