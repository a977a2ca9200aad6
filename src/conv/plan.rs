//! How the fast convolution cuts a problem into tasks: which path runs, the tiles of output
//! pixels, the blocks of filters and channels, the chunks of the batch, the number of lanes
//! (concurrent tasks, each with its own slot of workspace) and the workspace layout.
//!
//! Everything here is a function of the geometry alone — never of the number of threads.
//! Every GEMM therefore has the same shape whatever the thread count, and every reduction
//! (`dw`, `db`) has the same partition and merge order, which is what makes the results
//! bitwise identical for any rayon pool. Threads only change which lane runs which task.

use super::Conv2dGeometry;

/// Lanes (tasks running at once, each with its own workspace slot) that
/// `forward_workspace_len` and `backward_workspace_len` size the workspace for. The
/// kernels run as many lanes as the pool has threads (the allocating functions) or as the
/// caller's workspace holds slots for (the `*_into` functions), never more than tasks.
pub(crate) const DEFAULT_LANES: usize = 8;
/// Below this many tasks the kernels split work inside an image (filter blocks, channel
/// blocks, batch chunks, bands) so that `N = 1` also keeps several cores busy, and a batch
/// of 8 keeps 16. Was 8 until a 16-core machine (Xeon, AVX-512) ran the `N = 8` layers
/// with half its threads idle (resnet_3x3_56 backward 10.0 ms at 8 threads, 10.6 at 16).
const TARGET_TASKS: usize = 16;
/// Fewest multiply-adds per task that [`target_tasks`] aims for: smaller tasks cost more
/// to hand to another thread than they save. cs231n_fast at `N = 1` (173 K multiply-adds)
/// took 11–12 µs forward on one thread as 8 tasks, 18–19 µs as 16, 6 µs as one; cs231n_net
/// at `N = 1` (4.8 M) scaled its backward 1.3–1.6× on two threads as 8 tasks (9 with this
/// bound) but 1.0–1.1× as 4.
const MIN_TASK_MACS: usize = 1 << 19;

/// How many tasks a pass of `g` is split into where the batch and groups alone give fewer:
/// [`TARGET_TASKS`], or fewer for problems under `TARGET_TASKS` × [`MIN_TASK_MACS`]
/// multiply-adds per pass. A function of the geometry only.
pub(crate) fn target_tasks(g: &Conv2dGeometry) -> usize {
    let macs = [g.n, g.f, g.cg, g.kh, g.kw, g.oh, g.ow]
        .iter()
        .fold(1usize, |a, &v| a.saturating_mul(v));
    (macs / MIN_TASK_MACS).clamp(1, TARGET_TASKS)
}
/// Elements of one column-matrix tile (512 KiB of `f32`, 1 MiB of `f64`): small enough to
/// stay in L2 between the lowering and the GEMM's packing.
const TILE_ELEMS: usize = 128 * 1024;
/// Fewest output pixels per tile (unless the image has fewer): keeps the GEMM's `n` wide
/// enough that packing the weights once per tile stays cheap when `C·KH·KW` is large.
const MIN_TILE: usize = 128;
/// [`MIN_TILE`] of the forward pass: its GEMM (the crate's own at AVX-512) computes whole
/// panels of 32 pixels, so short tiles waste more of their last panel. Measured (f32, one
/// thread, idle machine, two runs each) against 128: resnet_3x3_14 145–148 GFLOP/s against
/// 129–131 (whole 196-pixel images instead of 112 + 84), dilated_28 150 against 141 (tiles of
/// 208 instead of 112), resnet_3x3_56 141–144 against 139–140. The backward pass keeps 128
/// (mixed there: resnet_3x3_14 +4 %, dilated_28 −3 %).
const MIN_TILE_FWD: usize = 256;
/// Fewest rows (`channels · KH · KW`) of a channel block in the backward pass.
const MIN_KC: usize = 128;
/// Largest total of the per-chunk `dw` partials (elements) that the backward pass spends to
/// parallelise the weight gradient over the batch.
const PARTIAL_ELEMS: usize = 1 << 20;
/// Longest reduction (`C/groups · KH · KW`) for which the forward pass multiplies lowered
/// columns (or a 1×1 layer's image) with the register-blocked kernel of `direct.rs` instead
/// of `matrixmultiply`, whose packing of both operands (and buffer allocation) per call costs
/// more than the product at such `K`. Measured (f32 forward, one thread, CPU time, busy
/// 2-core AVX-512 machine) on cs231n_fast x(100,3,31,31) w(25,3,3,3) s2 p1 (`K` = 27):
/// 32.6–35.5 GFLOP/s with the GEMM, 44–50 with this kernel after the lowering (41 at AVX2;
/// the lowering was then half the time). Reading a 1×1 layer's image in place stops paying
/// at large `K` (pointwise_56, `K` = 256: 29–38 against the GEMM's 73–78: 256 strided rows
/// per pixel block), so this stays small.
pub(crate) const SMALL_K: usize = 32;
/// Longest reduction for which the im2col path (output rows of at least 16 pixels) runs the
/// register-blocked kernel on a phase-split padded copy of the input rows ([`Phases`]: no
/// lowering, each tap of an output row one contiguous run). Same conditions as above:
/// cs231n_fast (`K` = 27) 64–71 GFLOP/s (GEMM 33–39; PyTorch one thread 58); cs231n_net
/// x(50,3,32,32) w(32,3,7,7) p3 (`K` = 147) 152–156 (GEMM 87–93); resnet_stem
/// x(8,3,224,224) w(64,3,7,7) s2 p3 (`K` = 147) 121–127 (GEMM 100–108); x(8,8,28,28)
/// w(32,8,5,5) p2 (`K` = 200, rows of 28: a masked last block) 135 (GEMM 91); with many
/// channels on par: x(8,16,56,56) w(64,16,3,3) p1 (`K` = 144) 118 (GEMM 120), x(8,28,56,56)
/// w(64,28,3,3) p1 (`K` = 252) 114 (GEMM 119). The bound is the kernel's largest `K` (its
/// stack copy of a filter block's weights); at `K` = 576 (resnet_3x3_56) the kernel fell
/// far behind the GEMM, which keeps those layers.
pub(crate) const PHASED_K: usize = super::direct::MAX_K;
/// Tile lengths are rounded to this (the widest GEMM micro-kernel).
const ALIGN: usize = 16;

