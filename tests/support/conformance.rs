//! The conformance runner shared by `examples/conformance.rs` and `tests/conformance.rs`
//! (each includes this file with `#[path = "..."] mod conformance;`).
//!
//! A case (format: `tests/data/conformance/FORMAT.md`, a copy of the shared conformance
//! format, with the cases beside it) is run through every registered path of its layer, in `f32`
//! and in `f64`. Paths marked `simd` run once per SIMD level the CPU supports.
//!
//! # Registering a path
//!
//! [`Paths::all`] lists the paths of each layer. A fast path registers with one entry in its
//! layer's list, e.g. for conv:
//!
//! ```text
//! ConvPath { name: "fast", simd: true, forward: conv::forward, backward: conv::backward },
//! ```
//!
//! The function pointers have exactly the signatures of the `naive::` twins.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use cnn_kernels::conv::{self, Conv2dGrads, Conv2dParams};
use cnn_kernels::norm::{
    self, BatchNormCache, BatchNormMode, BatchNormParams, GroupNormCache, GroupNormParams,
    NormGrads,
};
use cnn_kernels::pool::{self, MaxPool2dParams};
use cnn_kernels::simd;
use cnn_kernels::{DType, Float, Result, Shape, Tensor, TensorView};
use serde_json::Value;

type KResult<T> = cnn_kernels::Result<T>;

/// `conv::forward` and its twins.
pub type ConvForward<T> =
    fn(TensorView<'_, T>, TensorView<'_, T>, Option<&[T]>, &Conv2dParams) -> KResult<Tensor<T>>;
