//! Reference batch and group norm: the textbook formulas as plain loops, with sums taken
//! in `f64` (a two-pass mean and variance, never `E[x²] − E[x]²`). Spatial batch norm is
//! defined through vanilla batch norm by viewing `(N, C, H, W)` as `(N·H·W, C)`, as in
//! CS231n.

use super::{
    check_dout, BatchNormCache, BatchNormGeometry, BatchNormMode, BatchNormParams, GroupNormCache,
    GroupNormGeometry, GroupNormParams, NormGrads,
};
use crate::error::Result;
use crate::{Float, Tensor, TensorView};

const BN: &str = "batch_norm";
const SBN: &str = "spatial_batch_norm";
const GN: &str = "group_norm";

/// Batch norm forward on `x` `(N, D)`; returns `y` `(N, D)` and the cache for
/// [`batch_norm_backward`]. In train mode `running_mean` and `running_var` are updated
/// (CS231n momentum, biased variance); in test mode they are used and left unchanged.
///
/// Errors if `x` is not 2-d or is empty, if `gamma`, `beta`, `running_mean` or `running_var`
/// does not have `D` values, if eps is negative or not finite, or if momentum is outside
/// `[0, 1]`.
///
/// ```
/// use cnn_kernels::{norm::{naive, BatchNormParams}, TensorView};
/// let x = [1.0f64, 3.0];
/// let (mut rm, mut rv) = ([0.0], [1.0]);
/// let (y, _cache) = naive::batch_norm_forward(
///     TensorView::new([2, 1], &x).unwrap(), &[1.0], &[0.0], &mut rm, &mut rv,
///     &BatchNormParams::default().eps(0.0),
/// ).unwrap();
/// assert_eq!(y.data(), &[-1.0, 1.0]);
/// assert!((rm[0] - 0.2).abs() < 1e-12); // 0.9·0 + 0.1·2
/// ```
pub fn batch_norm_forward<T: Float>(
    x: TensorView<'_, T>,
    gamma: &[T],
    beta: &[T],
    running_mean: &mut [T],
    running_var: &mut [T],
    p: &BatchNormParams,
) -> Result<(Tensor<T>, BatchNormCache<T>)> {
    let g = bn_geometry(BN, x, false, gamma, beta, running_mean, running_var, p)?;
    bn_forward_2d(
        x.data(),
        g.n,
        g.c,
        gamma,
        beta,
        running_mean,
        running_var,
        p,
    )
    .map(|(y, cache)| {
        (
            Tensor::from_vec(x.shape(), y).expect("same length as x"),
            cache,
        )
    })
}

/// Batch norm backward on `(N, D)`: `dx`, `dγ`, `dβ` from `dout`, the forward's `x` and
/// `gamma`, and its cache. Train mode includes the batch statistics' dependence on `x`.
///
/// Errors if `dout` and `x` differ in shape, or `gamma` or the cache do not have `D` values.
pub fn batch_norm_backward<T: Float>(
    dout: TensorView<'_, T>,
    x: TensorView<'_, T>,
    gamma: &[T],
    cache: &BatchNormCache<T>,
) -> Result<NormGrads<T>> {
    let g = bn_backward_geometry(BN, dout, x, false, gamma, cache)?;
    let (dx, dgamma, dbeta) = bn_backward_2d(dout.data(), x.data(), g.n, g.c, gamma, cache);
    Ok(NormGrads {
        dx: Tensor::from_vec(x.shape(), dx)?,
        dgamma,
        dbeta,
    })
}

