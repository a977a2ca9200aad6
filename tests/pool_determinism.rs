//! The fast max-pool kernels give bitwise the same outputs, winners and gradients for any
//! rayon thread count (one task per plane, no shared accumulators).

use cnn_kernels::pool::{self, MaxPool2dParams};
use cnn_kernels::Tensor;

fn input(shape: [usize; 4], seed: u64) -> Tensor<f32> {
    let n: usize = shape.iter().product();
    let mut s = seed;
    let v = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Few distinct values: many ties and overlapping winners.
            ((s >> 40) % 7) as f32 - 3.0
        })
        .collect();
    Tensor::from_vec(shape, v).unwrap()
}

/// Output bits, winners (plane indices), recomputed-backward bits, stored-index-backward bits.
type Run = (Vec<u32>, Vec<Option<usize>>, Vec<u32>, Vec<u32>);

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn same_bits_for_1_2_3_8_threads() {
    let cases = [
        ([4, 5, 33, 35], MaxPool2dParams::new([2, 2])),
        (
            [3, 4, 29, 30],
            MaxPool2dParams::new([3, 3]).stride([2, 2]).padding([1, 1]),
        ),
        (
            [2, 6, 20, 41],
            MaxPool2dParams::new([3, 3]).stride([1, 1]).padding([1, 1]),
        ),
        ([2, 3, 18, 19], MaxPool2dParams::new([4, 5]).stride([3, 1])),
    ];
    for (k, (shape, p)) in cases.into_iter().enumerate() {
        let x = input(shape, k as u64 + 1);
        let mut reference: Option<Run> = None;
        for threads in [1, 2, 3, 8] {
            let tp = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let got = tp.install(|| {
                let (out, ix) = pool::forward_with_indices(x.view(), &p).unwrap();
                let dout = input(out.shape().dims().try_into().unwrap(), 99);
                let d1 = pool::backward(dout.view(), x.view(), &p).unwrap();
                let d2 = pool::backward_with_indices(dout.view(), &ix, &p).unwrap();
                let [n, c, oh, ow] = ix.out_shape();
                let mut flat = Vec::new();
                for a in 0..n {
                    for b in 0..c {
                        for i in 0..oh {
                            for j in 0..ow {
                                flat.push(ix.flat_index(a, b, i, j));
                            }
                        }
                    }
                }
                (bits(out.data()), flat, bits(d1.data()), bits(d2.data()))
            });
            assert_eq!(
                got.2, got.3,
                "case {k}: recomputed and stored-index backward"
            );
            match &reference {
                None => reference = Some(got),
                Some(r) => assert!(*r == got, "case {k}: {threads} threads differ from 1"),
            }
        }
    }
}
