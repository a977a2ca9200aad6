//! Registers the criterion benchmarks of one op's cases (included by `benches/*.rs`).
//!
//! One group per case, named exactly as the case (`conv_resnet_3x3_56`, `pool_vgg`, …), with
//! the benchmarks `fast/fwd`, `fast/bwd` and, where one naive pass is estimated to take under
//! [`NAIVE_LIMIT_S`], `naive/fwd` and `naive/bwd`. Throughput is set so criterion prints
//! rates: for conv `Throughput::Elements(FLOPs)` — criterion's "elem/s" are FLOP/s — and for
//! the memory-bound layers `Throughput::BytesDecimal(bytes)` (GB/s); see `cases.rs` for what
//! is counted. Threads: a rayon pool sized like the global one, by `RAYON_NUM_THREADS`
//! (default: all cores); each benchmark's timing loop runs on one of its threads, as the
//! report's does. (A loop on the main thread would also time the hand-offs to the pool: see
//! "Calling from outside a pool" in the `threads` docs.)

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput};
use rayon::ThreadPool;

use crate::cases::{self, Case, Dir, Imp, Problem};

/// Naive kernels whose single pass is estimated above this are not benchmarked.
pub const NAIVE_LIMIT_S: f64 = 1.0;

/// Registers the benchmarks of every case whose `op()` is one of `ops`, in f32. Cases that
/// criterion's name filter would skip entirely are not even set up (see [`plain_filter`]).
pub fn bench_ops(c: &mut Criterion, ops: &[&str]) {
    let filter = plain_filter(std::env::args().skip(1));
    // Sized as rayon sizes its global pool: RAYON_NUM_THREADS, else one thread per core.
    let pool = rayon::ThreadPoolBuilder::new()
        .build()
        .expect("the benchmark thread pool starts");
    for case in cases::CASES.iter().filter(|k| ops.contains(&k.op())) {
        let wanted = filter.as_deref().is_none_or(|f| {
            ["fast", "naive"].iter().any(|imp| {
                Dir::BOTH
                    .iter()
                    .any(|d| format!("{}/{imp}/{}", case.name, d.label()).contains(f))
            })
        });
        if wanted {
            bench_case(c, case, &pool);
        }
    }
}

/// Criterion's positional FILTER argument, if there is one and it is a plain word (letters,
/// digits, `_`, `/`), for which criterion's regex match is a substring match. `None` (set up
/// every case; criterion still filters) for no filter or any other regex.
fn plain_filter(args: impl Iterator<Item = String>) -> Option<String> {
    // Criterion 0.5's options that take a value (`--opt value`); all others are flags.
    const WITH_VALUE: &[&str] = &[
        "-c",
        "--color",
        "--colour",
        "-s",
        "--save-baseline",
        "-b",
        "--baseline",
        "--baseline-lenient",
        "--format",
        "--profile-time",
        "--load-baseline",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--plotting-backend",
        "--output-format",
    ];
    let mut args = args;
    while let Some(a) = args.next() {
        if WITH_VALUE.contains(&a.as_str()) {
            args.next();
        } else if !a.starts_with('-') {
            let plain = a
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '/');
            return plain.then_some(a);
        }
    }
    None
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

fn bench_case(c: &mut Criterion, case: &Case, pool: &ThreadPool) {
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
        let (first, fast_s) = pool.install(|| cases::time_once(|| problem.run(Imp::Fast, dir)));
        let available = match first {
            Some(Ok(_)) => true,
            Some(Err(e)) => panic!("{}/fast/{}: {e}", case.name, dir.label()),
            None => false,
        };
        if available {
            group.measurement_time(measurement_time(fast_s));
            group.bench_function(format!("fast/{}", dir.label()), |b| {
                pool.install(|| b.iter(|| black_box(problem.run(Imp::Fast, dir))))
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
            let (first, naive_s) =
                pool.install(|| cases::time_once(|| problem.run(Imp::Naive, dir)));
            if let Some(Err(e)) = first {
                panic!("{}/naive/{}: {e}", case.name, dir.label());
            }
            group.measurement_time(measurement_time(naive_s));
            group.bench_function(format!("naive/{}", dir.label()), |b| {
                pool.install(|| b.iter(|| black_box(problem.run(Imp::Naive, dir))))
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