/// Which kernel family runs a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    /// One input channel per group (`groups == C`): direct SIMD kernels, no GEMM.
    Depthwise,
    /// 1×1 kernel, stride 1, no padding: the image is already the column matrix.
    Pointwise,
    /// Lower tiles of output pixels to columns, then GEMM.
    Im2col,
}

impl Path {
    pub(crate) fn of(g: &Conv2dGeometry) -> Path {
        let p = &g.params;
        if g.cg == 1 && super::depthwise::windows_fit(g) {
            Path::Depthwise
        } else if g.kh == 1 && g.kw == 1 && p.stride == [1, 1] && p.padding == [0, 0] {
            Path::Pointwise
        } else {
            Path::Im2col
        }
    }
}

/// The most lanes, at most `threads` (and at least one), whose workspace `need(lanes)` fits
/// in `len` elements; `None` if not even one lane's does. `need` grows with the lanes.
pub(crate) fn lanes_fitting(
    len: usize,
    threads: usize,
    need: impl Fn(usize) -> usize,
) -> Option<usize> {
    if need(1) > len {
        return None;
    }
    // need(lo) fits; find the largest such lo in 1..=threads.
    let (mut lo, mut hi) = (1, threads.max(1));
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if need(mid) <= len {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Some(lo)
}

/// A split of `0..total` into `count` consecutive pieces of `len` (the last may be shorter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Split {
    pub(crate) len: usize,
    pub(crate) count: usize,
    total: usize,
}

impl Split {
    /// One piece.
    fn whole(total: usize) -> Split {
        Split {
            len: total,
            count: 1,
            total,
        }
    }

    /// About `parts` pieces of equal length rounded up to `align` (capped at `total`).
    fn even(total: usize, parts: usize, align: usize) -> Split {
        let parts = parts.clamp(1, total.max(1));
        let len = total.div_ceil(parts).next_multiple_of(align).min(total);
        Split {
            len,
            count: total.div_ceil(len.max(1)),
            total,
        }
    }

    /// Tiles of `total` output pixels whose column matrix (`rows` per pixel) stays near
    /// [`TILE_ELEMS`], of at least `min_tile` pixels.
    fn tiles(total: usize, rows: usize, min_tile: usize) -> Split {
        let max = (TILE_ELEMS / rows.max(1)).max(min_tile);
        if total <= max {
            Split::whole(total)
        } else {
            Split::even(total, total.div_ceil(max), ALIGN)
        }
    }

    /// Tiles of `total` pixels for the small-`K` kernel on a 1×1 convolution with `outer`
    /// (image, group) pairs: the image itself is the column matrix (no lowering buffer), so
    /// tiles only serve parallelism — whole images when there are `target` pairs,
    /// else just enough tiles (of at least [`MIN_TILE`] pixels) to reach it. (For the GEMM
    /// on large 1×1 layers, whole images were not faster than [`Split::tiles`]: pointwise_56
    /// forward measured 87–95 GFLOP/s against 89–103 with tiles of 448 pixels.)
    fn pointwise(total: usize, outer: usize, target: usize) -> Split {
        let want = target.div_ceil(outer.max(1));
        Split::even(total, want.min(total / MIN_TILE).max(1), ALIGN)
    }

    /// `(start, len)` of piece `i`.
    pub(crate) fn range(&self, i: usize) -> (usize, usize) {
        let start = i * self.len;
        (start, self.len.min(self.total - start))
    }
}

/// Blocks of `cg` channels (each `khw` rows of columns) so that `outer` times the block
/// count reaches `target` where the blocks can stay at least [`MIN_KC`] rows.
fn channel_blocks(cg: usize, khw: usize, outer: usize, target: usize) -> Split {
    let want = target.div_ceil(outer.max(1));
    let max = (cg / MIN_KC.div_ceil(khw)).max(1);
    Split::even(cg, want.min(max), 1)
}

