#!/usr/bin/env python3
"""Benchmark whole networks: cppconv.onnx against ONNX Runtime and PyTorch.

A thin wrapper: the suite lives in the package (``cppconv._netbench``, ``cppconv bench
--networks``); this script runs it with all of its options (``--help``: --threads, --batches,
--networks, --size, --budget, --small, --int8).
"""

import sys

from cppconv import _netbench

if __name__ == "__main__":
    sys.exit(_netbench.main())
