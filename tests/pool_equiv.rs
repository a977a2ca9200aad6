//! The fast max-pool kernels against the naive ones: values, winners and gradients, bitwise,
//! on randomised shapes and every window/stride/padding combination the naive kernel
//! accepts, at every SIMD level this machine supports, for f32 and f64.
//!
//! The SIMD level is process-wide, so every test here takes `LEVEL_LOCK`.

use std::sync::Mutex;

use cnn_kernels::pool::{self, naive, MaxPool2dGeometry, MaxPool2dIndices, MaxPool2dParams};
use cnn_kernels::simd::{self, Level};
use cnn_kernels::{Float, Tensor, TensorView, TensorViewMut};

static LEVEL_LOCK: Mutex<()> = Mutex::new(());

/// xorshift64*: a small deterministic generator.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
}

/// Random values: small integers (many ties, ±0) or spread floats, with NaN (distinct
/// payloads, so "the first NaN wins" is checked bitwise), ±inf and -0.0 injected.
fn values<T: Float>(rng: &mut Rng, n: usize, special: bool) -> Vec<T> {
    let ties = rng.below(2) == 0;
    (0..n)
        .map(|k| {
            if special {
                match rng.below(40) {
                    0 => return nan::<T>(k),
                    1 => return T::NEG_INFINITY,
                    2 => return -T::NEG_INFINITY,
                    3 => return -T::ZERO,
                    4 => return T::ZERO,
                    _ => {}
                }
            }
            if ties {
                T::from_f64(rng.below(5) as f64 - 2.0)
            } else {
                T::from_f64((rng.next() >> 11) as f64 / (1u64 << 53) as f64 * 8.0 - 4.0)
            }
        })
        .collect()
}

/// A quiet NaN whose payload depends on `k`.
fn nan<T: Float>(k: usize) -> T {
    let v = if std::mem::size_of::<T>() == 4 {
        f32::from_bits(0x7fc0_0000 | (k as u32 & 0xffff)) as f64
    } else {
        f64::from_bits(0x7ff8_0000_0000_0000 | (k as u64 & 0xffff))
    };
    // f32 → f64 keeps a quiet NaN's payload (shifted), and back.
    let t = T::from_f64(v);
    assert!(t.is_nan());
    t
}

/// Bitwise equality, reporting the first differing element.
fn same_bits<T: Float>(got: &[T], want: &[T], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let (g, w) = (bits(got), bits(want));
    if let Some(k) = (0..g.len()).find(|&k| g[k] != w[k]) {
        panic!(
            "{what}: element {k}: got {} ({:#x}), want {} ({:#x})",
            got[k], g[k], want[k], w[k]
        );
    }
}

fn bits<T: Float>(v: &[T]) -> Vec<u64> {
    v.iter()
        .map(|&x| {
            if std::mem::size_of::<T>() == 4 {
                (x.to_f64() as f32).to_bits() as u64
            } else {
                x.to_f64().to_bits()
            }
        })
        .collect()
}

/// The naive kernel's winner rule, as a flat index into the plane.
fn ref_argmax<T: Float>(plane: &[T], g: &MaxPool2dGeometry, i: usize, j: usize) -> usize {
    let (r0, r1) = g.window(0, i);
    let (c0, c1) = g.window(1, j);
    let mut best = r0 * g.w + c0;
    let mut best_v = plane[best];
    for r in r0..r1 {
        for c in c0..c1 {
            let v = plane[r * g.w + c];
            if best_v.is_nan() {
                return best;
            }
            if v > best_v || v.is_nan() {
                best = r * g.w + c;
                best_v = v;
            }
        }
    }
    best
}

