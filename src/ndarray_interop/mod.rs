//! [`ndarray`] interop (cargo feature `ndarray`): every layer on `ArrayView`s and `Array`s.
//!
//! The submodules mirror the crate's layer modules — [`conv`], [`pool`], [`norm`] — with the
//! fast kernels in both the allocating and the allocation-free (`*_into`) forms, and a
//! `naive` submodule in each wrapping the reference kernels the same way. Inputs are
//! [`ndarray::ArrayView4`] (NCHW) or [`ndarray::ArrayView2`] (`(N, D)` batch norm),
//! per-channel vectors are [`ndarray::ArrayView1`] (running statistics
//! [`ndarray::ArrayViewMut1`]); the allocating forms return owned [`ndarray::Array4`] /
//! [`ndarray::Array2`] / [`ndarray::Array1`], the `*_into` forms write into
//! [`ndarray::ArrayViewMut4`] / [`ndarray::ArrayViewMut2`] / [`ndarray::ArrayViewMut1`]
//! outputs and take the same workspace slices as the slice API.
//!
//! **No hidden copies.** The wrappers borrow the arrays' memory directly, so every array
//! must be in *standard layout* (row-major, C-contiguous, no gaps, positive strides: what
//! `Array::zeros`, `from_shape_vec` and `.as_standard_layout()` give). A transposed,
//! sliced-with-step or otherwise strided view is refused with
//! [`Error::ShapeMismatch`] whose message says the array is
//! not in standard (C-contiguous) layout; call `.as_standard_layout()` on it to make the
//! copy explicitly.
//!
//! Everything else — shapes, parameters, errors, determinism, threads — is exactly the
//! slice API's: each wrapper converts and calls the corresponding function of the crate,
//! so results are bitwise identical to it.
//!
//! ```
//! use cnn_kernels::{conv::Conv2dParams, ndarray_interop};
//! use ndarray::Array4;
//!
//! let x = Array4::<f32>::from_shape_fn((2, 3, 8, 8), |(n, c, h, w)| (n + c + h * w) as f32);
//! let w = Array4::<f32>::ones((4, 3, 3, 3));
//! let p = Conv2dParams::default().padding([1, 1]);
//! let out = ndarray_interop::conv::forward(x.view(), w.view(), None, &p)?;
//! assert_eq!(out.dim(), (2, 4, 8, 8));
//!
//! // Allocation-free: the caller owns the output and the workspace.
//! let g = cnn_kernels::conv::Conv2dGeometry::new(
//!     cnn_kernels::Shape::new(x.shape()).unwrap(),
//!     cnn_kernels::Shape::new(w.shape()).unwrap(),
//!     &p,
//! )?;
//! let mut out2 = Array4::<f32>::zeros((2, 4, 8, 8));
//! let mut ws = vec![0.0f32; cnn_kernels::conv::forward_workspace_len(&g)];
//! ndarray_interop::conv::forward_into(x.view(), w.view(), None, &p, out2.view_mut(), &mut ws)?;
//! assert_eq!(out, out2);
//!
//! // A transposed view is not standard layout: a clear error, not a silent copy.
//! let xt = x.view().permuted_axes([0, 1, 3, 2]);
//! let err = ndarray_interop::conv::forward(xt, w.view(), None, &p).unwrap_err();
//! assert!(err.to_string().contains("standard (C-contiguous) layout"));
//! // The explicit copy works.
//! let xt_std = xt.as_standard_layout();
//! assert!(ndarray_interop::conv::forward(xt_std.view(), w.view(), None, &p).is_ok());
//! # Ok::<(), cnn_kernels::Error>(())
//! ```
//!
//! The helpers [`tensor_view`], [`tensor_view_mut`] and [`into_array`] convert between
//! the two worlds so any kernel of the crate can be called on arrays directly.

pub mod conv;
pub mod norm;
pub mod pool;

use ndarray::{Array, ArrayView, ArrayView1, ArrayViewMut, ArrayViewMut1, Dimension};

use crate::error::{Error, Result};
use crate::{Float, Shape, Tensor, TensorView, TensorViewMut};

const OP: &str = "ndarray";

fn layout_error(op: &'static str, what: &str, shape: &[usize], strides: &[isize]) -> Error {
    Error::shape(
        op,
        format!(
            "{what} (shape {shape:?}, strides {strides:?}) is not in standard (C-contiguous) \
             layout; make a standard-layout copy with `.as_standard_layout()`"
        ),
    )
}

fn shape_of(op: &'static str, what: &str, dims: &[usize]) -> Result<Shape> {
    Shape::new(dims).ok_or_else(|| {
        Error::shape(
            op,
            format!(
                "{what} has {} dimensions, the kernels take 1 to 4",
                dims.len()
            ),
        )
    })
}

pub(crate) fn view_op<'a, T: Float, D: Dimension>(
    op: &'static str,
    what: &str,
    a: &ArrayView<'a, T, D>,
) -> Result<TensorView<'a, T>> {
    let shape = shape_of(op, what, a.shape())?;
    let data = a
        .to_slice()
        .ok_or_else(|| layout_error(op, what, a.shape(), a.strides()))?;
    TensorView::new(shape, data)
}

