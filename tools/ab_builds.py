#!/usr/bin/env python3
"""Compare two builds of cppconv on the 2-D suite, in the same run on the same machine.

    python tools/ab_builds.py OLD_PYTHON NEW_PYTHON [--rounds 3] [--threads 2]

Each interpreter (a venv with one build installed) times cppconv.conv2d and a Conv2d layer on
every layer of cppconv.bench.LAYERS (sanity rows left out): the median of samples over about
0.6 s after 3 warm-up calls.  The two alternate for --rounds rounds, so that load drifting over
the run hits both; the table gives each call's median over the rounds and new/old.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys

TIMER = r"""
import json, sys, time, numpy as np, cppconv
from cppconv import bench
cppconv.set_num_threads(int(sys.argv[1]))
out = {}
for layer in bench.LAYERS:
    if layer.sanity:
        continue
    rng = np.random.default_rng(0)
    x = rng.standard_normal(layer.x_shape).astype(np.float32)
    w = rng.standard_normal(layer.w_shape).astype(np.float32)
    b = rng.standard_normal(layer.k).astype(np.float32)
    if layer.two_d:
        x, w, b = x[0, 0], w[0, 0], None
    conv = cppconv.Conv2d(w, b, **layer.conv_kwargs)
    for name, fn in (("fn", lambda: cppconv.conv2d(x, w, b, **layer.conv_kwargs)), ("layer", lambda: conv(x))):
        for _ in range(3):
            fn()
        inner = 1 if layer.flops > 1e6 else 200
        samples, end = [], time.perf_counter() + 0.6
        while time.perf_counter() < end or len(samples) < 5:
            t = time.perf_counter()
            for _ in range(inner):
                fn()
            samples.append((time.perf_counter() - t) / inner)
        out[f"{layer.name}/{name}"] = float(np.median(samples))
print(json.dumps(out))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    runs = {"old": [], "new": []}
    for _ in range(args.rounds):
        for side in ("old", "new"):
            text = subprocess.run([getattr(args, side), "-c", TIMER, str(args.threads)], check=True,
                                  capture_output=True, text=True).stdout
            runs[side].append(json.loads(text))
    print("| layer / call | old median (ms) | new median (ms) | new/old |\n|---|---:|---:|---:|")
    ratios = []
    for key in runs["old"][0]:
        old = statistics.median(r[key] for r in runs["old"])
        new = statistics.median(r[key] for r in runs["new"])
        ratios.append(new / old)
        print(f"| {key} | {old * 1e3:.4g} | {new * 1e3:.4g} | {new / old:.3f} |")
    print(f"\ngeometric mean new/old: {math.exp(sum(map(math.log, ratios)) / len(ratios)):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
