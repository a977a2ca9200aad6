//! An AVX-512 `f32` GEMM for the convolution's row-major products: `C = A·B` or
//! `C += A·B` with unit column strides (the forward pass: weights × columns, or × a 1×1
//! layer's image, into NCHW output rows).
//!
//! `matrixmultiply` packs both operands on every call. Here the weights `A` are read in
//! place — each of [`MR`] filter rows is one sequential stream, broadcast one value at a
//! time — and only a [`KC`] × [`NR`] panel of `B` is copied (into a 32 KiB stack buffer that
//! stays in L1), then reused by every block of [`MR`] filters. The micro-kernel keeps
//! `MR × NR` = 12 × 32 sums in 24 zmm registers. Measured (one thread, 2-core AVX-512 Xeon,
//! while another process loaded the second core), GFLOP/s on the layers' GEMM shapes as
//! the forward pass tiles them, this kernel against `matrixmultiply` 0.3: resnet_3x3_14
//! (256 × 2304 × 196) 165 / 155, dilated_28 (128 × 1152, tiles of 196) 155 / 147,
//! pointwise_56 (64 × 256, tiles of 448) 143 / 115, resnet_3x3_56 (64 × 576, tiles of 224)
//! 149 / 118. `KC` of 128, 384 and 512 and `MR` = 14 were no better.
//!
//! Every element of `C` is the sum over `K` blocks of [`KC`] in order; inside a block the
//! taps are fused-multiply-added in order from zero, and the block's sum is added to `C`
//! (the blocks before it, or the caller's `C` when accumulating). That depends on `K` alone,
//! not on the element's position, `m`, `n` or the thread, so results are deterministic.

use std::arch::x86_64::{
    __m512, __mmask16, _mm512_add_ps, _mm512_fmadd_ps, _mm512_load_ps, _mm512_loadu_ps,
    _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps,
    _mm512_store_ps,
};

/// Filters (rows of `C`) per micro-kernel call.
const MR: usize = 12;
/// Pixels (columns of `C`) per micro-kernel call: two zmm registers.
const NR: usize = 32;
/// Taps (the reduction) per block: a packed `B` panel is `KC · NR` values (32 KiB).
const KC: usize = 256;

/// One packed `B` panel: row `p` holds `NR` values (zeros past the matrix's edge).
#[repr(align(64))]
struct Panel([f32; KC * NR]);

/// The operands of one product: `C` (`m × n`, element `(i, j)` at `c[i·ldc + j]`) gets
/// `A·B` (`A` `m × k` at `a[i·lda + p]`, `B` `k × n` at `b[p·ldb + j]`).
pub(crate) struct Operands {
    pub(crate) m: usize,
    pub(crate) k: usize,
    pub(crate) n: usize,
    pub(crate) a: *const f32,
    pub(crate) lda: usize,
    pub(crate) b: *const f32,
    pub(crate) ldb: usize,
    pub(crate) c: *mut f32,
    pub(crate) ldc: usize,
}

/// `C = A·B` (`accumulate` false: `C` is only written) or `C += A·B`.
///
/// # Safety
/// The CPU supports AVX-512F. `A`, `B` are readable and `C` readable and writable at every
/// `(i, j)` position above (`i < m`, `j < n`, `p < k`), and no other thread accesses those
/// elements of `C` during the call.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn sgemm(o: &Operands, accumulate: bool) {
    let mut panel = Panel([0.0; KC * NR]);
    for p0 in (0..o.k).step_by(KC) {
        let kc = KC.min(o.k - p0);
        for j0 in (0..o.n).step_by(NR) {
            let nr = NR.min(o.n - j0);
            // SAFETY: rows p0..p0 + kc, columns j0..j0 + nr of `B` are in bounds (caller).
            unsafe { pack(o.b.add(p0 * o.ldb + j0), o.ldb, kc, nr, &mut panel) };
            for i0 in (0..o.m).step_by(MR) {
                let mr = MR.min(o.m - i0);
                // SAFETY: rows i0..i0 + mr × taps p0..p0 + kc of `A` and pixels
                // j0..j0 + nr of those rows of `C` are in bounds and exclusively ours
                // (caller); `panel` holds `kc` packed rows.
                unsafe {
                    let blk = Block {
                        kc,
                        a: o.a.add(i0 * o.lda + p0),
                        lda: o.lda,
                        b: panel.0.as_ptr(),
                        c: o.c.add(i0 * o.ldc + j0),
                        ldc: o.ldc,
                        nr,
                        load_c: accumulate || p0 > 0,
                    };
                    block(mr, &blk);
                }
            }
        }
    }
}

