"""Max, average, adaptive and global pooling in 1, 2 and 3 dimensions, their layers and the
size arithmetic.  Every rank runs the one native pool (_native.pool with a _native.PoolSettings,
_native.adaptive_pool), which gives the missing leading axes size 1."""

from __future__ import annotations

from typing import Any, Dict, Literal, Optional, Sequence, Tuple, Union, overload

import numpy as np

from . import _args, _buffers, _layer, _native, _types

_MAX, _AVG = 0, 1
_I64 = np.dtype(np.int64)
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
# The spatial axes' names by rank, for messages.
_AXIS_NAMES = {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}
_PADDING_WORDS = {1: "(left, right)", 2: "(top, bottom, left, right)", 3: "(front, back, top, bottom, left, right)"}


def _simple_pool(kind: int, x: Any, kernel_size: Any, stride: Any, padding: Any, count_include_pad: Any,
                 layout: Any) -> Optional[np.ndarray]:
    """The common pooling call in one native step (about 1.5 us instead of 6): a C-contiguous
    float32/float64 4-D ndarray, int sizes, no dilation, ceil_mode, indices or out.  None for
    anything else, which the full path handles (and checks)."""
    if x.__class__ is not np.ndarray or x.ndim != 4 or not x.flags.c_contiguous:
        return None
    dtype = x.dtype
    if (dtype is not _F32 and dtype is not _F64) or kernel_size.__class__ is not int or padding.__class__ is not int:
        return None
    k, p = kernel_size, padding
    s = k if stride is None else stride
    if s.__class__ is not int or not (1 <= k < 2**31 and 1 <= s < 2**31 and 0 <= p <= k // 2):
        return None
    code = _args.LAYOUTS.get(layout) if layout.__class__ is str else None
    if code is None:
        return None
    if code == 1:
        n, h, w, c = x.shape
    else:
        n, c, h, w = x.shape
    oh, ow = _pool_length(h, k, s, p, p, 1, False), _pool_length(w, k, s, p, p, 1, False)
    if h < 1 or w < 1 or oh < 1 or ow < 1:
        return None
    shape = (n, oh, ow, c) if code == 1 else (n, c, oh, ow)
    y = _buffers.OUTPUTS.empty(shape, dtype, nbytes=n * c * oh * ow * x.itemsize)
    key = (kind, k, s, p, bool(count_include_pad), code)
    settings = _SIMPLE_SETTINGS.get(key)
    if settings is None:
        if len(_SIMPLE_SETTINGS) >= 256:
            _SIMPLE_SETTINGS.clear()
        settings = _SIMPLE_SETTINGS[key] = _native.PoolSettings(kind, (k, k), (s, s), (p, p, p, p), (1, 1), False,
                                                                 key[4], 0, code)
    _native.pool(x, y, None, settings)
    return y


# _simple_pool's settings by (kind, kernel, stride, padding, count_include_pad, layout): built
# once per distinct call rather than per call.
_SIMPLE_SETTINGS: Dict[Tuple[int, int, int, int, bool, int], _native.PoolSettings] = {}


def _pool_length(i: int, k: int, s: int, before: int, after: int, d: int, ceil_mode: bool) -> int:
    """PyTorch's pooled length, or 0 when no window fits (see pool_output_size).  The rule lives
    in the native core only (cpp/pool.cpp), which _native.pool checks its output shape against."""
    return int(_native.pool_output_size(i, k, s, before, after, d, ceil_mode))


def _no_window(axis: str, i: int, k: int, s: int, before: int, after: int, d: int, ceil_mode: bool) -> ValueError:
    """The error for an axis where _pool_length found no window."""
    spans, padded = d * (k - 1) + 1, i + before + after
    limit = f"the padded input size {padded}" + (f" plus stride - 1 = {s - 1} (ceil_mode)" if ceil_mode else "")
    return ValueError(f"kernel_size {k} with dilation {d} spans {spans}{axis}, more than {limit}: output size below 1")


@overload
def pool_output_size(
    input_size: int, kernel_size: int, stride: Optional[int] = None, padding: int = 0, dilation: int = 1,
    ceil_mode: bool = False,
) -> int: ...
@overload
def pool_output_size(
    input_size: Sequence[int], kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
    ceil_mode: bool = False,
) -> Tuple[int, ...]: ...
def pool_output_size(
    input_size: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1, ceil_mode: bool = False
) -> Any:
    """Output length of a max or average pool along one axis (PyTorch's rule), or the output
    sizes of any rank for a sequence of input sizes (the other sizes then an int or one per axis).

    ``O = floor((I + 2P - D (K - 1) - 1) / S) + 1`` (``ceil`` in ceil_mode, where the last
    window must still start inside the input or the left padding but may reach past the
    right padding).  stride defaults to kernel_size.

    >>> pool_output_size(112, 3, stride=2, padding=1)
    56
    >>> pool_output_size(5, 2, ceil_mode=True)
    3
    >>> pool_output_size((16, 112, 112), (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
    (16, 56, 56)
    """
    if isinstance(input_size, (tuple, list)):
        rank = len(input_size)
        strides = kernel_size if stride is None else stride
        k, s, p, d = (_args.ntuple(v, name, rank) for v, name in ((kernel_size, "kernel_size"), (strides, "stride"),
                                                                   (padding, "padding"), (dilation, "dilation")))
        return tuple(_axis_output_size(input_size[a], k[a], s[a], p[a], d[a], ceil_mode) for a in range(rank))
    return _axis_output_size(input_size, kernel_size, stride, padding, dilation, ceil_mode)


def _axis_output_size(
    input_size: Any, kernel_size: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: bool
) -> int:
    strides = kernel_size if stride is None else stride
    i, k, s, p, d = _args.axis_sizes(input_size, kernel_size, strides, padding, dilation)
    out = _pool_length(i, k, s, p, p, d, bool(ceil_mode))
    if out < 1:
        raise _no_window("", i, k, s, p, p, d, bool(ceil_mode))
    return out


class _PoolSpec:
    """The hyper-parameters of a max or average pool of `rank` spatial axes, normalised once.
    Per-axis values are tuples in axis order; padding is (before, after) per axis."""

    __slots__ = ("kind", "rank", "kernel", "stride", "padding", "dilation", "ceil_mode", "count_include_pad",
                 "divisor", "layout", "settings")

    def __init__(self, kind: int, kernel_size: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: Any,
                 count_include_pad: Any, divisor_override: Any, layout: Any, rank: int = 2):
        self.kind, self.rank = kind, rank
        self.kernel = _args.ntuple(kernel_size, "kernel_size", rank, minimum=1)
        empty = stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0)
        self.stride = self.kernel if empty else _args.ntuple(stride, "stride", rank, minimum=1)
        self.dilation = _args.ntuple(dilation, "dilation", rank, minimum=1)
        self.padding = _args.explicit_padding_nd(padding, rank)  # None means "same"
        if self.padding is not None:
            limits = tuple(k // 2 for k in self.kernel)
            # PyTorch: pad <= kernel_size // 2 (whatever the dilation).
            if any(max(self.padding[2 * a], self.padding[2 * a + 1]) > limits[a] for a in range(rank)):
                raise ValueError(
                    f"padding {padding!r} must be at most half of kernel_size {self.kernel}: "
                    f"got {_PADDING_WORDS[rank]} = {self.padding}, limits {limits}"
                )
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        if divisor_override is None:
            self.divisor = 0
        else:
            self.divisor = _args.as_int(divisor_override, "divisor_override")
            if self.divisor == 0:
                raise ValueError("divisor_override must be a non-zero integer or None, got 0")
        self.layout = _args.layout_code(layout, rank)
        # The native settings, built once; "same" padding depends on the input's size (settings_for).
        self.settings = None if self.padding is None else self.settings_for(self.padding)

    def settings_for(self, padding: Tuple[int, ...]) -> _native.PoolSettings:
        """The native settings of this spec with explicit (before, after) padding per axis."""
        return _native.PoolSettings(self.kind, self.kernel, self.stride, padding, self.dilation, self.ceil_mode,
                                    self.count_include_pad, self.divisor, self.layout)

    def kwargs(self) -> Dict[str, Any]:
        """The keyword arguments of MaxPool{rank}d or AvgPool{rank}d (by kind) that give this spec."""
        common = {"kernel_size": self.kernel, "stride": self.stride, "padding": _args.padding_argument_nd(self.padding),
                  "ceil_mode": self.ceil_mode, "layout": _args.code_word(_args.RANK_LAYOUTS[self.rank], self.layout)}
        if self.kind == _MAX:
            return {**common, "dilation": self.dilation}
        return {**common, "count_include_pad": self.count_include_pad, "divisor_override": self.divisor or None}


def _input(x: Any, kind: int, dtype: Any) -> Tuple[np.ndarray, _args.CallDtypes]:
    """x as an array, and the call's dtypes (_args.call_dtypes): max pooling keeps an integer x's
    dtype, computed in float64 for the wide ones, so 8-byte integers must lie where float64
    holds every one."""
    x = _args.as_input_array(x, "x")
    dtypes = _args.call_dtypes(x, None, None, dtype, keeps_integers=kind == _MAX)
    if dtypes.result.kind in "iu" and dtypes.result.itemsize == 8 and x.size:
        low, high = int(x.min()), int(x.max())
        if low < -(2**53) or high > 2**53:
            raise ValueError(
                f"x holds {x.dtype} values from {low} to {high}, beyond +-2^53, where max pooling (computed in "
                f"float64) would not be exact: pass dtype=np.float64 for a float64 result, or narrower integers")
    return x, dtypes


def _batched(x: np.ndarray, rank: int, layout: int, function: str) -> np.ndarray:
    """x with its batch axis; a 2-D pool also takes a 2-D image (H, W) (and keeps its errors).
    function names the call for the rank-mismatch error, e.g. "max_pool{}d"."""
    if rank == 2:
        return _args.image_4d(x, layout)
    return _args.batched(x, rank, layout, function)


def _spatial(xb: np.ndarray, layout: int) -> Tuple[int, int, Tuple[int, ...]]:
    """(N, C, spatial sizes) of a batched array in layout."""
    shape = xb.shape
    n, c, sizes = (shape[0], shape[-1], shape[1:-1]) if layout == 1 else (shape[0], shape[1], shape[2:])
    if min(sizes) < 1:
        words = ", ".join(f"{name} {size}" for name, size in zip(_AXIS_NAMES[len(sizes)], sizes))
        raise ValueError(f"x has an empty spatial dimension: {words}")
    return n, c, tuple(sizes)


def _batched_shape(n: int, c: int, sizes: Tuple[int, ...], layout: int) -> Tuple[int, ...]:
    return (n, *sizes, c) if layout == 1 else (n, c, *sizes)


def _result_shape(full: Tuple[int, ...], ndim: int, rank: int, layout: int) -> Tuple[int, ...]:
    """The user's result shape for an input of ndim dimensions whose batched result is `full`."""
    if rank == 2:
        return _args.image_shape(full, ndim, layout)  # type: ignore[arg-type]
    return full if ndim == rank + 2 else full[1:]


def _split_out(out: Any, return_indices: bool) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    if out is None:
        return None, None
    if isinstance(out, tuple):
        if not return_indices or len(out) != 2:
            raise TypeError("out must be an array, or a (values, indices) pair when return_indices=True")
        return out[0], out[1]
    return out, None


class _Destinations:
    """Where a pool's kernel writes its values (and, with return_indices, the argmax indices),
    checked against the user's `out` (an array or a (values, indices) pair), and how the
    results reach the user."""

    def __init__(self, out: Any, return_indices: bool, shape: Tuple[int, ...], shape4: Tuple[int, ...],
                 result: np.dtype, compute: np.dtype, x: np.ndarray):
        _args.check_result_size(shape, result)
        self.out_values, self.out_indices = _split_out(out, return_indices)
        if self.out_values is not None:
            _args.check_out(self.out_values, shape, result)
        if self.out_indices is not None:
            _args.check_out(self.out_indices, shape, _I64)
        self.shape, self.result, self.return_indices = shape, result, return_indices
        self.values, self.values_direct = _args.output_buffer(
            self.out_values, shape4, result, compute, (x, self.out_indices)
        )
        self.indices: Optional[np.ndarray] = None
        self.indices_direct = False
        if return_indices:
            oi = self.out_indices
            self.indices_direct = oi is not None and oi.flags.c_contiguous and not _args.overlaps(oi, (x, self.values))
            self.indices = oi.reshape(shape4) if self.indices_direct else np.empty(shape4, dtype=_I64)  # type: ignore[union-attr]

    def deliver(self) -> Any:
        y = _args.deliver(self.out_values, self.values, self.values_direct, self.shape, self.result)
        if not self.return_indices:
            return y
        return y, _args.deliver(self.out_indices, self.indices, self.indices_direct, self.shape, _I64)  # type: ignore[arg-type]


def _run_pool(spec: _PoolSpec, x: Any, out: Any, return_indices: bool = False, algorithm: str = "",
              num_threads: Any = None, dtype: Any = None, program: Any = None) -> Any:
    """The pool of spec over x.  program: a NetProgram that records the native call, where the
    call does nothing else (x pooled in place, the values written straight into the result)."""
    rank = spec.rank
    threads = _args.thread_count(num_threads)
    x, dtypes = _input(x, spec.kind, dtype)
    xb = _batched(x, rank, spec.layout, "max_pool{}d" if spec.kind == _MAX else "avg_pool{}d")
    n, c, sizes = _spatial(xb, spec.layout)
    pads = spec.padding
    if pads is None:
        pads = tuple(v for a in range(rank) for v in _args.same_padding(sizes[a], spec.kernel[a], spec.stride[a],
                                                                         spec.dilation[a]))
    _args.check_padded_size(tuple(sizes[a] + pads[2 * a] + pads[2 * a + 1] for a in range(rank)))
    out_sizes = []
    for a in range(rank):
        axis = (sizes[a], spec.kernel[a], spec.stride[a], pads[2 * a], pads[2 * a + 1], spec.dilation[a],
                spec.ceil_mode)
        length = _pool_length(*axis)
        if length < 1:
            raise _no_window(f" along the {_AXIS_NAMES[rank][a]}", *axis)
        out_sizes.append(length)
    full = _batched_shape(n, c, tuple(out_sizes), spec.layout)
    shape = _result_shape(full, x.ndim, rank, spec.layout)
    dest = _Destinations(out, return_indices, shape, full, dtypes.result, dtypes.compute, x)
    xin = _args.as_rounded(xb, dtypes.compute, dtypes.rounding)
    settings = spec.settings if spec.settings is not None else spec.settings_for(pads)
    alone = program is not None and xin is xb and np.may_share_memory(xb, x) and (
        dest.values_direct or (out is None and dest.values.dtype == dtypes.result))
    _native.pool(xin, dest.values, dest.indices, settings, algorithm, threads, program if alone else None)
    return dest.deliver()


@overload
def max_pool2d(
    x: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: Literal[False] = False,
    layout: _types.Layout2d = "NCHW",
    out: Optional[_types.Array] = None,
    num_threads: Optional[int] = None,
    dtype: Any = None,
) -> _types.Array: ...
@overload
def max_pool2d(
    x: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    *,
    return_indices: Literal[True],
    layout: _types.Layout2d = "NCHW",
    out: Optional[Tuple[_types.Array, _types.Array]] = None,
    num_threads: Optional[int] = None,
    dtype: Any = None,
) -> _types.ArrayAndIndices: ...
@overload
def max_pool2d(
    x: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
    layout: _types.Layout2d = "NCHW",
    out: Any = None,
    num_threads: Optional[int] = None,
    dtype: Any = None,
) -> Union[_types.Array, _types.ArrayAndIndices]: ...
def max_pool2d(
    x: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
    layout: _types.Layout2d = "NCHW",
    out: Any = None,
    num_threads: Optional[int] = None,
    dtype: Any = None,
) -> Union[_types.Array, _types.ArrayAndIndices]:
    """2-D max pooling (``torch.nn.functional.max_pool2d``).

    Args:
        x: ``(N, C, H, W)`` or ``(C, H, W)`` for ``layout="NCHW"``, ``(N, H, W, C)`` or
            ``(H, W, C)`` for ``layout="NHWC"``, or a 2-D image ``(H, W)``.
        kernel_size, dilation: int or ``(h, w)``.
        stride: int or ``(h, w)``; None (default) means kernel_size.
        padding: int, ``(ph, pw)``, ``((top, bottom), (left, right))``, ``"valid"`` or
            ``"same"`` (output ``ceil(I / S)``, the odd pixel at the bottom/right).  Padding
            counts as -inf; each side must be at most ``kernel_size // 2``.
        ceil_mode: round the output size up (the last window must start inside the input or
            the left padding).
        return_indices: also return, as int64, the flat index ``h * W + w`` of each maximum
            in its input plane.  A NaN in a window wins (output NaN, index of the NaN).
        layout: ``"NCHW"`` or ``"NHWC"``, for x and the result.
        out: array of the result's shape and dtype to write into (returned); with
            return_indices also a ``(values, indices)`` pair.
        num_threads: threads for this call only (default None: ``cppconv.get_num_threads()``);
            every pool takes it.
        dtype: the result's dtype, ``float32``, ``float64``, ``float16`` or ``bfloat16``, as if
            x were first cast to it; every pool takes it.  Default None: see Returns.

    Returns:
        ``(N, C, OH, OW)`` (NCHW) or ``(N, OH, OW, C)`` (NHWC), without N for an unbatched x,
        ``(OH, OW)`` for a 2-D image; float16/32/64 and bfloat16 keep their dtype (bfloat16
        and float16 computed in float32); max pooling keeps integer and bool dtypes, exactly
        (8-byte integers beyond +-2^53 raise ValueError), average pooling gives float64 for
        them as ``numpy.mean`` does.  With return_indices a pair (values, indices).

    >>> import numpy as np, cppconv
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    >>> cppconv.max_pool2d(x, 2)
    array([[[ 5.,  7.],
            [13., 15.]]], dtype=float32)
    """
    if (out is None and num_threads is None and dtype is None and dilation.__class__ is int and dilation == 1
            and ceil_mode is False and return_indices is False):
        y = _simple_pool(_MAX, x, kernel_size, stride, padding, True, layout)
        if y is not None:
            return y
    spec = _PoolSpec(_MAX, kernel_size, stride, padding, dilation, ceil_mode, True, None, layout)
    return _run_pool(spec, x, out, bool(return_indices), num_threads=num_threads, dtype=dtype)


def avg_pool2d(
    x: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: Optional[int] = None,
    layout: _types.Layout2d = "NCHW",
    out: Optional[np.ndarray] = None,
    num_threads: Optional[int] = None,
    dtype: Any = None,
) -> np.ndarray:
    """2-D average pooling (``torch.nn.functional.avg_pool2d``).

    Shapes, dtypes, stride, padding, ceil_mode, layout and out as in :func:`max_pool2d`
    (padding counts as zeros).  The divisor is ``divisor_override`` when given, else with
    ``count_include_pad`` the window clipped to the padded input (a ceil_mode window hanging
    past the padding counts only up to it), else the number of input pixels in the window.

    >>> import numpy as np, cppconv
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    >>> cppconv.avg_pool2d(x, 2)
    array([[[ 2.5,  4.5],
            [10.5, 12.5]]], dtype=float32)
    """
    if out is None and num_threads is None and dtype is None and ceil_mode is False and divisor_override is None:
        y = _simple_pool(_AVG, x, kernel_size, stride, padding, count_include_pad, layout)
        if y is not None:
            return y
    spec = _PoolSpec(_AVG, kernel_size, stride, padding, 1, ceil_mode, count_include_pad, divisor_override, layout)
    return _run_pool(spec, x, out, num_threads=num_threads, dtype=dtype)


@overload
def max_pool1d(
    x: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: Literal[False] = False,
    layout: _types.Layout1d = "NCW",
    out: Optional[_types.Array] = None,
    num_threads: Optional[int] = None,
    dtype: Any = None,
) -> _types.Array: ...
@overload
def max_pool1d(
    x: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    *,
    return_indices: Literal[True],
    layout: _types.Layout1d = "NCW",
    out: Optional[Tuple[_types.Array, _types.Array]] = None,
    num_threads: Optional[int] = None,
    dtype: Any = None,
) -> _types.ArrayAndIndices: ...
@overload
def max_pool1d(
    x: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
    layout: _types.Layout1d = "NCW",
    out: Any = None,
    num_threads: Optional[int] = None,
    dtype: Any = None,
) -> Union[_types.Array, _types.ArrayAndIndices]: ...
def max_pool1d(
    x: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
    layout: _types.Layout1d = "NCW",
    out: Any = None,
    num_threads: Optional[int] = None,
    dtype: Any = None,
) -> Union[_types.Array, _types.ArrayAndIndices]:
    """1-D max pooling (``torch.nn.functional.max_pool1d``): :func:`max_pool2d` along one axis.

    x is ``(N, C, L)`` or ``(C, L)`` for ``layout="NCW"``, ``(N, L, C)`` or ``(L, C)`` for
    ``"NWC"``.  Sizes are ints (or 1-tuples); padding also ``((left, right),)``, ``"valid"`` or
    ``"same"``.  Indices are positions along L.

    >>> import numpy as np, cppconv
    >>> cppconv.max_pool1d(np.array([[1., 3., 2., 5., 4.]]), 2, ceil_mode=True)
    array([[3., 5., 4.]])
    """
    spec = _PoolSpec(_MAX, kernel_size, stride, padding, dilation, ceil_mode, True, None, layout, rank=1)
    return _run_pool(spec, x, out, bool(return_indices), num_threads=num_threads, dtype=dtype)


@overload
def max_pool3d(
    x: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: Literal[False] = False,
    layout: _types.Layout3d = "NCDHW",
    out: Optional[_types.Array] = None,
    num_threads: Optional[int] = None,
    dtype: Any = None,
) -> _types.Array: ...
@overload
def max_pool3d(
    x: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    *,
    return_indices: Literal[True],
    layout: _types.Layout3d = "NCDHW",
    out: Optional[Tuple[_types.Array, _types.Array]] = None,
    num_threads: Optional[int] = None,
    dtype: Any = None,
) -> _types.ArrayAndIndices: ...
@overload
def max_pool3d(
    x: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
    layout: _types.Layout3d = "NCDHW",
    out: Any = None,
    num_threads: Optional[int] = None,
    dtype: Any = None,
) -> Union[_types.Array, _types.ArrayAndIndices]: ...
def max_pool3d(
    x: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
    layout: _types.Layout3d = "NCDHW",
    out: Any = None,
    num_threads: Optional[int] = None,
    dtype: Any = None,
) -> Union[_types.Array, _types.ArrayAndIndices]:
    """3-D max pooling (``torch.nn.functional.max_pool3d``): :func:`max_pool2d` with a depth axis.

    x is ``(N, C, D, H, W)`` or ``(C, D, H, W)`` for ``layout="NCDHW"``, ``(N, D, H, W, C)`` or
    ``(D, H, W, C)`` for ``"NDHWC"``.  Sizes are ints or ``(d, h, w)``; padding also three
    ``(before, after)`` pairs, ``"valid"`` or ``"same"``.  Indices are flat
    ``(d * H + h) * W + w`` within each input volume.

    >>> import numpy as np, cppconv
    >>> cppconv.max_pool3d(np.arange(8.0).reshape(1, 2, 2, 2), 2)
    array([[[[7.]]]])
    """
    spec = _PoolSpec(_MAX, kernel_size, stride, padding, dilation, ceil_mode, True, None, layout, rank=3)
    return _run_pool(spec, x, out, bool(return_indices), num_threads=num_threads, dtype=dtype)


def avg_pool1d(
    x: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: Optional[int] = None,
    layout: _types.Layout1d = "NCW",
    out: Optional[np.ndarray] = None,
    num_threads: Optional[int] = None,
    dtype: Any = None,
) -> np.ndarray:
    """1-D average pooling (``torch.nn.functional.avg_pool1d``, plus PyTorch 2-D's
    divisor_override): :func:`avg_pool2d` along one axis; shapes as in :func:`max_pool1d`.

    >>> import numpy as np, cppconv
    >>> cppconv.avg_pool1d(np.array([[1., 3., 2., 6.]]), 2)
    array([[2., 4.]])
    """
    spec = _PoolSpec(_AVG, kernel_size, stride, padding, 1, ceil_mode, count_include_pad, divisor_override, layout,
                     rank=1)
    return _run_pool(spec, x, out, num_threads=num_threads, dtype=dtype)


def avg_pool3d(
    x: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: Optional[int] = None,
    layout: _types.Layout3d = "NCDHW",
    out: Optional[np.ndarray] = None,
    num_threads: Optional[int] = None,
    dtype: Any = None,
) -> np.ndarray:
    """3-D average pooling (``torch.nn.functional.avg_pool3d``): :func:`avg_pool2d` with a
    depth axis; shapes as in :func:`max_pool3d`.

    >>> import numpy as np, cppconv
    >>> cppconv.avg_pool3d(np.arange(8.0).reshape(1, 2, 2, 2), 2)
    array([[[[3.5]]]])
    """
    spec = _PoolSpec(_AVG, kernel_size, stride, padding, 1, ceil_mode, count_include_pad, divisor_override, layout,
                     rank=3)
    return _run_pool(spec, x, out, num_threads=num_threads, dtype=dtype)


def _adaptive_request(output_size: Any, rank: int) -> Tuple[Optional[int], ...]:
    """An adaptive pool's output_size per axis, None for "the input's size"."""
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != rank:
            raise ValueError(f"output_size must be an int or {rank} sizes ({', '.join(_AXIS_NAMES[rank])}), "
                             f"got {output_size!r}")
        sizes = tuple(None if v is None else _args.as_int(v, "output_size") for v in output_size)
    else:
        sizes = (_args.as_int(output_size, "output_size"),) * rank
    if min((v for v in sizes if v is not None), default=1) < 1:
        raise ValueError(f"output_size must be >= 1, got {output_size!r}")
    return sizes


def _run_adaptive(kind: int, x: Any, output_size: Any, layout: Any, return_indices: bool = False,
                  out: Any = None, algorithm: str = "", rank: int = 2, num_threads: Any = None,
                  dtype: Any = None) -> Any:
    code = _args.layout_code(layout, rank)
    threads = _args.thread_count(num_threads)
    request = _adaptive_request(output_size, rank)
    x, dtypes = _input(x, kind, dtype)
    xb = _batched(x, rank, code, "adaptive_max_pool{}d" if kind == _MAX else "adaptive_avg_pool{}d")
    n, c, sizes = _spatial(xb, code)
    full = _batched_shape(n, c, tuple(s if r is None else r for s, r in zip(sizes, request)), code)
    shape = _result_shape(full, x.ndim, rank, code)
    dest = _Destinations(out, return_indices, shape, full, dtypes.result, dtypes.compute, x)
    xin = _args.as_rounded(xb, dtypes.compute, dtypes.rounding)
    _native.adaptive_pool(xin, dest.values, dest.indices, kind, code, algorithm, threads)
    return dest.deliver()


def adaptive_avg_pool2d(
    x: Any, output_size: Any, layout: _types.Layout2d = "NCHW", out: Optional[np.ndarray] = None,
    num_threads: Optional[int] = None,
    dtype: Any = None,
) -> np.ndarray:
    """Adaptive average pooling to a fixed output size (``torch.nn.functional.adaptive_avg_pool2d``).

    Output ``(i, j)`` averages input rows ``floor(i H / OH) .. ceil((i + 1) H / OH) - 1`` and
    the columns alike, so windows may overlap when OH does not divide H.

    Args:
        x: as for :func:`max_pool2d`.
        output_size: int or ``(OH, OW)``; a None entry keeps that input size.
        layout: ``"NCHW"`` or ``"NHWC"``.
        out: array of the result's shape and dtype to write into (returned).

    >>> import numpy as np, cppconv
    >>> cppconv.adaptive_avg_pool2d(np.ones((2, 3, 10, 7)), (4, None)).shape
    (2, 3, 4, 7)
    """
    return _run_adaptive(_AVG, x, output_size, layout, out=out, num_threads=num_threads, dtype=dtype)


@overload
def adaptive_max_pool2d(
    x: Any, output_size: Any, return_indices: Literal[False] = False, layout: _types.Layout2d = "NCHW",
    out: Optional[_types.Array] = None, num_threads: Optional[int] = None,
    dtype: Any = None,
) -> _types.Array: ...
@overload
def adaptive_max_pool2d(
    x: Any, output_size: Any, return_indices: Literal[True], layout: _types.Layout2d = "NCHW",
    out: Optional[Tuple[_types.Array, _types.Array]] = None, num_threads: Optional[int] = None,
    dtype: Any = None,
) -> _types.ArrayAndIndices: ...
@overload
def adaptive_max_pool2d(
    x: Any, output_size: Any, return_indices: bool = False, layout: _types.Layout2d = "NCHW", out: Any = None,
    num_threads: Optional[int] = None,
    dtype: Any = None,
) -> Union[_types.Array, _types.ArrayAndIndices]: ...
def adaptive_max_pool2d(
    x: Any, output_size: Any, return_indices: bool = False, layout: _types.Layout2d = "NCHW", out: Any = None,
    num_threads: Optional[int] = None,
    dtype: Any = None,
) -> Union[_types.Array, _types.ArrayAndIndices]:
    """Adaptive max pooling (``torch.nn.functional.adaptive_max_pool2d``).

    Windows as in :func:`adaptive_avg_pool2d`; indices and NaN as in :func:`max_pool2d`.

    >>> import numpy as np, cppconv
    >>> y, i = cppconv.adaptive_max_pool2d(np.arange(9.0).reshape(3, 3), 2, return_indices=True)
    >>> y
    array([[4., 5.],
           [7., 8.]])
    >>> i
    array([[4, 5],
           [7, 8]])
    """
    return _run_adaptive(_MAX, x, output_size, layout, bool(return_indices), out, num_threads=num_threads, dtype=dtype)


def adaptive_avg_pool1d(
    x: Any, output_size: Any, layout: _types.Layout1d = "NCW", out: Optional[np.ndarray] = None,
    num_threads: Optional[int] = None,
    dtype: Any = None,
) -> np.ndarray:
    """Adaptive 1-D average pooling (``torch.nn.functional.adaptive_avg_pool1d``); windows as
    in :func:`adaptive_avg_pool2d`, shapes as in :func:`max_pool1d`.

    >>> import numpy as np, cppconv
    >>> cppconv.adaptive_avg_pool1d(np.array([[1., 2., 3., 4., 5.]]), 2)
    array([[2., 4.]])
    """
    return _run_adaptive(_AVG, x, output_size, layout, out=out, rank=1, num_threads=num_threads, dtype=dtype)


def adaptive_avg_pool3d(
    x: Any, output_size: Any, layout: _types.Layout3d = "NCDHW", out: Optional[np.ndarray] = None,
    num_threads: Optional[int] = None,
    dtype: Any = None,
) -> np.ndarray:
    """Adaptive 3-D average pooling (``torch.nn.functional.adaptive_avg_pool3d``): output_size
    an int or ``(OD, OH, OW)`` (None keeps that input size); shapes as in :func:`max_pool3d`.

    >>> import numpy as np, cppconv
    >>> cppconv.adaptive_avg_pool3d(np.ones((2, 3, 8, 10, 7)), (2, 4, None)).shape
    (2, 3, 2, 4, 7)
    """
    return _run_adaptive(_AVG, x, output_size, layout, out=out, rank=3, num_threads=num_threads, dtype=dtype)


@overload
def adaptive_max_pool1d(
    x: Any, output_size: Any, return_indices: Literal[False] = False, layout: _types.Layout1d = "NCW",
    out: Optional[_types.Array] = None, num_threads: Optional[int] = None,
    dtype: Any = None,
) -> _types.Array: ...
@overload
def adaptive_max_pool1d(
    x: Any, output_size: Any, return_indices: Literal[True], layout: _types.Layout1d = "NCW",
    out: Optional[Tuple[_types.Array, _types.Array]] = None, num_threads: Optional[int] = None,
    dtype: Any = None,
) -> _types.ArrayAndIndices: ...
@overload
def adaptive_max_pool1d(
    x: Any, output_size: Any, return_indices: bool = False, layout: _types.Layout1d = "NCW", out: Any = None,
    num_threads: Optional[int] = None,
    dtype: Any = None,
) -> Union[_types.Array, _types.ArrayAndIndices]: ...
def adaptive_max_pool1d(
    x: Any, output_size: Any, return_indices: bool = False, layout: _types.Layout1d = "NCW", out: Any = None,
    num_threads: Optional[int] = None,
    dtype: Any = None,
) -> Union[_types.Array, _types.ArrayAndIndices]:
    """Adaptive 1-D max pooling (``torch.nn.functional.adaptive_max_pool1d``); indices are
    positions along L.

    >>> import numpy as np, cppconv
    >>> cppconv.adaptive_max_pool1d(np.array([[1., 5., 2., 4., 3.]]), 2, return_indices=True)
    (array([[5., 4.]]), array([[1, 3]]))
    """
    return _run_adaptive(_MAX, x, output_size, layout, bool(return_indices), out, rank=1, num_threads=num_threads,
                         dtype=dtype)


@overload
def adaptive_max_pool3d(
    x: Any, output_size: Any, return_indices: Literal[False] = False, layout: _types.Layout3d = "NCDHW",
    out: Optional[_types.Array] = None, num_threads: Optional[int] = None,
    dtype: Any = None,
) -> _types.Array: ...
@overload
def adaptive_max_pool3d(
    x: Any, output_size: Any, return_indices: Literal[True], layout: _types.Layout3d = "NCDHW",
    out: Optional[Tuple[_types.Array, _types.Array]] = None, num_threads: Optional[int] = None,
    dtype: Any = None,
) -> _types.ArrayAndIndices: ...
@overload
def adaptive_max_pool3d(
    x: Any, output_size: Any, return_indices: bool = False, layout: _types.Layout3d = "NCDHW", out: Any = None,
    num_threads: Optional[int] = None,
    dtype: Any = None,
) -> Union[_types.Array, _types.ArrayAndIndices]: ...
def adaptive_max_pool3d(
    x: Any, output_size: Any, return_indices: bool = False, layout: _types.Layout3d = "NCDHW", out: Any = None,
    num_threads: Optional[int] = None,
    dtype: Any = None,
) -> Union[_types.Array, _types.ArrayAndIndices]:
    """Adaptive 3-D max pooling (``torch.nn.functional.adaptive_max_pool3d``); indices flat
    ``(d * H + h) * W + w`` within each input volume.

    >>> import numpy as np, cppconv
    >>> cppconv.adaptive_max_pool3d(np.arange(8.0).reshape(1, 2, 2, 2), 1, return_indices=True)
    (array([[[[7.]]]]), array([[[[7]]]]))
    """
    return _run_adaptive(_MAX, x, output_size, layout, bool(return_indices), out, rank=3, num_threads=num_threads,
                         dtype=dtype)


def global_avg_pool2d(x: Any, layout: _types.Layout2d = "NCHW", out: Optional[np.ndarray] = None,
                      num_threads: Optional[int] = None, dtype: Any = None) -> np.ndarray:
    """The mean of each channel's plane, keeping H = W = 1: ``(N, C, 1, 1)`` or ``(N, 1, 1, C)``.

    >>> import numpy as np, cppconv
    >>> cppconv.global_avg_pool2d(np.ones((2, 7, 7, 8), np.float32), layout="NHWC").shape
    (2, 1, 1, 8)
    """
    if out is None and dtype is None and (num_threads is None or (num_threads.__class__ is int
                                                                  and 0 < num_threads <= _native.MAX_THREADS)):
        # The common call, a batch in a native float dtype, without the general path's
        # argument handling: at batch 1 that handling costs more than the reduction (a
        # network's squeeze-and-excitation blocks make this call with their thread count).
        y = _global_average_batch(x, layout, num_threads or 0)
        if y is not None:
            return y
    return _run_adaptive(_AVG, x, (1, 1), layout, out=out, num_threads=num_threads, dtype=dtype)


def _global_average_batch(x: Any, layout: Any, num_threads: int, program: Any = None) -> Optional[np.ndarray]:
    """global_avg_pool2d of a C-contiguous 4-D batch in a native float dtype, in one native call
    (recorded into `program`, a NetProgram, where given); None for any other x or layout."""
    if x.__class__ is not np.ndarray or x.ndim != 4 or not x.flags.c_contiguous or not x.size:
        return None
    code = _args.LAYOUTS.get(layout) if layout.__class__ is str else None
    if code is None or not (x.dtype == np.float32 or x.dtype == np.float64) or not x.dtype.isnative:
        return None
    n, c = x.shape[0], x.shape[3 if code else 1]
    y = np.empty((n, 1, 1, c) if code else (n, c, 1, 1), dtype=x.dtype)
    _native.adaptive_pool(x, y, None, _AVG, code, "", num_threads, program)
    return y


def global_avg_pool1d(x: Any, layout: _types.Layout1d = "NCW", out: Optional[np.ndarray] = None,
                      num_threads: Optional[int] = None, dtype: Any = None) -> np.ndarray:
    """The mean of each channel's sequence, keeping L = 1: ``(N, C, 1)`` or ``(N, 1, C)``.

    >>> import numpy as np, cppconv
    >>> cppconv.global_avg_pool1d(np.ones((2, 8, 100), np.float32)).shape
    (2, 8, 1)
    """
    return _run_adaptive(_AVG, x, 1, layout, out=out, rank=1, num_threads=num_threads, dtype=dtype)


def global_avg_pool3d(x: Any, layout: _types.Layout3d = "NCDHW", out: Optional[np.ndarray] = None,
                      num_threads: Optional[int] = None, dtype: Any = None) -> np.ndarray:
    """The mean of each channel's volume, keeping D = H = W = 1: ``(N, C, 1, 1, 1)`` or ``(N, 1, 1, 1, C)``.

    >>> import numpy as np, cppconv
    >>> cppconv.global_avg_pool3d(np.ones((2, 8, 4, 7, 7), np.float32)).shape
    (2, 8, 1, 1, 1)
    """
    return _run_adaptive(_AVG, x, 1, layout, out=out, rank=3, num_threads=num_threads, dtype=dtype)


class _PoolLayer(_layer.Layer):
    """The settings MaxPool2d and AvgPool2d share, read-only, as PyTorch's pooling modules name them."""

    _spec: _PoolSpec

    kernel_size = _layer.spec_setting("kernel_size")
    stride = _layer.spec_setting("stride")
    padding = _layer.spec_setting("padding", '(ph, pw), ((top, bottom), (left, right)) when asymmetric, or "same"')
    ceil_mode = _layer.spec_setting("ceil_mode")
    layout = _layer.spec_setting("layout")


class _MaxPoolNd(_PoolLayer):
    """MaxPool1d/2d/3d by their _rank; layout None is the rank's channels-first layout."""

    _rank = 2
    _repr_settings = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices", "layout")
    _torch_settings = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                 ceil_mode: bool = False, return_indices: bool = False, layout: Optional[str] = None):
        layout = _channels_first(self._rank) if layout is None else layout
        self._spec = _PoolSpec(_MAX, kernel_size, stride, padding, dilation, ceil_mode, True, None, layout, self._rank)
        self._return_indices = bool(return_indices)

    def _init_kwargs(self) -> Dict[str, Any]:
        return {**self._spec.kwargs(), "return_indices": self._return_indices}

    def __call__(self, x: Any, out: Any = None, *,
                 num_threads: Optional[int] = None,
                 dtype: Any = None) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        return _run_pool(self._spec, x, out, self._return_indices, num_threads=num_threads, dtype=dtype)

    dilation = _layer.spec_setting("dilation")

    @_layer.read_only
    def return_indices(self) -> bool:
        return self._return_indices


