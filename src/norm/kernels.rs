//! Slice kernels of the fast norm paths and the fixed-shape reduction machinery.
//!
//! Each kernel is written once as an `#[inline(always)]` generic body over `T` and a lane
//! count `L` (the number of independent accumulators of a reduction), and compiled four
//! times by [`dispatch!`]: [`Level::Scalar`] (4 scalar accumulators, plain loops),
//! [`Level::Portable`] (16 lanes, the baseline target's vectors), and on x86-64 clones under
//! `#[target_feature(enable = "avx2,fma")]` (32 lanes = 4 ymm of `f32`) and
//! `#[target_feature(enable = "avx512f")]` (64 lanes = 4 zmm of `f32`). The bodies only use
//! element-wise maps and per-lane accumulators, which LLVM vectorises to the clone's full
//! register width; reductions never rely on reassociation.
//!
//! Sums over data are taken in `T` within one leaf of at most [`CHUNK`] elements, per lane;
//! the lanes are then added in `f64` and leaves are combined in `f64` with a fixed tree
//! ([`tree`]) whose shape depends only on the problem size. The rounding depends on the
//! SIMD level (lane count) but never on the number of threads.

pub(super) use crate::alloc::Out;
use crate::simd::Level;
use crate::Float;

/// Largest leaf of a reduction, in elements (16 KiB of `f32`: both passes of a leaf hit L1).
pub(super) const CHUNK: usize = 4096;

/// Leaf ranges at or above this many elements are split across rayon tasks.
pub(super) const PAR_ELEMS: usize = 1 << 17;

/// Count, mean and sum of squared deviations (`M2`) of a set of values, in `f64`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Moments {
    /// Number of values.
    pub n: f64,
    /// Mean.
    pub mean: f64,
    /// `Σ (x − mean)²`.
    pub m2: f64,
}

impl Moments {
    /// Moments from sums about a pivot `p`: `d = Σ(x − p)`, `sq = Σ(x − p)²` (the corrected
    /// two-pass form). `M2` is clamped at 0 (NaN stays NaN).
    #[inline(always)]
    fn from_shifted(n: f64, p: f64, d: f64, sq: f64) -> Moments {
        let m2 = sq - d * d / n;
        Moments {
            n,
            mean: p + d / n,
            m2: if m2 < 0.0 { 0.0 } else { m2 },
        }
    }

    /// The textbook two-pass moments in `f64`: the slow path for leaves whose fast sums are
    /// not finite (an infinity or NaN in the data, or overflow of `T`), so that the mean of
    /// data with an infinity is that infinity and its `M2` NaN, as in the naive kernels.
    pub(super) fn exact<T: Float>(x: impl Iterator<Item = T> + Clone) -> Moments {
        let (mut n, mut s) = (0.0, 0.0);
        for v in x.clone() {
            n += 1.0;
            s += v.to_f64();
        }
        let mean = s / n;
        let m2 = x.map(|v| (v.to_f64() - mean).powi(2)).sum();
        Moments { n, mean, m2 }
    }

    /// Whether mean and `M2` are finite (the fast path's result is usable).
    #[inline(always)]
    pub(super) fn is_finite(&self) -> bool {
        self.mean.is_finite() && self.m2.is_finite()
    }

    /// Chan et al.'s pairwise merge. Merging equal means leaves the mean unchanged exactly.
    /// Non-finite means combine as the weighted sum (`∞` with finite stays `∞`, `∞ − ∞` is
    /// NaN) with NaN `M2`, as the naive sums do.
    #[inline]
    pub(super) fn merge(a: Moments, b: Moments) -> Moments {
        let n = a.n + b.n;
        let delta = b.mean - a.mean;
        if !delta.is_finite() {
            return Moments {
                n,
                mean: a.mean * (a.n / n) + b.mean * (b.n / n),
                m2: f64::NAN,
            };
        }
        Moments {
            n,
            mean: a.mean + delta * (b.n / n),
            m2: a.m2 + b.m2 + delta * delta * (a.n * b.n / n),
        }
    }

    /// The biased variance `M2 / n`.
    pub(super) fn var(&self) -> f64 {
        self.m2 / self.n
    }
}

/// Adds two pairs of sums.
#[inline]
pub(super) fn add2(a: (f64, f64), b: (f64, f64)) -> (f64, f64) {
    (a.0 + b.0, a.1 + b.1)
}

