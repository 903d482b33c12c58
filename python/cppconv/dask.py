"""cppconv on Dask arrays: the same numbers as one in-memory call, for any chunking.

``conv1d/conv2d/conv3d`` and the max/avg pools take a ``dask.array.Array`` and the in-memory
function's keywords and return a lazy array whose chunks are known when the graph is built;
:func:`apply` maps a layer (or any picklable callable on a batch) over batch chunks.

How the numbers stay equal to the whole-array call:
  - the padding is resolved once for the whole array; zero padding reaches the kernel as the
    edge chunks' own padding, the other modes (PyTorch's reflect, replicate, circular,
    symmetric, whose values may come from the far side of the array) are copied into the edge
    chunks first;
  - output chunks start on the stride (an output chunk [o0, o1) reads the input from
    o0 * stride on), each with an after-halo of ``dilation * (k - 1) + 1 - stride`` from its
    next neighbour; chunks are merged until each is at least that halo, so one neighbour per
    axis is enough;
  - the algorithm the whole problem would run (``cppconv.explain``) is pinned in every chunk,
    and chunk boundaries are aligned to Winograd's 2x2 output tiles when it runs, so the chunk
    shape never changes an output's arithmetic; chunks too small for that algorithm are merged;
  - the channel axis is one chunk; the batch axis keeps any chunking.

Threads: each call inside a Dask worker uses the worker's share of the cores (cores / worker
threads), capped by cppconv's own setting, which follows the ``OMP_NUM_THREADS`` that Dask's
nanny sets (1 by default); ``num_threads=`` overrides both.  Never cores x worker threads.

Needs ``dask[array]`` (and ``distributed`` for clusters): ``pip install cppconv[dask]``.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import operator
import os
import sys
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

try:
    import dask
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("cppconv.dask needs dask: pip install 'cppconv[dask]'") from e

from . import _args, _buffers, _conv, _conv_transpose, _native, _netbatch, _pool

__all__ = ["conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "max_pool1d",
           "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
           "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d",
           "adaptive_max_pool3d", "global_avg_pool1d", "global_avg_pool2d", "global_avg_pool3d", "apply",
           "call_threads", "release_buffers"]


# ---------------------------------------------------------------------------------------------
# Threads


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _pool_threads() -> Optional[int]:
    """How many tasks may run at once in this process: a distributed worker's thread count,
    dask's local thread pool's, or None when the task runs in the caller's thread."""
    if "distributed" in sys.modules:
        from distributed import get_worker

        try:
            return int(get_worker().state.nthreads)
        except (ValueError, AttributeError):
            pass  # not inside a worker
    if threading.current_thread() is threading.main_thread():
        return None  # the synchronous scheduler: the whole process is this task's
    return int(dask.config.get("num_workers", None) or _cores())