class _AvgPoolNd(_PoolLayer):
    """AvgPool1d/2d/3d by their _rank; layout None is the rank's channels-first layout."""

    _rank = 2
    _repr_settings = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override",
                      "layout")
    _torch_settings = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: Optional[int] = None, layout: Optional[str] = None):
        layout = _channels_first(self._rank) if layout is None else layout
        self._spec = _PoolSpec(_AVG, kernel_size, stride, padding, 1, ceil_mode, count_include_pad, divisor_override,
                               layout, self._rank)

    def _init_kwargs(self) -> Dict[str, Any]:
        return self._spec.kwargs()

    def __call__(self, x: Any, out: Optional[np.ndarray] = None, *, num_threads: Optional[int] = None,
                 dtype: Any = None) -> np.ndarray:
        return _run_pool(self._spec, x, out, num_threads=num_threads, dtype=dtype)

    count_include_pad = _layer.spec_setting("count_include_pad")
    divisor_override = _layer.spec_setting("divisor_override")


def _channels_first(rank: int) -> str:
    return next(iter(_args.RANK_LAYOUTS[rank]))


class MaxPool1d(_MaxPoolNd):
    """A 1-D max-pooling layer: ``MaxPool1d(kernel_size, **kwargs)(x)`` equals
    ``max_pool1d(x, kernel_size, **kwargs)``.  It pickles and copies (as its constructor arguments).

    >>> import numpy as np, cppconv
    >>> cppconv.MaxPool1d(3, stride=2, padding=1)(np.zeros((1, 64, 1000), np.float32)).shape
    (1, 64, 500)
    """

    _rank = 1


