"""A float64 NumPy reference for cppconv.conv2d, written to be obviously correct rather than fast.

Everything here works on NCHW 4-D float64 arrays; the tests convert layouts and batch dimensions
around it.  The convolution is a cross-correlation, as torch.nn.functional.conv2d computes it:

    y[n, k, oh, ow] = bias[k] + sum_{c, i, j} w[k, c, i, j] * xpad[n, g*Cg + c, oh*sh + i*dh, ow*sw + j*dw]

with g = k // (K // groups) and xpad the input padded with np.pad in the padding mode's NumPy name.
"""

from __future__ import annotations

import numpy as np

# PyTorch padding_mode -> np.pad mode (the same padding, NumPy's name for it).
NP_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap",
               "symmetric": "symmetric",
               "constant": "constant"}

ACTIVATIONS = [None, "relu", "relu6", "leaky_relu", "sigmoid", "tanh", "silu", "hardsigmoid", "hardswish"]
PADDING_MODES = ["zeros", "reflect", "replicate", "circular", "symmetric"]


def as_pair(v):
    """int or (h, w) -> (h, w)."""
    if isinstance(v, (tuple, list)):
        assert len(v) == 2
        return int(v[0]), int(v[1])
    return int(v), int(v)


def same_padding(size, kernel, stride=1, dilation=1):
    """(before, after) padding for padding='same': output size ceil(size / stride), total padding
    max((O - 1) * S + D * (K - 1) + 1 - I, 0), the odd extra pixel after (bottom / right)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def resolve_padding(padding, in_hw, kernel_hw, stride=1, dilation=1):
    """Any padding form conv2d accepts -> (top, bottom, left, right)."""
    sh, sw = as_pair(stride)
    dh, dw = as_pair(dilation)
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            top, bottom = same_padding(in_hw[0], kernel_hw[0], sh, dh)
            left, right = same_padding(in_hw[1], kernel_hw[1], sw, dw)
            return (top, bottom, left, right)
        raise ValueError(padding)
    if isinstance(padding, (tuple, list)):
        a, b = padding
        if isinstance(a, (tuple, list)):
            return (int(a[0]), int(a[1]), int(b[0]), int(b[1]))
        return (int(a), int(a), int(b), int(b))
    p = int(padding)
    return (p, p, p, p)


def conv_output_size(input_size, kernel_size, stride=1, padding_total=0, dilation=1):
    """floor((I + P_total - D * (K - 1) - 1) / S) + 1 (P_total = before + after)."""
    return (input_size + padding_total - dilation * (kernel_size - 1) - 1) // stride + 1


def activate(y, activation):
    """The activation applied elementwise to float64 y (NaN stays NaN); ("leaky_relu", slope)
    for a slope other than 0.01."""
    with np.errstate(over="ignore", invalid="ignore"):
        if activation is None:
            return y
        if isinstance(activation, tuple):
            name, slope = activation
            assert name == "leaky_relu", activation
            return np.where(y < 0, slope * y, y)
        if activation == "relu":
            return np.maximum(y, 0.0)
        if activation == "relu6":
            return np.minimum(np.maximum(y, 0.0), 6.0)
        if activation == "leaky_relu":
            return np.where(y < 0, 0.01 * y, y)
        if activation == "sigmoid":
            return 1.0 / (1.0 + np.exp(-y))
        if activation == "tanh":
            return np.tanh(y)
        if activation == "silu":
            return y / (1.0 + np.exp(-y))
        if activation in ("hardsigmoid", "hardswish"):
            gate = np.where(np.isnan(y), y, np.clip(y / 6.0 + 0.5, 0.0, 1.0))
            return y * gate if activation == "hardswish" else gate
    raise ValueError(activation)


def conv_nd_ref(x, w, b=None, stride=1, padding=None, dilation=1, groups=1, padding_mode="zeros",
                activation=None, padding_value=0.0):
    """Reference convolution of any rank on channels-first input (N, C, *spatial), weight
    (K, C/groups, *kernel).  stride and dilation: an int or one per axis; padding: (before,
    after) per axis, flattened ((top, bottom, left, right) in 2-D), None for none;
    padding_value: padding_mode="constant"'s."""
    x = np.asarray(x).astype(np.float64)
    w = np.asarray(w).astype(np.float64)
    r = x.ndim - 2
    assert r >= 1 and w.ndim == r + 2, (x.shape, w.shape)
    N, C = x.shape[:2]
    K, Cg = w.shape[:2]
    kernel = w.shape[2:]
    assert C == Cg * groups and K % groups == 0, (x.shape, w.shape, groups)
    Kg = K // groups
    per_axis = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v,) * r  # noqa: E731
    strides, dilations = per_axis(stride), per_axis(dilation)
    pads = (0,) * (2 * r) if padding is None else tuple(padding)
    fill = {"constant_values": padding_value} if padding_mode == "constant" else {}
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[2 * i], pads[2 * i + 1]) for i in range(r)],
                mode=NP_PAD_MODE[padding_mode], **fill)
    out = tuple((xp.shape[2 + i] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1 for i in range(r))
    assert min(out) >= 1
    y = np.zeros((N, K) + out, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        for g in range(groups):
            xg = xp[:, g * Cg:(g + 1) * Cg]
            wg = w[g * Kg:(g + 1) * Kg]
            for tap in np.ndindex(*kernel):
                # (N, Cg, *out): the input values kernel tap `tap` meets at every output position.
                window = xg[(slice(None), slice(None)) + tuple(
                    slice(t * d, t * d + s * (o - 1) + 1, s) for t, d, s, o in zip(tap, dilations, strides, out))]
                y[:, g * Kg:(g + 1) * Kg] += np.tensordot(wg[(slice(None), slice(None)) + tap], window,
                                                          axes=([1], [1])).swapaxes(0, 1)
        if b is not None:
            y += np.asarray(b).astype(np.float64).reshape((1, K) + (1,) * r)
    return activate(y, activation)


def conv_nd_abs_bound(x, w, b=None, stride=1, padding=None, dilation=1, groups=1, padding_mode="zeros",
                      activation=None, padding_value=0.0):
    """sum |w| |x| + |bias| over each output's window: a bound on the size of every term that
    enters the output, so a rounding-error tolerance scales with it.  Activations whose value can
    exceed that bound (sigmoid, tanh and hardsigmoid, |f| <= 1) add 1; hardswish, whose slope
    reaches 1.5, scales it by 1.5."""
    x = np.abs(np.asarray(x).astype(np.float64))
    w = np.abs(np.asarray(w).astype(np.float64))
    b = None if b is None else np.abs(np.asarray(b).astype(np.float64))
    bound = conv_nd_ref(x, w, b, stride, padding, dilation, groups, padding_mode, None, abs(padding_value))
    if activation in ("sigmoid", "tanh", "hardsigmoid"):
        bound = bound + 1.0
    if activation == "hardswish":
        bound = bound * 1.5
    return bound


def conv2d_ref(x, w, b=None, stride=1, padding=(0, 0, 0, 0), dilation=1, groups=1,
               padding_mode="zeros", activation=None):
    """Reference conv2d on NCHW 4-D input.  padding is (top, bottom, left, right)."""
    assert np.ndim(x) == 4 and np.ndim(w) == 4
    return conv_nd_ref(x, w, b, as_pair(stride), padding, as_pair(dilation), groups, padding_mode, activation)


def conv2d_abs_bound(x, w, b=None, stride=1, padding=(0, 0, 0, 0), dilation=1, groups=1,
                     padding_mode="zeros", activation=None):
    """conv_nd_abs_bound of a conv2d call (NCHW 4-D)."""
    return conv_nd_abs_bound(x, w, b, as_pair(stride), padding, as_pair(dilation), groups, padding_mode, activation)


def expected_result_dtype(x, w, b=None):
    """NumPy's result_type of x and the weight (float64 where that is an integer or bool
    dtype), then with the bias; in native byte order."""
    def floating(dtype):
        return dtype if dtype.kind == "f" else np.dtype(np.float64)

    result = floating(np.result_type(x.dtype, w.dtype))
    if b is not None:
        result = floating(np.result_type(result, b.dtype))
    return result.newbyteorder("=")
