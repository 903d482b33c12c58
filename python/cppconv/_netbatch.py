"""Sub-batches and lanes (docs/design.md, "Sub-batches", "Batch lanes"): whether a network
computes each image of a batch apart from the others, so that a large batch may run as
consecutive smaller ones through one recorded program, and as lanes side by side, each on its
share of the threads; the sub-batch the cache rule picks; the threads that run the lanes."""

from __future__ import annotations

import dataclasses
import functools
import glob
import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, TypeVar

import numpy as np

from . import _native

T = TypeVar("T")

# The graph inputs' batch axis as shape inference names it (_network._symbolic_batch).
BATCH_SYMBOL = "N"


@dataclasses.dataclass(frozen=True)
class SplitProblem:
    """Why a network's images may not run apart (split_problem); prints as the reason."""

    reason: str
    # ONNX's shape inference lost the batch symbol (or put it on another axis too): values it
    # could not infer may settle it (_Planner._check_split_again).
    lost_batch: bool = False

    def __str__(self) -> str:
        return self.reason


# Operand positions where an operator reads a value computed from the inputs' shapes as a
# parameter (a size, a target shape, axes), not as data: a sub-batch computes it from its own
# size, as the operator then needs.
_SHAPE_OPERANDS: Dict[str, Set[int]] = {
    "Reshape": {1}, "Resize": {1, 2, 3}, "Pad": {1, 2, 3}, "Slice": {1, 2, 3, 4}, "Split": {1},
    "Squeeze": {1}, "Unsqueeze": {1}, "ReduceMean": {1}, "ConstantOfShape": {0},
}
# The lane threads a process may have at once (threads start only as calls' lanes need them).
_MOST_LANE_THREADS = 256
# The last-level cache assumed where the OS does not tell (a common server L3).
_FALLBACK_CACHE_BYTES = 32 << 20


def split_problem(nodes: Sequence[Any], known: Dict[str, np.ndarray], inputs: Sequence[str],
                  outputs: Sequence[str], dim_params: Dict[str, Tuple[str, ...]],
                  opset: int) -> Optional[SplitProblem]:
    """Why the network's images may not run apart (None where they may).  Every value computed
    from the inputs' data must keep the batch on its first axis and on no other (ONNX shape
    inference with the batch symbolic says so), no operator may work along that axis (a
    Softmax over it, a Concat or Slice of it, a ReduceMean over it, a BatchNormalization in
    training mode), and a value computed from the inputs' shapes (the batch size) may only be
    read as a parameter (_SHAPE_OPERANDS), never as data."""
    batch = {BATCH_SYMBOL}  # the symbols inference gave the batch size (a Resize may make another)
    data: Set[str] = set(inputs)
    from_shapes: Set[str] = set()

    def rank(name: str) -> Optional[int]:
        dims = dim_params.get(name)
        return None if dims is None else len(dims)

    def batch_first(name: str) -> bool:
        dims = dim_params.get(name)
        return bool(dims) and dims[0] in batch and not any(d in batch for d in dims[1:])  # type: ignore[index]

    for n in nodes:
        reads_data = any(i in data for i in n.inputs if i)
        shape_positions = [j for j, i in enumerate(n.inputs) if i and i in from_shapes]
        if n.op == "Shape" or (not reads_data and n.op != "ConstantOfShape"):
            if n.op == "Shape" or shape_positions:
                from_shapes.update(o for o in n.outputs if o)
            continue
        if not reads_data and not shape_positions:
            continue  # (a ConstantOfShape of a constant shape)
        if any(j not in _SHAPE_OPERANDS.get(n.op, ()) for j in shape_positions):
            return SplitProblem(f"{n.where()} reads the batch size as data")
        why = _along_batch(n, known, rank(n.inputs[0]) if n.inputs else None, opset) or \
            _constant_along_batch(n, known, rank(n.outputs[0]) if n.outputs else None)
        if why:
            return SplitProblem(f"{n.where()} {why}")
        if n.op == "Resize" and batch_first(n.inputs[0]):
            # (inference gives a Resize's output a new symbol, N times the scale: 1 keeps N)
            scales = known.get(n.input(1 if opset < 11 else 2))
            dims = dim_params.get(n.outputs[0])
            if scales is not None and scales.size and float(scales.ravel()[0]) == 1.0 and dims and dims[0]:
                batch.add(dims[0])
        for o in n.outputs:
            if o:
                if not batch_first(o):
                    return SplitProblem(f"{n.where()}: shape inference does not keep the batch on the first "
                                        f"axis of {o!r} alone", lost_batch=True)
                data.add(o)
    for o in outputs:
        if o not in data:
            return SplitProblem(f"graph output {o!r} is not computed from the inputs image by image")
    return None


