//! Criterion benchmarks of the norm cases: `cargo bench --bench norm`, or filter by name,
//! e.g. `cargo bench -- bn_resnet`. One group per case; see `support/criterion_cases.rs`.
//! Threads: a pool of `RAYON_NUM_THREADS` (default: all cores) that runs the timing loops.

#[allow(dead_code)]
#[path = "support/cases.rs"]
mod cases;
#[path = "support/criterion_cases.rs"]
mod criterion_cases;

use criterion::{criterion_group, criterion_main, Criterion};

fn benches(c: &mut Criterion) {
    criterion_cases::bench_ops(c, &["bn", "gn"]);
}

criterion_group!(norm, benches);
criterion_main!(norm);
