//! The `conv2d` checker: shapes and parameters from the fuzzer, every conv entry point
//! (naive and fast, allocating and `_into`, f32 and f64, every SIMD level) held to the
//! contract.

use cnn_kernels::conv::{naive, Conv2dGeometry, Conv2dGrads, Conv2dParams};
use cnn_kernels::{Error, Float, Tensor, TensorView, TensorViewMut, MAX_ALLOC_BYTES};

use super::cmp::{self, assert_same_bits, assert_sums, Terms};
use super::fast::conv;
use super::input::{Data, Input, Pick};
use super::{shape, CAP, WORK_CAP};

/// One decoded case.
#[derive(Debug, Clone)]
pub struct Case {
    /// Shape of `x` (rank 1–4; 4 unless chaos says otherwise).
    pub xs: Vec<usize>,
    /// Shape of `w`.
    pub ws: Vec<usize>,
    /// Parameters.
    pub p: Conv2dParams,
    /// Length of the bias, if any.
    pub bias: Option<usize>,
}

/// Decodes a case: mostly valid problems with dimensions 1–9, and with chaos zeros,
/// extreme values and mismatched channel counts.
pub fn decode(inp: &mut Input) -> Case {
    let g = 1 + inp.u8() as usize % 3;
    let groups = if inp.chance(8) { inp.small(0, 9) } else { g };
    let (cg, fg) = (inp.small(1, 4), inp.small(1, 4));
    let (n, h, w) = (inp.small(1, 3), inp.dim(), inp.dim());
    let (kh, kw) = (inp.small(1, 4), inp.small(1, 4));
    let c = g.saturating_mul(cg);
    let f = g.saturating_mul(fg);
    let wc = if inp.chance(4) { inp.dim() } else { cg };
    let p = Conv2dParams {
        stride: [inp.small(1, 3), inp.small(1, 3)],
        padding: [inp.small(0, 3), inp.small(0, 3)],
        dilation: [inp.small(1, 3), inp.small(1, 3)],
        groups,
    };
    let xs = inp.shape_near(&[n, c, h, w]);
    let ws = inp.shape_near(&[f, wc, kh, kw]);
    let bias = match inp.u8() % 3 {
        0 => None,
        _ => Some(inp.len_near(f)),
    };
    Case { xs, ws, p, bias }
}

/// The output shape by the documented formula, in exact arithmetic, or `None` where the
/// documentation says the input is invalid (ignoring `usize` overflow of products, which
/// the crate reports separately).
pub fn spec_out_shape(c: &Case) -> Option<[u128; 4]> {
    let ([n, ch, h, w], [f, wc, kh, kw]) = (four(&c.xs)?, four(&c.ws)?);
    let g = c.p.groups as u128;
    if [n, ch, h, w, f, wc, kh, kw].contains(&0) || g == 0 || ch % g != 0 || f % g != 0 {
        return None;
    }
    if wc != ch / g {
        return None;
    }
    let axis = |i: usize, len: u128, k: u128| -> Option<u128> {
        let (s, p, d) = (
            c.p.stride[i] as u128,
            c.p.padding[i] as u128,
            c.p.dilation[i] as u128,
        );
        if s == 0 || d == 0 || d * (k - 1) + 1 > len + 2 * p {
            return None;
        }
        Some((len + 2 * p - d * (k - 1) - 1) / s + 1)
    };
    Some([n, f, axis(0, h, kh)?, axis(1, w, kw)?])
}

fn four(s: &[usize]) -> Option<[u128; 4]> {
    match *s {
        [a, b, c, d] => Some([a as u128, b as u128, c as u128, d as u128]),
        _ => None,
    }
}

