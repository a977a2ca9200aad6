//! Every public naive function returns `Err` (never panics) on bad shapes and parameters,
//! with a message that names the offending values. The geometry types are checked directly
//! with shapes whose element count overflows `usize` (no tensor that large can exist).

use cnn_kernels::conv::{naive as conv, Conv2dGeometry, Conv2dParams};
use cnn_kernels::norm::{
    naive as norm, BatchNormCache, BatchNormGeometry, BatchNormMode, BatchNormParams,
    GroupNormCache, GroupNormGeometry, GroupNormParams,
};
use cnn_kernels::pool::{naive as pool, MaxPool2dGeometry, MaxPool2dParams};
use cnn_kernels::{Error, Shape, TensorView};

/// The error's message; fails the test if `r` is `Ok` or the message lacks a needle.
#[track_caller]
fn err<T>(r: cnn_kernels::Result<T>, needles: &[&str]) -> Error {
    let Err(e) = r else {
        panic!("expected an error containing {needles:?}, got Ok");
    };
    let msg = e.to_string();
    for n in needles {
        assert!(msg.contains(n), "error {msg:?} does not contain {n:?}");
    }
    e
}

fn v<'a>(shape: &[usize], data: &'a [f64]) -> TensorView<'a, f64> {
    TensorView::new(Shape::new(shape).unwrap(), data).unwrap()
}

fn zeros(shape: &[usize]) -> Vec<f64> {
    vec![0.5; shape.iter().product()]
}

// ---------------------------------------------------------------------------------------
// conv

/// Runs conv forward (with bias) and backward (with a `dout` of the given shape) and
/// checks that both fail with the needles.
#[track_caller]
fn conv_both_fail(xs: &[usize], ws: &[usize], p: &Conv2dParams, needles: &[&str]) {
    let (x, w) = (zeros(xs), zeros(ws));
    let b = vec![0.0; ws[0]];
    err(conv::forward(v(xs, &x), v(ws, &w), Some(&b), p), needles);
    let dout = [0.0; 4];
    err(
        conv::backward(v(&[1, 1, 2, 2], &dout), v(xs, &x), v(ws, &w), p),
        needles,
    );
    // The same in f32.
    let (x32, w32) = (vec![0.5f32; x.len()], vec![0.5f32; w.len()]);
    let xv = TensorView::new(Shape::new(xs).unwrap(), &x32).unwrap();
    let wv = TensorView::new(Shape::new(ws).unwrap(), &w32).unwrap();
    err(conv::forward(xv, wv, None, p), needles);
}

#[test]
fn conv_rejects_zero_stride_and_dilation() {
    let p = Conv2dParams::default;
    let (xs, ws) = ([1, 2, 5, 5], [3, 2, 3, 3]);
    conv_both_fail(&xs, &ws, &p().stride([0, 1]), &["stride height", "got 0"]);
    conv_both_fail(&xs, &ws, &p().stride([1, 0]), &["stride width", "got 0"]);
    conv_both_fail(
        &xs,
        &ws,
        &p().dilation([0, 1]),
        &["dilation height", "got 0"],
    );
    conv_both_fail(
        &xs,
        &ws,
        &p().dilation([1, 0]),
        &["dilation width", "got 0"],
    );
}

#[test]
fn conv_rejects_a_kernel_larger_than_the_padded_input() {
    let p = Conv2dParams::default;
    conv_both_fail(
        &[1, 1, 4, 6],
        &[1, 1, 5, 3],
        &p(),
        &["kernel height 5 exceeds padded input height 4"],
    );
    conv_both_fail(
        &[1, 1, 4, 3],
        &[1, 1, 3, 3],
        &p().padding([1, 0]).dilation([1, 2]),
        &["kernel width 3 (dilated 5) exceeds padded input width 3"],
    );
}

#[test]
fn conv_rejects_channel_and_group_mismatches() {
    let p = Conv2dParams::default;
    conv_both_fail(
        &[1, 3, 4, 4],
        &[2, 2, 3, 3],
        &p(),
        &["w has 2 input channels, x has 3"],
    );
    conv_both_fail(
        &[1, 3, 4, 4],
        &[2, 1, 3, 3],
        &p().groups(2),
        &["3 input channels are not divisible into 2 groups"],
    );
    conv_both_fail(
        &[1, 4, 4, 4],
        &[3, 2, 3, 3],
        &p().groups(2),
        &["3 filters are not divisible into 2 groups"],
    );
    conv_both_fail(
        &[1, 4, 4, 4],
        &[2, 4, 3, 3],
        &p().groups(0),
        &["groups must be at least 1, got 0"],
    );
}

