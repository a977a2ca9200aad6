//! Criterion benchmarks of the conv cases: `cargo bench --bench conv`, or filter by name,
//! e.g. `cargo bench -- conv_resnet`. One group per case; see `support/criterion_cases.rs`.
//! Threads: a pool of `RAYON_NUM_THREADS` (default: all cores) that runs the timing loops.

#[allow(dead_code)]
#[path = "support/cases.rs"]
mod cases;
#[path = "support/criterion_cases.rs"]
mod criterion_cases;

use criterion::{criterion_group, criterion_main, Criterion};

fn benches(c: &mut Criterion) {
    criterion_cases::bench_ops(c, &["conv"]);
}

criterion_group!(conv, benches);
criterion_main!(conv);