/// Checks one fuzz input.
pub fn check(data: &[u8]) {
    let mut inp = Input::new(data);
    let case = decode(&mut inp);
    let ctx = format!("conv2d {case:?}");
    let (xs, ws) = (shape(&case.xs), shape(&case.ws));
    let geom = Conv2dGeometry::new(xs, ws, &case.p);
    let spec = spec_out_shape(&case);
    match (&geom, spec) {
        (Ok(g), Some(s)) => {
            let got = g.out_shape().map(|d| d as u128);
            assert_eq!(got, s, "{ctx}: output shape differs from the formula");
            assert_eq!(g.x_shape(), xs.dims(), "{ctx}");
            assert_eq!(g.w_shape(), ws.dims(), "{ctx}");
            // Documented workspace functions never panic on a valid geometry.
            conv::forward_workspace_len(g);
            conv::backward_workspace_len(g);
        }
        (Ok(g), None) => panic!("{ctx}: accepted an invalid problem: {g:?}"),
        (Err(e), Some(s)) => {
            // Valid by the formula: only a size overflowing usize may be refused.
            let overflow = s
                .iter()
                .try_fold(1u128, |a, &d| a.checked_mul(d))
                .is_none_or(|v| v > usize::MAX as u128)
                || xs.checked_len().is_none()
                || ws.checked_len().is_none()
                || column_overflow(&case, s)
                || axis_overflow(&case);
            assert!(
                overflow && matches!(e, Error::TooLarge { .. }),
                "{ctx}: refused a valid problem: {e}"
            );
        }
        (Err(e), None) => assert_eq!(e.op(), "conv2d", "{ctx}: {e}"),
    }

    let (Some(x_len), Some(w_len)) = (xs.checked_len(), ws.checked_len()) else {
        return; // no such tensor can exist; the geometry check above is all there is
    };
    if x_len > CAP || w_len > CAP {
        assert!(TensorView::<f32>::new(xs, &[0.0; 7]).is_err() || x_len == 7);
        return;
    }
    let x = inp.data(x_len);
    let w = inp.data(w_len);
    let b = case.bias.map(|n| inp.data(n.min(CAP)));
    let g = match geom {
        Err(_) => {
            all_fail::<f32>(&ctx, &case, &x, &w, b.as_ref());
            all_fail::<f64>(&ctx, &case, &x, &w, b.as_ref());
            return;
        }
        Ok(g) => g,
    };
    let out_len = g.out_shape().iter().product::<usize>();
    let work = out_len as u128 * (g.cg * g.kh * g.kw) as u128;
    if out_len > CAP || work > WORK_CAP as u128 {
        too_big::<f32>(&ctx, &case, &g, &x, &w);
        too_big::<f64>(&ctx, &case, &g, &x, &w);
        return;
    }
    let dout = inp.data(out_len);
    let bias_ok = case.bias.is_none_or(|n| n == g.f);
    let b = if bias_ok {
        b
    } else {
        bias_fails::<f32>(&ctx, &case, &x, &w, b.as_ref());
        bias_fails::<f64>(&ctx, &case, &x, &w, b.as_ref());
        None
    };
    if inp.chance(16) {
        // A dout of the wrong shape.
        let bad = inp.shape_near(&g.out_shape());
        if bad != g.out_shape() && shape(&bad).checked_len().is_some_and(|n| n <= CAP) {
            let d = inp.data(shape(&bad).checked_len().unwrap());
            bad_dout::<f32>(&ctx, &case, &x, &w, &bad, &d);
            bad_dout::<f64>(&ctx, &case, &x, &w, &bad, &d);
        }
    }
    let r32 = valid::<f32>(&ctx, &case, &g, &x, &w, b.as_ref(), &dout);
    let r64 = valid::<f64>(&ctx, &case, &g, &x, &w, b.as_ref(), &dout);
    if [&x, &w, &dout].iter().all(|d| d.f32_exact()) && b.as_ref().is_none_or(Data::f32_exact) {
        // The naive f64 result, rounded, is a reference for the naive f32 one.
        cross_dtype(&ctx, &g, &r32, &r64);
    }
}

/// Whether a padded input length `len + 2·pad` or a dilated kernel `dil·(k − 1) + 1`
/// overflows `usize` (the documented "a size overflows" refusal, even if the output is small).
fn axis_overflow(c: &Case) -> bool {
    (0..2).any(|a| {
        let (len, k) = (c.xs[2 + a] as u128, c.ws[2 + a] as u128);
        let (p, d) = (c.p.padding[a] as u128, c.p.dilation[a] as u128);
        len + 2 * p > usize::MAX as u128 || d * (k - 1) + 1 > usize::MAX as u128
    })
}

/// Whether the column matrix `C·KH·KW·OH·OW` of a formula-valid case overflows `usize`.
fn column_overflow(c: &Case, out: [u128; 4]) -> bool {
    let (ch, kh, kw) = (c.xs[1] as u128, c.ws[2] as u128, c.ws[3] as u128);
    [ch, kh, kw, out[2], out[3]]
        .iter()
        .try_fold(1u128, |a, &d| a.checked_mul(d))
        .is_none_or(|v| v > usize::MAX as u128)
}

