//! 2-d convolution (cross-correlation, as in every deep-learning framework) on NCHW tensors.
//!
//! Shapes: `x` is `(N, C, H, W)`, `w` is `(F, C / groups, KH, KW)`, the optional bias `b`
//! has `F` values, and the output is `(N, F, OH, OW)` with
//! `OH = (H + 2·pad_h − dilation_h·(KH − 1) − 1) / stride_h + 1` (floor), likewise `OW`.
//! Padding is zeros on both sides. Filter `f` of group `g = f / (F / groups)` sees input
//! channels `g·C/groups .. (g+1)·C/groups`.
//!
//! [`naive`] holds the reference loops every fast path is tested against.
//!
//! ## Fast paths
//!
//! [`forward`] / [`forward_into`] and [`backward`] / [`backward_into`] pick a kernel from the
//! geometry:
//! - **depthwise** (`groups == C`): direct SIMD kernels (AVX-512 / AVX2 / baseline clones);
//! - **pointwise** (1×1, stride 1, no padding): the image is the column matrix, one GEMM
//!   per tile of pixels straight into the NCHW output;
//! - **im2col + GEMM** otherwise: tiles of output pixels (about 128 Ki column elements each,
//!   so the buffer never scales with the batch or the image) are lowered and multiplied by
//!   the weights, then the bias is added to the tile while it is in cache
//!   (`out ← W · cols`, then `out += b`);
//! - **small `K`** (forward only, AVX2/AVX-512): a register-blocked kernel replaces the GEMM
//!   (blocks of filters × 16 pixels, bias first, fused multiply-adds): on the im2col path
//!   with output rows of at least 16 pixels and `C/groups · KH · KW` ≤ 256 it reads a
//!   phase-split zero-padded copy of the input rows instead of lowered columns (each tap of
//!   an output row is then one contiguous run, whatever the stride and dilation); otherwise
//!   for `C/groups · KH · KW` ≤ 32 it multiplies the lowered columns (or the 1×1 image).
//!
//! The backward computes `db`, `dw = Σ dout · colsᵀ` and `dx` in one call: `dx =
//! col2im(Wᵀ · dout)`, or for stride 1 where it measured faster, the forward kernels on the
//! transposed convolution (`dx = conv(dout, W')`, `W'` the flipped, transposed weights,
//! padding `(K − 1)·dilation − pad`), which writes `dx` without a scatter-add. The `db`,
//! `dw` and `dx` passes run at the same time, each on its own part of the workspace (one
//! after the other on a single lane). Work runs on the current rayon pool, across images,
//! groups and tiles, and inside an image where those give fewer than 16 tasks: filter or channel blocks, chunks of
//! (image, tile) units for `dw`, bands of output rows for `dx` (neighbouring bands overlap
//! in `dx`, so even bands run first, then odd ones). Problems under 8 Mi multiply-adds
//! per pass are split less (about ½ Mi per task), and backward problems under 1 Mi run on
//! one lane (waking a thread costs more). Tasks run on as many lanes at once as the pool
//! has threads ([`forward`], [`backward`]) or as the caller's workspace has slots
//! ([`forward_into`], [`backward_into`]; see [`forward_workspace_len_for_threads`]). The
//! forward GEMM (and so the transposed form of `dx`) is the crate's own AVX-512 `f32`
//! kernel where the CPU has AVX-512, else `matrixmultiply`; the backward's other products
//! use `matrixmultiply` (single-threaded inside each task); with the opt-in `gemm-crate`
//! cargo feature, the `gemm` crate's AVX-512 kernels (`Parallelism::None`) serve all.
//!
//! **Determinism**: every result is bitwise identical for any number of threads. The
//! partition of the work (tiles, blocks, chunks, and so every GEMM's shape) is a function of
//! the geometry alone, and reductions (`dw`, `db`) are merged in a fixed order.
//!
//! **Tolerance** against [`naive`]: the same sums in another order, so relative errors grow
//! like `ε·√K` for a reduction of length `K` (`C/groups · KH · KW` for outputs and `dx`,
//! `N · OH · OW` for `dw` and `db`); the tests allow a few times that.

mod backward;
mod depthwise;
mod direct;
mod exec;
mod forward;
mod gemm;
#[cfg(all(target_arch = "x86_64", not(feature = "gemm-crate")))]
mod gemm_avx512;
mod im2col;
pub mod naive;
mod plan;

pub use backward::{
    backward, backward_into, backward_workspace_len, backward_workspace_len_for_threads,
};
pub use forward::{
    forward, forward_into, forward_workspace_len, forward_workspace_len_for_threads,
};
pub use gemm::gemm_backend;

use crate::error::{Error, Result};
use crate::geometry::{check_nonempty, checked_product, output_len, Axis};
use crate::tensor::Shape;

const OP: &str = "conv2d";

/// Parameters of a 2-d convolution. `[h, w]` pairs are (height, width).
///
/// ```
/// use cnn_kernels::conv::Conv2dParams;
/// let p = Conv2dParams::default().stride([2, 2]).padding([1, 1]);
/// assert_eq!(p.dilation, [1, 1]);
/// assert_eq!(p.groups, 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv2dParams {
    /// Step between windows, `[h, w]`; each at least 1. Default `[1, 1]`.
    pub stride: [usize; 2],
    /// Zero padding added on both sides, `[h, w]`. Default `[0, 0]`.
    pub padding: [usize; 2],
    /// Spacing between kernel taps, `[h, w]`; each at least 1. Default `[1, 1]`.
    pub dilation: [usize; 2],
    /// Number of channel groups; must divide both C and F. Default 1.
    pub groups: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Conv2dParams {
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        }
    }
}

