//! Owned tensors and borrowed views: a shape plus contiguous row-major data.
//!
//! 4-d tensors are NCHW. Batch norm on `(N, D)` uses 2-d tensors and per-channel vectors are
//! plain slices.

use std::fmt;

use crate::alloc::Aligned;
use crate::error::{Error, Result};
use crate::Float;

/// Largest rank a [`Shape`] holds.
pub const MAX_RANK: usize = 4;

/// The dimensions of a tensor, outermost first (NCHW for images). Rank 1 to 4.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    dims: [usize; MAX_RANK],
    rank: usize,
}

impl Shape {
    /// A shape from its dimensions; `None` if the rank is 0 or above [`MAX_RANK`].
    pub fn new(dims: &[usize]) -> Option<Shape> {
        if dims.is_empty() || dims.len() > MAX_RANK {
            return None;
        }
        let mut d = [0; MAX_RANK];
        d[..dims.len()].copy_from_slice(dims);
        Some(Shape {
            dims: d,
            rank: dims.len(),
        })
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.dims[..self.rank]
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Product of the dimensions, `None` on overflow.
    pub fn checked_len(&self) -> Option<usize> {
        self.dims()
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }

    /// Product of the dimensions, or [`Error::TooLarge`] naming `op` on overflow.
    pub(crate) fn len_for(&self, op: &'static str) -> Result<usize> {
        self.checked_len()
            .ok_or_else(|| Error::too_large(op, format!("shape {self} overflows usize")))
    }

    /// The four dimensions of a rank-4 shape, or an error naming `what`.
    pub(crate) fn nchw(&self, op: &'static str, what: &str) -> Result<[usize; 4]> {
        if self.rank != 4 {
            return Err(Error::shape(
                op,
                format!("{what} must be 4-d (N, C, H, W), got shape {self:?}"),
            ));
        }
        Ok(self.dims)
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.dims())
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.dims())
    }
}

macro_rules! shape_from_array {
    ($($n:literal),*) => {$(
        impl From<[usize; $n]> for Shape {
            fn from(d: [usize; $n]) -> Shape {
                Shape::new(&d).expect("rank 1..=4 by construction")
            }
        }
    )*};
}
shape_from_array!(1, 2, 3, 4);

fn check_len(shape: Shape, len: usize) -> Result<()> {
    match shape.checked_len() {
        Some(n) if n == len => Ok(()),
        Some(n) => Err(Error::shape(
            "tensor",
            format!("shape {shape} holds {n} elements, data has {len}"),
        )),
        None => Err(Error::too_large(
            "tensor",
            format!("shape {shape} has more elements than usize can count"),
        )),
    }
}

/// An owned tensor: a [`Shape`] and its elements in row-major order.
///
/// The tensors the crate's functions return keep their elements on a 64-byte boundary
/// (the SIMD kernels read and write whole cache lines); one made by [`Tensor::from_vec`]
/// keeps the `Vec`'s own placement.
pub struct Tensor<T> {
    shape: Shape,
    data: Aligned<T>,
}

impl<T: Clone> Clone for Tensor<T> {
    fn clone(&self) -> Self {
        Tensor {
            shape: self.shape,
            data: Aligned::from_vec(self.data.to_vec()),
        }
    }
}

impl<T: PartialEq> PartialEq for Tensor<T> {
    fn eq(&self, other: &Self) -> bool {
        self.shape == other.shape && *self.data == *other.data
    }
}

impl<T: Float> Tensor<T> {
    /// A tensor from a shape and its data; errors if `data.len()` is not the shape's product.
    ///
    /// ```
    /// use cnn_kernels::Tensor;
    /// let t = Tensor::from_vec([1, 2, 2, 2], vec![0.0f32; 8]).unwrap();
    /// assert_eq!(t.shape().dims(), &[1, 2, 2, 2]);
    /// assert!(Tensor::from_vec([1, 2, 2, 2], vec![0.0f32; 7]).is_err());
    /// ```
    pub fn from_vec(shape: impl Into<Shape>, data: Vec<T>) -> Result<Self> {
        let shape = shape.into();
        check_len(shape, data.len())?;
        Ok(Tensor {
            shape,
            data: Aligned::from_vec(data),
        })
    }

    /// A tensor that owns an [`Aligned`] buffer (the crate's outputs).
    pub(crate) fn from_aligned(shape: Shape, data: Aligned<T>) -> Result<Self> {
        check_len(shape, data.len())?;
        Ok(Tensor { shape, data })
    }

