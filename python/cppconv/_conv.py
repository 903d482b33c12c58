"""conv1d, conv2d and conv3d, their layers, and the size arithmetic of the seed: one
rank-generic path (the rank is a spec setting) down to one native call."""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from . import _args, _layer, _native, _tuning, _types

_LONG = np.dtype(np.longdouble)


def conv_output_size(input_size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output length of a convolution along one axis.

    The seed's O = (I + 2P - K) / S + 1, generalised with dilation:
    O = floor((I + 2P - D (K - 1) - 1) / S) + 1.  All arguments are ints (padding on each
    side); the result is the output's height (or width).

    >>> from cppconv import conv_output_size
    >>> conv_output_size(5, 3, stride=1, padding=1), conv_output_size(5, 3, stride=2)
    (5, 2)
    """
    i, k, s, p, d = _args.axis_sizes(input_size, kernel_size, stride, padding, dilation)
    _args.check_padded_size((i + 2 * p,))
    if d * (k - 1) + 1 > i + 2 * p:
        raise ValueError(
            f"kernel_size {k} with dilation {d} spans {d * (k - 1) + 1} > padded input size {i + 2 * p}: "
            "output size below 1"
        )
    return int(_native.conv_output_size(i, k, s, d, p, p))


class _ConvSpec:
    """The hyper-parameters of a convolution of spatial rank 1, 2 or 3, normalised once."""

    __slots__ = ("rank", "stride", "dilation", "padding", "groups", "padding_mode", "padding_value", "layout",
                 "activation", "negative_slope", "precision")

    def __init__(self, rank: int, stride: Any, padding: Any, dilation: Any, groups: Any, padding_mode: Any,
                 layout: Any, activation: Any, precision: Any = None, padding_value: Any = 0.0):
        self.rank = rank
        self.stride = _args.ntuple(stride, "stride", rank, minimum=1)
        self.dilation = _args.ntuple(dilation, "dilation", rank, minimum=1)
        self.padding = _args.explicit_padding_nd(padding, rank)  # (before, after) per axis; None means "same"
        self.groups = _args.as_int(groups, "groups")
        if self.groups < 1:
            raise ValueError(f"groups must be >= 1, got {self.groups}")
        self.padding_mode = _args.padding_mode_code(padding_mode)
        self.padding_value = _args.padding_value(padding_value, self.padding_mode)
        self.layout = _args.layout_code(layout, rank)
        self.activation, self.negative_slope = _args.activation_spec(activation)
        self.precision = _args.precision_code(precision)  # -1: the process-wide setting at call time

    @classmethod
    def popped_from(cls, kwargs: Dict[str, Any], rank: int = 2) -> _ConvSpec:
        """The spec of a convolution's keywords in `kwargs` (taken out of it), defaults for the rest."""
        return cls(
            rank, kwargs.pop("stride", 1), kwargs.pop("padding", 0), kwargs.pop("dilation", 1),
            kwargs.pop("groups", 1), kwargs.pop("padding_mode", "zeros"),
            kwargs.pop("layout", next(iter(_args.RANK_LAYOUTS[rank]))), kwargs.pop("activation", None),
            kwargs.pop("precision", None), kwargs.pop("padding_value", 0.0),
        )

    def kwargs(self) -> Dict[str, Any]:
        """The keyword arguments that give this spec."""
        return {
            "stride": self.stride, "padding": _args.padding_argument_nd(self.padding), "dilation": self.dilation,
            "groups": self.groups, "padding_mode": _args.code_word(_args.PADDING_MODES, self.padding_mode),
            "padding_value": self.padding_value,
            "layout": _args.code_word(_args.RANK_LAYOUTS[self.rank], self.layout),
            "activation": _args.activation_argument(self.activation, self.negative_slope),
            "precision": None if self.precision < 0 else _args.code_word(_native.PRECISIONS, self.precision),
        }

    @property
    def pads_input(self) -> bool:
        """Whether the input is padded before the native call: constant padding other than 0
        (see _args.CONSTANT_PADDING); the native call then has no padding."""
        return self.padding_mode == _args.CONSTANT_PADDING and self.padding_value != 0

    def params(self, pads: Tuple[int, ...]) -> Any:
        """The native call's parameters (_native.ConvParams) with the call's resolved padding."""
        mode = _args.PADDING_MODES["zeros"] if self.padding_mode == _args.CONSTANT_PADDING else self.padding_mode
        return _native.ConvParams(self.rank, self.stride, self.dilation, pads, self.groups, mode,
                                  self.layout, self.activation, self.precision, self.negative_slope)


class _Geometry:
    """One call's shapes: x and weight with their batch and channel axes (x4, w4: rank + 2
    dimensions), the resolved padding, and the output shape with and without them."""

    __slots__ = ("x4", "w4", "pads", "out_shape4", "out_shape")

    def __init__(self, spec: _ConvSpec, x: np.ndarray, weight: np.ndarray, bias: Optional[np.ndarray]):
        r, last = spec.rank, spec.layout == 1
        axes = _args.SPATIAL_AXES[r]
        if r == 2 and (x.ndim == 2 or weight.ndim == 2):
            if x.ndim != 2 or weight.ndim != 2:
                raise ValueError(
                    f"a 2-D image needs a 2-D kernel and vice versa: x has shape {x.shape}, "
                    f"weight has shape {weight.shape}"
                )
            x4 = x[None, :, :, None] if last else x[None, None]
            w4 = weight[None, None]
        else:
            if weight.ndim != r + 2:
                kernel = ", ".join(f"k{a.lower()}" for a in axes) if r > 1 else "kl"
                raise ValueError(f"weight must be {r + 2}-D (K, C/groups, {kernel}), got shape {weight.shape}"
                                 f"{_rank_hint(weight.ndim - 2, 'weight')}")
            x4 = _args.batched(x, r, spec.layout, "conv{}d")
            w4 = weight
        n = x4.shape[0]
        c = x4.shape[-1] if last else x4.shape[1]
        sizes = x4.shape[1:-1] if last else x4.shape[2:]
        k, cg, kernel_sizes = w4.shape[0], w4.shape[1], w4.shape[2:]
        g = spec.groups
        if c % g:
            raise ValueError(f"groups={g} does not divide the {c} input channels of x")
        hint = _hwio_hint(w4.shape, c, g) if weight.ndim == 4 else ""
        if k % g:
            raise ValueError(f"groups={g} does not divide the {k} output channels of weight{hint}")
        if cg * g != c:
            raise ValueError(
                f"weight expects {cg} input channels per group ({cg * g} in all with groups={g}), x has {c} channels"
                f"{hint}"
            )
        if min(kernel_sizes) < 1:
            raise ValueError(f"weight's kernel must be at least 1 per axis, got {'x'.join(map(str, kernel_sizes))} "
                             f"(weight shape {w4.shape})")
        if min(sizes) < 1:
            raise ValueError(f"x must have spatial sizes >= 1, got {tuple(sizes)} ({axes}) (x shape {x.shape})")
        if bias is not None and (bias.ndim != 1 or bias.shape[0] != k):
            raise ValueError(f"bias must have shape ({k},) for {k} output channels, got {bias.shape}"
                             f"{hint if bias.shape[:1] == (w4.shape[3],) else ''}")
        if spec.padding is None:
            pads = tuple(v for i in range(r) for v in _args.same_padding(
                sizes[i], kernel_sizes[i], spec.stride[i], spec.dilation[i]))
        else:
            pads = spec.padding
        befores, afters = pads[0::2], pads[1::2]
        for mode, reach in (("reflect", "smaller than"), ("circular", "at most")):
            if spec.padding_mode == _args.PADDING_MODES[mode] and any(
                    max(b, a) >= i if mode == "reflect" else max(b, a) > i for b, a, i in zip(befores, afters, sizes)):
                raise ValueError(
                    f"padding {pads} ((before, after) per axis) too large for padding_mode={mode!r}: "
                    f"it must be {reach} the input size {tuple(sizes)}"
                )
        padded = tuple(i + b + a for i, b, a in zip(sizes, befores, afters))
        _args.check_padded_size(padded)
        spans = tuple(d * (kk - 1) + 1 for d, kk in zip(spec.dilation, kernel_sizes))
        if any(s > p for s, p in zip(spans, padded)):
            raise ValueError(
                f"kernel {tuple(kernel_sizes)} with dilation {spec.dilation} spans {spans}, "
                f"larger than the padded input {padded}{hint}"
            )
        outs = tuple(
            int(_native.conv_output_size(i, kk, st, d, b, a))
            for i, kk, st, d, b, a in zip(sizes, kernel_sizes, spec.stride, spec.dilation, befores, afters)
        )
        self.x4, self.w4, self.pads = x4, w4, pads
        self.out_shape4 = (n, *outs, k) if last else (n, k, *outs)
        if r == 2 and x.ndim == 2:
            self.out_shape: Tuple[int, ...] = outs
        elif x.ndim == r + 1:
            self.out_shape = self.out_shape4[1:]
        else:
            self.out_shape = self.out_shape4


def _rank_hint(rank: int, name: str) -> str:
    """The end of a rank-mismatch message: the function whose rank `name` fits, if any."""
    return f": {name} fits conv{rank}d" if rank in _args.SPATIAL_AXES else ""


def _hwio_hint(shape: Tuple[int, ...], c: int, groups: int) -> str:
    """The end of a weight-shape error when the weight fits x as TensorFlow's HWIO
    (kh, kw, C/groups, K): the likeliest cause, and its fix."""
    kh, kw, cg, k = shape
    if cg * groups != c or k % groups:
        return ""
    return (
        f"; weights are OIHW (K, C/groups, kh, kw) in both layouts, and shape {tuple(shape)} reads as "
        f"TensorFlow's HWIO (kh, kw, C/groups, K) = ({kh}, {kw}, {cg}, {k}): pass w.transpose(3, 2, 0, 1)"
    )


def _run(
    spec: _ConvSpec,
    x: Any,
    weight: Any,
    bias: Any,
    out: Any,
    plans: Optional[Dict[np.dtype, Any]] = None,
    algorithm: str = "",
    num_threads: Any = None,
    dtype: Any = None,
    rounding: Optional[str] = None,
    residual: Optional[np.ndarray] = None,
) -> np.ndarray:
    threads = _args.thread_count(num_threads)
    # (An input padded with a constant first is widened: the padded copy is made in float32.)
    call = _args.prepare_call(x, weight, bias, out, lambda *ops: _Geometry(spec, *ops), _native.ConvPlan, plans,
                              dtype, rounding, bfloat16_plans=not spec.pads_input)
    x, pads = call.x, call.geometry.pads
    if spec.pads_input:
        x, pads = _args.constant_padded(x, pads, spec.layout, spec.padding_value), (0,) * len(pads)
    dst = call.dst.view(np.uint16) if _args.is_bfloat16(call.dst.dtype) else call.dst
    if residual is not None:
        if residual.shape != dst.shape:
            if residual.shape != tuple(call.geometry.out_shape):
                raise ValueError(f"residual has shape {residual.shape}, the result has shape "
                                 f"{tuple(call.geometry.out_shape)}")
            residual = residual.reshape(dst.shape)  # (an unbatched call: the plan runs a batch of one)
        call.plan.run(x, dst, spec.params(pads), algorithm, threads, residual)
    else:
        call.plan.run(x, dst, spec.params(pads), algorithm, threads)
    return _args.deliver(out, call.dst, call.direct, call.geometry.out_shape, call.result)


def conv2d(
    x: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    *,
    padding_mode: _types.PaddingMode = "zeros",
    padding_value: float = 0.0,
    layout: _types.Layout2d = "NCHW",
    activation: _types.Activation = None,
    out: Optional[np.ndarray] = None,
    num_threads: Optional[int] = None,
    precision: _types.Precision = None,
    dtype: Any = None,
) -> _types.Array:
    """2-D convolution (cross-correlation, as ``torch.nn.functional.conv2d`` computes it).

    Each of the K kernels slides over the input with the given stride and spans all input
    channels of its group; each yields one feature map.  bias, stride, padding, dilation and
    groups may be given by position, in PyTorch's order; the rest are keyword-only.

    Args:
        x: ``(N, C, H, W)`` or ``(C, H, W)`` for ``layout="NCHW"``, ``(N, H, W, C)`` or
            ``(H, W, C)`` for ``layout="NHWC"``, or a 2-D image ``(H, W)`` with a 2-D weight.
        weight: ``(K, C // groups, kh, kw)`` (OIHW) for both layouts, or ``(kh, kw)`` with a
            2-D x; a TensorFlow HWIO weight becomes OIHW by ``w.transpose(3, 2, 0, 1)``.
        bias: ``(K,)`` or None.
        stride, dilation: int or ``(h, w)``.
        padding: int, ``(ph, pw)``, ``((top, bottom), (left, right))``, ``"valid"`` or
            ``"same"`` (output ``ceil(I / S)``, the odd pixel at the bottom/right).
        groups: divides C and K; ``groups == C`` is a depthwise convolution.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"``, ``"circular"`` (PyTorch's),
            ``"symmetric"`` (NumPy's and SciPy's: the edge value repeated, any padding size) or
            ``"constant"`` (padding_value past the edges, as ``torch.nn.functional.pad(x,
            mode="constant", value=padding_value)`` and ``np.pad(mode="constant")``).
        padding_value: the value of ``padding_mode="constant"`` (default 0.0, the same as
            ``"zeros"``); the other modes take none.
        layout: ``"NCHW"`` or ``"NHWC"``, for x and the result.
        activation: None, ``"relu"``, ``"relu6"``, ``"leaky_relu"`` (negative slope 0.01, or
            ``("leaky_relu", negative_slope)``), ``"sigmoid"``, ``"tanh"``, ``"silu"``,
            ``"hardsigmoid"`` or ``"hardswish"`` (PyTorch's), applied as the output is written.
        out: array of the result's shape and dtype to write into (returned).
        num_threads: threads for this call only (default None: ``cppconv.get_num_threads()``);
            the global setting is left as it is.
        precision: float32 precision mode for this call only, ``"highest"`` (every output
            within the direct sum's rounding bound) or ``"high"`` (also Winograd, whose
            bound scales with a 4x4 input patch; README, "Guarantees"); default None:
            ``cppconv.get_float32_precision()``.
        dtype: the computation's dtype, ``float32``, ``float64``, ``float16`` or ``bfloat16``
            (ml_dtypes'): as if x and weight were first cast to it (float16 and bfloat16
            accumulate in float32); the result has it.  Default None: see Returns.

    Returns:
        ``(N, K, OH, OW)`` (NCHW) or ``(N, OH, OW, K)`` (NHWC), without N for an unbatched
        x, ``(OH, OW)`` for a 2-D image; dtype ``numpy.result_type`` of x and weight (uint8
        with float32 gives float32), then with the bias (a float32 bias keeps a bfloat16
        result bfloat16); float64 where that is an integer or bool dtype.

    >>> import numpy as np, cppconv
    >>> image = np.arange(25, dtype=np.float32).reshape(5, 5)
    >>> cppconv.conv2d(image, np.ones((3, 3), np.float32)).shape
    (3, 3)
    """
    # The common call in one native step (plain ints, canonical words, arrays the kernels read
    # in place); None sends anything else, and every error, through the full path.
    if dtype is None and padding_value.__class__ in (float, int) and padding_value == 0:
        y: Optional[np.ndarray] = _native.conv_simple(x, weight, bias, out, 2, stride, padding, dilation, groups,
                                                      padding_mode, layout, activation, precision, num_threads)
        if y is not None:
            return y
    spec = _ConvSpec(2, stride, padding, dilation, groups, padding_mode, layout, activation, precision,
                     padding_value)
    return _run(spec, x, weight, bias, out, num_threads=num_threads, dtype=dtype)


def conv1d(
    x: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    *,
    padding_mode: _types.PaddingMode = "zeros",
    padding_value: float = 0.0,
    layout: _types.Layout1d = "NCW",
    activation: _types.Activation = None,
    out: Optional[np.ndarray] = None,
    num_threads: Optional[int] = None,
    precision: _types.Precision = None,
    dtype: Any = None,
) -> _types.Array:
    """1-D convolution (cross-correlation, as ``torch.nn.functional.conv1d`` computes it).

    The arguments are :func:`conv2d`'s with one spatial axis: x ``(N, C, L)`` or ``(C, L)``
    for ``layout="NCW"``, ``(N, L, C)`` or ``(L, C)`` for ``"NWC"``; weight ``(K, C // groups,
    kl)``; stride, dilation an int or ``(s,)``; padding an int, ``(p,)``, ``((before,
    after),)``, ``"valid"`` or ``"same"``.

    Returns:
        ``(N, K, OL)`` (NCW) or ``(N, OL, K)`` (NWC), without N for an unbatched x.

    >>> import numpy as np, cppconv
    >>> signal = np.ones((1, 2, 100), np.float32)
    >>> cppconv.conv1d(signal, np.ones((4, 2, 5), np.float32), stride=2, padding="same").shape
    (1, 4, 50)
    """
    # The common call in one native step (plain ints, canonical words, arrays the kernels read
    # in place); None sends anything else, and every error, through the full path.
    if dtype is None and padding_value.__class__ in (float, int) and padding_value == 0:
        y: Optional[np.ndarray] = _native.conv_simple(x, weight, bias, out, 1, stride, padding, dilation, groups,
                                                      padding_mode, layout, activation, precision, num_threads)
        if y is not None:
            return y
    spec = _ConvSpec(1, stride, padding, dilation, groups, padding_mode, layout, activation, precision,
                     padding_value)
    return _run(spec, x, weight, bias, out, num_threads=num_threads, dtype=dtype)


def conv3d(
    x: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    *,
    padding_mode: _types.PaddingMode = "zeros",
    padding_value: float = 0.0,
    layout: _types.Layout3d = "NCDHW",
    activation: _types.Activation = None,
    out: Optional[np.ndarray] = None,
    num_threads: Optional[int] = None,
    precision: _types.Precision = None,
    dtype: Any = None,
) -> _types.Array:
    """3-D convolution (cross-correlation, as ``torch.nn.functional.conv3d`` computes it).

    The arguments are :func:`conv2d`'s with three spatial axes: x ``(N, C, D, H, W)`` or
    ``(C, D, H, W)`` for ``layout="NCDHW"``, ``(N, D, H, W, C)`` or ``(D, H, W, C)`` for
    ``"NDHWC"``; weight ``(K, C // groups, kd, kh, kw)``; stride, dilation an int or
    ``(d, h, w)``; padding an int, ``(pd, ph, pw)``, three ``(before, after)`` pairs,
    ``"valid"`` or ``"same"``.

    Returns:
        ``(N, K, OD, OH, OW)`` (NCDHW) or ``(N, OD, OH, OW, K)`` (NDHWC), without N for an
        unbatched x.

    >>> import numpy as np, cppconv
    >>> clip = np.ones((1, 3, 8, 32, 32), np.float32)
    >>> cppconv.conv3d(clip, np.ones((16, 3, 3, 3, 3), np.float32), padding=1).shape
    (1, 16, 8, 32, 32)
    """
    # The common call in one native step (plain ints, canonical words, arrays the kernels read
    # in place); None sends anything else, and every error, through the full path.
    if dtype is None and padding_value.__class__ in (float, int) and padding_value == 0:
        y: Optional[np.ndarray] = _native.conv_simple(x, weight, bias, out, 3, stride, padding, dilation, groups,
                                                      padding_mode, layout, activation, precision, num_threads)
        if y is not None:
            return y
    spec = _ConvSpec(3, stride, padding, dilation, groups, padding_mode, layout, activation, precision,
                     padding_value)
    return _run(spec, x, weight, bias, out, num_threads=num_threads, dtype=dtype)




def _conv_with_algorithm(
    algorithm: str, x: Any, weight: Any, bias: Any = None, rank: int = 2, **kwargs: Any
) -> np.ndarray:
    """conv1d/2d/3d (`rank`) through a named algorithm (see ``_native.conv_algorithms()``): for
    tests and benchmarks."""
    out = kwargs.pop("out", None)
    spec = _ConvSpec.popped_from(kwargs, rank)
    if kwargs:
        raise TypeError(f"unexpected arguments {sorted(kwargs)}")
    return _run(spec, x, weight, bias, out, algorithm=algorithm)


def explain(
    x_shape: Tuple[int, ...], weight_shape: Tuple[int, ...], dtype: Any = np.float32, **kwargs: Any
) -> Dict[str, Any]:
    """What conv1d, conv2d or conv3d (by the weight's rank) would do for these shapes, without
    running it.

    Args:
        x_shape: x's shape, as for :func:`conv2d` (``(N, C, H, W)``, ``(C, H, W)``, NHWC forms
            with ``layout="NHWC"``, or ``(H, W)``), or :func:`conv1d` / :func:`conv3d`.
        weight_shape: ``(K, C // groups, kh, kw)``, or ``(kh, kw)`` with a 2-D x; 3-D
            ``(K, C // groups, kl)`` for conv1d, 5-D for conv3d.
        dtype: the inputs' dtype.
        **kwargs: conv2d's keyword arguments (stride, padding, precision, ...), plus
            ``bias=True`` to count a bias.

    Returns:
        A dict with ``output_shape``, ``padding`` ((before, after) per axis: top, bottom,
        left, right in 2-D), the ``algorithm`` and ``isa`` the dispatcher picks, the
        ``precision`` mode it chose under (the call's, else the process-wide one),
        ``threads``, ``flops``, ``workspace_bytes``, ``packed_weight_bytes`` and
        ``lowering`` (how the driver recasts the problem for the 2-D kernels: ``"none"``,
        ``"flatten"``, ``"depth_into_batch"``, ``"depth_gather"``, ``"depth_taps"``,
        ``"depth_interleave"``, ``"fold_rows"``, ``"dilation_rows"``, ``"taps_as_channels"``,
        ``"channels_first"`` or ``"channels_last"``;
        docs/design.md), ``live_taps_only`` (True where a zero padding that dwarfs the input
        left taps that read only padding for every output, and the kernels ran the others
        alone; docs/design.md), ``candidates``
        (the algorithms that accept the problem and meet its precision mode, the chosen one
        first: those tuning may pick among) and ``chosen_by`` (``"heuristic"`` here; a
        layer's :meth:`Conv2d.explain` may say ``"cache"`` or ``"measurement"``, see
        :func:`cppconv.set_tuning`).

    >>> import cppconv
    >>> plan = cppconv.explain((1, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3)
    >>> plan["output_shape"], plan["padding"]
    ((1, 64, 112, 112), (3, 3, 3, 3))
    """
    rank = len(weight_shape) - 2 if len(weight_shape) in (3, 5) else 2
    spec = _ConvSpec.popped_from(kwargs, rank)
    bias = kwargs.pop("bias", False)
    if kwargs:
        raise TypeError(f"unexpected arguments {sorted(kwargs)}")
    result = _args.result_dtype([np.dtype(dtype)])
    info = _explain(spec, tuple(x_shape), tuple(weight_shape), result, bool(bias), layer=False, x_dtype=np.dtype(dtype))
    info["chosen_by"] = "heuristic"  # the functions never tune (see cppconv.set_tuning)
    return info


def _explain(
    spec: _ConvSpec, x_shape: Tuple[int, ...], weight_shape: Tuple[int, ...], dtype: np.dtype, bias: bool, layer: bool,
    rounding: Optional[str] = None, x_dtype: Optional[np.dtype] = None,
) -> Dict[str, Any]:
    """The plan of a problem whose result is `dtype` (x's dtype too unless `x_dtype` says)."""
    compute = _args.compute_dtype(dtype)
    for name, shape in (("x_shape", x_shape), ("weight_shape", weight_shape)):
        if any(_args.as_int(s, name) < 0 for s in shape):
            raise ValueError(f"{name} must not have negative sizes, got {shape}")
    # Zero-strided stand-ins carry the shapes through the same validation as a real call.
    x = _args.stand_in(x_shape, dtype)
    w = _args.stand_in(weight_shape, dtype)
    b = np.zeros(weight_shape[0], dtype) if bias and len(weight_shape) > 2 else None
    geo = _Geometry(spec, x, w, b)
    # bfloat16 arithmetic (_args.bfloat16_arithmetic) has its own plans: "b".
    bfloat16 = compute == np.float32 and not spec.pads_input and (
        rounding == "bfloat16" or (rounding is None and _args.is_bfloat16(dtype)))
    # A bfloat16 problem with float32 x or y runs as run_plan sees it (some lowerings then widen).
    x_float32 = bfloat16 and np.dtype(x_dtype if x_dtype is not None else dtype) == np.float32
    y_float32 = bfloat16 and dtype == np.float32
    info = _native.explain("b" if bfloat16 else compute.char, geo.x4.shape, geo.w4.shape, bias,
                           spec.params(geo.pads), layer, x_float32, y_float32)
    info["output_shape"] = geo.out_shape
    info["padding"] = geo.pads
    # The operands' arithmetic: bfloat16 values (a compute_dtype="bfloat16" layer's rounding)
    # accumulate in float32; bfloat16 and float16 inputs are widened to float32 exactly.
    info["compute_dtype"] = rounding or compute.name
    info["result_dtype"] = dtype.name
    if spec.pads_input:  # the input's padded copy (see _run)
        padded = np.prod([s + b + a for s, (b, a) in zip(geo.x4.shape, _args.spatial_pad_width(geo.pads, spec.layout))])
        info["workspace_bytes"] += int(padded) * compute.itemsize
    return info


class _ConvNd(_layer.WeightedLayer):
    """What Conv1d, Conv2d and Conv3d share: the weights prepared once, for repeated calls, and
    a call that is the function's with the layer's settings."""

    _rank = 2
    _repr_positional = ("in_channels", "out_channels")
    _repr_settings = ("kernel_size", "stride", "padding", "dilation", "groups", "bias", "padding_mode",
                      "padding_value", "layout", "activation", "precision", "compute_dtype")
    _torch_settings = ("stride", "padding", "dilation", "groups", "padding_mode")

    def __init__(
        self,
        weight: Any,
        bias: Any = None,
        *,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        padding_mode: _types.PaddingMode = "zeros",
        padding_value: float = 0.0,
        layout: Optional[str] = None,
        activation: _types.Activation = None,
        precision: _types.Precision = None,
        compute_dtype: Optional[str] = None,
    ):
        layout = next(iter(_args.RANK_LAYOUTS[self._rank])) if layout is None else layout
        self._spec = _ConvSpec(self._rank, stride, padding, dilation, groups, padding_mode, layout, activation,
                               precision, padding_value)
        self._rounding = _args.layer_rounding(compute_dtype)
        self._set_weights(weight, bias)
        # Tuned choices (see _tuned_choice), per tuning mode, input and thread count.
        self._choices: Dict[Tuple[Any, ...], _tuning.Choice] = {}

    def _check_weights(self, weight: np.ndarray, bias: Optional[np.ndarray]) -> None:
        k = weight.shape[0] if weight.ndim > 2 else 1
        if k % self._spec.groups:
            raise ValueError(f"groups={self._spec.groups} does not divide the {k} output channels of weight")
        _args.check_layer_bias(bias, k)

    def _snapshot(self, weight: np.ndarray, bias: Optional[np.ndarray]) -> _layer.Weights:
        # The one-step native path (ConvPlan.forward) for inputs of the weights' own float
        # dtype with explicit, per-axis symmetric padding; its plan is prepared now.  bfloat16
        # weights (a float32 or bfloat16 bias, which leaves the result bfloat16): the native
        # bfloat16 plan the full path would make, x and out passed as their bits.
        plans: Dict[Any, Any] = {}
        pads = self._spec.padding
        bias = _args.frozen_copy(bias)
        own_dtype = weight.dtype in (np.float32, np.float64) and (bias is None or bias.dtype == weight.dtype)
        bfloat16 = _args.is_bfloat16(weight.dtype) and (
            bias is None or bias.dtype == np.float32 or bias.dtype == weight.dtype)
        if not ((own_dtype or bfloat16) and self._rounding is None and pads is not None
                and pads[0::2] == pads[1::2]) or self._spec.pads_input:
            return _layer.Weights(_args.frozen_copy(weight), bias, plans)
        args = (weight.ndim == 2, self._spec.params(pads), weight.dtype if bfloat16 else None)
        if bfloat16:
            weight = _args.frozen_copy(weight)
            w_full = weight if weight.ndim > 2 else weight[None, None]
            plan = _args.prepared_bfloat16_plan(_native.ConvPlan, plans, w_full, bias)
            return _layer.Weights(weight, bias, plans, (plan, args))
        w_full = weight if weight.ndim > 2 else weight[None, None]
        # The plan's copy (made from the operand: no frozen copy beside it) is the layer's only
        # one: once a pack that gives the weights back exists, the plan frees it (a network's
        # weights are otherwise held twice).
        plan = plans[weight.dtype] = _native.ConvPlan(np.ascontiguousarray(w_full), bias, copy=True, reused=True,
                                                      keeps_source=False)
        return _layer.Weights(_args.stand_in(weight.shape, weight.dtype), bias, plans, (plan, args), held=plan)

    def _init_kwargs(self) -> Dict[str, Any]:
        return {**self._weight_kwargs(), **self._spec.kwargs(), "compute_dtype": self._rounding}

    def _float_forward(self) -> Optional[Callable[..., Optional[np.ndarray]]]:
        """The one-step native path of the layer's float weights as f(x, out, num_threads,
        residual, program) (internal: a network's steps call it, with `program` a NetProgram
        that records the call, or None), which gives None where the path does not apply; None
        for bfloat16 weights or a layer without the path.  (The weights are the snapshot of
        now: a network's never change.)"""
        forward = self._weights.forward
        if forward is None or forward[1][2] is not None:
            return None
        plan, (image, params, _) = forward
        run = plan.forward
        return lambda x, out, threads, residual, program: run(x, out, image, params, threads, residual, program)

    def __call__(self, x: Any, out: Optional[np.ndarray] = None, *, num_threads: Optional[int] = None,
                 dtype: Any = None, residual: Optional[np.ndarray] = None) -> np.ndarray:
        """The convolution of ``x`` with the layer's weights (shapes as in the function:
        :func:`cppconv.conv1d`, :func:`cppconv.conv2d` or :func:`cppconv.conv3d`).

        Args:
            x: batched or unbatched input in the layer's layout (or ``(H, W)`` for a Conv2d
                built from a 2-D kernel).
            out: array of the result's shape and dtype to write into (returned).
            num_threads: threads for this call only (default: ``cppconv.get_num_threads()``).
            dtype: the result's dtype, as for the function (a layer built with
                ``compute_dtype="bfloat16"`` rounds its operands to bfloat16 whatever it is).
            residual: a C-contiguous array of the result's shape and dtype (float32 or float64),
                sharing no memory with ``out``, added before the activation:
                ``activation(conv(x) + bias + residual)``, a residual connection in the same pass
                (``explain(...)["fuses_residual"]`` says whether the kernel adds it as it stores).
                Not where the convolution computes in bfloat16 (bfloat16 arrays, or
                ``compute_dtype="bfloat16"``): TypeError.

        >>> import numpy as np, cppconv
        >>> layer = cppconv.Conv2d(np.ones((4, 3, 3, 3), np.float32))
        >>> layer(np.ones((3, 8, 8), np.float32), num_threads=1).shape
        (4, 6, 6)
        """
        w = self._weights  # one snapshot for the whole call (see _layer.Weights)
        if _tuning._mode != "off":
            if not isinstance(x, np.ndarray):
                try:
                    x = _args.as_input_array(x, "x")
                except (TypeError, ValueError):
                    pass  # the call below says what is wrong with it
            choice = self._tuned_choice(_tuning._mode, w, x, num_threads, dtype) if isinstance(x, np.ndarray) \
                else None
            if choice is not None and choice.forced:
                return _run(self._spec, x, w.weight, w.bias, out, plans=w.plans, algorithm=choice.forced,
                            num_threads=num_threads, dtype=dtype, rounding=self._rounding, residual=residual)
        if w.forward is not None and dtype is None and (
                num_threads is None or (num_threads.__class__ is int and num_threads > 0)):
            plan, (image, params, bits_of) = w.forward
            threads = 0 if num_threads is None else num_threads
            y: Optional[np.ndarray] = None
            if bits_of is None:
                y = plan.forward(x, out, image, params, threads, residual)
            elif residual is None and x.__class__ is np.ndarray and x.dtype == bits_of and (
                    out is None or (out.__class__ is np.ndarray and out.dtype == bits_of)):
                y = plan.forward(x.view(np.uint16), None if out is None else out.view(np.uint16), image, params,
                                 threads)
                if y is not None:
                    y = out if out is not None else y.view(bits_of)
            if y is not None:
                return y
        return _run(self._spec, x, w.weight, w.bias, out, plans=w.plans, num_threads=num_threads, dtype=dtype,
                    rounding=self._rounding, residual=residual)

    def _call_with_algorithm(self, algorithm: str, x: Any, out: Optional[np.ndarray] = None, *,
                             num_threads: Optional[int] = None, residual: Optional[np.ndarray] = None) -> np.ndarray:
        """The layer through a named algorithm (see ``_native.conv_algorithms()``): tests, benchmarks."""
        w = self._weights
        return _run(self._spec, x, w.weight, w.bias, out, plans=w.plans, algorithm=algorithm, rounding=self._rounding,
                    num_threads=num_threads, residual=residual)

    def explain(self, x_shape: Tuple[int, ...], dtype: Any = np.float32) -> Dict[str, Any]:
        """What a call on an input of this shape would do (see :func:`cppconv.explain`).

        >>> import numpy as np, cppconv
        >>> layer = cppconv.Conv2d(np.ones((8, 3, 3, 3), np.float32), stride=2)
        >>> layer.explain((1, 3, 32, 32))["output_shape"]
        (1, 8, 15, 15)
        """
        w = self._weights
        dtypes = _args.call_dtypes(np.empty(0, dtype), w.like, w.bias, rounding=self._rounding)
        info = _explain(self._spec, tuple(x_shape), w.like.shape, dtypes.result, w.bias is not None, layer=True,
                        rounding=self._rounding, x_dtype=np.dtype(dtype))
        info["chosen_by"] = "heuristic"
        mode = _tuning.get_tuning()
        if mode != "off":
            threads = int(_native.get_num_threads())
            memo, key = self._tuning_keys(mode, w, tuple(x_shape), np.dtype(dtype), threads, None, info)
            choice = self._choices.get(memo)
            if choice is None:  # what the next call would find in the cache (it measures nothing here)
                choice = _tuning.decide(mode, key, self._candidates(info), info["algorithm"], None)
            info["algorithm"], info["chosen_by"] = choice.algorithm, choice.chosen_by
        return info

    def _precision(self) -> int:
        """The precision mode a call runs in now: the layer's, else the process-wide one."""
        return self._spec.precision if self._spec.precision >= 0 else int(_native.get_float32_precision())

    def _tuning_keys(self, mode: str, w: _layer.Weights, x_shape: Tuple[int, ...], x_dtype: np.dtype, threads: int,
                     dtype: Any, info: Dict[str, Any]) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
        """The layer's memo key and the cache key (_tuning.full_key) of one call's problem."""
        memo = self._memo_key(mode, w, x_shape, x_dtype, threads, dtype)
        spec = self._spec.kwargs()
        problem = {
            "op": f"conv{self._rank}d", "x": list(x_shape), "weight": list(w.like.shape),
            "bias": w.bias is not None, "stride": spec["stride"], "dilation": spec["dilation"],
            "padding": info["padding"], "groups": spec["groups"], "padding_mode": spec["padding_mode"],
            "padding_value": spec["padding_value"], "layout": spec["layout"], "activation": spec["activation"],
            "compute_dtype": info["compute_dtype"], "result_dtype": info["result_dtype"],
            "precision": info["precision"],
        }
        # Tuples as JSON lists, so that a key read back from a file compares equal.
        return memo, _tuning.full_key(json.loads(json.dumps(problem)), threads)

    def _memo_key(self, mode: str, w: _layer.Weights, x_shape: Tuple[int, ...], x_dtype: np.dtype, threads: int,
                  dtype: Any) -> Tuple[Any, ...]:
        return (mode, x_shape, x_dtype.str, x_dtype.name, threads, self._precision(), dtype,
                w.like.shape, w.bias is not None)

    @staticmethod
    def _candidates(info: Dict[str, Any]) -> List[str]:
        """The algorithms tuning may choose among, the heuristic's first (the native list's order)."""
        heuristic = str(info["algorithm"])
        names = [str(n) for n in info.get("candidates", ())]
        return [heuristic] + [n for n in names if n != heuristic] if heuristic in names else [heuristic]

    def _tuned_choice(self, mode: str, w: _layer.Weights, x: np.ndarray, num_threads: Any,
                      dtype: Any, force: bool = False) -> Optional[_tuning.Choice]:
        """The algorithm for a call under tuning mode `mode` (see cppconv.set_tuning): the
        layer's earlier choice for this input and thread count, else the cache's, else
        measured now (mode "measure"), else the heuristic's.  None: arguments the call itself
        will refuse (it reports them)."""
        try:
            threads = int(_native.get_num_threads()) if num_threads is None else _args.thread_count(num_threads)
            requested = _args.requested_dtype(dtype)
            dtype_word = None if requested is None else requested.name
        except (TypeError, ValueError):
            return None
        memo = self._memo_key(mode, w, x.shape, x.dtype, threads, dtype_word)
        force = force or _tuning._force
        choice = None if force else self._choices.get(memo)
        if choice is not None:
            return choice
        try:
            dtypes = _args.call_dtypes(x, w.like, w.bias, dtype, self._rounding)
            info = _explain(self._spec, x.shape, w.like.shape, dtypes.result, w.bias is not None, layer=True,
                            rounding=self._rounding, x_dtype=x.dtype)
        except (TypeError, ValueError):
            return None
        _, key = self._tuning_keys(mode, w, x.shape, x.dtype, threads, dtype_word, info)
        plans: Dict[str, Dict[Any, Any]] = {}
        out: List[Optional[np.ndarray]] = [None]

        def run(name: str) -> None:
            # Each candidate on a plan of its own (its packed weights dropped with it after the
            # measurement), into one output buffer (every candidate's result has its shape).
            out[0] = _run(self._spec, x, w.weight, w.bias, out[0], plans=plans.setdefault(name, {}),
                          algorithm=name, num_threads=threads, dtype=dtype, rounding=self._rounding)

        choice = _tuning.decide(mode, key, self._candidates(info), str(info["algorithm"]), run, force)
        self._choices[memo] = choice
        return choice

    def _tune(self, x: Any, num_threads: Optional[int] = None, force: bool = False) -> _tuning.Choice:
        """Measures now as a call in mode "measure" would (`force`: even where the cache or the
        layer has a choice), whatever the mode; later calls in "cached" or "measure" mode use
        the choice (``cppconv tune``)."""
        x = _args.as_input_array(x, "x")
        w = self._weights
        choice = self._tuned_choice("measure", w, x, num_threads, None, force)
        if choice is None:
            self(x, num_threads=num_threads)  # raises the call's own error
            raise AssertionError("a call that tuning cannot plan ran")  # pragma: no cover
        # Calls in "cached" mode reuse it without reading the cache again.
        threads = int(_native.get_num_threads()) if num_threads is None else int(num_threads)
        self._choices[self._memo_key("cached", w, x.shape, x.dtype, threads, None)] = choice
        return choice

    # The settings, read-only, as PyTorch's layers name them; words in their canonical case.
    @_layer.read_only
    def in_channels(self) -> int:
        w = self._weights.like
        return int(w.shape[1]) * self._spec.groups if w.ndim > 2 else 1

    @_layer.read_only
    def out_channels(self) -> int:
        w = self._weights.like
        return int(w.shape[0]) if w.ndim > 2 else 1

    stride = _layer.spec_setting("stride")
    padding = _layer.spec_setting(
        "padding", 'one int per axis, (before, after) pairs per axis when asymmetric, or "same"')
    dilation = _layer.spec_setting("dilation")
    groups = _layer.spec_setting("groups")
    padding_mode = _layer.spec_setting("padding_mode")
    padding_value = _layer.spec_setting("padding_value", 'padding_mode="constant"\'s value (0.0 for the other modes).')
    layout = _layer.spec_setting("layout")
    activation = _layer.spec_setting("activation")
    precision = _layer.spec_setting("precision", 'None: the process-wide setting at each call.')


class Conv1d(_ConvNd):
    """A 1-D convolution layer: ``Conv1d(weight, bias, **kwargs)(x)`` equals
    ``conv1d(x, weight, bias, **kwargs)``, with the weights prepared once (see :class:`Conv2d`).
    The layout is ``"NCW"`` (default) or ``"NWC"``.

    >>> import numpy as np, cppconv
    >>> layer = cppconv.Conv1d(np.ones((8, 2, 3), np.float32), padding="same", activation="relu")
    >>> layer(np.ones((1, 2, 100), np.float32)).shape
    (1, 8, 100)
    """

    _rank = 1
    _weight_axes = "(K, C/groups, kl)"


class Conv2d(_ConvNd):
    """A convolution layer with its weights prepared once, for repeated inference calls.

    ``Conv2d(weight, bias, **kwargs)(x)`` equals ``conv2d(x, weight, bias, **kwargs)``; the
    weights are validated, copied and packed for the kernels on first use, never again.
    ``precision=None`` follows :func:`cppconv.set_float32_precision` at each call;
    ``"highest"`` or ``"high"`` fixes the layer's mode.
    Assigning ``layer.weight`` or ``layer.bias`` validates the new array as the constructor
    does and repacks on the next call; the layer pickles and deep-copies (its packed weights
    are rebuilt where it is loaded).

    >>> import numpy as np, cppconv
    >>> layer = cppconv.Conv2d(np.ones((8, 3, 3, 3), np.float32), padding="same", activation="relu")
    >>> layer(np.ones((1, 3, 32, 32), np.float32)).shape
    (1, 8, 32, 32)
    """

    _rank = 2
    _weight_axes = "(K, C/groups, kh, kw)"


class Conv3d(_ConvNd):
    """A 3-D convolution layer: ``Conv3d(weight, bias, **kwargs)(x)`` equals
    ``conv3d(x, weight, bias, **kwargs)``, with the weights prepared once (see :class:`Conv2d`).
    The layout is ``"NCDHW"`` (default) or ``"NDHWC"``.

    >>> import numpy as np, cppconv
    >>> layer = cppconv.Conv3d(np.ones((8, 3, 3, 3, 3), np.float32), padding=1)
    >>> layer(np.ones((1, 3, 4, 16, 16), np.float32)).shape
    (1, 8, 4, 16, 16)
    """

    _rank = 3
    _weight_axes = "(K, C/groups, kd, kh, kw)"