class MaxPool2d(_MaxPoolNd):
    """A max-pooling layer: ``MaxPool2d(kernel_size, **kwargs)(x)`` equals ``max_pool2d(x, kernel_size, **kwargs)``.
    It pickles and copies (as its constructor arguments).

    >>> import numpy as np, cppconv
    >>> pool = cppconv.MaxPool2d(3, stride=2, padding=1)
    >>> pool(np.zeros((1, 64, 112, 112), np.float32)).shape
    (1, 64, 56, 56)
    """

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                 ceil_mode: bool = False, return_indices: bool = False, layout: _types.Layout2d = "NCHW"):
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode, return_indices, layout)


class MaxPool3d(_MaxPoolNd):
    """A 3-D max-pooling layer: ``MaxPool3d(kernel_size, **kwargs)(x)`` equals
    ``max_pool3d(x, kernel_size, **kwargs)``.  It pickles and copies (as its constructor arguments).

    >>> import numpy as np, cppconv
    >>> cppconv.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))(np.zeros((1, 8, 4, 56, 56))).shape
    (1, 8, 4, 28, 28)
    """

    _rank = 3


class AvgPool1d(_AvgPoolNd):
    """A 1-D average-pooling layer: ``AvgPool1d(kernel_size, **kwargs)(x)`` equals
    ``avg_pool1d(x, kernel_size, **kwargs)``.  It pickles and copies (as its constructor arguments).

    >>> import numpy as np, cppconv
    >>> cppconv.AvgPool1d(4, layout="NWC")(np.zeros((2, 100, 16))).shape
    (2, 25, 16)
    """

    _rank = 1


