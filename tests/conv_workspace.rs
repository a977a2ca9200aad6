//! The allocation-free API: the reported workspace lengths are exact (the kernels run with
//! that many elements, leave what lies beyond them alone, and refuse one element fewer than
//! one thread's worth), a larger workspace runs more tasks at once with bitwise the same
//! results, the length does not grow with the batch, outputs are fully overwritten whatever
//! the buffers held, and wrong buffer shapes are errors, never panics.

use cnn_kernels::conv::{self, Conv2dGeometry, Conv2dParams};
use cnn_kernels::{Error, TensorView, TensorViewMut};

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

const SENTINEL: f32 = -1234.5;

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

fn cases() -> Vec<([usize; 4], [usize; 4], Conv2dParams)> {
    let p = Conv2dParams::default();
    vec![
        (
            [2, 3, 31, 31],
            [5, 3, 3, 3],
            p.stride([2, 2]).padding([1, 1]),
        ),
        ([1, 16, 40, 40], [64, 16, 3, 3], p.padding([1, 1])),
        // Stride 1, 64 channels: dx as the transposed convolution's forward GEMM.
        ([16, 64, 6, 6], [8, 64, 3, 3], p.padding([1, 1])),
        (
            [3, 8, 70, 70],
            [12, 8, 3, 3],
            p.padding([1, 1]).dilation([2, 1]),
        ),
        ([2, 8, 12, 12], [10, 4, 3, 3], p.padding([1, 1]).groups(2)),
        ([2, 300, 5, 6], [7, 300, 1, 1], p),
        (
            [6, 3, 40, 40],
            [16, 3, 7, 7],
            p.stride([2, 2]).padding([3, 3]),
        ),
        ([2, 6, 20, 20], [12, 1, 3, 3], p.padding([1, 1]).groups(6)),
    ]
}

#[test]
fn forward_workspace_len_is_exact() {
    for (xs, ws_, p) in cases() {
        let (x, w, b) = (
            values(xs.iter().product(), 1),
            values(ws_.iter().product(), 2),
            values(ws_[0], 3),
        );
        let (xv, wv) = (
            TensorView::new(xs, &x).unwrap(),
            TensorView::new(ws_, &w).unwrap(),
        );
        let g = Conv2dGeometry::new(xv.shape(), wv.shape(), &p).unwrap();
        let len = conv::forward_workspace_len(&g);
        let reference = conv::forward(xv, wv, Some(&b), &p).unwrap();

        let mut ws = vec![SENTINEL; len + 64];
        let mut out = vec![f32::NAN; reference.data().len()];
        let ov = TensorViewMut::new(g.out_shape(), &mut out).unwrap();
        conv::forward_into(xv, wv, Some(&b), &p, ov, &mut ws[..len]).unwrap();
        assert!(ws[len..].iter().all(|&v| v == SENTINEL));
        assert_eq!(out, reference.data(), "x {xs:?} w {ws_:?}");

        // Sized for 16 threads and run on 16: more tasks at once, the same bits.
        let len16 = conv::forward_workspace_len_for_threads(&g, 16);
        assert!(len16 >= len);
        let mut ws16 = vec![SENTINEL; len16];
        let mut out16 = vec![f32::NAN; out.len()];
        pool(16).install(|| {
            let ov = TensorViewMut::new(g.out_shape(), &mut out16).unwrap();
            conv::forward_into(xv, wv, Some(&b), &p, ov, &mut ws16).unwrap();
        });
        assert_eq!(out16, reference.data(), "16 lanes, x {xs:?} w {ws_:?}");

        let one = conv::forward_workspace_len_for_threads(&g, 1);
        assert!(one <= len && (one == 0) == (len == 0));
        if one > 0 {
            let mut out1 = vec![f32::NAN; out.len()];
            pool(3).install(|| {
                let ov = TensorViewMut::new(g.out_shape(), &mut out1).unwrap();
                conv::forward_into(xv, wv, Some(&b), &p, ov, &mut ws[..one]).unwrap();
            });
            assert_eq!(out1, reference.data(), "1 lane, x {xs:?} w {ws_:?}");
            let ov = TensorViewMut::new(g.out_shape(), &mut out).unwrap();
            let err = conv::forward_into(xv, wv, Some(&b), &p, ov, &mut ws[..one - 1]).unwrap_err();
            assert_eq!(
                err,
                Error::WorkspaceTooSmall {
                    op: "conv2d",
                    required: one,
                    provided: one - 1
                }
            );
        }
    }
}

