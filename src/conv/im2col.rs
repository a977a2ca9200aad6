//! Lowering a tile of output pixels to columns (im2col) and scattering columns back
//! (col2im), honouring stride, padding and dilation.
//!
//! The column matrix of a tile has one row per (channel, kernel row, kernel column) and one
//! column per output pixel of the tile: `cols[(c·KH + u)·KW + v][p] =
//! x[c, i·sh + u·dh − ph, j·sw + v·dw − pw]` for pixel `p0 + p = i·OW + j` (zero in the
//! padding). Rows are written as contiguous runs per output row (plain copies at stride 1).

use super::Conv2dGeometry;
use crate::Float;

/// One axis of a sliding window: output position `o` and tap `k` read input
/// `o·stride + k·dil + base`, valid when it lies in `0..inp`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Axis {
    pub(crate) inp: usize,
    pub(crate) out: usize,
    pub(crate) stride: usize,
    pub(crate) dil: usize,
    /// Signed offset (`−pad` for a convolution); wide so no geometry can overflow it.
    pub(crate) base: i128,
}

/// The output positions `lo..hi` where one tap reads inside the input, and the input index
/// `start` that position `lo` reads.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tap {
    pub(crate) lo: usize,
    pub(crate) hi: usize,
    pub(crate) start: usize,
    stride: usize,
}

impl Tap {
    /// Input index read by output position `o` (`lo <= o < hi`).
    #[inline(always)]
    pub(crate) fn index(&self, o: usize) -> usize {
        self.start + (o - self.lo) * self.stride
    }
    /// Whether output position `o` reads inside the input.
    #[inline(always)]
    pub(crate) fn covers(&self, o: usize) -> bool {
        o >= self.lo && o < self.hi
    }
}

impl Axis {
    /// The forward window along one axis of `g` (`true`: height, `false`: width).
    pub(crate) fn forward(g: &Conv2dGeometry, height: bool) -> Axis {
        let (i, a) = if height {
            (0, (g.h, g.oh))
        } else {
            (1, (g.w, g.ow))
        };
        Axis {
            inp: a.0,
            out: a.1,
            stride: g.params.stride[i],
            dil: g.params.dilation[i],
            base: -(g.params.padding[i] as i128),
        }
    }

    /// Where tap `k` reads inside the input.
    pub(crate) fn tap(&self, k: usize) -> Tap {
        let off = k as i128 * self.dil as i128 + self.base;
        let s = self.stride as i128;
        let lo = if off >= 0 { 0 } else { (-off + s - 1) / s };
        let last = self.inp as i128 - 1 - off;
        let hi = if last < 0 {
            0
        } else {
            (last / s + 1).min(self.out as i128)
        };
        let lo = lo.min(hi);
        Tap {
            lo: lo as usize,
            hi: hi as usize,
            // Only meaningful when lo < hi, where it lies in 0..inp.
            start: (lo * s + off).clamp(0, self.inp as i128) as usize,
            stride: self.stride,
        }
    }
}

/// The taps of one axis, the first [`Taps::CACHED`] precomputed (a tap's range costs
/// wide divisions; kernels look them up per row).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Taps {
    axis: Axis,
    cached: [Tap; Taps::CACHED],
}

impl Taps {
    pub(crate) const CACHED: usize = 16;

    pub(crate) fn new(axis: Axis, k: usize) -> Taps {
        let mut cached = [Tap::default(); Taps::CACHED];
        for (i, t) in cached.iter_mut().enumerate().take(k) {
            *t = axis.tap(i);
        }
        Taps { axis, cached }
    }

    /// Tap `k`.
    #[inline(always)]
    pub(crate) fn get(&self, k: usize) -> Tap {
        if k < Taps::CACHED {
            self.cached[k]
        } else {
            self.axis.tap(k)
        }
    }

    /// The axis.
    pub(crate) fn axis(&self) -> &Axis {
        &self.axis
    }
}

/// The sizes the lowering needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lowering {
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) ow: usize,
    pub(crate) th: Taps,
    pub(crate) tw: Taps,
}

impl Lowering {
    pub(crate) fn new(g: &Conv2dGeometry) -> Lowering {
        Lowering {
            h: g.h,
            w: g.w,
            kh: g.kh,
            kw: g.kw,
            ow: g.ow,
            th: Taps::new(Axis::forward(g, true), g.kh),
            tw: Taps::new(Axis::forward(g, false), g.kw),
        }
    }

    /// The lowering of `g` onto a window of input rows `row0 .. row0 + rows` (all columns):
    /// plane offsets are relative to the window, and taps reading rows outside it are
    /// dropped like padding. For a [`col2im`] of output rows whose reach within the input lies
    /// inside the window, that is the same scatter, into the window's rows only.
    pub(crate) fn window(g: &Conv2dGeometry, row0: usize, rows: usize) -> Lowering {
        let mut ah = Axis::forward(g, true);
        ah.inp = rows;
        ah.base -= row0 as i128;
        Lowering {
            h: rows,
            th: Taps::new(ah, g.kh),
            ..Lowering::new(g)
        }
    }

