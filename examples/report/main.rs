//! The benchmark report: `cargo run --release --example report [-- options]`.
//!
//! Runs every benchmark case (the table in `benches/support/cases.rs`, shared with the
//! criterion benches) forward and backward, and prints per case, direction and thread
//! count: the naive kernel's median ms (a dash where one pass is estimated above 1 s), the
//! fast kernel's median ms (a dash while that layer's fast path is not merged), the
//! speedup, the fast kernel's throughput (GFLOP/s for conv, GB/s for the memory-bound
//! layers) and the max error of fast against naive on a smaller instance of the same layer:
//! per output tensor `max |fast − naive| / max(1, max |naive|)`, the maximum over outputs.
//! `--help` lists the options (`--threads`, `--filter`, `--dtype`, `--csv`, `--quick`,
//! `--batch`, `--pin`, `--fast-only`).

#[allow(dead_code)]
#[path = "../../benches/support/cases.rs"]
mod cases;

mod args;
mod measure;
mod output;
mod run;

use std::process::ExitCode;

use cnn_kernels::{simd, DType};

use args::Args;
use output::{emit, table_header, Row, CSV_HEADER};

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

fn header(args: &Args, threads: &[usize]) -> Vec<String> {
    let threads: Vec<String> = threads.iter().map(|t| t.to_string()).collect();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    vec![
        format!(
            "cnn-kernels {} report · dtype {} · threads {} · SIMD {} (detected {}) · GEMM {}",
            env!("CARGO_PKG_VERSION"),
            if args.f64 { "f64" } else { "f32" },
            threads.join(","),
            simd::active_level(),
            simd::detected_level(),
            cnn_kernels::conv::gemm_backend(if args.f64 { DType::F64 } else { DType::F32 }),
        ),
        format!(
            "cpu: {} · {cores} logical cores · pools: {} · batch: {}",
            cpu_model(),
            if args.pin {
                "pinned (threads::pinned_pool)"
            } else {
                "unpinned"
            },
            args.batch
                .map_or("each case's own".to_string(), |n| n.to_string()),
        ),
        if args.fast_only {
            "ms: medians after warm-up · naive not timed (--fast-only) · \
             max_err: fast vs naive on a smaller instance"
                .to_string()
        } else {
            format!(
                "ms: medians after warm-up · naive timed where one pass is estimated under {} s · \
                 max_err: fast vs naive on a smaller instance",
                run::naive_limit_s(args.quick)
            )
        },
    ]
}

fn list_cases() {
    emit("case,op,x,params");
    for c in cases::CASES {
        let x: Vec<String> = c.x.iter().map(|d| d.to_string()).collect();
        let params = match c.layer {
            cases::Layer::Conv { w, p } => format!(
                "w={}x{}x{}x{} s={} p={} d={} g={}",
                w[0], w[1], w[2], w[3], p.stride[0], p.padding[0], p.dilation[0], p.groups
            ),
            cases::Layer::Pool(p) => {
                format!("k={} s={} p={}", p.kernel[0], p.stride[0], p.padding[0])
            }
            cases::Layer::BatchNorm => String::new(),
            cases::Layer::GroupNorm(g) => format!("G={g}"),
        };
        emit(&format!("{},{},{},{params}", c.name, c.op(), x.join("x")));
    }
}

fn summary(rows: &[Row]) -> Option<String> {
    let mut missing: Vec<String> = Vec::new();
    for r in rows.iter().filter(|r| r.fast_ms.is_none()) {
        let what = format!("{} {}", r.op, r.direction);
        if !missing.contains(&what) {
            missing.push(what);
        }
    }
    (!missing.is_empty()).then(|| format!("fast path not merged yet: {}", missing.join(", ")))
}

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    if args.list {
        list_cases();
        return ExitCode::SUCCESS;
    }
    let counts = if args.threads.is_empty() {
        vec![rayon::current_num_threads()]
    } else {
        args.threads.clone()
    };
    let build = |n: usize| -> Result<rayon::ThreadPool, String> {
        if args.pin {
            cnn_kernels::threads::pinned_pool(n).map_err(|e| e.to_string())
        } else {
            let b = rayon::ThreadPoolBuilder::new().num_threads(n);
            b.build().map_err(|e| e.to_string())
        }
    };
    let pools: Vec<rayon::ThreadPool> = match counts.iter().map(|&n| build(n)).collect() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot build a thread pool: {e}");
            return ExitCode::FAILURE;
        }
    };
    for line in header(&args, &counts) {
        if args.csv {
            eprintln!("# {line}");
        } else {
            emit(&line);
        }
    }
    if args.csv {
        emit(CSV_HEADER);
    } else {
        emit(&table_header());
    }
    let result = if args.f64 {
        run::run::<f64>(&args, &pools)
    } else {
        run::run::<f32>(&args, &pools)
    };
    match result {
        Ok(rows) => {
            if rows.is_empty() {
                eprintln!("no case matches --filter {}", args.filters.join(","));
                return ExitCode::FAILURE;
            }
            if let Some(s) = summary(&rows) {
                if args.csv {
                    eprintln!("# {s}");
                } else {
                    emit(&s);
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
