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
//! ```
//! use cnn_kernels::simd::{self, Level};
//! let level = simd::active_level();
//! assert!(level <= simd::detected_level());
//! println!("running with {}", level.name());
//! ```

use std::sync::atomic::{AtomicU8, Ordering};

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
