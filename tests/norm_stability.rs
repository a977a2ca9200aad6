//! Numerical stability of the fast norm kernels at every SIMD level:
//! - an `f32` channel with mean 1000 and standard deviation 0.1 normalises to unit variance,
//!   within 1e-2 (relative) of the `f64` naive kernel on the same values;
//! - a constant channel (or group) gives exactly `β` when `eps > 0`, for `f32` and `f64`,
//!   small and large magnitudes, and shapes spanning many reduction leaves;
//! - with `eps = 0` a constant channel gives NaN (`0·∞`), as the naive kernel on `f32`;
//! - a first pivot far from the mean (outliers where leaves sample it) still gives
//!   f32-accurate statistics (the sums are retaken about the mean).
//!
//! The SIMD cap is process-wide, so every test here takes `LEVEL_LOCK`.

use std::sync::Mutex;

use cnn_kernels::norm::{self, naive, BatchNormParams, GroupNormParams};
use cnn_kernels::simd::{self, Level};
use cnn_kernels::{Float, Shape, TensorView};

static LEVEL_LOCK: Mutex<()> = Mutex::new(());

fn each_level(mut f: impl FnMut(Level)) {
    let _g = LEVEL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    for l in simd::supported_levels() {
        simd::set_max_level(l);
        f(l);
    }
    simd::set_max_level(Level::Avx512);
}

struct Rng(u64);

impl Rng {
    /// Uniform in `[-1, 1)`.
    fn sym(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        2.0 * ((self.0 >> 11) as f64 / (1u64 << 53) as f64) - 1.0
    }
}

