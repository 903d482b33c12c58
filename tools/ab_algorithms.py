"""Times two conv algorithms against each other on a few shapes, alternating rounds so that
host noise hits both alike, and prints the best median GFLOP/s of each (docs/tuning.md).

    python tools/ab_algorithms.py
"""

import time

import numpy as np

import cppconv
from cppconv._conv import _conv_with_algorithm

# (in channels, out channels, height = width, kernel height = width, stride)
SHAPES = [(8, 32, 112, 1, 1), (16, 64, 56, 1, 1), (32, 128, 56, 1, 1), (64, 64, 56, 1, 1), (32, 192, 28, 1, 1)]
ALGORITHMS = ("conv2d_channelvec_f32", "conv2d_pixelvec_f32")


def med(f, n=40):
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return np.median(ts)


rng = np.random.default_rng()
for c, k, h, kh, _stride in SHAPES:
    x = rng.random((1, c, h, h), dtype=np.float32)
    w = rng.random((k, c, kh, kh), dtype=np.float32)
    b = rng.random(k, dtype=np.float32)
    fl = 2 * c * k * h * h * kh * kh
    isa = cppconv._native.selected_isa()
    algs = [
        a
        for a in cppconv._native.conv_algorithms()
        if a.split("__")[-1].startswith(isa) and a.startswith(ALGORITHMS)
    ]
    fs = {a: (lambda a=a: _conv_with_algorithm(a, x, w, b)) for a in algs}
    for f in fs.values():
        f()
        f()
    best = {a: 1e9 for a in algs}
    for _round in range(6):
        for a, f in fs.items():
            best[a] = min(best[a], med(f))
    print(c, k, h, {a.split("_")[1]: round(fl / best[a] / 1e9, 1) for a in algs})
