//! Direct kernels for depthwise convolutions (`groups == C`: one input channel per group,
//! `F / C` filters per channel), instead of `C` tiny GEMMs.
//!
//! Each task copies a chunk of input rows into a zero-padded window (one lane's workspace
//! slot), so that every tap of every output column reads inside it: output rows are then
//! computed in register blocks of [`BLK`] columns × 2 rows that accumulate every tap before
//! one store, with no bounds logic in the inner loop. The loops are compiled three times —
//! baseline, AVX2+FMA and AVX-512F (`#[target_feature]` clones picked by
//! [`simd::active_level`]). Every output element sums its taps in the same order (bias,
//! then source, kernel row, kernel column) with separate multiplies and adds on every level,
//! and the reductions (`dw`, `db`) use a fixed lane layout and pairwise merge, so results
//! depend neither on the thread count nor on the SIMD level. (Taps that fall in the padding
//! multiply zeros, as the im2col path does.)

use rayon::prelude::*;

use super::exec::{run_lanes, SharedMut};
use super::im2col::{Axis, Taps};
use super::Conv2dGeometry;
use crate::alloc::{fill_init, Out};
use crate::simd::{self, Level};
use crate::threads::min_len;
use crate::Float;

/// Columns of one register block of an output row.
const BLK: usize = 32;
/// Accumulator lanes of the reductions.
const LANES: usize = 16;
/// Taps (`KH · KW`) per pass of the weight-gradient kernel.
const MAXTAPS: usize = 64;
/// Elements of a padded window (the window holds at least one output row's input rows).
const PAD_ELEMS: usize = 32 * 1024;

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

/// Adds `a[j]·b[j·step]` into the lanes of `acc`: lane `j % LANES`, except that at stride 1
/// a partial last group is read as the last `LANES` elements (lane `l` ← element
/// `len − LANES + l`) with the already-counted ones masked to zero.
#[inline(always)]
fn dot_lanes<T: Float>(acc: &mut [T; LANES], a: &[T], b: &[T], step: usize) {
    if step == 1 && a.len() >= LANES {
        let b = &b[..a.len()];
        let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        for (x, y) in (&mut ca).zip(&mut cb) {
            for l in 0..LANES {
                acc[l] += x[l] * y[l];
            }
        }
        let rem = ca.remainder().len();
        if rem > 0 {
            let (x, y) = (&a[a.len() - LANES..], &b[b.len() - LANES..]);
            for l in 0..LANES {
                let v = if l >= LANES - rem {
                    x[l] * y[l]
                } else {
                    T::ZERO
                };
                acc[l] += v;
            }
        }
    } else {
        for (j, (&x, &y)) in a.iter().zip(b.iter().step_by(step)).enumerate() {
            acc[j % LANES] += x * y;
        }
    }
}

/// Pairwise sum of the lanes (`L` a power of two).
#[inline(always)]
fn reduce<T: Float, const L: usize>(mut acc: [T; L]) -> T {
    let mut w = L;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            let v = acc[l + w];
            acc[l] += v;
        }
    }
    acc[0]
}

multiversion! {
    /// `db = Σ_n Σ_p dout[n, f, p]` for the `F` filters of `dout` (`N × F × p`), in a fixed
    /// order: lane `j % 64` of each plane, the images in turn, then the lanes pairwise.
    fn bias_grad_imp<T>(dout: &[T], p: usize, f: usize, n: usize, db: &mut T) {
        let nf = dout.len() / p / n;
        *db = sum_lanes((0..n).map(|n| &dout[(n * nf + f) * p..][..p]));
    }
}

/// `db` for every path, parallel over filters (see `bias_grad_imp` for the order), at
/// least 32 Ki elements of `dout` per task (fewer are summed faster than a thread wakes).
pub(crate) fn bias_grad<T: Float>(dout: &[T], n: usize, p: usize, db: &mut [T]) {
    let level = simd::active_level();
    let min_filters = (32 * 1024usize).div_ceil(n.saturating_mul(p).max(1));
    db.par_iter_mut()
        .with_min_len(min_len(min_filters))
        .enumerate()
        .for_each(|(f, d)| bias_grad_imp(level, dout, p, f, n, d));
}

