"""The float32 precision modes: "highest" (the default) keeps every output within the direct
sum's rounding bound for every input; "high" lets 3x3 convolutions run Winograd F(2x2, 3x3),
whose error scales with a tile's 4x4 input patch instead, and which must meet that bound."""

from __future__ import annotations

import numpy as np
import pytest

import cppconv
from cppconv import _native
from cppconv._conv import _conv_with_algorithm

from conftest import assert_close, make_rng
from reference import NP_PAD_MODE, conv2d_abs_bound, conv2d_ref, resolve_padding

WINOGRAD = [a for a in _native.conv_algorithms() if a.startswith("conv2d_winograd")]
needs_winograd = pytest.mark.skipif(not WINOGRAD, reason="no Winograd algorithm on this machine")

# README, "Guarantees": under "high", |y - ref| <= HIGH_RTOL * winograd_patch_bound.
HIGH_RTOL = 1e-5


@pytest.fixture
def restore_precision():
    before = cppconv.get_float32_precision()
    try:
        yield before
    finally:
        cppconv.set_float32_precision(before)


def winograd_patch_bound(x, w, padding, dilation=1, padding_mode="zeros"):
    """sum over input channels c of max |w[k, c]| * sum |x| over the 4x4 input patch of the
    output's Winograd tile: the norm F(2x2, 3x3)'s rounding error scales with (every value of a
    patch enters every output of its tile through the transforms).  Tiles are 2x2 outputs of one
    dilation phase, d apart, in cells of 2d x 2d outputs from the top left; a patch row or column
    past the padded input is zero in the kernel and counts nothing here."""
    xp = np.pad(np.abs(np.asarray(x, np.float64)), ((0, 0), (0, 0), (padding[0], padding[1]), (padding[2], padding[3])),
                mode=NP_PAD_MODE[padding_mode])
    n, c, hp, wp = xp.shape
    d = dilation
    oh, ow = hp - 2 * d, wp - 2 * d

    def patch(o, size):
        first = (o // (2 * d)) * 2 * d + o % d
        return [first + d * i for i in range(4) if first + d * i < size]

    sums = np.zeros((n, c, oh, ow))
    for i in range(oh):
        rows = patch(i, hp)
        for j in range(ow):
            sums[:, :, i, j] = xp[:, :, rows][:, :, :, patch(j, wp)].sum(axis=(2, 3))
    wmax = np.abs(np.asarray(w, np.float64)).reshape(w.shape[0], w.shape[1], -1).max(axis=2)
    return np.einsum("nchw,kc->nkhw", sums, wmax)


def adversarial_problem(kind, rng):
    """(x, w, dilation, padding_mode) of the inputs that break Winograd's direct-sum bound."""
    if kind == "zero_column_large_pixel":  # the issue's: one pixel of 1e6 under zero taps
        x = rng.random((1, 16, 16, 16)).astype(np.float32)
        x[0, 3, 7, 8] = 1e6
        w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
        w[:, :, :, 1] = 0
        return x, w, 1, "zeros"
    # 50 %-pruned weights on log-normal activations (sigma 4): a wide dynamic range.
    x = np.exp(4 * rng.standard_normal((1, 64, 28, 28))).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    w[rng.random(w.shape) < 0.5] = 0
    if kind == "pruned_lognormal":
        return x, w, 1, "zeros"
    if kind == "pruned_lognormal_dilated":
        return x[:, :, :24, :24], w, 2, "zeros"
    if kind == "pruned_lognormal_reflect":
        return x, w, 1, "reflect"
    if kind == "wide_range":  # magnitudes over 12 decades in x, 9 in w, random signs
        x = (10.0 ** rng.uniform(-6, 6, (2, 32, 14, 14)) * rng.choice([-1, 1], (2, 32, 14, 14))).astype(np.float32)
        w = (10.0 ** rng.uniform(-6, 3, (32, 32, 3, 3)) * rng.choice([-1, 1], (32, 32, 3, 3))).astype(np.float32)
        return x, w, 1, "zeros"
    raise ValueError(kind)


ADVERSARIAL = ["zero_column_large_pixel", "pruned_lognormal", "pruned_lognormal_dilated",
               "pruned_lognormal_reflect", "wide_range"]


def test_default_mode_is_highest_and_settable(restore_precision):
    assert cppconv.get_float32_precision() == "highest"
    cppconv.set_float32_precision("high")
    assert cppconv.get_float32_precision() == "high"
    cppconv.set_float32_precision("highest")
    assert cppconv.get_float32_precision() == "highest"


@pytest.mark.parametrize("bad", ["medium", "HIGHEST!", "", None, 1, 0.5])
def test_bad_precision_is_a_clear_error(bad, restore_precision):
    with pytest.raises(ValueError, match="'highest'"):
        cppconv.set_float32_precision(bad)
    x, w = np.ones((1, 16, 8, 8), np.float32), np.ones((16, 16, 3, 3), np.float32)
    if bad is None:
        return  # None is the default of every precision= argument
    with pytest.raises(ValueError, match="precision"):
        cppconv.conv2d(x, w, precision=bad)
    with pytest.raises(ValueError, match="precision"):
        cppconv.Conv2d(w, precision=bad)
    with pytest.raises(ValueError, match="precision"):
        cppconv.explain(x.shape, w.shape, precision=bad)
    assert cppconv.get_float32_precision() == "highest"


@needs_winograd
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_explain_names_the_mode_that_chose(layout, restore_precision):
    x_shape = (1, 64, 56, 56) if layout == "NCHW" else (1, 56, 56, 64)
    w_shape = (64, 64, 3, 3)

    def chosen(**kw):
        info = cppconv.explain(x_shape, w_shape, padding=1, layout=layout, **kw)
        return info["precision"], info["algorithm"].startswith("conv2d_winograd")

    assert chosen() == ("highest", False)
    assert chosen(precision="high") == ("high", True)
    layer = cppconv.Conv2d(np.ones(w_shape, np.float32), padding=1, layout=layout)
    assert layer.explain(x_shape)["precision"] == "highest"
    cppconv.set_float32_precision("high")
    assert chosen() == ("high", True)
    assert chosen(precision="highest") == ("highest", False)  # a call's mode overrides the process's
    assert layer.explain(x_shape)["algorithm"].startswith("conv2d_winograd")
    pinned = cppconv.Conv2d(np.ones(w_shape, np.float32), padding=1, layout=layout, precision="highest")
    assert not pinned.explain(x_shape)["algorithm"].startswith("conv2d_winograd")
    # float64 has no looser algorithm: the mode is reported, the choice is the direct one.
    assert not cppconv.explain(x_shape, w_shape, np.float64, padding=1, layout=layout)["algorithm"].startswith(
        "conv2d_winograd")


@pytest.mark.parametrize("kind", ADVERSARIAL)
def test_highest_meets_the_direct_bound_on_adversarial_inputs(kind, restore_precision):
    """By default (and with the process set to "high" but the call or layer pinned to "highest")
    every output stays within 1e-5 * sum |w| |x|, whatever the input: conv2d, Conv2d, both
    layouts, every ISA's default choice."""
    x, w, d, mode = adversarial_problem(kind, make_rng("precision-highest", kind))
    pads = resolve_padding(d, x.shape[2:], w.shape[2:], 1, d)
    ref = conv2d_ref(x, w, None, 1, pads, d, 1, mode)
    bound = conv2d_abs_bound(x, w, None, 1, pads, d, 1, mode)
    kw = dict(padding=d, dilation=d, padding_mode=mode)
    xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    for isa in _native.available_isas():
        _native.select_isa(isa)
        try:
            results = [cppconv.conv2d(x, w, **kw), cppconv.Conv2d(w, **kw)(x),
                       cppconv.conv2d(xh, w, layout="NHWC", **kw).transpose(0, 3, 1, 2)]
            cppconv.set_float32_precision("high")
            results += [cppconv.conv2d(x, w, precision="highest", **kw),
                        cppconv.Conv2d(w, precision="highest", **kw)(x)]
            cppconv.set_float32_precision("highest")
        finally:
            _native.select_isa(_native.default_isa())
        for i, y in enumerate(results):
            assert_close(y, ref, bound, np.float32, context=f"{kind} {isa} result {i}")


@needs_winograd
@pytest.mark.parametrize("kind", ADVERSARIAL)
@pytest.mark.parametrize("algorithm", WINOGRAD)
def test_winograd_breaks_the_direct_bound_and_meets_the_high_bound(kind, algorithm):
    """Why Winograd needs the looser mode (its error passes 1e-5 * sum |w| |x| on these inputs),
    and the bound README promises for "high", checked on the same adversarial inputs: forced,
    as a layer, and chosen by precision="high"."""
    x, w, d, mode = adversarial_problem(kind, make_rng("precision-high", kind))
    pads = resolve_padding(d, x.shape[2:], w.shape[2:], 1, d)
    ref = conv2d_ref(x, w, None, 1, pads, d, 1, mode)
    patch = winograd_patch_bound(x, w, pads, d, mode)
    kw = dict(padding=d, dilation=d, padding_mode=mode)
    forced = _conv_with_algorithm(algorithm, x, w, **kw)
    results = [forced, cppconv.Conv2d(w, **kw)._call_with_algorithm(algorithm, x)]
    if algorithm.split("__")[1].startswith(_native.selected_isa()):
        assert cppconv.explain(x.shape, w.shape, precision="high", **kw)["algorithm"] == algorithm
        results.append(cppconv.conv2d(x, w, precision="high", **kw))
    for y in results:
        assert_close(y, ref, patch * (HIGH_RTOL / 1e-5), np.float32, context=f"{kind} {algorithm}")
    if kind != "wide_range":
        direct = conv2d_abs_bound(x, w, None, 1, pads, d, 1, mode)
        assert np.max(np.abs(forced - ref) / direct) > 1e-5, "these inputs should break the direct-sum bound"


@needs_winograd
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_high_bound_on_random_layers(layout, dilation):
    """The "high" bound on ordinary data too: odd sizes (half-used tiles), several batches,
    bias and both layouts."""
    rng = make_rng("precision-random", layout, dilation)
    x = rng.standard_normal((2, 24, 13, 11) if dilation < 3 else (2, 24, 24, 30)).astype(np.float32)
    w = rng.standard_normal((40, 24, 3, 3)).astype(np.float32)
    b = rng.standard_normal(40).astype(np.float32)
    d = dilation
    pads = resolve_padding(d, x.shape[2:], w.shape[2:], 1, d)
    ref = conv2d_ref(x, w, b, 1, pads, d, 1, "zeros")
    bound = winograd_patch_bound(x, w, pads, d) + np.abs(b)[None, :, None, None]
    xin = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    for algorithm in WINOGRAD:
        y = _conv_with_algorithm(algorithm, xin, w, b, padding=d, dilation=d, layout=layout)
        if layout == "NHWC":
            y = y.transpose(0, 3, 1, 2)
        assert_close(y, ref, bound * (HIGH_RTOL / 1e-5), np.float32, context=algorithm)
