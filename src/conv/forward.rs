//! Fast forward convolution: im2col + GEMM per (image, group, tile of output pixels),
//! the image itself as the column matrix for 1×1 stride-1 unpadded kernels, and a direct
//! SIMD kernel for depthwise convolutions.

use super::depthwise;
use super::direct::{self, small_gemm, SmallGemm};
use super::exec::{run_lanes, run_tasks, SharedMut};
use super::gemm::MatRef;
use super::im2col::{im2col, Lowering};
use super::plan::{FwdPlan, Path, Phases, DEFAULT_LANES};
use super::{Conv2dGeometry, Conv2dParams, OP};
use crate::alloc::{as_uninit_mut, assume_init_aligned, uninit_aligned, zeroed_aligned_par, Out};
use crate::error::{Error, Result};
use crate::{simd, Float, Shape, Tensor, TensorView, TensorViewMut};

/// Elements of workspace that [`forward_into`] needs to run up to 8 tasks at once (0 for
/// 1×1 stride-1 unpadded convolutions); [`forward_workspace_len_for_threads`] sizes it for
/// another number.
///
/// Depends on the geometry only — not on the element type's size, nor on the pool: each
/// task lowers one tile of about 128 Ki elements (at least 256 output pixels), or for
/// depthwise convolutions one padded window of about 32 Ki elements, so it never scales
/// with the batch.
///
/// ```
/// use cnn_kernels::conv::{forward_workspace_len, Conv2dGeometry, Conv2dParams};
/// let p = Conv2dParams::default().stride([2, 2]).padding([3, 3]);
/// let g = Conv2dGeometry::new([8, 3, 224, 224].into(), [64, 3, 7, 7].into(), &p).unwrap();
/// assert!(forward_workspace_len(&g) < 2_000_000); // not 147 × 12544 per image
/// ```
pub fn forward_workspace_len(g: &Conv2dGeometry) -> usize {
    workspace_len(g, DEFAULT_LANES)
}

/// Elements of workspace with which [`forward_into`] runs up to `threads` tasks at once
/// (at least one): give it `rayon::current_num_threads()` of your pool to use every
/// thread. The smallest workspace `forward_into` accepts is this for one thread; it
/// grows with `threads` only up to the number of tasks the geometry splits into.
///
/// ```
/// use cnn_kernels::conv::{forward_workspace_len, forward_workspace_len_for_threads};
/// use cnn_kernels::conv::{Conv2dGeometry, Conv2dParams};
/// let p = Conv2dParams::default().padding([1, 1]);
/// let g = Conv2dGeometry::new([8, 64, 56, 56].into(), [64, 64, 3, 3].into(), &p).unwrap();
/// let one = forward_workspace_len_for_threads(&g, 1);
/// assert_eq!(forward_workspace_len_for_threads(&g, 8), forward_workspace_len(&g));
/// assert!(one > 0 && forward_workspace_len_for_threads(&g, 16) == 16 * one);
/// ```
pub fn forward_workspace_len_for_threads(g: &Conv2dGeometry, threads: usize) -> usize {
    workspace_len(g, threads.max(1))
}

/// Workspace elements with at most `max_lanes` lanes (tasks running at once, each with its
/// own slot of the workspace).
fn workspace_len(g: &Conv2dGeometry, max_lanes: usize) -> usize {
    match Path::of(g) {
        Path::Depthwise => depthwise::forward_workspace_len(g, max_lanes),
        _ => FwdPlan::new(g).with_max_lanes(max_lanes).workspace_len(),
    }
}

/// Fast forward convolution; the same contract and result (up to rounding) as
/// [`naive::forward`](super::naive::forward).
///
/// Allocates the output and the workspace (fallibly), then runs [`forward_into`]. Uses the
/// current rayon pool; the output is bitwise identical for any number of threads.
///
/// ```
/// use cnn_kernels::{conv::{self, Conv2dParams}, TensorView};
/// let x: Vec<f32> = (0..2 * 3 * 5 * 5).map(|v| (v % 7) as f32).collect();
/// let w = vec![0.5f32; 4 * 3 * 3 * 3];
/// let p = Conv2dParams::default().padding([1, 1]);
/// let (xv, wv) = (TensorView::new([2, 3, 5, 5], &x)?, TensorView::new([4, 3, 3, 3], &w)?);
/// let fast = conv::forward(xv, wv, Some(&[1.0; 4]), &p)?;
/// let slow = conv::naive::forward(xv, wv, Some(&[1.0; 4]), &p)?;
/// assert!(fast.data().iter().zip(slow.data()).all(|(a, b)| (a - b).abs() <= 1e-4 * b.abs().max(1.0)));
/// # Ok::<(), cnn_kernels::Error>(())
/// ```
pub fn forward<T: Float>(
    x: TensorView<'_, T>,
    w: TensorView<'_, T>,
    b: Option<&[T]>,
    p: &Conv2dParams,
) -> Result<Tensor<T>> {
    let g = Conv2dGeometry::new(x.shape(), w.shape(), p)?;
    if let Some(b) = b {
        g.check_bias(b.len())?;
    }
    let shape = Shape::from(g.out_shape());
    let mut out = uninit_aligned(OP, shape.len_for(OP)?)?;
    // One lane per thread of the pool (no more: the workspace shrinks to the slots used).
    let lanes = rayon::current_num_threads();
    let mut ws = zeroed_aligned_par(OP, workspace_len(&g, lanes))?;
    forward_checked(x, w, b, p, (shape, &mut out), (&mut ws, lanes))?;
    // SAFETY: `forward_checked` returned `Ok`, so it wrote every element of `out`.
    Tensor::from_aligned(shape, unsafe { assume_init_aligned(out) })
}

