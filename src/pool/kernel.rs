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
use crate::alloc::Out;
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

    /// 2×2 windows, stride 2, no padding: windows tile the input without overlap, so the
    /// backward writes `dx` directly instead of zeroing and scattering.
    pub fn tiles_2x2(&self) -> bool {
        (self.kh, self.kw, self.sh, self.sw, self.ph, self.pw) == (2, 2, 2, 2, 0, 0)
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

/// Largest number of stack elements a narrow row's chunk may copy.
const TAIL_BUF: usize = 256;
/// Largest number of lanes of any vector type.
const MAX_LANES: usize = 16;

/// Input columns a chunk of `l` outputs reads, from its first window's first column: the
/// columns its windows cover (one more for a 1-wide window at stride 2, read as pairs).
#[inline(always)]
fn chunk_extent(sw: usize, kw: usize, l: usize) -> usize {
    if sw == 2 && kw == 1 {
        2 * l
    } else {
        (l - 1) * sw + kw
    }
}

/// Running state of a chunk: maxima, their window offsets (as floats), NaN lanes seen.
type Acc<V> = (V, V, <V as SimdVec>::Mask);

/// Folds element `v` (window offset `k`) into the running state: the first element
/// initialises it (`FIRST`), later ones replace it only where strictly greater.
///
/// # Safety
/// The CPU supports `V::LEVEL`.
#[inline(always)]
unsafe fn step<V: SimdVec, const IDX: bool, const FIRST: bool>(st: &mut Acc<V>, v: V, k: usize) {
    // SAFETY: the CPU supports V::LEVEL (caller).
    unsafe {
        if FIRST {
            st.0 = v;
            if IDX {
                st.1 = V::splat(V::Elem::from_usize(k));
            }
        } else if IDX {
            let m = V::gt(v, st.0);
            st.0 = V::select(m, v, st.0);
            st.1 = V::select(m, V::splat(V::Elem::from_usize(k)), st.1);
        } else {
            st.0 = V::take_gt(st.0, v);
        }
    }
}

/// Folds one window row (starting at `src[row]`, window offsets from `kbase`) into `st`,
/// reading exactly [`chunk_extent`] columns; `FIRST`: this is the first row of the window.
///
/// # Safety
/// The CPU supports `V::LEVEL`. (Slice bounds are checked.)
#[inline(always)]
unsafe fn fold_row<V: SimdVec, const SW: usize, const IDX: bool, const FIRST: bool>(
    st: &mut Acc<V>,
    src: &[V::Elem],
    row: usize,
    kbase: usize,
    kw: usize,
) {
    let l = V::LANES;
    // SAFETY (every block below): the CPU supports V::LEVEL (caller), and each pointer comes
    // from a bounds-checked slice of exactly the length the method reads.
    unsafe {
        if SW == 1 {
            for dc in 0..kw {
                let s = &src[row + dc..row + dc + l];
                let v = V::load(s.as_ptr());
                // The loads at dc = 0 and dc = kw − 1 cover every input of the chunk when
                // kw − 1 ≤ L; otherwise test each load.
                if dc == 0 || dc == kw - 1 || kw > l + 1 {
                    st.2 = V::mask_or(st.2, V::unord(v, v));
                }
                if FIRST && dc == 0 {
                    step::<V, IDX, true>(st, v, kbase);
                } else {
                    step::<V, IDX, false>(st, v, kbase + dc);
                }
            }
        } else {
            for t in 0..kw / 2 {
                let s = &src[row + 2 * t..row + 2 * t + 2 * l];
                let (e, o) = V::load_deinterleave(s.as_ptr());
                st.2 = V::mask_or(st.2, V::unord(e, o));
                if FIRST && t == 0 {
                    step::<V, IDX, true>(st, e, kbase);
                } else {
                    step::<V, IDX, false>(st, e, kbase + 2 * t);
                }
                step::<V, IDX, false>(st, o, kbase + 2 * t + 1);
            }
            if kw % 2 == 1 {
                // The last window column: the odd half of the pair one column to the left
                // (the pair at kw − 1 would read one column past the windows).
                let dc = kw - 1;
                let v = if dc == 0 {
                    let s = &src[row..row + 2 * l];
                    V::load_deinterleave(s.as_ptr()).0
                } else {
                    let s = &src[row + dc - 1..row + dc - 1 + 2 * l];
                    V::load_deinterleave(s.as_ptr()).1
                };
                st.2 = V::mask_or(st.2, V::unord(v, v));
                if FIRST && dc == 0 {
                    step::<V, IDX, true>(st, v, kbase);
                } else {
                    step::<V, IDX, false>(st, v, kbase + dc);
                }
            }
        }
    }
}

/// One chunk: the outputs of `LANES` consecutive columns of one output row, from the input
/// window rows starting at `src[base]` (row stride `stride`, `nrows` ≥ 1 rows, the first being
/// window row `dr0`). Reads exactly [`chunk_extent`] columns of each row. Returns the maxima,
/// their window offsets (as floats, when `IDX`), and whether any input read was NaN.
///
/// # Safety
/// The CPU supports `V::LEVEL`. (Slice bounds are checked.)
#[inline(always)]
unsafe fn chunk<V: SimdVec, const SW: usize, const IDX: bool, const NR: usize>(
    src: &[V::Elem],
    base: usize,
    stride: usize,
    nrows: usize,
    dr0: usize,
    kw: usize,
) -> (V, V, bool) {
    // A row count known at compile time (NR > 0) unrolls the window completely.
    let nrows = if NR == 0 { nrows } else { NR };
    // SAFETY: the CPU supports V::LEVEL (caller).
    unsafe {
        let z = V::splat(V::Elem::ZERO);
        let mut st: Acc<V> = (z, z, V::mask_none());
        fold_row::<V, SW, IDX, true>(&mut st, src, base, dr0 * kw, kw);
        for rr in 1..nrows {
            fold_row::<V, SW, IDX, false>(&mut st, src, base + rr * stride, (dr0 + rr) * kw, kw);
        }
        (st.0, st.1, V::mask_any(st.2))
    }
}

/// Writes outputs `js` of output row `i` with the scalar window loop (`out[j − j0]`).
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

/// A chunk's input: (slice, start, row stride), or `None` for the scalar loop.
type Src<'a, T> = Option<(&'a [T], usize, usize)>;

