//! The `ndarray` wrappers give bitwise the slice API's results, and refuse arrays that are
//! not in standard layout with a clear error. Run with `--features ndarray`.
#![cfg(feature = "ndarray")]

use cnn_kernels::conv::{self, Conv2dParams};
use cnn_kernels::ndarray_interop as nd;
use cnn_kernels::norm::{self, BatchNormMode, BatchNormParams, GroupNormParams};
use cnn_kernels::pool::{self, MaxPool2dParams};
use cnn_kernels::{Error, TensorView};
use ndarray::{s, Array1, Array2, Array4, Axis};

/// SplitMix64 values mapped to [-1, 1).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn a4(&mut self, d: (usize, usize, usize, usize)) -> Array4<f32> {
        Array4::from_shape_simple_fn(d, || self.next())
    }
    fn a1(&mut self, n: usize) -> Array1<f32> {
        Array1::from_shape_simple_fn(n, || self.next())
    }
}

fn tv<'a>(a: &'a Array4<f32>) -> TensorView<'a, f32> {
    TensorView::new(
        cnn_kernels::Shape::new(a.shape()).unwrap(),
        a.as_slice().unwrap(),
    )
    .unwrap()
}

fn assert_layout_err(e: Error, op: &str, what: &str) {
    assert_eq!(e.op(), op, "{e}");
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("standard (C-contiguous) layout"), "{msg}");
    assert!(msg.contains(what), "{msg}");
}

#[test]
fn conv_matches_slice_api_and_refuses_strided() {
    let mut r = Rng(1);
    let x = r.a4((2, 4, 9, 7));
    let w = r.a4((6, 2, 3, 2));
    let b = r.a1(6);
    let p = Conv2dParams::default()
        .padding([1, 0])
        .stride([2, 1])
        .groups(2);
    let out = nd::conv::naive::forward(x.view(), w.view(), Some(b.view()), &p).unwrap();
    let want = conv::naive::forward(tv(&x), tv(&w), Some(b.as_slice().unwrap()), &p).unwrap();
    assert_eq!(out.shape(), want.shape().dims());
    assert_eq!(out.as_slice().unwrap(), want.data());

    let dout = r.a4(out.dim());
    let g = nd::conv::naive::backward(dout.view(), x.view(), w.view(), &p).unwrap();
    let gw = conv::naive::backward(tv(&dout), tv(&x), tv(&w), &p).unwrap();
    assert_eq!(g.dx.as_slice().unwrap(), gw.dx.data());
    assert_eq!(g.dw.as_slice().unwrap(), gw.dw.data());
    assert_eq!(g.db.to_vec(), gw.db);

    // A transposed x, a step-sliced w, a reversed bias: each refused, naming the argument.
    let xt = x.view().reversed_axes();
    let e = nd::conv::naive::forward(xt, w.view(), None, &p).unwrap_err();
    assert_layout_err(e, "conv2d", "x (shape");
    let w2 = r.a4((12, 2, 3, 2));
    let ws = w2.slice(s![..;2, .., .., ..]);
    let e = nd::conv::naive::forward(x.view(), ws, None, &p).unwrap_err();
    assert_layout_err(e, "conv2d", "w (shape");
    let e = nd::conv::naive::forward(x.view(), w.view(), Some(b.slice(s![..;-1])), &p).unwrap_err();
    assert_layout_err(e, "conv2d", "b (shape");
    let e =
        nd::conv::naive::backward(dout.view().reversed_axes(), x.view(), w.view(), &p).unwrap_err();
    assert_layout_err(e, "conv2d", "dout (shape");
    // The documented fix: an explicit standard-layout copy.
    let xs = ws.as_standard_layout();
    assert!(nd::conv::naive::forward(x.view(), xs.view(), None, &p).is_ok());
    // Ordinary parameter errors pass through unchanged.
    let bad = p.groups(3);
    assert_eq!(
        nd::conv::naive::forward(x.view(), w.view(), None, &bad).unwrap_err(),
        conv::naive::forward(tv(&x), tv(&w), None, &bad).unwrap_err()
    );
}

