//! x86-64 implementations of [`SimdVec`] with explicit `std::arch` intrinsics: AVX2
//! (`__m256`, `__m256d`) and AVX-512F (`__m512`, `__m512d`).
//!
//! Every method carries `#[target_feature]`, so it inlines into a clone compiled for the
//! same (or a larger) feature set and emits ymm/zmm instructions regardless of the crate's
//! build flags.

use std::arch::x86_64::*;

use super::vector::SimdVec;
use super::Level;

/// 8×f32 in one ymm register ([`Level::Avx2`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2F32(__m256);
/// 4×f64 in one ymm register ([`Level::Avx2`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2F64(__m256d);
/// 16×f32 in one zmm register ([`Level::Avx512`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512F32(__m512);
/// 8×f64 in one zmm register ([`Level::Avx512`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512F64(__m512d);

// SAFETY: every method is compiled for AVX2+FMA; the trait's contract makes callers check
// the CPU has them (LEVEL = Avx2). Pointer methods use unaligned loads and stores of exactly
// the element counts the trait documents.
unsafe impl SimdVec for Avx2F32 {
    type Elem = f32;
    type Mask = __m256;
    const LANES: usize = 8;
    const LEVEL: Level = Level::Avx2;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn splat(v: f32) -> Self {
        Avx2F32(_mm256_set1_ps(v))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn mul_add(a: Self, b: Self, acc: Self) -> Self {
        Avx2F32(_mm256_fmadd_ps(a.0, b.0, acc.0))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees 8 readable elements at `p`.
        Avx2F32(unsafe { _mm256_loadu_ps(p) })
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller guarantees 8 writable elements at `p`.
        unsafe { _mm256_storeu_ps(p, self.0) }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load_deinterleave(p: *const f32) -> (Self, Self) {
        // SAFETY: the caller guarantees 16 readable elements at `p`.
        let (a, b) = unsafe { (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))) };
        // [a0 a2 b0 b2 | a4 a6 b4 b6], then reorder the 64-bit pairs to 0, 2, 1, 3.
        let e = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
        let o = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
        let e = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(e)));
        let o = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(o)));
        (Avx2F32(e), Avx2F32(o))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn take_gt(acc: Self, v: Self) -> Self {
        // vmaxps returns its second operand unless the first is strictly greater.
        Avx2F32(_mm256_max_ps(v.0, acc.0))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn gt(a: Self, b: Self) -> __m256 {
        _mm256_cmp_ps::<_CMP_GT_OQ>(a.0, b.0)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn select(m: __m256, a: Self, b: Self) -> Self {
        Avx2F32(_mm256_blendv_ps(b.0, a.0, m))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn unord(a: Self, b: Self) -> __m256 {
        _mm256_cmp_ps::<_CMP_UNORD_Q>(a.0, b.0)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn mask_or(a: __m256, b: __m256) -> __m256 {
        _mm256_or_ps(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn mask_none() -> __m256 {
        _mm256_setzero_ps()
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn mask_any(m: __m256) -> bool {
        _mm256_movemask_ps(m) != 0
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store_u8(self, p: *mut u8) {
        let i = _mm256_cvtps_epi32(self.0);
        let w = _mm_packus_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256::<1>(i));
        let b = _mm_packus_epi16(w, w);
        // SAFETY: the caller guarantees 8 writable bytes at `p`.
        unsafe { _mm_storel_epi64(p.cast(), b) }
    }
}

// SAFETY: as for `Avx2F32`.
unsafe impl SimdVec for Avx2F64 {
    type Elem = f64;
    type Mask = __m256d;
    const LANES: usize = 4;
    const LEVEL: Level = Level::Avx2;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn splat(v: f64) -> Self {
        Avx2F64(_mm256_set1_pd(v))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn mul_add(a: Self, b: Self, acc: Self) -> Self {
        Avx2F64(_mm256_fmadd_pd(a.0, b.0, acc.0))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load(p: *const f64) -> Self {
        // SAFETY: the caller guarantees 4 readable elements at `p`.
        Avx2F64(unsafe { _mm256_loadu_pd(p) })
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store(self, p: *mut f64) {
        // SAFETY: the caller guarantees 4 writable elements at `p`.
        unsafe { _mm256_storeu_pd(p, self.0) }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load_deinterleave(p: *const f64) -> (Self, Self) {
        // SAFETY: the caller guarantees 8 readable elements at `p`.
        let (a, b) = unsafe { (_mm256_loadu_pd(p), _mm256_loadu_pd(p.add(4))) };
        // [a0 b0 a2 b2] → [a0 a2 b0 b2].
        let e = _mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_unpacklo_pd(a, b));
        let o = _mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_unpackhi_pd(a, b));
        (Avx2F64(e), Avx2F64(o))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn take_gt(acc: Self, v: Self) -> Self {
        Avx2F64(_mm256_max_pd(v.0, acc.0))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn gt(a: Self, b: Self) -> __m256d {
        _mm256_cmp_pd::<_CMP_GT_OQ>(a.0, b.0)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn select(m: __m256d, a: Self, b: Self) -> Self {
        Avx2F64(_mm256_blendv_pd(b.0, a.0, m))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn unord(a: Self, b: Self) -> __m256d {
        _mm256_cmp_pd::<_CMP_UNORD_Q>(a.0, b.0)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn mask_or(a: __m256d, b: __m256d) -> __m256d {
        _mm256_or_pd(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn mask_none() -> __m256d {
        _mm256_setzero_pd()
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn mask_any(m: __m256d) -> bool {
        _mm256_movemask_pd(m) != 0
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store_u8(self, p: *mut u8) {
        let i = _mm256_cvtpd_epi32(self.0);
        let w = _mm_packus_epi32(i, i);
        let b = _mm_packus_epi16(w, w);
        let v = _mm_cvtsi128_si32(b) as u32;
        // SAFETY: the caller guarantees 4 writable bytes at `p`.
        unsafe { p.cast::<[u8; 4]>().write_unaligned(v.to_le_bytes()) }
    }
}

// SAFETY: every method is compiled for AVX-512F; the trait's contract makes callers check
// the CPU has it (LEVEL = Avx512). Pointer methods use unaligned loads and stores of exactly
// the element counts the trait documents.
unsafe impl SimdVec for Avx512F32 {
    type Elem = f32;
    type Mask = __mmask16;
    const LANES: usize = 16;
    const LEVEL: Level = Level::Avx512;

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn splat(v: f32) -> Self {
        Avx512F32(_mm512_set1_ps(v))
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn mul_add(a: Self, b: Self, acc: Self) -> Self {
        Avx512F32(_mm512_fmadd_ps(a.0, b.0, acc.0))
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees 16 readable elements at `p`.
        Avx512F32(unsafe { _mm512_loadu_ps(p) })
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller guarantees 16 writable elements at `p`.
        unsafe { _mm512_storeu_ps(p, self.0) }
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn load_deinterleave(p: *const f32) -> (Self, Self) {
        // SAFETY: the caller guarantees 32 readable elements at `p`.
        let (a, b) = unsafe { (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16))) };
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        (
            Avx512F32(_mm512_permutex2var_ps(a, even, b)),
            Avx512F32(_mm512_permutex2var_ps(a, odd, b)),
        )
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn take_gt(acc: Self, v: Self) -> Self {
        Avx512F32(_mm512_max_ps(v.0, acc.0))
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn gt(a: Self, b: Self) -> __mmask16 {
        _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a.0, b.0)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn select(m: __mmask16, a: Self, b: Self) -> Self {
        Avx512F32(_mm512_mask_blend_ps(m, b.0, a.0))
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn unord(a: Self, b: Self) -> __mmask16 {
        _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(a.0, b.0)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn mask_or(a: __mmask16, b: __mmask16) -> __mmask16 {
        a | b
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn mask_none() -> __mmask16 {
        0
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn mask_any(m: __mmask16) -> bool {
        m != 0
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn store_u8(self, p: *mut u8) {
        let b = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(self.0));
        // SAFETY: the caller guarantees 16 writable bytes at `p`.
        unsafe { _mm_storeu_si128(p.cast(), b) }
    }
}

// SAFETY: as for `Avx512F32`.
unsafe impl SimdVec for Avx512F64 {
    type Elem = f64;
    type Mask = __mmask8;
    const LANES: usize = 8;
    const LEVEL: Level = Level::Avx512;

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn splat(v: f64) -> Self {
        Avx512F64(_mm512_set1_pd(v))
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn mul_add(a: Self, b: Self, acc: Self) -> Self {
        Avx512F64(_mm512_fmadd_pd(a.0, b.0, acc.0))
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn load(p: *const f64) -> Self {
        // SAFETY: the caller guarantees 8 readable elements at `p`.
        Avx512F64(unsafe { _mm512_loadu_pd(p) })
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn store(self, p: *mut f64) {
        // SAFETY: the caller guarantees 8 writable elements at `p`.
        unsafe { _mm512_storeu_pd(p, self.0) }
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn load_deinterleave(p: *const f64) -> (Self, Self) {
        // SAFETY: the caller guarantees 16 readable elements at `p`.
        let (a, b) = unsafe { (_mm512_loadu_pd(p), _mm512_loadu_pd(p.add(8))) };
        let even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
        let odd = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
        (
            Avx512F64(_mm512_permutex2var_pd(a, even, b)),
            Avx512F64(_mm512_permutex2var_pd(a, odd, b)),
        )
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn take_gt(acc: Self, v: Self) -> Self {
        Avx512F64(_mm512_max_pd(v.0, acc.0))
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn gt(a: Self, b: Self) -> __mmask8 {
        _mm512_cmp_pd_mask::<_CMP_GT_OQ>(a.0, b.0)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn select(m: __mmask8, a: Self, b: Self) -> Self {
        Avx512F64(_mm512_mask_blend_pd(m, b.0, a.0))
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn unord(a: Self, b: Self) -> __mmask8 {
        _mm512_cmp_pd_mask::<_CMP_UNORD_Q>(a.0, b.0)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn mask_or(a: __mmask8, b: __mmask8) -> __mmask8 {
        a | b
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn mask_none() -> __mmask8 {
        0
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn mask_any(m: __mmask8) -> bool {
        m != 0
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn store_u8(self, p: *mut u8) {
        let mut a = [0i32; 8];
        // SAFETY: `a` has room for the 8 converted lanes.
        unsafe { _mm256_storeu_si256(a.as_mut_ptr().cast(), _mm512_cvtpd_epi32(self.0)) };
        // SAFETY: the caller guarantees 8 writable bytes at `p`.
        unsafe { p.cast::<[u8; 8]>().write_unaligned(a.map(|x| x as u8)) }
    }
}
