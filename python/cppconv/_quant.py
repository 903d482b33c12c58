"""Quantized (int8/uint8) convolution with ONNX QLinearConv's arithmetic, and ONNX's
QuantizeLinear / DequantizeLinear.

y = saturate(round_half_to_even(acc * (x_scale * w_scale / y_scale)) + y_zero_point), where
acc = bias + sum (x - x_zero_point) * (w - w_zero_point) is exact in int32 (padding reads
x_zero_point, a real zero) and the multiplier and the product are float32, as in ONNX Runtime
and XNNPACK.  Every native algorithm gives the same bits (cpp/qconv.cpp).
"""

from typing import Any, Dict, Optional, Tuple

import numpy as np

from . import _args, _layer, _native
from ._conv import _ConvSpec, _Geometry

_U8, _I8, _I16, _I32, _F32 = (np.dtype(t) for t in (np.uint8, np.int8, np.int16, np.int32, np.float32))
_RANGES = {_U8: (0, 255), _I8: (-128, 127)}
_INT32_MAX = 2**31 - 1
_ACTIVATIONS = (None, "relu", "relu6")


def _quantized_dtype(value: Any, name: str) -> np.dtype:
    dtype: np.dtype = np.dtype(value)
    if dtype not in _RANGES:
        raise TypeError(f"{name} must be uint8 or int8, got {dtype}")
    return dtype


def _tensor_dtype(array: np.ndarray, name: str) -> np.dtype:
    if array.dtype not in _RANGES:
        raise TypeError(f"{name} must be a uint8 or int8 array, got dtype {array.dtype}")
    return array.dtype


def _scales(value: Any, name: str, count: Optional[int] = None) -> np.ndarray:
    """A scale as a float32 vector: one value, or `count` (per channel) where count is given.
    Each must be positive and finite in float32, the type the arithmetic uses."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a real number or a float array, got {value!r}")
    a = np.asarray(value)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a real number or a float array, got dtype {a.dtype}")
    if a.ndim > 1 or (a.ndim == 1 and a.shape[0] not in ((1, count) if count else (1,))):
        want = f"a scalar or {count} values (one per output channel)" if count else "a scalar"
        raise ValueError(f"{name} must be {want}, got shape {a.shape}")
    with np.errstate(over="ignore", under="ignore"):
        s = a.astype(_F32).reshape(-1)
    bad = ~(np.isfinite(s) & (s > 0))
    if bad.any():
        raise ValueError(f"{name} must be positive and finite (in float32), got {a.reshape(-1)[bad][0]!r}")
    return s


def _zero_points(value: Any, name: str, dtype: Optional[np.dtype], count: Optional[int] = None) -> np.ndarray:
    """A zero point as an int32 vector (one value, or `count` per channel).  A typed array or
    NumPy scalar must have the tensor's dtype (ONNX); a Python int must lie in its range."""
    if value is None:
        return np.zeros(1, _I32)
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int or a uint8/int8 array, got {value!r}")
    if isinstance(value, int):
        a = np.asarray([value], dtype=object)
    else:
        a = np.asarray(value)
        if a.dtype.kind not in "iu":
            raise TypeError(f"{name} must be an integer (uint8 or int8), got dtype {a.dtype}")
        if dtype is not None and a.dtype != dtype:
            raise TypeError(f"{name} has dtype {a.dtype}; it must have the tensor's dtype {dtype}")
    if a.ndim > 1 or (a.ndim == 1 and a.shape[0] not in ((1, count) if count else (1,))):
        want = f"a scalar or {count} values (one per output channel)" if count else "a scalar"
        raise ValueError(f"{name} must be {want}, got shape {a.shape}")
    v = a.reshape(-1)
    lo, hi = _RANGES[dtype if dtype is not None else _U8]
    # (per channel a vector's test, not a Python loop: a one-shot depthwise call has 1024)
    ints = np.array([int(z) for z in v], dtype=object) if v.dtype == object else v.astype(np.int64)
    if ints.size and (ints.min() < lo or ints.max() > hi):
        raise ValueError(f"{name} must lie in [{lo}, {hi}] for {dtype}, got {v.tolist()}")
    return ints.astype(_I32)


