//! The fast convolution (`conv::forward`, `conv::backward`) equals the naive reference on
//! randomised shapes covering every parameter: batch 1/2/5, channels and filters including 1
//! and non-multiples of the SIMD width, sizes including 1 and odd, kernels 1×1 to 7×7 and
//! rectangular, stride 1–3, padding 0–3 (also ≥ the kernel), dilation 1–3, groups 1, 2 and
//! C (depthwise, multiplier 1–3), f32 and f64, forward and all three gradients.
//!
//! Tolerance: both kernels compute the same sums in different orders. For an element that
//! sums `K` products, each ordering is off by at most about `ε·√K·S` in practice (`γ_K·S`
//! in the worst case), where `S = Σ|terms|` is obtained by running the naive kernel on the
//! absolute values. We allow `|fast − naive| ≤ 8·ε·√K·S` (+ a denormal floor), with `K` the
//! reduction length: `C/groups·KH·KW` for the output and `dx`, `N·OH·OW` for `dw` and `db`.
//! A wrong index or a missing tap gives an error of the order of `S`, far above that.

use approx::abs_diff_eq;
use cnn_kernels::conv::{self, naive, Conv2dGeometry, Conv2dParams};
use cnn_kernels::simd;
use cnn_kernels::{Float, TensorView};

/// SplitMix64: a small deterministic generator (no dependency).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.range(0, v.len() - 1)]
    }
    fn values<T: Float>(&mut self, n: usize) -> Vec<T> {
        (0..n)
            .map(|_| T::from_f64((self.next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0))
            .collect()
    }
}

#[derive(Debug, Clone, Copy)]
struct Case {
    x: [usize; 4],
    w: [usize; 4],
    p: Conv2dParams,
    bias: bool,
}

fn random_case(r: &mut Rng) -> Case {
    let n = r.pick(&[1, 2, 5]);
    let (c, f, groups) = match r.range(0, 2) {
        0 => (r.range(1, 7), r.range(1, 9), 1),
        1 => (2 * r.range(1, 4), 2 * r.range(1, 4), 2),
        _ => {
            let c = r.range(1, 9);
            (c, c * r.range(1, 3), c)
        }
    };
    let (kh, kw) = (r.range(1, 7), r.range(1, 7));
    let stride = [r.range(1, 3), r.range(1, 3)];
    let dilation = [r.range(1, 3), r.range(1, 3)];
    let padding = [r.range(0, 3), r.range(0, 3)];
    let size = |r: &mut Rng, k: usize, d: usize, p: usize| {
        let min = ((k - 1) * d + 1).saturating_sub(2 * p).max(1);
        if r.range(0, 5) == 0 {
            min
        } else {
            r.range(min, min + 11)
        }
    };
    let h = size(r, kh, dilation[0], padding[0]);
    let w = size(r, kw, dilation[1], padding[1]);
    Case {
        x: [n, c, h, w],
        w: [f, c / groups, kh, kw],
        p: Conv2dParams {
            stride,
            padding,
            dilation,
            groups,
        },
        bias: r.range(0, 3) > 0,
    }
}

