"""Benchmark cppconv's int8 convolution (QLinearConv semantics) against ONNX Runtime's QLinearConv
and cppconv's own float32 convolution, on a few suite layers.

Standalone script:  python bench/bench_quant.py [--threads 2] [--repeats 30] [--layouts NCHW,NHWC]

Each cell is the minimum over --repeats calls of wall time (--threads > 1) or of process CPU
time (--threads 1, the fairer measure on a loaded machine), after a warm-up call.  GOP/s counts
2 x outputs x C/groups x kh x kw.  ONNX Runtime runs NCHW (its QLinearConv's layout), uint8
activations, int8 weights with per-channel scales, intra-op threads = --threads.  The CPU
model is printed with the table.
"""

from __future__ import annotations

import argparse
import platform
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

import cppconv

try:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
except ImportError:  # pragma: no cover - optional peer
    ort = None

# name, C, K, H=W, kernel, stride, padding, groups
LAYERS: List[Tuple[str, int, int, int, int, int, int, int]] = [
    ("3x3 64->64 @56", 64, 64, 56, 3, 1, 1, 1),
    ("1x1 256->64 @56", 256, 64, 56, 1, 1, 0, 1),
    ("dw 3x3 144 @56", 144, 144, 56, 3, 1, 1, 144),
    ("7x7/2 3->64 @224", 3, 64, 224, 7, 2, 3, 1),
    ("3x3 256->256 @14", 256, 256, 14, 3, 1, 1, 1),
]


def best_time(fn: Callable[[], object], repeats: int, cpu: bool) -> float:
    clock = time.process_time if cpu else time.perf_counter
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ort_session(x: np.ndarray, params: Dict[str, np.ndarray], stride: int, padding: int, groups: int,
                threads: int) -> Optional[Callable[[], object]]:
    if ort is None:
        return None
    w = params["w"]
    names = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"]
    inits = [numpy_helper.from_array(np.asarray(params[n]), n) for n in names[1:]]
    kernel = list(w.shape[2:])
    node = helper.make_node("QLinearConv", names, ["y"], strides=[stride] * 2, pads=[padding] * 4, group=groups,
                            kernel_shape=kernel)
    graph = helper.make_graph([node], "q", [helper.make_tensor_value_info("x", TensorProto.UINT8, list(x.shape))],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"x": x})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--layouts", default="NCHW,NHWC")
    args = parser.parse_args()
    threads, cpu = args.threads, args.threads == 1
    layouts = args.layouts.split(",")
    print(f"CPU: {cpu_model()}; cppconv {cppconv.__version__} ISA {cppconv.info()['isa']}; {threads} thread(s); "
          f"{'min CPU time' if cpu else 'min wall time'} of {args.repeats}; batch {args.batch}; "
          f"onnxruntime {ort.__version__ if ort else 'not installed'}")
    head = ("| layer | " + " | ".join(f"int8 {layout}" for layout in layouts)
            + " | ORT QLinearConv | float32 NCHW | int8 algorithm |")
    print("\nGOP/s\n")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    rng = np.random.default_rng(0)
    ratios = []
    for name, c, k, hw, kernel, stride, padding, groups in LAYERS:
        x = rng.integers(0, 256, (args.batch, c, hw, hw)).astype(np.uint8)
        w = rng.integers(-127, 128, (k, c // groups, kernel, kernel)).astype(np.int8)
        params = dict(xs=np.float32(0.02), xz=np.uint8(128), w=w, ws=np.full(k, 0.001, np.float32),
                      wz=np.zeros(k, np.int8), ys=np.float32(0.5), yz=np.uint8(100),
                      b=rng.integers(-1000, 1000, k).astype(np.int32))
        out_hw = cppconv.conv_output_size(hw, kernel, stride, padding)
        ops = 2.0 * args.batch * k * out_hw**2 * (c // groups) * kernel**2
        cells = []
        algorithm = ""
        int8_nchw = None
        for layout in layouts:
            layer = cppconv.QConv2d(params["xs"], params["xz"], w, params["ws"], params["wz"], params["ys"],
                                    params["yz"], params["b"], stride=stride, padding=padding, groups=groups,
                                    layout=layout)
            xl = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
            t = best_time(lambda: layer(xl, num_threads=threads), args.repeats, cpu)
            algorithm = layer.explain(xl.shape)["algorithm"]
            if layout == "NCHW":
                int8_nchw = t
            cells.append(f"{ops / t / 1e9:.1f}")
        run_ort = ort_session(x, params, stride, padding, groups, threads)
        if run_ort is not None:
            t_ort = best_time(run_ort, args.repeats, cpu)
            cells.append(f"{ops / t_ort / 1e9:.1f}")
            if int8_nchw is not None:
                ratios.append(t_ort / int8_nchw)
        else:
            cells.append("-")
        conv = cppconv.Conv2d(rng.normal(size=w.shape).astype(np.float32), stride=stride, padding=padding,
                              groups=groups)
        xf = x.astype(np.float32)
        t_f = best_time(lambda: conv(xf, num_threads=threads), args.repeats, cpu)
        cells.append(f"{ops / t_f / 1e9:.1f}")
        print(f"| {name} | " + " | ".join(cells) + f" | {algorithm} |")
    if ratios:
        gm = float(np.exp(np.mean(np.log(ratios))))
        print("\nint8 NCHW over ONNX Runtime (time ratio ORT / cppconv): "
              + ", ".join(f"{r:.2f}" for r in ratios) + f"; geometric mean {gm:.2f}")


if __name__ == "__main__":
    main()
