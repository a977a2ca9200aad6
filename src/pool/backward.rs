//! Fast max-pool backward: scatter through stored winners, or recompute them from `x`.

use rayon::prelude::*;

use super::forward::planes_per_task;
use super::indices::{IndexData, MaxPool2dIndices, WinIdx};
use super::kernel::{self, Plan};

use super::{MaxPool2dGeometry, MaxPool2dParams, OP};
use crate::alloc::{as_uninit_mut, assume_init_aligned, fill_init, uninit_aligned, Out};
use crate::error::{Error, Result};
use crate::simd::{self, cast_slice, cast_slice_mut, Level};
use crate::{Float, Shape, Tensor, TensorView, TensorViewMut};

fn check_dx(g: &MaxPool2dGeometry, dx: Shape) -> Result<()> {
    if dx.dims() != g.x_shape() {
        return Err(Error::shape(
            OP,
            format!("dx has shape {dx}, the input shape is {:?}", g.x_shape()),
        ));
    }
    Ok(())
}

/// One plane's recomputing backward (`dx` zero on entry).
fn one_plane<T: Float>(level: Level, x: &[T], dout: &[T], p: &Plan, dx: &mut [T]) {
    if p.kh * p.kw <= 256 {
        if let (Some(x), Some(d), Some(dx)) = (
            cast_slice::<T, f32>(x),
            cast_slice::<T, f32>(dout),
            cast_slice_mut::<T, f32>(dx),
        ) {
            return kernel::bwd_plane::<f32>(level, x, d, p, dx);
        }
        if let (Some(x), Some(d), Some(dx)) = (
            cast_slice::<T, f64>(x),
            cast_slice::<T, f64>(dout),
            cast_slice_mut::<T, f64>(dx),
        ) {
            return kernel::bwd_plane::<f64>(level, x, d, p, dx);
        }
    }
    if p.tiles_2x2() {
        // `run` left dx as it was for the direct 2×2 path; the scalar loop adds into it.
        dx.fill(T::ZERO);
    }
    kernel::bwd_plane_scalar(x, dout, p, dx)
}

/// Recomputing backward over every plane, parallel over `N·C` (one task per plane, so the
/// result does not depend on the thread count). `zeroed`: `dx` is already all zeros.
fn run<T: Float>(g: &MaxPool2dGeometry, dout: &[T], x: &[T], dx: &mut [T], zeroed: bool) {
    let p = Plan::new(g);
    let level = simd::active_level();
    per_plane(&p, x, p.h * p.w, dout, dx, |x, d, dx| {
        // The 2×2 stride-2 path writes every element of dx.
        if !zeroed && !p.tiles_2x2() {
            dx.fill(T::ZERO);
        }
        one_plane(level, x, d, &p, dx)
    });
}

/// Runs `f(src, dout, dx)` for every plane in parallel (several small planes per task):
/// `src` is the plane's `src_len` values (its input, or its stored winners), `dout` its
/// output gradient, `dx` its input gradient. One task per group of planes, so the result
/// does not depend on the thread count.
fn per_plane<S: Sync, T: Float, D: Send>(
    p: &Plan,
    src: &[S],
    src_len: usize,
    dout: &[T],
    dx: &mut [D],
    f: impl Fn(&[S], &[T], &mut [D]) + Sync,
) {
    let (plane, oplane) = (p.h * p.w, p.oh * p.ow);
    let ml = planes_per_task(plane);
    dx.par_chunks_mut(plane)
        .with_min_len(ml)
        .zip(src.par_chunks(src_len).with_min_len(ml))
        .zip(dout.par_chunks(oplane).with_min_len(ml))
        .for_each(|((dx, s), d)| f(s, d, dx));
}

/// The scatter through stored winners, parallel over planes: each task zeroes its planes of
/// `dx` (which may start uninitialised; zeroing here, in parallel and just before the
/// scatter, instead of in a zero-filled allocation) and adds each `dout` at its winner.
fn run_indices_typed<T: Float, I: WinIdx>(p: &Plan, ix: &[I], dout: &[T], dx: &mut [Out<T>]) {
    per_plane(p, ix, p.oh * p.ow, dout, dx, |ix, d, dx| {
        kernel::bwd_plane_indices(ix, d, p, fill_init(dx, T::ZERO))
    });
}

/// Checks `indices` against `p` and `dout`; returns their geometry.
fn check_indices(
    indices: &MaxPool2dIndices,
    p: &MaxPool2dParams,
    dout: Shape,
) -> Result<MaxPool2dGeometry> {
    let g = *indices.geometry();
    // Re-validate through the layer's geometry (the indices' geometry came from it too).
    let g2 = MaxPool2dGeometry::new(Shape::from(g.x_shape()), p)?;
    if g2 != g {
        return Err(Error::param(
            OP,
            format!(
                "indices were made with {:?}, the backward was given {p:?}",
                g.params
            ),
        ));
    }
    if !indices.is_filled() {
        return Err(Error::param(
            OP,
            "indices have not been filled by a forward pass".to_string(),
        ));
    }
    g.check_dout(dout)?;
    Ok(g)
}

