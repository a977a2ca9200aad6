//! Fast max-pool forward: values, optionally with the winners' window offsets.

use rayon::prelude::*;

use super::indices::{IndexData, MaxPool2dIndices};
use super::kernel::{self, Plan};

use super::{MaxPool2dGeometry, MaxPool2dParams, OP};
use crate::error::{Error, Result};
use crate::simd::{self, cast_slice, cast_slice_mut, Level};
use crate::{Float, Shape, Tensor, TensorView, TensorViewMut};

/// Planes per rayon task: enough that a task reads at least ~16 K elements (every plane in
/// one task, and so no rayon call, on one thread).
pub(super) fn planes_per_task(plane: usize) -> usize {
    crate::threads::min_len((16 * 1024 / plane.max(1)).max(1))
}

/// One plane's forward with `u8` offsets (window ≤ 256) or none, at `level`.
fn one_plane<T: Float>(level: Level, x: &[T], p: &Plan, out: &mut [T], idx: Option<&mut [u8]>) {
    if let (Some(x), Some(out)) = (cast_slice::<T, f32>(x), cast_slice_mut::<T, f32>(out)) {
        return kernel::fwd_plane::<f32>(level, x, p, out, idx);
    }
    if let (Some(x), Some(out)) = (cast_slice::<T, f64>(x), cast_slice_mut::<T, f64>(out)) {
        return kernel::fwd_plane::<f64>(level, x, p, out, idx);
    }
    // `Float` is sealed to f32 and f64, so this is not reached; it is still correct.
    kernel::fwd_plane_scalar::<T, u8>(x, p, out, idx)
}

/// Runs the forward over every plane, in parallel over `N·C` (each plane is written by one
/// task, so the result does not depend on the thread count).
fn run<T: Float>(g: &MaxPool2dGeometry, x: &[T], out: &mut [T], idx: Option<&mut IndexData>) {
    let p = Plan::new(g);
    let plane = g.h * g.w;
    let oplane = g.oh * g.ow;
    let ml = planes_per_task(plane);
    let level = simd::active_level();
    let outs = out.par_chunks_mut(oplane).with_min_len(ml);
    let xs = x.par_chunks(plane).with_min_len(ml);
    match idx {
        None => outs
            .zip(xs)
            .for_each(|(o, x)| one_plane(level, x, &p, o, None)),
        Some(IndexData::U8(v)) => outs
            .zip(xs)
            .zip(v.par_chunks_mut(oplane).with_min_len(ml))
            .for_each(|((o, x), ix)| one_plane(level, x, &p, o, Some(ix))),
        Some(IndexData::U16(v)) => outs
            .zip(xs)
            .zip(v.par_chunks_mut(oplane).with_min_len(ml))
            .for_each(|((o, x), ix)| kernel::fwd_plane_scalar(x, &p, o, Some(ix))),
        Some(IndexData::U32(v)) => outs
            .zip(xs)
            .zip(v.par_chunks_mut(oplane).with_min_len(ml))
            .for_each(|((o, x), ix)| kernel::fwd_plane_scalar(x, &p, o, Some(ix))),
    }
}

fn check_out(g: &MaxPool2dGeometry, out: Shape) -> Result<()> {
    if out.dims() != g.out_shape() {
        return Err(Error::shape(
            OP,
            format!(
                "out has shape {out}, the output shape is {:?}",
                g.out_shape()
            ),
        ));
    }
    Ok(())
}

