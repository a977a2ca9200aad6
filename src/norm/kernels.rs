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
        rayon::join(
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
        rayon::join(|| par_for(lo, mid, grain, f), || par_for(mid, hi, grain, f));
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

    /// Element range of leaf `i` (non-empty).
    pub(super) fn leaf(&self, i: usize) -> std::ops::Range<usize> {
        let (s, k) = (i / self.per_seg, i % self.per_seg);
        let base = self.start + s * self.stride;
        base + k * self.len / self.per_seg..base + (k + 1) * self.len / self.per_seg
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

#[inline(always)]
fn hsum<T: Float, const L: usize>(acc: &[T; L]) -> f64 {
    let mut s = 0.0;
    for v in acc {
        s += v.to_f64();
    }
    s
}

/// Moments of a non-empty slice: pass 1 finds a pivot (first element plus the mean of the
/// deviations from it), pass 2 sums deviations from the pivot and their squares. A constant
/// slice gets its value as mean and exactly zero `M2`.
#[inline(always)]
fn moments_body<T: Float, const L: usize>(x: &[T]) -> Moments {
    let n = x.len() as f64;
    let x0 = x[0];
    let mut a = [T::ZERO; L];
    let mut it = x.chunks_exact(L);
    for ch in &mut it {
        for (acc, &v) in a.iter_mut().zip(ch) {
            *acc += v - x0;
        }
    }
    for (acc, &v) in a.iter_mut().zip(it.remainder()) {
        *acc += v - x0;
    }
    let p = T::from_f64(x0.to_f64() + hsum(&a) / n);
    if !p.is_finite() {
        return Moments::exact(x.iter().copied());
    }
    let (mut d, mut s) = ([T::ZERO; L], [T::ZERO; L]);
    let mut it = x.chunks_exact(L);
    for ch in &mut it {
        for ((dv, sv), &v) in d.iter_mut().zip(s.iter_mut()).zip(ch) {
            let t = v - p;
            *dv += t;
            *sv += t * t;
        }
    }
    for ((dv, sv), &v) in d.iter_mut().zip(s.iter_mut()).zip(it.remainder()) {
        let t = v - p;
        *dv += t;
        *sv += t * t;
    }
    let mo = Moments::from_shifted(n, p.to_f64(), hsum(&d), hsum(&s));
    if mo.is_finite() {
        mo
    } else {
        Moments::exact(x.iter().copied())
    }
}

dispatch!(
    /// Moments of a non-empty slice (see `moments_body`).
    fn moments => moments_body(x: &[T]) -> Moments
);

/// `(Σ dy, Σ dy·(x − m))` over equal-length slices.
#[inline(always)]
fn dot_sums_body<T: Float, const L: usize>(x: &[T], dy: &[T], m: T) -> (f64, f64) {
    let (mut sd, mut sdx) = ([T::ZERO; L], [T::ZERO; L]);
    let (mut ix, mut id) = (x.chunks_exact(L), dy.chunks_exact(L));
    for (cx, cd) in (&mut ix).zip(&mut id) {
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
    (hsum(&sd), hsum(&sdx))
}

dispatch!(
    /// `(Σ dy, Σ dy·(x − m))` in `f64` (lanes summed in `T`).
    fn dot_sums => dot_sums_body(x: &[T], dy: &[T], m: T) -> (f64, f64)
);

#[inline(always)]
fn affine_body<T: Float, const L: usize>(x: &[T], y: &mut [T], m: T, a: T, b: T) {
    for (yv, &xv) in y.iter_mut().zip(x) {
        *yv = (xv - m) * a + b;
    }
}

dispatch!(
    /// `y = (x − m)·a + b` element-wise (a constant input with `x = m` gives exactly `b`).
    fn affine => affine_body(x: &[T], y: &mut [T], m: T, a: T, b: T)
);

#[inline(always)]
fn dx_train_body<T: Float, const L: usize>(x: &[T], dy: &[T], dx: &mut [T], k: [T; 4]) {
    let [m, k1, k2, k0] = k;
    for ((o, &xv), &dv) in dx.iter_mut().zip(x).zip(dy) {
        *o = k1 * dv + (k2 * (xv - m) + k0);
    }
}

dispatch!(
    /// `dx = k1·dy + k2·(x − m) + k0` with `k = [m, k1, k2, k0]`.
    fn dx_train => dx_train_body(x: &[T], dy: &[T], dx: &mut [T], k: [T; 4])
);

#[inline(always)]
fn scale_body<T: Float, const L: usize>(dy: &[T], dx: &mut [T], k1: T) {
    for (o, &dv) in dx.iter_mut().zip(dy) {
        *o = k1 * dv;
    }
}

dispatch!(
    /// `dx = k1·dy`.
    fn scale => scale_body(dy: &[T], dx: &mut [T], k1: T)
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