/// Spatial batch norm forward on `x` `(N, C, H, W)`: batch norm per channel over `N·H·W`
/// values. Same contract as [`batch_norm_forward`] with `C` in place of `D`.
pub fn spatial_batch_norm_forward<T: Float>(
    x: TensorView<'_, T>,
    gamma: &[T],
    beta: &[T],
    running_mean: &mut [T],
    running_var: &mut [T],
    p: &BatchNormParams,
) -> Result<(Tensor<T>, BatchNormCache<T>)> {
    let g = bn_geometry(SBN, x, true, gamma, beta, running_mean, running_var, p)?;
    let rows = nchw_to_rows(x.data(), g.n, g.c, g.hw);
    let (y, cache) = bn_forward_2d(
        &rows,
        g.count(),
        g.c,
        gamma,
        beta,
        running_mean,
        running_var,
        p,
    )?;
    Ok((
        Tensor::from_vec(x.shape(), rows_to_nchw(&y, g.n, g.c, g.hw))?,
        cache,
    ))
}

/// Spatial batch norm backward on `(N, C, H, W)`. Same contract as [`batch_norm_backward`].
pub fn spatial_batch_norm_backward<T: Float>(
    dout: TensorView<'_, T>,
    x: TensorView<'_, T>,
    gamma: &[T],
    cache: &BatchNormCache<T>,
) -> Result<NormGrads<T>> {
    let g = bn_backward_geometry(SBN, dout, x, true, gamma, cache)?;
    let drows = nchw_to_rows(dout.data(), g.n, g.c, g.hw);
    let xrows = nchw_to_rows(x.data(), g.n, g.c, g.hw);
    let (dx, dgamma, dbeta) = bn_backward_2d(&drows, &xrows, g.count(), g.c, gamma, cache);
    Ok(NormGrads {
        dx: Tensor::from_vec(x.shape(), rows_to_nchw(&dx, g.n, g.c, g.hw))?,
        dgamma,
        dbeta,
    })
}

/// Spatial group norm forward on `x` `(N, C, H, W)`: each image's channels are split into
/// `p.groups` groups normalised over their `C/G·H·W` values (biased variance), then scaled
/// and shifted per channel.
///
/// Errors if `x` is not 4-d or is empty, groups is 0 or does not divide C, `gamma` or
/// `beta` does not have C values, or eps is negative or not finite.
pub fn group_norm_forward<T: Float>(
    x: TensorView<'_, T>,
    gamma: &[T],
    beta: &[T],
    p: &GroupNormParams,
) -> Result<(Tensor<T>, GroupNormCache<T>)> {
    let g = GroupNormGeometry::new(GN, x.shape(), p.groups, gamma.len(), beta.len())?;
    super::check_eps(GN, p.eps)?;
    let len = g.group_len();
    let mut y = vec![T::ZERO; x.data().len()];
    let mut mean = Vec::with_capacity(g.n * g.groups);
    let mut inv_std = Vec::with_capacity(g.n * g.groups);
    for (ng, (xs, ys)) in x
        .data()
        .chunks_exact(len)
        .zip(y.chunks_exact_mut(len))
        .enumerate()
    {
        let m = xs.iter().map(|v| v.to_f64()).sum::<f64>() / len as f64;
        let var = xs.iter().map(|v| (v.to_f64() - m).powi(2)).sum::<f64>() / len as f64;
        let is = 1.0 / (var + p.eps).sqrt();
        let first_c = (ng % g.groups) * g.cg;
        for (k, (xv, yv)) in xs.iter().zip(ys.iter_mut()).enumerate() {
            let c = first_c + k / g.hw;
            *yv = T::from_f64(gamma[c].to_f64() * (xv.to_f64() - m) * is + beta[c].to_f64());
        }
        mean.push(T::from_f64(m));
        inv_std.push(T::from_f64(is));
    }
    let cache = GroupNormCache {
        groups: g.groups,
        mean,
        inv_std,
    };
    Ok((Tensor::from_vec(x.shape(), y)?, cache))
}

