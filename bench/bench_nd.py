#!/usr/bin/env python3
"""Benchmark conv1d and conv3d on real layers against PyTorch and ONNX Runtime (issue 14).

    python bench/bench_nd.py [--threads 2] [--budget 1.0] [--layers c3d_conv1,...] [--dtype f32|bf16] [--markdown F]

Each library runs each layer in the same process, sampled round-robin (cppconv.bench's timer:
median of repeated samples after warm-up); GFLOP/s count 2 flops per multiply-add.  Columns:
cppconv's one-shot function and its layer (Conv1d/Conv3d) channels-first, its layer
channels-last; PyTorch channels-first and (3-D) channels_last_3d; ONNX Runtime.  "vs best peer"
is the best peer's median over the best cppconv layer median.  Every output is checked
against PyTorch's.

With ``--dtype bf16`` x and the weight are ml_dtypes' bfloat16 (cppconv's bias float32,
PyTorch's bfloat16, as it needs), the peers PyTorch's bfloat16 convolutions (ONNX Runtime has
no bfloat16 Conv on the CPU), outputs checked against PyTorch's float32 convolution of the same
values with a tolerance of 1e-2 (bfloat16 keeps 8 significant bits), and the ``algorithm``
column names the kernel that runs: a bfloat16 one, or a float32 one on widened values.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

import cppconv
from cppconv import bench


@dataclass
class NdLayer:
    name: str
    batch: int
    cin: int
    cout: int
    size: Tuple[int, ...]  # spatial input size
    kernel: Tuple[int, ...]
    stride: Tuple[int, ...]
    padding: Tuple[int, ...]
    dilation: Tuple[int, ...] = ()
    groups: int = 1

    @property
    def rank(self) -> int:
        return len(self.size)

    def out_size(self) -> Tuple[int, ...]:
        dil = self.dilation or (1,) * self.rank
        return tuple(cppconv.conv_output_size(i, k, s, p, d)
                     for i, k, s, p, d in zip(self.size, self.kernel, self.stride, self.padding, dil))

    def flops(self) -> float:
        return 2.0 * self.batch * self.cout * math.prod(self.out_size()) * (self.cin // self.groups) * \
            math.prod(self.kernel)


LAYERS = [
    NdLayer("wav2vec2_conv0", 1, 1, 512, (16000,), (10,), (5,), (0,)),
    NdLayer("wav2vec2_conv1", 1, 512, 512, (3199,), (3,), (2,), (0,)),
    NdLayer("tcn_d8", 1, 64, 64, (4096,), (3,), (1,), (8,), (8,)),
    NdLayer("conformer_dw31", 1, 256, 256, (1000,), (31,), (1,), (15,), groups=256),
    NdLayer("pointwise_256_512_b4", 4, 256, 512, (1000,), (1,), (1,), (0,)),
    NdLayer("c3d_conv1", 1, 3, 64, (16, 112, 112), (3, 3, 3), (1, 1, 1), (1, 1, 1)),
    NdLayer("c3d_conv3a", 1, 128, 256, (8, 28, 28), (3, 3, 3), (1, 1, 1), (1, 1, 1)),
    NdLayer("unet3d_32", 1, 32, 32, (32, 32, 32), (3, 3, 3), (1, 1, 1), (1, 1, 1)),
    NdLayer("r2plus1d_spatial", 1, 64, 144, (8, 56, 56), (1, 3, 3), (1, 1, 1), (0, 1, 1)),
    NdLayer("r2plus1d_temporal", 1, 144, 64, (8, 56, 56), (3, 1, 1), (1, 1, 1), (1, 0, 0)),
    NdLayer("x3d_dw96", 1, 96, 96, (16, 28, 28), (3, 3, 3), (1, 1, 1), (1, 1, 1), groups=96),
    NdLayer("stem_1x3x3_s122", 1, 3, 24, (16, 112, 112), (1, 3, 3), (1, 2, 2), (0, 1, 1)),
]

LAST = {1: "NWC", 3: "NDHWC"}
FIRST = {1: "NCW", 3: "NCDHW"}


def _kwargs(layer: NdLayer) -> Dict[str, Any]:
    return dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation or 1, groups=layer.groups)


def _runners(layer: NdLayer, x: np.ndarray, w: np.ndarray, b: np.ndarray, threads: int,
             peers: List[str]) -> Dict[str, Callable[[], Any]]:
    """name -> a call that returns channels-first output."""
    r, kw = layer.rank, _kwargs(layer)
    function = cppconv.conv1d if r == 1 else cppconv.conv3d
    cls = cppconv.Conv1d if r == 1 else cppconv.Conv3d
    first = cls(w, b, **kw)
    last = cls(w, b, layout=LAST[r], **kw)
    x_last = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    fns: Dict[str, Callable[[], Any]] = {
        "cppconv": lambda: function(x, w, b, **kw),
        "layer": lambda: first(x),
        "layer_last": lambda: np.moveaxis(last(x_last), -1, 1),
    }
    if "torch" in peers:
        import torch

        conv = torch.nn.functional.conv1d if r == 1 else torch.nn.functional.conv3d
        tx, tw = bench._torch_tensor(x), bench._torch_tensor(w)
        tb = torch.from_numpy(b).to(tx.dtype)  # PyTorch's bfloat16 convolution takes a bfloat16 bias only
        targs = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation or 1, groups=layer.groups)
        fns["torch"] = lambda: conv(tx, tw, tb, **targs)
        if r == 3:
            fmt = torch.channels_last_3d
            txl, twl = tx.contiguous(memory_format=fmt), tw.contiguous(memory_format=fmt)
            fns["torch_cl"] = lambda: conv(txl, twl, tb, **targs)
    if "onnxruntime" in peers:
        fns["onnxruntime"] = _onnxruntime(layer, x, w, b, threads)
    return fns


def _onnxruntime(layer: NdLayer, x: np.ndarray, w: np.ndarray, b: np.ndarray, threads: int) -> Callable[[], Any]:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    out_shape = [layer.batch, layer.cout, *layer.out_size()]
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], strides=list(layer.stride),
                            pads=list(layer.padding) * 2, dilations=list(layer.dilation or (1,) * layer.rank),
                            group=layer.groups, kernel_shape=list(layer.kernel))
    graph = helper.make_graph(
        [node], layer.name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"x": x})[0]


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", type=float, default=1.0, help="sampling seconds per library and layer")
    ap.add_argument("--layers", default="", help="comma-separated layer names (default: all)")
    ap.add_argument("--dtype", choices=("f32", "bf16"), default="f32",
                    help="f32 (default); bf16: bfloat16 x and weight (needs ml_dtypes) against PyTorch's bfloat16")
    ap.add_argument("--markdown", default="", help="also write the table to this file")
    args = ap.parse_args(argv)
    layers = [la for la in LAYERS if not args.layers or la.name in args.layers.split(",")]
    bf16 = args.dtype == "bf16"
    if bf16 and bench._import("ml_dtypes") is None:
        ap.error("--dtype bf16 needs ml_dtypes, which is not installed: pip install ml_dtypes")
    peers = [p for p in ("torch", "onnxruntime") if bench._import(p) is not None and not (bf16 and p == "onnxruntime")]
    cfg = bench.TimerConfig(budget_s=args.budget)
    columns = ["cppconv", "layer", "layer_last", "torch", "torch_cl", "onnxruntime"]
    rows: List[List[str]] = []
    ratios: List[float] = []
    with contextlib.ExitStack() as stack:
        threads = bench.setup_threads(args.threads, peers, stack, lambda m: print(m, file=sys.stderr))
        info = bench.machine_info(threads)
        print(f"# {info['cpu_model']}, {threads} threads, FMA peak {info['fma_peak_gflops']:.0f} GFLOP/s, "
              f"cppconv {info['cppconv_version']} ({info['cppconv_isa']})", file=sys.stderr)
        for layer in layers:
            rng = np.random.default_rng(0)
            x = rng.standard_normal((layer.batch, layer.cin, *layer.size)).astype(np.float32)
            w = (rng.standard_normal((layer.cout, layer.cin // layer.groups, *layer.kernel)) * 0.1).astype(np.float32)
            b = rng.standard_normal(layer.cout).astype(np.float32)
            if bf16:
                bfloat16 = bench._import("ml_dtypes").bfloat16
                x, w = x.astype(bfloat16), w.astype(bfloat16)
            fns = _runners(layer, x, w, b, threads, peers)
            expected = None
            if "torch" in fns:
                expected = bench.to_numpy(fns["torch"]()) if not bf16 else bench.to_numpy(
                    _runners(layer, x.astype(np.float32), w.astype(np.float32), b, threads, ["torch"])["torch"]())
            for name, fn in fns.items():
                got = bench.to_numpy(fn())
                if expected is not None:
                    ok, err = bench.compare(got, expected, 1e-2 if bf16 else 1e-3)
                    if not ok:
                        raise SystemExit(f"{layer.name}: {name} differs from torch (relative error {err:.3g})")
            timings = bench.time_interleaved(fns, cfg)
            gf = {k: layer.flops() / t.median_s / 1e9 for k, t in timings.items()}
            ours = min(timings[k].median_s for k in ("layer", "layer_last"))
            peer_times = [timings[k].median_s for k in ("torch", "torch_cl", "onnxruntime") if k in timings]
            ratio = min(peer_times) / ours if peer_times else float("nan")
            ratios.append(ratio)
            plan = cppconv.explain(x.shape, w.shape, dtype=x.dtype, **_kwargs(layer))
            spread = max(t.spread for t in timings.values())
            rows.append([layer.name, f"{layer.flops() / 1e9:.3f}"] +
                        [f"{gf[c]:.1f}" if c in gf else "n/a" for c in columns] +
                        [f"{ratio:.2f}x", plan.get("lowering", ""), plan.get("algorithm", ""), f"{spread:.2f}"])
            print(" | ".join(rows[-1]), file=sys.stderr)
    header = (["layer", "GFLOP"] + [f"{c} GF/s" for c in columns] +
              ["vs best peer", "lowering", "algorithm (channels-first)", "max q75/q25"])
    finite = [r for r in ratios if r == r]
    summary = (f"geometric mean vs best peer: {bench.geomean(finite):.2f}x; layers at or above the best peer: "
               f"{sum(r >= 1 for r in finite)} of {len(finite)}") if finite else "no peers installed"
    lines = [f"dtype {args.dtype}; CPU: {info['cpu_model']}; {threads} threads; "
             f"FMA peak {info['fma_peak_gflops']:.0f} GFLOP/s; "
             f"versions {info['versions']}; cppconv {info['cppconv_version']} ({info['cppconv_isa']})", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", summary]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            command = f"python bench/bench_nd.py --threads {threads} --budget {args.budget} --dtype {args.dtype}"
            f.write(f"Command: {command}\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
