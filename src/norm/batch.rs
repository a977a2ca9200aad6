//! Fast batch norm (vanilla `(N, D)` and spatial `(N, C, H, W)`), forward and backward.
//!
//! Spatial: one rayon task per channel. A channel's statistics are reduced over leaves of at
//! most [`CHUNK`](super::kernels::CHUNK) elements of its `N` slabs with a fixed tree, and
//! the channel is normalised right after, while its `N·H·W` values are still in L2.
//! Vanilla `(N, D)` (and spatial with `H·W = 1`) uses the column-strip path of
//! [`super::rows`].

use rayon::prelude::*;

use super::kernels::{self, add2, par_for, tree, Moments, Segments, SharedMut, Strided, SLABS};
use super::{
    check_channels, check_dout, check_out_len, check_same_shape, rows, BatchNormCache,
    BatchNormGeometry, BatchNormMode, BatchNormParams, GradsOut, NormGrads,
};
use crate::alloc::{as_uninit_mut, assume_init_aligned, uninit_aligned, zeroed_vec, Out};
use crate::error::Result;
use crate::simd::{self, Level};
use crate::threads::min_len;
use crate::{Float, Shape, Tensor, TensorView, TensorViewMut};

const BN: &str = "batch_norm";
const SBN: &str = "spatial_batch_norm";

/// Fast batch norm forward on `x` `(N, D)`: returns `y` `(N, D)` and the cache for
/// [`batch_norm_backward`]. Same contract and errors as
/// [`naive::batch_norm_forward`](super::naive::batch_norm_forward): in train mode the
/// statistics are the batch mean and biased variance and `running_mean`/`running_var` are
/// updated as `momentum·running + (1 − momentum)·batch`; in test mode they are used and left
/// unchanged.
///
/// Deterministic: bitwise identical results for any rayon thread count (fixed reduction
/// tree). Results agree with the naive kernel to rounding; a constant column normalises to
/// exactly `β` when `eps > 0` (with `eps = 0` it gives NaN, as `0·∞`, like the naive kernel).
pub fn batch_norm_forward<T: Float>(
    x: TensorView<'_, T>,
    gamma: &[T],
    beta: &[T],
    running_mean: &mut [T],
    running_var: &mut [T],
    p: &BatchNormParams,
) -> Result<(Tensor<T>, BatchNormCache<T>)> {
    forward_alloc(BN, false, x, gamma, beta, running_mean, running_var, p)
}

/// Allocation-free [`batch_norm_forward`]: writes `y` (the shape of `x`) and `cache` (whose
/// `mean` and `inv_std` must already hold `D` values; its `mode` is set to `p.mode`).
///
/// Errors as [`batch_norm_forward`], and if `y` or the cache have the wrong size.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward_into<T: Float>(
    x: TensorView<'_, T>,
    gamma: &[T],
    beta: &[T],
    running_mean: &mut [T],
    running_var: &mut [T],
    p: &BatchNormParams,
    y: TensorViewMut<'_, T>,
    cache: &mut BatchNormCache<T>,
) -> Result<()> {
    forward_into(
        BN,
        false,
        x,
        gamma,
        beta,
        running_mean,
        running_var,
        p,
        y,
        cache,
    )
}

/// Fast batch norm backward on `(N, D)`: `dx`, `dγ`, `dβ`. Same contract and errors as
/// [`naive::batch_norm_backward`](super::naive::batch_norm_backward); deterministic for any
/// thread count.
pub fn batch_norm_backward<T: Float>(
    dout: TensorView<'_, T>,
    x: TensorView<'_, T>,
    gamma: &[T],
    cache: &BatchNormCache<T>,
) -> Result<NormGrads<T>> {
    backward_alloc(BN, false, dout, x, gamma, cache)
}

/// Allocation-free [`batch_norm_backward`]: writes `dx` (the shape of `x`), `dgamma` and
/// `dbeta` (`D` values each).
///
/// Errors as [`batch_norm_backward`], and if an output has the wrong size.
pub fn batch_norm_backward_into<T: Float>(
    dout: TensorView<'_, T>,
    x: TensorView<'_, T>,
    gamma: &[T],
    cache: &BatchNormCache<T>,
    dx: TensorViewMut<'_, T>,
    dgamma: &mut [T],
    dbeta: &mut [T],
) -> Result<()> {
    backward_into(BN, false, dout, x, gamma, cache, dx, dgamma, dbeta)
}