/// The 2×2 stride-2 unpadded backward from `u8` offsets, parallel over planes: writes every
/// element of `dx` (each plane by [`kernel::bwd_2x2_plane`]).
fn run_2x2<T: Float>(p: &Plan, ix: &[u8], dout: &[T], dx: &mut [Out<T>]) {
    let level = simd::active_level();
    per_plane(p, ix, p.oh * p.ow, dout, dx, |ix, d, dx| {
        kernel::bwd_2x2_plane(level, ix, d, p, dx)
    });
}

/// The backward from stored winners into `dx` (which may start uninitialised): writes every
/// element (`run_2x2` writes every element of every plane; `run_indices_typed` zeroes every
/// plane before scattering into it).
fn run_indices<T: Float>(g: &MaxPool2dGeometry, ix: &IndexData, dout: &[T], dx: &mut [Out<T>]) {
    let p = Plan::new(g);
    match ix {
        IndexData::U8(v) if p.tiles_2x2() => run_2x2(&p, v, dout, dx),
        IndexData::U8(v) => run_indices_typed(&p, v, dout, dx),
        IndexData::U16(v) => run_indices_typed(&p, v, dout, dx),
        IndexData::U32(v) => run_indices_typed(&p, v, dout, dx),
    }
}

/// Max-pool backward without stored indices: recomputes each window's winner from `x`
/// (vectorised like [`forward`](super::forward)) and adds its upstream gradient there.
/// Returns `dx` `(N, C, H, W)`, bitwise equal to [`naive::backward`](super::naive::backward):
/// overlapping windows accumulate in row-major output order. Parallel over `N·C` planes, one
/// task per plane, so the result is the same for any thread count.
///
/// Errors as [`forward`](super::forward) does and if `dout` does not have the output shape.
pub fn backward<T: Float>(
    dout: TensorView<'_, T>,
    x: TensorView<'_, T>,
    p: &MaxPool2dParams,
) -> Result<Tensor<T>> {
    let g = MaxPool2dGeometry::new(x.shape(), p)?;
    g.check_dout(dout.shape())?;
    let mut dx = Tensor::zeros(g.x_shape())?;
    run(&g, dout.data(), x.data(), dx.data_mut(), true);
    Ok(dx)
}

/// [`backward`] into a caller buffer `dx` of shape `(N, C, H, W)` (overwritten, not added
/// to); allocates nothing.
///
/// Errors as [`backward`] does and if `dx` does not have the input shape.
pub fn backward_into<T: Float>(
    dout: TensorView<'_, T>,
    x: TensorView<'_, T>,
    p: &MaxPool2dParams,
    mut dx: TensorViewMut<'_, T>,
) -> Result<()> {
    let g = MaxPool2dGeometry::new(x.shape(), p)?;
    g.check_dout(dout.shape())?;
    check_dx(&g, dx.shape())?;
    run(&g, dout.data(), x.data(), dx.data_mut(), false);
    Ok(())
}

/// Max-pool backward from the winners recorded by
/// [`forward_with_indices`](super::forward_with_indices): `dx` `(N, C, H, W)`, equal to
/// [`backward`] on the same input (bitwise), without reading `x`.
///
/// Errors if `p` is not the parameters the indices were made with, if the indices were never
/// filled by a forward, and if `dout` does not have the output shape.
///
/// ```
/// use cnn_kernels::{pool::{self, MaxPool2dParams}, TensorView};
/// let x = [1.0f32, 5.0, 2.0, 3.0];
/// let p = MaxPool2dParams::new([2, 2]);
/// let (_, ix) = pool::forward_with_indices(TensorView::new([1, 1, 2, 2], &x)?, &p)?;
/// let dx = pool::backward_with_indices(TensorView::new([1, 1, 1, 1], &[7.0f32])?, &ix, &p)?;
/// assert_eq!(dx.data(), &[0.0, 7.0, 0.0, 0.0]);
/// # Ok::<(), cnn_kernels::Error>(())
/// ```
pub fn backward_with_indices<T: Float>(
    dout: TensorView<'_, T>,
    indices: &MaxPool2dIndices,
    p: &MaxPool2dParams,
) -> Result<Tensor<T>> {
    let g = check_indices(indices, p, dout.shape())?;
    // `run_indices` writes every element: no zero-filled allocation.
    let shape = Shape::from(g.x_shape());
    let mut dx = uninit_aligned(OP, shape.len_for(OP)?)?;
    run_indices(&g, indices.data(), dout.data(), &mut dx);
    // SAFETY: `run_indices` wrote every element of `dx`.
    Tensor::from_aligned(shape, unsafe { assume_init_aligned(dx) })
}

/// [`backward_with_indices`] into a caller buffer `dx` of shape `(N, C, H, W)` (overwritten);
/// allocates nothing.
///
/// Errors as [`backward_with_indices`] does and if `dx` does not have the input shape.
pub fn backward_with_indices_into<T: Float>(
    dout: TensorView<'_, T>,
    indices: &MaxPool2dIndices,
    p: &MaxPool2dParams,
    mut dx: TensorViewMut<'_, T>,
) -> Result<()> {
    let g = check_indices(indices, p, dout.shape())?;
    check_dx(&g, dx.shape())?;
    // SAFETY: `run_indices` stores only computed values.
    run_indices(&g, indices.data(), dout.data(), unsafe {
        as_uninit_mut(dx.data_mut())
    });
    Ok(())
}