def _output_kind(out_dtype: Any, y_zero_point: Any, x_dtype: np.dtype) -> np.dtype:
    """The result dtype: out_dtype when given (uint8, int8, int32, float32), else the typed
    y_zero_point's dtype (ONNX), else x's."""
    zp_dtype = y_zero_point.dtype if isinstance(y_zero_point, (np.ndarray, np.generic)) else None
    if out_dtype is None:
        return zp_dtype if zp_dtype in _RANGES else x_dtype
    dtype: np.dtype = np.dtype(out_dtype)
    if dtype not in (_U8, _I8, _I32, _F32):
        raise TypeError(f"out_dtype must be uint8, int8, int32 or float32, got {dtype}")
    if dtype in _RANGES and zp_dtype is not None and zp_dtype != dtype:
        raise ValueError(f"out_dtype {dtype} differs from y_zero_point's dtype {zp_dtype}")
    return dtype


class _QuantizedWeights:
    """A quantized convolution's weights and parameters, validated, with the native plan that
    holds the centred int16 weights packed (built once for a layer)."""

    def __init__(self, spec: _ConvSpec, x_scale: Any, x_zero_point: Any, w: Any, w_scale: Any, w_zero_point: Any,
                 y_scale: Any, y_zero_point: Any, bias: Any, activation: Any, out_dtype: Any,
                 x_dtype: Optional[np.dtype], one_call: bool = False):
        if not isinstance(w, np.ndarray):
            w = np.asarray(w)
        self.w_dtype = _tensor_dtype(w, "w")
        if not 2 <= w.ndim <= 5:
            raise ValueError(f"w must have 3 to 5 dimensions (K, C/groups, *kernel), or 2 for a 2-D image's "
                             f"kernel, got shape {w.shape}")
        k = 1 if w.ndim == 2 else w.shape[0]
        self.x_dtype = x_dtype
        if x_dtype is None:  # a layer: from a typed x_zero_point, else fixed by the first call
            self.x_dtype = x_zero_point.dtype if isinstance(x_zero_point, (np.ndarray, np.generic)) else None
        self.x_scale = _scales(x_scale, "x_scale")[0]
        self.w_scale = _scales(w_scale, "w_scale", k)
        self.y_scale = _scales(y_scale, "y_scale")[0]
        self.x_zero_point_arg = x_zero_point
        self.w_zero_point = _zero_points(w_zero_point, "w_zero_point", self.w_dtype, k)
        if activation is not None and (not isinstance(activation, str) or activation.lower() not in _ACTIVATIONS):
            raise ValueError(f"activation must be None, 'relu' or 'relu6', got {activation!r}")
        self.activation = activation.lower() if isinstance(activation, str) else None
        self.out_dtype_arg, self.y_zero_point_arg = out_dtype, y_zero_point
        if bias is not None:
            b = np.asarray(bias)
            if b.dtype.kind not in "iu":
                raise TypeError(
                    f"bias must be an int32 array (scale x_scale * w_scale, zero point 0), got dtype {b.dtype}"
                )
            if b.shape != (k,):
                raise ValueError(f"bias must have shape ({k},) for {k} output channels, got {b.shape}")
            if b.size and (int(b.min()) < -2**31 or int(b.max()) > _INT32_MAX):
                raise ValueError("bias must fit int32")
            bias = np.ascontiguousarray(b, dtype=_I32)
        self.bias = bias
        w4 = w[None, None] if w.ndim == 2 else w  # a 2-D kernel for a 2-D image: one in, one out
        zero_points = np.broadcast_to(self.w_zero_point, (k,)).astype(_I16)
        self.w = w
        self.centred = np.subtract(w4, zero_points.reshape((-1,) + (1,) * (w4.ndim - 1)), dtype=_I16)
        # sum |w - w_zero_point| per output channel: with the largest |x - x_zero_point| and
        # |bias| it bounds every partial sum of the accumulator.  (|w - w_zero_point| <= 255:
        # int16 holds it, and the sum alone widens.)
        self.weight_l1 = np.abs(self.centred).reshape(k, -1).sum(axis=1, dtype=np.int64)
        self.spec = spec
        # A one-call plan packs only the algorithm its call runs: packing every ISA's algorithms
        # cost more than a large layer's call.
        self.plan = _native.QConvPlan(self.centred, self.bias, spec.groups, one_call=one_call)
        self.checked: Dict[np.dtype, Tuple[int, np.dtype, Dict[str, Any]]] = {}
        self.geometries: Dict[Tuple[int, ...], Tuple[Any, ...]] = {}

    def call_settings(self, x_dtype: np.dtype) -> Tuple[int, np.dtype, Dict[str, Any]]:
        """(x_zero_point, result dtype, the native run's quantization arguments) for an x of
        x_dtype, checked once per dtype: zero points in range, the accumulator within int32."""
        found = self.checked.get(x_dtype)
        if found is not None:
            return found
        if self.x_dtype is not None and x_dtype != self.x_dtype:
            raise TypeError(f"x has dtype {x_dtype}; x_zero_point's dtype is {self.x_dtype}")
        x_zp = int(_zero_points(self.x_zero_point_arg, "x_zero_point", x_dtype)[0])
        result = _output_kind(self.out_dtype_arg, self.y_zero_point_arg, x_dtype)
        lo, hi = _RANGES[x_dtype]
        reach = max(x_zp - lo, hi - x_zp)
        bias_abs = np.zeros_like(self.weight_l1) if self.bias is None else np.abs(self.bias.astype(np.int64))
        bound = self.weight_l1 * reach + bias_abs
        if bound.size and int(bound.max()) > _INT32_MAX:
            ch = int(bound.argmax())
            raise ValueError(
                f"w: the int32 accumulator can overflow: output channel {ch} sums up to {int(bound[ch])} > 2^31 - 1 "
                f"(sum |w - w_zero_point| = {int(self.weight_l1[ch])} over {self.centred[0].size} taps, "
                f"|x - x_zero_point| up to {reach}, |bias| {int(bias_abs[ch])})")
        f_min, f_max = -np.inf, np.inf
        if result in _RANGES:
            y_zp = int(_zero_points(self.y_zero_point_arg, "y_zero_point", result)[0])
            y_lo, y_hi = _RANGES[result]
            multiplier = (self.x_scale * self.w_scale) / self.y_scale
            if self.activation is not None:
                y_lo = max(y_lo, y_zp)
            if self.activation == "relu6":
                six = np.float32(6) / self.y_scale  # quantize(6): where relu6 clamps
                y_hi = min(y_hi, y_zp + (y_hi - y_zp if six > 1024 else int(np.rint(six))))
        else:
            if result == _I32 and self.activation is not None:
                raise ValueError("activation applies to quantized and float32 results, not out_dtype=int32")
            y_zp, (y_lo, y_hi) = 0, (0, 255)
            multiplier = self.x_scale * self.w_scale
            if self.activation is not None:
                f_min = 0.0
            if self.activation == "relu6":
                f_max = 6.0
        k = self.centred.shape[0]
        multiplier = np.ascontiguousarray(np.broadcast_to(multiplier.astype(_F32), (k,)))
        settings = (x_zp, result, dict(x_zero_point=x_zp, multiplier=multiplier if result != _I32 else None,
                                       y_zero_point=y_zp, y_min=y_lo, y_max=y_hi, f_min=f_min, f_max=f_max))
        self.checked[x_dtype] = settings
        return settings

    def run(self, x: Any, out: Optional[np.ndarray], num_threads: Any, algorithm: str = "",
            program: Any = None) -> np.ndarray:
        """The layer's call; program: a NetProgram that records the native run, where the run
        reads x and writes its result in place (no copies in Python)."""
        if not isinstance(x, np.ndarray):
            x = np.asarray(x)
        x_dtype = _tensor_dtype(x, "x")
        threads = _args.thread_count(num_threads)
        _, result, native_args = self.call_settings(x_dtype)
        x4_shape, out_shape4, out_shape, params = self.shapes(x)
        if out is not None:
            _args.check_out(out, out_shape, result)
        x4 = np.ascontiguousarray(x).reshape(x4_shape)
        buffer, direct = _args.output_buffer(out, out_shape4, result, result, [x4])
        recorded = program if x.flags.c_contiguous and (direct or out is None) else None
        self.plan.run(x4, buffer, params, **native_args, algorithm=algorithm, num_threads=threads, program=recorded)
        return _args.deliver(out, buffer, direct, out_shape, result)

    def shapes(self, x: np.ndarray) -> Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...], Any]:
        """(x's batched shape, the output's with and without the batch axis, the native
        parameters) for an x of this shape, worked out (and checked) once per shape: _Geometry
        and the parameters cost more than the kernel of a small depthwise layer."""
        found = self.geometries.get(x.shape)
        if found is None:
            geometry = _Geometry(self.spec, x, self.w, self.bias)
            found = (geometry.x4.shape, geometry.out_shape4, geometry.out_shape, self.spec.params(geometry.pads))
            if len(self.geometries) < 64:  # (a bound for callers whose shapes keep changing)
                self.geometries[x.shape] = found
        return found

    def explain(self, x_shape: Tuple[int, ...], x_dtype: Any, algorithm: str = "",
                num_threads: Any = None) -> Dict[str, Any]:
        x = np.lib.stride_tricks.as_strided(np.zeros(1, _quantized_dtype(x_dtype, "x_dtype")), shape=tuple(x_shape),
                                            strides=(0,) * len(x_shape))
        _, result, _ = self.call_settings(x.dtype)
        geometry = _Geometry(self.spec, x, self.w, self.bias)
        info = dict(self.plan.explain(list(geometry.x4.shape), self.spec.params(geometry.pads), algorithm,
                                      _args.thread_count(num_threads)))
        info.update(output_shape=geometry.out_shape, dtype=result, padding=geometry.pads)
        return info


