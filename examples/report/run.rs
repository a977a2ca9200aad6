//! Runs the selected cases and emits one row per (case, direction, thread count).

use std::hint::black_box;

use cnn_kernels::{Float, Result};

use crate::args::Args;
use crate::cases::{self, Case, Dir, Imp, Problem};
use crate::measure::{median_ms, Budget};
use crate::output::{emit, Row};

/// Naive kernels whose single pass is estimated above this many seconds are not timed.
pub fn naive_limit_s(quick: bool) -> f64 {
    if quick {
        0.1
    } else {
        1.0
    }
}

/// One timed call: runs `imp` and drops its outputs (inside the timing, as every kernel
/// allocates its outputs); an `Err` stops the measurement instead of being timed.
fn call<T: Float>(problem: &Problem<T>, imp: Imp, dir: Dir) -> Result<()> {
    black_box(problem.run(imp, dir).transpose()?);
    Ok(())
}

/// Runs every selected case in element type `T` at each thread count, printing each row
/// as it completes; returns the rows.
pub fn run<T: Float>(args: &Args, pools: &[rayon::ThreadPool]) -> Result<Vec<Row>> {
    let selected: Vec<Case> = cases::CASES
        .iter()
        .filter(|c| args.selects(c.name))
        .map(|c| args.batch.map_or(*c, |n| c.with_batch(n)))
        .collect();
    let mut rows = Vec::new();
    for case in &selected {
        let problem = Problem::<T>::new(case)?;
        let small = Problem::<T>::new(&case.small())?;
        for dir in Dir::BOTH {
            // The naive kernels are single-threaded loops: timed once, outside any pool.
            let est = cases::estimate_naive_seconds(case, &small, dir);
            let limit = naive_limit_s(args.quick);
            let naive_ms = if est < limit && !args.fast_only {
                Some(median_ms(Budget::naive(args.quick), || {
                    call(&problem, Imp::Naive, dir)
                })?)
            } else {
                None
            };
            let naive_small = small
                .run(Imp::Naive, dir)
                .expect("the naive kernel always exists")?;
            for pool in pools {
                let row = pool.install(|| -> Result<Row> {
                    let err = match small.run(Imp::Fast, dir) {
                        Some(out) => Some(cases::max_error(&out?, &naive_small)),
                        None => None,
                    };
                    let fast_ms = if err.is_some() {
                        Some(median_ms(Budget::fast(args.quick), || {
                            call(&problem, Imp::Fast, dir)
                        })?)
                    } else {
                        None
                    };
                    let mut notes = Vec::new();
                    if fast_ms.is_none() {
                        notes.push("fast path not merged yet".to_string());
                    }
                    if args.fast_only {
                        notes.push("naive not timed (--fast-only)".to_string());
                    } else if naive_ms.is_none() {
                        notes.push(format!("naive skipped: est. {est:.1} s/pass"));
                    }
                    Ok(Row {
                        case: case.name,
                        op: case.op(),
                        direction: dir.label(),
                        dtype: T::DTYPE.name(),
                        threads: pool.current_num_threads(),
                        naive_ms,
                        fast_ms,
                        work: case.work(dir, std::mem::size_of::<T>()),
                        unit: case.unit(),
                        max_err: err,
                        note: notes.join("; "),
                    })
                })?;
                if args.csv {
                    eprintln!("{}", row.table());
                    emit(&row.csv());
                } else {
                    emit(&row.table());
                }
                rows.push(row);
            }
        }
    }
    Ok(rows)
}
