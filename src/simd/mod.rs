//! Run-time SIMD dispatch for the whole crate.
//!
//! Kernels are written once as plain or `wide` loops and compiled several times: a
//! baseline clone (what the target was built for: SSE2 on x86-64, NEON on aarch64) and, on
//! x86-64, clones under `#[target_feature]` for AVX2+FMA and for AVX-512. The level is
//! detected once (cached) and can be capped, so every level the machine supports can be
//! tested and benchmarked:
//!
//! - [`set_max_level`] caps it for the process (tests, benchmarks);
//! - the environment variable `CNN_KERNELS_SIMD` (`scalar`, `portable`, `avx2`, `avx512`)
//!   caps it when it is first read.
//!
//! Kernels inside the crate use the run-time level in one of two ways:
//!
//! - `multiversion!` (crate-internal) wraps a plain loop body (written so that it autovectorises) into a
//!   function compiled three times — AVX-512F, AVX2+FMA and the baseline — and calls the
//!   clone for [`active_level`] (or, in its `unsafe fn name(level: Level, …)` form, for a
//!   level the caller read once);
//! - generic kernels written against the `SimdVec` vector trait (`simd::vector`, with
//!   `Scalar`, `wide` and explicit-intrinsic AVX2/AVX-512 implementations) are instantiated
//!   inside `#[target_feature]` functions, one per level (see `pool::kernel` for the
//!   pattern); `cast_slice`/`cast_slice_mut` turn a generic `&[T: Float]` into `&[f32]` or
//!   `&[f64]` to reach those typed kernels.
//!
//! [`Level::Scalar`] runs plain scalar code (what Miri runs), [`Level::Portable`] the `wide`
//! code as the target was compiled.
//!
//! ```
//! use cnn_kernels::simd::{self, Level};
//! let level = simd::active_level();
//! assert!(level <= simd::detected_level());
//! println!("running with {}", level.name());
//! ```

use std::any::TypeId;
use std::sync::atomic::{AtomicU8, Ordering};

pub(crate) mod vector;
#[cfg(target_arch = "x86_64")]
mod x86;

/// A SIMD instruction-set level, ordered from least to most capable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Plain scalar loops, no explicit vectors (also what Miri runs).
    Scalar,
    /// `wide` vectors as the target was compiled (SSE2 on x86-64, NEON on aarch64).
    Portable,
    /// x86-64 AVX2 with FMA (256-bit).
    Avx2,
    /// x86-64 AVX-512F (512-bit).
    Avx512,
}

impl Level {
    /// Every level, least capable first.
    pub const ALL: [Level; 4] = [Level::Scalar, Level::Portable, Level::Avx2, Level::Avx512];

    /// Lower-case name: `scalar`, `portable`, `avx2`, `avx512`.
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Portable => "portable",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    /// Parses a [`name`](Level::name).
    pub fn from_name(s: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.name() == s)
    }

    fn from_u8(v: u8) -> Level {
        Level::ALL[(v as usize).min(3)]
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

const UNSET: u8 = u8::MAX;
static DETECTED: AtomicU8 = AtomicU8::new(UNSET);
static CAP: AtomicU8 = AtomicU8::new(UNSET);

fn detect() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Level::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Level::Avx2;
        }
    }
    if cfg!(miri) {
        Level::Scalar
    } else {
        Level::Portable
    }
}

/// The most capable level this CPU supports (detected once, then cached).
pub fn detected_level() -> Level {
    let v = DETECTED.load(Ordering::Relaxed);
    if v != UNSET {
        return Level::from_u8(v);
    }
    let l = detect();
    DETECTED.store(l as u8, Ordering::Relaxed);
    l
}

fn env_cap() -> Level {
    std::env::var("CNN_KERNELS_SIMD")
        .ok()
        .and_then(|s| Level::from_name(s.trim()))
        .unwrap_or(Level::Avx512)
}

