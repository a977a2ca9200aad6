//! The CS231n three-layer convnet on the crate's kernels:
//! `conv 7×7 (pad 3) [→ spatial batch norm] → ReLU → 2×2 max pool → affine → ReLU → affine
//! → softmax`.
//!
//! Convolution, pooling and batch norm are the crate's kernels, chosen per call by
//! [`Backend`]; the affine layers use `matrixmultiply` (a dependency of the crate), ReLU and
//! the softmax loss are written out here.

use std::time::{Duration, Instant};

use cnn_kernels::conv::{self, Conv2dParams};
use cnn_kernels::norm::{self, BatchNormCache, BatchNormMode, BatchNormParams};
use cnn_kernels::pool::{self, MaxPool2dIndices, MaxPool2dParams};
use cnn_kernels::{Result, Tensor, TensorView};

use crate::rng::Rng;

/// Which kernels run the conv, pool and batch-norm layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The reference loops (`conv::naive`, `pool::naive`, `norm::naive`).
    Naive,
    /// The fast kernels (`conv::forward`, `pool::forward`, `norm::spatial_batch_norm_*`, …).
    Fast,
}

impl Backend {
    /// A name for printing.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Naive => "naive",
            Backend::Fast => "fast",
        }
    }

    fn conv_forward(
        self,
        x: TensorView<'_, f32>,
        w: TensorView<'_, f32>,
        b: &[f32],
        p: &Conv2dParams,
    ) -> Result<Tensor<f32>> {
        match self {
            Backend::Naive => conv::naive::forward(x, w, Some(b), p),
            Backend::Fast => conv::forward(x, w, Some(b), p),
        }
    }

    fn conv_backward(
        self,
        dout: TensorView<'_, f32>,
        x: TensorView<'_, f32>,
        w: TensorView<'_, f32>,
        p: &Conv2dParams,
    ) -> Result<conv::Conv2dGrads<f32>> {
        match self {
            Backend::Naive => conv::naive::backward(dout, x, w, p),
            Backend::Fast => conv::backward(dout, x, w, p),
        }
    }

    /// Max-pool forward; the fast path also records the winners so that the backward need
    /// not search the windows again.
    fn pool_forward(
        self,
        x: TensorView<'_, f32>,
        p: &MaxPool2dParams,
    ) -> Result<(Tensor<f32>, Option<MaxPool2dIndices>)> {
        match self {
            Backend::Naive => Ok((pool::naive::forward(x, p)?, None)),
            Backend::Fast => pool::forward_with_indices(x, p).map(|(y, i)| (y, Some(i))),
        }
    }

    fn pool_backward(
        self,
        dout: TensorView<'_, f32>,
        x: TensorView<'_, f32>,
        indices: Option<&MaxPool2dIndices>,
        p: &MaxPool2dParams,
    ) -> Result<Tensor<f32>> {
        match (self, indices) {
            (Backend::Naive, _) => pool::naive::backward(dout, x, p),
            (Backend::Fast, Some(idx)) => pool::backward_with_indices(dout, idx, p),
            (Backend::Fast, None) => pool::backward(dout, x, p),
        }
    }

    fn bn_forward(
        self,
        x: TensorView<'_, f32>,
        bn: &mut BatchNorm,
        p: &BatchNormParams,
    ) -> Result<(Tensor<f32>, BatchNormCache<f32>)> {
        let (g, b) = (&bn.gamma.value, &bn.beta.value);
        let (rm, rv) = (&mut bn.running_mean, &mut bn.running_var);
        match self {
            Backend::Naive => norm::naive::spatial_batch_norm_forward(x, g, b, rm, rv, p),
            Backend::Fast => norm::spatial_batch_norm_forward(x, g, b, rm, rv, p),
        }
    }

    fn bn_backward(
        self,
        dout: TensorView<'_, f32>,
        x: TensorView<'_, f32>,
        gamma: &[f32],
        cache: &BatchNormCache<f32>,
    ) -> Result<norm::NormGrads<f32>> {
        match self {
            Backend::Naive => norm::naive::spatial_batch_norm_backward(dout, x, gamma, cache),
            Backend::Fast => norm::spatial_batch_norm_backward(dout, x, gamma, cache),
        }
    }
}

/// Shapes and initialisation of the network.
#[derive(Debug, Clone)]
pub struct Config {
    /// Input `(C, H, W)`; H and W even.
    pub input: [usize; 3],
    /// Conv filters.
    pub filters: usize,
    /// Conv kernel side (odd; padding keeps the size).
    pub filter_size: usize,
    /// Hidden units of the first affine layer.
    pub hidden: usize,
    /// Classes.
    pub classes: usize,
    /// Spatial batch norm after the conv.
    pub batchnorm: bool,
    /// Weight init: `None` for He (`N(0, 2/fan_in)`), `Some(s)` for `N(0, s²)`.
    pub weight_scale: Option<f32>,
    /// L2 regularisation strength.
    pub reg: f32,
}