/// Allocation-free forward convolution into `out` `(N, F, OH, OW)`, using `workspace`
/// (its contents on entry do not matter and are clobbered). Every element of `out` is
/// overwritten.
///
/// Runs as many tasks at once as the workspace has room for, up to the current pool's
/// thread count: [`forward_workspace_len`] elements hold 8,
/// [`forward_workspace_len_for_threads`]`(g, t)` hold `t`, and one thread's worth is the
/// least accepted.
///
/// Errors as [`naive::forward`](super::naive::forward) does, plus: `out` not of the output
/// shape ([`Error::ShapeMismatch`]) and a workspace shorter than one thread's
/// ([`Error::WorkspaceTooSmall`]). Bitwise identical output for any rayon thread count and
/// workspace size. (The GEMM library allocates its own small packing buffers per call.)
pub fn forward_into<T: Float>(
    x: TensorView<'_, T>,
    w: TensorView<'_, T>,
    b: Option<&[T]>,
    p: &Conv2dParams,
    out: TensorViewMut<'_, T>,
    workspace: &mut [T],
) -> Result<()> {
    let shape = out.shape();
    // SAFETY: the kernels store only computed values through `Out` slots.
    let out = unsafe { as_uninit_mut(out.into_data()) };
    let threads = rayon::current_num_threads();
    forward_checked(x, w, b, p, (shape, out), (workspace, threads))
}

/// Validates, then computes. On `Ok`, every element of `out` has been written: `out` has
/// the output's length (checked), the depthwise tasks write every row chunk of every output
/// plane, and the GEMM units × filter blocks partition `out`, each block written whole by
/// the GEMM (`β = 0`) or the small-`K` kernel.
fn forward_checked<T: Float>(
    x: TensorView<'_, T>,
    w: TensorView<'_, T>,
    b: Option<&[T]>,
    p: &Conv2dParams,
    (out_shape, out): (Shape, &mut [Out<T>]),
    (workspace, max_lanes): (&mut [T], usize),
) -> Result<()> {
    let g = Conv2dGeometry::new(x.shape(), w.shape(), p)?;
    if let Some(b) = b {
        g.check_bias(b.len())?;
    }
    if out_shape.dims() != g.out_shape() || out_shape.checked_len() != Some(out.len()) {
        return Err(Error::shape(
            OP,
            format!(
                "out has shape {}, the output shape is {:?}",
                out_shape,
                g.out_shape()
            ),
        ));
    }
    let (max_lanes, need) =
        super::workspace_lanes(workspace.len(), max_lanes, |l| workspace_len(&g, l))?;
    let (x, w) = (x.data(), w.data());
    let ws = &mut workspace[..need];
    match Path::of(&g) {
        Path::Depthwise => depthwise::forward(&g, x, w, b, out, ws, max_lanes),
        _ => {
            let plan = FwdPlan::new(&g).with_max_lanes(max_lanes);
            gemm_forward(&g, &plan, x, w, b, out, ws)
        }
    }
    Ok(())
}

