//! The per-plane max-pool kernels, generic over the vector type of a SIMD level.
//!
//! One output row at a time, vectorised along the row: the outputs `j..j+L` of a chunk read,
//! for each window row and window column `dc`, the inputs `j·sw − pw + dc` — a plain load
//! when `sw = 1`, the even or odd half of a deinterleaved pair of loads when `sw = 2`. The
//! window is folded in row-major order with `v > acc ? v : acc`, which is exactly the naive
//! rule "first maximum wins" (also for ±0). NaN is the one case that rule does not cover (the
//! naive kernel lets the first NaN win), so every chunk also tests its inputs for NaN and
//! recomputes its outputs with the scalar window loop when it finds one.
//!
//! Outputs whose window reaches into the padding (the first `⌈pw/sw⌉` and the last few of a
//! row) use the scalar window loop; the vector chunk that would read past the end of the row
//! runs on a zero-padded copy of its inputs on the stack. Strides above 2 use the scalar
//! loop throughout, as do indices of windows above 256 elements.
//!
//! [`fwd_plane`] is instantiated once per level inside a `#[target_feature]` function, so the
//! AVX2 and AVX-512 versions use ymm/zmm registers in a default build.

use super::indices::WinIdx;
use super::MaxPool2dGeometry;
use crate::simd::vector::{Scalar, SimdElem, SimdVec};
use crate::simd::Level;
use crate::Float;

/// The geometry one plane's kernel needs, with the range of output columns whose windows
/// lie inside the row.
#[derive(Debug, Clone, Copy)]
pub(super) struct Plan {
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
    /// Outputs `jlo..jhi` have windows without padding columns.
    jlo: usize,
    jhi: usize,
}

impl Plan {
    pub fn new(g: &MaxPool2dGeometry) -> Plan {
        let p = &g.params;
        let (kw, sw, pw) = (p.kernel[1], p.stride[1], p.padding[1]);
        let jlo = pw.div_ceil(sw).min(g.ow);
        let jhi = if g.w + pw >= kw {
            ((g.w + pw - kw) / sw + 1).min(g.ow)
        } else {
            0
        };
        Plan {
            h: g.h,
            w: g.w,
            oh: g.oh,
            ow: g.ow,
            kh: p.kernel[0],
            kw,
            sh: p.stride[0],
            sw,
            ph: p.padding[0],
            pw,
            jlo,
            jhi: jhi.max(jlo),
        }
    }

    /// In-bounds input rows `r0..r1` of output row `i`.
    #[inline(always)]
    pub fn rows(&self, i: usize) -> (usize, usize) {
        let lo = i * self.sh;
        (
            lo.saturating_sub(self.ph),
            (lo + self.kh - self.ph).min(self.h),
        )
    }

    /// In-bounds input columns `c0..c1` of output column `j`.
    #[inline(always)]
    pub fn cols(&self, j: usize) -> (usize, usize) {
        let lo = j * self.sw;
        (
            lo.saturating_sub(self.pw),
            (lo + self.kw - self.pw).min(self.w),
        )
    }
}

/// The winner of window `(i, j)` — value and offset within the `kh × kw` window — by the
/// naive kernel's rule: the first maximum in row-major order, or the first NaN.
#[inline]
pub(super) fn scalar_window<T: Float>(x: &[T], p: &Plan, i: usize, j: usize) -> (T, usize) {
    let (r0, r1) = p.rows(i);
    let (c0, c1) = p.cols(j);
    let mut best = (r0, c0);
    let mut best_v = x[r0 * p.w + c0];
    'rows: for r in r0..r1 {
        for (c, &v) in x[r * p.w + c0..r * p.w + c1].iter().enumerate() {
            if best_v.is_nan() {
                break 'rows;
            }
            if v > best_v || v.is_nan() {
                best = (r, c0 + c);
                best_v = v;
            }
        }
    }
    let dr = best.0 + p.ph - i * p.sh;
    let dc = best.1 + p.pw - j * p.sw;
    (best_v, dr * p.kw + dc)
}

/// Largest number of stack elements a tail chunk may copy.
const TAIL_BUF: usize = 1024;
/// Largest number of lanes of any vector type.
const MAX_LANES: usize = 16;

