//! Fast backward convolution: `db`, `dw = Σ dout · colsᵀ` and `dx = col2im(Wᵀ · dout)` in
//! one call, with the same 1×1 and depthwise special paths as the forward. For stride 1,
//! where it measured faster, `dx` is instead the forward pass of the transposed convolution
//! ([`Transposed`]: `dx = conv(dout, W')`), which writes each element of `dx` once.
//!
//! Determinism: `db` sums each filter's gradients in a fixed order. `dw` is computed by
//! tasks of (batch chunk, group, channel block) — a partition fixed by the geometry, where a
//! chunk is a run of (image, tile) units — each accumulating its units in order into its own
//! block; the chunks' partials are then added in chunk order. `dx` is owned per (image,
//! channel block, band of output rows), overlapping bands added in a fixed phase order (or,
//! in the transposed form, computed like a forward output: no sums across tasks).
//! Nothing depends on the number of threads.

use rayon::prelude::*;

use super::depthwise::{self, bias_grad};
use super::exec::{run_lanes, SharedMut};
use super::forward;
use super::gemm::{gemm, MatRef};
use super::im2col::{col2im, im2col, Lowering};
use super::plan::{BwdPlan, Path, Transposed, DEFAULT_LANES};
use super::{Conv2dGeometry, Conv2dGrads, Conv2dParams, OP};
use crate::alloc::{as_uninit_mut, assume_init_aligned, uninit_aligned, zeroed_aligned_par, Out};
use crate::error::{Error, Result};
use crate::threads::min_len;
use crate::{Float, Shape, Tensor, TensorView, TensorViewMut};

/// Elements of workspace that [`backward_into`] needs to run up to 8 tasks at once;
/// [`backward_workspace_len_for_threads`] sizes it for another number.
///
/// Depends on the geometry only, not on the pool: the sum of the two passes' needs (they
/// run at the same time; for one thread, and for problems small enough to run on one
/// lane, one after the other: the larger). For `dw`, one column tile per task running at
/// once plus, for small weight tensors, the partial weight gradients of the batch chunks
/// (at most 1 Mi elements in all); for `dx`, one column tile per task, or in the transposed
/// form (stride 1) the flipped weights plus the forward's tiles; for depthwise
/// convolutions, one padded window per task.
pub fn backward_workspace_len(g: &Conv2dGeometry) -> usize {
    workspace_len(g, DEFAULT_LANES)
}

/// Elements of workspace with which [`backward_into`] runs up to `threads` tasks at once
/// (at least one): give it `rayon::current_num_threads()` of your pool to use every
/// thread. The smallest workspace `backward_into` accepts is this for one thread.
///
/// ```
/// use cnn_kernels::conv::{backward_workspace_len, backward_workspace_len_for_threads};
/// use cnn_kernels::conv::{Conv2dGeometry, Conv2dParams};
/// let p = Conv2dParams::default().padding([1, 1]);
/// let g = Conv2dGeometry::new([8, 64, 56, 56].into(), [64, 64, 3, 3].into(), &p).unwrap();
/// let one = backward_workspace_len_for_threads(&g, 1);
/// assert_eq!(backward_workspace_len_for_threads(&g, 8), backward_workspace_len(&g));
/// assert!(one < backward_workspace_len(&g));
/// ```
pub fn backward_workspace_len_for_threads(g: &Conv2dGeometry, threads: usize) -> usize {
    workspace_len(g, threads.max(1))
}

/// [`backward_workspace_len`] with at most `max_lanes` lanes (tasks running at once, each
/// with its own slot of the workspace).
fn workspace_len(g: &Conv2dGeometry, max_lanes: usize) -> usize {
    match Path::of(g) {
        Path::Depthwise => depthwise::backward_workspace_len(g, max_lanes),
        _ => BwdPlan::new(g).with_max_lanes(max_lanes).workspace_len(),
    }
}

