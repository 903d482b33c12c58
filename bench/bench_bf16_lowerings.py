#!/usr/bin/env python3
"""bfloat16 conv1d/conv3d layers that run through a lowering (docs/tuning.md, "bfloat16 through
the lowerings"): one thread's CPU time (time.process_time medians, robust to a loaded host) of
this tree's cppconv, another build's (--base: a python/ folder whose cppconv holds that build's
_native), alternating, and PyTorch's bfloat16, channels-first and channels-last each.

    python bench/bench_bf16_lowerings.py [--base /tmp/base/python] [--rounds 3] [--layers tcn,unet]

Each measurement runs in a fresh process (`--one LAYER WHO`), so the two builds never share one.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import numpy as np

LAYERS = {
    "w2v conv1": ((1, 512, 3199), (512, 512, 3), dict(stride=2)),
    "tcn": ((1, 64, 4096), (64, 64, 3), dict(dilation=8, padding=8)),
    "c3d conv3a": ((1, 128, 8, 28, 28), (256, 128, 3, 3, 3), dict(padding=1)),
    "unet": ((1, 32, 32, 32, 32), (32, 32, 3, 3, 3), dict(padding=1)),
    "r21d s": ((1, 64, 8, 56, 56), (144, 64, 1, 3, 3), dict(padding=(0, 1, 1))),
    "r21d t": ((1, 144, 8, 56, 56), (64, 144, 3, 1, 1), dict(padding=(1, 0, 0))),
    "w2v conv0": ((1, 1, 16000), (512, 1, 10), dict(stride=5)),
    "pw": ((4, 256, 1000), (512, 256, 1), {}),
}


def one(name: str, who: str, base: str) -> None:
    """Print the layer's medians in ms, channels-first then channels-last (and cppconv's algorithm)."""
    if who == "base":  # the other build's package, ahead of an editable install's finder
        sys.meta_path = [f for f in sys.meta_path if "editable" not in type(f).__module__]
        sys.path.insert(0, base)
    import ml_dtypes

    xs, ws, kw = LAYERS[name]
    rng = np.random.default_rng(0)
    x = rng.random(xs, dtype=np.float32).astype(ml_dtypes.bfloat16)
    w = (rng.random(ws, dtype=np.float32) - 0.5).astype(ml_dtypes.bfloat16)
    rank = len(xs) - 2

    def bench(f, n=7):
        f()
        ts = []
        for _ in range(n):
            t = time.process_time()
            f()
            ts.append(time.process_time() - t)
        return statistics.median(ts) * 1e3

    if who == "torch":
        import torch

        torch.set_num_threads(1)
        conv = {1: torch.nn.functional.conv1d, 3: torch.nn.functional.conv3d}[rank]
        tx, tw = torch.from_numpy(x.astype(np.float32)).bfloat16(), torch.from_numpy(w.astype(np.float32)).bfloat16()
        txc = tx.contiguous(memory_format=torch.channels_last_3d) if rank == 3 else tx
        with torch.no_grad():
            print(bench(lambda: conv(tx, tw, **kw)), bench(lambda: conv(txc, tw, **kw)), "torch")
        return
    import cppconv

    cppconv.set_num_threads(1)
    layer_class = {1: cppconv.Conv1d, 3: cppconv.Conv3d}[rank]
    out = []
    for layout in ({1: "NCW", 3: "NCDHW"}[rank], {1: "NWC", 3: "NDHWC"}[rank]):
        layer = layer_class(w, None, layout=layout, **kw)
        xi = x if layout.startswith("NC") else np.ascontiguousarray(np.moveaxis(x, 1, -1))
        out.append(bench(lambda: layer(xi)))
    print(*out, layer.explain(xi.shape, dtype=xi.dtype)["algorithm"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", help="python/ folder of another build's cppconv (the 'before' column)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--layers", default=",".join(LAYERS))
    ap.add_argument("--one", nargs=2, metavar=("LAYER", "WHO"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return one(args.one[0], args.one[1], args.base)
    whos = (["base"] if args.base else []) + ["new"]
    print("| layer | " + " | ".join(f"{w} NC.. | {w} last" for w in whos + ["torch"]) + " |")
    for name in args.layers.split(","):
        runs = {w: [] for w in whos + ["torch"]}
        for r in range(args.rounds):
            for w in whos + (["torch"] if r == 0 else []):
                cmd = [sys.executable, __file__, "--one", name, w] + (["--base", args.base] if args.base else [])
                got = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()
                runs[w].append((float(got[0]), float(got[1])))
        cells = [f"{statistics.median(v[j] for v in runs[w]):.2f}" for w in runs for j in (0, 1)]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