/// Max-pool forward; output `(N, C, OH, OW)`, bitwise equal to
/// [`naive::forward`](super::naive::forward) (first maximum wins, the first NaN wins,
/// padding never wins) at every SIMD level and thread count.
///
/// Vectorised along the output row, with specialised paths for 2×2 stride 2 and 3×3
/// stride 2 (any padding) and a general path for stride 1 or 2; parallel over `N·C` planes
/// with rayon (run inside `pool.install` to choose the threads).
///
/// Errors as [`MaxPool2dGeometry::new`] does.
///
/// ```
/// use cnn_kernels::{pool::{self, MaxPool2dParams}, TensorView};
/// let x = [1.0f32, 5.0, 2.0, 3.0];
/// let out = pool::forward(TensorView::new([1, 1, 2, 2], &x)?, &MaxPool2dParams::new([2, 2]))?;
/// assert_eq!(out.data(), &[5.0]);
/// # Ok::<(), cnn_kernels::Error>(())
/// ```
pub fn forward<T: Float>(x: TensorView<'_, T>, p: &MaxPool2dParams) -> Result<Tensor<T>> {
    let g = MaxPool2dGeometry::new(x.shape(), p)?;
    let mut out = Tensor::zeros(g.out_shape())?;
    run(&g, x.data(), out.data_mut(), None);
    Ok(out)
}

/// [`forward`] into a caller buffer `out` of shape `(N, C, OH, OW)`; allocates nothing.
///
/// Errors as [`forward`] does and if `out` does not have the output shape.
pub fn forward_into<T: Float>(
    x: TensorView<'_, T>,
    p: &MaxPool2dParams,
    mut out: TensorViewMut<'_, T>,
) -> Result<()> {
    let g = MaxPool2dGeometry::new(x.shape(), p)?;
    check_out(&g, out.shape())?;
    run(&g, x.data(), out.data_mut(), None);
    Ok(())
}

/// Training-mode forward: the output of [`forward`] and, per output, which window element
/// won ([`MaxPool2dIndices`], 1 byte per output for windows of at most 256 elements), for
/// [`backward_with_indices`](super::backward_with_indices).
///
/// Errors as [`forward`] does, and if the window has more than 2³² elements.
///
/// ```
/// use cnn_kernels::{pool::{self, MaxPool2dParams}, TensorView};
/// let x = [1.0f32, 5.0, 2.0, 3.0];
/// let (out, ix) = pool::forward_with_indices(TensorView::new([1, 1, 2, 2], &x)?, &MaxPool2dParams::new([2, 2]))?;
/// assert_eq!(out.data(), &[5.0]);
/// assert_eq!(ix.window_offset(0, 0, 0, 0), Some(1));
/// assert_eq!(ix.flat_index(0, 0, 0, 0), Some(1));
/// # Ok::<(), cnn_kernels::Error>(())
/// ```
pub fn forward_with_indices<T: Float>(
    x: TensorView<'_, T>,
    p: &MaxPool2dParams,
) -> Result<(Tensor<T>, MaxPool2dIndices)> {
    let g = MaxPool2dGeometry::new(x.shape(), p)?;
    let mut out = Tensor::zeros(g.out_shape())?;
    let mut ix = MaxPool2dIndices::new(&g)?;
    run(&g, x.data(), out.data_mut(), Some(ix.parts_mut().1));
    ix.set_filled();
    Ok((out, ix))
}

/// [`forward_with_indices`] into caller buffers: `out` of shape `(N, C, OH, OW)` and
/// `indices` made by [`MaxPool2dIndices::new`] for this geometry (or returned by an earlier
/// forward of the same geometry); allocates nothing.
///
/// Errors as [`forward`] does, if `out` does not have the output shape, and if `indices`
/// belongs to another geometry.
pub fn forward_with_indices_into<T: Float>(
    x: TensorView<'_, T>,
    p: &MaxPool2dParams,
    mut out: TensorViewMut<'_, T>,
    indices: &mut MaxPool2dIndices,
) -> Result<()> {
    let g = MaxPool2dGeometry::new(x.shape(), p)?;
    check_out(&g, out.shape())?;
    let (ig, data) = indices.parts_mut();
    if *ig != g {
        return Err(Error::shape(
            OP,
            format!(
                "indices were made for input {:?} with {:?}, not input {:?} with {:?}",
                ig.x_shape(),
                ig.params,
                g.x_shape(),
                g.params
            ),
        ));
    }
    run(&g, x.data(), out.data_mut(), Some(data));
    indices.set_filled();
    Ok(())
}