/// The phase-split, zero-padded copy of the input rows that `rows` output rows read, for
/// the small-`K` kernel: for channel `c`, padded input row `y` (relative to the tile's
/// first) and phase `q < sw`, `buf[((c·in_rows + y)·sw + q)·width + m]` holds padded input
/// column `m·sw + q`. Tap `(c, u, v)` of local output row `i` then reads a contiguous run of
/// `OW` values at `((c·in_rows + i·sh + u·dh)·sw + (v·dw) % sw)·width + (v·dw) / sw`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Phases {
    pub(crate) cg: usize,
    pub(crate) in_rows: usize,
    pub(crate) sw: usize,
    pub(crate) width: usize,
}

impl Phases {
    pub(crate) fn new(g: &Conv2dGeometry, rows: usize) -> Phases {
        let p = &g.params;
        let (sh, sw, dh, dw) = (p.stride[0], p.stride[1], p.dilation[0], p.dilation[1]);
        let in_rows = rows
            .saturating_sub(1)
            .saturating_mul(sh)
            .saturating_add((g.kh - 1).saturating_mul(dh))
            .saturating_add(1);
        let padded = g.w.saturating_add(2 * p.padding[1]);
        let width = padded
            .div_ceil(sw)
            .max(g.ow.saturating_add((g.kw - 1).saturating_mul(dw) / sw));
        Phases {
            cg: g.cg,
            in_rows,
            sw,
            width,
        }
    }

    /// Elements of the copy, plus 16 of slack so that the kernel's 16-pixel loads may run
    /// past the end of the last run (lanes it then drops).
    pub(crate) fn len(&self) -> usize {
        self.cg
            .saturating_mul(self.in_rows)
            .saturating_mul(self.sw)
            .saturating_mul(self.width)
            .saturating_add(16)
    }
}

/// The forward pass: units of (image, group, tile), each lowered into one lane's slot and
/// multiplied by the group's weights, in `fblocks` GEMMs when there are few units.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FwdPlan {
    pub(crate) path: Path,
    /// Rows of the column matrix: `C/groups · KH · KW`.
    pub(crate) k: usize,
    pub(crate) tiles: Split,
    pub(crate) units: usize,
    pub(crate) lanes: usize,
    pub(crate) slot_len: usize,
    pub(crate) fblocks: Split,
    /// `k ≤ SMALL_K`: the register-blocked kernel of `direct.rs` instead of the GEMM.
    pub(crate) small_k: bool,
    /// `k ≤ PHASED_K` on the im2col path with output rows of 16 pixels or more: tiles are
    /// whole output rows, and (at AVX2 and up) the kernel reads a [`Phases`] copy of the
    /// input instead of lowered columns.
    pub(crate) phased: bool,
}

impl FwdPlan {
    pub(crate) fn new(g: &Conv2dGeometry) -> FwdPlan {
        let path = Path::of(g);
        let target = target_tasks(g);
        let k = g.cg * g.kh * g.kw;
        let small_k = k <= SMALL_K;
        // Output rows shorter than the kernel's 16-pixel block would all run its scalar
        // tail: those keep the lowering, whose tiles span rows.
        let phased = k <= PHASED_K && path == Path::Im2col && g.ow >= 16;
        let tiles = if phased {
            // Whole output rows (the phase layout is per input row), as few tiles as
            // parallelism and the column tile of the GEMM fallback allow.
            let p = g.oh * g.ow;
            let want = target
                .div_ceil(g.n.saturating_mul(g.groups).max(1))
                .max(p.saturating_mul(k).div_ceil(TILE_ELEMS));
            let rows = Split::even(g.oh, want, 1);
            Split {
                len: rows.len * g.ow,
                count: rows.count,
                total: p,
            }
        } else if small_k {
            // Tiles serve parallelism only (the image is the column matrix).
            Split::pointwise(g.oh * g.ow, g.n.saturating_mul(g.groups), target)
        } else {
            Split::tiles(g.oh * g.ow, k, MIN_TILE_FWD)
        };
        let units = g.n.saturating_mul(g.groups).saturating_mul(tiles.count);
        let fblocks = if units >= target {
            Split::whole(g.fg)
        } else {
            let want = target.div_ceil(units);
            Split::even(g.fg, want.min((g.fg / 32).max(1)), ALIGN)
        };
        FwdPlan {
            path,
            k,
            tiles,
            units,
            lanes: units,
            slot_len: if phased {
                // Either kernel may run (the level decides), so room for either buffer.
                let rows = tiles.len / g.ow.max(1);
                k.saturating_mul(tiles.len).max(Phases::new(g, rows).len())
            } else if path == Path::Im2col {
                k.saturating_mul(tiles.len)
            } else {
                0
            },
            fblocks,
            small_k,
            phased,
        }
    }

    pub(crate) fn workspace_len(&self) -> usize {
        self.lanes.saturating_mul(self.slot_len)
    }

