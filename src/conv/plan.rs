//! How the fast convolution cuts a problem into tasks: which path runs, the tiles of output
//! pixels, the blocks of filters and channels, the chunks of the batch, the number of lanes
//! (concurrent tasks, each with its own slot of workspace) and the workspace layout.
//!
//! Everything here is a function of the geometry alone — never of the number of threads.
//! Every GEMM therefore has the same shape whatever the thread count, and every reduction
//! (`dw`, `db`) has the same partition and merge order, which is what makes the results
//! bitwise identical for any rayon pool. Threads only change which lane runs which task.

use super::Conv2dGeometry;

/// Most tasks that run at once, each with its own workspace slot. Bounds the workspace
/// independently of the thread count; with more threads than lanes, the extra threads help
/// only inside tasks (filter blocks), so this also caps the parallelism of the outer level.
pub(crate) const MAX_LANES: usize = 8;
/// Below this many tasks the kernels split work inside an image (filter blocks, channel
/// blocks, batch chunks) so that `N = 1` also keeps several cores busy.
pub(crate) const TARGET_TASKS: usize = 8;
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
    /// tiles only serve parallelism — whole images when there are [`TARGET_TASKS`] pairs,
    /// else just enough tiles (of at least [`MIN_TILE`] pixels) to reach it. (For the GEMM
    /// on large 1×1 layers, whole images were not faster than [`Split::tiles`]: pointwise_56
    /// forward measured 87–95 GFLOP/s against 89–103 with tiles of 448 pixels.)
    fn pointwise(total: usize, outer: usize) -> Split {
        let want = TARGET_TASKS.div_ceil(outer.max(1));
        Split::even(total, want.min(total / MIN_TILE).max(1), ALIGN)
    }

    /// `(start, len)` of piece `i`.
    pub(crate) fn range(&self, i: usize) -> (usize, usize) {
        let start = i * self.len;
        (start, self.len.min(self.total - start))
    }
}

/// Blocks of `cg` channels (each `khw` rows of columns) so that `outer` times the block
/// count reaches [`TARGET_TASKS`] where the blocks can stay at least [`MIN_KC`] rows.
fn channel_blocks(cg: usize, khw: usize, outer: usize) -> Split {
    let want = TARGET_TASKS.div_ceil(outer.max(1));
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
        let k = g.cg * g.kh * g.kw;
        let small_k = k <= SMALL_K;
        // Output rows shorter than the kernel's 16-pixel block would all run its scalar
        // tail: those keep the lowering, whose tiles span rows.
        let phased = k <= PHASED_K && path == Path::Im2col && g.ow >= 16;
        let tiles = if phased {
            // Whole output rows (the phase layout is per input row), as few tiles as
            // parallelism and the column tile of the GEMM fallback allow.
            let p = g.oh * g.ow;
            let want = TARGET_TASKS
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
            Split::pointwise(g.oh * g.ow, g.n.saturating_mul(g.groups))
        } else {
            Split::tiles(g.oh * g.ow, k, MIN_TILE_FWD)
        };
        let units = g.n.saturating_mul(g.groups).saturating_mul(tiles.count);
        let fblocks = if units >= TARGET_TASKS {
            Split::whole(g.fg)
        } else {
            let want = TARGET_TASKS.div_ceil(units);
            Split::even(g.fg, want.min((g.fg / 32).max(1)), ALIGN)
        };
        FwdPlan {
            path,
            k,
            tiles,
            units,
            lanes: units.min(MAX_LANES),
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
    pub(crate) fn with_max_lanes(mut self, max_lanes: usize) -> FwdPlan {
        self.lanes = self.lanes.min(max_lanes.max(1));
        self
    }
}

/// The backward pass. Pass A (`dw`): tasks of (batch chunk, group, channel block), each
/// accumulating its chunk's images and tiles in order into its own block of `dw` (chunk 0)
/// or of a partial (chunks 1..), merged afterwards in chunk order. Pass B (`dx`): tasks of
/// (image, group, channel block), each owning its channels of `dx`.
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
    pub(crate) b_tiles: Split,
    pub(crate) b_tasks: usize,
    pub(crate) b_lanes: usize,
    pub(crate) b_slot_len: usize,
    /// Elements of the `dw` partials of chunks `1..a_chunks`.
    pub(crate) partial_len: usize,
}

impl BwdPlan {
    pub(crate) fn new(g: &Conv2dGeometry) -> BwdPlan {
        let path = Path::of(g);
        let khw = g.kh * g.kw;
        let p = g.oh * g.ow;
        let dw_len = g.f.saturating_mul(g.cg).saturating_mul(khw);
        let slots = path == Path::Im2col;

        // Pass A: parallel over channel blocks first, then over chunks of the batch while
        // the partials stay small.
        let max_cblocks = channel_blocks(g.cg, khw, 1).count;
        let outer = g.groups.saturating_mul(max_cblocks);
        let a_chunks = if outer >= TARGET_TASKS {
            1
        } else {
            let by_mem = 1 + PARTIAL_ELEMS / dw_len.max(1);
            TARGET_TASKS.div_ceil(outer).min(g.n).min(by_mem).max(1)
        };
        let a_cblocks = channel_blocks(g.cg, khw, a_chunks * g.groups);
        let a_tiles = Split::tiles(p, a_cblocks.len * khw, MIN_TILE);
        let a_tasks = a_chunks * g.groups * a_cblocks.count;
        let a_lanes = a_tasks.min(MAX_LANES);
        let a_slot_len = if slots {
            (a_cblocks.len * khw).saturating_mul(a_tiles.len)
        } else {
            0
        };

        // Pass B.
        let b_cblocks = channel_blocks(g.cg, khw, g.n.saturating_mul(g.groups));
        let b_tiles = Split::tiles(p, b_cblocks.len * khw, MIN_TILE);
        let b_tasks = g.n.saturating_mul(g.groups).saturating_mul(b_cblocks.count);
        let b_lanes = b_tasks.min(MAX_LANES);
        let b_slot_len = if slots {
            (b_cblocks.len * khw).saturating_mul(b_tiles.len)
        } else {
            0
        };

        BwdPlan {
            path,
            khw,
            a_chunks,
            a_cblocks,
            a_tiles,
            a_tasks,
            a_lanes,
            a_slot_len,
            b_cblocks,
            b_tiles,
            b_tasks,
            b_lanes,
            b_slot_len,
            partial_len: (a_chunks - 1).saturating_mul(dw_len),
        }
    }

    /// Elements of the lane slots (shared by the two passes, which run one after the other).
    pub(crate) fn slots_len(&self) -> usize {
        let a = self.a_lanes.saturating_mul(self.a_slot_len);
        let b = self.b_lanes.saturating_mul(self.b_slot_len);
        a.max(b)
    }

    pub(crate) fn workspace_len(&self) -> usize {
        self.slots_len().saturating_add(self.partial_len)
    }

    /// Images `[start, end)` of batch chunk `chunk` (a fixed, balanced partition).
    pub(crate) fn chunk_images(&self, n: usize, chunk: usize) -> (usize, usize) {
        (chunk * n / self.a_chunks, (chunk + 1) * n / self.a_chunks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