/// A trainable tensor: value, gradient and momentum velocity.
#[derive(Debug, Clone)]
pub struct Param {
    /// The values.
    pub value: Vec<f32>,
    /// The gradient of the last `train_step`.
    pub grad: Vec<f32>,
    velocity: Vec<f32>,
}

impl Param {
    fn new(value: Vec<f32>) -> Self {
        let n = value.len();
        Param {
            value,
            grad: vec![0.0; n],
            velocity: vec![0.0; n],
        }
    }
    fn init(n: usize, fan_in: usize, scale: Option<f32>, rng: &mut Rng) -> Self {
        let s = scale.unwrap_or((2.0 / fan_in as f32).sqrt());
        Param::new((0..n).map(|_| s * rng.normal()).collect())
    }
}

/// Spatial batch-norm parameters and running statistics.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    /// Scale, per channel.
    pub gamma: Param,
    /// Shift, per channel.
    pub beta: Param,
    /// Running mean, per channel.
    pub running_mean: Vec<f32>,
    /// Running variance, per channel.
    pub running_var: Vec<f32>,
}

/// The network's parameters.
#[derive(Debug, Clone)]
pub struct Net {
    /// The configuration it was built with.
    pub cfg: Config,
    conv: Conv2dParams,
    pool: MaxPool2dParams,
    /// Conv filters `(F, C, K, K)`.
    pub w1: Param,
    /// Conv bias `(F)`.
    pub b1: Param,
    /// Batch norm, if configured.
    pub bn: Option<BatchNorm>,
    /// Affine `(F·H/2·W/2, hidden)`.
    pub w2: Param,
    /// Affine bias `(hidden)`.
    pub b2: Param,
    /// Affine `(hidden, classes)`.
    pub w3: Param,
    /// Affine bias `(classes)`.
    pub b3: Param,
}

/// Loss and timing of one training step.
#[derive(Debug, Clone, Copy)]
pub struct StepStats {
    /// Softmax loss plus L2 penalty.
    pub loss: f32,
    /// Correct predictions in the batch (from the training forward pass).
    pub correct: usize,
    /// Wall time of the forward pass.
    pub forward: Duration,
    /// Wall time of the backward pass.
    pub backward: Duration,
    /// Part of `forward` spent in the crate's kernels (conv, batch norm, pool).
    pub forward_kernels: Duration,
    /// Part of `backward` spent in the crate's kernels.
    pub backward_kernels: Duration,
}

/// Runs `f`, adding its wall time to `acc`.
fn timed<R>(acc: &mut Duration, f: impl FnOnce() -> R) -> R {
    let t = Instant::now();
    let r = f();
    *acc += t.elapsed();
    r
}