/// Accumulator lanes of the bias gradient's sums. With 64 (four zmm registers of `f32`) the
/// compiler vectorises the loop; with 16 it kept 16 scalar sums (`vaddss`): resnet_stem's
/// `db` (25.7 MB of `dout`) took 8 % of a one-thread backward.
const SUM_LANES: usize = 64;

#[inline(always)]
fn sum_lanes<'a, T: Float>(slices: impl Iterator<Item = &'a [T]>) -> T {
    let mut acc = [T::ZERO; SUM_LANES];
    for s in slices {
        let mut c = s.chunks_exact(SUM_LANES);
        for x in &mut c {
            for (a, &v) in acc.iter_mut().zip(x) {
                *a += v;
            }
        }
        for (l, &x) in c.remainder().iter().enumerate() {
            acc[l] += x;
        }
    }
    reduce(acc)
}

/// A window of input rows for a chunk of output rows, zero-padded so that every tap reads
/// inside it: window row `r`, column `q` hold input `(i0·sh + r + base_h, q + base_w)` for
/// the chunk starting at output row `i0`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    ah: Axis,
    aw: Axis,
    kh: usize,
    kw: usize,
    /// Window width: `(OW − 1)·sw + (KW − 1)·dw + 1`.
    wp: usize,
    /// Output rows per chunk.
    rows: usize,
    /// Window rows: `(rows − 1)·sh + (KH − 1)·dh + 1`.
    hr: usize,
}

impl Window {
    pub(crate) fn new(ah: Axis, aw: Axis, kh: usize, kw: usize) -> Window {
        let wp = (aw.out - 1) * aw.stride + (kw - 1) * aw.dil + 1;
        let span = (kh - 1) * ah.dil + 1;
        let fit = (PAD_ELEMS / wp).saturating_sub(span) / ah.stride + 1;
        let rows = fit.clamp(1, ah.out);
        Window {
            ah,
            aw,
            kh,
            kw,
            wp,
            rows,
            hr: (rows - 1) * ah.stride + span,
        }
    }

    /// The forward window of `g`.
    pub(crate) fn forward(g: &Conv2dGeometry) -> Window {
        Window::new(Axis::forward(g, true), Axis::forward(g, false), g.kh, g.kw)
    }

    /// The window of the stride-1 `dx` correlation: `dx[hi, wi] = Σ w[u, v] ·
    /// dout[hi + ph − u·dh, wi + pw − v·dw]`, read with the kernel rotated by 180°.
    pub(crate) fn transposed(g: &Conv2dGeometry) -> Window {
        let p = &g.params;
        let ax = |inp: usize, out: usize, k: usize, i: usize| Axis {
            inp,
            out,
            stride: 1,
            dil: p.dilation[i],
            base: p.padding[i] as i128 - ((k - 1) * p.dilation[i]) as i128,
        };
        Window::new(ax(g.oh, g.h, g.kh, 0), ax(g.ow, g.w, g.kw, 1), g.kh, g.kw)
    }

    pub(crate) fn len(&self) -> usize {
        self.hr.saturating_mul(self.wp)
    }

    pub(crate) fn chunks(&self) -> usize {
        self.ah.out.div_ceil(self.rows)
    }

    /// Output rows `[i0, i0 + n)` of chunk `k`.
    fn chunk(&self, k: usize) -> (usize, usize) {
        let i0 = k * self.rows;
        (i0, self.rows.min(self.ah.out - i0))
    }

    /// Fills `buf` (`hr × wp`) from the `ih × iw` plane for the chunk at output row `i0`.
    fn fill<T: Float>(&self, plane: &[T], i0: usize, buf: &mut [T]) {
        fill_window(simd::active_level(), self, plane, i0, buf);
    }
}

