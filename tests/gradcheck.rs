//! Gradient checks: every naive backward against central-difference numerical gradients of
//! the loss `sum(out · dout)` (random `dout`) in f64, on small random shapes, the CS231n way:
//! `rel_error = max |a − n| / max(1e-8, |a| + |n|)` elementwise, below 1e-6.

#[path = "support/rng.rs"]
mod rng;

use cnn_kernels::conv::{naive as conv, Conv2dParams};
use cnn_kernels::norm::{
    naive as norm, BatchNormCache, BatchNormMode, BatchNormParams, GroupNormParams, NormGrads,
};
use cnn_kernels::pool::{naive as pool, MaxPool2dParams};
use cnn_kernels::{Tensor, TensorView};
use rng::Rng;

const H: f64 = 1e-5;
const TOL: f64 = 1e-6;

fn view<'a>(shape: &[usize], data: &'a [f64]) -> TensorView<'a, f64> {
    TensorView::new(cnn_kernels::Shape::new(shape).unwrap(), data).unwrap()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// Central-difference gradient of `loss` at `x`.
fn numeric_grad(x: &[f64], loss: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            let orig = xp[i];
            xp[i] = orig + H;
            let plus = loss(&xp);
            xp[i] = orig - H;
            let minus = loss(&xp);
            xp[i] = orig;
            (plus - minus) / (2.0 * H)
        })
        .collect()
}

fn rel_error(a: &[f64], n: &[f64]) -> f64 {
    assert_eq!(a.len(), n.len());
    a.iter()
        .zip(n)
        .map(|(a, n)| (a - n).abs() / (a.abs() + n.abs()).max(1e-8))
        .fold(0.0, f64::max)
}

fn check(what: &str, analytic: &[f64], numeric: &[f64]) {
    let e = rel_error(analytic, numeric);
    println!("{what}: relative error {e:.3e}");
    assert!(e < TOL, "{what}: relative error {e:.3e} >= {TOL:e}");
    // A check on an all-zero gradient would prove little.
    assert!(
        analytic.iter().any(|v| v.abs() > 1e-3),
        "{what}: gradient is ~0"
    );
}

/// A size along one axis with room for the (dilated) kernel: `lo..=lo+4` where `lo` is the
/// smallest size the kernel fits in.
fn fitting_len(rng: &mut Rng, kernel: usize, dilation: usize, pad: usize) -> usize {
    let effective = dilation * (kernel - 1) + 1;
    let lo = effective.saturating_sub(2 * pad).max(1);
    rng.int(lo, lo + 4)
}

/// `(c, f, kernel [h, w], params)` for each conv configuration checked.
fn conv_configs() -> Vec<(usize, usize, [usize; 2], Conv2dParams)> {
    let p = Conv2dParams::default;
    vec![
        (3, 2, [3, 3], p().padding([1, 1])),
        (2, 3, [3, 3], p().stride([2, 2]).padding([1, 1])),
        (
            3,
            4,
            [3, 2],
            p().stride([2, 1]).padding([1, 0]).dilation([1, 2]),
        ),
        (2, 2, [3, 3], p().dilation([2, 2]).padding([2, 1])),
        (4, 6, [2, 3], p().stride([1, 2]).padding([0, 1]).groups(2)),
        (3, 3, [3, 3], p().padding([1, 1]).groups(3)),
        (
            6,
            6,
            [2, 2],
            p().stride([2, 3])
                .padding([1, 2])
                .dilation([2, 1])
                .groups(3),
        ),
        (4, 3, [1, 1], p().stride([2, 2])),
    ]
}

