//! Batch norm on row-major `(N, D)` data (vanilla batch norm, and spatial with `H·W = 1`):
//! the statistics of a column are strided, so the kernels work on strips of [`STRIP`]
//! columns, vectorised across columns, and blocks of [`ROWS`] rows.
//!
//! Phase 1 (one rayon task per strip): per-column moments (or backward sums) of each row
//! block, combined over the blocks with the fixed tree of [`kernels::tree`]. Phase 2 (rayon
//! tasks over whole rows): the element-wise output. Deterministic for any thread count.

use rayon::prelude::*;

use super::batch::{channel_stats, Vecs};
use super::kernels::{tree, Moments, Out, CHUNK};
use super::{BatchNormCache, BatchNormMode, BatchNormParams};
use crate::simd::Level;
use crate::threads::min_len;
use crate::Float;

/// Columns per strip.
const STRIP: usize = 64;
/// Rows per leaf block (a leaf covers at most `STRIP · ROWS = CHUNK` values).
const ROWS: usize = CHUNK / STRIP;
/// Elements per phase-2 task (whole rows, at least one).
const TASK: usize = 1 << 14;
/// Leaf blocks per forking subtree in phase 1.
const PAR_BLOCKS: usize = 32;

/// Per-column moments of one strip over some rows (`n` rows).
#[derive(Clone, Copy)]
pub(super) struct ColMoments {
    n: f64,
    mean: [f64; STRIP],
    m2: [f64; STRIP],
}

impl ColMoments {
    fn merge(a: ColMoments, b: ColMoments) -> ColMoments {
        let mut out = a;
        out.n = a.n + b.n;
        for j in 0..STRIP {
            let m = Moments::merge(
                Moments {
                    n: a.n,
                    mean: a.mean[j],
                    m2: a.m2[j],
                },
                Moments {
                    n: b.n,
                    mean: b.mean[j],
                    m2: b.m2[j],
                },
            );
            out.mean[j] = m.mean;
            out.m2[j] = m.m2;
        }
        out
    }
}

/// Per-column `(Σ dy, Σ dy·(x − m))` of one strip over some rows.
#[derive(Clone, Copy)]
pub(super) struct ColSums {
    sd: [f64; STRIP],
    sdx: [f64; STRIP],
}

impl ColSums {
    fn merge(a: ColSums, b: ColSums) -> ColSums {
        let mut out = a;
        for j in 0..STRIP {
            out.sd[j] += b.sd[j];
            out.sdx[j] += b.sdx[j];
        }
        out
    }
}

/// Moments of columns `j0..j0 + w` over rows `r0..r1` (non-empty) of `x` with `d` columns:
/// pivot from the first row plus the mean deviation from it, then sums about the pivot.
#[inline(always)]
fn col_moments_body<T: Float, const L: usize>(
    x: &[T],
    d: usize,
    j0: usize,
    w: usize,
    rows: (usize, usize),
) -> ColMoments {
    let (r0, r1) = rows;
    let cnt = (r1 - r0) as f64;
    let row = |r: usize| &x[r * d + j0..r * d + j0 + w];
    let mut x0 = [T::ZERO; STRIP];
    x0[..w].copy_from_slice(row(r0));
    let mut a = [T::ZERO; STRIP];
    for r in r0..r1 {
        for ((acc, &v), &z) in a[..w].iter_mut().zip(row(r)).zip(&x0[..w]) {
            *acc += v - z;
        }
    }
    let mut p = [T::ZERO; STRIP];
    for j in 0..w {
        p[j] = T::from_f64(x0[j].to_f64() + a[j].to_f64() / cnt);
    }
    let (mut ds, mut ss) = ([T::ZERO; STRIP], [T::ZERO; STRIP]);
    for r in r0..r1 {
        for (((dv, sv), &v), &pv) in ds[..w]
            .iter_mut()
            .zip(ss[..w].iter_mut())
            .zip(row(r))
            .zip(&p[..w])
        {
            let t = v - pv;
            *dv += t;
            *sv += t * t;
        }
    }
    let mut out = ColMoments {
        n: cnt,
        mean: [0.0; STRIP],
        m2: [0.0; STRIP],
    };
    for j in 0..w {
        let (dj, sj) = (ds[j].to_f64(), ss[j].to_f64());
        let m2 = sj - dj * dj / cnt;
        let mut mo = Moments {
            n: cnt,
            mean: p[j].to_f64() + dj / cnt,
            m2: if m2 < 0.0 { 0.0 } else { m2 },
        };
        if !(p[j].is_finite() && mo.is_finite()) {
            mo = Moments::exact((r0..r1).map(|r| x[r * d + j0 + j]));
        }
        out.mean[j] = mo.mean;
        out.m2[j] = mo.m2;
    }
    out
}

