#!/usr/bin/env python3
"""Two builds of cppconv on Conv2d layers of the bench suite, paired, in the same run.

    python tools/ab_builds.py OLD_PACKAGE_DIR [--dtype float32|bfloat16] [--layers all|a,b]
                              [--layouts NCHW,NHWC] [--rounds 15] [--repeat 9] [--threads 1]

OLD_PACKAGE_DIR holds a `cppconv` package (the Python files and the old build's _native module,
e.g. a copy of site-packages/cppconv made before rebuilding); the new build is the one this
interpreter imports.  Layers are named as in cppconv.bench.LAYERS ("all": the suite without its
sanity rows), as in bench/bench_nd.py's LAYERS (conv1d and conv3d layers: NCHW and NHWC then mean
their ranks' channels-first and channels-last layouts), or 1x1_<C>to<K>@<H>[_b<N>] for other
1x1 layers.  Each build runs in its own
process; the two alternate layer by layer for --rounds rounds (their order flipping each round),
each turn the median of --repeat calls of a prepacked Conv2d: calling-thread CPU time
(time.thread_time) with one thread, which a shared machine's load disturbs least, wall time with
more.  The table gives each build's median turn and old/new: the median of the rounds' ratios
and their quartiles (a noisy machine moves both sides of a round), then their geometric mean.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys

WORKER = r"""
import json, sys, time
old, dtype_name, threads, bench_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if old:
    # The editable install's finder would import the new build whatever sys.path says.
    sys.meta_path = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()]
    sys.path.insert(0, old)
import numpy as np, cppconv
from cppconv import bench
if dtype_name == "bfloat16":
    import ml_dtypes
    dtype = np.dtype(ml_dtypes.bfloat16)
else:
    dtype = np.dtype(dtype_name)
cppconv.set_num_threads(threads)
clock = time.thread_time if threads == 1 else time.perf_counter
layers = {layer.name: layer for layer in bench.LAYERS}
sys.path.insert(0, bench_dir)
import bench_nd
nd_layers = {layer.name: layer for layer in bench_nd.LAYERS}
calls = {}
for line in sys.stdin:
    name, layout, repeat = line.split()
    if (name, layout) not in calls and name in nd_layers:
        layer = nd_layers[name]
        rng = np.random.default_rng(0)
        x = rng.standard_normal((layer.batch, layer.cin, *layer.size)).astype(np.float32).astype(dtype)
        w_shape = (layer.cout, layer.cin // layer.groups, *layer.kernel)
        w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(np.float32).astype(dtype)
        b = rng.standard_normal(layer.cout).astype(np.float32)
        nd_layout = (bench_nd.LAST if layout == "NHWC" else bench_nd.FIRST)[layer.rank]
        if layout == "NHWC":
            x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
        cls = cppconv.Conv1d if layer.rank == 1 else cppconv.Conv3d
        conv = cls(w, b, layout=nd_layout, **bench_nd._kwargs(layer))
        calls[name, layout] = (conv, x, conv(x))
    if (name, layout) not in calls:
        if name in layers:
            layer = layers[name]
        else:  # 1x1_<C>to<K>@<H>[_b<N>]: a 1x1 layer on an H x H plane beyond the suite's
            shape, _, batch = name[4:].partition("_b")
            c, k_h = shape.split("to")
            k, h = k_h.split("@")
            layer = bench.Layer(name, int(batch or 1), int(c), int(h), int(h), int(k), 1, 1)
        rng = np.random.default_rng(0)
        x = rng.standard_normal(layer.x_shape).astype(np.float32).astype(dtype)
        w = (rng.standard_normal(layer.w_shape) / np.sqrt(np.prod(layer.w_shape[1:]))).astype(np.float32).astype(dtype)
        b = rng.standard_normal(layer.k).astype(np.float32)
        if layout == "NHWC":
            x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
        conv = cppconv.Conv2d(w, b, layout=layout, **layer.conv_kwargs)
        y = conv(x)
        calls[name, layout] = (conv, x, y)
    conv, x, y = calls[name, layout]
    times = []
    for _ in range(int(repeat)):
        t = clock()
        conv(x, out=y)
        times.append(clock() - t)
    algorithm = conv.explain(x.shape, dtype=x.dtype)["algorithm"]
    print(json.dumps([float(np.median(times)), algorithm]), flush=True)
"""


BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


def suite_layers() -> str:
    sys.path.insert(0, "python")
    from cppconv import bench

    return ",".join(layer.name for layer in bench.LAYERS if not layer.sanity and not layer.two_d)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64", "bfloat16"))
    ap.add_argument("--layers", default="all")
    ap.add_argument("--layouts", default="NCHW")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if not os.path.isfile(os.path.join(args.old, "cppconv", "__init__.py")):
        ap.error(f"{args.old}: no cppconv package there (a folder holding cppconv/ with its _native module)")
    names = suite_layers() if args.layers == "all" else args.layers
    workers = {
        side: subprocess.Popen([sys.executable, "-c", WORKER, path, args.dtype, str(args.threads), BENCH_DIR],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for side, path in (("old", args.old), ("new", ""))
    }
    keys = [(name, layout) for name in names.split(",") for layout in args.layouts.split(",")]
    turns = {key: {"old": [], "new": []} for key in keys}
    algorithm = {}
    for r in range(args.rounds + 1):  # (round 0 warms up)
        for key in keys:
            for side in ("old", "new") if r % 2 else ("new", "old"):
                w = workers[side]
                w.stdin.write(f"{key[0]} {key[1]} {args.repeat}\n")
                w.stdin.flush()
                seconds, algo = json.loads(w.stdout.readline())
                algorithm[key, side] = algo
                if r:
                    turns[key][side].append(seconds)
    for w in workers.values():
        w.stdin.close()
        w.wait()
    print(f"{args.dtype}, {args.threads} thread(s), {args.rounds} rounds of {args.repeat} calls\n")
    print("| layer | layout | old ms | new ms | old/new (q25-q75) | old algorithm | new algorithm |")
    print("|---|---|---:|---:|---:|---|---|")
    medians = []
    for key in keys:
        old, new = turns[key]["old"], turns[key]["new"]
        ratios = sorted(o / n for o, n in zip(old, new))
        q = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else [ratios[0]] * 3
        medians.append(statistics.median(ratios))
        print(f"| {key[0]} | {key[1]} | {statistics.median(old) * 1e3:.3f} | {statistics.median(new) * 1e3:.3f} | "
              f"{medians[-1]:.3f} ({q[0]:.3f}-{q[2]:.3f}) | {algorithm[key, 'old']} | {algorithm[key, 'new']} |")
    print(f"\ngeometric mean old/new: {math.exp(sum(map(math.log, medians)) / len(medians)):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