multiversion! {
    /// [`Window::fill`].
    fn fill_window<T>(wn: &Window, plane: &[T], i0: usize, buf: &mut [T]) {
        wn.fill_imp(plane, i0, buf);
    }
}

impl Window {
    #[inline(always)]
    fn fill_imp<T: Float>(&self, plane: &[T], i0: usize, buf: &mut [T]) {
        let (ih, iw) = (self.ah.inp as i128, self.aw.inp);
        let lo = (-self.aw.base).clamp(0, self.wp as i128);
        let hi = (iw as i128 - self.aw.base).clamp(lo, self.wp as i128);
        let (lo, hi) = (lo as usize, hi as usize);
        let first = (i0 as i128) * self.ah.stride as i128 + self.ah.base;
        for (r, dst) in buf[..self.len()].chunks_exact_mut(self.wp).enumerate() {
            let ir = first + r as i128;
            if ir < 0 || ir >= ih || lo == hi {
                dst.fill(T::ZERO);
                continue;
            }
            let src = &plane[ir as usize * iw..][..iw];
            let s0 = (lo as i128 + self.aw.base) as usize;
            dst[..lo].fill(T::ZERO);
            copy(&mut dst[lo..hi], &src[s0..s0 + hi - lo]);
            dst[hi..].fill(T::ZERO);
        }
    }
}

/// `dst.copy_from_slice(src)` for short rows, in 16-element pieces (no library call).
#[inline(always)]
fn copy<T: Float>(dst: &mut [T], src: &[T]) {
    let mut d = dst.chunks_exact_mut(16);
    let mut s = src.chunks_exact(16);
    for (d, s) in (&mut d).zip(&mut s) {
        let s: &[T; 16] = s.try_into().unwrap();
        let d: &mut [T; 16] = d.try_into().unwrap();
        *d = *s;
    }
    for (d, &s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = s;
    }
}

/// Rows `R` (1 or 2) × `len` (≤ BLK) columns from column `j` of the output, local row `li`:
/// `bias + Σ_{s,u,v} w · win`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn block<T: Float, const R: usize>(
    wn: &Window,
    win: &[T],
    nsrc: usize,
    wt: &[T],
    flip: bool,
    li: usize,
    j: usize,
    len: usize,
    bias: T,
    out: &mut [&mut [Out<T>]; R],
) {
    let (sh, sw, dh, dw) = (wn.ah.stride, wn.aw.stride, wn.ah.dil, wn.aw.dil);
    let (kh, kw, wp) = (wn.kh, wn.kw, wn.wp);
    let mut acc = [[bias; BLK]; R];
    for s in 0..nsrc {
        let win = &win[s * wn.len()..][..wn.len()];
        let wt = &wt[s * kh * kw..][..kh * kw];
        for u in 0..kh {
            for v in 0..kw {
                let wv = if flip {
                    wt[(kh - 1 - u) * kw + (kw - 1 - v)]
                } else {
                    wt[u * kw + v]
                };
                for (r, acc) in acc.iter_mut().enumerate() {
                    let at = ((li + r) * sh + u * dh) * wp + j * sw + v * dw;
                    if sw == 1 && len == BLK {
                        let xs = &win[at..][..BLK];
                        for l in 0..BLK {
                            acc[l] += wv * xs[l];
                        }
                    } else {
                        let xs = &win[at..][..(len - 1) * sw + 1];
                        for l in 0..len {
                            acc[l] += wv * xs[l * sw];
                        }
                    }
                }
            }
        }
    }
    for (o, a) in out.iter_mut().zip(&acc) {
        for (o, &v) in o[j..j + len].iter_mut().zip(&a[..len]) {
            *o = Out::new(v);
        }
    }
}

/// `dst = src`, element by element into output slots.
#[inline(always)]
fn store<T: Copy, const N: usize>(dst: &mut [Out<T>; N], src: &[T; N]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = Out::new(v);
    }
}