    /// The plan with at most `max_lanes` lanes (at least one): fewer workspace slots, the
    /// same results (a lane's slot is scratch).
    ///
    /// Also no more filter blocks than the lanes need beside the units: the blocks only
    /// serve parallelism, and each block's GEMM packs and walks the whole column tile for its
    /// filters, so fewer, taller blocks do less work. The same results: every output element
    /// sums its taps in the same order whichever block computes it. (The geometry's blocks,
    /// from [`FwdPlan::new`], still decide the transposed-`dx` form.) Measured (f32, 2-core
    /// AVX-512 VM, best of 30–40 runs): x(1,256,14,14) w(256,256,3,3) p1 one thread
    /// 97 GFLOP/s in 8 blocks against 120–126 in one, two threads 178–182 in 8 against
    /// 223–225 in 2; dilated_28 at `N = 1` (4 tiles) one thread 103–108 in 4 blocks against
    /// 120–123 in one, two threads 187–191 against 216–228.
    pub(crate) fn with_max_lanes(mut self, max_lanes: usize) -> FwdPlan {
        let max_lanes = max_lanes.max(1);
        self.lanes = self.lanes.min(max_lanes);
        let blocks = max_lanes.div_ceil(self.units.max(1));
        if blocks < self.fblocks.count {
            self.fblocks = Split::even(self.fblocks.total, blocks, ALIGN);
        }
        self
    }
}

/// Problems with fewer multiply-adds per pass than this run on one lane with unsplit
/// passes: waking a second thread costs more than it saves. cs231n_fast at `N = 1` (173 K
/// multiply-adds, 19 µs backward on one thread) took 33 µs on two.
const SERIAL_MACS: usize = 1 << 20;

/// Whether the backward of `g` is small enough to run serially ([`SERIAL_MACS`]): no pass is
/// split, and its parts (`db`, `dw`, `dx`) run one after the other on the calling thread.
pub(crate) fn serial_backward(g: &Conv2dGeometry) -> bool {
    let macs = g.f.saturating_mul(g.cg).saturating_mul(g.kh * g.kw);
    let macs = macs.saturating_mul(g.oh * g.ow).saturating_mul(g.n);
    macs < SERIAL_MACS
}

/// The backward pass. Pass A (`dw`): tasks of (batch chunk, group, channel block), where a
/// chunk is a run of (image, tile) units; each task accumulates its units in order into
/// its own block of `dw` (chunk 0) or of a partial (chunks 1..), merged afterwards in chunk
/// order. Pass B (`dx`): tasks of (image, group, channel block, band of output rows), each
/// writing the input rows its band reaches. Bands of one image overlap only with their
/// neighbours (bands are at least [`BwdPlan::band_rows_min`] rows high), so even bands run
/// in one phase and odd bands in the next; the first phase also zeroes the rows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BwdPlan {
    pub(crate) path: Path,
    /// `KH · KW`.
    pub(crate) khw: usize,
    pub(crate) a_chunks: usize,
    pub(crate) a_cblocks: Split,
    pub(crate) a_tiles: Split,
    pub(crate) a_tasks: usize,
    pub(crate) a_lanes: usize,
    pub(crate) a_slot_len: usize,
    pub(crate) b_cblocks: Split,
    /// Bands of output rows.
    pub(crate) b_bands: Split,
    /// 2 when bands overlap in `dx` (even bands first, then odd ones), else 1.
    pub(crate) b_phases: usize,
    pub(crate) b_lanes: usize,
    pub(crate) b_slot_len: usize,
    /// Elements of the `dw` partials of chunks `1..a_chunks`.
    pub(crate) partial_len: usize,
    /// Pass B as the forward pass of the transposed convolution (see [`Transposed`]), where
    /// that form applies and pays; else the GEMM + col2im bands above.
    pub(crate) b_transposed: Option<Transposed>,
    /// Passes A and B run at the same time (`rayon::join`), each with its own part of the
    /// workspace, so that neither waits for the other's last task; not for problems under
    /// [`SERIAL_MACS`], which run on one lane, nor with a one-lane workspace (the passes
    /// then share it, one after the other). Measured (2 threads, best of 300 calls):
    /// cs231n_fast x(100,3,31,31) w(25,3,3,3) s2 p1 backward 1.13–1.15 ms one pass after
    /// the other, 1.01–1.02 together; resnet_3x3_14 13.75 → 13.35, resnet_3x3_56 14.83 →
    /// 14.47, dilated_28 13.77 → 13.12 (best of 15); one thread unchanged.
    pub(crate) concurrent: bool,
}

/// Fewest input channels per group (the transposed convolution's filters: the rows of its
/// GEMM) for which pass B runs as a [`Transposed`] forward through the GEMM.
const TRANSPOSED_MIN_CG: usize = 64;
/// The same through the register-blocked kernel on the phase-split copy
/// ([`FwdPlan::phased`]).
const TRANSPOSED_MIN_CG_PHASED: usize = 8;
/// Fewest filters per block when the transposed forward splits its units into filter
/// blocks: each block's GEMM packs the lowered columns again.
const TRANSPOSED_MIN_FBLOCK: usize = 128;

