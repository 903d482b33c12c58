"""The NumPy kernels of cppconv.Network's non-convolution operators.

Each takes arrays as stored (channels-last or not) and the axes already mapped by the planner
(python/cppconv/_network.py), so one function serves both layouts.  They run in NumPy for
now; the convolutions and pools run on cppconv's kernels.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import _native

# The activations take `out` (which may be x itself, when x dies at this step): each writes
# its result there in place of a new array.

def relu(x: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    return np.maximum(x, np.asarray(0, x.dtype), out=out)


def tanh(x: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    return np.tanh(x, out=out)


def sigmoid(x: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    # tanh form: no overflow warning from exp(-x) for large negative x.
    y = np.multiply(x, np.asarray(0.5, x.dtype), out=out)
    np.tanh(y, out=y)
    y += 1
    y *= np.asarray(0.5, x.dtype)
    return y


def hard_sigmoid(x: np.ndarray, alpha: float, beta: float, out: Optional[np.ndarray] = None) -> np.ndarray:
    y = np.multiply(x, np.asarray(alpha, x.dtype), out=out)
    y += np.asarray(beta, x.dtype)
    return np.clip(y, 0, 1, out=y)


def hard_swish(x: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    return np.multiply(x, hard_sigmoid(x, 1 / 6, 0.5), out=out)


def gate_channels(a: np.ndarray, b: np.ndarray, out: Optional[np.ndarray] = None,
                  num_threads: int = 0, program: Any = None) -> Optional[np.ndarray]:
    """a * b in one native pass where one operand is a gate per image and channel of the other,
    channels-last: shapes (N, ..., C) and (N, 1, ..., 1, C), float32 and C-contiguous (the Mul
    of a squeeze-and-excitation block, where NumPy's broadcasting loop runs a pixel at a time);
    None otherwise (a 1x1 plane's gate has the values' shape: native too, so that the small
    input's network still runs as one native call).  program: a NetProgram that records it."""
    for x, gate in ((a, b), (b, a)):
        if (x.ndim == gate.ndim >= 3 and x.dtype == gate.dtype == np.float32 and gate.shape[0] == x.shape[0]
                and gate.shape[-1] == x.shape[-1] and gate.size == x.shape[0] * x.shape[-1] and x.size >= gate.size
                and x.flags.c_contiguous and gate.flags.c_contiguous):
            y = np.empty_like(x) if out is None else out
            _native.scale_channels(x, gate, y, num_threads, program)
            return y
    return None


def elu(x: np.ndarray, alpha: float) -> np.ndarray:
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)) * np.asarray(alpha, x.dtype))


def leaky_relu(x: np.ndarray, alpha: float) -> np.ndarray:
    return np.where(x >= 0, x, x * np.asarray(alpha, x.dtype))


def prelu(x: np.ndarray, slope: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, x, x * slope)


def clip(x: np.ndarray, low: Optional[float], high: Optional[float]) -> np.ndarray:
    if low is not None:
        x = np.maximum(x, np.asarray(low, x.dtype))
    if high is not None:
        x = np.minimum(x, np.asarray(high, x.dtype))
    return x


def divide(a: np.ndarray, b: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """ONNX Div: integer division truncates toward zero (shape arithmetic; `out` unused), floats
    divide."""
    if a.dtype.kind in "iu" and np.asarray(b).dtype.kind in "iu":
        return np.trunc(np.true_divide(a, b)).astype(np.result_type(a, b))
    return np.divide(a, b, out=out)


def softmax(x: np.ndarray, axis: int, log: bool) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=axis, keepdims=True)
    return shifted - np.log(total) if log else e / total


def flatten(x: np.ndarray, axis: int) -> np.ndarray:
    """ONNX Flatten: (the product of the axes before `axis`, that of the others), sizes given
    (NumPy cannot infer a -1 beside a 0: an empty batch)."""
    return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), int(np.prod(x.shape[axis:], dtype=np.int64)))


def softmax_2d(x: np.ndarray, axis: int, log: bool) -> np.ndarray:
    """Softmax before opset 13: over all axes from `axis` on, as one flattened row."""
    return softmax(flatten(x, axis), 1, log).reshape(x.shape)


