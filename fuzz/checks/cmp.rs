//! Comparison rules shared by the checkers: sums of products (conv, pool backward) against
//! a reference, bitwise repeatability, and the SIMD-level / thread-count sweeps.
//!
//! # Tolerance of a sum (stated once, used by every family that sums)
//!
//! A fast path may add the same terms as the naive one in another order (blocked GEMM,
//! SIMD lanes, FMA). For a sum of `K` terms computed in any order with unit roundoff `u`,
//! the error is at most `γ_K · Σ|term|` with `γ_K = K·u / (1 − K·u)` (Higham, *Accuracy and
//! Stability of Numerical Algorithms*, §4.2; an FMA only removes roundings). Two such
//! results differ by at most `2·γ_K·M`, `M = Σ|term|`. We allow `2·(K+1)·ε·M` (ε = 2u, so
//! twice the bound; `K + 1` counts the bias or a final conversion) plus, for gradual
//! underflow, an absolute `2·(K+2)·ε·MIN_POSITIVE` (each operation may lose at most half
//! the smallest subnormal). `M` is computed in `f64` from the actual terms.
//!
//! # Non-finite values (the rule and why it is sound)
//!
//! Each output's terms are classified ([`Terms`]):
//! - a NaN term (a NaN operand, or `±inf·0`), or both `+inf` and `−inf` terms: every
//!   summation order gives NaN (NaN is absorbing; the `+inf` and `−inf` partial sums meet
//!   eventually) — both results must be NaN;
//! - `M` so large that a partial sum of finite terms may overflow (`M·(1 + 2(K+1)ε) ≥ MAX`):
//!   the order decides between a finite value, ±inf and NaN — nothing is required;
//! - otherwise, infinite terms of one sign only: every order gives that infinity;
//! - otherwise all terms are finite: both finite and within the tolerance.
//!
//! Fast paths that multiply zero padding (im2col, a GEMM over padded columns, a transposed
//! correlation over zero-padded `dout` for `dx`) add terms `a·0` that the naive loops skip;
//! with `a` non-finite that term is NaN. Such outputs are
//! marked [`Terms::maybe_nan`]: there the fast result may also be NaN, and is otherwise held
//! to the rule above. (A transform-based path — Winograd, FFT — would mix terms across
//! outputs and need a different rule; none exists.)

use cnn_kernels::simd::{self, Level};
use cnn_kernels::{DType, Float};

/// `(ε, smallest normal, largest finite)` of `T`, as `f64`.
pub fn limits<T: Float>() -> (f64, f64, f64) {
    match T::DTYPE {
        DType::F32 => (
            f32::EPSILON as f64,
            f32::MIN_POSITIVE as f64,
            f32::MAX as f64,
        ),
        DType::F64 => (f64::EPSILON, f64::MIN_POSITIVE, f64::MAX),
    }
}

/// The bit pattern of a value (as `f64`, which maps `f32` values one-to-one).
pub fn bits<T: Float>(v: T) -> u64 {
    v.to_f64().to_bits()
}

/// Panics unless `a` and `b` are bitwise identical, NaNs aside: any NaN matches any NaN.
/// Rust leaves the sign and payload of a NaN produced by arithmetic unspecified (RFC 3514:
/// the compiler may commute operands, and vector and scalar code pick different NaN
/// operands), so no kernel can promise NaN bits; the fuzzer saw them differ between thread
/// pools for an all-NaN batch-norm backward.
#[track_caller]
pub fn assert_same_bits<T: Float>(ctx: &str, what: &str, a: &[T], b: &[T]) {
    assert_eq!(a.len(), b.len(), "{ctx}: {what}: lengths differ");
    let same = |x: T, y: T| bits(x) == bits(y) || (x.is_nan() && y.is_nan());
    if let Some(i) = (0..a.len()).find(|&i| !same(a[i], b[i])) {
        panic!(
            "{ctx}: {what}: not bitwise repeatable at {i}: {:?} vs {:?}",
            a[i], b[i]
        );
    }
}

/// The classification of one output's terms (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct Terms {
    /// `Σ|term|` over the finite terms, in `f64` (may itself overflow to inf).
    pub mag: f64,
    /// Some term is NaN.
    pub nan: bool,
    /// Some term is `+inf`.
    pub pos_inf: bool,
    /// Some term is `−inf`.
    pub neg_inf: bool,
    /// A fast path may add a NaN term the naive one skips (non-finite times padding).
    pub maybe_nan: bool,
}

impl Terms {
    /// The term `a·b`, which every path adds.
    pub fn product(&mut self, a: f64, b: f64) {
        if a.is_nan()
            || b.is_nan()
            || (a.is_infinite() && b == 0.0)
            || (b.is_infinite() && a == 0.0)
        {
            self.nan = true;
        } else if a.is_infinite() || b.is_infinite() {
            if (a > 0.0) == (b > 0.0) {
                self.pos_inf = true;
            } else {
                self.neg_inf = true;
            }
        } else {
            self.mag += (a * b).abs();
        }
    }