fn view<'a, T: Pick>(s: &[usize], d: &'a Data) -> TensorView<'a, T> {
    TensorView::new(shape(s), T::pick(d)).expect("data of the shape's length")
}

fn bias<T: Pick>(b: Option<&Data>) -> Option<&[T]> {
    b.map(|b| T::pick(b))
}

/// An invalid problem: every entry point returns `Err` (and, being invalid, cannot have
/// allocated its output first: the harness runs under an RSS limit).
fn all_fail<T: Pick>(ctx: &str, c: &Case, x: &Data, w: &Data, b: Option<&Data>) {
    let (xv, wv) = (view::<T>(&c.xs, x), view::<T>(&c.ws, w));
    let b = bias::<T>(b);
    let d = [T::ZERO; 4];
    let dv = TensorView::new([1, 1, 2, 2], &d[..]).unwrap();
    let ctx = format!("{ctx} {:?}", T::DTYPE);
    let fail = |what: &str, r: cnn_kernels::Result<()>| {
        assert!(r.is_err(), "{ctx}: {what} accepted an invalid problem");
    };
    fail("naive::forward", naive::forward(xv, wv, b, &c.p).map(drop));
    fail(
        "naive::backward",
        naive::backward(dv, xv, wv, &c.p).map(drop),
    );
    cmp::for_each_level(|level| {
        let what = |s: &str| format!("{s} at {level}");
        fail(&what("forward"), conv::forward(xv, wv, b, &c.p).map(drop));
        fail(
            &what("backward"),
            conv::backward(dv, xv, wv, &c.p).map(drop),
        );
        let mut out = [T::ZERO; 4];
        let mut ws = [T::ZERO; 16];
        let ov = TensorViewMut::new([1, 1, 2, 2], &mut out[..]).unwrap();
        fail(
            &what("forward_into"),
            conv::forward_into(xv, wv, b, &c.p, ov, &mut ws),
        );
        let (mut dx, mut dw, mut db) = ([T::ZERO; 4], [T::ZERO; 4], [T::ZERO; 1]);
        let dxv = TensorViewMut::new([1, 1, 2, 2], &mut dx[..]).unwrap();
        let dwv = TensorViewMut::new([1, 1, 2, 2], &mut dw[..]).unwrap();
        fail(
            &what("backward_into"),
            conv::backward_into(dv, xv, wv, &c.p, dxv, dwv, &mut db, &mut ws),
        );
    });
}

/// A valid problem whose output (or work) is too big to compute here, with tiny inputs:
/// the allocating API must refuse outputs above [`MAX_ALLOC_BYTES`] with `TooLarge` (and
/// not allocate: RSS limit), and the `_into` forms must refuse small output buffers.
fn too_big<T: Pick>(ctx: &str, c: &Case, g: &Conv2dGeometry, x: &Data, w: &Data) {
    let (xv, wv) = (view::<T>(&c.xs, x), view::<T>(&c.ws, w));
    let ctx = format!("{ctx} {:?}", T::DTYPE);
    let out_len = g.out_shape().iter().product::<usize>();
    let over_limit = out_len as u128 * std::mem::size_of::<T>() as u128 > MAX_ALLOC_BYTES as u128;
    let too_large = |what: &str, r: cnn_kernels::Result<()>| match r {
        Err(Error::TooLarge { .. }) => {}
        other => panic!("{ctx}: {what}: an output over the allocation limit gave {other:?}"),
    };
    if over_limit {
        too_large(
            "naive::forward",
            naive::forward(xv, wv, None, &c.p).map(drop),
        );
    }
    let d = [T::ZERO; 4];
    let dv = TensorView::new([1, 1, 2, 2], &d[..]).unwrap();
    cmp::for_each_level(|level| {
        if over_limit {
            too_large(
                &format!("forward at {level}"),
                conv::forward(xv, wv, None, &c.p).map(drop),
            );
        }
        let mut out = [T::ZERO; 4];
        let mut ws = [T::ZERO; 16];
        let ov = TensorViewMut::new([1, 1, 2, 2], &mut out[..]).unwrap();
        let r = conv::forward_into(xv, wv, None, &c.p, ov, &mut ws);
        assert!(
            r.is_err() || g.out_shape() == [1, 1, 2, 2],
            "{ctx}: forward_into"
        );
        if g.out_shape() != [1, 1, 2, 2] {
            let r = conv::backward(dv, xv, wv, &c.p);
            assert!(r.is_err(), "{ctx}: backward took a dout of the wrong shape");
        }
    });
}