#[test]
fn backward_workspace_len_is_exact() {
    for (xs, ws_, p) in cases() {
        let (x, w) = (
            values(xs.iter().product(), 4),
            values(ws_.iter().product(), 5),
        );
        let (xv, wv) = (
            TensorView::new(xs, &x).unwrap(),
            TensorView::new(ws_, &w).unwrap(),
        );
        let g = Conv2dGeometry::new(xv.shape(), wv.shape(), &p).unwrap();
        let dout = values(g.out_shape().iter().product(), 6);
        let dv = TensorView::new(g.out_shape(), &dout).unwrap();
        let len = conv::backward_workspace_len(&g);
        let reference = conv::backward(dv, xv, wv, &p).unwrap();
        let want = (
            reference.dx.data().to_vec(),
            reference.dw.data().to_vec(),
            reference.db.clone(),
        );
        // backward_into on NaN-filled gradients with workspace `ws`: (dx, dw, db).
        let run = |ws: &mut [f32]| {
            let (mut dx, mut dw, mut db) = (
                vec![f32::NAN; x.len()],
                vec![f32::NAN; w.len()],
                vec![f32::NAN; g.f],
            );
            conv::backward_into(
                dv,
                xv,
                wv,
                &p,
                TensorViewMut::new(xs, &mut dx).unwrap(),
                TensorViewMut::new(ws_, &mut dw).unwrap(),
                &mut db,
                ws,
            )
            .map(|()| (dx, dw, db))
        };

        let mut ws = vec![SENTINEL; len + 64];
        assert_eq!(run(&mut ws[..len]).unwrap(), want, "x {xs:?} w {ws_:?}");
        assert!(ws[len..].iter().all(|&v| v == SENTINEL));

        // Sized for 16 threads and run on 16, and one thread's worth on 3: the same bits.
        let one = conv::backward_workspace_len_for_threads(&g, 1);
        assert!(one <= len && (one == 0) == (len == 0));
        for (threads, ws_len) in [
            (16, conv::backward_workspace_len_for_threads(&g, 16)),
            (3, one),
        ] {
            let mut ws = vec![SENTINEL; ws_len];
            let got = pool(threads).install(|| run(&mut ws)).unwrap();
            assert_eq!(
                got, want,
                "{threads} threads, {ws_len} elements: x {xs:?} w {ws_:?}"
            );
        }
        if one > 0 {
            assert_eq!(
                run(&mut ws[..one - 1]).unwrap_err(),
                Error::WorkspaceTooSmall {
                    op: "conv2d",
                    required: one,
                    provided: one - 1
                }
            );
        }
    }
}

#[test]
fn workspace_does_not_scale_with_the_batch() {
    // ResNet stem: 224×224 input, 7×7 kernel. A whole image's column matrix would be
    // 147 × 12544 elements (7.4 MB of f32) per image.
    let p = Conv2dParams::default().stride([2, 2]).padding([3, 3]);
    let geo = |n| Conv2dGeometry::new([n, 3, 224, 224].into(), [64, 3, 7, 7].into(), &p).unwrap();
    let (f8, f64_) = (
        conv::forward_workspace_len(&geo(8)),
        conv::forward_workspace_len(&geo(64)),
    );
    let (b8, b16, b64) = (
        conv::backward_workspace_len(&geo(8)),
        conv::backward_workspace_len(&geo(16)),
        conv::backward_workspace_len(&geo(64)),
    );
    assert_eq!(f8, f64_);
    // From 16 images on, the batch alone gives every lane work (at 8, bands of output rows
    // split the images, with slightly shorter tiles).
    assert_eq!(b16, b64);
    assert!(b8 <= b64);
    // Room for 8 lanes: the forward's tiles, and the backward's two passes (which run at
    // the same time, each with its own lanes): about 1 MiB per lane and pass at most.
    for len in [f8, conv::forward_workspace_len(&geo(1))] {
        assert!(len * 4 <= 5 << 20, "{len} elements");
    }
    assert!(b64 * 4 <= 9 << 20, "{b64} elements");
    // 1×1 stride-1 convolutions need none; depthwise ones a few padded windows.
    let pw = Conv2dGeometry::new(
        [8, 256, 56, 56].into(),
        [64, 256, 1, 1].into(),
        &Conv2dParams::default(),
    )
    .unwrap();
    assert_eq!(conv::forward_workspace_len(&pw), 0);
    let dwp = Conv2dParams::default().padding([1, 1]).groups(128);
    let dw = |n| Conv2dGeometry::new([n, 128, 56, 56].into(), [128, 1, 3, 3].into(), &dwp).unwrap();
    assert_eq!(
        conv::forward_workspace_len(&dw(8)),
        conv::forward_workspace_len(&dw(64))
    );
    assert_eq!(
        conv::backward_workspace_len(&dw(8)),
        conv::backward_workspace_len(&dw(64))
    );
    assert!(conv::forward_workspace_len(&dw(8)) <= 8 * 58 * 58);
    let big =
        Conv2dGeometry::new([1, 4, 1000, 1000].into(), [4, 1, 3, 3].into(), &p.groups(4)).unwrap();
    assert!(conv::forward_workspace_len(&big) <= 8 * 40 * 1024);
    assert!(conv::backward_workspace_len(&big) <= 8 * 40 * 1024);
}