/// `out[n, group] = W[group] · cols(n, group) + b`, one unit (image, group, tile) at a time per
/// lane; each unit writes only its filters' rows × its tile's columns of `out`.
pub(super) fn gemm_forward<T: Float>(
    g: &Conv2dGeometry,
    plan: &FwdPlan,
    x: &[T],
    w: &[T],
    b: Option<&[T]>,
    out: &mut [Out<T>],
    ws: &mut [T],
) {
    let (p, hw, k) = (g.oh * g.ow, g.h * g.w, plan.k);
    let lw = Lowering::new(g);
    let nt = plan.tiles.count;
    let out = SharedMut::new_out(out);
    run_lanes(ws, plan.slot_len, plan.lanes, plan.units, |unit, slot| {
        let (n, grp, tile) = (unit / (nt * g.groups), (unit / nt) % g.groups, unit % nt);
        let (p0, pt) = plan.tiles.range(tile);
        let xg = (n * g.c + grp * g.cg) * hw;
        if plan.phased {
            // One reading of the level for the whole unit (tests change it concurrently).
            let level = simd::active_level();
            if direct::available(level) {
                let xg = &x[xg..xg + g.cg * hw];
                phased_unit(g, plan, level, xg, w, b, &out, (n, grp, p0, pt), slot);
                return;
            }
        }
        let cols = match plan.path {
            Path::Im2col => {
                let cols = &mut slot[..k * pt];
                let xg = &x[xg..xg + g.cg * hw];
                if plan.fblocks.count == 1 {
                    im2col(&lw, xg, g.cg, p0, pt, cols);
                } else {
                    // The filter blocks will run in parallel: lower in parallel too, by
                    // blocks of channels (each a run of rows of `cols`; a plain copy).
                    let cpb = g.cg.div_ceil(plan.fblocks.count);
                    let rows = cpb * g.kh * g.kw * pt;
                    let (len, chunks) = (cols.len(), cols.len().div_ceil(rows));
                    let shared = SharedMut::new(&mut *cols);
                    run_tasks(rayon::current_num_threads(), chunks, |i| {
                        let c0 = i * rows;
                        // SAFETY: chunk `i` is `cols[i·rows ..][..rows]` (shorter at the end),
                        // disjoint from the other chunks, and only task `i` touches it.
                        let c = unsafe { shared.slice(c0, rows.min(len - c0)) };
                        let cn = c.len() / (rows / cpb);
                        im2col(&lw, &xg[i * cpb * hw..], cn, p0, pt, c);
                    });
                }
                MatRef::new(&*cols, pt, 1)
            }
            _ => MatRef::new(&x[xg + p0..], hw, 1),
        };
        let wg = &w[grp * g.fg * k..(grp + 1) * g.fg * k];
        let base = (n * g.f + grp * g.fg) * p + p0;

        let block = |fb: usize| {
            let (f0, fm) = plan.fblocks.range(fb);
            if plan.small_k && small_block(g, plan, (grp, f0, fm), base, pt, wg, cols, b, &out) {
                return;
            }
            let off = base + f0 * p;
            let wb = MatRef::new(&wg[f0 * k..], k, 1);
            // SAFETY: `C` is filters f0..f0+fm × pixels p0..p0+pt of image n, group grp:
            // written by this (unit, block) only; each unit runs once (run_lanes). With
            // β = 0 it is only written.
            unsafe { out.gemm(off, p, 1, fm, k, pt, wb, cols, T::ZERO) };
            if let Some(b) = b {
                // The bias is added to the tile while it is still in cache.
                for r in 0..fm {
                    // SAFETY: row `f0 + r` of this unit's tile belongs to this unit and
                    // this filter block alone (units and blocks partition `out`), and the
                    // GEMM just wrote all of it.
                    let row = unsafe { out.slice(off + r * p, pt) };
                    let bv = b[grp * g.fg + f0 + r];
                    for v in row {
                        *v += bv;
                    }
                }
            }
        };
        if plan.fblocks.count == 1 {
            block(0);
        } else {
            let lanes = rayon::current_num_threads();
            run_tasks(lanes, plan.fblocks.count, block);
        }
    });
}

/// Filters `f0 .. f0 + fm` of group `grp` × one unit's `pt` pixels (at `out[base ..]`,
/// filter row stride `OH·OW`) through the register-blocked small-`K` kernel
/// ([`small_rows`]). Returns `false`, writing
/// nothing, where that kernel has no clone for the SIMD level (the GEMM runs instead).
#[allow(clippy::too_many_arguments)]
fn small_block<T: Float>(
    g: &Conv2dGeometry,
    plan: &FwdPlan,
    (grp, f0, fm): (usize, usize, usize),
    base: usize,
    pt: usize,
    wg: &[T],
    cols: MatRef<'_, T>,
    b: Option<&[T]>,
    out: &SharedMut<'_, T>,
) -> bool {
    // One reading of the level for the whole block (tests change it concurrently).
    let level = simd::active_level();
    if !direct::available(level) {
        return false;
    }
    let (p, k) = (g.oh * g.ow, plan.k);
    let mut offs = [0; direct::MAX_K];
    for (t, o) in offs.iter_mut().enumerate().take(k) {
        *o = t * cols.rs;
    }
    let fb = grp * g.fg + f0;
    let args = SmallGemm {
        k,
        w: &wg[f0 * k..(f0 + fm) * k],
        cols: cols.data,
        offs: &offs[..k],
        seg_len: pt,
        seg_step: 0,
        pt,
        bias: b.map(|b| &b[fb..fb + fm]),
    };
    // SAFETY: filters f0..f0+fm × the unit's pixels are written by this (unit, filter
    // block) alone, which runs once.
    unsafe { small_rows(level, out, base + f0 * p, p, &args) };
    true
}

