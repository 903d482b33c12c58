#!/usr/bin/env python3
"""Where a whole network's time goes: each planned step of cppconv.Network against ONNX Runtime's nodes.

    python tools/profile_steps.py NETWORK [--batch 1] [--repeats 20] [--top 25] [--json FILE]

NETWORK is one of tests/vision_models.py's architectures, exported as bench/bench_networks.py
exports it.  One thread on both sides, thread CPU time (`time.thread_time`), the minimum over
--repeats runs per step (robust on a loaded host, docs/tuning.md "Whole networks"): cppconv's
steps are timed in place (each planned step's fn wrapped); ONNX Runtime's nodes come from its
profile (`SessionOptions.enable_profiling`, `intra_op_num_threads=1`, kernel time per node).
Node names match where ONNX Runtime kept the model's node (it renames what it fuses or inserts,
such as its NCHWc reorders), so the totals per kind of node are the fair comparison: cppconv's
steps are grouped by what they became, ONNX Runtime's by operator.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from typing import Any, Dict, List, Tuple

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
import onnx_networks
import vision_models


def cppconv_steps(data: bytes, x: np.ndarray, repeats: int) -> Tuple[List[Dict[str, Any]], float]:
    """Per step: its row (node, op, became), input shape and minimum thread time; and the
    minimum thread time of whole runs (the Python between the steps included)."""
    import cppconv

    net = cppconv.onnx.load(data, num_threads=1)
    best = [float("inf")] * len(net._steps)
    shapes: List[Any] = [None] * len(net._steps)

    def timed(k: int, fn: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            result = fn(*args, **kwargs)
            best[k] = min(best[k], time.thread_time() - start)
            if shapes[k] is None and args and hasattr(args[0], "shape"):
                shapes[k] = tuple(args[0].shape)
            return result

        return run

    plain = list(net._steps)
    net._steps = [(timed(k, s[0]), *s[1:]) for k, s in enumerate(plain)]
    for _ in range(repeats):
        net(x)
    net._steps = plain
    whole = float("inf")
    for _ in range(repeats):
        start = time.thread_time()
        net(x)
        whole = min(whole, time.thread_time() - start)
    rows = [{**{k: v for k, v in row.items() if k in ("node", "op", "became", "algorithm")}, "shape": shape,
             "s": t} for row, shape, t in zip(net._step_rows, shapes, best)]
    return rows, whole


def ort_nodes(data: bytes, x: np.ndarray, repeats: int) -> Tuple[Dict[str, Dict[str, Any]], float]:
    """Per ONNX Runtime node: operator and minimum kernel time over the runs; and the minimum
    thread time of a whole run."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "ort")
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        whole = float("inf")
        for _ in range(repeats):
            start = time.thread_time()
            session.run(None, {"x": x})
            whole = min(whole, time.thread_time() - start)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    nodes: Dict[str, Dict[str, Any]] = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        name = e["name"][: -len("_kernel_time")]
        node = nodes.setdefault(name, {"op": e["args"].get("op_name", "?"), "s": float("inf")})
        node["s"] = min(node["s"], e["dur"] * 1e-6)
    return nodes, whole


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("network", choices=list(vision_models.ARCHITECTURES))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--top", type=int, default=25, help="steps listed, slowest first")
    ap.add_argument("--json", help="write both sides' per-step times here")
    ap.add_argument("--no-ort", action="store_true", help="cppconv's steps only")
    args = ap.parse_args()
    module, shape = vision_models.build(args.network, 224)
    data = onnx_networks.export(module, shape)
    x = np.random.default_rng(0).standard_normal((args.batch, *shape[1:])).astype(np.float32)
    steps, whole = cppconv_steps(data, x, args.repeats)
    ort, ort_whole = ({}, float("nan")) if args.no_ort else ort_nodes(data, x, args.repeats)
    total = sum(s["s"] for s in steps)
    print(f"# {args.network}, batch {args.batch}, 1 thread, min thread time of {args.repeats} runs")
    print(f"cppconv whole run {whole * 1e3:.3f} ms (steps {total * 1e3:.3f} ms); "
          f"ONNX Runtime whole run {ort_whole * 1e3:.3f} ms (nodes {sum(n['s'] for n in ort.values()) * 1e3:.3f} ms)")
    print(f"\n{'cppconv step':58s} {'input':>18s} {'ms':>8s} {'ORT ms':>8s}")
    for s in sorted(steps, key=lambda s: -s["s"])[: args.top]:
        peer = ort.get(s["node"])
        shape_text = "x".join(map(str, s["shape"])) if s["shape"] else "-"
        print(f"{(s['node'] + ' ' + s['became'].split(';')[0])[:58]:58s} {shape_text:>18s} {s['s'] * 1e3:8.3f} "
              f"{peer['s'] * 1e3 if peer else float('nan'):8.3f}")
    kinds: Dict[str, float] = collections.defaultdict(float)
    counts: Dict[str, int] = collections.Counter()
    for s in steps:
        kinds[s["became"].split(";")[0]] += s["s"]
        counts[s["became"].split(";")[0]] += 1
    print(f"\n{'cppconv, by what the step became':58s} {'steps':>6s} {'ms':>8s}")
    for k, t in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"{k[:58]:58s} {counts[k]:6d} {t * 1e3:8.3f}")
    if ort:
        ops: Dict[str, float] = collections.defaultdict(float)
        op_counts: Dict[str, int] = collections.Counter()
        for n in ort.values():
            ops[n["op"]] += n["s"]
            op_counts[n["op"]] += 1
        print(f"\n{'ONNX Runtime, by operator':58s} {'nodes':>6s} {'ms':>8s}")
        for k, t in sorted(ops.items(), key=lambda kv: -kv[1]):
            print(f"{k:58s} {op_counts[k]:6d} {t * 1e3:8.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cppconv": steps, "cppconv_whole_s": whole, "ort": ort, "ort_whole_s": ort_whole}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
