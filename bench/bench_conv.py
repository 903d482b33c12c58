#!/usr/bin/env python3
"""Benchmark cppconv.conv2d against NumPy, PyTorch, ONNX Runtime and SciPy.

A thin wrapper: the suite lives in the package (``cppconv.bench``) so that it also works
after ``pip install`` as ``cppconv bench``; this script runs the same program with the same
options (see ``--help``), adds the checkout's git commit to the machine info, and, unless
``--json`` or ``--markdown`` says otherwise, records the run in bench/results/latest.json and
bench/results/latest.md (the tables kept with the project are the other files there).
"""

import os
import sys

from cppconv import bench

if __name__ == "__main__":
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    argv = sys.argv[1:]
    if not any(a.startswith(("--json", "--markdown", "--list", "-h", "--help")) for a in argv):
        results = os.path.join(root, "bench", "results")
        os.makedirs(results, exist_ok=True)
        argv += ["--json", os.path.join(results, "latest.json"), "--markdown", os.path.join(results, "latest.md")]
    sys.exit(bench.main(argv, git_root=root))