/// Fast spatial batch norm forward on `x` `(N, C, H, W)` (statistics per channel over
/// `N·H·W` values). Same contract as [`batch_norm_forward`] with `C` in place of `D`, and as
/// [`naive::spatial_batch_norm_forward`](super::naive::spatial_batch_norm_forward).
pub fn spatial_batch_norm_forward<T: Float>(
    x: TensorView<'_, T>,
    gamma: &[T],
    beta: &[T],
    running_mean: &mut [T],
    running_var: &mut [T],
    p: &BatchNormParams,
) -> Result<(Tensor<T>, BatchNormCache<T>)> {
    forward_alloc(SBN, true, x, gamma, beta, running_mean, running_var, p)
}

/// Allocation-free [`spatial_batch_norm_forward`]; see [`batch_norm_forward_into`].
#[allow(clippy::too_many_arguments)]
pub fn spatial_batch_norm_forward_into<T: Float>(
    x: TensorView<'_, T>,
    gamma: &[T],
    beta: &[T],
    running_mean: &mut [T],
    running_var: &mut [T],
    p: &BatchNormParams,
    y: TensorViewMut<'_, T>,
    cache: &mut BatchNormCache<T>,
) -> Result<()> {
    forward_into(
        SBN,
        true,
        x,
        gamma,
        beta,
        running_mean,
        running_var,
        p,
        y,
        cache,
    )
}

/// Fast spatial batch norm backward on `(N, C, H, W)`. Same contract as
/// [`batch_norm_backward`] and
/// [`naive::spatial_batch_norm_backward`](super::naive::spatial_batch_norm_backward).
pub fn spatial_batch_norm_backward<T: Float>(
    dout: TensorView<'_, T>,
    x: TensorView<'_, T>,
    gamma: &[T],
    cache: &BatchNormCache<T>,
) -> Result<NormGrads<T>> {
    backward_alloc(SBN, true, dout, x, gamma, cache)
}

/// Allocation-free [`spatial_batch_norm_backward`]; see [`batch_norm_backward_into`].
pub fn spatial_batch_norm_backward_into<T: Float>(
    dout: TensorView<'_, T>,
    x: TensorView<'_, T>,
    gamma: &[T],
    cache: &BatchNormCache<T>,
    dx: TensorViewMut<'_, T>,
    dgamma: &mut [T],
    dbeta: &mut [T],
) -> Result<()> {
    backward_into(SBN, true, dout, x, gamma, cache, dx, dgamma, dbeta)
}

#[allow(clippy::too_many_arguments)]
fn forward_alloc<T: Float>(
    op: &'static str,
    spatial: bool,
    x: TensorView<'_, T>,
    gamma: &[T],
    beta: &[T],
    running_mean: &mut [T],
    running_var: &mut [T],
    p: &BatchNormParams,
) -> Result<(Tensor<T>, BatchNormCache<T>)> {
    let c = gamma.len();
    let mut y = uninit_aligned(op, x.data().len())?;
    let mut cache = BatchNormCache {
        mode: p.mode,
        mean: zeroed_vec(op, c)?,
        inv_std: zeroed_vec(op, c)?,
    };
    let vecs = Vecs {
        gamma,
        beta,
        running_mean,
        running_var,
    };
    forward_checked(op, spatial, x, vecs, p, (x.shape(), &mut y), &mut cache)?;
    // SAFETY: `forward_checked` returned `Ok`, so it wrote every element of `y` (see
    // `forward_checked`).
    let y = unsafe { assume_init_aligned(y) };
    Ok((Tensor::from_aligned(x.shape(), y)?, cache))
}

/// The public `*_forward_into`: [`forward_checked`] on the caller's `y`.
#[allow(clippy::too_many_arguments)]
fn forward_into<T: Float>(
    op: &'static str,
    spatial: bool,
    x: TensorView<'_, T>,
    gamma: &[T],
    beta: &[T],
    running_mean: &mut [T],
    running_var: &mut [T],
    p: &BatchNormParams,
    y: TensorViewMut<'_, T>,
    cache: &mut BatchNormCache<T>,
) -> Result<()> {
    let shape = y.shape();
    // SAFETY: the kernels store only computed values through `Out` slots.
    let y = unsafe { as_uninit_mut(y.into_data()) };
    let vecs = Vecs {
        gamma,
        beta,
        running_mean,
        running_var,
    };
    forward_checked(op, spatial, x, vecs, p, (shape, y), cache)
}