dispatch!(
    /// Per-column moments of a strip over a block of rows.
    fn col_moments => col_moments_body(x: &[T], d: usize, j0: usize, w: usize, rows: (usize, usize)) -> ColMoments
);

#[inline(always)]
fn col_sums_body<T: Float, const L: usize>(
    x: &[T],
    dy: &[T],
    d: usize,
    (j0, w): (usize, usize),
    rows: (usize, usize),
    mean: &[T],
) -> ColSums {
    let (mut sd, mut sdx) = ([T::ZERO; STRIP], [T::ZERO; STRIP]);
    for r in rows.0..rows.1 {
        let o = r * d + j0;
        let it = sd[..w]
            .iter_mut()
            .zip(sdx[..w].iter_mut())
            .zip(&x[o..o + w])
            .zip(&dy[o..o + w])
            .zip(&mean[..w]);
        for ((((a, b), &xv), &dv), &m) in it {
            *a += dv;
            *b += dv * (xv - m);
        }
    }
    let mut out = ColSums {
        sd: [0.0; STRIP],
        sdx: [0.0; STRIP],
    };
    for j in 0..w {
        out.sd[j] = sd[j].to_f64();
        out.sdx[j] = sdx[j].to_f64();
        if !(out.sd[j].is_finite() && out.sdx[j].is_finite()) {
            // A product dy·(x − m) or a sum overflowed `T` (or the data is not finite): redo
            // the column in `f64`, as the naive kernels do (and as the moments fall back).
            let (m, (mut a, mut b)) = (mean[j].to_f64(), (0.0, 0.0));
            for r in rows.0..rows.1 {
                let dv = dy[r * d + j0 + j].to_f64();
                a += dv;
                b += dv * (x[r * d + j0 + j].to_f64() - m);
            }
            (out.sd[j], out.sdx[j]) = (a, b);
        }
    }
    out
}

dispatch!(
    /// Per-column `(Σ dy, Σ dy·(x − m))` of a strip over a block of rows.
    fn col_sums => col_sums_body(x: &[T], dy: &[T], d: usize, cols: (usize, usize), rows: (usize, usize), mean: &[T]) -> ColSums
);

/// `y = (x − m)·a + b` on columns `j0..j0 + w` of whole rows of `d` columns, with
/// per-column `[m, a, b]` (`w` values each).
#[inline(always)]
fn rows_affine_body<T: Float, const L: usize>(
    x: &[T],
    y: &mut [Out<T>],
    (d, j0): (usize, usize),
    coef: [&[T]; 3],
) {
    let [m, a, b] = coef;
    let w = m.len();
    let (a, b) = (&a[..w], &b[..w]);
    for (xr, yr) in x[..y.len()].chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let (xr, yr) = (&xr[j0..j0 + w], &mut yr[j0..j0 + w]);
        for ((((yv, &xv), &mv), &av), &bv) in yr.iter_mut().zip(xr).zip(m).zip(a).zip(b) {
            *yv = Out::new((xv - mv) * av + bv);
        }
    }
}

dispatch!(
    /// Per-column affine map of a strip of whole rows.
    fn rows_affine => rows_affine_body(x: &[T], y: &mut [Out<T>], cols: (usize, usize), coef: [&[T]; 3])
);

