//! The `batchnorm` (vanilla `(N, D)` and spatial NCHW, train and test mode) and `groupnorm`
//! checkers.
//!
//! # Tolerance (fast against naive)
//!
//! Both families normalise *sets* of `L` values (a channel for batch norm, an (image, group)
//! for group norm) with a mean `μ` and `inv_std = 1/√(var + eps)`. The naive kernels work in
//! `f64`; a fast path may work in `T` (unit roundoff `u`) with any summation order, any
//! (pivoted) variance formula and a fused `y = (x − μ)·(γ·inv_std) + β`. With
//! `m = max|x|` over the set, the bounds used (each doubled in the check) are:
//!
//! - mean: `e_μ = 2(L+2)·u·m` plus `2(L+2)·ε·MIN_POSITIVE` (gradual underflow);
//! - variance: `e_v = 4(L+2)·u·(var + 4m²) + e_μ²` (a shifted one-pass variance loses
//!   precision with the distance of its pivot — a data element — from the mean);
//! - `inv_std`: relative `r = e_v/(var + eps) + 4u`, plus `MIN_POSITIVE` absolute (it may
//!   underflow in `T`);
//! - `x̂ = (x − μ)·inv_std`: `(e_μ + 2u(|x| + |μ|))·inv_std + |x − μ|·(r·inv_std + MIN_POSITIVE)`
//!   `+ ε·MIN_POSITIVE` (the product may land in the subnormal range, where rounding is off
//!   by up to half the spacing `ε·MIN_POSITIVE`, not by a relative `u`; the whole spacing is
//!   used because in `f64` the half, `2⁻¹⁰⁷⁵`, is no number: the bound would round it to 0);
//! - `y = γ·x̂ + β`: `|γ|·δx̂ + 2u(|γ·x̂| + |β|)`. With a huge `γ` the last term of `δx̂` is
//!   not negligible: the reference (and any path that forms `x̂` before scaling by `γ`)
//!   rounds a subnormal `x̂` to a multiple of `ε·MIN_POSITIVE`, up to 50% relatively, and
//!   `γ` carries that error into a normal `y`; the fused `(x − μ)·(γ·inv_std)` does not
//!   (`fuzz/regressions/batchnorm/checker_xhat_underflow_times_huge_gamma`: `x − μ = −2⁻¹⁰⁷⁴`,
//!   `γ ≈ −3.4·10³⁸`, `inv_std ≈ 0.66`, so `x̂` rounds from `−0.66·2⁻¹⁰⁷⁴` to `−2⁻¹⁰⁷⁴`);
//! - backward sums `Σdy` and `Σdy·x̂`: `2(L+1)·u·Σ|·|`, plus `Σ|dy|·δx̂` for the second.
//!
//! A set is compared only if it is *clean*: every value finite, `L·m²` at most `MAX/8` (no
//! sum of squares overflows in `T`), `var + eps > 0`, and *well conditioned*:
//! `e_v ≤ (var + eps)/4`. For an ill-conditioned set (nearly constant with `eps ≈ 0`),
//! the normalised values are dominated by rounding and legitimately differ; nothing is
//! required there except the rules below.
//!
//! # Non-finite values
//!
//! - train mode: a NaN or infinite `x` in a set makes every `y` of the set NaN, on every
//!   path (the module documentation of `norm` promises it), and a NaN `x` makes the set's
//!   running mean and variance NaN;
//! - test mode: a NaN `x` gives NaN `y`, an infinite one a non-finite `y`;
//! - a NaN `γ` or `β` makes the `y` of its channel NaN;
//! - a NaN `dy` makes its channel's `dγ` and `dβ` NaN and (train mode) every `dx` of its set;
//! - test mode leaves the running statistics bitwise unchanged.

use cnn_kernels::norm::{
    naive, BatchNormCache, BatchNormGeometry, BatchNormMode, BatchNormParams, GroupNormCache,
    GroupNormGeometry, GroupNormParams, NormGrads,
};
use cnn_kernels::{Error, Float, Tensor, TensorView, TensorViewMut};

use super::cmp::{self, assert_same_bits, limits};
use super::fast::norm;
use super::input::{Data, Input, Pick};
use super::{shape, CAP};

/// One decoded batch-norm case.
#[derive(Debug, Clone)]
pub struct BnCase {
    /// Spatial `(N, C, H, W)` or vanilla `(N, D)`.
    pub spatial: bool,
    /// Shape of `x`.
    pub xs: Vec<usize>,
    /// Lengths of gamma, beta, running mean, running variance.
    pub lens: [usize; 4],
    /// Parameters.
    pub p: BatchNormParams,
}

/// One decoded group-norm case.
#[derive(Debug, Clone)]
pub struct GnCase {
    /// Shape of `x`.
    pub xs: Vec<usize>,
    /// Lengths of gamma and beta.
    pub lens: [usize; 2],
    /// Parameters.
    pub p: GroupNormParams,
}

const EPS: [f64; 6] = [1e-5, 1e-3, 0.0, 1.0, 1e-12, 0.1];
const MOMENTUM: [f64; 6] = [0.9, 0.0, 1.0, 0.5, 0.99, 0.1];

/// Decodes a batch-norm case.
pub fn decode_bn(inp: &mut Input) -> BnCase {
    let flags = inp.u8();
    let spatial = flags & 1 == 1;
    let mode = if flags & 2 == 0 {
        BatchNormMode::Train
    } else {
        BatchNormMode::Test
    };
    let (dims, c) = if spatial {
        let d = [inp.small(1, 3), inp.small(1, 4), inp.small(1, 5), inp.dim()];
        (d.to_vec(), d[1])
    } else {
        let d = [inp.dim(), inp.dim()];
        (d.to_vec(), d[1])
    };
    let xs = inp.shape_near(&dims);
    let lens = [(); 4].map(|_| inp.len_near(c));
    let p = BatchNormParams {
        mode,
        eps: inp.param_f64(&EPS),
        momentum: inp.param_f64(&MOMENTUM),
    };
    BnCase {
        spatial,
        xs,
        lens,
        p,
    }
}

