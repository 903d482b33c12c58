"""Argument normalisation and validation shared by every cppconv operator.

Each public function turns what the user passed into plain ints, codes and C-contiguous
arrays of the compute dtype here, then makes one native call.  Errors name the argument
and the numbers involved.
"""

from __future__ import annotations

import operator
import sys
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union, overload

import numpy as np

from . import _buffers, _native

IntPair = Union[int, Tuple[int, int]]

# The native enums' names and codes (bindings/native.cpp): layouts by spatial rank (TensorFlow's
# names; code 0 is channels-first, 1 channels-last), padding modes, activations (None: none).
RANK_LAYOUTS: Dict[int, Dict[str, int]] = _native.LAYOUTS
LAYOUTS = RANK_LAYOUTS[2]
# "constant" (with a padding_value) has no native code: a value of 0 is the native zero padding,
# any other is padded into a copy of the input before the native call (constant_padded), so
# every kernel and lowering computes it exactly as it computes an unpadded problem.
CONSTANT_PADDING: int = max(_native.PADDING_MODES.values()) + 1
PADDING_MODES: Dict[str, int] = {**_native.PADDING_MODES, "constant": CONSTANT_PADDING}
ACTIVATIONS: Dict[Optional[str], int] = _native.ACTIVATIONS
# The spatial axes' letters by rank, for shapes in messages.
SPATIAL_AXES = {1: "L", 2: "HW", 3: "DHW"}

# Padded sizes must stay below this (cpp/conv_problem.h, kMaxIndexExtent): sums of three such
# values still fit the native core's int64 arithmetic.
MAX_INDEX_EXTENT: int = _native.MAX_INDEX_EXTENT

_F16 = np.dtype(np.float16)
_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)


def as_int(value: Any, name: str) -> int:
    """An integer argument (Python or NumPy int, not bool or float)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}") from None
    # The native core computes in int64; a wider value is a wrong value, not a wrong type.
    if not -(2**63) <= number < 2**63:
        raise ValueError(f"{name} must fit in a signed 64-bit integer, got {number}")
    return number


def ntuple(value: Any, name: str, rank: int, minimum: Optional[int] = None) -> Tuple[int, ...]:
    """An int or a sequence of `rank` ints, one per spatial axis, each at least `minimum`."""
    if isinstance(value, (tuple, list)):
        if len(value) != rank:
            axes = ", ".join(SPATIAL_AXES[rank].lower()) if rank > 1 else "l"
            raise ValueError(f"{name} must be an int or {rank} ints ({axes}), got {value!r}")
        values = tuple(as_int(v, name) for v in value)
    else:
        values = (as_int(value, name),) * rank
    if minimum is not None and min(values) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return values


def explicit_padding_nd(padding: Any, rank: int, name: str = "padding") -> Optional[Tuple[int, ...]]:
    """(before_0, after_0, before_1, after_1, ...) for an int, `rank` ints, `rank` (before, after)
    pairs or "valid"; None for "same"."""
    if isinstance(padding, str):
        if padding.lower() == "valid":
            return (0,) * (2 * rank)
        if padding.lower() == "same":
            return None
        raise ValueError(f"{name} must be an int, {rank} ints, {rank} (before, after) pairs, 'valid' or 'same', "
                         f"got {padding!r}")
    if isinstance(padding, (tuple, list)) and len(padding) == rank and \
            all(isinstance(p, (tuple, list)) for p in padding):
        pads = tuple(v for p in padding for v in pair(p, name))
    else:
        pads = tuple(v for p in ntuple(padding, name, rank) for v in (p, p))
    if min(pads) < 0:
        raise ValueError(f"{name} must be non-negative, got {padding!r}")
    return pads


def padding_argument_nd(padding: Optional[Tuple[int, ...]]) -> Any:
    """The shortest padding argument that explicit_padding_nd turns into `padding`."""
    if padding is None:
        return "same"
    pairs = tuple(zip(padding[0::2], padding[1::2]))
    if all(b == a for b, a in pairs):
        return tuple(b for b, _ in pairs)
    return pairs


def batched_shape_words(rank: int, layout: int) -> str:
    """The batched and unbatched shapes an input of `rank` spatial axes takes, in words."""
    axes = ", ".join(SPATIAL_AXES[rank])
    return f"(N, {axes}, C) or ({axes}, C)" if layout == 1 else f"(N, C, {axes}) or (C, {axes})"


def batched(x: np.ndarray, rank: int, layout: int, function: str, name: str = "x") -> np.ndarray:
    """x with its batch axis (rank + 2 dimensions): as is, or an unbatched x with one added.
    A wrong number of dimensions names the function that fits (function is e.g. "conv{}d")."""
    if x.ndim == rank + 2:
        return x
    if x.ndim == rank + 1:
        return x[None]
    fits = sorted({r for r in (x.ndim - 2, x.ndim - 1) if r in SPATIAL_AXES and r != rank})
    hint = ""
    if fits:
        uses = " or ".join(f"{function.format(r)} ({'batched' if r == x.ndim - 2 else 'unbatched'})" for r in fits)
        hint = f": use {uses}"
    raise ValueError(
        f"{function.format(rank)} takes x of shape {batched_shape_words(rank, layout)}; x is {x.ndim}-D with shape "
        f"{x.shape}{hint}"
    )


def pair(value: Any, name: str, minimum: Optional[int] = None) -> Tuple[int, int]:
    """An int or a pair of ints as (h, w), each at least `minimum`."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair (h, w), got {value!r}")
        h, w = as_int(value[0], name), as_int(value[1], name)
    else:
        h = w = as_int(value, name)
    if minimum is not None and (h < minimum or w < minimum):
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return h, w


