//! The `max_pool2d` checker. Forward values are exact (a max picks an element: same NaN
//! positions, equal values, `+0 == −0`); the backward routes each upstream gradient to its
//! window's winner, so only the order in which overlapping windows add up may differ: it is
//! held to the sum rule of [`super::cmp`] with `K` = the most windows covering one input.

use cnn_kernels::pool::{naive, MaxPool2dGeometry, MaxPool2dParams};
use cnn_kernels::{Error, Float, TensorView, TensorViewMut, MAX_ALLOC_BYTES};

use super::cmp::{self, assert_exact, assert_same_bits, assert_sums, Terms};
use super::fast::pool;
use super::input::{Data, Input, Pick};
use super::{shape, CAP, WORK_CAP};

/// One decoded case.
#[derive(Debug, Clone)]
pub struct Case {
    /// Shape of `x`.
    pub xs: Vec<usize>,
    /// Parameters.
    pub p: MaxPool2dParams,
}

/// Decodes a case: mostly valid windows up to 4×4 (padding at most half the kernel), with
/// chaos zeros, extreme values and padding over the limit.
pub fn decode(inp: &mut Input) -> Case {
    let dims = [inp.small(1, 3), inp.small(1, 4), inp.dim(), inp.dim()];
    let kernel = [inp.small(1, 4), inp.small(1, 4)];
    let stride = [inp.small(1, 4), inp.small(1, 4)];
    let mut padding = [0; 2];
    for a in 0..2 {
        padding[a] = if inp.chance(8) {
            inp.small(0, 4)
        } else {
            inp.u8() as usize % (kernel[a] / 2 + 1).max(1)
        };
    }
    let xs = inp.shape_near(&dims);
    Case {
        xs,
        p: MaxPool2dParams {
            kernel,
            stride,
            padding,
        },
    }
}

/// The output shape by the documented formula in exact arithmetic, or `None` where the
/// documentation calls the input invalid (ignoring `usize` overflow).
pub fn spec_out_shape(c: &Case) -> Option<[u128; 4]> {
    let [n, ch, h, w] = match *c.xs {
        [a, b, c, d] => [a as u128, b as u128, c as u128, d as u128],
        _ => return None,
    };
    if [n, ch, h, w].contains(&0) {
        return None;
    }
    let axis = |i: usize, len: u128| -> Option<u128> {
        let (k, s, p) = (
            c.p.kernel[i] as u128,
            c.p.stride[i] as u128,
            c.p.padding[i] as u128,
        );
        if k == 0 || s == 0 || 2 * p > k || k > len + 2 * p {
            return None;
        }
        Some((len + 2 * p - k) / s + 1)
    };
    Some([n, ch, axis(0, h)?, axis(1, w)?])
}

/// Checks one fuzz input.
pub fn check(data: &[u8]) {
    let mut inp = Input::new(data);
    let case = decode(&mut inp);
    let ctx = format!("max_pool2d {case:?}");
    let xs = shape(&case.xs);
    let geom = MaxPool2dGeometry::new(xs, &case.p);
    match (&geom, spec_out_shape(&case)) {
        (Ok(g), Some(s)) => {
            assert_eq!(g.out_shape().map(|d| d as u128), s, "{ctx}: output shape");
            assert_eq!(g.x_shape(), xs.dims(), "{ctx}");
        }
        (Ok(g), None) => panic!("{ctx}: accepted an invalid problem: {g:?}"),
        (Err(e), Some(s)) => {
            // Also a padded length `len + 2·pad` that overflows ("a size overflows").
            let padded = (0..2).any(|a| {
                case.xs[2 + a] as u128 + 2 * case.p.padding[a] as u128 > usize::MAX as u128
            });
            // Or a window whose `kh · kw` elements overflow (its offsets would).
            let window = case.p.kernel[0] as u128 * case.p.kernel[1] as u128;
            let overflow = s
                .iter()
                .try_fold(1u128, |a, &d| a.checked_mul(d))
                .is_none_or(|v| v > usize::MAX as u128)
                || xs.checked_len().is_none()
                || padded
                || window > usize::MAX as u128;
            assert!(
                overflow && matches!(e, Error::TooLarge { .. }),
                "{ctx}: refused a valid problem: {e}"
            );
        }
        (Err(e), None) => assert_eq!(e.op(), "max_pool2d", "{ctx}: {e}"),
    }
    let Some(x_len) = xs.checked_len() else {
        return;
    };
    if x_len > CAP {
        return;
    }
    let x = inp.data(x_len);
    let g = match geom {
        Err(_) => {
            all_fail::<f32>(&ctx, &case, &x);
            all_fail::<f64>(&ctx, &case, &x);
            return;
        }
        Ok(g) => g,
    };
    let out_len = g.out_shape().iter().product::<usize>();
    let win = g.params.kernel[0].min(g.h) as u128 * g.params.kernel[1].min(g.w) as u128;
    if out_len > CAP || out_len as u128 * win > WORK_CAP as u128 {
        // Pooling never makes an output much larger than its input; check the limit anyway.
        assert!(
            (out_len as u128) * 8 <= MAX_ALLOC_BYTES as u128,
            "{ctx}: unexpectedly huge output"
        );
        return;
    }
    let dout = inp.data(out_len);
    if inp.chance(16) {
        let bad = inp.shape_near(&g.out_shape());
        if bad != g.out_shape() && shape(&bad).checked_len().is_some_and(|n| n <= CAP) {
            let d = inp.data(shape(&bad).checked_len().unwrap());
            bad_dout::<f32>(&ctx, &case, &x, &bad, &d);
            bad_dout::<f64>(&ctx, &case, &x, &bad, &d);
        }
    }
    valid::<f32>(&ctx, &case, &g, &x, &dout);
    valid::<f64>(&ctx, &case, &g, &x, &dout);
}

