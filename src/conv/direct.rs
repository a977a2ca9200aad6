//! A register-blocked kernel for the forward GEMM `out = W · cols + b` when the reduction is
//! short (`K = C/groups · KH · KW` ≤ [`MAX_K`], e.g. an RGB 3×3 layer, `K = 27`, or 7×7,
//! `K = 147`).
//!
//! There `matrixmultiply` spends more time packing both operands (and allocating its
//! buffers) than multiplying. This kernel reads the column tile (or, for 1×1 layers, the
//! image) in place: blocks of `FB` filters × [`PV`] pixels accumulate all `K` taps in
//! registers, starting from the bias, and are stored once. The filters' weights are first
//! transposed into a small `K × FB` stack array so the inner loop broadcasts one weight per
//! filter and reads one contiguous run of pixels per tap.
//!
//! On AVX-512F and AVX2+FMA the blocks are explicit [`SimdVec`] registers with fused
//! multiply-adds (`#[target_feature]` clones, picked by [`simd::active_level`]; AVX-512 f32:
//! 8 filters × one zmm of 16 pixels). At the scalar and portable levels the caller keeps the
//! GEMM (`matrixmultiply` has its own vector kernels; plain loops here measured 7.7 GFLOP/s
//! on cs231n_fast against its 33). Every output element sums `bias, then tap 0, 1, …, K−1`
//! in that order with fused multiply-adds, so the result depends on neither the thread
//! count nor the tiling (but differs in rounding from the GEMM of the other levels).

use std::any::TypeId;

use crate::alloc::Out;
#[cfg(target_arch = "x86_64")]
use crate::simd::vector::{Avx2F32, Avx2F64, Avx512F32, Avx512F64, SimdVec};
use crate::simd::{self, Level};
use crate::Float;

/// Longest reduction this kernel takes (the stack copy of a filter block's weights holds
/// `MAX_K · 8` values).
pub(crate) const MAX_K: usize = 256;
/// Pixels per register block (every level, so the tails are the same).
const PV: usize = 16;
/// Largest filter block.
const FB_MAX: usize = 8;

/// The inputs of one call: `fm` filters × `pt` pixels.
pub(crate) struct SmallGemm<'a, T> {
    /// `K` (at most [`MAX_K`]).
    pub(crate) k: usize,
    /// Weights: row `f` is `w[f·k ..][..k]`, for `f < fm`.
    pub(crate) w: &'a [T],
    /// Columns: tap `t`, pixel `j = s·seg_len + e` (`e < seg_len`) is
    /// `cols[offs[t] + s·seg_step + e]` (`offs`: `k` values). The pixels come in segments
    /// (output rows) whose runs lie `seg_step` apart in `cols`; `pt` is a multiple of
    /// `seg_len`.
    pub(crate) cols: &'a [T],
    pub(crate) offs: &'a [usize],
    pub(crate) seg_len: usize,
    pub(crate) seg_step: usize,
    pub(crate) pt: usize,
    /// Bias of each of the `fm` filters, or `None` for zeros.
    pub(crate) bias: Option<&'a [T]>,
}

/// Whether [`small_gemm`] runs at SIMD level `level` (AVX2 or AVX-512 on x86-64).
pub(crate) fn available(level: Level) -> bool {
    cfg!(target_arch = "x86_64") && level >= Level::Avx2
}

/// `rows[f][j] = bias[f] + Σ_t w[f, t] · cols[offs[t] + s·seg_step + e]` (`j = s·seg_len + e`) for every filter `f < rows.len()` and
/// pixel `j < pt`; every row must hold `pt` elements. `level` must not exceed
/// [`simd::active_level`]. Returns `false`, touching nothing, at the scalar and portable
/// SIMD levels (and off x86-64): the caller then uses the GEMM,
/// which has its own vector kernels there.
///
/// Panics (an internal bug) if `k > MAX_K` or an operand is short.
pub(crate) fn small_gemm<T: Float>(
    level: Level,
    a: &SmallGemm<'_, T>,
    rows: &mut [&mut [Out<T>]],
) -> bool {
    assert!(a.k <= MAX_K && a.k > 0);
    assert!(a.w.len() >= rows.len() * a.k);
    assert!(a.seg_len > 0 && a.pt.is_multiple_of(a.seg_len));
    if a.pt > 0 {
        let span = (a.pt / a.seg_len - 1) * a.seg_step + a.seg_len;
        assert!(a.offs.len() == a.k && a.offs.iter().all(|&o| o + span <= a.cols.len()));
    }
    assert!(rows.iter().all(|r| r.len() == a.pt));
    if let Some(b) = a.bias {
        assert!(b.len() >= rows.len());
    }
    #[cfg(target_arch = "x86_64")]
    {
        if available(level) {
            if let (Some(a), Some(rows)) = (cast_args::<T, f32>(a), cast_rows::<T, f32>(rows)) {
                // SAFETY: the caller passes a `level` of at most `simd::active_level()`, which
                // never exceeds the detected level: the CPU has the clone's features.
                unsafe {
                    match level {
                        Level::Avx512 => avx512_f32(&a, rows),
                        _ => avx2_f32(&a, rows),
                    }
                }
                return true;
            }
            if let (Some(a), Some(rows)) = (cast_args::<T, f64>(a), cast_rows::<T, f64>(rows)) {
                // SAFETY: as above.
                unsafe {
                    match level {
                        Level::Avx512 => avx512_f64(&a, rows),
                        _ => avx2_f64(&a, rows),
                    }
                }
                return true;
            }
        }
    }
    false
}

