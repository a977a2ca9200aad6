//! # cnn-kernels
//!
//! Fast CPU kernels for the layers of convolutional networks — conv2d, max-pool 2d,
//! batch norm (vanilla and spatial) and spatial group norm, forward and backward, NCHW,
//! `f32` and `f64` — each beside a naive reference kernel that spells out the textbook
//! definition and that every fast path is tested against.
//!
//! Every public function validates its shapes and parameters and returns
//! [`Error`] instead of panicking.
//!
//! ## Example: a conv forward and backward
//!
//! ```
//! use cnn_kernels::{conv::{naive, Conv2dParams}, TensorView};
//!
//! // x: 1 image, 1 channel, 3×3; w: 2 filters of 1×2×2.
//! let x: Vec<f32> = (0..9).map(|v| v as f32).collect();
//! let w = vec![1.0f32, 0.0, 0.0, -1.0, 0.5, 0.5, 0.5, 0.5];
//! let b = [0.0f32, 1.0];
//! let p = Conv2dParams::default().padding([1, 1]).stride([2, 2]);
//! let xv = TensorView::new([1, 1, 3, 3], &x)?;
//! let wv = TensorView::new([2, 1, 2, 2], &w)?;
//!
//! let out = naive::forward(xv, wv, Some(&b), &p)?;
//! assert_eq!(out.shape().dims(), &[1, 2, 2, 2]); // (3 + 2 − 2) / 2 + 1 = 2
//!
//! // Gradients of sum(out · dout) with dout = 1.
//! let dout = vec![1.0f32; 8];
//! let grads = naive::backward(TensorView::new([1, 2, 2, 2], &dout)?, xv, wv, &p)?;
//! assert_eq!(grads.db, vec![4.0, 4.0]);
//! assert_eq!(grads.dx.shape().dims(), &[1, 1, 3, 3]);
//! assert_eq!(grads.dw.shape().dims(), &[2, 1, 2, 2]);
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