/// Decodes a group-norm case.
pub fn decode_gn(inp: &mut Input) -> GnCase {
    let g = inp.small(1, 4);
    let groups = if inp.chance(8) { inp.small(0, 9) } else { g };
    let c = g.saturating_mul(inp.small(1, 3));
    let dims = [inp.small(1, 3), c, inp.small(1, 5), inp.dim()];
    let xs = inp.shape_near(&dims);
    let lens = [inp.len_near(c), inp.len_near(c)];
    GnCase {
        xs,
        lens,
        p: GroupNormParams {
            groups,
            eps: inp.param_f64(&EPS),
        },
    }
}

fn eps_ok(eps: f64) -> bool {
    eps.is_finite() && eps >= 0.0
}

/// Whether the documentation calls a batch-norm case valid (ignoring `usize` overflow).
pub fn bn_spec_valid(c: &BnCase) -> bool {
    let ch = match (c.spatial, &c.xs[..]) {
        (true, &[_, ch, _, _]) | (false, &[_, ch]) => ch,
        _ => return false,
    };
    !c.xs.contains(&0)
        && eps_ok(c.p.eps)
        && c.p.momentum.is_finite()
        && (0.0..=1.0).contains(&c.p.momentum)
        && c.lens.iter().all(|&l| l == ch)
}

/// Whether the documentation calls a group-norm case valid (ignoring `usize` overflow).
pub fn gn_spec_valid(c: &GnCase) -> bool {
    let &[_, ch, _, _] = &c.xs[..] else {
        return false;
    };
    let g = c.p.groups;
    !c.xs.contains(&0) && g > 0 && ch % g == 0 && c.lens.iter().all(|&l| l == ch) && eps_ok(c.p.eps)
}

/// Asserts that a geometry result agrees with the documented validity.
fn agree<G: std::fmt::Debug>(
    ctx: &str,
    op: &str,
    r: &cnn_kernels::Result<G>,
    valid: bool,
    xs: &[usize],
) {
    match (r, valid) {
        (Ok(_), true) => {}
        (Ok(g), false) => panic!("{ctx}: accepted an invalid problem: {g:?}"),
        (Err(e), true) => assert!(
            shape(xs).checked_len().is_none() && matches!(e, Error::TooLarge { .. }),
            "{ctx}: refused a valid problem: {e}"
        ),
        (Err(e), false) => assert_eq!(e.op(), op, "{ctx}: {e}"),
    }
}

/// Checks one `batchnorm` fuzz input.
pub fn check_bn(data: &[u8]) {
    let mut inp = Input::new(data);
    let case = decode_bn(&mut inp);
    let ctx = format!("batch_norm {case:?}");
    let op = if case.spatial {
        "spatial_batch_norm"
    } else {
        "batch_norm"
    };
    let lens = [
        ("gamma", case.lens[0]),
        ("beta", case.lens[1]),
        ("running_mean", case.lens[2]),
        ("running_var", case.lens[3]),
    ];
    let geom = BatchNormGeometry::new(op, shape(&case.xs), case.spatial, lens, &case.p);
    agree(&ctx, op, &geom, bn_spec_valid(&case), &case.xs);
    let Some(x_len) = shape(&case.xs).checked_len().filter(|&n| n <= CAP) else {
        return;
    };
    let d = BnData {
        x: inp.data(x_len),
        gamma: inp.data(case.lens[0].min(CAP)),
        beta: inp.data(case.lens[1].min(CAP)),
        rm: inp.data(case.lens[2].min(CAP)),
        rv: positive(inp.data(case.lens[3].min(CAP)), inp.chaos),
        dout: inp.data(x_len),
    };
    match geom {
        Err(_) => {
            bn_all_fail::<f32>(&ctx, &case, &d);
            bn_all_fail::<f64>(&ctx, &case, &d);
        }
        Ok(g) => {
            bn_valid::<f32>(&ctx, &case, &g, &d);
            bn_valid::<f64>(&ctx, &case, &g, &d);
        }
    }
}

/// Variances are non-negative unless chaos says otherwise.
fn positive(mut d: Data, chaos: u8) -> Data {
    if chaos == 0 {
        d.f64.iter_mut().for_each(|v| *v = v.abs());
        d.f32.iter_mut().for_each(|v| *v = v.abs());
    }
    d
}

struct BnData {
    x: Data,
    gamma: Data,
    beta: Data,
    rm: Data,
    rv: Data,
    dout: Data,
}

type BnFwd<T> = fn(
    TensorView<'_, T>,
    &[T],
    &[T],
    &mut [T],
    &mut [T],
    &BatchNormParams,
) -> cnn_kernels::Result<(Tensor<T>, BatchNormCache<T>)>;
type BnFwdInto<T> = fn(
    TensorView<'_, T>,
    &[T],
    &[T],
    &mut [T],
    &mut [T],
    &BatchNormParams,
    TensorViewMut<'_, T>,
    &mut BatchNormCache<T>,
) -> cnn_kernels::Result<()>;
type Bwd<T, C> =
    fn(TensorView<'_, T>, TensorView<'_, T>, &[T], &C) -> cnn_kernels::Result<NormGrads<T>>;
type BnBwdInto<T> = fn(
    TensorView<'_, T>,
    TensorView<'_, T>,
    &[T],
    &BatchNormCache<T>,
    TensorViewMut<'_, T>,
    &mut [T],
    &mut [T],
) -> cnn_kernels::Result<()>;

/// The batch-norm entry points of one variant (vanilla or spatial).
struct BnFns<T> {
    naive_fwd: BnFwd<T>,
    naive_bwd: Bwd<T, BatchNormCache<T>>,
    fwd: BnFwd<T>,
    fwd_into: BnFwdInto<T>,
    bwd: Bwd<T, BatchNormCache<T>>,
    bwd_into: BnBwdInto<T>,
}