def batch_norm(x: np.ndarray, scale: np.ndarray, shift: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Inference BatchNormalization with its statistics folded into scale and shift (already
    shaped to broadcast along the channel axis)."""
    y = np.multiply(x, scale, out=out)
    y += shift
    return y


def lrn(x: np.ndarray, channel_axis: int, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    """Local response normalisation across channels (ONNX's window: floor((size-1)/2) before,
    ceil((size-1)/2) after)."""
    sq = np.moveaxis(np.square(x), channel_axis, -1)
    c = sq.shape[-1]
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    padded = np.concatenate([np.zeros(sq.shape[:-1] + (before,), sq.dtype), sq,
                             np.zeros(sq.shape[:-1] + (after,), sq.dtype)], axis=-1)
    sums = np.cumsum(padded, axis=-1, dtype=np.float64)
    sums = np.concatenate([np.zeros(sums.shape[:-1] + (1,)), sums], axis=-1)
    window = (sums[..., size:size + c] - sums[..., :c]).astype(x.dtype)
    denom = np.power(np.asarray(bias, x.dtype) + np.asarray(alpha / size, x.dtype) * window, np.asarray(beta, x.dtype))
    return x / np.moveaxis(denom, -1, channel_axis)


def pad(x: np.ndarray, pads: Sequence[int], mode: str, value: Any) -> np.ndarray:
    """ONNX Pad; pads = (begin per axis..., end per axis...), negative pads crop."""
    r = x.ndim
    begins, ends = list(pads[:r]), list(pads[r:])
    crop = tuple(slice(max(-b, 0), x.shape[i] - max(-e, 0)) for i, (b, e) in enumerate(zip(begins, ends)))
    x = x[crop]
    width = [(max(b, 0), max(e, 0)) for b, e in zip(begins, ends)]
    if mode == "constant":
        return np.pad(x, width, mode="constant", constant_values=np.asarray(value, x.dtype))
    # (the mode is one of np.pad's names, which NumPy's stubs type as a Literal)
    return np.pad(x, width, mode={"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode])  # type: ignore[call-overload]


def _source_coordinates(out_size: int, in_size: int, scale: float, mode: str) -> np.ndarray:
    """Where output index i samples the input, in input coordinates (ONNX Resize's
    coordinate_transformation_mode)."""
    i = np.arange(out_size, dtype=np.float64)
    if mode == "half_pixel":
        return (i + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (i + 0.5) / scale - 0.5 if out_size > 1 else np.zeros(out_size)
    if mode == "align_corners":
        return i * (in_size - 1) / (out_size - 1) if out_size > 1 else np.zeros(out_size)
    if mode == "asymmetric":
        return i / scale
    raise AssertionError(mode)  # the planner accepts only the modes above


_NEAREST: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "round_prefer_floor": lambda c: np.ceil(c - 0.5),
    "round_prefer_ceil": lambda c: np.floor(c + 0.5),
    "floor": np.floor,
    "ceil": np.ceil,
}


def _resize_taps(out_size: int, in_size: int, scale: float, mode: str, transform: str,
                 nearest_mode: str) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Where each output index along one axis reads the input: (low, high, frac), the value
    being x[low] + (x[high] - x[low]) * frac; frac None for nearest (x[low] alone)."""
    coords = _source_coordinates(out_size, in_size, scale, transform)
    if mode == "nearest":
        index = np.clip(_NEAREST[nearest_mode](coords), 0, in_size - 1).astype(np.int64)
        return index, index, None
    coords = np.clip(coords, 0, in_size - 1)
    low = np.floor(coords).astype(np.int64)
    high = np.minimum(low + 1, in_size - 1)
    return low, high, coords - low


def resize(x: np.ndarray, sizes: Sequence[int], scales: Sequence[float], mode: str, transform: str,
           nearest_mode: str, out: Optional[np.ndarray] = None, num_threads: Optional[int] = None,
           program: Any = None) -> np.ndarray:
    """Separable ONNX Resize, one axis at a time (linear on each axis is (bi/tri)linear over
    all of them); axes whose size and scale are unchanged are skipped.  float32 with at most
    two adjacent axes resized (an image's height and width, in either layout) is one native
    pass, into `out` when given (a C-contiguous float32 array of the result's shape), recorded
    into `program` (a NetProgram) where that pass is all the call does."""
    axes = [a for a, (o, s) in enumerate(zip(sizes, scales)) if not (o == x.shape[a] and s == 1)]
    if (x.dtype == np.float32 and x.flags.c_contiguous and x.ndim >= 2 and 1 <= len(axes) <= 2
            and axes[-1] - axes[0] == len(axes) - 1):
        h = min(axes[0], x.ndim - 2)  # the resized axes as (h, w), w possibly kept
        taps = [_resize_taps(sizes[a], x.shape[a], scales[a], mode, transform, nearest_mode) if a in axes
                else (np.arange(x.shape[a], dtype=np.int64),) * 2 + (None,) for a in (h, h + 1)]
        outer, inner = int(np.prod(x.shape[:h], dtype=np.int64)), int(np.prod(x.shape[h + 2:], dtype=np.int64))
        shape = tuple(int(s) for s in sizes)
        usable = out is not None and out.dtype == np.float32 and out.flags.c_contiguous and out.shape == shape
        y = out if usable else np.empty(shape, np.float32)
        (lh, hh, fh), (lw, hw, fw) = taps
        _native.resize_2d(x.reshape(outer, x.shape[h], x.shape[h + 1], inner),
                          y.reshape(outer, shape[h], shape[h + 1], inner), lh, hh,
                          None if fh is None else fh.astype(np.float32), lw, hw,
                          None if fw is None else fw.astype(np.float32), num_threads or 0,
                          program if out is None or usable else None)
        if out is not None and not usable:
            np.copyto(out, y)
            return out
        return y
    for axis in axes:
        low, high, frac = _resize_taps(sizes[axis], x.shape[axis], scales[axis], mode, transform, nearest_mode)
        if frac is None:
            x = np.take(x, low, axis=axis)
            continue
        shape = [1] * x.ndim
        shape[axis] = sizes[axis]
        # a + (b - a) * frac, in place in b's array: no temporaries of the (large) result's size
        a, y = np.take(x, low, axis=axis), np.take(x, high, axis=axis)
        y -= a
        y *= frac.astype(x.dtype).reshape(shape)
        y += a
        x = y
    if out is not None:
        np.copyto(out, x)
        return out
    return x


def slice_array(x: np.ndarray, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int],
                steps: Sequence[int]) -> np.ndarray:
    index: List[Any] = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        # ONNX clamps like Python slicing, with "past the end" given as huge ints.
        size = x.shape[a]
        s, e = min(max(int(s), -size - 1), size), min(max(int(e), -size - 1), size)
        if st < 0 and e < -size:
            e = None  # type: ignore[assignment]  # down to and including index 0
        index[a] = slice(s, e, int(st))
    return x[tuple(index)]


