//! Command-line options of the report.

use std::fmt::Write as _;

/// What to run and how to print it.
#[derive(Debug, Clone)]
pub struct Args {
    /// Thread counts to run at, each in its own rayon pool (`--threads 1,2`); empty: the
    /// global pool's size (`RAYON_NUM_THREADS`, default all cores).
    pub threads: Vec<usize>,
    /// A case runs if its name contains any of these (all cases if empty).
    pub filters: Vec<String>,
    /// Machine-readable CSV on stdout; header and progress on stderr.
    pub csv: bool,
    /// Fewer repetitions and a lower naive limit (a smoke run).
    pub quick: bool,
    /// Run in f64 instead of f32.
    pub f64: bool,
    /// Print the case table (for `benches/pytorch/torch_bench.py --check`) and exit.
    pub list: bool,
    /// Run every case on this many images instead of its own `N` (`--batch 1`: inference).
    pub batch: Option<usize>,
    /// Build the pools with `threads::pinned_pool` (a CPU per worker).
    pub pin: bool,
    /// Time only the fast kernels (the naive column shows a dash; errors are still checked).
    pub fast_only: bool,
}

pub const USAGE: &str = "\
usage: cargo run --release --example report -- [options]

Runs every benchmark case forward and backward, times the naive and the fast kernel and
prints a table (or CSV) with the speedup, the throughput and the fast kernel's max error
against the naive one on a smaller instance of the same layer.

options:
  --threads N[,N...]   run inside a rayon pool of N threads, for each N listed
                       (default: RAYON_NUM_THREADS, else all cores)
  --filter S[,S...]    run the cases whose name contains any of the substrings
  --dtype f32|f64      element type (default f32)
  --csv                CSV on stdout: case,op,direction,dtype,threads,naive_ms,fast_ms,
                       speedup,throughput,unit,max_err (header and progress on stderr)
  --quick              fewer repetitions, naive timed only when under 0.1 s (CI smoke)
  --batch N            run every case on N images instead of its own batch (--batch 1:
                       inference); the case names stay, the header says the batch
  --pin                pin each pool's workers to CPUs (cnn_kernels::threads::pinned_pool)
  --fast-only          time only the fast kernels (naive_ms is a dash; max_err is still
                       measured): for comparing builds, as benches/native.sh does
  --list               print the case table as CSV and exit
  -h, --help           this text";

fn list<T: std::str::FromStr>(opt: &str, v: &str) -> Result<Vec<T>, String> {
    v.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|_| format!("{opt}: cannot parse {s:?}"))
        })
        .collect()
}

impl Args {
    /// Parses `args` (without the program name). `Err` holds the message to print.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
        let mut a = Args {
            threads: Vec::new(),
            filters: Vec::new(),
            csv: false,
            quick: false,
            f64: false,
            list: false,
            batch: None,
            pin: false,
            fast_only: false,
        };
        let mut it = args.into_iter();
        while let Some(opt) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{opt} needs a value"));
            match opt.as_str() {
                "--threads" => {
                    a.threads = list(&opt, &value()?)?;
                    if a.threads.is_empty() || a.threads.contains(&0) {
                        return Err("--threads: give one or more counts of at least 1".into());
                    }
                }
                "--filter" => a.filters = list(&opt, &value()?)?,
                "--dtype" => match value()?.as_str() {
                    "f32" => a.f64 = false,
                    "f64" => a.f64 = true,
                    other => return Err(format!("--dtype: expected f32 or f64, got {other:?}")),
                },
                "--batch" => {
                    let v = value()?;
                    match v.trim().parse::<usize>() {
                        Ok(n) if n >= 1 => a.batch = Some(n),
                        _ => {
                            return Err(format!(
                                "--batch: expected a count of at least 1, got {v:?}"
                            ))
                        }
                    }
                }
                "--pin" => a.pin = true,
                "--fast-only" => a.fast_only = true,
                "--csv" => a.csv = true,
                "--quick" => a.quick = true,
                "--list" => a.list = true,
                "-h" | "--help" => return Err(USAGE.to_string()),
                other => {
                    let mut msg = format!("unknown option {other:?}\n\n");
                    let _ = write!(msg, "{USAGE}");
                    return Err(msg);
                }
            }
        }
        Ok(a)
    }

    /// Whether the case named `name` passes `--filter`.
    pub fn selects(&self, name: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str()))
    }
}