/// `conv::backward` and its twins.
pub type ConvBackward<T> = fn(
    TensorView<'_, T>,
    TensorView<'_, T>,
    TensorView<'_, T>,
    &Conv2dParams,
) -> KResult<Conv2dGrads<T>>;
/// `pool::forward` and its twins.
pub type PoolForward<T> = fn(TensorView<'_, T>, &MaxPool2dParams) -> KResult<Tensor<T>>;
/// `pool::backward` and its twins.
pub type PoolBackward<T> =
    fn(TensorView<'_, T>, TensorView<'_, T>, &MaxPool2dParams) -> KResult<Tensor<T>>;
/// `norm::batch_norm_forward`, `norm::spatial_batch_norm_forward` and their twins.
pub type BnForward<T> = fn(
    TensorView<'_, T>,
    &[T],
    &[T],
    &mut [T],
    &mut [T],
    &BatchNormParams,
) -> KResult<(Tensor<T>, BatchNormCache<T>)>;
/// `norm::batch_norm_backward`, `norm::spatial_batch_norm_backward` and their twins.
pub type BnBackward<T> =
    fn(TensorView<'_, T>, TensorView<'_, T>, &[T], &BatchNormCache<T>) -> KResult<NormGrads<T>>;
/// `norm::group_norm_forward` and its twin.
pub type GnForward<T> =
    fn(TensorView<'_, T>, &[T], &[T], &GroupNormParams) -> KResult<(Tensor<T>, GroupNormCache<T>)>;
/// `norm::group_norm_backward` and its twin.
pub type GnBackward<T> =
    fn(TensorView<'_, T>, TensorView<'_, T>, &[T], &GroupNormCache<T>) -> KResult<NormGrads<T>>;

/// One conv implementation.
pub struct ConvPath<T> {
    /// Name in reports (`naive`, `fast`).
    pub name: &'static str,
    /// Run once per supported SIMD level.
    pub simd: bool,
    /// Forward.
    pub forward: ConvForward<T>,
    /// Backward.
    pub backward: ConvBackward<T>,
}

/// One max-pool implementation.
pub struct PoolPath<T> {
    /// Name in reports.
    pub name: &'static str,
    /// Run once per supported SIMD level.
    pub simd: bool,
    /// Forward.
    pub forward: PoolForward<T>,
    /// Backward.
    pub backward: PoolBackward<T>,
}

/// One implementation of the normalisation layers.
pub struct NormPath<T> {
    /// Name in reports.
    pub name: &'static str,
    /// Run once per supported SIMD level.
    pub simd: bool,
    /// Batch norm on `(N, D)`, forward.
    pub batch_norm_forward: BnForward<T>,
    /// Batch norm on `(N, D)`, backward.
    pub batch_norm_backward: BnBackward<T>,
    /// Spatial batch norm, forward.
    pub spatial_batch_norm_forward: BnForward<T>,
    /// Spatial batch norm, backward.
    pub spatial_batch_norm_backward: BnBackward<T>,
    /// Group norm, forward.
    pub group_norm_forward: GnForward<T>,
    /// Group norm, backward.
    pub group_norm_backward: GnBackward<T>,
}

/// Every path of every layer, for one element type.
pub struct Paths<T> {
    /// Conv paths.
    pub conv: Vec<ConvPath<T>>,
    /// Max-pool paths.
    pub pool: Vec<PoolPath<T>>,
    /// Normalisation paths.
    pub norm: Vec<NormPath<T>>,
}

impl<T: Float> Paths<T> {
    /// Every path the crate has. A fast path registers by adding one entry to its layer's
    /// list below.
    pub fn all() -> Self {
        Paths {
            conv: vec![
                ConvPath {
                    name: "naive",
                    simd: false,
                    forward: conv::naive::forward,
                    backward: conv::naive::backward,
                },
                ConvPath {
                    name: "fast",
                    simd: true,
                    forward: conv::forward,
                    backward: conv::backward,
                },
            ],
            pool: vec![
                PoolPath {
                    name: "naive",
                    simd: false,
                    forward: pool::naive::forward,
                    backward: pool::naive::backward,
                },
                PoolPath {
                    name: "fast",
                    simd: true,
                    forward: pool::forward,
                    backward: pool::backward,
                },
                PoolPath {
                    name: "fast-indices",
                    simd: true,
                    forward: pool_forward_with_indices,
                    backward: pool_backward_with_indices,
                },
            ],
            norm: vec![
                NormPath {
                    name: "naive",
                    simd: false,
                    batch_norm_forward: norm::naive::batch_norm_forward,
                    batch_norm_backward: norm::naive::batch_norm_backward,
                    spatial_batch_norm_forward: norm::naive::spatial_batch_norm_forward,
                    spatial_batch_norm_backward: norm::naive::spatial_batch_norm_backward,
                    group_norm_forward: norm::naive::group_norm_forward,
                    group_norm_backward: norm::naive::group_norm_backward,
                },
                NormPath {
                    name: "fast",
                    simd: true,
                    batch_norm_forward: norm::batch_norm_forward,
                    batch_norm_backward: norm::batch_norm_backward,
                    spatial_batch_norm_forward: norm::spatial_batch_norm_forward,
                    spatial_batch_norm_backward: norm::spatial_batch_norm_backward,
                    group_norm_forward: norm::group_norm_forward,
                    group_norm_backward: norm::group_norm_backward,
                },
            ],
        }
    }
}

/// The paths for both element types.
pub struct Registry {
    /// `f32` paths.
    pub f32: Paths<f32>,
    /// `f64` paths.
    pub f64: Paths<f64>,
}

impl Registry {
    /// Every path the crate has, in both element types.
    pub fn all() -> Self {
        Registry {
            f32: Paths::all(),
            f64: Paths::all(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Cases

/// A tensor of a case: shape and row-major data.
#[derive(Debug, Clone)]
pub struct Data {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Elements.
    pub data: Vec<f64>,
}

/// The operation of a case with its parsed parameters.
#[derive(Debug, Clone)]
enum Op {
    Conv(Conv2dParams),
    Pool(MaxPool2dParams),
    BatchNorm { spatial: bool, p: BatchNormParams },
    GroupNorm(GroupNormParams),
}

/// A parsed case.
#[derive(Debug, Clone)]
struct Case {
    name: String,
    op: Op,
    inputs: BTreeMap<String, Data>,
    expected: Option<BTreeMap<String, Data>>,
    expect_error: Option<String>,
    /// `[f32, f64]`.
    tolerance: [f64; 2],
}

fn parse_data(what: &str, v: &Value) -> Result<Data, String> {
    let shape = v
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{what}: no \"shape\" array"))?
        .iter()
        .map(|d| d.as_u64().map(|d| d as usize))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| format!("{what}: shape is not a list of sizes"))?;
    let data = v
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{what}: no \"data\" array"))?
        .iter()
        .map(Value::as_f64)
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| format!("{what}: data is not a list of numbers"))?;
    if Shape::new(&shape).is_none() {
        return Err(format!("{what}: unsupported rank {}", shape.len()));
    }
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if n != Some(data.len()) {
        return Err(format!(
            "{what}: shape {shape:?} does not hold {} values",
            data.len()
        ));
    }
    Ok(Data { shape, data })
}