/// Copies rows `0..kc`, columns `0..nr` of `B` (at `b`, row stride `ldb`) into `panel`,
/// zero-filling columns `nr..NR`.
///
/// # Safety
/// AVX-512F; those elements of `B` are readable.
#[target_feature(enable = "avx512f")]
unsafe fn pack(b: *const f32, ldb: usize, kc: usize, nr: usize, panel: &mut Panel) {
    for p in 0..kc {
        let dst = &mut panel.0[p * NR..(p + 1) * NR];
        if nr == NR {
            // SAFETY: `NR` elements of row `p` are readable (caller); `dst` is a 64-byte
            // aligned run of `NR` values (panel rows are 128 bytes, the panel 64-aligned).
            unsafe {
                let src = b.add(p * ldb);
                _mm512_store_ps(dst.as_mut_ptr(), _mm512_loadu_ps(src));
                _mm512_store_ps(dst.as_mut_ptr().add(16), _mm512_loadu_ps(src.add(16)));
            }
        } else {
            for (j, d) in dst.iter_mut().enumerate() {
                // SAFETY: column j < nr of row p is readable (caller).
                *d = if j < nr {
                    unsafe { *b.add(p * ldb + j) }
                } else {
                    0.0
                };
            }
        }
    }
}

/// One micro-kernel call: `mr` rows of `A` (at `a`, stride `lda`, `kc` taps) × a packed
/// panel into `mr × nr` of `C` (at `c`, stride `ldc`), adding to `C` when `load_c`.
struct Block {
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    nr: usize,
    load_c: bool,
}

/// [`kernel`] for `mr` (1 ..= [`MR`]) rows.
///
/// # Safety
/// As [`kernel`].
#[target_feature(enable = "avx512f")]
unsafe fn block(mr: usize, blk: &Block) {
    // SAFETY: forwarded (the caller's contract is `kernel`'s).
    unsafe {
        match mr {
            12 => kernel::<12>(blk),
            11 => kernel::<11>(blk),
            10 => kernel::<10>(blk),
            9 => kernel::<9>(blk),
            8 => kernel::<8>(blk),
            7 => kernel::<7>(blk),
            6 => kernel::<6>(blk),
            5 => kernel::<5>(blk),
            4 => kernel::<4>(blk),
            3 => kernel::<3>(blk),
            2 => kernel::<2>(blk),
            _ => kernel::<1>(blk),
        }
    }
}

/// `R × NR` sums in registers over `kc` taps, then stored (masked to `nr` columns).
///
/// # Safety
/// AVX-512F; `R` rows × `kc` taps of `A` readable; the panel holds `kc` rows of `NR`;
/// `R` rows × `nr` columns of `C` readable and writable, exclusively.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn kernel<const R: usize>(blk: &Block) {
    let mut lo: [__m512; R] = [_mm512_setzero_ps(); R];
    let mut hi: [__m512; R] = [_mm512_setzero_ps(); R];
    if blk.nr <= 16 {
        // A panel of at most 16 columns (the last of a row such as 196 = 6·32 + 4): the
        // low half only, about half the time of a full pass; the same steps per element.
        for p in 0..blk.kc {
            // SAFETY: as below.
            unsafe {
                let b0 = _mm512_load_ps(blk.b.add(p * NR));
                for (r, lo) in lo.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*blk.a.add(r * blk.lda + p));
                    *lo = _mm512_fmadd_ps(av, b0, *lo);
                }
            }
        }
    } else {
        for p in 0..blk.kc {
            // SAFETY: panel row p (kc rows, 64-byte aligned, 128 bytes each) and taps p of
            // the `R` rows of `A` are readable (contract).
            unsafe {
                let b0 = _mm512_load_ps(blk.b.add(p * NR));
                let b1 = _mm512_load_ps(blk.b.add(p * NR + 16));
                for r in 0..R {
                    let av = _mm512_set1_ps(*blk.a.add(r * blk.lda + p));
                    lo[r] = _mm512_fmadd_ps(av, b0, lo[r]);
                    hi[r] = _mm512_fmadd_ps(av, b1, hi[r]);
                }
            }
        }
    }
    let nr = blk.nr;
    let m0: __mmask16 = if nr >= 16 { 0xffff } else { (1u16 << nr) - 1 };
    let m1: __mmask16 = match nr {
        32.. => 0xffff,
        17..=31 => (1u16 << (nr - 16)) - 1,
        _ => 0,
    };
    for r in 0..R {
        // SAFETY: columns 0..nr of row r of `C` are ours (contract); the masks keep the
        // loads and stores to those columns (masked-off lanes are not accessed).
        unsafe {
            let cr = blk.c.add(r * blk.ldc);
            // Past the row's end when nr ≤ 16 (then the mask is empty): wrapping, not `add`.
            let cr1 = cr.wrapping_add(16);
            let (mut v0, mut v1) = (lo[r], hi[r]);
            if blk.load_c {
                v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, cr), v0);
                v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, cr1), v1);
            }
            _mm512_mask_storeu_ps(cr, m0, v0);
            _mm512_mask_storeu_ps(cr1, m1, v1);
        }
    }
}
