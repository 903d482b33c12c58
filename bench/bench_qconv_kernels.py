"""The int8 suite's layers (``cppconv bench --dtype int8``) on one thread, by kernel.

For each layer: the prepacked QConv2d layer as it chooses (its kernel named) and forced to each
dense int8 kernel that takes it (AMX, pointwise VNNI, VNNI), ONNX Runtime's QLinearConv
(``intra_op_num_threads=1``)
and cppconv's float32 Conv2d on the dequantized values, alternating round by round in one
process, each timed in thread CPU time (``time.thread_time``: a loaded machine's other
processes do not count), the minimum per call over the rounds.  Outputs are checked equal
across the kernels.  GOP/s at 2 operations a multiply-add.

    python bench/bench_qconv_kernels.py [--layers a,b] [--rounds 5] [--layout NCHW|NHWC]
"""

import argparse
import time

import numpy as np

import cppconv
from cppconv import _native
from cppconv.bench import LAYERS, LayerData, runner_cppconv_layer_f32, runner_onnxruntime

KERNELS = ("qconv_u8s8_amx__avx512_32x32", "qconv_pointwise_vnni__avx512_6x64", "qconv_u8s8_vnni__avx512_6x64")


def per_call(fn, budget):
    """Thread CPU seconds per call, over calls filling about `budget` seconds."""
    fn()
    start, calls = time.thread_time(), 0
    while True:
        fn()
        calls += 1
        spent = time.thread_time() - start
        if spent > budget:
            return spent / calls


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", help="comma-separated layer names (default: the int8 suite's, no sanity rows)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--budget", type=float, default=0.2, help="seconds of calls per sample")
    ap.add_argument("--layout", default="NCHW", choices=("NCHW", "NHWC"))
    args = ap.parse_args()
    cppconv.set_num_threads(1)
    names = args.layers.split(",") if args.layers else None
    layers = [la for la in LAYERS if (la.name in names if names else not la.two_d and not la.sanity)]
    print(f"cppconv {cppconv.__version__}, {cppconv.info()['cpu_features']}, one thread, layout {args.layout}")
    print("| layer | chosen | GOP/s | " + " | ".join(k.split("__")[0] for k in KERNELS) + " | ORT | f32 |")
    for layer in layers:
        d = LayerData.make(layer, dtype="int8")
        x = d.x if args.layout == "NCHW" else np.ascontiguousarray(d.x.transpose(0, 2, 3, 1))
        conv = cppconv.QConv2d(*d.qconv_args(), **layer.conv_kwargs, layout=args.layout)
        chosen = conv.explain(x.shape)["algorithm"]
        runs = {"chosen": lambda: conv(x, num_threads=1)}
        for kernel in KERNELS:
            if kernel not in _native.qconv_algorithms():
                continue
            try:
                conv._weights.explain(x.shape, x.dtype, kernel)
            except ValueError:
                continue
            runs[kernel] = (lambda k: lambda: conv._weights.run(x, None, 1, k))(kernel)
        runs["ort"] = runner_onnxruntime(layer, d, 1)
        runs["f32"] = runner_cppconv_layer_f32(layer, d, 1)
        outputs = {k: fn() for k, fn in runs.items() if k in KERNELS or k == "chosen"}
        first = next(iter(outputs.values()), None)
        same = all(np.array_equal(first, y) for y in outputs.values())
        best = {k: float("inf") for k in runs}
        order = list(runs)
        for r in range(args.rounds):
            for k in order if r % 2 == 0 else order[::-1]:
                best[k] = min(best[k], per_call(runs[k], args.budget))
        ops = 2.0 * layer.n * layer.k * np.prod(layer.out_hw) * (layer.c // layer.groups) * layer.kh * layer.kw
        cells = [f"{ops / best[k] / 1e9:.0f}" if k in best else "" for k in ("chosen", *KERNELS, "ort", "f32")]
        print(f"| {layer.name} | {chosen.split('__')[0]} | " + " | ".join(cells) + " |" +
              ("" if same else " OUTPUTS DIFFER"), flush=True)


if __name__ == "__main__":
    main()
