//! The fuzz checkers: one per layer family, shared by the cargo-fuzz targets (`fuzz/`) and
//! the stable regression test (`tests/fuzz_regression.rs`, which includes this directory
//! with `#[path]`), so the comparison logic exists once.
//!
//! Each checker decodes a byte string into a problem ([`input`]) and panics if any entry
//! point breaks the contract; see each module for what is asserted.
#![allow(clippy::too_many_arguments)]

pub mod cmp;
pub mod conv;
pub mod fast;
pub mod input;
pub mod norm;
pub mod pool;

use cnn_kernels::Shape;

/// Largest tensor (elements) built from fuzz data; larger valid problems only have their
/// validation and allocation limit checked.
pub const CAP: usize = 4096;
/// Largest naive multiply-add count (conv) or window-element count (pool) computed per case.
pub const WORK_CAP: usize = 1 << 16;

/// Serialises checks: the SIMD level cap they sweep is process-wide.
pub static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The fuzz targets, by name (the names of `fuzz/fuzz_targets/*.rs` and `fuzz/corpus/*`).
pub const TARGETS: [&str; 4] = ["conv2d", "max_pool2d", "batchnorm", "groupnorm"];

/// Runs the checker of `target` on `data`; panics on a contract violation or an unknown
/// target.
pub fn run(target: &str, data: &[u8]) {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    match target {
        "conv2d" => conv::check(data),
        "max_pool2d" => pool::check(data),
        "batchnorm" => norm::check_bn(data),
        "groupnorm" => norm::check_gn(data),
        _ => panic!("unknown fuzz target {target:?}"),
    }
}

/// A shape from dimensions the decoder produced (rank 1–4 by construction).
pub fn shape(dims: &[usize]) -> Shape {
    Shape::new(dims).expect("decoded shapes have rank 1 to 4")
}
