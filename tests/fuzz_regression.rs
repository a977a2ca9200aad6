//! Replays every file of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` through
//! the fuzz targets' checkers on stable Rust, so the seed corpus and every crash the fuzzer
//! ever found (minimised) stay checked without nightly or cargo-fuzz.

#[path = "../fuzz/checks/mod.rs"]
#[allow(dead_code)]
mod checks;

use std::path::{Path, PathBuf};

/// Every file under `fuzz/<dir>/<target>/`, sorted.
fn files(dir: &str, target: &str) -> Vec<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(dir)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&d) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

/// Runs every input of `target`; fails listing each file whose check panicked.
fn replay(target: &str) {
    let inputs: Vec<PathBuf> = ["corpus", "regressions"]
        .iter()
        .flat_map(|d| files(d, target))
        .collect();
    assert!(
        !inputs.is_empty(),
        "no corpus for {target} under fuzz/corpus/{target}"
    );
    let mut failed = Vec::new();
    for path in &inputs {
        let data = std::fs::read(path).expect("a readable corpus file");
        if std::panic::catch_unwind(|| checks::run(target, &data)).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} {target} inputs failed:\n{}",
        failed.len(),
        inputs.len(),
        failed.join("\n")
    );
}

#[test]
fn every_target_has_a_test_here() {
    assert_eq!(
        checks::TARGETS,
        ["conv2d", "max_pool2d", "batchnorm", "groupnorm"]
    );
}

/// Checks `n` pseudo-random inputs of every length up to 300 bytes (a stable-Rust smoke
/// run of each checker beyond the corpus; SplitMix64, fixed seed).
fn random(target: &str, n: usize) {
    let mut state = 0x5EED_u64 ^ target.len() as u64;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for _ in 0..n {
        let len = (next() % 300) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if std::panic::catch_unwind(|| checks::run(target, &data)).is_err() {
            panic!("{target}: random input {data:?} failed");
        }
    }
}

#[test]
fn conv2d() {
    replay("conv2d");
}

#[test]
fn conv2d_random() {
    random("conv2d", 400);
}

#[test]
fn max_pool2d() {
    replay("max_pool2d");
}

#[test]
fn max_pool2d_random() {
    random("max_pool2d", 400);
}

#[test]
fn batchnorm() {
    replay("batchnorm");
}

#[test]
fn batchnorm_random() {
    random("batchnorm", 400);
}

#[test]
fn groupnorm() {
    replay("groupnorm");
}

#[test]
fn groupnorm_random() {
    random("groupnorm", 400);
}