def _spec(rank: int, stride: Any, padding: Any, dilation: Any, groups: Any, layout: Any) -> _ConvSpec:
    if layout is None:
        layout = next(iter(_args.RANK_LAYOUTS[rank]))
    return _ConvSpec(rank, stride, padding, dilation, groups, "zeros", layout, None)


def _qconv(rank: int, x: Any, x_scale: Any, x_zero_point: Any, w: Any, w_scale: Any, w_zero_point: Any,
           y_scale: Any, y_zero_point: Any, bias: Any, stride: Any, padding: Any, dilation: Any, groups: Any,
           layout: Any, activation: Any, out_dtype: Any, out: Optional[np.ndarray], num_threads: Any,
           algorithm: str = "") -> np.ndarray:
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    x_dtype = _tensor_dtype(x, "x")
    weights = _QuantizedWeights(_spec(rank, stride, padding, dilation, groups, layout), x_scale, x_zero_point, w,
                                w_scale, w_zero_point, y_scale, y_zero_point, bias, activation, out_dtype, x_dtype,
                                one_call=True)
    return weights.run(x, out, num_threads, algorithm)


def qconv2d(x: Any, x_scale: Any, x_zero_point: Any, w: Any, w_scale: Any, w_zero_point: Any, y_scale: Any,
            y_zero_point: Any, bias: Any = None, *, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
            groups: Any = 1, layout: str = "NCHW", activation: Optional[str] = None, out_dtype: Any = None,
            out: Optional[np.ndarray] = None, num_threads: Optional[int] = None) -> np.ndarray:
    """Quantized 2-D convolution as ONNX QLinearConv.

    x: uint8 or int8, (N, C, H, W) / (C, H, W) (NHWC: channels last); w: int8 or uint8
    (K, C/groups, kh, kw); x_scale, y_scale: positive float scalars; w_scale, w_zero_point:
    per tensor or one per output channel; zero points of their tensor's dtype (a Python int is
    checked against the range); bias: int32 (K,) with scale x_scale * w_scale, zero point 0.
    Padding reads x_zero_point.  The result has y_zero_point's dtype (a Python int: x's), or
    out_dtype: int32 gives the raw accumulator with the bias (ONNX ConvInteger), float32 the
    dequantized accumulator (acc * x_scale * w_scale).  activation "relu"/"relu6" clamps in the
    quantized domain (at y_zero_point and quantize(6)).

    >>> x = np.full((1, 1, 3, 3), 130, np.uint8)
    >>> w = np.ones((1, 1, 3, 3), np.int8)
    >>> qconv2d(x, 0.5, 128, w, 0.25, 0, 1.0, 10).ravel()   # 9 * 2 * 0.125 = 2.25 -> 2, + 10
    array([12], dtype=uint8)
    """
    return _qconv(2, x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, bias, stride,
                  padding, dilation, groups, layout, activation, out_dtype, out, num_threads)


