"""The native bfloat16 convolution (AVX512-BF16's vdpbf16ps where the CPU has it; the
widened float32 path elsewhere and for what it does not take): against a float64 convolution
of the same bfloat16 values, within the output's bfloat16 rounding plus the float32
accumulation bound, on shapes around its tiles (16-channel blocks, 6/8/12-pixel rows, channel
pairs), every padding mode, stride, dilation, groups, both layouts, activations, every ISA,
each bfloat16 algorithm forced, float32 operands of compute_dtype="bfloat16", and identical
bits across thread counts."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import cppconv
from cppconv import _conv, _native

from conftest import RTOL, make_rng
from reference import ACTIVATIONS, PADDING_MODES, conv_nd_abs_bound, conv_nd_ref

ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes is not installed: no NumPy bfloat16 dtype")
BF16 = np.dtype(ml_dtypes.bfloat16)
F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
BF16_ALGORITHMS = [name for name in _native.conv_algorithms() if "_bf16" in name]
KERNELS = [name for name in BF16_ALGORITHMS if "reference" not in name]
# The depthwise entries (the float32 depthwise kernels reading and writing bfloat16) and the
# dense and grouped vdpbf16ps kernels (channelvec; pixelvec for groups of few outputs;
# pointwise_pixelvec for channels-first 1x1 layers); all need AVX512-BF16.
DEPTHWISE = [name for name in KERNELS if "_depthwise_" in name]
DENSE = [name for name in KERNELS if name not in DEPTHWISE]
# The AMX kernel (tests/test_amx_bf16.py), listed where the CPU has AMX-BF16: ahead of the
# others on groups of 8 or more input and output channels (16 input channels of a 1x1 window).
AMX = [name for name in DENSE if name.startswith("conv2d_amx_bf16_")]
GROUPED = [name for name in DENSE if name.startswith("conv2d_pixelvec_")]
POINTWISE = [name for name in DENSE if name.startswith("conv2d_pointwise_pixelvec_")]


def bf16_random(rng, shape):
    return rng.standard_normal(shape).astype(F32).astype(BF16)


def channels_last(a):
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def assert_close(y, ref, bound, rounded, context):
    """|y - ref| within the float32 accumulation bound (RTOL * bound), plus bfloat16's rounding
    of the value (2^-8 of it) where the output is rounded to bfloat16."""
    y64 = y.astype(F64)
    r = 2.0**-8 if rounded else 0.0
    tol = (1 + r) * (RTOL[F32] * bound + 4 * 2.0**-23 * np.abs(ref)) + r * np.abs(ref) + 1e-30
    err = np.abs(y64 - ref)
    assert np.all(err <= tol), f"worst err/tol {np.max(err / tol):.3g} [{context}]"


def kernel_runs(isa):
    """Whether the bfloat16 kernel is in the ISA's table here (AVX-512 with AVX512-BF16)."""
    return any(f"__{isa}_" in name for name in DENSE)


def amx_takes(isa, case):
    """Whether the AMX kernel is in the ISA's table here and takes the case before the others."""
    cg, kg = case["c"] // case["groups"], case["k"] // case["groups"]
    kh, kw = case["kernel"]
    return any(f"__{isa}_" in name for name in AMX) and cg >= 8 and kg >= 8 and cg * kh * kw >= 16


def random_case(rng):
    """A random dense or grouped problem around the kernel's tiles."""
    c = int(rng.choice([2, 3, 5, 7, 15, 16, 17, 31, 32, 33]))
    k = int(rng.choice([1, 8, 15, 16, 17, 31, 32, 33, 47, 48, 49, 64, 65, 80]))
    groups = 1
    if rng.random() < 0.25:
        groups = int(rng.choice([2, 3]))
        c, k = c * groups, max(8, k) * groups
    kh, kw = [(1, 1), (3, 3), (3, 3), (5, 5), (1, 3), (3, 1), (2, 2), (7, 7)][rng.integers(8)]
    stride = (int(rng.choice([1, 1, 2, 3])), int(rng.choice([1, 1, 2])))
    dilation = (int(rng.choice([1, 1, 2])), int(rng.choice([1, 1, 2])))
    ow = int(rng.choice([1, 2, 5, 6, 7, 8, 9, 11, 12, 13, 17, 24, 25]))
    oh = int(rng.integers(1, 6))
    return case_for_output(rng, c, k, groups, (kh, kw), stride, dilation, oh, ow)