#[test]
fn conv_backward_matches_numerical_gradients() {
    let mut rng = Rng::new(1);
    for (ci, (c, f, [kh, kw], p)) in conv_configs().into_iter().enumerate() {
        for rep in 0..2 {
            let n = rng.int(1, 2);
            let h = fitting_len(&mut rng, kh, p.dilation[0], p.padding[0]);
            let wd = fitting_len(&mut rng, kw, p.dilation[1], p.padding[1]);
            let (xs, ws) = ([n, c, h, wd], [f, c / p.groups, kh, kw]);
            let x = rng.vec(xs.iter().product(), -1.0, 1.0);
            let w = rng.vec(ws.iter().product(), -1.0, 1.0);
            let b = rng.vec(f, -1.0, 1.0);
            let out = conv::forward(view(&xs, &x), view(&ws, &w), Some(&b), &p).unwrap();
            let dout = rng.vec(out.data().len(), -1.0, 1.0);
            let os = out.shape();
            let g =
                conv::backward(view(os.dims(), &dout), view(&xs, &x), view(&ws, &w), &p).unwrap();
            let loss = |x: &[f64], w: &[f64], b: &[f64]| {
                let o = conv::forward(view(&xs, x), view(&ws, w), Some(b), &p).unwrap();
                dot(o.data(), &dout)
            };
            let tag = format!("conv config {ci} rep {rep} x {xs:?} w {ws:?} {p:?}");
            let nx = numeric_grad(&x, |x| loss(x, &w, &b));
            check(&format!("{tag}: dx"), g.dx.data(), &nx);
            let nw = numeric_grad(&w, |w| loss(&x, w, &b));
            check(&format!("{tag}: dw"), g.dw.data(), &nw);
            let nb = numeric_grad(&b, |b| loss(&x, &w, b));
            check(&format!("{tag}: db"), &g.db, &nb);
        }
    }
}

#[test]
fn max_pool_backward_matches_numerical_gradients() {
    let mut rng = Rng::new(2);
    let configs = [
        MaxPool2dParams::new([2, 2]),
        MaxPool2dParams::new([3, 3]).stride([1, 1]),
        MaxPool2dParams::new([3, 3]).stride([2, 2]).padding([1, 1]),
        MaxPool2dParams::new([2, 3]).stride([1, 2]).padding([1, 1]),
        MaxPool2dParams::new([3, 2]).stride([2, 1]).padding([1, 0]),
        MaxPool2dParams::new([4, 4]).stride([3, 2]).padding([2, 1]),
    ];
    for (ci, p) in configs.into_iter().enumerate() {
        for rep in 0..2 {
            let n = rng.int(1, 2);
            let c = rng.int(1, 3);
            let h = fitting_len(&mut rng, p.kernel[0], 1, p.padding[0]);
            let w = fitting_len(&mut rng, p.kernel[1], 1, p.padding[1]);
            let xs = [n, c, h, w];
            // Distinct values 0.05 apart: no window has a near-tie within ±H.
            let x = rng.distinct(xs.iter().product(), 0.05);
            let out = pool::forward(view(&xs, &x), &p).unwrap();
            let dout = rng.vec(out.data().len(), -1.0, 1.0);
            let dx = pool::backward(view(out.shape().dims(), &dout), view(&xs, &x), &p).unwrap();
            let nx = numeric_grad(&x, |x| {
                dot(pool::forward(view(&xs, x), &p).unwrap().data(), &dout)
            });
            check(
                &format!("pool config {ci} rep {rep} x {xs:?} {p:?}: dx"),
                dx.data(),
                &nx,
            );
        }
    }
}

type BnForward = fn(
    TensorView<'_, f64>,
    &[f64],
    &[f64],
    &mut [f64],
    &mut [f64],
    &BatchNormParams,
) -> cnn_kernels::Result<(Tensor<f64>, BatchNormCache<f64>)>;
type BnBackward = fn(
    TensorView<'_, f64>,
    TensorView<'_, f64>,
    &[f64],
    &BatchNormCache<f64>,
) -> cnn_kernels::Result<NormGrads<f64>>;

