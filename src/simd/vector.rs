//! A small vector vocabulary that generic kernels are written against, implemented once per
//! level: plain scalars ([`Scalar`], one lane), `wide` vectors ([`Wide`], what the target
//! was compiled for), and on x86-64 explicit AVX2 (`__m256`/`__m256d`) and AVX-512
//! (`__m512`/`__m512d`) intrinsics.
//!
//! Why intrinsics: `wide` picks its instructions with `cfg(target_feature)` at compile time,
//! so in a default build its `f32x8` is a pair of SSE registers even when inlined into a
//! `#[target_feature(enable = "avx2")]` function. The x86 implementations here call
//! `std::arch` directly and carry `#[target_feature]` on every method, so a kernel that is
//! generic over [`SimdVec`] and instantiated inside a matching clone (see
//! [`multiversion!`](crate::simd::multiversion)) really runs on ymm/zmm registers.
//!
//! Every method is `unsafe`: the x86 implementations need the CPU features of
//! [`SimdVec::LEVEL`] (callers only instantiate them for a level at most
//! [`detected_level`](crate::simd::detected_level)), and the pointer methods read or write
//! `LANES` (or `2·LANES`) elements that the caller must own.

use super::Level;
use crate::Float;

/// A vector of [`SimdVec::LANES`] elements of one float type.
///
/// # Safety
/// Implementations may only be used when the CPU supports [`SimdVec::LEVEL`].
pub(crate) unsafe trait SimdVec: Copy {
    /// The element type.
    type Elem: Float;
    /// Result of a lane-wise comparison.
    type Mask: Copy;
    /// Number of lanes.
    const LANES: usize;
    /// The level whose CPU features the methods need.
    const LEVEL: Level;

    /// Every lane `v`.
    unsafe fn splat(v: Self::Elem) -> Self;
    /// `a·b + acc` per lane: fused (one rounding) on the AVX2 and AVX-512 levels, a multiply
    /// then an add (two roundings) on the scalar and portable ones.
    unsafe fn mul_add(a: Self, b: Self, acc: Self) -> Self;
    /// Reads `LANES` elements from `p` (any alignment).
    unsafe fn load(p: *const Self::Elem) -> Self;
    /// Writes `LANES` elements to `p` (any alignment).
    unsafe fn store(self, p: *mut Self::Elem);
    /// Reads `2·LANES` elements from `p` and splits them into the even- and odd-indexed ones.
    unsafe fn load_deinterleave(p: *const Self::Elem) -> (Self, Self);
    /// `v > acc ? v : acc` per lane (ordered: a NaN `v` keeps `acc`, a NaN `acc` stays).
    /// This is the "first maximum wins" step of a running max.
    unsafe fn take_gt(acc: Self, v: Self) -> Self;
    /// `a > b` per lane (ordered, false for NaN).
    unsafe fn gt(a: Self, b: Self) -> Self::Mask;
    /// `m ? a : b` per lane.
    unsafe fn select(m: Self::Mask, a: Self, b: Self) -> Self;
    /// Lanes where `a` or `b` is NaN.
    unsafe fn unord(a: Self, b: Self) -> Self::Mask;
    /// Lane-wise or of two masks.
    unsafe fn mask_or(a: Self::Mask, b: Self::Mask) -> Self::Mask;
    /// The empty mask.
    unsafe fn mask_none() -> Self::Mask;
    /// Whether any lane of the mask is set.
    unsafe fn mask_any(m: Self::Mask) -> bool;
    /// Writes the lanes, which hold integers in `0..=255`, as `LANES` bytes to `p`.
    unsafe fn store_u8(self, p: *mut u8);
}

/// One lane of plain scalar code (the [`Level::Scalar`] path, and what Miri runs).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scalar<T>(pub T);

// SAFETY: plain scalar operations, no CPU feature needed; pointer methods touch one element.
unsafe impl<T: Float> SimdVec for Scalar<T> {
    type Elem = T;
    type Mask = bool;
    const LANES: usize = 1;
    const LEVEL: Level = Level::Scalar;

