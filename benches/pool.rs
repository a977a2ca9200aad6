//! Criterion benchmarks of the pool cases: `cargo bench --bench pool`, or filter by name,
//! e.g. `cargo bench -- pool_vgg`. One group per case; see `support/criterion_cases.rs`.
//! Threads: a pool of `RAYON_NUM_THREADS` (default: all cores) that runs the timing loops.

#[allow(dead_code)]
#[path = "support/cases.rs"]
mod cases;
#[path = "support/criterion_cases.rs"]
mod criterion_cases;

use criterion::{criterion_group, criterion_main, Criterion};

fn benches(c: &mut Criterion) {
    criterion_cases::bench_ops(c, &["pool"]);
}

criterion_group!(pool, benches);
criterion_main!(pool);