fn bn_fns<T: Float>(spatial: bool) -> BnFns<T> {
    if spatial {
        BnFns {
            naive_fwd: naive::spatial_batch_norm_forward,
            naive_bwd: naive::spatial_batch_norm_backward,
            fwd: norm::spatial_batch_norm_forward,
            fwd_into: norm::spatial_batch_norm_forward_into,
            bwd: norm::spatial_batch_norm_backward,
            bwd_into: norm::spatial_batch_norm_backward_into,
        }
    } else {
        BnFns {
            naive_fwd: naive::batch_norm_forward,
            naive_bwd: naive::batch_norm_backward,
            fwd: norm::batch_norm_forward,
            fwd_into: norm::batch_norm_forward_into,
            bwd: norm::batch_norm_backward,
            bwd_into: norm::batch_norm_backward_into,
        }
    }
}

fn view<'a, T: Pick>(s: &[usize], d: &'a Data) -> TensorView<'a, T> {
    TensorView::new(shape(s), T::pick(d)).expect("data of the shape's length")
}

/// An invalid batch-norm problem: every entry point returns `Err`.
fn bn_all_fail<T: Pick>(ctx: &str, c: &BnCase, d: &BnData) {
    let ctx = format!("{ctx} {:?}", T::DTYPE);
    let f = bn_fns::<T>(c.spatial);
    let (xv, dv) = (view::<T>(&c.xs, &d.x), view::<T>(&c.xs, &d.dout));
    let (gm, bt) = (T::pick(&d.gamma), T::pick(&d.beta));
    let (mut rm, mut rv) = (T::pick(&d.rm).to_vec(), T::pick(&d.rv).to_vec());
    let cache = BatchNormCache {
        mode: c.p.mode,
        mean: T::pick(&d.rm).to_vec(),
        inv_std: T::pick(&d.rv).to_vec(),
    };
    let fail = |what: &str, r: cnn_kernels::Result<()>| {
        assert!(r.is_err(), "{ctx}: {what} accepted an invalid problem");
    };
    fail(
        "naive forward",
        (f.naive_fwd)(xv, gm, bt, &mut rm, &mut rv, &c.p).map(drop),
    );
    // The backward validates x, gamma and the cache (not beta, eps or momentum).
    let bwd_invalid = !bn_spec_valid(&BnCase {
        lens: [c.lens[0]; 4],
        p: BatchNormParams::default(),
        ..c.clone()
    }) || c.lens[0] != c.lens[2]
        || c.lens[0] != c.lens[3];
    if bwd_invalid {
        fail(
            "naive backward",
            (f.naive_bwd)(dv, xv, gm, &cache).map(drop),
        );
    }
    cmp::for_each_level(|level| {
        let what = |s: &str| format!("{s} at {level}");
        fail(
            &what("forward"),
            (f.fwd)(xv, gm, bt, &mut rm, &mut rv, &c.p).map(drop),
        );
        let mut y = cmp::garbage::<T>(xv.data().len());
        let yv = TensorViewMut::new(xv.shape(), &mut y[..]).unwrap();
        let mut cc = cache.clone();
        fail(
            &what("forward_into"),
            (f.fwd_into)(xv, gm, bt, &mut rm, &mut rv, &c.p, yv, &mut cc),
        );
        if bwd_invalid {
            fail(&what("backward"), (f.bwd)(dv, xv, gm, &cache).map(drop));
            let yv = TensorViewMut::new(xv.shape(), &mut y[..]).unwrap();
            let (mut dg, mut db) = (gm.to_vec(), gm.to_vec());
            fail(
                &what("backward_into"),
                (f.bwd_into)(dv, xv, gm, &cache, yv, &mut dg, &mut db),
            );
        }
    });
}

/// The sets a normalisation reduces over, in terms of flat element indices.
struct Layout {
    /// Element indices of each set (a batch-norm channel, a group-norm (image, group)).
    sets: Vec<Vec<usize>>,
    /// The channel (index into γ, β, dγ, dβ) of each element.
    chan: Vec<usize>,
    /// Number of channels.
    c: usize,
}

impl Layout {
    fn batch_norm(n: usize, c: usize, hw: usize) -> Layout {
        let sets = (0..c)
            .map(|ch| {
                (0..n)
                    .flat_map(|i| (0..hw).map(move |s| (i * c + ch) * hw + s))
                    .collect()
            })
            .collect();
        let chan = (0..n * c * hw).map(|e| (e / hw) % c).collect();
        Layout { sets, chan, c }
    }

    fn group_norm(g: &GroupNormGeometry) -> Layout {
        let len = g.group_len();
        let sets = (0..g.n * g.groups)
            .map(|s| (s * len..(s + 1) * len).collect())
            .collect();
        let chan = (0..g.n * g.c * g.hw).map(|e| (e / g.hw) % g.c).collect();
        Layout { sets, chan, c: g.c }
    }
}

/// Per-set statistics of the reference, in `f64`, with the error bounds of the module docs.
#[derive(Debug, Clone, Copy)]
struct SetStats {
    mean: f64,
    inv_std: f64,
    /// Bound on the mean's error.
    e_mu: f64,
    /// Relative bound on inv_std's error.
    r_is: f64,
    /// Whether values are compared (see "clean" in the module docs).
    clean: bool,
    /// Some input of the set is NaN / non-finite.
    has_nan: bool,
    has_nonfinite: bool,
    /// Bounds on the variance's error, for the running variance.
    e_v: f64,
    var: f64,
}

