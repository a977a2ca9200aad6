#!/usr/bin/env python3
"""Joins the report's CSV and torch_bench.py's CSV into a table of ratios.

For every (case, direction) and thread count present in both files: our fast kernel's
median ms, PyTorch's, `ours/torch` (time ratio: below 1 means we are faster) and
`speedup` = torch time / our time. Rows whose fast path is not merged yet show a dash.
Standard library only.

usage: python3 benches/pytorch/compare.py OURS.csv TORCH.csv [--markdown]
"""

import argparse
import csv
import sys


def load(path):
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(line for line in f if not line.startswith("#"))]
    table = {}
    for r in rows:
        ms = r["fast_ms"].strip()
        key = (r["case"], r["direction"], r["dtype"], int(r["threads"]))
        table[key] = float(ms) if ms and ms.lower() != "nan" else None
    return table


def fmt_ms(v):
    if v is None:
        return "-"
    return f"{v:.1f}" if v >= 100 else f"{v:.2f}" if v >= 1 else f"{v:.3f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ours", help="CSV of `cargo run --release --example report -- --csv`")
    ap.add_argument("torch", help="CSV of `python3 benches/pytorch/torch_bench.py`")
    ap.add_argument("--markdown", action="store_true", help="a Markdown table")
    args = ap.parse_args()
    ours, torch = load(args.ours), load(args.torch)

    keys = [k for k in ours if k in torch]
    if not keys:
        print("no (case, direction, dtype, threads) in common", file=sys.stderr)
        return 1
    threads = sorted({k[3] for k in keys})
    dtypes = sorted({k[2] for k in keys})
    order = []
    for k in keys:
        if k[:3] not in order:
            order.append(k[:3])

    head = ["case", "dir"] + (["dtype"] if len(dtypes) > 1 else [])
    for t in threads:
        head += [f"ours ms ({t}T)", f"torch ms ({t}T)", f"ours/torch ({t}T)", f"speedup ({t}T)"]
    lines = []
    missing = []
    for case, d, dt in order:
        row = [case, d] + ([dt] if len(dtypes) > 1 else [])
        for t in threads:
            o, p = ours.get((case, d, dt, t)), torch.get((case, d, dt, t))
            ok = o is not None and p is not None
            if o is None and (case, d) not in missing:
                missing.append((case, d))
            row += [fmt_ms(o), fmt_ms(p), f"{o / p:.2f}" if ok else "-", f"{p / o:.2f}x" if ok else "-"]
        lines.append(row)

    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|")
        for r in lines:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(str(r[i])) for r in [head] + lines) for i in range(len(head))]
        for r in [head] + lines:
            print("  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    if missing:
        print(f"\n(ours: fast path not merged yet for {len(missing)} case/direction rows)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
