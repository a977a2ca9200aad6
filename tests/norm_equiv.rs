//! Fast batch / spatial batch / group norm == the naive kernels, on randomised shapes, for
//! every SIMD level this CPU supports, `f32` and `f64`, train and test mode; `_into` forms
//! equal the allocating ones; NaN/inf propagate like naive; bad buffers give `Err`.
//!
//! The SIMD cap is process-wide, so every test here takes `LEVEL_LOCK`.

use std::sync::Mutex;

use cnn_kernels::norm::{
    self, naive, BatchNormCache, BatchNormMode, BatchNormParams, GroupNormCache, GroupNormGeometry,
    GroupNormParams, NormGrads,
};
use cnn_kernels::simd::{self, Level};
use cnn_kernels::{Error, Float, Shape, Tensor, TensorView, TensorViewMut};

static LEVEL_LOCK: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LEVEL_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` at every supported level, then restores the uncapped level.
fn each_level(mut f: impl FnMut(Level)) {
    for l in simd::supported_levels() {
        assert_eq!(simd::set_max_level(l), l);
        f(l);
    }
    simd::set_max_level(Level::Avx512);
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in `[lo, hi)`.
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next() >> 11) as f64 / (1u64 << 53) as f64)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len())]
    }
}

/// Data of shape `(outer, c, inner)`: channel `ch` is `offset_ch + scale_ch·U(−1, 1)`.
fn channel_data<T: Float>(rng: &mut Rng, outer: usize, c: usize, inner: usize) -> Vec<T> {
    let params: Vec<(f64, f64)> = (0..c)
        .map(|_| (rng.uniform(-5.0, 5.0), rng.uniform(0.1, 3.0)))
        .collect();
    let mut v = Vec::with_capacity(outer * c * inner);
    for _ in 0..outer {
        for &(o, s) in &params {
            for _ in 0..inner {
                v.push(T::from_f64(o + s * rng.uniform(-1.0, 1.0)));
            }
        }
    }
    v
}

fn vec_uniform<T: Float>(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> Vec<T> {
    (0..n).map(|_| T::from_f64(rng.uniform(lo, hi))).collect()
}

fn gammas<T: Float>(rng: &mut Rng, c: usize) -> Vec<T> {
    (0..c)
        .map(|_| {
            let s = if rng.below(4) == 0 { -1.0 } else { 1.0 };
            T::from_f64(s * rng.uniform(0.5, 1.5))
        })
        .collect()
}

/// Relative tolerance of fast vs naive, per element type.
fn tol<T: Float>() -> f64 {
    match T::DTYPE {
        cnn_kernels::DType::F32 => 1e-4,
        cnn_kernels::DType::F64 => 1e-10,
    }
}

/// `|a − b| ≤ tol·(|b| + scale)` elementwise (NaN only where the other is NaN).
fn assert_close<T: Float>(what: &str, a: &[T], b: &[T], scale: f64) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let t = tol::<T>();
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let (x, y) = (x.to_f64(), y.to_f64());
        assert!(
            (x - y).abs() <= t * (y.abs() + scale),
            "{what}[{i}]: fast {x} vs naive {y} (scale {scale}, tol {t})"
        );
    }
}

fn max_abs<T: Float>(v: &[T]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.to_f64().abs()))
}

/// A batch-norm case: `x` as `(outer, c, inner)` (`inner = 1` for vanilla).
struct BnCase<T> {
    dims: Vec<usize>,
    spatial: bool,
    outer: usize,
    c: usize,
    inner: usize,
    x: Vec<T>,
    dy: Vec<T>,
    gamma: Vec<T>,
    beta: Vec<T>,
    rm: Vec<T>,
    rv: Vec<T>,
    p: BatchNormParams,
}

fn bn_case<T: Float>(rng: &mut Rng, dims: &[usize], mode: BatchNormMode) -> BnCase<T> {
    let spatial = dims.len() == 4;
    let (outer, c, inner) = if spatial {
        (dims[0], dims[1], dims[2] * dims[3])
    } else {
        (dims[0], dims[1], 1)
    };
    let p = BatchNormParams::default()
        .mode(mode)
        .eps(rng.pick(&[1e-5, 1e-3, 0.1]))
        .momentum(rng.pick(&[0.9, 0.0, 1.0, 0.5]));
    BnCase {
        dims: dims.to_vec(),
        spatial,
        outer,
        c,
        inner,
        x: channel_data(rng, outer, c, inner),
        dy: vec_uniform(rng, outer * c * inner, -1.0, 1.0),
        gamma: gammas(rng, c),
        beta: vec_uniform(rng, c, -1.0, 1.0),
        rm: vec_uniform(rng, c, -1.0, 1.0),
        rv: vec_uniform(rng, c, 0.5, 2.0),
        p,
    }
}

type FwdOut<T> = (Tensor<T>, BatchNormCache<T>, Vec<T>, Vec<T>);

fn bn_fwd<T: Float>(k: &BnCase<T>, fast: bool) -> FwdOut<T> {
    let x = TensorView::new(Shape::new(&k.dims).unwrap(), &k.x).unwrap();
    let (mut rm, mut rv) = (k.rm.clone(), k.rv.clone());
    let f = match (fast, k.spatial) {
        (false, false) => naive::batch_norm_forward,
        (false, true) => naive::spatial_batch_norm_forward,
        (true, false) => norm::batch_norm_forward,
        (true, true) => norm::spatial_batch_norm_forward,
    };
    let (y, cache) = f(x, &k.gamma, &k.beta, &mut rm, &mut rv, &k.p).unwrap();
    (y, cache, rm, rv)
}

fn bn_bwd<T: Float>(k: &BnCase<T>, cache: &BatchNormCache<T>, fast: bool) -> NormGrads<T> {
    let x = TensorView::new(Shape::new(&k.dims).unwrap(), &k.x).unwrap();
    let dy = TensorView::new(Shape::new(&k.dims).unwrap(), &k.dy).unwrap();
    let f = match (fast, k.spatial) {
        (false, false) => naive::batch_norm_backward,
        (false, true) => naive::spatial_batch_norm_backward,
        (true, false) => norm::batch_norm_backward,
        (true, true) => norm::spatial_batch_norm_backward,
    };
    f(dy, x, &k.gamma, cache).unwrap()
}

/// Compares fast with naive on one case at the current level.
fn check_bn<T: Float>(k: &BnCase<T>, lvl: Level) {
    let what = format!("{:?} {} {:?} {lvl}", k.dims, T::DTYPE.name(), k.p.mode);
    let (yn, cn, rmn, rvn) = bn_fwd(k, false);
    let (yf, cf, rmf, rvf) = bn_fwd(k, true);
    assert_eq!(cf.mode, k.p.mode);
    let ys = max_abs(yn.data()) + max_abs(&k.beta);
    assert_close(&format!("y {what}"), yf.data(), yn.data(), ys);
    for (ch, is) in cn.inv_std.iter().enumerate() {
        let sd = 1.0 / is.to_f64();
        let (f, n) = (&cf.mean[ch..=ch], &cn.mean[ch..=ch]);
        assert_close(&format!("mean {what}"), f, n, sd);
    }
    assert_close(&format!("inv_std {what}"), &cf.inv_std, &cn.inv_std, 0.0);
    assert_close(&format!("running_mean {what}"), &rmf, &rmn, 1.0);
    assert_close(&format!("running_var {what}"), &rvf, &rvn, 1.0);
    if k.p.mode == BatchNormMode::Test {
        assert_eq!(rmf, k.rm, "test mode leaves running stats");
        assert_eq!(rvf, k.rv);
    }

    // Backward from the naive cache, so both sides see the same statistics.
    let gn = bn_bwd(k, &cn, false);
    let gf = bn_bwd(k, &cn, true);
    let kmax = (0..k.c).fold(0.0f64, |m, ch| {
        m.max((k.gamma[ch].to_f64() * cn.inv_std[ch].to_f64()).abs())
    });
    let dxs = max_abs(gn.dx.data()) + kmax * max_abs(&k.dy);
    assert_close(&format!("dx {what}"), gf.dx.data(), gn.dx.data(), dxs);
    // Sums: scale by the sums of absolute terms.
    let (mut abs_d, mut abs_dx) = (vec![0.0; k.c], vec![0.0; k.c]);
    for o in 0..k.outer {
        for ch in 0..k.c {
            let (m, is) = (cn.mean[ch].to_f64(), cn.inv_std[ch].to_f64());
            for s in 0..k.inner {
                let i = (o * k.c + ch) * k.inner + s;
                let d = k.dy[i].to_f64().abs();
                abs_d[ch] += d;
                abs_dx[ch] += d * ((k.x[i].to_f64() - m) * is).abs();
            }
        }
    }
    for ch in 0..k.c {
        let r = ch..=ch;
        assert_close(
            &format!("dbeta {what}"),
            &gf.dbeta[r.clone()],
            &gn.dbeta[r.clone()],
            abs_d[ch],
        );
        assert_close(
            &format!("dgamma {what}"),
            &gf.dgamma[r.clone()],
            &gn.dgamma[r],
            abs_dx[ch],
        );
    }
}

fn random_bn_dims(rng: &mut Rng, spatial: bool) -> Vec<usize> {
    if spatial {
        let hw = [1, 2, 3, 5, 7, 8, 9, 12, 15, 16, 17, 31, 33];
        vec![
            1 + rng.below(5),
            1 + rng.below(9),
            rng.pick(&hw),
            rng.pick(&hw),
        ]
    } else {
        vec![1 + rng.below(200), 1 + rng.below(150)]
    }
}

fn bn_shapes(rng: &mut Rng) -> Vec<Vec<usize>> {
    let mut v = vec![
        vec![1, 1, 1, 1],
        vec![3, 5, 1, 1],
        vec![2, 3, 70, 70], // H·W above the 4096-value leaf
        vec![1, 2, 64, 65],
        vec![2, 4, 1, 63],
        vec![1, 1],
        vec![1, 7],
        vec![7, 1],
        vec![130, 65],
        vec![64, 64],
        vec![300, 3],
    ];
    for _ in 0..12 {
        v.push(random_bn_dims(rng, true));
    }
    for _ in 0..6 {
        v.push(random_bn_dims(rng, false));
    }
    v
}

fn bn_all<T: Float>(seed: u64) {
    let _g = lock();
    let mut rng = Rng(seed);
    let shapes = bn_shapes(&mut rng);
    for dims in &shapes {
        for mode in [BatchNormMode::Train, BatchNormMode::Test] {
            let k = bn_case::<T>(&mut rng, dims, mode);
            each_level(|l| check_bn(&k, l));
        }
    }
}

#[test]
fn batch_norm_f32_matches_naive() {
    bn_all::<f32>(0x5eed_0001);
}

#[test]
fn batch_norm_f64_matches_naive() {
    bn_all::<f64>(0x5eed_0002);
}

struct GnCase<T> {
    dims: [usize; 4],
    x: Vec<T>,
    dy: Vec<T>,
    gamma: Vec<T>,
    beta: Vec<T>,
    p: GroupNormParams,
}

fn gn_case<T: Float>(rng: &mut Rng, dims: [usize; 4], groups: usize) -> GnCase<T> {
    let [n, c, h, w] = dims;
    let hw = h * w;
    GnCase {
        dims,
        x: channel_data(rng, n, c, hw),
        dy: vec_uniform(rng, n * c * hw, -1.0, 1.0),
        gamma: gammas(rng, c),
        beta: vec_uniform(rng, c, -1.0, 1.0),
        p: GroupNormParams::new(groups).eps(rng.pick(&[1e-5, 1e-3, 0.1])),
    }
}

fn check_gn<T: Float>(k: &GnCase<T>, lvl: Level) {
    let what = format!("{:?} G={} {} {lvl}", k.dims, k.p.groups, T::DTYPE.name());
    let [n, c, h, w] = k.dims;
    let hw = h * w;
    let x = TensorView::new(k.dims, &k.x).unwrap();
    let dy = TensorView::new(k.dims, &k.dy).unwrap();
    let (yn, cn) = naive::group_norm_forward(x, &k.gamma, &k.beta, &k.p).unwrap();
    let (yf, cf) = norm::group_norm_forward(x, &k.gamma, &k.beta, &k.p).unwrap();
    assert_eq!(cf.groups, k.p.groups);
    let ys = max_abs(yn.data()) + max_abs(&k.beta);
    assert_close(&format!("y {what}"), yf.data(), yn.data(), ys);
    for i in 0..cn.mean.len() {
        let sd = 1.0 / cn.inv_std[i].to_f64();
        assert_close(
            &format!("mean {what}"),
            &cf.mean[i..=i],
            &cn.mean[i..=i],
            sd,
        );
    }
    assert_close(&format!("inv_std {what}"), &cf.inv_std, &cn.inv_std, 0.0);

    let gn = naive::group_norm_backward(dy, x, &k.gamma, &cn).unwrap();
    let gf = norm::group_norm_backward(dy, x, &k.gamma, &cn).unwrap();
    let kmax = cn.inv_std.iter().fold(0.0f64, |m, v| m.max(v.to_f64())) * max_abs(&k.gamma);
    let dxs = max_abs(gn.dx.data()) + kmax * max_abs(&k.dy);
    assert_close(&format!("dx {what}"), gf.dx.data(), gn.dx.data(), dxs);
    let (mut abs_d, mut abs_dx) = (vec![0.0; c], vec![0.0; c]);
    let cg = c / k.p.groups;
    for i in 0..n {
        for ch in 0..c {
            let ng = i * k.p.groups + ch / cg;
            let (m, is) = (cn.mean[ng].to_f64(), cn.inv_std[ng].to_f64());
            for s in 0..hw {
                let e = (i * c + ch) * hw + s;
                let d = k.dy[e].to_f64().abs();
                abs_d[ch] += d;
                abs_dx[ch] += d * ((k.x[e].to_f64() - m) * is).abs();
            }
        }
    }
    for ch in 0..c {
        let r = ch..=ch;
        let (fb, nb) = (&gf.dbeta[r.clone()], &gn.dbeta[r.clone()]);
        assert_close(&format!("dbeta {what}"), fb, nb, abs_d[ch]);
        let (fg, ng) = (&gf.dgamma[r.clone()], &gn.dgamma[r]);
        assert_close(&format!("dgamma {what}"), fg, ng, abs_dx[ch]);
    }
}

fn divisors(c: usize) -> Vec<usize> {
    (1..=c).filter(|g| c.is_multiple_of(*g)).collect()
}

fn gn_all<T: Float>(seed: u64) {
    let _g = lock();
    let mut rng = Rng(seed);
    let mut shapes = vec![
        [1, 1, 1, 1],
        [2, 6, 1, 1],
        [2, 4, 70, 70],
        [1, 8, 33, 17],
        [3, 12, 5, 7],
    ];
    let hw = [1, 2, 3, 5, 7, 8, 9, 12, 15, 16, 17, 31];
    for _ in 0..10 {
        let c = rng.pick(&[1, 2, 3, 4, 6, 8, 9, 12]);
        shapes.push([1 + rng.below(4), c, rng.pick(&hw), rng.pick(&hw)]);
    }
    for dims in shapes {
        let c = dims[1];
        let mut gs = vec![1, c];
        if c % 2 == 0 {
            gs.push(2);
        }
        let ds = divisors(c);
        gs.push(rng.pick(&ds));
        gs.sort_unstable();
        gs.dedup();
        for g in gs {
            let k = gn_case::<T>(&mut rng, dims, g);
            each_level(|l| check_gn(&k, l));
        }
    }
}

#[test]
fn group_norm_f32_matches_naive() {
    gn_all::<f32>(0x5eed_0003);
}

#[test]
fn group_norm_f64_matches_naive() {
    gn_all::<f64>(0x5eed_0004);
}

/// The `_into` forms write exactly what the allocating forms return.
#[test]
fn into_forms_match_allocating_forms() {
    let _g = lock();
    let mut rng = Rng(0x5eed_0005);
    for dims in [vec![3, 5, 9, 7], vec![40, 70]] {
        let k = bn_case::<f32>(&mut rng, &dims, BatchNormMode::Train);
        let (y, cache, rm, rv) = bn_fwd(&k, true);
        let x = TensorView::new(Shape::new(&dims).unwrap(), &k.x).unwrap();
        let mut y2 = vec![f32::NAN; k.x.len()];
        let mut c2 = BatchNormCache {
            mode: BatchNormMode::Test,
            mean: vec![0.0; k.c],
            inv_std: vec![0.0; k.c],
        };
        let (mut rm2, mut rv2) = (k.rm.clone(), k.rv.clone());
        let yv = TensorViewMut::new(Shape::new(&dims).unwrap(), &mut y2).unwrap();
        let f = if k.spatial {
            norm::spatial_batch_norm_forward_into
        } else {
            norm::batch_norm_forward_into
        };
        f(x, &k.gamma, &k.beta, &mut rm2, &mut rv2, &k.p, yv, &mut c2).unwrap();
        assert_eq!((&y2[..], &c2, &rm2, &rv2), (y.data(), &cache, &rm, &rv));

        let g = bn_bwd(&k, &cache, true);
        let dy = TensorView::new(Shape::new(&dims).unwrap(), &k.dy).unwrap();
        let mut dx2 = vec![f32::NAN; k.x.len()];
        let (mut dg2, mut db2) = (vec![f32::NAN; k.c], vec![f32::NAN; k.c]);
        let dxv = TensorViewMut::new(Shape::new(&dims).unwrap(), &mut dx2).unwrap();
        let f = if k.spatial {
            norm::spatial_batch_norm_backward_into
        } else {
            norm::batch_norm_backward_into
        };
        f(dy, x, &k.gamma, &cache, dxv, &mut dg2, &mut db2).unwrap();
        assert_eq!((&dx2[..], &dg2, &db2), (g.dx.data(), &g.dgamma, &g.dbeta));
    }

    let k = gn_case::<f64>(&mut rng, [3, 6, 5, 9], 3);
    let x = TensorView::new(k.dims, &k.x).unwrap();
    let dy = TensorView::new(k.dims, &k.dy).unwrap();
    let (y, cache) = norm::group_norm_forward(x, &k.gamma, &k.beta, &k.p).unwrap();
    let mut y2 = vec![f64::NAN; k.x.len()];
    let mut c2 = GroupNormCache {
        groups: 1,
        mean: vec![0.0; 9],
        inv_std: vec![0.0; 9],
    };
    let yv = TensorViewMut::new(k.dims, &mut y2).unwrap();
    norm::group_norm_forward_into(x, &k.gamma, &k.beta, &k.p, yv, &mut c2).unwrap();
    assert_eq!((&y2[..], &c2), (y.data(), &cache));
    let g = norm::group_norm_backward(dy, x, &k.gamma, &cache).unwrap();
    let geo = GroupNormGeometry::new("test", x.shape(), 3, 6, 6).unwrap();
    let mut ws = vec![f64::NAN; norm::group_norm_backward_workspace_len(&geo) + 3];
    let mut dx2 = vec![f64::NAN; k.x.len()];
    let (mut dg2, mut db2) = (vec![f64::NAN; 6], vec![f64::NAN; 6]);
    let dxv = TensorViewMut::new(k.dims, &mut dx2).unwrap();
    norm::group_norm_backward_into(dy, x, &k.gamma, &cache, dxv, &mut dg2, &mut db2, &mut ws)
        .unwrap();
    assert_eq!((&dx2[..], &dg2, &db2), (g.dx.data(), &g.dgamma, &g.dbeta));
}

/// NaN positions of fast and naive agree, and a NaN in a channel/group poisons all of it.
#[test]
fn nan_and_inf_propagate_like_naive() {
    let _g = lock();
    let mut rng = Rng(0x5eed_0006);
    let nan_eq = |what: &str, a: &[f32], b: &[f32]| {
        let (fa, fb): (Vec<bool>, Vec<bool>) = (
            a.iter().map(|v| v.is_nan()).collect(),
            b.iter().map(|v| v.is_nan()).collect(),
        );
        assert_eq!(fa, fb, "{what}: NaN positions differ");
    };
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        each_level(|lvl| {
            // Spatial BN, channel 1 of 3 poisoned at an arbitrary position.
            let dims = [2usize, 3, 9, 11];
            let mut k = bn_case::<f32>(&mut rng, &dims, BatchNormMode::Train);
            let pos = 4 * 99 + rng.below(99); // image 1, channel 1
            k.x[pos] = bad;
            let (yn, cn, rmn, _) = bn_fwd(&k, false);
            let (yf, cf, rmf, _) = bn_fwd(&k, true);
            let what = format!("sbn {bad} {lvl}");
            nan_eq(&what, yf.data(), yn.data());
            nan_eq(&what, &cf.mean, &cn.mean);
            nan_eq(&what, &rmf, &rmn);
            for i in 0..2 {
                for s in 0..99 {
                    assert!(yf.data()[(i * 3 + 1) * 99 + s].is_nan(), "{what}");
                    assert!(!yf.data()[(i * 3) * 99 + s].is_nan(), "{what}");
                }
            }
            let gn = bn_bwd(&k, &cn, false);
            let gf = bn_bwd(&k, &cn, true);
            nan_eq(&what, gf.dx.data(), gn.dx.data());
            nan_eq(&what, &gf.dgamma, &gn.dgamma);

            // Vanilla BN, column 2 of 5.
            let mut k = bn_case::<f32>(&mut rng, &[70, 5], BatchNormMode::Train);
            k.x[rng.below(70) * 5 + 2] = bad;
            let (yn, cn, _, _) = bn_fwd(&k, false);
            let (yf, _, _, _) = bn_fwd(&k, true);
            nan_eq(&format!("bn {bad} {lvl}"), yf.data(), yn.data());
            assert!((0..70).all(|r| yf.data()[r * 5 + 2].is_nan()));
            let gn = bn_bwd(&k, &cn, false);
            let gf = bn_bwd(&k, &cn, true);
            nan_eq(&format!("bn dx {bad} {lvl}"), gf.dx.data(), gn.dx.data());

            // Group norm, group (1, 1) of 2×2.
            let mut k = gn_case::<f32>(&mut rng, [2, 4, 6, 5], 2);
            k.x[(4 + 2) * 30 + rng.below(60)] = bad;
            let x = TensorView::new(k.dims, &k.x).unwrap();
            let (yn, cn) = naive::group_norm_forward(x, &k.gamma, &k.beta, &k.p).unwrap();
            let (yf, _) = norm::group_norm_forward(x, &k.gamma, &k.beta, &k.p).unwrap();
            nan_eq(&format!("gn {bad} {lvl}"), yf.data(), yn.data());
            assert!(yf.data()[180..240].iter().all(|v| v.is_nan()));
            assert!(!yf.data()[..180].iter().any(|v| v.is_nan()));
            let dy = TensorView::new(k.dims, &k.dy).unwrap();
            let gn = naive::group_norm_backward(dy, x, &k.gamma, &cn).unwrap();
            let gf = norm::group_norm_backward(dy, x, &k.gamma, &cn).unwrap();
            nan_eq(&format!("gn dx {bad} {lvl}"), gf.dx.data(), gn.dx.data());
        });
    }
}

fn is_shape_err<T: std::fmt::Debug>(r: Result<T, Error>) -> bool {
    matches!(
        r,
        Err(Error::ShapeMismatch { .. }) | Err(Error::InvalidParameter { .. })
    )
}

/// Wrong buffers and parameters give `Err`, never a panic.
#[test]
fn bad_inputs_are_errors() {
    let _g = lock();
    let dims = [2usize, 3, 4, 5];
    let x = vec![1.0f32; 120];
    let xv = TensorView::new(dims, &x).unwrap();
    let (g3, b3) = (vec![1.0f32; 3], vec![0.0f32; 3]);
    let (mut rm, mut rv) = (vec![0.0f32; 3], vec![1.0f32; 3]);
    let p = BatchNormParams::default();
    let f = norm::spatial_batch_norm_forward::<f32>;
    assert!(is_shape_err(f(xv, &g3[..2], &b3, &mut rm, &mut rv, &p)));
    assert!(is_shape_err(f(xv, &g3, &b3, &mut rm[..2], &mut rv, &p)));
    assert!(is_shape_err(f(
        xv,
        &g3,
        &b3,
        &mut rm,
        &mut rv,
        &p.eps(-1.0)
    )));
    assert!(is_shape_err(f(
        xv,
        &g3,
        &b3,
        &mut rm,
        &mut rv,
        &p.momentum(2.0)
    )));
    let x2 = TensorView::new([6, 20], &x).unwrap();
    assert!(is_shape_err(f(x2, &g3, &b3, &mut rm, &mut rv, &p)));
    assert!(is_shape_err(norm::batch_norm_forward(
        xv, &g3, &b3, &mut rm, &mut rv, &p
    )));

    let mut y = vec![0.0f32; 120];
    let mut cache = BatchNormCache {
        mode: BatchNormMode::Train,
        mean: vec![0.0f32; 3],
        inv_std: vec![0.0f32; 3],
    };
    let fi = norm::spatial_batch_norm_forward_into::<f32>;
    let bad_y = TensorViewMut::new([2, 3, 5, 4], &mut y).unwrap();
    assert!(is_shape_err(fi(
        xv, &g3, &b3, &mut rm, &mut rv, &p, bad_y, &mut cache
    )));
    let mut short = cache.clone();
    short.inv_std.pop();
    let yv = TensorViewMut::new(dims, &mut y).unwrap();
    assert!(is_shape_err(fi(
        xv, &g3, &b3, &mut rm, &mut rv, &p, yv, &mut short
    )));
    let yv = TensorViewMut::new(dims, &mut y).unwrap();
    fi(xv, &g3, &b3, &mut rm, &mut rv, &p, yv, &mut cache).unwrap();

    let dy = TensorView::new(dims, &x).unwrap();
    let dy_bad = TensorView::new([2, 3, 5, 4], &x).unwrap();
    let bwd = norm::spatial_batch_norm_backward::<f32>;
    assert!(is_shape_err(bwd(dy_bad, xv, &g3, &cache)));
    assert!(is_shape_err(bwd(dy, xv, &g3[..1], &cache)));
    assert!(is_shape_err(bwd(dy, xv, &g3, &short)));
    let mut dx = vec![0.0f32; 120];
    let (mut dg, mut db) = (vec![0.0f32; 3], vec![0.0f32; 4]);
    let bi = norm::spatial_batch_norm_backward_into::<f32>;
    let dxv = TensorViewMut::new(dims, &mut dx).unwrap();
    assert!(is_shape_err(bi(dy, xv, &g3, &cache, dxv, &mut dg, &mut db)));
    let dxv = TensorViewMut::new([1, 3, 8, 5], &mut dx).unwrap();
    assert!(is_shape_err(bi(
        dy,
        xv,
        &g3,
        &cache,
        dxv,
        &mut dg,
        &mut db[..3]
    )));

    // Group norm.
    let gp = GroupNormParams::new(2);
    let gf = norm::group_norm_forward::<f32>;
    assert!(is_shape_err(gf(xv, &g3, &b3, &gp)));
    assert!(is_shape_err(gf(xv, &g3, &b3, &GroupNormParams::new(0))));
    assert!(is_shape_err(gf(
        xv,
        &g3,
        &b3,
        &GroupNormParams::new(3).eps(f64::NAN)
    )));
    assert!(is_shape_err(gf(
        xv,
        &g3,
        &b3[..2],
        &GroupNormParams::new(3)
    )));
    let gp = GroupNormParams::new(3);
    let (_, gc) = gf(xv, &g3, &b3, &gp).unwrap();
    let mut gshort = gc.clone();
    gshort.mean.pop();
    let yv = TensorViewMut::new(dims, &mut y).unwrap();
    assert!(is_shape_err(norm::group_norm_forward_into(
        xv,
        &g3,
        &b3,
        &gp,
        yv,
        &mut gshort
    )));
    let gb = norm::group_norm_backward::<f32>;
    assert!(is_shape_err(gb(dy, xv, &g3, &gshort)));
    assert!(is_shape_err(gb(dy_bad, xv, &g3, &gc)));
    let mut wrong_groups = gc.clone();
    wrong_groups.groups = 1;
    assert!(is_shape_err(gb(dy, xv, &g3, &wrong_groups)));
    let geo = GroupNormGeometry::new("test", xv.shape(), 3, 3, 3).unwrap();
    let need = norm::group_norm_backward_workspace_len(&geo);
    assert_eq!(need, 2 * 2 * 3);
    let mut ws = vec![0.0f64; need - 1];
    let mut db = vec![0.0f32; 3];
    let dxv = TensorViewMut::new(dims, &mut dx).unwrap();
    let r = norm::group_norm_backward_into(dy, xv, &g3, &gc, dxv, &mut dg, &mut db, &mut ws);
    assert!(
        matches!(r, Err(Error::WorkspaceTooSmall { required, provided, .. }) if required == need && provided == need - 1)
    );
}