/// Spatial group norm backward: `dx`, `dγ`, `dβ` from `dout`, the forward's `x` and `gamma`,
/// and its cache (whose inverse std already holds the forward's eps).
///
/// Errors if `dout` and `x` differ in shape, `gamma` does not have C values, or the cache
/// does not match `x`.
pub fn group_norm_backward<T: Float>(
    dout: TensorView<'_, T>,
    x: TensorView<'_, T>,
    gamma: &[T],
    cache: &GroupNormCache<T>,
) -> Result<NormGrads<T>> {
    let g = GroupNormGeometry::new(GN, x.shape(), cache.groups, gamma.len(), gamma.len())?;
    check_dout(GN, dout.shape(), x.shape())?;
    g.check_cache(GN, cache)?;
    let len = g.group_len();
    let mut dx = vec![T::ZERO; x.data().len()];
    let mut dgamma = vec![0.0f64; g.c];
    let mut dbeta = vec![0.0f64; g.c];
    let chunks = x
        .data()
        .chunks_exact(len)
        .zip(dout.data().chunks_exact(len));
    for (ng, ((xs, ds), dxs)) in chunks.zip(dx.chunks_exact_mut(len)).enumerate() {
        let (m, is) = (cache.mean[ng].to_f64(), cache.inv_std[ng].to_f64());
        let first_c = (ng % g.groups) * g.cg;
        let (mut sum_dxhat, mut sum_dxhat_xhat) = (0.0, 0.0);
        for (k, (xv, dv)) in xs.iter().zip(ds).enumerate() {
            let c = first_c + k / g.hw;
            let xhat = (xv.to_f64() - m) * is;
            let dxhat = dv.to_f64() * gamma[c].to_f64();
            sum_dxhat += dxhat;
            sum_dxhat_xhat += dxhat * xhat;
            dgamma[c] += dv.to_f64() * xhat;
            dbeta[c] += dv.to_f64();
        }
        let lf = len as f64;
        for (k, ((xv, dv), dxv)) in xs.iter().zip(ds).zip(dxs.iter_mut()).enumerate() {
            let c = first_c + k / g.hw;
            let xhat = (xv.to_f64() - m) * is;
            let dxhat = dv.to_f64() * gamma[c].to_f64();
            *dxv = T::from_f64(is / lf * (lf * dxhat - sum_dxhat - xhat * sum_dxhat_xhat));
        }
    }
    Ok(NormGrads {
        dx: Tensor::from_vec(x.shape(), dx)?,
        dgamma: dgamma.into_iter().map(T::from_f64).collect(),
        dbeta: dbeta.into_iter().map(T::from_f64).collect(),
    })
}

#[allow(clippy::too_many_arguments)]
fn bn_geometry<T: Float>(
    op: &'static str,
    x: TensorView<'_, T>,
    spatial: bool,
    gamma: &[T],
    beta: &[T],
    running_mean: &[T],
    running_var: &[T],
    p: &BatchNormParams,
) -> Result<BatchNormGeometry> {
    BatchNormGeometry::new(
        op,
        x.shape(),
        spatial,
        [
            ("gamma", gamma.len()),
            ("beta", beta.len()),
            ("running_mean", running_mean.len()),
            ("running_var", running_var.len()),
        ],
        p,
    )
}

fn bn_backward_geometry<T: Float>(
    op: &'static str,
    dout: TensorView<'_, T>,
    x: TensorView<'_, T>,
    spatial: bool,
    gamma: &[T],
    cache: &BatchNormCache<T>,
) -> Result<BatchNormGeometry> {
    let g = BatchNormGeometry::new(
        op,
        x.shape(),
        spatial,
        [("gamma", gamma.len()); 4],
        &BatchNormParams::default(),
    )?;
    check_dout(op, dout.shape(), x.shape())?;
    g.check_cache(op, cache)?;
    Ok(g)
}

/// `(N, C, HW)` → `(N·HW, C)`.
fn nchw_to_rows<T: Float>(x: &[T], n: usize, c: usize, hw: usize) -> Vec<T> {
    let mut rows = vec![T::ZERO; x.len()];
    for i in 0..n {
        for ch in 0..c {
            for s in 0..hw {
                rows[(i * hw + s) * c + ch] = x[(i * c + ch) * hw + s];
            }
        }
    }
    rows
}

