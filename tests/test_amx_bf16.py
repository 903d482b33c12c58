"""The AMX bfloat16 convolution (conv2d_amx_bf16, TDPBF16PS tiles of 16 pixels by 16 output
channels, 32 x 32 per step) where the CPU has AMX-BF16: forced, against a float64 convolution of
the same bfloat16 values within the output's bfloat16 rounding plus the float32 accumulation
bound, on shapes around its tiles (pixel runs of 1, 15, 16, 17, 31, 32, 33; 16-pair tile rows;
32-channel steps), strides, dilation, padding modes, groups, both layouts, bias and
activations, float32 operands of compute_dtype="bfloat16", identical bits across thread counts,
and CPPCONV_MAX_ISA below amx not choosing it.  Skipped, visibly, without AMX."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import cppconv
from cppconv import _conv, _native

from conftest import make_rng
from reference import PADDING_MODES
from test_bf16_kernel import (
    AMX,
    BF16,
    F32,
    assert_close,
    bf16_random,
    channels_last,
    finished_case,
    kwargs_of,
    operands,
    reference,
)

pytestmark = pytest.mark.skipif(not AMX, reason="no AMX-BF16 on this CPU (or CPPCONV_MAX_ISA caps it): "
                                "conv2d_amx_bf16 is not listed")


def amx_name():
    return next(name for name in AMX if f"__{_native.selected_isa()}_" in name)


def forced(x, w, b, layout, case):
    return _conv._conv_with_algorithm(amx_name(), x, w, b, layout=layout, **kwargs_of(case))


def check_forced(rng, case, layout):
    x, w, b = operands(rng, case)
    ref, bound = reference(x, w, b, case)
    xl = channels_last(x) if layout == "NHWC" else x
    y = forced(xl, w, b, layout, case)
    assert y.dtype == BF16
    assert_close(np.moveaxis(y, -1, 1) if layout == "NHWC" else y, ref, bound, True, f"{layout} {case}")


def tile_case(rng, c, k, groups, hw, kernel=(3, 3), stride=(1, 1), dilation=(1, 1), pad=True, mode=None):
    (kh, kw) = kernel
    padding = ((kh - 1) * dilation[0] // 2, (kw - 1) * dilation[1] // 2) if pad else (0, 0)
    if mode is None:
        mode = str(rng.choice(PADDING_MODES)) if pad else "zeros"
    return finished_case(rng, c, k, groups, hw, kernel, stride, dilation, padding, mode)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_amx_pixel_runs(layout):
    """Output rows of 1 to 33 pixels (one and two A tiles, their tails) with unit strides (the
    pixels run along the flattened rows, past each row's end) and column stride 2 (one run per
    output row), odd row counts, 3x3 and 1x1 windows."""
    rng = make_rng("amx_bf16_pixel_runs", layout)
    for ow in (1, 15, 16, 17, 31, 32, 33):
        for oh in (1, 3):
            for stride in ((1, 1), (1, 2), (2, 1)):
                for kernel in ((3, 3), (1, 1)):
                    hw = tuple(max(1, (o - 1) * s + k - (k - 1)) for o, s, k in zip((oh, ow), stride, kernel))
                    check_forced(rng, tile_case(rng, 32, 32, 1, hw, kernel, stride), layout)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_amx_channels(layout):
    """Input channels around the 16-pair tile rows (8, 9, 16, 17, 31, 32, 33, 64, 65: padded pairs,
    the odd channel's missing partner) and output channels around the 16-channel B tiles and
    the 32-channel steps (8, 15, 16, 17, 31, 32, 33, 47, 48, 80), groups."""
    rng = make_rng("amx_bf16_channels", layout)
    for c in (8, 9, 16, 17, 31, 32, 33, 64, 65):
        for k in (8, 15, 16, 17, 31, 32, 33, 47, 48, 80):
            groups = int(rng.choice([1, 1, 2, 3]))
            check_forced(rng, tile_case(rng, c * groups, k * groups, groups, (int(rng.integers(1, 9)),
                                                                               int(rng.integers(1, 20)))), layout)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_amx_random(layout):
    """Random windows, strides, dilations, padding modes, activations and bias."""
    rng = make_rng("amx_bf16_random", layout)
    for _ in range(40):
        groups = int(rng.choice([1, 1, 1, 2, 4]))
        c, k = int(rng.choice([16, 24, 33, 48, 64])) * groups, int(rng.choice([16, 20, 32, 40, 64])) * groups
        kernel = [(1, 1), (3, 3), (3, 3), (5, 5), (1, 3), (3, 1), (2, 2), (7, 7)][rng.integers(8)]
        stride = (int(rng.choice([1, 1, 2, 3])), int(rng.choice([1, 1, 2])))
        dilation = (int(rng.choice([1, 1, 2])), int(rng.choice([1, 1, 2])))
        low = (dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1)
        hw = (int(rng.integers(low[0], low[0] + 20)), int(rng.integers(low[1], low[1] + 40)))
        check_forced(rng, tile_case(rng, c, k, groups, hw, kernel, stride, dilation, pad=rng.random() < 0.7), layout)


def test_amx_declines_small_groups():
    """The first layer's 3 channels, depthwise, groups of under 8 input or output channels and 1x1
    windows of under 16 input channels are left to the other kernels (the first to
    conv2d_amx_taps_bf16, which the dispatcher also prefers for 8 channels of a 3x3 window:
    tests/test_amx_taps_bf16.py); 8 of a 3x3 window taken."""
    rng = make_rng("amx_bf16_declines")
    for c, k, groups, kernel, takes in ((3, 64, 1, 3, False), (32, 32, 32, 3, False), (7, 64, 1, 3, False),
                                        (64, 7, 1, 3, False), (128, 128, 32, 3, False), (8, 32, 1, 1, False),
                                        (15, 32, 1, 1, False), (8, 8, 1, 3, True), (16, 16, 1, 1, True),
                                        (64, 64, 8, 3, True)):
        x = bf16_random(rng, (1, c, 8, 8))
        w = bf16_random(rng, (k, c // groups, kernel, kernel))
        kw = dict(padding=kernel // 2, groups=groups)
        if takes:
            case = dict(stride=(1, 1), padding=(kernel // 2,) * 2, dilation=(1, 1), groups=groups,
                        padding_mode="zeros", activation=None)
            ref, bound = reference(x, w, None, case)
            assert_close(_conv._conv_with_algorithm(amx_name(), x, w, None, **kw), ref, bound, True, str(case))
        else:
            with pytest.raises(ValueError, match="does not accept"):
                _conv._conv_with_algorithm(amx_name(), x, w, None, **kw)
        algorithm = cppconv.explain(x.shape, w.shape, dtype=BF16, **kw)["algorithm"]
        assert (algorithm == amx_name()) == (takes and c // groups > 8), (c, k, groups, algorithm)
        assert algorithm.startswith("conv2d_amx_taps_bf16_") == (c // groups <= 8 and k // groups >= 8
                                                                 and c // groups * kernel**2 >= 16)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_amx_chosen_and_compute_dtype(layout):
    """The dispatcher chooses it for ResNet's dense layers and explain names it; a float32 layer
    with compute_dtype="bfloat16" (float32 x rounded to nearest even into the tile, float32
    output) and dtype="bfloat16" on float32 operands (bfloat16 output) run it within the bound."""
    rng = make_rng("amx_bf16_chosen", layout)
    for c, k, hw, kernel, stride in ((64, 64, (14, 14), 3, 1), (256, 64, (7, 9), 1, 1), (64, 128, (15, 15), 3, 2)):
        case = tile_case(rng, c, k, 1, hw, (kernel, kernel), (stride, stride), mode="zeros")
        x, w, b = operands(rng, case)
        x32 = (x.astype(F32) * (1 + 2.0**-12)).astype(F32)  # between bfloat16 values: rounded by the kernel
        ref, bound = reference(x32.astype(BF16), w, b, case)
        xl = channels_last(x32) if layout == "NHWC" else x32
        layer = cppconv.Conv2d(w.astype(F32), b, layout=layout, compute_dtype="bfloat16", **kwargs_of(case))
        assert layer.explain(xl.shape)["algorithm"] == amx_name()
        y = layer(xl)
        assert y.dtype == F32
        assert_close(np.moveaxis(y, -1, 1) if layout == "NHWC" else y, ref, bound, False, f"layer {case}")
        y = cppconv.conv2d(xl, w.astype(F32), b, layout=layout, dtype="bfloat16", **kwargs_of(case))
        assert y.dtype == BF16
        assert_close(np.moveaxis(y, -1, 1) if layout == "NHWC" else y, ref, bound, True, f"dtype=bfloat16 {case}")
        xb = channels_last(x) if layout == "NHWC" else x
        assert cppconv.explain(xb.shape, w.shape, dtype=BF16, layout=layout, bias=b is not None,
                               **kwargs_of(case))["algorithm"] == amx_name()


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_amx_identical_across_threads(layout, restore_threads):
    """Each output's sum in one fixed order: the same bits at 1, 2 and 3 threads (the row blocks
    and the items each thread takes differ), unit and column stride 2, a grouped layer."""
    rng = make_rng("amx_bf16_threads", layout)
    for c, k, groups, stride, activation in ((35, 70, 1, 1, "silu"), (64, 48, 2, 2, "relu"), (48, 33, 1, 1, "tanh")):
        x = bf16_random(rng, (3, c, 29, 31))
        w = bf16_random(rng, (k, c // groups, 3, 3))
        b = rng.standard_normal(k).astype(F32)
        xl = channels_last(x) if layout == "NHWC" else x
        kw = dict(padding=1, stride=stride, groups=groups, activation=activation)
        results = []
        for n in (1, 2, 3):
            cppconv.set_num_threads(n)
            results.append(_conv._conv_with_algorithm(amx_name(), xl, w, b, layout=layout, **kw))
        for y in results[1:]:
            np.testing.assert_array_equal(y.view(np.uint16), results[0].view(np.uint16))


def test_amx_special_values():
    """inf and NaN pass through the tiles' float32 sums; the padding pairs (zeros) add nothing."""
    x = np.ones((1, 17, 5, 7), BF16)
    x[0, 0, 1, 1] = np.inf
    x[0, 16, 3, 3] = np.nan
    w = np.ones((16, 17, 1, 1), BF16)
    y = _conv._conv_with_algorithm(amx_name(), x, w, None).astype(np.float64)
    assert np.all(np.isposinf(y[0, :, 1, 1])) and np.all(np.isnan(y[0, :, 3, 3]))
    finite = np.isfinite(y)
    assert np.all(y[finite] == 17.0) and finite.sum() == y.size - 32