/// Gradient check of a batch-norm forward/backward pair on `x` of shape `xs`.
fn check_batch_norm(
    rng: &mut Rng,
    xs: &[usize],
    channels: usize,
    p: &BatchNormParams,
    (fwd, bwd): (BnForward, BnBackward),
) {
    let len = xs.iter().product();
    // Random scale and shift per call, so features differ in mean and variance.
    let x: Vec<f64> = rng
        .vec(len, -1.0, 1.0)
        .iter()
        .map(|v| 2.0 * v + 0.5)
        .collect();
    let gamma = rng.vec(channels, 0.5, 1.5);
    let beta = rng.vec(channels, -1.0, 1.0);
    let rm0 = rng.vec(channels, -0.5, 0.5);
    let rv0 = rng.vec(channels, 0.5, 2.0);
    let forward = |x: &[f64], gamma: &[f64], beta: &[f64]| -> (Tensor<f64>, _) {
        let (mut rm, mut rv) = (rm0.clone(), rv0.clone());
        fwd(view(xs, x), gamma, beta, &mut rm, &mut rv, p).unwrap()
    };
    let (out, cache) = forward(&x, &gamma, &beta);
    let dout = rng.vec(len, -1.0, 1.0);
    let g = bwd(view(xs, &dout), view(xs, &x), &gamma, &cache).unwrap();
    let loss = |x: &[f64], gm: &[f64], bt: &[f64]| dot(forward(x, gm, bt).0.data(), &dout);
    let tag = format!("batch norm x {xs:?} {p:?}");
    assert_eq!(out.data().len(), len);
    check(
        &format!("{tag}: dx"),
        g.dx.data(),
        &numeric_grad(&x, |x| loss(x, &gamma, &beta)),
    );
    check(
        &format!("{tag}: dgamma"),
        &g.dgamma,
        &numeric_grad(&gamma, |gm| loss(&x, gm, &beta)),
    );
    check(
        &format!("{tag}: dbeta"),
        &g.dbeta,
        &numeric_grad(&beta, |bt| loss(&x, &gamma, bt)),
    );
}

#[test]
fn batch_norm_backward_matches_numerical_gradients() {
    let mut rng = Rng::new(3);
    for mode in [BatchNormMode::Train, BatchNormMode::Test] {
        for eps in [1e-5, 1e-2] {
            let p = BatchNormParams::default().mode(mode).eps(eps);
            let (n, d) = (rng.int(3, 8), rng.int(1, 5));
            let pair: (BnForward, BnBackward) =
                (norm::batch_norm_forward, norm::batch_norm_backward);
            check_batch_norm(&mut rng, &[n, d], d, &p, pair);
        }
    }
}

#[test]
fn spatial_batch_norm_backward_matches_numerical_gradients() {
    let mut rng = Rng::new(4);
    for mode in [BatchNormMode::Train, BatchNormMode::Test] {
        for eps in [1e-5, 1e-2] {
            let p = BatchNormParams::default().mode(mode).eps(eps).momentum(0.5);
            // At least 4 values per channel: with 2, x̂ = ±1 whatever x is and dx ≈ 0.
            let xs = [rng.int(1, 3), rng.int(1, 4), rng.int(2, 4), rng.int(2, 4)];
            let pair: (BnForward, BnBackward) = (
                norm::spatial_batch_norm_forward,
                norm::spatial_batch_norm_backward,
            );
            check_batch_norm(&mut rng, &xs, xs[1], &p, pair);
        }
    }
}

#[test]
fn group_norm_backward_matches_numerical_gradients() {
    let mut rng = Rng::new(5);
    for (groups, eps) in [(1, 1e-5), (2, 1e-5), (3, 1e-3), (6, 1e-5), (6, 1e-2)] {
        let p = GroupNormParams::new(groups).eps(eps);
        let xs = [rng.int(1, 2), 6, rng.int(2, 3), rng.int(2, 4)];
        let len = xs.iter().product();
        let x: Vec<f64> = rng
            .vec(len, -1.0, 1.0)
            .iter()
            .map(|v| 2.0 * v + 0.3)
            .collect();
        let gamma = rng.vec(6, 0.5, 1.5);
        let beta = rng.vec(6, -1.0, 1.0);
        let (_, cache) = norm::group_norm_forward(view(&xs, &x), &gamma, &beta, &p).unwrap();
        let dout = rng.vec(len, -1.0, 1.0);
        let g = norm::group_norm_backward(view(&xs, &dout), view(&xs, &x), &gamma, &cache).unwrap();
        let loss = |x: &[f64], gm: &[f64], bt: &[f64]| {
            let (o, _) = norm::group_norm_forward(view(&xs, x), gm, bt, &p).unwrap();
            dot(o.data(), &dout)
        };
        let tag = format!("group norm x {xs:?} {p:?}");
        check(
            &format!("{tag}: dx"),
            g.dx.data(),
            &numeric_grad(&x, |x| loss(x, &gamma, &beta)),
        );
        check(
            &format!("{tag}: dgamma"),
            &g.dgamma,
            &numeric_grad(&gamma, |gm| loss(&x, gm, &beta)),
        );
        check(
            &format!("{tag}: dbeta"),
            &g.dbeta,
            &numeric_grad(&beta, |bt| loss(&x, &gamma, bt)),
        );
    }
}