/// Validates, then computes. On `Ok`, every element of `y` has been written: `y` has the
/// length of `x` (checked), [`rows::bn_forward`] covers it with row tasks that each write
/// every column strip, and [`forward_channels`] writes every leaf of every channel's `N`
/// slabs, which tile the tensor.
fn forward_checked<T: Float>(
    op: &'static str,
    spatial: bool,
    x: TensorView<'_, T>,
    vecs: Vecs<'_, T>,
    p: &BatchNormParams,
    (y_shape, y): (Shape, &mut [Out<T>]),
    cache: &mut BatchNormCache<T>,
) -> Result<()> {
    let g = BatchNormGeometry::new(
        op,
        x.shape(),
        spatial,
        [
            ("gamma", vecs.gamma.len()),
            ("beta", vecs.beta.len()),
            ("running_mean", vecs.running_mean.len()),
            ("running_var", vecs.running_var.len()),
        ],
        p,
    )?;
    check_same_shape(op, "y", y_shape, x.shape())?;
    check_out_len(op, "y", y.len(), x.data().len())?;
    g.check_cache(op, cache)?;
    cache.mode = p.mode;
    let lvl = simd::active_level();
    let (mean, inv_std) = (&mut cache.mean[..], &mut cache.inv_std[..]);
    if g.hw == 1 {
        rows::bn_forward(lvl, g.n, g.c, x.data(), vecs, p, y, mean, inv_std);
    } else {
        forward_channels(lvl, g, x.data(), vecs, p, y, mean, inv_std);
    }
    Ok(())
}

/// The per-channel vectors of a forward call.
pub(super) struct Vecs<'a, T> {
    pub gamma: &'a [T],
    pub beta: &'a [T],
    pub running_mean: &'a mut [T],
    pub running_var: &'a mut [T],
}

/// The batch (train) or running (test) mean and variance of one channel, updating the
/// running statistics in train mode.
pub(super) fn channel_stats<T: Float>(
    p: &BatchNormParams,
    rm: &mut T,
    rv: &mut T,
    batch: impl FnOnce() -> Moments,
) -> (f64, f64) {
    match p.mode {
        BatchNormMode::Train => {
            let mo = batch();
            let var = mo.var();
            let mom = p.momentum;
            *rm = T::from_f64(mom * rm.to_f64() + (1.0 - mom) * mo.mean);
            *rv = T::from_f64(mom * rv.to_f64() + (1.0 - mom) * var);
            (mo.mean, var)
        }
        BatchNormMode::Test => (rm.to_f64(), rv.to_f64()),
    }
}

#[allow(clippy::too_many_arguments)]
fn forward_channels<T: Float>(
    lvl: Level,
    g: BatchNormGeometry,
    x: &[T],
    v: Vecs<'_, T>,
    p: &BatchNormParams,
    y: &mut [Out<T>],
    mean: &mut [T],
    inv_std: &mut [T],
) {
    let ys = SharedMut::new(y);
    let (gamma, beta) = (v.gamma, v.beta);
    mean.par_iter_mut()
        .zip(inv_std.par_iter_mut())
        .zip(v.running_mean.par_iter_mut())
        .zip(v.running_var.par_iter_mut())
        .enumerate()
        .with_min_len(min_len(1))
        .for_each(|(ch, (((m_out, is_out), rm), rv))| {
            let segs = Segments::new(ch * g.hw, g.c * g.hw, g.n, g.hw);
            let (m, var) = channel_stats(p, rm, rv, || {
                tree(
                    0,
                    segs.stat_leaves(),
                    segs.stat_par_min(),
                    &|i| kernels::moments(lvl, x, segs.stat_leaf(i), segs.stat_next(i)),
                    &Moments::merge,
                )
            });
            let is = 1.0 / (var + p.eps).sqrt();
            let mt = T::from_f64(m);
            let a = T::from_f64(gamma[ch].to_f64() * is);
            *m_out = mt;
            *is_out = T::from_f64(is);
            let mab = [mt, a, beta[ch]];
            if segs.leaves() == g.n {
                // One leaf per slab (slabs of at most `CHUNK` values): up to `SLABS` slabs
                // per call, as the backward's `dx`. Against one call per slab (one thread,
                // report, alternating): (8, 256, 14, 14) 0.161 → 0.133–0.146 ms,
                // (8, 64, 56, 56) 0.571–0.592 → 0.514–0.561.
                // SAFETY: the leaves of channel `ch` lie in its slabs, which no other
                // channel's task touches.
                unsafe {
                    for_slabs(&segs, &ys, &|rs, outs| {
                        let mut xs = [&x[..0]; SLABS];
                        for (s, r) in xs.iter_mut().zip(rs) {
                            *s = &x[r.clone()];
                        }
                        kernels::affine_slabs(lvl, &xs[..rs.len()], outs, mab);
                    })
                };
                return;
            }
            par_for(0, segs.leaves(), segs.par_min(), &|i| {
                let r = segs.leaf(i);
                // SAFETY: leaf `i` of channel `ch` lies in slab (image, ch); leaves of one
                // channel are disjoint and the channels' slabs are disjoint, so no two live
                // pieces overlap.
                let out = unsafe { ys.piece(r.clone()) };
                // Prefetch the same leaf of the next channel (read by its statistics pass).
                let pf = &x[shifted(r.clone(), g.hw, x.len())];
                kernels::affine(lvl, &x[r], out, mab, pf);
            });
        });
}