/// Hand-picked cases: every path's special conditions and the tiled lowering.
fn fixed_cases() -> Vec<Case> {
    let p = Conv2dParams::default();
    let mk = |x, w, p, bias| Case { x, w, p, bias };
    vec![
        // Pointwise (1×1, stride 1, no padding), incl. groups and dilation (ignored by 1×1).
        mk([2, 5, 7, 9], [3, 5, 1, 1], p, true),
        mk(
            [1, 6, 1, 1],
            [4, 3, 1, 1],
            p.groups(2).dilation([2, 3]),
            true,
        ),
        // 1×1 with stride / padding goes through im2col.
        mk([2, 4, 6, 5], [3, 4, 1, 1], p.stride([2, 1]), true),
        mk([1, 4, 3, 3], [2, 4, 1, 1], p.padding([2, 1]), false),
        // Tiled lowering: several tiles per image (C·KH·KW = 400).
        mk([2, 16, 24, 25], [5, 16, 5, 5], p.padding([2, 2]), true),
        mk(
            [1, 16, 30, 31],
            [70, 16, 3, 5],
            p.padding([1, 2]).stride([1, 2]),
            true,
        ),
        // Long reductions: several K blocks of the AVX-512 GEMM (K = 603: 256 + 256 + 91),
        // row and column tails (29 filters, 42 pixels); a pointwise layer with K = 300.
        mk([1, 67, 6, 7], [29, 67, 3, 3], p.padding([1, 1]), true),
        mk([2, 300, 5, 7], [13, 300, 1, 1], p, true),
        // Few units and many filters: filter blocks inside one image.
        mk([1, 8, 9, 9], [96, 8, 3, 3], p.padding([1, 1]), true),
        // Small dw: the batch is chunked for the weight gradient.
        mk([5, 3, 12, 12], [4, 3, 7, 7], p.padding([3, 3]), true),
        // Pointwise with many channels: channel blocks.
        mk([2, 300, 5, 6], [7, 300, 1, 1], p, true),
        // Depthwise: rows wide enough for the register blocks, strides, dilation, multiplier.
        mk(
            [2, 3, 9, 70],
            [3, 1, 3, 3],
            p.padding([1, 1]).groups(3),
            true,
        ),
        mk(
            [1, 4, 11, 75],
            [8, 1, 5, 3],
            p.padding([2, 1]).dilation([1, 2]).groups(4),
            true,
        ),
        mk(
            [2, 3, 10, 80],
            [6, 1, 3, 3],
            p.padding([1, 1]).stride([2, 2]).groups(3),
            true,
        ),
        mk(
            [1, 2, 5, 40],
            [2, 1, 3, 3],
            p.padding([4, 4]).groups(2),
            false,
        ),
        // Depthwise planes wider than one padded window: several row chunks.
        mk(
            [1, 2, 150, 260],
            [4, 1, 3, 3],
            p.padding([1, 1]).groups(2),
            true,
        ),
        // Small K (C/groups·KH·KW ≤ 32, the register-blocked forward kernel): filter counts
        // 25 (blocks 8, 8, 8, 1) and 7 (4, 2, 1), output rows under 16 (lowered) and of 16
        // or more (phase-split copy) with tails, strides 2 and 3, dilation, padding wider
        // than the kernel's reach, row tiles at N = 1, 1×1, grouped, K = 32 and K = 33 (the
        // GEMM below 16-pixel rows).
        mk(
            [3, 3, 31, 29],
            [25, 3, 3, 3],
            p.stride([2, 2]).padding([1, 1]),
            true,
        ),
        mk(
            [2, 3, 31, 41],
            [25, 3, 3, 3],
            p.stride([2, 2]).padding([1, 1]),
            true,
        ),
        mk(
            [2, 2, 20, 70],
            [9, 2, 3, 5],
            p.stride([3, 2]).padding([2, 3]).dilation([1, 2]),
            true,
        ),
        mk([1, 3, 40, 41], [7, 3, 3, 3], p.padding([1, 1]), false),
        mk([2, 32, 1, 13], [9, 32, 1, 1], p, true),
        mk(
            [2, 4, 9, 10],
            [6, 2, 3, 3],
            p.padding([1, 1]).groups(2),
            true,
        ),
        mk([1, 2, 18, 21], [5, 2, 4, 4], p.dilation([2, 1]), true),
        mk([2, 11, 8, 9], [3, 11, 1, 3], p.padding([0, 1]), true),
        // K = 147 (7×7 RGB) and K = 256 on the phase-split copy; K = 260 (the GEMM).
        mk([2, 3, 20, 21], [10, 3, 7, 7], p.padding([3, 3]), true),
        mk([1, 4, 20, 24], [9, 4, 8, 8], p.padding([3, 3]), true),
        mk([1, 65, 6, 20], [3, 65, 2, 2], p.padding([1, 1]), false),
        // groups == C == 1.
        mk([2, 1, 8, 8], [5, 1, 3, 3], p.padding([1, 1]), true),
        // Few images, above the serial size: the weight gradient chunked over (image, tile)
        // units, the input gradient over bands of output rows in two phases (stem-like
        // stride 2, asymmetric dilation and stride, a stride wider than the kernel's reach,
        // two groups at N = 2) or one (1×1).
        mk(
            [1, 3, 60, 60],
            [16, 3, 7, 7],
            p.stride([2, 2]).padding([3, 3]),
            true,
        ),
        mk([1, 3, 64, 64], [20, 3, 3, 3], p.padding([1, 1]), true),
        mk(
            [1, 4, 64, 60],
            [24, 4, 3, 3],
            p.dilation([2, 1]).padding([2, 1]).stride([1, 2]),
            false,
        ),
        mk([1, 3, 180, 180], [32, 3, 2, 2], p.stride([3, 3]), true),
        mk(
            [2, 8, 40, 40],
            [16, 4, 5, 5],
            p.padding([2, 2]).groups(2),
            true,
        ),
        mk([1, 256, 12, 12], [32, 256, 1, 1], p, true),
        // Stride 1: dx as the forward of the transposed convolution (padding (K − 1)·d − pad)
        // through the GEMM (64 channels per group, no filter blocks: padding 1, 0, the
        // largest allowed (2), rectangular with dilation, two groups, two blocks of 128
        // filters at N = 1) or the phase-split
        // kernel (8 and 12 channels, rows of 16 pixels or more); padding beyond (K − 1)·d
        // keeps col2im.
        mk([16, 64, 5, 6], [8, 64, 3, 3], p.padding([1, 1]), true),
        mk([16, 64, 6, 5], [8, 64, 3, 3], p, false),
        mk([16, 64, 4, 7], [8, 64, 3, 3], p.padding([2, 2]), true),
        mk(
            [16, 64, 7, 9],
            [16, 64, 3, 5],
            p.padding([1, 3]).dilation([2, 1]),
            true,
        ),
        mk(
            [16, 128, 5, 5],
            [16, 64, 3, 3],
            p.padding([1, 1]).groups(2),
            false,
        ),
        mk([1, 256, 6, 6], [16, 256, 3, 3], p.padding([1, 1]), true),
        mk([2, 8, 20, 20], [16, 8, 3, 3], p.padding([1, 1]), true),
        mk(
            [1, 12, 18, 24],
            [6, 12, 3, 3],
            p.padding([0, 3]).dilation([1, 2]),
            true,
        ),
        mk([8, 64, 4, 4], [8, 64, 3, 3], p.padding([3, 3]), false),
    ]
}

