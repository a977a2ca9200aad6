//! Reference max pooling: a loop over output positions and, for each, over its window in
//! row-major order. Every fast path is tested against it.

use super::{MaxPool2dGeometry, MaxPool2dParams};
use crate::error::Result;
use crate::{Float, Tensor, TensorView};

/// Flat index (within the `H·W` plane) and value of the winner of one window: the first
/// maximum in row-major order, or the first NaN if the window holds one.
fn window_argmax<T: Float>(plane: &[T], g: &MaxPool2dGeometry, i: usize, j: usize) -> (usize, T) {
    let (r0, r1) = g.window(0, i);
    let (c0, c1) = g.window(1, j);
    let mut best = r0 * g.w + c0;
    let mut best_v = plane[best];
    for r in r0..r1 {
        for c in c0..c1 {
            let v = plane[r * g.w + c];
            if best_v.is_nan() {
                return (best, best_v);
            }
            if v > best_v || v.is_nan() {
                best = r * g.w + c;
                best_v = v;
            }
        }
    }
    (best, best_v)
}

/// Max-pool forward; output `(N, C, OH, OW)`.
///
/// Errors as [`MaxPool2dGeometry::new`] does.
///
/// ```
/// use cnn_kernels::{pool::{naive, MaxPool2dParams}, TensorView};
/// let x = [1.0f32, 5.0, 2.0, 3.0];
/// let out = naive::forward(TensorView::new([1, 1, 2, 2], &x).unwrap(), &MaxPool2dParams::new([2, 2])).unwrap();
/// assert_eq!(out.data(), &[5.0]);
/// ```
pub fn forward<T: Float>(x: TensorView<'_, T>, p: &MaxPool2dParams) -> Result<Tensor<T>> {
    let g = MaxPool2dGeometry::new(x.shape(), p)?;
    let mut out = Tensor::zeros(g.out_shape())?;
    let plane = g.h * g.w;
    let oplane = g.oh * g.ow;
    for (nc, o) in out.data_mut().chunks_exact_mut(oplane).enumerate() {
        let xs = &x.data()[nc * plane..(nc + 1) * plane];
        for i in 0..g.oh {
            for j in 0..g.ow {
                o[i * g.ow + j] = window_argmax(xs, &g, i, j).1;
            }
        }
    }
    Ok(out)
}

/// Max-pool backward: `dx` `(N, C, H, W)` from `dout` `(N, C, OH, OW)` and the forward's
/// input `x`. Each upstream gradient goes to its window's winner (first maximum, or first
/// NaN); overlapping windows accumulate.
///
/// Errors as [`forward`] does and if `dout` does not have the output shape.
pub fn backward<T: Float>(
    dout: TensorView<'_, T>,
    x: TensorView<'_, T>,
    p: &MaxPool2dParams,
) -> Result<Tensor<T>> {
    let g = MaxPool2dGeometry::new(x.shape(), p)?;
    g.check_dout(dout.shape())?;
    let mut dx = Tensor::zeros(g.x_shape())?;
    let plane = g.h * g.w;
    let oplane = g.oh * g.ow;
    for (nc, d) in dx.data_mut().chunks_exact_mut(plane).enumerate() {
        let xs = &x.data()[nc * plane..(nc + 1) * plane];
        let ds = &dout.data()[nc * oplane..(nc + 1) * oplane];
        for i in 0..g.oh {
            for j in 0..g.ow {
                let (k, _) = window_argmax(xs, &g, i, j);
                d[k] += ds[i * g.ow + j];
            }
        }
    }
    Ok(dx)
}