#[test]
fn exact_workspace_works_in_any_pool() {
    let (xs, ws_, p) = cases()[1];
    let (x, w) = (
        values(xs.iter().product(), 7),
        values(ws_.iter().product(), 8),
    );
    let (xv, wv) = (
        TensorView::new(xs, &x).unwrap(),
        TensorView::new(ws_, &w).unwrap(),
    );
    let g = Conv2dGeometry::new(xv.shape(), wv.shape(), &p).unwrap();
    let reference = conv::forward(xv, wv, None, &p).unwrap();
    for threads in [1, 2, 8] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut ws = vec![0.0f32; conv::forward_workspace_len(&g)];
        let mut out = vec![0.0f32; reference.data().len()];
        pool.install(|| {
            let ov = TensorViewMut::new(g.out_shape(), &mut out).unwrap();
            conv::forward_into(xv, wv, None, &p, ov, &mut ws).unwrap();
        });
        assert_eq!(out, reference.data());
    }
}

#[test]
fn bad_buffers_are_errors() {
    let p = Conv2dParams::default().padding([1, 1]);
    let (xs, wsh) = ([2, 4, 6, 6], [3, 4, 3, 3]);
    let (x, w) = (values(2 * 4 * 36, 1), values(3 * 4 * 9, 2));
    let (xv, wv) = (
        TensorView::new(xs, &x).unwrap(),
        TensorView::new(wsh, &w).unwrap(),
    );
    let g = Conv2dGeometry::new(xv.shape(), wv.shape(), &p).unwrap();
    let mut ws =
        vec![0.0f32; conv::forward_workspace_len(&g).max(conv::backward_workspace_len(&g))];
    let shape_err =
        |r: cnn_kernels::Result<()>| matches!(r, Err(Error::ShapeMismatch { op: "conv2d", .. }));

    // Forward: wrong output shape (same element count, and a different one), bias length.
    let mut out = vec![0.0f32; 2 * 3 * 36];
    let r = conv::forward_into(
        xv,
        wv,
        None,
        &p,
        TensorViewMut::new([3, 2, 6, 6], &mut out).unwrap(),
        &mut ws,
    );
    assert!(shape_err(r));
    let mut small = vec![0.0f32; 2 * 3 * 35];
    let r = conv::forward_into(
        xv,
        wv,
        None,
        &p,
        TensorViewMut::new([2, 3, 5, 7], &mut small).unwrap(),
        &mut ws,
    );
    assert!(shape_err(r));
    let r = conv::forward_into(
        xv,
        wv,
        Some(&[1.0; 2]),
        &p,
        TensorViewMut::new([2, 3, 6, 6], &mut out).unwrap(),
        &mut ws,
    );
    assert!(shape_err(r));
    assert!(conv::forward(xv, wv, Some(&[1.0; 4]), &p).is_err());
    // Bad parameters reach the same validation as the naive kernel.
    assert!(conv::forward(xv, wv, None, &p.stride([0, 1])).is_err());
    assert!(conv::forward(xv, wv, None, &p.groups(3)).is_err());
    assert!(conv::backward(
        TensorView::new([2, 3, 6, 6], &out).unwrap(),
        xv,
        wv,
        &p.dilation([1, 0])
    )
    .is_err());

    // Backward: dout, dx, dw, db of the wrong shape.
    let dout = values(2 * 3 * 36, 3);
    let dv = TensorView::new([2, 3, 6, 6], &dout).unwrap();
    let (mut dx, mut dw, mut db) = (
        vec![0.0f32; x.len()],
        vec![0.0f32; w.len()],
        vec![0.0f32; 3],
    );
    let mut go = |dxs: [usize; 4], dws: [usize; 4], dbn: usize, dv: TensorView<'_, f32>| {
        conv::backward_into(
            dv,
            xv,
            wv,
            &p,
            TensorViewMut::new(dxs, &mut dx).unwrap(),
            TensorViewMut::new(dws, &mut dw).unwrap(),
            &mut db[..dbn],
            &mut ws,
        )
    };
    assert!(shape_err(go([2, 4, 9, 4], wsh, 3, dv)));
    assert!(shape_err(go(xs, [4, 3, 3, 3], 3, dv)));
    assert!(shape_err(go(xs, wsh, 2, dv)));
    assert!(shape_err(go(
        xs,
        wsh,
        3,
        TensorView::new([2, 3, 4, 9], &dout).unwrap()
    )));
    assert!(go(xs, wsh, 3, dv).is_ok());
}