/// Statistics of one set: computed from `x` (train) or given (`stats = Some((μ, var))`).
fn set_stats<T: Float>(x: &[f64], eps: f64, stats: Option<(f64, f64)>) -> SetStats {
    let (u, min_pos, max) = limits::<T>();
    let u = u / 2.0;
    let l = x.len() as f64;
    let has_nan = x.iter().any(|v| v.is_nan());
    let has_nonfinite = x.iter().any(|v| !v.is_finite());
    let m = x.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let (mean, var, e_mu, e_v) = match stats {
        None => {
            let mean = x.iter().sum::<f64>() / l;
            let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / l;
            // Plus gradual underflow: each operation may be off by half a subnormal spacing.
            let e_mu = 2.0 * (l + 2.0) * u * m + 2.0 * (l + 2.0) * 2.0 * u * min_pos;
            // Squares of deviations may underflow, each losing up to ε·MIN_POSITIVE.
            let e_v = 4.0 * (l + 2.0) * u * (var + 4.0 * m * m)
                + e_mu * e_mu
                + 4.0 * (l + 2.0) * 2.0 * u * min_pos;
            (mean, var, e_mu, e_v)
        }
        Some((mean, var)) => (mean, var, 2.0 * u * mean.abs(), 4.0 * u * var.abs()),
    };
    let s2 = var + eps;
    let e_v = e_v + 4.0 * u * eps;
    let clean = !has_nonfinite
        && mean.is_finite()
        && var.is_finite()
        && l * m * m <= max / 8.0
        && mean.abs() <= max / 8.0
        && s2 > 0.0
        && s2.is_finite()
        // inv_std and its square (fast backward coefficients) must fit T.
        && s2 >= 64.0 / max
        && e_v <= s2 / 4.0;
    SetStats {
        mean,
        inv_std: 1.0 / s2.sqrt(),
        e_mu,
        r_is: e_v / s2 + 4.0 * u,
        clean,
        has_nan,
        has_nonfinite,
        e_v,
        var,
    }
}

/// `δx̂` bound of one element (module docs).
fn dxhat<T: Float>(x: f64, s: &SetStats) -> f64 {
    let (eps, min_pos, _) = limits::<T>();
    let u = eps / 2.0;
    // The last term: the product (x − μ)·inv_std may be subnormal, where its rounding error
    // is absolute (at most half the spacing ε·MIN_POSITIVE), not relative. It is the whole
    // spacing because for f64 the half (2⁻¹⁰⁷⁵) rounds to 0 here. `T`'s spacing also covers
    // the `f64` reference's.
    (s.e_mu + 2.0 * u * (x.abs() + s.mean.abs())) * s.inv_std
        + (x - s.mean).abs() * (s.r_is * s.inv_std + min_pos)
        + eps * min_pos
}

fn f64s<T: Float>(v: &[T]) -> Vec<f64> {
    v.iter().map(|v| v.to_f64()).collect()
}

/// Panics unless `got` is within `tol` of `want` (both finite). A bound that itself
/// overflows `f64` (inf, or NaN from `0·inf`) constrains nothing.
#[track_caller]
fn close(ctx: &str, what: &str, i: usize, want: f64, got: f64, tol: f64) {
    if !tol.is_finite() {
        return;
    }
    assert!(
        want.is_finite() && got.is_finite() && (got - want).abs() <= tol,
        "{ctx}: {what}[{i}]: reference {want:e}, got {got:e}, |diff| {:e} > tolerance {tol:e}",
        (got - want).abs()
    );
}

/// Compares a fast forward (`y`, cache mean and inv_std) with the reference statistics.
fn check_forward<T: Float>(
    ctx: &str,
    lay: &Layout,
    stats: &[SetStats],
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
    y: &[T],
    mean: &[T],
    inv_std: &[T],
    train: bool,
) {
    let (eps, min_pos, max) = limits::<T>();
    let u = eps / 2.0;
    let abs = 8.0 * eps * min_pos;
    for (si, (set, s)) in lay.sets.iter().zip(stats).enumerate() {
        if train && s.has_nonfinite {
            for &e in set {
                assert!(
                    y[e].is_nan(),
                    "{ctx}: y[{e}] = {:?}: set {si} has a non-finite x",
                    y[e]
                );
            }
            continue;
        }
        for &e in set {
            let (gm, bt) = (gamma[lay.chan[e]], beta[lay.chan[e]]);
            if gm.is_nan() || bt.is_nan() || x[e].is_nan() {
                assert!(y[e].is_nan(), "{ctx}: y[{e}] = {:?}: a NaN input", y[e]);
            } else if !train && !x[e].is_finite() && s.mean.is_finite() && s.inv_std.is_finite() {
                assert!(!y[e].is_finite(), "{ctx}: y[{e}] = {:?} for x = inf", y[e]);
            }
        }
        if !s.clean {
            continue;
        }
        close(
            ctx,
            "mean",
            si,
            s.mean,
            mean[si].to_f64(),
            2.0 * (s.e_mu + 2.0 * u * s.mean.abs()) + abs,
        );
        close(
            ctx,
            "inv_std",
            si,
            s.inv_std,
            inv_std[si].to_f64(),
            2.0 * (s.r_is * s.inv_std + min_pos),
        );
        for &e in set {
            let (gm, bt) = (gamma[lay.chan[e]], beta[lay.chan[e]]);
            if !(gm.is_finite() && bt.is_finite()) {
                continue;
            }
            let xh = (x[e] - s.mean) * s.inv_std;
            if (gm.abs() + 1.0) * (1.0 + s.inv_std) * (x[e].abs() + s.mean.abs() + 1.0) + bt.abs()
                > max / 8.0
            {
                continue; // an intermediate (γ·inv_std, x − μ, their product) may overflow T
            }
            let want = gm * xh + bt;
            // The last term: a fused scale γ·inv_std may underflow in T, losing up to
            // ε·MIN_POSITIVE absolutely, which (x − μ) multiplies.
            let tol = 2.0
                * (gm.abs() * dxhat::<T>(x[e], s)
                    + 2.0 * u * ((gm * xh).abs() + bt.abs())
                    + (x[e].abs() + s.mean.abs()) * eps * min_pos)
                + abs;
            close(ctx, "y", e, want, y[e].to_f64(), tol);
        }
    }
}

