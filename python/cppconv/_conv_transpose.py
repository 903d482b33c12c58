"""conv_transpose2d, the ConvTranspose2d layer and its size arithmetic."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

from . import _args, _layer, _native


def conv_transpose_output_size(
    input_size: int, kernel_size: int, stride: int = 1, padding: int = 0, output_padding: int = 0, dilation: int = 1
) -> int:
    """Output length of a transposed convolution along one axis.

    ``O = (I - 1) S - 2 P + D (K - 1) + output_padding + 1`` (PyTorch's rule), the input
    length of the conv2d it transposes (output_padding picks among the sizes that conv2d
    maps to I).

    >>> conv_transpose_output_size(14, 4, stride=2, padding=1)
    28
    """
    i, k, s, p, d = _args.axis_sizes(input_size, kernel_size, stride, padding, dilation, min_input=1)
    op = _args.as_int(output_padding, "output_padding")
    if op < 0 or (op >= s and op >= d):
        raise ValueError(f"output_padding must be non-negative and smaller than stride {s} or dilation {d}, got {op}")
    out = (i - 1) * s - 2 * p + d * (k - 1) + op + 1
    if out < 1:
        raise ValueError(f"output size (I - 1) S - 2 P + D (K - 1) + output_padding + 1 = {out} is below 1")
    return out


class _TransposeSpec:
    """The hyper-parameters of a transposed convolution, normalised once."""

    __slots__ = ("stride", "dilation", "padding", "output_padding", "groups", "layout", "activation")

    def __init__(self, stride: Any, padding: Any, output_padding: Any, groups: Any, dilation: Any, layout: Any, activation: Any):
        self.stride = _args.pair(stride, "stride", minimum=1)
        self.dilation = _args.pair(dilation, "dilation", minimum=1)
        pads = _args.explicit_padding(padding)
        if pads is None:
            raise ValueError("padding='same' is not supported by conv_transpose2d: give an int, a pair or ((top, bottom), (left, right))")
        self.padding = pads
        self.output_padding = _args.pair(output_padding, "output_padding", minimum=0)
        for axis in (0, 1):
            if self.output_padding[axis] >= self.stride[axis] and self.output_padding[axis] >= self.dilation[axis]:
                raise ValueError(
                    f"output_padding {self.output_padding} must be smaller than stride {self.stride} "
                    f"or dilation {self.dilation} along each axis"
                )
        self.groups = _args.as_int(groups, "groups")
        if self.groups < 1:
            raise ValueError(f"groups must be >= 1, got {self.groups}")
        self.layout = _args.layout_code(layout)
        self.activation = _args.activation_code(activation)

    def kwargs(self) -> Dict[str, Any]:
        """The keyword arguments that give this spec."""
        return {
            "stride": self.stride, "padding": _args.padding_argument(self.padding),
            "output_padding": self.output_padding, "groups": self.groups, "dilation": self.dilation,
            "layout": _args.code_word(_args.LAYOUTS, self.layout),
            "activation": _args.code_word(_args.ACTIVATIONS, self.activation),
        }


class _Geometry:
    """One call's shapes: the 4-D views of x and weight and the output shape."""

    __slots__ = ("x4", "w4", "out_shape4", "out_shape")

    def __init__(self, spec: _TransposeSpec, x: np.ndarray, weight: np.ndarray, bias: Optional[np.ndarray]):
        if x.ndim == 2 or weight.ndim == 2:
            if x.ndim != 2 or weight.ndim != 2:
                raise ValueError(
                    f"a 2-D image needs a 2-D kernel and vice versa: x has shape {x.shape}, weight has shape {weight.shape}"
                )
            w4 = weight[None, None]
        elif weight.ndim != 4:
            raise ValueError(f"weight must be 4-D (C, K/groups, kh, kw), got shape {weight.shape}")
        else:
            w4 = weight
        x4 = _args.image_4d(x, spec.layout)
        nhwc = spec.layout == 1
        n = x4.shape[0]
        c, h, w = (x4.shape[3], x4.shape[1], x4.shape[2]) if nhwc else x4.shape[1:]
        cw, kg, kh, kw = w4.shape
        g = spec.groups
        if cw != c:
            raise ValueError(f"weight has {cw} input channels (its first dimension), x has {c} channels")
        if c % g:
            raise ValueError(f"groups={g} does not divide the {c} input channels of x")
        if kh < 1 or kw < 1:
            raise ValueError(f"weight has an empty kernel: shape {w4.shape}")
        if h < 1 or w < 1:
            raise ValueError(f"x has an empty spatial dimension: height {h}, width {w}")
        k = kg * g
        if bias is not None and (bias.ndim != 1 or bias.shape[0] != k):
            raise ValueError(f"bias must have shape ({k},) for {k} output channels, got {bias.shape}")
        top, bottom, left, right = spec.padding
        (sh, sw), (dh, dw), (oph, opw) = spec.stride, spec.dilation, spec.output_padding
        oh = (h - 1) * sh - top - bottom + dh * (kh - 1) + oph + 1
        ow = (w - 1) * sw - left - right + dw * (kw - 1) + opw + 1
        if oh < 1 or ow < 1:
            raise ValueError(
                f"output size ({oh}, {ow}) below 1: padding {spec.padding} (top, bottom, left, right) crops more than "
                f"the ({oh + top + bottom}, {ow + left + right}) the transposed convolution produces"
            )
        self.x4, self.w4 = x4, w4
        self.out_shape4 = (n, oh, ow, k) if nhwc else (n, k, oh, ow)
        self.out_shape = _args.image_shape(self.out_shape4, x.ndim, spec.layout)


def _run(spec: _TransposeSpec, x: Any, weight: Any, bias: Any, out: Any,
         plans: Optional[Dict[np.dtype, Any]] = None, algorithm: str = "") -> np.ndarray:
    call = _args.prepare_call(x, weight, bias, out, lambda *ops: _Geometry(spec, *ops), _native.ConvTranspose2dPlan,
                              plans)
    top, bottom, left, right = spec.padding
    call.plan.run(
        call.x, call.dst,
        spec.stride[0], spec.stride[1], spec.dilation[0], spec.dilation[1],
        top, bottom, left, right, spec.output_padding[0], spec.output_padding[1],
        spec.groups, spec.layout, spec.activation, algorithm,
    )
    return _args.deliver(out, call.dst, call.direct, call.geometry.out_shape, call.result)


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
    layout: str = "NCHW",
    activation: Optional[str] = None,
    out: Optional[np.ndarray] = None,
) -> np.ndarray:
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

    Returns:
        ``(N, K, OH, OW)`` (NCHW) or ``(N, OH, OW, K)`` (NHWC), without N for an unbatched x,
        ``(OH, OW)`` for a 2-D image; dtype as for conv2d.

    >>> import numpy as np, cppconv
    >>> x = np.ones((1, 256, 14, 14), np.float32)
    >>> w = np.ones((256, 128, 4, 4), np.float32)
    >>> cppconv.conv_transpose2d(x, w, stride=2, padding=1).shape
    (1, 128, 28, 28)
    """
    spec = _TransposeSpec(stride, padding, output_padding, groups, dilation, layout, activation)
    return _run(spec, x, weight, bias, out)


def _conv_transpose2d_with_algorithm(algorithm: str, x: Any, weight: Any, bias: Any = None, **kwargs: Any) -> np.ndarray:
    """conv_transpose2d through a named algorithm (see ``_native.conv_transpose_algorithms()``)."""
    out = kwargs.pop("out", None)
    spec = _TransposeSpec(
        kwargs.pop("stride", 1), kwargs.pop("padding", 0), kwargs.pop("output_padding", 0), kwargs.pop("groups", 1),
        kwargs.pop("dilation", 1), kwargs.pop("layout", "NCHW"), kwargs.pop("activation", None),
    )
    if kwargs:
        raise TypeError(f"unexpected arguments {sorted(kwargs)}")
    return _run(spec, x, weight, bias, out, algorithm=algorithm)


class ConvTranspose2d(_layer.WeightedLayer):
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

    _weight_axes = "(C, K/groups, kh, kw)"
    _repr_positional = ("in_channels", "out_channels")
    _repr_settings = ("kernel_size", "stride", "padding", "output_padding", "groups", "bias", "dilation", "layout",
                      "activation")

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
        layout: str = "NCHW",
        activation: Optional[str] = None,
    ):
        self._spec = _TransposeSpec(stride, padding, output_padding, groups, dilation, layout, activation)
        self._set_weights(weight, bias)

    def _check_weights(self, weight: np.ndarray, bias: Optional[np.ndarray]) -> None:
        c = weight.shape[0] if weight.ndim == 4 else 1
        k = (weight.shape[1] if weight.ndim == 4 else 1) * self._spec.groups
        if c % self._spec.groups:
            raise ValueError(f"groups={self._spec.groups} does not divide the {c} input channels of weight")
        _args.check_layer_bias(bias, k)

    def _init_kwargs(self) -> Dict[str, Any]:
        return {**self._weight_kwargs(), **self._spec.kwargs()}

    def __call__(self, x: Any, out: Optional[np.ndarray] = None) -> np.ndarray:
        w = self._weights  # one snapshot for the whole call (see _layer.Weights)
        return _run(self._spec, x, w.weight, w.bias, out, plans=w.plans)

    # The settings, read-only, as PyTorch's ConvTranspose2d names them.
    @_layer.read_only
    def in_channels(self) -> int:
        w = self._weights.weight
        return int(w.shape[0]) if w.ndim == 4 else 1

    @_layer.read_only
    def out_channels(self) -> int:
        w = self._weights.weight
        return int(w.shape[1]) * self._spec.groups if w.ndim == 4 else 1

    stride = _layer.spec_setting("stride")
    padding = _layer.spec_setting("padding", '(ph, pw), or ((top, bottom), (left, right)) when asymmetric.')
    output_padding = _layer.spec_setting("output_padding")
    dilation = _layer.spec_setting("dilation")
    groups = _layer.spec_setting("groups")
    layout = _layer.spec_setting("layout")
    activation = _layer.spec_setting("activation")
