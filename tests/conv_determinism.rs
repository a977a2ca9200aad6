//! The fast convolution's output and gradients are bitwise identical in rayon pools of 1, 2,
//! 3, 8 and 16 threads: batch 1 (work split inside the image), depthwise, grouped, pointwise,
//! images large enough to be lowered in several tiles, and weight gradients reduced over
//! batch chunks.

use cnn_kernels::conv::{self, Conv2dGeometry, Conv2dParams};
use cnn_kernels::{Float, TensorView};

struct Rng(u64);

impl Rng {
    fn values<T: Float>(&mut self, n: usize) -> Vec<T> {
        (0..n)
            .map(|_| {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                T::from_f64((self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)
            })
            .collect()
    }
}

fn bits<T: Float>(v: &[T]) -> Vec<u64> {
    v.iter().map(|x| x.to_f64().to_bits()).collect()
}

/// Forward and backward results (as bit patterns) in a pool of `threads` threads.
fn run<T: Float>(
    threads: usize,
    xs: [usize; 4],
    ws: [usize; 4],
    p: &Conv2dParams,
) -> [Vec<u64>; 4] {
    let mut r = Rng(7);
    let x = r.values::<T>(xs.iter().product());
    let w = r.values::<T>(ws.iter().product());
    let b = r.values::<T>(ws[0]);
    let xv = TensorView::new(xs, &x).unwrap();
    let wv = TensorView::new(ws, &w).unwrap();
    let g = Conv2dGeometry::new(xv.shape(), wv.shape(), p).unwrap();
    let dout = r.values::<T>(g.out_shape().iter().product());
    let dv = TensorView::new(g.out_shape(), &dout).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let out = conv::forward(xv, wv, Some(&b), p).unwrap();
        let gr = conv::backward(dv, xv, wv, p).unwrap();
        [
            bits(out.data()),
            bits(gr.dx.data()),
            bits(gr.dw.data()),
            bits(&gr.db),
        ]
    })
}

fn same_for_all_thread_counts<T: Float>(xs: [usize; 4], ws: [usize; 4], p: Conv2dParams) {
    let one = run::<T>(1, xs, ws, &p);
    for threads in [2, 3, 8, 16] {
        let other = run::<T>(threads, xs, ws, &p);
        for (what, (a, b)) in ["out", "dx", "dw", "db"].iter().zip(one.iter().zip(&other)) {
            assert!(
                a == b,
                "{what} differs between 1 and {threads} threads ({}): x {xs:?}, w {ws:?}, {p:?}",
                T::DTYPE.name()
            );
        }
    }
}

fn cases() -> Vec<([usize; 4], [usize; 4], Conv2dParams)> {
    let p = Conv2dParams::default();
    vec![
        // N = 1, several tiles and filter blocks inside the image.
        ([1, 16, 40, 40], [64, 16, 3, 3], p.padding([1, 1])),
        // Stride 1, 64 channels: dx as the transposed convolution's forward GEMM.
        ([16, 64, 6, 6], [8, 64, 3, 3], p.padding([1, 1])),
        // Large image: many tiles per image, several images.
        ([3, 8, 70, 70], [12, 8, 3, 3], p.padding([1, 1])),
        // Stem-like: small dw, reduced over batch chunks.
        (
            [6, 3, 40, 40],
            [16, 3, 7, 7],
            p.stride([2, 2]).padding([3, 3]),
        ),
        // Depthwise, N = 1 and N = 3, multiplier 2, strided.
        ([1, 32, 30, 30], [32, 1, 3, 3], p.padding([1, 1]).groups(32)),
        (
            [3, 6, 33, 41],
            [12, 1, 3, 3],
            p.padding([1, 1]).stride([2, 2]).groups(6),
        ),
        // Grouped, dilated.
        (
            [2, 8, 20, 22],
            [10, 4, 3, 3],
            p.padding([2, 2]).dilation([2, 2]).groups(2),
        ),
        // Small K (≤ 32): the register-blocked forward kernel, N = 1 with pixel tiles,
        // cs231n-like strided, 1×1 and grouped.
        ([1, 3, 64, 64], [20, 3, 3, 3], p.padding([1, 1])),
        (
            [5, 3, 31, 29],
            [25, 3, 3, 3],
            p.stride([2, 2]).padding([1, 1]),
        ),
        (
            [5, 3, 31, 41],
            [25, 3, 3, 3],
            p.stride([2, 2]).padding([1, 1]),
        ),
        ([2, 24, 17, 19], [13, 24, 1, 1], p),
        ([1, 3, 30, 32], [12, 3, 7, 7], p.padding([3, 3])),
        ([2, 4, 15, 16], [6, 2, 3, 3], p.padding([1, 1]).groups(2)),
        // N = 1, one tile: filter blocks, as many as the pool's lanes need (1, 2, 3, 4).
        ([1, 64, 10, 10], [128, 64, 3, 3], p.padding([1, 1])),
        // Pointwise, N = 1 with channel blocks.
        ([1, 256, 12, 12], [32, 256, 1, 1], p),
        // N = 1 above the serial size: dw chunked over tiles, dx over bands of rows.
        (
            [1, 3, 60, 60],
            [16, 3, 7, 7],
            p.stride([2, 2]).padding([3, 3]),
        ),
        (
            [1, 4, 64, 60],
            [24, 4, 3, 3],
            p.dilation([2, 1]).padding([2, 1]).stride([1, 2]),
        ),
        ([4, 64, 20, 20], [16, 64, 1, 1], p),
    ]
}

#[test]
fn bitwise_identical_across_thread_counts_f32() {
    for (xs, ws, p) in cases() {
        same_for_all_thread_counts::<f32>(xs, ws, p);
    }
}

#[test]
fn bitwise_identical_across_thread_counts_f64() {
    for (xs, ws, p) in cases() {
        same_for_all_thread_counts::<f64>(xs, ws, p);
    }
}