/// Random valid parameters (kernel 1..=5 mostly, sometimes large), stride 1..=4, padding up
/// to half the kernel.
fn params(rng: &mut Rng) -> MaxPool2dParams {
    let common = [
        MaxPool2dParams::new([2, 2]),
        MaxPool2dParams::new([3, 3]).stride([2, 2]).padding([1, 1]),
        MaxPool2dParams::new([3, 3]).stride([2, 2]),
        MaxPool2dParams::new([3, 3]).stride([1, 1]).padding([1, 1]),
    ];
    if rng.below(3) == 0 {
        return common[rng.below(common.len())];
    }
    let k = [rng.range(1, 5), rng.range(1, 5)];
    let s = [rng.range(1, 4), rng.range(1, 4)];
    let pd = [rng.range(0, k[0] / 2), rng.range(0, k[1] / 2)];
    MaxPool2dParams::new(k).stride(s).padding(pd)
}

fn check_case<T: Float>(x: &Tensor<T>, p: &MaxPool2dParams, rng: &mut Rng, what: &str) {
    let g = MaxPool2dGeometry::new(x.shape(), p).unwrap();
    let want = naive::forward(x.view(), p).unwrap();
    let got = pool::forward(x.view(), p).unwrap();
    same_bits(got.data(), want.data(), &format!("forward {what}"));

    let (got2, ix) = pool::forward_with_indices(x.view(), p).unwrap();
    same_bits(
        got2.data(),
        want.data(),
        &format!("forward_with_indices {what}"),
    );
    let plane = g.h * g.w;
    for n in 0..g.n {
        for c in 0..g.c {
            let xs = &x.data()[(n * g.c + c) * plane..][..plane];
            for i in 0..g.oh {
                for j in 0..g.ow {
                    assert_eq!(
                        ix.flat_index(n, c, i, j),
                        Some(ref_argmax(xs, &g, i, j)),
                        "index {what} at ({n},{c},{i},{j})"
                    );
                }
            }
        }
    }

    // Allocation-free forms give the same bits; the output buffers start dirty.
    let mut out = vec![T::from_f64(9.0); want.data().len()];
    let mut ix2 = MaxPool2dIndices::new(&g).unwrap();
    pool::forward_with_indices_into(
        x.view(),
        p,
        TensorViewMut::new(g.out_shape(), &mut out).unwrap(),
        &mut ix2,
    )
    .unwrap();
    same_bits(
        &out,
        want.data(),
        &format!("forward_with_indices_into {what}"),
    );
    assert_eq!(ix2, ix, "indices of _into {what}");
    out.fill(T::from_f64(7.0));
    pool::forward_into(
        x.view(),
        p,
        TensorViewMut::new(g.out_shape(), &mut out).unwrap(),
    )
    .unwrap();
    same_bits(&out, want.data(), &format!("forward_into {what}"));

    let dout = Tensor::from_vec(g.out_shape(), values::<T>(rng, want.data().len(), false)).unwrap();
    let dwant = naive::backward(dout.view(), x.view(), p).unwrap();
    let d1 = pool::backward(dout.view(), x.view(), p).unwrap();
    same_bits(d1.data(), dwant.data(), &format!("backward {what}"));
    let d2 = pool::backward_with_indices(dout.view(), &ix, p).unwrap();
    same_bits(
        d2.data(),
        dwant.data(),
        &format!("backward_with_indices {what}"),
    );
    let mut dx = vec![T::from_f64(3.0); x.data().len()];
    pool::backward_into(
        dout.view(),
        x.view(),
        p,
        TensorViewMut::new(g.x_shape(), &mut dx).unwrap(),
    )
    .unwrap();
    same_bits(&dx, dwant.data(), &format!("backward_into {what}"));
    dx.fill(T::from_f64(5.0));
    pool::backward_with_indices_into(
        dout.view(),
        &ix,
        p,
        TensorViewMut::new(g.x_shape(), &mut dx).unwrap(),
    )
    .unwrap();
    same_bits(
        &dx,
        dwant.data(),
        &format!("backward_with_indices_into {what}"),
    );
}