/// Compares a fast backward with the naive one (both from the same cache).
fn check_backward<T: Float>(
    ctx: &str,
    lay: &Layout,
    stats: &[SetStats],
    x: &[f64],
    gamma: &[f64],
    dout: &[f64],
    reference: &NormGrads<T>,
    got: &NormGrads<T>,
    train: bool,
) {
    let (eps, min_pos, _) = limits::<T>();
    let u = eps / 2.0;
    let abs = 8.0 * eps * min_pos;
    let c = lay.c;
    // Per channel: whether every contributing set is clean, Σ|dy|, Σ|dy·x̂|, Σ|dy|·δx̂, count.
    let mut ch_clean = vec![true; c];
    let mut ch_nan = vec![false; c];
    let mut ch_is = vec![0.0f64; c];
    let (mut a, mut b, mut dd, mut cnt) =
        (vec![0.0; c], vec![0.0; c], vec![0.0; c], vec![0usize; c]);
    let (.., max) = limits::<T>();
    for (set, s) in lay.sets.iter().zip(stats) {
        let set_nan = set.iter().any(|&e| dout[e].is_nan());
        // With per-element γ (group norm), dx̂ = dy·γ: Σdx̂ and Σdx̂·x̂ are what dx needs.
        let (mut sa, mut sb, mut sd, mut s1, mut s2, mut big) =
            (0.0, 0.0, 0.0f64, 0.0, 0.0, 0.0f64);
        let (mut ady, mut bdy, mut gmax) = (0.0, 0.0, 0.0f64);
        let mut fin = s.clean;
        for &e in set {
            let ch = lay.chan[e];
            let gm = gamma[ch];
            fin &= dout[e].is_finite() && gm.is_finite();
            ch_nan[ch] |= dout[e].is_nan();
            let xh = (x[e] - s.mean) * s.inv_std;
            let dxh = dxhat::<T>(x[e], s);
            a[ch] += dout[e].abs();
            b[ch] += (dout[e] * xh).abs();
            dd[ch] += dout[e].abs() * dxh;
            cnt[ch] += 1;
            ch_is[ch] = ch_is[ch].max(s.inv_std);
            let g = dout[e] * gm;
            ady += dout[e].abs();
            bdy += (dout[e] * xh).abs();
            gmax = gmax.max(gm.abs());
            sa += g.abs();
            sb += (g * xh).abs();
            sd = sd.max(dxh * gm.abs());
            s1 += g;
            s2 += g * xh;
            // Fast paths scale by per-channel coefficients such as γ·inv_std in T.
            big = big.max((dout[e].abs() + g.abs() + gm.abs()) * (1.0 + xh.abs()));
        }
        let l = set.len() as f64;
        // Intermediates (L·dx̂, the sums, their products with inv_std) must not overflow T.
        fin &= (l * big + sa + sb) * (1.0 + s.inv_std) * (1.0 + s.inv_std) <= max / 8.0;
        for &e in set {
            ch_clean[lay.chan[e]] &= fin;
        }
        if train && set_nan {
            for &e in set {
                let (r, g) = (reference.dx.data()[e], got.dx.data()[e]);
                assert!(
                    r.is_nan() && g.is_nan(),
                    "{ctx}: dx[{e}]: {r:?}, {g:?}: a NaN dy"
                );
            }
            continue;
        }
        if !fin {
            continue;
        }
        let e1 = 2.0 * (l + 1.0) * u * sa;
        let e2 = 2.0 * (l + 1.0) * u * sb + sa * sd;
        for &e in set {
            let g = dout[e] * gamma[lay.chan[e]];
            let xh = (x[e] - s.mean) * s.inv_std;
            // Gradual underflow (spacing `un`): of the products dy·γ before the scaling by
            // inv_std, and of a fused scale (γ·)inv_std/L before it multiplies the rest.
            let un = 2.0 * u * min_pos;
            let tol = if train {
                let inner = 4.0 * u * l * g.abs()
                    + e1
                    + xh.abs() * e2
                    + dxhat::<T>(x[e], s) * (s2.abs() + e2)
                    + 4.0 * u * (s1.abs() + (xh * s2).abs());
                let under = 4.0
                    * un
                    * ((l * dout[e].abs() + ady + xh.abs() * bdy)
                        + s.inv_std * (l + 2.0) * (1.0 + xh.abs()) * (1.0 + gmax)
                        + (x[e] - s.mean).abs())
                    // Σdy·(x − μ) summed in T may underflow by (L+2)·un, and reaches dx
                    // multiplied by γ·inv_std³·(x − μ)/L.
                    + 4.0 * (l + 2.0) / l
                        * un
                        * gmax
                        * s.inv_std.powi(3)
                        * (x[e] - s.mean).abs();
                2.0 * s.inv_std / l * inner + under + abs
            } else {
                8.0 * u * (s.inv_std * g).abs() + 4.0 * un * dout[e].abs() * (1.0 + gmax) + abs
            };
            // The reference is the naive result: compare the two within the bound.
            let r = reference.dx.data()[e].to_f64();
            close(ctx, "dx", e, r, got.dx.data()[e].to_f64(), 2.0 * tol);
        }
    }
    for ch in 0..c {
        let (rg, gg) = (reference.dgamma[ch].to_f64(), got.dgamma[ch].to_f64());
        let (rb, gb) = (reference.dbeta[ch].to_f64(), got.dbeta[ch].to_f64());
        if ch_nan[ch] {
            assert!(
                rb.is_nan() && gb.is_nan(),
                "{ctx}: dbeta[{ch}]: {rb}, {gb}: a NaN dy"
            );
            assert!(
                rg.is_nan() && gg.is_nan(),
                "{ctx}: dgamma[{ch}]: {rg}, {gg}: a NaN dy"
            );
            continue;
        }
        if !ch_clean[ch] {
            continue;
        }
        let l = cnt[ch] as f64;
        // Products dy·(x − μ) may underflow in T before the sum is scaled by inv_std.
        let under = 4.0 * (l + 1.0) * 2.0 * u * min_pos * (1.0 + ch_is[ch]);
        close(ctx, "dbeta", ch, rb, gb, 4.0 * (l + 1.0) * u * a[ch] + abs);
        close(
            ctx,
            "dgamma",
            ch,
            rg,
            gg,
            2.0 * (2.0 * (l + 1.0) * u * b[ch] + dd[ch]) + under + abs,
        );
    }
}

