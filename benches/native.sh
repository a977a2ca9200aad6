#!/usr/bin/env bash
# Is a default build as fast as one made for this very CPU? A crate user sets no RUSTFLAGS,
# so the SIMD kernels pick their instruction set at run time; this script checks that this
# costs nothing. It builds the report twice, with default flags and with
# RUSTFLAGS="-C target-cpu=native" (into target/native), runs the fast kernels of the SIMD
# layers with each build in turn, ROUNDS times, and prints per case, direction and thread
# count the range and median of each build's medians and their ratio, default / native
# (above 1: the default build is slower).
#   benches/native.sh     # Markdown on stdout; the CSVs stay in target/perf/native/
# Environment: THREADS (default 1,2), FILTER (a --filter list, default the pooling, norm and
# depthwise-conv cases), ROUNDS (default 5), QUICK=1 (--quick). Needs python3 for the table.
# Takes about 3 minutes on a 2-core machine, plus a minute or two for the second build.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-1,2}
FILTER=${FILTER:-pool_,bn_,gn_,depthwise}
ROUNDS=${ROUNDS:-5}
out=target/perf/native
mkdir -p "$out"
rm -f "$out"/*.csv

echo "== building the report: default flags, then -C target-cpu=native" >&2
cargo build --release --example report >&2
RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-cpu=native" CARGO_TARGET_DIR=target/native \
    cargo build --release --example report >&2

opts=(--csv --fast-only --threads "$THREADS" --filter "$FILTER")
if [ "${QUICK:-0}" = 1 ]; then opts+=(--quick); fi
for round in $(seq 1 "$ROUNDS"); do
    for build in default native; do
        bin=target/release/examples/report
        if [ "$build" = native ]; then bin=target/native/release/examples/report; fi
        echo "== round $round of $ROUNDS: $build build" >&2
        "$bin" "${opts[@]}" >"$out/$build.$round.csv" 2>"$out/$build.$round.log"
    done
done

load=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
echo "Default build against \`-C target-cpu=native\`, $(date -u +%Y-%m-%d), $(grep -m1 -o 'SIMD [a-z0-9]*' "$out/default.1.log" || echo 'SIMD unknown'),"
echo "Rounds in turn: $ROUNDS; load average after: $load. Fast kernels, f32, report medians in ms."
if [ "${QUICK:-0}" = 1 ]; then
    echo "QUICK=1: a few repetitions without warm-up, so the ratios below check that the"
    echo "script runs; they are not measurements."
fi
echo
python3 - "$out" "$ROUNDS" <<'EOF'
import csv, statistics, sys

out, rounds = sys.argv[1], int(sys.argv[2])
runs = {}  # (case, direction, threads) -> {build: [ms per round]}
order = []
for build in ("default", "native"):
    for r in range(1, rounds + 1):
        for row in csv.DictReader(open(f"{out}/{build}.{r}.csv")):
            key = (row["case"], row["direction"], int(row["threads"]))
            if key not in runs:
                runs[key] = {"default": [], "native": []}
                order.append(key)
            if row["fast_ms"]:
                runs[key][build].append(float(row["fast_ms"]))
print("| case | dir | threads | default ms | native ms | default / native |")
print("|---|---|---:|---:|---:|---:|")
worst = None
for key in order:
    d, n = runs[key]["default"], runs[key]["native"]
    if not d or not n:
        continue
    ratio = statistics.median(d) / statistics.median(n)
    worst = ratio if worst is None else max(worst, ratio)
    span = lambda v: f"{min(v):.3f}–{max(v):.3f} ({statistics.median(v):.3f})"
    print(f"| {key[0]} | {key[1]} | {key[2]} | {span(d)} | {span(n)} | {ratio:.2f} |")
print()
print("Ranges are over rounds, medians of rounds in brackets; the ratio is of those medians.")
if worst is not None:
    print(f"Largest ratio: {worst:.2f}.")
EOF
