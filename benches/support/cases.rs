//! The benchmark cases, shared by `benches/{conv,pool,norm}.rs` and `examples/report`
//! (each includes this file with `#[path]`: it is the only copy of the case list in Rust).
//!
//! A [`Case`] is a layer on an input of fixed shape; its name is an interface (criterion
//! group names, the report's `case` column, `benches/pytorch/torch_bench.py`). A
//! [`Problem`] is a case with its inputs filled in; [`Problem::run`] runs its naive or fast
//! kernel in either direction. The fast kernels are wired in [`fast`], one function per
//! (layer, direction).
//!
//! Work measures (what the throughput column divides by):
//! - conv: FLOPs, `2·N·F·(C/groups)·KH·KW·OH·OW` per pass, backward counted as 2 passes;
//! - max pool: bytes read and written once — forward `x + out` (`pool::forward`, no
//!   indices), backward `dout + indices + dx` (`pool::backward_with_indices`, the training
//!   path, like PyTorch's backward which reads the indices its forward saved; the indices
//!   take 1 byte per output for windows of up to 256 elements);
//! - batch/group norm: bytes read and written once — forward `x + y`, backward
//!   `x + dy + dx` (the per-channel vectors and statistics are negligible and not counted).

use std::time::Instant;

use cnn_kernels::conv::{self, Conv2dGeometry, Conv2dParams};
use cnn_kernels::norm::{
    self, BatchNormCache, BatchNormParams, GroupNormCache, GroupNormParams, NormGrads,
};
use cnn_kernels::pool::{self, MaxPool2dGeometry, MaxPool2dIndices, MaxPool2dParams};
use cnn_kernels::{Float, Result, Tensor, TensorView};

/// The fast path of each (layer, direction): the one place where a fast kernel is wired in.
///
/// A function returns `None` while its layer's fast path is not merged yet; the report then
/// prints a dash ("fast path not merged yet") and the benches skip it. The naive kernel is
/// never timed under the fast label.
pub mod fast {
    use super::*;

    /// `conv::forward`.
    pub fn conv_forward<T: Float>(
        x: TensorView<'_, T>,
        w: TensorView<'_, T>,
        b: Option<&[T]>,
        p: &Conv2dParams,
    ) -> Option<Result<Tensor<T>>> {
        Some(conv::forward(x, w, b, p))
    }

    /// `conv::backward`.
    pub fn conv_backward<T: Float>(
        dout: TensorView<'_, T>,
        x: TensorView<'_, T>,
        w: TensorView<'_, T>,
        p: &Conv2dParams,
    ) -> Option<Result<conv::Conv2dGrads<T>>> {
        Some(conv::backward(dout, x, w, p))
    }

    /// `pool::forward`.
    pub fn pool_forward<T: Float>(
        x: TensorView<'_, T>,
        p: &MaxPool2dParams,
    ) -> Option<Result<Tensor<T>>> {
        Some(pool::forward(x, p))
    }

    /// `pool::backward_with_indices` (the training path: the winners recorded by
    /// `pool::forward_with_indices`).
    pub fn pool_backward<T: Float>(
        dout: TensorView<'_, T>,
        indices: &MaxPool2dIndices,
        p: &MaxPool2dParams,
    ) -> Option<Result<Tensor<T>>> {
        Some(pool::backward_with_indices(dout, indices, p))
    }

    /// `norm::spatial_batch_norm_forward`.
    pub fn bn_forward<T: Float>(
        x: TensorView<'_, T>,
        gamma: &[T],
        beta: &[T],
        running_mean: &mut [T],
        running_var: &mut [T],
        p: &BatchNormParams,
    ) -> Option<Result<(Tensor<T>, BatchNormCache<T>)>> {
        Some(norm::spatial_batch_norm_forward(
            x,
            gamma,
            beta,
            running_mean,
            running_var,
            p,
        ))
    }

    /// `norm::spatial_batch_norm_backward`.
    pub fn bn_backward<T: Float>(
        dout: TensorView<'_, T>,
        x: TensorView<'_, T>,
        gamma: &[T],
        cache: &BatchNormCache<T>,
    ) -> Option<Result<NormGrads<T>>> {
        Some(norm::spatial_batch_norm_backward(dout, x, gamma, cache))
    }

