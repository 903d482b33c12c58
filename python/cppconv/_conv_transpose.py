"""conv_transpose1d/2d/3d, the ConvTranspose1d/2d/3d layers and their size arithmetic.

One path for every spatial rank: the native core takes 1 to 3 spatial axes (the size
arithmetic is its conv_transpose_output_size), and the Python layer only normalises the
per-axis arguments.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple, Union, overload

import numpy as np

from . import _args, _layer, _native, _types

_FUNCTION = "conv_transpose{}d"
# The kernel axes of the weight, by rank, for messages.
_KERNEL_AXES = {1: "kl", 2: "kh, kw", 3: "kd, kh, kw"}


def _axis_output_size(i: Any, k: Any, s: Any, before: Any, after: Any, op: Any, d: Any) -> int:
    i, k, s, before, d = _args.axis_sizes(i, k, s, before, d, min_input=1)
    after = _args.as_int(after, "padding")
    if after < 0:
        raise ValueError(f"padding must be non-negative, got {after}")
    op = _args.as_int(op, "output_padding")
    if op < 0 or (op >= s and op >= d):
        raise ValueError(f"output_padding must be non-negative and smaller than stride {s} or dilation {d}, got {op}")
    out = int(_native.conv_transpose_output_size(i, k, s, before, after, op, d))
    if out >= _args.MAX_INDEX_EXTENT:
        raise ValueError("the output size does not fit cppconv's 64-bit index arithmetic (at most 2^61 - 1 per axis)")
    if out < 1:
        raise ValueError(
            f"output size (I - 1) S - pad_before - pad_after + D (K - 1) + output_padding + 1 = {out} is below 1"
        )
    return out


@overload
def conv_transpose_output_size(
    input_size: int, kernel_size: int, stride: int = 1, padding: int = 0, output_padding: int = 0, dilation: int = 1
) -> int: ...
@overload
def conv_transpose_output_size(
    input_size: Sequence[int], kernel_size: Any, stride: Any = 1, padding: Any = 0, output_padding: Any = 0,
    dilation: Any = 1,
) -> Tuple[int, ...]: ...
def conv_transpose_output_size(
    input_size: Any, kernel_size: Any, stride: Any = 1, padding: Any = 0, output_padding: Any = 0, dilation: Any = 1
) -> Union[int, Tuple[int, ...]]:
    """Output size of a transposed convolution: one axis for an int ``input_size``, every axis
    for a sequence of 1 to 3 sizes (the other arguments then per axis or one for all).

    ``O = (I - 1) S - 2 P + D (K - 1) + output_padding + 1`` (PyTorch's rule), the input
    length of the convolution it transposes (output_padding picks among the sizes that the
    convolution maps to I).  With per-axis sizes, padding may also be (before, after) pairs.

    >>> conv_transpose_output_size(14, 4, stride=2, padding=1)
    28
    >>> conv_transpose_output_size((8, 14, 14), 4, stride=(1, 2, 2), padding=(0, 1, 1))
    (11, 28, 28)
    """
    if not isinstance(input_size, (tuple, list)):
        p = _args.as_int(padding, "padding")
        return _axis_output_size(input_size, kernel_size, stride, p, p, output_padding, dilation)
    rank = len(input_size)
    if rank not in _args.SPATIAL_AXES:
        raise ValueError(f"input_size must be an int or 1 to 3 sizes, got {input_size!r}")
    kernel = _args.ntuple(kernel_size, "kernel_size", rank)
    strides = _args.ntuple(stride, "stride", rank)
    ops = _args.ntuple(output_padding, "output_padding", rank)
    dilations = _args.ntuple(dilation, "dilation", rank)
    pads = _spec_padding(padding, rank)
    return tuple(
        _axis_output_size(input_size[a], kernel[a], strides[a], pads[2 * a], pads[2 * a + 1], ops[a], dilations[a])
        for a in range(rank)
    )


def _spec_padding(padding: Any, rank: int) -> Tuple[int, ...]:
    pads = _args.explicit_padding_nd(padding, rank)
    if pads is None:
        raise ValueError(
            f"padding='same' is not supported by {_FUNCTION.format(rank)}: give an int, {rank} ints or {rank} "
            f"(before, after) pairs"
        )
    return pads


class _TransposeSpec:
    """The hyper-parameters of a transposed convolution of `rank` spatial axes, normalised once."""

    __slots__ = ("rank", "stride", "dilation", "padding", "output_padding", "groups", "layout", "activation",
                 "negative_slope", "native")

    def __init__(self, rank: int, stride: Any, padding: Any, output_padding: Any, groups: Any, dilation: Any,
                 layout: Any, activation: Any):
        self.rank = rank
        self.stride = _args.ntuple(stride, "stride", rank, minimum=1)
        self.dilation = _args.ntuple(dilation, "dilation", rank, minimum=1)
        self.padding = _spec_padding(padding, rank)
        self.output_padding = _args.ntuple(output_padding, "output_padding", rank, minimum=0)
        if any(op >= s and op >= d for op, s, d in zip(self.output_padding, self.stride, self.dilation)):
            raise ValueError(
                f"output_padding {self.output_padding} must be smaller than stride {self.stride} "
                f"or dilation {self.dilation} along each axis"
            )
        self.groups = _args.as_int(groups, "groups")
        if self.groups < 1:
            raise ValueError(f"groups must be >= 1, got {self.groups}")
        self.layout = _args.layout_code(layout, rank)
        self.activation, self.negative_slope = _args.activation_spec(activation)
        self.native = _native.ConvTransposeSettings(
            self.stride, self.padding, self.output_padding, self.dilation, self.groups, self.layout, self.activation,
            self.negative_slope,
        )

    def kwargs(self) -> Dict[str, Any]:
        """The keyword arguments that give this spec."""
        return {
            "stride": self.stride, "padding": _args.padding_argument_nd(self.padding),
            "output_padding": self.output_padding, "groups": self.groups, "dilation": self.dilation,
            "layout": _args.code_word(_args.RANK_LAYOUTS[self.rank], self.layout),
            "activation": _args.activation_argument(self.activation, self.negative_slope),
        }


class _Geometry:
    """One call's shapes: the batched views of x and weight and the output shape (under the
    names prepare_call reads)."""

    __slots__ = ("x4", "w4", "out_shape4", "out_shape")

    def __init__(self, spec: _TransposeSpec, x: np.ndarray, weight: np.ndarray, bias: Optional[np.ndarray]):
        rank = spec.rank
        image = rank == 2 and (x.ndim == 2 or weight.ndim == 2)
        if image:
            if x.ndim != 2 or weight.ndim != 2:
                raise ValueError(
                    f"a 2-D image needs a 2-D kernel and vice versa: x has shape {x.shape}, "
                    f"weight has shape {weight.shape}"
                )
            wb = weight[None, None]
            xb = _args.image_4d(x, spec.layout)
        else:
            if weight.ndim != rank + 2:
                raise ValueError(
                    f"weight must be {rank + 2}-D (C, K/groups, {_KERNEL_AXES[rank]}), got shape {weight.shape}"
                )
            wb = weight
            xb = _args.batched(x, rank, spec.layout, _FUNCTION)
        last = spec.layout == 1
        n = xb.shape[0]
        c = xb.shape[-1] if last else xb.shape[1]
        sizes = xb.shape[1:-1] if last else xb.shape[2:]
        cw, kg = wb.shape[:2]
        kernel = wb.shape[2:]
        g = spec.groups
        if cw != c:
            raise ValueError(f"weight has {cw} input channels (its first dimension), x has {c} channels")
        if c % g:
            raise ValueError(f"groups={g} does not divide the {c} input channels of x")
        if min(kernel) < 1:
            raise ValueError(f"weight has an empty kernel: shape {wb.shape}")
        if min(sizes) < 1:
            raise ValueError(f"x has an empty spatial dimension: sizes {tuple(sizes)}")
        k = kg * g
        if bias is not None and (bias.ndim != 1 or bias.shape[0] != k):
            raise ValueError(f"bias must have shape ({k},) for {k} output channels, got {bias.shape}")
        pads = spec.padding
        out = tuple(
            int(_native.conv_transpose_output_size(sizes[a], kernel[a], spec.stride[a], pads[2 * a], pads[2 * a + 1],
                                                   spec.output_padding[a], spec.dilation[a]))
            for a in range(rank)
        )
        if min(out) < 1:
            full = tuple(o + pads[2 * a] + pads[2 * a + 1] for a, o in enumerate(out))
            raise ValueError(
                f"output size {out} below 1: padding {_args.padding_argument_nd(pads)} crops more than the {full} "
                f"the transposed convolution produces"
            )
        self.x4, self.w4 = xb, wb
        self.out_shape4 = (n, *out, k) if last else (n, k, *out)
        if image:
            self.out_shape = _args.image_shape(self.out_shape4, x.ndim, spec.layout)
        else:
            self.out_shape = self.out_shape4 if x.ndim == rank + 2 else self.out_shape4[1:]


def _run(spec: _TransposeSpec, x: Any, weight: Any, bias: Any, out: Any, plans: Optional[Dict[Any, Any]] = None,
         algorithm: str = "", num_threads: Any = None, dtype: Any = None, rounding: Optional[str] = None,
         program: Any = None) -> np.ndarray:
    """The transposed convolution; program: a NetProgram that records the native call where the
    call does nothing else (x read and the result written in place, no conversion)."""
    threads = _args.thread_count(num_threads)
    # bfloat16 arithmetic runs on a bfloat16 plan: the stride phases on the bfloat16 convolution
    # kernels where they take them, else widened to float32 in the native core.
    call = _args.prepare_call(x, weight, bias, out, lambda *ops: _Geometry(spec, *ops), _native.ConvTransposePlan,
                              plans, dtype, rounding, bfloat16_plans=True)
    alone = program is not None and np.may_share_memory(call.x, x) and (
        call.direct or (out is None and call.dst.dtype == call.result))
    dst = call.dst.view(np.uint16) if _args.is_bfloat16(call.dst.dtype) else call.dst
    call.plan.run(call.x, dst, spec.native, algorithm, threads, program if alone else None)
    return _args.deliver(out, call.dst, call.direct, call.geometry.out_shape, call.result)


def conv_transpose1d(
    x: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    groups: int = 1,
    dilation: Any = 1,
    *,
    layout: _types.Layout1d = "NCW",
    activation: _types.Activation = None,
    out: Optional[np.ndarray] = None,
    num_threads: Optional[int] = None,
    dtype: Any = None,
) -> _types.Array:
    """1-D transposed convolution (``torch.nn.functional.conv_transpose1d``), the adjoint of a
    1-D convolution; arguments as for :func:`conv_transpose2d`, one value per axis.

    Args:
        x: ``(N, C, L)`` or ``(C, L)`` for ``layout="NCW"``, ``(N, L, C)`` or ``(L, C)`` for
            ``layout="NWC"``.
        weight: ``(C, K // groups, kl)`` as in PyTorch (for both layouts).
        padding: int, ``(p,)`` or ``((before, after),)``.

    Returns:
        ``(N, K, OL)`` (NCW) or ``(N, OL, K)`` (NWC), without N for an unbatched x.

    >>> import numpy as np, cppconv
    >>> cppconv.conv_transpose1d(np.ones((1, 16, 100), np.float32), np.ones((16, 8, 4), np.float32),
    ...                          stride=2, padding=1).shape
    (1, 8, 200)
    """
    spec = _TransposeSpec(1, stride, padding, output_padding, groups, dilation, layout, activation)
    return _run(spec, x, weight, bias, out, num_threads=num_threads, dtype=dtype)


def conv_transpose2d(
    x: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    groups: int = 1,
    dilation: Any = 1,
    *,
    layout: _types.Layout2d = "NCHW",
    activation: _types.Activation = None,
    out: Optional[np.ndarray] = None,
    num_threads: Optional[int] = None,
    dtype: Any = None,
) -> _types.Array:
    """2-D transposed convolution (``torch.nn.functional.conv_transpose2d``), the adjoint of conv2d.

    ``<conv2d(x, w), y> == <x, conv_transpose2d(y, w)>`` for the same weight array, so it
    upsamples by the stride: output ``(I - 1) S - 2 P + D (K - 1) + output_padding + 1``.
    bias, stride, padding, output_padding, groups and dilation may be given by position, in
    PyTorch's order; the rest are keyword-only.

    Args:
        x: ``(N, C, H, W)`` or ``(C, H, W)`` for ``layout="NCHW"``, ``(N, H, W, C)`` or
            ``(H, W, C)`` for ``layout="NHWC"``, or a 2-D image ``(H, W)`` with a 2-D weight.
        weight: ``(C, K // groups, kh, kw)`` as in PyTorch (for both layouts), or ``(kh, kw)``.
        bias: ``(K,)`` or None.
        stride, dilation: int or ``(h, w)``.
        padding: int, ``(ph, pw)`` or ``((top, bottom), (left, right))``: rows/columns cropped
            from the full result.
        output_padding: int or ``(h, w)``, added at the bottom/right; smaller than stride or
            dilation.
        groups: divides C and K.
        layout, activation, out: as for :func:`cppconv.conv2d`.
        num_threads: threads for this call only (default None: ``cppconv.get_num_threads()``).
        dtype: the computation's dtype, as for :func:`cppconv.conv2d`.

    Returns:
        ``(N, K, OH, OW)`` (NCHW) or ``(N, OH, OW, K)`` (NHWC), without N for an unbatched x,
        ``(OH, OW)`` for a 2-D image; dtype as for conv2d.

    >>> import numpy as np, cppconv
    >>> x = np.ones((1, 256, 14, 14), np.float32)
    >>> w = np.ones((256, 128, 4, 4), np.float32)
    >>> cppconv.conv_transpose2d(x, w, stride=2, padding=1).shape
    (1, 128, 28, 28)
    """
    spec = _TransposeSpec(2, stride, padding, output_padding, groups, dilation, layout, activation)
    return _run(spec, x, weight, bias, out, num_threads=num_threads, dtype=dtype)


def conv_transpose3d(
    x: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    groups: int = 1,
    dilation: Any = 1,
    *,
    layout: _types.Layout3d = "NCDHW",
    activation: _types.Activation = None,
    out: Optional[np.ndarray] = None,
    num_threads: Optional[int] = None,
    dtype: Any = None,
) -> _types.Array:
    """3-D transposed convolution (``torch.nn.functional.conv_transpose3d``), the adjoint of a
    3-D convolution; arguments as for :func:`conv_transpose2d`, one value per axis (d, h, w).

    Args:
        x: ``(N, C, D, H, W)`` or ``(C, D, H, W)`` for ``layout="NCDHW"``, ``(N, D, H, W, C)``
            or ``(D, H, W, C)`` for ``layout="NDHWC"``.
        weight: ``(C, K // groups, kd, kh, kw)`` as in PyTorch (for both layouts).
        padding: int, ``(pd, ph, pw)`` or three ``(before, after)`` pairs.

    Returns:
        ``(N, K, OD, OH, OW)`` (NCDHW) or ``(N, OD, OH, OW, K)`` (NDHWC), without N for an
        unbatched x.

    >>> import numpy as np, cppconv
    >>> cppconv.conv_transpose3d(np.ones((1, 8, 4, 7, 7), np.float32), np.ones((8, 4, 2, 2, 2), np.float32),
    ...                          stride=2).shape
    (1, 4, 8, 14, 14)
    """
    spec = _TransposeSpec(3, stride, padding, output_padding, groups, dilation, layout, activation)
    return _run(spec, x, weight, bias, out, num_threads=num_threads, dtype=dtype)


def _conv_transpose_with_algorithm(algorithm: str, x: Any, weight: Any, bias: Any = None, rank: int = 2,
                                   **kwargs: Any) -> np.ndarray:
    """conv_transpose{rank}d through a named algorithm (see ``_native.conv_transpose_algorithms()``)."""
    out = kwargs.pop("out", None)
    num_threads = kwargs.pop("num_threads", None)
    channels_first = _args.code_word(_args.RANK_LAYOUTS[rank], 0)
    spec = _TransposeSpec(
        rank, kwargs.pop("stride", 1), kwargs.pop("padding", 0), kwargs.pop("output_padding", 0),
        kwargs.pop("groups", 1), kwargs.pop("dilation", 1), kwargs.pop("layout", channels_first),
        kwargs.pop("activation", None),
    )
    if kwargs:
        raise TypeError(f"unexpected arguments {sorted(kwargs)}")
    return _run(spec, x, weight, bias, out, algorithm=algorithm, num_threads=num_threads)


class _ConvTransposeNd(_layer.WeightedLayer):
    """What ConvTranspose1d/2d/3d share; `_rank` and `_default_layout` say which."""

    _default_layout = "NCHW"
    _repr_positional = ("in_channels", "out_channels")
    _repr_settings = ("kernel_size", "stride", "padding", "output_padding", "groups", "bias", "dilation", "layout",
                      "activation", "compute_dtype")
    _torch_settings = ("stride", "padding", "output_padding", "groups", "dilation")

    def __init__(
        self,
        weight: Any,
        bias: Any = None,
        *,
        stride: Any = 1,
        padding: Any = 0,
        output_padding: Any = 0,
        groups: int = 1,
        dilation: Any = 1,
        layout: Optional[str] = None,
        activation: _types.Activation = None,
        compute_dtype: Optional[str] = None,
    ):
        self._spec = _TransposeSpec(self._rank, stride, padding, output_padding, groups, dilation,
                                    self._default_layout if layout is None else layout, activation)
        self._rounding = _args.layer_rounding(compute_dtype)
        self._set_weights(weight, bias)

    def _check_weights(self, weight: np.ndarray, bias: Optional[np.ndarray]) -> None:
        full = weight.ndim == self._rank + 2  # else ConvTranspose2d's 2-D kernel
        c = weight.shape[0] if full else 1
        k = (weight.shape[1] if full else 1) * self._spec.groups
        if c % self._spec.groups:
            raise ValueError(f"groups={self._spec.groups} does not divide the {c} input channels of weight")
        _args.check_layer_bias(bias, k)

    def _init_kwargs(self) -> Dict[str, Any]:
        return {**self._weight_kwargs(), **self._spec.kwargs(), "compute_dtype": self._rounding}

    def __call__(self, x: Any, out: Optional[np.ndarray] = None, *, num_threads: Optional[int] = None,
                 dtype: Any = None) -> np.ndarray:
        """The transposed convolution of ``x`` with the layer's weights (shapes as for the
        function of the layer's rank); ``num_threads`` caps this call's threads; ``dtype`` as
        for :meth:`Conv2d.__call__`."""
        w = self._weights  # one snapshot for the whole call (see _layer.Weights)
        return _run(self._spec, x, w.weight, w.bias, out, plans=w.plans, num_threads=num_threads, dtype=dtype,
                    rounding=self._rounding)

    def _forward(self, x: np.ndarray, out: Optional[np.ndarray], num_threads: Optional[int],
                 program: Any) -> np.ndarray:
        """__call__ for a network's step (internal): its native call recorded into `program`, a
        NetProgram, where the call does nothing else."""
        w = self._weights
        return _run(self._spec, x, w.weight, w.bias, out, plans=w.plans, num_threads=num_threads,
                    rounding=self._rounding, program=program)

    def _call_with_algorithm(self, algorithm: str, x: Any, out: Optional[np.ndarray] = None) -> np.ndarray:
        """The layer through a named algorithm (see ``_native.conv_transpose_algorithms()``)."""
        w = self._weights
        return _run(self._spec, x, w.weight, w.bias, out, plans=w.plans, algorithm=algorithm, rounding=self._rounding)

    # The settings, read-only, as PyTorch's ConvTranspose layers name them.
    @_layer.read_only
    def in_channels(self) -> int:
        w = self._weights.like
        return int(w.shape[0]) if w.ndim == self._rank + 2 else 1

    @_layer.read_only
    def out_channels(self) -> int:
        w = self._weights.like
        return int(w.shape[1]) * self._spec.groups if w.ndim == self._rank + 2 else 1

    stride = _layer.spec_setting("stride")
    padding = _layer.spec_setting("padding", "One size per axis, or (before, after) per axis when asymmetric.")
    output_padding = _layer.spec_setting("output_padding")
    dilation = _layer.spec_setting("dilation")
    groups = _layer.spec_setting("groups")
    layout = _layer.spec_setting("layout")
    activation = _layer.spec_setting("activation")


class ConvTranspose1d(_ConvTransposeNd):
    """A 1-D transposed-convolution layer with its weights prepared once: ``ConvTranspose1d(weight,
    bias, **kwargs)(x)`` equals ``conv_transpose1d(x, weight, bias, **kwargs)``, as
    :class:`ConvTranspose2d`.

    >>> import numpy as np, cppconv
    >>> up = cppconv.ConvTranspose1d(np.ones((16, 8, 4), np.float32), stride=2, padding=1)
    >>> up(np.ones((1, 16, 50), np.float32)).shape
    (1, 8, 100)
    """

    _rank = 1
    _default_layout = "NCW"
    _weight_axes = "(C, K/groups, kl)"


class ConvTranspose2d(_ConvTransposeNd):
    """A transposed-convolution layer with its weights prepared once.

    ``ConvTranspose2d(weight, bias, **kwargs)(x)`` equals ``conv_transpose2d(x, weight, bias,
    **kwargs)``; the weights are validated, copied and repacked for the kernel on first use.
    ``layer.weight`` and ``layer.bias`` may be assigned, and the layer pickles, as
    :class:`Conv2d`.

    >>> import numpy as np, cppconv
    >>> up = cppconv.ConvTranspose2d(np.ones((16, 8, 4, 4), np.float32), stride=2, padding=1, activation="relu")
    >>> up(np.ones((1, 16, 14, 14), np.float32)).shape
    (1, 8, 28, 28)
    """

    _rank = 2
    _default_layout = "NCHW"
    _weight_axes = "(C, K/groups, kh, kw)"


class ConvTranspose3d(_ConvTransposeNd):
    """A 3-D transposed-convolution layer with its weights prepared once: ``ConvTranspose3d(weight,
    bias, **kwargs)(x)`` equals ``conv_transpose3d(x, weight, bias, **kwargs)``, as
    :class:`ConvTranspose2d`.

    >>> import numpy as np, cppconv
    >>> up = cppconv.ConvTranspose3d(np.ones((8, 4, 2, 2, 2), np.float32), stride=2)
    >>> up(np.ones((8, 4, 7, 7), np.float32)).shape
    (4, 8, 14, 14)
    """

    _rank = 3
    _default_layout = "NCDHW"
    _weight_axes = "(C, K/groups, kd, kh, kw)"