def qconv1d(x: Any, x_scale: Any, x_zero_point: Any, w: Any, w_scale: Any, w_zero_point: Any, y_scale: Any,
            y_zero_point: Any, bias: Any = None, *, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
            groups: Any = 1, layout: str = "NCW", activation: Optional[str] = None, out_dtype: Any = None,
            out: Optional[np.ndarray] = None, num_threads: Optional[int] = None) -> np.ndarray:
    """:func:`qconv2d` for one spatial axis: x (N, C, L) / (C, L) ("NWC": channels last), w (K, C/groups, kl).

    >>> qconv1d(np.full((1, 2, 5), 10, np.int8), 1.0, 0, np.ones((1, 2, 3), np.int8), 1.0, 0, 4.0, 0, padding=1)
    array([[[10, 15, 15, 15, 10]]], dtype=int8)
    """
    return _qconv(1, x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, bias, stride,
                  padding, dilation, groups, layout, activation, out_dtype, out, num_threads)


def qconv3d(x: Any, x_scale: Any, x_zero_point: Any, w: Any, w_scale: Any, w_zero_point: Any, y_scale: Any,
            y_zero_point: Any, bias: Any = None, *, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
            groups: Any = 1, layout: str = "NCDHW", activation: Optional[str] = None, out_dtype: Any = None,
            out: Optional[np.ndarray] = None, num_threads: Optional[int] = None) -> np.ndarray:
    """:func:`qconv2d` for three spatial axes: x (N, C, D, H, W) ("NDHWC": channels last), w (K, C/groups, kd, kh, kw).

    >>> x = np.full((1, 1, 2, 2, 2), 3, np.uint8)
    >>> qconv3d(x, 1.0, 1, np.ones((1, 1, 2, 2, 2), np.int8), 1.0, 0, 2.0, 0).ravel()  # 8 * 2 / 2
    array([8], dtype=uint8)
    """
    return _qconv(3, x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, bias, stride,
                  padding, dilation, groups, layout, activation, out_dtype, out, num_threads)