/// A valid batch-norm problem in one element type.
fn bn_valid<T: Pick>(ctx: &str, c: &BnCase, g: &BatchNormGeometry, d: &BnData) {
    let ctx = format!("{ctx} {:?}", T::DTYPE);
    let f = bn_fns::<T>(c.spatial);
    let p = &c.p;
    let train = p.mode == BatchNormMode::Train;
    let (xv, dv) = (view::<T>(&c.xs, &d.x), view::<T>(&c.xs, &d.dout));
    let (gm, bt) = (T::pick(&d.gamma), T::pick(&d.beta));
    let (rm0, rv0) = (T::pick(&d.rm), T::pick(&d.rv));
    let run_naive = || {
        let (mut rm, mut rv) = (rm0.to_vec(), rv0.to_vec());
        let (y, cache) = (f.naive_fwd)(xv, gm, bt, &mut rm, &mut rv, p)
            .unwrap_or_else(|e| panic!("{ctx}: naive: {e}"));
        (y, cache, rm, rv)
    };
    let (y, cache, rm, rv) = run_naive();
    let again = run_naive();
    assert_eq!(y.shape(), xv.shape(), "{ctx}");
    assert_same_bits(&ctx, "naive y", y.data(), again.0.data());
    assert_same_bits(&ctx, "naive running mean", &rm, &again.2);
    if !train {
        assert_same_bits(&ctx, "naive test-mode running mean", &rm, rm0);
        assert_same_bits(&ctx, "naive test-mode running var", &rv, rv0);
    }
    let grads = (f.naive_bwd)(dv, xv, gm, &cache).unwrap_or_else(|e| panic!("{ctx}: {e}"));
    let again = (f.naive_bwd)(dv, xv, gm, &cache).unwrap();
    assert_same_bits(&ctx, "naive dx", grads.dx.data(), again.dx.data());
    assert_same_bits(&ctx, "naive dgamma", &grads.dgamma, &again.dgamma);

    let lay = Layout::batch_norm(g.n, g.c, g.hw);
    let x = f64s(xv.data());
    let stats: Vec<SetStats> = lay
        .sets
        .iter()
        .enumerate()
        .map(|(ch, set)| {
            let xs: Vec<f64> = set.iter().map(|&e| x[e]).collect();
            let given = (!train).then(|| (rm0[ch].to_f64(), rv0[ch].to_f64()));
            set_stats::<T>(&xs, p.eps, given)
        })
        .collect();
    let (gamma, beta, dout) = (f64s(gm), f64s(bt), f64s(dv.data()));
    let (eps_t, min_pos, _) = limits::<T>();
    let u = eps_t / 2.0;

    cmp::for_each_level(|level| {
        let ctx = format!("{ctx} at {level}");
        let (mut frm, mut frv) = (rm0.to_vec(), rv0.to_vec());
        let (fy, fc) = (f.fwd)(xv, gm, bt, &mut frm, &mut frv, p)
            .unwrap_or_else(|e| panic!("{ctx}: forward: {e}"));
        assert_eq!(fy.shape(), xv.shape(), "{ctx}");
        assert_eq!(fc.mode, p.mode, "{ctx}");
        check_forward(
            &ctx,
            &lay,
            &stats,
            &x,
            &gamma,
            &beta,
            fy.data(),
            &fc.mean,
            &fc.inv_std,
            train,
        );
        if train {
            for (ch, s) in stats.iter().enumerate() {
                let mom = p.momentum;
                let (m0, v0) = (rm0[ch].to_f64(), rv0[ch].to_f64());
                if s.has_nan {
                    assert!(
                        frm[ch].is_nan() && frv[ch].is_nan(),
                        "{ctx}: running stats of {ch}"
                    );
                }
                if !(s.clean && m0.is_finite() && v0.is_finite()) {
                    continue;
                }
                // `momentum·old + (1 − momentum)·batch` with the batch statistic off by `e`.
                let tol = |e: f64, old: f64, batch: f64| {
                    2.0 * (2.0
                        * ((1.0 - mom) * e
                            + 2.0 * u * ((mom * old).abs() + ((1.0 - mom) * batch).abs()))
                        + 8.0 * eps_t * min_pos)
                };
                let (rm_f, frm_f) = (rm[ch].to_f64(), frm[ch].to_f64());
                close(
                    &ctx,
                    "running_mean",
                    ch,
                    rm_f,
                    frm_f,
                    tol(s.e_mu, m0, s.mean),
                );
                let (rv_f, frv_f) = (rv[ch].to_f64(), frv[ch].to_f64());
                close(&ctx, "running_var", ch, rv_f, frv_f, tol(s.e_v, v0, s.var));
            }
        } else {
            assert_same_bits(&ctx, "test-mode running mean", &frm, rm0);
            assert_same_bits(&ctx, "test-mode running var", &frv, rv0);
        }
        for (r, (rm2, rv2)) in cmp::on_pools(|| {
            let (mut a, mut b) = (rm0.to_vec(), rv0.to_vec());
            let r = (f.fwd)(xv, gm, bt, &mut a, &mut b, p).unwrap();
            (r, (a, b))
        }) {
            assert_same_bits(&ctx, "y on another pool", fy.data(), r.0.data());
            assert_same_bits(&ctx, "mean on another pool", &fc.mean, &r.1.mean);
            assert_same_bits(&ctx, "inv_std on another pool", &fc.inv_std, &r.1.inv_std);
            assert_same_bits(&ctx, "running mean on another pool", &frm, &rm2);
            assert_same_bits(&ctx, "running var on another pool", &frv, &rv2);
        }
        let mut y2 = cmp::garbage::<T>(x.len());
        let mut c2 = BatchNormCache {
            mode: BatchNormMode::Test,
            mean: cmp::garbage::<T>(g.c),
            inv_std: cmp::garbage::<T>(g.c),
        };
        let (mut rm2, mut rv2) = (rm0.to_vec(), rv0.to_vec());
        let yv = TensorViewMut::new(xv.shape(), &mut y2[..]).unwrap();
        (f.fwd_into)(xv, gm, bt, &mut rm2, &mut rv2, p, yv, &mut c2)
            .unwrap_or_else(|e| panic!("{ctx}: forward_into: {e}"));
        assert_same_bits(&ctx, "forward_into y", fy.data(), &y2);
        assert_same_bits(&ctx, "forward_into mean", &fc.mean, &c2.mean);
        assert_same_bits(&ctx, "forward_into inv_std", &fc.inv_std, &c2.inv_std);
        assert_same_bits(&ctx, "forward_into running mean", &frm, &rm2);
        assert_same_bits(&ctx, "forward_into running var", &frv, &rv2);
        assert_eq!(c2.mode, p.mode, "{ctx}: forward_into cache mode");

        let fg = (f.bwd)(dv, xv, gm, &cache).unwrap_or_else(|e| panic!("{ctx}: backward: {e}"));
        check_backward(&ctx, &lay, &stats, &x, &gamma, &dout, &grads, &fg, train);
        for r in cmp::on_pools(|| (f.bwd)(dv, xv, gm, &cache).unwrap()) {
            assert_same_bits(&ctx, "dx on another pool", fg.dx.data(), r.dx.data());
            assert_same_bits(&ctx, "dgamma on another pool", &fg.dgamma, &r.dgamma);
            assert_same_bits(&ctx, "dbeta on another pool", &fg.dbeta, &r.dbeta);
        }
        let mut dx = cmp::garbage::<T>(x.len());
        let (mut dgm, mut dbt) = (cmp::garbage::<T>(g.c), cmp::garbage::<T>(g.c));
        let dxv = TensorViewMut::new(xv.shape(), &mut dx[..]).unwrap();
        (f.bwd_into)(dv, xv, gm, &cache, dxv, &mut dgm, &mut dbt)
            .unwrap_or_else(|e| panic!("{ctx}: backward_into: {e}"));
        assert_same_bits(&ctx, "backward_into dx", fg.dx.data(), &dx);
        assert_same_bits(&ctx, "backward_into dgamma", &fg.dgamma, &dgm);
        assert_same_bits(&ctx, "backward_into dbeta", &fg.dbeta, &dbt);
        // Forward then backward on the fast path's own cache.
        (f.bwd)(dv, xv, gm, &fc).unwrap_or_else(|e| panic!("{ctx}: chain: {e}"));
        // A cache of the wrong length is refused.
        let short = BatchNormCache {
            mode: cache.mode,
            mean: cache.mean[1..].to_vec(),
            inv_std: cache.inv_std.clone(),
        };
        assert!(
            (f.bwd)(dv, xv, gm, &short).is_err(),
            "{ctx}: took a short cache"
        );
        assert!(
            (f.naive_bwd)(dv, xv, gm, &short).is_err(),
            "{ctx}: naive took a short cache"
        );
    });
}