multiversion! {
    /// Output rows `[i0, i0 + n)` (`out`: `n × OW`, row-major) of a correlation of the
    /// `nsrc` windows in `win` with `nsrc × KH × KW` weights (`flip`: rotated by 180°).
    fn window_rows<T>(wn: &Window, win: &[T], nsrc: usize, wt: &[T], flip: bool, out: &mut [Out<T>], bias: T) {
        let ow = wn.aw.out;
        let rows = out.len() / ow;
        let (kh, kw) = (wn.kh, wn.kw);
        if wn.aw.stride == 1 && ow >= BLK && nsrc * kh * kw <= MAXTAPS {
            // The taps as (window offset, weight), in summation order.
            let mut offs = [0usize; MAXTAPS];
            let mut wts = [T::ZERO; MAXTAPS];
            let mut nt = 0;
            for s in 0..nsrc {
                for u in 0..kh {
                    for v in 0..kw {
                        offs[nt] = s * wn.len() + u * wn.ah.dil * wn.wp + v * wn.aw.dil;
                        wts[nt] = wt[s * kh * kw + if flip { (kh - 1 - u) * kw + (kw - 1 - v) } else { u * kw + v }];
                        nt += 1;
                    }
                }
            }
            let (offs, wts) = (&offs[..nt], &wts[..nt]);
            let step = wn.ah.stride * wn.wp;
            let mut li = 0;
            while li < rows {
                let two = li + 1 < rows;
                let (r0, rest) = out[li * ow..].split_at_mut(ow);
                let mut j0 = 0;
                while j0 < ow {
                    let j = j0.min(ow - BLK);
                    let b0 = li * step + j;
                    let mut a0 = [bias; BLK];
                    if two {
                        let mut a1 = [bias; BLK];
                        for (&o, &wv) in offs.iter().zip(wts) {
                            let x0: &[T; BLK] = win[b0 + o..][..BLK].try_into().unwrap();
                            let x1: &[T; BLK] = win[b0 + step + o..][..BLK].try_into().unwrap();
                            for l in 0..BLK {
                                a0[l] += wv * x0[l];
                                a1[l] += wv * x1[l];
                            }
                        }
                        let o1: &mut [Out<T>; BLK] = (&mut rest[j..j + BLK]).try_into().unwrap();
                        store(o1, &a1);
                    } else {
                        for (&o, &wv) in offs.iter().zip(wts) {
                            let x0: &[T; BLK] = win[b0 + o..][..BLK].try_into().unwrap();
                            for l in 0..BLK {
                                a0[l] += wv * x0[l];
                            }
                        }
                    }
                    let o0: &mut [Out<T>; BLK] = (&mut r0[j..j + BLK]).try_into().unwrap();
                    store(o0, &a0);
                    j0 += BLK;
                }
                li += if two { 2 } else { 1 };
            }
            return;
        }
        let mut li = 0;
        while li < rows {
            let two = li + 1 < rows;
            let (r0, rest) = out[li * ow..].split_at_mut(ow);
            let mut j0 = 0;
            while j0 < ow {
                // Full blocks, the last shifted back to end at OW; narrow rows in one piece.
                let (j, len) = if ow >= BLK { (j0.min(ow - BLK), BLK) } else { (0, ow) };
                if two {
                    let mut o = [&mut *r0, &mut rest[..ow]];
                    block::<T, 2>(wn, win, nsrc, wt, flip, li, j, len, bias, &mut o);
                } else {
                    block::<T, 1>(wn, win, nsrc, wt, flip, li, j, len, bias, &mut [&mut *r0]);
                }
                j0 += BLK;
            }
            li += if two { 2 } else { 1 };
        }
    }
}