fn view<'a, T: Pick>(s: &[usize], d: &'a Data) -> TensorView<'a, T> {
    TensorView::new(shape(s), T::pick(d)).expect("data of the shape's length")
}

/// An invalid problem: every entry point returns `Err`.
fn all_fail<T: Pick>(ctx: &str, c: &Case, x: &Data) {
    let xv = view::<T>(&c.xs, x);
    let ctx = format!("{ctx} {:?}", T::DTYPE);
    let d = [T::ZERO; 4];
    let dv = TensorView::new([1, 1, 2, 2], &d[..]).unwrap();
    let fail = |what: &str, r: cnn_kernels::Result<()>| {
        assert!(r.is_err(), "{ctx}: {what} accepted an invalid problem");
    };
    fail("naive::forward", naive::forward(xv, &c.p).map(drop));
    fail("naive::backward", naive::backward(dv, xv, &c.p).map(drop));
    cmp::for_each_level(|level| {
        let what = |s: &str| format!("{s} at {level}");
        fail(&what("forward"), pool::forward(xv, &c.p).map(drop));
        fail(
            &what("forward_with_indices"),
            pool::forward_with_indices(xv, &c.p).map(drop),
        );
        fail(&what("backward"), pool::backward(dv, xv, &c.p).map(drop));
        let mut o = [T::ZERO; 4];
        let ov = TensorViewMut::new([1, 1, 2, 2], &mut o[..]).unwrap();
        fail(&what("forward_into"), pool::forward_into(xv, &c.p, ov));
        let ov = TensorViewMut::new([1, 1, 2, 2], &mut o[..]).unwrap();
        fail(
            &what("backward_into"),
            pool::backward_into(dv, xv, &c.p, ov),
        );
    });
}

/// A dout of the wrong shape: every backward refuses it.
fn bad_dout<T: Pick>(ctx: &str, c: &Case, x: &Data, ds: &[usize], d: &Data) {
    let (xv, dv) = (view::<T>(&c.xs, x), view::<T>(ds, d));
    assert!(
        naive::backward(dv, xv, &c.p).is_err(),
        "{ctx}: naive::backward took dout {ds:?}"
    );
    cmp::for_each_level(|level| {
        let r = pool::backward(dv, xv, &c.p);
        assert!(r.is_err(), "{ctx}: backward at {level} took dout {ds:?}");
        if let Ok((_, ix)) = pool::forward_with_indices(xv, &c.p) {
            let r = pool::backward_with_indices(dv, &ix, &c.p);
            assert!(r.is_err(), "{ctx}: backward_with_indices took dout {ds:?}");
        }
    });
}

/// Term classification of the backward from the naive backward itself, run on indicator
/// gradients (the routing depends on `x` only): `Σ|dout|` over finite gradients, and
/// whether a NaN, `+inf` or `−inf` gradient lands on each input.
fn classify<T: Float>(xv: TensorView<'_, T>, dout: &[T], p: &MaxPool2dParams) -> Vec<Terms> {
    let x: Vec<f64> = xv.data().iter().map(|v| v.to_f64()).collect();
    let xv = TensorView::new(xv.shape(), &x[..]).unwrap();
    let ds = shape(&MaxPool2dGeometry::new(xv.shape(), p).unwrap().out_shape());
    let route = |f: &dyn Fn(f64) -> f64| -> Vec<f64> {
        let d: Vec<f64> = dout.iter().map(|v| f(v.to_f64())).collect();
        naive::backward(TensorView::new(ds, &d[..]).unwrap(), xv, p)
            .unwrap()
            .into_vec()
    };
    let ind = |b: bool| if b { 1.0 } else { 0.0 };
    let mag = route(&|v| if v.is_finite() { v.abs() } else { 0.0 });
    let nan = route(&|v| ind(v.is_nan()));
    let pinf = route(&|v| ind(v == f64::INFINITY));
    let ninf = route(&|v| ind(v == f64::NEG_INFINITY));
    (0..x.len())
        .map(|i| Terms {
            mag: mag[i],
            nan: nan[i] > 0.0,
            pos_inf: pinf[i] > 0.0,
            neg_inf: ninf[i] > 0.0,
            maybe_nan: false,
        })
        .collect()
}