def random_grouped_case(rng):
    """A grouped problem of under 8 outputs per group (ResNeXt's 4 of 32 groups), around
    pixelvec's 16-column vectors, its 4-output chunks and its batches of up to 6 vectors; now
    and then one it declines (an odd channel count per group, column stride 2)."""
    groups = int(rng.choice([2, 3, 5, 32]))
    cg = int(rng.choice([2, 4] if groups == 32 else [2, 4, 6, 8, 16, 34]))
    if rng.random() < 0.1:
        cg = 3
    kg = int(rng.integers(1, 8))
    kh, kw = [(3, 3), (3, 3), (1, 1), (5, 5), (1, 3), (3, 1), (2, 2)][rng.integers(7)]
    stride = (int(rng.choice([1, 1, 2])), 2 if rng.random() < 0.1 else 1)
    dilation = (int(rng.choice([1, 1, 2])), int(rng.choice([1, 1, 2])))
    ow = int(rng.choice([1, 2, 7, 15, 16, 17, 28, 31, 32, 33, 48, 49, 97]))
    oh = int(rng.integers(1, 8))
    return case_for_output(rng, cg * groups, kg * groups, groups, (kh, kw), stride, dilation, oh, ow)


def case_for_output(rng, c, k, groups, kernel, stride, dilation, oh, ow):
    """finished_case for an oh x ow output: "same"-like padding (or none) in a random mode, and
    the input size that gives that output."""
    (kh, kw), pad = kernel, rng.random() < 0.7
    padding = ((kh - 1) * dilation[0] // 2, (kw - 1) * dilation[1] // 2) if pad else (0, 0)
    hw = tuple(max(1, (o - 1) * st + d * (kk - 1) + 1 - 2 * p)
               for o, st, d, kk, p in zip((oh, ow), stride, dilation, kernel, padding))
    mode = str(rng.choice(PADDING_MODES)) if pad else "zeros"
    return finished_case(rng, c, k, groups, hw, kernel, stride, dilation, padding, mode)


def finished_case(rng, c, k, groups, hw, kernel, stride, dilation, padding, mode):
    """A case dict: the padding mode made one PyTorch takes for this padding, an activation, a bias."""
    if mode == "reflect" and max(padding) >= min(hw):
        mode = "replicate"
    if mode == "circular" and max(padding) > min(hw):
        mode = "replicate"
    activation = ACTIVATIONS[rng.integers(len(ACTIVATIONS))]
    return dict(n=int(rng.integers(1, 3)), c=c, k=k, groups=groups, hw=hw, kernel=kernel, stride=stride,
                dilation=dilation, padding=padding, padding_mode=mode, activation=activation,
                bias=rng.random() < 0.8)


def operands(rng, case):
    x = bf16_random(rng, (case["n"], case["c"]) + case["hw"])
    w = bf16_random(rng, (case["k"], case["c"] // case["groups"]) + case["kernel"])
    b = rng.standard_normal(case["k"]).astype(F32) if case["bias"] else None
    return x, w, b


def reference(x, w, b, case):
    ph, pw = case["padding"]
    args = dict(stride=case["stride"], padding=(ph, ph, pw, pw), dilation=case["dilation"], groups=case["groups"],
                padding_mode=case["padding_mode"])
    x64, w64 = x.astype(F64), w.astype(F64)
    b64 = None if b is None else b.astype(F64)
    return (conv_nd_ref(x64, w64, b64, activation=case["activation"], **args),
            conv_nd_abs_bound(x64, w64, b64, activation=case["activation"], **args))


def kwargs_of(case):
    return dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"], groups=case["groups"],
                padding_mode=case["padding_mode"], activation=case["activation"])


def expects_kernel(isa, case, layout):
    """Whether the dispatcher should pick a bfloat16 kernel: dense or grouped with two or more
    channels per group; grouped with under 8 outputs per group (pixelvec) an even number of
    channels per group and unit column stride."""
    cg, kg = case["c"] // case["groups"], case["k"] // case["groups"]
    if case["groups"] > 1 and kg < 8:
        return kernel_runs(isa) and cg >= 2 and cg % 2 == 0 and case["stride"][1] == 1
    return kernel_runs(isa) and cg >= 2


@pytest.mark.parametrize("draw", range(6))
def test_bf16_sweep(isa, draw):
    rng = make_rng("bf16_kernel_sweep", draw)
    for _ in range(20):
        case = random_case(rng)
        x, w, b = operands(rng, case)
        ref, bound = reference(x, w, b, case)
        for layout in ("NCHW", "NHWC"):
            xl = channels_last(x) if layout == "NHWC" else x
            kw = kwargs_of(case)
            y = cppconv.conv2d(xl, w, b, layout=layout, **kw)
            assert y.dtype == BF16
            if layout == "NHWC":
                y = np.moveaxis(y, -1, 1)
            context = f"{isa} {layout} {case}"
            assert_close(y, ref, bound, True, context)
            algorithm = cppconv.explain(xl.shape, w.shape, dtype=BF16, layout=layout, bias=b is not None,
                                        **kw)["algorithm"]
            assert ("_bf16__" in algorithm) == expects_kernel(isa, case, layout), (algorithm, context)


def forced_runs(rng, cases, names, layout, twin_of=None):
    """(name, case, y, twin) for each case and each named algorithm that takes it, forced, y
    checked within the bound of the float64 convolution of the same bfloat16 values; twin is
    the same call through the algorithm twin_of(name) names (None without twin_of)."""
    for case in cases:
        x, w, b = operands(rng, case)
        ref, bound = reference(x, w, b, case)
        xl = channels_last(x) if layout == "NHWC" else x
        for name in names:
            try:
                y = _conv._conv_with_algorithm(name, xl, w, b, layout=layout, **kwargs_of(case))
            except ValueError as e:
                assert "does not accept" in str(e), e
                continue
            twin = _conv._conv_with_algorithm(twin_of(name), xl, w, b, layout=layout, **kwargs_of(case)) \
                if twin_of else None
            assert_close(np.moveaxis(y, -1, 1) if layout == "NHWC" else y, ref, bound, True, f"{name} {case}")
            yield name, case, y, twin


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_bf16_forced_algorithms(isa, layout):
    """Each bfloat16 algorithm (the kernels and the reference) forced in turn."""
    rng = make_rng("bf16_forced", layout)
    ran = {}
    for name, *_ in forced_runs(rng, [random_case(rng) for _ in range(24)], BF16_ALGORITHMS, layout):
        ran[name] = ran.get(name, 0) + 1
    # (The depthwise entries take none of these problems: test_bf16_depthwise_forced; pixelvec
    # and pointwise_pixelvec take few: test_bf16_grouped_forced, test_bf16_pointwise_forced.)
    assert all(ran.get(name, 0) >= 5 for name in BF16_ALGORITHMS if name not in DEPTHWISE + GROUPED + POINTWISE), ran


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_bf16_grouped_forced(isa, layout):
    """Grouped problems of few outputs per group with each bfloat16 algorithm forced: pixelvec
    (and the reference) within the bound, and the dispatcher's choice what expects_kernel says."""
    rng = make_rng("bf16_grouped_forced", layout)
    ran = {}
    cases = [random_grouped_case(rng) for _ in range(30)]
    for name, *_ in forced_runs(rng, cases, BF16_ALGORITHMS, layout):
        ran[name] = ran.get(name, 0) + 1
    assert all(ran.get(name, 0) >= 15 for name in GROUPED if f"__{isa}_" in name), ran
    for case in cases:
        x, w, b = operands(rng, case)
        ref, bound = reference(x, w, b, case)
        xl = channels_last(x) if layout == "NHWC" else x
        y = cppconv.conv2d(xl, w, b, layout=layout, **kwargs_of(case))
        assert_close(np.moveaxis(y, -1, 1) if layout == "NHWC" else y, ref, bound, True, f"{isa} {case}")
        algorithm = cppconv.explain(xl.shape, w.shape, dtype=BF16, layout=layout, bias=b is not None,
                                    **kwargs_of(case))["algorithm"]
        assert ("_bf16__" in algorithm) == expects_kernel(isa, case, layout), (algorithm, case)


def random_pointwise_case(rng):
    """A dense 1x1 problem of unit stride without padding: output channels around
    pointwise_pixelvec's 4-output chunks, planes around its 16-pixel vectors and batches of up
    to 6 of them, several blocks of pixels (512 channels take 256 a block); now and then one it
    declines (an odd channel count, a plane of 17 pixels that would fill few of its lanes, a
    plane under its 192 pixels)."""
    c = int(rng.choice([2, 4, 6, 32, 34, 512] + ([3] if rng.random() < 0.1 else [])))
    k = int(rng.choice([1, 3, 4, 5, 8, 17, 64]))
    hw = [(12, 16), (4, 4), (1, 207), (13, 15), (10, 13), (14, 14), (3, 65), (28, 28), (16, 40), (1, 17),
          (2, 97), (1, 208)][rng.integers(12)]
    return finished_case(rng, c, k, 1, hw, (1, 1), (1, 1), (1, 1), (0, 0), "zeros")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_bf16_pointwise_forced(isa, layout, restore_threads):
    """Channels-first 1x1 layers with each bfloat16 algorithm forced: pointwise_pixelvec (and the
    others) within the bound, pointwise_pixelvec's bits channelvec's (the same sums in the same
    order) at 1, 2 and 3 threads, and the dispatcher's choice pointwise_pixelvec where it takes
    the problem."""
    rng = make_rng("bf16_pointwise_forced", layout)
    cases = [random_pointwise_case(rng) for _ in range(24)]
    ran = {}
    for name, *_ in forced_runs(rng, cases, BF16_ALGORITHMS, layout):
        ran[name] = ran.get(name, 0) + 1
    if layout == "NHWC":
        assert not any(name in ran for name in POINTWISE), ran
        return
    assert all(ran.get(name, 0) >= 12 for name in POINTWISE if f"__{isa}_" in name), ran
    for name in POINTWISE:
        if f"__{isa}_" not in name:
            continue
        channelvec = name.replace("_pointwise_pixelvec_bf16__", "_channelvec_bf16__").replace("_96x4", "_6x64")
        for case in cases:
            x, w, b = operands(rng, case)
            for threads in (1, 2, 3):
                cppconv.set_num_threads(threads)
                try:
                    y = _conv._conv_with_algorithm(name, x, w, b, layout=layout, **kwargs_of(case))
                except ValueError as e:
                    assert "does not accept" in str(e), e
                    break
                twin = _conv._conv_with_algorithm(channelvec, x, w, b, layout=layout, **kwargs_of(case))
                assert np.array_equal(y.view(np.uint16), twin.view(np.uint16)), (threads, case)
            algorithm = cppconv.explain(x.shape, w.shape, dtype=BF16, layout=layout, bias=b is not None,
                                        **kwargs_of(case))["algorithm"]
            plane = case["hw"][0] * case["hw"][1]
            takes = case["c"] % 2 == 0 and case["activation"] != "tanh" and plane >= 192 and \
                -(-plane // 16) * 16 * 8 <= plane * 9 and not amx_takes(isa, case)
            assert (algorithm == name) == takes, (algorithm, case)
    # A float32 layer with compute_dtype="bfloat16" (float32 x rounded as the tile is copied).
    x, w, b = operands(rng, dict(cases[0], n=2, c=34, k=17, hw=(14, 16), activation=None, bias=True))
    x32 = (x.astype(F32) * (1 + 2.0**-12)).astype(F32)
    ref, bound = reference(x32.astype(BF16), w, b, dict(cases[0], c=34, k=17, activation=None))
    layer = cppconv.Conv2d(w.astype(F32), b, layout=layout, compute_dtype="bfloat16")
    assert_close(layer(x32), ref, bound, False, "compute_dtype")
    if POINTWISE and kernel_runs(isa):
        assert layer.explain(x32.shape)["algorithm"] in POINTWISE + AMX


def test_bf16_channels_first_tile_rows(isa):
    """Channels-first bfloat16 input goes through the tile's interleaved channel-pair rows (32
    columns a step); channels-last input is read whole pixels at a time.  The kernel sums both in
    the same order, so the two layouts give the same bits, on widths around 16 and 32 columns,
    an odd channel (no partner), zero and reflect padding, a 1x1 and a 3x3 window."""
    if not kernel_runs(isa):
        pytest.skip(f"no bfloat16 kernel in {isa}'s table")
    rng = make_rng("bf16_channels_first_tile_rows")
    name = next(n for n in DENSE if f"__{isa}_" in n and n.startswith("conv2d_channelvec_"))
    for width in (1, 2, 15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65, 70):
        for c, kernel, pad, mode in ((5, 1, 0, "zeros"), (4, 3, 1, "zeros"), (7, 3, 2, "reflect"), (2, 1, 0, "zeros")):
            if mode == "reflect" and pad >= width:
                mode = "replicate"
            x = bf16_random(rng, (1, c, 3, width))
            w = bf16_random(rng, (20, c, kernel, kernel))
            b = rng.standard_normal(20).astype(F32)
            kw = dict(padding=pad, padding_mode=mode)
            y = _conv._conv_with_algorithm(name, x, w, b, layout="NCHW", **kw)
            y_last = _conv._conv_with_algorithm(name, channels_last(x), w, b, layout="NHWC", **kw)
            context = f"{isa} width {width} c {c} kernel {kernel} pad {pad} {mode}"
            assert np.array_equal(y.view(np.uint16), np.moveaxis(y_last, -1, 1).view(np.uint16)), context
            args = dict(stride=(1, 1), padding=(pad, pad, pad, pad), dilation=(1, 1), groups=1, padding_mode=mode)
            x64, w64, b64 = x.astype(F64), w.astype(F64), b.astype(F64)
            assert_close(y, conv_nd_ref(x64, w64, b64, **args), conv_nd_abs_bound(x64, w64, b64, **args), True,
                         context)


def test_bf16_kernel_named_and_tiles():
    """The kernel is registered exactly where the CPU has AVX512-BF16 (and CPPCONV_MAX_ISA
    allows it), and explain names it."""
    assert bool(DENSE) == ("avx512_bf16" in _native.cpu_features()), (DENSE, _native.cpu_features())
    if not DENSE:
        pytest.skip("no AVX512-BF16 on this CPU (or CPPCONV_MAX_ISA caps it): the widened path runs")
    x, w = np.zeros((1, 64, 14, 14), BF16), np.zeros((64, 64, 3, 3), BF16)
    info = cppconv.explain(x.shape, w.shape, dtype=BF16, padding=1)
    assert info["algorithm"] in DENSE
    assert cppconv.explain(x.shape, (64, 1, 3, 3), dtype=BF16, padding=1, groups=64)["algorithm"] in DEPTHWISE
    # ResNeXt's 32 groups of 4 channels, channels-last too (not lowered to channels-first).
    for layout, shape in (("NCHW", (1, 128, 28, 28)), ("NHWC", (1, 28, 28, 128))):
        info = cppconv.explain(shape, (128, 4, 3, 3), dtype=BF16, padding=1, groups=32, layout=layout)
        assert info["algorithm"] in GROUPED and info["lowering"] == "none", info


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_bf16_compute_dtype_layers(isa, layout):
    """A float32 layer with compute_dtype="bfloat16" (float32 x rounded as the tile is copied,
    float32 output), and dtype="bfloat16" on float32 operands (bfloat16 output)."""
    rng = make_rng("bf16_compute_dtype", layout)
    for draw in range(16):
        case = random_case(rng) if draw < 10 else random_grouped_case(rng)
        x, w, b = operands(rng, case)
        x32 = (x.astype(F32) * (1 + 2.0**-12)).astype(F32)  # between bfloat16 values: rounded by the kernel
        xr = x32.astype(BF16)
        ref, bound = reference(xr, w, b, case)
        xl = channels_last(x32) if layout == "NHWC" else x32
        layer = cppconv.Conv2d(w.astype(F32), b, layout=layout, compute_dtype="bfloat16", **kwargs_of(case))
        y = layer(xl)
        assert y.dtype == F32
        y = np.moveaxis(y, -1, 1) if layout == "NHWC" else y
        assert_close(y, ref, bound, False, f"layer {case}")
        if expects_kernel(isa, case, layout):
            assert "_bf16__" in layer.explain(xl.shape)["algorithm"]
        y = cppconv.conv2d(xl, w.astype(F32), b, layout=layout, dtype="bfloat16", **kwargs_of(case))
        assert y.dtype == BF16
        y = np.moveaxis(y, -1, 1) if layout == "NHWC" else y
        assert_close(y, ref, bound, True, f"dtype=bfloat16 {case}")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_bf16_identical_across_threads(layout, restore_threads):
    rng = make_rng("bf16_kernel_threads", layout)
    x = bf16_random(rng, (3, 35, 29, 31))
    w = bf16_random(rng, (70, 35, 3, 3))
    b = rng.standard_normal(70).astype(F32)
    xl = channels_last(x) if layout == "NHWC" else x
    results = [cppconv.conv2d(xl, w, b, padding=1, layout=layout, activation="silu", num_threads=n) for n in (1, 2, 3)]
    for y in results[1:]:
        np.testing.assert_array_equal(y.view(np.uint16), results[0].view(np.uint16))
    # Grouped, few outputs per group (pixelvec where the CPU has it).
    x = bf16_random(rng, (2, 64, 29, 37))
    w = bf16_random(rng, (96, 4, 3, 3))
    xl = channels_last(x) if layout == "NHWC" else x
    results = [cppconv.conv2d(xl, w, padding=1, groups=16, layout=layout, activation="silu", num_threads=n)
               for n in (1, 2, 3)]
    for y in results[1:]:
        np.testing.assert_array_equal(y.view(np.uint16), results[0].view(np.uint16))


def test_bf16_special_values():
    """inf and NaN pass through the kernel's float32 sums and its bfloat16 rounding."""
    x = np.ones((1, 4, 5, 7), BF16)
    x[0, 0, 1, 1] = np.inf
    x[0, 3, 3, 3] = np.nan
    w = np.ones((16, 4, 1, 1), BF16)
    y = cppconv.conv2d(x, w).astype(F64)
    assert np.all(np.isposinf(y[0, :, 1, 1])) and np.all(np.isnan(y[0, :, 3, 3]))
    finite = np.isfinite(y)
    assert np.all(y[finite] == 4.0)
    big = np.full((1, 2, 2, 2), 3e38, F32).astype(BF16)
    assert np.all(np.isposinf(cppconv.conv2d(big, np.ones((16, 2, 1, 1), BF16)).astype(F64)))


@pytest.mark.parametrize("cap", ["avx2", "avx512", "avx512_vnni"])
def test_bf16_capped_isa_widens(cap):
    """CPPCONV_MAX_ISA below avx512_bf16: no bfloat16 kernel (dense or depthwise) is listed or
    chosen, and the widened path gives the same values within the bound."""
    if cap not in _native.max_isa_levels():
        pytest.skip(f"CPPCONV_MAX_ISA={cap} is not a level of this machine")
    code = (
        "import numpy as np, ml_dtypes, cppconv\n"
        "from cppconv import _native\n"
        "assert not any('_bf16__' in a for a in _native.conv_algorithms())\n"
        "xd = np.random.default_rng(6).standard_normal((1, 17, 8, 16)).astype(ml_dtypes.bfloat16)\n"
        "wd = np.random.default_rng(7).standard_normal((17, 1, 3, 3)).astype(ml_dtypes.bfloat16)\n"
        "info = cppconv.explain(xd.shape, wd.shape, dtype=ml_dtypes.bfloat16, padding=1, groups=17)\n"
        "assert '_f32' in info['algorithm'], info['algorithm']\n"
        "np.save(__import__('sys').argv[2], cppconv.conv2d(xd, wd, padding=1, groups=17).astype(np.float64))\n"
        "rng = np.random.default_rng(5)\n"
        "x = rng.standard_normal((1, 20, 9, 11)).astype(ml_dtypes.bfloat16)\n"
        "w = rng.standard_normal((33, 20, 3, 3)).astype(ml_dtypes.bfloat16)\n"
        "info = cppconv.explain(x.shape, w.shape, dtype=ml_dtypes.bfloat16, padding=1)\n"
        "assert '_f32' in info['algorithm'], info['algorithm']\n"
        "np.save(__import__('sys').argv[1], cppconv.conv2d(x, w, padding=1).astype(np.float64))\n"
    )
    out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"cppconv_bf16_cap_{os.getpid()}.npy")
    out_dw = out.replace(".npy", "_dw.npy")
    env = dict(os.environ, CPPCONV_MAX_ISA=cap)
    subprocess.run([sys.executable, "-c", code, out, out_dw], env=env, check=True)
    y, y_dw = np.load(out), np.load(out_dw)
    os.remove(out)
    os.remove(out_dw)
    xd = np.random.default_rng(6).standard_normal((1, 17, 8, 16)).astype(BF16)
    wd = np.random.default_rng(7).standard_normal((17, 1, 3, 3)).astype(BF16)
    args = dict(padding=(1, 1, 1, 1), groups=17)
    ref = conv_nd_ref(xd.astype(F64), wd.astype(F64), **args)
    assert_close(y_dw, ref, conv_nd_abs_bound(xd.astype(F64), wd.astype(F64), **args), True, cap + " depthwise")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 20, 9, 11)).astype(BF16)
    w = rng.standard_normal((33, 20, 3, 3)).astype(BF16)
    args = dict(padding=(1, 1, 1, 1))
    ref = conv_nd_ref(x.astype(F64), w.astype(F64), **args)
    bound = conv_nd_abs_bound(x.astype(F64), w.astype(F64), **args)
    assert_close(y, ref, bound, True, cap)


