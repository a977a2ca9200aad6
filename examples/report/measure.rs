//! Timing: warm-up, then repetitions until a time budget, reporting the median.

use std::time::Instant;

/// How long to measure one kernel.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Warm-up: calls until this many seconds have passed (at least one call).
    pub warmup_s: f64,
    /// At least this many timed calls.
    pub min_reps: usize,
    /// At most this many timed calls.
    pub max_reps: usize,
    /// Stop once the timed calls add up to this many seconds (and `min_reps` are done).
    pub target_s: f64,
}

impl Budget {
    /// Fast kernels.
    pub fn fast(quick: bool) -> Budget {
        if quick {
            Budget {
                warmup_s: 0.0,
                min_reps: 3,
                max_reps: 10,
                target_s: 0.05,
            }
        } else {
            Budget {
                warmup_s: 0.1,
                min_reps: 5,
                max_reps: 100,
                target_s: 0.5,
            }
        }
    }

    /// Naive kernels (slow: one warm-up call, few repetitions).
    pub fn naive(quick: bool) -> Budget {
        Budget {
            warmup_s: 0.0,
            min_reps: if quick { 1 } else { 3 },
            max_reps: if quick { 3 } else { 20 },
            target_s: if quick { 0.05 } else { 1.0 },
        }
    }
}

/// Median milliseconds of `f` under `budget`; the first error any call returns (warm-up
/// or timed) instead, so a failing kernel is never reported as a time.
pub fn median_ms<E>(budget: Budget, mut f: impl FnMut() -> Result<(), E>) -> Result<f64, E> {
    let start = Instant::now();
    loop {
        f()?;
        if start.elapsed().as_secs_f64() >= budget.warmup_s {
            break;
        }
    }
    let mut times = Vec::with_capacity(budget.min_reps);
    let mut total = 0.0;
    while times.len() < budget.max_reps
        && (times.len() < budget.min_reps || total < budget.target_s)
    {
        let t = Instant::now();
        f()?;
        let dt = t.elapsed().as_secs_f64();
        total += dt;
        times.push(dt * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let mid = times.len() / 2;
    Ok(if times.len() % 2 == 1 {
        times[mid]
    } else {
        0.5 * (times[mid - 1] + times[mid])
    })
}