class AvgPool2d(_AvgPoolNd):
    """An average-pooling layer: ``AvgPool2d(kernel_size, **kwargs)(x)`` equals
    ``avg_pool2d(x, kernel_size, **kwargs)``.
    It pickles and copies (as its constructor arguments).

    >>> import numpy as np, cppconv
    >>> pool = cppconv.AvgPool2d(2, layout="NHWC")
    >>> pool(np.zeros((1, 56, 56, 256), np.float32)).shape
    (1, 28, 28, 256)
    """

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: Optional[int] = None,
                 layout: _types.Layout2d = "NCHW"):
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, layout)


class AvgPool3d(_AvgPoolNd):
    """A 3-D average-pooling layer: ``AvgPool3d(kernel_size, **kwargs)(x)`` equals
    ``avg_pool3d(x, kernel_size, **kwargs)``.  It pickles and copies (as its constructor arguments).

    >>> import numpy as np, cppconv
    >>> cppconv.AvgPool3d(2)(np.zeros((1, 8, 4, 6, 6))).shape
    (1, 8, 2, 3, 3)
    """

    _rank = 3


class _AdaptiveSpec:
    """The settings of an adaptive pool layer: kind, rank, output size per axis (None keeps the
    input's) and layout code."""

    __slots__ = ("kind", "rank", "output_size", "layout")

    def __init__(self, kind: int, output_size: Any, layout: Any, rank: int):
        self.kind, self.rank = kind, rank
        self.output_size = _adaptive_request(output_size, rank)
        self.layout = _args.layout_code(layout, rank)

    def kwargs(self) -> Dict[str, Any]:
        return {"output_size": self.output_size, "layout": _args.code_word(_args.RANK_LAYOUTS[self.rank], self.layout)}


