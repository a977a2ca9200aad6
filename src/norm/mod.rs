//! Batch normalisation (on `(N, D)` and spatial on `(N, C, H, W)`) and spatial group
//! normalisation.
//!
//! Batch norm normalises each feature (column `d` of `(N, D)`, or channel `c` of NCHW over
//! `N·H·W` values) with the batch mean and the **biased** batch variance in train mode, then
//! scales by `γ` and shifts by `β`: `y = γ·(x − μ)/√(σ² + eps) + β`. Train mode also updates
//! the running statistics with the CS231n convention
//! `running = momentum·running + (1 − momentum)·batch` (PyTorch's `momentum` is
//! `1 − momentum` here, and PyTorch stores the unbiased variance). Test mode normalises with
//! the running statistics and leaves them unchanged.
//!
//! Group norm splits the `C` channels of each image into `G` groups and normalises each
//! `(image, group)` over its `C/G·H·W` values, then applies per-channel `γ`, `β`.
//!
//! The forward functions return a cache holding what the backward needs (mean and inverse
//! standard deviation per channel or per (image, group)); the backward takes it with `x`.
//! [`naive`] holds the reference loops every fast path is tested against.
//!
//! ## Fast paths
//!
//! [`batch_norm_forward`], [`batch_norm_backward`], [`spatial_batch_norm_forward`],
//! [`spatial_batch_norm_backward`], [`group_norm_forward`] and [`group_norm_backward`] have
//! the signatures of their [`naive`] twins, plus allocation-free `*_into` forms that write
//! into caller buffers (group-norm backward takes an `f64` workspace of
//! [`group_norm_backward_workspace_len`] values; the others need none). They:
//!
//! - take the statistics in one pass over the data: per leaf of at most 4096 values, sums
//!   of deviations from a sampled pivot and of their squares (taken again about the leaf's
//!   mean, from L1, if the pivot was farther from it than the standard deviation — the
//!   corrected two-pass algorithm), then combine leaves with Chan's formula in `f64`; apply
//!   `y = (x − μ)·a + β` with `a = γ·inv_std` in one fused pass; the backward takes `Σ dy`
//!   and `Σ dy·(x − μ)` in one pass and writes `dx` in a second;
//! - run in parallel with rayon (over channels, over (image, group) pairs, and over the
//!   leaves of large channels or groups) with a fixed partition and merge tree, so results
//!   are bitwise identical for any number of threads;
//! - use AVX-512 or AVX2+FMA clones of their loops when [`crate::simd::active_level`]
//!   allows (the rounding of sums differs slightly between SIMD levels, within the
//!   tolerance of the equivalence tests against [`naive`]);
//! - give exactly `β` for a constant channel or group when `eps > 0` (its mean is computed
//!   exactly and its variance as exactly 0). With `eps = 0` a constant channel has an
//!   infinite inverse standard deviation and the output is NaN (`0·∞`), as the naive
//!   kernels give on `f32` data; a NaN or infinity in a channel makes that channel's (or
//!   group's) outputs NaN, as in the naive kernels.

#[macro_use]
mod kernels;
mod batch;
mod group;
pub mod naive;
mod rows;

pub use batch::{
    batch_norm_backward, batch_norm_backward_into, batch_norm_forward, batch_norm_forward_into,
    spatial_batch_norm_backward, spatial_batch_norm_backward_into, spatial_batch_norm_forward,
    spatial_batch_norm_forward_into,
};
pub use group::{
    group_norm_backward, group_norm_backward_into, group_norm_backward_workspace_len,
    group_norm_forward, group_norm_forward_into,
};

use crate::error::{Error, Result};
use crate::geometry::{check_nonempty, checked_product};
use crate::tensor::Shape;

/// Whether batch norm uses batch statistics (and updates the running ones) or the running
/// statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BatchNormMode {
    /// Normalise with the batch's mean and biased variance; update the running statistics.
    #[default]
    Train,
    /// Normalise with the running statistics; leave them unchanged.
    Test,
}

/// Parameters of batch norm.
///
/// ```
/// use cnn_kernels::norm::{BatchNormMode, BatchNormParams};
/// let p = BatchNormParams::default();
/// assert_eq!((p.mode, p.eps, p.momentum), (BatchNormMode::Train, 1e-5, 0.9));
/// let test = BatchNormParams::default().mode(BatchNormMode::Test);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormParams {
    /// Train or test. Default train.
    pub mode: BatchNormMode,
    /// Added to the variance; finite and non-negative. Default `1e-5`.
    pub eps: f64,
    /// CS231n momentum: the weight of the old running value, in `[0, 1]`. Default 0.9.
    pub momentum: f64,
}

