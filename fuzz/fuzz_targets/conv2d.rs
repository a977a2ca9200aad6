//! `cargo +nightly fuzz run conv2d`: see `fuzz/checks/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cnn_kernels_fuzz::run("conv2d", data));