class _QConvNd(_layer.Layer):
    """A quantized convolution layer: parameters validated, zero points folded into centred
    weights and the weights packed once; ``layer(x, out=None, num_threads=None)``.  Its state
    (pickle, copy) is its constructor's arguments; the settings read back read-only."""

    _rank = 2
    _repr_positional = ("in_channels", "out_channels")
    _repr_settings = ("kernel_size", "stride", "padding", "dilation", "groups", "bias", "layout", "activation",
                      "out_dtype")

    def __init__(self, x_scale: Any, x_zero_point: Any, w: Any, w_scale: Any, w_zero_point: Any, y_scale: Any,
                 y_zero_point: Any, bias: Any = None, *, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                 groups: Any = 1, layout: Optional[str] = None, activation: Optional[str] = None,
                 out_dtype: Any = None):
        self._spec = _spec(self._rank, stride, padding, dilation, groups, layout)
        self._weights = _QuantizedWeights(self._spec, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale,
                                          y_zero_point, bias, activation, out_dtype, None)
        # Private copies of the quantization arguments, as the state carries them.
        self._quantization = {name: _frozen(value) for name, value in (
            ("x_scale", x_scale), ("x_zero_point", x_zero_point), ("w", w), ("w_scale", w_scale),
            ("w_zero_point", w_zero_point), ("y_scale", y_scale), ("y_zero_point", y_zero_point), ("bias", bias))}
        self._out_dtype = None if out_dtype is None else np.dtype(out_dtype).name

    def _init_kwargs(self) -> Dict[str, Any]:
        spec = self._spec.kwargs()
        settings = {name: spec[name] for name in ("stride", "padding", "dilation", "groups", "layout")}
        return {**self._quantization, **settings, "activation": self._weights.activation,
                "out_dtype": self._out_dtype}

    def __call__(self, x: Any, out: Optional[np.ndarray] = None, *, num_threads: Optional[int] = None) -> np.ndarray:
        return self._weights.run(x, out, num_threads)

    def _forward(self, x: np.ndarray, num_threads: Optional[int], program: Any) -> np.ndarray:
        """The call of a network's step, recorded into `program` (a NetProgram) where it can be."""
        return self._weights.run(x, None, num_threads, program=program)

    def explain(self, x_shape: Tuple[int, ...], x_dtype: Any = np.uint8) -> Dict[str, Any]:
        """The algorithm, ISA and threads a call on an x of this shape and dtype would use."""
        return self._weights.explain(x_shape, x_dtype)

    @_layer.read_only
    def in_channels(self) -> int:
        return int(self._weights.centred.shape[1] * self._spec.groups)

    @_layer.read_only
    def out_channels(self) -> int:
        return int(self._weights.centred.shape[0])

    @_layer.read_only
    def kernel_size(self) -> Tuple[int, ...]:
        return tuple(int(k) for k in self._weights.centred.shape[-self._rank:])

    @_layer.read_only
    def bias(self) -> Optional[np.ndarray]:
        return self._quantization["bias"]  # type: ignore[no-any-return]

    @_layer.read_only
    def activation(self) -> Optional[str]:
        return self._weights.activation

    @_layer.read_only
    def out_dtype(self) -> Optional[str]:
        return self._out_dtype

    stride = _layer.spec_setting("stride")
    padding = _layer.spec_setting("padding")
    dilation = _layer.spec_setting("dilation")
    groups = _layer.spec_setting("groups")
    layout = _layer.spec_setting("layout")


