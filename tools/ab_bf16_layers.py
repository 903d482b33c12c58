#!/usr/bin/env python3
"""Two builds of cppconv on bfloat16 Conv2d layers of the bench suite, paired, in CPU time.

    python tools/ab_bf16_layers.py OLD_PACKAGE_DIR [--layers a,b] [--layouts NCHW,NHWC] [--rounds 15]

Layers are named as in cppconv.bench.LAYERS, or 1x1_<C>to<K>@<H>[_b<N>] for other 1x1 layers.
OLD_PACKAGE_DIR holds a `cppconv` package (the Python files and the old build's _native
module); the new build is the one this interpreter imports.  Each build runs in its own
process, one thread; the two alternate layer by layer for --rounds rounds, each turn the median
calling-thread CPU time (time.thread_time) of --repeat calls of a prepacked Conv2d on
ml_dtypes.bfloat16 arrays.  The table gives each build's median turn and old/new: the median of
the rounds' ratios and their quartiles (a shared, noisy machine moves both sides of a round).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

WORKER = r"""
import json, sys, time
old = sys.argv[1]
if old:
    # The editable install's finder would import the new build whatever sys.path says.
    sys.meta_path = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()]
    sys.path.insert(0, old)
import numpy as np, ml_dtypes, cppconv
from cppconv import bench
cppconv.set_num_threads(1)
BF16 = np.dtype(ml_dtypes.bfloat16)
layers = {layer.name: layer for layer in bench.LAYERS}
calls = {}
for line in sys.stdin:
    name, layout, repeat = line.split()
    if (name, layout) not in calls:
        if name in layers:
            layer = layers[name]
        else:  # 1x1_<C>to<K>@<H>[_b<N>]: a 1x1 layer on an H x H plane beyond the suite's
            shape, _, batch = name[4:].partition("_b")
            c, k_h = shape.split("to")
            k, h = k_h.split("@")
            layer = bench.Layer(name, int(batch or 1), int(c), int(h), int(h), int(k), 1, 1)
        rng = np.random.default_rng(0)
        x = rng.standard_normal(layer.x_shape).astype(np.float32).astype(BF16)
        w = (rng.standard_normal(layer.w_shape) / np.sqrt(np.prod(layer.w_shape[1:]))).astype(np.float32).astype(BF16)
        b = rng.standard_normal(layer.k).astype(np.float32)
        if layout == "NHWC":
            x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
        conv = cppconv.Conv2d(w, b, layout=layout, **layer.conv_kwargs)
        y = conv(x)
        calls[name, layout] = (conv, x, y)
    conv, x, y = calls[name, layout]
    times = []
    for _ in range(int(repeat)):
        t = time.thread_time()
        conv(x, out=y)
        times.append(time.thread_time() - t)
    algorithm = conv.explain(x.shape, dtype=BF16)["algorithm"]
    print(json.dumps([float(np.median(times)), algorithm, cppconv.__file__]), flush=True)
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("--layers", default="1x1_256to64@56,1x1_64to256@56")
    ap.add_argument("--layouts", default="NCHW")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--repeat", type=int, default=9)
    args = ap.parse_args()
    workers = {side: subprocess.Popen([sys.executable, "-c", WORKER, path], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
               for side, path in (("old", args.old), ("new", ""))}
    keys = [(name, layout) for name in args.layers.split(",") for layout in args.layouts.split(",")]
    turns = {key: {"old": [], "new": []} for key in keys}
    algorithm = {}
    for r in range(args.rounds + 1):  # (round 0 warms up)
        for key in keys:
            for side in (("old", "new") if r % 2 else ("new", "old")):
                w = workers[side]
                w.stdin.write(f"{key[0]} {key[1]} {args.repeat}\n")
                w.stdin.flush()
                seconds, algo, _ = json.loads(w.stdout.readline())
                algorithm[key, side] = algo
                if r:
                    turns[key][side].append(seconds)
    for w in workers.values():
        w.stdin.close()
        w.wait()
    print("| layer | layout | old ms | new ms | old/new (q25-q75) | old algorithm | new algorithm |")
    print("|---|---|---:|---:|---:|---|---|")
    for key in keys:
        old, new = turns[key]["old"], turns[key]["new"]
        ratios = sorted(o / n for o, n in zip(old, new))
        q = statistics.quantiles(ratios, n=4)
        print(f"| {key[0]} | {key[1]} | {statistics.median(old) * 1e3:.3f} | {statistics.median(new) * 1e3:.3f} | "
              f"{statistics.median(ratios):.3f} ({q[0]:.3f}-{q[2]:.3f}) | {algorithm[key, 'old']} | "
              f"{algorithm[key, 'new']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
