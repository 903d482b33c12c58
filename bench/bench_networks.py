#!/usr/bin/env python3
"""Benchmark whole networks (issue 15): cppconv.onnx against ONNX Runtime and PyTorch.

    python bench/bench_networks.py [--threads 2] [--batches 1,16] [--networks resnet50,...] [--size 224]
                                   [--budget 1.0] [--small]

The networks are the full architectures of tests/vision_models.py (ResNet-18/50, MobileNetV2,
MobileNetV3-Small, EfficientNet-B0, SqueezeNet 1.1, ShuffleNetV2, GoogLeNet, DenseNet-121,
RegNetX-400MF, U-Net; torchvision's layers, random weights) at --size (default 224), or with
--small the millisecond-sized networks of tests/onnx_networks.py, exported to ONNX.  Per
network and batch size, in one process, sampled round-robin (cppconv.bench's
timer, median): cppconv.Network; ONNX Runtime with all graph optimisations; PyTorch in eval
mode, channels_last, under inference_mode.  "vs ORT" is ONNX Runtime's median over
cppconv's (above 1: cppconv is faster).  Load-and-plan time is cppconv.onnx.load's.  Every
output is checked against PyTorch's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

import cppconv
from cppconv import bench

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
import onnx_networks
import vision_models


def _runners(module: Any, data: bytes, x: np.ndarray, threads: int) -> Dict[str, Callable[[], Any]]:
    import onnxruntime as ort
    import torch

    net = cppconv.onnx.load(data, num_threads=threads)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    # channels_last (4-D) or channels_last_3d (5-D); 1-D networks have no such format.
    form = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.ndim, torch.contiguous_format)
    module_cl = module.to(memory_format=form) if x.ndim in (4, 5) else module
    xt = torch.from_numpy(x).contiguous(memory_format=form)
    return {
        "cppconv": lambda: net(x),
        "onnxruntime": lambda: session.run(None, {"x": x})[0],
        "torch_cl": lambda: module_cl(xt),
    }


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,16", help="comma-separated batch sizes (default 1,16)")
    ap.add_argument("--networks", default="", help=f"comma-separated, of {', '.join(vision_models.ARCHITECTURES)} "
                                                   "(default: all)")
    ap.add_argument("--size", type=int, default=224, help="input height and width (default 224)")
    ap.add_argument("--small", action="store_true", help="the small networks of tests/onnx_networks.py instead")
    ap.add_argument("--budget", type=float, default=1.0, help="sampling seconds per library and case")
    args = ap.parse_args(argv)
    suite = onnx_networks.NETWORKS if args.small else vision_models.ARCHITECTURES
    names = [n for n in suite if not args.networks or n in args.networks.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    cfg = bench.TimerConfig(budget_s=args.budget)
    header = ["network", "batch", "load ms", "cppconv ms", "onnxruntime ms", "torch_cl ms", "vs ORT", "vs torch",
              "check"]
    body: List[List[str]] = []
    ratios: List[float] = []
    with contextlib.ExitStack() as stack:
        threads = bench.setup_threads(args.threads, ["torch"], stack, lambda m: print(m, file=sys.stderr))
        info = bench.machine_info(threads)
        print(f"# {info['cpu_model']}, {threads} threads, cppconv {info['cppconv_version']} "
              f"({info['cppconv_isa']})", file=sys.stderr)
        for name in names:
            module, shape = onnx_networks.build(name) if args.small else vision_models.build(name, args.size)
            data = onnx_networks.export(module, shape)
            start = time.perf_counter()
            cppconv.onnx.load(data, num_threads=threads)
            load_ms = (time.perf_counter() - start) * 1e3
            for batch in batches:
                x = np.random.default_rng(0).standard_normal((batch, *shape[1:])).astype(np.float32)
                fns = _runners(module, data, x, threads)
                expected = bench.to_numpy(fns["torch_cl"]())
                ok, _ = bench.compare(bench.to_numpy(fns["cppconv"]()), expected)
                t = bench.time_interleaved(fns, cfg)
                ratio = t["onnxruntime"].median_s / t["cppconv"].median_s
                ratios.append(ratio)
                body.append([name, str(batch), f"{load_ms:.1f}", *(f"{t[k].median_s * 1e3:.3f}" for k in fns),
                             f"{ratio:.2f}x", f"{t['torch_cl'].median_s / t['cppconv'].median_s:.2f}x",
                             "ok" if ok else "MISMATCH"])
                print(bench.format_text(header, body[-1:]).splitlines()[-1], file=sys.stderr)
    print(bench.format_text(header, body))
    mean = bench.geomean(ratios)
    if mean is not None:
        print(f"geometric mean vs ONNX Runtime: {mean:.2f}x")
    return 0 if all(r[-1] == "ok" for r in body) else 1


if __name__ == "__main__":
    sys.exit(main())
