//! Runs every conformance case of `tests/data/conformance/` through every registered path
//! in f32 and f64, and checks that the runner itself fails what it should fail.

#[path = "support/conformance.rs"]
mod conformance;

use std::path::{Path, PathBuf};

use cnn_kernels::conv::{Conv2dGrads, Conv2dParams};
use cnn_kernels::pool::{self, MaxPool2dParams};
use cnn_kernels::{simd, Float, Tensor, TensorView};
use conformance::{run_all, run_case, PoolPath, Registry};
use serde_json::Value;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/conformance")
}

fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(data_dir().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn every_case_passes_on_every_path() {
    let files = conformance::case_files(&data_dir()).unwrap();
    assert!(files.len() >= 27, "only {} cases found", files.len());
    let mut failures = Vec::new();
    let summary = run_all(&[data_dir()], &Registry::all(), &mut |r| {
        println!("{}", r.line);
        if !r.passed {
            failures.push(format!("{}: {:?}", r.name, r.problems));
        }
    });
    println!("{}", summary.line());
    assert!(failures.is_empty(), "failed cases: {failures:#?}");
    assert_eq!(summary.passed, files.len());
}

#[test]
fn error_metric_follows_the_format() {
    // Scaled by max(1, max |e|).
    assert_eq!(conformance::error_metric(&[1.0, 1.0], &[1.0, 0.5]), 0.5);
    assert_eq!(conformance::error_metric(&[10.0, 2.0], &[8.0, 2.0]), 0.25);
    assert_eq!(
        conformance::error_metric(&[f64::NAN], &[0.0]),
        f64::INFINITY
    );
}

#[test]
fn a_wrong_expectation_fails() {
    let mut v = load("conv_basic_s1_p1.json");
    let d = &mut v["expected"]["dw"]["data"][3];
    *d = Value::from(d.as_f64().unwrap() + 1e-2);
    let r = run_case(&v, &Registry::all());
    assert!(!r.passed, "{}", r.line);
    assert!(r.problems.iter().any(|p| p.contains("dw error")), "{r:?}");
}

#[test]
fn an_unknown_op_or_parameter_fails() {
    let mut v = load("pool_2x2_s2.json");
    v["op"] = Value::from("avg_pool2d");
    let r = run_case(&v, &Registry::all());
    assert!(
        !r.passed && r.line.contains("unknown op \"avg_pool2d\""),
        "{r:?}"
    );

    let mut v = load("pool_2x2_s2.json");
    v["params"]["ceil_mode"] = Value::from(true);
    let r = run_case(&v, &Registry::all());
    assert!(!r.passed && r.line.contains("ceil_mode"), "{r:?}");

    let mut v = load("bn_vanilla_train.json");
    v["params"]["mode"] = Value::from("eval");
    assert!(!run_case(&v, &Registry::all()).passed);
}

#[test]
fn an_expected_error_that_is_not_raised_fails() {
    let mut v = load("conv_basic_s1_p1.json");
    let obj = v.as_object_mut().unwrap();
    obj.remove("expected");
    obj.insert("expect_error".into(), Value::from("made up"));
    let r = run_case(&v, &Registry::all());
    assert!(!r.passed, "{}", r.line);
    assert!(r.problems.iter().all(|p| p.contains("returned outputs")));
    // An expected error that is raised passes, in both dtypes.
    let r = run_case(&load("err_conv_stride0.json"), &Registry::all());
    assert!(r.passed, "{r:?}");
    assert!(r.line.contains("naive/f32 Err") && r.line.contains("naive/f64 Err"));
}

fn panicking_forward<T: Float>(
    _: TensorView<'_, T>,
    _: TensorView<'_, T>,
    _: Option<&[T]>,
    _: &Conv2dParams,
) -> cnn_kernels::Result<Tensor<T>> {
    panic!("deliberate panic")
}

fn panicking_backward<T: Float>(
    _: TensorView<'_, T>,
    _: TensorView<'_, T>,
    _: TensorView<'_, T>,
    _: &Conv2dParams,
) -> cnn_kernels::Result<Conv2dGrads<T>> {
    panic!("deliberate panic")
}

#[test]
fn a_panicking_path_fails_even_on_an_error_case() {
    let mut reg = Registry::all();
    reg.f32.conv[0].forward = panicking_forward;
    reg.f64.conv[0].backward = panicking_backward;
    let r = run_case(&load("err_conv_stride0.json"), &reg);
    assert!(!r.passed);
    assert!(r.problems[0].contains("naive/f32: panicked: deliberate panic"));
    let r = run_case(&load("conv_pointwise.json"), &reg);
    assert_eq!(r.problems.len(), 2, "{r:?}");
}

#[test]
fn missing_files_and_bad_json_fail() {
    let reg = Registry::all();
    let s = run_all(&[data_dir().join("no_such_case.json")], &reg, &mut |_| {});
    assert_eq!(s.line(), "0 passed, 1 failed");
    let r = run_case(&serde_json::json!({"name": "x", "op": "conv2d"}), &reg);
    assert!(!r.passed);
}

static SEEN_LEVELS: std::sync::Mutex<Vec<simd::Level>> = std::sync::Mutex::new(Vec::new());

/// The naive pool forward, noting the SIMD level it ran at.
fn level_noting_forward(
    x: TensorView<'_, f64>,
    p: &MaxPool2dParams,
) -> cnn_kernels::Result<Tensor<f64>> {
    SEEN_LEVELS.lock().unwrap().push(simd::active_level());
    pool::naive::forward(x, p)
}

#[test]
fn simd_paths_run_at_every_supported_level() {
    let mut reg = Registry::all();
    reg.f64.pool.push(PoolPath {
        name: "swept",
        simd: true,
        forward: level_noting_forward,
        backward: pool::naive::backward,
    });
    // Other tests of this binary sweep the (process-wide) level too; read it between sweeps.
    let level_between_sweeps = || {
        let _guard = conformance::LEVEL_SWEEP
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        simd::active_level()
    };
    let before = level_between_sweeps();
    let r = run_case(&load("pool_3x3_s2_p1.json"), &reg);
    assert!(r.passed, "{r:?}");
    let want: Vec<_> = simd::supported_levels()
        .into_iter()
        .filter(|&l| l <= before)
        .collect();
    assert_eq!(*SEEN_LEVELS.lock().unwrap(), want);
    for l in &want {
        assert!(
            r.line.contains(&format!("swept@{}/f64", l.name())),
            "{}",
            r.line
        );
    }
    assert_eq!(level_between_sweeps(), before);
}