    /// `norm::group_norm_forward`.
    pub fn gn_forward<T: Float>(
        x: TensorView<'_, T>,
        gamma: &[T],
        beta: &[T],
        p: &GroupNormParams,
    ) -> Option<Result<(Tensor<T>, GroupNormCache<T>)>> {
        Some(norm::group_norm_forward(x, gamma, beta, p))
    }

    /// `norm::group_norm_backward`.
    pub fn gn_backward<T: Float>(
        dout: TensorView<'_, T>,
        x: TensorView<'_, T>,
        gamma: &[T],
        cache: &GroupNormCache<T>,
    ) -> Option<Result<NormGrads<T>>> {
        Some(norm::group_norm_backward(dout, x, gamma, cache))
    }
}

/// The layer a case runs, with its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Layer {
    /// Convolution with weights of shape `w` `(F, C/groups, KH, KW)` and a bias.
    Conv {
        /// Weight shape.
        w: [usize; 4],
        /// Stride, padding, dilation, groups.
        p: Conv2dParams,
    },
    /// Max pooling.
    Pool(MaxPool2dParams),
    /// Spatial batch norm, train mode (batch statistics, running statistics updated).
    BatchNorm,
    /// Spatial group norm with this many groups.
    GroupNorm(usize),
}

/// A benchmark case: a named layer on an input `x` of shape `(N, C, H, W)`, f32 or f64.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Case {
    /// The case's name (an interface: keep it stable).
    pub name: &'static str,
    /// Input shape `(N, C, H, W)`.
    pub x: [usize; 4],
    /// The layer.
    pub layer: Layer,
}

/// Forward or backward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Forward pass.
    Fwd,
    /// Backward pass (all gradients: dx, dw, db or dx, dgamma, dbeta).
    Bwd,
}

impl Dir {
    /// Both directions, forward first.
    pub const BOTH: [Dir; 2] = [Dir::Fwd, Dir::Bwd];

    /// `fwd` or `bwd`, the `direction` column.
    pub fn label(self) -> &'static str {
        match self {
            Dir::Fwd => "fwd",
            Dir::Bwd => "bwd",
        }
    }
}

/// Which kernel to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imp {
    /// The reference loops (`*::naive::*`).
    Naive,
    /// The fast path, as wired in [`fast`].
    Fast,
}

const fn conv(
    name: &'static str,
    x: [usize; 4],
    w: [usize; 4],
    stride: usize,
    padding: usize,
    dilation: usize,
    groups: usize,
) -> Case {
    let p = Conv2dParams {
        stride: [stride, stride],
        padding: [padding, padding],
        dilation: [dilation, dilation],
        groups,
    };
    Case {
        name,
        x,
        layer: Layer::Conv { w, p },
    }
}

