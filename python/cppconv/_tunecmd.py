"""``cppconv tune``: fill the tuning cache (see cppconv.set_tuning) for the benchmark suite's
layers, or for the convolutions of an ONNX model, and print what each chose.

Each layer is built as ``cppconv.Conv2d`` (NCHW and NHWC, as the benchmark runs them) on the
benchmark's data; where more than one algorithm accepts the problem in the precision mode,
each is timed (one untimed call, then the median of five, round-robin) and the fastest is written to the
cache, which ``cppconv.set_tuning("cached")`` (or ``CPPCONV_TUNING=cached``) then uses.  A
model (``--model``) is loaded with ``cppconv.onnx.load`` and run once on random inputs with
tuning in mode "measure", so each of its convolutions measures on its own input shape.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, List

import numpy as np


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layers",
                   help="comma-separated benchmark layer names (default: the suite; see cppconv bench --list)")
    p.add_argument("--quick", action="store_true", help="skip the batched layers (batch 16, the batch-64 sanity rows)")
    p.add_argument("--layout", choices=("NCHW", "NHWC", "both"), default="both",
                   help="the layers' layout (default both, as the benchmark's columns)")
    p.add_argument("--threads", type=int, default=None, help="threads (default: cppconv.get_num_threads()); "
                                                             "a choice is cached per thread count")
    p.add_argument("--precision", choices=("highest", "high"), default=None,
                   help="float32 precision mode to tune for (default: cppconv.get_float32_precision())")
    p.add_argument("--force", action="store_true", help="measure again where the cache has a choice")
    p.add_argument("--model", metavar="MODEL.onnx", help="tune an ONNX model's convolutions instead of the suite")
    p.add_argument("--batch", type=int, default=1, metavar="N", help="--model: batch size of the random inputs")


def check_arguments(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    if args.batch < 1:
        p.error(f"--batch must be >= 1, got {args.batch}")
    if args.model and (args.layers or args.quick):
        p.error("--model tunes the model's layers: --layers and --quick are for the benchmark suite")


def _row(name: str, layout: str, choice: Any) -> List[str]:
    medians = choice.medians
    gain = ""
    if choice.heuristic in medians and choice.algorithm in medians and medians[choice.algorithm] > 0:
        gain = f"{medians[choice.heuristic] / medians[choice.algorithm]:.2f}x"
    ms = f"{medians[choice.algorithm] * 1e3:.3f}" if choice.algorithm in medians else ""
    return [name, layout, str(len(medians)) if medians else "-", choice.algorithm, choice.chosen_by, ms, gain]


def tune_suite(args: argparse.Namespace) -> int:
    import cppconv
    from cppconv import _tuning, bench

    layers = bench.select_layers(argparse.Namespace(layers=args.layers, quick=args.quick))
    layouts = ["NCHW", "NHWC"] if args.layout == "both" else [args.layout]
    rows: List[List[str]] = []
    for layer in layers:
        data = bench.LayerData.make(layer)
        for layout in layouts:
            if layer.two_d and layout == "NHWC":
                continue  # the 2-D form (H, W) has no channel axis
            x, w, b, kw = bench._cppconv_call(layer, data, "highest")
            if args.precision:
                kw["precision"] = args.precision
            if layout == "NHWC":
                x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
                kw["layout"] = "NHWC"
            conv = cppconv.Conv2d(w, b, **kw)
            choice = conv._tune(x, num_threads=args.threads, force=args.force)
            rows.append(_row(layer.name, layout, choice))
            print(f"[{layer.name} {layout}] {choice.algorithm} ({choice.chosen_by})", file=sys.stderr, flush=True)
    header = ["layer", "layout", "timed", "algorithm", "chosen by", "ms", "vs heuristic"]
    print(bench.format_text(header, rows))
    print(f"cache: {_tuning.tuning_dir()} (cppconv.set_tuning('cached') or CPPCONV_TUNING=cached uses it)")
    return 0


def tune_model(args: argparse.Namespace) -> int:
    import cppconv
    from cppconv import _netrun, _tuning

    try:
        net = cppconv.onnx.load(args.model, num_threads=args.threads, precision=args.precision)
        model = cppconv._network.parse_model(args.model)
        feeds = _netrun.random_feeds(model, args.batch)
    except (OSError, ValueError) as e:
        message = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.filename else str(e)
        print(f"cppconv tune: error: {message}", file=sys.stderr)
        return 1
    layers = [row["layer"] for row in net._rows if isinstance(row.get("layer"), cppconv._conv._ConvNd)]
    if args.force:
        for layer in layers:
            layer._choices.clear()
    before = _tuning._mode
    _tuning._mode = "measure"
    try:
        if args.force:
            _tuning._force = True
        net.run(feeds)
    finally:
        _tuning._mode = before
        _tuning._force = False
    rows = []
    for row in net._rows:
        layer = row.get("layer")
        if isinstance(layer, cppconv._conv._ConvNd):
            for choice in list(layer._choices.values())[-1:]:
                rows.append(_row(str(row["node"]), str(row["layout"]), choice))
    from cppconv import bench

    header = ["node", "layout", "timed", "algorithm", "chosen by", "ms", "vs heuristic"]
    print(bench.format_text(header, rows))
    print(f"{len(rows)} convolutions; cache: {_tuning.tuning_dir()}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    if args.model:
        return tune_model(args)
    return tune_suite(args)