/// Pass B of a stride-1 convolution as a forward convolution: `dx = conv(dout, W')` with
/// `W'[c, f, u, v] = W[f, c, KH−1−u, KW−1−v]` (per group), the same dilation and padding
/// `(K − 1)·d − pad` on each axis, whose output is `(N, C, H, W)`. It writes every element of
/// `dx` once from a reduction over `F/groups · KH · KW` — no scatter-add, no zeroing, no
/// overlapping bands — through the forward's kernels. Applies where the stride is 1 on
/// both axes and the padding at most `(K − 1)·d` (else the transposed padding would be
/// negative), and is taken where it measured faster: the forward runs its register-blocked
/// kernel on the phase-split copy (`F/groups · KH · KW` ≤ 256, rows of 16 pixels or more)
/// with at least [`TRANSPOSED_MIN_CG_PHASED`] channels per group, or its GEMM on whole
/// (image, group, tile) units (no filter blocks, which would repack the columns per block)
/// with at least [`TRANSPOSED_MIN_CG`] channels per group (or filter blocks of at least
/// [`TRANSPOSED_MIN_FBLOCK`]).
///
/// Measured (f32 backward, one thread, best of 15–30 calls, 2-core AVX-512 machine), col2im
/// form → this form, GFLOP/s: resnet_3x3_14 133.0/132.5 → 137.9/140.2, dilated_28
/// 136.3/136.6 → 137.5/139.7, resnet_3x3_56 121.5/122.9 → 127.3/127.3, x(4,512,7,7)
/// w(512,512,3,3) p1 98.3 → 104.8; phase-split: x(8,128,28,28) w(24,128,3,3) p1 69.2 → 85.3,
/// x(8,32,28,28) w(8,32,3,3) 33.7 → 44.8, x(8,8,32,32) w(16,8,3,3) 55.0 → 67.3, x(1,64,56,56)
/// w(16,64,3,3) 77.1 → 86.1. Not taken, because slower: 16 channels per group through the
/// GEMM (x(8,16,56,56) w(64,16,3,3) 120.8 → 93.2: 16-row GEMMs), blocks of 32 filters
/// (x(1,256,14,14) w(256,256,3,3) 143.2 → 113.4), 3 channels on the phase-split copy
/// (x(8,3,32,32) w(16,3,3,3) 39.7 → 35.5).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transposed {
    /// The transposed convolution: `x' = dout`, `w' = W'`.
    pub(crate) g: Conv2dGeometry,
    pub(crate) plan: FwdPlan,
}

impl Transposed {
    fn of(g: &Conv2dGeometry, path: Path) -> Option<Transposed> {
        let p = &g.params;
        let pad = |a: usize, k: usize| {
            (k - 1)
                .checked_mul(p.dilation[a])?
                .checked_sub(p.padding[a])
        };
        if path != Path::Im2col || p.stride != [1, 1] {
            return None;
        }
        let params = super::Conv2dParams {
            padding: [pad(0, g.kh)?, pad(1, g.kw)?],
            ..*p
        };
        let x = crate::Shape::new(&g.out_shape())?;
        let w = crate::Shape::new(&[g.c, g.fg, g.kh, g.kw])?;
        let tg = Conv2dGeometry::new(x, w, &params).ok()?;
        let plan = FwdPlan::new(&tg);
        let pays = if plan.phased {
            g.cg >= TRANSPOSED_MIN_CG_PHASED
        } else {
            g.cg >= TRANSPOSED_MIN_CG
                && (plan.fblocks.count == 1 || plan.fblocks.len >= TRANSPOSED_MIN_FBLOCK)
        };
        if Path::of(&tg) != Path::Im2col || tg.oh != g.h || tg.ow != g.w || !pays {
            return None;
        }
        Some(Transposed { g: tg, plan })
    }

    /// Elements of `W'` (as many as `W`).
    pub(crate) fn weights_len(&self) -> usize {
        self.g.f * self.g.cg * self.g.kh * self.g.kw
    }

    /// Elements of `W'` and the forward's lane slots.
    pub(crate) fn workspace_len(&self) -> usize {
        self.weights_len().saturating_add(self.plan.workspace_len())
    }
}