/// A valid, small problem in one element type.
fn valid<T: Pick>(ctx: &str, c: &Case, g: &MaxPool2dGeometry, x: &Data, dout: &Data) {
    let ctx = format!("{ctx} {:?}", T::DTYPE);
    let p = &c.p;
    let (xv, dv) = (view::<T>(&c.xs, x), view::<T>(&g.out_shape(), dout));
    let out = naive::forward(xv, p).unwrap_or_else(|e| panic!("{ctx}: naive: {e}"));
    assert_eq!(out.shape().dims(), g.out_shape(), "{ctx}");
    assert_same_bits(
        &ctx,
        "naive forward",
        out.data(),
        naive::forward(xv, p).unwrap().data(),
    );
    let dx = naive::backward(dv, xv, p).unwrap_or_else(|e| panic!("{ctx}: naive: {e}"));
    assert_eq!(dx.shape().dims(), g.x_shape(), "{ctx}");
    let again = naive::backward(dv, xv, p).unwrap();
    assert_same_bits(&ctx, "naive backward", dx.data(), again.data());
    let terms = classify(xv, dv.data(), p);
    let [kh, kw] = p.kernel;
    let [sh, sw] = p.stride;
    let k = kh.div_ceil(sh).min(g.oh) * kw.div_ceil(sw).min(g.ow);
    // Windows of more than 2³² elements cannot be indexed (documented `TooLarge`).
    let indexable = (kh as u128) * (kw as u128) <= 1 << 32;

    cmp::for_each_level(|level| {
        let ctx = format!("{ctx} at {level}");
        let fast = pool::forward(xv, p).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        assert_eq!(fast.shape().dims(), g.out_shape(), "{ctx}");
        assert_exact(&ctx, "forward", out.data(), fast.data());
        for r in cmp::on_pools(|| pool::forward(xv, p).unwrap()) {
            assert_same_bits(&ctx, "forward on another pool", fast.data(), r.data());
        }
        let mut o = cmp::garbage::<T>(fast.data().len());
        let ov = TensorViewMut::new(g.out_shape(), &mut o[..]).unwrap();
        pool::forward_into(xv, p, ov).unwrap_or_else(|e| panic!("{ctx}: forward_into: {e}"));
        assert_same_bits(&ctx, "forward_into", fast.data(), &o);

        let fdx = pool::backward(dv, xv, p).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        assert_eq!(fdx.shape().dims(), g.x_shape(), "{ctx}");
        assert_sums(&ctx, "backward", dx.data(), fdx.data(), &terms, k);
        for r in cmp::on_pools(|| pool::backward(dv, xv, p).unwrap()) {
            assert_same_bits(&ctx, "backward on another pool", fdx.data(), r.data());
        }
        let mut d = cmp::garbage::<T>(fdx.data().len());
        let dxv = TensorViewMut::new(g.x_shape(), &mut d[..]).unwrap();
        pool::backward_into(dv, xv, p, dxv).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        assert_same_bits(&ctx, "backward_into", fdx.data(), &d);

        let (wo, ix) = match pool::forward_with_indices(xv, p) {
            Ok(r) => r,
            Err(Error::TooLarge { .. }) if !indexable => return,
            Err(e) => panic!("{ctx}: forward_with_indices: {e}"),
        };
        assert_same_bits(&ctx, "forward_with_indices", fast.data(), wo.data());
        let mut ix2 = pool::MaxPool2dIndices::new(g).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        let mut o2 = cmp::garbage::<T>(fast.data().len());
        let ov = TensorViewMut::new(g.out_shape(), &mut o2[..]).unwrap();
        pool::forward_with_indices_into(xv, p, ov, &mut ix2)
            .unwrap_or_else(|e| panic!("{ctx}: forward_with_indices_into: {e}"));
        assert_same_bits(&ctx, "forward_with_indices_into", fast.data(), &o2);
        let idx = pool::backward_with_indices(dv, &ix, p).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        assert_sums(
            &ctx,
            "backward_with_indices",
            dx.data(),
            idx.data(),
            &terms,
            k,
        );
        let mut d2 = cmp::garbage::<T>(fdx.data().len());
        let dxv = TensorViewMut::new(g.x_shape(), &mut d2[..]).unwrap();
        pool::backward_with_indices_into(dv, &ix2, p, dxv)
            .unwrap_or_else(|e| panic!("{ctx}: backward_with_indices_into: {e}"));
        assert_same_bits(&ctx, "backward_with_indices_into", idx.data(), &d2);
        // Forward then backward with the output as upstream gradient.
        pool::backward_with_indices(fast.view(), &ix, p)
            .unwrap_or_else(|e| panic!("{ctx}: chain: {e}"));
    });
}