fn parse_tensors(what: &str, v: &Value) -> Result<BTreeMap<String, Data>, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("\"{what}\" is not an object"))?;
    obj.iter()
        .map(|(k, t)| Ok((k.clone(), parse_data(&format!("{what}.{k}"), t)?)))
        .collect()
}

/// Reads parameters from a JSON object, refusing keys it was not asked about.
struct Params<'a> {
    obj: &'a serde_json::Map<String, Value>,
    used: Vec<&'static str>,
}

impl<'a> Params<'a> {
    fn new(v: &'a Value) -> Result<Self, String> {
        let obj = v
            .as_object()
            .ok_or_else(|| "\"params\" is not an object".to_string())?;
        Ok(Params { obj, used: vec![] })
    }
    fn get(&mut self, key: &'static str) -> Result<&'a Value, String> {
        self.used.push(key);
        self.obj
            .get(key)
            .ok_or_else(|| format!("parameter \"{key}\" is missing"))
    }
    fn usize(&mut self, key: &'static str) -> Result<usize, String> {
        self.get(key)?
            .as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| format!("parameter \"{key}\" is not a non-negative integer"))
    }
    fn pair(&mut self, key: &'static str) -> Result<[usize; 2], String> {
        let v = self.get(key)?;
        match v.as_array().map(|a| a.iter().map(Value::as_u64).collect()) {
            Some(Some::<Vec<u64>>(p)) if p.len() == 2 => Ok([p[0] as usize, p[1] as usize]),
            _ => Err(format!("parameter \"{key}\" is not a pair of sizes: {v}")),
        }
    }
    fn f64(&mut self, key: &'static str) -> Result<f64, String> {
        self.get(key)?
            .as_f64()
            .ok_or_else(|| format!("parameter \"{key}\" is not a number"))
    }
    fn mode(&mut self) -> Result<BatchNormMode, String> {
        match self.get("mode")?.as_str() {
            Some("train") => Ok(BatchNormMode::Train),
            Some("test") => Ok(BatchNormMode::Test),
            other => Err(format!("unsupported mode {other:?}")),
        }
    }
    /// Errors on any key that was not read.
    fn finish(self) -> Result<(), String> {
        for k in self.obj.keys() {
            if !self.used.contains(&k.as_str()) {
                return Err(format!("unsupported parameter \"{k}\""));
            }
        }
        Ok(())
    }
}

fn parse_op(op: &str, params: &Value) -> Result<Op, String> {
    let mut p = Params::new(params)?;
    let op = match op {
        "conv2d" => Op::Conv(Conv2dParams {
            stride: p.pair("stride")?,
            padding: p.pair("pad")?,
            dilation: p.pair("dilation")?,
            groups: p.usize("groups")?,
        }),
        "max_pool2d" => Op::Pool(MaxPool2dParams {
            kernel: p.pair("kernel")?,
            stride: p.pair("stride")?,
            padding: p.pair("pad")?,
        }),
        "batchnorm" | "spatial_batchnorm" => Op::BatchNorm {
            spatial: op == "spatial_batchnorm",
            p: BatchNormParams {
                mode: p.mode()?,
                eps: p.f64("eps")?,
                momentum: p.f64("momentum")?,
            },
        },
        "spatial_groupnorm" => Op::GroupNorm(GroupNormParams {
            groups: p.usize("groups")?,
            eps: p.f64("eps")?,
        }),
        other => return Err(format!("unknown op \"{other}\"")),
    };
    p.finish()?;
    Ok(op)
}