def _frozen(value: Any) -> Any:
    """A read-only copy of an array argument (NumPy scalars become 0-d arrays, keeping their
    dtype); other values as they are."""
    if isinstance(value, (np.ndarray, np.generic)):
        a = np.array(value)
        a.flags.writeable = False
        return a
    if isinstance(value, float):
        return np.array(value)  # a plain float64 0-d array: the state holds arrays, not floats
    return value


class QConv1d(_QConvNd):
    """:func:`qconv1d` as a layer (arguments as qconv1d's without x).

    >>> QConv1d(1.0, 0, np.ones((3, 2, 3), np.int8), 1.0, 0, 1.0, 0)(np.ones((1, 2, 8), np.uint8)).shape
    (1, 3, 6)
    """

    _rank = 1


class QConv2d(_QConvNd):
    """:func:`qconv2d` as a layer (arguments as qconv2d's without x).

    >>> layer = QConv2d(0.5, 128, np.ones((4, 1, 3, 3), np.int8), 0.25, 0, 1.0, 10, padding=1)
    >>> layer(np.full((1, 1, 5, 5), 130, np.uint8)).shape
    (1, 4, 5, 5)
    """

    _rank = 2


class QConv3d(_QConvNd):
    """:func:`qconv3d` as a layer (arguments as qconv3d's without x).

    >>> QConv3d(1.0, 0, np.ones((4, 2, 3, 3, 3), np.int8), 1.0, 0, 1.0, 0, padding=1)(
    ...     np.ones((1, 2, 4, 5, 6), np.uint8)).shape
    (1, 4, 4, 5, 6)
    """

    _rank = 3


