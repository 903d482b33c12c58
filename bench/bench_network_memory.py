#!/usr/bin/env python3
"""Memory of whole networks (issue 15): cppconv.onnx against ONNX Runtime, each in a process of its own.

    python bench/bench_network_memory.py [--threads 2] [--batches 1,16] [--networks resnet50,...]
                                         [--calls 4] [--sub-batch auto|whole|N] [--markdown FILE]

Per network (cppconv._models.vision_models at 224x224, random weights, exported to ONNX as
bench_networks.py does) and batch size, a fresh Python process imports NumPy, PyTorch and the
library, then measures its resident memory (RSS, after gc and malloc_trim) before loading the
model, after loading it, and after --calls calls on one input: "load" and "runs" are the
growth over each part, "total" their sum, "peak" the process's high-water mark (VmHWM) less
its RSS before loading.  cppconv's calls after the first run as its recorded program (with
load's sub_batch: auto, its default; whole, a batch in one pass; or a number); ONNX
Runtime runs with all graph optimisations and its default arena.  Memory does not depend on
load, so this benchmark may run on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))

_CHILD = r"""
import ctypes, gc, json, sys
import numpy as np
import torch  # (both libraries' processes import it: the same baseline)
path, which, batch, threads, calls = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
word = sys.argv[6]
sub_batch = None if word == "auto" else max(batch, 1) if word == "whole" else int(word)
libc = ctypes.CDLL("libc.so.6")

def rss():
    gc.collect()
    libc.malloc_trim(0)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

def hwm():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))

x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
if which == "cppconv":
    import onnx  # (the parser cppconv.onnx.load imports: a module's memory, not the model's)
    import cppconv.onnx
    before = rss()
    net = cppconv.onnx.load(path, num_threads=threads, sub_batch=sub_batch)
    loaded = rss()
    for _ in range(calls):
        y = net(x)
else:
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    before = rss()
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    loaded = rss()
    feed = {session.get_inputs()[0].name: x}
    for _ in range(calls):
        y = session.run(None, feed)
after = rss()
print(json.dumps({"load": loaded - before, "runs": after - loaded, "peak": hwm() - before}))
"""


def _measure(path: str, which: str, batch: int, threads: int, calls: int, sub_batch: str) -> Dict[str, int]:
    out = subprocess.run([sys.executable, "-c", _CHILD, path, which, str(batch), str(threads), str(calls), sub_batch],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: List[str] | None = None) -> None:
    from cppconv._models import onnx_networks, vision_models
    from cppconv._netbench import add_suite_arguments

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_suite_arguments(ap)
    ap.add_argument("--calls", type=int, default=4, help="calls after loading (default 4)")
    ap.add_argument("--sub-batch", default="auto", help="cppconv's sub_batch: auto (default), whole or a number")
    ap.add_argument("--markdown", default="", help="also write the table to this file")
    args = ap.parse_args(argv)
    names = [n for n in vision_models.ARCHITECTURES if not args.networks or n in args.networks.split(",")]
    mib = 1 << 20
    header = ("| network | batch | cppconv load | runs | total | peak | ORT load | runs | total | peak "
              "| total, cppconv / ORT |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            module, shape = vision_models.build(name)
            path = os.path.join(tmp, f"{name}.onnx")
            with open(path, "wb") as f:
                f.write(onnx_networks.export(module, shape))
            for batch in (int(b) for b in args.batches.split(",")):
                got = {w: _measure(path, w, batch, args.threads, args.calls, args.sub_batch)
                       for w in ("cppconv", "ort")}
                total = {w: got[w]["load"] + got[w]["runs"] for w in got}
                cells = [f"{got[w][k] / mib:.0f}" if k != "total" else f"{total[w] / mib:.0f}"
                         for w in ("cppconv", "ort") for k in ("load", "runs", "total", "peak")]
                ratio = total["cppconv"] / total["ort"]
                rows.append(f"| {name} | {batch} | " + " | ".join(cells) + f" | {ratio:.2f} |")
                print(rows[-1], flush=True)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("Memory in MiB (RSS growth over loading and over the calls; peak: high-water mark less "
                    "the RSS before loading)\n\n" + header + "\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