    #[inline(always)]
    unsafe fn splat(v: T) -> Self {
        Scalar(v)
    }
    #[inline(always)]
    unsafe fn mul_add(a: Self, b: Self, acc: Self) -> Self {
        Scalar(acc.0 + a.0 * b.0)
    }
    #[inline(always)]
    unsafe fn load(p: *const T) -> Self {
        // SAFETY: the caller guarantees one readable element at `p`.
        Scalar(unsafe { p.read() })
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut T) {
        // SAFETY: the caller guarantees one writable element at `p`.
        unsafe { p.write(self.0) }
    }
    #[inline(always)]
    unsafe fn load_deinterleave(p: *const T) -> (Self, Self) {
        // SAFETY: the caller guarantees two readable elements at `p`.
        unsafe { (Scalar(p.read()), Scalar(p.add(1).read())) }
    }
    #[inline(always)]
    unsafe fn take_gt(acc: Self, v: Self) -> Self {
        if v.0 > acc.0 {
            v
        } else {
            acc
        }
    }
    #[inline(always)]
    unsafe fn gt(a: Self, b: Self) -> bool {
        a.0 > b.0
    }
    #[inline(always)]
    unsafe fn select(m: bool, a: Self, b: Self) -> Self {
        if m {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    unsafe fn unord(a: Self, b: Self) -> bool {
        a.0.is_nan() || b.0.is_nan()
    }
    #[inline(always)]
    unsafe fn mask_or(a: bool, b: bool) -> bool {
        a | b
    }
    #[inline(always)]
    unsafe fn mask_none() -> bool {
        false
    }
    #[inline(always)]
    unsafe fn mask_any(m: bool) -> bool {
        m
    }
    #[inline(always)]
    unsafe fn store_u8(self, p: *mut u8) {
        // SAFETY: the caller guarantees one writable byte at `p`.
        unsafe { p.write(self.0.to_f64() as u8) }
    }
}

/// `wide` vectors: 8×f32 or 4×f64 as the target was compiled (the [`Level::Portable`] path).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Wide<V>(pub V);

macro_rules! impl_wide {
    ($v:ident, $t:ident, $n:literal) => {
        // SAFETY: `wide` only uses features the target was compiled with.
        unsafe impl SimdVec for Wide<wide::$v> {
            type Elem = $t;
            type Mask = wide::$v;
            const LANES: usize = $n;
            const LEVEL: Level = Level::Portable;

            #[inline(always)]
            unsafe fn splat(v: $t) -> Self {
                Wide(wide::$v::splat(v))
            }
            #[inline(always)]
            unsafe fn mul_add(a: Self, b: Self, acc: Self) -> Self {
                Wide(acc.0 + a.0 * b.0)
            }
            #[inline(always)]
            unsafe fn load(p: *const $t) -> Self {
                // SAFETY: the caller guarantees LANES readable elements at `p`.
                Wide(wide::$v::new(unsafe {
                    p.cast::<[$t; $n]>().read_unaligned()
                }))
            }
            #[inline(always)]
            unsafe fn store(self, p: *mut $t) {
                // SAFETY: the caller guarantees LANES writable elements at `p`.
                unsafe { p.cast::<[$t; $n]>().write_unaligned(self.0.to_array()) }
            }
            #[inline(always)]
            unsafe fn load_deinterleave(p: *const $t) -> (Self, Self) {
                // SAFETY: the caller guarantees 2·LANES readable elements at `p`.
                let a = unsafe { p.cast::<[[$t; 2]; $n]>().read_unaligned() };
                (
                    Wide(wide::$v::new(a.map(|x| x[0]))),
                    Wide(wide::$v::new(a.map(|x| x[1]))),
                )
            }
            #[inline(always)]
            unsafe fn take_gt(acc: Self, v: Self) -> Self {
                // `cmp_gt` + `blend` is defined the same on every target (a bare vector max
                // differs between SSE and NEON for NaN and signed zeros).
                Wide(wide::CmpGt::cmp_gt(v.0, acc.0).blend(v.0, acc.0))
            }
            #[inline(always)]
            unsafe fn gt(a: Self, b: Self) -> wide::$v {
                wide::CmpGt::cmp_gt(a.0, b.0)
            }
            #[inline(always)]
            unsafe fn select(m: wide::$v, a: Self, b: Self) -> Self {
                Wide(m.blend(a.0, b.0))
            }
            #[inline(always)]
            unsafe fn unord(a: Self, b: Self) -> wide::$v {
                a.0.is_nan() | b.0.is_nan()
            }
            #[inline(always)]
            unsafe fn mask_or(a: wide::$v, b: wide::$v) -> wide::$v {
                a | b
            }
            #[inline(always)]
            unsafe fn mask_none() -> wide::$v {
                wide::$v::splat(0.0)
            }
            #[inline(always)]
            unsafe fn mask_any(m: wide::$v) -> bool {
                m.any()
            }
            #[inline(always)]
            unsafe fn store_u8(self, p: *mut u8) {
                let a = self.0.to_array().map(|x| x as u8);
                // SAFETY: the caller guarantees LANES writable bytes at `p`.
                unsafe { p.cast::<[u8; $n]>().write_unaligned(a) }
            }
        }
    };
}
impl_wide!(f32x8, f32, 8);
impl_wide!(f64x4, f64, 4);

#[cfg(target_arch = "x86_64")]
pub(crate) use super::x86::{Avx2F32, Avx2F64, Avx512F32, Avx512F64};

/// The vector types of each level for one element type, so generic code can pick them.
pub(crate) trait SimdElem: Float {
    /// [`Level::Portable`].
    type Wide: SimdVec<Elem = Self>;
    /// [`Level::Avx2`].
    #[cfg(target_arch = "x86_64")]
    type Avx2: SimdVec<Elem = Self>;
    /// [`Level::Avx512`].
    #[cfg(target_arch = "x86_64")]
    type Avx512: SimdVec<Elem = Self>;
}

impl SimdElem for f32 {
    type Wide = Wide<wide::f32x8>;
    #[cfg(target_arch = "x86_64")]
    type Avx2 = Avx2F32;
    #[cfg(target_arch = "x86_64")]
    type Avx512 = Avx512F32;
}

impl SimdElem for f64 {
    type Wide = Wide<wide::f64x4>;
    #[cfg(target_arch = "x86_64")]
    type Avx2 = Avx2F64;
    #[cfg(target_arch = "x86_64")]
    type Avx512 = Avx512F64;
}