def _along_batch(n: Any, known: Dict[str, np.ndarray], rank: Optional[int], opset: int) -> str:
    """What the node does along the batch axis (its first input's axis 0) that ties the images
    together, or ""."""
    def normalised(axis: int) -> Optional[int]:
        return None if rank is None else axis % rank if -rank <= axis < rank else None

    def const_axes(position: int, attribute: str) -> Optional[List[int]]:
        if attribute in n.attrs:
            return [int(a) for a in n.attrs[attribute]]
        if len(n.inputs) > position and n.inputs[position]:
            value = known.get(n.inputs[position])
            return None if value is None else [int(a) for a in np.ravel(value)]
        return []

    if n.op in ("Softmax", "LogSoftmax", "Concat", "Split", "Gather", "Flatten"):
        default = (1 if opset < 13 else -1) if n.op in ("Softmax", "LogSoftmax") else (1 if n.op == "Flatten" else 0)
        if normalised(int(n.attrs.get("axis", default))) in (0, None):
            return f"works along the batch axis (axis {n.attrs.get('axis', default)})"
    elif n.op == "Slice":
        axes = const_axes(3, "axes")
        if axes == []:  # (absent: the axes 0, 1, ... of the starts)
            starts = known.get(n.input(1)) if len(n.inputs) > 1 else n.attrs.get("starts")
            axes = None if starts is None else list(range(len(np.ravel(starts))))
        if axes is None or any(normalised(a) in (0, None) for a in axes):
            return "may slice the batch axis"
    elif n.op == "ReduceMean":
        axes = const_axes(1, "axes")
        if axes is None or (axes == [] and not n.attrs.get("noop_with_empty_axes", 0)) or \
                any(normalised(a) in (0, None) for a in axes):
            return "may reduce over the batch axis"
    elif n.op in ("MatMul", "Gemm") and rank == 2 and (len(n.inputs) < 2 or n.inputs[1] not in known):
        # (a computed matrix: NumPy's BLAS multiplies, and its sums follow the number of rows)
        return "multiplies the batch's rows by a computed matrix in NumPy's BLAS (its sums depend on the rows)"
    elif n.op == "BatchNormalization" and n.attrs.get("training_mode", 0):
        return "normalises over the batch (training mode)"
    elif n.op in ("QuantizeLinear", "DequantizeLinear") and normalised(int(n.attrs.get("axis", 1))) in (0, None):
        scale = known.get(n.input(1)) if len(n.inputs) > 1 else None
        if scale is None or scale.size > 1:
            return "quantizes with a scale for each index of the batch axis (axis 0)"
    return ""


# Operators whose operands broadcast against each other (ONNX's multidirectional broadcasting,
# PRelu's slope and Gemm's C unidirectionally): a constant operand of the output's rank with
# more than one row on axis 0 holds a value for each image of a batch of exactly that size.
_BROADCASTING = {"Add", "Sub", "Mul", "Div", "Sum", "PRelu", "Gemm"}


def _constant_along_batch(n: Any, known: Dict[str, np.ndarray], out_rank: Optional[int]) -> str:
    """How the node reads a constant image by image (a row of it for each image), or ""."""
    if n.op not in _BROADCASTING or out_rank is None:
        return ""
    for i in n.inputs[2:3] if n.op == "Gemm" else n.inputs:  # (Gemm's A and B are matrices, not broadcast)
        value = known.get(i) if i else None
        if value is not None and value.ndim == out_rank and value.shape[0] != 1:
            return f"reads constant {i!r} ({value.shape[0]} rows on the batch axis) image by image"
    return ""


