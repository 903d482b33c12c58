#!/usr/bin/env python3
"""What bfloat16 costs or saves cppconv against float32, beside PyTorch's bfloat16 convolution.

One thread, the calling thread's CPU time (time.thread_time), best of --repeat calls: the fair
measure on a loaded machine.  Prepacked cppconv layers write into a preallocated `out`, in the
layout --layout names; PyTorch gets bfloat16 tensors (its bias in bfloat16) in NCHW and
channels_last.  The bfloat16 layer runs the AVX512-BF16 kernel where the CPU has it (the
`algorithm` column), else the float32 kernels on widened values.  Also times the two
conversion passes against ml_dtypes' astype.  --widened adds the bfloat16 call through the
widened float32 path (the float32 layer's algorithm forced on the bfloat16 operands: the
conversion passes around it), the path a layer took before it had a bfloat16 kernel.  Needs
ml_dtypes and torch; the table is markdown for docs/tuning.md.
"""

import argparse
import time

import ml_dtypes
import numpy as np
import torch

import cppconv
from cppconv import _conv, _native

BF16 = np.dtype(ml_dtypes.bfloat16)
# name, x shape, weight shape, stride, padding, groups, dilation (layers of cppconv's bench suite)
LAYERS = [
    ("resnet_conv1", (1, 3, 224, 224), (64, 3, 7, 7), 2, 3, 1, 1),
    ("resnet_3x3_64@56", (1, 64, 56, 56), (64, 64, 3, 3), 1, 1, 1, 1),
    ("resnet_3x3_128@28", (1, 128, 28, 28), (128, 128, 3, 3), 1, 1, 1, 1),
    ("resnet_3x3_256@14", (1, 256, 14, 14), (256, 256, 3, 3), 1, 1, 1, 1),
    ("resnet_3x3_512@7", (1, 512, 7, 7), (512, 512, 3, 3), 1, 1, 1, 1),
    ("1x1_256to64@56", (1, 256, 56, 56), (64, 256, 1, 1), 1, 0, 1, 1),
    ("1x1_64to256@56", (1, 64, 56, 56), (256, 64, 1, 1), 1, 0, 1, 1),
    ("1x1_512to1024_s2@28", (1, 512, 28, 28), (1024, 512, 1, 1), 2, 0, 1, 1),
    ("dilated_256@28_d2", (1, 256, 28, 28), (256, 256, 3, 3), 1, 2, 1, 2),
    ("resnet_7x7_512@7", (1, 512, 7, 7), (512, 512, 7, 7), 1, 3, 1, 1),
    ("resnext_128@28_g32", (1, 128, 28, 28), (128, 4, 3, 3), 1, 1, 32, 1),
    ("dw_144@56", (1, 144, 56, 56), (144, 1, 3, 3), 1, 1, 144, 1),
    ("dw_384@14_s2", (1, 384, 14, 14), (384, 1, 3, 3), 2, 1, 384, 1),
]


def best_seconds(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return min(times)


def torch_tensor(a):
    """torch.from_numpy knows no bfloat16: share the bits as int16 and view them."""
    return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16) if a.dtype == BF16 else torch.from_numpy(a)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--layout", choices=("NCHW", "NHWC"), default="NCHW", help="cppconv's layout")
    ap.add_argument("--layers", default="", help="comma-separated names (default: all)")
    ap.add_argument("--widened", action="store_true", help="also time the widened float32 path (conv2d, forced)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cppconv.set_num_threads(1)
    rng = np.random.default_rng(0)
    print(f"| layer ({args.layout}) | float32 Conv2d ms | bfloat16 Conv2d ms | float32 / bfloat16 | "
          "torch bfloat16 NCHW ms | torch bfloat16 channels_last ms | best torch / bfloat16 | bfloat16 GFLOP/s | "
          "algorithm |" + (" widened bfloat16 conv2d ms |" if args.widened else ""))
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|" + ("---:|" if args.widened else ""))
    only = set(filter(None, args.layers.split(",")))
    with torch.inference_mode():
        for name, x_shape, w_shape, stride, padding, groups, dilation in LAYERS:
            if only and name not in only:
                continue
            x = rng.standard_normal(x_shape).astype(np.float32)
            w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(np.float32)
            b = rng.standard_normal(w_shape[0]).astype(np.float32)
            xb, wb = x.astype(BF16), w.astype(BF16)
            kw = dict(stride=stride, padding=padding, groups=groups, dilation=dilation, layout=args.layout)
            xl = x if args.layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
            xbl = xl.astype(BF16)
            float32_layer, bfloat16_layer = cppconv.Conv2d(w, b, **kw), cppconv.Conv2d(wb, b, **kw)
            info = bfloat16_layer.explain(xbl.shape, BF16)
            out32 = np.empty(info["output_shape"], np.float32)
            out16 = np.empty(out32.shape, BF16)
            t32 = best_seconds(lambda: float32_layer(xl, out=out32), args.repeat)
            t16 = best_seconds(lambda: bfloat16_layer(xbl, out=out16), args.repeat)
            tx, tw, tb = torch_tensor(xb), torch_tensor(wb), torch.from_numpy(b).to(torch.bfloat16)
            conv = torch.nn.functional.conv2d
            nchw = best_seconds(lambda: conv(tx, tw, tb, stride, padding, dilation, groups), args.repeat)
            cx, cw = (t.contiguous(memory_format=torch.channels_last) for t in (tx, tw))
            last = best_seconds(lambda: conv(cx, cw, tb, stride, padding, dilation, groups), args.repeat)
            widened = ""
            if args.widened:
                f32_algorithm = float32_layer.explain(xl.shape)["algorithm"]
                tw16 = best_seconds(
                    lambda: _conv._conv_with_algorithm(f32_algorithm, xbl, wb, b, out=out16, **kw), args.repeat
                )
                widened = f" {tw16 * 1e3:.3f} |"
            print(f"| {name} | {t32 * 1e3:.3f} | {t16 * 1e3:.3f} | {t32 / t16:.2f} | {nchw * 1e3:.3f} | "
                  f"{last * 1e3:.3f} | {min(nchw, last) / t16:.2f} | {info['flops'] / t16 / 1e9:.0f} | "
                  f"{info['algorithm']} |{widened}", flush=True)
    n = 1 << 22
    values = rng.standard_normal(n).astype(np.float32)
    narrow, wide = np.empty(n, np.uint16), np.empty(n, np.float32)
    down = best_seconds(lambda: _native.float32_to_bf16(values, narrow, 1), args.repeat)
    up = best_seconds(lambda: _native.bf16_to_float32(narrow, wide, 1), args.repeat)
    down_ml = best_seconds(lambda: values.astype(BF16), args.repeat)
    up_ml = best_seconds(lambda: narrow.view(BF16).astype(np.float32), args.repeat)
    print(f"\nconversion passes, {n} values, 1 thread: float32->bfloat16 {n / down / 1e9:.2f} Gvalues/s "
          f"(ml_dtypes astype {n / down_ml / 1e9:.2f}), bfloat16->float32 {n / up / 1e9:.2f} "
          f"(ml_dtypes {n / up_ml / 1e9:.2f})")


if __name__ == "__main__":
    main()
