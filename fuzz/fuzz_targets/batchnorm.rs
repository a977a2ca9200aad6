//! `cargo +nightly fuzz run batchnorm`: see `fuzz/checks/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cnn_kernels_fuzz::run("batchnorm", data));
