"""The AMX bfloat16 convolution of few input channels per group (conv2d_amx_taps_bf16: each
pixel's window, taps x channels, is the tiles' K dimension, packed 32 pixels at a time): forced,
against a float64 convolution of the same bfloat16 values within the output's bfloat16
rounding plus the float32 accumulation bound, on 1 to 16 channels, windows 1x1 to 7x7 and
non-square, strides 1 to 3, dilation, symmetric and asymmetric padding in every mode, both
layouts, bias and activations, batches, groups, pixel counts around its 32-pixel blocks, inf and
NaN beside the windows, identical bits across thread counts, and the dispatcher choosing it for
ResNet's first layer.  Skipped, visibly, without AMX."""

from __future__ import annotations

import numpy as np
import pytest

import cppconv
from cppconv import _conv, _native

from conftest import make_rng
from reference import ACTIVATIONS, PADDING_MODES, conv_nd_abs_bound, conv_nd_ref
from test_bf16_kernel import BF16, F32, F64, assert_close, bf16_random, channels_last

pytestmark = pytest.mark.skipif("amx_bf16" not in _native.cpu_features(),
                                reason="no AMX-BF16 on this CPU (or CPPCONV_MAX_ISA caps it)")


def taps_name():
    return f"conv2d_amx_taps_bf16__{_native.selected_isa()}_32x32"


def test_taps_listed():
    """Listed wherever the CPU has AMX-BF16, ahead of conv2d_amx_bf16."""
    names = list(_native.conv_algorithms())
    assert taps_name() in names
    assert names.index(taps_name()) < names.index(f"conv2d_amx_bf16__{_native.selected_isa()}_32x32")


