//! `cargo +nightly fuzz run groupnorm`: see `fuzz/checks/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cnn_kernels_fuzz::run("groupnorm", data));
