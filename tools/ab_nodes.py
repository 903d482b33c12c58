#!/usr/bin/env python3
"""Compare two builds of cppconv on single network nodes, in alternating processes.

    python tools/ab_nodes.py OLD_TREE NEW_TREE [--pairs 12] [--nodes a,b] [--seconds 0.3]

A tree is a folder holding a `cppconv` package with its built `_native` module (a copy of
python/cppconv plus the .so of one build); each process imports cppconv from its tree only (an
editable install's import hook is bypassed).  Each process times NHWC Conv2d layers of the
networks' layers with their activation (1 thread, batch 1, the median CPU time per call over
--seconds); OLD and NEW alternate --pairs times, in alternating order, and the table gives the
median per-pair ratio old/new with its 25th-75th percentile (docs/tuning.md, "Whole networks").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

# name: (in channels, out channels, height = width, kernel, stride, activation[, groups])
NODES = {
    "mnv3s_exp16_72@56": (16, 72, 56, 1, 1, "relu"),
    "mnv3s_exp24_88@28": (24, 88, 28, 1, 1, "relu"),
    "mnv3s_exp24_96@28": (24, 96, 28, 1, 1, "hardswish"),
    "mnv3s_exp40_240@14": (40, 240, 14, 1, 1, "hardswish"),
    "mnv2_exp24_144@56": (24, 144, 56, 1, 1, "relu6"),
    "mnv2_exp32_192@28": (32, 192, 28, 1, 1, "relu6"),
    "effb0_exp16_96@112": (16, 96, 112, 1, 1, "silu"),
    "mnv3s_stem3_16@224": (3, 16, 224, 3, 2, "hardswish"),
    "mnv2_stem3_32@224": (3, 32, 224, 3, 2, "relu6"),
    "mnv2_exp16_96@112": (16, 96, 112, 1, 1, "relu6"),
    "mnv2_exp96_576@14": (96, 576, 14, 1, 1, "relu6"),
    "mnv2_proj96_24@56": (96, 24, 56, 1, 1, None),
    "mnv2_proj144_24@56": (144, 24, 56, 1, 1, None),
    "mnv2_proj32_16@112": (32, 16, 112, 1, 1, None),
    "mnv2_proj576_96@14": (576, 96, 14, 1, 1, None),
    "mnv2_dw32@112": (32, 32, 112, 3, 1, "relu6", 32),
    "mnv2_dw96@112_s2": (96, 96, 112, 3, 2, "relu6", 96),
    "mnv2_dw144@56": (144, 144, 56, 3, 1, "relu6", 144),
    "regnet_g3x3_64@28": (64, 64, 28, 3, 1, "relu", 4),
    "regnet_g3x3_160@14": (160, 160, 14, 3, 1, "relu", 10),
    "squeeze_exp3x3_16_64@55": (16, 64, 55, 3, 1, "relu"),
    "squeeze_exp1x1_16_64@55": (16, 64, 55, 1, 1, "relu"),
}

TIMER = r"""
import json, sys, time
tree, nodes, seconds = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
sys.meta_path = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()]
sys.path.insert(0, tree)
import numpy as np, cppconv
assert cppconv.__file__.startswith(tree), cppconv.__file__
rng = np.random.default_rng(0)
out = {}
for name, (C, K, H, kh, s, act, *groups) in nodes.items():
    g = groups[0] if groups else 1
    x = rng.standard_normal((1, H, H, C), dtype=np.float32)
    w = rng.standard_normal((K, C // g, kh, kh), dtype=np.float32)
    b = rng.standard_normal(K, dtype=np.float32)
    layer = cppconv.Conv2d(w, b, stride=s, padding=kh // 2, groups=g, layout="NHWC", activation=act)
    y = np.empty_like(layer(x, num_threads=1))
    for _ in range(20):
        layer(x, out=y, num_threads=1)
    ts, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(ts) < 30:
        t = time.process_time()
        layer(x, out=y, num_threads=1)
        ts.append(time.process_time() - t)
    out[name] = float(np.median(ts))
print(json.dumps(out))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old_tree")
    ap.add_argument("new_tree")
    ap.add_argument("--pairs", type=int, default=12)
    ap.add_argument("--nodes", default=",".join(NODES))
    ap.add_argument("--seconds", type=float, default=0.3)
    args = ap.parse_args()
    nodes = {n: NODES[n] for n in args.nodes.split(",")}
    trees = {"old": os.path.abspath(args.old_tree), "new": os.path.abspath(args.new_tree)}

    def run(which: str) -> dict:
        cmd = [sys.executable, "-c", TIMER, trees[which], json.dumps(nodes), str(args.seconds)]
        return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True, cwd="/").stdout)

    times: dict = {"old": {n: [] for n in nodes}, "new": {n: [] for n in nodes}}
    for i in range(args.pairs):
        for which in ("old", "new") if i % 2 == 0 else ("new", "old"):
            for n, t in run(which).items():
                times[which][n].append(t)
    for n in nodes:
        ratio = np.array(times["old"][n]) / np.array(times["new"][n])
        q25, q50, q75 = np.percentile(ratio, [25, 50, 75])
        print(f"{n:20s} old {np.median(times['old'][n]) * 1e3:7.3f} ms  new {np.median(times['new'][n]) * 1e3:7.3f} ms"
              f"  old/new {q50:.3f} ({q25:.3f}-{q75:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
