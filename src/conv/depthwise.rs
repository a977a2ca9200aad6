//! Direct kernels for depthwise convolutions (`groups == C`: one input channel per group,
//! `F / C` filters per channel), instead of `C` tiny GEMMs.
//!
//! Output rows are computed in register blocks of [`BLK`] columns that accumulate every tap
//! before one store (columns next to the padding take a per-tap path). The row and
//! reduction loops are compiled three times — baseline, AVX2+FMA and AVX-512F
//! (`#[target_feature]` clones picked by [`simd::active_level`]). Every element sums its
//! taps in the same order (bias, then channel, kernel row, kernel column) with separate
//! multiplies and adds on every path and level, and reductions (`dw`, `db`) use a fixed
//! lane layout and pairwise merge, so results do not depend on threads nor on the level.

use rayon::prelude::*;

use super::im2col::{Axis, Taps};
use super::Conv2dGeometry;
use crate::simd::{self, Level};
use crate::Float;

/// Columns of one register block of an output row.
const BLK: usize = 32;
/// Accumulator lanes of the reductions.
const LANES: usize = 16;

/// Compiles `fn $name<T>(level, args…)` as a baseline body plus AVX2+FMA and AVX-512F
/// clones, and dispatches on `level`.
macro_rules! multiversion {
    ($(#[$m:meta])* fn $name:ident<T>($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        fn $name<T: Float>(level: Level, $($arg: $ty),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn imp<T: Float>($($arg: $ty),*) $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx512<T: Float>($($arg: $ty),*) {
                imp($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx2<T: Float>($($arg: $ty),*) {
                imp($($arg),*)
            }

            match level {
                // SAFETY: `simd::active_level()` never exceeds the level detected on this
                // CPU, so AVX-512F is present.
                #[cfg(target_arch = "x86_64")]
                Level::Avx512 => unsafe { avx512($($arg),*) },
                // SAFETY: as above, AVX2 and FMA are present.
                #[cfg(target_arch = "x86_64")]
                Level::Avx2 => unsafe { avx2($($arg),*) },
                _ => imp($($arg),*),
            }
        }
    };
}

/// Adds `a[j]·b[j·step]` into lane `j % LANES` of `acc`.
#[inline(always)]
fn dot_lanes<T: Float>(acc: &mut [T; LANES], a: &[T], b: &[T], step: usize) {
    if step == 1 {
        let b = &b[..a.len()];
        let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        for (x, y) in (&mut ca).zip(&mut cb) {
            for l in 0..LANES {
                acc[l] += x[l] * y[l];
            }
        }
        for (l, (&x, &y)) in ca.remainder().iter().zip(cb.remainder()).enumerate() {
            acc[l] += x * y;
        }
    } else {
        for (j, (&x, &y)) in a.iter().zip(b.iter().step_by(step)).enumerate() {
            acc[j % LANES] += x * y;
        }
    }
}

/// Pairwise sum of the lanes.
#[inline(always)]
fn reduce<T: Float>(mut acc: [T; LANES]) -> T {
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            let v = acc[l + w];
            acc[l] += v;
        }
    }
    acc[0]
}

/// Sum of every element of the slices, in a fixed order: lane `j % 16` of each slice, the
/// slices in turn, then the lanes pairwise. Used for `db` by every path.
pub(crate) fn sum_lanes<'a, T: Float>(slices: impl Iterator<Item = &'a [T]>) -> T {
    let mut acc = [T::ZERO; LANES];
    for s in slices {
        let mut c = s.chunks_exact(LANES);
        for x in &mut c {
            for l in 0..LANES {
                acc[l] += x[l];
            }
        }
        for (l, &x) in c.remainder().iter().enumerate() {
            acc[l] += x;
        }
    }
    reduce(acc)
}

/// A direct 2-d correlation producing one output row: `nsrc` input planes of `ih × iw`,
/// `nsrc × kh × kw` weights (`flip`: read them rotated by 180°, for `dx`).
#[derive(Clone, Copy)]
struct RowConv {
    th: Taps,
    tw: Taps,
    kh: usize,
    kw: usize,
    ih: usize,
    iw: usize,
    nsrc: usize,
    flip: bool,
}

impl RowConv {
    #[inline(always)]
    fn weight<T: Float>(&self, wt: &[T], s: usize, u: usize, v: usize) -> T {
        let (u, v) = if self.flip {
            (self.kh - 1 - u, self.kw - 1 - v)
        } else {
            (u, v)
        };
        wt[(s * self.kh + u) * self.kw + v]
    }

