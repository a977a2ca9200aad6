#!/usr/bin/env python3
"""Times the benchmark cases with PyTorch's CPU kernels, side by side with the report.

Prints the report's CSV columns (case,op,direction,dtype,threads,naive_ms,fast_ms,speedup,
throughput,unit,max_err) with PyTorch's median time in fast_ms; naive_ms, speedup and
max_err are empty. Case names, op and direction labels, and the work counted for the
throughput column (FLOPs for conv, bytes read and written once otherwise) are the report's.

What is timed:
  fwd  the layer's forward under torch.no_grad() (batch norm in training mode);
  bwd  torch.autograd.grad of a forward graph built once (retain_graph=True), giving every
       gradient the report's backward gives (conv dx, dw, db; norm dx, dgamma, dbeta; pool
       dx). Both max-pool backwards read the winners saved by the forward (PyTorch int64
       indices, ours pool::backward_with_indices with 1-byte indices; the bytes counted
       are ours: dout + indices + dx).

Needs `torch` (pip install torch); nothing in the crate's tests uses this script.

usage: python3 benches/pytorch/torch_bench.py [--threads 1,2] [--filter S[,S...]]
                                               [--dtype f32|f64] [--quick] [--list]
"""

import argparse
import statistics
import sys
import time

# The case table of benches/support/cases.rs (the Rust side's only copy). `--list` prints
# it in the format of `cargo run --release --example report -- --list`; .ci/bench-smoke
# diffs the two.
# conv: (name, x, w, stride, padding, dilation, groups)
CONV = [
    ("conv_cs231n_fast", (100, 3, 31, 31), (25, 3, 3, 3), 2, 1, 1, 1),
    ("conv_cs231n_net", (50, 3, 32, 32), (32, 3, 7, 7), 1, 3, 1, 1),
    ("conv_resnet_3x3_56", (8, 64, 56, 56), (64, 64, 3, 3), 1, 1, 1, 1),
    ("conv_resnet_3x3_14", (8, 256, 14, 14), (256, 256, 3, 3), 1, 1, 1, 1),
    ("conv_resnet_stem", (8, 3, 224, 224), (64, 3, 7, 7), 2, 3, 1, 1),
    ("conv_pointwise_56", (8, 256, 56, 56), (64, 256, 1, 1), 1, 0, 1, 1),
    ("conv_depthwise_56", (8, 128, 56, 56), (128, 1, 3, 3), 1, 1, 1, 128),
    ("conv_dilated_28", (8, 128, 28, 28), (128, 128, 3, 3), 1, 2, 2, 1),
]
# pool: (name, x, kernel, stride, padding)
POOL = [
    ("pool_cs231n_fast", (100, 3, 32, 32), 2, 2, 0),
    ("pool_cs231n_net", (50, 32, 32, 32), 2, 2, 0),
    ("pool_resnet_stem", (8, 64, 112, 112), 3, 2, 1),
    ("pool_vgg", (8, 128, 112, 112), 2, 2, 0),
]
# batch norm (spatial, train mode): (name, x)
BN = [
    ("bn_cs231n_net", (50, 32, 32, 32)),
    ("bn_resnet_56", (8, 64, 56, 56)),
    ("bn_resnet_14", (8, 256, 14, 14)),
]
# group norm: (name, x, groups)
GN = [
    ("gn_cs231n_net", (50, 32, 32, 32), 8),
    ("gn_resnet_56", (8, 64, 56, 56), 32),
    ("gn_resnet_14", (8, 256, 14, 14), 32),
]

CSV_HEADER = "case,op,direction,dtype,threads,naive_ms,fast_ms,speedup,throughput,unit,max_err"


def prod(t):
    p = 1
    for v in t:
        p *= v
    return p


def out_len(size, k, s, p, d=1):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def list_cases():
    """The case table in the format of the report's --list."""
    lines = ["case,op,x,params"]
    shape = lambda t: "x".join(str(v) for v in t)
    for name, x, w, s, p, d, g in CONV:
        lines.append(f"{name},conv,{shape(x)},w={shape(w)} s={s} p={p} d={d} g={g}")
    for name, x, k, s, p in POOL:
        lines.append(f"{name},pool,{shape(x)},k={k} s={s} p={p}")
    for name, x in BN:
        lines.append(f"{name},bn,{shape(x)},")
    for name, x, g in GN:
        lines.append(f"{name},gn,{shape(x)},G={g}")
    return lines


def budget(quick):
    # The report's fast-kernel budget (examples/report/measure.rs).
    if quick:
        return dict(warmup_s=0.0, min_reps=3, max_reps=10, target_s=0.05)
    return dict(warmup_s=0.1, min_reps=5, max_reps=100, target_s=0.5)


def median_ms(fn, warmup_s, min_reps, max_reps, target_s):
    start = time.perf_counter()
    while True:
        fn()
        if time.perf_counter() - start >= warmup_s:
            break
    times, total = [], 0.0
    while len(times) < max_reps and (len(times) < min_reps or total < target_s):
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        total += dt
        times.append(dt * 1e3)
    return statistics.median(times)