const fn max_pool(
    name: &'static str,
    x: [usize; 4],
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Case {
    let p = MaxPool2dParams {
        kernel: [kernel, kernel],
        stride: [stride, stride],
        padding: [padding, padding],
    };
    Case {
        name,
        x,
        layer: Layer::Pool(p),
    }
}

const fn bn(name: &'static str, x: [usize; 4]) -> Case {
    Case {
        name,
        x,
        layer: Layer::BatchNorm,
    }
}

const fn gn(name: &'static str, x: [usize; 4], groups: usize) -> Case {
    Case {
        name,
        x,
        layer: Layer::GroupNorm(groups),
    }
}

/// Every case, in report order: conv, then pool, then norm.
pub const CASES: &[Case] = &[
    conv(
        "conv_cs231n_fast",
        [100, 3, 31, 31],
        [25, 3, 3, 3],
        2,
        1,
        1,
        1,
    ),
    conv(
        "conv_cs231n_net",
        [50, 3, 32, 32],
        [32, 3, 7, 7],
        1,
        3,
        1,
        1,
    ),
    conv(
        "conv_resnet_3x3_56",
        [8, 64, 56, 56],
        [64, 64, 3, 3],
        1,
        1,
        1,
        1,
    ),
    conv(
        "conv_resnet_3x3_14",
        [8, 256, 14, 14],
        [256, 256, 3, 3],
        1,
        1,
        1,
        1,
    ),
    conv(
        "conv_resnet_stem",
        [8, 3, 224, 224],
        [64, 3, 7, 7],
        2,
        3,
        1,
        1,
    ),
    conv(
        "conv_pointwise_56",
        [8, 256, 56, 56],
        [64, 256, 1, 1],
        1,
        0,
        1,
        1,
    ),
    conv(
        "conv_depthwise_56",
        [8, 128, 56, 56],
        [128, 1, 3, 3],
        1,
        1,
        1,
        128,
    ),
    conv(
        "conv_dilated_28",
        [8, 128, 28, 28],
        [128, 128, 3, 3],
        1,
        2,
        2,
        1,
    ),
    max_pool("pool_cs231n_fast", [100, 3, 32, 32], 2, 2, 0),
    max_pool("pool_cs231n_net", [50, 32, 32, 32], 2, 2, 0),
    max_pool("pool_resnet_stem", [8, 64, 112, 112], 3, 2, 1),
    max_pool("pool_vgg", [8, 128, 112, 112], 2, 2, 0),
    bn("bn_cs231n_net", [50, 32, 32, 32]),
    bn("bn_resnet_56", [8, 64, 56, 56]),
    bn("bn_resnet_14", [8, 256, 14, 14]),
    gn("gn_cs231n_net", [50, 32, 32, 32], 8),
    gn("gn_resnet_56", [8, 64, 56, 56], 32),
    gn("gn_resnet_14", [8, 256, 14, 14], 32),
];

/// Naive-cost budget of the smaller instance used for the error check: FLOPs of one conv
/// forward, or input elements of the memory-bound layers.
const SMALL_CONV_FLOPS: f64 = 3.0e7;
const SMALL_ELEMENTS: f64 = 2.0e5;

impl Case {
    /// The `op` column: `conv`, `pool`, `bn` or `gn`.
    pub fn op(&self) -> &'static str {
        match self.layer {
            Layer::Conv { .. } => "conv",
            Layer::Pool(_) => "pool",
            Layer::BatchNorm => "bn",
            Layer::GroupNorm(_) => "gn",
        }
    }

    /// Whether throughput is in FLOPs (conv) rather than bytes.
    pub fn counts_flops(&self) -> bool {
        matches!(self.layer, Layer::Conv { .. })
    }

    /// `GFLOP/s` or `GB/s`.
    pub fn unit(&self) -> &'static str {
        if self.counts_flops() {
            "GFLOP/s"
        } else {
            "GB/s"
        }
    }

    /// Work of one pass in `dir` with elements of `elem_bytes` bytes: FLOPs for conv, bytes
    /// otherwise (see the module docs for what is counted).
    pub fn work(&self, dir: Dir, elem_bytes: usize) -> f64 {
        let x_len = self.x.iter().product::<usize>() as f64;
        let eb = elem_bytes as f64;
        match self.layer {
            Layer::Conv { w, p } => {
                let g = Conv2dGeometry::new(self.x.into(), w.into(), &p)
                    .expect("benchmark cases are valid");
                match dir {
                    Dir::Fwd => g.flops(),
                    Dir::Bwd => 2.0 * g.flops(),
                }
            }
            Layer::Pool(p) => {
                let g =
                    MaxPool2dGeometry::new(self.x.into(), &p).expect("benchmark cases are valid");
                let out_len = g.out_shape().iter().product::<usize>() as f64;
                match dir {
                    Dir::Fwd => (x_len + out_len) * eb,
                    Dir::Bwd => {
                        let index_bytes = match p.kernel[0] * p.kernel[1] {
                            0..=256 => 1.0,
                            257..=65536 => 2.0,
                            _ => 4.0,
                        };
                        out_len * (eb + index_bytes) + x_len * eb
                    }
                }
            }
            Layer::BatchNorm | Layer::GroupNorm(_) => match dir {
                Dir::Fwd => 2.0 * x_len * eb,
                Dir::Bwd => 3.0 * x_len * eb,
            },
        }
    }

    /// What the naive kernel's cost grows with: forward FLOPs for conv, input elements
    /// otherwise. Used to extrapolate the naive time from a smaller instance.
    pub fn naive_cost(&self) -> f64 {
        match self.layer {
            Layer::Conv { .. } => self.work(Dir::Fwd, 4),
            _ => self.x.iter().product::<usize>() as f64,
        }
    }

    /// The same case on `n` images (the report's `--batch`).
    pub fn with_batch(&self, n: usize) -> Case {
        let mut c = *self;
        c.x[0] = n;
        c
    }

    /// The same layer (same parameters and channels) on fewer images and a smaller spatial
    /// size, cheap enough for the naive kernel: at most 2 images, then the height and width
    /// halved while the naive cost is over budget (but never below twice the dilated kernel,
    /// or 8), then 1 image if still over budget.
    pub fn small(&self) -> Case {
        let (budget, extent) = match self.layer {
            Layer::Conv { w, p } => (
                SMALL_CONV_FLOPS,
                [
                    p.dilation[0] * (w[2] - 1) + 1,
                    p.dilation[1] * (w[3] - 1) + 1,
                ],
            ),
            Layer::Pool(p) => (SMALL_ELEMENTS, p.kernel),
            _ => (SMALL_ELEMENTS, [1, 1]),
        };
        let min_hw = [(2 * extent[0]).max(8), (2 * extent[1]).max(8)];
        let mut s = *self;
        s.x[0] = s.x[0].min(2);
        while s.naive_cost() > budget {
            let next = [
                s.x[2].div_ceil(2).max(min_hw[0]).min(s.x[2]),
                s.x[3].div_ceil(2).max(min_hw[1]).min(s.x[3]),
            ];
            if next == [s.x[2], s.x[3]] {
                break;
            }
            s.x[2] = next[0];
            s.x[3] = next[1];
        }
        if s.naive_cost() > budget {
            s.x[0] = 1;
        }
        s
    }
}