/// One chunk at output column `j` of row `i` (`rows` = `(i, j0, nrows, dr0)`): stores its
/// outputs `skip..n` into `out[j − j0 ..]`, or recomputes them with the scalar loop if the
/// chunk read a NaN or `src` is `None`. A function, not a closure: a closure inside this
/// generic (non-`target_feature`) code would not inherit the clone's CPU features if LLVM
/// did not inline it, and every vector method would become a call.
///
/// # Safety
/// The CPU supports `V::LEVEL`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn one<V: SimdVec, const SW: usize, const IDX: bool, const NR: usize>(
    x: &[V::Elem],
    p: &Plan,
    (i, j0, nrows, dr0): (usize, usize, usize, usize),
    kw: usize,
    out: &mut [V::Elem],
    idx: &mut Option<&mut [u8]>,
    src: Src<'_, V::Elem>,
    j: usize,
    skip: usize,
    n: usize,
) {
    let l = V::LANES;
    let Some((src, base, stride)) = src else {
        scalar_range(x, p, i, j + skip..j + n, j0, out, idx);
        return;
    };
    // SAFETY: the CPU supports V::LEVEL (caller).
    let (acc, ix, nan) = unsafe { chunk::<V, SW, IDX, NR>(src, base, stride, nrows, dr0, kw) };
    if nan {
        scalar_range(x, p, i, j + skip..j + n, j0, out, idx);
    } else if skip == 0 && n == l {
        let o = &mut out[j - j0..j - j0 + l];
        // SAFETY: `o` has LANES elements; the CPU supports V::LEVEL.
        unsafe { acc.store(o.as_mut_ptr()) };
        if let Some(ixs) = idx.as_deref_mut() {
            let o = &mut ixs[j - j0..j - j0 + l];
            // SAFETY: `o` has LANES bytes; the CPU supports V::LEVEL.
            unsafe { ix.store_u8(o.as_mut_ptr()) };
        }
    } else {
        let mut a = [V::Elem::ZERO; MAX_LANES];
        let mut b = [0u8; MAX_LANES];
        // SAFETY: `a` and `b` hold MAX_LANES ≥ LANES elements; the CPU supports V::LEVEL.
        unsafe {
            acc.store(a.as_mut_ptr());
            if IDX {
                ix.store_u8(b.as_mut_ptr());
            }
        }
        out[j + skip - j0..j + n - j0].copy_from_slice(&a[skip..n]);
        if let Some(ixs) = idx.as_deref_mut() {
            ixs[j + skip - j0..j + n - j0].copy_from_slice(&b[skip..n]);
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
    idx: Option<&mut [u8]>,
) {
    let (r0, r1) = p.rows(i);
    // SAFETY: the CPU supports V::LEVEL (caller).
    unsafe {
        if KW != 0 && r1 - r0 == KW && p.kh == KW {
            // Square specialised windows with all their rows inside the input.
            fwd_row_nr::<V, SW, KW, IDX, KW>(x, p, i, j0, j1, out, idx)
        } else {
            fwd_row_nr::<V, SW, KW, IDX, 0>(x, p, i, j0, j1, out, idx)
        }
    }
}

/// [`fwd_row`] with the window's row count `NR` fixed at compile time (0: at run time).
///
/// # Safety
/// The CPU supports `V::LEVEL`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn fwd_row_nr<
    V: SimdVec,
    const SW: usize,
    const KW: usize,
    const IDX: bool,
    const NR: usize,
>(
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
    let ext = chunk_extent(SW, kw, l);
    // Outputs vlo..vhi have windows inside the row; chunks of L of them fit in the row's
    // extent (their last window ends at or before column W).
    let vlo = j0.max(p.jlo).min(j1);
    let vhi = j1.min(p.jhi).max(vlo);
    if vlo > j0 {
        scalar_range(x, p, i, j0..vlo, j0, out, &mut idx);
    }
    let (rows, kw_) = ((i, j0, nrows, dr0), kw);
    // The `one` calls below (unsafe fns, called from this unsafe fn's body) rely on this
    // function's contract: the CPU supports V::LEVEL.
    let fits = |j: usize| j * SW - p.pw + ext <= p.w;
    let mut j = vlo;
    while j < vhi {
        let n = l.min(vhi - j);
        if n == l && fits(j) {
            one::<V, SW, IDX, NR>(
                x,
                p,
                rows,
                kw_,
                out,
                &mut idx,
                Some((x, r0 * p.w + j * SW - p.pw, p.w)),
                j,
                0,
                l,
            );
        } else if vhi - vlo >= l && j > vhi - l && fits(vhi - l) {
            // The last L outputs, overlapping the previous chunk: the overlap is recomputed
            // to the same values and stored again.
            let jb = vhi - l;
            one::<V, SW, IDX, NR>(
                x,
                p,
                rows,
                kw_,
                out,
                &mut idx,
                Some((x, r0 * p.w + jb * SW - p.pw, p.w)),
                jb,
                0,
                l,
            );
            j = vhi;
            continue;
        } else if nrows * ext <= TAIL_BUF {
            // A chunk that would read past the row: run it on a zero-padded copy.
            let mut buf = [V::Elem::ZERO; TAIL_BUF];
            let c0 = j * SW - p.pw;
            let avail = ext.min(p.w - c0);
            for rr in 0..nrows {
                let s = (r0 + rr) * p.w + c0;
                buf[rr * ext..rr * ext + avail].copy_from_slice(&x[s..s + avail]);
            }
            one::<V, SW, IDX, NR>(
                x,
                p,
                rows,
                kw_,
                out,
                &mut idx,
                Some((&buf, 0, ext)),
                j,
                0,
                n,
            );
        } else {
            one::<V, SW, IDX, NR>(x, p, rows, kw_, out, &mut idx, None, j, 0, n);
        }
        j += n;
    }
    if j1 > vhi {
        scalar_range(x, p, i, vhi..j1, j0, out, &mut idx);
    }
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
    if p.tiles_2x2() {
        // SAFETY: only computed values are stored through the slots (bwd_2x2_rows,
        // zero_2x2_margins).
        let dx = unsafe { crate::alloc::as_uninit_mut(dx) };
        let mut vals = [V::Elem::ZERO; SEG];
        let mut ix = [0u8; SEG];
        for i in 0..p.oh {
            let (top, bot) = dx[2 * i * p.w..(2 * i + 2) * p.w].split_at_mut(p.w);
            let mut j0 = 0;
            while j0 < p.ow {
                let j1 = (j0 + SEG).min(p.ow);
                let n = j1 - j0;
                // SAFETY: the CPU supports V::LEVEL (caller).
                unsafe { row::<V>(x, p, i, (j0, j1), &mut vals[..n], Some(&mut ix[..n])) };
                // SAFETY: the CPU supports V::LEVEL (caller).
                unsafe {
                    bwd_2x2_rows(
                        V::LEVEL,
                        &ix[..n],
                        &dout[i * p.ow + j0..i * p.ow + j1],
                        &mut top[2 * j0..2 * j1],
                        &mut bot[2 * j0..2 * j1],
                    )
                };
                j0 = j1;
            }
        }
        zero_2x2_margins(p, dx);
        return;
    }
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

crate::simd::multiversion! {
    /// Rows `2i` and `2i + 1` of `dx` (their first `2·OW` columns) for a 2×2 stride-2
    /// unpadded pooling, from output row `i`'s winners `ix` and gradients `d`: each element
    /// is `0 + d` at its window's winner, else 0 (the naive kernel's `0 + d`, bit for bit).
    /// Plain loops, autovectorised in each clone. The level comes from the caller (read per
    /// row, it took 14 % of the backward of (50, 32, 32, 32)); the clones are never inlined
    /// (inlined into the plane loop, as a `-C target-cpu=native` build did, the loop no
    /// longer knew that `top` and `bot` are disjoint: (100, 3, 32, 32) 0.036 → 0.075 ms).
    ///
    /// # Safety
    /// The CPU supports `level`.
    unsafe fn bwd_2x2_rows<T: Float>(
        level: Level,
        ix: &[u8],
        d: &[T],
        top: &mut [Out<T>],
        bot: &mut [Out<T>],
    ) {
        let z = T::ZERO;
        let rows = top.chunks_exact_mut(2).zip(bot.chunks_exact_mut(2));
        for ((&k, &g), (t, b)) in ix.iter().zip(d).zip(rows) {
            let g = z + g;
            t[0] = Out::new(if k == 0 { g } else { z });
            t[1] = Out::new(if k == 1 { g } else { z });
            b[0] = Out::new(if k == 2 { g } else { z });
            b[1] = Out::new(if k == 3 { g } else { z });
        }
    }
}

/// Zeroes what 2×2 stride-2 windows do not cover: the last column (odd `W`) and the last
/// row (odd `H`).
fn zero_2x2_margins<T: Float>(p: &Plan, dx: &mut [Out<T>]) {
    if p.w % 2 == 1 {
        for r in 0..2 * p.oh {
            dx[r * p.w + p.w - 1] = Out::new(T::ZERO);
        }
    }
    if p.h % 2 == 1 {
        dx[(p.h - 1) * p.w..].fill(Out::new(T::ZERO));
    }
}

/// Backward of one 2×2 stride-2 unpadded plane from stored offsets: writes every element of
/// `dx` (which may start uninitialised): rows `0..2·OH` × columns `0..2·OW` through
/// `bwd_2x2_rows` (at `level`, capped by the detected level), the odd last column and row
/// through `zero_2x2_margins`.
pub(super) fn bwd_2x2_plane<T: Float>(
    level: Level,
    ix: &[u8],
    dout: &[T],
    p: &Plan,
    dx: &mut [Out<T>],
) {
    let level = level.min(crate::simd::detected_level());
    for i in 0..p.oh {
        let (top, bot) = dx[2 * i * p.w..(2 * i + 2) * p.w].split_at_mut(p.w);
        let r = i * p.ow..(i + 1) * p.ow;
        // SAFETY: `level` is at most the detected level, so the CPU supports it.
        unsafe {
            bwd_2x2_rows(
                level,
                &ix[r.clone()],
                &dout[r],
                &mut top[..2 * p.ow],
                &mut bot[..2 * p.ow],
            )
        };
    }
    zero_2x2_margins(p, dx);
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