fn abs_vec<T: Float>(v: &[T]) -> Vec<T> {
    v.iter().map(|x| x.abs()).collect()
}

/// Checks `fast` against `slow` element by element with the tolerance above.
fn check<T: Float>(what: &str, case: &Case, fast: &[T], slow: &[T], scale: &[T], k: usize) {
    assert_eq!(fast.len(), slow.len(), "{what}: length, {case:?}");
    let tol = 8.0 * T::EPSILON.to_f64() * (k as f64).sqrt();
    for (i, ((&a, &b), &s)) in fast.iter().zip(slow).zip(scale).enumerate() {
        let (a, b) = (a.to_f64(), b.to_f64());
        let eps = tol * s.to_f64() + 1e-300;
        assert!(
            abs_diff_eq!(a, b, epsilon = eps),
            "{what}[{i}] ({}): fast {a} vs naive {b} (allowed {eps:e}), {case:?}",
            T::DTYPE.name(),
        );
    }
}

fn run_case<T: Float>(case: &Case, r: &mut Rng) {
    let [n, c, h, wd] = case.x;
    let [f, cg, kh, kw] = case.w;
    let x = r.values::<T>(n * c * h * wd);
    let w = r.values::<T>(f * cg * kh * kw);
    let b = case.bias.then(|| r.values::<T>(f));
    let xv = TensorView::new(case.x, &x).unwrap();
    let wv = TensorView::new(case.w, &w).unwrap();
    let g = Conv2dGeometry::new(xv.shape(), wv.shape(), &case.p).unwrap();

    let fast = conv::forward(xv, wv, b.as_deref(), &case.p).unwrap();
    let slow = naive::forward(xv, wv, b.as_deref(), &case.p).unwrap();
    let (xa, wa, ba) = (abs_vec(&x), abs_vec(&w), b.as_deref().map(abs_vec));
    let xav = TensorView::new(case.x, &xa).unwrap();
    let wav = TensorView::new(case.w, &wa).unwrap();
    let scale = naive::forward(xav, wav, ba.as_deref(), &case.p).unwrap();
    check(
        "out",
        case,
        fast.data(),
        slow.data(),
        scale.data(),
        cg * kh * kw,
    );

    let dout = r.values::<T>(g.out_shape().iter().product());
    let dv = TensorView::new(g.out_shape(), &dout).unwrap();
    let fast = conv::backward(dv, xv, wv, &case.p).unwrap();
    let slow = naive::backward(dv, xv, wv, &case.p).unwrap();
    let da = abs_vec(&dout);
    let dav = TensorView::new(g.out_shape(), &da).unwrap();
    let scale = naive::backward(dav, xav, wav, &case.p).unwrap();
    let (k_dx, k_dw) = (g.fg * kh * kw, n * g.oh * g.ow);
    check(
        "dx",
        case,
        fast.dx.data(),
        slow.dx.data(),
        scale.dx.data(),
        k_dx,
    );
    check(
        "dw",
        case,
        fast.dw.data(),
        slow.dw.data(),
        scale.dw.data(),
        k_dw,
    );
    check("db", case, &fast.db, &slow.db, &scale.db, k_dw);
}