#[test]
fn conv_rejects_bad_shapes() {
    let p = Conv2dParams::default();
    // Empty dimensions.
    conv_both_fail(
        &[0, 2, 4, 4],
        &[1, 2, 3, 3],
        &p,
        &["x shape [0, 2, 4, 4]", "empty"],
    );
    conv_both_fail(
        &[1, 2, 4, 4],
        &[1, 2, 0, 3],
        &p,
        &["w shape [1, 2, 0, 3]", "empty"],
    );
    // Not 4-d.
    let x = zeros(&[2, 4, 4]);
    let w = zeros(&[1, 2, 3, 3]);
    err(
        conv::forward(v(&[2, 4, 4], &x), v(&[1, 2, 3, 3], &w), None, &p),
        &["x must be 4-d", "[2, 4, 4]"],
    );
    // Bias of the wrong length.
    let x = zeros(&[1, 2, 4, 4]);
    err(
        conv::forward(
            v(&[1, 2, 4, 4], &x),
            v(&[1, 2, 3, 3], &w),
            Some(&[0.0; 3]),
            &p,
        ),
        &["bias has 3 values for 1 filters"],
    );
    // Upstream gradient of the wrong shape (the output is [1, 1, 2, 2]).
    let dout = zeros(&[1, 1, 2, 3]);
    err(
        conv::backward(
            v(&[1, 1, 2, 3], &dout),
            v(&[1, 2, 4, 4], &x),
            v(&[1, 2, 3, 3], &w),
            &p,
        ),
        &["dout has shape [1, 1, 2, 3]", "[1, 1, 2, 2]"],
    );
}

#[test]
fn conv_geometry_rejects_overflowing_sizes() {
    let p = Conv2dParams::default();
    let s = |d: [usize; 4]| Shape::from(d);
    let m = usize::MAX;
    let e = err(
        Conv2dGeometry::new(s([m, 2, 4, 4]), s([3, 2, 1, 1]), &p),
        &["overflows"],
    );
    assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
    // The output is tiny, the input is not.
    let big = 1 << 40;
    let e = err(
        Conv2dGeometry::new(
            s([1, 1, big, big]),
            s([1, 1, 1, 1]),
            &Conv2dParams::default().stride([big, big]),
        ),
        &["overflows"],
    );
    assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
    // A weight tensor that cannot exist.
    let e = err(
        Conv2dGeometry::new(s([1, big, 1, 1]), s([big, big, 1, 1]), &p),
        &["overflows"],
    );
    assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
    // Padding and dilation arithmetic.
    err(
        Conv2dGeometry::new(s([1, 1, 4, 4]), s([1, 1, 3, 3]), &p.padding([m, 0])),
        &["padding", "overflows"],
    );
    err(
        Conv2dGeometry::new(s([1, 1, 4, 4]), s([1, 1, 3, 3]), &p.dilation([m, 1])),
        &["dilation", "overflows"],
    );
    // A view of a shape whose size overflows cannot be made either.
    let e = err(
        TensorView::<f32>::new([m, 2, 1, 1], &[]),
        &["more elements than usize can count"],
    );
    assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
}

// ---------------------------------------------------------------------------------------
// max pool

#[track_caller]
fn pool_both_fail(xs: &[usize], p: &MaxPool2dParams, needles: &[&str]) {
    let x = zeros(xs);
    err(pool::forward(v(xs, &x), p), needles);
    let dout = [0.0; 1];
    err(
        pool::backward(v(&[1, 1, 1, 1], &dout), v(xs, &x), p),
        needles,
    );
}