/// Checks one `groupnorm` fuzz input.
pub fn check_gn(data: &[u8]) {
    let mut inp = Input::new(data);
    let case = decode_gn(&mut inp);
    let ctx = format!("group_norm {case:?}");
    let geom = GroupNormGeometry::new(
        "group_norm",
        shape(&case.xs),
        case.p.groups,
        case.lens[0],
        case.lens[1],
    )
    .and_then(|g| {
        if eps_ok(case.p.eps) {
            Ok(g)
        } else {
            // eps is checked by the forward, not by the geometry.
            Err(Error::InvalidParameter {
                op: "group_norm",
                message: String::new(),
            })
        }
    });
    agree(&ctx, "group_norm", &geom, gn_spec_valid(&case), &case.xs);
    if let Ok(g) = &geom {
        norm::group_norm_backward_workspace_len(g);
    }
    let Some(x_len) = shape(&case.xs).checked_len().filter(|&n| n <= CAP) else {
        return;
    };
    let x = inp.data(x_len);
    let gamma = inp.data(case.lens[0].min(CAP));
    let beta = inp.data(case.lens[1].min(CAP));
    let dout = inp.data(x_len);
    match geom {
        Err(_) => {
            gn_all_fail::<f32>(&ctx, &case, &x, &gamma, &beta);
            gn_all_fail::<f64>(&ctx, &case, &x, &gamma, &beta);
        }
        Ok(g) => {
            gn_valid::<f32>(&ctx, &case, &g, &x, &gamma, &beta, &dout);
            gn_valid::<f64>(&ctx, &case, &g, &x, &gamma, &beta, &dout);
        }
    }
}

/// An invalid group-norm problem: every forward returns `Err` (and every backward, unless
/// only eps or beta is wrong, which the backward does not take).
fn gn_all_fail<T: Pick>(ctx: &str, c: &GnCase, x: &Data, gamma: &Data, beta: &Data) {
    let ctx = format!("{ctx} {:?}", T::DTYPE);
    let xv = view::<T>(&c.xs, x);
    let (gm, bt) = (T::pick(gamma), T::pick(beta));
    let p = &c.p;
    let fail = |what: &str, r: cnn_kernels::Result<()>| {
        assert!(r.is_err(), "{ctx}: {what} accepted an invalid problem");
    };
    fail(
        "naive forward",
        naive::group_norm_forward(xv, gm, bt, p).map(drop),
    );
    let bwd_invalid = !gn_spec_valid(&GnCase {
        lens: [c.lens[0]; 2],
        p: GroupNormParams::new(p.groups),
        ..c.clone()
    });
    let n = c.xs[0].min(CAP);
    let cache = GroupNormCache {
        groups: p.groups,
        mean: vec![T::ZERO; n.saturating_mul(p.groups).min(CAP)],
        inv_std: vec![T::ONE; n.saturating_mul(p.groups).min(CAP)],
    };
    if bwd_invalid {
        fail(
            "naive backward",
            naive::group_norm_backward(xv, xv, gm, &cache).map(drop),
        );
    }
    cmp::for_each_level(|level| {
        let what = |s: &str| format!("{s} at {level}");
        fail(
            &what("forward"),
            norm::group_norm_forward(xv, gm, bt, p).map(drop),
        );
        let mut y = cmp::garbage::<T>(xv.data().len());
        let yv = TensorViewMut::new(xv.shape(), &mut y[..]).unwrap();
        let mut cc = cache.clone();
        fail(
            &what("forward_into"),
            norm::group_norm_forward_into(xv, gm, bt, p, yv, &mut cc),
        );
        if bwd_invalid {
            fail(
                &what("backward"),
                norm::group_norm_backward(xv, xv, gm, &cache).map(drop),
            );
            let yv = TensorViewMut::new(xv.shape(), &mut y[..]).unwrap();
            let (mut dg, mut db) = (gm.to_vec(), gm.to_vec());
            let mut ws = vec![0.0f64; 64];
            fail(
                &what("backward_into"),
                norm::group_norm_backward_into(xv, xv, gm, &cache, yv, &mut dg, &mut db, &mut ws),
            );
        }
    });
}