def largest_step_bytes(steps: Sequence[Any], value_bytes: Any) -> int:
    """The most bytes one step reads and writes an image (its activation operands and results;
    a step that makes views moves nothing): value_bytes(name) gives a value's bytes at batch 1,
    None where not known (not counted)."""
    largest = 0
    for s in steps:
        if s.view:
            continue
        sizes = [value_bytes(v) for v in dict.fromkeys([*s.ins, *s.outs]) if v]
        largest = max(largest, sum(b for b in sizes if b))
    return largest


@functools.lru_cache(maxsize=1)
def cache_bytes() -> Tuple[int, str]:
    """The last-level data cache of the CPU the process runs on, and where the size came from
    (Linux sysfs: the highest cache level of CPU 0; else an assumed size)."""
    best = (0, 0)
    for index in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*"):
        try:
            with open(os.path.join(index, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(index, "level")) as f:
                level = int(f.read())
            with open(os.path.join(index, "size")) as f:
                text = f.read().strip()
        except (OSError, ValueError):
            continue
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        try:
            size = int(text[:-1]) * units[text[-1]] if text[-1:] in units else int(text)
        except ValueError:
            continue
        if kind in ("Data", "Unified") and (level, size) > best:
            best = (level, size)
    if best[1]:
        return best[1], f"L{best[0]} of CPU 0"
    return _FALLBACK_CACHE_BYTES, "assumed: the OS does not tell"


def even_split(n: int, count: int) -> List[Tuple[int, int]]:
    """n items in `count` pieces whose sizes differ by at most one (the larger first):
    [(first item, end), ...]."""
    bounds = [0, *itertools.accumulate(n // count + (k < n % count) for k in range(count))]
    return list(zip(bounds, bounds[1:]))


def parts(n: int, sub_batch: int) -> List[Tuple[int, int]]:
    """A batch of n in the fewest parts of at most sub_batch images, their sizes differing by at
    most one (the larger first): [(first image, end), ...]."""
    return even_split(n, -(-n // sub_batch))


def lanes(n: int, threads: int, most: Optional[int]) -> List[Tuple[int, int, int]]:
    """A batch of n images split between `threads` threads as lanes that run at once, each its
    images through the network on its own share of the threads: [(first image, end, threads)].
    As many lanes as threads (at most `most`, and one an image at least), images and threads
    shared out as evenly as they go (the larger shares first)."""
    count = max(1, min(n, threads, most or threads))
    return [(lo, hi, b - a) for (lo, hi), (a, b) in zip(even_split(n, count), even_split(threads, count))]


class LanePool:
    """Python threads that run calls' lanes besides the calling threads, each lane's native calls
    capped at its threads (``_native.set_thread_cap``): one executor for every network of the
    process, never replaced (its threads start as lanes arrive and serve any call, so concurrent
    calls' lanes run side by side), made again in a forked child (a fork keeps only the calling
    thread)."""

    def __init__(self) -> None:
        self._start()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._start)

    def _start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=_MOST_LANE_THREADS, thread_name_prefix="cppconv-lane")

    def run(self, jobs: Sequence[Tuple[int, Callable[[], None]]]) -> None:
        """Runs each (threads, job) at once, the first on the calling thread; returns when all
        have ended, raising the first lane's error if any failed.  (At interpreter exit, when no
        thread may start, the lanes run one after another on the calling thread.)"""
        futures, left = [], []
        for t, job in jobs[1:]:
            try:
                futures.append(self._executor.submit(capped, t, job))
            except RuntimeError:  # (the interpreter is shutting down)
                left.append((t, job))
        try:
            for t, job in [jobs[0], *left]:
                capped(t, job)
        finally:
            errors = [f.exception() for f in futures]  # (waits for every lane: they write the caller's rows)
        for e in errors:
            if e is not None:
                raise e


def capped(threads: int, job: Callable[[], T]) -> T:
    """job() with cppconv's native calls from this thread capped at `threads`."""
    previous = _native.set_thread_cap(threads)
    try:
        return job()
    finally:
        _native.set_thread_cap(previous)


LANE_POOL = LanePool()