fn backward_alloc<T: Float>(
    op: &'static str,
    spatial: bool,
    dout: TensorView<'_, T>,
    x: TensorView<'_, T>,
    gamma: &[T],
    cache: &BatchNormCache<T>,
) -> Result<NormGrads<T>> {
    let c = gamma.len();
    let mut dx = uninit_aligned(op, x.data().len())?;
    let mut dgamma = zeroed_vec(op, c)?;
    let mut dbeta = zeroed_vec(op, c)?;
    let outs = (x.shape(), &mut dx[..], &mut dgamma[..], &mut dbeta[..]);
    backward_checked(op, spatial, dout, x, gamma, cache, outs)?;
    // SAFETY: `backward_checked` returned `Ok`, so it wrote every element of `dx` (see
    // `backward_checked`).
    let dx = Tensor::from_aligned(x.shape(), unsafe { assume_init_aligned(dx) })?;
    Ok(NormGrads { dx, dgamma, dbeta })
}

/// The public `*_backward_into`: [`backward_checked`] on the caller's `dx`.
#[allow(clippy::too_many_arguments)]
fn backward_into<T: Float>(
    op: &'static str,
    spatial: bool,
    dout: TensorView<'_, T>,
    x: TensorView<'_, T>,
    gamma: &[T],
    cache: &BatchNormCache<T>,
    dx: TensorViewMut<'_, T>,
    dgamma: &mut [T],
    dbeta: &mut [T],
) -> Result<()> {
    let shape = dx.shape();
    // SAFETY: the kernels store only computed values through `Out` slots.
    let dx = unsafe { as_uninit_mut(dx.into_data()) };
    backward_checked(
        op,
        spatial,
        dout,
        x,
        gamma,
        cache,
        (shape, dx, dgamma, dbeta),
    )
}

/// Validates, then computes. On `Ok`, every element of `dx` has been written: it has the
/// length of `x` (checked), [`rows::bn_backward`] covers it with row tasks that each write
/// every column strip, and [`backward_channels`] writes every leaf of every channel's `N`
/// slabs, which tile the tensor.
fn backward_checked<T: Float>(
    op: &'static str,
    spatial: bool,
    dout: TensorView<'_, T>,
    x: TensorView<'_, T>,
    gamma: &[T],
    cache: &BatchNormCache<T>,
    (dx_shape, dx, dgamma, dbeta): GradsOut<'_, T>,
) -> Result<()> {
    let g = BatchNormGeometry::new(
        op,
        x.shape(),
        spatial,
        [("gamma", gamma.len()); 4],
        &BatchNormParams::default(),
    )?;
    check_dout(op, dout.shape(), x.shape())?;
    g.check_cache(op, cache)?;
    check_same_shape(op, "dx", dx_shape, x.shape())?;
    check_out_len(op, "dx", dx.len(), x.data().len())?;
    check_channels(op, "dgamma", dgamma.len(), g.c)?;
    check_channels(op, "dbeta", dbeta.len(), g.c)?;
    let lvl = simd::active_level();
    let (x, dy) = (x.data(), dout.data());
    if g.hw == 1 {
        rows::bn_backward(lvl, g.n, g.c, x, dy, gamma, cache, dx, dgamma, dbeta);
    } else {
        backward_channels(lvl, g, x, dy, gamma, cache, dx, dgamma, dbeta);
    }
    Ok(())
}

