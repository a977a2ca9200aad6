#!/usr/bin/env python3
"""Joins the report's CSV and torch_bench.py's CSV into a table of ratios.

For every (case, direction) and thread count present in both files: our fast kernel's
median ms, PyTorch's, `ours/torch` (time ratio: below 1 means we are faster) and
`speedup` = torch time / our time. Rows whose fast path is not merged yet show a dash.
With `--ours-table`, first the report's own naive-vs-fast table, one column group per
thread count. Standard library only.

usage: python3 benches/pytorch/compare.py OURS.csv [TORCH.csv] [--markdown] [--ours-table]
"""

import argparse
import csv
import sys


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def num(v):
    v = (v or "").strip()
    return float(v) if v and v.lower() != "nan" else None


def load(path):
    """(case, direction, dtype, threads) -> fast_ms (None where missing)."""
    return {
        (r["case"], r["direction"], r["dtype"], int(r["threads"])): num(r["fast_ms"])
        for r in read_rows(path)
    }


def print_table(head, lines, markdown):
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|")
        for r in lines:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(str(r[i])) for r in [head] + lines) for i in range(len(head))]
        for r in [head] + lines:
            cells = zip(r, widths)
            print("  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(cells)))


def ours_table(path, markdown):
    """The report's table, pivoted: one column group per thread count."""
    rows = read_rows(path)
    threads = sorted({int(r["threads"]) for r in rows})
    by_key, order = {}, []
    for r in rows:
        k = (r["case"], r["direction"], r["dtype"])
        if k not in by_key:
            order.append(k)
            by_key[k] = {}
        by_key[k][int(r["threads"])] = r
    head = ["case", "dir", "naive ms"]
    for t in threads:
        head += [f"fast ms ({t}T)", f"speedup ({t}T)", f"throughput ({t}T)"]
    head.append("max_err")
    lines = []
    for k in order:
        per_t = by_key[k]
        any_row = next(iter(per_t.values()))
        line = [k[0], k[1], fmt_ms(num(any_row["naive_ms"]))]
        errs = []
        for t in threads:
            r = per_t.get(t)
            fast = num(r["fast_ms"]) if r else None
            sp = num(r["speedup"]) if r else None
            tp = num(r["throughput"]) if r else None
            if r and num(r["max_err"]) is not None:
                errs.append(num(r["max_err"]))
            line += [
                fmt_ms(fast),
                f"{sp:.1f}x" if sp is not None else "-",
                f"{tp:.2f} {r['unit']}" if tp is not None else "-",
            ]
        line.append(f"{max(errs):.1e}" if errs else "-")
        lines.append(line)
    print_table(head, lines, markdown)


def fmt_ms(v):
    if v is None:
        return "-"
    return f"{v:.1f}" if v >= 100 else f"{v:.2f}" if v >= 1 else f"{v:.3f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ours", help="CSV of `cargo run --release --example report -- --csv`")
    ap.add_argument("torch", nargs="?", help="CSV of `python3 benches/pytorch/torch_bench.py`")
    ap.add_argument("--markdown", action="store_true", help="Markdown tables")
    ap.add_argument("--ours-table", action="store_true", help="first print the report's naive-vs-fast table")
    args = ap.parse_args()
    if args.ours_table:
        ours_table(args.ours, args.markdown)
        if args.torch:
            print()
    if not args.torch:
        if not args.ours_table:
            ap.error("give TORCH.csv or --ours-table")
        return 0
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

    print_table(head, lines, args.markdown)
    if missing:
        print(f"\n(ours: fast path not merged yet for {len(missing)} case/direction rows)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