#[test]
fn pool_matches_slice_api_and_refuses_strided() {
    let mut r = Rng(2);
    let x = r.a4((2, 3, 7, 8));
    let p = MaxPool2dParams::new([3, 2]).stride([2, 1]).padding([1, 1]);
    let out = nd::pool::naive::forward(x.view(), &p).unwrap();
    let want = pool::naive::forward(tv(&x), &p).unwrap();
    assert_eq!(out.shape(), want.shape().dims());
    assert_eq!(out.as_slice().unwrap(), want.data());
    let dout = r.a4(out.dim());
    let dx = nd::pool::naive::backward(dout.view(), x.view(), &p).unwrap();
    let dxw = pool::naive::backward(tv(&dout), tv(&x), &p).unwrap();
    assert_eq!(dx.as_slice().unwrap(), dxw.data());

    let mut xp = x.clone();
    xp.swap_axes(2, 3);
    assert_layout_err(
        nd::pool::naive::forward(xp.view(), &p).unwrap_err(),
        "max_pool2d",
        "x (shape",
    );
    let dd = r.a4((2, 3, 4, 18));
    let dsl = dd.slice(s![.., .., .., ..;2]);
    assert_layout_err(
        nd::pool::naive::backward(dsl, x.view(), &p).unwrap_err(),
        "max_pool2d",
        "dout (shape",
    );
}

#[test]
fn batch_norm_matches_slice_api_and_refuses_strided() {
    let mut r = Rng(3);
    let x = Array2::from_shape_simple_fn((7, 5), || r.next());
    let (gamma, beta) = (r.a1(5), r.a1(5));
    let (mut rm, mut rv) = (r.a1(5), r.a1(5).mapv(|v| v.abs() + 0.5));
    let (mut rm2, mut rv2) = (rm.to_vec(), rv.to_vec());
    for mode in [BatchNormMode::Train, BatchNormMode::Test] {
        let p = BatchNormParams::default().mode(mode).momentum(0.8);
        let (y, cache) = nd::norm::naive::batch_norm_forward(
            x.view(),
            gamma.view(),
            beta.view(),
            rm.view_mut(),
            rv.view_mut(),
            &p,
        )
        .unwrap();
        let xv = TensorView::new([7, 5], x.as_slice().unwrap()).unwrap();
        let g = gamma.as_slice().unwrap();
        let (yw, cw) = norm::naive::batch_norm_forward(
            xv,
            g,
            beta.as_slice().unwrap(),
            &mut rm2,
            &mut rv2,
            &p,
        )
        .unwrap();
        assert_eq!(y.as_slice().unwrap(), yw.data());
        assert_eq!(cache, cw);
        assert_eq!(rm.to_vec(), rm2);
        assert_eq!(rv.to_vec(), rv2);

        let dout = Array2::from_shape_simple_fn((7, 5), || r.next());
        let gr = nd::norm::naive::batch_norm_backward(dout.view(), x.view(), gamma.view(), &cache)
            .unwrap();
        let dv = TensorView::new([7, 5], dout.as_slice().unwrap()).unwrap();
        let gw = norm::naive::batch_norm_backward(dv, xv, g, &cw).unwrap();
        assert_eq!(gr.dx.as_slice().unwrap(), gw.dx.data());
        assert_eq!(gr.dgamma.to_vec(), gw.dgamma);
        assert_eq!(gr.dbeta.to_vec(), gw.dbeta);
    }
    // x viewed transposed; running_var a strided column of a matrix.
    let p = BatchNormParams::default();
    let xt = Array2::<f32>::from_elem((5, 7), 0.5);
    let e = nd::norm::naive::batch_norm_forward(
        xt.t(),
        gamma.view(),
        beta.view(),
        rm.view_mut(),
        rv.view_mut(),
        &p,
    );
    assert_layout_err(e.unwrap_err(), "batch_norm", "x (shape");
    let mut m = Array2::<f32>::ones((5, 2));
    let e = nd::norm::naive::batch_norm_forward(
        x.view(),
        gamma.view(),
        beta.view(),
        rm.view_mut(),
        m.column_mut(1),
        &p,
    );
    assert_layout_err(e.unwrap_err(), "batch_norm", "running_var (shape");
}

