#!/usr/bin/env python3
"""Where a whole network's time goes, step by step, against ONNX Runtime's per-node profile.

    python tools/profile_network.py efficientnet_b0 [--batch 1] [--size 224] [--repeats 20] [--top 25]
                                    [--json out.json] [--tree TREE] [--int8 qdq|qoperator] [--python-loop]

The network of cppconv._models.vision_models is exported as bench/bench_networks.py does and run on
one thread by both libraries.  Each planned step of cppconv.Network is timed within --repeats
replays of its recorded program (`NetProgram.run_timed`: the native calls the step recorded,
their minimum thread CPU time, robust on a loaded host), and the run's own time outside its
steps; --python-loop times the steps as the Python loop runs them instead (a first call's
fresh arrays: large activations then pay for their pages); ONNX Runtime (all graph optimisations, one intra-op thread)
runs --repeats times with `SessionOptions.enable_profiling` and each node's minimum kernel time
is taken.  A cppconv step is paired with the ONNX Runtime nodes that compute the model nodes it
computes (its own and those fused into it; ORT/cppconv sums them, ONNX Runtime's layout
reorders left out); the table lists the --top slowest steps with the ratio ORT/cppconv (above
1: cppconv faster), then the totals by operator and the whole network's minimum thread CPU
time for each (docs/tuning.md, "Whole networks").  --tree imports cppconv from TREE instead (a
folder holding a `cppconv` package with its built `_native` module, as for tools/ab_nodes.py),
so that two builds can be profiled alike.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if "--tree" in sys.argv:  # before cppconv is imported: that tree's build, not the installed one
    TREE = os.path.abspath(sys.argv[sys.argv.index("--tree") + 1])
    sys.meta_path = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()]
    sys.path.insert(0, TREE)
import cppconv  # noqa: E402
from cppconv._models import onnx_networks, vision_models  # noqa: E402


def _min_thread_time(fn: Callable[[], Any], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        best = min(best, time.thread_time() - start)
    return best


def step_covers(net: Any) -> List[List[str]]:
    """The model nodes each step computes: its own and those fused into it (listed after it)."""
    step_of = {id(row): k for k, row in enumerate(net._step_rows)}
    covers: List[List[str]] = [[] for _ in net._step_rows]
    k = None
    for row in net._rows:
        k = step_of.get(id(row), k if row["became"].startswith("fused into") else None)
        if k is not None:
            covers[k].append(row["node"])
    return covers


def cppconv_program_steps(net: Any, x: np.ndarray, repeats: int) -> List[Dict[str, Any]]:
    """Each step's minimum thread time within replays of the network's recorded program (what
    a call runs from the second on: its arrays kept, none freshly allocated), from
    NetProgram.run_timed; a step's time is that of the native calls it recorded.  The run's own
    time outside its steps is the least of a whole call (net(x)) minus the least replay's."""
    from cppconv import _network

    recorded = [0] * len(net._steps)  # native calls each step recorded

    def counted(k: int, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            program = _network._recording.program
            before = len(program) if program is not None else 0
            result = fn(*args, **kwargs)
            if program is not None:
                recorded[k] = len(program) - before
            return result
        return call

    plain = net._steps
    net._steps = [(counted(k, fn), *rest) for k, (fn, *rest) in enumerate(plain)]
    net._programs.clear()
    try:
        net(x)
        net(x)  # (the second call with a shape records its program)
    finally:
        net._steps = plain
    natives = [e.native for e in net._programs.values() if getattr(e, "native", None) is not None]
    if len(natives) != 1:
        raise RuntimeError(f"no recorded program to time: {net.explain()['runs']}")
    best: List[float] = []
    best_replay = float("inf")
    for _ in range(repeats):
        times = natives[0].run_timed([np.ascontiguousarray(x)])
        best = times if not best else [min(a, b) for a, b in zip(best, times)]
        best_replay = min(best_replay, sum(times))
    per_step, first = [], 0
    for n in recorded:
        per_step.append(sum(best[first:first + n]))
        first += n
    outside = _min_thread_time(lambda: net(x), repeats) - best_replay
    return [{"node": row["node"], "op": row["op"], "became": row["became"], "nodes": nodes, "s": s}
            for row, nodes, s in zip(net._step_rows, step_covers(net), per_step)] + \
        [{"node": "(outside the steps)", "op": "(run)", "became": "", "nodes": [], "s": outside}]


def cppconv_steps(net: Any, x: np.ndarray, repeats: int) -> List[Dict[str, Any]]:
    """Each step's minimum thread time within whole runs of the network (as ONNX Runtime's
    profile times its nodes: with the caches as the steps before left them), each step's fn
    wrapped in a timer; and the run's own time outside its steps (the loop, buffer reuse, the
    input's checks and the result's copy: the least of whole run minus its steps)."""
    covers = step_covers(net)
    best = [float("inf")] * len(net._steps)
    this_run = [0.0] * len(net._steps)

    def timed(k: int, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            result = fn(*args, **kwargs)
            this_run[k] = time.thread_time() - start
            return result
        return call

    plain = net._steps
    net._steps = [(timed(k, fn), *rest) for k, (fn, *rest) in enumerate(plain)]
    outside = float("inf")  # the run's own time in its fastest run: whole minus its steps
    try:
        for _ in range(repeats):
            start = time.thread_time()
            net(x)
            whole = time.thread_time() - start
            best = [min(b, t) for b, t in zip(best, this_run)]
            outside = min(outside, whole - sum(this_run))
    finally:
        net._steps = plain
    return [{"node": row["node"], "op": row["op"], "became": row["became"], "nodes": nodes, "s": s}
            for row, nodes, s in zip(net._step_rows, covers, best)] + \
        [{"node": "(outside the steps)", "op": "(run)", "became": "", "nodes": [], "s": outside}]


def ort_nodes(data: bytes, x: np.ndarray, repeats: int) -> Dict[str, Dict[str, Any]]:
    """{node name: {"op", "s"}}: each node's minimum kernel time over repeats runs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "ort")
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        for _ in range(repeats):
            session.run(None, {"x": x})
        with open(session.end_profiling()) as f:
            events = json.load(f)
    nodes: Dict[str, Dict[str, Any]] = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        name = e["name"][: -len("_kernel_time")]
        s = e["dur"] * 1e-6
        node = nodes.setdefault(name, {"op": e.get("args", {}).get("op_name", "?"), "s": s})
        node["s"] = min(node["s"], s)
    return nodes


def model_node(ort_name: str) -> str:
    """The model node an ONNX Runtime node comes from: its NCHWc convolutions are named after
    their output ("<conv>_output_0_nchwc"), its fusions after the node they replace
    ("<mul>/QuickGeluFusion/")."""
    name = re.sub(r"/[A-Za-z]+Fusion/$", "", ort_name)
    return re.sub(r"_output_\d+(_nchwc)?$", "", name)


def whole(net: Any, data: bytes, x: np.ndarray, repeats: int) -> Dict[str, float]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    for _ in range(3):
        net(x)
        session.run(None, {"x": x})
    best = {"cppconv": float("inf"), "onnxruntime": float("inf")}
    for _ in range(repeats):  # alternating, so both see the same load
        best["cppconv"] = min(best["cppconv"], _min_thread_time(lambda: net(x), 1))
        best["onnxruntime"] = min(best["onnxruntime"], _min_thread_time(lambda: session.run(None, {"x": x}), 1))
    return best


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("network", choices=list(vision_models.ARCHITECTURES))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--json", help="write the steps, nodes and totals here")
    ap.add_argument("--python-loop", action="store_true",
                    help="time the steps as the Python loop runs them (fresh arrays, as a first call's), "
                         "not in the recorded program's replays")
    ap.add_argument("--tree", help="import cppconv from this folder (see above)")
    ap.add_argument("--int8", choices=["qdq", "qoperator"],
                    help="quantize the model first, as bench/bench_networks.py --int8 does")
    args = ap.parse_args(argv)
    module, shape = vision_models.build(args.network, args.size)
    data = onnx_networks.export(module, shape)
    if args.int8:
        from cppconv import _netbench

        data = _netbench._quantized(data, shape, args.int8)
    x = np.random.default_rng(0).standard_normal((args.batch, *shape[1:])).astype(np.float32)
    net = cppconv.onnx.load(data, num_threads=1)
    net(x)
    steps = (cppconv_steps if args.python_loop else cppconv_program_steps)(net, x, args.repeats)
    nodes = ort_nodes(data, x, args.repeats)
    totals = whole(net, data, x, args.repeats)
    print(f"# {args.network}, batch {args.batch}, {args.size}x{args.size}, one thread, min thread time over "
          f"{args.repeats}; load average {os.getloadavg()[0]:.1f}; cppconv from {os.path.dirname(cppconv.__file__)}")
    ort_by_node: Dict[str, float] = collections.defaultdict(float)
    for name, n in nodes.items():
        ort_by_node[model_node(name)] += n["s"]
    for s in steps:  # ONNX Runtime's time for the nodes the step computes
        s["ort_s"] = sum(ort_by_node.get(n, 0.0) for n in s["nodes"]) or None
    print(f"{'cppconv step (first node)':58} {'op':18} {'cppconv us':>10} {'ORT us':>8} {'ORT/cpp':>7}")
    for s in sorted(steps, key=lambda s: -s["s"])[: args.top]:
        ort_s = s["ort_s"]
        ratio = f"{ort_s / s['s']:.2f}" if ort_s else "-"
        ort_text = f"{ort_s * 1e6:.0f}" if ort_s else "-"
        print(f"{s['node'][-58:]:58} {s['op']:18} {s['s'] * 1e6:10.0f} {ort_text:>8} {ratio:>7}")
    print("\nby operator (the first node of each step; ONNX Runtime by its kernels' op names)")
    by_op: Dict[str, float] = collections.defaultdict(float)
    for s in steps:
        by_op[s["op"]] += s["s"]
    ort_op: Dict[str, float] = collections.defaultdict(float)
    for n in nodes.values():
        ort_op[n["op"]] += n["s"]
    for op, t in sorted(by_op.items(), key=lambda kv: -kv[1]):
        print(f"  cppconv {op:24} {t * 1e3:8.3f} ms")
    for op, t in sorted(ort_op.items(), key=lambda kv: -kv[1]):
        print(f"  ORT     {op:24} {t * 1e3:8.3f} ms")
    print(f"\nsum of steps: cppconv {sum(s['s'] for s in steps) * 1e3:.3f} ms ({len(steps) - 1} steps and the run), "
          f"ORT nodes {sum(n['s'] for n in nodes.values()) * 1e3:.3f} ms ({len(nodes)} nodes)")
    print(f"whole network, min thread time: cppconv {totals['cppconv'] * 1e3:.3f} ms, "
          f"ONNX Runtime {totals['onnxruntime'] * 1e3:.3f} ms, ORT/cppconv "
          f"{totals['onnxruntime'] / totals['cppconv']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"steps": steps, "ort": nodes, "whole": totals}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
