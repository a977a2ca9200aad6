//! Convolution on arrays: wrappers of [`crate::conv`]. Shapes, parameters and errors as
//! there; every array must be in standard layout (see the [module docs](super)).

use ndarray::{Array1, Array4, ArrayView1, ArrayView4};

use super::{array_op, slice_op, view_op};
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

/// Wrappers of the reference kernels [`crate::conv::naive`].
pub mod naive {
    use super::*;

    /// [`crate::conv::naive::forward`] on arrays: `x` `(N, C, H, W)`, `w`
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
        let out = crate::conv::naive::forward(
            view_op(OP, "x", &x)?,
            view_op(OP, "w", &w)?,
            bias(b.as_ref())?,
            p,
        )?;
        array_op(OP, out)
    }

    /// [`crate::conv::naive::backward`] on arrays.
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
        grads(crate::conv::naive::backward(
            view_op(OP, "dout", &dout)?,
            view_op(OP, "x", &x)?,
            view_op(OP, "w", &w)?,
            p,
        )?)
    }
}