def _axis_parameter(value: np.ndarray, name: str, x: np.ndarray, axis: Any) -> Tuple[np.ndarray, Optional[int]]:
    """A per-tensor or per-axis parameter shaped to broadcast against x."""
    if axis is None:
        if value.size != 1:
            raise ValueError(f"{name} has {value.size} values; per-axis {name} needs axis=")
        return value.reshape(()), None
    a = _args.as_int(axis, "axis")
    if not -x.ndim <= a < x.ndim:
        raise ValueError(f"axis {a} out of range for x of {x.ndim} dimensions")
    a %= x.ndim
    if value.size not in (1, x.shape[a]):
        raise ValueError(f"{name} must have 1 or {x.shape[a]} values (x's axis {a}), got {value.size}")
    shape = [1] * x.ndim
    shape[a] = -1
    return value.reshape(shape), a


def quantize_linear(x: Any, scale: Any, zero_point: Any = None, dtype: Any = None, axis: Any = None) -> np.ndarray:
    """ONNX QuantizeLinear: saturate(round_half_to_even(x / scale) + zero_point).

    dtype: uint8 or int8; None takes a typed zero_point's dtype, else uint8.  scale and
    zero_point per tensor, or per axis with ``axis``.  Computed in float32 (float64 for a
    float64 x).  NaN cannot be quantized (ValueError).

    >>> quantize_linear(np.array([0.5, 1.5, -3.0, 300.0], np.float32), 1.0, 0)
    array([  0,   2,   0, 255], dtype=uint8)
    """
    xa = np.asarray(x)
    if xa.dtype.kind not in "fiu" or xa.dtype.kind == "b":
        raise TypeError(f"x must be a real array, got dtype {xa.dtype}")
    zp_dtype = zero_point.dtype if isinstance(zero_point, (np.ndarray, np.generic)) else None
    if dtype is None:
        out_dtype = zp_dtype if zp_dtype is not None else _U8
        out_dtype = _quantized_dtype(out_dtype, "zero_point")
    else:
        out_dtype = _quantized_dtype(dtype, "dtype")
        if zp_dtype is not None and zp_dtype != out_dtype:
            raise ValueError(f"dtype {out_dtype} differs from zero_point's dtype {zp_dtype}")
    count = None if axis is None else xa.shape[_args.as_int(axis, "axis") % max(xa.ndim, 1)] if xa.ndim else None
    s, a = _axis_parameter(_scales(scale, "scale", count), "scale", xa, axis)
    zp, _ = _axis_parameter(_zero_points(zero_point, "zero_point", out_dtype, count), "zero_point", xa, axis)
    return quantize_values(xa, *_per_index(s, zp), a, out_dtype)