/// One chunk: the outputs of `LANES` consecutive columns of one output row, from the input
/// window rows starting at `src[base]` (row stride `stride`, `nrows` rows, the first being
/// window row `dr0`). Returns the maxima, their window offsets (as floats, when `IDX`), and
/// whether any input read was NaN.
///
/// # Safety
/// The CPU supports `V::LEVEL`. (Slice bounds are checked.)
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn chunk<V: SimdVec, const SW: usize, const IDX: bool>(
    src: &[V::Elem],
    base: usize,
    stride: usize,
    nrows: usize,
    dr0: usize,
    kw: usize,
) -> (V, V, bool) {
    let l = V::LANES;
    // SAFETY (every block below): the CPU supports V::LEVEL (caller), and each pointer comes
    // from a bounds-checked slice of exactly the length the method reads.
    let mut acc = unsafe { V::splat(V::Elem::ZERO) };
    let mut ix = acc;
    let mut nan = unsafe { V::mask_none() };
    let mut first = true;
    let mut step = |v: V, k: usize| {
        if first {
            acc = v;
            if IDX {
                ix = unsafe { V::splat(V::Elem::from_usize(k)) };
            }
            first = false;
        } else if IDX {
            unsafe {
                let m = V::gt(v, acc);
                acc = V::select(m, v, acc);
                ix = V::select(m, V::splat(V::Elem::from_usize(k)), ix);
            }
        } else {
            acc = unsafe { V::take_gt(acc, v) };
        }
    };
    for rr in 0..nrows {
        let row = base + rr * stride;
        let kbase = (dr0 + rr) * kw;
        if SW == 1 {
            for dc in 0..kw {
                let s = &src[row + dc..row + dc + l];
                let v = unsafe { V::load(s.as_ptr()) };
                // The loads at dc = 0 and dc = kw − 1 cover every input of the chunk when
                // kw − 1 ≤ L; otherwise test each load.
                if dc == 0 || dc == kw - 1 || kw > l + 1 {
                    nan = unsafe { V::mask_or(nan, V::unord(v, v)) };
                }
                step(v, kbase + dc);
            }
        } else {
            for t in 0..kw.div_ceil(2) {
                let s = &src[row + 2 * t..row + 2 * t + 2 * l];
                let (e, o) = unsafe { V::load_deinterleave(s.as_ptr()) };
                nan = unsafe { V::mask_or(nan, V::unord(e, o)) };
                step(e, kbase + 2 * t);
                if 2 * t + 1 < kw {
                    step(o, kbase + 2 * t + 1);
                }
            }
        }
    }
    (acc, ix, unsafe { V::mask_any(nan) })
}

/// Writes outputs `j0..j1` of output row `i` with the scalar window loop.
#[inline]
fn scalar_range<T: Float>(
    x: &[T],
    p: &Plan,
    i: usize,
    js: std::ops::Range<usize>,
    j0: usize,
    out: &mut [T],
    idx: &mut Option<&mut [u8]>,
) {
    for j in js {
        let (v, off) = scalar_window(x, p, i, j);
        out[j - j0] = v;
        if let Some(ix) = idx.as_deref_mut() {
            ix[j - j0] = off as u8;
        }
    }
}

