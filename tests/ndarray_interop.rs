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