impl Conv2dParams {
    /// Sets the stride.
    pub fn stride(mut self, stride: [usize; 2]) -> Self {
        self.stride = stride;
        self
    }
    /// Sets the zero padding.
    pub fn padding(mut self, padding: [usize; 2]) -> Self {
        self.padding = padding;
        self
    }
    /// Sets the dilation.
    pub fn dilation(mut self, dilation: [usize; 2]) -> Self {
        self.dilation = dilation;
        self
    }
    /// Sets the number of groups.
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }
}

/// A validated convolution problem: every size the kernels need, all checked for overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dGeometry {
    /// Images.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Filters (output channels).
    pub f: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// Groups.
    pub groups: usize,
    /// Input channels per group (`C / groups`).
    pub cg: usize,
    /// Filters per group (`F / groups`).
    pub fg: usize,
    /// The parameters.
    pub params: Conv2dParams,
}

impl Conv2dGeometry {
    /// Validates the shapes of `x` `(N, C, H, W)` and `w` `(F, C/groups, KH, KW)` against `p`.
    ///
    /// Errors on: a non-4-d shape, an empty dimension, stride or dilation 0, groups 0 or not
    /// dividing C or F, `w`'s channel count not `C / groups`, a dilated kernel larger than the
    /// padded input, and any element count (output, columns) that overflows `usize`.
    pub fn new(x: Shape, w: Shape, p: &Conv2dParams) -> Result<Self> {
        let [n, c, h, wd] = x.nchw(OP, "x")?;
        let [f, wc, kh, kw] = w.nchw(OP, "w")?;
        check_nonempty(OP, "x shape", x.dims())?;
        check_nonempty(OP, "w shape", w.dims())?;
        checked_product(OP, "x shape", x.dims())?;
        checked_product(OP, "w shape", w.dims())?;
        let g = p.groups;
        if g == 0 {
            return Err(Error::param(OP, "groups must be at least 1, got 0"));
        }
        if c % g != 0 {
            return Err(Error::param(
                OP,
                format!("{c} input channels are not divisible into {g} groups"),
            ));
        }
        if f % g != 0 {
            return Err(Error::param(
                OP,
                format!("{f} filters are not divisible into {g} groups"),
            ));
        }
        if wc != c / g {
            return Err(Error::shape(
                OP,
                format!(
                    "w has {wc} input channels, x has {c} (groups {g} needs {})",
                    c / g
                ),
            ));
        }
        let oh = output_len(
            OP,
            Axis::Height,
            h,
            kh,
            p.stride[0],
            p.padding[0],
            p.dilation[0],
        )?;
        let ow = output_len(
            OP,
            Axis::Width,
            wd,
            kw,
            p.stride[1],
            p.padding[1],
            p.dilation[1],
        )?;
        checked_product(OP, "output shape", &[n, f, oh, ow])?;
        checked_product(OP, "column matrix", &[c, kh, kw, oh, ow])?;
        Ok(Conv2dGeometry {
            n,
            c,
            h,
            w: wd,
            f,
            kh,
            kw,
            oh,
            ow,
            groups: g,
            cg: c / g,
            fg: f / g,
            params: *p,
        })
    }

    /// `(N, F, OH, OW)`.
    pub fn out_shape(&self) -> [usize; 4] {
        [self.n, self.f, self.oh, self.ow]
    }
    /// `(N, C, H, W)`.
    pub fn x_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }
    /// `(F, C/groups, KH, KW)`.
    pub fn w_shape(&self) -> [usize; 4] {
        [self.f, self.cg, self.kh, self.kw]
    }
    /// Floating-point operations of one forward pass: `2·N·F·(C/groups)·KH·KW·OH·OW`.
    pub fn flops(&self) -> f64 {
        [self.n, self.f, self.cg, self.kh, self.kw, self.oh, self.ow]
            .iter()
            .fold(2.0, |acc, &d| acc * d as f64)
    }

    /// Errors unless a bias of `len` values fits (`len == F`).
    pub fn check_bias(&self, len: usize) -> Result<()> {
        if len != self.f {
            return Err(Error::shape(
                OP,
                format!("bias has {len} values for {} filters", self.f),
            ));
        }
        Ok(())
    }

    /// Errors unless `dout` has the output shape.
    pub fn check_dout(&self, dout: Shape) -> Result<()> {
        if dout.dims() != self.out_shape() {
            return Err(Error::shape(
                OP,
                format!(
                    "dout has shape {dout}, the output shape is {:?}",
                    self.out_shape()
                ),
            ));
        }
        Ok(())
    }
}

/// Gradients of a convolution with respect to its input, weights and bias.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2dGrads<T> {
    /// `∂L/∂x`, shape `(N, C, H, W)`.
    pub dx: crate::Tensor<T>,
    /// `∂L/∂w`, shape `(F, C/groups, KH, KW)`.
    pub dw: crate::Tensor<T>,
    /// `∂L/∂b`, `F` values (computed whether or not the forward had a bias).
    pub db: Vec<T>,
}

/// The lanes (at most `threads`) that a caller's workspace of `len` elements holds slots
/// for, where `need(lanes)` is the workspace those lanes use, and that many elements;
/// [`Error::WorkspaceTooSmall`] (naming one lane's need) if it holds not even one.
pub(crate) fn workspace_lanes(
    len: usize,
    threads: usize,
    need: impl Fn(usize) -> usize,
) -> Result<(usize, usize)> {
    let lanes =
        plan::lanes_fitting(len, threads, &need).ok_or_else(|| Error::WorkspaceTooSmall {
            op: OP,
            required: need(1),
            provided: len,
        })?;
    Ok((lanes, need(lanes)))
}
