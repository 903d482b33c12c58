#!/usr/bin/env python3
"""Benchmark cppconv.conv2d against NumPy, PyTorch, ONNX Runtime and SciPy.

A thin wrapper: the suite lives in the package (``cppconv.bench``) so that it also works
after ``pip install`` as ``cppconv bench``; this script runs the same program with the same
options (see ``--help``) and adds the checkout's git commit to the ``--json`` machine info.
"""

import os
import sys

from cppconv import bench

if __name__ == "__main__":
    sys.exit(bench.main(git_root=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
