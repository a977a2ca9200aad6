//! The run-time SIMD level: capping with `set_max_level`, and the pooling kernels at every
//! level this machine supports agreeing bitwise with the naive kernel on the benchmark
//! layers' shapes (batch cut down).
//!
//! The level is process-wide, so the tests here take `LEVEL_LOCK`.

use std::sync::Mutex;

use cnn_kernels::pool::{self, naive, MaxPool2dParams};
use cnn_kernels::simd::{self, Level};
use cnn_kernels::Tensor;

static LEVEL_LOCK: Mutex<()> = Mutex::new(());

#[test]
fn levels_are_ordered_and_capped() {
    let _g = LEVEL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let detected = simd::detected_level();
    let supported = simd::supported_levels();
    assert_eq!(supported[0], Level::Scalar);
    assert!(supported.contains(&Level::Portable));
    assert_eq!(*supported.last().unwrap(), detected);
    for &l in &Level::ALL {
        let active = simd::set_max_level(l);
        assert_eq!(active, l.min(detected));
        assert_eq!(simd::active_level(), active);
        assert_eq!(Level::from_name(l.name()), Some(l));
    }
    simd::set_max_level(Level::Avx512);
    assert_eq!(simd::active_level(), detected);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            assert_eq!(detected, Level::Avx512);
        }
    }
}

fn input(shape: [usize; 4], seed: u64) -> Tensor<f32> {
    let n: usize = shape.iter().product();
    let mut s = seed;
    let v = (0..n)
        .map(|k| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if k % 997 == 5 {
                f32::NAN
            } else {
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            }
        })
        .collect();
    Tensor::from_vec(shape, v).unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn every_level_matches_naive_on_benchmark_shapes() {
    let _g = LEVEL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let s2 = MaxPool2dParams::new([2, 2]);
    let stem = MaxPool2dParams::new([3, 3]).stride([2, 2]).padding([1, 1]);
    let cases = [
        ([4, 3, 32, 32], s2),
        ([2, 32, 32, 32], s2),
        ([1, 4, 112, 112], stem),
        ([1, 4, 112, 112], s2),
    ];
    for (k, (shape, p)) in cases.into_iter().enumerate() {
        let x = input(shape, k as u64 + 11);
        let want = naive::forward(x.view(), &p).unwrap();
        let dout = input(want.shape().dims().try_into().unwrap(), 5);
        let dwant = naive::backward(dout.view(), x.view(), &p).unwrap();
        for level in simd::supported_levels() {
            simd::set_max_level(level);
            let (out, ix) = pool::forward_with_indices(x.view(), &p).unwrap();
            assert_eq!(bits(out.data()), bits(want.data()), "{level} case {k}");
            let d1 = pool::backward(dout.view(), x.view(), &p).unwrap();
            let d2 = pool::backward_with_indices(dout.view(), &ix, &p).unwrap();
            assert_eq!(
                bits(d1.data()),
                bits(dwant.data()),
                "{level} case {k} backward"
            );
            assert_eq!(
                bits(d2.data()),
                bits(dwant.data()),
                "{level} case {k} indices"
            );
        }
    }
    simd::set_max_level(Level::Avx512);
}