class _AdaptivePoolNd(_layer.Layer):
    """Adaptive{Avg,Max}Pool1d/3d by their _kind and _rank; layout None is the rank's
    channels-first layout."""

    _kind, _rank = _AVG, 1
    _spec: _AdaptiveSpec
    _return_indices = False
    _torch_settings: Tuple[str, ...] = ("output_size",)

    output_size = _layer.spec_setting("output_size", "per axis, None where the input's size is kept")
    layout = _layer.spec_setting("layout")

    def __init__(self, output_size: Any, layout: Optional[str] = None):
        layout = _channels_first(self._rank) if layout is None else layout
        self._spec = _AdaptiveSpec(self._kind, output_size, layout, self._rank)

    def _init_kwargs(self) -> Dict[str, Any]:
        return self._spec.kwargs()

    def __call__(self, x: Any, out: Any = None, *, num_threads: Optional[int] = None, dtype: Any = None) -> Any:
        spec = self._spec
        layout = _args.code_word(_args.RANK_LAYOUTS[spec.rank], spec.layout)
        return _run_adaptive(spec.kind, x, spec.output_size, layout,
                             self._return_indices, out, rank=spec.rank, num_threads=num_threads, dtype=dtype)


class _AdaptiveMaxPoolNd(_AdaptivePoolNd):
    _kind = _MAX
    _repr_settings = ("output_size", "return_indices", "layout")
    _torch_settings = ("output_size", "return_indices")

    def __init__(self, output_size: Any, return_indices: bool = False, layout: Optional[str] = None):
        super().__init__(output_size, layout)
        self._return_indices = bool(return_indices)

    def _init_kwargs(self) -> Dict[str, Any]:
        return {**self._spec.kwargs(), "return_indices": self._return_indices}

    @_layer.read_only
    def return_indices(self) -> bool:
        return self._return_indices