fn random_cases<T: Float>(seed: u64, cases: usize) {
    let _guard = LEVEL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    for level in simd::supported_levels() {
        assert_eq!(simd::set_max_level(level), level);
        let mut rng = Rng(seed);
        let mut done = 0;
        while done < cases {
            let p = params(&mut rng);
            let n = rng.range(1, 3);
            let c = rng.range(1, 3);
            // Widths around the vector lengths (8, 16, 32, 64) leave every kind of tail.
            let h = rng.range(1, 24);
            let w = if rng.below(2) == 0 {
                rng.range(1, 80)
            } else {
                [15, 16, 17, 31, 32, 33, 35, 63, 64, 65, 66, 67][rng.below(12)]
            };
            if MaxPool2dGeometry::new([n, c, h, w].into(), &p).is_err() {
                continue;
            }
            let special = rng.below(2) == 0;
            let x = Tensor::from_vec([n, c, h, w], values::<T>(&mut rng, n * c * h * w, special))
                .unwrap();
            let what = format!("{} {level} x{:?} {p:?}", T::DTYPE.name(), [n, c, h, w]);
            check_case(&x, &p, &mut rng, &what);
            done += 1;
        }
    }
    simd::set_max_level(Level::Avx512);
}

#[test]
fn random_f32_every_level() {
    random_cases::<f32>(0x1234_5678_9abc_def1, 400);
}

#[test]
fn random_f64_every_level() {
    random_cases::<f64>(0x0fed_cba9_8765_4321, 250);
}

/// Windows above 256 elements store u16 offsets and take the general path.
#[test]
fn large_windows() {
    let _guard = LEVEL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut rng = Rng(99);
    for level in simd::supported_levels() {
        simd::set_max_level(level);
        for (k, s, pd, hw) in [
            ([17, 17], [1, 1], [0, 0], [20, 21]),
            ([20, 15], [3, 2], [10, 7], [25, 40]),
            ([1, 300], [1, 1], [0, 0], [2, 310]),
        ] {
            let p = MaxPool2dParams::new(k).stride(s).padding(pd);
            let x = Tensor::from_vec(
                [1, 2, hw[0], hw[1]],
                values::<f32>(&mut rng, 2 * hw[0] * hw[1], true),
            )
            .unwrap();
            let (_, ix) = pool::forward_with_indices(x.view(), &p).unwrap();
            assert_eq!(ix.bytes_per_index(), 2);
            check_case(&x, &p, &mut rng, &format!("large {level} {p:?}"));
        }
    }
    simd::set_max_level(Level::Avx512);
}

/// NaN, ±inf, all-equal windows and ties placed at every position of rows whose width leaves
/// SIMD tails, for the specialised windows.
#[test]
fn specials_at_every_position() {
    let _guard = LEVEL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut rng = Rng(7);
    let ps = [
        MaxPool2dParams::new([2, 2]),
        MaxPool2dParams::new([3, 3]).stride([2, 2]).padding([1, 1]),
        MaxPool2dParams::new([3, 3]).stride([1, 1]).padding([1, 1]),
        MaxPool2dParams::new([2, 3]).stride([1, 2]),
    ];
    for level in simd::supported_levels() {
        simd::set_max_level(level);
        for p in &ps {
            for w in [34usize, 37] {
                let h = 4;
                for special in [f32::NAN, f32::NEG_INFINITY, f32::INFINITY, -0.0, 1.0] {
                    for pos in 0..h * w {
                        // Base: all −inf (every window −inf) or all equal (ties everywhere).
                        let base = if pos % 2 == 0 { f32::NEG_INFINITY } else { 1.0 };
                        let mut v = vec![base; h * w];
                        v[pos] = special;
                        if special.is_nan() {
                            v[(pos * 7 + 3) % (h * w)] = nan::<f32>(pos);
                        }
                        let x = Tensor::from_vec([1, 1, h, w], v).unwrap();
                        check_case(
                            &x,
                            p,
                            &mut rng,
                            &format!("{level} {p:?} w{w} {special} @{pos}"),
                        );
                    }
                }
            }
        }
    }
    simd::set_max_level(Level::Avx512);
}