    /// Calls `seg(row, r, len, src)` for every run of one output row inside the tile, for
    /// every column-matrix row of `cn` channels: `row` is the column-matrix row, `r` the
    /// first tile column of the run, `src` the input plane offset and column range
    /// `[a, b)` (tile columns relative to the run) that read inside the input, or `None`
    /// when the whole run is padding.
    #[inline(always)]
    fn walk(
        &self,
        cn: usize,
        p0: usize,
        pt: usize,
        mut seg: impl FnMut(usize, usize, usize, Option<(usize, usize, usize)>),
    ) {
        let hw = self.h * self.w;
        for cc in 0..cn {
            for u in 0..self.kh {
                let tu = self.th.get(u);
                for v in 0..self.kw {
                    let tv = self.tw.get(v);
                    let row = (cc * self.kh + u) * self.kw + v;
                    let (mut i, mut j0, mut r) = (p0 / self.ow, p0 % self.ow, 0);
                    while r < pt {
                        let len = (self.ow - j0).min(pt - r);
                        let src = if tu.covers(i) {
                            let a = tv.lo.clamp(j0, j0 + len);
                            let b = tv.hi.clamp(a, j0 + len);
                            let at = if a < b { tv.index(a) } else { 0 };
                            Some((cc * hw + tu.index(i) * self.w + at, a - j0, b - j0))
                        } else {
                            None
                        };
                        seg(row, r, len, src);
                        r += len;
                        i += 1;
                        j0 = 0;
                    }
                }
            }
        }
    }
}

crate::simd::multiversion! {
    /// Writes the `cn·KH·KW × pt` column matrix of output pixels `p0 .. p0 + pt` into `cols`
    /// (row stride `pt`), from the `cn` input planes at the start of `x`. Compiled per SIMD
    /// level (the copies, fills and stride-2 gathers vectorise).
    pub(crate) fn im2col<T: Float>(
        lw: &Lowering,
        x: &[T],
        cn: usize,
        p0: usize,
        pt: usize,
        cols: &mut [T],
    ) {
        let sw = lw.tw.axis().stride;
        lw.walk(
            cn,
            p0,
            pt,
            #[inline(always)]
            |row, r, len, src| {
            let dst = &mut cols[row * pt + r..][..len];
            match src {
                None => dst.fill(T::ZERO),
                Some((s, a, b)) => {
                    // At most the padding's width: short loops, not `memset` calls.
                    for d in &mut dst[..a] {
                        *d = T::ZERO;
                    }
                    for d in &mut dst[b..] {
                        *d = T::ZERO;
                    }
                    let d = &mut dst[a..b];
                    if sw == 1 {
                        d.copy_from_slice(&x[s..s + d.len()]);
                    } else if sw == 2 && !d.is_empty() {
                        // Pairs (x[s + 2j], x[s + 2j + 1]) for all but the last element,
                        // whose odd partner may lie past the input.
                        let last = d.len() - 1;
                        let pairs = x[s..s + 2 * last].chunks_exact(2);
                        for (d, pair) in d[..last].iter_mut().zip(pairs) {
                            *d = pair[0];
                        }
                        d[last] = x[s + 2 * last];
                    } else {
                        for (d, &v) in d.iter_mut().zip(x[s..].iter().step_by(sw)) {
                            *d = v;
                        }
                    }
                }
            }
        });
    }
}

crate::simd::multiversion! {
    /// Adds the `cn·KH·KW × pt` column matrix `cols` (row stride `pt`) of output pixels
    /// `p0 .. p0 + pt` back into the `cn` planes at the start of `dx` (the adjoint of
    /// [`im2col`]; padding taps are dropped). Compiled per SIMD level.
    pub(crate) fn col2im<T: Float>(
        lw: &Lowering,
        cols: &[T],
        cn: usize,
        p0: usize,
        pt: usize,
        dx: &mut [T],
    ) {
        let sw = lw.tw.axis().stride;
        lw.walk(
            cn,
            p0,
            pt,
            #[inline(always)]
            |row, r, _len, src| {
            if let Some((s, a, b)) = src {
                let c = &cols[row * pt + r + a..][..b - a];
                if sw == 1 {
                    for (d, &v) in dx[s..s + c.len()].iter_mut().zip(c) {
                        *d += v;
                    }
                } else if sw == 2 && !c.is_empty() {
                    let last = c.len() - 1;
                    let pairs = dx[s..s + 2 * last].chunks_exact_mut(2);
                    for (pair, &v) in pairs.zip(&c[..last]) {
                        pair[0] += v;
                    }
                    dx[s + 2 * last] += c[last];
                } else {
                    for (d, &v) in dx[s..].iter_mut().step_by(sw).zip(c) {
                        *d += v;
                    }
                }
            }
        });
    }
}