#[test]
fn pool_rejects_bad_parameters() {
    let xs = [1, 2, 5, 5];
    let p = MaxPool2dParams::new;
    pool_both_fail(&xs, &p([2, 2]).stride([0, 2]), &["stride height", "got 0"]);
    pool_both_fail(&xs, &p([2, 2]).stride([2, 0]), &["stride width", "got 0"]);
    pool_both_fail(
        &xs,
        &p([0, 2]),
        &["kernel height must be at least 1, got 0"],
    );
    pool_both_fail(
        &xs,
        &p([3, 3]).padding([2, 1]),
        &["padding height 2 exceeds half the kernel height 3"],
    );
    pool_both_fail(
        &xs,
        &p([3, 2]).padding([1, 2]),
        &["padding width 2 exceeds half the kernel width 2"],
    );
    pool_both_fail(
        &[1, 1, 2, 5],
        &p([3, 3]).stride([1, 1]),
        &["kernel height 3 exceeds padded input height 2"],
    );
    pool_both_fail(
        &[1, 1, 5, 3],
        &p([2, 6]).padding([0, 1]),
        &["kernel width 6 exceeds padded input width 5"],
    );
}

#[test]
fn pool_rejects_bad_shapes() {
    let p = MaxPool2dParams::new([2, 2]);
    pool_both_fail(&[1, 0, 4, 4], &p, &["x shape [1, 0, 4, 4]", "empty"]);
    let x = zeros(&[4, 4]);
    err(
        pool::forward(v(&[4, 4], &x), &p),
        &["x must be 4-d", "[4, 4]"],
    );
    let x = zeros(&[1, 1, 4, 4]);
    let dout = zeros(&[1, 1, 2, 1]);
    err(
        pool::backward(v(&[1, 1, 2, 1], &dout), v(&[1, 1, 4, 4], &x), &p),
        &["dout has shape [1, 1, 2, 1]", "[1, 1, 2, 2]"],
    );
}

#[test]
fn pool_geometry_rejects_overflowing_sizes() {
    let m = usize::MAX;
    let p = MaxPool2dParams::new([1, 1]);
    let e = err(
        MaxPool2dGeometry::new(Shape::from([m, 3, 2, 2]), &p),
        &["overflows"],
    );
    assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
    let big = 1 << 40;
    let e = err(
        MaxPool2dGeometry::new(Shape::from([1, 1, big, big]), &p.stride([big, big])),
        &["overflows"],
    );
    assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
    err(
        MaxPool2dGeometry::new(Shape::from([1, 1, 4, 4]), &p.padding([m, 0])),
        &["padding height"],
    );
    // A window of 2^66 elements fits a 1×1 input padded by 2^32 on each side: its offsets
    // (row · kw + column) would overflow, so it is refused (the fuzzer found the panic).
    let huge = MaxPool2dParams::new([1 << 33, 1 << 33])
        .stride([1, 1])
        .padding([1 << 32, 1 << 32]);
    let e = err(
        MaxPool2dGeometry::new(Shape::from([1, 1, 1, 1]), &huge),
        &["kernel", "overflows"],
    );
    assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
    let x = [1.0f64];
    let dout = [1.0f64; 4];
    err(
        pool::backward(v(&[1, 1, 2, 2], &dout), v(&[1, 1, 1, 1], &x), &huge),
        &["kernel", "overflows"],
    );
}

// ---------------------------------------------------------------------------------------
// batch norm (vanilla and spatial)

type BnForward = fn(
    TensorView<'_, f64>,
    &[f64],
    &[f64],
    &mut [f64],
    &mut [f64],
    &BatchNormParams,
) -> cnn_kernels::Result<(cnn_kernels::Tensor<f64>, BatchNormCache<f64>)>;

/// `(forward, x shape, channel count)` for vanilla and spatial batch norm.
fn bn_variants() -> [(BnForward, Vec<usize>, usize); 2] {
    [
        (norm::batch_norm_forward, vec![4, 3], 3),
        (norm::spatial_batch_norm_forward, vec![2, 3, 2, 2], 3),
    ]
}

#[test]
fn batch_norm_rejects_vectors_of_the_wrong_length() {
    let p = BatchNormParams::default();
    for (fwd, xs, c) in bn_variants() {
        let x = zeros(&xs);
        let ok = vec![1.0; c];
        let bad = vec![1.0; c + 1];
        let (mut rm, mut rv) = (ok.clone(), ok.clone());
        err(
            fwd(v(&xs, &x), &bad, &ok, &mut rm, &mut rv, &p),
            &["gamma has 4 values for 3 channels"],
        );
        err(
            fwd(v(&xs, &x), &ok, &bad[..1], &mut rm, &mut rv, &p),
            &["beta has 1 values for 3"],
        );
        let mut bad_rm = bad.clone();
        err(
            fwd(v(&xs, &x), &ok, &ok, &mut bad_rm, &mut rv, &p),
            &["running_mean has 4 values for 3 channels"],
        );
        let mut bad_rv = vec![];
        err(
            fwd(v(&xs, &x), &ok, &ok, &mut rm, &mut bad_rv, &p),
            &["running_var has 0 values for 3 channels"],
        );
        // Rejected calls leave the running statistics alone.
        assert_eq!(
            (rm.as_slice(), rv.as_slice()),
            (ok.as_slice(), ok.as_slice())
        );
    }
}