    /// Input row `s` read by output row `i` at kernel row `u`, if inside the input.
    #[inline(always)]
    fn in_row<'a, T>(&self, inp: &'a [T], s: usize, u: usize, i: usize) -> Option<&'a [T]> {
        let tu = self.th.get(u);
        tu.covers(i)
            .then(|| &inp[(s * self.ih + tu.index(i)) * self.iw..][..self.iw])
    }
}

multiversion! {
    /// Output row `i` of a [`RowConv`]: `orow[j] = bias + Σ_{s,u,v} w · inp[s, …]`.
    fn conv_row<T>(rc: &RowConv, inp: &[T], wt: &[T], i: usize, orow: &mut [T], bias: T) {
        let ow = orow.len();
        let sw = rc.tw.axis().stride;
        // Interior columns: every kernel column reads inside the input.
        let (mut ja, mut jb) = (0, ow);
        for v in 0..rc.kw {
            let t = rc.tw.get(v);
            ja = ja.max(t.lo);
            jb = jb.min(t.hi);
        }
        let (e0, e1) = if jb >= ja + BLK { (ja, jb) } else { (0, 0) };
        orow[..e0].fill(bias);
        orow[e1..].fill(bias);
        // Columns outside e0..e1, one tap at a time.
        for s in 0..rc.nsrc {
            for u in 0..rc.kh {
                let Some(xrow) = rc.in_row(inp, s, u, i) else { continue };
                for v in 0..rc.kw {
                    let (t, wv) = (rc.tw.get(v), rc.weight(wt, s, u, v));
                    for (a, b) in [(t.lo, t.hi.min(e0)), (t.lo.max(e1), t.hi)] {
                        if a < b {
                            let xs = xrow[t.index(a)..].iter().step_by(sw);
                            for (o, &x) in orow[a..b].iter_mut().zip(xs) {
                                *o += wv * x;
                            }
                        }
                    }
                }
            }
        }
        // Columns e0..e1 in register blocks (the last one shifted back to end at e1).
        let mut j0 = e0;
        while j0 < e1 {
            let j = j0.min(e1 - BLK);
            let mut acc = [bias; BLK];
            for s in 0..rc.nsrc {
                for u in 0..rc.kh {
                    let Some(xrow) = rc.in_row(inp, s, u, i) else { continue };
                    for v in 0..rc.kw {
                        let (t, wv) = (rc.tw.get(v), rc.weight(wt, s, u, v));
                        let xs = &xrow[t.index(j)..][..(BLK - 1) * sw + 1];
                        for l in 0..BLK {
                            acc[l] += wv * xs[l * sw];
                        }
                    }
                }
            }
            orow[j..j + BLK].copy_from_slice(&acc);
            j0 += BLK;
        }
    }
}

multiversion! {
    /// `dw[f, u, v] = Σ_n Σ_i Σ_j dout[n, f, i, j] · x[n, c, i·sh + u·dh − ph, j·sw + v·dw − pw]`.
    fn filter_grad<T>(g: &Conv2dGeometry, th: &Taps, tw: &Taps, dout: &[T], x: &[T], f: usize, dwf: &mut [T]) {
        let (p, hw, c) = (g.oh * g.ow, g.h * g.w, f / g.fg);
        let sw = tw.axis().stride;
        for u in 0..g.kh {
            let tu = th.get(u);
            for v in 0..g.kw {
                let tv = tw.get(v);
                let mut acc = [T::ZERO; LANES];
                if tv.lo < tv.hi {
                    for n in 0..g.n {
                        let dp = &dout[(n * g.f + f) * p..][..p];
                        let xp = &x[(n * g.c + c) * hw..][..hw];
                        for i in tu.lo..tu.hi {
                            let d = &dp[i * g.ow + tv.lo..i * g.ow + tv.hi];
                            let xr = &xp[tu.index(i) * g.w..][..g.w];
                            dot_lanes(&mut acc, d, &xr[tv.index(tv.lo)..], sw);
                        }
                    }
                }
                dwf[u * g.kw + v] = reduce(acc);
            }
        }
    }
}