/// Input names each op requires and accepts.
fn input_names(op: &Op) -> (&'static [&'static str], &'static [&'static str]) {
    match op {
        Op::Conv(_) => (&["x", "w"], &["b", "dout"]),
        Op::Pool(_) => (&["x"], &["dout"]),
        Op::BatchNorm { .. } => (
            &["x", "gamma", "beta", "running_mean", "running_var"],
            &["dout"],
        ),
        Op::GroupNorm(_) => (&["x", "gamma", "beta"], &["dout"]),
    }
}

fn parse_case(v: &Value) -> Result<Case, String> {
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .ok_or("no \"name\"")?
        .to_string();
    let op_name = v.get("op").and_then(Value::as_str).ok_or("no \"op\"")?;
    let op = parse_op(op_name, v.get("params").unwrap_or(&Value::Null))?;
    let inputs = parse_tensors("inputs", v.get("inputs").ok_or("no \"inputs\"")?)?;
    let (required, optional) = input_names(&op);
    for r in required {
        if !inputs.contains_key(*r) {
            return Err(format!("input \"{r}\" is missing"));
        }
    }
    for k in inputs.keys() {
        if !required.contains(&k.as_str()) && !optional.contains(&k.as_str()) {
            return Err(format!("unsupported input \"{k}\" for {op_name}"));
        }
    }
    let expected = v
        .get("expected")
        .map(|e| parse_tensors("expected", e))
        .transpose()?;
    let expect_error = v.get("expect_error").map(|e| {
        e.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| e.to_string())
    });
    let tolerance = match (&expected, &expect_error) {
        (Some(e), None) => {
            if e.is_empty() {
                return Err("\"expected\" is empty".into());
            }
            let t = v.get("tolerance").ok_or("no \"tolerance\"")?;
            let get = |k: &str| {
                t.get(k)
                    .and_then(Value::as_f64)
                    .ok_or_else(|| format!("no tolerance for {k}"))
            };
            [get("f32")?, get("f64")?]
        }
        (None, Some(_)) => [0.0; 2],
        _ => return Err("a case needs exactly one of \"expected\" and \"expect_error\"".into()),
    };
    Ok(Case {
        name,
        op,
        inputs,
        expected,
        expect_error,
        tolerance,
    })
}

// ---------------------------------------------------------------------------------------
// Running

/// Outputs of one run, by name (`out`, `dx`, …): shape and values widened to `f64`.
type Outputs = BTreeMap<&'static str, Data>;

/// What one path did with one case in one element type.
#[derive(Debug)]
enum Outcome {
    Outputs(Outputs),
    Rejected(String),
    Panicked(String),
}

struct Inputs<T> {
    map: BTreeMap<String, (Vec<usize>, Vec<T>)>,
}

impl<T: Float> Inputs<T> {
    fn new(case: &Case) -> Self {
        let map = case
            .inputs
            .iter()
            .map(|(k, d)| {
                let v = d.data.iter().map(|&x| T::from_f64(x)).collect();
                (k.clone(), (d.shape.clone(), v))
            })
            .collect();
        Inputs { map }
    }
    fn view(&self, k: &str) -> Option<TensorView<'_, T>> {
        let (s, d) = self.map.get(k)?;
        // Lengths were checked when the case was parsed.
        Some(TensorView::new(Shape::new(s).expect("rank checked"), d).expect("length checked"))
    }
    fn vec(&self, k: &str) -> Option<&[T]> {
        self.map.get(k).map(|(_, d)| d.as_slice())
    }
}

