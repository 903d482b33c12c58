#!/usr/bin/env python3
"""Benchmark cppconv.correlate2d against scipy.signal.correlate2d and scipy.ndimage.correlate.

    python bench/bench_signal.py [--threads 2] [--markdown FILE]

Float32 images, mode "same", boundary "symm" (SciPy ndimage's "reflect"); the median of
repeated calls after warm-up (cppconv.bench's timer, all three sampled round-robin).  Outputs
are checked against scipy.signal's.  SciPy runs on one thread (it has no threads here);
cppconv runs on --threads, and on one thread for the like-for-like column.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import cppconv
from cppconv import bench

CASES = [((512, 512), 3), ((512, 512), 5), ((512, 512), 15), ((2048, 2048), 3), ((2048, 2048), 5), ((2048, 2048), 15)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", type=float, default=1.0)
    ap.add_argument("--markdown", default="")
    args = ap.parse_args()
    import scipy.ndimage as ndimage
    import scipy.signal as signal

    info = bench.machine_info(args.threads)
    cfg = bench.TimerConfig(budget_s=args.budget)
    rows = [f"CPU: {info['cpu_model']}; scipy {info['versions'].get('scipy')}; cppconv {info['cppconv_version']} "
            f"({info['cppconv_isa']})", "",
            f"| image | kernel | scipy.signal ms | scipy.ndimage ms | cppconv 1 thread ms | cppconv {args.threads} "
            f"threads ms | vs ndimage (1 thread) | vs ndimage ({args.threads} threads) |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    for shape, k in CASES:
        rng = np.random.default_rng(0)
        x = rng.random(shape, dtype=np.float32)
        w = rng.standard_normal((k, k)).astype(np.float32)
        fns = {"ndimage": lambda: ndimage.correlate(x, w, mode="reflect"),
               "one": lambda: cppconv.correlate2d(x, w, "same", "symm", num_threads=1),
               "many": lambda: cppconv.correlate2d(x, w, "same", "symm", num_threads=args.threads)}
        if shape[0] <= 512 or k <= 5:  # scipy.signal's direct loop takes seconds beyond
            fns["signal"] = lambda: signal.correlate2d(x, w, "same", "symm")
        ref = signal.correlate2d(x, w, "same", "symm") if "signal" in fns else ndimage.correlate(x, w, mode="reflect")
        for name, fn in fns.items():
            ok, err = bench.compare(bench.to_numpy(fn()), ref)
            if not ok:
                raise SystemExit(f"{shape} {k}x{k}: {name} differs (error {err:.3g})")
        t = {n: v.median_s for n, v in bench.time_interleaved(fns, cfg).items()}
        sig = f"{t['signal'] * 1e3:.2f}" if "signal" in t else "n/a"
        rows.append(f"| {shape[0]}x{shape[1]} | {k}x{k} | {sig} | {t['ndimage'] * 1e3:.2f} | {t['one'] * 1e3:.2f} | "
                    f"{t['many'] * 1e3:.2f} | {t['ndimage'] / t['one']:.1f}x | {t['ndimage'] / t['many']:.1f}x |")
        print(rows[-1], file=sys.stderr)
    text = "\n".join(rows) + "\n"
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(f"Command: python bench/bench_signal.py --threads {args.threads}\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
