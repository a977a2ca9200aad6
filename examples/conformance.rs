//! Runs conformance cases (the JSON format of `tests/data/conformance/`) through every path
//! of the crate (naive and fast, each SIMD level of a fast path) in `f32` and `f64`.
//!
//! ```text
//! cargo run --release --example conformance -- tests/data/conformance
//! cargo run --release --example conformance -- tests/data/conformance/conv_medium.json
//! ```
//!
//! Prints one line per case with the worst error of each path and dtype, then
//! `N passed, N failed`; exits with status 1 if any case failed (an unknown op, an
//! unsupported parameter or an unreadable file counts as failed).

#[path = "../tests/support/conformance.rs"]
mod conformance;

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let paths: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if paths.is_empty() {
        eprintln!("usage: cargo run --release --example conformance -- PATH...");
        eprintln!("  PATH: a case file (*.json) or a directory of them");
        return ExitCode::from(2);
    }
    let reg = conformance::Registry::all();
    let summary = conformance::run_all(&paths, &reg, &mut |r| {
        println!("{}", r.line);
        if !r.passed {
            for p in &r.problems {
                println!("    {p}");
            }
        }
    });
    println!("{}", summary.line());
    if summary.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