/// `a` with its slices viewed as `U` when `T` is `U`.
fn cast_args<'a, T: 'static, U: 'static>(a: &SmallGemm<'a, T>) -> Option<SmallGemm<'a, U>> {
    Some(SmallGemm {
        k: a.k,
        w: simd::cast_slice(a.w)?,
        cols: simd::cast_slice(a.cols)?,
        offs: a.offs,
        seg_len: a.seg_len,
        seg_step: a.seg_step,
        pt: a.pt,
        bias: match a.bias {
            Some(b) => Some(simd::cast_slice(b)?),
            None => None,
        },
    })
}

/// `rows` viewed as rows of `U` when `T` is `U`.
fn cast_rows<'r, 's, T: 'static, U: 'static>(
    rows: &'r mut [&'s mut [Out<T>]],
) -> Option<&'r mut [&'s mut [Out<U>]]> {
    if TypeId::of::<T>() == TypeId::of::<U>() {
        // SAFETY: `T` and `U` are the same type, so these slice types have the same
        // layout and validity; the borrow of `rows` moves into the result.
        Some(unsafe { std::slice::from_raw_parts_mut(rows.as_mut_ptr().cast(), rows.len()) })
    } else {
        None
    }
}

/// Defines a `#[target_feature]` clone running [`vector_blocks`] with vector type `$v`,
/// `$fb` filters per block and `$nv` vectors per pixel block (`$nv · LANES == PV`).
macro_rules! clone {
    ($name:ident, $t:ty, $v:ty, $feat:literal, $fb:literal, $nv:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feat)]
        unsafe fn $name(a: &SmallGemm<'_, $t>, rows: &mut [&mut [Out<$t>]]) {
            // SAFETY: this function's features are those of `$v`'s level.
            unsafe { vector_blocks::<$v, $fb, $nv>(a, rows) }
        }
    };
}
clone!(avx512_f32, f32, Avx512F32, "avx512f,avx2,fma", 8, 1);
clone!(avx512_f64, f64, Avx512F64, "avx512f,avx2,fma", 8, 2);
clone!(avx2_f32, f32, Avx2F32, "avx2,fma", 4, 2);
clone!(avx2_f64, f64, Avx2F64, "avx2,fma", 2, 4);

/// Filter blocks of `FB`, then of 4, 2 and 1 for the remainder.
///
/// # Safety
/// The CPU must support `V::LEVEL`; `NV · V::LANES == PV`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn vector_blocks<V: SimdVec, const FB: usize, const NV: usize>(
    a: &SmallGemm<'_, V::Elem>,
    rows: &mut [&mut [Out<V::Elem>]],
) {
    debug_assert_eq!(NV * V::LANES, PV);
    let mut f0 = 0;
    // SAFETY (every call): the caller's CPU features and NV; the blocks stay inside `rows`.
    while f0 < rows.len() {
        let rest = &mut rows[f0..];
        f0 += unsafe {
            if rest.len() >= FB {
                vector_block::<V, FB, NV>(a, f0, &mut rest[..FB])
            } else if rest.len() >= 4 && FB > 4 {
                vector_block::<V, 4, NV>(a, f0, &mut rest[..4])
            } else if rest.len() >= 2 && FB > 2 {
                vector_block::<V, 2, NV>(a, f0, &mut rest[..2])
            } else {
                vector_block::<V, 1, NV>(a, f0, &mut rest[..1])
            }
        };
    }
}

/// Weights of filters `f0 .. f0 + FB` as `[tap][filter]`, and their biases.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn block_weights<T: Float, const FB: usize>(
    a: &SmallGemm<'_, T>,
    f0: usize,
) -> ([T; MAX_K * FB_MAX], [T; FB]) {
    let k = a.k;
    let mut wt = [T::ZERO; MAX_K * FB_MAX];
    for (f, wr) in a.w[f0 * k..(f0 + FB) * k].chunks_exact(k).enumerate() {
        for (t, &v) in wr.iter().enumerate() {
            wt[t * FB + f] = v;
        }
    }
    let mut bias = [T::ZERO; FB];
    if let Some(b) = a.bias {
        bias.copy_from_slice(&b[f0..f0 + FB]);
    }
    (wt, bias)
}