#[test]
fn spatial_batch_norm_matches_slice_api_and_refuses_strided() {
    let mut r = Rng(4);
    let x = r.a4((3, 4, 5, 6));
    let (gamma, beta) = (r.a1(4), r.a1(4));
    let (mut rm, mut rv) = (Array1::<f32>::zeros(4), Array1::<f32>::ones(4));
    let (mut rm2, mut rv2) = (rm.to_vec(), rv.to_vec());
    for mode in [BatchNormMode::Train, BatchNormMode::Test] {
        let p = BatchNormParams::default().mode(mode).eps(1e-3);
        let (y, cache) = nd::norm::naive::spatial_batch_norm_forward(
            x.view(),
            gamma.view(),
            beta.view(),
            rm.view_mut(),
            rv.view_mut(),
            &p,
        )
        .unwrap();
        let g = gamma.as_slice().unwrap();
        let (yw, cw) = norm::naive::spatial_batch_norm_forward(
            tv(&x),
            g,
            beta.as_slice().unwrap(),
            &mut rm2,
            &mut rv2,
            &p,
        )
        .unwrap();
        assert_eq!(y.as_slice().unwrap(), yw.data());
        assert_eq!(cache, cw);
        assert_eq!((rm.to_vec(), rv.to_vec()), (rm2.clone(), rv2.clone()));
        let dout = r.a4(x.dim());
        let gr = nd::norm::naive::spatial_batch_norm_backward(
            dout.view(),
            x.view(),
            gamma.view(),
            &cache,
        )
        .unwrap();
        let gw = norm::naive::spatial_batch_norm_backward(tv(&dout), tv(&x), g, &cw).unwrap();
        assert_eq!(gr.dx.as_slice().unwrap(), gw.dx.data());
        assert_eq!(gr.dgamma.to_vec(), gw.dgamma);
        assert_eq!(gr.dbeta.to_vec(), gw.dbeta);
        let e = nd::norm::naive::spatial_batch_norm_backward(
            dout.view(),
            x.view().permuted_axes([0, 1, 3, 2]),
            gamma.view(),
            &cache,
        );
        assert_layout_err(e.unwrap_err(), "spatial_batch_norm", "x (shape");
    }
    let gm = Array2::<f32>::ones((4, 3));
    let e = nd::norm::naive::spatial_batch_norm_forward(
        x.view(),
        gm.column(0),
        beta.view(),
        rm.view_mut(),
        rv.view_mut(),
        &BatchNormParams::default(),
    );
    assert_layout_err(e.unwrap_err(), "spatial_batch_norm", "gamma (shape");
}