    /// A tensor of zeros, its elements on a 64-byte boundary; errors if the shape's product
    /// overflows or the allocation fails.
    pub fn zeros(shape: impl Into<Shape>) -> Result<Self> {
        let shape = shape.into();
        let n = shape.len_for("tensor")?;
        Ok(Tensor {
            shape,
            data: crate::alloc::zeroed_aligned("tensor", n)?,
        })
    }

    /// The shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }
    /// The elements, row-major.
    pub fn data(&self) -> &[T] {
        &self.data
    }
    /// The elements, row-major, mutable.
    pub fn data_mut(&mut self) -> &mut [T] {
        &mut self.data
    }
    /// Gives the elements back. A tensor from [`Tensor::from_vec`] hands its `Vec` back
    /// as it was; one the crate allocated (64-byte aligned) shifts its elements to the start
    /// of its allocation first (one pass, no new allocation).
    pub fn into_vec(self) -> Vec<T> {
        self.data.into_vec()
    }
    /// The `Vec` that holds the elements and the index of the first (the padding before
    /// it, if any, is initialised): hands the storage over without moving the elements.
    #[cfg(feature = "ndarray")]
    pub(crate) fn into_raw_parts(self) -> (Vec<T>, usize) {
        self.data.into_raw_parts()
    }
    /// A borrowed view of the whole tensor.
    pub fn view(&self) -> TensorView<'_, T> {
        TensorView {
            shape: self.shape,
            data: &self.data,
        }
    }
    /// A mutable borrowed view of the whole tensor.
    pub fn view_mut(&mut self) -> TensorViewMut<'_, T> {
        TensorViewMut {
            shape: self.shape,
            data: &mut self.data,
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tensor")
            .field("shape", &self.shape)
            .field("data", &&*self.data)
            .finish()
    }
}

/// A borrowed tensor: a [`Shape`] and a slice of exactly that many elements.
#[derive(Clone, Copy)]
pub struct TensorView<'a, T> {
    shape: Shape,
    data: &'a [T],
}

impl<'a, T: Float> TensorView<'a, T> {
    /// A view of `data` with the given shape; errors on a length mismatch.
    ///
    /// ```
    /// use cnn_kernels::TensorView;
    /// let data = [1.0f64, 2.0, 3.0, 4.0];
    /// let v = TensorView::new([1, 1, 2, 2], &data).unwrap();
    /// assert_eq!(v.data()[3], 4.0);
    /// ```
    pub fn new(shape: impl Into<Shape>, data: &'a [T]) -> Result<Self> {
        let shape = shape.into();
        check_len(shape, data.len())?;
        Ok(TensorView { shape, data })
    }
    /// The shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }
    /// The elements, row-major.
    pub fn data(&self) -> &'a [T] {
        self.data
    }
    /// Copies into an owned tensor.
    pub fn to_tensor(&self) -> Tensor<T> {
        Tensor {
            shape: self.shape,
            data: Aligned::from_vec(self.data.to_vec()),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for TensorView<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TensorView")
            .field("shape", &self.shape)
            .field("len", &self.data.len())
            .finish()
    }
}

/// A mutable borrowed tensor, the output argument of the allocation-free kernels.
pub struct TensorViewMut<'a, T> {
    shape: Shape,
    data: &'a mut [T],
}

impl<'a, T: Float> TensorViewMut<'a, T> {
    /// A mutable view of `data` with the given shape; errors on a length mismatch.
    pub fn new(shape: impl Into<Shape>, data: &'a mut [T]) -> Result<Self> {
        let shape = shape.into();
        check_len(shape, data.len())?;
        Ok(TensorViewMut { shape, data })
    }
    /// The shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }
    /// The elements, row-major.
    pub fn data(&self) -> &[T] {
        self.data
    }
    /// The elements, row-major, mutable.
    pub fn data_mut(&mut self) -> &mut [T] {
        self.data
    }
    /// Consumes the view, giving back the mutable slice with its full lifetime.
    pub fn into_data(self) -> &'a mut [T] {
        self.data
    }
    /// Reborrows as a shorter-lived mutable view.
    pub fn reborrow(&mut self) -> TensorViewMut<'_, T> {
        TensorViewMut {
            shape: self.shape,
            data: self.data,
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for TensorViewMut<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TensorViewMut")
            .field("shape", &self.shape)
            .field("len", &self.data.len())
            .finish()
    }
}
