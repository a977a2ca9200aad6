//! Registers the criterion benchmarks of one op's cases (included by `benches/*.rs`).
//!
//! One group per case, named exactly as the case (`conv_resnet_3x3_56`, `pool_vgg`, …), with
//! the benchmarks `fast/fwd`, `fast/bwd` and, where one naive pass is estimated to take under
//! [`NAIVE_LIMIT_S`], `naive/fwd` and `naive/bwd`. Throughput is set so criterion prints
//! rates: for conv `Throughput::Elements(FLOPs)` — criterion's "elem/s" are FLOP/s — and for
//! the memory-bound layers `Throughput::BytesDecimal(bytes)` (GB/s); see `cases.rs` for what
//! is counted. Threads: the global rayon pool, sized by `RAYON_NUM_THREADS` (default: all
//! cores).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput};

use crate::cases::{self, Case, Dir, Imp, Problem};

/// Naive kernels whose single pass is estimated above this are not benchmarked.
pub const NAIVE_LIMIT_S: f64 = 1.0;

/// Registers the benchmarks of every case whose `op()` is one of `ops`, in f32.
pub fn bench_ops(c: &mut Criterion, ops: &[&str]) {
    for case in cases::CASES.iter().filter(|k| ops.contains(&k.op())) {
        bench_case(c, case);
    }
}

fn throughput(case: &Case, dir: Dir) -> Throughput {
    let work = case.work(dir, std::mem::size_of::<f32>()).round() as u64;
    if case.counts_flops() {
        Throughput::Elements(work)
    } else {
        Throughput::BytesDecimal(work)
    }
}

/// 1.5 s, or enough for the 10 samples of one iteration each when an iteration takes
/// `iter_s` (so criterion need not warn that it cannot complete them).
fn measurement_time(iter_s: f64) -> Duration {
    Duration::from_secs_f64(1.5f64.max(12.0 * iter_s))
}

fn bench_case(c: &mut Criterion, case: &Case) {
    let problem = Problem::<f32>::new(case).expect("benchmark cases are valid");
    let small = Problem::<f32>::new(&case.small()).expect("benchmark cases are valid");
    let mut group = c.benchmark_group(case.name);
    // Flat sampling: every sample runs the same number of iterations, so a slow kernel
    // costs ~10 iterations instead of criterion's linear 1 + 2 + … + 10.
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .sampling_mode(SamplingMode::Flat);
    for dir in Dir::BOTH {
        group.throughput(throughput(case, dir));
        let (first, fast_s) = cases::time_once(|| problem.run(Imp::Fast, dir));
        let available = match first {
            Some(Ok(_)) => true,
            Some(Err(e)) => panic!("{}/fast/{}: {e}", case.name, dir.label()),
            None => false,
        };
        if available {
            group.measurement_time(measurement_time(fast_s));
            group.bench_function(format!("fast/{}", dir.label()), |b| {
                b.iter(|| black_box(problem.run(Imp::Fast, dir)))
            });
        } else {
            eprintln!(
                "{}/fast/{}: fast path not merged yet, skipped",
                case.name,
                dir.label()
            );
        }
        let est = cases::estimate_naive_seconds(case, &small, dir);
        if est < NAIVE_LIMIT_S {
            let (first, naive_s) = cases::time_once(|| problem.run(Imp::Naive, dir));
            if let Some(Err(e)) = first {
                panic!("{}/naive/{}: {e}", case.name, dir.label());
            }
            group.measurement_time(measurement_time(naive_s));
            group.bench_function(format!("naive/{}", dir.label()), |b| {
                b.iter(|| black_box(problem.run(Imp::Naive, dir)))
            });
        } else {
            eprintln!(
                "{}/naive/{}: skipped, one pass estimated at {est:.1} s",
                case.name,
                dir.label()
            );
        }
    }
    group.finish();
}