#[test]
fn batch_norm_rejects_bad_eps_and_momentum() {
    for (fwd, xs, c) in bn_variants() {
        let x = zeros(&xs);
        let ok = vec![1.0; c];
        let (mut rm, mut rv) = (ok.clone(), ok.clone());
        let mut run = |p: BatchNormParams| fwd(v(&xs, &x), &ok, &ok, &mut rm, &mut rv, &p);
        let p = BatchNormParams::default();
        err(run(p.eps(-1e-5)), &["eps", "-0.00001"]);
        err(run(p.eps(f64::NAN)), &["eps", "NaN"]);
        err(run(p.eps(f64::INFINITY)), &["eps", "inf"]);
        err(run(p.momentum(1.5)), &["momentum", "1.5"]);
        err(
            run(p.momentum(f64::NAN).mode(BatchNormMode::Test)),
            &["momentum", "NaN"],
        );
    }
}

#[test]
fn batch_norm_rejects_bad_shapes() {
    let p = BatchNormParams::default();
    let ok = [1.0; 3];
    let (mut rm, mut rv) = (ok, ok);
    // Wrong rank for each variant.
    let x = zeros(&[2, 3, 1, 1]);
    err(
        norm::batch_norm_forward(v(&[2, 3, 1, 1], &x), &ok, &ok, &mut rm, &mut rv, &p),
        &["x must be 2-d", "[2, 3, 1, 1]"],
    );
    err(
        norm::spatial_batch_norm_forward(v(&[2, 3], &x[..6]), &ok, &ok, &mut rm, &mut rv, &p),
        &["x must be 4-d", "[2, 3]"],
    );
    // Empty.
    err(
        norm::batch_norm_forward(v(&[0, 3], &[]), &ok, &ok, &mut rm, &mut rv, &p),
        &["x shape [0, 3]", "empty"],
    );
    err(
        norm::spatial_batch_norm_forward(v(&[1, 3, 0, 2], &[]), &ok, &ok, &mut rm, &mut rv, &p),
        &["x shape [1, 3, 0, 2]", "empty"],
    );
}

#[test]
fn batch_norm_backward_rejects_mismatches() {
    let p = BatchNormParams::default();
    let ok = [1.0; 3];
    for spatial in [false, true] {
        let xs: &[usize] = if spatial { &[2, 3, 2, 2] } else { &[4, 3] };
        let bwd = if spatial {
            norm::spatial_batch_norm_backward::<f64>
        } else {
            norm::batch_norm_backward::<f64>
        };
        let x = zeros(xs);
        let (mut rm, mut rv) = (ok, ok);
        let (_, cache) = if spatial {
            norm::spatial_batch_norm_forward(v(xs, &x), &ok, &ok, &mut rm, &mut rv, &p)
        } else {
            norm::batch_norm_forward(v(xs, &x), &ok, &ok, &mut rm, &mut rv, &p)
        }
        .unwrap();
        // dout of another shape.
        let bad_shape: &[usize] = if spatial { &[2, 3, 4, 1] } else { &[3, 4] };
        err(
            bwd(v(bad_shape, &x), v(xs, &x), &ok, &cache),
            &["dout has shape", &format!("{bad_shape:?}")],
        );
        // gamma of the wrong length.
        err(
            bwd(v(xs, &x), v(xs, &x), &[1.0; 2], &cache),
            &["gamma has 2 values for 3"],
        );
        // A cache from another problem.
        let mut short = cache.clone();
        short.inv_std.pop();
        err(
            bwd(v(xs, &x), v(xs, &x), &ok, &short),
            &["cache inv_std has 2 values for 3"],
        );
        let mut short = cache.clone();
        short.mean.push(0.0);
        err(
            bwd(v(xs, &x), v(xs, &x), &ok, &short),
            &["cache mean has 4 values for 3"],
        );
    }
}