pub(crate) fn view_mut_op<'a, T: Float, D: Dimension>(
    op: &'static str,
    what: &str,
    a: ArrayViewMut<'a, T, D>,
) -> Result<TensorViewMut<'a, T>> {
    let shape = shape_of(op, what, a.shape())?;
    if !a.is_standard_layout() {
        return Err(layout_error(op, what, a.shape(), a.strides()));
    }
    let data = a
        .into_slice()
        .ok_or_else(|| Error::shape(op, format!("{what} is not in standard layout")))?;
    TensorViewMut::new(shape, data)
}

pub(crate) fn slice_op<'a, T: Float>(
    op: &'static str,
    what: &str,
    a: &ArrayView1<'a, T>,
) -> Result<&'a [T]> {
    a.to_slice()
        .ok_or_else(|| layout_error(op, what, a.shape(), a.strides()))
}

pub(crate) fn slice_mut_op<'a, T: Float>(
    op: &'static str,
    what: &str,
    a: ArrayViewMut1<'a, T>,
) -> Result<&'a mut [T]> {
    if !a.is_standard_layout() {
        return Err(layout_error(op, what, a.shape(), a.strides()));
    }
    a.into_slice()
        .ok_or_else(|| Error::shape(op, format!("{what} is not in standard layout")))
}

pub(crate) fn array_op<T: Float, D: Dimension>(
    op: &'static str,
    t: Tensor<T>,
) -> Result<Array<T, D>> {
    let dims = t.shape();
    let dims = dims.dims();
    if D::NDIM.is_some_and(|n| n != dims.len()) {
        return Err(Error::shape(
            op,
            format!(
                "tensor of shape {dims:?} does not fit an array of {} dimensions",
                D::NDIM.unwrap_or(0)
            ),
        ));
    }
    let mut dim = D::zeros(dims.len());
    dim.slice_mut().copy_from_slice(dims);
    // The array takes the tensor's storage as it is (an aligned tensor's padding stays
    // before its first element): no copy.
    let (vec, offset) = t.into_raw_parts();
    ndarray::Array1::from_vec(vec)
        .slice_move(ndarray::s![offset..])
        .into_shape_with_order(dim)
        .map_err(|e| Error::shape(op, format!("tensor does not fit the array: {e}")))
}

/// Borrows a standard-layout array view (rank 1 to 4) as a [`TensorView`], without copying.
///
/// # Errors
///
/// [`Error::ShapeMismatch`] if the view is not in standard (C-contiguous) layout or its rank
/// is 0 or above 4.
pub fn tensor_view<'a, T: Float, D: Dimension>(
    a: &ArrayView<'a, T, D>,
) -> Result<TensorView<'a, T>> {
    view_op(OP, "array", a)
}

/// Borrows a standard-layout mutable array view (rank 1 to 4) as a [`TensorViewMut`], the
/// output argument of the `*_into` kernels.
///
/// # Errors
///
/// As [`tensor_view`].
pub fn tensor_view_mut<'a, T: Float, D: Dimension>(
    a: ArrayViewMut<'a, T, D>,
) -> Result<TensorViewMut<'a, T>> {
    view_mut_op(OP, "array", a)
}

/// Moves a [`Tensor`]'s buffer into an [`Array`] of the same shape, without copying.
///
/// # Errors
///
/// [`Error::ShapeMismatch`] if `D` has a fixed rank other than the tensor's.
///
/// ```
/// use cnn_kernels::{ndarray_interop::into_array, Tensor};
/// let t = Tensor::from_vec([1, 2, 1, 2], vec![1.0f32, 2.0, 3.0, 4.0])?;
/// let a: ndarray::Array4<f32> = into_array(t)?;
/// assert_eq!(a[[0, 1, 0, 1]], 4.0);
/// # Ok::<(), cnn_kernels::Error>(())
/// ```
pub fn into_array<T: Float, D: Dimension>(t: Tensor<T>) -> Result<Array<T, D>> {
    array_op(OP, t)
}

/// Gradients of a normalisation layer as arrays (`D` is `Ix2` for `(N, D)` batch norm,
/// `Ix4` for the spatial layers).
#[derive(Debug, Clone, PartialEq)]
pub struct NormGrads<T, D: Dimension> {
    /// `∂L/∂x`, the shape of `x`.
    pub dx: Array<T, D>,
    /// `∂L/∂γ`, one value per channel/feature.
    pub dgamma: ndarray::Array1<T>,
    /// `∂L/∂β`, one value per channel/feature.
    pub dbeta: ndarray::Array1<T>,
}

pub(crate) fn norm_grads<T: Float, D: Dimension>(
    op: &'static str,
    g: crate::norm::NormGrads<T>,
) -> Result<NormGrads<T, D>> {
    Ok(NormGrads {
        dx: array_op(op, g.dx)?,
        dgamma: ndarray::Array1::from_vec(g.dgamma),
        dbeta: ndarray::Array1::from_vec(g.dbeta),
    })
}
