"""Correctness of cppconv.conv2d and cppconv.Conv2d against the float64 NumPy reference.

Most tests take the `isa` fixture, so they run once per instruction set the machine supports.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest

import cppconv
from cppconv import _conv, _native

from conftest import assert_close, make_rng, random_array
from reference import (
    ACTIVATIONS,
    PADDING_MODES,
    as_pair,
    conv2d_abs_bound,
    conv2d_ref,
    expected_result_dtype,
    resolve_padding,
)

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def to_layout(a4, layout, batched=True):
    """A logical NCHW 4-D array as conv2d takes it: NHWC transposed (C-contiguous), N dropped."""
    if layout == "NHWC":
        a4 = np.ascontiguousarray(a4.transpose(0, 2, 3, 1))
    if not batched:
        assert a4.shape[0] == 1
        a4 = a4[0]
    return a4


def reference(x4, w, b, *, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros",
              activation=None):
    """(ref, bound) in NCHW 4-D for logical NCHW input x4 and conv2d's own padding argument."""
    pads = resolve_padding(padding, x4.shape[2:], w.shape[2:], stride, dilation)
    args = (stride, pads, dilation, groups, padding_mode, activation)
    return conv2d_ref(x4, w, b, *args), conv2d_abs_bound(x4, w, b, *args)


def check_conv(x4, w, b=None, *, layout="NCHW", batched=True, x_in=None, out=None, context="",
               algorithm=None, **kw):
    """Runs conv2d (or the named algorithm) on x4 (logical NCHW 4-D, passed in `layout`, or x_in
    as given) and compares it with the reference.  Returns the result."""
    ref, bound = reference(x4, w, b, **kw)
    dtype = expected_result_dtype(x4, w, b)
    if x_in is None:
        x_in = to_layout(x4, layout, batched)
    extra = {} if out is None else {"out": out}
    if algorithm is None:
        y = cppconv.conv2d(x_in, w, b, layout=layout, **kw, **extra)
    else:
        y = _conv._conv_with_algorithm(algorithm, x_in, w, b, layout=layout, **kw, **extra)
    if out is not None:
        assert y is out, "conv2d(out=...) must return out itself"
    assert_close(y, to_layout(ref, layout, batched), to_layout(bound, layout, batched), dtype,
                 context=context or repr(kw))
    return y