multiversion! {
    /// Adds, for each tap `t0 + k` (`k < acc.len()`), `Σ_{rows, j} dout · window` of one chunk
    /// into the lanes of `acc[k]`.
    fn window_grad<T>(wn: &Window, win: &[T], dout: &[T], t0: usize, acc: &mut [[T; LANES]]) {
        let (sh, sw, dh, dw) = (wn.ah.stride, wn.aw.stride, wn.ah.dil, wn.aw.dil);
        let (kw, wp, ow) = (wn.kw, wn.wp, wn.aw.out);
        let rows = dout.len() / ow;
        if sw == 1 && ow >= LANES && t0.is_multiple_of(kw) && acc.len().is_multiple_of(kw) {
            for (ku, accu) in acc.chunks_exact_mut(kw).enumerate() {
                let u = t0 / kw + ku;
                let rows_at = |li: usize| &win[(li * sh + u * dh) * wp..][..wp];
                let done = match kw {
                    1 => grad_rows::<T, 1>(dout, ow, rows, rows_at, dw, accu),
                    2 => grad_rows::<T, 2>(dout, ow, rows, rows_at, dw, accu),
                    3 => grad_rows::<T, 3>(dout, ow, rows, rows_at, dw, accu),
                    4 => grad_rows::<T, 4>(dout, ow, rows, rows_at, dw, accu),
                    5 => grad_rows::<T, 5>(dout, ow, rows, rows_at, dw, accu),
                    7 => grad_rows::<T, 7>(dout, ow, rows, rows_at, dw, accu),
                    _ => false,
                };
                if !done {
                    for (v, acc) in accu.iter_mut().enumerate() {
                        for li in 0..rows {
                            dot_lanes(acc, &dout[li * ow..][..ow], &rows_at(li)[v * dw..], 1);
                        }
                    }
                }
            }
            return;
        }
        for (k, acc) in acc.iter_mut().enumerate() {
            let (u, v) = ((t0 + k) / kw, (t0 + k) % kw);
            for li in 0..rows {
                let at = (li * sh + u * dh) * wp + v * dw;
                dot_lanes(acc, &dout[li * ow..][..ow], &win[at..], sw);
            }
        }
    }
}

/// For one kernel row at stride 1: adds `Σ_rows Σ_j dout[li, j] · row(li)[j + v·dw]` into
/// the lanes of `acc[v]` for the `KW` kernel columns `v`, loading each group of `LANES`
/// columns of `dout` once (the partial last group as the last `LANES` columns with the
/// already-counted ones zeroed). Returns true (the `_ => false` arm of the caller covers
/// the widths without an instance).
#[inline(always)]
fn grad_rows<'a, T: Float, const KW: usize>(
    dout: &[T],
    ow: usize,
    rows: usize,
    row: impl Fn(usize) -> &'a [T],
    dw: usize,
    acc: &mut [[T; LANES]],
) -> bool {
    let rem = ow % LANES;
    let mut a = [[T::ZERO; LANES]; KW];
    for li in 0..rows {
        let d = &dout[li * ow..][..ow];
        let wr = row(li);
        let mut j = 0;
        while j + LANES <= ow {
            let dj: &[T; LANES] = d[j..j + LANES].try_into().unwrap();
            for (v, av) in a.iter_mut().enumerate() {
                let x: &[T; LANES] = wr[j + v * dw..][..LANES].try_into().unwrap();
                for l in 0..LANES {
                    av[l] += dj[l] * x[l];
                }
            }
            j += LANES;
        }
        if rem > 0 {
            let j = ow - LANES;
            let mut dj = [T::ZERO; LANES];
            dj[LANES - rem..].copy_from_slice(&d[ow - rem..]);
            for (v, av) in a.iter_mut().enumerate() {
                let x: &[T; LANES] = wr[j + v * dw..][..LANES].try_into().unwrap();
                for l in 0..LANES {
                    av[l] += dj[l] * x[l];
                }
            }
        }
    }
    for (o, av) in acc.iter_mut().zip(&a) {
        for l in 0..LANES {
            o[l] += av[l];
        }
    }
    true
}