impl BwdPlan {
    pub(crate) fn new(g: &Conv2dGeometry) -> BwdPlan {
        let path = Path::of(g);
        let target = target_tasks(g);
        let khw = g.kh * g.kw;
        let p = g.oh * g.ow;
        let dw_len = g.f.saturating_mul(g.cg).saturating_mul(khw);
        let slots = path == Path::Im2col;
        let serial = serial_backward(g);

        // Pass A: parallel over channel blocks first, then over chunks of the (image, tile)
        // units while the partials stay small.
        let max_cblocks = channel_blocks(g.cg, khw, 1, target).count;
        let outer = g.groups.saturating_mul(max_cblocks);
        let want = if serial || outer >= target {
            1
        } else {
            let by_mem = 1 + PARTIAL_ELEMS / dw_len.max(1);
            target.div_ceil(outer).min(by_mem)
        };
        let a_cblocks = channel_blocks(g.cg, khw, want * g.groups, target);
        let mut a_tiles = Split::tiles(p, a_cblocks.len * khw, MIN_TILE);
        if g.n.saturating_mul(a_tiles.count) < want {
            // Few images: finer tiles, so that the chunks can split images.
            let parts = want.div_ceil(g.n).min(p / MIN_TILE).max(1);
            let finer = Split::even(p, parts, ALIGN);
            if finer.count > a_tiles.count {
                a_tiles = finer;
            }
        }
        let a_chunks = want.min(g.n.saturating_mul(a_tiles.count)).max(1);
        let a_tasks = a_chunks * g.groups * a_cblocks.count;
        let a_lanes = if serial { 1 } else { a_tasks };
        let a_slot_len = if slots {
            (a_cblocks.len * khw).saturating_mul(a_tiles.len)
        } else {
            0
        };

        // Pass B: channel blocks, then bands of output rows while there are few images.
        let outer = g.n.saturating_mul(g.groups);
        let b_cblocks = channel_blocks(g.cg, khw, outer, target);
        let outer = outer.saturating_mul(b_cblocks.count);
        let min_rows = Self::band_rows_min(g);
        let b_bands = if serial || outer >= target {
            Split::whole(g.oh)
        } else {
            let parts = target.div_ceil(outer).min(g.oh / min_rows).max(1);
            Split::even(g.oh, parts, 1)
        };
        let b_phases = if b_bands.count > 1 && path == Path::Im2col {
            2
        } else {
            1
        };
        let b_tasks = outer.saturating_mul(b_bands.count);
        let b_lanes = if serial { 1 } else { b_tasks };
        let b_rows = b_cblocks.len * khw;
        let b_slot_len = if slots {
            // Bands have two lengths (Split::even), whose tiles may differ either way.
            let last = b_bands.range(b_bands.count - 1).1;
            let tile = |rows: usize| Split::tiles(rows * g.ow, b_rows, MIN_TILE).len;
            b_rows.saturating_mul(tile(b_bands.len).max(tile(last)))
        } else {
            0
        };

        BwdPlan {
            b_transposed: Transposed::of(g, path),
            concurrent: !serial,
            path,
            khw,
            a_chunks,
            a_cblocks,
            a_tiles,
            a_tasks,
            a_lanes,
            a_slot_len,
            b_cblocks,
            b_bands,
            b_phases,
            b_lanes,
            b_slot_len,
            partial_len: (a_chunks - 1).saturating_mul(dw_len),
        }
    }

    /// Fewest output rows of a band (except the last) such that band `i` and band `i + 2`
    /// reach disjoint input rows: `(KH − 1)·dh + 1 ≤ (rows + 1)·sh`.
    fn band_rows_min(g: &Conv2dGeometry) -> usize {
        let p = &g.params;
        let reach = (g.kh - 1).saturating_mul(p.dilation[0]).saturating_add(1);
        reach.div_ceil(p.stride[0]).saturating_sub(1).max(1)
    }

    /// Input rows `[lo, hi)` that band `band` of pass B owns in its phase: from the first
    /// row it reaches (row 0 for the first band) to the first row of band `band + 2` for
    /// bands of the first phase (which zero them), else to its last row reached.
    pub(crate) fn band_input_rows(&self, g: &Conv2dGeometry, band: usize) -> (usize, usize) {
        let (sh, dh, ph) = (
            g.params.stride[0] as i128,
            g.params.dilation[0] as i128,
            g.params.padding[0] as i128,
        );
        let clamp = |y: i128| y.clamp(0, g.h as i128) as usize;
        let first = |b: usize| -> usize {
            if b == 0 {
                0
            } else if b >= self.b_bands.count {
                g.h
            } else {
                clamp(self.b_bands.range(b).0 as i128 * sh - ph)
            }
        };
        let lo = first(band);
        let hi = if band.is_multiple_of(self.b_phases) {
            first(band + self.b_phases)
        } else {
            let (r0, rn) = self.b_bands.range(band);
            let last = (r0 + rn) as i128 - 1;
            clamp(last * sh + (g.kh as i128 - 1) * dh - ph + 1)
        };
        (lo, hi.max(lo))
    }

    /// Tiles of output pixels of a band of `rows` output rows in pass B.
    pub(crate) fn band_tiles(&self, g: &Conv2dGeometry, rows: usize) -> Split {
        Split::tiles(rows * g.ow, self.b_cblocks.len * self.khw, MIN_TILE)
    }

    /// The plan with at most `max_lanes` lanes per pass (at least one): fewer workspace
    /// slots, the same results (a lane's slot is scratch).
    pub(crate) fn with_max_lanes(mut self, max_lanes: usize) -> BwdPlan {
        self.a_lanes = self.a_lanes.min(max_lanes.max(1));
        self.b_lanes = self.b_lanes.min(max_lanes.max(1));
        if let Some(t) = &mut self.b_transposed {
            t.plan = t.plan.with_max_lanes(max_lanes);
        }
        // One lane: the passes one after the other, sharing the workspace (the smallest).
        self.concurrent &= max_lanes > 1;
        self
    }

    /// Elements of pass A's lane slots (the start of the workspace; its partials follow).
    pub(crate) fn a_slots_len(&self) -> usize {
        self.a_lanes.saturating_mul(self.a_slot_len)
    }

    /// Elements of the workspace that pass B uses: after pass A's slots and partials when
    /// the passes run at the same time ([`BwdPlan::concurrent`]), else from the start.
    pub(crate) fn b_len(&self) -> usize {
        match &self.b_transposed {
            Some(t) => t.workspace_len(),
            None => self.b_lanes.saturating_mul(self.b_slot_len),
        }
    }

