//! 2-d max pooling on NCHW tensors.
//!
//! `out[n,c,i,j] = max` over the window rows `i·sh − ph .. i·sh − ph + kh` and columns
//! `j·sw − pw .. j·sw − pw + kw`, skipping positions in the padding (padding never wins).
//! `OH = (H + 2·ph − kh) / sh + 1` (floor), likewise `OW`; padding may be at most half the
//! kernel on each axis, so every window holds at least one input element.
//!
//! Rules shared by every path: a NaN in a window makes the output NaN; among equal maxima
//! the **first** in row-major window order wins, and the backward pass sends the whole
//! upstream gradient to that one element (PyTorch's rule). Overlapping windows accumulate.
//!
//! [`naive`] holds the reference loops every fast path is tested against. The fast kernels
//! ([`forward`], [`forward_with_indices`], [`backward`], [`backward_with_indices`] and their
//! allocation-free `_into` forms) give bitwise the same values, winners and gradients at
//! every SIMD level ([`crate::simd`]) and any rayon thread count.
//!
//! The training-mode forward records each output's winner as its offset within the
//! `kh × kw` window ([`MaxPool2dIndices`]: one byte per output for windows of up to 256
//! elements), which [`backward_with_indices`] scatters through; [`backward`] recomputes the
//! winners from `x` instead. For large tensors prefer the `_into` forms with reused buffers:
//! a fresh multi-megabyte output costs a page fault per 4 KiB page on first touch.

mod backward;
mod forward;
mod indices;
mod kernel;
pub mod naive;

pub use backward::{backward, backward_into, backward_with_indices, backward_with_indices_into};
pub use forward::{forward, forward_into, forward_with_indices, forward_with_indices_into};
pub use indices::MaxPool2dIndices;

use crate::error::{Error, Result};
use crate::geometry::{check_nonempty, checked_product, output_len, Axis};
use crate::tensor::Shape;

pub(crate) const OP: &str = "max_pool2d";

/// Parameters of a 2-d max pooling. `[h, w]` pairs are (height, width).
///
/// ```
/// use cnn_kernels::pool::MaxPool2dParams;
/// let p = MaxPool2dParams::new([3, 3]).stride([2, 2]).padding([1, 1]);
/// assert_eq!(p.kernel, [3, 3]);
/// // The stride defaults to the kernel size.
/// assert_eq!(MaxPool2dParams::new([2, 2]).stride, [2, 2]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaxPool2dParams {
    /// Window size `[h, w]`; each at least 1.
    pub kernel: [usize; 2],
    /// Step between windows `[h, w]`; each at least 1.
    pub stride: [usize; 2],
    /// Implicit padding on both sides `[h, w]`; at most half the kernel.
    pub padding: [usize; 2],
}

impl MaxPool2dParams {
    /// A `kernel`-sized window with stride equal to the kernel and no padding.
    pub fn new(kernel: [usize; 2]) -> Self {
        MaxPool2dParams {
            kernel,
            stride: kernel,
            padding: [0, 0],
        }
    }
    /// Sets the stride.
    pub fn stride(mut self, stride: [usize; 2]) -> Self {
        self.stride = stride;
        self
    }
    /// Sets the padding.
    pub fn padding(mut self, padding: [usize; 2]) -> Self {
        self.padding = padding;
        self
    }
}

impl Default for MaxPool2dParams {
    /// 2×2 windows, stride 2, no padding.
    fn default() -> Self {
        MaxPool2dParams::new([2, 2])
    }
}

/// A validated pooling problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2dGeometry {
    /// Images.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// The parameters.
    pub params: MaxPool2dParams,
}

impl MaxPool2dGeometry {
    /// Validates `x`'s shape `(N, C, H, W)` against `p`.
    ///
    /// Errors on: a non-4-d or empty shape, a zero kernel or stride, padding above half the
    /// kernel, a window larger than the padded input, and overflowing sizes (including a
    /// window whose `kh · kw` elements overflow `usize`).
    pub fn new(x: Shape, p: &MaxPool2dParams) -> Result<Self> {
        let [n, c, h, w] = x.nchw(OP, "x")?;
        check_nonempty(OP, "x shape", x.dims())?;
        checked_product(OP, "x shape", x.dims())?;
        for (axis, i) in [(Axis::Height, 0), (Axis::Width, 1)] {
            if p.kernel[i] == 0 {
                return Err(Error::param(
                    OP,
                    format!("kernel {} must be at least 1, got 0", axis.name()),
                ));
            }
            if 2 * (p.padding[i] as u128) > p.kernel[i] as u128 {
                return Err(Error::param(
                    OP,
                    format!(
                        "padding {} {} exceeds half the kernel {} {}",
                        axis.name(),
                        p.padding[i],
                        axis.name(),
                        p.kernel[i]
                    ),
                ));
            }
        }
        let oh = output_len(
            OP,
            Axis::Height,
            h,
            p.kernel[0],
            p.stride[0],
            p.padding[0],
            1,
        )?;
        let ow = output_len(
            OP,
            Axis::Width,
            w,
            p.kernel[1],
            p.stride[1],
            p.padding[1],
            1,
        )?;
        checked_product(OP, "output shape", &[n, c, oh, ow])?;
        // A window offset (row · kw + column) must fit in usize.
        checked_product(OP, "kernel", &p.kernel)?;
        Ok(MaxPool2dGeometry {
            n,
            c,
            h,
            w,
            oh,
            ow,
            params: *p,
        })
    }

    /// `(N, C, OH, OW)`.
    pub fn out_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.oh, self.ow]
    }
    /// `(N, C, H, W)`.
    pub fn x_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
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

    /// The in-bounds input rows (or columns, `axis = 1`) of output row/column `o`:
    /// `start..end`, never empty.
    #[inline]
    pub fn window(&self, axis: usize, o: usize) -> (usize, usize) {
        let p = &self.params;
        let len = if axis == 0 { self.h } else { self.w };
        let lo = o * p.stride[axis];
        let start = lo.saturating_sub(p.padding[axis]);
        let end = (lo + p.kernel[axis] - p.padding[axis]).min(len);
        (start, end)
    }
}