/// `f(lo..hi)` reduced with `merge` over a fixed binary tree (split at the midpoint);
/// subtrees of at least `par_min` leaves run as rayon tasks. The arithmetic depends only on
/// `lo`, `hi`, `leaf` and `merge`, never on the thread count. `hi > lo`.
pub(super) fn tree<R, F, M>(lo: usize, hi: usize, par_min: usize, leaf: &F, merge: &M) -> R
where
    R: Send,
    F: Fn(usize) -> R + Sync,
    M: Fn(R, R) -> R + Sync,
{
    debug_assert!(hi > lo);
    if hi - lo == 1 {
        return leaf(lo);
    }
    let mid = lo + (hi - lo) / 2;
    let (a, b) = if hi - lo >= par_min {
        crate::threads::join(
            || tree(lo, mid, par_min, leaf, merge),
            || tree(mid, hi, par_min, leaf, merge),
        )
    } else {
        (
            tree(lo, mid, par_min, leaf, merge),
            tree(mid, hi, par_min, leaf, merge),
        )
    };
    merge(a, b)
}

/// Runs `f(i)` for `i` in `lo..hi`, splitting into rayon tasks down to `grain` indices.
pub(super) fn par_for<F: Fn(usize) + Sync>(lo: usize, hi: usize, grain: usize, f: &F) {
    if hi - lo <= grain.max(1) {
        (lo..hi).for_each(f);
    } else {
        let mid = lo + (hi - lo) / 2;
        crate::threads::join(|| par_for(lo, mid, grain, f), || par_for(mid, hi, grain, f));
    }
}

/// `count` equal segments of `len` elements, `stride` apart from `start`, cut into leaves of
/// at most [`CHUNK`] elements: each segment into `per_seg` nearly equal pieces.
#[derive(Debug, Clone, Copy)]
pub(super) struct Segments {
    start: usize,
    stride: usize,
    count: usize,
    len: usize,
    per_seg: usize,
}

impl Segments {
    /// `len ≥ 1`, `count ≥ 1`.
    pub(super) fn new(start: usize, stride: usize, count: usize, len: usize) -> Segments {
        Segments {
            start,
            stride,
            count,
            len,
            per_seg: len.div_ceil(CHUNK),
        }
    }

    /// Number of leaves.
    pub(super) fn leaves(&self) -> usize {
        self.count * self.per_seg
    }

    /// Leaves per parallel task (subtrees at least this large fork).
    pub(super) fn par_min(&self) -> usize {
        (PAR_ELEMS / self.len.min(CHUNK)).max(2)
    }

    /// Segments per statistics leaf: short segments are grouped so that a leaf holds up to
    /// [`CHUNK`] values (one dispatch and one lane reduction per leaf).
    fn per_leaf(&self) -> usize {
        if self.per_seg == 1 {
            (CHUNK / self.len).max(1)
        } else {
            1
        }
    }

    /// Number of statistics leaves.
    pub(super) fn stat_leaves(&self) -> usize {
        if self.per_seg == 1 {
            self.count.div_ceil(self.per_leaf())
        } else {
            self.leaves()
        }
    }

    /// Statistics leaf `i`: several whole segments, or one piece of a long segment.
    pub(super) fn stat_leaf(&self, i: usize) -> Strided {
        if self.per_seg == 1 {
            let k = self.per_leaf();
            Strided {
                start: self.start + i * k * self.stride,
                stride: self.stride,
                count: k.min(self.count - i * k),
                len: self.len,
            }
        } else {
            let r = self.leaf(i);
            Strided {
                start: r.start,
                stride: r.len(),
                count: 1,
                len: r.len(),
            }
        }
    }

    /// Statistics leaf `i + 1`, or nothing after the last (what leaf `i` prefetches).
    pub(super) fn stat_next(&self, i: usize) -> Strided {
        if i + 1 < self.stat_leaves() {
            self.stat_leaf(i + 1)
        } else {
            Strided::EMPTY
        }
    }

    /// Leaves of statistics per parallel task.
    pub(super) fn stat_par_min(&self) -> usize {
        (PAR_ELEMS / (self.len * self.per_leaf()).min(CHUNK)).max(2)
    }

    /// Element range of leaf `i` (non-empty).
    pub(super) fn leaf(&self, i: usize) -> std::ops::Range<usize> {
        let (s, k) = (i / self.per_seg, i % self.per_seg);
        let base = self.start + s * self.stride;
        base + k * self.len / self.per_seg..base + (k + 1) * self.len / self.per_seg
    }
}

