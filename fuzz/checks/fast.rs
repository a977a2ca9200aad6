//! The fast entry points under test.
//!
//! TEMPORARY: until the fast kernels are merged, these are stand-ins with the public
//! signatures of the contract, built on the naive kernels, so the checkers run end to end.
//! When they land each module becomes a plain re-export (`pub use cnn_kernels::conv;`).

/// Stand-in for `cnn_kernels::conv`'s fast entry points.
pub mod conv {
    use cnn_kernels::conv::{naive, Conv2dGeometry, Conv2dParams};
    use cnn_kernels::{Error, Float, Result, TensorView, TensorViewMut};

    pub use cnn_kernels::conv::naive::{backward, forward};

    /// Workspace of the stand-in: none.
    pub fn forward_workspace_len(_: &Conv2dGeometry) -> usize {
        0
    }
    /// Workspace of the stand-in: none.
    pub fn backward_workspace_len(_: &Conv2dGeometry) -> usize {
        0
    }

    fn copy<T: Float>(dst: TensorViewMut<'_, T>, src: &[T]) -> Result<()> {
        let d = dst.into_data();
        if d.len() != src.len() {
            return Err(Error::WorkspaceTooSmall {
                op: "conv2d",
                required: src.len(),
                provided: d.len(),
            });
        }
        d.copy_from_slice(src);
        Ok(())
    }

    /// Stand-in.
    pub fn forward_into<T: Float>(
        x: TensorView<'_, T>,
        w: TensorView<'_, T>,
        b: Option<&[T]>,
        p: &Conv2dParams,
        out: TensorViewMut<'_, T>,
        _ws: &mut [T],
    ) -> Result<()> {
        let o = naive::forward(x, w, b, p)?;
        if out.shape() != o.shape() {
            return Err(Error::WorkspaceTooSmall {
                op: "conv2d",
                required: 0,
                provided: 0,
            });
        }
        copy(out, o.data())
    }

    /// Stand-in.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_into<T: Float>(
        dout: TensorView<'_, T>,
        x: TensorView<'_, T>,
        w: TensorView<'_, T>,
        p: &Conv2dParams,
        dx: TensorViewMut<'_, T>,
        dw: TensorViewMut<'_, T>,
        db: &mut [T],
        _ws: &mut [T],
    ) -> Result<()> {
        let g = naive::backward(dout, x, w, p)?;
        if dx.shape() != g.dx.shape() || dw.shape() != g.dw.shape() || db.len() != g.db.len() {
            return Err(Error::WorkspaceTooSmall {
                op: "conv2d",
                required: 0,
                provided: 0,
            });
        }
        db.copy_from_slice(&g.db);
        copy(dx, g.dx.data())?;
        copy(dw, g.dw.data())
    }
}

/// Stand-in for `cnn_kernels::pool`'s fast entry points.
pub mod pool {
    use cnn_kernels::pool::{naive, MaxPool2dGeometry, MaxPool2dParams};
    use cnn_kernels::{Error, Float, Result, Tensor, TensorView, TensorViewMut};

    pub use cnn_kernels::pool::naive::{backward, forward};

    fn copy<T: Float>(dst: TensorViewMut<'_, T>, src: &Tensor<T>) -> Result<()> {
        if dst.shape() != src.shape() {
            return Err(Error::WorkspaceTooSmall {
                op: "max_pool2d",
                required: 0,
                provided: 0,
            });
        }
        dst.into_data().copy_from_slice(src.data());
        Ok(())
    }

    /// Stand-in.
    pub fn forward_into<T: Float>(
        x: TensorView<'_, T>,
        p: &MaxPool2dParams,
        out: TensorViewMut<'_, T>,
    ) -> Result<()> {
        copy(out, &naive::forward(x, p)?)
    }

    /// Stand-in: keeps the input.
    #[derive(Debug, Clone)]
    pub struct MaxPool2dIndices {
        g: MaxPool2dGeometry,
        x: Vec<f64>,
    }
    impl MaxPool2dIndices {
        /// Stand-in.
        pub fn new(g: &MaxPool2dGeometry) -> Result<Self> {
            Ok(MaxPool2dIndices {
                g: *g,
                x: Vec::new(),
            })
        }
    }

    /// Stand-in.
    pub fn forward_with_indices<T: Float>(
        x: TensorView<'_, T>,
        p: &MaxPool2dParams,
    ) -> Result<(Tensor<T>, MaxPool2dIndices)> {
        let g = MaxPool2dGeometry::new(x.shape(), p)?;
        let mut ix = MaxPool2dIndices::new(&g)?;
        let mut out = Tensor::zeros(g.out_shape())?;
        forward_with_indices_into(x, p, out.view_mut(), &mut ix)?;
        Ok((out, ix))
    }

    /// Stand-in.
    pub fn forward_with_indices_into<T: Float>(
        x: TensorView<'_, T>,
        p: &MaxPool2dParams,
        out: TensorViewMut<'_, T>,
        ix: &mut MaxPool2dIndices,
    ) -> Result<()> {
        let o = naive::forward(x, p)?;
        if ix.g.x_shape() != x.shape().dims() || ix.g.params != *p {
            return Err(Error::WorkspaceTooSmall {
                op: "max_pool2d",
                required: 0,
                provided: 0,
            });
        }
        ix.x = x.data().iter().map(|v| v.to_f64()).collect();
        copy(out, &o)
    }

    /// Stand-in.
    pub fn backward_into<T: Float>(
        dout: TensorView<'_, T>,
        x: TensorView<'_, T>,
        p: &MaxPool2dParams,
        dx: TensorViewMut<'_, T>,
    ) -> Result<()> {
        copy(dx, &naive::backward(dout, x, p)?)
    }

    /// Stand-in.
    pub fn backward_with_indices<T: Float>(
        dout: TensorView<'_, T>,
        ix: &MaxPool2dIndices,
        p: &MaxPool2dParams,
    ) -> Result<Tensor<T>> {
        let x: Vec<T> = ix.x.iter().map(|&v| T::from_f64(v)).collect();
        naive::backward(dout, TensorView::new(ix.g.x_shape(), &x)?, p)
    }

    /// Stand-in.
    pub fn backward_with_indices_into<T: Float>(
        dout: TensorView<'_, T>,
        ix: &MaxPool2dIndices,
        p: &MaxPool2dParams,
        dx: TensorViewMut<'_, T>,
    ) -> Result<()> {
        copy(dx, &backward_with_indices(dout, ix, p)?)
    }
}