fn widen<T: Float>(shape: &[usize], data: &[T]) -> Data {
    Data {
        shape: shape.to_vec(),
        data: data.iter().map(|v| v.to_f64()).collect(),
    }
}

fn tensor<T: Float>(t: &Tensor<T>) -> Data {
    widen(t.shape().dims(), t.data())
}

fn vector<T: Float>(v: &[T]) -> Data {
    widen(&[v.len()], v)
}

fn insert_norm_grads<T: Float>(o: &mut Outputs, g: &NormGrads<T>) {
    o.insert("dx", tensor(&g.dx));
    o.insert("dgamma", vector(&g.dgamma));
    o.insert("dbeta", vector(&g.dbeta));
}

fn run_conv<T: Float>(c: &ConvPath<T>, p: &Conv2dParams, i: &Inputs<T>) -> KResult<Outputs> {
    let mut o = Outputs::new();
    let (x, w) = (i.view("x").unwrap(), i.view("w").unwrap());
    o.insert("out", tensor(&(c.forward)(x, w, i.vec("b"), p)?));
    if let Some(dout) = i.view("dout") {
        let g = (c.backward)(dout, x, w, p)?;
        o.insert("dx", tensor(&g.dx));
        o.insert("dw", tensor(&g.dw));
        o.insert("db", vector(&g.db));
    }
    Ok(o)
}

fn run_pool<T: Float>(c: &PoolPath<T>, p: &MaxPool2dParams, i: &Inputs<T>) -> KResult<Outputs> {
    let mut o = Outputs::new();
    let x = i.view("x").unwrap();
    o.insert("out", tensor(&(c.forward)(x, p)?));
    if let Some(dout) = i.view("dout") {
        o.insert("dx", tensor(&(c.backward)(dout, x, p)?));
    }
    Ok(o)
}

fn run_bn<T: Float>(
    c: &NormPath<T>,
    spatial: bool,
    p: &BatchNormParams,
    i: &Inputs<T>,
) -> KResult<Outputs> {
    let (fwd, bwd) = if spatial {
        (c.spatial_batch_norm_forward, c.spatial_batch_norm_backward)
    } else {
        (c.batch_norm_forward, c.batch_norm_backward)
    };
    let mut o = Outputs::new();
    let x = i.view("x").unwrap();
    let (gamma, beta) = (i.vec("gamma").unwrap(), i.vec("beta").unwrap());
    let mut rm = i.vec("running_mean").unwrap().to_vec();
    let mut rv = i.vec("running_var").unwrap().to_vec();
    let (y, cache) = fwd(x, gamma, beta, &mut rm, &mut rv, p)?;
    o.insert("out", tensor(&y));
    o.insert("running_mean", vector(&rm));
    o.insert("running_var", vector(&rv));
    if let Some(dout) = i.view("dout") {
        insert_norm_grads(&mut o, &bwd(dout, x, gamma, &cache)?);
    }
    Ok(o)
}

fn run_gn<T: Float>(c: &NormPath<T>, p: &GroupNormParams, i: &Inputs<T>) -> KResult<Outputs> {
    let mut o = Outputs::new();
    let x = i.view("x").unwrap();
    let (gamma, beta) = (i.vec("gamma").unwrap(), i.vec("beta").unwrap());
    let (y, cache) = (c.group_norm_forward)(x, gamma, beta, p)?;
    o.insert("out", tensor(&y));
    if let Some(dout) = i.view("dout") {
        insert_norm_grads(&mut o, &(c.group_norm_backward)(dout, x, gamma, &cache)?);
    }
    Ok(o)
}