@pytest.mark.parametrize("cap", ["avx512_bf16", "avx512_vnni"])
def test_amx_capped_isa(cap):
    """CPPCONV_MAX_ISA below amx: the AMX kernel is neither listed nor chosen; at avx512_bf16 the
    vdpbf16ps kernel runs the dense layer instead."""
    if cap not in _native.max_isa_levels():
        pytest.skip(f"CPPCONV_MAX_ISA={cap} is not a level of this machine")
    code = (
        "import numpy as np, ml_dtypes, cppconv\n"
        "from cppconv import _native\n"
        "assert not any('_amx_' in a for a in _native.conv_algorithms())\n"
        "info = cppconv.explain((1, 64, 14, 14), (64, 64, 3, 3), dtype=ml_dtypes.bfloat16, padding=1)\n"
        "print(info['algorithm'])\n"
    )
    env = dict(os.environ, CPPCONV_MAX_ISA=cap)
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True).stdout
    assert "amx" not in out
    assert out.startswith("conv2d_channelvec_bf16") == (cap == "avx512_bf16"), out


def test_amx_channels_last_in_place():
    """Channels-last bfloat16 x of a 1x1 window without padding and 32 channels a group is read in
    place (of unit stride): contiguous (the pixels run along the flattened rows), a view whose
    rows are longer (one run per output row), and the last pixels' tiles, which would read past
    x's end, copied first; the bits those of the same x copied contiguously; stride 2 (a tile)."""
    rng = make_rng("amx_bf16_in_place")
    for c, k, groups, (h, w), stride in ((32, 32, 1, (3, 11), 1), (64, 48, 2, (5, 7), 1), (64, 40, 1, (9, 9), 2),
                                         (96, 48, 3, (1, 33), 1), (32, 64, 1, (2, 1), 1)):
        x = bf16_random(rng, (2, c, h, w + 3))
        weight = bf16_random(rng, (k, c // groups, 1, 1))
        b = rng.standard_normal(k).astype(F32)
        view = channels_last(x)[:, :, :w, :]  # rows 3 pixels longer than the plane
        assert not view.flags.c_contiguous
        kw = dict(stride=stride, groups=groups, layout="NHWC")
        y_view = _conv._conv_with_algorithm(amx_name(), view, weight, b, **kw)
        y = _conv._conv_with_algorithm(amx_name(), np.ascontiguousarray(view), weight, b, **kw)
        np.testing.assert_array_equal(y_view.view(np.uint16), y.view(np.uint16))
        case = dict(stride=(stride, stride), padding=(0, 0), dilation=(1, 1), groups=groups, padding_mode="zeros",
                    activation=None)
        ref, bound = reference(x[..., :w], weight, b, case)
        assert_close(np.moveaxis(y, -1, 1), ref, bound, True, f"{c} {k} {groups} {h}x{w} s{stride}")
