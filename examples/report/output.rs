//! One result row, printed as a table line or a CSV line.

use std::io::Write;

/// The CSV header; the columns are an interface (`benches/pytorch/compare.py` reads them).
pub const CSV_HEADER: &str =
    "case,op,direction,dtype,threads,naive_ms,fast_ms,speedup,throughput,unit,max_err";

/// The measurements of one (case, direction, thread count).
#[derive(Debug, Clone)]
pub struct Row {
    pub case: &'static str,
    pub op: &'static str,
    pub direction: &'static str,
    pub dtype: &'static str,
    pub threads: usize,
    /// Median ms of the naive kernel; `None` where one pass would exceed the naive limit.
    pub naive_ms: Option<f64>,
    /// Median ms of the fast kernel; `None` while its fast path is not merged.
    pub fast_ms: Option<f64>,
    /// Work of one pass (FLOPs or bytes), for the throughput column.
    pub work: f64,
    /// `GFLOP/s` or `GB/s`.
    pub unit: &'static str,
    /// Max error of fast against naive on the smaller instance.
    pub max_err: Option<f64>,
    /// Why a column is a dash, shown after the table line.
    pub note: String,
}

impl Row {
    /// `naive_ms / fast_ms`.
    pub fn speedup(&self) -> Option<f64> {
        Some(self.naive_ms? / self.fast_ms?)
    }

    /// Throughput of the fast kernel in GFLOP/s or GB/s (`work / fast time / 1e9`).
    pub fn throughput(&self) -> Option<f64> {
        Some(self.work / (self.fast_ms? * 1e-3) / 1e9)
    }

    /// The CSV line (empty fields for missing values).
    pub fn csv(&self) -> String {
        let f = |v: Option<f64>, prec: usize| v.map_or(String::new(), |v| format!("{v:.prec$}"));
        let e = self.max_err.map_or(String::new(), |v| format!("{v:.3e}"));
        format!(
            "{},{},{},{},{},{},{},{},{},{},{}",
            self.case,
            self.op,
            self.direction,
            self.dtype,
            self.threads,
            f(self.naive_ms, 4),
            f(self.fast_ms, 4),
            f(self.speedup(), 2),
            f(self.throughput(), 3),
            self.unit,
            e
        )
    }

    /// The table line.
    pub fn table(&self) -> String {
        let dash = || "-".to_string();
        let ms = |v: Option<f64>| v.map_or_else(dash, fmt_ms);
        format!(
            "{:<20} {:<3} {:>3} {:>10} {:>10} {:>8} {:>9} {:<7} {:>9}  {}",
            self.case,
            self.direction,
            self.threads,
            ms(self.naive_ms),
            ms(self.fast_ms),
            self.speedup().map_or_else(dash, |s| format!("{s:.1}x")),
            self.throughput().map_or_else(dash, |t| format!("{t:.2}")),
            if self.fast_ms.is_some() {
                self.unit
            } else {
                ""
            },
            self.max_err.map_or_else(dash, |e| format!("{e:.1e}")),
            self.note
        )
    }
}

/// The table's column titles.
pub fn table_header() -> String {
    format!(
        "{:<20} {:<3} {:>3} {:>10} {:>10} {:>8} {:>17} {:>9}  {}",
        "case", "dir", "thr", "naive ms", "fast ms", "speedup", "throughput", "max_err", "note"
    )
}

fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Prints a line to stdout and flushes it, so progress shows while the report runs.
pub fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