multiversion! {
    /// `dx` plane of one channel by scattering each `dout` row through the taps (any stride).
    fn scatter_plane<T>(g: &Conv2dGeometry, th: &Taps, tw: &Taps, dout: &[T], wt: &[T], dxp: &mut [T]) {
        let (p, khw) = (g.oh * g.ow, g.kh * g.kw);
        let sw = tw.axis().stride;
        dxp.fill(T::ZERO);
        for s in 0..g.fg {
            for i in 0..g.oh {
                let drow = &dout[s * p + i * g.ow..][..g.ow];
                for u in 0..g.kh {
                    let tu = th.get(u);
                    if !tu.covers(i) {
                        continue;
                    }
                    let dxr = &mut dxp[tu.index(i) * g.w..][..g.w];
                    for v in 0..g.kw {
                        let (tv, wv) = (tw.get(v), wt[s * khw + u * g.kw + v]);
                        if tv.lo < tv.hi {
                            let dst = dxr[tv.index(tv.lo)..].iter_mut().step_by(sw);
                            for (o, &d) in dst.zip(&drow[tv.lo..tv.hi]) {
                                *o += wv * d;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Depthwise forward: `out[n, f] = b[f] + x[n, f / (F/C)] ⋆ w[f]`, parallel over output rows.
pub(crate) fn forward<T: Float>(
    g: &Conv2dGeometry,
    x: &[T],
    w: &[T],
    b: Option<&[T]>,
    out: &mut [T],
) {
    let level = simd::active_level();
    let rc = RowConv {
        th: Taps::new(Axis::forward(g, true), g.kh),
        tw: Taps::new(Axis::forward(g, false), g.kw),
        kh: g.kh,
        kw: g.kw,
        ih: g.h,
        iw: g.w,
        nsrc: 1,
        flip: false,
    };
    let (hw, khw) = (g.h * g.w, g.kh * g.kw);
    out.par_chunks_mut(g.ow)
        .enumerate()
        .for_each(|(row, orow)| {
            let (i, f, n) = (row % g.oh, (row / g.oh) % g.f, row / (g.oh * g.f));
            let c = f / g.fg;
            let plane = &x[(n * g.c + c) * hw..][..hw];
            let bias = b.map_or(T::ZERO, |b| b[f]);
            conv_row(level, &rc, plane, &w[f * khw..][..khw], i, orow, bias);
        });
}

/// Depthwise backward: `dw` per filter (parallel over filters, each summing the batch in
/// order) and `dx` per channel (rows of a stride-1 transposed correlation, or a per-plane
/// scatter for larger strides). `db` is computed by the caller.
pub(crate) fn backward<T: Float>(
    g: &Conv2dGeometry,
    dout: &[T],
    x: &[T],
    w: &[T],
    dx: &mut [T],
    dw: &mut [T],
) {
    let level = simd::active_level();
    let (p, hw, khw) = (g.oh * g.ow, g.h * g.w, g.kh * g.kw);
    let th = Taps::new(Axis::forward(g, true), g.kh);
    let tw = Taps::new(Axis::forward(g, false), g.kw);
    dw.par_chunks_mut(khw).enumerate().for_each(|(f, dwf)| {
        filter_grad(level, g, &th, &tw, dout, x, f, dwf);
    });
    let pr = &g.params;
    if pr.stride == [1, 1] {
        // dx[hi, wi] = Σ_{s,u,v} w[s, u, v] · dout[s, hi + ph − u·dh, wi + pw − v·dw]:
        // a stride-1 correlation of the channel's `F/C` dout planes with the rotated kernel.
        let back = |inp: usize, out: usize, k: usize, i: usize| Axis {
            inp,
            out,
            stride: 1,
            dil: pr.dilation[i],
            base: pr.padding[i] as i128 - ((k - 1) * pr.dilation[i]) as i128,
        };
        let rc = RowConv {
            th: Taps::new(back(g.oh, g.h, g.kh, 0), g.kh),
            tw: Taps::new(back(g.ow, g.w, g.kw, 1), g.kw),
            kh: g.kh,
            kw: g.kw,
            ih: g.oh,
            iw: g.ow,
            nsrc: g.fg,
            flip: true,
        };
        dx.par_chunks_mut(g.w).enumerate().for_each(|(row, dxr)| {
            let (hi, c, n) = (row % g.h, (row / g.h) % g.c, row / (g.h * g.c));
            let d = &dout[(n * g.f + c * g.fg) * p..][..g.fg * p];
            let wt = &w[c * g.fg * khw..][..g.fg * khw];
            conv_row(level, &rc, d, wt, hi, dxr, T::ZERO);
        });
    } else {
        dx.par_chunks_mut(hw).enumerate().for_each(|(plane, dxp)| {
            let (c, n) = (plane % g.c, plane / g.c);
            let d = &dout[(n * g.f + c * g.fg) * p..][..g.fg * p];
            let wt = &w[c * g.fg * khw..][..g.fg * khw];
            scatter_plane(level, g, &th, &tw, d, wt, dxp);
        });
    }
}