/// `count` equal segments `x[start + j·stride..][..len]`, `j < count`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Strided {
    start: usize,
    stride: usize,
    count: usize,
    len: usize,
}

impl Strided {
    /// No segments.
    pub(super) const EMPTY: Strided = Strided {
        start: 0,
        stride: 0,
        count: 0,
        len: 0,
    };

    /// A single contiguous range.
    pub(super) fn range(r: std::ops::Range<usize>) -> Strided {
        Strided {
            start: r.start,
            stride: r.len(),
            count: 1,
            len: r.len(),
        }
    }

    /// Segment `j` of `x`, or an empty slice if `j` is past the last segment or out of `x`.
    #[inline(always)]
    fn get<'a, T>(&self, x: &'a [T], j: usize) -> &'a [T] {
        if j >= self.count {
            return &[];
        }
        let a = (self.start + j * self.stride).min(x.len());
        &x[a..(a + self.len).min(x.len())]
    }

    /// Value number `t` (segment-major).
    #[inline(always)]
    fn at<T: Copy>(&self, x: &[T], t: usize) -> T {
        x[self.start + (t / self.len) * self.stride + t % self.len]
    }

    fn total(&self) -> usize {
        self.count * self.len
    }
}

/// Generates a dispatcher `$name(lvl, args…)` calling `$body::<T, L>(args…)` compiled for
/// the level's instruction set.
macro_rules! dispatch {
    ($(#[$m:meta])* fn $name:ident => $body:ident ($($a:ident : $t:ty),*) $(-> $r:ty)?) => {
        $(#[$m])*
        #[inline]
        pub(super) fn $name<T: Float>(lvl: Level, $($a: $t),*) $(-> $r)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn v512<T: Float>($($a: $t),*) $(-> $r)? {
                    $body::<T, 64>($($a),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v256<T: Float>($($a: $t),*) $(-> $r)? {
                    $body::<T, 32>($($a),*)
                }
                match lvl {
                    // SAFETY: `lvl` comes from `simd::active_level()`, which never exceeds the
                    // detected level, so this CPU has AVX-512F.
                    Level::Avx512 => return unsafe { v512::<T>($($a),*) },
                    // SAFETY: as above, the CPU has AVX2 and FMA.
                    Level::Avx2 => return unsafe { v256::<T>($($a),*) },
                    _ => {}
                }
            }
            match lvl {
                Level::Scalar => $body::<T, 4>($($a),*),
                _ => $body::<T, 16>($($a),*),
            }
        }
    };
}

/// Sum of the lanes: folded in halves (vector adds in `T`) down to 8 lanes, then added in
/// `f64`. `L` is a power of two.
#[inline(always)]
fn hsum<T: Float, const L: usize>(acc: &[T; L]) -> f64 {
    let mut v = *acc;
    let mut w = L;
    while w > 8 {
        w /= 2;
        let (lo, hi) = v.split_at_mut(w);
        for (a, &b) in lo.iter_mut().zip(&hi[..w]) {
            *a += b;
        }
    }
    let mut s = 0.0;
    for x in &v[..w] {
        s += x.to_f64();
    }
    s
}

/// Prefetches the cache lines of `next[i0..i0 + n]` (clamped to `next`): the kernels that
/// stream a leaf from memory prefetch the next leaf at the rate they consume this one, so
/// that short strided slabs (a 4 KiB page each) do not wait for the hardware prefetcher.
#[inline(always)]
fn prefetch<T>(next: &[T], i0: usize, n: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        let end = (i0 + n).min(next.len());
        let step = (64 / std::mem::size_of::<T>()).max(1);
        let mut i = i0;
        while i < end {
            // SAFETY: `i < next.len()`, so the pointer is inside `next`; a prefetch is a hint
            // that never faults, and SSE is part of the x86-64 baseline.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(next.as_ptr().add(i).cast::<i8>()) };
            i += step;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (next, i0, n);
}

/// Values sampled (evenly spaced) to choose the first pivot of a leaf.
const PIVOT_SAMPLE: usize = 16;

/// `(Σ (x − p), Σ (x − p)²)` over the segments, in `f64` (lanes summed in `T`),
/// prefetching segment `j` of `pf` while segment `j` is read.
///
/// Each segment's tail (fewer than `L` values) goes to two `f64` scalars, not into the
/// lanes: a tail written lane by lane, at a run-time index, kept the lane arrays in memory,
/// and the next segment's vector loads of them waited on those scalar stores. Spatial BN
/// forward (8, 256, 14, 14), one thread: 0.138–0.140 → 0.120–0.124 ms.
#[inline(always)]
fn shifted_sums<T: Float, const L: usize>(x: &[T], seg: Strided, p: T, pf: Strided) -> (f64, f64) {
    let (mut d, mut s) = ([T::ZERO; L], [T::ZERO; L]);
    let (mut dt, mut st) = (0.0, 0.0);
    for j in 0..seg.count {
        let (xs, next) = (seg.get(x, j), pf.get(x, j));
        let mut it = xs.chunks_exact(L);
        for (k, ch) in (&mut it).enumerate() {
            if L >= 16 {
                prefetch(next, k * L, L);
            }
            for ((dv, sv), &v) in d.iter_mut().zip(s.iter_mut()).zip(ch) {
                let t = v - p;
                *dv += t;
                *sv += t * t;
            }
        }
        for &v in it.remainder() {
            let t = (v - p).to_f64();
            dt += t;
            st += t * t;
        }
    }
    (hsum(&d) + dt, hsum(&s) + st)
}

/// Moments of the (non-empty) segments `seg` of `x`, in one pass in the common case: sums
/// of deviations from a pivot and of their squares, `M2 = Σ(x − p)² − (Σ(x − p))²/n`. The
/// pivot is the mean of [`PIVOT_SAMPLE`] evenly spaced values (as `x₀ + mean(xᵢ − x₀)`, so a
/// constant leaf gets exactly its value and zero `M2`). If the pivot turns out farther from
/// the mean than the standard deviation (`n·(μ − p)² > M2`, where the subtraction would lose
/// more than one bit), the sums are taken again about the mean: the corrected two-pass
/// algorithm. Non-finite results are recomputed by [`Moments::exact`].
#[inline(always)]
fn moments_body<T: Float, const L: usize>(x: &[T], seg: Strided, pf: Strided) -> Moments {
    let total = seg.total();
    let n = total as f64;
    let x0 = seg.at(x, 0);
    let k = total.min(PIVOT_SAMPLE);
    let mut a = 0.0;
    if k == PIVOT_SAMPLE {
        // Positions `i·total/16` without a division (the divisor is a constant power of two,
        // and the segment of each position is found by stepping): this runs once per leaf.
        let (q, r) = (total / PIVOT_SAMPLE, total % PIVOT_SAMPLE);
        let (mut seg_j, mut off, mut prev) = (0, 0, 0);
        for i in 0..PIVOT_SAMPLE {
            let t = i * q + i * r / PIVOT_SAMPLE;
            off += t - prev;
            prev = t;
            while off >= seg.len {
                off -= seg.len;
                seg_j += 1;
            }
            a += (x[seg.start + seg_j * seg.stride + off] - x0).to_f64();
        }
    } else {
        for i in 0..k {
            a += (seg.at(x, i * total / k) - x0).to_f64();
        }
    }
    let exact = || Moments::exact((0..total).map(|t| seg.at(x, t)));
    let p = T::from_f64(x0.to_f64() + a / k as f64);
    if !p.is_finite() {
        return exact();
    }
    let (d, s) = shifted_sums::<T, L>(x, seg, p, pf);
    let mut mo = Moments::from_shifted(n, p.to_f64(), d, s);
    if mo.is_finite() && 2.0 * d * d / n > s {
        let p = T::from_f64(mo.mean);
        let (d, s) = shifted_sums::<T, L>(x, seg, p, Strided::EMPTY);
        mo = Moments::from_shifted(n, p.to_f64(), d, s);
    }
    if mo.is_finite() {
        mo
    } else {
        exact()
    }
}

dispatch!(
    /// Moments of the segments `seg` of `x` (see `moments_body`), prefetching `pf`.
    fn moments => moments_body(x: &[T], seg: Strided, pf: Strided) -> Moments
);

/// `(Σ dy, Σ dy·(x − m))` over the segments `seg` of `x` and `dy`, prefetching `pf` of both.
#[inline(always)]
fn dot_sums_body<T: Float, const L: usize>(
    x: &[T],
    dy: &[T],
    m: T,
    seg: Strided,
    pf: Strided,
) -> (f64, f64) {
    let (mut sd, mut sdx) = ([T::ZERO; L], [T::ZERO; L]);
    let mut add = |xs: &[T], ds: &[T]| {
        for (((a, b), &xv), &dv) in sd.iter_mut().zip(sdx.iter_mut()).zip(xs).zip(ds) {
            *a += dv;
            *b += dv * (xv - m);
        }
    };
    // Without prefetching, segments two at a time with their chunks interleaved: four
    // streams in flight instead of two (the segments are a channel's short strided slabs).
    let mut j0 = 0;
    if pf.count == 0 {
        while j0 + 1 < seg.count {
            let (xa, da) = (seg.get(x, j0), seg.get(dy, j0));
            let (xb, db) = (seg.get(x, j0 + 1), seg.get(dy, j0 + 1));
            let n = xa.len().min(da.len()).min(xb.len()).min(db.len());
            let mut k = 0;
            while k + L <= n {
                add(&xa[k..k + L], &da[k..k + L]);
                add(&xb[k..k + L], &db[k..k + L]);
                k += L;
            }
            add(&xa[k..n], &da[k..n]);
            add(&xb[k..n], &db[k..n]);
            j0 += 2;
        }
    }
    for j in j0..seg.count {
        let (xs, ds) = (seg.get(x, j), seg.get(dy, j));
        let (nx, nd) = (pf.get(x, j), pf.get(dy, j));
        let (mut ix, mut id) = (xs.chunks_exact(L), ds.chunks_exact(L));
        for (k, (cx, cd)) in (&mut ix).zip(&mut id).enumerate() {
            if L >= 16 {
                prefetch(nx, k * L, L);
                prefetch(nd, k * L, L);
            }
            for (((a, b), &xv), &dv) in sd.iter_mut().zip(sdx.iter_mut()).zip(cx).zip(cd) {
                *a += dv;
                *b += dv * (xv - m);
            }
        }
        let (rx, rd) = (ix.remainder(), id.remainder());
        for (((a, b), &xv), &dv) in sd.iter_mut().zip(sdx.iter_mut()).zip(rx).zip(rd) {
            *a += dv;
            *b += dv * (xv - m);
        }
    }
    let r = (hsum(&sd), hsum(&sdx));
    if r.0.is_finite() && r.1.is_finite() {
        return r;
    }
    // A product dy·(x − m) or a lane sum overflowed `T` (or the data is not finite): redo
    // the sums in `f64`, as the naive kernels do, where only non-finite data stays
    // non-finite.
    (0..seg.count).fold((0.0, 0.0), |acc, j| {
        let (xs, ds) = (seg.get(x, j), seg.get(dy, j));
        xs.iter().zip(ds).fold(acc, |(a, b), (&xv, &dv)| {
            let dv = dv.to_f64();
            (a + dv, b + dv * (xv.to_f64() - m.to_f64()))
        })
    })
}

dispatch!(
    /// `(Σ dy, Σ dy·(x − m))` in `f64` (lanes summed in `T`; in `f64` throughout if that
    /// overflows), prefetching `pf`.
    fn dot_sums => dot_sums_body(x: &[T], dy: &[T], m: T, seg: Strided, pf: Strided) -> (f64, f64)
);

#[inline(always)]
fn affine_body<T: Float, const L: usize>(x: &[T], y: &mut [Out<T>], mab: [T; 3], pf: &[T]) {
    let [m, a, b] = mab;
    let x = &x[..y.len()];
    let (mut xi, mut yi) = (x.chunks_exact(L), y.chunks_exact_mut(L));
    for (k, (xc, yc)) in (&mut xi).zip(&mut yi).enumerate() {
        if L >= 16 {
            prefetch(pf, k * L, L);
        }
        let (xc, yc): (&[T; L], &mut [Out<T>; L]) =
            (xc.try_into().unwrap(), yc.try_into().unwrap());
        for (yv, &xv) in yc.iter_mut().zip(xc) {
            *yv = Out::new((xv - m) * a + b);
        }
    }
    for (yv, &xv) in yi.into_remainder().iter_mut().zip(xi.remainder()) {
        *yv = Out::new((xv - m) * a + b);
    }
}

dispatch!(
    /// `y = (x − m)·a + b` element-wise with `mab = [m, a, b]` (a constant input with
    /// `x = m` gives exactly `b`), prefetching `pf` (the data of the next task).
    fn affine => affine_body(x: &[T], y: &mut [Out<T>], mab: [T; 3], pf: &[T])
);

#[inline(always)]
fn affine_group_body<T: Float, const L: usize>(
    x: &[T],
    y: &mut [Out<T>],
    hw: usize,
    m: T,
    is: f64,
    gamma_beta: [&[T]; 2],
) {
    let [gamma, beta] = gamma_beta;
    let x = &x[..y.len()];
    let runs = x
        .chunks(hw)
        .zip(y.chunks_mut(hw))
        .zip(gamma.iter().zip(beta));
    for ((xc, yc), (&g, &b)) in runs {
        let a = T::from_f64(g.to_f64() * is);
        for (yv, &xv) in yc.iter_mut().zip(xc) {
            *yv = Out::new((xv - m) * a + b);
        }
    }
}

dispatch!(
    /// The affine map of a whole (image, group) in one call: channel `k`'s run
    /// `x[k·hw..][..hw]` gets `y = (x − m)·a_k + β_k` with `a_k = γ_k·is` (as [`affine`] on
    /// each run).
    fn affine_group => affine_group_body(
        x: &[T], y: &mut [Out<T>], hw: usize, m: T, is: f64, gamma_beta: [&[T]; 2]
    )
);

#[inline(always)]
fn group_sums_body<T: Float, const L: usize>(x: &[T], dy: &[T], m: T, hw: usize, out: &mut [f64]) {
    let len = x.len();
    for (k, w) in out.chunks_exact_mut(2).enumerate() {
        let r = k * hw..(k + 1) * hw;
        let next = Strided::range(r.end.min(len)..(r.end + hw).min(len));
        let (sd, sdx) = dot_sums_body::<T, L>(x, dy, m, Strided::range(r), next);
        w[0] = sd;
        w[1] = sdx;
    }
}

dispatch!(
    /// Per channel `k` of a group whose runs are at most [`CHUNK`] long:
    /// `out[2k..2k + 2] = (Σ dy, Σ dy·(x − m))` over `x[k·hw..][..hw]` (exactly as
    /// [`dot_sums`] on each run), prefetching the next run.
    fn group_sums => group_sums_body(x: &[T], dy: &[T], m: T, hw: usize, out: &mut [f64])
);

#[inline(always)]
fn dx_train_body<T: Float, const L: usize>(
    x: &[T],
    dy: &[T],
    dx: &mut [Out<T>],
    k: [T; 4],
    pf: [&[T]; 2],
) {
    let [m, k1, k2, k0] = k;
    let (x, dy) = (&x[..dx.len()], &dy[..dx.len()]);
    let (mut xi, mut di, mut oi) = (
        x.chunks_exact(L),
        dy.chunks_exact(L),
        dx.chunks_exact_mut(L),
    );
    for (j, ((xc, dc), oc)) in (&mut xi).zip(&mut di).zip(&mut oi).enumerate() {
        if L >= 16 {
            prefetch(pf[0], j * L, L);
            prefetch(pf[1], j * L, L);
        }
        let (xc, dc): (&[T; L], &[T; L]) = (xc.try_into().unwrap(), dc.try_into().unwrap());
        let oc: &mut [Out<T>; L] = oc.try_into().unwrap();
        for ((o, &xv), &dv) in oc.iter_mut().zip(xc).zip(dc) {
            *o = Out::new(k1 * dv + (k2 * (xv - m) + k0));
        }
    }
    let rem = oi.into_remainder().iter_mut().zip(xi.remainder());
    for ((o, &xv), &dv) in rem.zip(di.remainder()) {
        *o = Out::new(k1 * dv + (k2 * (xv - m) + k0));
    }
}

dispatch!(
    /// `dx = k1·dy + k2·(x − m) + k0` with `k = [m, k1, k2, k0]`, prefetching `pf`.
    fn dx_train => dx_train_body(x: &[T], dy: &[T], dx: &mut [Out<T>], k: [T; 4], pf: [&[T]; 2])
);

#[inline(always)]
fn dx_group_body<T: Float, const L: usize>(
    xdy: [&[T]; 2],
    dx: &mut [Out<T>],
    hw: usize,
    k: [T; 4],
    gamma_is: (&[T], f64),
) {
    let ([x, dy], (gamma, is)) = (xdy, gamma_is);
    let (x, dy) = (&x[..dx.len()], &dy[..dx.len()]);
    let [m, _, k2, k0] = k;
    let runs = x.chunks(hw).zip(dy.chunks(hw)).zip(dx.chunks_mut(hw));
    for (((xc, dc), oc), &g) in runs.zip(gamma) {
        let k1 = T::from_f64(g.to_f64() * is);
        for ((o, &xv), &dv) in oc.iter_mut().zip(xc).zip(dc) {
            *o = Out::new(k1 * dv + (k2 * (xv - m) + k0));
        }
    }
}

dispatch!(
    /// `dx` of a whole (image, group) in one call: channel `c`'s run gets [`dx_train`] with
    /// `k1 = γ_c·is` in place of `k[1]`.
    fn dx_group => dx_group_body(
        xdy: [&[T]; 2], dx: &mut [Out<T>], hw: usize, k: [T; 4], gamma_is: (&[T], f64)
    )
);

/// Slabs per dispatched call of [`dx_slabs`] (short slabs cost a call each otherwise).
pub(super) const SLABS: usize = 16;

#[inline(always)]
fn dx_slabs_body<T: Float, const L: usize>(
    x: &[&[T]],
    dy: &[&[T]],
    dx: &mut [&mut [Out<T>]],
    k: [T; 4],
) {
    let [m, k1, k2, k0] = k;
    let (x, dy) = (&x[..dx.len()], &dy[..dx.len()]);
    for ((o, xs), ds) in dx.iter_mut().zip(x).zip(dy) {
        let (xs, ds) = (&xs[..o.len()], &ds[..o.len()]);
        for ((o, &xv), &dv) in o.iter_mut().zip(xs).zip(ds) {
            *o = Out::new(k1 * dv + (k2 * (xv - m) + k0));
        }
    }
}

dispatch!(
    /// [`dx_train`] on several slabs (`dx[j]` from `x[j]`, `dy[j]`) in one call, without
    /// prefetch.
    fn dx_slabs => dx_slabs_body(x: &[&[T]], dy: &[&[T]], dx: &mut [&mut [Out<T>]], k: [T; 4])
);

#[inline(always)]
fn affine_slabs_body<T: Float, const L: usize>(x: &[&[T]], y: &mut [&mut [Out<T>]], mab: [T; 3]) {
    for (o, xs) in y.iter_mut().zip(x) {
        affine_body::<T, L>(xs, o, mab, &[]);
    }
}

dispatch!(
    /// [`affine`] on several slabs (`y[j]` from `x[j]`) in one call, without prefetch.
    fn affine_slabs => affine_slabs_body(x: &[&[T]], y: &mut [&mut [Out<T>]], mab: [T; 3])
);

#[inline(always)]
fn scale_body<T: Float, const L: usize>(dy: &[T], dx: &mut [Out<T>], k1: T) {
    let dy = &dy[..dx.len()];
    for (o, &dv) in dx.iter_mut().zip(dy) {
        *o = Out::new(k1 * dv);
    }
}

dispatch!(
    /// `dx = k1·dy`.
    fn scale => scale_body(dy: &[T], dx: &mut [Out<T>], k1: T)
);

/// Mutable access to disjoint pieces of one slice from several rayon tasks (the strided
/// per-channel slabs of an NCHW tensor, which safe slice splitting cannot express).
pub(super) struct SharedMut<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: `SharedMut` only hands out pieces through the unsafe `piece`, whose callers
// guarantee disjointness; with that, sending it across threads is like sending `&mut [T]`.
unsafe impl<T: Send> Send for SharedMut<'_, T> {}
// SAFETY: as above; shared access only creates disjoint `&mut` pieces.
unsafe impl<T: Send> Sync for SharedMut<'_, T> {}

impl<'a, T> SharedMut<'a, T> {
    /// Takes the exclusive borrow for the life of the wrapper.
    pub(super) fn new(s: &'a mut [T]) -> Self {
        SharedMut {
            ptr: s.as_mut_ptr(),
            len: s.len(),
            _borrow: std::marker::PhantomData,
        }
    }

    /// The elements `range` (panics if out of bounds).
    ///
    /// # Safety
    /// No two pieces alive at the same time may overlap.
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn piece(&self, range: std::ops::Range<usize>) -> &mut [T] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: in bounds (checked above) of the slice borrowed mutably for 'a; the caller
        // guarantees no other live piece overlaps it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }
}
