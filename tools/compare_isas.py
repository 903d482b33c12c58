#!/usr/bin/env python3
"""Checks that cppconv gives the same results under every ISA cap this machine supports.

For each ISA in ``cppconv.info()["available_isas"]`` a fresh interpreter starts with
``CPPCONV_MAX_ISA=<isa>`` (the cap applies at import, as on a machine without the stronger
ISAs), checks that ``cppconv.info()["isa"]`` is that ISA, and computes a fixed set of
convolutions; the results must agree with the float64 reference to float32 accuracy
(kernels differ in summation order, so bit-for-bit equality is not expected).

Usage: python tools/compare_isas.py   (with the cppconv to check installed)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np

# (x shape, weight shape, conv2d keyword arguments): dense, strided, depthwise, NHWC, 1x1.
PROBLEMS = [
    ((2, 8, 19, 23), (16, 8, 3, 3), dict(padding=1)),
    ((1, 3, 32, 32), (8, 3, 5, 5), dict(stride=2, padding=2, activation="relu")),
    ((1, 16, 20, 20), (16, 1, 3, 3), dict(padding=1, groups=16)),
    ((1, 12, 14, 24), (20, 24, 3, 3), dict(padding="same", layout="NHWC")),
    ((1, 32, 9, 9), (64, 32, 1, 1), dict()),
]

CHILD = """
import sys, numpy as np, cppconv
from tools_problems import PROBLEMS
isa = cppconv.info()["isa"]
assert isa == sys.argv[1], f"CPPCONV_MAX_ISA={sys.argv[1]} but cppconv chose {isa}"
rng = np.random.default_rng(0)
out = {}
for i, (xs, ws, kw) in enumerate(PROBLEMS):
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    out[f"y{i}"] = cppconv.conv2d(x, w, **kw)
    out[f"ref{i}"] = cppconv.conv2d(x.astype(np.float64), w.astype(np.float64), **kw)
np.savez(sys.argv[2], **out)
"""


def main() -> int:
    import cppconv

    isas = list(cppconv.info()["available_isas"])
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "tools_problems.py"), "w") as f:
            f.write(f"PROBLEMS = {PROBLEMS!r}\n")
        results = {}
        for isa in isas:
            path = os.path.join(tmp, f"{isa}.npz")
            env = dict(os.environ, CPPCONV_MAX_ISA=isa)
            subprocess.run([sys.executable, "-c", CHILD, isa, path], check=True, env=env, cwd=tmp)
            results[isa] = np.load(path)
        worst = 0.0
        for isa, res in results.items():
            for i in range(len(PROBLEMS)):
                y, ref = res[f"y{i}"], results[isas[0]][f"ref{i}"]
                err = float(np.max(np.abs(y - ref)) / max(float(np.max(np.abs(ref))), 1e-30))
                worst = max(worst, err)
                if err > 1e-5:
                    print(f"MISMATCH: {isa} problem {i} {PROBLEMS[i]}: relative error {err:.3g}")
                    return 1
    print(f"ISAs {', '.join(isas)} agree on {len(PROBLEMS)} problems (worst relative error {worst:.2g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