/// A bias of the wrong length: every forward refuses it.
fn bias_fails<T: Pick>(ctx: &str, c: &Case, x: &Data, w: &Data, b: Option<&Data>) {
    let (xv, wv) = (view::<T>(&c.xs, x), view::<T>(&c.ws, w));
    let b = bias::<T>(b);
    let r = naive::forward(xv, wv, b, &c.p);
    assert!(
        r.is_err(),
        "{ctx}: naive::forward took a bias of the wrong length"
    );
    cmp::for_each_level(|level| {
        let r = conv::forward(xv, wv, b, &c.p);
        assert!(r.is_err(), "{ctx}: forward at {level} took a bad bias");
    });
}

/// A dout of the wrong shape: every backward refuses it.
fn bad_dout<T: Pick>(ctx: &str, c: &Case, x: &Data, w: &Data, ds: &[usize], d: &Data) {
    let (xv, wv, dv) = (view::<T>(&c.xs, x), view::<T>(&c.ws, w), view::<T>(ds, d));
    let r = naive::backward(dv, xv, wv, &c.p);
    assert!(r.is_err(), "{ctx}: naive::backward took dout {ds:?}");
    cmp::for_each_level(|level| {
        let r = conv::backward(dv, xv, wv, &c.p);
        assert!(r.is_err(), "{ctx}: backward at {level} took dout {ds:?}");
    });
}

/// The naive results of a valid problem in one element type.
pub struct Naive<T> {
    out: Tensor<T>,
    grads: Conv2dGrads<T>,
    terms: Classified,
}

/// Term classifications of every output of forward and backward.
struct Classified {
    out: Vec<Terms>,
    dx: Vec<Terms>,
    dw: Vec<Terms>,
    db: Vec<Terms>,
    /// Terms per output of forward, dx, dw and db.
    k: [usize; 4],
}