def _per_index(scale: np.ndarray, zero_point: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Validated scale and zero point as float32 and int32 vectors of one common length."""
    s, z = scale.reshape(-1), zero_point.reshape(-1)
    if s.size != z.size:
        n = max(s.size, z.size)
        s, z = np.broadcast_to(s, (n,)), np.broadcast_to(z, (n,))
    return np.ascontiguousarray(s, _F32), np.ascontiguousarray(z, _I32)


def prepared_parameters(scale: Any, zero_point: Any, count: Optional[int]) -> Tuple[np.ndarray, np.ndarray, np.dtype]:
    """A QuantizeLinear/DequantizeLinear's scale and zero point validated once (a network's
    nodes): (float32 scales, int32 zero points, of one length: 1, or `count` per index of the
    axis; the quantized dtype, the zero point's or uint8 where it is absent)."""
    dtype = np.dtype(zero_point.dtype) if isinstance(zero_point, (np.ndarray, np.generic)) else _U8
    s = _scales(scale, "scale", count)
    if dtype == _I32:  # DequantizeLinear of int32 (a bias)
        if np.any(np.asarray(zero_point) != 0):
            raise ValueError("zero_point must be 0 for int32 values (ONNX)")
        z = np.zeros(1, _I32)
    else:
        z = _zero_points(zero_point, "zero_point", _quantized_dtype(dtype, "zero_point"), count)
    return (*_per_index(s, z), dtype)


def quantize_values(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: Optional[int],
                    out_dtype: np.dtype, num_threads: int = 0, program: Any = None) -> np.ndarray:
    """QuantizeLinear of a real array x with validated parameters: float32 scales and int32 zero
    points of one length (1, or one per index of x's `axis`).  The native pass, in float64 for a
    float64 x and float32 otherwise, on at most num_threads threads (0: cppconv's setting); NaN
    cannot be quantized (ValueError).  program: a NetProgram that records the pass, where it
    reads x itself (not a converted copy)."""
    given = x
    x = np.ascontiguousarray(x, np.float64 if x.dtype == np.float64 else _F32)
    y = np.empty(x.shape, out_dtype)
    lo, hi = _RANGES[np.dtype(out_dtype)]
    _native.quantize_linear(x, scale, zero_point, y, *_args.axis_rows(x.shape, axis, scale.size), lo, hi,
                            refuse_nan=True, num_threads=num_threads, program=program if x is given else None)
    return y


def dequantize_values(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: Optional[int],
                      num_threads: int = 0, program: Any = None) -> np.ndarray:
    """DequantizeLinear of a C-contiguous uint8, int8 or int32 x with validated parameters (as
    quantize_values'); program likewise."""
    y = np.empty(x.shape, _F32)
    _native.dequantize_linear(x, scale, zero_point, y, *_args.axis_rows(x.shape, axis, scale.size), num_threads,
                              program)
    return y


def dequantize_linear(x: Any, scale: Any, zero_point: Any = None, axis: Any = None) -> np.ndarray:
    """ONNX DequantizeLinear: (x - zero_point) * scale in float32, for uint8, int8 or int32 x.

    >>> dequantize_linear(np.array([0, 128, 255], np.uint8), 0.5, np.uint8(128))
    array([-64. ,   0. ,  63.5], dtype=float32)
    """
    xa = np.asarray(x)
    if xa.dtype not in (_U8, _I8, _I32):
        raise TypeError(f"x must be a uint8, int8 or int32 array, got dtype {xa.dtype}")
    count = None if axis is None else xa.shape[_args.as_int(axis, "axis") % max(xa.ndim, 1)] if xa.ndim else None
    s, a = _axis_parameter(_scales(scale, "scale", count), "scale", xa, axis)
    if xa.dtype == _I32:
        if zero_point is not None and np.any(np.asarray(zero_point) != 0):
            raise ValueError("zero_point must be 0 for int32 x (ONNX)")
        zp = np.zeros(1, _I32)
    else:
        zp, _ = _axis_parameter(_zero_points(zero_point, "zero_point", xa.dtype, count), "zero_point", xa, axis)
    return dequantize_values(np.ascontiguousarray(xa), *_per_index(s, zp), a)