/// `c (m×n) = a (m×k) · b (k×n) + beta·c`, with `a` and `b` given by row and column strides
/// (so transposes are free).
#[allow(clippy::too_many_arguments)]
fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    beta: f32,
    c: &mut [f32],
) {
    let last = |r: usize, c: usize, rs: usize, cs: usize| (r - 1) * rs + (c - 1) * cs;
    assert!(m > 0 && k > 0 && n > 0);
    assert!(last(m, k, rsa, csa) < a.len() && last(k, n, rsb, csb) < b.len());
    assert!(m * n <= c.len());
    // SAFETY: the asserts above keep every element sgemm reads (a: m×k, b: k×n with the
    // given strides) and writes (c: m×n, row-major) inside the slices, which do not alias
    // (c is the only mutable borrow).
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// `out (n×d_out) = x (n×d_in) · w (d_in×d_out) + b`.
fn affine_forward(x: &[f32], w: &[f32], b: &[f32], n: usize, d_in: usize) -> Vec<f32> {
    let d_out = b.len();
    let mut out: Vec<f32> = (0..n).flat_map(|_| b.iter().copied()).collect();
    gemm(n, d_in, d_out, x, (d_in, 1), w, (d_out, 1), 1.0, &mut out);
    out
}

/// Fills `w.grad`, `b.grad` and returns `dx` for `out = x·w + b`.
fn affine_backward(dout: &[f32], x: &[f32], w: &mut Param, b: &mut Param, n: usize) -> Vec<f32> {
    let d_out = b.value.len();
    let d_in = w.value.len() / d_out;
    // dw = xᵀ·dout, db = Σ_rows dout, dx = dout·wᵀ.
    gemm(
        d_in,
        n,
        d_out,
        x,
        (1, d_in),
        dout,
        (d_out, 1),
        0.0,
        &mut w.grad,
    );
    b.grad.iter_mut().for_each(|g| *g = 0.0);
    for row in dout.chunks_exact(d_out) {
        b.grad.iter_mut().zip(row).for_each(|(g, d)| *g += d);
    }
    let mut dx = vec![0.0; n * d_in];
    gemm(
        n,
        d_out,
        d_in,
        dout,
        (d_out, 1),
        &w.value,
        (1, d_out),
        0.0,
        &mut dx,
    );
    dx
}

fn relu(v: &mut [f32]) {
    v.iter_mut().for_each(|x| *x = x.max(0.0));
}

/// Zeroes `d` where the ReLU's output `y` was 0.
fn relu_backward(d: &mut [f32], y: &[f32]) {
    d.iter_mut().zip(y).for_each(|(d, &y)| {
        if y <= 0.0 {
            *d = 0.0
        }
    });
}

/// Mean softmax cross-entropy of `scores (n×k)` against `labels`, its gradient, and the
/// number of correct argmax predictions.
fn softmax_loss(scores: &[f32], labels: &[u8], k: usize) -> (f32, Vec<f32>, usize) {
    let n = labels.len();
    let mut dscores = vec![0.0; scores.len()];
    let (mut loss, mut correct) = (0.0f64, 0);
    for ((row, d), &y) in scores
        .chunks_exact(k)
        .zip(dscores.chunks_exact_mut(k))
        .zip(labels)
    {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = row.iter().map(|s| (s - max).exp()).sum();
        for (j, (dj, s)) in d.iter_mut().zip(row).enumerate() {
            let p = (s - max).exp() / sum;
            *dj = (p - if j == y as usize { 1.0 } else { 0.0 }) / n as f32;
        }
        loss -= f64::from(row[y as usize] - max - sum.ln());
        correct += usize::from(argmax(row) == y as usize);
    }
    ((loss / n as f64) as f32, dscores, correct)
}

/// Index of the largest value (the first, on ties).
pub fn argmax(row: &[f32]) -> usize {
    (1..row.len()).fold(0, |best, j| if row[j] > row[best] { j } else { best })
}

impl Net {
    /// A network with weights drawn from `rng` (biases 0, `gamma` 1, `beta` 0).
    pub fn new(cfg: Config, rng: &mut Rng) -> Self {
        let [c, h, w] = cfg.input;
        let (f, k) = (cfg.filters, cfg.filter_size);
        let flat = f * (h / 2) * (w / 2);
        let ws = cfg.weight_scale;
        let bn = cfg.batchnorm.then(|| BatchNorm {
            gamma: Param::new(vec![1.0; f]),
            beta: Param::new(vec![0.0; f]),
            running_mean: vec![0.0; f],
            running_var: vec![1.0; f],
        });
        Net {
            conv: Conv2dParams::default().padding([k / 2, k / 2]),
            pool: MaxPool2dParams::new([2, 2]),
            w1: Param::init(f * c * k * k, c * k * k, ws, rng),
            b1: Param::new(vec![0.0; f]),
            bn,
            w2: Param::init(flat * cfg.hidden, flat, ws, rng),
            b2: Param::new(vec![0.0; cfg.hidden]),
            w3: Param::init(cfg.hidden * cfg.classes, cfg.hidden, ws, rng),
            b3: Param::new(vec![0.0; cfg.classes]),
            cfg,
        }
    }

    fn x_shape(&self, n: usize) -> [usize; 4] {
        let [c, h, w] = self.cfg.input;
        [n, c, h, w]
    }

    fn w1_shape(&self) -> [usize; 4] {
        let k = self.cfg.filter_size;
        [self.cfg.filters, self.cfg.input[0], k, k]
    }

    /// Class scores `(n × classes)` for `n` images (batch norm in test mode).
    pub fn scores(&mut self, backend: Backend, x: &[f32], n: usize) -> Result<Vec<f32>> {
        let xv = TensorView::new(self.x_shape(n), x)?;
        let w1 = TensorView::new(self.w1_shape(), &self.w1.value)?;
        let mut a = backend.conv_forward(xv, w1, &self.b1.value, &self.conv)?;
        if let Some(bn) = &mut self.bn {
            let p = BatchNormParams::default().mode(BatchNormMode::Test);
            a = backend.bn_forward(a.view(), bn, &p)?.0;
        }
        relu(a.data_mut());
        let (p, _) = backend.pool_forward(a.view(), &self.pool)?;
        let mut h = affine_forward(
            p.data(),
            &self.w2.value,
            &self.b2.value,
            n,
            p.data().len() / n,
        );
        relu(&mut h);
        Ok(affine_forward(
            &h,
            &self.w3.value,
            &self.b3.value,
            n,
            self.cfg.hidden,
        ))
    }

    /// One forward and backward pass on a batch: fills every `grad`, returns the loss.
    pub fn train_step(&mut self, backend: Backend, x: &[f32], labels: &[u8]) -> Result<StepStats> {
        let n = labels.len();
        let t0 = Instant::now();
        let (mut kf, mut kb) = (Duration::ZERO, Duration::ZERO);
        // Forward, keeping what the backward needs.
        let xv = TensorView::new(self.x_shape(n), x)?;
        let w1 = TensorView::new(self.w1_shape(), &self.w1.value)?;
        let a1 = timed(&mut kf, || {
            backend.conv_forward(xv, w1, &self.b1.value, &self.conv)
        })?;
        // With batch norm, keep its input `a1` and cache for the backward; without, the
        // ReLU works in place on the conv output.
        let (mut r1, bn_saved) = match &mut self.bn {
            Some(bn) => {
                let p = BatchNormParams::default();
                let (y, cache) = timed(&mut kf, || backend.bn_forward(a1.view(), bn, &p))?;
                (y, Some((a1, cache)))
            }
            None => (a1, None),
        };
        relu(r1.data_mut());
        let (p1, p1_idx) = timed(&mut kf, || backend.pool_forward(r1.view(), &self.pool))?;
        let flat = p1.data().len() / n;
        let mut h = affine_forward(p1.data(), &self.w2.value, &self.b2.value, n, flat);
        relu(&mut h);
        let scores = affine_forward(&h, &self.w3.value, &self.b3.value, n, self.cfg.hidden);
        let (data_loss, dscores, correct) = softmax_loss(&scores, labels, self.cfg.classes);
        let reg = self.cfg.reg;
        let l2: f32 = [&self.w1, &self.w2, &self.w3]
            .iter()
            .map(|p| p.value.iter().map(|v| v * v).sum::<f32>())
            .sum();
        let loss = data_loss + 0.5 * reg * l2;
        let t1 = Instant::now();

        // Backward.
        let mut dh = affine_backward(&dscores, &h, &mut self.w3, &mut self.b3, n);
        relu_backward(&mut dh, &h);
        let dp1 = affine_backward(&dh, p1.data(), &mut self.w2, &mut self.b2, n);
        let dp1 = TensorView::new(p1.shape(), &dp1)?;
        let mut dr1 = timed(&mut kb, || {
            backend.pool_backward(dp1, r1.view(), p1_idx.as_ref(), &self.pool)
        })?;
        relu_backward(dr1.data_mut(), r1.data());
        let da1 = match (&mut self.bn, &bn_saved) {
            (Some(bn), Some((a1, cache))) => {
                let g = timed(&mut kb, || {
                    backend.bn_backward(dr1.view(), a1.view(), &bn.gamma.value, cache)
                })?;
                bn.gamma.grad = g.dgamma;
                bn.beta.grad = g.dbeta;
                g.dx
            }
            _ => dr1,
        };
        let w1 = TensorView::new(self.w1_shape(), &self.w1.value)?;
        let g = timed(&mut kb, || {
            backend.conv_backward(da1.view(), xv, w1, &self.conv)
        })?;
        self.w1.grad = g.dw.into_vec();
        self.b1.grad = g.db;
        for p in [&mut self.w1, &mut self.w2, &mut self.w3] {
            p.grad
                .iter_mut()
                .zip(&p.value)
                .for_each(|(g, v)| *g += reg * v);
        }
        let t2 = Instant::now();
        Ok(StepStats {
            loss,
            correct,
            forward: t1 - t0,
            forward_kernels: kf,
            backward_kernels: kb,
            backward: t2 - t1,
        })
    }

    /// Every parameter, mutably.
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut v = vec![&mut self.w1, &mut self.b1];
        if let Some(bn) = &mut self.bn {
            v.push(&mut bn.gamma);
            v.push(&mut bn.beta);
        }
        v.extend([&mut self.w2, &mut self.b2, &mut self.w3, &mut self.b3]);
        v
    }

    /// SGD with momentum: `v = μ·v − lr·grad; value += v`.
    pub fn sgd_momentum(&mut self, lr: f32, momentum: f32) {
        for p in self.params_mut() {
            for ((v, x), g) in p.velocity.iter_mut().zip(&mut p.value).zip(&p.grad) {
                *v = momentum * *v - lr * g;
                *x += *v;
            }
        }
    }
}