/// The level the kernels use now: the detected level, capped by [`set_max_level`] or
/// `CNN_KERNELS_SIMD`.
pub fn active_level() -> Level {
    let mut c = CAP.load(Ordering::Relaxed);
    if c == UNSET {
        c = env_cap() as u8;
        // Only the first reader stores the environment's cap; a concurrent
        // `set_max_level` wins.
        let _ = CAP.compare_exchange(UNSET, c, Ordering::Relaxed, Ordering::Relaxed);
        c = CAP.load(Ordering::Relaxed);
    }
    detected_level().min(Level::from_u8(c))
}

/// Caps the level for the whole process (for tests and benchmarks); returns the level now
/// active. Kernels already running finish at the level they started with. Every level
/// produces results within the documented tolerance of the naive kernels; the level is the
/// only process-wide setting of the crate.
pub fn set_max_level(level: Level) -> Level {
    CAP.store(level as u8, Ordering::Relaxed);
    active_level()
}

/// The levels this CPU supports, least capable first (for tests that cover each).
pub fn supported_levels() -> Vec<Level> {
    let d = detected_level();
    Level::ALL.into_iter().filter(|&l| l <= d).collect()
}

/// `Some(s)` reinterpreted as `&[U]` when `T` and `U` are the same type, else `None`.
///
/// Lets code generic over [`Float`](crate::Float) reach kernels written for `f32` or `f64`.
pub(crate) fn cast_slice<T: 'static, U: 'static>(s: &[T]) -> Option<&[U]> {
    if TypeId::of::<T>() == TypeId::of::<U>() {
        // SAFETY: `T` and `U` are the same type, so the layout and validity are identical.
        Some(unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<U>(), s.len()) })
    } else {
        None
    }
}

/// Mutable form of [`cast_slice`].
pub(crate) fn cast_slice_mut<T: 'static, U: 'static>(s: &mut [T]) -> Option<&mut [U]> {
    if TypeId::of::<T>() == TypeId::of::<U>() {
        // SAFETY: `T` and `U` are the same type; the borrow of `s` moves into the result.
        Some(unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<U>(), s.len()) })
    } else {
        None
    }
}

