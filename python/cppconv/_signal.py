"""correlate2d and convolve2d with scipy.signal's arguments and results, on conv2d's kernels."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

from . import _args, _types
from ._conv import conv2d

# scipy.signal's boundary names -> conv2d's padding modes (README, "Padding modes").
BOUNDARIES = {"fill": "constant", "wrap": "circular", "symm": "symmetric"}
MODES = ("full", "same", "valid")


def _window_padding(size: int, kernel: int, mode: str, flipped: bool) -> Tuple[int, int]:
    """(before, after) padding that gives scipy's `mode` output of one axis directly: the
    'full' output cut to the 'same' or 'valid' window, as scipy centres it."""
    if mode == "full":
        return kernel - 1, kernel - 1
    if mode == "valid":
        return 0, 0
    # 'same': scipy's window starts (kernel - 1) // 2 into the full convolution, and its
    # correlation is that convolution with the kernel flipped, whose window starts kernel // 2.
    start = (kernel - 1) // 2 if flipped else kernel // 2
    return kernel - 1 - start, start


def _correlate(in1: Any, in2: Any, mode: str, boundary: str, fillvalue: Any, flipped: bool,
               num_threads: Optional[int], name: str, dtype: Any) -> np.ndarray:
    image = _args.as_input_array(in1, "in1")
    kernel = _args.as_input_array(in2, "in2")
    if not isinstance(mode, str) or mode.lower() not in MODES:
        raise ValueError(f"{name}: mode must be one of {list(MODES)}, got {mode!r}")
    if not isinstance(boundary, str) or boundary.lower() not in BOUNDARIES:
        raise ValueError(f"{name}: boundary must be one of {list(BOUNDARIES)}, got {boundary!r}")
    mode, boundary = mode.lower(), boundary.lower()
    if kernel.ndim != 2:
        raise ValueError(f"{name}: in2 must be a 2-D kernel, got shape {kernel.shape}")
    if image.ndim not in (2, 3):
        raise ValueError(f"{name}: in1 must be a 2-D image (H, W) or (H, W, C), got shape {image.shape}")
    if min(image.shape[:2]) < 1 or min(kernel.shape) < 1:
        raise ValueError(f"{name}: in1 and in2 must not be empty, got shapes {image.shape} and {kernel.shape}")
    if mode == "valid" and any(k > i for k, i in zip(kernel.shape, image.shape[:2])):
        raise ValueError(f"{name}: mode='valid' needs in2 {kernel.shape} no larger than in1 {image.shape[:2]} "
                         f"in each axis")
    # Computed in the compute dtype on the operands as dtype= rounds them, and the result
    # rounded to the result dtype once.
    dtypes = _args.call_dtypes(image, kernel, None, dtype)
    image = _args.as_rounded(image, dtypes.compute, dtypes.rounding)
    kernel = _args.as_rounded(kernel, dtypes.compute, dtypes.rounding)
    if flipped:
        kernel = kernel[::-1, ::-1]
    pads = tuple(_window_padding(i, k, mode, flipped) for i, k in zip(image.shape[:2], kernel.shape))
    if boundary == "wrap" and any(max(p) > i for p, i in zip(pads, image.shape[:2])):
        raise ValueError(f"{name}: boundary='wrap' pads {pads}, more than the image {image.shape[:2]} holds; "
                         f"use a smaller kernel or boundary='symm'")
    kw: Dict[str, Any] = dict(padding=pads, padding_mode=BOUNDARIES[boundary], num_threads=num_threads)
    if boundary == "fill":
        kw["padding_value"] = _fill_value(fillvalue, name)
    if image.ndim == 3:  # the kernel on each channel: a depthwise convolution in NHWC
        channels = image.shape[2]
        weight = np.ascontiguousarray(np.broadcast_to(kernel, (channels, 1) + kernel.shape))
        kw.update(groups=channels, layout="NHWC")
    else:
        weight = kernel
    y = conv2d(image, weight, **kw)
    return _args.deliver(None, y, False, y.shape, dtypes.result)


def _fill_value(fillvalue: Any, name: str) -> float:
    """scipy's fillvalue (a number, or a one-element array) as conv2d's padding_value."""
    value = np.asarray(fillvalue)
    if value.size != 1 or value.dtype.kind not in "biuf":
        raise ValueError(f"{name}: fillvalue must be a single real number, got {fillvalue!r}")
    return float(value.reshape(()))


def correlate2d(in1: Any, in2: Any, mode: _types.Mode = "full", boundary: _types.Boundary = "fill",
                fillvalue: Any = 0, *, num_threads: Optional[int] = None, dtype: Any = None) -> _types.Array:
    """2-D cross-correlation as ``scipy.signal.correlate2d`` computes it, on cppconv's kernels.

    Args:
        in1: a 2-D image ``(H, W)``, or ``(H, W, C)`` to correlate each channel with in2.
        in2: the 2-D kernel ``(kh, kw)``.
        mode: ``"full"`` (``H + kh - 1`` rows), ``"same"`` (in1's size, centred as scipy
            centres it) or ``"valid"`` (``H - kh + 1``; in2 must not be larger).
        boundary: ``"fill"`` (pad with fillvalue), ``"wrap"`` (circular) or ``"symm"``
            (symmetric: the edge value repeated; NumPy's "symmetric", SciPy ndimage's "reflect").
        fillvalue: the padding value of ``boundary="fill"``.
        num_threads: threads for this call only.
        dtype: the computation's dtype, as for :func:`cppconv.conv2d`.

    Returns:
        The dtype :func:`cppconv.conv2d` gives for in1 and in2: float32 for a uint8 image
        with a float32 kernel, float64 for integers alone (scipy keeps integer dtypes;
        cppconv computes in floating point).

    >>> import numpy as np, cppconv
    >>> cppconv.correlate2d(np.eye(3), np.ones((2, 2)), mode="valid")
    array([[2., 1.],
           [1., 2.]])
    """
    return _correlate(in1, in2, mode, boundary, fillvalue, False, num_threads, "correlate2d", dtype)


def convolve2d(in1: Any, in2: Any, mode: _types.Mode = "full", boundary: _types.Boundary = "fill",
               fillvalue: Any = 0, *, num_threads: Optional[int] = None, dtype: Any = None) -> _types.Array:
    """2-D convolution (the kernel flipped) as ``scipy.signal.convolve2d`` computes it; the
    arguments and results are :func:`correlate2d`'s.

    >>> import numpy as np, cppconv
    >>> cppconv.convolve2d(np.arange(9.0).reshape(3, 3), np.array([[1.0, -1.0]]), mode="valid")
    array([[-1., -1.],
           [-1., -1.],
           [-1., -1.]])
    """
    return _correlate(in1, in2, mode, boundary, fillvalue, True, num_threads, "convolve2d", dtype)
