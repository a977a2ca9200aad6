//! # cnn-kernels
//!
//! Fast CPU kernels for the layers of convolutional networks — conv2d, max-pool 2d,
//! batch norm (vanilla and spatial) and spatial group norm, forward and backward, NCHW,
//! `f32` and `f64` — each beside a naive reference kernel that spells out the textbook
//! definition and that every fast path is tested against.
//!
//! | layer | fast | naive twin | fast algorithm |
//! |---|---|---|---|
//! | conv2d | [`conv::forward`], [`conv::backward`] | [`conv::naive`] | tiled im2col + GEMM (`matrixmultiply`), no lowering for 1×1, direct SIMD depthwise |
//! | max-pool 2d | [`pool::forward`], [`pool::backward`], [`pool::forward_with_indices`] | [`pool::naive`] | SIMD along output rows, 2×2/s2 and 3×3/s2 special cases, compact `u8` winner indices |
//! | batch norm `(N, D)` and spatial | [`norm::batch_norm_forward`], [`norm::spatial_batch_norm_forward`], … | [`norm::naive`] | one statistics pass (Chan merge in `f64`) + one fused `x·a + b` pass |
//! | group norm | [`norm::group_norm_forward`], [`norm::group_norm_backward`] | [`norm::naive`] | same, per (image, group) |
//!
//! ## Contract
//!
//! - **Errors, not panics.** Every public function validates its shapes and parameters
//!   (stride or dilation 0, window larger than the padded input, channels not divisible by
//!   groups, mismatched lengths and gradient shapes, sizes that overflow) and returns an
//!   [`Error`] naming the offending value.
//! - **Deterministic.** Results are bitwise identical for any number of rayon threads: work
//!   is split by the problem's shape, never by the thread count, and partial sums (`dw`,
//!   `db`, batch statistics, `dγ`, `dβ`) are merged in a fixed order.
//! - **Threads are the caller's.** Kernels run on the rayon pool of the calling thread;
//!   `pool.install(|| conv::forward(..))` runs one on your pool (see [`threads`]).
//! - **Embeddable.** Each fast kernel has an allocation-free `*_into` form that writes into
//!   caller buffers (and a caller workspace where one is needed, sized by a
//!   `*_workspace_len` function); the allocating functions are conveniences on top and
//!   refuse buffers above [`MAX_ALLOC_BYTES`] with an error instead of aborting. On Linux
//!   they advise the kernel to back fresh buffers of 4 MiB or more with transparent huge
//!   pages (`madvise(MADV_HUGEPAGE)`: 512 times fewer page faults on first write; no effect
//!   where huge pages are off).
//! - **Fast without `RUSTFLAGS`.** SIMD kernels are compiled for AVX-512, AVX2+FMA and the
//!   baseline target and picked at run time ([`simd`]); other targets get the portable path.
//! - **Conventions** (those of CS231n and of the PyTorch-made conformance cases): conv is
//!   cross-correlation with zero padding; max pool gives the whole gradient to the first
//!   maximum of its window and propagates NaN; batch norm uses the biased variance and the
//!   CS231n momentum `running = momentum·running + (1 − momentum)·batch`.
//!
//! ## Example: a conv forward and backward
//!
//! ```
//! use cnn_kernels::{conv::{self, Conv2dParams}, TensorView};
//!
//! // x: 1 image, 1 channel, 3×3; w: 2 filters of 1×2×2.
//! let x: Vec<f32> = (0..9).map(|v| v as f32).collect();
//! let w = vec![1.0f32, 0.0, 0.0, -1.0, 0.5, 0.5, 0.5, 0.5];
//! let b = [0.0f32, 1.0];
//! let p = Conv2dParams::default().padding([1, 1]).stride([2, 2]);
//! let xv = TensorView::new([1, 1, 3, 3], &x)?;
//! let wv = TensorView::new([2, 1, 2, 2], &w)?;
//!
//! let out = conv::forward(xv, wv, Some(&b), &p)?;
//! assert_eq!(out.shape().dims(), &[1, 2, 2, 2]); // (3 + 2 − 2) / 2 + 1 = 2
//!
//! // Gradients of sum(out · dout) with dout = 1.
//! let dout = vec![1.0f32; 8];
//! let grads = conv::backward(TensorView::new([1, 2, 2, 2], &dout)?, xv, wv, &p)?;
//! assert_eq!(grads.db, vec![4.0, 4.0]);
//! assert_eq!(grads.dx.shape().dims(), &[1, 1, 3, 3]);
//! assert_eq!(grads.dw.shape().dims(), &[2, 1, 2, 2]);
//!
//! // The naive reference kernel takes the same arguments and agrees.
//! let reference = conv::naive::forward(xv, wv, Some(&b), &p)?;
//! assert_eq!(out.data(), reference.data());
//! # Ok::<(), cnn_kernels::Error>(())
//! ```
#![warn(missing_docs)]

mod alloc;
pub mod conv;
mod error;
mod float;
mod geometry;
#[cfg(feature = "ndarray")]
pub mod ndarray_interop;
pub mod norm;
pub mod pool;
pub mod simd;
mod tensor;
pub mod threads;

pub use alloc::MAX_ALLOC_BYTES;
pub use error::{Error, Result};
pub use float::{DType, Float};
pub use tensor::{Shape, Tensor, TensorView, TensorViewMut, MAX_RANK};