fn panic_message(e: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = e.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = e.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Serialises SIMD-level sweeps: the level is process-wide, and `cargo test` runs tests on
/// several threads.
pub static LEVEL_SWEEP: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `f` once, or, if `per_level`, once per SIMD level the CPU supports up to the level
/// active now (so `CNN_KERNELS_SIMD` caps the sweep), labelling each run.
fn sweep(
    name: &str,
    dtype: DType,
    per_level: bool,
    f: &dyn Fn() -> KResult<Outputs>,
    out: &mut Vec<(String, Outcome)>,
) {
    let run = || match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(o)) => Outcome::Outputs(o),
        Ok(Err(e)) => Outcome::Rejected(e.to_string()),
        Err(p) => Outcome::Panicked(panic_message(p)),
    };
    if !per_level {
        out.push((format!("{name}/{}", dtype.name()), run()));
        return;
    }
    // A panic inside `run` is caught, so the lock is never poisoned by this function.
    let _guard = LEVEL_SWEEP.lock().unwrap_or_else(|e| e.into_inner());
    let before = simd::active_level();
    for level in simd::supported_levels()
        .into_iter()
        .filter(|&l| l <= before)
    {
        simd::set_max_level(level);
        let label = format!("{name}@{}/{}", level.name(), dtype.name());
        out.push((label, run()));
    }
    simd::set_max_level(before);
}

fn run_dtype<T: Float>(case: &Case, paths: &Paths<T>, out: &mut Vec<(String, Outcome)>) {
    let i = Inputs::<T>::new(case);
    let dt = T::DTYPE;
    match &case.op {
        Op::Conv(p) => {
            for c in &paths.conv {
                sweep(c.name, dt, c.simd, &|| run_conv(c, p, &i), out);
            }
        }
        Op::Pool(p) => {
            for c in &paths.pool {
                sweep(c.name, dt, c.simd, &|| run_pool(c, p, &i), out);
            }
        }
        Op::BatchNorm { spatial, p } => {
            for c in &paths.norm {
                sweep(c.name, dt, c.simd, &|| run_bn(c, *spatial, p, &i), out);
            }
        }
        Op::GroupNorm(p) => {
            for c in &paths.norm {
                sweep(c.name, dt, c.simd, &|| run_gn(c, p, &i), out);
            }
        }
    }
}

/// `max_i |a_i − e_i| / max(1, max_i |e_i|)`; infinite if any difference is NaN.
pub fn error_metric(a: &[f64], e: &[f64]) -> f64 {
    let scale = e.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let mut worst = 0.0f64;
    for (a, e) in a.iter().zip(e) {
        let d = (a - e).abs();
        if d.is_nan() {
            return f64::INFINITY;
        }
        worst = worst.max(d);
    }
    worst / scale
}

/// The verdict on one case.
#[derive(Debug, Clone)]
pub struct CaseReport {
    /// Case name (or file name if it could not be read).
    pub name: String,
    /// Whether every path and dtype passed.
    pub passed: bool,
    /// One line: verdict, name and the worst error per path and dtype.
    pub line: String,
    /// Why it failed, one entry per problem.
    pub problems: Vec<String>,
}

impl CaseReport {
    fn broken(name: String, why: String) -> Self {
        CaseReport {
            line: format!("FAIL {name}: {why}"),
            name,
            passed: false,
            problems: vec![why],
        }
    }
}

