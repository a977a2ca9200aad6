//! Tiny calls of every fast entry point (each conv path — im2col+GEMM, pointwise,
//! depthwise —, max pool with and without indices, batch norm vanilla and spatial in both
//! modes, group norm; allocating and `_into`; f32 and f64; one and two rayon threads), each
//! compared with its naive twin. Small enough to run under Miri (`.ci/miri`), where it
//! checks the `unsafe` code (disjoint mutable pieces shared across rayon tasks, raw-pointer
//! GEMM calls, SIMD loads) for undefined behaviour; an ordinary `cargo test` runs it too.
//!
//! The SIMD levels swept are those the CPU supports up to the active level, so
//! `CNN_KERNELS_SIMD=scalar` (forwarded to Miri by `.ci/miri`) keeps Miri away from
//! intrinsics it does not implement.

use cnn_kernels::conv::{self, Conv2dGeometry, Conv2dParams};
use cnn_kernels::norm::{
    self, BatchNormCache, BatchNormMode, BatchNormParams, GroupNormCache, GroupNormGeometry,
    GroupNormParams,
};
use cnn_kernels::pool::{self, MaxPool2dGeometry, MaxPool2dParams};
use cnn_kernels::simd::{self, Level};
use cnn_kernels::{Float, Tensor, TensorView, TensorViewMut};

/// Deterministic data in about [−2, 2] (no ties for max pooling).
fn data<T: Float>(n: usize, seed: usize) -> Vec<T> {
    (0..n)
        .map(|i| T::from_f64((((i * 7919 + seed * 104_729) % 1009) as f64 - 504.0) / 251.0))
        .collect()
}