#[test]
fn group_norm_matches_slice_api_and_refuses_strided() {
    let mut r = Rng(5);
    let x = r.a4((2, 6, 4, 3));
    let (gamma, beta) = (r.a1(6), r.a1(6));
    let p = GroupNormParams::new(3).eps(1e-4);
    let (y, cache) =
        nd::norm::naive::group_norm_forward(x.view(), gamma.view(), beta.view(), &p).unwrap();
    let g = gamma.as_slice().unwrap();
    let (yw, cw) =
        norm::naive::group_norm_forward(tv(&x), g, beta.as_slice().unwrap(), &p).unwrap();
    assert_eq!(y.as_slice().unwrap(), yw.data());
    assert_eq!(cache, cw);
    let dout = r.a4(x.dim());
    let gr =
        nd::norm::naive::group_norm_backward(dout.view(), x.view(), gamma.view(), &cache).unwrap();
    let gw = norm::naive::group_norm_backward(tv(&dout), tv(&x), g, &cw).unwrap();
    assert_eq!(gr.dx.as_slice().unwrap(), gw.dx.data());
    assert_eq!(gr.dgamma.to_vec(), gw.dgamma);
    assert_eq!(gr.dbeta.to_vec(), gw.dbeta);

    let mut xs = x.clone();
    xs.invert_axis(Axis(3));
    let e = nd::norm::naive::group_norm_forward(xs.view(), gamma.view(), beta.view(), &p);
    assert_layout_err(e.unwrap_err(), "group_norm", "x (shape");
    let dd = r.a4((2, 6, 4, 6));
    let e = nd::norm::naive::group_norm_backward(
        dd.slice(s![.., .., .., 1..4]),
        x.view(),
        gamma.view(),
        &cache,
    );
    assert_layout_err(e.unwrap_err(), "group_norm", "dout (shape");
}

