#!/usr/bin/env python3
"""Regenerates python/cppconv/data/sample.png, the demo's default picture (no downloads).

The picture is cppconv._demo.synthetic_scene(); tests check the shipped file matches it.
Run from the repository root with cppconv installed: python tools/make_sample_image.py
"""

import os

from cppconv import _demo, _png

if __name__ == "__main__":
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, "python", "cppconv", "data", _demo.SAMPLE_IMAGE)
    _png.write_png(path, _demo.synthetic_scene())
    print(path)