def ceil_div(a, b):
    return -(-a // b)


def taps_takes(cg, kg, kernel):
    """Whether the kernel takes groups of cg input and kg output channels: up to 16 input
    channels, 8 output channels or more, window sums of 16 to 1024 values; and where
    conv2d_amx_bf16 takes the problem too (8 channels or more), a third of its tile steps or
    fewer."""
    taps = kernel[0] * kernel[1]
    if cg > 16 or kg < 8 or not 16 <= cg * taps <= 1024:
        return False
    return cg < 8 or 3 * ceil_div(cg * taps, 32) <= taps * ceil_div(cg, 32)


def run_case(rng, n, c, k, hw, kernel, stride=(1, 1), dilation=(1, 1), pads=(0, 0, 0, 0), mode="zeros",
             groups=1, activation=None, bias=True, layout="NCHW", x=None):
    """The forced kernel's output (NCHW) checked against the reference and returned; None, after
    checking that the kernel declines it, where taps_takes says so."""
    if x is None:
        x = bf16_random(rng, (n, c) + hw)
    w = bf16_random(rng, (k, c // groups) + kernel)
    b = rng.standard_normal(k).astype(F32) if bias else None
    args = dict(stride=stride, padding=pads, dilation=dilation, groups=groups, padding_mode=mode)
    x64, w64, b64 = x.astype(F64), w.astype(F64), None if b is None else b.astype(F64)
    finite = np.where(np.isfinite(x64), x64, 0.0)  # non-finite values lie outside every window
    ref = conv_nd_ref(finite, w64, b64, activation=activation, **args)
    bound = conv_nd_abs_bound(finite, w64, b64, activation=activation, **args)
    xl = channels_last(x) if layout == "NHWC" else x
    kw = dict(stride=stride, padding=((pads[0], pads[1]), (pads[2], pads[3])), dilation=dilation, groups=groups,
              padding_mode=mode, activation=activation, layout=layout)
    if not taps_takes(c // groups, k // groups, kernel):
        with pytest.raises(ValueError, match="does not accept"):
            _conv._conv_with_algorithm(taps_name(), xl, w, b, **kw)
        return None
    y = _conv._conv_with_algorithm(taps_name(), xl, w, b, **kw)
    assert y.dtype == BF16
    y = np.moveaxis(y, -1, 1) if layout == "NHWC" else y
    assert_close(y, ref, bound, True, f"{layout} c{c} k{k} {hw} {kernel} s{stride} d{dilation} p{pads} {mode}")
    return y


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_taps_channels_and_windows(layout):
    """1 to 16 channels by square and non-square windows up to 7x7 (1x1 only where its 16
    channels fill half a step), strides 1 to 3, "same" padding or none; from 8 channels most are
    declined (conv2d_amx_bf16's)."""
    rng = make_rng("amx_taps_windows", layout)
    for c in (1, 2, 3, 4, 8, 16):
        for kernel in ((1, 1), (2, 2), (3, 3), (5, 5), (7, 7), (1, 3), (3, 1), (7, 5), (2, 5)):
            if not 16 <= c * kernel[0] * kernel[1] <= 1024:
                continue
            stride = (int(rng.choice([1, 2, 3])), int(rng.choice([1, 2, 3])))
            pad = rng.random() < 0.7
            ph, pw = ((kernel[0] - 1) // 2, (kernel[1] - 1) // 2) if pad else (0, 0)
            hw = (int(rng.integers(kernel[0], kernel[0] + 12)), int(rng.integers(kernel[1], kernel[1] + 30)))
            k = int(rng.choice([8, 16, 17, 32, 33, 64]))
            run_case(rng, 1, c, k, hw, kernel, stride, pads=(ph, ph, pw, pw), layout=layout,
                     activation=ACTIVATIONS[rng.integers(len(ACTIVATIONS))], bias=rng.random() < 0.8)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_taps_random(layout):
    """Random dilations, asymmetric padding of 0 to 3 in every mode, batches, groups of 1 to 16
    channels, output channels around the 16-channel B tiles and 32-channel steps."""
    rng = make_rng("amx_taps_random", layout)
    for _ in range(40):
        groups = int(rng.choice([1, 1, 1, 2, 3]))
        cg = int(rng.choice([1, 2, 3, 4, 5, 8, 9, 10, 13, 16]))
        kg = int(rng.choice([8, 9, 16, 31, 32, 48, 64]))
        kernel = [(3, 3), (5, 5), (7, 7), (4, 4), (1, 5), (3, 2), (2, 2)][rng.integers(7)]
        if cg * kernel[0] * kernel[1] < 16:
            cg = 16
        dilation = (int(rng.choice([1, 1, 2, 3])), int(rng.choice([1, 1, 2])))
        stride = (int(rng.choice([1, 2, 3])), int(rng.choice([1, 2, 3])))
        pads = tuple(int(v) for v in rng.integers(0, 4, size=4))
        mode = str(rng.choice(PADDING_MODES))
        reach = (dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1)
        hw = (int(rng.integers(max(reach[0], 4), reach[0] + 10)), int(rng.integers(max(reach[1], 4), reach[1] + 25)))
        if mode in ("reflect", "circular") and max(pads) >= min(hw):
            mode = "replicate"
        run_case(rng, int(rng.integers(1, 4)), cg * groups, kg * groups, hw, kernel, stride, dilation, pads, mode,
                 groups, ACTIVATIONS[rng.integers(len(ACTIVATIONS))], rng.random() < 0.8, layout)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_taps_pixel_blocks(layout):
    """Row blocks of 15, 16, 17, 31, 32, 33, 63, 64, 65 pixels (one and two A tiles, their tails;
    the pixels run along the flattened output rows), a single column, long rows past the
    channels-first interleave's 32 columns."""
    rng = make_rng("amx_taps_blocks", layout)
    for oh, ow in ((1, 15), (1, 16), (1, 17), (1, 31), (1, 32), (1, 33), (3, 21), (2, 32), (5, 13), (7, 1),
                   (1, 65), (2, 70)):
        hw = ((oh - 1) * 2 + 7 - 6, (ow - 1) * 2 + 7 - 6)  # 7x7 stride 2 padding 3
        run_case(rng, 2, 3, 64, hw, (7, 7), (2, 2), pads=(3, 3, 3, 3), layout=layout)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_taps_float32_operands(layout):
    """compute_dtype="bfloat16" on a float32 layer (float32 x rounded to nearest even into the
    strip, float32 output) and dtype="bfloat16" on float32 operands (bfloat16 output)."""
    rng = make_rng("amx_taps_f32", layout)
    x = bf16_random(rng, (2, 3, 19, 23))
    w = bf16_random(rng, (32, 3, 5, 5))
    b = rng.standard_normal(32).astype(F32)
    x32 = (x.astype(F32) * (1 + 2.0**-12)).astype(F32)  # between bfloat16 values: rounded by the kernel
    args = dict(stride=(2, 1), padding=(2, 2, 2, 2), dilation=(1, 1), groups=1, padding_mode="zeros")
    ref = conv_nd_ref(x.astype(F64), w.astype(F64), b.astype(F64), **args)
    bound = conv_nd_abs_bound(x.astype(F64), w.astype(F64), b.astype(F64), **args)
    xl = channels_last(x32) if layout == "NHWC" else x32
    layer = cppconv.Conv2d(w.astype(F32), b, stride=(2, 1), padding=2, layout=layout, compute_dtype="bfloat16")
    assert layer.explain(xl.shape, dtype=BF16)["algorithm"] == taps_name()
    y = layer(xl)
    assert y.dtype == F32
    assert_close(np.moveaxis(y, -1, 1) if layout == "NHWC" else y, ref, bound, False, "layer")
    y = cppconv.conv2d(xl, w.astype(F32), b, stride=(2, 1), padding=2, layout=layout, dtype="bfloat16")
    assert y.dtype == BF16
    assert_close(np.moveaxis(y, -1, 1) if layout == "NHWC" else y, ref, bound, True, "dtype=bfloat16")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_taps_non_finite_beside_windows(layout):
    """inf and NaN in the rows and columns that a stride one more than the window skips between
    windows, and past the last window: no output sees them (the panel's lanes past a window are
    zeros, not its neighbours' values); inside a window they reach its outputs."""
    rng = make_rng("amx_taps_non_finite", layout)
    for c, kk in ((3, 3), (4, 2), (8, 2), (5, 2)):
        s = kk + 1
        h, w = 3 * s + kk - 1, 4 * s + kk - 1  # 3 x 4 outputs, the last window s - 1 from the end
        unread_h = [i for i in range(h) if i % s >= kk or i >= 2 * s + kk]
        unread_w = [j for j in range(w) if j % s >= kk or j >= 3 * s + kk]
        x = bf16_random(rng, (1, c, h, w))
        for i in unread_h:
            x[0, int(rng.integers(c)), i, int(rng.integers(w))] = np.inf
        for j in unread_w:
            x[0, int(rng.integers(c)), int(rng.integers(h)), j] = np.nan
        x[0, c - 1, unread_h[-1], unread_w[-1]] = -np.inf
        y = run_case(rng, 1, c, 32, None, (kk, kk), (s, s), x=x, layout=layout, activation="relu")
        assert np.all(np.isfinite(y.astype(F64))) and y.shape[2:] == (3, 4)
        x[0, 0, s, s] = np.inf  # inside the window of output (1, 1)
        xl = channels_last(x) if layout == "NHWC" else x
        y = _conv._conv_with_algorithm(taps_name(), xl, np.ones((16, c, kk, kk), BF16), None, stride=s, layout=layout)
        y = (np.moveaxis(y, -1, 1) if layout == "NHWC" else y).astype(F64)
        assert np.all(np.isposinf(y[0, :, 1, 1]))
        y[0, :, 1, 1] = 0
        assert np.all(np.isfinite(y))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_taps_identical_across_threads(layout, restore_threads):
    """Each output's sum over K in one fixed order: the same bits at 1, 2 and 3 threads (the row
    blocks and the items each thread takes differ)."""
    rng = make_rng("amx_taps_threads", layout)
    for c, k, groups, kernel, stride, activation in ((3, 64, 1, 7, 2, "relu"), (4, 40, 2, 3, 1, "silu"),
                                                      (9, 33, 1, 7, 1, None)):
        x = bf16_random(rng, (3, c, 45, 37))
        w = bf16_random(rng, (k, c // groups, kernel, kernel))
        b = rng.standard_normal(k).astype(F32)
        xl = channels_last(x) if layout == "NHWC" else x
        kw = dict(padding=kernel // 2, stride=stride, groups=groups, activation=activation, layout=layout)
        results = []
        for threads in (1, 2, 3):
            cppconv.set_num_threads(threads)
            results.append(_conv._conv_with_algorithm(taps_name(), xl, w, b, **kw))
        for y in results[1:]:
            np.testing.assert_array_equal(y.view(np.uint16), results[0].view(np.uint16))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_taps_chosen_for_first_layers(layout):
    """The dispatcher runs ResNet's first layer (3 channels, 7x7 stride 2) and a 1-channel 5x5
    layer on it, one call and a prepacked layer alike, and explain names it."""
    rng = make_rng("amx_taps_chosen", layout)
    for c, k, hw, kernel, stride, pad in ((3, 64, (30, 36), 7, 2, 3), (1, 32, (20, 20), 5, 1, 2),
                                          (3, 32, (16, 16), 3, 2, 1)):
        x = bf16_random(rng, (1, c) + hw)
        w = bf16_random(rng, (k, c, kernel, kernel))
        b = rng.standard_normal(k).astype(F32)
        xl = channels_last(x) if layout == "NHWC" else x
        kw = dict(stride=stride, padding=pad, layout=layout)
        assert cppconv.explain(xl.shape, w.shape, dtype=BF16, bias=True, **kw)["algorithm"] == taps_name()
        layer = cppconv.Conv2d(w, b, **kw)
        assert layer.explain(xl.shape, dtype=BF16)["algorithm"] == taps_name()
        forced = _conv._conv_with_algorithm(taps_name(), xl, w, b, **kw)
        np.testing.assert_array_equal(cppconv.conv2d(xl, w, b, **kw).view(np.uint16), forced.view(np.uint16))
        np.testing.assert_array_equal(layer(xl).view(np.uint16), forced.view(np.uint16))


def test_taps_declines():
    """Over 16 channels per group, under 8 output channels per group, sums of under 16 values
    (a 1x1 window of 8 channels), and windows that conv2d_amx_bf16 sums in under 3 times the
    steps (12 or 16 channels of a 3x3 window) are left to the other kernels; 8 channels of a 3x3
    window and 10 of a 7x7 one are taken."""
    rng = make_rng("amx_taps_declines")
    for c, k, groups, kernel, takes in ((17, 32, 1, 3, False), (32, 64, 1, 3, False), (3, 7, 1, 7, False),
                                        (16, 32, 16, 3, False), (8, 32, 1, 1, False), (1, 32, 1, 3, False),
                                        (16, 32, 1, 3, False), (12, 64, 1, 3, False), (16, 64, 1, 1, False),
                                        (8, 32, 1, 3, True), (10, 32, 1, 7, True), (6, 48, 2, 3, True)):
        assert taps_takes(c // groups, k // groups, (kernel, kernel)) == takes
        x = bf16_random(rng, (1, c, 8, 8))
        w = bf16_random(rng, (k, c // groups, kernel, kernel))
        info = cppconv.explain(x.shape, w.shape, dtype=BF16, padding=kernel // 2, groups=groups)
        assert (info["algorithm"] == taps_name()) == takes, (c, k, groups, kernel)
        if takes:
            run_case(rng, 1, c, k, (8, 8), (kernel, kernel), pads=(kernel // 2,) * 4, groups=groups, x=x)
        else:
            with pytest.raises(ValueError, match="does not accept"):
                _conv._conv_with_algorithm(taps_name(), x, w, None, padding=kernel // 2, groups=groups)