multiversion! {
    /// `dx` plane of one channel (zero on entry) by scattering each `dout` row through the
    /// taps (any stride).
    fn scatter_plane<T>(g: &Conv2dGeometry, th: &Taps, tw: &Taps, dout: &[T], wt: &[T], dxp: &mut [T]) {
        let (p, khw) = (g.oh * g.ow, g.kh * g.kw);
        let sw = tw.axis().stride;
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

/// Largest padded window (elements) a depthwise task copies.
const MAX_WINDOW: usize = 1 << 20;

/// Whether the depthwise kernels' padded windows stay small (at most [`MAX_WINDOW`]
/// elements). A window spans `(OW − 1)·sw + (KW − 1)·dw + 1` padded columns for at least one
/// output row, so a huge stride, padding or dilation would make it (and the workspace)
/// enormous for a tiny output — a fuzzer input with stride 2³², padding 2³² + 1 and 36
/// outputs asked for 2³⁴ elements. Such geometries take the lowering + GEMM path, whose
/// columns grow with the output instead.
pub(crate) fn windows_fit(g: &Conv2dGeometry) -> bool {
    let fits = |wn: Window| wn.len() <= MAX_WINDOW;
    fits(Window::forward(g)) && (g.params.stride != [1, 1] || fits(Window::transposed(g)))
}

/// Lanes of the depthwise forward with at most `max_lanes` of them.
fn forward_lanes(g: &Conv2dGeometry, max_lanes: usize) -> usize {
    let tasks = g.n * g.c * Window::forward(g).chunks();
    tasks.min(max_lanes.max(1))
}

/// Elements of workspace the depthwise forward needs with at most `max_lanes` lanes: one
/// window per lane.
pub(crate) fn forward_workspace_len(g: &Conv2dGeometry, max_lanes: usize) -> usize {
    forward_lanes(g, max_lanes).saturating_mul(Window::forward(g).len())
}

/// Elements of workspace the depthwise backward needs on at most `max_lanes` lanes: one
/// window per lane for `dw`, and `F/C` windows per lane for a stride-1 `dx`.
pub(crate) fn backward_workspace_len(g: &Conv2dGeometry, max_lanes: usize) -> usize {
    let lanes = max_lanes.max(1);
    let dw = g.f.min(lanes).saturating_mul(Window::forward(g).len());
    let dx = if g.params.stride == [1, 1] {
        let wn = Window::transposed(g);
        let tasks = g.n * g.c * wn.chunks();
        tasks
            .min(lanes)
            .saturating_mul(g.fg.saturating_mul(wn.len()))
    } else {
        0
    };
    dw.max(dx)
}

/// Depthwise forward: tasks of (image, channel, chunk of output rows), each padding its
/// input rows once and computing the chunk for the channel's `F/C` filters.
pub(crate) fn forward<T: Float>(
    g: &Conv2dGeometry,
    x: &[T],
    w: &[T],
    b: Option<&[T]>,
    out: &mut [Out<T>],
    ws: &mut [T],
    max_lanes: usize,
) {
    let level = simd::active_level();
    let wn = Window::forward(g);
    let (hw, p, khw, nch) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw, wn.chunks());
    let tasks = g.n * g.c * nch;
    let out = SharedMut::new_out(out);
    let lanes = forward_lanes(g, max_lanes);
    run_lanes(ws, wn.len(), lanes, tasks, |t, win| {
        let (k, c, n) = (t % nch, (t / nch) % g.c, t / (nch * g.c));
        let (i0, rows) = wn.chunk(k);
        wn.fill(&x[(n * g.c + c) * hw..][..hw], i0, win);
        for f in c * g.fg..(c + 1) * g.fg {
            // SAFETY: rows i0..i0+rows of plane (n, f) belong to this task alone (tasks
            // partition images × channels × row chunks), which runs once.
            let o = unsafe { out.slice_out((n * g.f + f) * p + i0 * g.ow, rows * g.ow) };
            let bias = b.map_or(T::ZERO, |b| b[f]);
            window_rows(level, &wn, win, 1, &w[f * khw..][..khw], false, o, bias);
        }
    });
}

/// Depthwise backward: `dw` per filter (each summing the batch and its row chunks in
/// order), then `dx` per (image, channel, chunk of rows) — a stride-1 correlation of the
/// channel's `F/C` `dout` planes with the rotated kernels — or, for larger strides, per
/// plane by scattering into the zeroed plane. Every element of `dx` (which may start
/// uninitialised) is written. `db` is computed by the caller.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<T: Float>(
    g: &Conv2dGeometry,
    dout: &[T],
    x: &[T],
    w: &[T],
    dx: &mut [Out<T>],
    dw: &mut [T],
    ws: &mut [T],
    max_lanes: usize,
) {
    let lanes = max_lanes.max(1);
    let level = simd::active_level();
    // The weight gradient's AVX-512 clone (zmm, each row's shifted loads split across cache
    // lines) was slower than its AVX2 clone (ymm) on the 2-core AVX-512 machine:
    // depthwise_56 backward, one thread, default build, 8.4–8.7 ms against 7.0–7.4 ms.
    // Same arithmetic in the same order at either width, so the results are unchanged.
    let grad_level = match level {
        Level::Avx512 => Level::Avx2,
        other => other,
    };
    let (p, hw, khw) = (g.oh * g.ow, g.h * g.w, g.kh * g.kw);
    let wn = Window::forward(g);
    {
        let dw = SharedMut::new(dw);
        run_lanes(ws, wn.len(), g.f.min(lanes), g.f, |f, win| {
            // SAFETY: filter f's weights belong to task f alone, which runs once.
            let dwf = unsafe { dw.slice(f * khw, khw) };
            let c = f / g.fg;
            for t0 in (0..khw).step_by(MAXTAPS) {
                let mut acc = [[T::ZERO; LANES]; MAXTAPS];
                let acc = &mut acc[..MAXTAPS.min(khw - t0)];
                for n in 0..g.n {
                    let d = &dout[(n * g.f + f) * p..][..p];
                    for k in 0..wn.chunks() {
                        let (i0, rows) = wn.chunk(k);
                        wn.fill(&x[(n * g.c + c) * hw..][..hw], i0, win);
                        let dk = &d[i0 * g.ow..][..rows * g.ow];
                        window_grad(grad_level, &wn, win, dk, t0, acc);
                    }
                }
                for (o, a) in dwf[t0..].iter_mut().zip(acc.iter()) {
                    *o = reduce(*a);
                }
            }
        });
    }
    if g.params.stride == [1, 1] {
        let wn = Window::transposed(g);
        let nch = wn.chunks();
        let tasks = g.n * g.c * nch;
        let slot = g.fg * wn.len();
        let dx = SharedMut::new_out(dx);
        run_lanes(ws, slot, tasks.min(lanes), tasks, |t, win| {
            let (k, c, n) = (t % nch, (t / nch) % g.c, t / (nch * g.c));
            let (i0, rows) = wn.chunk(k);
            for s in 0..g.fg {
                let d = &dout[(n * g.f + c * g.fg + s) * p..][..p];
                wn.fill(d, i0, &mut win[s * wn.len()..]);
            }
            // SAFETY: rows i0..i0+rows of dx plane (n, c) belong to task t alone; the kernel
            // stores only computed values.
            let o = unsafe { dx.slice_out((n * g.c + c) * hw + i0 * g.w, rows * g.w) };
            let wt = &w[c * g.fg * khw..][..g.fg * khw];
            window_rows(level, &wn, win, g.fg, wt, true, o, T::ZERO);
        });
    } else {
        let th = Taps::new(Axis::forward(g, true), g.kh);
        let tw = Taps::new(Axis::forward(g, false), g.kw);
        let planes = dx.par_chunks_mut(hw).enumerate();
        let planes = planes.with_min_len(min_len(1));
        planes.for_each(|(plane, dxp)| {
            let (c, n) = (plane % g.c, plane / g.c);
            let d = &dout[(n * g.f + c * g.fg) * p..][..g.fg * p];
            let wt = &w[c * g.fg * khw..][..g.fg * khw];
            scatter_plane(level, g, &th, &tw, d, wt, fill_init(dxp, T::ZERO));
        });
    }
}