/// SplitMix64: a tiny deterministic generator for benchmark inputs.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `len` values uniform in `[lo, hi)`.
    fn vec<T: Float>(&mut self, len: usize, lo: f64, hi: f64) -> Vec<T> {
        (0..len)
            .map(|_| T::from_f64(lo + (hi - lo) * self.next_f64()))
            .collect()
    }
}

/// The named output tensors of one run (`out`; `dx`, `dw`, `db`; `y`; `dx`, `dgamma`,
/// `dbeta`), as returned (vectors as 1-d tensors): nothing is copied inside the timing.
pub type Outputs<T> = Vec<(&'static str, Tensor<T>)>;

/// `v` copied into a 1-d tensor whose elements start on a 64-byte boundary.
fn aligned<T: Float>(v: Vec<T>) -> Result<Tensor<T>> {
    let mut t = Tensor::zeros([v.len()])?;
    t.data_mut().copy_from_slice(&v);
    Ok(t)
}

/// A returned vector (`db`, `dgamma`, running statistics) as a 1-d output.
fn vec_out<T: Float>(v: Vec<T>) -> Tensor<T> {
    Tensor::from_vec([v.len()], v).expect("a 1-d shape holds any length")
}

/// Layer-specific inputs of a [`Problem`].
enum Inputs<T> {
    Conv {
        w: Vec<T>,
        b: Vec<T>,
    },
    Pool {
        indices: MaxPool2dIndices,
    },
    Bn {
        gamma: Vec<T>,
        beta: Vec<T>,
        cache: BatchNormCache<T>,
    },
    Gn {
        gamma: Vec<T>,
        beta: Vec<T>,
        cache: GroupNormCache<T>,
    },
}

/// A case with its inputs: `x`, the upstream gradient `dout` (shape of the output) and the
/// layer's parameters, uniform random from a fixed seed. Norm problems also hold the naive
/// forward's cache, which both backward kernels take (so a backward error measures the
/// backward alone).
pub struct Problem<T> {
    /// The case (possibly a [`Case::small`] instance).
    pub case: Case,
    /// `x` and `dout` start on a 64-byte boundary, like the crate's outputs that a network
    /// feeds to its next layer (and like PyTorch's tensors).
    x: Tensor<T>,
    dout: Tensor<T>,
    inputs: Inputs<T>,
}

fn bn_params() -> BatchNormParams {
    BatchNormParams::default()
}

fn gn_params(groups: usize) -> GroupNormParams {
    GroupNormParams::new(groups)
}

impl<T: Float> Problem<T> {
    /// Fills in the inputs of `case`.
    pub fn new(case: &Case) -> Result<Self> {
        let mut rng = Rng(0x5EED ^ case.name.len() as u64);
        let x_len = case.x.iter().product();
        let x = aligned(rng.vec(x_len, -1.0, 1.0))?;
        let xv = TensorView::new(case.x, x.data())?;
        let (out_len, inputs) = match case.layer {
            Layer::Conv { w, p } => {
                let g = Conv2dGeometry::new(case.x.into(), w.into(), &p)?;
                let fan_in = (g.cg * g.kh * g.kw) as f64;
                let bound = 1.0 / fan_in.sqrt();
                let inputs = Inputs::Conv {
                    w: rng.vec(w.iter().product(), -bound, bound),
                    b: rng.vec(g.f, -bound, bound),
                };
                (g.out_shape().iter().product(), inputs)
            }
            Layer::Pool(p) => {
                let g = MaxPool2dGeometry::new(case.x.into(), &p)?;
                let (_, indices) = pool::forward_with_indices(xv, &p)?;
                (g.out_shape().iter().product(), Inputs::Pool { indices })
            }
            Layer::BatchNorm => {
                let c = case.x[1];
                let (gamma, beta) = (rng.vec(c, 0.5, 1.5), rng.vec(c, -0.5, 0.5));
                let (mut rm, mut rv) = (vec![T::ZERO; c], vec![T::ONE; c]);
                let (_, cache) = norm::naive::spatial_batch_norm_forward(
                    xv,
                    &gamma,
                    &beta,
                    &mut rm,
                    &mut rv,
                    &bn_params(),
                )?;
                (x_len, Inputs::Bn { gamma, beta, cache })
            }
            Layer::GroupNorm(groups) => {
                let c = case.x[1];
                let (gamma, beta) = (rng.vec(c, 0.5, 1.5), rng.vec(c, -0.5, 0.5));
                let (_, cache) =
                    norm::naive::group_norm_forward(xv, &gamma, &beta, &gn_params(groups))?;
                (x_len, Inputs::Gn { gamma, beta, cache })
            }
        };
        let dout = aligned(rng.vec(out_len, -1.0, 1.0))?;
        Ok(Problem {
            case: *case,
            x,
            dout,
            inputs,
        })
    }

    /// Runs `imp` in direction `dir` and returns its outputs; `None` if `imp` is
    /// [`Imp::Fast`] and this layer's fast path is not merged yet.
    pub fn run(&self, imp: Imp, dir: Dir) -> Option<Result<Outputs<T>>> {
        let case = &self.case;
        let x = TensorView::new(case.x, self.x.data()).expect("x matches its case");
        let naive = imp == Imp::Naive;
        match (&self.inputs, case.layer) {
            (Inputs::Conv { w, b }, Layer::Conv { w: ws, p }) => {
                let wv = TensorView::new(ws, w).expect("w matches its case");
                match dir {
                    Dir::Fwd => {
                        let r = if naive {
                            Some(conv::naive::forward(x, wv, Some(b), &p))
                        } else {
                            fast::conv_forward(x, wv, Some(b), &p)
                        };
                        r.map(|r| r.map(|out| vec![("out", out)]))
                    }
                    Dir::Bwd => {
                        let d = self.dout_view(case.x[0], ws[0]);
                        let r = if naive {
                            Some(conv::naive::backward(d, x, wv, &p))
                        } else {
                            fast::conv_backward(d, x, wv, &p)
                        };
                        r.map(|r| {
                            r.map(|g| vec![("dx", g.dx), ("dw", g.dw), ("db", vec_out(g.db))])
                        })
                    }
                }
            }
            (Inputs::Pool { indices }, Layer::Pool(p)) => {
                let r = match dir {
                    Dir::Fwd if naive => Some(pool::naive::forward(x, &p)),
                    Dir::Fwd => fast::pool_forward(x, &p),
                    Dir::Bwd => {
                        let d = self.dout_view(case.x[0], case.x[1]);
                        if naive {
                            Some(pool::naive::backward(d, x, &p))
                        } else {
                            fast::pool_backward(d, indices, &p)
                        }
                    }
                };
                let name = if dir == Dir::Fwd { "out" } else { "dx" };
                r.map(|r| r.map(|t| vec![(name, t)]))
            }
            (Inputs::Bn { gamma, beta, cache }, Layer::BatchNorm) => match dir {
                Dir::Fwd => {
                    let c = case.x[1];
                    let (mut rm, mut rv) = (vec![T::ZERO; c], vec![T::ONE; c]);
                    let p = bn_params();
                    let r = if naive {
                        Some(norm::naive::spatial_batch_norm_forward(
                            x, gamma, beta, &mut rm, &mut rv, &p,
                        ))
                    } else {
                        fast::bn_forward(x, gamma, beta, &mut rm, &mut rv, &p)
                    };
                    r.map(|r| {
                        r.map(|(y, _)| {
                            vec![
                                ("y", y),
                                ("running_mean", vec_out(rm)),
                                ("running_var", vec_out(rv)),
                            ]
                        })
                    })
                }
                Dir::Bwd => {
                    let d = TensorView::new(case.x, self.dout.data()).expect("dout is x-shaped");
                    let r = if naive {
                        Some(norm::naive::spatial_batch_norm_backward(d, x, gamma, cache))
                    } else {
                        fast::bn_backward(d, x, gamma, cache)
                    };
                    r.map(|r| r.map(norm_grads))
                }
            },
            (Inputs::Gn { gamma, beta, cache }, Layer::GroupNorm(groups)) => match dir {
                Dir::Fwd => {
                    let p = gn_params(groups);
                    let r = if naive {
                        Some(norm::naive::group_norm_forward(x, gamma, beta, &p))
                    } else {
                        fast::gn_forward(x, gamma, beta, &p)
                    };
                    r.map(|r| r.map(|(y, _)| vec![("y", y)]))
                }
                Dir::Bwd => {
                    let d = TensorView::new(case.x, self.dout.data()).expect("dout is x-shaped");
                    let r = if naive {
                        Some(norm::naive::group_norm_backward(d, x, gamma, cache))
                    } else {
                        fast::gn_backward(d, x, gamma, cache)
                    };
                    r.map(|r| r.map(norm_grads))
                }
            },
            _ => unreachable!("a problem's inputs always match its layer"),
        }
    }

    /// `dout` viewed as `(N, channels, OH, OW)`, OH·OW inferred from its length.
    fn dout_view(&self, n: usize, channels: usize) -> TensorView<'_, T> {
        let plane = self.dout.data().len() / (n * channels);
        let (oh, ow) = self.out_hw();
        assert_eq!(plane, oh * ow, "dout holds the output shape");
        TensorView::new([n, channels, oh, ow], self.dout.data()).expect("dout matches the output")
    }

    fn out_hw(&self) -> (usize, usize) {
        match self.case.layer {
            Layer::Conv { w, p } => {
                let g = Conv2dGeometry::new(self.case.x.into(), w.into(), &p).expect("valid");
                (g.oh, g.ow)
            }
            Layer::Pool(p) => {
                let g = MaxPool2dGeometry::new(self.case.x.into(), &p).expect("valid");
                (g.oh, g.ow)
            }
            _ => (self.case.x[2], self.case.x[3]),
        }
    }
}

