"""Denormal inputs cost cppconv nothing: the same layers timed on normal data and on data full
of denormals (float32 values below 1.2e-38).

Standalone script:  python bench/bench_denormals.py [--quick] [--threads N] [--stat min]

The kernels run with flush-to-zero and denormals-are-zero set (and the caller's floating-point
state restored afterwards), so a denormal operand is read as zero and a denormal result
written as zero; without that, an operation on a denormal can take a hundred cycles or more on
many Intel cores (AMD Zen handles most of them at full speed).  For comparison the "numpy"
column times a NumPy matrix product of the same data (BLAS, which does not flush): whether it
slows down depends on the CPU.  "ratio" is denormal time over normal time; 1.00 means no
slowdown.  On an AMD EPYC (AVX-512), 1 and 2 threads: every cppconv ratio 0.98 - 1.06.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

import cppconv

from bench_pool import timeit  # the same timer as the pooling benchmark beside this file

STAT = statistics.median
TINY = np.float32(1e-39)  # a float32 denormal


def denormal_like(a: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """a with `fraction` of its entries replaced by denormals of the same sign."""
    out = a.copy()
    mask = rng.random(a.shape) < fraction
    out[mask] = np.sign(a[mask]) * TINY * rng.random(int(mask.sum())).astype(np.float32)
    return out


# (name, x shape, weight shape, conv2d keywords): a first layer, a ResNet 3x3, a depthwise layer.
LAYERS = [
    ("conv 3->32 3x3 s2", (1, 3, 224, 224), (32, 3, 3, 3), dict(stride=2, padding=1)),
    ("conv 64->64 3x3", (1, 64, 56, 56), (64, 64, 3, 3), dict(padding=1)),
    ("depthwise 128 3x3", (1, 128, 56, 56), (128, 1, 3, 3), dict(padding=1, groups=128)),
]


def main() -> None:
    global STAT
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="less time per row")
    parser.add_argument("--threads", type=int, default=None, help="cppconv.set_num_threads(N)")
    parser.add_argument("--stat", choices=["median", "min"], default="median")
    args = parser.parse_args()
    STAT = min if args.stat == "min" else statistics.median
    if args.threads:
        cppconv.set_num_threads(args.threads)
    min_time = 0.1 if args.quick else 0.5
    rng = np.random.default_rng(0)
    info = cppconv.info()
    print(f"cppconv {info['version']}  isa {info['isa']}  threads {info['threads']}  stat {args.stat}")
    print(f"{'layer':22s} {'data':16s} {'cppconv ms':>11s} {'ratio':>6s} {'numpy ms':>9s} {'ratio':>6s}")
    for name, xs, ws, kwargs in LAYERS:
        x = rng.standard_normal(xs).astype(np.float32)
        w = (rng.standard_normal(ws) * 0.1).astype(np.float32)
        layer = cppconv.Conv2d(w, **kwargs)
        base_c = base_n = None
        for label, data in (("normal", x), ("half denormal", denormal_like(x, 0.5, rng)),
                            ("all denormal", denormal_like(x, 1.0, rng))):
            t_c = timeit(lambda: layer(data), min_time, stat=STAT)
            mat = data.reshape(-1, data.shape[-1])[:512]
            t_n = timeit(lambda: mat @ mat.T, min_time, stat=STAT)
            base_c = base_c or t_c
            base_n = base_n or t_n
            print(f"{name:22s} {label:16s} {t_c * 1e3:11.3f} {t_c / base_c:6.2f} {t_n * 1e3:9.3f} {t_n / base_n:6.2f}")


if __name__ == "__main__":
    main()