/// Filters `f0 .. f0 + FB` (`rows` holds exactly their `FB` rows) in registers; returns `FB`.
///
/// # Safety
/// The CPU must support `V::LEVEL`; `NV · V::LANES == PV`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn vector_block<V: SimdVec, const FB: usize, const NV: usize>(
    a: &SmallGemm<'_, V::Elem>,
    f0: usize,
    rows: &mut [&mut [Out<V::Elem>]],
) -> usize {
    let (k, len) = (a.k, a.seg_len);
    let (wt, bias) = block_weights::<V::Elem, FB>(a, f0);
    let wt = &wt[..k * FB];
    // Where a short last block may still load PV elements per tap (the phase-split copy
    // carries PV elements of slack for this), its extra lanes are computed and dropped.
    let reach = a.offs.iter().max().copied().unwrap_or(0) + PV;
    for seg in 0..a.pt / len {
        let (cb, ob) = (seg * a.seg_step, seg * len);
        let mut e = 0;
        while e + PV <= len {
            // SAFETY: the CPU supports V's level (caller); `small_gemm` checked
            // `offs[t] + (segs − 1)·seg_step + seg_len ≤ cols.len()`, and e + PV ≤ seg_len.
            let acc = unsafe { block_acc::<V, FB, NV>(a, wt, &bias, cb + e) };
            for (row, acc) in rows.iter_mut().zip(&acc) {
                let o = row[ob + e..ob + e + PV].as_mut_ptr().cast::<V::Elem>();
                for (v, acc) in acc.iter().enumerate() {
                    // SAFETY: PV = NV·LANES elements of the row from ob + e, inside it (an
                    // `Out` slot has the layout of its element; storing initialises it).
                    unsafe { acc.store(o.add(v * V::LANES)) };
                }
            }
            e += PV;
        }
        if e < len && reach + cb + e <= a.cols.len() {
            // SAFETY: as above, and every tap's PV elements from cb + e lie inside `cols`
            // (`offs[t] + cb + e + PV ≤ reach + cb + e ≤ cols.len()`).
            let acc = unsafe { block_acc::<V, FB, NV>(a, wt, &bias, cb + e) };
            let n = len - e;
            for (row, acc) in rows.iter_mut().zip(&acc) {
                let mut tmp = [bias[0]; PV];
                for (v, acc) in acc.iter().enumerate() {
                    // SAFETY: PV = NV·LANES elements of `tmp`.
                    unsafe { acc.store(tmp.as_mut_ptr().add(v * V::LANES)) };
                }
                for (o, &v) in row[ob + e..ob + len].iter_mut().zip(&tmp[..n]) {
                    *o = Out::new(v);
                }
            }
        } else {
            tail::<V::Elem, FB>(a, seg, e, wt, &bias, rows);
        }
    }
    FB
}

/// The `FB × PV` block of sums for the pixels whose runs start at `offs[t] + at`.
///
/// # Safety
/// The CPU must support `V::LEVEL`; `NV · V::LANES == PV`; `offs[t] + at + PV ≤ cols.len()`
/// for every tap `t`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn block_acc<V: SimdVec, const FB: usize, const NV: usize>(
    a: &SmallGemm<'_, V::Elem>,
    wt: &[V::Elem],
    bias: &[V::Elem; FB],
    at: usize,
) -> [[V; NV]; FB] {
    // SAFETY: the CPU supports V's level and every load reads PV = NV·LANES elements of
    // `cols` from `offs[t] + at`, inside it (the caller's contract).
    unsafe {
        let mut acc = [[V::splat(bias[0]); NV]; FB];
        for (acc, &b) in acc.iter_mut().zip(bias) {
            *acc = [V::splat(b); NV];
        }
        for (wk, &off) in wt.chunks_exact(FB).zip(a.offs) {
            let p = a.cols.as_ptr().add(off + at);
            let mut x = [V::splat(bias[0]); NV];
            for (v, x) in x.iter_mut().enumerate() {
                *x = V::load(p.add(v * V::LANES));
            }
            for (acc, &w) in acc.iter_mut().zip(wk) {
                let w = V::splat(w);
                for (acc, &x) in acc.iter_mut().zip(&x) {
                    *acc = V::mul_add(w, x, *acc);
                }
            }
        }
        acc
    }
}

/// Pixels `e .. seg_len` (fewer than [`PV`]) of segment `seg` of a filter block, in the same order and with the same
/// fused steps as the full blocks.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn tail<T: Float, const FB: usize>(
    a: &SmallGemm<'_, T>,
    seg: usize,
    e: usize,
    wt: &[T],
    bias: &[T; FB],
    rows: &mut [&mut [Out<T>]],
) {
    let (len, cb) = (a.seg_len, seg * a.seg_step + e);
    if e >= len {
        return;
    }
    let ob = seg * len;
    for (f, row) in rows.iter_mut().enumerate() {
        for (l, o) in row[ob + e..ob + len].iter_mut().enumerate() {
            let mut acc = bias[f];
            for (wk, &off) in wt.chunks_exact(FB).zip(a.offs) {
                let x = a.cols[off + cb + l];
                acc = wk[f].mul_add(x, acc);
            }
            *o = Out::new(acc);
        }
    }
}