#[test]
fn conversion_helpers_borrow_and_move_without_copying() {
    let a = Array4::from_shape_fn((1, 2, 3, 4), |(_, c, h, w)| (c * 12 + h * 4 + w) as f64);
    let v = nd::tensor_view(&a.view()).unwrap();
    assert_eq!(v.shape().dims(), &[1, 2, 3, 4]);
    assert_eq!(v.data().as_ptr(), a.as_ptr());

    let mut b = Array2::<f64>::zeros((2, 3));
    let ptr = b.as_ptr();
    let mut vm = nd::tensor_view_mut(b.view_mut()).unwrap();
    vm.data_mut()[4] = 7.0;
    assert_eq!(vm.data().as_ptr(), ptr);
    assert_eq!(b[[1, 1]], 7.0);

    let t = cnn_kernels::Tensor::from_vec([2, 3], vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let t2 = t.clone();
    let tp = t2.data().as_ptr();
    let arr: Array2<f32> = nd::into_array(t2).unwrap();
    assert_eq!(arr.as_ptr(), tp);
    assert_eq!(arr[[1, 0]], 4.0);
    let e = nd::into_array::<f32, ndarray::Ix4>(t).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    // The crate's own (64-byte aligned) tensors move too, alignment and all.
    let mut z = cnn_kernels::Tensor::<f32>::zeros([3, 5, 7, 9]).unwrap();
    z.data_mut()[17] = 2.5;
    let zp = z.data().as_ptr();
    assert_eq!(zp as usize % 64, 0);
    let arr: Array4<f32> = nd::into_array(z).unwrap();
    assert_eq!((arr.as_ptr(), arr.len(), arr[[0, 0, 1, 8]]), (zp, 945, 2.5));
    assert!(arr.is_standard_layout());

    // Ranks outside 1..=4 and non-standard layouts are errors.
    let a5 = ndarray::Array5::<f32>::zeros((1, 1, 1, 1, 2));
    let e = nd::tensor_view(&a5.view()).unwrap_err();
    assert!(e.to_string().contains("5 dimensions"), "{e}");
    let e = nd::tensor_view(&a.t()).unwrap_err();
    assert!(
        e.to_string().contains("standard (C-contiguous) layout"),
        "{e}"
    );
    let mut c = Array2::<f64>::zeros((3, 2));
    let e = nd::tensor_view_mut(c.view_mut().reversed_axes()).unwrap_err();
    assert!(
        e.to_string().contains("standard (C-contiguous) layout"),
        "{e}"
    );
}

fn shape(d: &[usize]) -> cnn_kernels::Shape {
    cnn_kernels::Shape::new(d).unwrap()
}

#[test]
fn fast_conv_allocating_and_into_match_slice_api() {
    let mut r = Rng(6);
    let x = r.a4((3, 4, 11, 9));
    let w = r.a4((8, 4, 3, 3));
    let b = r.a1(8);
    let p = Conv2dParams::default().padding([1, 2]).stride([2, 1]);
    let out = nd::conv::forward(x.view(), w.view(), Some(b.view()), &p).unwrap();
    let want = conv::forward(tv(&x), tv(&w), Some(b.as_slice().unwrap()), &p).unwrap();
    assert_eq!(out.shape(), want.shape().dims());
    assert_eq!(out.as_slice().unwrap(), want.data());

    let g = conv::Conv2dGeometry::new(shape(x.shape()), shape(w.shape()), &p).unwrap();
    let mut ws = vec![0.0f32; conv::forward_workspace_len(&g)];
    let mut out2 = Array4::<f32>::from_elem(out.dim(), f32::NAN);
    nd::conv::forward_into(
        x.view(),
        w.view(),
        Some(b.view()),
        &p,
        out2.view_mut(),
        &mut ws,
    )
    .unwrap();
    assert_eq!(out2.as_slice().unwrap(), want.data());

    let dout = r.a4(out.dim());
    let gr = nd::conv::backward(dout.view(), x.view(), w.view(), &p).unwrap();
    let gw = conv::backward(tv(&dout), tv(&x), tv(&w), &p).unwrap();
    assert_eq!(gr.dx.as_slice().unwrap(), gw.dx.data());
    assert_eq!(gr.dw.as_slice().unwrap(), gw.dw.data());
    assert_eq!(gr.db.to_vec(), gw.db);
    let mut ws = vec![0.0f32; conv::backward_workspace_len(&g)];
    let (mut dx, mut dw, mut db) = (
        Array4::from_elem(x.dim(), f32::NAN),
        Array4::from_elem(w.dim(), f32::NAN),
        Array1::from_elem(8, f32::NAN),
    );
    nd::conv::backward_into(
        dout.view(),
        x.view(),
        w.view(),
        &p,
        dx.view_mut(),
        dw.view_mut(),
        db.view_mut(),
        &mut ws,
    )
    .unwrap();
    assert_eq!(dx.as_slice().unwrap(), gw.dx.data());
    assert_eq!(dw.as_slice().unwrap(), gw.dw.data());
    assert_eq!(db.to_vec(), gw.db);

    // A transposed output, a strided db: refused, naming the argument.
    let mut big = Array4::<f32>::zeros((3, 8, 6, 11));
    let e = nd::conv::forward_into(
        x.view(),
        w.view(),
        None,
        &p,
        big.view_mut().permuted_axes([0, 1, 3, 2]),
        &mut ws,
    );
    assert_layout_err(e.unwrap_err(), "conv2d", "out (shape");
    let mut db2 = Array1::<f32>::zeros(16);
    let e = nd::conv::backward_into(
        dout.view(),
        x.view(),
        w.view(),
        &p,
        dx.view_mut(),
        dw.view_mut(),
        db2.slice_mut(s![..;2]),
        &mut ws,
    );
    assert_layout_err(e.unwrap_err(), "conv2d", "db (shape");
    // Workspace errors pass through.
    let e = nd::conv::forward_into(x.view(), w.view(), None, &p, out2.view_mut(), &mut []);
    let g0 = conv::forward_workspace_len(&g);
    if g0 > 0 {
        assert!(matches!(e, Err(Error::WorkspaceTooSmall { .. })), "{e:?}");
    }
}

#[test]
fn fast_pool_allocating_and_into_match_slice_api() {
    let mut r = Rng(7);
    let x = r.a4((2, 5, 9, 10));
    let p = MaxPool2dParams::new([3, 3]).stride([2, 2]).padding([1, 1]);
    let out = nd::pool::forward(x.view(), &p).unwrap();
    let want = pool::forward(tv(&x), &p).unwrap();
    assert_eq!(out.as_slice().unwrap(), want.data());
    let mut out2 = Array4::from_elem(out.dim(), f32::NAN);
    nd::pool::forward_into(x.view(), &p, out2.view_mut()).unwrap();
    assert_eq!(out2, out);

    let (out3, idx) = nd::pool::forward_with_indices(x.view(), &p).unwrap();
    let (want3, idx_w) = pool::forward_with_indices(tv(&x), &p).unwrap();
    assert_eq!(out3.as_slice().unwrap(), want3.data());
    assert_eq!(idx, idx_w);
    let g = pool::MaxPool2dGeometry::new(shape(x.shape()), &p).unwrap();
    let mut idx2 = pool::MaxPool2dIndices::new(&g).unwrap();
    let mut out4 = Array4::from_elem(out.dim(), f32::NAN);
    nd::pool::forward_with_indices_into(x.view(), &p, out4.view_mut(), &mut idx2).unwrap();
    assert_eq!(out4, out);
    assert_eq!(idx2, idx);

    let dout = r.a4(out.dim());
    let dx = nd::pool::backward(dout.view(), x.view(), &p).unwrap();
    let dxw = pool::backward(tv(&dout), tv(&x), &p).unwrap();
    assert_eq!(dx.as_slice().unwrap(), dxw.data());
    let dxi = nd::pool::backward_with_indices(dout.view(), &idx, &p).unwrap();
    let dxiw = pool::backward_with_indices(tv(&dout), &idx_w, &p).unwrap();
    assert_eq!(dxi.as_slice().unwrap(), dxiw.data());
    let mut d2 = Array4::from_elem(x.dim(), f32::NAN);
    nd::pool::backward_into(dout.view(), x.view(), &p, d2.view_mut()).unwrap();
    assert_eq!(d2, dx);
    let mut d3 = Array4::from_elem(x.dim(), f32::NAN);
    nd::pool::backward_with_indices_into(dout.view(), &idx, &p, d3.view_mut()).unwrap();
    assert_eq!(d3, dxi);

    let mut t = Array4::<f32>::zeros((2, 5, 10, 9));
    let e = nd::pool::backward_into(dout.view(), x.view(), &p, t.view_mut().reversed_axes());
    assert_layout_err(e.unwrap_err(), "max_pool2d", "dx (shape");
    let e = nd::pool::forward_with_indices(x.slice(s![.., .., .., ..;2]), &p);
    assert_layout_err(e.unwrap_err(), "max_pool2d", "x (shape");
}

#[test]
fn fast_norm_allocating_and_into_match_slice_api() {
    let mut r = Rng(8);
    // Spatial batch norm.
    let x = r.a4((4, 3, 5, 7));
    let (gamma, beta) = (r.a1(3), r.a1(3));
    let (g, bt) = (gamma.as_slice().unwrap(), beta.as_slice().unwrap());
    let p = BatchNormParams::default();
    let (mut rm, mut rv) = (Array1::<f32>::zeros(3), Array1::<f32>::ones(3));
    let (mut rm2, mut rv2) = (rm.to_vec(), rv.to_vec());
    let (y, cache) = nd::norm::spatial_batch_norm_forward(
        x.view(),
        gamma.view(),
        beta.view(),
        rm.view_mut(),
        rv.view_mut(),
        &p,
    )
    .unwrap();
    let (yw, cw) = norm::spatial_batch_norm_forward(tv(&x), g, bt, &mut rm2, &mut rv2, &p).unwrap();
    assert_eq!(y.as_slice().unwrap(), yw.data());
    assert_eq!((&cache, rm.to_vec(), rv.to_vec()), (&cw, rm2, rv2));
    let (mut rm3, mut rv3) = (Array1::<f32>::zeros(3), Array1::<f32>::ones(3));
    let mut y2 = Array4::from_elem(x.dim(), f32::NAN);
    let mut cache2 = cw.clone();
    nd::norm::spatial_batch_norm_forward_into(
        x.view(),
        gamma.view(),
        beta.view(),
        rm3.view_mut(),
        rv3.view_mut(),
        &p,
        y2.view_mut(),
        &mut cache2,
    )
    .unwrap();
    assert_eq!((y2.as_slice().unwrap(), &cache2), (yw.data(), &cw));
    assert_eq!((rm3, rv3), (rm.clone(), rv.clone()));
    let dout = r.a4(x.dim());
    let gr =
        nd::norm::spatial_batch_norm_backward(dout.view(), x.view(), gamma.view(), &cache).unwrap();
    let gw = norm::spatial_batch_norm_backward(tv(&dout), tv(&x), g, &cw).unwrap();
    assert_eq!(gr.dx.as_slice().unwrap(), gw.dx.data());
    assert_eq!(
        (gr.dgamma.to_vec(), gr.dbeta.to_vec()),
        (gw.dgamma.clone(), gw.dbeta.clone())
    );
    let (mut dx, mut dg, mut db) = (
        Array4::from_elem(x.dim(), f32::NAN),
        Array1::from_elem(3, f32::NAN),
        Array1::from_elem(3, f32::NAN),
    );
    nd::norm::spatial_batch_norm_backward_into(
        dout.view(),
        x.view(),
        gamma.view(),
        &cache,
        dx.view_mut(),
        dg.view_mut(),
        db.view_mut(),
    )
    .unwrap();
    assert_eq!(dx, gr.dx);
    assert_eq!((dg, db), (gr.dgamma, gr.dbeta));
    let mut dxt = Array4::<f32>::zeros((4, 3, 7, 5));
    let e = nd::norm::spatial_batch_norm_backward_into(
        dout.view(),
        x.view(),
        gamma.view(),
        &cache,
        dxt.view_mut().permuted_axes([0, 1, 3, 2]),
        Array1::zeros(3).view_mut(),
        Array1::zeros(3).view_mut(),
    );
    assert_layout_err(e.unwrap_err(), "spatial_batch_norm", "dx (shape");

    // Vanilla batch norm on (N, D).
    let x2 = Array2::from_shape_simple_fn((6, 4), || r.next());
    let x2v = TensorView::new([6, 4], x2.as_slice().unwrap()).unwrap();
    let (gamma2, beta2) = (r.a1(4), r.a1(4));
    let (mut rm, mut rv) = (Array1::<f32>::zeros(4), Array1::<f32>::ones(4));
    let (mut rm2, mut rv2) = (rm.to_vec(), rv.to_vec());
    let g2 = gamma2.as_slice().unwrap();
    let (y, cache) = nd::norm::batch_norm_forward(
        x2.view(),
        gamma2.view(),
        beta2.view(),
        rm.view_mut(),
        rv.view_mut(),
        &p,
    )
    .unwrap();
    let (yw, cw) =
        norm::batch_norm_forward(x2v, g2, beta2.as_slice().unwrap(), &mut rm2, &mut rv2, &p)
            .unwrap();
    assert_eq!(y.as_slice().unwrap(), yw.data());
    assert_eq!((&cache, rm.to_vec(), rv.to_vec()), (&cw, rm2, rv2));
    let (mut rm3, mut rv3) = (Array1::<f32>::zeros(4), Array1::<f32>::ones(4));
    let mut y2 = Array2::from_elem((6, 4), f32::NAN);
    let mut cache2 = cw.clone();
    nd::norm::batch_norm_forward_into(
        x2.view(),
        gamma2.view(),
        beta2.view(),
        rm3.view_mut(),
        rv3.view_mut(),
        &p,
        y2.view_mut(),
        &mut cache2,
    )
    .unwrap();
    assert_eq!((y2, cache2), (y, cache.clone()));
    let dout2 = Array2::from_shape_simple_fn((6, 4), || r.next());
    let gr = nd::norm::batch_norm_backward(dout2.view(), x2.view(), gamma2.view(), &cache).unwrap();
    let dv = TensorView::new([6, 4], dout2.as_slice().unwrap()).unwrap();
    let gw = norm::batch_norm_backward(dv, x2v, g2, &cw).unwrap();
    assert_eq!(gr.dx.as_slice().unwrap(), gw.dx.data());
    assert_eq!(
        (gr.dgamma.to_vec(), gr.dbeta.to_vec()),
        (gw.dgamma, gw.dbeta)
    );
    let (mut dx, mut dg, mut db) = (
        Array2::from_elem((6, 4), f32::NAN),
        Array1::from_elem(4, f32::NAN),
        Array1::from_elem(4, f32::NAN),
    );
    nd::norm::batch_norm_backward_into(
        dout2.view(),
        x2.view(),
        gamma2.view(),
        &cache,
        dx.view_mut(),
        dg.view_mut(),
        db.view_mut(),
    )
    .unwrap();
    assert_eq!((dx, dg, db), (gr.dx, gr.dgamma, gr.dbeta));

    // Group norm.
    let x = r.a4((2, 6, 3, 5));
    let (gamma, beta) = (r.a1(6), r.a1(6));
    let (g, bt) = (gamma.as_slice().unwrap(), beta.as_slice().unwrap());
    let gp = GroupNormParams::new(2);
    let (y, cache) =
        nd::norm::group_norm_forward(x.view(), gamma.view(), beta.view(), &gp).unwrap();
    let (yw, cw) = norm::group_norm_forward(tv(&x), g, bt, &gp).unwrap();
    assert_eq!((y.as_slice().unwrap(), &cache), (yw.data(), &cw));
    let mut y2 = Array4::from_elem(x.dim(), f32::NAN);
    let mut cache2 = cw.clone();
    nd::norm::group_norm_forward_into(
        x.view(),
        gamma.view(),
        beta.view(),
        &gp,
        y2.view_mut(),
        &mut cache2,
    )
    .unwrap();
    assert_eq!((&y2, &cache2), (&y, &cache));
    let dout = r.a4(x.dim());
    let gr = nd::norm::group_norm_backward(dout.view(), x.view(), gamma.view(), &cache).unwrap();
    let gw = norm::group_norm_backward(tv(&dout), tv(&x), g, &cw).unwrap();
    assert_eq!(gr.dx.as_slice().unwrap(), gw.dx.data());
    assert_eq!(
        (gr.dgamma.to_vec(), gr.dbeta.to_vec()),
        (gw.dgamma, gw.dbeta)
    );
    let gg = norm::GroupNormGeometry::new("group_norm", shape(x.shape()), 2, 6, 6).unwrap();
    let mut ws = vec![0.0f64; norm::group_norm_backward_workspace_len(&gg)];
    let (mut dx, mut dg, mut db) = (
        Array4::from_elem(x.dim(), f32::NAN),
        Array1::from_elem(6, f32::NAN),
        Array1::from_elem(6, f32::NAN),
    );
    nd::norm::group_norm_backward_into(
        dout.view(),
        x.view(),
        gamma.view(),
        &cache,
        dx.view_mut(),
        dg.view_mut(),
        db.view_mut(),
        &mut ws,
    )
    .unwrap();
    assert_eq!((dx, dg, db), (gr.dx, gr.dgamma, gr.dbeta));
    let mut dgm = Array2::<f32>::zeros((6, 2));
    let e = nd::norm::group_norm_backward_into(
        dout.view(),
        x.view(),
        gamma.view(),
        &cache,
        Array4::zeros(x.dim()).view_mut(),
        dgm.column_mut(0),
        Array1::zeros(6).view_mut(),
        &mut ws,
    );
    assert_layout_err(e.unwrap_err(), "group_norm", "dgamma (shape");
}