#[track_caller]
fn close<T: Float>(what: &str, a: &[T], b: &[T]) {
    assert_eq!(a.len(), b.len(), "{what}");
    let tol = if T::DTYPE == cnn_kernels::DType::F32 {
        1e-4
    } else {
        1e-10
    };
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let (x, y) = (x.to_f64(), y.to_f64());
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

fn conv_case<T: Float>(xs: [usize; 4], ws: [usize; 4], p: Conv2dParams) {
    let (x, w) = (
        data::<T>(xs.iter().product(), 1),
        data::<T>(ws.iter().product(), 2),
    );
    let b = data::<T>(ws[0], 3);
    let xv = TensorView::new(xs, &x[..]).unwrap();
    let wv = TensorView::new(ws, &w[..]).unwrap();
    let g = Conv2dGeometry::new(xs.into(), ws.into(), &p).unwrap();
    let want = conv::naive::forward(xv, wv, Some(&b), &p).unwrap();
    close(
        "conv forward",
        conv::forward(xv, wv, Some(&b), &p).unwrap().data(),
        want.data(),
    );
    let mut out = vec![T::ZERO; want.data().len()];
    let mut ws_buf = vec![T::ZERO; conv::forward_workspace_len(&g)];
    let ov = TensorViewMut::new(g.out_shape(), &mut out[..]).unwrap();
    conv::forward_into(xv, wv, Some(&b), &p, ov, &mut ws_buf).unwrap();
    close("conv forward_into", &out, want.data());

    let dout = data::<T>(out.len(), 4);
    let dv = TensorView::new(g.out_shape(), &dout[..]).unwrap();
    let want = conv::naive::backward(dv, xv, wv, &p).unwrap();
    let got = conv::backward(dv, xv, wv, &p).unwrap();
    close("conv dx", got.dx.data(), want.dx.data());
    close("conv dw", got.dw.data(), want.dw.data());
    close("conv db", &got.db, &want.db);
    let (mut dx, mut dw, mut db) = (x.clone(), w.clone(), b.clone());
    let mut ws_buf = vec![T::ZERO; conv::backward_workspace_len(&g)];
    let dxv = TensorViewMut::new(xs, &mut dx[..]).unwrap();
    let dwv = TensorViewMut::new(ws, &mut dw[..]).unwrap();
    conv::backward_into(dv, xv, wv, &p, dxv, dwv, &mut db, &mut ws_buf).unwrap();
    close("conv backward_into dx", &dx, want.dx.data());
    close("conv backward_into dw", &dw, want.dw.data());
}

/// A general window, and the 2×2 stride-2 path (odd H and W: margins), whose allocating
/// backward hands out uninitialised memory that it must write in full.
fn pool_case<T: Float>() {
    pool_one::<T>(
        [1, 2, 3, 4],
        MaxPool2dParams::new([2, 3]).stride([1, 2]).padding([1, 1]),
    );
    pool_one::<T>([1, 2, 5, 3], MaxPool2dParams::new([2, 2]).stride([2, 2]));
}

fn pool_one<T: Float>(xs: [usize; 4], p: MaxPool2dParams) {
    let g = MaxPool2dGeometry::new(xs.into(), &p).unwrap();
    let x = data::<T>(xs.iter().product(), 5);
    let xv = TensorView::new(xs, &x[..]).unwrap();
    let want = pool::naive::forward(xv, &p).unwrap();
    close(
        "pool forward",
        pool::forward(xv, &p).unwrap().data(),
        want.data(),
    );
    let mut out = vec![T::ZERO; want.data().len()];
    pool::forward_into(
        xv,
        &p,
        TensorViewMut::new(g.out_shape(), &mut out[..]).unwrap(),
    )
    .unwrap();
    close("pool forward_into", &out, want.data());
    let (o2, ix) = pool::forward_with_indices(xv, &p).unwrap();
    close("pool forward_with_indices", o2.data(), want.data());
    let mut ix2 = pool::MaxPool2dIndices::new(&g).unwrap();
    let ov = TensorViewMut::new(g.out_shape(), &mut out[..]).unwrap();
    pool::forward_with_indices_into(xv, &p, ov, &mut ix2).unwrap();

    let dout = data::<T>(out.len(), 6);
    let dv = TensorView::new(g.out_shape(), &dout[..]).unwrap();
    let want = pool::naive::backward(dv, xv, &p).unwrap();
    close(
        "pool backward",
        pool::backward(dv, xv, &p).unwrap().data(),
        want.data(),
    );
    let got = pool::backward_with_indices(dv, &ix, &p).unwrap();
    close("pool backward_with_indices", got.data(), want.data());
    let mut dx = vec![T::ZERO; x.len()];
    pool::backward_into(dv, xv, &p, TensorViewMut::new(xs, &mut dx[..]).unwrap()).unwrap();
    close("pool backward_into", &dx, want.data());
    let dxv = TensorViewMut::new(xs, &mut dx[..]).unwrap();
    pool::backward_with_indices_into(dv, &ix2, &p, dxv).unwrap();
    close("pool backward_with_indices_into", &dx, want.data());
}

type Fwd<T> = fn(
    TensorView<'_, T>,
    &[T],
    &[T],
    &mut [T],
    &mut [T],
    &BatchNormParams,
) -> cnn_kernels::Result<(Tensor<T>, BatchNormCache<T>)>;
type FwdInto<T> = fn(
    TensorView<'_, T>,
    &[T],
    &[T],
    &mut [T],
    &mut [T],
    &BatchNormParams,
    TensorViewMut<'_, T>,
    &mut BatchNormCache<T>,
) -> cnn_kernels::Result<()>;

fn bn_case<T: Float>(spatial: bool, mode: BatchNormMode) {
    let xs: &[usize] = if spatial { &[2, 3, 2, 2] } else { &[3, 4] };
    let c = xs[1];
    let n: usize = xs.iter().product();
    let shape = cnn_kernels::Shape::new(xs).unwrap();
    let x = data::<T>(n, 7);
    let (gm, bt) = (data::<T>(c, 8), data::<T>(c, 9));
    let rv0: Vec<T> = data::<T>(c, 10).iter().map(|v| v.abs() + T::ONE).collect();
    let p = BatchNormParams::default().mode(mode);
    let xv = TensorView::new(shape, &x[..]).unwrap();
    let (naive_f, fast_f, into_f): (Fwd<T>, Fwd<T>, FwdInto<T>) = if spatial {
        (
            norm::naive::spatial_batch_norm_forward,
            norm::spatial_batch_norm_forward,
            norm::spatial_batch_norm_forward_into,
        )
    } else {
        (
            norm::naive::batch_norm_forward,
            norm::batch_norm_forward,
            norm::batch_norm_forward_into,
        )
    };
    let (mut rm, mut rv) = (vec![T::ZERO; c], rv0.clone());
    let (want, cache) = naive_f(xv, &gm, &bt, &mut rm, &mut rv, &p).unwrap();
    let (mut rm2, mut rv2) = (vec![T::ZERO; c], rv0.clone());
    let (got, _) = fast_f(xv, &gm, &bt, &mut rm2, &mut rv2, &p).unwrap();
    close("bn forward", got.data(), want.data());
    close("bn running mean", &rm2, &rm);
    let mut y = vec![T::ZERO; n];
    let mut c2 = BatchNormCache {
        mode,
        mean: vec![T::ZERO; c],
        inv_std: vec![T::ZERO; c],
    };
    let (mut rm3, mut rv3) = (vec![T::ZERO; c], rv0);
    let yv = TensorViewMut::new(shape, &mut y[..]).unwrap();
    into_f(xv, &gm, &bt, &mut rm3, &mut rv3, &p, yv, &mut c2).unwrap();
    close("bn forward_into", &y, want.data());

    let dout = data::<T>(n, 11);
    let dv = TensorView::new(shape, &dout[..]).unwrap();
    let (want, got) = if spatial {
        (
            norm::naive::spatial_batch_norm_backward(dv, xv, &gm, &cache).unwrap(),
            norm::spatial_batch_norm_backward(dv, xv, &gm, &cache).unwrap(),
        )
    } else {
        (
            norm::naive::batch_norm_backward(dv, xv, &gm, &cache).unwrap(),
            norm::batch_norm_backward(dv, xv, &gm, &cache).unwrap(),
        )
    };
    close("bn dx", got.dx.data(), want.dx.data());
    close("bn dgamma", &got.dgamma, &want.dgamma);
    let (mut dg, mut db) = (vec![T::ZERO; c], vec![T::ZERO; c]);
    let dxv = TensorViewMut::new(shape, &mut y[..]).unwrap();
    if spatial {
        norm::spatial_batch_norm_backward_into(dv, xv, &gm, &cache, dxv, &mut dg, &mut db)
    } else {
        norm::batch_norm_backward_into(dv, xv, &gm, &cache, dxv, &mut dg, &mut db)
    }
    .unwrap();
    close("bn backward_into dx", &y, want.dx.data());
    close("bn backward_into dbeta", &db, &want.dbeta);
}

fn gn_case<T: Float>() {
    let xs = [2, 4, 2, 2];
    let p = GroupNormParams::new(2);
    let x = data::<T>(32, 12);
    let (gm, bt) = (data::<T>(4, 13), data::<T>(4, 14));
    let xv = TensorView::new(xs, &x[..]).unwrap();
    let g = GroupNormGeometry::new("group_norm", xs.into(), 2, 4, 4).unwrap();
    let (want, cache) = norm::naive::group_norm_forward(xv, &gm, &bt, &p).unwrap();
    let (got, _) = norm::group_norm_forward(xv, &gm, &bt, &p).unwrap();
    close("gn forward", got.data(), want.data());
    let mut y = vec![T::ZERO; 32];
    let mut c2 = GroupNormCache {
        groups: 2,
        mean: vec![T::ZERO; 4],
        inv_std: vec![T::ZERO; 4],
    };
    let yv = TensorViewMut::new(xs, &mut y[..]).unwrap();
    norm::group_norm_forward_into(xv, &gm, &bt, &p, yv, &mut c2).unwrap();
    close("gn forward_into", &y, want.data());

    let dout = data::<T>(32, 15);
    let dv = TensorView::new(xs, &dout[..]).unwrap();
    let want = norm::naive::group_norm_backward(dv, xv, &gm, &cache).unwrap();
    let got = norm::group_norm_backward(dv, xv, &gm, &cache).unwrap();
    close("gn dx", got.dx.data(), want.dx.data());
    close("gn dgamma", &got.dgamma, &want.dgamma);
    let (mut dg, mut db) = (vec![T::ZERO; 4], vec![T::ZERO; 4]);
    let mut ws = vec![0.0f64; norm::group_norm_backward_workspace_len(&g)];
    let dxv = TensorViewMut::new(xs, &mut y[..]).unwrap();
    norm::group_norm_backward_into(dv, xv, &gm, &cache, dxv, &mut dg, &mut db, &mut ws).unwrap();
    close("gn backward_into dx", &y, want.dx.data());
    close("gn backward_into dbeta", &db, &want.dbeta);
}

fn every_entry_point<T: Float>() {
    let p = Conv2dParams::default;
    // im2col + GEMM (stride, padding, dilation, groups).
    conv_case::<T>(
        [2, 2, 4, 5],
        [3, 2, 3, 2],
        p().padding([1, 0]).stride([2, 1]),
    );
    conv_case::<T>(
        [1, 4, 5, 5],
        [2, 2, 2, 2],
        p().groups(2).dilation([2, 1]).padding([1, 1]),
    );
    // Stride 1 with 8 channels and 16-pixel rows: dx as the transposed convolution's forward.
    conv_case::<T>([1, 8, 2, 16], [2, 8, 1, 3], p().padding([0, 1]));
    // Pointwise (1×1) and depthwise (groups = C = F).
    conv_case::<T>([2, 3, 2, 3], [2, 3, 1, 1], p());
    conv_case::<T>([1, 3, 4, 4], [3, 1, 3, 3], p().groups(3).padding([1, 1]));
    pool_case::<T>();
    for spatial in [false, true] {
        for mode in [BatchNormMode::Train, BatchNormMode::Test] {
            bn_case::<T>(spatial, mode);
        }
    }
    gn_case::<T>();
}

#[test]
fn every_fast_entry_point_on_tiny_shapes() {
    let top = simd::active_level();
    let levels: Vec<Level> = simd::supported_levels()
        .into_iter()
        .filter(|&l| l <= top)
        .collect();
    let two = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for level in levels {
        simd::set_max_level(level);
        every_entry_point::<f32>();
        every_entry_point::<f64>();
        two.install(|| {
            every_entry_point::<f32>();
            every_entry_point::<f64>();
        });
    }
    simd::set_max_level(top);
    // One image with 64 filters (1.1 M multiply-adds) at two threads: its filters split into
    // two blocks, and the columns are lowered in two chunks (7 and 6 channels) by the pool's
    // lanes. The largest case here: about 5 of Miri's minutes.
    two.install(|| {
        conv_forward_case::<f32>(
            [1, 13, 12, 12],
            [64, 13, 3, 3],
            Conv2dParams::default().padding([1, 1]),
        )
    });
}

fn conv_forward_case<T: Float>(xs: [usize; 4], ws: [usize; 4], p: Conv2dParams) {
    let (x, w) = (
        data::<T>(xs.iter().product(), 1),
        data::<T>(ws.iter().product(), 2),
    );
    let xv = TensorView::new(xs, &x[..]).unwrap();
    let wv = TensorView::new(ws, &w[..]).unwrap();
    let want = conv::naive::forward(xv, wv, None, &p).unwrap();
    close(
        "conv forward (filter blocks)",
        conv::forward(xv, wv, None, &p).unwrap().data(),
        want.data(),
    );
}