/// Outputs `j0..j1` of output row `i` into `out` (and their `u8` window offsets into `idx`,
/// which requires a window of at most 256 elements). `KW` is the window width when known at
/// compile time, else 0.
///
/// # Safety
/// The CPU supports `V::LEVEL`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn fwd_row<V: SimdVec, const SW: usize, const KW: usize, const IDX: bool>(
    x: &[V::Elem],
    p: &Plan,
    i: usize,
    j0: usize,
    j1: usize,
    out: &mut [V::Elem],
    mut idx: Option<&mut [u8]>,
) {
    let l = V::LANES;
    let kw = if KW == 0 { p.kw } else { KW };
    let (r0, r1) = p.rows(i);
    let nrows = r1 - r0;
    let dr0 = r0 + p.ph - i * p.sh;
    // Input columns a chunk reads, from its first window's first column.
    let ext = if SW == 1 {
        kw - 1 + l
    } else {
        2 * kw.div_ceil(2) - 2 + 2 * l
    };
    let vlo = j0.max(p.jlo).min(j1);
    let vhi = j1.min(p.jhi).max(vlo);
    scalar_range(x, p, i, j0..vlo, j0, out, &mut idx);
    let mut j = vlo;
    let mut fin = |j: usize, acc: V, ix: V, nan: bool, n: usize, out: &mut [V::Elem]| {
        if nan {
            scalar_range(x, p, i, j..j + n, j0, out, &mut idx);
            return;
        }
        let mut a = [V::Elem::ZERO; MAX_LANES];
        let mut b = [0u8; MAX_LANES];
        // SAFETY: `a` and `b` hold MAX_LANES ≥ LANES elements; the CPU supports V::LEVEL.
        unsafe {
            acc.store(a.as_mut_ptr());
            if IDX {
                ix.store_u8(b.as_mut_ptr());
            }
        }
        out[j - j0..j - j0 + n].copy_from_slice(&a[..n]);
        if let Some(ixs) = idx.as_deref_mut() {
            ixs[j - j0..j - j0 + n].copy_from_slice(&b[..n]);
        }
    };
    while j + l <= vhi && j * SW - p.pw + ext <= p.w {
        let base = r0 * p.w + j * SW - p.pw;
        // SAFETY: the CPU supports V::LEVEL (caller).
        let (acc, ix, nan) = unsafe { chunk::<V, SW, IDX>(x, base, p.w, nrows, dr0, kw) };
        if !nan && !IDX {
            // Store straight into the output.
            let o = &mut out[j - j0..j - j0 + l];
            // SAFETY: `o` has LANES elements; the CPU supports V::LEVEL.
            unsafe { acc.store(o.as_mut_ptr()) };
        } else {
            fin(j, acc, ix, nan, l, out);
        }
        j += l;
    }
    if j < vhi {
        // The last chunk would read past the row: run it on a zero-padded copy.
        if nrows * ext <= TAIL_BUF {
            let mut buf = [V::Elem::ZERO; TAIL_BUF];
            let c0 = j * SW - p.pw;
            let avail = ext.min(p.w - c0);
            for rr in 0..nrows {
                let s = (r0 + rr) * p.w + c0;
                buf[rr * ext..rr * ext + avail].copy_from_slice(&x[s..s + avail]);
            }
            // SAFETY: the CPU supports V::LEVEL (caller).
            let (acc, ix, nan) = unsafe { chunk::<V, SW, IDX>(&buf, 0, ext, nrows, dr0, kw) };
            fin(j, acc, ix, nan, vhi - j, out);
        } else {
            scalar_range(x, p, i, j..vhi, j0, out, &mut idx);
        }
    }
    scalar_range(x, p, i, vhi..j1, j0, out, &mut idx);
}

/// Outputs `j0..j1` of row `i`, choosing the specialised row kernel.
///
/// # Safety
/// The CPU supports `V::LEVEL`.
#[inline(always)]
pub(super) unsafe fn row<V: SimdVec>(
    x: &[V::Elem],
    p: &Plan,
    i: usize,
    (j0, j1): (usize, usize),
    out: &mut [V::Elem],
    idx: Option<&mut [u8]>,
) {
    // SAFETY (all arms): the CPU supports V::LEVEL (caller).
    unsafe {
        match (idx.is_some(), p.sw, p.kw) {
            (false, 2, 2) => fwd_row::<V, 2, 2, false>(x, p, i, j0, j1, out, idx),
            (false, 2, 3) => fwd_row::<V, 2, 3, false>(x, p, i, j0, j1, out, idx),
            (false, 2, _) => fwd_row::<V, 2, 0, false>(x, p, i, j0, j1, out, idx),
            (false, 1, _) => fwd_row::<V, 1, 0, false>(x, p, i, j0, j1, out, idx),
            (true, 2, 2) => fwd_row::<V, 2, 2, true>(x, p, i, j0, j1, out, idx),
            (true, 2, 3) => fwd_row::<V, 2, 3, true>(x, p, i, j0, j1, out, idx),
            (true, 2, _) => fwd_row::<V, 2, 0, true>(x, p, i, j0, j1, out, idx),
            (true, 1, _) => fwd_row::<V, 1, 0, true>(x, p, i, j0, j1, out, idx),
            (_, _, _) => {
                let mut idx = idx;
                scalar_range(x, p, i, j0..j1, j0, out, &mut idx)
            }
        }
    }
}