/// `(outer, c, inner)` data whose channel `ch` has mean `mean[ch]` and standard deviation
/// `sd[ch]` (uniform noise).
fn data(rng: &mut Rng, outer: usize, inner: usize, mean: &[f64], sd: &[f64]) -> Vec<f32> {
    let mut v = Vec::new();
    for _ in 0..outer {
        for (&m, &s) in mean.iter().zip(sd) {
            for _ in 0..inner {
                v.push((m + s * 3f64.sqrt() * rng.sym()) as f32);
            }
        }
    }
    v
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// `‖a − b‖ / ‖b‖` and the max error over the RMS of `b`.
fn rel_errors(a: &[f32], b: &[f64]) -> (f64, f64) {
    let (mut num, mut den, mut max) = (0.0, 0.0, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let e = x as f64 - y;
        num += e * e;
        den += y * y;
        max = max.max(e.abs());
    }
    ((num / den).sqrt(), max / (den / b.len() as f64).sqrt())
}

/// Variance of `(y − β)/γ` over the values of one channel.
fn unit_var(ys: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = ys.collect();
    let m = v.iter().sum::<f64>() / v.len() as f64;
    v.iter().map(|y| (y - m).powi(2)).sum::<f64>() / v.len() as f64
}

#[test]
fn large_mean_small_std_f32() {
    let mut rng = Rng(0x5eed_0101);
    let (n, hw) = (4, 32 * 33);
    let (mean, sd) = ([0.0, 1000.0, -1000.0], [1.0, 0.1, 0.1]);
    let x = data(&mut rng, n, hw, &mean, &sd);
    let x64 = to_f64(&x);
    let (gamma, beta) = ([1.5f32, 2.0, 0.5], [0.1f32, -0.5, 1.0]);
    let (g64, b64) = (to_f64(&gamma), to_f64(&beta));
    let p = BatchNormParams::default();
    let dims = [n, 3, 32, 33];
    let (yn, _) = naive::spatial_batch_norm_forward(
        TensorView::new(dims, &x64).unwrap(),
        &g64,
        &b64,
        &mut [0.0; 3],
        &mut [1.0; 3],
        &p,
    )
    .unwrap();
    each_level(|lvl| {
        let (yf, _) = norm::spatial_batch_norm_forward(
            TensorView::new(dims, &x).unwrap(),
            &gamma,
            &beta,
            &mut [0.0; 3],
            &mut [1.0; 3],
            &p,
        )
        .unwrap();
        let (rel, max) = rel_errors(yf.data(), yn.data());
        assert!(rel < 1e-2 && max < 1e-2, "sbn {lvl}: errors {rel} {max}");
        for ch in 0..3 {
            let (g, b) = (g64[ch], b64[ch]);
            let v = unit_var((0..n).flat_map(|i| {
                let o = (i * 3 + ch) * hw;
                let y = &yf.data()[o..o + hw];
                y.iter().map(move |&v| (v as f64 - b) / g)
            }));
            assert!(
                (v - 1.0).abs() < 1e-2,
                "sbn {lvl} channel {ch}: variance {v}"
            );
        }
    });

    // Vanilla: the same columns as (N, 3).
    let rows = 500;
    let x = data(&mut rng, rows, 1, &mean, &sd);
    let x64 = to_f64(&x);
    let (yn, _) = naive::batch_norm_forward(
        TensorView::new([rows, 3], &x64).unwrap(),
        &g64,
        &b64,
        &mut [0.0; 3],
        &mut [1.0; 3],
        &p,
    )
    .unwrap();
    each_level(|lvl| {
        let (yf, _) = norm::batch_norm_forward(
            TensorView::new([rows, 3], &x).unwrap(),
            &gamma,
            &beta,
            &mut [0.0; 3],
            &mut [1.0; 3],
            &p,
        )
        .unwrap();
        let (rel, max) = rel_errors(yf.data(), yn.data());
        assert!(rel < 1e-2 && max < 1e-2, "bn {lvl}: errors {rel} {max}");
        for ch in 0..3 {
            let v = unit_var((0..rows).map(|r| (yf.data()[r * 3 + ch] as f64 - b64[ch]) / g64[ch]));
            assert!((v - 1.0).abs() < 1e-2, "bn {lvl} column {ch}: variance {v}");
        }
    });

    // Group norm: group 1 of 3 (one channel each) has the large mean.
    let gp = GroupNormParams::new(3);
    let x = data(&mut rng, n, hw, &mean, &sd);
    let x64 = to_f64(&x);
    let (yn, _) =
        naive::group_norm_forward(TensorView::new(dims, &x64).unwrap(), &g64, &b64, &gp).unwrap();
    each_level(|lvl| {
        let (yf, _) =
            norm::group_norm_forward(TensorView::new(dims, &x).unwrap(), &gamma, &beta, &gp)
                .unwrap();
        let (rel, max) = rel_errors(yf.data(), yn.data());
        assert!(rel < 1e-2 && max < 1e-2, "gn {lvl}: errors {rel} {max}");
        for i in 0..n {
            let o = (i * 3 + 1) * hw;
            let v = unit_var(
                yf.data()[o..o + hw]
                    .iter()
                    .map(|&v| (v as f64 - b64[1]) / g64[1]),
            );
            assert!((v - 1.0).abs() < 1e-2, "gn {lvl} image {i}: variance {v}");
        }
    });
}

const CONSTANTS: [f64; 6] = [0.1, 1000.1, -3.7e5, 1.0e7, 1.0e-30, 0.0];

/// Spatial BN on `(n, C, h, w)` where every channel `ch` is the constant `CONSTANTS[ch]`.
fn constant_sbn<T: Float>(dims: [usize; 4], eps: f64) -> (Vec<T>, Vec<T>, Vec<T>) {
    let [n, c, h, w] = dims;
    let x: Vec<T> = (0..n * c * h * w)
        .map(|i| T::from_f64(CONSTANTS[(i / (h * w)) % c]))
        .collect();
    let beta: Vec<T> = (0..c).map(|ch| T::from_f64(0.25 - ch as f64)).collect();
    let gamma = vec![T::from_f64(1.5); c];
    let p = BatchNormParams::default().eps(eps).momentum(0.5);
    let (mut rm, mut rv) = (vec![T::ZERO; c], vec![T::ONE; c]);
    let (y, cache) = norm::spatial_batch_norm_forward(
        TensorView::new(dims, &x).unwrap(),
        &gamma,
        &beta,
        &mut rm,
        &mut rv,
        &p,
    )
    .unwrap();
    for ch in 0..c {
        assert_eq!(
            cache.mean[ch],
            T::from_f64(CONSTANTS[ch]),
            "mean of channel {ch}"
        );
        assert_eq!(rv[ch], T::from_f64(0.5), "running var of channel {ch}");
    }
    let dy: Vec<T> = (0..x.len()).map(|i| T::from_f64((i % 5) as f64)).collect();
    let g = norm::spatial_batch_norm_backward(
        TensorView::new(dims, &dy).unwrap(),
        TensorView::new(dims, &x).unwrap(),
        &gamma,
        &cache,
    )
    .unwrap();
    if eps > 0.0 {
        assert!(g.dx.data().iter().all(|v| v.is_finite()));
    }
    (y.into_vec(), beta, x)
}

fn constant_is_beta<T: Float>() {
    for dims in [[2, 6, 70, 70], [50, 6, 3, 3], [1, 6, 1, 1], [3, 6, 7, 9]] {
        each_level(|lvl| {
            let (y, beta, _) = constant_sbn::<T>(dims, 1e-5);
            let [_, c, h, w] = dims;
            for (i, v) in y.iter().enumerate() {
                let ch = (i / (h * w)) % c;
                assert!(
                    *v == beta[ch],
                    "{dims:?} {lvl} y[{i}] = {v}, β = {}",
                    beta[ch]
                );
            }
        });
    }
    // Vanilla, several row blocks and strips.
    for (rows, d) in [(300, 70), (1, 6), (65, 6)] {
        let x: Vec<T> = (0..rows * d)
            .map(|i| T::from_f64(CONSTANTS[(i % d) % 6]))
            .collect();
        let beta: Vec<T> = (0..d).map(|j| T::from_f64(j as f64 * 0.5)).collect();
        let gamma = vec![T::from_f64(-2.0); d];
        each_level(|lvl| {
            let (y, _) = norm::batch_norm_forward(
                TensorView::new([rows, d], &x).unwrap(),
                &gamma,
                &beta,
                &mut vec![T::ZERO; d],
                &mut vec![T::ONE; d],
                &BatchNormParams::default(),
            )
            .unwrap();
            for (i, v) in y.data().iter().enumerate() {
                assert!(*v == beta[i % d], "({rows}, {d}) {lvl} y[{i}] = {v}");
            }
        });
    }
    // Group norm: groups of two channels with the same constant.
    let dims = [3, 6, 50, 50];
    let hw = 2500;
    let x: Vec<T> = (0..3 * 6 * hw)
        .map(|i| T::from_f64(CONSTANTS[(i / (2 * hw)) % 3 + 3]))
        .collect();
    let beta: Vec<T> = (0..6).map(|c| T::from_f64(c as f64 - 2.0)).collect();
    let gamma = vec![T::from_f64(0.75); 6];
    each_level(|lvl| {
        let (y, _) = norm::group_norm_forward(
            TensorView::new(dims, &x).unwrap(),
            &gamma,
            &beta,
            &GroupNormParams::new(3),
        )
        .unwrap();
        for (i, v) in y.data().iter().enumerate() {
            assert!(*v == beta[(i / hw) % 6], "gn {lvl} y[{i}] = {v}");
        }
    });
}

#[test]
fn constant_channel_gives_beta_f32() {
    constant_is_beta::<f32>();
}

#[test]
fn constant_channel_gives_beta_f64() {
    constant_is_beta::<f64>();
}

#[test]
fn constant_channel_with_zero_eps_is_nan_like_naive() {
    let dims = [2, 6, 9, 9];
    each_level(|lvl| {
        let (y, beta, x) = constant_sbn::<f32>(dims, 0.0);
        let (yn, _) = naive::spatial_batch_norm_forward(
            TensorView::new(Shape::new(&dims).unwrap(), &x).unwrap(),
            &[1.5f32; 6],
            &beta,
            &mut [0.0; 6],
            &mut [1.0; 6],
            &BatchNormParams::default().eps(0.0),
        )
        .unwrap();
        assert!(y.iter().all(|v| v.is_nan()), "{lvl}");
        assert!(yn.data().iter().all(|v| v.is_nan()), "naive");
        let (y64, _, _) = constant_sbn::<f64>(dims, 0.0);
        assert!(y64.iter().all(|v| v.is_nan()), "{lvl} f64");
    });
}

/// Values at every 16th position (where leaves sample their first pivot) are outliers, so
/// the first pivot is far from the mean and the kernels must take the sums again about the
/// mean; the result must still match the `f64` naive kernel.
#[test]
fn outliers_at_pivot_samples_f32() {
    let mut rng = Rng(0x5eed_0102);
    let dims = [3, 2, 32, 32];
    let x: Vec<f32> = (0..3 * 2 * 1024)
        .map(|i| {
            if i % 64 == 0 {
                4000.0
            } else {
                (1000.0 * (i / 1024 % 2) as f64 + 0.1 * rng.sym()) as f32
            }
        })
        .collect();
    let x64 = to_f64(&x);
    let p = BatchNormParams::default();
    let (yn, cn) = naive::spatial_batch_norm_forward(
        TensorView::new(dims, &x64).unwrap(),
        &[1.0; 2],
        &[0.0; 2],
        &mut [0.0; 2],
        &mut [1.0; 2],
        &p,
    )
    .unwrap();
    let gp = GroupNormParams::new(2);
    let (gyn, _) = naive::group_norm_forward(
        TensorView::new(dims, &x64).unwrap(),
        &[1.0; 2],
        &[0.0; 2],
        &gp,
    )
    .unwrap();
    each_level(|lvl| {
        let (yf, cf) = norm::spatial_batch_norm_forward(
            TensorView::new(dims, &x).unwrap(),
            &[1.0f32; 2],
            &[0.0; 2],
            &mut [0.0; 2],
            &mut [1.0; 2],
            &p,
        )
        .unwrap();
        let (rel, max) = rel_errors(yf.data(), yn.data());
        assert!(rel < 1e-5 && max < 1e-4, "sbn {lvl}: errors {rel} {max}");
        for ch in 0..2 {
            let e = (cf.inv_std[ch] as f64 / cn.inv_std[ch] - 1.0).abs();
            // A few f32 roundings; without the second pass about the mean this is ~1e-5.
            assert!(e < 1e-6, "sbn {lvl}: inv_std error {e}");
        }
        let (gy, _) = norm::group_norm_forward(
            TensorView::new(dims, &x).unwrap(),
            &[1.0f32; 2],
            &[0.0; 2],
            &gp,
        )
        .unwrap();
        let (rel, max) = rel_errors(gy.data(), gyn.data());
        assert!(rel < 1e-5 && max < 1e-4, "gn {lvl}: errors {rel} {max}");
    });
}
