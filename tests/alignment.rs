//! The tensors the allocating functions return start on a 64-byte boundary, and hand their
//! elements back intact (`into_vec`, `clone`, `==`).

use cnn_kernels::conv::{self, Conv2dParams};
use cnn_kernels::norm::{self, BatchNormParams, GroupNormParams};
use cnn_kernels::pool::{self, MaxPool2dParams};
use cnn_kernels::{Tensor, TensorView};

fn data(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 1009) as f32 / 500.0 - 1.0)
        .collect()
}

fn check(what: &str, t: Tensor<f32>) {
    assert_eq!(
        t.data().as_ptr() as usize % 64,
        0,
        "{what} is not 64-byte aligned"
    );
    let copy = t.clone();
    assert_eq!(copy, t, "{what}: a clone compares equal");
    let values = t.data().to_vec();
    assert_eq!(
        t.into_vec(),
        values,
        "{what}: into_vec gives the elements back"
    );
}

#[test]
fn allocating_functions_return_aligned_tensors() {
    // Sizes from a few elements (small heap blocks) to several MiB (fresh mappings).
    for x_shape in [[1, 2, 3, 5], [2, 8, 17, 19], [8, 16, 100, 101]] {
        let xs = data(x_shape.iter().product());
        let x = TensorView::new(x_shape, &xs).unwrap();
        let c = x_shape[1];

        let ws = data(4 * c * 9);
        let w = TensorView::new([4, c, 3, 3], &ws).unwrap();
        let p = Conv2dParams::default().padding([1, 1]);
        let y = conv::forward(x, w, None, &p).unwrap();
        let g = conv::backward(y.view(), x, w, &p).unwrap();
        check("conv out", y);
        check("conv dx", g.dx);
        check("conv dw", g.dw);

        let p = MaxPool2dParams::new([2, 2]).stride([1, 1]);
        let (y, idx) = pool::forward_with_indices(x, &p).unwrap();
        check(
            "pool dx (indices)",
            pool::backward_with_indices(y.view(), &idx, &p).unwrap(),
        );
        check("pool dx", pool::backward(y.view(), x, &p).unwrap());
        check("pool out", y);

        let (gamma, beta) = (vec![1.5f32; c], vec![0.25f32; c]);
        let (mut rm, mut rv) = (vec![0.0f32; c], vec![1.0f32; c]);
        let bp = BatchNormParams::default();
        let (y, cache) =
            norm::spatial_batch_norm_forward(x, &gamma, &beta, &mut rm, &mut rv, &bp).unwrap();
        let g = norm::spatial_batch_norm_backward(y.view(), x, &gamma, &cache).unwrap();
        check("spatial bn y", y);
        check("spatial bn dx", g.dx);

        let gp = GroupNormParams::new(2);
        let (y, cache) = norm::group_norm_forward(x, &gamma, &beta, &gp).unwrap();
        let g = norm::group_norm_backward(y.view(), x, &gamma, &cache).unwrap();
        check("gn y", y);
        check("gn dx", g.dx);

        let rows = x_shape[0] * c;
        let x2 = TensorView::new([rows, xs.len() / rows], &xs).unwrap();
        let d = x2.shape().dims()[1];
        let (g2, b2) = (vec![1.0f32; d], vec![0.0f32; d]);
        let (mut rm, mut rv) = (vec![0.0f32; d], vec![1.0f32; d]);
        let (y, cache) = norm::batch_norm_forward(x2, &g2, &b2, &mut rm, &mut rv, &bp).unwrap();
        let g = norm::batch_norm_backward(y.view(), x2, &g2, &cache).unwrap();
        check("bn y", y);
        check("bn dx", g.dx);
    }
    check("zeros", Tensor::<f32>::zeros([3, 1000]).unwrap());
}