#[test]
fn batch_norm_geometry_rejects_overflowing_sizes() {
    let m = usize::MAX;
    let p = BatchNormParams::default();
    let lens = |c| {
        [
            ("gamma", c),
            ("beta", c),
            ("running_mean", c),
            ("running_var", c),
        ]
    };
    let e = err(
        BatchNormGeometry::new("batch_norm", Shape::from([m, 2]), false, lens(2), &p),
        &["overflows"],
    );
    assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
    for x in [[1, 1, m, 2], [m, 2, 2, 1]] {
        let e = err(
            BatchNormGeometry::new("spatial_batch_norm", Shape::from(x), true, lens(x[1]), &p),
            &["overflows"],
        );
        assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
    }
}

// ---------------------------------------------------------------------------------------
// group norm

#[test]
fn group_norm_rejects_bad_parameters() {
    let xs = [2, 6, 2, 2];
    let x = zeros(&xs);
    let ok = [1.0; 6];
    let run = |p: GroupNormParams, gamma: &[f64], beta: &[f64]| {
        norm::group_norm_forward(v(&xs, &x), gamma, beta, &p)
    };
    let p = GroupNormParams::new;
    err(run(p(0), &ok, &ok), &["groups must be at least 1, got 0"]);
    err(
        run(p(4), &ok, &ok),
        &["6 channels are not divisible into 4 groups"],
    );
    err(
        run(p(12), &ok, &ok),
        &["6 channels are not divisible into 12 groups"],
    );
    err(
        run(p(3), &ok[..5], &ok),
        &["gamma has 5 values for 6 channels"],
    );
    err(
        run(p(3), &ok, &[1.0; 7]),
        &["beta has 7 values for 6 channels"],
    );
    err(run(p(3).eps(-1.0), &ok, &ok), &["eps", "-1"]);
    err(run(p(3).eps(f64::NAN), &ok, &ok), &["eps", "NaN"]);
}

#[test]
fn group_norm_rejects_bad_shapes() {
    let p = GroupNormParams::new(2);
    let ok = [1.0; 6];
    let x = zeros(&[6, 4]);
    err(
        norm::group_norm_forward(v(&[6, 4], &x), &ok, &ok, &p),
        &["x must be 4-d", "[6, 4]"],
    );
    err(
        norm::group_norm_forward(v(&[1, 6, 2, 0], &[]), &ok, &ok, &p),
        &["x shape [1, 6, 2, 0]", "empty"],
    );
}

#[test]
fn group_norm_backward_rejects_mismatches() {
    let xs = [2, 6, 2, 2];
    let x = zeros(&xs);
    let ok = [1.0; 6];
    let (_, cache) =
        norm::group_norm_forward(v(&xs, &x), &ok, &ok, &GroupNormParams::new(3)).unwrap();
    let bwd = |dout_shape: &[usize], gamma: &[f64], cache: &GroupNormCache<f64>| {
        norm::group_norm_backward(v(dout_shape, &x), v(&xs, &x), gamma, cache)
    };
    err(
        bwd(&[2, 6, 4, 1], &ok, &cache),
        &["dout has shape [2, 6, 4, 1]", "[2, 6, 2, 2]"],
    );
    err(
        bwd(&xs, &ok[..4], &cache),
        &["gamma has 4 values for 6 channels"],
    );
    let mut other = cache.clone();
    other.groups = 2;
    // The backward takes the group count from the cache, so a cache for another count
    // fails on its statistics count.
    err(
        bwd(&xs, &ok, &other),
        &["cache mean has 6 values for 4 (image, group) pairs"],
    );
    other.groups = 4;
    err(
        bwd(&xs, &ok, &other),
        &["6 channels are not divisible into 4 groups"],
    );
    let mut short = cache.clone();
    short.mean.pop();
    err(bwd(&xs, &ok, &short), &["cache mean has 5 values for 6"]);
}

#[test]
fn group_norm_geometry_rejects_overflowing_sizes() {
    let m = usize::MAX;
    for x in [[1, 2, m, 2], [m, 2, 2, 1]] {
        let e = err(
            GroupNormGeometry::new("group_norm", Shape::from(x), 1, 2, 2),
            &["overflows"],
        );
        assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
    }
}