/// Defines a function whose body is compiled once per x86-64 level (AVX-512F, AVX2+FMA, and
/// the baseline) and that runs the clone for [`active_level`] each call.
///
/// Write the body as plain loops over slices that LLVM can autovectorise (no `wide`: its
/// types are fixed at compile time and stay SSE inside the clones). On other targets only
/// the baseline exists. Generic parameters take one trait bound each.
///
/// ```text
/// crate::simd::multiversion! {
///     /// Sum of squares.
///     pub(crate) fn sum_sq(x: &[f32]) -> f32 {
///         x.iter().map(|v| v * v).sum()
///     }
/// }
/// ```
///
/// For a body called many times per layer call (a row, say), write it as
/// `unsafe fn name(level: Level, args…)`: the caller passes the level it read once, the
/// function's `# Safety` contract is that the CPU supports `level`, and the clones are never
/// inlined. (Reading `active_level` per row took 14 % of a max-pool backward; and a row loop
/// inlined into its caller's loop — as a `-C target-cpu=native` build does — can lose what
/// its own signature told the optimiser, such as two `&mut` slices not overlapping.)
#[allow(unused_macros)]
macro_rules! multiversion {
    (
        $(#[$meta:meta])*
        $vis:vis unsafe fn $name:ident $(<$($g:ident : $b:path),* $(,)?>)?
            (level: Level, $($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block
    ) => {
        $(#[$meta])*
        $vis unsafe fn $name $(<$($g: $b),*>)? (
            level: $crate::simd::Level,
            $($arg: $ty),*
        ) $(-> $ret)? {
            #[inline(always)]
            fn body $(<$($g: $b),*>)? ($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx2,fma")]
            #[inline(never)]
            unsafe fn avx512 $(<$($g: $b),*>)? ($($arg: $ty),*) $(-> $ret)? {
                body $(::<$($g),*>)? ($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[inline(never)]
            unsafe fn avx2 $(<$($g: $b),*>)? ($($arg: $ty),*) $(-> $ret)? {
                body $(::<$($g),*>)? ($($arg),*)
            }

            #[inline(never)]
            fn base $(<$($g: $b),*>)? ($($arg: $ty),*) $(-> $ret)? {
                body $(::<$($g),*>)? ($($arg),*)
            }

            match level {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU supports `level` (the caller's contract), here AVX-512F.
                $crate::simd::Level::Avx512 => unsafe { avx512 $(::<$($g),*>)? ($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above, here AVX2 and FMA.
                $crate::simd::Level::Avx2 => unsafe { avx2 $(::<$($g),*>)? ($($arg),*) },
                _ => base $(::<$($g),*>)? ($($arg),*),
            }
        }
    };
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident $(<$($g:ident : $b:path),* $(,)?>)?
            ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block
    ) => {
        $(#[$meta])*
        $vis fn $name $(<$($g: $b),*>)? ($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body $(<$($g: $b),*>)? ($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx2,fma")]
            unsafe fn avx512 $(<$($g: $b),*>)? ($($arg: $ty),*) $(-> $ret)? {
                body $(::<$($g),*>)? ($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2 $(<$($g: $b),*>)? ($($arg: $ty),*) $(-> $ret)? {
                body $(::<$($g),*>)? ($($arg),*)
            }

            match $crate::simd::active_level() {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `active_level` never exceeds the detected level, so the CPU has
                // AVX-512F.
                $crate::simd::Level::Avx512 => unsafe { avx512 $(::<$($g),*>)? ($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above, the CPU has AVX2 and FMA.
                $crate::simd::Level::Avx2 => unsafe { avx2 $(::<$($g),*>)? ($($arg),*) },
                _ => body $(::<$($g),*>)? ($($arg),*),
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use multiversion;

#[cfg(test)]
mod tests {
    use super::*;

    /// Running max along a slice, first maximum wins: the loop both macro forms clone.
    #[inline(always)]
    fn max_into<T: crate::Float>(a: &[T], b: &[T], out: &mut [T]) {
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            *o = if y > x { y } else { x };
        }
    }

    multiversion! {
        /// `max_into` at the active level (a test of the macro).
        fn pairwise_max<T: crate::Float>(a: &[T], b: &[T], out: &mut [T]) {
            max_into(a, b, out)
        }
    }

    multiversion! {
        /// `max_into` at a level the caller passes.
        unsafe fn pairwise_max_at<T: crate::Float>(level: Level, a: &[T], b: &[T], out: &mut [T]) {
            max_into(a, b, out)
        }
    }

    #[test]
    fn multiversion_matches_scalar_at_every_level() {
        let a: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32).collect();
        let b: Vec<f32> = (0..1000).map(|i| ((i * 53) % 97) as f32).collect();
        let want: Vec<f32> = a.iter().zip(&b).map(|(&x, &y)| x.max(y)).collect();
        let mut out = vec![0.0f32; 1000];
        // `active_level` is process-wide; this test only reads it.
        pairwise_max(&a, &b, &mut out);
        assert_eq!(out, want);
    }

    #[test]
    fn multiversion_with_a_level_runs_every_supported_level() {
        let a: Vec<f64> = (0..1000).map(|i| ((i * 37) % 101) as f64).collect();
        let b: Vec<f64> = (0..1000).map(|i| ((i * 53) % 97) as f64).collect();
        let want: Vec<f64> = a.iter().zip(&b).map(|(&x, &y)| x.max(y)).collect();
        for level in supported_levels() {
            let mut out = vec![0.0f64; 1000];
            // SAFETY: `supported_levels` lists only levels this CPU supports.
            unsafe { pairwise_max_at(level, &a, &b, &mut out) };
            assert_eq!(out, want, "{level}");
        }
    }

    #[test]
    fn cast_slice_only_between_equal_types() {
        let x = [1.0f32, 2.0];
        assert_eq!(cast_slice::<f32, f32>(&x), Some(&x[..]));
        assert!(cast_slice::<f32, f64>(&x).is_none());
        let mut y = [1.0f64];
        cast_slice_mut::<f64, f64>(&mut y).unwrap()[0] = 3.0;
        assert_eq!(y, [3.0]);
        assert!(cast_slice_mut::<f64, f32>(&mut y).is_none());
    }
}
