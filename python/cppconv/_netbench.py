"""Benchmark whole networks (issue 15): cppconv.onnx against ONNX Runtime and PyTorch.

    cppconv bench --networks [NAMES] [--threads 2] [--batches 1,16] [--quick]
    python bench/bench_networks.py [--threads 2] [--batches 1,16] [--networks resnet50,...] [--size 224]
                                   [--budget 1.0] [--small] [--int8 qdq|qoperator]

The networks are the full architectures of cppconv._models.vision_models (ResNet-18/50,
MobileNetV2, MobileNetV3-Small, EfficientNet-B0, SqueezeNet 1.1, ShuffleNetV2, GoogLeNet,
DenseNet-121, RegNetX-400MF, U-Net; torchvision's layers, random weights) at --size (default
224), or with --small the millisecond-sized networks of cppconv._models.onnx_networks,
exported to ONNX (PyTorch, ONNX Runtime and onnx: the ``peers`` extra).  Per
network and batch size, in one process, sampled round-robin (cppconv.bench's
timer, median): cppconv.Network; ONNX Runtime with all graph optimisations; PyTorch in eval
mode, channels_last, under inference_mode.  "vs ORT" is ONNX Runtime's median over
cppconv's (above 1: cppconv is faster).  Load-and-plan time is cppconv.onnx.load's.  Every
output is checked against PyTorch's.  With --int8 the exported model is first quantized by
onnxruntime.quantization (static, per-channel int8 weights, uint8 activations, in that format)
and cppconv runs it against ONNX Runtime on the same quantized model (no PyTorch column);
outputs are checked against ONNX Runtime's, within the drift of one step per layer that the
two round differently.
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

from . import bench
from ._models import onnx_networks, vision_models


def _quantized(data: bytes, shape: Any, fmt: str) -> bytes:
    """The float model quantized statically by onnxruntime.quantization in format fmt."""
    import tempfile

    from onnxruntime import quantization as q

    class Reader(q.CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.feeds = iter([{"x": np.random.default_rng(i).standard_normal(shape).astype(np.float32)}
                               for i in range(4)])

        def get_next(self) -> Any:
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "float.onnx"), os.path.join(tmp, "int8.onnx")
        with open(src, "wb") as out:
            out.write(data)
        form = q.QuantFormat.QDQ if fmt == "qdq" else q.QuantFormat.QOperator
        q.quantize_static(src, dst, Reader(), quant_format=form, per_channel=True,
                          activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8)
        with open(dst, "rb") as quantized:
            return quantized.read()


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


def add_suite_arguments(ap: argparse.ArgumentParser) -> None:
    """The options that pick the networks, batch sizes and threads (this suite's and
    bench/bench_network_memory.py's)."""
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,16", help="comma-separated batch sizes (default 1,16)")
    ap.add_argument("--networks", default="", help=f"comma-separated, of {', '.join(vision_models.ARCHITECTURES)} "
                                                   "(default: all)")


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_suite_arguments(ap)
    ap.add_argument("--size", type=int, default=224, help="input height and width (default 224)")
    ap.add_argument("--small", action="store_true", help="the small networks of cppconv._models.onnx_networks instead")
    ap.add_argument("--budget", type=float, default=1.0, help="sampling seconds per library and case")
    ap.add_argument("--int8", choices=["qdq", "qoperator"], help="quantize each model in this format first")
    args = ap.parse_args(argv)
    suite = onnx_networks.NETWORKS if args.small else vision_models.ARCHITECTURES
    names = [n for n in suite if not args.networks or n in args.networks.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    cfg = bench.TimerConfig(budget_s=args.budget)
    header = ["network", "batch", "load ms", "cppconv ms", "onnxruntime ms", "torch_cl ms", "vs ORT", "vs torch",
              "check"]
    if args.int8:
        header = [h for h in header if h not in ("torch_cl ms", "vs torch")]
    body: List[List[str]] = []
    ratios: List[float] = []
    with contextlib.ExitStack() as stack:
        threads = bench.setup_threads(args.threads, ["torch"], stack, lambda m: print(m, file=sys.stderr))
        info = bench.machine_info(threads)
        print(f"# {info['cpu_model']}, {threads} threads, cppconv {info['cppconv_version']} "
              f"({info['cppconv_isa']}), load average {info['loadavg_at_start']}, "
              f"OpenMP environment {info['openmp_env'] or 'default'}", file=sys.stderr)
        for name in names:
            module, shape = onnx_networks.build(name) if args.small else vision_models.build(name, args.size)
            data = onnx_networks.export(module, shape)
            if args.int8:
                data = _quantized(data, shape, args.int8)
            start = time.perf_counter()
            cppconv.onnx.load(data, num_threads=threads)
            load_ms = (time.perf_counter() - start) * 1e3
            for batch in batches:
                x = np.random.default_rng(0).standard_normal((batch, *shape[1:])).astype(np.float32)
                fns = _runners(module, data, x, threads)
                if args.int8:
                    del fns["torch_cl"]
                    expected = bench.to_numpy(fns["onnxruntime"]())
                    got = bench.to_numpy(fns["cppconv"]())
                    ok = got.shape == expected.shape and \
                        float(np.abs(got - expected).max()) <= 0.5 * float(np.abs(expected).max())
                else:
                    ok, _ = bench.compare(bench.to_numpy(fns["cppconv"]()), bench.to_numpy(fns["torch_cl"]()))
                t = bench.time_interleaved(fns, cfg)
                ratio = t["onnxruntime"].median_s / t["cppconv"].median_s
                ratios.append(ratio)
                versus_torch = [] if args.int8 else [f"{t['torch_cl'].median_s / t['cppconv'].median_s:.2f}x"]
                body.append([name, str(batch), f"{load_ms:.1f}", *(f"{t[k].median_s * 1e3:.3f}" for k in fns),
                             f"{ratio:.2f}x", *versus_torch, "ok" if ok else "MISMATCH"])
                print(bench.format_text(header, body[-1:]).splitlines()[-1], file=sys.stderr)
    print(bench.format_text(header, body))
    mean = bench.geomean(ratios)
    if mean is not None:
        print(f"geometric mean vs ONNX Runtime: {mean:.2f}x")
    return 0 if all(r[-1] == "ok" for r in body) else 1