/// `dx = k1·dy + k2·(x − m) + k0` on columns `j0..j0 + w` of whole rows, with per-column
/// `[m, k1, k2, k0]`.
#[inline(always)]
fn rows_dx_body<T: Float, const L: usize>(
    x: &[T],
    dy: &[T],
    dx: &mut [Out<T>],
    (d, j0): (usize, usize),
    k: [&[T]; 4],
) {
    let [m, k1, k2, k0] = k;
    let w = m.len();
    let (k1, k2, k0) = (&k1[..w], &k2[..w], &k0[..w]);
    let (x, dy) = (&x[..dx.len()], &dy[..dx.len()]);
    let rows = x.chunks_exact(d).zip(dy.chunks_exact(d));
    for ((xr, dr), or) in rows.zip(dx.chunks_exact_mut(d)) {
        let (xr, dr, or) = (&xr[j0..j0 + w], &dr[j0..j0 + w], &mut or[j0..j0 + w]);
        let it = or.iter_mut().zip(xr).zip(dr).zip(m).zip(k1).zip(k2).zip(k0);
        for ((((((o, &xv), &dv), &mv), &a), &b), &c) in it {
            *o = Out::new(a * dv + (b * (xv - mv) + c));
        }
    }
}

dispatch!(
    /// Per-column train-mode `dx` of a strip of whole rows.
    fn rows_dx => rows_dx_body(x: &[T], dy: &[T], dx: &mut [Out<T>], cols: (usize, usize), k: [&[T]; 4])
);

/// `dx = k1·dy` on columns `j0..j0 + w` of whole rows, with per-column `k1`.
#[inline(always)]
fn rows_scale_body<T: Float, const L: usize>(
    dy: &[T],
    dx: &mut [Out<T>],
    (d, j0): (usize, usize),
    k1: &[T],
) {
    let w = k1.len();
    for (dr, or) in dy[..dx.len()].chunks_exact(d).zip(dx.chunks_exact_mut(d)) {
        let (dr, or) = (&dr[j0..j0 + w], &mut or[j0..j0 + w]);
        for ((o, &dv), &a) in or.iter_mut().zip(dr).zip(k1) {
            *o = Out::new(a * dv);
        }
    }
}

dispatch!(
    /// Per-column test-mode `dx` of a strip of whole rows.
    fn rows_scale => rows_scale_body(dy: &[T], dx: &mut [Out<T>], cols: (usize, usize), k1: &[T])
);

fn blocks(n: usize) -> usize {
    n.div_ceil(ROWS)
}

fn block(n: usize, b: usize) -> (usize, usize) {
    (b * ROWS, ((b + 1) * ROWS).min(n))
}

/// Rows per phase-2 task.
fn task_rows(d: usize) -> usize {
    (TASK / d).max(1)
}

/// Forward on `(n, d)`; `mean` and `inv_std` receive the cache.
#[allow(clippy::too_many_arguments)]
pub(super) fn bn_forward<T: Float>(
    lvl: Level,
    n: usize,
    d: usize,
    x: &[T],
    v: Vecs<'_, T>,
    p: &BatchNormParams,
    y: &mut [Out<T>],
    mean: &mut [T],
    inv_std: &mut [T],
) {
    mean.par_chunks_mut(STRIP)
        .zip(inv_std.par_chunks_mut(STRIP))
        .zip(v.running_mean.par_chunks_mut(STRIP))
        .zip(v.running_var.par_chunks_mut(STRIP))
        .enumerate()
        .with_min_len(min_len(1))
        .for_each(|(s, (((ms, iss), rms), rvs))| {
            let (j0, w) = (s * STRIP, ms.len());
            let cm = match p.mode {
                BatchNormMode::Train => Some(tree(
                    0,
                    blocks(n),
                    PAR_BLOCKS,
                    &|b| col_moments(lvl, x, d, j0, w, block(n, b)),
                    &ColMoments::merge,
                )),
                BatchNormMode::Test => None,
            };
            for j in 0..w {
                let (m, var) = channel_stats(p, &mut rms[j], &mut rvs[j], || {
                    let cm = cm.as_ref().expect("train mode computed the moments");
                    Moments {
                        n: cm.n,
                        mean: cm.mean[j],
                        m2: cm.m2[j],
                    }
                });
                let is = 1.0 / (var + p.eps).sqrt();
                ms[j] = T::from_f64(m);
                iss[j] = T::from_f64(is);
            }
        });
    // The per-column `a = γ·inv_std` is formed in `T` from the cache (no workspace).
    let (mean, inv_std) = (&*mean, &*inv_std);
    let tr = task_rows(d);
    x.par_chunks(tr * d)
        .zip(y.par_chunks_mut(tr * d))
        .with_min_len(min_len(1))
        .for_each(|(xs, ys)| {
            let mut a = [T::ZERO; STRIP];
            for j0 in (0..d).step_by(STRIP) {
                let w = STRIP.min(d - j0);
                for j in 0..w {
                    a[j] = v.gamma[j0 + j] * inv_std[j0 + j];
                }
                let cols = j0..j0 + w;
                let coef = [&mean[cols.clone()], &a[..w], &v.beta[cols]];
                rows_affine(lvl, xs, ys, (d, j0), coef);
            }
        });
}