# Depthwise problems around the 16-channel blocks, the 8-pixel register blocks and the flat
# 3x3 kernel's rows (a multiple of 8 wide, 16m or 16m + 8).
def random_depthwise_case(rng):
    c = int(rng.choice([1, 2, 3, 15, 16, 17, 31, 32, 33, 48]))
    kh, kw = [(3, 3), (3, 3), (3, 3), (5, 5), (1, 1), (3, 1), (1, 3), (2, 2), (7, 7)][rng.integers(9)]
    stride = (int(rng.choice([1, 1, 2])), int(rng.choice([1, 1, 2])))
    dilation = (int(rng.choice([1, 1, 1, 2])), int(rng.choice([1, 1, 1, 2])))
    h, w = int(rng.choice([1, 2, 5, 7, 8, 13, 16])), int(rng.choice([1, 3, 7, 8, 9, 16, 17, 24, 40]))
    pad = rng.random() < 0.8
    ph = (kh - 1) * dilation[0] // 2 if pad else 0
    pw = (kw - 1) * dilation[1] // 2 if pad else 0
    h, w = max(h, dilation[0] * (kh - 1) + 1 - 2 * ph), max(w, dilation[1] * (kw - 1) + 1 - 2 * pw)
    mode = str(rng.choice(PADDING_MODES)) if pad and rng.random() < 0.4 else "zeros"
    return finished_case(rng, c, c, c, (h, w), (kh, kw), stride, dilation, (ph, pw), mode)