def make_inputs(rng, N, C, H, W, K, kernel, groups=1, bias=True, xdtype=F32, wdtype=None,
                bdtype=None, scale=1.0):
    kh, kw = as_pair(kernel)
    wdtype = xdtype if wdtype is None else wdtype
    bdtype = wdtype if bdtype is None else bdtype
    x = random_array(rng, (N, C, H, W), xdtype, scale)
    w = random_array(rng, (K, C // groups, kh, kw), wdtype)
    b = random_array(rng, (K,), bdtype) if bias else None
    return x, w, b


def run_case(N=2, C=3, H=8, W=9, K=4, kernel=3, groups=1, bias=True, xdtype=F32, wdtype=None,
             bdtype=None, layout="NCHW", batched=True, scale=1.0, **kw):
    rng = make_rng(N, C, H, W, K, kernel, groups, bias, str(xdtype), str(wdtype), str(bdtype),
                   layout, batched, sorted(kw.items(), key=str))
    x, w, b = make_inputs(rng, N, C, H, W, K, kernel, groups, bias, xdtype, wdtype, bdtype, scale)
    ctx = (f"N={N} C={C} H={H} W={W} K={K} kernel={kernel} groups={groups} bias={bias} "
           f"x={np.dtype(xdtype)} layout={layout} batched={batched} {kw}")
    return check_conv(x, w, b, groups=groups, layout=layout, batched=batched, context=ctx, **kw)


# --------------------------------------------------------------------------------------------
# Basics
# --------------------------------------------------------------------------------------------

def test_version():
    assert isinstance(cppconv.__version__, str) and cppconv.__version__
    assert cppconv.__version__[0].isdigit()


def test_isa_hooks():
    isas = _native.available_isas()
    assert isas, "no ISA available"
    assert _native.default_isa() in isas
    for name in isas:
        _native.select_isa(name)
        assert _native.selected_isa() == name
    _native.select_isa(_native.default_isa())
    assert _native.selected_isa() == _native.default_isa()
    algos = _native.conv_algorithms()
    assert "conv_reference_f32" in algos and "conv_reference_f64" in algos
    assert len(set(algos)) == len(algos)


FEATURE_LEVELS = {"avx512_vnni": ["avx512_vnni"], "avx512_bf16": ["avx512_vnni", "avx512_bf16"]}


def test_cpu_features_follow_max_isa():
    """CPPCONV_MAX_ISA set to an ISA turns the CPU features off; set to a feature level it keeps
    the features up to that level, with every ISA."""
    levels = list(_native.max_isa_levels())
    isas = [level for level in levels if level not in (*FEATURE_LEVELS, "amx")]  # (this process may be capped)
    assert set(_native.available_isas()) <= set(isas)
    assert set(_native.cpu_features()) <= {"avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16"}
    code = "import cppconv, json; print(json.dumps([cppconv.info()['isa'], cppconv.info()['cpu_features']]))"
    for cap in levels:
        env = dict(os.environ, CPPCONV_MAX_ISA=cap)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        isa, features = json.loads(out.stdout)
        if cap in isas:
            assert (isa, features) == (cap, [])
        else:
            assert isa == isas[-1]
            if cap in FEATURE_LEVELS:
                assert set(features) <= set(FEATURE_LEVELS[cap])
                assert set(features) >= set(FEATURE_LEVELS[cap]) & set(_native.cpu_features())
            else:  # amx: everything this CPU has
                assert set(features) >= set(_native.cpu_features())


def test_fma_peak(isa):
    # The benchmark's reference rate (performance targets live in bench/, not in tests):
    # positive on every ISA, its arguments checked.
    one = _native.fma_peak_gflops(1, 0.0)
    assert one > 0
    assert _native.fma_peak_gflops(2, 0.0) > 0
    for threads, seconds in [(0, 0.1), (_native.MAX_THREADS + 1, 0.1), (1, -1.0), (1, float("nan")), (1, 61.0)]:
        with pytest.raises(ValueError):
            _native.fma_peak_gflops(threads, seconds)


def test_known_values(isa):
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    y = cppconv.conv2d(x, np.ones((1, 1, 2, 2)))
    np.testing.assert_array_equal(y, [[[[10, 14, 18], [26, 30, 34], [42, 46, 50]]]])
    # Cross-correlation, not convolution: a kernel with only its top-left tap set picks x[i, j].
    w = np.zeros((1, 1, 2, 2))
    w[0, 0, 0, 0] = 1
    np.testing.assert_array_equal(cppconv.conv2d(x, w)[0, 0], x[0, 0, :3, :3])
    w = np.zeros((1, 1, 2, 2), np.float32)
    w[0, 0, 1, 0] = 1
    y = cppconv.conv2d(x.astype(np.float32), w, np.array([0.5], np.float32))
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y[0, 0], x[0, 0, 1:, :3] + 0.5)
    # 2-D in, 2-D out.
    y = cppconv.conv2d(x[0, 0], np.ones((2, 2)), stride=2)
    np.testing.assert_array_equal(y, [[10, 18], [42, 50]])


# A curated list that touches every argument at least once, with some awkward sizes.
CASES = [
    dict(N=1, C=1, H=5, W=5, K=1, kernel=3),
    dict(N=2, C=3, H=8, W=9, K=4, kernel=3, padding=1),
    dict(N=2, C=3, H=8, W=9, K=4, kernel=(2, 4), padding=(1, 2)),
    dict(N=1, C=5, H=11, W=17, K=5, kernel=(1, 5), padding=((0, 0), (2, 2)), stride=(1, 2)),
    dict(N=1, C=5, H=17, W=11, K=7, kernel=(5, 1), padding=((2, 1), (0, 0)), stride=(2, 1)),
    dict(N=3, C=2, H=9, W=10, K=3, kernel=3, stride=2, padding=1),
    dict(N=1, C=4, H=13, W=14, K=6, kernel=3, stride=3, padding=2, dilation=2),
    dict(N=1, C=3, H=15, W=16, K=4, kernel=3, dilation=(3, 1), padding="same"),
    dict(N=1, C=3, H=12, W=12, K=4, kernel=4, padding="same", stride=(2, 3)),
    dict(N=1, C=3, H=12, W=12, K=4, kernel=(2, 5), padding="valid", stride=2, dilation=(1, 2)),
    dict(N=2, C=4, H=7, W=8, K=4, kernel=3, groups=2, padding=1),
    dict(N=2, C=6, H=7, W=8, K=12, kernel=3, groups=3, padding=1, stride=2),
    dict(N=1, C=8, H=9, W=9, K=8, kernel=3, groups=8, padding=1),               # depthwise
    dict(N=1, C=5, H=9, W=9, K=15, kernel=5, groups=5, padding=2),              # depthwise x3
    dict(N=1, C=4, H=6, W=7, K=3, kernel=3, padding=2, padding_mode="reflect"),
    dict(N=1, C=4, H=6, W=7, K=3, kernel=3, padding=(1, 3), padding_mode="replicate"),
    dict(N=1, C=4, H=6, W=7, K=3, kernel=3, padding=((3, 1), (0, 2)), padding_mode="circular"),
    dict(N=1, C=4, H=6, W=7, K=3, kernel=3, padding="same", padding_mode="reflect", stride=2),
    dict(N=2, C=3, H=8, W=9, K=5, kernel=3, padding=1, layout="NHWC"),
    dict(N=2, C=6, H=8, W=9, K=4, kernel=3, padding=1, groups=2, layout="NHWC", stride=2),
    dict(N=1, C=7, H=8, W=9, K=7, kernel=3, padding="same", groups=7, layout="NHWC",
         padding_mode="reflect"),
    dict(N=1, C=3, H=8, W=9, K=4, kernel=3, padding=1, batched=False),
    dict(N=1, C=3, H=8, W=9, K=4, kernel=3, padding=1, batched=False, layout="NHWC"),
    dict(N=2, C=3, H=8, W=9, K=4, kernel=3, padding=1, bias=False),
    dict(N=2, C=3, H=8, W=9, K=4, kernel=3, padding=1, activation="relu"),
    dict(N=2, C=3, H=8, W=9, K=4, kernel=3, padding=1, activation="silu", layout="NHWC"),
    dict(N=2, C=3, H=8, W=9, K=4, kernel=3, padding=1, xdtype=F64),
    dict(N=2, C=3, H=8, W=9, K=4, kernel=3, padding=1, xdtype=F16),
    dict(N=1, C=3, H=1, W=1, K=2, kernel=1),
    dict(N=1, C=3, H=1, W=1, K=2, kernel=3, padding=1),
    dict(N=1, C=2, H=1, W=20, K=3, kernel=(1, 3), padding=(0, 1), padding_mode="reflect"),
    dict(N=1, C=2, H=3, W=3, K=3, kernel=3, padding=3, padding_mode="circular"),
    dict(N=1, C=2, H=3, W=3, K=3, kernel=3, padding=2, padding_mode="reflect"),
    dict(N=1, C=2, H=2, W=3, K=3, kernel=3, padding=6, padding_mode="replicate"),
    dict(N=1, C=2, H=2, W=3, K=3, kernel=3, padding=6, dilation=2, stride=3),
    dict(N=1, C=1, H=4, W=40, K=1, kernel=(1, 40)),                              # kernel == input
    dict(N=1, C=3, H=7, W=7, K=2, kernel=7, dilation=1),
    dict(N=1, C=3, H=7, W=7, K=2, kernel=3, dilation=3),                         # dilated == input
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_cases(isa, case):
    run_case(**case)


# --------------------------------------------------------------------------------------------
# Seeded random problems: every argument at once
# --------------------------------------------------------------------------------------------

def random_problem(seed, big=False):
    """A valid problem with every argument drawn at random (big: more channels and pixels)."""
    rng = make_rng("random-problem", seed, big)
    cmax, kmax, smax = (24, 4, 48) if big else (6, 6, 20)
    while True:
        groups = int(rng.choice([1, 1, 1, 2, 3, 0]))        # 0: depthwise
        if groups == 0:
            C = int(rng.integers(1, 3 * cmax // 2))
            groups, Kg, Cg = C, int(rng.integers(1, 3)), 1
        else:
            Cg, Kg = int(rng.integers(1, cmax)), int(rng.integers(1, cmax))
        C, K = Cg * groups, Kg * groups
        kernel = tuple(int(k) for k in rng.integers(1, kmax, 2))
        stride = tuple(int(s) for s in rng.integers(1, 4, 2))
        dilation = tuple(int(d) for d in rng.integers(1, 4, 2))
        H, W = (int(s) for s in rng.integers(1, smax, 2))
        mode = str(rng.choice(PADDING_MODES))
        form = int(rng.integers(0, 5))
        if form == 0:
            padding = int(rng.integers(0, 3))
        elif form == 1:
            padding = tuple(int(p) for p in rng.integers(0, 4, 2))
        elif form == 2:
            padding = tuple(tuple(int(p) for p in rng.integers(0, 4, 2)) for _ in range(2))
        elif form == 3:
            padding = "valid"
        else:
            padding = "same"
        pads = resolve_padding(padding, (H, W), kernel, stride, dilation)
        if mode == "reflect" and (max(pads[:2]) >= H or max(pads[2:]) >= W):
            continue
        if mode == "circular" and (max(pads[:2]) > H or max(pads[2:]) > W):
            continue
        if H + pads[0] + pads[1] < dilation[0] * (kernel[0] - 1) + 1:
            continue
        if W + pads[2] + pads[3] < dilation[1] * (kernel[1] - 1) + 1:
            continue
        layout = str(rng.choice(["NCHW", "NHWC"]))
        batched = bool(rng.random() < 0.75)
        N = (1 if big else int(rng.integers(1, 4))) if batched else 1
        xdtype = [F32, F32, F64, F16][int(rng.integers(0, 4))]
        others = [F32, F64, F16, np.dtype(np.int32)]
        wdtype = xdtype if rng.random() < 0.8 else others[int(rng.integers(0, 4))]
        bdtype = wdtype if rng.random() < 0.8 else others[int(rng.integers(0, 4))]
        activation = ACTIVATIONS[int(rng.integers(0, len(ACTIVATIONS)))]
        return dict(N=N, C=C, H=H, W=W, K=K, kernel=kernel, stride=stride, dilation=dilation,
                    groups=groups, padding=padding, padding_mode=mode, layout=layout,
                    batched=batched, xdtype=xdtype, wdtype=wdtype, bdtype=bdtype,
                    activation=activation, bias=bool(rng.random() < 0.7))


@pytest.mark.parametrize("seed", range(250))
def test_random_problems(isa, seed):
    run_case(**random_problem(seed))


@pytest.mark.parametrize("seed", range(16))
def test_random_larger_problems(isa, seed):
    run_case(**random_problem(seed, big=True))


# --------------------------------------------------------------------------------------------
# Tails: widths and channel counts that are not multiples of the vector or tile widths
# --------------------------------------------------------------------------------------------

# A row's first and last pixels skip the taps that read only zero padding (the ChannelVec
# microkernels' tap_dead), unless a weight is not finite (0 * inf is NaN, as in the reference):
# output widths around the blocks (one, two and three blocks a row), one-sided padding, stride,
# dilation, and a last k block of 8 channels.
@pytest.mark.parametrize("padding,stride,dilation", [
    (1, 1, 1), (((1, 1), (1, 0)), 1, 1), (((0, 0), (0, 2)), 1, 1), (2, 2, 1), (2, 1, 2), (3, 2, 2)])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_edge_columns_skip_padding_taps(isa, padding, stride, dilation, layout):
    algorithms = [a for a in _native.conv_algorithms() if a.startswith("conv2d_channelvec_f")
                  and f"__{isa}_" in a]
    if not algorithms:
        pytest.skip(f"no ChannelVec kernels on {isa}")
    left, right = (padding, padding) if isinstance(padding, int) else padding[1]
    for algorithm in algorithms:
        dtype = {"f32": F32, "f64": F64}[_algorithm_dtypes(algorithm)[0]]
        for W in (1, 2, 3, 5, 6, 7, 11, 12, 13, 14, 15, 23, 24, 25, 26, 27, 28, 29, 37, 41, 42, 43):
            if W + left + right < 2 * dilation + 1:
                continue
            rng = make_rng("edge-columns", W, str(padding), stride, dilation, layout, algorithm)
            x, w, b = make_inputs(rng, 1, 5, 4, W, 40, 3, xdtype=dtype)
            kw = dict(padding=padding, stride=stride, dilation=dilation)
            for weight in (w, np.where((np.arange(40) % 7 == 3)[:, None, None, None], np.inf, w)):
                context = f"{algorithm} W={W} {layout} {kw} finite={np.isfinite(weight).all()}"
                try:
                    check_conv(x, weight, b, layout=layout, algorithm=algorithm, context=context, **kw)
                except ValueError as e:
                    if "accept" not in str(e):
                        raise
                # The prepacked layer (its packed weights' finiteness decides, not each slice's).
                ref, bound = reference(x, weight, b, **kw)
                y = cppconv.Conv2d(weight, b, layout=layout, **kw)(to_layout(x, layout))
                assert_close(y, to_layout(ref, layout), to_layout(bound, layout), dtype, context=context + " layer")


@pytest.mark.parametrize("W", [1, 7, 15, 17, 33])
@pytest.mark.parametrize("C,K", [(1, 1), (3, 5), (5, 17), (17, 33), (1, 33), (17, 1)])
@pytest.mark.parametrize("layout,dtype", [("NCHW", F32), ("NHWC", F32), ("NCHW", F64), ("NHWC", F64)])
def test_tails(isa, W, C, K, layout, dtype):
    run_case(N=1, C=C, H=3, W=W, K=K, kernel=3, padding=1, layout=layout, xdtype=dtype)


@pytest.mark.parametrize("W", [1, 2, 3, 5, 8, 9, 16, 31, 32, 63, 65])
def test_tails_1x1_and_strided(isa, W):
    run_case(N=2, C=3, H=2, W=W, K=9, kernel=1)
    run_case(N=1, C=2, H=3, W=W, K=3, kernel=(1, 3), padding=(0, 1), stride=(1, 2))
    run_case(N=1, C=2, H=3, W=W, K=19, kernel=(3, 2), padding="same", layout="NHWC")


# --------------------------------------------------------------------------------------------
# Padding: every form and mode
# --------------------------------------------------------------------------------------------

PADDINGS = [0, 2, (1, 2), (0, 3), ((0, 2), (3, 1)), ((2, 0), (0, 1)), "valid", "same"]


@pytest.mark.parametrize("padding", PADDINGS, ids=repr)
@pytest.mark.parametrize("padding_mode", PADDING_MODES)
def test_padding_forms_and_modes(isa, padding, padding_mode):
    run_case(N=1, C=2, H=6, W=7, K=3, kernel=(3, 2), padding=padding, padding_mode=padding_mode)
    run_case(N=2, C=3, H=6, W=7, K=2, kernel=(2, 3), padding=padding, padding_mode=padding_mode,
             stride=(2, 1), dilation=(1, 2), layout="NHWC", xdtype=F64)


def test_same_padding_output_size(isa):
    """padding='same' gives ceil(I / S) for every stride, dilation and kernel, odd pixel after."""
    rng = make_rng("same")
    for I in (1, 2, 3, 5, 8, 9):
        for k in (1, 2, 3, 4):
            for s in (1, 2, 3):
                for d in (1, 2):
                    x = rng.standard_normal((1, 2, I, I + 1))
                    w = rng.standard_normal((2, 2, k, k + 1))
                    y = check_conv(x, w, None, stride=s, dilation=d, padding="same",
                                   context=f"I={I} k={k} s={s} d={d}")
                    assert y.shape[2:] == (-(-I // s), -(-(I + 1) // s))


@pytest.mark.parametrize("padding_mode", PADDING_MODES)
def test_same_padding_modes_strided(isa, padding_mode):
    for H, W, k, s, d in [(5, 6, 3, 1, 1), (6, 5, 4, 2, 1), (9, 9, 3, 2, 2), (4, 7, 2, 3, 1)]:
        run_case(N=1, C=2, H=H, W=W, K=3, kernel=k, stride=s, dilation=d, padding="same",
                 padding_mode=padding_mode)


@pytest.mark.parametrize("H,W,padding,padding_mode", [
    (4, 5, ((3, 3), (4, 4)), "reflect"),      # the largest reflect padding: size - 1
    (4, 5, ((4, 4), (5, 5)), "circular"),     # the largest circular padding: size
    (1, 5, ((0, 0), (4, 2)), "reflect"),
    (1, 1, 1, "circular"),
    (1, 1, 3, "replicate"),
    (2, 2, 5, "replicate"),
    (2, 2, 5, "zeros"),
    (3, 4, ((0, 3), (4, 0)), "circular"),
    (5, 5, ((4, 0), (0, 4)), "reflect"),
])
def test_padding_limits(isa, H, W, padding, padding_mode):
    top, bottom, left, right = resolve_padding(padding, (H, W), (1, 1))
    for k, layout in ((2, "NCHW"), (3, "NHWC")):
        kernel = (min(k, H + top + bottom), min(k, W + left + right))
        run_case(N=1, C=2, H=H, W=W, K=3, kernel=kernel, padding=padding,
                 padding_mode=padding_mode, layout=layout, bias=k == 2)


# --------------------------------------------------------------------------------------------
# Groups
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("C,K,groups", [
    (4, 4, 2), (6, 9, 3), (8, 8, 8), (5, 10, 5), (17, 17, 17), (12, 6, 3), (32, 32, 32),
    (16, 32, 4), (3, 3, 3), (2, 34, 2),
])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_groups(isa, C, K, groups, layout):
    run_case(N=2, C=C, H=7, W=9, K=K, kernel=3, groups=groups, padding=1, layout=layout)
    run_case(N=1, C=C, H=9, W=8, K=K, kernel=(3, 5), groups=groups, padding="same", stride=2,
             layout=layout, xdtype=F64, padding_mode="reflect", activation="relu")


@pytest.mark.parametrize("H,W,C,K,groups", [
    (1, 1, 8, 8, 4), (3, 5, 12, 6, 3), (7, 9, 16, 16, 8), (8, 8, 128, 128, 32), (5, 33, 24, 56, 8),
    (13, 3, 34, 17, 17), (9, 7, 66, 33, 11),
])
def test_grouped_channels_last_runs_channels_first(isa, restore_threads, H, W, C, K, groups):
    """Channels-last with fewer than 8 output channels per group (not depthwise) runs on the
    channels-first kernels, transposed in and out (lowering "channels_first"): shapes around the
    transposes' 8-wide blocks and 32-row chunks, every candidate forced, 1 and 2 threads."""
    rng = make_rng("channels_first", H, W, C, K, groups)
    x4, w, b = make_inputs(rng, 2, C, H, W, K, 3, groups)
    kw = dict(padding=1, groups=groups, activation="silu")
    info = cppconv.explain(to_layout(x4, "NHWC").shape, w.shape, layout="NHWC", **kw)
    assert info["lowering"] == "channels_first", info
    assert info["workspace_bytes"] >= 4 * 2 * (C * H * W + K * H * W)
    ref, bound = reference(x4, w, b, **kw)
    run_named = importlib.import_module("cppconv._conv")._conv_with_algorithm
    for name in info["candidates"]:
        for threads in (1, 2):
            cppconv.set_num_threads(threads)
            y = run_named(name, to_layout(x4, "NHWC"), w, b, layout="NHWC", **kw)
            assert_close(y, to_layout(ref, "NHWC"), to_layout(bound, "NHWC"), F32, context=f"{name} {threads}")
    layer = cppconv.Conv2d(w, b, layout="NHWC", **kw)
    assert_close(layer(to_layout(x4, "NHWC")), to_layout(ref, "NHWC"), to_layout(bound, "NHWC"), F32)


@pytest.mark.parametrize("N,H,W,C,K,groups,kernel,kw", [
    (2, 7, 9, 32, 32, 2, 3, dict(padding=1)),                                  # RegNetX's 16 a group
    (1, 13, 13, 64, 64, 4, 3, dict(padding=1, stride=2)),                      # its stride-2 blocks
    (3, 5, 25, 34, 68, 2, 3, dict(padding=1, stride=2)),                       # 17 in, 34 out: two k blocks
    (1, 6, 12, 48, 48, 3, 3, dict(padding=1)),                                 # rows of one block
    (2, 3, 13, 24, 48, 3, (5, 3), dict(padding=(2, 1), padding_mode="reflect")),
    (1, 9, 10, 32, 32, 2, 3, dict(padding=2, dilation=2, stride=(1, 2))),
    (1, 5, 7, 32, 32, 2, 1, dict(padding=1)),                                  # 1x1 padded: a shared tile
    (1, 20, 200, 64, 64, 4, 3, dict(padding=1)),                               # several row blocks
    (2, 1, 1, 48, 96, 3, 3, dict(padding=1, stride=2)),
    (1, 5, 11, 48, 48, 3, 3, dict(padding=1)),                                 # 16 a group: one-vector
    (2, 4, 13, 80, 80, 5, 3, dict(padding=1)),                                 # blocks of 12 and 14
    (2, 3, 15, 80, 80, 5, 3, dict(padding=1)),                                 # pixels (AVX-512's
    (1, 3, 25, 32, 32, 2, 3, dict(padding=((0, 1), (1, 0)), stride=(1, 2))),  # narrow block), around
    (1, 2, 29, 32, 32, 2, 3, dict(padding=1)),                                 # them
    (1, 9, 12, 16, 32, 2, 3, dict(padding=1)),                                 # 8 in, 16 out a group
])
def test_grouped_channels_last_tile_of_every_group(isa, restore_threads, N, H, W, C, K, groups, kernel, kw):
    """A grouped channels-last layer on the channel-vector kernels copies one tile of all its
    channels per (image, row block) that each group reads at its channel offset: widths around
    the pixel blocks, group widths around the vector, strides, dilation, reflect padding, a
    residual; every channelvec candidate forced, 1 and 2 threads giving the same bits."""
    rng = make_rng("group_tile", N, H, W, C, K, groups, kernel, sorted(kw.items()))
    x4, w, b = make_inputs(rng, N, C, H, W, K, kernel, groups)
    kw = dict(kw, groups=groups, activation="relu")
    ref, bound = reference(x4, w, b, **kw)
    ref, bound = to_layout(ref, "NHWC"), to_layout(bound, "NHWC")
    x = to_layout(x4, "NHWC")
    info = cppconv.explain(x.shape, w.shape, layout="NHWC", **kw)
    names = [n for n in info["candidates"] if "channelvec" in n]
    run_named = importlib.import_module("cppconv._conv")._conv_with_algorithm
    for name in names:
        ys = []
        for threads in (1, 2):
            cppconv.set_num_threads(threads)
            ys.append(run_named(name, x, w, b, layout="NHWC", **kw))
            assert_close(ys[-1], ref, bound, F32, context=f"{name} {threads} threads")
        np.testing.assert_array_equal(ys[0], ys[1])
    assert names or _native.selected_isa() == "baseline", info  # the SIMD ISAs have the engine
    layer = cppconv.Conv2d(w, b, layout="NHWC", **kw)
    residual = random_array(rng, ref.shape, F32)
    # The residual is added before the activation: relu(conv + r), conv's own bound plus |r|.
    lin_ref, lin_bound = reference(x4, w, b, **dict(kw, activation=None))
    lin_ref, lin_bound = to_layout(lin_ref, "NHWC"), to_layout(lin_bound, "NHWC")
    assert_close(layer(x, residual=residual), np.maximum(lin_ref + residual, 0), lin_bound + np.abs(residual), F32)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_groups_of_one_vector_pack_one_vector(isa, layout):
    """Groups of one vector of output channels (RegNetX's 16 on AVX-512) run the one-vector
    ChannelVec block, whose packed weights hold no zero vector; other widths do not."""
    name = f"conv2d_channelvec_f32__{isa}_"
    blocks = [a for a in _native.conv_algorithms() if a.startswith(name)]
    if not blocks:
        pytest.skip(f"no ChannelVec kernels on {isa}")
    one_vector = min(blocks, key=lambda a: int(a.rsplit("x", 1)[1]))
    lanes = int(one_vector.rsplit("x", 1)[1])
    def explain(C, K, groups, **kw):
        x_shape = (1, 28, 28, C) if layout == "NHWC" else (1, C, 28, 28)
        return cppconv.explain(x_shape, (K, C // groups, 3, 3), groups=groups, padding=1, layout=layout, **kw)
    regnet = explain(25 * lanes, 25 * lanes, 25)
    assert regnet["algorithm"] == one_vector, regnet
    assert explain(25 * lanes, 25 * lanes, 25, stride=2)["algorithm"] == one_vector
    assert one_vector not in explain(4 * lanes, 4 * lanes, 2)["candidates"]  # two vectors a group
    assert one_vector not in explain(4 * lanes, 4 * lanes, 1)["candidates"]
    packed = cppconv.Conv2d(np.ones((25 * lanes, lanes, 3, 3), np.float32), groups=25, padding=1, layout=layout)
    x = np.ones((1, 28, 28, 25 * lanes) if layout == "NHWC" else (1, 25 * lanes, 28, 28), np.float32)
    np.testing.assert_array_equal(packed(x)[0, 5, 5] if layout == "NHWC" else packed(x)[0, :, 5, 5],
                                  np.full(25 * lanes, 9.0 * lanes, np.float32))


def test_channels_first_1x1_planes_past_l2_run_pixelvec():
    """Channels-first 1x1 planes too large for L2 whose input outweighs the weights run PixelVec
    on AVX-512 (its segments' input copied slice by slice; docs/tuning.md, "Channels-first 1x1
    layers: the segment's input copied"), whatever their input channels; where the weights
    outweigh the plane, or the plane sits in L2, ChannelVec keeps them."""
    if _native.selected_isa() != "avx512":
        pytest.skip("the rule is AVX-512's (PixelVec's 6-channel block)")
    def algorithm(C, K, H):
        return cppconv.explain((1, C, H, H), (K, C, 1, 1))["algorithm"]
    for C, K in [(256, 64), (128, 128), (64, 256), (512, 128)]:
        H = 28 if C == 512 else 56
        assert algorithm(C, K, H).startswith("conv2d_pixelvec_f32__avx512"), (C, K, H)
    assert algorithm(1024, 256, 14).startswith("conv2d_channelvec_f32__avx512")  # weights outweigh
    assert algorithm(256, 64, 16).startswith("conv2d_channelvec_f32__avx512")  # 256 KiB: in L2
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 257, 33, 33), dtype=np.float32)
    w = rng.standard_normal((13, 257, 1, 1), dtype=np.float32)
    b = rng.standard_normal(13, dtype=np.float32)
    want = np.einsum("nchw,kc->nkhw", x.astype(np.float64), w[:, :, 0, 0].astype(np.float64)) + b[:, None, None]
    ys = []
    for threads in (1, 2):
        ys.append(cppconv.conv2d(x, w, b, num_threads=threads))
        np.testing.assert_allclose(ys[-1], want, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(ys[0], ys[1])


def test_grouped_channels_last_lowering_only_where_lanes_idle():
    """Depthwise and 8+ output channels per group stay channels-last; so does channels-first."""
    def lowering(x_shape, w_shape, **kw):
        return cppconv.explain(x_shape, w_shape, padding=1, **kw)["lowering"]
    assert lowering((1, 9, 9, 16), (16, 1, 3, 3), groups=16, layout="NHWC") == "none"  # depthwise
    assert lowering((1, 9, 9, 16), (32, 1, 3, 3), groups=16, layout="NHWC") == "channels_first"  # multiplier 2
    assert lowering((1, 9, 9, 16), (16, 8, 3, 3), groups=2, layout="NHWC") == "none"
    assert lowering((1, 16, 9, 9), (16, 4, 3, 3), groups=4) == "none"


@pytest.mark.parametrize("batched", [True, False])
def test_one_channel_channels_last_is_channels_first(isa, batched):
    """One input and one output channel: NHWC is NCHW's memory, so it runs NCHW's kernels."""
    rng = make_rng("one_channel", batched)
    x4, w, b = make_inputs(rng, 1 + batched, 1, 37, 29, 1, (5, 3))
    y = check_conv(x4, w, b, layout="NHWC", batched=batched, padding=2, padding_mode="reflect")
    nchw = cppconv.conv2d(to_layout(x4, "NCHW", batched), w, b, padding=2, padding_mode="reflect")
    np.testing.assert_array_equal(y.reshape(nchw.shape), nchw)
    a = cppconv.explain(to_layout(x4, "NHWC").shape, w.shape, padding=2, layout="NHWC")["algorithm"]
    assert a == cppconv.explain(x4.shape, w.shape, padding=2)["algorithm"]


@pytest.mark.parametrize("groups,kernel,padding,dilation",
                         [(1, 1, 0, 1), (40, 1, 0, 1), (40, 3, 5, 5), (8, (1, 3), (0, 7), 7)])
def test_one_pixel_channels_first_is_channels_last(isa, groups, kernel, padding, dilation):
    """One pixel in and out: NCHW is NHWC's memory, so it runs NHWC's kernels, which vectorise
    over the channels (a one-tap axis drops its dilation).  Depthwise 1x1 on 1x1 planes ran
    through the channels-first tiles at about 20 ns per channel."""
    rng = make_rng("one_pixel", groups, kernel, padding, dilation)
    x4, w, b = make_inputs(rng, 3, 40, 1, 1, 40, kernel, groups)
    kw = dict(groups=groups, padding=padding, dilation=dilation, activation="relu")
    y = check_conv(x4, w, b, **kw)
    y_last = cppconv.conv2d(to_layout(x4, "NHWC"), w, b, layout="NHWC", **kw)
    np.testing.assert_array_equal(y_last, y.reshape(3, 1, 1, 40))
    assert cppconv.explain(x4.shape, w.shape, **kw)["algorithm"] == cppconv.explain(
        to_layout(x4, "NHWC").shape, w.shape, layout="NHWC", **kw)["algorithm"]


# --------------------------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------------------------

DTYPE_COMBOS = [
    # x, weight, bias
    (F32, F32, F32), (F64, F64, F64), (F16, F16, F16), (F16, F16, None),
    (F32, F64, None), (F64, F32, F32), (F32, F32, F64), (F16, F32, None), (F16, F16, F32),
    (F32, F16, F16), (F16, F64, F16),
    (np.int32, F32, None), (F32, np.int8, None), (np.int64, np.int64, np.int64),
    (np.uint8, F64, F64), (np.int16, F16, None), (np.bool_, F32, F32), (F32, np.bool_, None),
    (np.uint8, np.bool_, None), (np.bool_, np.bool_, np.bool_), (F64, F64, np.int32),
]


@pytest.mark.parametrize("xd,wd,bd", DTYPE_COMBOS, ids=lambda d: "none" if d is None else np.dtype(d).name)
def test_dtypes(isa, xd, wd, bd):
    rng = make_rng("dtypes", str(xd), str(wd), str(bd))
    x, w, b = make_inputs(rng, 2, 3, 7, 9, 5, 3, xdtype=np.dtype(xd), wdtype=np.dtype(wd),
                          bdtype=None if bd is None else np.dtype(bd), bias=bd is not None)
    expected = expected_result_dtype(x, w, b)
    y = check_conv(x, w, b, padding=1)
    assert y.dtype == expected
    y = check_conv(x, w, b, padding=1, layout="NHWC", activation="tanh")
    assert y.dtype == expected


def test_float16_is_computed_in_float32(isa):
    """float16 products and sums are not rounded to float16 along the way: a sum whose partial
    sums are not representable in float16 still comes out as float32 arithmetic rounds it."""
    # float32 sums these exactly, in any order, to 4; float16 loses the ones next to 2048
    # (2048 + 1 rounds back to 2048) in most orders.
    x = np.array([2048.0, 1.0, 1.0, 1.0, 1.0, -2048.0], np.float16).reshape(1, 1, 1, 6)
    w = np.ones((1, 1, 1, 6), np.float16)
    y = cppconv.conv2d(x, w)
    assert y.dtype == np.float16 and float(y[0, 0, 0, 0]) == 4.0
    y = cppconv.conv2d(x[..., ::-1], w, np.array([0.5], np.float16))
    assert y.dtype == np.float16 and float(y[0, 0, 0, 0]) == 4.5
    x = np.array([60000.0, 60000.0, -60000.0], np.float16).reshape(1, 1, 1, 3)
    w = np.ones((1, 1, 1, 3), np.float16)
    y = cppconv.conv2d(x, w)                               # partial sum 120000 overflows float16
    assert y.dtype == np.float16 and float(y[0, 0, 0, 0]) == 60000.0


# --------------------------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [F32, F64, F16])
def test_activations(isa, activation, dtype):
    # scale 3: pre-activations span well below 0 and above 6.
    y = run_case(N=2, C=4, H=6, W=19, K=6, kernel=3, padding=1, activation=activation, xdtype=dtype,
                 scale=3.0)
    if activation in ("relu", "relu6"):
        assert (y >= 0).all()
    if activation == "relu6":
        assert (y <= 6).all()
    run_case(N=1, C=4, H=5, W=5, K=17, kernel=(1, 3), padding=(0, 1), activation=activation,
             xdtype=dtype, layout="NHWC", bias=False, scale=3.0)


def test_activations_exact_values(isa):
    """Activations of known pre-activation values (1x1 identity conv + bias)."""
    v = np.array([-100.0, -7.0, -1.0, -0.0, 0.0, 0.5, 1.0, 5.9, 6.0, 6.5, 100.0])
    x = v.reshape(1, 1, 1, -1)
    w = np.ones((1, 1, 1, 1))
    for activation in ACTIVATIONS:
        for dtype in (F32, F64):
            ref = conv2d_ref(x.astype(dtype), w.astype(dtype), None, activation=activation)
            y = cppconv.conv2d(x.astype(dtype), w.astype(dtype), activation=activation)
            assert_close(y, ref, np.abs(ref) + 1.0, dtype, context=f"{activation} {dtype}")


# --------------------------------------------------------------------------------------------
# Input ranks: unbatched and 2-D
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_unbatched(isa, layout):
    rng = make_rng("unbatched", layout)
    x, w, b = make_inputs(rng, 1, 3, 10, 11, 5, (3, 2), bias=True)
    y = check_conv(x, w, b, layout=layout, batched=False, padding=1, stride=2)
    assert y.ndim == 3
    OH, OW = 5, 6
    assert y.shape == ((5, OH, OW) if layout == "NCHW" else (OH, OW, 5))
    # Unbatched equals the batched result's first item.
    yb = cppconv.conv2d(to_layout(x, layout), w, b, layout=layout, padding=1, stride=2)
    np.testing.assert_array_equal(y, yb[0])


@pytest.mark.parametrize("kernel,kw", [
    ((3, 3), dict()),
    ((1, 1), dict()),
    ((2, 5), dict(padding=(1, 2))),
    ((3, 3), dict(padding="same", stride=2)),
    ((3, 2), dict(padding=((0, 1), (2, 0)), padding_mode="reflect", dilation=(2, 1))),
    ((4, 4), dict(padding="valid", stride=(1, 3), activation="sigmoid")),
    ((3, 3), dict(padding=1, padding_mode="circular", activation="relu6")),
])
@pytest.mark.parametrize("dtype", [F32, F64, F16, np.dtype(np.int32)])
def test_2d_input(isa, kernel, kw, dtype):
    rng = make_rng("2d", kernel, sorted(kw.items()), str(dtype))
    x = random_array(rng, (9, 13), dtype, 2.0)
    w = random_array(rng, kernel, dtype)
    pads = resolve_padding(kw.get("padding", 0), x.shape, w.shape, kw.get("stride", 1),
                           kw.get("dilation", 1))
    args = (kw.get("stride", 1), pads, kw.get("dilation", 1), 1, kw.get("padding_mode", "zeros"),
            kw.get("activation"))
    ref = conv2d_ref(x[None, None], w[None, None], None, *args)[0, 0]
    bound = conv2d_abs_bound(x[None, None], w[None, None], None, *args)[0, 0]
    y = cppconv.conv2d(x, w, **kw)
    assert y.ndim == 2
    assert_close(y, ref, bound, expected_result_dtype(x, w))
    out = np.empty(ref.shape, y.dtype)
    assert cppconv.conv2d(x, w, out=out, **kw) is out
    assert_close(out, ref, bound, y.dtype)


# --------------------------------------------------------------------------------------------
# out=
# --------------------------------------------------------------------------------------------

def out_shape(ref4, layout, batched=True):
    return to_layout(ref4, layout, batched).shape


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [F32, F64, F16])
def test_out_contiguous(isa, layout, dtype):
    rng = make_rng("out", layout, str(dtype))
    x, w, b = make_inputs(rng, 2, 3, 8, 9, 5, 3, xdtype=dtype)
    ref, _ = reference(x, w, b, padding=1)
    out = np.full(out_shape(ref, layout), np.nan, dtype)
    check_conv(x, w, b, layout=layout, padding=1, out=out)
    # Unbatched with out.
    out = np.full(out_shape(ref[:1], layout, False), np.nan, dtype)
    check_conv(x[:1], w, b, layout=layout, batched=False, padding=1, out=out)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("kind", ["sliced", "transposed", "negative", "fortran"])
def test_out_noncontiguous(isa, layout, kind):
    rng = make_rng("out-nc", layout, kind)
    x, w, b = make_inputs(rng, 2, 3, 8, 9, 5, 3)
    ref, _ = reference(x, w, b, padding=1, stride=(1, 2))
    shape = out_shape(ref, layout)
    sentinel = np.float32(1234.5)
    if kind == "sliced":
        base = np.full((shape[0], shape[1] + 2, 2 * shape[2], shape[3] + 3), sentinel, np.float32)
        out = base[:, 1:-1, ::2, 2:-1]
    elif kind == "transposed":
        base = np.full(shape[::-1], sentinel, np.float32)
        out = base.T
    elif kind == "negative":
        base = np.full(shape, sentinel, np.float32)
        out = base[:, ::-1, :, ::-1]
    else:
        base = np.full(shape, sentinel, np.float32, order="F")
        out = base
    assert out.shape == shape
    assert not out.flags.c_contiguous
    before = base.copy()
    check_conv(x, w, b, layout=layout, padding=1, stride=(1, 2), out=out)
    # Nothing outside the view was written.
    mask = np.ones(base.shape, bool)
    if kind == "sliced":
        mask[:, 1:-1, ::2, 2:-1] = False
        np.testing.assert_array_equal(base[mask], before[mask])


@pytest.mark.parametrize("case", [
    dict(C=5, K=7, kernel=3, padding=1),  # ChannelVec, tile copy
    dict(C=20, K=9, kernel=1),  # 1x1 read in place
    dict(C=12, K=18, kernel=1, stride=2),  # strided 1x1 on a subsampled copy
    dict(C=8, K=8, kernel=3, groups=8, padding=1),  # depthwise
    dict(C=16, K=16, kernel=3, padding=1, precision="high"),  # Winograd
    dict(C=16, K=12, kernel=3, groups=4, padding=1),  # channels-first lowering: a copy into the slice
    dict(C=3, K=5, kernel=3, padding=40),  # padding that dwarfs the input: live taps, a copy
], ids=str)
@pytest.mark.parametrize("dtype", [F32, F64])
def test_out_channel_slice(isa, case, dtype):
    """out= channels [c0, c0 + K) of a wider NHWC array (a network's Concat input written in
    place): the plan writes through the pixel pitch where it runs the problem as it is, else
    the result is copied in; the same values as into a new array (against the float64
    reference), by conv2d and by a layer, and the other channels are never touched."""
    case = dict(case)
    C, K, kernel, groups = case.pop("C"), case.pop("K"), case.pop("kernel"), case.get("groups", 1)
    rng = make_rng("out-channel-slice", str(case), str(dtype))
    x4, w, b = make_inputs(rng, 2, C, 7, 9, K, kernel, groups=groups, xdtype=dtype)
    x = to_layout(x4, "NHWC")
    layer = cppconv.Conv2d(w, b, layout="NHWC", **case)
    want = layer(x)
    if "precision" not in case:  # (Winograd's bound is the README's patch bound: test_precision.py)
        ref, bound = reference(x4, w, b, **case)
        assert_close(want, to_layout(ref, "NHWC"), to_layout(bound, "NHWC"), dtype)
    base = np.full(want.shape[:3] + (K + 11,), np.nan, dtype)
    out = base[..., 4:4 + K]
    assert not out.flags.c_contiguous
    one_shot = cppconv.conv2d(x, w, b, layout="NHWC", **case)
    for run, same in ((lambda: layer(x, out), want),
                      (lambda: cppconv.conv2d(x, w, b, layout="NHWC", out=out, **case), one_shot)):
        base[...] = np.nan
        assert run() is out
        np.testing.assert_array_equal(out, same)
        assert np.isnan(base[..., :4]).all() and np.isnan(base[..., 4 + K:]).all()


def test_out_is_x_same_size_1x1(isa):
    """out is x itself: a 1x1 conv with C == K keeps x's shape."""
    for layout in ("NCHW", "NHWC"):
        rng = make_rng("out-is-x", layout)
        x4, w, b = make_inputs(rng, 2, 6, 5, 7, 6, 1)
        x = to_layout(x4, layout).copy()
        ref, bound = reference(x4, w, b)
        y = cppconv.conv2d(x, w, b, layout=layout, out=x)
        assert y is x
        assert_close(x, to_layout(ref, layout), to_layout(bound, layout), F32)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_out_is_x_same_3x3(isa, padding_mode):
    """out is x for a 3x3 'same' conv: every output reads inputs the result overwrites."""
    for layout in ("NCHW", "NHWC"):
        for dtype in (F32, F64, F16):
            rng = make_rng("out-is-x-3x3", layout, str(dtype), padding_mode)
            # K > 16 so that kernels which work in blocks of output channels read x again after
            # writing some of the output.
            x4, w, b = make_inputs(rng, 2, 20, 9, 10, 20, 3, xdtype=dtype)
            ref, bound = reference(x4, w, b, padding="same", padding_mode=padding_mode,
                                   activation="relu")
            ref, bound = to_layout(ref, layout), to_layout(bound, layout)
            kw = dict(layout=layout, padding="same", padding_mode=padding_mode, activation="relu")
            x = to_layout(x4, layout).copy()
            y = cppconv.conv2d(x, w, b, out=x, **kw)
            assert y is x
            assert_close(x, ref, bound, dtype)
            # out is x's memory seen backwards along H.
            x = to_layout(x4, layout).copy()
            out = x[:, ::-1] if layout == "NHWC" else x[:, :, ::-1]
            assert cppconv.conv2d(x, w, b, out=out, **kw) is out
            assert_close(out, ref, bound, dtype)


def test_out_overlaps_x_partially(isa):
    rng = make_rng("out-overlap-x")
    x4, w, b = make_inputs(rng, 1, 20, 8, 8, 18, 3)
    ref, bound = reference(x4, w, b, padding=1)
    start = x4.size // 3
    buf = np.zeros(start + ref.size + 100, np.float32)
    x = buf[: x4.size].reshape(x4.shape)
    x[...] = x4
    out = buf[start:start + ref.size].reshape(ref.shape)
    y = cppconv.conv2d(x, w, b, padding=1, out=out)
    assert y is out
    assert_close(out, ref, bound, F32)


def test_out_overlaps_weight_and_bias(isa):
    rng = make_rng("out-overlap-w")
    x4, w4, b4 = make_inputs(rng, 1, 2, 4, 5, 3, 2, xdtype=F64)
    ref, bound = reference(x4, w4, b4)               # out (1, 3, 3, 4): 36 values
    # out starts inside the weight (24 values) and runs over the bias after it.
    buf = np.zeros(200)
    w = buf[:w4.size].reshape(w4.shape)
    w[...] = w4
    b = buf[w4.size:w4.size + 3]
    b[...] = b4
    out = buf[10:10 + ref.size].reshape(ref.shape)
    assert np.shares_memory(out, w) and np.shares_memory(out, b)
    y = cppconv.conv2d(x4, w, b, out=out)
    assert y is out
    assert_close(out, ref, bound, F64)
    # out is exactly the bias' memory: K == 1 output of one pixel per item.
    b = np.array([0.5])
    x = rng.standard_normal((1, 1, 3, 3))
    w = rng.standard_normal((1, 1, 3, 3))
    ref, bound = reference(x, w, b.copy())
    out = b.reshape(1, 1, 1, 1)
    assert cppconv.conv2d(x, w, b, out=out) is out
    assert_close(out, ref, bound, F64)


def test_out_f16_and_mixed(isa):
    rng = make_rng("out-mixed")
    x, w, b = make_inputs(rng, 1, 3, 6, 7, 4, 3, xdtype=F16, wdtype=F16, bdtype=F16)
    ref, _ = reference(x, w, b)
    out = np.empty(ref.shape, F16)[..., ::-1]
    check_conv(x, w, b, out=np.empty(ref.shape, F16))
    check_conv(x, w, b, out=out)
    x, w, b = make_inputs(rng, 1, 3, 6, 7, 4, 3, xdtype=np.dtype(np.int32), wdtype=F32)
    check_conv(x, w, b, out=np.empty(ref.shape, F64))


# --------------------------------------------------------------------------------------------
# Inputs that are not C-contiguous, read-only, byte-swapped, broadcast
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_noncontiguous_inputs(isa, layout):
    rng = make_rng("noncontig", layout)
    x4, w, b = make_inputs(rng, 2, 4, 9, 11, 6, 3)
    xl = to_layout(x4, layout)
    kw = dict(padding=1, stride=(2, 1), activation="leaky_relu")

    # x: a strided view into a bigger array.
    big = np.zeros((xl.shape[0], 2 * xl.shape[1], xl.shape[2] + 2, 3 * xl.shape[3]), np.float32)
    big[:, ::2, 1:-1, ::3] = xl
    check_conv(x4, w, b, layout=layout, x_in=big[:, ::2, 1:-1, ::3], **kw)
    # x: Fortran order, and a transposed view of the other layout.
    check_conv(x4, w, b, layout=layout, x_in=np.asfortranarray(xl), **kw)
    other = x4.transpose(0, 2, 3, 1).copy() if layout == "NCHW" else x4.copy()
    view = other.transpose(0, 3, 1, 2) if layout == "NCHW" else other.transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(view, xl)
    check_conv(x4, w, b, layout=layout, x_in=view, **kw)
    # x: negative strides.
    rev = xl[:, :, ::-1, :].copy()[:, :, ::-1, :]
    check_conv(x4, w, b, layout=layout, x_in=rev, **kw)

    # weight: reversed view and Fortran order; bias: strided.
    w_rev = w[:, ::-1, ::-1].copy()[:, ::-1, ::-1]
    b_big = np.zeros(2 * b.size, np.float32)
    b_big[::2] = b
    y = cppconv.conv2d(xl, w_rev, b_big[::2], layout=layout, **kw)
    y2 = cppconv.conv2d(xl, np.asfortranarray(w), b_big[::2], layout=layout, **kw)
    ref, bound = reference(x4, w, b, **kw)
    assert_close(y, to_layout(ref, layout), to_layout(bound, layout), F32)
    assert_close(y2, to_layout(ref, layout), to_layout(bound, layout), F32)


def test_readonly_inputs(isa):
    rng = make_rng("readonly")
    x, w, b = make_inputs(rng, 2, 3, 8, 9, 4, 3)
    for a in (x, w, b):
        a.setflags(write=False)
    check_conv(x, w, b, padding=1)
    check_conv(x, w, b, padding="same", padding_mode="reflect")
    # Broadcast (zero-stride, read-only) input.
    row = rng.standard_normal((1, 3, 1, 9)).astype(np.float32)
    xb = np.broadcast_to(row, (2, 3, 8, 9))
    check_conv(np.ascontiguousarray(xb), w, b, x_in=xb, padding=1)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_byteswapped_inputs(isa, layout):
    rng = make_rng("byteswap", layout)
    x4, w, b = make_inputs(rng, 2, 3, 8, 9, 4, 3)
    xl = to_layout(x4, layout)
    for xs, ws, bs in [
        (xl.astype(">f4"), w, b),
        (xl, w.astype(">f4"), b.astype(">f4")),
        (xl.astype(">f4"), w.astype(">f4"), b.astype(">f4")),
        (xl.astype(">f8"), w, b),
        (xl.astype(">f2"), w.astype(">f2"), None),
        (xl.astype(">f4")[:, ::-1], w.astype(">f4"), b.astype(">f8")),
    ]:
        assert not xs.dtype.isnative or not ws.dtype.isnative
        # The numbers the reference sees are the byte-swapped arrays' values.
        xs4 = xs if layout == "NCHW" else xs.transpose(0, 3, 1, 2)
        ref, bound = reference(xs4.astype(np.float64), ws.astype(np.float64),
                               None if bs is None else bs.astype(np.float64), padding=1)
        dtype = expected_result_dtype(xs, ws, bs)
        assert dtype.isnative
        y = cppconv.conv2d(xs, ws, bs, padding=1, layout=layout)
        assert y.dtype == dtype and y.dtype.isnative
        assert_close(y, to_layout(ref, layout), to_layout(bound, layout), dtype,
                     context=f"{xs.dtype} {ws.dtype} {None if bs is None else bs.dtype}")


# --------------------------------------------------------------------------------------------
# A few larger problems
# --------------------------------------------------------------------------------------------

LARGE = [
    dict(N=2, C=16, H=40, W=40, K=32, kernel=3, padding=1, activation="relu"),
    dict(N=1, C=3, H=64, W=64, K=16, kernel=7, stride=2, padding=3),
    dict(N=1, C=32, H=28, W=28, K=32, kernel=5, groups=32, padding=2, layout="NHWC"),
    dict(N=1, C=128, H=12, W=256, K=4, kernel=3, padding=1),
    dict(N=1, C=2, H=3, W=1000, K=20, kernel=(1, 3), padding="same"),
    dict(N=1, C=24, H=20, W=20, K=40, kernel=1, layout="NHWC", xdtype=F64),
    # Many input channels x big kernels: kernels that split the reduction into channel slices
    # must apply bias and activation once, after the last slice.
    dict(N=1, C=300, H=8, W=16, K=40, kernel=3, padding=1, activation="relu"),
    dict(N=1, C=100, H=6, W=10, K=33, kernel=7, padding=3, activation="relu6", layout="NHWC"),
    dict(N=2, C=96, H=9, W=9, K=20, kernel=7, padding="same", activation="leaky_relu",
         padding_mode="reflect"),
    # Input and output past 2 MiB: ChannelVec prefetches the next tile's input and the output
    # lines of each item (a last k block of 16 of 32 channels) while it computes.
    dict(N=4, C=16, H=96, W=96, K=48, kernel=3, padding=1, activation="relu"),
    dict(N=4, C=16, H=96, W=96, K=48, kernel=3, padding=1, layout="NHWC"),
]


@pytest.mark.parametrize("case", LARGE, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_larger(isa, case):
    run_case(**case)


# --------------------------------------------------------------------------------------------
# Zero copy: a C-contiguous input of the compute dtype goes to the kernel as it is
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout,dtype", [("NCHW", F32), ("NHWC", F32), ("NCHW", F64)])
def test_zero_copy(layout, dtype):
    rng = make_rng("zero-copy", layout, str(dtype))
    C = 64 // dtype.itemsize            # 64 MiB of x whatever the dtype
    H = W = 1024
    shape = (1, C, H, W) if layout == "NCHW" else (1, H, W, C)
    x = rng.standard_normal(shape, dtype=dtype)
    assert x.flags.c_contiguous and x.nbytes == 64 << 20
    w = rng.standard_normal((2, C, 3, 3)).astype(dtype)
    b = rng.standard_normal(2).astype(dtype)
    kw = dict(stride=8, padding=1, padding_mode="reflect", layout=layout)
    limit = x.nbytes // 8

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        y = cppconv.conv2d(x, w, b, **kw)
        peak_conv = tracemalloc.get_traced_memory()[1]
        out = np.empty_like(y)
        tracemalloc.reset_peak()
        cppconv.conv2d(x, w, b, out=out, **kw)
        peak_out = tracemalloc.get_traced_memory()[1]
        layer = cppconv.Conv2d(w, b, stride=8, padding=1, padding_mode="reflect", layout=layout)
        tracemalloc.reset_peak()
        layer(x, out=out)
        peak_layer = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak_conv < limit, f"conv2d allocated {peak_conv} bytes for a {x.nbytes}-byte input"
    assert peak_out < limit, f"conv2d(out=) allocated {peak_out} bytes"
    assert peak_layer < limit, f"Conv2d layer allocated {peak_layer} bytes"

    x4 = x if layout == "NCHW" else x.transpose(0, 3, 1, 2)
    ref, bound = reference(x4, w, b, stride=8, padding=1, padding_mode="reflect")
    assert_close(y, to_layout(ref, layout), to_layout(bound, layout), dtype)
    np.testing.assert_array_equal(out, y)


def test_zero_copy_weight():
    """A large C-contiguous weight of the compute dtype is not copied by conv2d either."""
    rng = make_rng("zero-copy-weight")
    w = rng.standard_normal((16384, 1, 32, 32), dtype=np.float32)       # 64 MiB
    x = rng.standard_normal((2, 1, 32, 32), dtype=np.float32)
    b = rng.standard_normal(16384, dtype=np.float32)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        y = cppconv.conv2d(x, w, b)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < w.nbytes // 8, f"conv2d allocated {peak} bytes for a {w.nbytes}-byte weight"
    assert y.shape == (2, 16384, 1, 1)
    ref = np.einsum("nchw,kchw->nk", x.astype(np.float64), w.astype(np.float64)) + b
    bound = np.einsum("nchw,kchw->nk", np.abs(x.astype(np.float64)), np.abs(w.astype(np.float64))) + np.abs(b)
    assert_close(y[:, :, 0, 0], ref, bound, F32)


# --------------------------------------------------------------------------------------------
# The reference itself, against plain loops with PyTorch's padding rules written out
# --------------------------------------------------------------------------------------------

def _source_index(p, size, before, mode):
    s = p - before
    if 0 <= s < size:
        return s
    if mode == "zeros":
        return None
    if mode == "replicate":
        return min(max(s, 0), size - 1)
    if mode == "circular":
        return s % size
    while s < 0 or s >= size:             # reflect about the edge pixel, which is not repeated
        s = -s if s < 0 else 2 * (size - 1) - s
    return s


def _naive_conv(x, w, b, stride, pads, dilation, groups, mode):
    N, C, H, W = x.shape
    K, Cg, kh, kw = w.shape
    (sh, sw), (dh, dw) = as_pair(stride), as_pair(dilation)
    t, bt, l, r = pads
    OH = (H + t + bt - dh * (kh - 1) - 1) // sh + 1
    OW = (W + l + r - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((N, K, OH, OW))
    for n in range(N):
        for k in range(K):
            g = k // (K // groups)
            for oh in range(OH):
                for ow in range(OW):
                    acc = 0.0 if b is None else float(b[k])
                    for c in range(Cg):
                        for i in range(kh):
                            for j in range(kw):
                                row = _source_index(oh * sh + i * dh, H, t, mode)
                                col = _source_index(ow * sw + j * dw, W, l, mode)
                                v = 0.0 if row is None or col is None else x[n, g * Cg + c, row, col]
                                acc += w[k, c, i, j] * v
                    y[n, k, oh, ow] = acc
    return y


@pytest.mark.parametrize("seed", range(12))
def test_reference_matches_naive_loops(seed):
    rng = make_rng("naive", seed)
    groups = [1, 2, 3][seed % 3]
    C, K = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
    H, W = int(rng.integers(3, 7)), int(rng.integers(5, 8))
    kernel = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    stride, dilation = (int(rng.integers(1, 3)), 1), (1, int(rng.integers(1, 3)))
    mode = PADDING_MODES[seed % 4]
    pads = (int(rng.integers(0, H)), int(rng.integers(0, H)), int(rng.integers(0, W)), int(rng.integers(0, W)))
    x = rng.standard_normal((2, C, H, W))
    w = rng.standard_normal((K, C // groups) + kernel)
    b = rng.standard_normal(K) if seed % 2 else None
    ref = conv2d_ref(x, w, b, stride, pads, dilation, groups, mode)
    np.testing.assert_allclose(ref, _naive_conv(x, w, b, stride, pads, dilation, groups, mode),
                               rtol=1e-12, atol=1e-12)
    # The padding modes are PyTorch's: [1, 2, 3] padded by 2 each side.
    row = np.array([[[[1.0, 2.0, 3.0]]]])
    one = np.ones((1, 1, 1, 1))
    expect = {"zeros": [0, 0, 1, 2, 3, 0, 0], "reflect": [3, 2, 1, 2, 3, 2, 1],
              "replicate": [1, 1, 1, 2, 3, 3, 3], "circular": [2, 3, 1, 2, 3, 1, 2]}
    np.testing.assert_array_equal(conv2d_ref(row, one, None, 1, (0, 0, 2, 2), 1, 1, mode)[0, 0, 0],
                                  expect[mode])


# --------------------------------------------------------------------------------------------
# The Conv2d layer
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [
    dict(),
    dict(padding=1, activation="relu"),
    dict(padding="same", stride=2, padding_mode="reflect", layout="NHWC"),
    dict(padding=((0, 2), (1, 0)), dilation=2, groups=3, padding_mode="circular"),
    dict(padding="valid", stride=(1, 2), activation="sigmoid", layout="NHWC", groups=3),
], ids=repr)
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_layer(isa, kw, bias):
    rng = make_rng("layer", sorted(kw.items()), bias)
    layout = kw.get("layout", "NCHW")
    groups = kw.get("groups", 1)
    _, w, b = make_inputs(rng, 1, 6, 1, 1, 9, 3, groups=groups, bias=bias)
    layer = cppconv.Conv2d(w, b, **kw)
    conv_kw = {k: v for k, v in kw.items() if k != "layout"}
    # The same layer on several input sizes, batched and unbatched.
    for N, H, W in [(2, 9, 10), (1, 6, 17), (3, 12, 7), (1, 9, 10)]:
        x4 = random_array(rng, (N, 6, H, W), F32)
        ref, bound = reference(x4, w, b, **conv_kw)
        xl = to_layout(x4, layout)
        y = layer(xl)
        assert_close(y, to_layout(ref, layout), to_layout(bound, layout), F32)
        np.testing.assert_array_equal(y, cppconv.conv2d(xl, w, b, **kw))
        out = np.empty_like(y)
        assert layer(xl, out=out) is out
        np.testing.assert_array_equal(out, y)
        yu = layer(xl[0])
        np.testing.assert_array_equal(yu, y[0])
    # float64 input with a float32 layer: the result type of both.
    x4 = random_array(rng, (1, 6, 8, 8), F64)
    y = layer(to_layout(x4, layout))
    assert y.dtype == expected_result_dtype(x4, w, b)
    ref, bound = reference(x4, w, b, **conv_kw)
    assert_close(y, to_layout(ref, layout), to_layout(bound, layout), y.dtype)


def test_conv2d_layer_float64(isa):
    rng = make_rng("layer64")
    _, w, b = make_inputs(rng, 1, 4, 1, 1, 5, (3, 2), xdtype=F64)
    layer = cppconv.Conv2d(w, b, padding=(1, 0), activation="tanh")
    x = rng.standard_normal((2, 4, 7, 6))
    ref, bound = reference(x, w, b, padding=(1, 0), activation="tanh")
    assert_close(layer(x), ref, bound, F64)


# --------------------------------------------------------------------------------------------
# Every algorithm the machine can run, forced, on sizes around tile and vector widths
# --------------------------------------------------------------------------------------------

def _sweep_cases():
    """Small problems: output widths, K and C drawn from 1..40, kernels 1x1 to 7x7."""
    rng = make_rng("sweep")
    kernels = [(1, 1), (3, 3), (5, 5), (7, 7), (1, 3), (3, 1), (2, 2), (1, 7), (7, 1), (3, 3)]
    sizes = list(range(1, 41))
    cases = []
    for i in range(48):
        kh, kw = kernels[i % len(kernels)]
        OW = int(rng.choice(sizes)) if i >= 8 else [1, 7, 8, 9, 15, 16, 17, 33][i]
        OH = int(rng.integers(1, 5))
        K = int(rng.choice(sizes))
        C = int(rng.choice(sizes))
        s = 1 if i % 3 else int(rng.integers(1, 3))
        d = 2 if i % 7 == 3 else 1
        groups = 1
        if i % 6 == 5:                    # depthwise (with a channel multiplier sometimes)
            groups, K = C, C * int(rng.integers(1, 3))
        elif i % 8 == 6 and C % 2 == 0:
            groups, K = 2, 2 * max(1, K // 2)
        pad_kind = i % 4
        if pad_kind == 0:
            padding, ph, pw = 0, 0, 0
        else:
            ph, pw = (kh - 1) * d // 2, (kw - 1) * d // 2
            padding = (ph, pw)
        H = (OH - 1) * s + d * (kh - 1) + 1 - 2 * ph
        W = (OW - 1) * s + d * (kw - 1) + 1 - 2 * pw
        if H < 1 or W < 1:
            padding, ph, pw = 0, 0, 0
            H = (OH - 1) * s + d * (kh - 1) + 1
            W = (OW - 1) * s + d * (kw - 1) + 1
        mode = "zeros" if pad_kind < 2 else PADDING_MODES[int(rng.integers(0, 4))]
        if (mode == "reflect" and (ph >= H or pw >= W)) or (mode == "circular" and (ph > H or pw > W)):
            mode = "replicate"
        cases.append(dict(N=int(rng.integers(1, 3)), C=C, H=H, W=W, K=K, kernel=(kh, kw),
                          stride=s, dilation=d, groups=groups, padding=padding, padding_mode=mode,
                          layout="NHWC" if i % 2 else "NCHW",
                          activation=[None, None, "relu", "silu"][i % 4],
                          bias=bool(i % 5)))
    return cases


def _geometry_case(OH, OW, kernel, stride=1, dilation=1, pad=True):
    """H, W and padding that give an OH x OW output ('same'-like symmetric padding if pad)."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, as_pair(stride), as_pair(dilation)
    ph, pw = ((kh - 1) * dh // 2, (kw - 1) * dw // 2) if pad else (0, 0)
    H = (OH - 1) * sh + dh * (kh - 1) + 1 - 2 * ph
    W = (OW - 1) * sw + dw * (kw - 1) + 1 - 2 * pw
    if H < 1 or W < 1:
        return _geometry_case(OH, OW, kernel, stride, dilation, pad=False)
    return dict(H=H, W=W, padding=(ph, pw), kernel=kernel, stride=stride, dilation=dilation)


def _tile_cases():
    """Sizes around the register tiles named in the algorithm names (..._<a>x<b>)."""
    tiles = set()
    for name in _native.conv_algorithms():
        last = name.rsplit("_", 1)[-1]
        if "x" in last and all(part.isdigit() for part in last.split("x")):
            a, b = (int(v) for v in last.split("x"))
            tiles.add((a, b))
    rng = make_rng("tile-cases")
    cases = []
    for a, b in sorted(tiles):
        for i, (OW, K) in enumerate([(a - 1, b + 1), (a, b), (a + 1, max(1, b - 1)),
                                     (2 * a + 1, 2 * b + 1), (b, a), (a + 3, 3 * b - 1)]):
            C = int(rng.choice([1, 3, 5, 7, 8, 17, 40]))
            kernel = [(1, 1), (3, 3), (5, 5), (3, 1)][i % 4]
            geo = _geometry_case(2, max(1, OW), kernel, stride=(1, 1 + (i == 5)), pad=i % 2 == 0)
            cases.append(dict(N=1 + (i == 3), C=C, K=max(1, K), groups=1,
                              padding_mode=["zeros", "reflect", "replicate", "circular"][i % 4]
                              if geo["padding"] != (0, 0) else "zeros",
                              layout="NHWC" if i % 3 == 2 else "NCHW",
                              activation=[None, "relu", "leaky_relu", "relu6", "sigmoid", None][i],
                              bias=i != 1, **geo))
    return cases


# Larger problems: input-channel slicing (reduction blocking: many channels x big kernels),
# several row blocks, 1x1 runs, in-place reads of x, more than one thread.
BIG_SWEEP_CASES = [
    dict(N=1, C=300, K=40, activation="relu", layout="NCHW", **_geometry_case(6, 20, (3, 3))),
    dict(N=1, C=300, K=40, activation="relu6", layout="NHWC", **_geometry_case(6, 20, (3, 3))),
    dict(N=1, C=100, K=33, activation="leaky_relu", layout="NCHW", **_geometry_case(5, 13, (7, 7))),
    dict(N=2, C=90, K=17, activation="relu", layout="NHWC", **_geometry_case(4, 11, (7, 7))),
    dict(N=1, C=90, K=17, activation="relu6", layout="NCHW", **_geometry_case(3, 65, (7, 7), pad=False)),
    dict(N=1, C=128, K=16, activation="silu", layout="NCHW", **_geometry_case(24, 100, (3, 3))),
    dict(N=1, C=128, K=36, activation=None, layout="NHWC", **_geometry_case(20, 50, (3, 3), stride=(1, 2))),
    dict(N=2, C=24, K=5, activation=None, layout="NCHW", **_geometry_case(30, 30, (1, 1))),
    # A large kernel (9x9: 81 taps per channel), both layouts.
    dict(N=1, C=20, K=40, activation=None, layout="NCHW", **_geometry_case(5, 9, (9, 9))),
    dict(N=1, C=20, K=40, activation="relu", layout="NHWC", **_geometry_case(4, 7, (9, 9))),
    # A flat plane too big for L2: cut into segments, each through every k chunk (the last
    # one partial), with an activation applied per segment after the stores.
    dict(N=1, C=24, K=13, activation="tanh", layout="NCHW", **_geometry_case(60, 61, (1, 1), pad=False)),
    dict(N=1, C=200, K=48, activation="relu", layout="NCHW", **_geometry_case(12, 12, (1, 1))),
    # Flat 1x1 planes (rows narrower than two register blocks) through channel-vector kernels:
    # segments of a plane (the last one shorter) that every k block runs in turn, an
    # output-channel tail, an activation applied per segment after the stores; NHWC with the
    # weights packed inside the items (one segment).
    dict(N=2, C=100, K=70, activation="tanh", layout="NCHW", **_geometry_case(41, 11, (1, 1), pad=False)),
    dict(N=1, C=72, K=40, activation="relu", layout="NHWC", **_geometry_case(25, 9, (1, 1), pad=False)),
    # A flat channels-last plane whose output passes 2 MiB: the microkernels ask for the output
    # lines of the block two ahead (none past a run's last block).  Segments of blocks of two
    # sizes, a last k block of 8 channels.
    dict(N=2, C=24, K=136, activation="relu", layout="NHWC", **_geometry_case(45, 44, (1, 1), pad=False)),
    dict(N=3, C=64, K=64, groups=2, activation="relu", layout="NCHW", **_geometry_case(10, 10, (5, 5))),
    dict(N=1, C=40, K=40, groups=40, activation=None, layout="NCHW",
         **_geometry_case(16, 16, (3, 3), stride=2)),
    dict(N=1, C=20, K=24, activation="tanh", layout="NCHW",
         **_geometry_case(9, 30, (3, 3), stride=(2, 1), pad=False)),
    dict(N=1, C=20, K=24, activation=None, layout="NHWC", **_geometry_case(9, 30, (3, 3), dilation=(2, 3))),
    dict(N=4, C=6, K=40, activation="relu", layout="NCHW", **_geometry_case(32, 32, (3, 3))),
    # Few input channels or few output channels per group, NCHW: pixel-vector kernels.
    dict(N=1, C=3, K=64, activation="relu", layout="NCHW", **_geometry_case(40, 40, (3, 3))),
    dict(N=1, C=3, K=16, activation=None, layout="NCHW", **_geometry_case(32, 32, (7, 7), stride=2)),
    dict(N=2, C=32, K=32, groups=32, activation="relu6", layout="NCHW", padding_mode="reflect",
         **_geometry_case(28, 28, (5, 5))),
    dict(N=1, C=48, K=3, activation="leaky_relu", layout="NCHW", **_geometry_case(33, 47, (3, 3))),
    # Depthwise, big enough for several threads.
    dict(N=2, C=72, K=72, groups=72, activation="relu6", layout="NHWC", **_geometry_case(28, 28, (5, 5))),
    dict(N=1, C=48, K=48, groups=48, activation="relu", layout="NCHW", **_geometry_case(40, 40, (3, 3))),
    dict(N=1, C=33, K=33, groups=33, activation=None, layout="NCHW", **_geometry_case(37, 37, (3, 3), stride=2)),
    # Depthwise tiles split into bands: rows past the tile budget, columns past the tile width,
    # the NCHW per-row delivery of column bands, every padding mode, strides beyond 2.
    dict(N=1, C=17, K=17, groups=17, activation="relu", layout="NCHW", padding_mode="reflect",
         **_geometry_case(300, 150, (3, 3))),
    dict(N=2, C=20, K=20, groups=20, activation=None, layout="NHWC", padding_mode="circular",
         **_geometry_case(3, 1100, (5, 5))),
    dict(N=1, C=24, K=24, groups=24, activation="silu", layout="NCHW", **_geometry_case(4, 1030, (3, 3), stride=2)),
    dict(N=1, C=35, K=35, groups=35, activation="relu6", layout="NCHW", padding_mode="replicate",
         **_geometry_case(9, 11, (3, 3), stride=3)),
    dict(N=1, C=16, K=16, groups=16, activation=None, layout="NCHW", **_geometry_case(20, 40, (7, 7))),
    # NHWC without padding: read in place, one pixel pitch apart (1x1, strided, dilated,
    # grouped, input-channel slices, several images).
    dict(N=2, C=40, K=40, activation="relu", layout="NHWC", **_geometry_case(7, 30, (1, 1), pad=False)),
    dict(N=1, C=300, K=33, activation=None, layout="NHWC", **_geometry_case(5, 13, (3, 3), pad=False)),
    dict(N=1, C=24, K=40, groups=2, activation="silu", layout="NHWC",
         **_geometry_case(9, 17, (3, 3), stride=2, dilation=(2, 1), pad=False)),
    dict(N=3, C=20, K=35, activation="relu6", layout="NHWC", **_geometry_case(6, 25, (1, 1), stride=(2, 3), pad=False)),
    dict(N=1, C=64, K=64, activation=None, layout="NHWC", **_geometry_case(4, 12, (5, 3), stride=(1, 2), pad=False)),
    # A plane split into bands of output vectors between threads (flat-plane 3x3 kernel).
    dict(N=1, C=1, K=1, groups=1, activation="relu", layout="NCHW", **_geometry_case(150, 64, (3, 3))),
    dict(N=1, C=2, K=2, groups=2, activation=None, layout="NCHW", **_geometry_case(97, 56, (3, 3))),
    dict(N=3, C=31, K=31, groups=31, activation="leaky_relu", layout="NHWC",
         **_geometry_case(14, 14, (3, 3), stride=2)),
    # Winograd F(2x2, 3x3) problems (3x3, stride 1, >= 16 channels each side): odd output
    # sizes (half-used tiles), output-channel tails, several reduction slices (C = 300, 130),
    # blocks of tiles across the width (35 tiles wide) and down the height, one block
    # (weights transformed inside the work items) and many (packed up front), every padding
    # mode, asymmetric padding, no padding, both layouts, simple and transcendental activations.
    dict(N=1, C=17, K=33, activation="relu", layout="NCHW", **_geometry_case(7, 7, (3, 3))),
    dict(N=1, C=300, K=40, activation=None, layout="NHWC", padding_mode="reflect", **_geometry_case(9, 13, (3, 3))),
    dict(N=2, C=40, K=64, activation="silu", layout="NCHW", padding_mode="replicate", **_geometry_case(6, 70, (3, 3))),
    dict(N=1, C=64, K=20, activation="tanh", layout="NHWC", padding_mode="circular", **_geometry_case(30, 30, (3, 3))),
    dict(N=3, C=24, K=48, activation="leaky_relu", layout="NHWC", **_geometry_case(15, 9, (3, 3), pad=False)),
    dict(N=1, C=130, K=16, activation="relu6", layout="NCHW", **_geometry_case(4, 4, (3, 3))),
    dict(N=1, C=32, K=31, activation=None, layout="NCHW", H=21, W=18, kernel=(3, 3), stride=1, dilation=1,
         padding=((2, 0), (0, 2))),
    # Blocks of tiles in both directions (4 of 7 x 7 tiles).
    dict(N=1, C=32, K=64, activation="relu", layout="NHWC", **_geometry_case(28, 28, (3, 3))),
    # Dilated Winograd: d x d phases per cell of 2d x 2d outputs, cells past the output's edge
    # (odd sizes), unequal dilations, padding modes, one block (in-item weight transform) and
    # several, dilation 4 with one cell per block (16 phases), reduction slices.
    dict(N=1, C=32, K=40, activation="relu", layout="NCHW", **_geometry_case(28, 28, (3, 3), dilation=2)),
    dict(N=2, C=24, K=33, activation=None, layout="NHWC", padding_mode="reflect",
         **_geometry_case(17, 23, (3, 3), dilation=(2, 3))),
    dict(N=1, C=20, K=17, activation="silu", layout="NCHW", padding_mode="circular",
         **_geometry_case(8, 9, (3, 3), dilation=2)),
    dict(N=1, C=300, K=20, activation="relu6", layout="NCHW", **_geometry_case(16, 16, (3, 3), dilation=4)),
    dict(N=3, C=16, K=16, activation="tanh", layout="NHWC", padding_mode="replicate",
         **_geometry_case(12, 14, (3, 3), dilation=2)),
]
for _c in BIG_SWEEP_CASES:
    _c.setdefault("groups", 1)
    _c.setdefault("padding_mode", "zeros")
    _c.setdefault("bias", True)

def _depthwise_cases():
    """Depthwise problems (groups == C, mostly K == C) in both layouts, with channel counts and
    output widths around the vector widths."""
    rng = make_rng("depthwise-cases")
    channels = [1, 7, 8, 9, 16, 17, 31, 32, 33, 64, 65]
    widths = [1, 7, 8, 9, 15, 16, 17, 33, 65]
    kernels = [(3, 3), (5, 5), (7, 7), (1, 1), (3, 1), (1, 5)]
    strides = [1, 1, 2, (1, 2), (2, 1), 1]
    cases = []
    for i in range(30):
        C = channels[i % len(channels)]
        kernel = kernels[i % len(kernels)]
        stride = strides[i % len(strides)]
        dilation = 2 if i % 7 == 6 else 1
        geo = _geometry_case(int(rng.integers(1, 6)), widths[i % len(widths)], kernel, stride,
                             dilation, pad=i % 3 != 2)
        if i % 5 == 4 and geo["padding"] != (0, 0):
            t, l = geo["padding"]
            geo["padding"] = ((t, t + 1), (l + 1, l))     # asymmetric
        cases.append(dict(N=1 + i % 2, C=C, K=C * (2 if i % 8 == 7 else 1), groups=C,
                          padding_mode="replicate" if i % 9 == 8 else "zeros",
                          layout="NCHW" if (i // 2) % 2 == 0 else "NHWC",
                          activation=[None, "relu", "relu6", "leaky_relu", "silu"][i % 5],
                          bias=i % 4 != 3, **geo))
    return cases


def _flat_depthwise_cases():
    """3x3 depthwise, stride 1, zero padding 1, NCHW, rows a multiple of 8 wide (the flat-plane
    kernel's problems): both row-width classes (16m and 16m + 8), planes whose last vector is
    half full, single rows, every simple activation and one that is not."""
    cases = []
    shapes = [(1, 8), (3, 8), (2, 16), (5, 16), (3, 24), (4, 40), (2, 56), (3, 64), (1, 72), (6, 112)]
    for i, (H, W) in enumerate(shapes):
        C = 1 + i % 5
        cases.append(dict(N=1 + i % 2, C=C, K=C, groups=C, H=H, W=W, kernel=(3, 3), stride=1, dilation=1,
                          padding=1, padding_mode="zeros", layout="NCHW",
                          activation=[None, "relu", "relu6", "leaky_relu", "silu"][i % 5], bias=i % 3 != 2))
    return cases


SWEEP_CASES = _sweep_cases() + _tile_cases() + _depthwise_cases() + _flat_depthwise_cases()
N_SMALL = len(SWEEP_CASES)
SWEEP_CASES += BIG_SWEEP_CASES


@functools.cache
def _sweep_data(index, dtype_name):
    c = dict(SWEEP_CASES[index])
    dtype = np.dtype(dtype_name)
    rng = make_rng("sweep-data", index, dtype_name)
    x4, w, b = make_inputs(rng, c.pop("N"), c.pop("C"), c.pop("H"), c.pop("W"), c.pop("K"),
                           c.pop("kernel"), c["groups"], c.pop("bias"), xdtype=dtype)
    layout = c.pop("layout")
    ref, bound = reference(x4, w, b, **c)
    return to_layout(x4, layout), w, b, layout, c, to_layout(ref, layout), to_layout(bound, layout)


def _algorithm_dtypes(name):
    tokens = name.replace("__", "_").split("_")
    found = [d for d in ("f32", "f64") if d in tokens]
    return found or ["f32", "f64"]


@pytest.mark.parametrize("algorithm", _native.conv_algorithms())
def test_every_algorithm(algorithm, restore_threads):
    run_named = importlib.import_module("cppconv._conv")._conv_with_algorithm
    accepted = 0
    for d in _algorithm_dtypes(algorithm):
        dtype = {"f32": F32, "f64": F64}[d]
        for i in range(len(SWEEP_CASES)):
            x, w, b, layout, kw, ref, bound = _sweep_data(i, dtype.name)
            cppconv.set_num_threads(max(2, restore_threads))
            try:
                y = run_named(algorithm, x, w, b, layout=layout, **kw)
            except ValueError as e:
                if "accept" in str(e):
                    continue
                raise
            accepted += 1
            context = f"{algorithm} case {i}: {SWEEP_CASES[i]}"
            assert_close(y, ref, bound, dtype, context=context)
            if i >= N_SMALL:
                # The big problems are big enough for several threads; one thread gives the
                # same numbers.  So does out= with a non-contiguous array.
                cppconv.set_num_threads(1)
                y1 = run_named(algorithm, x, w, b, layout=layout, **kw)
                np.testing.assert_array_equal(y1, y, err_msg=context + " (1 thread vs 2)")
                out = np.empty(y.shape[::-1], y.dtype).T
                assert run_named(algorithm, x, w, b, layout=layout, out=out, **kw) is out
                np.testing.assert_array_equal(out, y, err_msg=context + " (out=)")
    if accepted == 0:
        pytest.skip(f"{algorithm} accepted none of the sweep's problems")


_STORE_ACTIVATIONS = ["hardswish", "hardsigmoid", "silu", "sigmoid", "tanh"]


def _store_activation_cases():
    """The activations fused into the SIMD kernels' stores (hardsigmoid, hardswish; float32
    sigmoid and SiLU on the vector exp) and tanh, applied after them: shapes around the ChannelVec
    (6 or 12 pixels x 16 or 32 channels) and PixelVec tiles in both layouts, rows of several
    blocks of two sizes (56 = 6 x 6 + 4 x 5), input-channel slices (C = 300), few input channels
    (a first layer's 3, NHWC at stride 2: the channels-last tile copy of few channels)."""
    cases = []
    for i, (C, K, OH, OW, kernel, stride) in enumerate([
            (16, 72, 2, 56, (1, 1), 1), (3, 16, 3, 17, (3, 3), 2), (3, 32, 2, 56, (3, 3), 2),
            (24, 40, 3, 13, (1, 1), 1), (5, 17, 2, 25, (3, 3), 1), (300, 33, 2, 7, (3, 3), 1),
            (8, 8, 4, 16, (3, 3), 1), (16, 16, 2, 8, (3, 3), 1)]):
        for layout in ("NHWC", "NCHW"):
            cases.append(dict(N=1 + i % 2, C=C, K=K, groups=1, padding_mode="zeros", bias=i % 3 != 2,
                              layout=layout, activation=_STORE_ACTIVATIONS[(i + len(cases)) % 5],
                              **_geometry_case(OH, OW, kernel, stride=stride, pad=i != 3)))
    # depthwise (the depthwise kernels' stores)
    for layout in ("NHWC", "NCHW"):
        for activation in ("hardswish", "silu", "sigmoid"):
            cases.append(dict(N=1, C=24, K=24, groups=24, padding_mode="zeros", bias=True, layout=layout,
                              activation=activation, **_geometry_case(3, 16, (3, 3))))
    return cases


@pytest.mark.parametrize("algorithm", _native.conv_algorithms())
def test_every_algorithm_store_activations(algorithm, restore_threads):
    """Every algorithm, forced, with hardsigmoid, hardswish, sigmoid and SiLU (applied in
    registers by the SIMD kernels, the last two on the vector exp in float32) and tanh against
    the float64 reference, including NaN and +-Inf inputs: NaN stays NaN, hardswish(-inf) is NaN
    (-inf * 0), hardswish(inf) inf, sigmoid(-inf) 0, silu(-inf) NaN (-inf / inf), silu(inf) inf,
    silu(-1e30) -0."""
    run_named = importlib.import_module("cppconv._conv")._conv_with_algorithm
    accepted = 0
    for d in _algorithm_dtypes(algorithm):
        dtype = {"f32": F32, "f64": F64}[d]
        for i, case in enumerate(_store_activation_cases()):
            c = dict(case)
            rng = make_rng("store-activations", i, d)
            x4, w, b = make_inputs(rng, c.pop("N"), c.pop("C"), c.pop("H"), c.pop("W"), c.pop("K"),
                                   c.pop("kernel"), c["groups"], c.pop("bias"), xdtype=dtype, scale=4.0)
            layout = c.pop("layout")
            cppconv.set_num_threads(2)
            try:
                y = run_named(algorithm, to_layout(x4, layout), w, b, layout=layout, **c)
            except ValueError as e:
                if "accept" in str(e):
                    continue
                raise
            accepted += 1
            ref, bound = reference(x4, w, b, **c)
            assert_close(y, to_layout(ref, layout), to_layout(bound, layout), dtype,
                         context=f"{algorithm} {layout} {case}")
        # Special values through a 1x1 convolution of one input channel into 16 equal ones.
        v = np.array([np.nan, -np.inf, np.inf, -3.5, -0.0, 0.0, 2.0, 3.5, 1e30, -1e30], dtype)
        for layout in ("NHWC", "NCHW"):
            x4 = np.broadcast_to(v, (1, 1, 2, v.size)).copy()
            w = np.ones((16, 1, 1, 1), dtype)
            for activation in _STORE_ACTIVATIONS:
                try:
                    y = run_named(algorithm, to_layout(x4, layout), w, None, layout=layout, activation=activation)
                except ValueError as e:
                    if "accept" in str(e):
                        continue
                    raise
                ref = conv2d_ref(x4, w, None, activation=activation)
                assert_close(y, to_layout(ref, layout), np.abs(to_layout(ref, layout)) + 1.0, dtype,
                             context=f"{algorithm} {layout} {activation} special values")
    if accepted == 0:
        pytest.skip(f"{algorithm} accepted none of the store-activation problems")


def test_algorithm_unknown_name():
    run_named = importlib.import_module("cppconv._conv")._conv_with_algorithm
    x = np.zeros((1, 1, 3, 3), np.float32)
    with pytest.raises(ValueError):
        run_named("conv2d_no_such_algorithm__nowhere", x, np.zeros((1, 1, 1, 1), np.float32))


# --------------------------------------------------------------------------------------------
# Strided 1x1 without padding runs at stride 1 on a subsampled copy of the input
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("stride,H,W", [(2, 28, 28), ((3, 2), 17, 9), ((1, 4), 5, 33), (2, 1, 1), (5, 4, 4)])
def test_strided_1x1_subsampled(layout, dtype, stride, H, W):
    run_case(N=2, C=37, H=H, W=W, K=41, kernel=1, stride=stride, xdtype=dtype, layout=layout,
             activation="relu")


def test_strided_1x1_workspace_counts_the_subsampled_input():
    shape, wshape = (2, 64, 28, 28), (128, 64, 1, 1)
    strided = cppconv.explain(shape, wshape, stride=2)
    dense = cppconv.explain((2, 64, 14, 14), wshape)
    assert strided["algorithm"] == dense["algorithm"]
    assert strided["workspace_bytes"] >= dense["workspace_bytes"] + 2 * 64 * 14 * 14 * 4


# --------------------------------------------------------------------------------------------
# ChannelVec: NHWC 1x1 expansions run flat (a segment's k blocks one after another), and a last
# k block of at most one vector of channels computes that vector alone
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("C,K,H,W,kernel,activation,layout", [
    (16, 96, 112, 112, 1, "relu6", "NHWC"),  # flat expansion cut into output-sized segments
    (24, 72, 14, 14, 1, "relu", "NHWC"),  # flat expansion, last k block half full
    (16, 600, 9, 9, 1, "sigmoid", "NHWC"),  # flat expansion, activation after the stores
    (96, 24, 13, 11, 1, None, "NHWC"),  # a projection runs by rows; last k block one vector
    (600, 24, 5, 6, 3, "hardswish", "NCHW"),  # two input-channel slices summed into a one-vector block
    (600, 20, 5, 6, 3, None, "NHWC"),
    (24, 40, 6, 33, 1, "leaky_relu", "NCHW"),
    (96, 64, 14, 14, 1, None, "NHWC"),  # the wide block: 1x1 read in place
    (130, 80, 5, 30, 1, "relu", "NCHW"),  # wide, last k block one vector
    (17, 129, 3, 25, 1, "silu", "NHWC"),  # wide, last k block one lane
    (65, 100, 2, 13, 1, "hardswish", "NHWC"),  # wide, last k block two vectors
    # Weights that outweigh the plane's input: the plane is cut only into the threads' shares
    (512, 200, 7, 7, 1, "relu", "NHWC"),  # last k block partial
    (300, 520, 5, 9, 1, None, "NHWC"),  # an expansion
    (1000, 130, 3, 5, 1, "relu6", "NHWC"),  # two input-channel slices, 15 pixels
    (200, 2000, 2, 3, 1, "silu", "NHWC"),  # six pixels, many k blocks
    # A 1x1 layer's input channels in L1-sized slices, the partial sums in the output
    (600, 64, 4, 30, 1, "relu", "NHWC"),  # by rows, five slices
    (300, 72, 3, 29, 1, "hardswish", "NCHW"),  # channels-first, through the row buffer
])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_channelvec_flat_expansions_and_one_vector_blocks(isa, restore_threads, C, K, H, W, kernel, activation,
                                                          layout, threads):
    name = "conv2d_channelvec_f32__" + isa
    x_shape = (1, H, W, C) if layout == "NHWC" else (1, C, H, W)
    candidates = cppconv.explain(x_shape, (K, C, kernel, kernel), padding=kernel // 2, layout=layout)["candidates"]
    algorithms = [a for a in _native.conv_algorithms() if a.startswith(name) and a in candidates]
    if not algorithms:
        pytest.skip(f"no {name} block takes this shape on this ISA")
    for algorithm in algorithms:  # each register block
        cppconv.set_num_threads(threads)
        case = dict(N=1, C=C, H=H, W=W, K=K, kernel=kernel, padding=kernel // 2, layout=layout,
                    activation=activation, algorithm=algorithm)
        y = run_case(**case)
        if threads > 1:  # each output is summed in one work item, in one order, however the items are cut
            cppconv.set_num_threads(1)
            np.testing.assert_array_equal(run_case(**case), y)


def test_wide_channelvec_block_takes_pointwise_layers_read_in_place(isa):
    # Where it was measured to pay: 1x1 read in place with rows of two of its blocks or more;
    # not 3x3 layers (at par) nor short rows (twice the weight traffic per multiply-add).
    blocks = [a for a in _native.conv_algorithms() if a.startswith("conv2d_channelvec_f32__" + isa)]
    if len(blocks) < 2:
        pytest.skip(f"one ChannelVec block on {isa}")
    wide, narrow = blocks[0], blocks[-1]  # (the kernel table's order: wide, one vector, narrow)
    def chosen(x_shape, w_shape, **kw):
        return cppconv.explain(x_shape, w_shape, **kw)["algorithm"]
    assert chosen((1, 56, 56, 64), (256, 64, 1, 1), layout="NHWC") == wide
    # (channels-first: where the weights outweigh the plane; a larger plane runs PixelVec, see
    # test_channels_first_1x1_planes_past_l2_run_pixelvec)
    assert chosen((1, 1024, 14, 14), (256, 1024, 1, 1)) == wide
    assert chosen((1, 7, 7, 512), (512, 512, 1, 1), layout="NHWC", stride=1) == wide  # one flat segment
    assert chosen((1, 64, 56, 56), (64, 64, 3, 3), padding=1) == narrow
    pixels = int(wide.rsplit("_", 1)[1].split("x")[0])  # the wide block's output pixels
    # (A 1x1 plane read in place is one run of pixels; a strided one is subsampled into one.)
    assert chosen((1, 1, 2 * pixels - 1, 512), (512, 512, 1, 1), layout="NHWC") == narrow  # short of two blocks
    assert chosen((1, 1, 2 * pixels, 512), (512, 512, 1, 1), layout="NHWC") == wide
    assert chosen((1, 512, 4 * pixels, 4 * pixels), (512, 512, 1, 1), stride=2) == wide
    channels = int(wide.rsplit("x", 1)[1])  # and output channels
    assert chosen((1, 56, 56, 64), (channels - 1, 64, 1, 1), layout="NHWC") == narrow  # fewer than a block
    # Channels-last output of one wide block stores each pixel whole where the reduction is short
    # (3x3 x 3 channels, and 56 channels: 504), not on a long one (3x3 x 64: 576).
    assert chosen((1, 56, 56, 3), (channels, 3, 3, 3), padding=1, layout="NHWC") == wide
    assert chosen((1, 56, 56, 56), (channels, 56, 3, 3), padding=1, layout="NHWC") == wide
    assert chosen((1, 56, 56, 64), (channels, 64, 3, 3), padding=1, layout="NHWC") == narrow


# --------------------------------------------------------------------------------------------
# Algorithm choice: a call costs in proportion to its work, input and output, not its padding
# --------------------------------------------------------------------------------------------

# Windows that skip most of what they span: 3x3 depthwise, padding = dilation = d on 1x1 planes
# (1.2 MFLOP), which the tiling kernels copied whole, (2d + 1)^2 values per channel; and a dense
# 3x3 on 8 x 8 planes.
SPARSE_WINDOWS = [
    dict(x=(64, 1024, 1, 1), w=(1024, 1, 3, 3), padding=d, dilation=d, groups=1024) for d in (300, 600, 1000)
] + [dict(x=(1, 256, 8, 8), w=(256, 256, 3, 3), padding=300, dilation=300, groups=1)]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", SPARSE_WINDOWS, ids=lambda c: f"{c['x']}-d{c['dilation']}")
def test_padding_and_dilation_cost_no_tiles(isa, case, layout):
    """The kernels that copy the padded input into tiles decline when that copy is out of
    proportion to the call.  Here only the centre tap meets the input, so the kernels run that
    tap alone, unpadded (explain's live_taps_only), with a workspace in proportion, and the result is
    right.  A generous time bound stands for "milliseconds, not minutes"."""
    kw = dict(padding=case["padding"], dilation=case["dilation"], groups=case["groups"], layout=layout)
    n, c, h, w = case["x"]
    assert case["dilation"] >= max(h, w)  # the taps off the centre read only padding
    shape = (n, c, h, w) if layout == "NCHW" else (n, h, w, c)
    rng = make_rng("sparse-windows", case["x"], case["dilation"], layout)
    x = rng.standard_normal(shape).astype(np.float32)
    weight = rng.standard_normal(case["w"]).astype(np.float32)
    layer = cppconv.Conv2d(weight, **kw)
    for info in (cppconv.explain(shape, case["w"], **kw), layer.explain(shape)):
        assert not info["algorithm"].startswith("conv_reference") and info["live_taps_only"], info
        assert info["workspace_bytes"] < 2**20, info  # the padded input would be 370 MB
    start = time.perf_counter()
    y = cppconv.conv2d(x, weight, **kw)
    assert time.perf_counter() - start < 5.0
    x4 = (x if layout == "NCHW" else x.transpose(0, 3, 1, 2)).astype(np.float64)
    centre = weight[:, :, 1, 1].astype(np.float64)

    def centre_tap(w, x):
        y = np.einsum("kc,nchw->nkhw", w, x) if case["groups"] == 1 else x * w[None, :, 0, None, None]
        return y if layout == "NCHW" else y.transpose(0, 2, 3, 1)

    ref, bound = centre_tap(centre, x4), centre_tap(np.abs(centre), np.abs(x4))
    assert_close(y, ref, bound, np.float32)
    assert_close(layer(x), ref, bound, np.float32)
    # A dropped tap's weight that is not finite meets zero padding: 0 * inf is NaN in that
    # output channel, as in PyTorch, so every tap runs (through the reference).
    weight[3, 0, 0, 2] = np.inf
    y = cppconv.conv2d(x, weight, **kw)
    channel = 1 if layout == "NCHW" else 3
    assert np.isnan(np.take(y, 3, axis=channel)).all()
    assert not np.isnan(np.delete(y, 3, axis=channel)).any()
    np.testing.assert_allclose(cppconv.Conv2d(weight, **kw)(x), y, rtol=0, atol=0)


def test_ordinary_layers_keep_their_kernels():
    """The rule above leaves the benchmark's layers (ResNet, MobileNet, dilated, grouped, first
    layers), one-shot and as layers, on their fast kernels, all taps; its sanity rows, the
    shapes above, run their live taps."""
    from cppconv.bench import LAYERS

    for layer in LAYERS:
        if layer.sanity:
            assert cppconv.explain(layer.x_shape, layer.w_shape, **layer.conv_kwargs)["live_taps_only"]
            continue
        for info in (cppconv.explain(layer.x_shape, layer.w_shape, **layer.conv_kwargs),
                     cppconv.Conv2d(np.zeros(layer.w_shape, np.float32), **layer.conv_kwargs).explain(layer.x_shape)):
            assert not info["algorithm"].startswith("conv_reference"), (layer.name, info)