    /// The term `a` (a bias, or a gradient routed unchanged).
    pub fn single(&mut self, a: f64) {
        self.product(a, 1.0);
    }

    /// A term `a·0` from zero padding: the naive path skips it, a fast path may add it.
    pub fn padded(&mut self, a: f64) {
        if !a.is_finite() {
            self.maybe_nan = true;
        }
    }
}

/// Checks one output of a `k`-term sum: `got` (fast) against `reference` (naive), by the
/// rules of the module docs. `Err` describes the violation.
pub fn check_sum<T: Float>(reference: T, got: T, t: &Terms, k: usize) -> Result<(), String> {
    let (eps, min_pos, max) = limits::<T>();
    let k = k as f64;
    let (r, g) = (reference.to_f64(), got.to_f64());
    if t.nan || (t.pos_inf && t.neg_inf) {
        return if r.is_nan() && g.is_nan() {
            Ok(())
        } else {
            Err(format!(
                "a NaN term: expected NaN, reference {r:e}, got {g:e}"
            ))
        };
    }
    // `mag` is a sum of absolute values: never NaN, possibly inf.
    if t.mag * (1.0 + 2.0 * (k + 1.0) * eps) >= max {
        return Ok(()); // a finite partial sum may overflow: any result is legitimate
    }
    if t.maybe_nan && g.is_nan() {
        return Ok(());
    }
    if t.pos_inf || t.neg_inf {
        let want = if t.pos_inf {
            f64::INFINITY
        } else {
            f64::NEG_INFINITY
        };
        return if r == want && g == want {
            Ok(())
        } else {
            Err(format!(
                "infinite terms of one sign: expected {want}, reference {r:e}, got {g:e}"
            ))
        };
    }
    let tol = 2.0 * (k + 1.0) * eps * t.mag + 2.0 * (k + 2.0) * eps * min_pos;
    if r.is_finite() && g.is_finite() && (g - r).abs() <= tol {
        Ok(())
    } else {
        Err(format!(
            "finite terms (Σ|term| = {:e}, {k} terms): reference {r:e}, got {g:e}, \
             |diff| {:e} > tolerance {tol:e}",
            t.mag,
            (g - r).abs()
        ))
    }
}

/// Checks every output of a sum with [`check_sum`]; panics naming the first violation.
#[track_caller]
pub fn assert_sums<T: Float>(
    ctx: &str,
    what: &str,
    reference: &[T],
    got: &[T],
    terms: &[Terms],
    k: usize,
) {
    assert_eq!(reference.len(), got.len(), "{ctx}: {what}: lengths differ");
    assert_eq!(reference.len(), terms.len(), "{ctx}: {what}: term count");
    for i in 0..got.len() {
        if let Err(e) = check_sum(reference[i], got[i], &terms[i], k) {
            panic!("{ctx}: {what}[{i}]: {e}");
        }
    }
}

/// Panics unless `got` equals `reference` exactly: same NaN positions, equal values
/// elsewhere (`+0 == −0`).
#[track_caller]
pub fn assert_exact<T: Float>(ctx: &str, what: &str, reference: &[T], got: &[T]) {
    assert_eq!(reference.len(), got.len(), "{ctx}: {what}: lengths differ");
    for i in 0..got.len() {
        let (r, g) = (reference[i], got[i]);
        let ok = if r.is_nan() { g.is_nan() } else { r == g };
        assert!(ok, "{ctx}: {what}[{i}]: expected {r:?}, got {g:?}");
    }
}

/// Runs `f` at every SIMD level this CPU supports (capping the process-wide level), then
/// restores the uncapped level. Callers hold [`super::LOCK`] so sweeps do not interleave.
pub fn for_each_level(mut f: impl FnMut(Level)) {
    for level in simd::supported_levels() {
        simd::set_max_level(level);
        f(level);
    }
    simd::set_max_level(Level::Avx512);
}

/// Runs `f` on a one-thread and on a three-thread rayon pool (built once), for the
/// "bitwise identical for any thread count" contract.
pub fn on_pools<R: Send>(mut f: impl FnMut() -> R + Send) -> [R; 2] {
    use std::sync::OnceLock;
    static POOLS: OnceLock<[rayon::ThreadPool; 2]> = OnceLock::new();
    let pools = POOLS.get_or_init(|| {
        [1, 3].map(|n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .expect("a rayon pool")
        })
    });
    [pools[0].install(&mut f), pools[1].install(&mut f)]
}

/// `NaN`-filled buffer of `n` elements: what `_into` outputs and workspaces start as, so a
/// kernel that leaves an element unwritten (or reads the workspace before writing it)
/// shows up.
pub fn garbage<T: Float>(n: usize) -> Vec<T> {
    vec![T::from_f64(f64::NAN); n]
}
