//! `cargo +nightly fuzz run max_pool2d`: see `fuzz/checks/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cnn_kernels_fuzz::run("max_pool2d", data));