/// Runs `f` on the leaves of `segs` in batches of at most [`SLABS`] consecutive leaves (one
/// kernel call each), batches in parallel above the segments' parallel grain. `f` gets the
/// batch's leaf ranges and, for each, its piece of `out`.
///
/// # Safety
/// No piece of `out` that is alive during the call overlaps a leaf of `segs`.
unsafe fn for_slabs<T: Send, F>(segs: &Segments, out: &SharedMut<'_, T>, f: &F)
where
    F: Fn(&[std::ops::Range<usize>], &mut [&mut [T]]) + Sync,
{
    let n = segs.leaves();
    par_for(
        0,
        n.div_ceil(SLABS),
        (segs.par_min() / SLABS).max(1),
        &|b| {
            let leaves = b * SLABS..((b + 1) * SLABS).min(n);
            let mut rs: [std::ops::Range<usize>; SLABS] = Default::default();
            let mut outs: [&mut [T]; SLABS] = Default::default();
            for (j, i) in leaves.clone().enumerate() {
                rs[j] = segs.leaf(i);
                // SAFETY: the leaves of `segs` are disjoint and each batch takes distinct ones;
                // no other live piece overlaps them (caller).
                outs[j] = unsafe { out.piece(rs[j].clone()) };
            }
            f(&rs[..leaves.len()], &mut outs[..leaves.len()]);
        },
    );
}

/// `r` shifted by `by`, clamped to `len` (the same leaf of the next channel or group).
pub(super) fn shifted(r: std::ops::Range<usize>, by: usize, len: usize) -> std::ops::Range<usize> {
    (r.start + by).min(len)..(r.end + by).min(len)
}

/// `[m, k1, k2, k0]` of `dx = k1·dy + k2·(x − m) + k0` for train-mode backward, from
/// `sd = Σ dy`, `sdx = Σ dy·(x − m)` over `count` values.
pub(super) fn dx_coefs<T: Float>(
    m: T,
    gamma: f64,
    is: f64,
    sd: f64,
    sdx: f64,
    count: f64,
) -> [T; 4] {
    // dx = γ·is/N · (N·dy − Σdy − x̂·Σ(dy·x̂)), x̂ = (x − m)·is, Σ(dy·x̂) = is·sdx.
    let k1 = gamma * is;
    [
        m,
        T::from_f64(k1),
        T::from_f64(-k1 * is * (is * sdx) / count),
        T::from_f64(-k1 * sd / count),
    ]
}

#[allow(clippy::too_many_arguments)]
fn backward_channels<T: Float>(
    lvl: Level,
    g: BatchNormGeometry,
    x: &[T],
    dy: &[T],
    gamma: &[T],
    cache: &BatchNormCache<T>,
    dx: &mut [Out<T>],
    dgamma: &mut [T],
    dbeta: &mut [T],
) {
    let dxs = SharedMut::new(dx);
    let count = g.count() as f64;
    dgamma
        .par_iter_mut()
        .zip(dbeta.par_iter_mut())
        .enumerate()
        .with_min_len(min_len(1))
        .for_each(|(ch, (dg, db))| {
            let segs = Segments::new(ch * g.hw, g.c * g.hw, g.n, g.hw);
            let m = cache.mean[ch];
            let is = cache.inv_std[ch].to_f64();
            let (sd, sdx) = tree(
                0,
                segs.stat_leaves(),
                segs.stat_par_min(),
                &|i| kernels::dot_sums(lvl, x, dy, m, segs.stat_leaf(i), Strided::EMPTY),
                &add2,
            );
            *db = T::from_f64(sd);
            *dg = T::from_f64(is * sdx);
            let gm = gamma[ch].to_f64();
            let k = dx_coefs(m, gm, is, sd, sdx, count);
            // SAFETY: the leaves of channel `ch` lie in its slabs, which no other channel's
            // task touches.
            unsafe {
                for_slabs(&segs, &dxs, &|rs, outs| {
                    let (mut xs, mut dys) = ([&x[..0]; SLABS], [&x[..0]; SLABS]);
                    for ((xv, dv), r) in xs.iter_mut().zip(dys.iter_mut()).zip(rs) {
                        *xv = &x[r.clone()];
                        *dv = &dy[r.clone()];
                    }
                    let (xs, dys) = (&xs[..rs.len()], &dys[..rs.len()]);
                    match cache.mode {
                        BatchNormMode::Train => kernels::dx_slabs(lvl, xs, dys, outs, k),
                        // The statistics are constants in test mode: dx = γ·inv_std·dy.
                        BatchNormMode::Test => {
                            for (o, d) in outs.iter_mut().zip(dys) {
                                kernels::scale(lvl, d, o, k[1]);
                            }
                        }
                    }
                })
            };
        });
}