/// A valid group-norm problem in one element type.
fn gn_valid<T: Pick>(
    ctx: &str,
    c: &GnCase,
    g: &GroupNormGeometry,
    x: &Data,
    gamma: &Data,
    beta: &Data,
    dout: &Data,
) {
    let ctx = format!("{ctx} {:?}", T::DTYPE);
    let p = &c.p;
    let (xv, dv) = (view::<T>(&c.xs, x), view::<T>(&c.xs, dout));
    let (gm, bt) = (T::pick(gamma), T::pick(beta));
    let (y, cache) =
        naive::group_norm_forward(xv, gm, bt, p).unwrap_or_else(|e| panic!("{ctx}: naive: {e}"));
    assert_eq!(y.shape(), xv.shape(), "{ctx}");
    assert_same_bits(
        &ctx,
        "naive y",
        y.data(),
        naive::group_norm_forward(xv, gm, bt, p).unwrap().0.data(),
    );
    let grads = naive::group_norm_backward(dv, xv, gm, &cache)
        .unwrap_or_else(|e| panic!("{ctx}: naive backward: {e}"));
    let again = naive::group_norm_backward(dv, xv, gm, &cache).unwrap();
    assert_same_bits(&ctx, "naive dx", grads.dx.data(), again.dx.data());

    let lay = Layout::group_norm(g);
    let xf = f64s(xv.data());
    let stats: Vec<SetStats> = lay
        .sets
        .iter()
        .map(|set| {
            let xs: Vec<f64> = set.iter().map(|&e| xf[e]).collect();
            set_stats::<T>(&xs, p.eps, None)
        })
        .collect();
    let (gmf, btf, df) = (f64s(gm), f64s(bt), f64s(dv.data()));
    let ws_len = norm::group_norm_backward_workspace_len(g);

    cmp::for_each_level(|level| {
        let ctx = format!("{ctx} at {level}");
        let (fy, fc) =
            norm::group_norm_forward(xv, gm, bt, p).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        assert_eq!(fc.groups, g.groups, "{ctx}");
        check_forward(
            &ctx,
            &lay,
            &stats,
            &xf,
            &gmf,
            &btf,
            fy.data(),
            &fc.mean,
            &fc.inv_std,
            true,
        );
        for r in cmp::on_pools(|| norm::group_norm_forward(xv, gm, bt, p).unwrap()) {
            assert_same_bits(&ctx, "y on another pool", fy.data(), r.0.data());
            assert_same_bits(&ctx, "mean on another pool", &fc.mean, &r.1.mean);
            assert_same_bits(&ctx, "inv_std on another pool", &fc.inv_std, &r.1.inv_std);
        }
        let mut y2 = cmp::garbage::<T>(xf.len());
        let mut c2 = GroupNormCache {
            groups: 0,
            mean: cmp::garbage::<T>(g.n * g.groups),
            inv_std: cmp::garbage::<T>(g.n * g.groups),
        };
        let yv = TensorViewMut::new(xv.shape(), &mut y2[..]).unwrap();
        norm::group_norm_forward_into(xv, gm, bt, p, yv, &mut c2)
            .unwrap_or_else(|e| panic!("{ctx}: forward_into: {e}"));
        assert_same_bits(&ctx, "forward_into y", fy.data(), &y2);
        assert_same_bits(&ctx, "forward_into mean", &fc.mean, &c2.mean);
        assert_same_bits(&ctx, "forward_into inv_std", &fc.inv_std, &c2.inv_std);

        let fg = norm::group_norm_backward(dv, xv, gm, &cache)
            .unwrap_or_else(|e| panic!("{ctx}: backward: {e}"));
        check_backward(&ctx, &lay, &stats, &xf, &gmf, &df, &grads, &fg, true);
        for r in cmp::on_pools(|| norm::group_norm_backward(dv, xv, gm, &cache).unwrap()) {
            assert_same_bits(&ctx, "dx on another pool", fg.dx.data(), r.dx.data());
            assert_same_bits(&ctx, "dgamma on another pool", &fg.dgamma, &r.dgamma);
            assert_same_bits(&ctx, "dbeta on another pool", &fg.dbeta, &r.dbeta);
        }
        let mut dx = cmp::garbage::<T>(xf.len());
        let (mut dgm, mut dbt) = (cmp::garbage::<T>(g.c), cmp::garbage::<T>(g.c));
        let mut ws = vec![f64::NAN; ws_len];
        let dxv = TensorViewMut::new(xv.shape(), &mut dx[..]).unwrap();
        norm::group_norm_backward_into(dv, xv, gm, &cache, dxv, &mut dgm, &mut dbt, &mut ws)
            .unwrap_or_else(|e| panic!("{ctx}: backward_into: {e}"));
        assert_same_bits(&ctx, "backward_into dx", fg.dx.data(), &dx);
        assert_same_bits(&ctx, "backward_into dgamma", &fg.dgamma, &dgm);
        assert_same_bits(&ctx, "backward_into dbeta", &fg.dbeta, &dbt);
        if ws_len > 0 {
            let dxv = TensorViewMut::new(xv.shape(), &mut dx[..]).unwrap();
            let r = norm::group_norm_backward_into(
                dv,
                xv,
                gm,
                &cache,
                dxv,
                &mut dgm,
                &mut dbt,
                &mut ws[1..],
            );
            assert!(
                matches!(r, Err(Error::WorkspaceTooSmall { .. })),
                "{ctx}: short workspace: {r:?}"
            );
        }
        norm::group_norm_backward(dv, xv, gm, &fc).unwrap_or_else(|e| panic!("{ctx}: chain: {e}"));
        let short = GroupNormCache {
            groups: cache.groups,
            mean: cache.mean[1..].to_vec(),
            inv_std: cache.inv_std.clone(),
        };
        assert!(
            norm::group_norm_backward(dv, xv, gm, &short).is_err(),
            "{ctx}: took a short cache"
        );
    });
}