def flat3x3_case(rng, w):
    """The flat 3x3 kernel's problem: 3x3, stride 1, zero padding 1, rows a multiple of 8 wide."""
    c = int(rng.choice([1, 3, 16, 17]))
    return dict(n=1, c=c, k=c, groups=c, hw=(int(rng.choice([1, 2, 3, 7])), w), kernel=(3, 3), stride=(1, 1),
                dilation=(1, 1), padding=(1, 1), padding_mode="zeros",
                activation=[None, "relu", "relu6", "hardswish"][rng.integers(4)], bias=rng.random() < 0.8)


def widened_twin(name):
    """The float32 kernel a bfloat16 depthwise entry runs on widened values."""
    return name.replace("_bf16__", "_f32__")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_bf16_depthwise_forced(isa, layout):
    """Each bfloat16 depthwise entry forced in turn: within the bound of the float64 convolution
    of the same bfloat16 values, and equal to its float32 kernel's result on the widened values
    rounded once (the widened path with that kernel forced)."""
    rng = make_rng("bf16_depthwise_forced", layout)
    names = [name for name in DEPTHWISE if f"__{isa}_" in name]
    ran = {}
    cases = [random_depthwise_case(rng) for _ in range(40)] + [flat3x3_case(rng, w) for w in (8, 16, 24, 40, 56)]
    for name, case, y, twin in forced_runs(rng, cases, names, layout, widened_twin):
        ran[name] = ran.get(name, 0) + 1
        assert y.dtype == BF16
        np.testing.assert_array_equal(y.astype(F32), twin.astype(F32), err_msg=f"{name} {case}")
    expected = {name for name in names if layout == "NCHW" or "flat3x3" not in name}
    assert all(ran.get(name, 0) >= 5 for name in expected), ran


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_bf16_depthwise_chosen(isa, layout):
    """The dispatcher runs a bfloat16 depthwise entry where the ISA has them (MobileNet's layers),
    and the result is within the bound."""
    rng = make_rng("bf16_depthwise_chosen", layout)
    for shape, stride in (((1, 144, 56, 56), 1), ((1, 48, 14, 14), 2), ((2, 33, 9, 16), 1)):
        c = shape[1]
        x = bf16_random(rng, shape)
        w = bf16_random(rng, (c, 1, 3, 3))
        b = rng.standard_normal(c).astype(F32)
        xl = channels_last(x) if layout == "NHWC" else x
        kw = dict(stride=stride, padding=1, groups=c, layout=layout, activation="relu6")
        algorithm = cppconv.explain(xl.shape, w.shape, dtype=BF16, bias=True, **kw)["algorithm"]
        assert ("_depthwise_" in algorithm and "_bf16__" in algorithm) == any(f"__{isa}_" in n for n in DEPTHWISE), (
            algorithm
        )
        layer = cppconv.Conv2d(w, b, stride=stride, padding=1, groups=c, layout=layout, activation="relu6")
        assert layer.explain(xl.shape, dtype=BF16)["algorithm"] == algorithm
        for y in (cppconv.conv2d(xl, w, b, **kw), layer(xl)):
            y = np.moveaxis(y, -1, 1) if layout == "NHWC" else y
            case = dict(stride=(stride, stride), padding=(1, 1), dilation=(1, 1), groups=c, padding_mode="zeros",
                        activation="relu6")
            ref, bound = reference(x, w, b, case)
            assert_close(y, ref, bound, True, f"{algorithm} {shape}")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_bf16_depthwise_identical_across_threads(layout, restore_threads):
    rng = make_rng("bf16_depthwise_threads", layout)
    x = bf16_random(rng, (2, 37, 24, 40))
    w = bf16_random(rng, (37, 1, 3, 3))
    b = rng.standard_normal(37).astype(F32)
    xl = channels_last(x) if layout == "NHWC" else x
    for stride in (1, 2):
        results = [cppconv.conv2d(xl, w, b, stride=stride, padding=1, groups=37, layout=layout, num_threads=n)
                   for n in (1, 2, 3)]
        for y in results[1:]:
            np.testing.assert_array_equal(y.view(np.uint16), results[0].view(np.uint16))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_bf16_layer_one_step_path(layout):
    """A bfloat16 Conv2d call goes through the native one-step path (x and out as their bits):
    the same bits as the one-shot conv2d, into `out` or a new array; an `out` of another dtype
    or a strided x still takes the full path (which raises, or computes the same bits)."""
    rng = make_rng("bf16_layer_one_step", layout)
    for c, k, groups, bias_dtype in ((16, 16, 16, F32), (12, 20, 1, BF16), (5, 7, 1, None)):
        x = bf16_random(rng, (2, c, 9, 16))
        w = bf16_random(rng, (k, c // groups, 3, 3))
        b = None if bias_dtype is None else rng.standard_normal(k).astype(bias_dtype)
        xl = channels_last(x) if layout == "NHWC" else x
        kw = dict(padding=1, groups=groups, layout=layout, activation="relu")
        expected = cppconv.conv2d(xl, w, b, **kw)
        layer = cppconv.Conv2d(w, b, **kw)
        y = layer(xl)
        assert y.dtype == BF16 and y.shape == expected.shape
        np.testing.assert_array_equal(y.view(np.uint16), expected.view(np.uint16))
        out = np.empty(expected.shape, BF16)
        assert layer(xl, out=out) is out
        np.testing.assert_array_equal(out.view(np.uint16), expected.view(np.uint16))
        with pytest.raises(TypeError, match="out has dtype float32"):  # (the full path's check)
            layer(xl, out=np.empty(expected.shape, F32))
        wide = np.zeros(xl.shape[:-1] + (2 * xl.shape[-1],), BF16)
        wide[..., ::2] = xl
        strided = wide[..., ::2]
        np.testing.assert_array_equal(layer(strided).view(np.uint16), expected.view(np.uint16))
    image = bf16_random(rng, (11, 13))
    kernel = bf16_random(rng, (3, 3))
    np.testing.assert_array_equal(cppconv.Conv2d(kernel, padding=1)(image).view(np.uint16),
                                  cppconv.conv2d(image, kernel, padding=1).view(np.uint16))