/// Runs [`small_gemm`] on the `w.len() / k` filters of `args` (rows of `pt` pixels at
/// `out[base + f·p ..]`), 8 at a time (the chunking does not change any element's sum).
///
/// # Safety
/// No other task may access those rows during the call.
unsafe fn small_rows<T: Float>(
    level: simd::Level,
    out: &SharedMut<'_, T>,
    base: usize,
    p: usize,
    args: &SmallGemm<'_, T>,
) {
    const CHUNK: usize = 8;
    let (k, pt) = (args.k, args.pt);
    let fm = args.w.len() / k;
    for c0 in (0..fm).step_by(CHUNK) {
        let cm = CHUNK.min(fm - c0);
        let mut rows: [&mut [Out<T>]; CHUNK] = std::array::from_fn(|r| {
            if r < cm {
                // SAFETY: row `c0 + r` is ours alone (the caller's contract); the rows are
                // distinct.
                unsafe { out.slice_out(base + (c0 + r) * p, pt) }
            } else {
                &mut []
            }
        });
        let chunk = SmallGemm {
            w: &args.w[c0 * k..(c0 + cm) * k],
            bias: args.bias.map(|b| &b[c0..c0 + cm]),
            ..*args
        };
        let done = small_gemm(level, &chunk, &mut rows[..cm]);
        debug_assert!(done);
    }
}

/// One unit (image `n`, group `grp`, the whole output rows of pixels `p0 .. p0 + pt`) of a
/// small-`K` im2col-path convolution: copies the input rows it reads into `slot` in the
/// [`Phases`] layout, then runs the register-blocked kernel on each output row, reading the
/// taps' contiguous runs in place (no lowering).
#[allow(clippy::too_many_arguments)]
fn phased_unit<T: Float>(
    g: &Conv2dGeometry,
    plan: &FwdPlan,
    level: simd::Level,
    xg: &[T],
    w: &[T],
    b: Option<&[T]>,
    out: &SharedMut<'_, T>,
    (n, grp, p0, pt): (usize, usize, usize, usize),
    slot: &mut [T],
) {
    let (p, k, ow) = (g.oh * g.ow, plan.k, g.ow);
    let (r0, rn) = (p0 / ow, pt / ow);
    let ph = Phases::new(g, rn);
    let buf = &mut slot[..ph.len()];
    fill_phases(g, &ph, xg, r0, buf);
    let [sh, sw] = g.params.stride;
    let [dh, dw] = g.params.dilation;
    let mut offs0 = [0; direct::MAX_K];
    for c in 0..g.cg {
        for u in 0..g.kh {
            for v in 0..g.kw {
                offs0[(c * g.kh + u) * g.kw + v] =
                    ((c * ph.in_rows + u * dh) * sw + (v * dw) % sw) * ph.width + (v * dw) / sw;
            }
        }
    }
    let args = SmallGemm {
        k,
        w: &w[grp * g.fg * k..(grp + 1) * g.fg * k],
        cols: &*buf,
        offs: &offs0[..k],
        seg_len: ow,
        seg_step: sh * sw * ph.width,
        bias: b.map(|b| &b[grp * g.fg..(grp + 1) * g.fg]),
        pt,
    };
    // SAFETY: the tile's pixels of the group's filters (image n) are written by this unit
    // alone, which runs once.
    unsafe { small_rows(level, out, (n * g.f + grp * g.fg) * p + p0, p, &args) };
}

/// Fills `buf` with the [`Phases`] copy of the `cg` planes `xg` for the tile whose first
/// output row is `r0` (zeros in the padding).
fn fill_phases<T: Float>(g: &Conv2dGeometry, ph: &Phases, xg: &[T], r0: usize, buf: &mut [T]) {
    let (hw, sw, width) = (g.h * g.w, ph.sw, ph.width);
    let [pad_h, pad_w] = g.params.padding;
    for c in 0..g.cg {
        for y in 0..ph.in_rows {
            let dst = &mut buf[(c * ph.in_rows + y) * sw * width..][..sw * width];
            // Input row r0·sh + y − pad_h, when inside the input.
            let iy = (r0 * g.params.stride[0] + y).wrapping_sub(pad_h);
            if iy >= g.h {
                dst.fill(T::ZERO);
                continue;
            }
            let src = &xg[c * hw + iy * g.w..][..g.w];
            for (q, d) in dst.chunks_exact_mut(width).enumerate() {
                for (m, d) in d.iter_mut().enumerate() {
                    // Padded column m·sw + q is input column m·sw + q − pad_w.
                    let ix = (m * sw + q).wrapping_sub(pad_w);
                    *d = if ix < g.w { src[ix] } else { T::ZERO };
                }
            }
        }
    }
}
