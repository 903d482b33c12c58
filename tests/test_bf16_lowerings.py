"""bfloat16 conv1d and conv3d through the driver's lowerings (cpp/conv.h, Lowering) on the
bfloat16 kernels: the lowered problem runs on a bfloat16 kernel wherever one takes it (widened
to float32 only where none does), explain() reports that kernel and the lowering, and the
results match the float64 reference of the same bfloat16 values (float32 sums, one rounding)
on every lowering, padding mode, stride, dilation, groups and layout, each bfloat16 kernel
forced, with out=, unbatched inputs, special values, and the same bits at 1, 2 and 3 threads."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import cppconv
from cppconv import _conv, _native

from conftest import make_rng
from reference import PADDING_MODES, conv_nd_abs_bound, conv_nd_ref
from test_bf16_kernel import BF16, DENSE, F32, F64, assert_close, bf16_random, channels_last
from test_conv_nd import LAST, pads_of

FUNCTIONS = {1: cppconv.conv1d, 3: cppconv.conv3d}
LAYERS = {1: cppconv.Conv1d, 3: cppconv.Conv3d}
FIRST = {1: "NCW", 3: "NCDHW"}

pytestmark = pytest.mark.skipif(not DENSE, reason="no AVX512-BF16 here: bfloat16 problems run widened")


def is_bf16_kernel(name):
    return "_bf16__" in name and "reference" not in name


def gather_lowering(algorithm):
    """A gathered 3-D problem's lowering: the dense bfloat16 kernels read the depth slices in
    place (depth_taps); the others are given a gathered copy."""
    reads_depth_taps = algorithm.split("__")[0] in ("conv2d_amx_bf16", "conv2d_channelvec_bf16")
    return "depth_taps" if reads_depth_taps else "depth_gather"


# The layers of docs/tuning.md's "bfloat16 through the lowerings": (name, x shape, w shape,
# arguments, lowering channels-first, lowering channels-last).
LAYERS_MEASURED = [
    ("wav2vec2 conv1", (1, 512, 3199), (512, 512, 3), dict(stride=2), "fold_rows", "fold_rows"),
    ("TCN", (1, 64, 4096), (64, 64, 3), dict(dilation=8, padding=8), "dilation_rows", "dilation_rows"),
    ("C3D conv3a", (1, 128, 8, 28, 28), (256, 128, 3, 3, 3), dict(padding=1), "depth_gather", "depth_gather"),
    ("3-D U-Net", (1, 32, 32, 32, 32), (32, 32, 3, 3, 3), dict(padding=1), "depth_gather", "depth_gather"),
    ("R(2+1)D spatial", (1, 64, 8, 56, 56), (144, 64, 1, 3, 3), dict(padding=(0, 1, 1)), "depth_gather",
     "depth_into_batch"),
    ("R(2+1)D temporal", (1, 144, 8, 56, 56), (64, 144, 3, 1, 1), dict(padding=(1, 0, 0)), "flatten", "flatten"),
    ("wav2vec2 conv0", (1, 1, 16000), (512, 1, 10), dict(stride=5), "taps_as_channels", "taps_as_channels"),
]


@pytest.mark.parametrize("case", LAYERS_MEASURED, ids=[c[0] for c in LAYERS_MEASURED])
@pytest.mark.parametrize("last", [False, True])
def test_measured_layers_run_a_bf16_kernel(case, last):
    """explain() names the bfloat16 kernel that runs the lowered problem (it named the widened
    float32 algorithm while every lowering widened)."""
    _, x_shape, w_shape, kw, first_lowering, last_lowering = case
    rank = len(x_shape) - 2
    if last:
        x_shape = (x_shape[0],) + x_shape[2:] + (x_shape[1],)
    info = cppconv.explain(x_shape, w_shape, dtype=BF16, layout=LAST[rank] if last else FIRST[rank], **kw)
    assert is_bf16_kernel(info["algorithm"]), info
    expected = last_lowering if last else first_lowering
    if expected == "depth_gather":
        expected = gather_lowering(info["algorithm"])
    assert info["lowering"] == expected, info


# (sizes, kernel, stride, padding, dilation, groups, C, K): problems that take each lowering.
CASES = {
    # 1-D: folded rows (long rows, stride and dilation), a tail row; dilation rows; taps as channels
    "fold_rows": [((300,), (3,), 1, 1, 1, 1, 16, 24), ((517,), (5,), 2, 2, 1, 2, 32, 32),
                  ((450,), (3,), 1, 3, 3, 1, 9, 17)],
    "dilation_rows": [((256,), (3,), 1, 8, 8, 1, 16, 16), ((320,), (2,), 1, 0, 16, 2, 32, 24)],
    "taps_as_channels": [((1000,), (10,), 5, 0, 1, 1, 1, 20), ((401,), (4,), 2, 3, 1, 1, 2, 16)],
    # 3-D: flattened (k,1,1) (and 1x1x1 strided in depth), into batch (channels-last), gathered
    "flatten": [((4, 6, 7), (3, 1, 1), 1, (1, 0, 0), 1, 1, 16, 24), ((5, 6, 7), (1, 1, 1), (2, 1, 1), 0, 1, 1, 32, 16),
                ((5, 4, 9), (2, 1, 1), 1, (1, 0, 0), 2, 2, 32, 32)],
    "depth_into_batch": [((4, 6, 7), (1, 3, 3), 1, (0, 1, 1), 1, 1, 16, 24)],
    "depth_gather": [((4, 6, 7), (1, 3, 3), 1, (0, 1, 1), 1, 1, 16, 24),
                     ((5, 6, 7), (3, 3, 3), (2, 1, 2), 1, 1, 1, 9, 17),
                     ((5, 7, 6), (3, 3, 3), 1, (1, 1, 1), (2, 1, 1), 2, 32, 16),
                     ((6, 5, 8), (2, 3, 3), (1, 2, 1), 1, 1, 1, 24, 40),
                     # odd channels per group and slice; a pixel's slices across 16-pair tile rows
                     ((5, 7, 6), (3, 3, 3), 1, 1, 1, 2, 26, 16), ((4, 5, 6), (3, 2, 3), 1, (1, 0, 1), 1, 1, 40, 33)],
}
PARAMS = [(lowering, i) for lowering, cases in CASES.items() for i in range(len(cases))]


def lowering_expected(lowering, i, last, algorithm):
    if lowering == "depth_into_batch" and not last:
        return gather_lowering(algorithm)
    if lowering == "depth_gather":
        if last and CASES[lowering][i][1][0] == 1:
            return "depth_into_batch"
        return gather_lowering(algorithm)
    return lowering


def run_case(lowering, i, last, padding_mode, activation, algorithm=None, seed="bf16_lowerings", out=False,
             unbatched=False):
    sizes, kernel, stride, padding, dilation, groups, c, k = CASES[lowering][i]
    rank = len(sizes)
    rng = make_rng(seed, lowering, i, last, padding_mode)
    x = bf16_random(rng, (2, c) + sizes)
    w = bf16_random(rng, (k, c // groups) + kernel)
    b = rng.standard_normal(k).astype(F32)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=padding_mode,
              activation=activation)
    pads = pads_of(padding, sizes, kernel, stride, dilation)
    args = dict(kw, padding=pads)
    x64, w64, b64 = x.astype(F64), w.astype(F64), b.astype(F64)
    ref, bound = conv_nd_ref(x64, w64, b64, **args), conv_nd_abs_bound(x64, w64, b64, **args)
    xl = channels_last(x) if last else x
    layout = LAST[rank] if last else FIRST[rank]
    if unbatched:
        xl, ref, bound = xl[1], ref[1:], bound[1:]
    if algorithm is not None:
        y = _conv._conv_with_algorithm(algorithm, xl, w, b, rank=rank, layout=layout, **kw)
    elif out:
        y = np.full(FUNCTIONS[rank](xl, w, b, layout=layout, **kw).shape, np.nan, BF16)
        got = FUNCTIONS[rank](xl, w, b, layout=layout, out=y, **kw)
        assert got is y
    else:
        y = FUNCTIONS[rank](xl, w, b, layout=layout, **kw)
    assert y.dtype == BF16
    if unbatched:
        y = y[None]
    if last:
        y = np.moveaxis(y, -1, 1)
    assert_close(y, ref, bound, True, f"{lowering} {i} last={last} {padding_mode} {activation} {algorithm}")
    info = cppconv.explain(xl.shape, w.shape, dtype=BF16, layout=layout, **kw)
    return y, info


@pytest.mark.parametrize("lowering,i", PARAMS)
@pytest.mark.parametrize("last", [False, True])
@pytest.mark.parametrize("padding_mode", PADDING_MODES)
def test_lowerings_on_bf16_kernels(lowering, i, last, padding_mode):
    _, info = run_case(lowering, i, last, padding_mode, "relu")
    expected = lowering_expected(lowering, i, last, info["algorithm"])
    if not (padding_mode != "zeros" and lowering == "dilation_rows"):
        assert info["lowering"] == expected, info
        assert is_bf16_kernel(info["algorithm"]), info


@pytest.mark.parametrize("lowering,i", PARAMS)
@pytest.mark.parametrize("last", [False, True])
def test_lowerings_every_bf16_kernel(lowering, i, last):
    """Each bfloat16 kernel forced: those that take the lowered problem match the reference, the
    others decline it ("does not accept"); at least one takes each case."""
    ran = []
    for name in DENSE:
        if f"__{_native.selected_isa()}_" not in name:
            continue
        try:
            run_case(lowering, i, last, "zeros", "silu", algorithm=name)
        except ValueError as e:
            assert "does not accept" in str(e), e
            continue
        ran.append(name)
    assert ran, "no bfloat16 kernel took the lowered problem"


@pytest.mark.parametrize("lowering,i", [(lowering, 0) for lowering in CASES])
@pytest.mark.parametrize("last", [False, True])
def test_lowerings_out_and_unbatched(lowering, i, last):
    run_case(lowering, i, last, "zeros", None, out=True)
    run_case(lowering, i, last, "reflect", "tanh", unbatched=True)


@pytest.mark.parametrize("lowering,i", PARAMS)
@pytest.mark.parametrize("last", [False, True])
def test_lowerings_identical_across_threads(lowering, i, last):
    sizes, kernel, stride, padding, dilation, groups, c, k = CASES[lowering][i]
    rank = len(sizes)
    rng = make_rng("bf16_lowerings_threads", lowering, i, last)
    x = bf16_random(rng, (3, c) + sizes)
    w = bf16_random(rng, (k, c // groups) + kernel)
    b = rng.standard_normal(k).astype(F32)
    layer = LAYERS[rank](w, b, stride=stride, padding=padding, dilation=dilation, groups=groups, activation="hardswish",
                         layout=LAST[rank] if last else FIRST[rank])
    xl = channels_last(x) if last else x
    results = [layer(xl, num_threads=n) for n in (1, 2, 3)]
    for y in results[1:]:
        np.testing.assert_array_equal(y.view(np.uint16), results[0].view(np.uint16))


@pytest.mark.parametrize("lowering", list(CASES))
@pytest.mark.parametrize("last", [False, True])
def test_lowerings_special_values(lowering, last):
    """inf and NaN in x reach the outputs whose windows read them, as in the float64 reference
    (through every lowering's copies; padding adds nothing)."""
    sizes, kernel, stride, padding, dilation, groups, c, k = CASES[lowering][0]
    rank = len(sizes)
    x = np.ones((1, c) + sizes, BF16)
    w = np.ones((k, c // groups) + kernel, BF16)
    flat = x.reshape(-1)
    flat[3] = np.inf
    flat[flat.size // 2 + 1] = np.nan
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    pads = pads_of(padding, sizes, kernel, stride, dilation)
    ref = conv_nd_ref(x.astype(F64), w.astype(F64), None, **dict(kw, padding=pads))
    xl = channels_last(x) if last else x
    y = FUNCTIONS[rank](xl, w, None, layout=LAST[rank] if last else FIRST[rank], **kw).astype(F64)
    if last:
        y = np.moveaxis(y, -1, 1)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    np.testing.assert_array_equal(np.isposinf(y), np.isposinf(ref))
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(y[finite], ref[finite])  # (sums of ones: exact)


@pytest.mark.parametrize("lowering,i", [(lowering, 0) for lowering in CASES])
@pytest.mark.parametrize("operands", ["compute_dtype", "float32_weights"])
def test_lowerings_with_float32_operands_explain_what_runs(lowering, i, operands):
    """A bfloat16 problem with float32 x or y (a compute_dtype="bfloat16" layer on float32 x, or
    bfloat16 x on float32 weights: a float32 result) widens where a lowering applies; explain()
    names that algorithm, and forcing it gives the call's bits (it named a bfloat16 kernel that
    refused the problem)."""
    sizes, kernel, stride, padding, dilation, groups, c, k = CASES[lowering][i]
    rank = len(sizes)
    rng = make_rng("bf16_lowerings_f32", lowering, i, operands)
    x = bf16_random(rng, (2, c) + sizes)
    w = bf16_random(rng, (k, c // groups) + kernel)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    if operands == "compute_dtype":
        layer, x = LAYERS[rank](w.astype(F32), **kw, compute_dtype="bfloat16"), x.astype(F32)
    else:
        layer = LAYERS[rank](w.astype(F32), **kw)
    y = layer(x)
    assert y.dtype == F32
    info = layer.explain(x.shape, x.dtype)
    np.testing.assert_array_equal(layer._call_with_algorithm(info["algorithm"], x), y)


def test_forced_kernel_declining_a_gathered_problem_raises():
    """A forced kernel that does not take a gathered 3-D problem (one gathered channel: no pair
    for the channels-first 1x1 kernel) is refused with ValueError; it was sized for the problem
    first, and that divided by its zero pairs (SIGFPE)."""
    name = f"conv2d_pointwise_pixelvec_bf16__{_native.selected_isa()}_"
    names = [n for n in DENSE if n.startswith(name)]
    if not names:
        pytest.skip("no channels-first 1x1 bfloat16 kernel here")
    for x_shape, layout, kw in (((1, 1, 4, 6, 6), "NCDHW", dict(dilation=(1, 2, 1))),
                                ((1, 4, 6, 6, 1), "NDHWC", dict(padding=(1, 0, 0)))):
        with pytest.raises(ValueError, match="does not accept"):
            _conv._conv_with_algorithm(names[0], np.ones(x_shape, BF16), np.ones((16, 1, 1, 3, 3), BF16), None,
                                       rank=3, layout=layout, **kw)


def depth_taps_explain(cap, x_shape, w_shape):
    code = (
        "import ml_dtypes, cppconv\n"
        f"info = cppconv.explain({x_shape}, {w_shape}, dtype=ml_dtypes.bfloat16, padding=1, layout='NDHWC')\n"
        "print(info['algorithm'], info['lowering'], info['packed_weight_bytes'])\n"
    )
    env = dict(os.environ, CPPCONV_MAX_ISA=cap) if cap else dict(os.environ)
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True).stdout
    algorithm, lowering, packed = out.split()
    return algorithm, lowering, int(packed)


def test_depth_taps_of_odd_slices():
    """Depth slices of an odd channel count end in a half-empty pair each. explain() gives the
    pack of the problem that runs (kd half-empty pairs a tap, not the gathered copy's one); AMX
    gathers instead where those pairs take another 16-pair step (21 channels, kd 3: 33 pairs
    against 32), and reads the slices where they do not (13 channels: 21 pairs and 20, both 32)."""
    if "avx512_bf16" in _native.max_isa_levels():
        algorithm, lowering, packed = depth_taps_explain("avx512_bf16", (1, 6, 9, 9, 21), (32, 21, 3, 3, 3))
        assert algorithm.startswith("conv2d_channelvec_bf16__") and lowering == "depth_taps"
        assert packed == 2 * 9 * (3 * 11) * 16 * 2 * 2  # k blocks x taps x pairs x 16 x 2 bfloat16
    if not any(n.startswith("conv2d_amx_bf16__") for n in DENSE):
        return
    for c, lowering in ((21, "depth_gather"), (13, "depth_taps")):
        algorithm, got, packed = depth_taps_explain(None, (1, 6, 9, 9, c), (32, c, 3, 3, 3))
        assert algorithm.startswith("conv2d_amx_bf16__") and got == lowering, (c, algorithm, got)
        assert packed == 2 * 9 * 32 * 16 * 2 * 2  # 16-pair steps: 32 pairs either way