fn norm_grads<T: Float>(g: NormGrads<T>) -> Outputs<T> {
    vec![
        ("dx", g.dx),
        ("dgamma", vec_out(g.dgamma)),
        ("dbeta", vec_out(g.dbeta)),
    ]
}

/// The error metric: per output tensor, `max |fast − naive| / max(1, max |naive|)`; the
/// maximum over the outputs. Outputs are matched by name; a missing output or a length
/// mismatch counts as infinite error.
pub fn max_error<T: Float>(fast: &Outputs<T>, naive: &Outputs<T>) -> f64 {
    let mut worst = 0.0f64;
    for (name, want) in naive {
        let Some((_, got)) = fast.iter().find(|(n, _)| n == name) else {
            return f64::INFINITY;
        };
        let (got, want) = (got.data(), want.data());
        if got.len() != want.len() {
            return f64::INFINITY;
        }
        let scale = want.iter().fold(1.0f64, |m, v| m.max(v.to_f64().abs()));
        let diff = got.iter().zip(want).fold(0.0f64, |m, (a, b)| {
            let d = (a.to_f64() - b.to_f64()).abs();
            // NaN anywhere is an infinite error, not a silently ignored one.
            if d.is_nan() {
                f64::INFINITY
            } else {
                m.max(d)
            }
        });
        worst = worst.max(diff / scale);
    }
    worst
}

/// Seconds one call of `f` takes, with its result.
pub fn time_once<R>(f: impl FnOnce() -> R) -> (R, f64) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed().as_secs_f64())
}

/// Estimated seconds of one naive pass of `case` in `dir`: the fastest of three timed calls
/// of the naive kernel on `small` (after one untimed call), scaled by the ratio of naive
/// costs.
pub fn estimate_naive_seconds<T: Float>(case: &Case, small: &Problem<T>, dir: Dir) -> f64 {
    let _ = small.run(Imp::Naive, dir);
    let t = (0..3)
        .map(|_| time_once(|| small.run(Imp::Naive, dir)).1)
        .fold(f64::INFINITY, f64::min);
    t * case.naive_cost() / small.case.naive_cost()
}