fn run_all<T: Float>(seed: u64, random: usize) {
    let mut r = Rng(seed);
    for case in fixed_cases() {
        run_case::<T>(&case, &mut r);
    }
    for _ in 0..random {
        let case = random_case(&mut r);
        run_case::<T>(&case, &mut r);
    }
}

#[test]
fn fast_matches_naive_f32() {
    run_all::<f32>(1, 400);
}

#[test]
fn fast_matches_naive_f64() {
    run_all::<f64>(2, 400);
}

/// The depthwise kernels, the small-`K` forward kernel and the GEMM (the crate's own `f32`
/// kernel at AVX-512, `matrixmultiply` below) at every SIMD level this CPU supports (each
/// level is a separate compilation of the same loops). Changing the level is
/// process-wide, so this is the only test here that does; every level is held to the same
/// tolerance, so the concurrently running tests stay valid whichever level they see.
#[test]
fn depthwise_and_small_k_match_naive_at_every_simd_level() {
    let initial = simd::active_level();
    for level in simd::supported_levels() {
        simd::set_max_level(level);
        assert!(simd::active_level() <= level);
        let mut r = Rng(3 + level as u64);
        for case in fixed_cases().iter().filter(|c| c.p.groups == c.x[1]) {
            run_case::<f32>(case, &mut r);
            run_case::<f64>(case, &mut r);
        }
        for _ in 0..60 {
            let mut case = random_case(&mut r);
            if case.p.groups != case.x[1] {
                let c = case.x[1];
                case.p.groups = c;
                case.w = [c * (1 + c % 3), 1, case.w[2], case.w[3]];
            }
            run_case::<f32>(&case, &mut r);
        }
        let small_k = |c: &Case| c.p.groups != c.x[1] && c.w[1] * c.w[2] * c.w[3] <= 256;
        for case in fixed_cases()
            .iter()
            .filter(|c| !small_k(c) && c.p.groups != c.x[1])
        {
            run_case::<f32>(case, &mut r);
        }
        for case in fixed_cases().iter().filter(|c| small_k(c)) {
            run_case::<f32>(case, &mut r);
            run_case::<f64>(case, &mut r);
        }
        let mut done = 0;
        while done < 60 {
            let case = random_case(&mut r);
            if small_k(&case) {
                run_case::<f32>(&case, &mut r);
                run_case::<f64>(&case, &mut r);
                done += 1;
            }
        }
    }
    simd::set_max_level(initial);
}