/// `(N·HW, C)` → `(N, C, HW)`.
fn rows_to_nchw<T: Float>(rows: &[T], n: usize, c: usize, hw: usize) -> Vec<T> {
    let mut x = vec![T::ZERO; rows.len()];
    for i in 0..n {
        for ch in 0..c {
            for s in 0..hw {
                x[(i * c + ch) * hw + s] = rows[(i * hw + s) * c + ch];
            }
        }
    }
    x
}

/// Vanilla batch norm forward on row-major `(rows, d)` data.
#[allow(clippy::too_many_arguments)]
fn bn_forward_2d<T: Float>(
    x: &[T],
    rows: usize,
    d: usize,
    gamma: &[T],
    beta: &[T],
    running_mean: &mut [T],
    running_var: &mut [T],
    p: &BatchNormParams,
) -> Result<(Vec<T>, BatchNormCache<T>)> {
    let mut y = vec![T::ZERO; x.len()];
    let mut mean = vec![T::ZERO; d];
    let mut inv_std = vec![T::ZERO; d];
    for j in 0..d {
        let column = || (0..rows).map(|i| x[i * d + j].to_f64());
        let (m, var) = match p.mode {
            BatchNormMode::Train => {
                let m = column().sum::<f64>() / rows as f64;
                let var = column().map(|v| (v - m).powi(2)).sum::<f64>() / rows as f64;
                let mom = p.momentum;
                running_mean[j] = T::from_f64(mom * running_mean[j].to_f64() + (1.0 - mom) * m);
                running_var[j] = T::from_f64(mom * running_var[j].to_f64() + (1.0 - mom) * var);
                (m, var)
            }
            BatchNormMode::Test => (running_mean[j].to_f64(), running_var[j].to_f64()),
        };
        let is = 1.0 / (var + p.eps).sqrt();
        for i in 0..rows {
            let xhat = (x[i * d + j].to_f64() - m) * is;
            y[i * d + j] = T::from_f64(gamma[j].to_f64() * xhat + beta[j].to_f64());
        }
        mean[j] = T::from_f64(m);
        inv_std[j] = T::from_f64(is);
    }
    Ok((
        y,
        BatchNormCache {
            mode: p.mode,
            mean,
            inv_std,
        },
    ))
}

/// Vanilla batch norm backward on row-major `(rows, d)` data.
fn bn_backward_2d<T: Float>(
    dout: &[T],
    x: &[T],
    rows: usize,
    d: usize,
    gamma: &[T],
    cache: &BatchNormCache<T>,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let mut dx = vec![T::ZERO; x.len()];
    let mut dgamma = vec![T::ZERO; d];
    let mut dbeta = vec![T::ZERO; d];
    let nf = rows as f64;
    for j in 0..d {
        let (m, is, gm) = (
            cache.mean[j].to_f64(),
            cache.inv_std[j].to_f64(),
            gamma[j].to_f64(),
        );
        let (mut sum_d, mut sum_d_xhat) = (0.0, 0.0);
        for i in 0..rows {
            let dv = dout[i * d + j].to_f64();
            sum_d += dv;
            sum_d_xhat += dv * (x[i * d + j].to_f64() - m) * is;
        }
        for i in 0..rows {
            let dv = dout[i * d + j].to_f64();
            let xhat = (x[i * d + j].to_f64() - m) * is;
            dx[i * d + j] = T::from_f64(match cache.mode {
                // dx = γ·inv_std/N · (N·dy − Σdy − x̂·Σ(dy·x̂))
                BatchNormMode::Train => gm * is / nf * (nf * dv - sum_d - xhat * sum_d_xhat),
                // The statistics are constants in test mode.
                BatchNormMode::Test => gm * is * dv,
            });
        }
        dgamma[j] = T::from_f64(sum_d_xhat);
        dbeta[j] = T::from_f64(sum_d);
    }
    (dx, dgamma, dbeta)
}