def call_threads(num_threads: Optional[int] = None) -> int:
    """Threads for one chunk's kernel call here: ``num_threads`` when given, else cppconv's
    setting (``set_num_threads``, else ``OMP_NUM_THREADS``, else the CPUs) capped at this
    process's cores divided by the tasks that may run at once (a worker's threads)."""
    if num_threads is not None:
        return _args.thread_count(num_threads)
    share = _native.get_num_threads()
    tasks = _pool_threads()
    if tasks:
        share = min(share, max(1, _cores() // tasks))
    return max(1, share)


# ---------------------------------------------------------------------------------------------
# Chunk-sized arrays reused from task to task: a worker's task frees its assembled input and,
# once Dask releases it, its output (cppconv._buffers says why fresh ones are slow).

_recycled = _buffers.Recycler(buffers=lambda: 2 * (_pool_threads() or 1) + 2, smallest=1 << 20, max_bytes=1 << 30)


def release_buffers() -> None:
    """Drop the chunk-sized buffers this process keeps for reuse by later tasks (a worker keeps
    two per thread and two more, 1 GiB at most; those in use stay alive until released), and
    those of in-memory calls' results (cppconv.release_buffers).  Run it on the workers with
    ``client.run(cppconv.dask.release_buffers)``."""
    _buffers.release_buffers()


# ---------------------------------------------------------------------------------------------
# The chunk plan of one spatial axis


class _Split:
    """One spatial axis of an operation split into output chunks: output chunk j covers outputs
    [out[j], out[j + 1]), reads input [lo[j], hi[j]) and passes ``local[j]`` (its own padding)
    to its block call; the input is chunked at ``cores``."""

    out: List[int]
    lo: List[int]
    hi: List[int]
    local: List[Any]
    cores: Tuple[int, ...]

    @property
    def out_chunks(self) -> Tuple[int, ...]:
        return tuple(b - a for a, b in zip(self.out[:-1], self.out[1:]))

    def pieces(self, j: int) -> List[Tuple[int, slice]]:
        """The core chunks output chunk j reads, each with the slice of it that it reads."""
        if "_starts" not in self.__dict__:  # computed once: graphs of many chunks ask for every chunk
            self._starts = [0, *itertools.accumulate(self.cores)]
        starts = self._starts
        found = []
        for i in range(max(0, bisect.bisect_right(starts, self.lo[j]) - 1), len(self.cores)):
            if starts[i] >= self.hi[j]:
                break
            found.append((i, slice(max(self.lo[j], starts[i]) - starts[i], min(self.hi[j], starts[i + 1]) - starts[i])))
        return found


class _Axis(_Split):
    """A windowed axis (convolution or pool): output chunks start on the stride and read their
    core chunk plus an after-halo of span - stride from the next one, which every core chunk is
    at least as long as (so one neighbour is enough)."""

    def __init__(self, size: int, before: int, after: int, span: int, stride: int, outputs: int,
                 cuts: Sequence[int], align: int, min_out: int):
        halo = max(span - stride, 0)
        min_out = max(min_out, 1, -(-halo // stride))  # a core chunk at least the halo
        bounds = set()
        for cut in cuts:  # the input's chunk boundaries
            o = -(-(cut + before) // stride)  # the first output whose window starts at or after it
            bounds.add(-(-o // align) * align)
        # Every chunk reads some input (none lies wholly in the padding).
        kept = sorted(o for o in bounds if 0 < o < outputs and 0 < o * stride - before < size)
        def reads_input(o0: int, o1: int) -> bool:  # not all windows in the padding (a kernel narrower than it)
            return (o1 - 1) * stride + span - before > max(0, o0 * stride - before) and o0 * stride - before < size

        out = [0]
        for o in kept:
            if o - out[-1] >= min_out and reads_input(out[-1], o):
                out.append(o)
        while len(out) > 1 and (outputs - out[-1] < min_out or not reads_input(out[-1], outputs)):
            out.pop()
        self.out = out + [outputs]
        self.lo = [max(0, o * stride - before) for o in self.out[:-1]]
        self.hi = [min(size, (o1 - 1) * stride + span - before) for o1 in self.out[1:]]
        # A ceil_mode pool's last window may hang past the padding: the kernel's ceil_mode covers it.
        self.local = [(max(0, before - o0 * stride), min(after, max(0, (o1 - 1) * stride + span - before - size)))
                      for o0, o1 in zip(self.out[:-1], self.out[1:])]
        self.cores = tuple(b - a for a, b in zip(self.lo, self.lo[1:] + [size]))


def _cuts(chunks: Sequence[int]) -> List[int]:
    """The interior boundaries of an axis's chunks."""
    return list(itertools.accumulate(chunks))[:-1]


def _spatial_axes(rank: int, layout: int) -> Tuple[int, ...]:
    """The spatial axes of a batched (rank + 2)-D array in layout (0 channels-first)."""
    return tuple(range(1, rank + 1)) if layout == 1 else tuple(range(2, rank + 2))


def _channel_axis(rank: int, layout: int) -> int:
    return rank + 1 if layout == 1 else 1


def _unbatched(y: da.Array, ndim: int, rank: int, layout: int, image: bool) -> da.Array:
    """The result for an input of `ndim` dimensions from the batched one (see _args.image_shape)."""
    if image:
        return y[0, :, :, 0] if layout == 1 else y[0, 0]
    return y if ndim == rank + 2 else y[0]


def _input_array(x: Any) -> da.Array:
    return x if isinstance(x, da.Array) else da.asarray(x)


def _assemble(pieces: Any, axes: Sequence[int]) -> np.ndarray:
    """One chunk's input from the nested list of pieces it reads (nested by axis), each copied
    once into its place (concatenating axis by axis would copy the core chunk once per axis)."""
    leaves: Dict[Tuple[int, ...], np.ndarray] = {}

    def walk(node: Any, at: Tuple[int, ...]) -> None:
        if len(at) == len(axes):
            leaves[at] = node
        else:
            for i, child in enumerate(node):
                walk(child, at + (i,))

    walk(pieces, ())
    first = leaves[(0,) * len(axes)]
    if len(leaves) == 1:
        return first
    # The extent of piece i along an axis: that of the piece at i on it and 0 on the others.
    starts = []
    for level, axis in enumerate(axes):
        sizes = [leaves[tuple(i if lv == level else 0 for lv in range(len(axes)))].shape[axis]
                 for i in range(max(at[level] for at in leaves) + 1)]
        starts.append([0, *itertools.accumulate(sizes)])
    shape = list(first.shape)
    for axis, bounds in zip(axes, starts):
        shape[axis] = bounds[-1]
    x = _recycled.empty(shape, first.dtype)
    for at, leaf in leaves.items():
        index = [slice(None)] * x.ndim
        for axis, bounds, i in zip(axes, starts, at):
            index[axis] = slice(bounds[i], bounds[i + 1])
        x[tuple(index)] = leaf
    return x


def _halo_piece(chunk: np.ndarray, index: Tuple[slice, ...]) -> np.ndarray:
    """The part of a neighbouring core chunk that a chunk reads, copied: a view would keep the
    whole neighbour alive on its worker (and its consumer's worker receives only these bytes)."""
    return chunk[index].copy()


def _windowed(
    name: str, x: da.Array, axes: Sequence[int], plans: Sequence[_Split], channel_axis: int, out_channels: int,
    block: Callable[..., Any], arrays: Sequence[Optional[np.ndarray]], dtype: Any,
) -> Any:
    """The graph of a windowed operation: x rechunked to the plans' cores (channels one chunk),
    one task per output chunk that assembles its input and calls ``block(input, pads, *arrays)``,
    and one small task per neighbour's halo it reads, which slices just that halo out (as dask's
    map_overlap does): a core chunk is released as soon as its own block and its halos ran, and
    only halos travel between workers.  The arrays (weights) are graph keys, sent once."""
    chunks = list(x.chunks)
    chunks[channel_axis] = (x.shape[channel_axis],)
    for axis, plan in zip(axes, plans):
        chunks[axis] = plan.cores
    x = x.rechunk(tuple(chunks))
    out_name = f"{name}-{tokenize(x, block, [(p.out, p.lo, p.hi) for p in plans], arrays)}"
    halo_name = f"{out_name}-halo"
    dsk: Dict[Any, Any] = {}
    array_keys: List[Any] = []
    for i, array in enumerate(arrays):
        if array is None:
            array_keys.append(None)
        else:
            array_keys.append((f"{out_name}-operand", i))
            dsk[array_keys[-1]] = array
    counts = [len(plans[axes.index(a)].out_chunks) if a in axes else len(x.chunks[a]) for a in range(x.ndim)]

    def piece(index: Tuple[int, ...], spans: List[List[Tuple[int, slice]]], at: Tuple[int, ...]) -> Any:
        """The key of the piece of core chunk `at` (one position per axis) that output chunk
        `index` reads: the core chunk's own key when it reads all of it, else a halo task's."""
        block_index = list(index)
        cut = [slice(None)] * x.ndim
        whole = True
        for a, plan, span, k in zip(axes, plans, spans, at):
            j, s = span[k]
            block_index[a] = j
            cut[a] = s
            whole = whole and s.start == 0 and s.stop == plan.cores[j]
        if whole:
            return (x.name, *block_index)
        key = (halo_name, *index, *at)
        dsk[key] = (_halo_piece, (x.name, *block_index), tuple(cut))
        return key

    def pieces(index: Tuple[int, ...], spans: List[List[Tuple[int, slice]]], at: Tuple[int, ...]) -> Any:
        """The nested lists of the pieces' keys that output chunk `index` reads (one level per axis)."""
        if len(at) == len(axes):
            return piece(index, spans, at)
        return [pieces(index, spans, at + (k,)) for k in range(len(spans[len(at)]))]

    out_chunks = list(x.chunks)
    out_chunks[channel_axis] = (out_channels,)
    for axis, plan in zip(axes, plans):
        out_chunks[axis] = plan.out_chunks
    for index in itertools.product(*map(range, counts)):
        spans = [plan.pieces(index[a]) for plan, a in zip(plans, axes)]
        pads = tuple(plan.local[index[a]] for plan, a in zip(plans, axes))
        # A block with one result writes it into a recycled array of the chunk's shape.
        out = None if isinstance(dtype, tuple) else (tuple(c[i] for c, i in zip(out_chunks, index)), np.dtype(dtype))
        dsk[(out_name, *index)] = (_run_block, block, pieces(index, spans, ()), tuple(axes), pads, out, *array_keys)
    if isinstance(dtype, tuple):  # the block returns one array per dtype: one Dask array each
        results = []
        for i, each in enumerate(dtype):
            name_i = f"{out_name}-{i}"
            parts = {(name_i, *key[1:]): (operator.getitem, key, i) for key in list(dsk) if key[0] == out_name}
            # (Dask's annotations take neither its Array as a collection nor tuple keys here)
            graph = HighLevelGraph.from_collections(name_i, {**dsk, **parts},  # type: ignore[dict-item]
                                                    dependencies=[x])  # type: ignore[list-item]
            results.append(da.Array(graph, name_i, tuple(out_chunks), meta=np.empty((0,) * x.ndim, each)))
        return tuple(results)
    graph = HighLevelGraph.from_collections(out_name, dsk, dependencies=[x])  # type: ignore[list-item]  # (as above)
    return da.Array(graph, out_name, tuple(out_chunks), meta=np.empty((0,) * x.ndim, dtype))


def _run_block(block: Callable[..., np.ndarray], pieces: Any, axes: Sequence[int], pads: Any,
               out: Optional[Tuple[Tuple[int, ...], np.dtype]], *arrays: Any) -> np.ndarray:
    x = _assemble(pieces, axes)
    if out is None:
        return block(x, pads, *arrays)
    return block(x, pads, *arrays, out=_recycled.empty(*out))


# ---------------------------------------------------------------------------------------------
# Convolution


def _conv_chunk(x: np.ndarray, pads: Tuple[Tuple[int, int], ...], weight: np.ndarray, bias: Optional[np.ndarray], *,
                spec: Dict[str, Any], rank: int, algorithm: str, num_threads: Optional[int],
                out: Optional[np.ndarray] = None) -> np.ndarray:
    local = _conv._ConvSpec.popped_from({**spec, "padding": tuple(pads)}, rank)
    try:
        return _conv._run(local, x, weight, bias, out, algorithm=algorithm, num_threads=call_threads(num_threads))
    except ValueError as e:
        if "does not accept" not in str(e):
            raise
        raise ValueError(f"cppconv.dask: a chunk of shape {x.shape} is too small for {algorithm}, the algorithm the "
                         f"whole array runs (and the chunk must run for the same numbers): rechunk to larger "
                         f"chunks") from e


def _pad_far(x: da.Array, axes: Sequence[int], pads: Sequence[Tuple[int, int]], mode: int) -> da.Array:
    """x with the padding of a mode that reads the input (reflect, replicate, circular,
    symmetric) copied in, lazily: each axis gets the rows the native padding index maps name."""
    for axis, (before, after) in zip(axes, pads):
        size = x.shape[axis]
        parts = [x]
        if before:
            parts.insert(0, da.take(x, [_padded_source(i, size, before, mode) for i in range(before)], axis=axis))
        if after:
            last = range(before + size, before + size + after)
            parts.append(da.take(x, [_padded_source(i, size, before, mode) for i in last], axis=axis))
        x = da.concatenate(parts, axis=axis) if len(parts) > 1 else x
    return x


def _padded_source(i: int, size: int, before: int, mode: int) -> int:
    """The input index that padded index i reads, for the modes that read the input: a mirror of
    cpp/conv.cpp's padded_source, which the native module does not expose (tests compare them)."""
    s = i - before
    if 0 <= s < size:
        return s
    if mode == _args.PADDING_MODES["replicate"]:
        return min(max(s, 0), size - 1)
    if mode == _args.PADDING_MODES["circular"]:
        return s % size
    if mode == _args.PADDING_MODES.get("symmetric"):
        s %= 2 * size
        return 2 * size - 1 - s if s >= size else s
    if size == 1:  # reflect
        return 0
    period = 2 * (size - 1)
    s %= period
    return period - s if s >= size else s


def _convolve(rank: int, x: Any, weight: Any, bias: Any, kwargs: Dict[str, Any], num_threads: Any) -> da.Array:
    x = _input_array(x)
    weight = _args.as_input_array(weight, "weight")
    bias = None if bias is None else _args.as_input_array(bias, "bias")
    spec = _conv._ConvSpec.popped_from(dict(kwargs), rank)
    layout = spec.layout
    if num_threads is not None:
        _args.thread_count(num_threads)
    result = _args.call_dtypes(np.empty(0, x.dtype), weight, bias).result
    # The whole problem's checks, padding, output shape and algorithm, without touching data.
    info = _conv._explain(spec, tuple(x.shape), tuple(weight.shape), result, bias is not None, layer=False,
                          x_dtype=x.dtype)
    image = rank == 2 and x.ndim == 2
    if image:
        x4 = x[None, :, :, None] if layout == 1 else x[None, None]
        weight = weight[None, None]
    else:
        x4 = x if x.ndim == rank + 2 else x[None]
    axes = _spatial_axes(rank, layout)
    pads = info["padding"]
    pairs = list(zip(pads[0::2], pads[1::2]))
    cuts = [_cuts(x4.chunks[a]) for a in axes]
    common = spec.kwargs()
    # The mode of this process, not the workers': the pinned algorithm was chosen under it.
    common["precision"] = common["precision"] or _args.code_word(_native.PRECISIONS, _native.get_float32_precision())
    # Zero padding is the native call's (per chunk, at the array's edges); any other is copied in.
    if spec.pads_input or spec.padding_mode not in (_args.PADDING_MODES["zeros"], _args.CONSTANT_PADDING):
        if spec.pads_input:  # in the compute dtype, as the in-memory call pads (an int x cannot hold 0.5)
            x4 = da.pad(x4.astype(_args.compute_dtype(result)), _args.spatial_pad_width(pads, layout),
                        mode="constant", constant_values=spec.padding_value)
        else:
            x4 = _pad_far(x4, axes, pairs, spec.padding_mode)
        cuts = [[c + before for c in axis_cuts] for axis_cuts, (before, _) in zip(cuts, pairs)]
        pairs = [(0, 0)] * rank
        common["padding_mode"], common["padding_value"] = "zeros", 0.0
    sizes = [x4.shape[a] for a in axes]
    spans = [d * (k - 1) + 1 for d, k in zip(spec.dilation, weight.shape[2:])]
    outs = [
        int(_native.conv_output_size(s, k, st, d, b, a))
        for s, k, st, d, (b, a) in zip(sizes, weight.shape[2:], spec.stride, spec.dilation, pairs)
    ]
    algorithm = info["algorithm"]
    # Winograd F(2x2, 3x3) computes an output from its place in a 2x2 tile (of each dilation phase).
    align = [2 * d if "winograd" in algorithm else 1 for d in spec.dilation]
    min_out = 1
    while True:
        plans = [_Axis(s, b, a, sp, st, o, c, al, min_out)
                 for s, (b, a), sp, st, o, c, al in zip(sizes, pairs, spans, spec.stride, outs, cuts, align)]
        if _accepted(rank, spec, common, plans, x4, weight, bias, result, algorithm) or \
                all(len(p.out_chunks) == 1 for p in plans):
            break
        min_out *= 2
    k = weight.shape[0]
    block = functools.partial(_conv_chunk, spec=common, rank=rank, algorithm=algorithm, num_threads=num_threads)
    chunk_result = _args.call_dtypes(np.empty(0, x4.dtype), weight, bias).result
    y = _windowed(f"cppconv-conv{rank}d", x4, axes, plans, _channel_axis(rank, layout), k, block, (weight, bias),
                  chunk_result)
    if chunk_result != result:  # float16 padded in float32 above
        y = y.astype(result)
    return _unbatched(y, x.ndim, rank, layout, image)


def _accepted(rank: int, spec: Any, common: Dict[str, Any], plans: Sequence[_Split], x4: da.Array, weight: np.ndarray,
              bias: Any, dtype: np.dtype, algorithm: str) -> bool:
    """Whether the dispatcher (as cppconv.explain reports it: no kernel runs) picks the pinned
    algorithm for every chunk's problem on its own.  A chunk for which it picks another may be
    one the pinned algorithm declines (after it in table order, or on a lowering of a 3-D
    problem that the padding copied in changes), so such chunks are merged."""
    c_axis = _channel_axis(rank, spec.layout)
    variants = [sorted({(hi - lo, pad) for lo, hi, pad in zip(p.lo, p.hi, p.local)}) for p in plans]
    batches = sorted(set(x4.chunks[0]))
    for n in batches:
        for combo in itertools.product(*variants):
            shape = [n, 0, 0] if rank == 1 else [n] + [0] * (rank + 1)
            shape[c_axis] = x4.shape[c_axis]
            for axis, (length, _) in zip(_spatial_axes(rank, spec.layout), combo):
                shape[axis] = length
            local = _conv._ConvSpec.popped_from({**common, "padding": tuple(pad for _, pad in combo)}, rank)
            chosen = _conv._explain(local, tuple(shape), tuple(weight.shape), dtype, bias is not None,
                                    layer=False, x_dtype=x4.dtype)["algorithm"]
            if chosen != algorithm:
                return False
    return True


def conv1d(x: Any, weight: Any, bias: Any = None, *, num_threads: Optional[int] = None, **kwargs: Any) -> da.Array:
    """:func:`cppconv.conv1d` of a Dask array (see the module's notes): the same keywords, a lazy
    result with the same numbers as the in-memory call on the whole array."""
    return _convolve(1, x, weight, bias, kwargs, num_threads)


def conv2d(x: Any, weight: Any, bias: Any = None, *, num_threads: Optional[int] = None, **kwargs: Any) -> da.Array:
    """:func:`cppconv.conv2d` of a Dask array (see the module's notes): the same keywords
    (stride, padding, dilation, groups, padding_mode, layout, activation, precision), a lazy
    result with the same numbers as the in-memory call on the whole array.

    >>> import numpy as np, dask.array as da, cppconv.dask
    >>> x = da.ones((1, 3, 64, 64), dtype=np.float32, chunks=(1, 3, 16, 16))
    >>> y = cppconv.dask.conv2d(x, np.ones((8, 3, 3, 3), np.float32), padding="same")
    >>> y.shape, y.chunks[2]  # chunk j reads input from x's chunk j on (and a halo after it)
    ((1, 8, 64, 64), (17, 16, 16, 15))
    """
    return _convolve(2, x, weight, bias, kwargs, num_threads)


def conv3d(x: Any, weight: Any, bias: Any = None, *, num_threads: Optional[int] = None, **kwargs: Any) -> da.Array:
    """:func:`cppconv.conv3d` of a Dask array (see the module's notes)."""
    return _convolve(3, x, weight, bias, kwargs, num_threads)


# ---------------------------------------------------------------------------------------------
# Transposed convolution


class _TransposedAxis(_Split):
    """A transposed-convolution axis: output chunk [o0, o1) gathers every input that reaches it,
    [lo, hi), and runs as the transposed convolution of those inputs with the padding (before,
    after) and output_padding that crop its result to exactly [o0, o1).  An output's taps are
    chosen by its index modulo the stride, which the crop keeps, so its sum is the whole call's."""

    def __init__(self, size: int, before: int, kernel: int, stride: int, dilation: int, outputs: int,
                 chunks: Sequence[int]):
        reach = dilation * (kernel - 1)
        cuts = sorted({c * stride - before for c in _cuts(chunks)})
        self.out = [0] + [o for o in cuts if 0 < o < outputs] + [outputs]
        self.cores = tuple(chunks)
        self.lo, self.hi, self.local = [], [], []
        for o0, o1 in zip(self.out[:-1], self.out[1:]):
            lo = max(0, -(-(o0 + before - reach) // stride))
            hi = max(min(size, (o1 - 1 + before) // stride + 1), lo + 1)  # a chunk in a gap still reads one input
            lo = min(lo, hi - 1, (o0 + before) // stride)  # no negative padding before
            need = o1 - o0
            natural = (hi - 1 - lo) * stride - (before + o0 - lo * stride) + reach + 1
            if natural < need and hi < size:
                hi = min(size, hi + -(-(need - natural) // stride))
                natural = (hi - 1 - lo) * stride - (before + o0 - lo * stride) + reach + 1
            self.lo.append(lo)
            self.hi.append(hi)
            self.local.append(((before + o0 - lo * stride, max(0, natural - need)), max(0, need - natural)))


def _transpose_chunk(x: np.ndarray, local: Tuple[Any, ...], weight: np.ndarray, bias: Optional[np.ndarray], *,
                     spec: Dict[str, Any], rank: int, num_threads: Optional[int],
                     out: Optional[np.ndarray] = None) -> np.ndarray:
    pads = tuple(p for p, _ in local)
    output_padding = tuple(op for _, op in local)
    kw = {**spec, "padding": pads, "output_padding": output_padding}
    local_spec = _conv_transpose._TransposeSpec(rank, kw["stride"], kw["padding"], kw["output_padding"], kw["groups"],
                                                kw["dilation"], kw["layout"], kw["activation"])
    return _conv_transpose._run(local_spec, x, weight, bias, out, num_threads=call_threads(num_threads))


def _transposed(rank: int, x: Any, weight: Any, bias: Any, stride: Any, padding: Any, output_padding: Any, groups: Any,
                dilation: Any, layout: Optional[str], activation: Any, num_threads: Any) -> da.Array:
    x = _input_array(x)
    weight = _args.as_input_array(weight, "weight")
    bias = None if bias is None else _args.as_input_array(bias, "bias")
    layout = next(iter(_args.RANK_LAYOUTS[rank])) if layout is None else layout
    spec = _conv_transpose._TransposeSpec(rank, stride, padding, output_padding, groups, dilation, layout, activation)
    if num_threads is not None:
        _args.thread_count(num_threads)
    result = _args.call_dtypes(np.empty(0, x.dtype), weight, bias).result
    # The whole call's checks and output shape on zero-strided stand-ins (no data, no kernel).
    stand_in = np.lib.stride_tricks.as_strided(np.zeros(1, x.dtype), x.shape, (0,) * x.ndim)
    geometry = _conv_transpose._Geometry(spec, stand_in, weight, bias)
    image = rank == 2 and x.ndim == 2
    if image:
        x4 = x[None, :, :, None] if spec.layout == 1 else x[None, None]
        weight = weight[None, None]
    else:
        x4 = x if x.ndim == rank + 2 else x[None]
    axes = _spatial_axes(rank, spec.layout)
    outs = [geometry.out_shape4[a] for a in axes]
    plans = [_TransposedAxis(x4.shape[a], spec.padding[2 * i], weight.shape[2 + i], spec.stride[i], spec.dilation[i],
                             outs[i], x4.chunks[a]) for i, a in enumerate(axes)]
    block = functools.partial(_transpose_chunk, spec=spec.kwargs(), rank=rank, num_threads=num_threads)
    k = weight.shape[1] * spec.groups
    y = _windowed(f"cppconv-conv-transpose{rank}d", x4, axes, plans, _channel_axis(rank, spec.layout), k, block,
                  (weight, bias), result)
    return _unbatched(y, x.ndim, rank, spec.layout, image)


def conv_transpose1d(x: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, output_padding: Any = 0,
                     groups: int = 1, dilation: Any = 1, *, layout: Optional[str] = None,
                     activation: Optional[str] = None,
                     num_threads: Optional[int] = None) -> da.Array:
    """:func:`cppconv.conv_transpose1d` of a Dask array (see conv_transpose2d)."""
    return _transposed(1, x, weight, bias, stride, padding, output_padding, groups, dilation, layout, activation,
                       num_threads)


def conv_transpose2d(x: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, output_padding: Any = 0,
                     groups: int = 1, dilation: Any = 1, *, layout: Optional[str] = None,
                     activation: Optional[str] = None,
                     num_threads: Optional[int] = None) -> da.Array:
    """:func:`cppconv.conv_transpose2d` of a Dask array, with the same numbers as the in-memory
    call: each output chunk gathers every input that reaches it (a halo on both sides).

    >>> import numpy as np, dask.array as da, cppconv.dask
    >>> x = da.ones((1, 8, 32, 32), dtype=np.float32, chunks=(1, 8, 8, 8))
    >>> y = cppconv.dask.conv_transpose2d(x, np.ones((8, 4, 4, 4), np.float32), stride=2, padding=1)
    >>> y.shape, y.chunks[2]
    ((1, 4, 64, 64), (15, 16, 16, 17))
    """
    return _transposed(2, x, weight, bias, stride, padding, output_padding, groups, dilation, layout, activation,
                       num_threads)


def conv_transpose3d(x: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, output_padding: Any = 0,
                     groups: int = 1, dilation: Any = 1, *, layout: Optional[str] = None,
                     activation: Optional[str] = None,
                     num_threads: Optional[int] = None) -> da.Array:
    """:func:`cppconv.conv_transpose3d` of a Dask array (see conv_transpose2d)."""
    return _transposed(3, x, weight, bias, stride, padding, output_padding, groups, dilation, layout, activation,
                       num_threads)


# ---------------------------------------------------------------------------------------------
# Pools


def _pool_chunk(x: np.ndarray, pads: Tuple[Tuple[int, int], ...], *, function: Callable[..., np.ndarray],
                kwargs: Dict[str, Any], num_threads: Optional[int], out: Optional[np.ndarray] = None) -> np.ndarray:
    return function(x, padding=tuple(pads), num_threads=call_threads(num_threads), out=out, **kwargs)


def _pool_indices_chunk(x: np.ndarray, local: Tuple[Any, ...], *, function: Callable[..., Any], kwargs: Dict[str, Any],
                        num_threads: Optional[int], axes: Tuple[int, ...],
                        sizes: Tuple[int, ...]) -> Tuple[np.ndarray, np.ndarray]:
    """Values and argmax indices of a chunk, the indices made flat indices of the whole plane."""
    values, indices = function(x, padding=tuple(pad for pad, _ in local), return_indices=True,
                               num_threads=call_threads(num_threads), **kwargs)
    coords = np.unravel_index(indices, tuple(x.shape[a] for a in axes))
    origin = tuple(start for _, start in local)
    return values, np.ravel_multi_index(tuple(c + o for c, o in zip(coords, origin)), sizes).astype(np.int64)


def _pool_input(name: str, rank: int, x: Any, layout: Optional[str]) -> Tuple[Any, ...]:
    """A pool's in-memory function (name e.g. "max_pool{}d"; those of every rank this cppconv
    has), x as a Dask array, the layout (default: channels-first) and its code, x with its batch
    axis, and whether x is a 2-D image."""
    function = getattr(sys.modules[__package__], name.format(rank), None)
    if function is None:
        raise NotImplementedError(f"this cppconv has no {name.format(rank)}")
    x = _input_array(x)
    layout = next(iter(_args.RANK_LAYOUTS[rank])) if layout is None else layout
    code = _args.layout_code(layout, rank)
    image = rank == 2 and x.ndim == 2
    if image:
        x4 = x[None, :, :, None] if code == 1 else x[None, None]
    else:
        x4 = _args.batched(x, rank, code, name) if x.ndim != rank + 2 else x
    return function, x, layout, code, x4, image


def _pooled(kind: str, rank: int, x: Any, kernel_size: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: Any,
            layout: Optional[str], return_indices: bool = False, num_threads: Any = None, **extra: Any) -> Any:
    function, x, layout, code, x4, image = _pool_input(f"{kind}_pool{{}}d", rank, x, layout)
    kernel = _args.ntuple(kernel_size, "kernel_size", rank, minimum=1)
    empty = stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0)
    strides = kernel if empty else _args.ntuple(stride, "stride", rank, minimum=1)
    dilations = _args.ntuple(dilation, "dilation", rank, minimum=1)
    explicit = _args.explicit_padding_nd(padding, rank)
    result = _args.call_dtypes(np.empty(0, x.dtype), None, None, keeps_integers=kind == "max").result
    axes = _spatial_axes(rank, code)
    sizes = [x4.shape[a] for a in axes]
    if explicit is None:
        pairs = [_args.same_padding(i, k, s, d) for i, k, s, d in zip(sizes, kernel, strides, dilations)]
    else:
        pairs = list(zip(explicit[0::2], explicit[1::2]))
    outs = []
    for i, k, s, (b, a), d in zip(sizes, kernel, strides, pairs, dilations):
        outs.append(_pool._pool_length(i, k, s, b, a, d, bool(ceil_mode)))
        if outs[-1] < 1:
            raise _pool._no_window("", i, k, s, b, a, d, bool(ceil_mode))
    plans = [_Axis(i, b, a, d * (k - 1) + 1, s, o, _cuts(x4.chunks[ax]), 1, 1)
             for i, (b, a), k, s, d, o, ax in zip(sizes, pairs, kernel, strides, dilations, outs, axes)]
    kwargs = {"kernel_size": kernel, "stride": strides, "ceil_mode": bool(ceil_mode), "layout": layout, **extra}
    if kind == "max":
        kwargs["dilation"] = dilations
    c_axis = _channel_axis(rank, code)
    name = f"cppconv-{kind}-pool{rank}d"
    if return_indices:
        for plan in plans:  # each chunk's origin, to turn its indices into the whole plane's
            plan.local = [(pads, start) for pads, start in zip(plan.local, plan.lo)]
        block: functools.partial[Any] = functools.partial(
            _pool_indices_chunk, function=function, kwargs=kwargs, num_threads=num_threads, axes=axes,
            sizes=tuple(sizes))
        pair = _windowed(name, x4, axes, plans, c_axis, x4.shape[c_axis], block, (), (result, np.dtype(np.int64)))
        return tuple(_unbatched(y, x.ndim, rank, code, image) for y in pair)
    block = functools.partial(_pool_chunk, function=function, kwargs=kwargs, num_threads=num_threads)
    y = _windowed(name, x4, axes, plans, c_axis, x4.shape[c_axis], block, (), result)
    return _unbatched(y, x.ndim, rank, code, image)


def max_pool2d(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False, return_indices: bool = False, layout: str = "NCHW", *,
               num_threads: Optional[int] = None) -> Any:
    """:func:`cppconv.max_pool2d` of a Dask array (see the module's notes); with return_indices a
    pair of Dask arrays, the indices flat in the whole input plane as in the in-memory call."""
    return _pooled("max", 2, x, kernel_size, stride, padding, dilation, ceil_mode, layout, bool(return_indices),
                   num_threads)


def avg_pool2d(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: Optional[int] = None,
               layout: str = "NCHW", *, num_threads: Optional[int] = None) -> da.Array:
    """:func:`cppconv.avg_pool2d` of a Dask array (see the module's notes)."""
    return _pooled("avg", 2, x, kernel_size, stride, padding, 1, ceil_mode, layout,
                   num_threads=num_threads, count_include_pad=count_include_pad, divisor_override=divisor_override)


def max_pool1d(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False, return_indices: bool = False, layout: Optional[str] = None, *,
               num_threads: Optional[int] = None) -> Any:
    """``cppconv.max_pool1d`` of a Dask array, where this cppconv has it (see max_pool2d)."""
    return _pooled("max", 1, x, kernel_size, stride, padding, dilation, ceil_mode, layout, bool(return_indices),
                   num_threads)


def max_pool3d(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False, return_indices: bool = False, layout: Optional[str] = None, *,
               num_threads: Optional[int] = None) -> Any:
    """``cppconv.max_pool3d`` of a Dask array, where this cppconv has it (see max_pool2d)."""
    return _pooled("max", 3, x, kernel_size, stride, padding, dilation, ceil_mode, layout, bool(return_indices),
                   num_threads)


def avg_pool1d(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: Optional[int] = None,
               layout: Optional[str] = None, *, num_threads: Optional[int] = None) -> da.Array:
    """``cppconv.avg_pool1d`` of a Dask array, where this cppconv has it (see avg_pool2d)."""
    return _pooled("avg", 1, x, kernel_size, stride, padding, 1, ceil_mode, layout,
                   num_threads=num_threads, count_include_pad=count_include_pad, divisor_override=divisor_override)


def avg_pool3d(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: Optional[int] = None,
               layout: Optional[str] = None, *, num_threads: Optional[int] = None) -> da.Array:
    """``cppconv.avg_pool3d`` of a Dask array, where this cppconv has it (see avg_pool2d)."""
    return _pooled("avg", 3, x, kernel_size, stride, padding, 1, ceil_mode, layout,
                   num_threads=num_threads, count_include_pad=count_include_pad, divisor_override=divisor_override)


# ---------------------------------------------------------------------------------------------
# Adaptive and global pools: exact when no window straddles a chunk boundary


def _adaptive(kind: str, rank: int, x: Any, output_size: Any, layout: Optional[str], num_threads: Any) -> da.Array:
    function, x, layout, code, x4, image = _pool_input(f"adaptive_{kind}_pool{{}}d", rank, x, layout)
    request = _pool._adaptive_request(output_size, rank)
    axes = _spatial_axes(rank, code)
    sizes = tuple(x4.shape[a] for a in axes)
    outs = tuple(s if r is None else r for s, r in zip(sizes, request))
    x4 = x4.rechunk({_channel_axis(rank, code): -1})
    for axis, size, out in zip(axes, sizes, outs):
        # Window i spans [floor(i H / OH), ceil((i + 1) H / OH)): a cut c between windows i - 1
        # and i, where c = i H / OH exactly, leaves each chunk an adaptive pool of its own.
        step = size // np.gcd(size, out)
        if any(c % step for c in x4.chunks[axis]):
            raise ValueError(
                f"adaptive pooling {size} -> {out} along axis {axis} straddles the chunks {x4.chunks[axis]}: chunk "
                f"that axis at multiples of {step} input rows (x.rechunk({{{axis}: {step}}})), or as one chunk "
                f"(x.rechunk({{{axis}: -1}}))")
    wide = [i for i, out in enumerate(outs) if out > 1]
    if kind == "avg" and wide:
        # A chunk whose own output is a single value runs the global mean, whose summation
        # order differs in 3-D: along one axis, chunks are merged until each has two outputs.
        axis, out, size = axes[wide[0]], outs[wide[0]], sizes[wide[0]]
        merged: List[int] = []
        for c in x4.chunks[axis]:
            if merged and merged[-1] * out // size < 2:
                merged[-1] += c
            else:
                merged.append(c)
        if len(merged) > 1 and merged[-1] * out // size < 2:
            last = merged.pop()
            merged[-1] += last
        x4 = x4.rechunk({axis: tuple(merged)})
    out_chunks = list(x4.chunks)
    for axis, size, out in zip(axes, sizes, outs):
        out_chunks[axis] = tuple(c * out // size for c in x4.chunks[axis])
    dtype = _args.call_dtypes(np.empty(0, x.dtype), None, None, keeps_integers=kind == "max").result
    block = functools.partial(_adaptive_chunk, function=function, axes=axes, ratios=tuple(zip(outs, sizes)),
                              layout=layout, num_threads=num_threads)
    y = x4.map_blocks(block, chunks=tuple(out_chunks), dtype=dtype, meta=np.empty((0,) * x4.ndim, dtype))
    return _unbatched(y, x.ndim, rank, code, image)


def _adaptive_chunk(chunk: np.ndarray, *, function: Callable[..., np.ndarray], axes: Tuple[int, ...],
                    ratios: Tuple[Tuple[int, int], ...], layout: str, num_threads: Optional[int]) -> np.ndarray:
    local = tuple(chunk.shape[a] * out // size for a, (out, size) in zip(axes, ratios))
    return function(chunk, local, layout=layout, num_threads=call_threads(num_threads))


def adaptive_avg_pool1d(x: Any, output_size: Any, layout: Optional[str] = None, *,
                        num_threads: Optional[int] = None) -> da.Array:
    """:func:`cppconv.adaptive_avg_pool1d` of a Dask array (chunks as in adaptive_avg_pool2d)."""
    return _adaptive("avg", 1, x, output_size, layout, num_threads)


def adaptive_avg_pool2d(x: Any, output_size: Any, layout: str = "NCHW", *,
                        num_threads: Optional[int] = None) -> da.Array:
    """:func:`cppconv.adaptive_avg_pool2d` of a Dask array: exact where each spatial chunk
    boundary falls between windows (at multiples of ``size / gcd(size, output)``); otherwise a
    ValueError that names the chunking that works.  No return_indices on the adaptive pools."""
    return _adaptive("avg", 2, x, output_size, layout, num_threads)


def adaptive_avg_pool3d(x: Any, output_size: Any, layout: Optional[str] = None, *,
                        num_threads: Optional[int] = None) -> da.Array:
    """:func:`cppconv.adaptive_avg_pool3d` of a Dask array (chunks as in adaptive_avg_pool2d)."""
    return _adaptive("avg", 3, x, output_size, layout, num_threads)


def adaptive_max_pool1d(x: Any, output_size: Any, layout: Optional[str] = None, *,
                        num_threads: Optional[int] = None) -> da.Array:
    """:func:`cppconv.adaptive_max_pool1d` of a Dask array (chunks as in adaptive_avg_pool2d)."""
    return _adaptive("max", 1, x, output_size, layout, num_threads)


def adaptive_max_pool2d(x: Any, output_size: Any, layout: str = "NCHW", *,
                        num_threads: Optional[int] = None) -> da.Array:
    """:func:`cppconv.adaptive_max_pool2d` of a Dask array (chunks as in adaptive_avg_pool2d)."""
    return _adaptive("max", 2, x, output_size, layout, num_threads)


def adaptive_max_pool3d(x: Any, output_size: Any, layout: Optional[str] = None, *,
                        num_threads: Optional[int] = None) -> da.Array:
    """:func:`cppconv.adaptive_max_pool3d` of a Dask array (chunks as in adaptive_avg_pool2d)."""
    return _adaptive("max", 3, x, output_size, layout, num_threads)


def global_avg_pool1d(x: Any, layout: Optional[str] = None, *, num_threads: Optional[int] = None) -> da.Array:
    """:func:`cppconv.global_avg_pool1d` of a Dask array (chunks as in global_avg_pool2d)."""
    return _adaptive("avg", 1, x, 1, layout, num_threads)


def global_avg_pool2d(x: Any, layout: str = "NCHW", *, num_threads: Optional[int] = None) -> da.Array:
    """:func:`cppconv.global_avg_pool2d` of a Dask array: the spatial axes must be one chunk
    (the mean's summation order is the whole plane's); the batch may be chunked."""
    return _adaptive("avg", 2, x, 1, layout, num_threads)


def global_avg_pool3d(x: Any, layout: Optional[str] = None, *, num_threads: Optional[int] = None) -> da.Array:
    """:func:`cppconv.global_avg_pool3d` of a Dask array (chunks as in global_avg_pool2d)."""
    return _adaptive("avg", 3, x, 1, layout, num_threads)


# ---------------------------------------------------------------------------------------------
# Any layer or network over batch chunks


@functools.lru_cache(maxsize=1)
def _openmp_controllers() -> Tuple[Any, ...]:
    """threadpoolctl's controllers of the OpenMP runtimes loaded here (cppconv's among them),
    whose setting libgomp keeps per calling thread; none without threadpoolctl."""
    try:
        import threadpoolctl
    except ImportError:
        return ()
    return tuple(threadpoolctl.ThreadpoolController().select(user_api="openmp").lib_controllers)


def _apply_block(layer: Callable[..., Any], x: np.ndarray, threads: bool, num_threads: Optional[int]) -> np.ndarray:
    n = call_threads(num_threads)
    if threads:
        return np.asarray(layer(x, num_threads=n))
    # A callable without num_threads (a Network, a function) runs with cppconv's calls from
    # this thread capped at the share (a network loaded with num_threads=, its lanes), and under
    # OpenMP's setting of this thread limited to it (other OpenMP libraries; cppconv's
    # set_num_threads, when in force, wins over that and call_threads already caps by it).
    controllers = () if _native.num_threads_is_set() else _openmp_controllers()
    before = [c.get_num_threads() for c in controllers]
    for c in controllers:
        c.set_num_threads(n)
    try:
        return _netbatch.capped(n, lambda: np.asarray(layer(x)))
    finally:
        for c, b in zip(controllers, before):
            c.set_num_threads(b)


def _takes_num_threads(layer: Callable[..., Any]) -> bool:
    import inspect

    try:
        return "num_threads" in inspect.signature(layer).parameters
    except (TypeError, ValueError):
        return False


def apply(layer: Callable[..., Any], x: Any, *, output_shape: Optional[Tuple[int, ...]] = None, dtype: Any = None,
          num_threads: Optional[int] = None) -> da.Array:
    """``layer`` (a cppconv layer, a network, or any picklable callable on a batch) mapped over
    the batch chunks of ``x``; the other axes become one chunk.

    The layer is one key of the graph, so each worker receives it once, not with every task.
    A layer whose call takes ``num_threads`` (cppconv's layers) gets :func:`call_threads`
    per call; any other callable (a :class:`cppconv.Network`) runs with cppconv's calls from the
    task's thread capped at it (a network's own ``num_threads`` and lanes included), and with
    OpenMP's setting of that thread limited to it where threadpoolctl is installed.

    Args:
        output_shape: one sample's result shape; default: the result of the layer on an empty
            batch (zero samples, for which cppconv's layers run no kernel).
        dtype: the result's dtype; default: that empty batch's.

    >>> import numpy as np, dask.array as da, cppconv, cppconv.dask
    >>> layer = cppconv.Conv2d(np.ones((8, 3, 3, 3), np.float32), padding=1)
    >>> y = cppconv.dask.apply(layer, da.ones((10, 3, 16, 16), dtype=np.float32, chunks=4))
    >>> y.shape, y.chunks[0]
    ((10, 8, 16, 16), (4, 4, 2))
    """
    x = _input_array(x)
    x = x.rechunk({a: -1 for a in range(1, x.ndim)})
    if output_shape is None or dtype is None:
        empty = np.asarray(layer(np.empty((0, *x.shape[1:]), x.dtype)))
        output_shape = empty.shape[1:] if output_shape is None else output_shape
        dtype = empty.dtype if dtype is None else dtype
    dtype = np.dtype(dtype)
    output_shape = tuple(int(s) for s in output_shape)
    name = f"cppconv-apply-{tokenize(x, layer, output_shape, dtype, num_threads)}"
    layer_key = f"{name}-layer"
    dsk: Dict[Any, Any] = {layer_key: layer}
    threads = _takes_num_threads(layer)
    for i in range(len(x.chunks[0])):
        dsk[(name, i) + (0,) * len(output_shape)] = (_apply_block, layer_key, (x.name, i) + (0,) * (x.ndim - 1),
                                                      threads, num_threads)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[x])
    chunks = (x.chunks[0],) + tuple((s,) for s in output_shape)
    return da.Array(graph, name, chunks, meta=np.empty((0,) * (1 + len(output_shape)), dtype))
