//! Reference convolution: nested loops over images, filters, output pixels and kernel taps,
//! exactly as the definition reads. Slow and obviously correct; every fast path is tested
//! against it.

use super::{Conv2dGeometry, Conv2dGrads, Conv2dParams};
use crate::error::Result;
use crate::{Float, Tensor, TensorView};

/// Input coordinate of output position `o`, tap `k` along one axis, or `None` in the padding.
#[inline]
fn input_coord(
    o: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
    len: usize,
) -> Option<usize> {
    let pos = (o * stride + k * dilation).checked_sub(pad)?;
    (pos < len).then_some(pos)
}

/// Forward convolution `out[n,f,i,j] = b[f] + Σ_{c,u,v} w[f,c,u,v] · x_pad[n, g·Cg + c, i·sh + u·dh, j·sw + v·dw]`.
///
/// Errors as [`Conv2dGeometry::new`] does, and if `b` does not have `F` values.
///
/// ```
/// use cnn_kernels::{conv::{naive, Conv2dParams}, TensorView};
/// let x = [1.0f64, 2.0, 3.0, 4.0];
/// let w = [1.0f64, 1.0, 1.0, 1.0];
/// let out = naive::forward(
///     TensorView::new([1, 1, 2, 2], &x).unwrap(),
///     TensorView::new([1, 1, 2, 2], &w).unwrap(),
///     Some(&[0.5]),
///     &Conv2dParams::default(),
/// ).unwrap();
/// assert_eq!(out.data(), &[10.5]);
/// ```
pub fn forward<T: Float>(
    x: TensorView<'_, T>,
    w: TensorView<'_, T>,
    b: Option<&[T]>,
    p: &Conv2dParams,
) -> Result<Tensor<T>> {
    let g = Conv2dGeometry::new(x.shape(), w.shape(), p)?;
    if let Some(b) = b {
        g.check_bias(b.len())?;
    }
    let mut out = Tensor::zeros(g.out_shape())?;
    let (xd, wd) = (x.data(), w.data());
    let o = out.data_mut();
    let [sh, sw] = p.stride;
    let [ph, pw] = p.padding;
    let [dh, dw] = p.dilation;
    for n in 0..g.n {
        for f in 0..g.f {
            let grp = f / g.fg;
            for i in 0..g.oh {
                for j in 0..g.ow {
                    let mut acc = b.map_or(T::ZERO, |b| b[f]);
                    for cc in 0..g.cg {
                        let c = grp * g.cg + cc;
                        for u in 0..g.kh {
                            let Some(hi) = input_coord(i, u, sh, dh, ph, g.h) else {
                                continue;
                            };
                            for v in 0..g.kw {
                                let Some(wi) = input_coord(j, v, sw, dw, pw, g.w) else {
                                    continue;
                                };
                                acc += wd[((f * g.cg + cc) * g.kh + u) * g.kw + v]
                                    * xd[((n * g.c + c) * g.h + hi) * g.w + wi];
                            }
                        }
                    }
                    o[((n * g.f + f) * g.oh + i) * g.ow + j] = acc;
                }
            }
        }
    }
    Ok(out)
}

/// Backward convolution: `dx`, `dw` and `db` from the upstream gradient `dout`
/// `(N, F, OH, OW)` and the forward's inputs `x` and `w`.
///
/// `dx` is accumulated into the padded frame and cropped by the actual padding (taps that
/// land in the padding are simply skipped). Errors as [`forward`] does and if `dout` does not
/// have the output shape.
pub fn backward<T: Float>(
    dout: TensorView<'_, T>,
    x: TensorView<'_, T>,
    w: TensorView<'_, T>,
    p: &Conv2dParams,
) -> Result<Conv2dGrads<T>> {
    let g = Conv2dGeometry::new(x.shape(), w.shape(), p)?;
    g.check_dout(dout.shape())?;
    let mut dx = Tensor::zeros(g.x_shape())?;
    let mut dw = Tensor::zeros(g.w_shape())?;
    let mut db = vec![T::ZERO; g.f];
    let (xd, wd, dd) = (x.data(), w.data(), dout.data());
    let [sh, sw] = p.stride;
    let [ph, pw] = p.padding;
    let [dh, dwl] = p.dilation;
    {
        let dxd = dx.data_mut();
        let dwd = dw.data_mut();
        for n in 0..g.n {
            for f in 0..g.f {
                let grp = f / g.fg;
                for i in 0..g.oh {
                    for j in 0..g.ow {
                        let d = dd[((n * g.f + f) * g.oh + i) * g.ow + j];
                        db[f] += d;
                        for cc in 0..g.cg {
                            let c = grp * g.cg + cc;
                            for u in 0..g.kh {
                                let Some(hi) = input_coord(i, u, sh, dh, ph, g.h) else {
                                    continue;
                                };
                                for v in 0..g.kw {
                                    let Some(wi) = input_coord(j, v, sw, dwl, pw, g.w) else {
                                        continue;
                                    };
                                    let xi = ((n * g.c + c) * g.h + hi) * g.w + wi;
                                    let wi_ = ((f * g.cg + cc) * g.kh + u) * g.kw + v;
                                    dwd[wi_] += d * xd[xi];
                                    dxd[xi] += d * wd[wi_];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(Conv2dGrads { dx, dw, db })
}