impl Default for BatchNormParams {
    fn default() -> Self {
        BatchNormParams {
            mode: BatchNormMode::Train,
            eps: 1e-5,
            momentum: 0.9,
        }
    }
}

impl BatchNormParams {
    /// Sets the mode.
    pub fn mode(mut self, mode: BatchNormMode) -> Self {
        self.mode = mode;
        self
    }
    /// Sets eps.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
    /// Sets the momentum.
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }
}

/// Parameters of group norm.
///
/// ```
/// use cnn_kernels::norm::GroupNormParams;
/// let p = GroupNormParams::new(32);
/// assert_eq!(p.eps, 1e-5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupNormParams {
    /// Number of groups; at least 1 and dividing C.
    pub groups: usize,
    /// Added to the variance; finite and non-negative. Default `1e-5`.
    pub eps: f64,
}

impl GroupNormParams {
    /// `groups` groups with eps `1e-5`.
    pub fn new(groups: usize) -> Self {
        GroupNormParams { groups, eps: 1e-5 }
    }
    /// Sets eps.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
}

/// What batch-norm backward needs from the forward: the statistics it normalised with.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNormCache<T> {
    /// The mode of the forward pass (train-mode backward accounts for the batch statistics'
    /// dependence on `x`; test-mode backward does not).
    pub mode: BatchNormMode,
    /// Mean used per channel (batch mean in train mode, running mean in test mode).
    pub mean: Vec<T>,
    /// `1 / √(var + eps)` used per channel.
    pub inv_std: Vec<T>,
}

/// What group-norm backward needs from the forward.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupNormCache<T> {
    /// Number of groups.
    pub groups: usize,
    /// Mean per (image, group), `N·G` values, image-major.
    pub mean: Vec<T>,
    /// `1 / √(var + eps)` per (image, group), computed with the forward's eps.
    pub inv_std: Vec<T>,
}

/// Gradients of a normalisation layer.
#[derive(Debug, Clone, PartialEq)]
pub struct NormGrads<T> {
    /// `∂L/∂x`, the shape of `x`.
    pub dx: crate::Tensor<T>,
    /// `∂L/∂γ`, one value per channel/feature.
    pub dgamma: Vec<T>,
    /// `∂L/∂β`, one value per channel/feature.
    pub dbeta: Vec<T>,
}

fn check_eps(op: &'static str, eps: f64) -> Result<()> {
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::param(
            op,
            format!("eps must be finite and non-negative, got {eps}"),
        ));
    }
    Ok(())
}

fn check_vec(op: &'static str, what: &str, len: usize, want: usize, unit: &str) -> Result<()> {
    if len != want {
        return Err(Error::shape(
            op,
            format!("{what} has {len} values for {want} {unit}"),
        ));
    }
    Ok(())
}

/// A validated batch-norm problem: `x` viewed as `(outer, channels, inner)` — `(N, D, 1)`
/// for vanilla batch norm and `(N, C, H·W)` for spatial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchNormGeometry {
    /// Images (rows).
    pub n: usize,
    /// Channels (features).
    pub c: usize,
    /// Spatial size per channel and image (`H·W`, or 1 for `(N, D)`).
    pub hw: usize,
}

impl BatchNormGeometry {
    /// Validates `x` (`(N, D)` if `spatial` is false, `(N, C, H, W)` if true), the lengths of
    /// `gamma`, `beta` and the running statistics, and `p`.
    pub fn new(
        op: &'static str,
        x: Shape,
        spatial: bool,
        vec_lens: [(&str, usize); 4],
        p: &BatchNormParams,
    ) -> Result<Self> {
        let (n, c, hw) = if spatial {
            let [n, c, h, w] = x.nchw(op, "x")?;
            (n, c, checked_product(op, "x spatial size", &[h, w])?)
        } else {
            match *x.dims() {
                [n, d] => (n, d, 1),
                _ => {
                    return Err(Error::shape(
                        op,
                        format!("x must be 2-d (N, D), got shape {x}"),
                    ))
                }
            }
        };
        check_nonempty(op, "x shape", x.dims())?;
        checked_product(op, "x shape", x.dims())?;
        check_eps(op, p.eps)?;
        if !(p.momentum.is_finite() && (0.0..=1.0).contains(&p.momentum)) {
            return Err(Error::param(
                op,
                format!("momentum must be in [0, 1], got {}", p.momentum),
            ));
        }
        for (what, len) in vec_lens {
            check_vec(op, what, len, c, "channels")?;
        }
        Ok(BatchNormGeometry { n, c, hw })
    }