def split(x: np.ndarray, axis: int, sizes: Sequence[int]) -> Tuple[np.ndarray, ...]:
    bounds = np.cumsum(sizes)[:-1]
    return tuple(np.split(x, bounds, axis=axis))


def even_split_sizes(total: int, parts: int) -> List[int]:
    """Split's sizes without a `split` input: equal parts, the last one smaller (opset 18)."""
    size = -(-total // parts)
    return [size] * (parts - 1) + [total - size * (parts - 1)]


def reshape_target(shape: Sequence[int], target: Sequence[int], allowzero: bool) -> Tuple[int, ...]:
    """ONNX Reshape's shape: 0 copies the input's size (unless allowzero), -1 is inferred."""
    out = [shape[i] if (t == 0 and not allowzero) else int(t) for i, t in enumerate(target)]
    return tuple(out)


def relayout(x: np.ndarray, perm: Tuple[int, ...], num_threads: int = 0,
             out: Optional[np.ndarray] = None, program: Any = None) -> np.ndarray:
    """np.ascontiguousarray(x.transpose(perm)), into `out` where it is a C-contiguous array of
    the result's shape and dtype.  Between channels-first and channels-last (perm (0, 2, ..., 1)
    or its inverse) a C-contiguous float array is a batch of (channels, pixels) matrices,
    transposed in one native pass in the network's threads: NumPy copies an image of three
    channels one strided channel at a time, on one thread.  program: a NetProgram that records
    the native pass."""
    r = x.ndim
    moved = x.transpose(perm)
    if moved.flags.c_contiguous:  # (one channel, or one pixel: already in order, a view)
        return moved
    if r >= 3 and x.size and x.dtype in (np.float32, np.float64) and x.flags.c_contiguous:
        first = perm == (0, *range(2, r), 1)
        if first or perm == (0, r - 1, *range(1, r - 1)):
            fits = out is not None and out.shape == moved.shape and out.dtype == x.dtype and out.flags.c_contiguous
            y = out if fits else np.empty(moved.shape, x.dtype)
            n = x.shape[0]
            rows = x.shape[1] if first else x.size // (n * x.shape[-1])
            cols = x.size // (n * rows)
            _native.transpose_matrices(x.reshape(n, rows, cols), y.reshape(n, cols, rows), num_threads, program)
            return y
    return contiguous(moved, num_threads, program)  # (8-bit values too: a recorded native copy)


def native_copy(x: Any, y: np.ndarray, num_threads: int = 0, program: Any = None) -> bool:
    """y[...] = x as one native copy (recorded into `program`, a NetProgram, where given) where
    x is an array of y's shape and dtype, apart from it; False (nothing done) otherwise."""
    if x.__class__ is not np.ndarray:
        return False
    try:
        _native.copy_strided(x, y, num_threads, program)
    except (TypeError, ValueError):  # (its checks: another shape or dtype, overlap, strides, axes)
        return False
    return True


def contiguous(x: np.ndarray, num_threads: int = 0, program: Any = None) -> np.ndarray:
    """np.ascontiguousarray(x).  With `program` (a network's recording), a native copy recorded
    into it where one applies.  A view whose last axis is short and strided (an NCHW image
    seen as NHWC, the transpose of a channel shuffle) is copied one index of that axis at a
    time, so the inner loop runs along a long axis: NumPy's own copy loops over the short one."""
    if x.flags.c_contiguous:
        return x
    if program is not None:
        y = np.empty(x.shape, x.dtype)
        if native_copy(x, y, num_threads, program):
            return y
    if x.ndim >= 2 and x.shape[-1] <= 8 and x.strides[-1] != x.itemsize:
        compact = np.empty(x.shape, x.dtype)
        for i in range(x.shape[-1]):
            compact[..., i] = x[..., i]
        return compact
    return np.ascontiguousarray(x)


def reshape(x: np.ndarray, shape: Sequence[int], num_threads: int = 0, program: Any = None) -> np.ndarray:
    """x.reshape(shape): a view where one can be, else a copy (contiguous's, with num_threads
    and program).  An empty x (a batch of none) takes a -1 beside a 0 as the size it has for
    one image (NumPy cannot infer it; cppconv.dask.apply learns a network's output shape from
    an empty batch)."""
    if x.size == 0 and -1 in shape and 0 in shape:
        one = int(np.prod([d or 1 for d in x.shape], dtype=np.int64))
        others = int(np.prod([d or 1 for d in shape if d != -1], dtype=np.int64))
        if one % others == 0:
            shape = [one // others if d == -1 else d for d in shape]
    try:
        return np.reshape(x, shape, copy=False)
    except ValueError:
        return contiguous(x, num_threads, program).reshape(shape)


def gemm(a: np.ndarray, b: np.ndarray, c: Optional[np.ndarray], alpha: float, beta: float, trans_a: bool,
         trans_b: bool) -> np.ndarray:
    y = np.matmul(a.T if trans_a else a, b.T if trans_b else b)
    if alpha != 1:
        y *= np.asarray(alpha, y.dtype)
    if c is not None:
        y += c * np.asarray(beta, y.dtype) if beta != 1 else c
    return y


def pool_nd(x: np.ndarray, kind: str, kernel: Sequence[int], stride: Sequence[int], pads: Sequence[int],
            dilation: Sequence[int], ceil_mode: bool, count_include_pad: bool) -> np.ndarray:
    """Max or average pooling over the axes 1..r of a channels-last x (N, *spatial, C), for
    what cppconv's pools do not take: padding over half the kernel, dilated averages."""
    r = len(kernel)
    fill = -np.inf if kind == "max" else 0
    outs = [_native.pool_output_size(x.shape[1 + i], kernel[i], stride[i], pads[i], pads[r + i], dilation[i],
                                     ceil_mode) for i in range(r)]
    # Extra zero/-inf padding at the end covers ceil_mode's partial windows.
    extra = [max((o - 1) * s + d * (k - 1) + 1 - (x.shape[1 + i] + pads[i] + pads[r + i]), 0)
             for i, (o, s, d, k) in enumerate(zip(outs, stride, dilation, kernel))]
    width = [(0, 0)] + [(pads[i], pads[r + i] + extra[i]) for i in range(r)] + [(0, 0)]
    padded = np.pad(x, width, constant_values=fill)
    acc: Optional[np.ndarray] = None
    count: Any = 0
    ones = None
    if kind == "avg":
        # The divisor per output: input pixels (or padded-input pixels) under the window.
        inside = np.zeros([1] + [padded.shape[1 + i] for i in range(r)] + [1], x.dtype)
        region = tuple(slice(pads[i], pads[i] + x.shape[1 + i]) if not count_include_pad
                       else slice(0, x.shape[1 + i] + pads[i] + pads[r + i]) for i in range(r))
        inside[(slice(None),) + region + (slice(None),)] = 1
        ones = inside
    for offset in np.ndindex(*kernel):
        index = (slice(None),) + tuple(slice(o * d, o * d + (n - 1) * s + 1, s)
                                       for o, d, n, s in zip(offset, dilation, outs, stride)) + (slice(None),)
        window = padded[index]
        if kind == "max":
            acc = window if acc is None else np.maximum(acc, window)
        else:
            acc = window.copy() if acc is None else acc + window
            count = count + ones[index]  # type: ignore[index]
    assert acc is not None
    return acc if kind == "max" else acc / count
