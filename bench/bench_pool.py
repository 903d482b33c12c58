"""Benchmark cppconv's pooling and transposed convolution against NumPy and PyTorch.

Standalone script:  python bench/bench_pool.py [--quick] [--layouts NCHW,NHWC] [--threads N]

Each row is timed as the median (--stat min: the minimum) of repeats after a warm-up call.  Pools report GB/s (bytes
of input read plus output written, float32), the transposed convolution GFLOP/s (2 x input
pixels x C x K x kh x kw).  PyTorch (torch.nn.functional, same thread count, channels_last
for NHWC) is used when installed; "speedup" is PyTorch's time over cppconv's (or NumPy's
when PyTorch is missing).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, List, Optional

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

import cppconv

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - optional peer
    torch = None


STAT = statistics.median


def timeit(fn: Callable[[], object], min_time: float, min_repeats: int = 5,
           stat: Optional[Callable[[List[float]], float]] = None) -> float:
    """Median (or --stat min, or `stat`) seconds per call, after one warm-up call."""
    fn()
    times: List[float] = []
    start = time.perf_counter()
    while len(times) < min_repeats or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 200:
            break
    return (stat or STAT)(times)


# NumPy references (sliding_window_view), NCHW.
def np_max_pool(x: np.ndarray, k: int, s: int, p: int) -> np.ndarray:
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
    return sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::s, ::s].max(axis=(-2, -1))


def np_avg_pool(x: np.ndarray, k: int, s: int) -> np.ndarray:
    return sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s].mean(axis=(-2, -1))


def np_global_avg(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=(2, 3), keepdims=True)


def np_conv_transpose(x: np.ndarray, w: np.ndarray, s: int, p: int) -> np.ndarray:
    n, c, h, wd = x.shape
    _, k, kh, kw = w.shape
    full = np.zeros((n, k, (h - 1) * s + kh, (wd - 1) * s + kw), x.dtype)
    for i in range(kh):
        for j in range(kw):
            full[:, :, i:i + (h - 1) * s + 1:s, j:j + (wd - 1) * s + 1:s] += np.einsum("nchw,ck->nkhw", x,
                                                                                    w[:, :, i, j])
    return full[:, :, p:full.shape[2] - p, p:full.shape[3] - p]


def to_layout(a: np.ndarray, layout: str) -> np.ndarray:
    return a if layout == "NCHW" else np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def torch_input(a: np.ndarray, layout: str):
    t = torch.from_numpy(a)
    return t if layout == "NCHW" else t.contiguous(memory_format=torch.channels_last)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter timing (noisier)")
    ap.add_argument("--layouts", default="NCHW", help="comma-separated: NCHW,NHWC")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--stat", choices=["median", "min"], default="median",
                    help="min is steadier on a machine shared with other work")
    args = ap.parse_args()
    global STAT
    STAT = statistics.median if args.stat == "median" else min
    if args.threads:
        cppconv.set_num_threads(args.threads)
    threads = cppconv.get_num_threads()
    if torch is not None:
        torch.set_num_threads(threads)
    min_time = 0.2 if args.quick else 1.0
    rng = np.random.default_rng(0)
    info = cppconv.info()
    print(f"cppconv {info['version']} isa={info['isa']} threads={threads} stat={args.stat}"
          f"  torch={torch.__version__ if torch is not None else 'not installed'}  numpy={np.__version__}")
    header = (f"{'row':44s} {'layout':6s} {'N':>3s} {'cppconv ms':>10s} {'rate':>12s} {'numpy ms':>10s} "
              f"{'torch ms':>10s} {'torch rate':>12s} {'speedup':>8s}")
    print(header)
    print("-" * len(header))

    for layout in args.layouts.split(","):
        layout = layout.strip().upper()
        for n in [int(b) for b in args.batches.split(",")]:
            rows = []
            # name, input (NCHW), cppconv fn, numpy fn, torch fn, output shape NCHW, flops or None
            x = rng.standard_normal((n, 64, 112, 112)).astype(np.float32)
            rows.append(("max_pool2d 3x3 s2 p1, 64@112", x,
                         lambda a: cppconv.max_pool2d(a, 3, 2, 1, layout=layout),
                         lambda a: np_max_pool(a, 3, 2, 1),
                         lambda t: F.max_pool2d(t, 3, 2, 1), (n, 64, 56, 56), None))
            x = rng.standard_normal((n, 256, 56, 56)).astype(np.float32)
            rows.append(("avg_pool2d 2x2 s2, 256@56", x,
                         lambda a: cppconv.avg_pool2d(a, 2, layout=layout),
                         lambda a: np_avg_pool(a, 2, 2),
                         lambda t: F.avg_pool2d(t, 2), (n, 256, 28, 28), None))
            x = rng.standard_normal((n, 2048, 7, 7)).astype(np.float32)
            rows.append(("global_avg_pool2d, 2048@7", x,
                         lambda a: cppconv.global_avg_pool2d(a, layout=layout),
                         np_global_avg,
                         lambda t: F.adaptive_avg_pool2d(t, 1), (n, 2048, 1, 1), None))
            x = rng.standard_normal((n, 256, 14, 14)).astype(np.float32)
            w = (rng.standard_normal((256, 128, 4, 4)) * 0.05).astype(np.float32)
            layer = cppconv.ConvTranspose2d(w, stride=2, padding=1, layout=layout)
            tw = torch.from_numpy(w) if torch is not None else None
            flops = 2.0 * n * 256 * 14 * 14 * 128 * 16
            rows.append(("conv_transpose2d 4x4 s2 p1, 256@14->128@28", x,
                         layer,
                         lambda a: np_conv_transpose(a, w, 2, 1),
                         lambda t: F.conv_transpose2d(t, tw, stride=2, padding=1), (n, 128, 28, 28), flops))

            for name, x, ours, ref, theirs, out_shape, flops in rows:
                xl = to_layout(x, layout)
                t_ours = timeit(lambda: ours(xl), min_time)
                t_np: Optional[float] = timeit(lambda: ref(x), min_time / 2, 2) if (flops is None or n == 1) else None
                t_torch: Optional[float] = None
                if torch is not None:
                    tx = torch_input(x, layout)
                    with torch.inference_mode():
                        t_torch = timeit(lambda: theirs(tx), min_time)
                nbytes = (x.size + int(np.prod(out_shape))) * 4

                def rate(t: float) -> str:
                    if flops is None:
                        return f"{nbytes / t / 1e9:8.1f} GB/s"
                    return f"{flops / t / 1e9:6.1f} GFLOP/s"

                base = t_torch if t_torch is not None else t_np
                print(f"{name:44s} {layout:6s} {n:3d} {t_ours * 1e3:10.3f} {rate(t_ours):>12s} "
                      f"{(t_np * 1e3 if t_np else float('nan')):10.3f} "
                      f"{(t_torch * 1e3 if t_torch else float('nan')):10.3f} "
                      f"{(rate(t_torch) if t_torch else '-'):>12s} {(base / t_ours if base else float('nan')):7.2f}x",
                      flush=True)


if __name__ == "__main__":
    main()