/// Forward of one plane: `out` (`OH·OW`) and, if given, `u8` offsets (window ≤ 256).
///
/// # Safety
/// The CPU supports `V::LEVEL`.
#[inline(always)]
unsafe fn fwd_plane_v<V: SimdVec>(
    x: &[V::Elem],
    p: &Plan,
    out: &mut [V::Elem],
    mut idx: Option<&mut [u8]>,
) {
    debug_assert!(V::LEVEL <= crate::simd::detected_level());
    for (i, o) in out.chunks_exact_mut(p.ow).enumerate() {
        let ix = idx.as_deref_mut().map(|s| &mut s[i * p.ow..(i + 1) * p.ow]);
        // SAFETY: the CPU supports V::LEVEL (caller).
        unsafe { row::<V>(x, p, i, (0, p.ow), o, ix) };
    }
}

/// Side of the stack buffers the backward fills with one segment of a row's winners.
const SEG: usize = 256;

/// `(dr, dc)` of each offset of a window of at most 256 elements.
fn offset_table(p: &Plan) -> [(u16, u16); 256] {
    let mut t = [(0u16, 0u16); 256];
    for (k, e) in t.iter_mut().enumerate().take(p.kh * p.kw) {
        *e = ((k / p.kw) as u16, (k % p.kw) as u16);
    }
    t
}

