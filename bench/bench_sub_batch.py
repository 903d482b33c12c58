#!/usr/bin/env python3
"""Sub-batches and lanes (docs/design.md, "Sub-batches", "Batch lanes"): a network's batch run
whole on all the threads against the same batch in sub-batches (one lane), in the lanes and
sub-batches load chooses (the default), and ONNX Runtime, in one process.

    python bench/bench_sub_batch.py [--networks mobilenet_v2,...] [--batch 16] [--threads 2]
                                    [--rounds 15] [--sub-batches auto,8]

Per round every runner is called once, in alternating order, each after a pause of 20 ms
(ONNX Runtime's threads spin on after its run returns and would slow the next runner's
threads down); each round gives the ratio of the whole batch's time to each runner's (above
1: faster than whole), and of ONNX Runtime's to each (above 1: faster than ONNX Runtime); the
table gives their medians over the rounds (paired ratios: the machine's load changes between
rounds much more than within one).  The networks are cppconv._models.vision_models' at 224x224; the
outputs are checked bit for bit against the whole batch's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

import cppconv
from cppconv._models import onnx_networks, vision_models


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", default="mobilenet_v2,efficientnet_b0,regnet_x_400mf,resnet50")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15, help="rounds of paired calls (default 15)")
    ap.add_argument("--sub-batches", default="auto", help="comma-separated: auto (load's choice) or ints")
    args = ap.parse_args(argv)
    import onnxruntime as ort

    print(f"batch {args.batch}, {args.threads} threads, {args.rounds} rounds; median of paired ratios")
    print("| network | runner | images a part, by lane | ms (median) | whole / this | ORT / this |")
    print("|---|---|---:|---:|---:|---:|")
    for name in args.networks.split(","):
        module, shape = vision_models.build(name, 224)
        data = onnx_networks.export(module, shape)
        x = np.random.default_rng(0).standard_normal((args.batch, *shape[1:])).astype(np.float32)
        nets = {"whole": cppconv.onnx.load(data, num_threads=args.threads, sub_batch=args.batch, lanes=1)}
        for word in args.sub_batches.split(","):
            nets[f"parts {word}"] = cppconv.onnx.load(data, num_threads=args.threads, lanes=1,
                                                      sub_batch=None if word == "auto" else int(word))
        nets["lanes"] = cppconv.onnx.load(data, num_threads=args.threads)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        runners: Dict[str, Callable[[], Any]] = {k: (lambda net=net: net(x)) for k, net in nets.items()}
        runners["onnxruntime"] = lambda: session.run(None, {"x": x})[0]
        want = None
        for key, fn in runners.items():
            for _ in range(3):  # (the second call records the program, the third replays it)
                y = fn()
            if key == "whole":
                want = y
            elif key != "onnxruntime" and not np.array_equal(y, want):
                print(f"{name} {key}: outputs differ from the whole batch's", file=sys.stderr)
                return 1
        times: Dict[str, List[float]] = {k: [] for k in runners}
        order = list(runners)
        for r in range(args.rounds):
            for key in order if r % 2 == 0 else order[::-1]:
                time.sleep(0.02)
                start = time.perf_counter()
                runners[key]()
                times[key].append(time.perf_counter() - start)
        for key in runners:
            whole = statistics.median(a / b for a, b in zip(times["whole"], times[key]))
            versus = statistics.median(a / b for a, b in zip(times["onnxruntime"], times[key]))
            sub = _split_words(nets[key], args.batch, args.threads) if key in nets else "-"
            print(f"| {name} | {key} | {sub} | {statistics.median(times[key]) * 1e3:.1f} | {whole:.3f} | "
                  f"{versus:.3f} |", flush=True)
    return 0


def _split_words(net: Any, batch: int, threads: int) -> str:
    """How a call of `batch` images runs: its lanes' sub-batch sizes ("4+4 | 4+4": two lanes of
    two parts of 4)."""
    x = [np.empty((batch,), np.float32)]
    lanes = net._lanes(x) or [(threads, [(0, batch)])]
    return " \\| ".join("+".join(str(hi - lo) for lo, hi in bounds) for _, bounds in lanes)


if __name__ == "__main__":
    sys.exit(main())