/// Fast backward convolution; the same contract and result (up to rounding) as
/// [`naive::backward`](super::naive::backward).
///
/// Allocates the gradients and the workspace (fallibly), then runs [`backward_into`].
/// Bitwise identical gradients for any rayon thread count.
///
/// ```
/// use cnn_kernels::{conv::{self, Conv2dParams}, TensorView};
/// let x: Vec<f64> = (0..2 * 3 * 6 * 6).map(|v| ((v % 11) as f64) - 5.0).collect();
/// let w: Vec<f64> = (0..4 * 3 * 3 * 3).map(|v| ((v % 5) as f64) * 0.25).collect();
/// let dout = vec![1.0f64; 2 * 4 * 3 * 3];
/// let p = Conv2dParams::default().stride([2, 2]).padding([1, 1]);
/// let (xv, wv) = (TensorView::new([2, 3, 6, 6], &x)?, TensorView::new([4, 3, 3, 3], &w)?);
/// let dv = TensorView::new([2, 4, 3, 3], &dout)?;
/// let fast = conv::backward(dv, xv, wv, &p)?;
/// let slow = conv::naive::backward(dv, xv, wv, &p)?;
/// assert_eq!(fast.db, slow.db);
/// assert!(fast.dw.data().iter().zip(slow.dw.data()).all(|(a, b)| (a - b).abs() < 1e-12));
/// # Ok::<(), cnn_kernels::Error>(())
/// ```
pub fn backward<T: Float>(
    dout: TensorView<'_, T>,
    x: TensorView<'_, T>,
    w: TensorView<'_, T>,
    p: &Conv2dParams,
) -> Result<Conv2dGrads<T>> {
    let g = Conv2dGeometry::new(x.shape(), w.shape(), p)?;
    g.check_dout(dout.shape())?;
    let shape = Shape::from(g.x_shape());
    // Every element of dx is written by the kernels: no zero-filled allocation.
    let mut dx = uninit_aligned(OP, shape.len_for(OP)?)?;
    let mut dw = Tensor::zeros(g.w_shape())?;
    let mut db = crate::alloc::zeroed_vec(OP, g.f)?;
    // One lane per thread of the pool (no more: the workspace shrinks to the slots used).
    let lanes = rayon::current_num_threads();
    let mut ws = zeroed_aligned_par(OP, workspace_len(&g, lanes))?;
    let grads = ((shape, &mut dx[..]), dw.view_mut(), &mut db[..]);
    backward_checked(dout, x, w, p, grads, (&mut ws, lanes))?;
    // SAFETY: `backward_checked` returned `Ok`, so it wrote every element of `dx`.
    let dx = Tensor::from_aligned(shape, unsafe { assume_init_aligned(dx) })?;
    Ok(Conv2dGrads { dx, dw, db })
}

/// Allocation-free backward convolution: overwrites `dx` `(N, C, H, W)`, `dw`
/// `(F, C/groups, KH, KW)` and `db` (`F` values) with the gradients of `sum(out · dout)`,
/// using `workspace` (clobbered).
///
/// Runs as many tasks at once as the workspace has room for, up to the current pool's
/// thread count: [`backward_workspace_len`] elements hold 8,
/// [`backward_workspace_len_for_threads`]`(g, t)` hold `t`, and one thread's worth is the
/// least accepted.
///
/// Errors as [`naive::backward`](super::naive::backward) does, plus: `dx`, `dw` or `db` of
/// the wrong shape ([`Error::ShapeMismatch`]) and a workspace shorter than one thread's
/// ([`Error::WorkspaceTooSmall`]). Bitwise identical results for any rayon thread count and
/// workspace size. (The GEMM library allocates its own small packing buffers per call.)
#[allow(clippy::too_many_arguments)]
pub fn backward_into<T: Float>(
    dout: TensorView<'_, T>,
    x: TensorView<'_, T>,
    w: TensorView<'_, T>,
    p: &Conv2dParams,
    dx: TensorViewMut<'_, T>,
    dw: TensorViewMut<'_, T>,
    db: &mut [T],
    workspace: &mut [T],
) -> Result<()> {
    let shape = dx.shape();
    // SAFETY: the kernels store only computed values through `Out` slots.
    let dx = unsafe { as_uninit_mut(dx.into_data()) };
    let threads = rayon::current_num_threads();
    backward_checked(dout, x, w, p, ((shape, dx), dw, db), (workspace, threads))
}