/// Backward of one plane by recomputing the winners (window ≤ 256 elements, stride ≤ 2):
/// `dx` (`H·W`, zero on entry) gets each `dout` added at its window's winner, outputs in
/// row-major order (the naive kernel's accumulation order).
///
/// # Safety
/// The CPU supports `V::LEVEL`.
#[inline(always)]
unsafe fn bwd_plane_v<V: SimdVec>(x: &[V::Elem], dout: &[V::Elem], p: &Plan, dx: &mut [V::Elem]) {
    let table = offset_table(p);
    let mut vals = [V::Elem::ZERO; SEG];
    let mut ix = [0u8; SEG];
    for i in 0..p.oh {
        let mut j0 = 0;
        while j0 < p.ow {
            let j1 = (j0 + SEG).min(p.ow);
            let n = j1 - j0;
            // SAFETY: the CPU supports V::LEVEL (caller).
            unsafe { row::<V>(x, p, i, (j0, j1), &mut vals[..n], Some(&mut ix[..n])) };
            let d = &dout[i * p.ow + j0..i * p.ow + j1];
            for (jj, (&k, &g)) in ix[..n].iter().zip(d).enumerate() {
                let (dr, dc) = table[k as usize];
                let r = i * p.sh + dr as usize - p.ph;
                let c = (j0 + jj) * p.sw + dc as usize - p.pw;
                dx[r * p.w + c] += g;
            }
            j0 = j1;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fwd_plane_avx2<E: SimdElem>(x: &[E], p: &Plan, out: &mut [E], idx: Option<&mut [u8]>) {
    // SAFETY: this clone is only called when the CPU has AVX2 and FMA.
    unsafe { fwd_plane_v::<E::Avx2>(x, p, out, idx) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn fwd_plane_avx512<E: SimdElem>(x: &[E], p: &Plan, out: &mut [E], idx: Option<&mut [u8]>) {
    // SAFETY: this clone is only called when the CPU has AVX-512F.
    unsafe { fwd_plane_v::<E::Avx512>(x, p, out, idx) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn bwd_plane_avx2<E: SimdElem>(x: &[E], dout: &[E], p: &Plan, dx: &mut [E]) {
    // SAFETY: this clone is only called when the CPU has AVX2 and FMA.
    unsafe { bwd_plane_v::<E::Avx2>(x, dout, p, dx) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn bwd_plane_avx512<E: SimdElem>(x: &[E], dout: &[E], p: &Plan, dx: &mut [E]) {
    // SAFETY: this clone is only called when the CPU has AVX-512F.
    unsafe { bwd_plane_v::<E::Avx512>(x, dout, p, dx) }
}

/// Forward of one plane at `level` (values, and `u8` offsets when `idx` is given, which
/// needs a window of at most 256 elements).
pub(super) fn fwd_plane<E: SimdElem>(
    level: Level,
    x: &[E],
    p: &Plan,
    out: &mut [E],
    idx: Option<&mut [u8]>,
) {
    match level.min(crate::simd::detected_level()) {
        // SAFETY: Scalar and wide need no CPU feature beyond the target's.
        Level::Scalar => unsafe { fwd_plane_v::<Scalar<E>>(x, p, out, idx) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level is at most the detected level, so the CPU has AVX2 and FMA.
        Level::Avx2 => unsafe { fwd_plane_avx2(x, p, out, idx) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level is at most the detected level, so the CPU has AVX-512F.
        Level::Avx512 => unsafe { fwd_plane_avx512(x, p, out, idx) },
        // SAFETY: as for Scalar.
        _ => unsafe { fwd_plane_v::<E::Wide>(x, p, out, idx) },
    }
}

/// Recomputing backward of one plane at `level` (window ≤ 256 elements; `dx` zero on entry).
pub(super) fn bwd_plane<E: SimdElem>(level: Level, x: &[E], dout: &[E], p: &Plan, dx: &mut [E]) {
    match level.min(crate::simd::detected_level()) {
        // SAFETY: Scalar and wide need no CPU feature beyond the target's.
        Level::Scalar => unsafe { bwd_plane_v::<Scalar<E>>(x, dout, p, dx) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level is at most the detected level, so the CPU has AVX2 and FMA.
        Level::Avx2 => unsafe { bwd_plane_avx2(x, dout, p, dx) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level is at most the detected level, so the CPU has AVX-512F.
        Level::Avx512 => unsafe { bwd_plane_avx512(x, dout, p, dx) },
        // SAFETY: as for Scalar.
        _ => unsafe { bwd_plane_v::<E::Wide>(x, dout, p, dx) },
    }
}

/// Backward of one plane from stored offsets (`dx` zero on entry), outputs in row-major order.
pub(super) fn bwd_plane_indices<T: Float, I: WinIdx>(ix: &[I], dout: &[T], p: &Plan, dx: &mut [T]) {
    let small = p.kh * p.kw <= 256;
    let table = if small {
        offset_table(p)
    } else {
        [(0, 0); 256]
    };
    let rows = ix.chunks_exact(p.ow).zip(dout.chunks_exact(p.ow));
    for (i, (ixr, dr)) in rows.enumerate() {
        for (j, (&o, &g)) in ixr.iter().zip(dr).enumerate() {
            let (wr, wc) = if small {
                let (a, b) = table[o.off() & 255];
                (a as usize, b as usize)
            } else {
                (o.off() / p.kw, o.off() % p.kw)
            };
            let r = i * p.sh + wr - p.ph;
            let c = j * p.sw + wc - p.pw;
            dx[r * p.w + c] += g;
        }
    }
}

/// Scalar recomputing backward of one plane (any window; `dx` zero on entry).
pub(super) fn bwd_plane_scalar<T: Float>(x: &[T], dout: &[T], p: &Plan, dx: &mut [T]) {
    for i in 0..p.oh {
        for j in 0..p.ow {
            let (_, off) = scalar_window(x, p, i, j);
            let r = i * p.sh + off / p.kw - p.ph;
            let c = j * p.sw + off % p.kw - p.pw;
            dx[r * p.w + c] += dout[i * p.ow + j];
        }
    }
}

/// Scalar forward of one plane with offsets of any width (windows above 256 elements, and
/// element types without vector kernels).
pub(super) fn fwd_plane_scalar<T: Float, I: WinIdx>(
    x: &[T],
    p: &Plan,
    out: &mut [T],
    mut idx: Option<&mut [I]>,
) {
    for i in 0..p.oh {
        for j in 0..p.ow {
            let (v, off) = scalar_window(x, p, i, j);
            out[i * p.ow + j] = v;
            if let Some(ix) = idx.as_deref_mut() {
                ix[i * p.ow + j] = I::from_off(off);
            }
        }
    }
}
