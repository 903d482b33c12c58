"""bfloat16 transposed convolution (issue 18): cppconv's stride phases on the bfloat16
convolution kernels ("new": the function, whose one-shot plan repacks the weights every call;
"new L": a ConvTranspose layer, packed once; "old L" the same layer forced onto the float32
route) against the float32 route the same call took before (x widened,
the float32 transposed-convolution kernel, the result rounded back: forced here by naming the
float32 algorithm the dispatcher picks, "old") and PyTorch's conv_transpose on bfloat16
tensors, in GFLOP/s (2 * N * C * K/groups * prod(kernel) * prod(input spatial) flops), median
of timed runs after warm-up, the three timed alternately round by round.

    python bench/bench_conv_transpose_bf16.py [--threads 2] [--rounds 7]
"""

from __future__ import annotations

import argparse
import time

import ml_dtypes
import numpy as np

import cppconv
from cppconv import _conv_transpose, _native

BF16 = np.dtype(ml_dtypes.bfloat16)

# name, rank, C, K, kernel, stride, padding, input spatial size, batch
LAYERS = [
    ("U-Net up 2x2/2 512->256 @28", 2, 512, 256, 2, 2, 0, 28, 1),
    ("U-Net up 2x2/2 256->128 @56", 2, 256, 128, 2, 2, 0, 56, 1),
    ("DCGAN 4x4/2 p1 256->128 @16", 2, 256, 128, 4, 2, 1, 16, 1),
    ("3x3/1 p1 64->64 @56", 2, 64, 64, 3, 1, 1, 56, 1),
    ("3-D 2x2x2/2 128->64 @16^3", 3, 128, 64, 2, 2, 0, 16, 1),
]


def median_time(fn, rounds):
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    cppconv.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"threads {args.threads}, isa {_native.selected_isa()}, torch {torch.__version__}")
    columns = " ".join(f"{c:>8}" for c in ("old", "new", "old L", "new L", "torch"))
    print(f"{'layer':32} {'layout':6} {columns}  GFLOP/s, new kernel")
    for name, rank, c, k, kernel, stride, padding, size, n in LAYERS:
        sizes = (size,) * rank
        x = rng.standard_normal((n, c, *sizes)).astype(np.float32).astype(BF16)
        w = (rng.standard_normal((c, k, *(kernel,) * rank)) / np.sqrt(c * kernel**rank)).astype(np.float32)
        w = w.astype(BF16)
        flops = 2.0 * n * c * k * kernel**rank * size**rank
        fn = {2: cppconv.conv_transpose2d, 3: cppconv.conv_transpose3d}[rank]
        tfn = {2: F.conv_transpose2d, 3: F.conv_transpose3d}[rank]
        tw = torch.from_numpy(w.astype(np.float32)).to(torch.bfloat16)
        for layout in ("NCHW", "NHWC") if rank == 2 else ("NCDHW", "NDHWC"):
            last = layout[-1] == "C"
            xl = np.ascontiguousarray(np.moveaxis(x, 1, -1)) if last else x
            spec = _conv_transpose._TransposeSpec(rank, stride, padding, 0, 1, 1, layout, None)
            f32 = _native.ConvTransposePlan(w.astype(np.float32), None)
            old_name = f32.explain(list(xl.shape), spec.native)["algorithm"]
            info = _native.ConvTransposePlan(w.view(np.uint16), None, bfloat16=True).explain(list(xl.shape),
                                                                                          spec.native)
            tx = torch.from_numpy(x.astype(np.float32)).to(torch.bfloat16)
            if last:
                tx = tx.contiguous(memory_format=torch.channels_last if rank == 2 else torch.channels_last_3d)
                tw_l = tw.contiguous(memory_format=torch.channels_last if rank == 2 else torch.channels_last_3d)
            else:
                tw_l = tw
            layer = {2: cppconv.ConvTranspose2d, 3: cppconv.ConvTranspose3d}[rank](w, stride=stride, padding=padding,
                                                                             layout=layout)
            runs = {
                "old": lambda: _conv_transpose._conv_transpose_with_algorithm(
                    old_name, xl, w, rank=rank, stride=stride, padding=padding, layout=layout),
                "old layer": lambda: layer._call_with_algorithm(old_name, xl),
                "new": lambda: fn(xl, w, stride=stride, padding=padding, layout=layout),
                "layer": lambda: layer(xl),
                "torch": lambda: tfn(tx, tw_l, stride=stride, padding=padding),
            }
            with torch.no_grad():
                for f in runs.values():
                    f()
                    f()
                times = {key: [] for key in runs}
                for _ in range(args.rounds):
                    for key, f in runs.items():
                        times[key].append(median_time(f, 1))
            g = {key: flops / np.median(t) / 1e9 for key, t in times.items()}
            values = " ".join(f"{g[key]:8.1f}" for key in ("old", "new", "old layer", "layer", "torch"))
            print(f"{name:32} {layout:6} {values}   "
                  f"{info['algorithm']} ({info['lowering']}, {info['phases']} phases; old {old_name})", flush=True)


if __name__ == "__main__":
    main()