/// Backward on `(n, d)`.
#[allow(clippy::too_many_arguments)]
pub(super) fn bn_backward<T: Float>(
    lvl: Level,
    n: usize,
    d: usize,
    x: &[T],
    dy: &[T],
    gamma: &[T],
    cache: &BatchNormCache<T>,
    dx: &mut [Out<T>],
    dgamma: &mut [T],
    dbeta: &mut [T],
) {
    let (mean, inv_std) = (&cache.mean[..], &cache.inv_std[..]);
    dgamma
        .par_chunks_mut(STRIP)
        .zip(dbeta.par_chunks_mut(STRIP))
        .enumerate()
        .with_min_len(min_len(1))
        .for_each(|(s, (dgs, dbs))| {
            let (j0, w) = (s * STRIP, dgs.len());
            let cs = tree(
                0,
                blocks(n),
                PAR_BLOCKS,
                &|b| col_sums(lvl, x, dy, d, (j0, w), block(n, b), &mean[j0..j0 + w]),
                &ColSums::merge,
            );
            for j in 0..w {
                dbs[j] = T::from_f64(cs.sd[j]);
                dgs[j] = T::from_f64(inv_std[j0 + j].to_f64() * cs.sdx[j]);
            }
        });
    let (dgamma, dbeta) = (&*dgamma, &*dbeta);
    let cnt = n as f64;
    let tr = task_rows(d);
    x.par_chunks(tr * d)
        .zip(dy.par_chunks(tr * d))
        .zip(dx.par_chunks_mut(tr * d))
        .with_min_len(min_len(1))
        .for_each(|((xs, dys), dxs)| {
            let (mut k1, mut k2, mut k0) = ([T::ZERO; STRIP], [T::ZERO; STRIP], [T::ZERO; STRIP]);
            for j0 in (0..d).step_by(STRIP) {
                let w = STRIP.min(d - j0);
                for j in 0..w {
                    let c = j0 + j;
                    let (g, is) = (gamma[c].to_f64(), inv_std[c].to_f64());
                    // As `batch::dx_coefs`, with Σdy = dβ and is·Σdy·(x − m) = dγ.
                    k1[j] = T::from_f64(g * is);
                    k2[j] = T::from_f64(-g * is * is * dgamma[c].to_f64() / cnt);
                    k0[j] = T::from_f64(-g * is * dbeta[c].to_f64() / cnt);
                }
                match cache.mode {
                    BatchNormMode::Train => {
                        let k = [&mean[j0..j0 + w], &k1[..w], &k2[..w], &k0[..w]];
                        rows_dx(lvl, xs, dys, dxs, (d, j0), k);
                    }
                    BatchNormMode::Test => rows_scale(lvl, dys, dxs, (d, j0), &k1[..w]),
                }
            }
        });
}