#[test]
fn bad_inputs_and_buffers_are_errors() {
    let x = vec![0.0f32; 2 * 3 * 8 * 8];
    let xv = TensorView::new([2, 3, 8, 8], &x).unwrap();
    let p = MaxPool2dParams::new([2, 2]);
    // Parameters and shapes the geometry rejects.
    let x3 = TensorView::new([6, 8, 8], &x).unwrap();
    assert!(pool::forward(x3, &p).is_err());
    assert!(pool::forward(xv, &MaxPool2dParams::new([0, 2])).is_err());
    assert!(pool::forward(xv, &p.stride([0, 1])).is_err());
    assert!(pool::forward(xv, &MaxPool2dParams::new([2, 2]).padding([2, 0])).is_err());
    assert!(pool::forward(xv, &MaxPool2dParams::new([9, 9])).is_err());
    assert!(pool::forward_with_indices(xv, &MaxPool2dParams::new([9, 2])).is_err());
    assert!(pool::backward(xv, xv, &MaxPool2dParams::new([2, 9])).is_err());
    // Output buffers of the wrong shape.
    let mut out = vec![0.0f32; 2 * 3 * 4 * 4];
    assert!(
        pool::forward_into(xv, &p, TensorViewMut::new([2, 3, 4, 4], &mut out).unwrap()).is_ok()
    );
    assert!(
        pool::forward_into(xv, &p, TensorViewMut::new([2, 3, 2, 8], &mut out).unwrap()).is_err()
    );
    assert!(pool::forward_into(xv, &p, TensorViewMut::new([6, 4, 4], &mut out).unwrap()).is_err());
    let g = MaxPool2dGeometry::new(xv.shape(), &p).unwrap();
    let g_other = MaxPool2dGeometry::new([2, 3, 8, 8].into(), &p.stride([1, 1])).unwrap();
    let mut ix = MaxPool2dIndices::new(&g_other).unwrap();
    let ov = TensorViewMut::new([2, 3, 4, 4], &mut out).unwrap();
    assert!(pool::forward_with_indices_into(xv, &p, ov, &mut ix).is_err());
    let mut ix = MaxPool2dIndices::new(&g).unwrap();
    assert!(!ix.is_filled());
    assert_eq!(ix.window_offset(0, 0, 0, 0), None);
    // Unfilled indices cannot be used.
    let dout = vec![1.0f32; 2 * 3 * 4 * 4];
    let dv = TensorView::new([2, 3, 4, 4], &dout).unwrap();
    assert!(pool::backward_with_indices(dv, &ix, &p).is_err());
    let ov = TensorViewMut::new([2, 3, 4, 4], &mut out).unwrap();
    pool::forward_with_indices_into(xv, &p, ov, &mut ix).unwrap();
    assert!(ix.is_filled());
    assert_eq!(ix.window_offset(2, 0, 0, 0), None);
    assert!(pool::backward_with_indices(dv, &ix, &p).is_ok());
    // Parameters other than the indices' own.
    assert!(pool::backward_with_indices(dv, &ix, &p.stride([1, 1])).is_err());
    // dout and dx of the wrong shape.
    let bad = TensorView::new([2, 3, 2, 8], &dout).unwrap();
    assert!(pool::backward(bad, xv, &p).is_err());
    assert!(pool::backward_with_indices(bad, &ix, &p).is_err());
    let mut dx = vec![0.0f32; 2 * 3 * 8 * 8];
    let dxv = TensorViewMut::new([2, 3, 64, 1], &mut dx).unwrap();
    assert!(pool::backward_into(dv, xv, &p, dxv).is_err());
    let dxv = TensorViewMut::new([2, 3, 64, 1], &mut dx).unwrap();
    assert!(pool::backward_with_indices_into(dv, &ix, &p, dxv).is_err());
    let dxv = TensorViewMut::new([2, 3, 8, 8], &mut dx).unwrap();
    assert!(pool::backward_with_indices_into(dv, &ix, &p, dxv).is_ok());
    // Error messages name the values.
    let e = pool::forward_into(xv, &p, TensorViewMut::new([2, 3, 2, 8], &mut out).unwrap())
        .unwrap_err();
    assert!(e.to_string().contains("[2, 3, 2, 8]"), "{e}");
}