/// Gradients of `dx` (shape and slots, which may start uninitialised), `dw` and `db` (see
/// [`backward_into`]).
type Grads<'a, 'b, T> = ((Shape, &'a mut [Out<T>]), TensorViewMut<'b, T>, &'b mut [T]);

/// [`backward_into`] on at most `max_lanes` lanes (fewer where the workspace holds fewer
/// slots). Validates, then computes; on `Ok`, every
/// element of `dx` has been written: its length is checked, and every path writes all of it
/// (the im2col path zeroes every input row in its first phase — the even bands own rows
/// `0..H` between them — before adding; the transposed form is a forward pass whose output
/// is `dx`, and the forward writes every output element; the 1×1 GEMM writes every
/// channel × pixel with `β = 0`; the depthwise paths write every row chunk of every plane,
/// or zero each plane before scattering).
fn backward_checked<T: Float>(
    dout: TensorView<'_, T>,
    x: TensorView<'_, T>,
    w: TensorView<'_, T>,
    p: &Conv2dParams,
    ((dx_shape, dx), mut dw, db): Grads<'_, '_, T>,
    (workspace, max_lanes): (&mut [T], usize),
) -> Result<()> {
    let g = Conv2dGeometry::new(x.shape(), w.shape(), p)?;
    g.check_dout(dout.shape())?;
    if dx_shape.dims() != g.x_shape() || dx_shape.checked_len() != Some(dx.len()) {
        return Err(Error::shape(
            OP,
            format!("dx has shape {}, x has shape {}", dx_shape, x.shape()),
        ));
    }
    if dw.shape().dims() != g.w_shape() {
        return Err(Error::shape(
            OP,
            format!("dw has shape {}, w has shape {}", dw.shape(), w.shape()),
        ));
    }
    if db.len() != g.f {
        return Err(Error::shape(
            OP,
            format!("db has {} values for {} filters", db.len(), g.f),
        ));
    }
    let (max_lanes, need) =
        super::workspace_lanes(workspace.len(), max_lanes, |l| workspace_len(&g, l))?;
    let (dout, x, w) = (dout.data(), x.data(), w.data());
    let dw = dw.data_mut();
    let p = g.oh * g.ow;
    let ws = &mut workspace[..need];
    // `db` alongside the other passes: its tasks fill the threads that would otherwise
    // wait at the passes' joins (it is computed the same way either way). A small problem
    // runs its parts in turn: a join wakes a second thread, which costs more than they take.
    crate::threads::join_if(
        !super::plan::serial_backward(&g),
        || bias_grad(dout, g.n, p, db),
        || match Path::of(&g) {
            Path::Depthwise => depthwise::backward(&g, dout, x, w, dx, dw, ws, max_lanes),
            _ => {
                let plan = BwdPlan::new(&g).with_max_lanes(max_lanes);
                let dx_pass = |dx: &mut [Out<T>], ws: &mut [T]| match &plan.b_transposed {
                    Some(t) => transposed_input_grad(&g, t, dout, w, dx, ws),
                    None => input_grad(&g, &plan, dout, w, dx, ws),
                };
                let (slots, rest) = ws.split_at_mut(plan.a_slots_len());
                let (partials, rest) = rest.split_at_mut(plan.partial_len);
                if plan.concurrent {
                    crate::threads::join(
                        || weight_grad(&g, &plan, dout, x, dw, slots, partials),
                        || dx_pass(dx, &mut rest[..plan.b_len()]),
                    );
                } else {
                    weight_grad(&g, &plan, dout, x, dw, slots, partials);
                    dx_pass(dx, &mut ws[..plan.b_len()]);
                }
            }
        },
    );
    Ok(())
}

/// Pass A: `dw[grp, :, cblock] (+)= dout[n, grp, tile] · cols(n, cblock, tile)ᵀ` over the
/// chunk's (image, tile) units in order, then `dw += partial[1] + partial[2] + …` in order.
fn weight_grad<T: Float>(
    g: &Conv2dGeometry,
    plan: &BwdPlan,
    dout: &[T],
    x: &[T],
    dw: &mut [T],
    slots: &mut [T],
    partials: &mut [T],
) {
    let (p, hw, khw) = (g.oh * g.ow, g.h * g.w, plan.khw);
    let kg = g.cg * khw;
    let dw_len = dw.len();
    let lw = Lowering::new(g);
    let ncb = plan.a_cblocks.count;
    {
        let dw = SharedMut::new(dw);
        let partials = SharedMut::new(partials);
        run_lanes(
            slots,
            plan.a_slot_len,
            plan.a_lanes,
            plan.a_tasks,
            |t, slot| {
                let (cb, grp, chunk) = (t % ncb, (t / ncb) % g.groups, t / (ncb * g.groups));
                let (c0, cn) = plan.a_cblocks.range(cb);
                let kc = cn * khw;
                let off = grp * g.fg * kg + c0 * khw;
                let (target, off) = match chunk {
                    0 => (&dw, off),
                    _ => (&partials, (chunk - 1) * dw_len + off),
                };
                let (u0, u1) = plan.chunk_units(g.n, chunk);
                let mut beta = T::ZERO;
                for u in u0..u1 {
                    let (n, tile) = (u / plan.a_tiles.count, u % plan.a_tiles.count);
                    let xc = (n * g.c + grp * g.cg + c0) * hw;
                    let dg = (n * g.f + grp * g.fg) * p;
                    let (p0, pt) = plan.a_tiles.range(tile);
                    let cols_t = match plan.path {
                        Path::Im2col => {
                            let cols = &mut slot[..kc * pt];
                            im2col(&lw, &x[xc..xc + cn * hw], cn, p0, pt, cols);
                            MatRef::new(&*cols, 1, pt)
                        }
                        _ => MatRef::new(&x[xc + p0..], 1, hw),
                    };
                    let a = MatRef::new(&dout[dg + p0..], p, 1);
                    // SAFETY: `C` is rows grp·fg.. × columns of channel block cb of this
                    // chunk's dw (or partial): written by task t only, which runs once.
                    unsafe { target.gemm(off, kg, 1, g.fg, pt, kc, a, cols_t, beta) };
                    beta = T::ONE;
                }
            },
        );
    }
    if plan.a_chunks > 1 {
        const BLOCK: usize = 4096;
        let partials = &*partials;
        let blocks = dw.par_chunks_mut(BLOCK).enumerate();
        blocks.with_min_len(min_len(1)).for_each(|(i, d)| {
            for chunk in 1..plan.a_chunks {
                let part = &partials[(chunk - 1) * dw_len + i * BLOCK..][..d.len()];
                for (d, &v) in d.iter_mut().zip(part) {
                    *d += v;
                }
            }
        });
    }
}

/// Pass B of a stride-1 convolution as the forward pass of its [`Transposed`] convolution:
/// `W'` is built at the start of `ws` (each `KH·KW` run of `W` reversed into its transposed
/// place), then `dx = conv(dout, W')` on the rest. The forward writes every element of `dx`.
fn transposed_input_grad<T: Float>(
    g: &Conv2dGeometry,
    t: &Transposed,
    dout: &[T],
    w: &[T],
    dx: &mut [Out<T>],
    ws: &mut [T],
) {
    let khw = g.kh * g.kw;
    let (wt, slots) = ws.split_at_mut(t.weights_len());
    // Row block of W' for channel `ch` (of group ch / cg): fg runs of KH·KW taps.
    wt.par_chunks_mut(g.fg * khw)
        .enumerate()
        .with_min_len(min_len(1))
        .for_each(|(ch, rows)| {
            let (grp, c) = (ch / g.cg, ch % g.cg);
            for (f, run) in rows.chunks_exact_mut(khw).enumerate() {
                let src = &w[((grp * g.fg + f) * g.cg + c) * khw..][..khw];
                for (d, &s) in run.iter_mut().zip(src.iter().rev()) {
                    *d = s;
                }
            }
        });
    forward::gemm_forward(&t.g, &t.plan, dout, wt, None, dx, slots);
}

/// Pass B: per (image, group, channel block, band of output rows), `dcols = W[grp, :,
/// cblock]ᵀ · dout[n, grp, tile]` for the band's tiles, then col2im into the input rows the
/// band owns (for 1×1 kernels, the GEMM writes `dx` directly). Overlapping bands run in two
/// phases (even, then odd bands); the first zeroes the rows before adding.
fn input_grad<T: Float>(
    g: &Conv2dGeometry,
    plan: &BwdPlan,
    dout: &[T],
    w: &[T],
    dx: &mut [Out<T>],
    slots: &mut [T],
) {
    let (p, hw, khw) = (g.oh * g.ow, g.h * g.w, plan.khw);
    let kg = g.cg * khw;
    let ncb = plan.b_cblocks.count;
    let (bands, phases) = (plan.b_bands.count, plan.b_phases);
    let dx = SharedMut::new_out(dx);
    for phase in 0..phases {
        let per = (bands - phase).div_ceil(phases);
        let tasks = g.n * g.groups * ncb * per;
        run_lanes(slots, plan.b_slot_len, plan.b_lanes, tasks, |t, slot| {
            let band = phase + (t % per) * phases;
            let t = t / per;
            let (cb, grp, n) = (t % ncb, (t / ncb) % g.groups, t / (ncb * g.groups));
            let (c0, cn) = plan.b_cblocks.range(cb);
            let kc = cn * khw;
            let ch0 = n * g.c + grp * g.cg + c0;
            let wt = MatRef::new(&w[grp * g.fg * kg + c0 * khw..], 1, kg);
            let dg = (n * g.f + grp * g.fg) * p;
            let (r0, rows) = plan.b_bands.range(band);
            let (lo, hi) = plan.band_input_rows(g, band);
            let lw = Lowering::window(g, lo, hi - lo);
            // Input rows lo..hi of channel cc of the block: this task's alone in its phase
            // (bands of one phase reach disjoint rows; other images, groups and blocks are
            // other planes).
            let rows_of = |cc: usize| ((ch0 + cc) * hw + lo * g.w, (hi - lo) * g.w);
            if plan.path == Path::Im2col && phase == 0 {
                for cc in 0..cn {
                    let (start, len) = rows_of(cc);
                    // SAFETY: see rows_of; the task runs once.
                    unsafe { dx.slice_out(start, len) }.fill(Out::new(T::ZERO));
                }
            }
            let tiles = plan.band_tiles(g, rows);
            for tile in 0..tiles.count {
                let (q0, pt) = tiles.range(tile);
                let p0 = r0 * g.ow + q0;
                let d = MatRef::new(&dout[dg + p0..], p, 1);
                match plan.path {
                    Path::Im2col => {
                        let dcols = &mut slot[..kc * pt];
                        gemm(kc, g.fg, pt, wt, d, T::ZERO, dcols, pt, 1);
                        for cc in 0..cn {
                            let (start, len) = rows_of(cc);
                            // SAFETY: see rows_of; the task runs once. The rows were zeroed
                            // in the first phase (by this task, or by an even band before
                            // this odd one), so they are initialised.
                            let dxc = unsafe { dx.slice(start, len) };
                            col2im(&lw, &dcols[cc * khw * pt..], 1, p0, pt, dxc);
                        }
                    }
                    // SAFETY: channels c0.. + cn × pixels p0.. + pt of image n: this task's
                    // alone (bands of a 1×1 layer are disjoint pixels); β = 0 only writes.
                    _ => unsafe { dx.gemm(ch0 * hw + p0, hw, 1, kc, g.fg, pt, wt, d, T::ZERO) },
                }
            }
        });
    }
}