# The words of every string option match in any case ("nhwc", "SAME", "ReLU", "HIGH"); the
# tables and a layer's attributes keep one canonical spelling.  The conv2d and pool fast
# paths look up the canonical words only and leave other spellings to these functions.
def layout_code(layout: Any, rank: int = 2) -> int:
    names = RANK_LAYOUTS[rank]
    code = names.get(layout.upper()) if isinstance(layout, str) else None
    if code is None:
        first, last = names
        raise ValueError(f"layout must be {first!r} or {last!r}, got {layout!r}")
    return code


def padding_mode_code(mode: Any) -> int:
    code = PADDING_MODES.get(mode.lower()) if isinstance(mode, str) else None
    if code is None:
        raise ValueError(f"padding_mode must be one of {sorted(PADDING_MODES)}, got {mode!r}")
    return code


def real_number(value: Any, name: str) -> float:
    """A real-number argument (Python or NumPy int or float, not bool) as a float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    return float(value)


def padding_value(value: Any, mode: int) -> float:
    """padding_mode="constant"'s value as a float (any real number, NaN and Inf included); the
    other modes read the input and take none (0)."""
    number = real_number(value, "padding_value")
    if number != 0 and mode != CONSTANT_PADDING:
        raise ValueError(f"padding_value={value!r} needs padding_mode='constant', got padding_mode="
                         f"{code_word(PADDING_MODES, mode)!r}")
    return number


def spatial_pad_width(pads: Sequence[int], layout: int) -> List[Tuple[int, int]]:
    """np.pad's pad_width for an input with batch and channel axes in `layout` and flattened
    (before, after) `pads` per spatial axis."""
    spatial = list(zip(pads[0::2], pads[1::2]))
    return [(0, 0)] + spatial + [(0, 0)] if layout == 1 else [(0, 0), (0, 0)] + spatial


def constant_padded(x: np.ndarray, pads: Sequence[int], layout: int, value: float) -> np.ndarray:
    """x (batch and channel axes in `layout`) with `pads` of `value` around its spatial axes."""
    return np.pad(x, spatial_pad_width(pads, layout), mode="constant", constant_values=value)


# leaky_relu's slope below zero when the activation is named alone: PyTorch's and ONNX's default
# (kDefaultNegativeSlope in cpp/conv_problem.h).
DEFAULT_NEGATIVE_SLOPE: float = _native.DEFAULT_NEGATIVE_SLOPE


def activation_code(activation: Any) -> int:
    if activation is None:
        return ACTIVATIONS[None]
    code = ACTIVATIONS.get(activation.lower()) if isinstance(activation, str) else None
    if code is None:
        names = [a for a in ACTIVATIONS if a is not None]
        raise ValueError(f"activation must be None, one of {names} or ('leaky_relu', negative_slope), "
                         f"got {activation!r}")
    return code


def activation_spec(activation: Any) -> Tuple[int, float]:
    """An activation argument's native code and leaky_relu's negative slope.  The one convention
    for an activation with a parameter: a (name, parameter) pair, ``("leaky_relu", 0.2)``
    (PyTorch's negative_slope); the name alone takes the default (0.01)."""
    if isinstance(activation, (tuple, list)) and len(activation) == 2 and isinstance(activation[0], str):
        name, parameter = activation
        code = activation_code(name)
        if code != ACTIVATIONS["leaky_relu"]:
            raise ValueError(f"activation {tuple(activation)!r}: only 'leaky_relu' takes a parameter, as "
                             f"('leaky_relu', negative_slope); {name!r} is named alone")
        slope = real_number(parameter, "leaky_relu's negative_slope")
        if not np.isfinite(slope):
            raise ValueError(f"leaky_relu's negative_slope must be finite, got {parameter!r}")
        return code, slope
    return activation_code(activation), DEFAULT_NEGATIVE_SLOPE


def activation_argument(code: int, negative_slope: float) -> Any:
    """The activation argument activation_spec turns into (code, negative_slope): the name, or
    ("leaky_relu", slope) for a slope other than the default."""
    name = code_word(ACTIVATIONS, code)
    if code == ACTIVATIONS["leaky_relu"] and negative_slope != DEFAULT_NEGATIVE_SLOPE:
        return (name, negative_slope)
    return name


def precision_code(precision: Any, name: str = "precision", allow_none: bool = True) -> int:
    """A float32 precision mode's native code (_native.PRECISIONS); None (where allowed) gives
    -1, which means the process-wide setting (cppconv.set_float32_precision)."""
    if precision is None and allow_none:
        return -1
    code = _native.PRECISIONS.get(precision.lower()) if isinstance(precision, str) else None
    if code is None:
        names = " or ".join(repr(n) for n in _native.PRECISIONS)
        raise ValueError(f"{name} must be {'None, ' if allow_none else ''}{names}, got {precision!r}")
    return int(code)


def code_word(table: Dict[Any, int], code: int) -> Any:
    """The word a code stands for (the inverse of layout_code, padding_mode_code and
    activation_code): a layer's constructor arguments, for pickling."""
    return next(word for word, c in table.items() if c == code)


def thread_count(value: Any, name: str = "num_threads") -> int:
    """A thread count for the native kernels, 1 to _native.MAX_THREADS; None gives 0, which
    means the process-wide setting."""
    if value is None:
        return 0
    n = as_int(value, name)
    if not 1 <= n <= _native.MAX_THREADS:
        raise ValueError(f"{name} must be between 1 and {_native.MAX_THREADS}, got {n}")
    return n


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> Tuple[int, int]:
    """(before, after) padding for output size ceil(size / stride), the odd pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def explicit_padding(padding: Any, name: str = "padding") -> Optional[Tuple[int, int, int, int]]:
    """(top, bottom, left, right) for int / (ph, pw) / ((t, b), (l, r)) / "valid"; None for "same"."""
    if isinstance(padding, str):
        if padding.lower() == "valid":
            return (0, 0, 0, 0)
        if padding.lower() == "same":
            return None
        raise ValueError(
            f"{name} must be an int, a pair, ((top, bottom), (left, right)), 'valid' or 'same', got {padding!r}"
        )
    if isinstance(padding, (tuple, list)) and len(padding) == 2 and all(isinstance(p, (tuple, list)) for p in padding):
        (top, bottom), (left, right) = pair(padding[0], name), pair(padding[1], name)
    else:
        (top, left) = pair(padding, name)
        bottom, right = top, left
    if min(top, bottom, left, right) < 0:
        raise ValueError(f"{name} must be non-negative, got {padding!r}")
    return top, bottom, left, right


def padding_argument(padding: Optional[Tuple[int, int, int, int]]) -> Any:
    """A padding argument that explicit_padding turns into `padding` (its inverse), in its
    shortest form: "same", (ph, pw), or ((top, bottom), (left, right))."""
    if padding is None:
        return "same"
    top, bottom, left, right = padding
    return (top, left) if top == bottom and left == right else ((top, bottom), (left, right))


def resolve_padding(
    padding: Optional[Tuple[int, int, int, int]],
    in_hw: Tuple[int, int],
    kernel_hw: Tuple[int, int],
    stride: Tuple[int, int],
    dilation: Tuple[int, int],
) -> Tuple[int, int, int, int]:
    if padding is not None:
        return padding
    top, bottom = same_padding(in_hw[0], kernel_hw[0], stride[0], dilation[0])
    left, right = same_padding(in_hw[1], kernel_hw[1], stride[1], dilation[1])
    return top, bottom, left, right


def is_bfloat16(dtype: np.dtype) -> bool:
    """Whether dtype is ml_dtypes' bfloat16 (kind "V" to NumPy), known by name so that cppconv
    never imports ml_dtypes.  (By its scalar type's name: dtype.name of a user-defined dtype is
    built in Python on every access, and a bfloat16 call asked a dozen times.)"""
    return dtype.kind == "V" and dtype.type.__name__ == "bfloat16"


def _known_bfloat16() -> Optional[np.dtype]:
    """The bfloat16 dtype when something in this process registered it (ml_dtypes, JAX, ...)."""
    try:
        return np.dtype("bfloat16")
    except TypeError:
        module = sys.modules.get("ml_dtypes")
        return None if module is None else np.dtype(module.bfloat16)


def operand_dtype(array: np.ndarray, name: str) -> np.dtype:
    """An operand's dtype in native byte order: float (bfloat16 included), integer or bool."""
    dtype = array.dtype
    if dtype.kind in "fiub":
        return dtype.newbyteorder("=")
    if is_bfloat16(dtype):
        return dtype
    raise TypeError(f"{name} has unsupported dtype {dtype}; cppconv takes float (bfloat16 included), integer or "
                    f"bool arrays")


def result_dtype(dtypes: Sequence[np.dtype]) -> np.dtype:
    """numpy.result_type of operands, with bfloat16 ranked as float16 is (a bfloat16 with
    float16 gives float32, as ml_dtypes promotes) and float64 where NumPy's answer is an
    integer or bool dtype, which the kernels cannot compute in."""
    result = np.result_type(*(_F16 if is_bfloat16(d) else d for d in dtypes))
    if result.kind != "f":
        return _F64
    bfloat16 = next((d for d in dtypes if is_bfloat16(d)), None)
    if result == _F16 and bfloat16 is not None:
        return _F32 if any(d == _F16 for d in dtypes) else bfloat16
    return result


_DTYPE_CHOICES = "None, float32, float64, float16 or bfloat16"


def requested_dtype(dtype: Any, name: str = "dtype") -> Optional[np.dtype]:
    """A dtype= argument: None, or the float dtype a call computes as if its operands had it."""
    if dtype is None:
        return None
    if isinstance(dtype, str) and dtype.lower() == "bfloat16":
        known = _known_bfloat16()
        if known is None:
            raise ValueError(f"{name}='bfloat16' needs NumPy's bfloat16 dtype, which ml_dtypes registers: "
                             f"`import ml_dtypes` first (pip install ml_dtypes), or pass {name}=ml_dtypes.bfloat16")
        return known
    try:
        wanted: np.dtype[Any] = np.dtype(dtype)
    except TypeError:
        error = ValueError if isinstance(dtype, str) else TypeError
        raise error(f"{name} must be {_DTYPE_CHOICES}, got {dtype!r}") from None
    if is_bfloat16(wanted):
        return wanted
    if wanted.kind == "f" and wanted.itemsize in (2, 4, 8):
        return wanted.newbyteorder("=")
    raise ValueError(f"{name} must be {_DTYPE_CHOICES}, got {dtype!r} ({wanted}): cppconv computes in float32 "
                     f"or float64")


def compute_dtype(result: np.dtype) -> np.dtype:
    """The dtype the kernels run in for a given result dtype: float32 for float32, float16 and
    bfloat16 (accumulating in float32), float64 for float64."""
    if result == _F32 or result == _F16 or is_bfloat16(result):
        return _F32
    return _F64


COMPUTE_DTYPES = (None, "float32", "bfloat16")


def layer_rounding(compute_dtype: Any) -> Optional[str]:
    """A float layer's compute_dtype= as call_dtypes' `rounding`: None or "float32" compute as
    the operands come (None), "bfloat16" rounds weights once and activations at each call."""
    if compute_dtype is not None and not isinstance(compute_dtype, str):
        try:
            compute_dtype = np.dtype(compute_dtype).name
        except TypeError:
            pass
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype must be None, 'float32' or 'bfloat16', got {compute_dtype!r}")
    return "bfloat16" if compute_dtype == "bfloat16" else None


class CallDtypes(NamedTuple):
    """The dtypes of one call (see call_dtypes)."""

    result: np.dtype  # what the user gets
    compute: np.dtype  # what the kernels read and write: float32 or float64
    rounding: Optional[str]  # "float16" or "bfloat16": x and the weight are first rounded to it


def call_dtypes(x: np.ndarray, weight: Optional[np.ndarray], bias: Optional[np.ndarray], dtype: Any = None,
                rounding: Optional[str] = None, keeps_integers: bool = False) -> CallDtypes:
    """The one place that decides a call's dtypes from its operands and dtype=.

    Without dtype=: NumPy's result type of x and the weight (uint8 with float32 is float32;
    integers and bools alone give float64, see result_dtype), then with the bias, except that a
    float32 or float16 bias leaves a bfloat16 result bfloat16.  dtype=d computes as if x and the
    weight were first cast to d (float16 and bfloat16 operands rounded to it, accumulating in
    float32) and returns d.  `rounding` (a layer's compute_dtype="bfloat16") rounds the operands
    whatever the result.  weight None is a pooling call; `keeps_integers` (max pooling) keeps
    an integer or bool x's dtype, computed in float32 for integers of 1 and 2 bytes (every one
    exact) and in float64 for wider ones (exact within 2^53, which the pools check for 8-byte
    ones).
    """
    requested = requested_dtype(dtype)
    operands = [operand_dtype(x, "x")] + ([] if weight is None else [operand_dtype(weight, "weight")])
    bias_dtype = None if bias is None else operand_dtype(bias, "bias")
    if requested is not None:
        result = requested
    elif keeps_integers and operands[0].kind in "iub":
        result = operands[0]
    else:
        result = result_dtype(operands)
        if bias_dtype is not None and not (is_bfloat16(result) and bias_dtype.kind == "f" and bias_dtype.itemsize <= 4):
            result = result_dtype([result, bias_dtype])
    if rounding is None and requested is not None and compute_dtype(requested) != requested:
        rounding = requested.name
    compute = _F32 if rounding is not None else compute_dtype(result)
    if keeps_integers and result == operands[0] and result.kind in "iub" and result.itemsize <= 2:
        compute = _F32
    return CallDtypes(result, compute, rounding)


def as_rounded(array: np.ndarray, compute: np.dtype, rounding: Optional[str]) -> np.ndarray:
    """An operand in the compute dtype (see as_compute), its values first rounded to `rounding`
    ("float16" or "bfloat16", which needs no ml_dtypes; None: as they are).  An operand
    already of that dtype is exact in float32 and only widened."""
    if rounding is None or array.dtype.name == rounding:
        return as_compute(array, compute)
    if rounding == "bfloat16":
        wide = np.ascontiguousarray(array, dtype=_F32)
        rounded = np.empty(wide.shape, _F32)
        _native.round_to_bf16(wide, rounded)
        return rounded if compute == _F32 else rounded.astype(compute)
    return np.ascontiguousarray(np.asarray(array, dtype=rounding), dtype=compute)


def bfloat16_arithmetic(x_dtype: np.dtype, weight_dtype: np.dtype, dtypes: CallDtypes) -> bool:
    """Whether a call's operands hold bfloat16 values whose products are summed in float32, the
    arithmetic of the native bfloat16 plans: bfloat16 x and weight, or operands rounded to
    bfloat16 (dtype="bfloat16", a layer's compute_dtype="bfloat16")."""
    if dtypes.compute != _F32:
        return False
    return dtypes.rounding == "bfloat16" or (
        dtypes.rounding is None and is_bfloat16(x_dtype) and is_bfloat16(weight_dtype))


def bfloat16_bits(array: np.ndarray) -> np.ndarray:
    """An operand as C-contiguous bfloat16 bits (uint16, as the native bfloat16 plans take it):
    a bfloat16 array's own, any other rounded to nearest even in one native pass."""
    if is_bfloat16(array.dtype):
        return np.ascontiguousarray(array).view(np.uint16)
    wide = np.ascontiguousarray(array, dtype=_F32)
    bits = np.empty(wide.shape, np.uint16)
    _native.float32_to_bf16(wide, bits)
    return bits


def as_bfloat16(array: np.ndarray, bfloat16: np.dtype, out: Optional[np.ndarray] = None) -> np.ndarray:
    """A float array rounded to bfloat16 (round to nearest even, NaN kept) in one native pass,
    into `out` (a C-contiguous bfloat16 array of its size) when given, else a new array."""
    wide = np.ascontiguousarray(array, dtype=_F32)
    narrow = np.empty(wide.shape, bfloat16) if out is None else out
    _native.float32_to_bf16(wide, narrow.view(np.uint16))
    return narrow


def as_input_array(value: Any, name: str) -> np.ndarray:
    """A NumPy view of an array argument, without a copy whenever NumPy can make one.

    ndarrays pass through; objects with ``__dlpack__`` (PyTorch CPU tensors, JAX CPU arrays)
    go through ``np.from_dlpack``; everything else (buffer protocol, ``__array_interface__``,
    ``__array__``, nested lists) through ``np.asarray``, which copies only when it must.
    A torch tensor that requires grad raises TypeError; one with a lazy negation or
    conjugation bit is resolved first (a copy).
    """
    if isinstance(value, np.ndarray):
        return value
    if any(cls.__module__.partition(".")[0] == "torch" for cls in type(value).__mro__):
        value = _readable_tensor(value, name)
    array: Optional[np.ndarray] = None
    if hasattr(value, "__dlpack__"):
        try:
            array = np.from_dlpack(value)
        except (TypeError, ValueError, BufferError, RuntimeError, AttributeError):
            # Not on the CPU, a dtype DLPack cannot share (bool in old NumPy), or a read-only
            # tensor that refuses export: np.asarray below may still manage, with a copy.
            array = None
    if array is None:
        try:
            array = np.asarray(value)
        except RuntimeError as e:  # a foreign __array__'s refusal: a wrong kind of value for cppconv
            raise TypeError(f"{name}: NumPy cannot read this {type(value).__name__}: {e}") from None
    if array.dtype == object:
        raise TypeError(f"{name} must be a numeric array, got {type(value).__name__}")
    return array


def _readable_tensor(value: Any, name: str) -> Any:
    """A PyTorch tensor as NumPy can read it (torch itself is never imported).  One that
    requires grad is refused (cppconv computes no gradients; torch refuses the export too);
    the lazy negation and conjugation bits (``z.conj().imag``) are materialised, since DLPack
    shares the raw storage without them and NumPy would read -x as x."""
    if getattr(value, "requires_grad", False):
        raise TypeError(
            f"{name} is a torch tensor that requires grad (cppconv computes no gradients): pass {name}.detach()"
        )
    for bit, resolve in (("is_neg", "resolve_neg"), ("is_conj", "resolve_conj")):
        test = getattr(value, bit, None)
        if callable(test) and test():
            value = getattr(value, resolve)()
    return value


def operand_arrays(x: Any, weight: Any, bias: Any) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """A convolution's x, weight and bias (or None) as arrays, without copying arrays."""
    return (
        as_input_array(x, "x"),
        as_input_array(weight, "weight"),
        None if bias is None else as_input_array(bias, "bias"),
    )


def as_compute(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The array itself when the kernel can read it in place; otherwise one explicit copy."""
    if array.dtype == dtype and array.flags.c_contiguous:
        return array
    if is_bfloat16(array.dtype):  # widened exactly in one native pass (ml_dtypes' cast is scalar)
        wide = np.empty(array.shape, _F32)
        _native.bf16_to_float32(np.ascontiguousarray(array).view(np.uint16), wide)
        return wide if dtype == _F32 else wide.astype(dtype)
    return np.ascontiguousarray(array, dtype=dtype)


def overlaps(out: np.ndarray, arrays: Sequence[Optional[np.ndarray]]) -> bool:
    return any(a is not None and np.may_share_memory(out, a) for a in arrays)


def check_padded_size(padded_hw: Tuple[int, ...]) -> None:
    if max(padded_hw) >= MAX_INDEX_EXTENT:
        raise ValueError(
            f"the padded input size {tuple(padded_hw)} does not fit cppconv's 64-bit index arithmetic "
            f"(at most 2^61 - 1 per axis)"
        )


def check_result_size(shape: Tuple[int, ...], dtype: np.dtype) -> None:
    """Refuses a result that cannot exist, naming its shape and bytes: ValueError when the byte
    count does not fit 64-bit indexing (NumPy's error for that names neither), MemoryError when
    it exceeds physical memory (Linux would hand out the pages and the OOM killer end the
    process once the kernel writes them; the native core applies the same limit to workspace)."""
    elements = 1
    for s in shape:
        elements *= s
    nbytes = elements * dtype.itemsize
    if nbytes >= 2**63:
        raise ValueError(f"the result of shape {tuple(shape)} and dtype {dtype} does not fit in 64-bit indexing")
    if nbytes > _native.physical_memory_bytes():
        raise MemoryError(
            f"cppconv: the result of shape {tuple(shape)} and dtype {dtype} needs {nbytes} bytes, "
            f"more than this machine's {_native.physical_memory_bytes()} bytes of memory"
        )


def check_out(out: Any, shape: Tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != dtype:
        if out.dtype.newbyteorder("=") == dtype:
            raise TypeError(
                f"out has dtype {out.dtype.str}, {dtype} in non-native byte order; cppconv writes {dtype} in the "
                f"machine's byte order ({dtype.str})"
            )
        raise TypeError(f"out has dtype {out.dtype}, the result needs {dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"out has shape {out.shape}, the result has shape {tuple(shape)}")
    if not out.flags.writeable:
        raise ValueError("out must be writable, got a read-only array")
    return out


def image_4d(x: np.ndarray, layout: int, name: str = "x") -> np.ndarray:
    """The 4-D (batched) view of an image tensor: 4-D as is, 3-D unbatched, 2-D one channel.

    ``layout`` is a layout code; a 2-D ``(H, W)`` becomes ``(1, 1, H, W)`` or ``(1, H, W, 1)``.
    """
    nhwc = layout == LAYOUTS["NHWC"]
    if x.ndim == 4:
        return x
    if x.ndim == 3:
        return x[None]
    if x.ndim == 2:
        return x[None, :, :, None] if nhwc else x[None, None]
    want = "(N, H, W, C), (H, W, C)" if nhwc else "(N, C, H, W), (C, H, W)"
    raise ValueError(f"{name} must be {want} or a 2-D image (H, W), got shape {x.shape}")


def image_shape(shape4: Tuple[int, int, int, int], ndim: int, layout: int) -> Tuple[int, ...]:
    """The result shape for an input of `ndim` dimensions whose 4-D result has shape4 (see image_4d)."""
    if ndim == 4:
        return tuple(shape4)
    if ndim == 3:
        return tuple(shape4[1:])
    return (shape4[1], shape4[2]) if layout == LAYOUTS["NHWC"] else (shape4[2], shape4[3])


def prepared_plan(
    plan_class: Any, plans: Optional[Dict[Any, Any]], compute: np.dtype, weight4: np.ndarray,
    bias: Optional[np.ndarray], rounding: Optional[str] = None,
) -> Any:
    """The native plan that holds the weights in the compute dtype, rounded to `rounding`
    first where given (see call_dtypes; the bias is added in the compute dtype, unrounded).

    A layer (`plans` is its cache) keeps its plan, made on first use for each compute dtype
    (or rounding), borrowing the layer's immutable arrays or the converted ones it made; a
    one-shot call (`plans` None) gets a plan that borrows the arrays for the call.
    """
    key = compute if rounding is None else rounding
    plan = None if plans is None else plans.get(key)
    if plan is None:
        w = as_rounded(weight4, compute, rounding)
        b = None if bias is None else as_compute(bias, compute)
        plan = plan_class(w, b, copy=False, reused=plans is not None)
        if plans is not None:
            plans[key] = plan
    return plan


# A layer's cache key of its native bfloat16 plan (bfloat16_arithmetic); the float32 plans are
# keyed by dtype or by rounding.
BFLOAT16_PLAN = "bfloat16 plan"


def prepared_bfloat16_plan(plan_class: Any, plans: Optional[Dict[Any, Any]], weight4: np.ndarray,
                           bias: Optional[np.ndarray]) -> Any:
    """prepared_plan's counterpart for bfloat16 arithmetic: the weights as bfloat16 bits, the
    bias in float32."""
    plan = None if plans is None else plans.get(BFLOAT16_PLAN)
    if plan is None:
        b = None if bias is None else as_compute(bias, _F32)
        plan = plan_class(bfloat16_bits(weight4), b, copy=False, reused=plans is not None, bfloat16=True)
        if plans is not None:
            plans[BFLOAT16_PLAN] = plan
    return plan


def output_buffer(
    out: Optional[np.ndarray],
    shape4: Tuple[int, ...],
    result: np.dtype,
    compute: np.dtype,
    inputs: Sequence[Optional[np.ndarray]],
) -> Tuple[np.ndarray, bool]:
    """Where a kernel writes: out itself (as 4-D) when it can take the result directly, else a new array.

    Returns (buffer, direct).  out must already have passed check_out.
    """
    if out is not None and result == compute and out.flags.c_contiguous and not overlaps(out, inputs):
        return out.reshape(shape4), True
    return _buffers.OUTPUTS.empty(shape4, compute), False


def layer_operands(
    weight: Any, bias: Any, weight_axes: str, rank: int = 2
) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """A layer's weight and bias as arrays, with the checks that need no input: supported dtypes,
    and a weight of rank + 2 dimensions (whose axes `weight_axes` names, e.g.
    "(K, C/groups, kh, kw)"), or for rank 2 also a 2-D kernel."""
    weight = as_input_array(weight, "weight")
    bias = None if bias is None else as_input_array(bias, "bias")
    operand_dtype(weight, "weight")  # rejects unsupported dtypes now, naming the argument
    if bias is not None:
        operand_dtype(bias, "bias")
    if weight.ndim != rank + 2 and not (rank == 2 and weight.ndim == 2):
        image = " or a 2-D kernel" if rank == 2 else ""
        raise ValueError(f"weight must be {rank + 2}-D {weight_axes}{image}, got shape {weight.shape}")
    return weight, bias


def check_layer_bias(bias: Optional[np.ndarray], out_channels: int) -> None:
    if bias is not None and (bias.ndim != 1 or bias.shape[0] != out_channels):
        raise ValueError(f"bias must have shape ({out_channels},) for {out_channels} output channels, got {bias.shape}")


@overload
def frozen_copy(array: np.ndarray) -> np.ndarray: ...
@overload
def frozen_copy(array: None) -> None: ...
def frozen_copy(array: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """A private, immutable snapshot: later changes to the caller's array do not reach a layer,
    and its memory is an immutable bytes object, so no one can make it writable again
    (``setflags(write=True)`` raises): a layer's native plans borrow it instead of copying."""
    if array is None:
        return None
    return np.frombuffer(np.ascontiguousarray(array).tobytes(), array.dtype).reshape(array.shape)


def stand_in(shape: Tuple[int, ...], dtype: Any) -> np.ndarray:
    """A read-only array of `shape` and `dtype` that holds no bytes (zero strides): what carries
    an operand's shape and dtype through the checks of a call that will not read its values."""
    array = np.lib.stride_tricks.as_strided(np.zeros(1, dtype), shape, (0,) * len(shape))
    array.flags.writeable = False
    return array


class PreparedCall(NamedTuple):
    """What a convolution-like call has ready for its one native call (see prepare_call)."""

    geometry: Any  # the operation's geometry: x4, w4, out_shape4, out_shape, ...
    plan: Any  # the native plan holding the weights in the compute dtype
    x: np.ndarray  # x4 in the compute dtype
    dst: np.ndarray  # where the kernel writes (see output_buffer)
    direct: bool
    result: np.dtype


def prepare_call(
    x: Any, weight: Any, bias: Any, out: Any, geometry: Callable[[np.ndarray, np.ndarray, Optional[np.ndarray]], Any],
    plan_class: Any, plans: Optional[Dict[Any, Any]], dtype: Any = None, rounding: Optional[str] = None,
    bfloat16_plans: bool = False,
) -> PreparedCall:
    """The steps conv2d and conv_transpose2d take before their native call: operands as arrays,
    the result and compute dtypes (call_dtypes, from dtype= and a layer's `rounding`), the
    geometry (a callable of x, weight and bias), the result size and `out` checked, the plan,
    and the output buffer.  Finish with deliver().

    `bfloat16_plans`: plan_class has native bfloat16 plans (bfloat16=True), which bfloat16
    arithmetic then uses: x as bfloat16 bits or float32, the result written as bfloat16 bits
    where it is bfloat16, else float32 (the plan widens to float32 itself where no bfloat16
    kernel takes the problem)."""
    x, weight, bias = operand_arrays(x, weight, bias)
    dtypes = call_dtypes(x, weight, bias, dtype, rounding)
    geo = geometry(x, weight, bias)
    check_result_size(geo.out_shape, dtypes.result)
    if out is not None:
        check_out(out, geo.out_shape, dtypes.result)
    if bfloat16_plans and bfloat16_arithmetic(x.dtype, weight.dtype, dtypes):
        plan = prepared_bfloat16_plan(plan_class, plans, geo.w4, bias)
        store = dtypes.result if is_bfloat16(dtypes.result) else _F32
        dst, direct = output_buffer(out, geo.out_shape4, dtypes.result, store, (x, weight, bias))
        x4 = bfloat16_bits(geo.x4) if is_bfloat16(geo.x4.dtype) else as_compute(geo.x4, _F32)
        return PreparedCall(geo, plan, x4, dst, direct, dtypes.result)
    plan = prepared_plan(plan_class, plans, dtypes.compute, geo.w4, bias, dtypes.rounding)
    dst, direct = output_buffer(out, geo.out_shape4, dtypes.result, dtypes.compute, (x, weight, bias))
    return PreparedCall(geo, plan, as_rounded(geo.x4, dtypes.compute, dtypes.rounding), dst, direct, dtypes.result)


def deliver(
    out: Optional[np.ndarray], buffer: np.ndarray, direct: bool, shape: Tuple[int, ...], result: np.dtype
) -> np.ndarray:
    """The user's result from the kernel's buffer (see output_buffer): out, or a new array of `result`."""
    if direct:
        return out  # type: ignore[return-value]
    y = buffer.reshape(shape)
    if is_bfloat16(result) and not is_bfloat16(y.dtype):
        if out is not None and out.flags.c_contiguous:  # buffer is the kernel's own: out may overlap x
            return as_bfloat16(y, result, out)
        y = as_bfloat16(y, result)
    if out is not None:
        np.copyto(out, y, casting="unsafe")
        return out
    return y if y.dtype == result else y.astype(result)


def axis_sizes(
    input_size: Any, kernel_size: Any, stride: Any, padding: Any, dilation: Any, min_input: int = 0
) -> Tuple[int, int, int, int, int]:
    """The validated (input, kernel, stride, padding, dilation) of one axis, for the
    *_output_size functions."""
    i = as_int(input_size, "input_size")
    k = as_int(kernel_size, "kernel_size")
    s = as_int(stride, "stride")
    p = as_int(padding, "padding")
    d = as_int(dilation, "dilation")
    if i < min_input:
        raise ValueError(f"input_size must be >= {min_input}, got {i}")
    if k < 1:
        raise ValueError(f"kernel_size must be >= 1, got {k}")
    if s < 1:
        raise ValueError(f"stride must be >= 1, got {s}")
    if d < 1:
        raise ValueError(f"dilation must be >= 1, got {d}")
    if p < 0:
        raise ValueError(f"padding must be non-negative, got {p}")
    return i, k, s, p, d


def axis_rows(shape: Tuple[int, ...], axis: Optional[int], length: int) -> Tuple[int, int, int]:
    """An array of `shape` as [outer][length][inner] rows for the native per-axis passes
    (parameters along `axis`, `length` of them; one for all: a single row)."""
    size = int(np.prod(shape, dtype=np.int64))
    if axis is None or length == 1:
        return 1, 1, size
    return int(np.prod(shape[:axis], dtype=np.int64)), length, int(np.prod(shape[axis + 1:], dtype=np.int64))