    /// Number of values each channel's statistics cover (`N·H·W`).
    pub fn count(&self) -> usize {
        self.n * self.hw
    }

    /// Errors unless the cache has one mean and inverse std per channel.
    pub fn check_cache<T>(&self, op: &'static str, cache: &BatchNormCache<T>) -> Result<()> {
        check_vec(op, "cache mean", cache.mean.len(), self.c, "channels")?;
        check_vec(op, "cache inv_std", cache.inv_std.len(), self.c, "channels")
    }
}

/// A validated group-norm problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupNormGeometry {
    /// Images.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// `H·W`.
    pub hw: usize,
    /// Groups.
    pub groups: usize,
    /// Channels per group.
    pub cg: usize,
}

impl GroupNormGeometry {
    /// Validates `x` `(N, C, H, W)`, `groups` (at least 1, dividing C), and the lengths of
    /// `gamma` and `beta`.
    pub fn new(
        op: &'static str,
        x: Shape,
        groups: usize,
        gamma_len: usize,
        beta_len: usize,
    ) -> Result<Self> {
        let [n, c, h, w] = x.nchw(op, "x")?;
        check_nonempty(op, "x shape", x.dims())?;
        checked_product(op, "x shape", x.dims())?;
        if groups == 0 {
            return Err(Error::param(op, "groups must be at least 1, got 0"));
        }
        if c % groups != 0 {
            return Err(Error::param(
                op,
                format!("{c} channels are not divisible into {groups} groups"),
            ));
        }
        check_vec(op, "gamma", gamma_len, c, "channels")?;
        check_vec(op, "beta", beta_len, c, "channels")?;
        Ok(GroupNormGeometry {
            n,
            c,
            hw: h * w,
            groups,
            cg: c / groups,
        })
    }

    /// Number of values in one (image, group): `C/G·H·W`.
    pub fn group_len(&self) -> usize {
        self.cg * self.hw
    }

    /// Errors unless the cache matches (`groups`, and `N·G` statistics).
    pub fn check_cache<T>(&self, op: &'static str, cache: &GroupNormCache<T>) -> Result<()> {
        if cache.groups != self.groups {
            return Err(Error::shape(
                op,
                format!(
                    "cache is for {} groups, the call has {}",
                    cache.groups, self.groups
                ),
            ));
        }
        let want = self.n * self.groups;
        check_vec(
            op,
            "cache mean",
            cache.mean.len(),
            want,
            "(image, group) pairs",
        )?;
        check_vec(
            op,
            "cache inv_std",
            cache.inv_std.len(),
            want,
            "(image, group) pairs",
        )
    }
}

/// Errors unless `dout` has the same shape as `x`.
pub(crate) fn check_dout(op: &'static str, dout: Shape, x: Shape) -> Result<()> {
    check_same_shape(op, "dout", dout, x)
}

/// Errors unless `what` (an upstream gradient or an output buffer) has the shape of `x`.
pub(crate) fn check_same_shape(op: &'static str, what: &str, shape: Shape, x: Shape) -> Result<()> {
    if shape != x {
        return Err(Error::shape(
            op,
            format!("{what} has shape {shape}, x has shape {x}"),
        ));
    }
    Ok(())
}

/// The output buffers of a fast backward call: `dx` (with the caller's shape for it, written
/// through write-only slots), `dγ`, `dβ`.
pub(crate) type GradsOut<'a, T> = (
    Shape,
    &'a mut [crate::alloc::Out<T>],
    &'a mut [T],
    &'a mut [T],
);

/// Errors unless an output buffer holds as many elements as `x` (the kernels write through
/// `Out` slots and promise to write every one, so the lengths must match exactly).
pub(crate) fn check_out_len(op: &'static str, what: &str, len: usize, x_len: usize) -> Result<()> {
    if len != x_len {
        return Err(Error::shape(
            op,
            format!("{what} has {len} elements, x has {x_len}"),
        ));
    }
    Ok(())
}

/// Errors unless a per-channel vector (or output buffer) has `c` values.
pub(crate) fn check_channels(op: &'static str, what: &str, len: usize, c: usize) -> Result<()> {
    check_vec(op, what, len, c, "channels")
}
