//! Max pooling on arrays: wrappers of [`crate::pool`]. Shapes, parameters and errors as
//! there; every array must be in standard layout (see the [module docs](super)).

use ndarray::{Array4, ArrayView4};

use super::{array_op, view_op};
use crate::error::Result;
use crate::pool::MaxPool2dParams;
use crate::Float;

const OP: &str = "max_pool2d";

/// Wrappers of the reference kernels [`crate::pool::naive`].
pub mod naive {
    use super::*;

    /// [`crate::pool::naive::forward`] on arrays: `x` `(N, C, H, W)` → `(N, C, OH, OW)`.
    ///
    /// # Errors
    ///
    /// As the slice function, and if `x` is not in standard layout.
    pub fn forward<T: Float>(x: ArrayView4<'_, T>, p: &MaxPool2dParams) -> Result<Array4<T>> {
        array_op(OP, crate::pool::naive::forward(view_op(OP, "x", &x)?, p)?)
    }

    /// [`crate::pool::naive::backward`] on arrays: `dx` `(N, C, H, W)` from `dout` and `x`.
    ///
    /// # Errors
    ///
    /// As the slice function, and if an array is not in standard layout.
    pub fn backward<T: Float>(
        dout: ArrayView4<'_, T>,
        x: ArrayView4<'_, T>,
        p: &MaxPool2dParams,
    ) -> Result<Array4<T>> {
        let dx =
            crate::pool::naive::backward(view_op(OP, "dout", &dout)?, view_op(OP, "x", &x)?, p)?;
        array_op(OP, dx)
    }
}