/// Runs one case (as parsed JSON) through every path of `reg`.
pub fn run_case(v: &Value, reg: &Registry) -> CaseReport {
    let fallback = v
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>")
        .to_string();
    let case = match parse_case(v) {
        Ok(c) => c,
        Err(why) => return CaseReport::broken(fallback, why),
    };
    let mut runs = Vec::new();
    run_dtype(&case, &reg.f32, &mut runs);
    run_dtype(&case, &reg.f64, &mut runs);
    let mut problems = Vec::new();
    let mut cells = Vec::new();
    let mut first_error = None;
    for (label, outcome) in &runs {
        let tol = if label.ends_with("f32") {
            case.tolerance[0]
        } else {
            case.tolerance[1]
        };
        match (outcome, &case.expected) {
            (Outcome::Panicked(m), _) => {
                problems.push(format!("{label}: panicked: {m}"));
                cells.push(format!("{label} PANIC"));
            }
            (Outcome::Rejected(m), None) => {
                cells.push(format!("{label} Err"));
                first_error.get_or_insert_with(|| m.clone());
            }
            (Outcome::Rejected(m), Some(_)) => {
                problems.push(format!("{label}: returned an error: {m}"));
                cells.push(format!("{label} Err"));
            }
            (Outcome::Outputs(_), None) => {
                problems.push(format!(
                    "{label}: returned outputs, expected an error ({})",
                    case.expect_error.as_deref().unwrap_or("")
                ));
                cells.push(format!("{label} Ok"));
            }
            (Outcome::Outputs(got), Some(expected)) => {
                let mut worst = 0.0f64;
                for (k, e) in expected {
                    let Some(a) = got.get(k.as_str()) else {
                        problems.push(format!("{label}: produced no \"{k}\""));
                        worst = f64::INFINITY;
                        continue;
                    };
                    if a.shape != e.shape {
                        problems.push(format!(
                            "{label}: {k} has shape {:?}, expected {:?}",
                            a.shape, e.shape
                        ));
                        worst = f64::INFINITY;
                        continue;
                    }
                    let err = error_metric(&a.data, &e.data);
                    if err.is_nan() || err > tol {
                        problems.push(format!("{label}: {k} error {err:.3e} > tolerance {tol:e}"));
                    }
                    worst = worst.max(err);
                }
                cells.push(format!("{label} {worst:.1e}"));
            }
        }
    }
    let passed = problems.is_empty();
    let mut line = format!("{} {:<28}", if passed { "PASS" } else { "FAIL" }, case.name);
    for c in &cells {
        let _ = write!(line, "  {c}");
    }
    if let Some(m) = first_error {
        let _ = write!(line, "  ({m})");
    }
    CaseReport {
        name: case.name,
        passed,
        line,
        problems,
    }
}

/// The `*.json` files of `path` (sorted) if it is a directory, else `path` itself.
pub fn case_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        Ok(files)
    } else if path.is_file() {
        Ok(vec![path.to_path_buf()])
    } else {
        Err(format!("{}: no such file or directory", path.display()))
    }
}

/// Runs one case file.
pub fn run_file(path: &Path, reg: &Registry) -> CaseReport {
    let name = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return CaseReport::broken(name, e.to_string()),
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(v) => run_case(&v, reg),
        Err(e) => CaseReport::broken(name, format!("invalid JSON: {e}")),
    }
}

/// Counts of a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed (including unreadable files and missing paths).
    pub failed: usize,
}

impl Summary {
    /// `N passed, N failed`.
    pub fn line(&self) -> String {
        format!("{} passed, {} failed", self.passed, self.failed)
    }
}

/// Runs every case under `paths` (files or directories), calling `report` on each verdict
/// as it comes.
pub fn run_all(paths: &[PathBuf], reg: &Registry, report: &mut dyn FnMut(&CaseReport)) -> Summary {
    let mut s = Summary::default();
    let mut tally = |r: CaseReport| {
        report(&r);
        if r.passed {
            s.passed += 1;
        } else {
            s.failed += 1;
        }
    };
    for p in paths {
        match case_files(p) {
            Ok(files) => files.iter().for_each(|f| tally(run_file(f, reg))),
            Err(why) => tally(CaseReport::broken(p.display().to_string(), why)),
        }
    }
    s
}

/// The fast max-pool path that records window indices in the forward and scatters through
/// them in the backward (the training-mode pair).
fn pool_forward_with_indices<T: Float>(
    x: TensorView<'_, T>,
    p: &MaxPool2dParams,
) -> Result<Tensor<T>> {
    pool::forward_with_indices(x, p).map(|(out, _)| out)
}

/// See [`pool_forward_with_indices`].
fn pool_backward_with_indices<T: Float>(
    dout: TensorView<'_, T>,
    x: TensorView<'_, T>,
    p: &MaxPool2dParams,
) -> Result<Tensor<T>> {
    let (_, indices) = pool::forward_with_indices(x, p)?;
    pool::backward_with_indices(dout, &indices, p)
}