class AdaptiveAvgPool1d(_AdaptivePoolNd):
    """``AdaptiveAvgPool1d(output_size, layout)(x)`` equals ``adaptive_avg_pool1d(x, output_size, layout)``.

    >>> import numpy as np, cppconv
    >>> cppconv.AdaptiveAvgPool1d(5)(np.zeros((2, 3, 17))).shape
    (2, 3, 5)
    """

    _repr_settings = ("output_size", "layout")


class AdaptiveAvgPool3d(_AdaptivePoolNd):
    """``AdaptiveAvgPool3d(output_size, layout)(x)`` equals ``adaptive_avg_pool3d(x, output_size, layout)``.

    >>> import numpy as np, cppconv
    >>> cppconv.AdaptiveAvgPool3d((1, None, 2))(np.zeros((2, 3, 4, 5, 6))).shape
    (2, 3, 1, 5, 2)
    """

    _rank = 3
    _repr_settings = ("output_size", "layout")


class AdaptiveMaxPool1d(_AdaptiveMaxPoolNd):
    """``AdaptiveMaxPool1d(output_size, return_indices, layout)(x)`` equals
    ``adaptive_max_pool1d(x, output_size, return_indices, layout)``.

    >>> import numpy as np, cppconv
    >>> cppconv.AdaptiveMaxPool1d(5)(np.zeros((2, 3, 17))).shape
    (2, 3, 5)
    """


class AdaptiveMaxPool3d(_AdaptiveMaxPoolNd):
    """``AdaptiveMaxPool3d(output_size, return_indices, layout)(x)`` equals
    ``adaptive_max_pool3d(x, output_size, return_indices, layout)``.

    >>> import numpy as np, cppconv
    >>> cppconv.AdaptiveMaxPool3d(2, layout="NDHWC")(np.zeros((2, 4, 5, 6, 3))).shape
    (2, 2, 2, 2, 3)
    """

    _rank = 3
