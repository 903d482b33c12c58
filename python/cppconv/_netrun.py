"""``cppconv run MODEL.onnx``: load a model, run it on random inputs, print the outputs' shapes
and the plan; ``--compare onnxruntime`` checks the outputs against ONNX Runtime, ``--bench``
times both (cppconv.bench's interleaved timer)."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from typing import Any, Callable, Dict, List

import numpy as np


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an ONNX model file")
    p.add_argument("--batch", type=int, default=1, metavar="N", help="batch size of the random inputs (default 1)")
    p.add_argument("--bench", action="store_true", help="time cppconv (and ONNX Runtime, if installed)")
    p.add_argument("--compare", choices=["onnxruntime"], help="check the outputs against ONNX Runtime's")
    p.add_argument("--threads", type=int, default=None, help="threads for cppconv and ONNX Runtime")
    p.add_argument("--precision", choices=["highest", "high"], default=None, help="cppconv's float32 precision")
    p.add_argument("--budget", type=float, default=1.0, help="--bench: sampling seconds per library (default 1)")


def random_feeds(model: Any, batch: int) -> Dict[str, np.ndarray]:
    """Random inputs for every graph input: batch on the batch inputs' first axis
    (_network.batch_inputs), the model's other sizes."""
    from onnx import helper

    from ._network import batch_inputs

    rng = np.random.default_rng(0)
    initializers = {t.name for t in model.graph.initializer}
    batched = set(batch_inputs(model.graph, initializers))
    feeds = {}
    for v in model.graph.input:
        if v.name in initializers:
            continue
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        if v.name in batched and dims:
            dims[0] = batch
        if any(d is None for d in dims):
            raise ValueError(f"input {v.name!r} has sizes the model does not fix ({dims}): cannot make a random input")
        shape = tuple(int(d) for d in dims if d is not None)
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type))
        feeds[v.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def _onnxruntime(model: Any, threads: Any) -> Callable[[Dict[str, np.ndarray]], List[np.ndarray]]:
    import onnxruntime as ort

    from ._network import free_batch

    data = free_batch(model).SerializeToString()  # ONNX Runtime refuses another batch size otherwise

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return lambda feeds: session.run(None, feeds)


def cmd_run(args: argparse.Namespace) -> int:
    import cppconv
    from cppconv import bench

    try:
        start = time.perf_counter()
        net = cppconv.onnx.load(args.model, num_threads=args.threads, precision=args.precision)
        load_s = time.perf_counter() - start
        model = cppconv._network.parse_model(args.model)
        feeds = random_feeds(model, args.batch)
    except (OSError, ValueError) as e:  # the file, or a model cppconv cannot run (ModelError names the node)
        message = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.filename else str(e)
        print(f"cppconv run: error: {message}", file=sys.stderr)
        return 1
    outputs = net.run(feeds)
    print(f"{args.model}: loaded and planned in {load_s * 1e3:.1f} ms; batch {args.batch}")
    for name, y in outputs.items():
        print(f"  output {name!r}: shape {y.shape}, dtype {y.dtype}")
    print(net.summary())
    status = 0
    ort_run = None
    if args.compare or args.bench:
        try:
            ort_run = _onnxruntime(model, args.threads)
        except ImportError:
            print("cppconv run: onnxruntime is not installed (pip install onnxruntime)", file=sys.stderr)
            if args.compare:
                return 1
    if args.compare and ort_run is not None:
        for name, ref in zip(net.output_names, ort_run(feeds)):
            ok, err = bench.compare(outputs[name], ref)
            print(f"  vs onnxruntime {name!r}: max abs difference {err:.3g} ({'ok' if ok else 'MISMATCH'})")
            status |= 0 if ok else 1
    if args.bench:
        fns: Dict[str, Callable[[], Any]] = {"cppconv": lambda: net.run(feeds)}
        if ort_run is not None:
            session = ort_run
            fns["onnxruntime"] = lambda: session(feeds)
        # The network has its threads (load's num_threads) and so has ONNX Runtime; NumPy's BLAS
        # (Gemm, MatMul) gets as many, without touching cppconv's process-wide setting.
        threads = args.threads or cppconv.get_num_threads()
        with contextlib.ExitStack() as stack:
            threadpoolctl = bench._import("threadpoolctl")
            if threadpoolctl is not None:
                stack.enter_context(threadpoolctl.threadpool_limits(limits=threads, user_api="blas"))
            timings = bench.time_interleaved(fns, bench.TimerConfig(budget_s=args.budget))
        base = timings["cppconv"].median_s
        body = [[name, f"{t.median_s * 1e3:.3f}", f"{args.batch / t.median_s:.1f}", f"{t.median_s / base:.2f}x"]
                for name, t in timings.items()]
        print(f"timing at batch {args.batch}, {threads} threads (median):")
        print(bench.format_text(["library", "ms", "images/s", "time vs cppconv"], body))
    return status