    pub(crate) fn workspace_len(&self) -> usize {
        let a = self.a_slots_len().saturating_add(self.partial_len);
        if self.concurrent {
            a.saturating_add(self.b_len())
        } else {
            a.max(self.b_len())
        }
    }

    /// Units `[start, end)` of batch chunk `chunk` (a fixed, balanced partition of the
    /// `N · tiles` (image, tile) units, image-major).
    pub(crate) fn chunk_units(&self, n: usize, chunk: usize) -> (usize, usize) {
        let units = n * self.a_tiles.count;
        (
            chunk * units / self.a_chunks,
            (chunk + 1) * units / self.a_chunks,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::Conv2dParams;
    use crate::Shape;

    #[test]
    fn splits_cover_exactly() {
        for total in 1..300 {
            for parts in 1..12 {
                for align in [1, 16] {
                    let s = Split::even(total, parts, align);
                    let covered: usize = (0..s.count).map(|i| s.range(i).1).sum();
                    assert_eq!(covered, total);
                    assert!((0..s.count).all(|i| s.range(i).1 > 0));
                }
            }
        }
        let t = Split::tiles(112 * 112, 147, MIN_TILE);
        assert!(t.count > 1 && t.len * 147 <= 2 * TILE_ELEMS);
    }

    fn geometry(x: [usize; 4], w: [usize; 4], p: &Conv2dParams) -> Conv2dGeometry {
        Conv2dGeometry::new(Shape::new(&x).unwrap(), Shape::new(&w).unwrap(), p).unwrap()
    }

    /// Input rows `[lo, hi)` that output rows `r0 .. r0 + rows` reach (clamped).
    fn reach(g: &Conv2dGeometry, r0: usize, rows: usize) -> (usize, usize) {
        let p = &g.params;
        let first = (r0 * p.stride[0]).saturating_sub(p.padding[0]).min(g.h);
        let last = (r0 + rows - 1) * p.stride[0] + (g.kh - 1) * p.dilation[0] + 1;
        (first, last.saturating_sub(p.padding[0]).min(g.h).max(first))
    }

    #[test]
    fn bands_own_disjoint_rows_that_cover_their_reach() {
        for (kh, s, d, pad, h) in [
            (3, 1, 1, 1, 40),
            (7, 2, 1, 3, 61),
            (3, 1, 2, 2, 33),
            (2, 3, 1, 0, 50),
            (5, 2, 3, 0, 47),
            (1, 1, 1, 0, 20),
            (4, 1, 1, 3, 9),
        ] {
            let p = Conv2dParams::default()
                .stride([s, 1])
                .dilation([d, 1])
                .padding([pad, 0]);
            let g = geometry([1, 2, h, 5], [3, 2, kh, 1], &p);
            let min = BwdPlan::band_rows_min(&g);
            for parts in 1..=(g.oh / min).max(1) {
                let mut plan = BwdPlan::new(&g);
                plan.b_bands = Split::even(g.oh, parts, 1);
                plan.b_phases = if plan.b_bands.count > 1 { 2 } else { 1 };
                let mut zeroed = vec![0; g.h];
                for phase in 0..plan.b_phases {
                    let mut owner = vec![usize::MAX; g.h];
                    for band in (phase..plan.b_bands.count).step_by(plan.b_phases) {
                        let (lo, hi) = plan.band_input_rows(&g, band);
                        let (r0, rows) = plan.b_bands.range(band);
                        let (a, b) = reach(&g, r0, rows);
                        let ctx = (kh, s, d, pad, h, parts, band);
                        assert!(
                            a >= b || (lo <= a && b <= hi),
                            "{ctx:?}: {a}..{b} in {lo}..{hi}"
                        );
                        for y in lo..hi {
                            assert_eq!(owner[y], usize::MAX, "{ctx:?}: row {y} shared");
                            owner[y] = band;
                            zeroed[y] += usize::from(phase == 0);
                        }
                    }
                }
                assert!(zeroed.iter().all(|&z| z == 1), "every row zeroed once");
            }
        }
    }

    #[test]
    fn transposed_input_gradient_where_it_pays() {
        let p = Conv2dParams::default();
        let form = |x, w, p: Conv2dParams| {
            let g = geometry(x, w, &p);
            BwdPlan::new(&g).b_transposed.map(|t| {
                assert_eq!(
                    (t.g.x_shape(), t.g.out_shape()),
                    (g.out_shape(), g.x_shape())
                );
                t.plan.phased
            })
        };
        // The tests' cases (conv_equiv) and the benchmark layers: GEMM and phase-split forms.
        assert_eq!(
            form([16, 64, 5, 6], [8, 64, 3, 3], p.padding([1, 1])),
            Some(false)
        );
        assert_eq!(
            form([16, 64, 4, 7], [8, 64, 3, 3], p.padding([2, 2])),
            Some(false)
        );
        let (x, w) = ([16, 64, 7, 9], [16, 64, 3, 5]);
        assert_eq!(form(x, w, p.padding([1, 3]).dilation([2, 1])), Some(false));
        let (x, w) = ([16, 128, 5, 5], [16, 64, 3, 3]);
        assert_eq!(form(x, w, p.padding([1, 1]).groups(2)), Some(false));
        assert_eq!(
            form([2, 8, 20, 20], [16, 8, 3, 3], p.padding([1, 1])),
            Some(true)
        );
        let (x, w) = ([1, 256, 6, 6], [16, 256, 3, 3]);
        assert_eq!(form(x, w, p.padding([1, 1])), Some(false));
        let (x, w) = ([4, 512, 7, 7], [512, 512, 3, 3]);
        assert_eq!(form(x, w, p.padding([1, 1])), Some(false));
        let (x, w) = ([1, 8, 2, 16], [2, 8, 1, 3]); // tests/miri_smoke.rs
        assert_eq!(form(x, w, p.padding([0, 1])), Some(true));
        let (x, w) = ([1, 12, 18, 24], [6, 12, 3, 3]);
        assert_eq!(form(x, w, p.padding([0, 3]).dilation([1, 2])), Some(true));
        let (x, w) = ([8, 256, 14, 14], [256, 256, 3, 3]);
        assert_eq!(form(x, w, p.padding([1, 1])), Some(false));
        let (x, w) = ([8, 128, 28, 28], [128, 128, 3, 3]);
        assert_eq!(form(x, w, p.padding([2, 2]).dilation([2, 2])), Some(false));
        // Padding beyond (K − 1)·d, stride 2, too few channels, filter blocks: col2im.
        assert_eq!(form([8, 64, 4, 4], [8, 64, 3, 3], p.padding([3, 3])), None);
        let (x, w) = ([16, 64, 9, 9], [8, 64, 3, 3]);
        assert_eq!(form(x, w, p.padding([1, 1]).stride([2, 1])), None);
        assert_eq!(
            form([8, 16, 56, 56], [64, 16, 3, 3], p.padding([1, 1])),
            None
        );
        assert_eq!(form([8, 3, 32, 32], [16, 3, 3, 3], p.padding([1, 1])), None);
        let (x, w) = ([1, 256, 14, 14], [256, 256, 3, 3]);
        assert_eq!(form(x, w, p.padding([1, 1])), None);
    }

    #[test]
    fn lanes_fitting_takes_the_most_that_fit() {
        let need = |l: usize| 100 + 10 * l.min(12);
        assert_eq!(lanes_fitting(109, 16, need), None);
        assert_eq!(lanes_fitting(110, 16, need), Some(1));
        assert_eq!(lanes_fitting(185, 16, need), Some(8));
        assert_eq!(lanes_fitting(185, 3, need), Some(3));
        assert_eq!(lanes_fitting(1000, 16, need), Some(16));
        assert_eq!(lanes_fitting(1000, 0, need), Some(1));
    }

    #[test]
    fn few_images_split_both_passes() {
        let p = Conv2dParams::default().stride([2, 2]).padding([3, 3]);
        let g = geometry([1, 3, 60, 60], [16, 3, 7, 7], &p);
        let plan = BwdPlan::new(&g);
        assert!(plan.a_chunks > 1 && plan.b_bands.count > 1 && plan.b_phases == 2);
        let g = geometry([1, 256, 24, 24], [32, 256, 1, 1], &Conv2dParams::default());
        let plan = BwdPlan::new(&g);
        assert!(plan.a_chunks * plan.a_cblocks.count > 1 && plan.b_bands.count > 1);
        assert_eq!(plan.b_phases, 1);
        // Big batches are split to 16 tasks; tiny problems stay on one lane.
        let g = geometry([8, 64, 56, 56], [64, 64, 3, 3], &Conv2dParams::default());
        let plan = BwdPlan::new(&g);
        assert_eq!((target_tasks(&g), plan.a_tasks), (16, 16));
        assert!(
            FwdPlan::new(&geometry([8, 256, 14, 14], [256, 256, 3, 3], &p))
                .fblocks
                .count
                > 1
        );
        let g = geometry([1, 3, 31, 31], [25, 3, 3, 3], &p);
        assert_eq!(target_tasks(&g), 1);
        let plan = BwdPlan::new(&g);
        assert_eq!((plan.a_lanes, plan.b_lanes, plan.a_chunks), (1, 1, 1));
    }

    #[test]
    fn filter_blocks_only_as_many_as_the_lanes_need() {
        let p = Conv2dParams::default().padding([1, 1]);
        // One unit (N = 1, one tile): 8 blocks of 32 filters for 16 lanes, fewer for fewer.
        let g = geometry([1, 256, 14, 14], [256, 256, 3, 3], &p);
        let plan = FwdPlan::new(&g);
        assert_eq!((plan.units, plan.fblocks.count), (1, 8));
        let counts: Vec<usize> = [1, 2, 3, 8, 16]
            .iter()
            .map(|&l| plan.with_max_lanes(l).fblocks.count)
            .collect();
        assert_eq!(counts, [1, 2, 3, 8, 8]);
        // Eight units: two blocks from 9 lanes on, none below.
        let plan = FwdPlan::new(&geometry([8, 256, 14, 14], [256, 256, 3, 3], &p));
        assert_eq!((plan.units, plan.fblocks.count), (8, 2));
        assert_eq!(plan.with_max_lanes(8).fblocks.count, 1);
        assert_eq!(plan.with_max_lanes(16).fblocks.count, 2);
    }
}
