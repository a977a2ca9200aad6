//! The fast norm kernels give bitwise identical `y`, cache, running statistics, `dx`, `dγ`
//! and `dβ` in rayon pools of 1, 2, 3 and 8 threads, at every SIMD level, on shapes large
//! enough that channels and groups are split into many leaves and parallel subtrees.
//!
//! The SIMD cap is process-wide, so every test here takes `LEVEL_LOCK`.

use std::sync::Mutex;

use cnn_kernels::norm::{
    self, BatchNormCache, BatchNormMode, BatchNormParams, GroupNormParams, NormGrads,
};
use cnn_kernels::simd::{self, Level};
use cnn_kernels::{Float, Shape, Tensor, TensorView};

static LEVEL_LOCK: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LEVEL_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn data<T: Float>(seed: u64, n: usize) -> Vec<T> {
    let mut s = seed;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 11) as f64 / (1u64 << 53) as f64;
            T::from_f64(3.0 + (i % 7) as f64 + 2.0 * u)
        })
        .collect()
}

fn bits<T: Float>(v: &[T]) -> Vec<u64> {
    v.iter().map(|x| x.to_f64().to_bits()).collect()
}

/// Everything a forward + backward produces, as bits.
type Run = Vec<Vec<u64>>;

fn bn_run<T: Float>(dims: &[usize], mode: BatchNormMode) -> Run {
    let shape = Shape::new(dims).unwrap();
    let len: usize = dims.iter().product();
    let c = dims[1];
    let (x, dy) = (data::<T>(1, len), data::<T>(2, len));
    let (gamma, beta) = (data::<T>(3, c), data::<T>(4, c));
    let (mut rm, mut rv) = (data::<T>(5, c), data::<T>(6, c));
    let p = BatchNormParams::default().mode(mode);
    let xv = TensorView::new(shape, &x).unwrap();
    let dyv = TensorView::new(shape, &dy).unwrap();
    type Fwd<T> = fn(
        TensorView<'_, T>,
        &[T],
        &[T],
        &mut [T],
        &mut [T],
        &BatchNormParams,
    ) -> cnn_kernels::Result<(Tensor<T>, BatchNormCache<T>)>;
    type Bwd<T> = fn(
        TensorView<'_, T>,
        TensorView<'_, T>,
        &[T],
        &BatchNormCache<T>,
    ) -> cnn_kernels::Result<NormGrads<T>>;
    let (fwd, bwd): (Fwd<T>, Bwd<T>) = if dims.len() == 4 {
        (
            norm::spatial_batch_norm_forward,
            norm::spatial_batch_norm_backward,
        )
    } else {
        (norm::batch_norm_forward, norm::batch_norm_backward)
    };
    let (y, cache) = fwd(xv, &gamma, &beta, &mut rm, &mut rv, &p).unwrap();
    let g = bwd(dyv, xv, &gamma, &cache).unwrap();
    vec![
        bits(y.data()),
        bits(&cache.mean),
        bits(&cache.inv_std),
        bits(&rm),
        bits(&rv),
        bits(g.dx.data()),
        bits(&g.dgamma),
        bits(&g.dbeta),
    ]
}

fn gn_run<T: Float>(dims: [usize; 4], groups: usize) -> Run {
    let len: usize = dims.iter().product();
    let c = dims[1];
    let (x, dy) = (data::<T>(7, len), data::<T>(8, len));
    let (gamma, beta) = (data::<T>(9, c), data::<T>(10, c));
    let xv = TensorView::new(dims, &x).unwrap();
    let dyv = TensorView::new(dims, &dy).unwrap();
    let (y, cache) =
        norm::group_norm_forward(xv, &gamma, &beta, &GroupNormParams::new(groups)).unwrap();
    let g = norm::group_norm_backward(dyv, xv, &gamma, &cache).unwrap();
    vec![
        bits(y.data()),
        bits(&cache.mean),
        bits(&cache.inv_std),
        bits(g.dx.data()),
        bits(&g.dgamma),
        bits(&g.dbeta),
    ]
}

/// Runs `f` in pools of 1, 2, 3 and 8 threads at every level and checks the bits agree.
fn same_bits_for_all_pools(what: &str, f: impl Fn() -> Run + Sync) {
    let _g = lock();
    for lvl in simd::supported_levels() {
        simd::set_max_level(lvl);
        let runs: Vec<Run> = [1, 2, 3, 8]
            .iter()
            .map(|&t| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build()
                    .unwrap();
                pool.install(&f)
            })
            .collect();
        for (t, r) in [2, 3, 8].iter().zip(&runs[1..]) {
            for (k, (a, b)) in runs[0].iter().zip(r).enumerate() {
                assert!(
                    a == b,
                    "{what} at {lvl}: output {k} differs between 1 and {t} threads"
                );
            }
        }
    }
    simd::set_max_level(Level::Avx512);
}

#[test]
fn spatial_batch_norm_is_deterministic() {
    // 180 000 values per channel: 44 leaves, forked subtrees.
    same_bits_for_all_pools("sbn f32 train", || {
        bn_run::<f32>(&[2, 3, 300, 300], BatchNormMode::Train)
    });
    same_bits_for_all_pools("sbn f32 test", || {
        bn_run::<f32>(&[2, 3, 300, 300], BatchNormMode::Test)
    });
    // Many channels, each a few leaves.
    same_bits_for_all_pools("sbn f64 train", || {
        bn_run::<f64>(&[8, 40, 29, 31], BatchNormMode::Train)
    });
}

#[test]
fn vanilla_batch_norm_is_deterministic() {
    // 47 row blocks per strip (forked subtrees), 2 strips.
    same_bits_for_all_pools("bn f32", || {
        bn_run::<f32>(&[3000, 70], BatchNormMode::Train)
    });
    same_bits_for_all_pools("bn f64", || bn_run::<f64>(&[500, 130], BatchNormMode::Test));
}

#[test]
fn group_norm_is_deterministic() {
    // Groups of 131 072 values: parallel channels within a group.
    same_bits_for_all_pools("gn f32 large groups", || gn_run::<f32>([2, 4, 256, 256], 2));
    same_bits_for_all_pools("gn f32 layer norm", || gn_run::<f32>([1, 3, 300, 300], 1));
    same_bits_for_all_pools("gn f64", || gn_run::<f64>([6, 32, 17, 19], 8));
}
