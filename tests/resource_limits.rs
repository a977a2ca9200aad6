//! Resource limits: the allocating API refuses outputs and workspaces above
//! [`MAX_ALLOC_BYTES`] with `Error::TooLarge` *before* allocating (tiny inputs, huge
//! outputs), size arithmetic on huge but valid geometries never overflows (these tests run
//! with debug assertions, where an overflow panics), and the allocation-free `_into` forms
//! refuse buffers of the wrong size instead of writing out of bounds.

use cnn_kernels::conv::{self, Conv2dGeometry, Conv2dParams};
use cnn_kernels::norm::{self, GroupNormGeometry};
use cnn_kernels::pool::{self, MaxPool2dGeometry, MaxPool2dParams};
use cnn_kernels::simd::{self, Level};
use cnn_kernels::{Error, Shape, TensorView, TensorViewMut, MAX_ALLOC_BYTES};

fn too_large<T: std::fmt::Debug>(what: &str, r: cnn_kernels::Result<T>) {
    match r {
        Err(Error::TooLarge { .. }) => {}
        other => panic!("{what}: expected Error::TooLarge, got {other:?}"),
    }
}

/// A 1×1 input and kernel with padding 2²⁰ give a (2²¹ + 1)² ≈ 4.4·10¹² element output:
/// 17.6 TB in f32, far above the 16 GiB limit. Every allocating conv forward refuses it
/// with `TooLarge` (the limit check, not a failed allocation), at every SIMD level.
#[test]
fn conv_forward_refuses_an_output_over_the_limit() {
    let p = Conv2dParams::default().padding([1 << 20, 1 << 20]);
    let g = Conv2dGeometry::new([1, 1, 1, 1].into(), [1, 1, 1, 1].into(), &p).unwrap();
    let out_elems: u128 = g.out_shape().iter().map(|&d| d as u128).product();
    assert!(out_elems * 4 > MAX_ALLOC_BYTES as u128);
    // The workspace functions give a size for this geometry without overflowing.
    conv::forward_workspace_len(&g);
    conv::backward_workspace_len(&g);
    let (x32, w32) = ([1.0f32], [1.0f32]);
    let (x64, w64) = ([1.0f64], [1.0f64]);
    let xv32 = TensorView::new([1, 1, 1, 1], &x32[..]).unwrap();
    let wv32 = TensorView::new([1, 1, 1, 1], &w32[..]).unwrap();
    let xv64 = TensorView::new([1, 1, 1, 1], &x64[..]).unwrap();
    let wv64 = TensorView::new([1, 1, 1, 1], &w64[..]).unwrap();
    too_large("naive f32", conv::naive::forward(xv32, wv32, None, &p));
    too_large(
        "naive f64",
        conv::naive::forward(xv64, wv64, Some(&[0.5]), &p),
    );
    for level in simd::supported_levels() {
        simd::set_max_level(level);
        too_large("fast f32", conv::forward(xv32, wv32, None, &p));
        too_large("fast f64", conv::forward(xv64, wv64, Some(&[0.5]), &p));
        // The allocation-free form with a small output buffer is a shape error.
        let mut out = [0.0f32; 4];
        let mut ws = vec![0.0f32; 64];
        let ov = TensorViewMut::new([1, 1, 2, 2], &mut out[..]).unwrap();
        let r = conv::forward_into(xv32, wv32, None, &p, ov, &mut ws);
        assert!(
            matches!(r, Err(Error::ShapeMismatch { .. })),
            "forward_into: {r:?}"
        );
    }
    simd::set_max_level(Level::Avx512);
}

/// An output whose element count overflows `usize` is refused by the geometry (and so by
/// every entry point), naming the overflow.
#[test]
fn conv_output_count_overflow_is_an_error() {
    let p = Conv2dParams::default().padding([1 << 40, 1 << 40]);
    let e = Conv2dGeometry::new([1, 1, 1, 1].into(), [1, 1, 1, 1].into(), &p).unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    assert!(e.to_string().contains("overflows"), "{e}");
    let x = [1.0f32];
    let xv = TensorView::new([1, 1, 1, 1], &x[..]).unwrap();
    too_large("naive", conv::naive::forward(xv, xv, None, &p));
    too_large("fast", conv::forward(xv, xv, None, &p));
    // Padding so large that the padded length itself overflows.
    let p = Conv2dParams::default().padding([usize::MAX / 2 + 1, 0]);
    too_large("padded length", conv::forward(xv, xv, None, &p));
}

/// Huge but valid geometries (no tensor that large exists): the workspace functions
/// compute their sizes without overflowing (they may saturate).
#[test]
fn workspace_functions_do_not_overflow_on_huge_geometries() {
    let big = [
        ([1 << 31, 1 << 31, 1, 1], [1, 1 << 31, 1, 1]),
        ([1, 1 << 20, 1 << 20, 1 << 20], [1 << 20, 1 << 20, 1, 1]),
        ([1, 1, 1 << 31, 1 << 31], [1, 1, 1, 1]),
        ([1 << 60, 1, 1, 1], [1, 1, 1, 1]),
    ];
    for (xs, ws) in big {
        let p = Conv2dParams::default();
        if let Ok(g) = Conv2dGeometry::new(xs.into(), ws.into(), &p) {
            conv::forward_workspace_len(&g);
            conv::backward_workspace_len(&g);
        }
    }
    for xs in [
        [1usize << 62, 2, 1, 1],
        [1, 1 << 62, 2, 1],
        [1 << 31, 1 << 31, 2, 2],
    ] {
        let c = xs[1];
        if let Ok(g) = GroupNormGeometry::new("group_norm", Shape::from(xs), 1, c, c) {
            let n = norm::group_norm_backward_workspace_len(&g);
            assert!(n >= g.n.saturating_mul(g.c), "{xs:?}: workspace {n}");
        }
    }
}

/// A window of more than 2³² elements cannot be indexed: `forward_with_indices` refuses it
/// with `TooLarge` while the plain forward and backward (1×1 input, 1×1 output) work.
#[test]
fn pool_indices_refuse_windows_they_cannot_index() {
    let p = MaxPool2dParams::new([1 << 33, 1]).padding([1 << 32, 0]);
    let g = MaxPool2dGeometry::new([1, 1, 1, 1].into(), &p).unwrap();
    assert_eq!(g.out_shape(), [1, 1, 1, 1]);
    let x = [3.0f32];
    let xv = TensorView::new([1, 1, 1, 1], &x[..]).unwrap();
    assert_eq!(pool::forward(xv, &p).unwrap().data(), &[3.0]);
    assert_eq!(pool::backward(xv, xv, &p).unwrap().data(), &[3.0]);
    too_large("forward_with_indices", pool::forward_with_indices(xv, &p));
    too_large("indices", pool::MaxPool2dIndices::new(&g));
}

/// The limit is the documented 16 GiB.
#[test]
fn the_limit_is_sixteen_gib() {
    assert_eq!(MAX_ALLOC_BYTES, 16 << 30);
}