def make_cases(torch, dtype):
    """(name, op, {dir: (work_fwd_or_bwd, callable)}) for every case."""
    F = torch.nn.functional
    eb = torch.tensor([], dtype=dtype).element_size()
    gen = torch.Generator().manual_seed(0)

    def rand(*shape, lo=-1.0, hi=1.0, grad=False):
        t = torch.rand(*shape, generator=gen, dtype=dtype) * (hi - lo) + lo
        return t.requires_grad_(grad)

    def bwd_fn(out, inputs, dout):
        return lambda: torch.autograd.grad(out, inputs, dout, retain_graph=True)

    for name, x_s, w_s, s, p, d, g in CONV:
        oh = out_len(x_s[2], w_s[2], s, p, d)
        ow = out_len(x_s[3], w_s[3], s, p, d)
        flops = 2.0 * x_s[0] * w_s[0] * w_s[1] * w_s[2] * w_s[3] * oh * ow

        def thunks(x_s=x_s, w_s=w_s, s=s, p=p, d=d, g=g):
            x, w, b = rand(*x_s, grad=True), rand(*w_s, grad=True), rand(w_s[0], grad=True)
            conv = lambda: F.conv2d(x, w, b, stride=s, padding=p, dilation=d, groups=g)
            out = conv()
            return conv, bwd_fn(out, (x, w, b), rand(*out.shape))

        yield name, "conv", "GFLOP/s", {"fwd": flops, "bwd": 2 * flops}, thunks

    for name, x_s, k, s, p in POOL:
        n_out = x_s[0] * x_s[1] * out_len(x_s[2], k, s, p) * out_len(x_s[3], k, s, p)
        n_x = prod(x_s)
        work = {"fwd": (n_x + n_out) * eb, "bwd": (n_out + 2 * n_x) * eb}

        def thunks(x_s=x_s, k=k, s=s, p=p):
            x = rand(*x_s, grad=True)
            pool = lambda: F.max_pool2d(x, k, s, p)
            out = pool()
            return pool, bwd_fn(out, (x,), rand(*out.shape))

        yield name, "pool", "GB/s", work, thunks

    for name, x_s in BN:
        n_x = prod(x_s)

        def thunks(x_s=x_s):
            c = x_s[1]
            x = rand(*x_s, grad=True)
            gamma = rand(c, lo=0.5, hi=1.5, grad=True)
            beta = rand(c, lo=-0.5, hi=0.5, grad=True)
            rm, rv = torch.zeros(c, dtype=dtype), torch.ones(c, dtype=dtype)
            bn = lambda: F.batch_norm(x, rm, rv, gamma, beta, training=True, momentum=0.1, eps=1e-5)
            out = bn()
            return bn, bwd_fn(out, (x, gamma, beta), rand(*x_s))

        yield name, "bn", "GB/s", {"fwd": 2 * n_x * eb, "bwd": 3 * n_x * eb}, thunks

    for name, x_s, groups in GN:
        n_x = prod(x_s)

        def thunks(x_s=x_s, groups=groups):
            c = x_s[1]
            x = rand(*x_s, grad=True)
            gamma = rand(c, lo=0.5, hi=1.5, grad=True)
            beta = rand(c, lo=-0.5, hi=0.5, grad=True)
            gn = lambda: F.group_norm(x, groups, gamma, beta, eps=1e-5)
            out = gn()
            return gn, bwd_fn(out, (x, gamma, beta), rand(*x_s))

        yield name, "gn", "GB/s", {"fwd": 2 * n_x * eb, "bwd": 3 * n_x * eb}, thunks


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default=None, help="comma-separated thread counts (default: torch's)")
    ap.add_argument("--filter", default="", help="run cases whose name contains any of these (comma-separated)")
    ap.add_argument("--dtype", choices=["f32", "f64"], default="f32")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--list", action="store_true", help="print the case table and exit")
    args = ap.parse_args()
    if args.list:
        print("\n".join(list_cases()))
        return 0

    import torch  # only needed for timing

    dtype = torch.float32 if args.dtype == "f32" else torch.float64
    threads = [int(t) for t in args.threads.split(",")] if args.threads else [torch.get_num_threads()]
    filters = [f for f in args.filter.split(",") if f]
    b = budget(args.quick)
    print(f"# torch {torch.__version__} · CPU capability {torch.backends.cpu.get_cpu_capability()}"
          f" · threads {','.join(map(str, threads))} · dtype {args.dtype}", file=sys.stderr)
    print(CSV_HEADER, flush=True)
    for name, op, unit, work, thunks in make_cases(torch, dtype):
        if filters and not any(f in name for f in filters):
            continue
        fwd, bwd = thunks()
        for direction, fn in (("fwd", fwd), ("bwd", bwd)):
            for t in threads:
                torch.set_num_threads(t)
                if direction == "fwd":
                    def run(fn=fn):
                        with torch.no_grad():
                            fn()
                else:
                    run = fn
                ms = median_ms(run, **b)
                rate = work[direction] / (ms * 1e-3) / 1e9
                print(f"{name},{op},{direction},{args.dtype},{t},,{ms:.4f},,{rate:.3f},{unit},", flush=True)
                print(f"{name:<20} {direction} {t:>2}  {ms:10.3f} ms  {rate:8.2f} {unit}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
