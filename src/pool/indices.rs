//! The compact record of which window element won each output, kept by the training-mode
//! forward for the backward pass.

use super::{MaxPool2dGeometry, OP};
use crate::alloc::zeroed_vec;
use crate::error::{Error, Result};

/// Which window element won each output of a max-pool forward, for
/// [`backward_with_indices`](super::backward_with_indices).
///
/// Each output stores the **offset of its winner within the `kh × kw` window**, row-major,
/// counting padded positions (`offset = dr·kw + dc`, where `(dr, dc)` is the winner's place
/// in the window whose top-left corner is input `(i·sh − ph, j·sw − pw)`). Offsets are
/// stored as `u8` when the window has at most 256 elements (every common pooling), else as
/// `u16` or `u32` — 1/8 of the memory of PyTorch's 64-bit plane indices for the usual
/// windows. [`flat_index`](Self::flat_index) converts to PyTorch's convention (an index into
/// the `H·W` plane).
///
/// Created empty by [`new`](Self::new) (for the allocation-free
/// [`forward_with_indices_into`](super::forward_with_indices_into)) or filled by
/// [`forward_with_indices`](super::forward_with_indices). The contents can only be written by
/// the forward pass, so every stored offset names an in-bounds input element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaxPool2dIndices {
    geom: MaxPool2dGeometry,
    data: IndexData,
    filled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum IndexData {
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
}

/// An integer type holding a window offset.
pub(super) trait WinIdx: Copy + Send + Sync {
    /// Truncating conversion (the caller checked that the window fits the type).
    fn from_off(off: usize) -> Self;
    /// The offset.
    fn off(self) -> usize;
}

macro_rules! impl_win_idx {
    ($($t:ty),*) => {$(
        impl WinIdx for $t {
            #[inline(always)]
            fn from_off(off: usize) -> Self {
                off as $t
            }
            #[inline(always)]
            fn off(self) -> usize {
                self as usize
            }
        }
    )*};
}
impl_win_idx!(u8, u16, u32);

impl MaxPool2dIndices {
    /// Room for the indices of a pooling with geometry `g` (one per output), not yet filled:
    /// pass it to [`forward_with_indices_into`](super::forward_with_indices_into), then reuse it
    /// across calls of the same geometry without allocating.
    ///
    /// Errors if the window has more than 2³² elements or the buffer exceeds the allocation
    /// limit.
    pub fn new(g: &MaxPool2dGeometry) -> Result<Self> {
        let len = g.n * g.c * g.oh * g.ow;
        let [kh, kw] = g.params.kernel;
        let win = (kh as u128) * (kw as u128);
        let data = if win <= 1 << 8 {
            IndexData::U8(zeroed_vec(OP, len)?)
        } else if win <= 1 << 16 {
            IndexData::U16(zeroed_vec(OP, len)?)
        } else if win <= 1 << 32 {
            IndexData::U32(zeroed_vec(OP, len)?)
        } else {
            return Err(Error::too_large(
                OP,
                format!("window {kh}×{kw} has more than 2^32 elements to index"),
            ));
        };
        Ok(MaxPool2dIndices {
            geom: *g,
            data,
            filled: false,
        })
    }

    /// The geometry these indices belong to.
    pub fn geometry(&self) -> &MaxPool2dGeometry {
        &self.geom
    }

    /// The output shape `(N, C, OH, OW)`; one index per output.
    pub fn out_shape(&self) -> [usize; 4] {
        self.geom.out_shape()
    }

    /// Number of indices (`N·C·OH·OW`).
    pub fn len(&self) -> usize {
        match &self.data {
            IndexData::U8(v) => v.len(),
            IndexData::U16(v) => v.len(),
            IndexData::U32(v) => v.len(),
        }
    }

    /// Whether there are no indices (never true: shapes are non-empty).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes per stored index: 1, 2 or 4.
    pub fn bytes_per_index(&self) -> usize {
        match &self.data {
            IndexData::U8(_) => 1,
            IndexData::U16(_) => 2,
            IndexData::U32(_) => 4,
        }
    }

    /// Whether a forward pass has written the indices.
    pub fn is_filled(&self) -> bool {
        self.filled
    }

    fn position(&self, n: usize, c: usize, i: usize, j: usize) -> Option<usize> {
        let g = &self.geom;
        if !self.filled || n >= g.n || c >= g.c || i >= g.oh || j >= g.ow {
            return None;
        }
        Some(((n * g.c + c) * g.oh + i) * g.ow + j)
    }

    /// The winner of output `(n, c, i, j)` as an offset within its `kh × kw` window
    /// (row-major, padding included); `None` out of range or before a forward filled them.
    pub fn window_offset(&self, n: usize, c: usize, i: usize, j: usize) -> Option<usize> {
        let k = self.position(n, c, i, j)?;
        Some(match &self.data {
            IndexData::U8(v) => v[k] as usize,
            IndexData::U16(v) => v[k] as usize,
            IndexData::U32(v) => v[k] as usize,
        })
    }

    /// The winner of output `(n, c, i, j)` as an index into its `H·W` input plane
    /// (`row·W + col`, PyTorch's convention); `None` out of range or before a forward.
    pub fn flat_index(&self, n: usize, c: usize, i: usize, j: usize) -> Option<usize> {
        let off = self.window_offset(n, c, i, j)?;
        let g = &self.geom;
        let [_, kw] = g.params.kernel;
        let r = i * g.params.stride[0] + off / kw - g.params.padding[0];
        let col = j * g.params.stride[1] + off % kw - g.params.padding[1];
        Some(r * g.w + col)
    }

    pub(super) fn parts_mut(&mut self) -> (&MaxPool2dGeometry, &mut IndexData) {
        (&self.geom, &mut self.data)
    }

    pub(super) fn data(&self) -> &IndexData {
        &self.data
    }

    pub(super) fn set_filled(&mut self) {
        self.filled = true;
    }
}