/// Classifies the terms of every sum of forward and backward by walking the definition
/// (independently of the naive kernel's loops).
fn classify<T: Float>(
    g: &Conv2dGeometry,
    x: &[T],
    w: &[T],
    b: Option<&[T]>,
    dout: &[T],
) -> Classified {
    let f64s = |v: &[T]| v.iter().map(|v| v.to_f64()).collect::<Vec<_>>();
    let (x, w, dout) = (f64s(x), f64s(w), f64s(dout));
    let mut t = Classified {
        out: vec![Terms::default(); dout.len()],
        dx: vec![Terms::default(); x.len()],
        dw: vec![Terms::default(); w.len()],
        db: vec![Terms::default(); g.f],
        k: [
            g.cg * g.kh * g.kw,
            g.fg * g.kh * g.kw,
            g.n * g.oh * g.ow,
            g.n * g.oh * g.ow,
        ],
    };
    let mut nf_terms = vec![0usize; x.len()];
    let p = &g.params;
    let coord = |o: usize, k: usize, a: usize, len: usize| -> Option<usize> {
        let pos = (o as u128 * p.stride[a] as u128 + k as u128 * p.dilation[a] as u128)
            .checked_sub(p.padding[a] as u128)?;
        (pos < len as u128).then_some(pos as usize)
    };
    for n in 0..g.n {
        for f in 0..g.f {
            let grp = f / g.fg;
            for i in 0..g.oh {
                for j in 0..g.ow {
                    let o = ((n * g.f + f) * g.oh + i) * g.ow + j;
                    if let Some(b) = b {
                        t.out[o].single(b[f].to_f64());
                    }
                    t.db[f].single(dout[o]);
                    for cc in 0..g.cg {
                        let c = grp * g.cg + cc;
                        for u in 0..g.kh {
                            for v in 0..g.kw {
                                let wi = ((f * g.cg + cc) * g.kh + u) * g.kw + v;
                                match (coord(i, u, 0, g.h), coord(j, v, 1, g.w)) {
                                    (Some(hi), Some(wj)) => {
                                        let xi = ((n * g.c + c) * g.h + hi) * g.w + wj;
                                        t.out[o].product(w[wi], x[xi]);
                                        t.dx[xi].product(dout[o], w[wi]);
                                        nf_terms[xi] += usize::from(!w[wi].is_finite());
                                        t.dw[wi].product(dout[o], x[xi]);
                                    }
                                    _ => {
                                        t.out[o].padded(w[wi]);
                                        t.dw[wi].padded(dout[o]);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    // dx: a fast path may compute dx as a full correlation of zero-padded (or zero-stuffed)
    // dout with the rotated kernel, adding w·0 for every tap that is not a real term. So a
    // dx element may be NaN if some non-finite weight of its channel (over the filters of
    // its group) is not among its real terms; each (filter, tap) is a real term of a given
    // dx element at most once, so counting decides it.
    let mut nf_w = vec![0usize; g.c];
    for (wi, &wv) in w.iter().enumerate() {
        if !wv.is_finite() {
            let (f, cc) = (wi / (g.cg * g.kh * g.kw), (wi / (g.kh * g.kw)) % g.cg);
            nf_w[(f / g.fg) * g.cg + cc] += 1;
        }
    }
    for (xi, d) in t.dx.iter_mut().enumerate() {
        if nf_terms[xi] < nf_w[(xi / (g.h * g.w)) % g.c] {
            d.maybe_nan = true;
        }
    }
    t
}

/// A valid, small problem in one element type: the naive kernels agree with the formula and
/// repeat bitwise; every fast entry point at every SIMD level agrees with them, repeats
/// bitwise (also on other thread counts and through `_into` with garbage-filled buffers).
fn valid<T: Pick>(
    ctx: &str,
    c: &Case,
    g: &Conv2dGeometry,
    x: &Data,
    w: &Data,
    b: Option<&Data>,
    dout: &Data,
) -> Naive<T> {
    let ctx = format!("{ctx} {:?}", T::DTYPE);
    let (xv, wv, dv) = (
        view::<T>(&c.xs, x),
        view::<T>(&c.ws, w),
        view::<T>(&g.out_shape(), dout),
    );
    let b = bias::<T>(b);
    let p = &c.p;
    let out = naive::forward(xv, wv, b, p).unwrap_or_else(|e| panic!("{ctx}: naive: {e}"));
    assert_eq!(out.shape().dims(), g.out_shape(), "{ctx}");
    let again = naive::forward(xv, wv, b, p).unwrap();
    assert_same_bits(&ctx, "naive forward", out.data(), again.data());
    let grads = naive::backward(dv, xv, wv, p).unwrap_or_else(|e| panic!("{ctx}: {e}"));
    assert_eq!(grads.dx.shape().dims(), g.x_shape(), "{ctx}");
    assert_eq!(grads.dw.shape().dims(), g.w_shape(), "{ctx}");
    assert_eq!(grads.db.len(), g.f, "{ctx}");
    let again = naive::backward(dv, xv, wv, p).unwrap();
    assert_same_bits(&ctx, "naive dx", grads.dx.data(), again.dx.data());
    assert_same_bits(&ctx, "naive dw", grads.dw.data(), again.dw.data());
    assert_same_bits(&ctx, "naive db", &grads.db, &again.db);
    let terms = classify(g, xv.data(), wv.data(), b, dv.data());

    let fwd_ws = conv::forward_workspace_len(g);
    let bwd_ws = conv::backward_workspace_len(g);
    cmp::for_each_level(|level| {
        let ctx = format!("{ctx} at {level}");
        let fast = conv::forward(xv, wv, b, p).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        assert_eq!(fast.shape().dims(), g.out_shape(), "{ctx}");
        assert_sums(
            &ctx,
            "forward",
            out.data(),
            fast.data(),
            &terms.out,
            terms.k[0],
        );
        for (i, r) in cmp::on_pools(|| conv::forward(xv, wv, b, p).unwrap())
            .iter()
            .enumerate()
        {
            assert_same_bits(&ctx, &format!("forward, pool {i}"), fast.data(), r.data());
        }
        let mut o = cmp::garbage::<T>(fast.data().len());
        let mut ws = cmp::garbage::<T>(fwd_ws);
        let ov = TensorViewMut::new(g.out_shape(), &mut o[..]).unwrap();
        conv::forward_into(xv, wv, b, p, ov, &mut ws).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        assert_same_bits(&ctx, "forward_into", fast.data(), &o);
        // One thread's workspace is the least accepted (fewer lanes, the same bits).
        let one = conv::forward_workspace_len_for_threads(g, 1);
        if one > 0 {
            let mut o1 = cmp::garbage::<T>(fast.data().len());
            let ov = TensorViewMut::new(g.out_shape(), &mut o1[..]).unwrap();
            conv::forward_into(xv, wv, b, p, ov, &mut ws[..one])
                .unwrap_or_else(|e| panic!("{ctx}: one lane: {e}"));
            assert_same_bits(&ctx, "forward_into, one lane", fast.data(), &o1);
            let ov = TensorViewMut::new(g.out_shape(), &mut o[..]).unwrap();
            let r = conv::forward_into(xv, wv, b, p, ov, &mut ws[..one - 1]);
            assert!(
                matches!(r, Err(Error::WorkspaceTooSmall { .. })),
                "{ctx}: short workspace: {r:?}"
            );
        }

        let fg = conv::backward(dv, xv, wv, p).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        assert_eq!(fg.dx.shape().dims(), g.x_shape(), "{ctx}");
        assert_eq!(fg.dw.shape().dims(), g.w_shape(), "{ctx}");
        let [_, kdx, kdw, kdb] = terms.k;
        assert_sums(&ctx, "dx", grads.dx.data(), fg.dx.data(), &terms.dx, kdx);
        assert_sums(&ctx, "dw", grads.dw.data(), fg.dw.data(), &terms.dw, kdw);
        assert_sums(&ctx, "db", &grads.db, &fg.db, &terms.db, kdb);
        for (i, r) in cmp::on_pools(|| conv::backward(dv, xv, wv, p).unwrap())
            .iter()
            .enumerate()
        {
            assert_same_bits(&ctx, &format!("dx, pool {i}"), fg.dx.data(), r.dx.data());
            assert_same_bits(&ctx, &format!("dw, pool {i}"), fg.dw.data(), r.dw.data());
            assert_same_bits(&ctx, &format!("db, pool {i}"), &fg.db, &r.db);
        }
        let mut dx = cmp::garbage::<T>(fg.dx.data().len());
        let mut dw = cmp::garbage::<T>(fg.dw.data().len());
        let mut db = cmp::garbage::<T>(g.f);
        let mut ws = cmp::garbage::<T>(bwd_ws);
        let dxv = TensorViewMut::new(g.x_shape(), &mut dx[..]).unwrap();
        let dwv = TensorViewMut::new(g.w_shape(), &mut dw[..]).unwrap();
        conv::backward_into(dv, xv, wv, p, dxv, dwv, &mut db, &mut ws)
            .unwrap_or_else(|e| panic!("{ctx}: backward_into: {e}"));
        assert_same_bits(&ctx, "backward_into dx", fg.dx.data(), &dx);
        assert_same_bits(&ctx, "backward_into dw", fg.dw.data(), &dw);
        assert_same_bits(&ctx, "backward_into db", &fg.db, &db);
        let one = conv::backward_workspace_len_for_threads(g, 1);
        if one > 0 {
            let dxv = TensorViewMut::new(g.x_shape(), &mut dx[..]).unwrap();
            let dwv = TensorViewMut::new(g.w_shape(), &mut dw[..]).unwrap();
            let r = conv::backward_into(dv, xv, wv, p, dxv, dwv, &mut db, &mut ws[..one - 1]);
            assert!(
                matches!(r, Err(Error::WorkspaceTooSmall { .. })),
                "{ctx}: short backward workspace: {r:?}"
            );
        }
        // Forward then backward on the fast path's own output as upstream gradient.
        conv::backward(fast.view(), xv, wv, p).unwrap_or_else(|e| panic!("{ctx}: chain: {e}"));
    });
    Naive { out, grads, terms }
}

/// The naive f64 result rounded to f32 against the naive f32 result (inputs exactly
/// representable in f32), by the same sum rule — a check of the naive kernels and of the
/// rule itself that needs no fast path.
fn cross_dtype(ctx: &str, g: &Conv2dGeometry, r32: &Naive<f32>, r64: &Naive<f64>) {
    let ctx = format!("{ctx} f64 vs f32");
    let round = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<_>>();
    let t = &r32.terms;
    let _ = g;
    assert_sums(
        &ctx,
        "forward",
        &round(r64.out.data()),
        r32.out.data(),
        &t.out,
        t.k[0],
    );
    assert_sums(
        &ctx,
        "dx",
        &round(r64.grads.dx.data()),
        r32.grads.dx.data(),
        &t.dx,
        t.k[1],
    );
    assert_sums(
        &ctx,
        "dw",
        &round(r64.grads.dw.data()),
        r32.grads.dw.data(),
        &t.dw,
        t.k[2],
    );
    assert_sums(
        &ctx,
        "db",
        &round(&r64.grads.db),
        &r32.grads.db,
        &t.db,
        t.k[3],
    );
}
