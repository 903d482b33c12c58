"""bfloat16 transposed convolution (issue 18): conv_transpose1d/2d/3d and the ConvTranspose
layers on bfloat16 operands run their stride phases on the bfloat16 convolution kernels (one
stride-1 convolution per output phase with a sub-kernel of the weight, flipped, channels
swapped), else widened to float32.  Against a float64 scatter reference of the same bfloat16
values within the output's bfloat16 rounding plus the float32 accumulation bound: shapes around
the kernels' tiles, strides 1 to 3, dilation, groups, output_padding, padding, both layouts,
ranks 1 to 3, bias and activations, out=, compute_dtype="bfloat16", the float32 algorithms
forced (the widened route), identical bits across thread counts, and explain() naming the
bfloat16 kernel where the CPU has one."""

from __future__ import annotations

import numpy as np
import pytest

import cppconv
from cppconv import _conv_transpose, _native

from conftest import make_rng
from test_bf16_kernel import BF16, BF16_ALGORITHMS, DENSE, F32, assert_close, bf16_random
from test_conv_transpose_nd import ref_conv_transpose

FUNCTIONS = {1: cppconv.conv_transpose1d, 2: cppconv.conv_transpose2d, 3: cppconv.conv_transpose3d}
LAYERS = {1: cppconv.ConvTranspose1d, 2: cppconv.ConvTranspose2d, 3: cppconv.ConvTranspose3d}
LAYOUTS = {1: ("NCW", "NWC"), 2: ("NCHW", "NHWC"), 3: ("NCDHW", "NDHWC")}
# Whether the bfloat16 convolution kernels run here (AVX-512 with AVX512-BF16).
KERNELS = any(f"__{_native.selected_isa()}_" in name for name in DENSE)
PHASES = "stride_phases_bf16"  # the phases forced (cpp/conv_transpose.h, kStridePhases)
SMALL_PHASED_FLOPS = 3e6  # kSmallPhasedFlops, cpp/conv_transpose.cpp


def last(a):
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def first(a):
    return np.moveaxis(a, -1, 1)


def case_operands(rng, rank, n, c, k, groups, kernel, sizes, bias=True):
    x = bf16_random(rng, (n, c, *sizes))
    w = bf16_random(rng, (c, k // groups, *kernel))
    b = rng.standard_normal(k).astype(F32) if bias else None
    return x, w, b


def reference(x, w, b, **kw):
    """The float64 result of the same values, and the bound |x| * |w| + |b| on its terms."""
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    act = kw.pop("activation", None)
    ref = ref_conv_transpose(x64, w64, None if b is None else b.astype(np.float64), activation=act, **kw)
    bound = ref_conv_transpose(np.abs(x64), np.abs(w64), None if b is None else np.abs(b.astype(np.float64)), **kw)
    return ref, bound


def settings(rank, stride, padding, output_padding, groups, dilation, layout, activation=None):
    return _conv_transpose._TransposeSpec(rank, stride, padding, output_padding, groups, dilation, layout, activation)


def explain(w, b, x_shape, spec, x_float32=False, y_float32=False):
    plan = _native.ConvTransposePlan(np.ascontiguousarray(w).view(np.uint16), b, copy=True, bfloat16=True)
    return plan.explain(list(x_shape), spec.native, 0, x_float32, y_float32)


def check(rng, rank, c, k, kernel, sizes, stride=1, padding=0, output_padding=0, groups=1, dilation=1,
          activation=None, bias=True, n=2, expect_kernel=True):
    x, w, b = case_operands(rng, rank, n, c, k, groups, kernel, sizes, bias)
    per = lambda v: (v,) * rank if isinstance(v, int) else tuple(v)  # noqa: E731
    ref, bound = reference(x, w, b, stride=per(stride), pads=tuple(p for v in per(padding) for p in (v, v)),
                           output_padding=per(output_padding), groups=groups, dilation=per(dilation),
                           activation=activation)
    kwargs = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups, dilation=dilation,
                  activation=activation)
    for layout in LAYOUTS[rank]:
        channels_last = layout[-1] == "C"
        xl = last(x) if channels_last else x
        y = FUNCTIONS[rank](xl, w, b, layout=layout, **kwargs)
        assert y.dtype == BF16
        context = f"{layout} c={c} k={k} kernel={kernel} sizes={sizes} {kwargs}"
        assert_close(first(y) if channels_last else y, ref, bound, True, context)
        info = explain(w, b, xl.shape, settings(rank, stride, padding, output_padding, groups, dilation, layout,
                                                activation))
        # Small channels-first problems of several phases take the float32 route unless forced.
        small = not channels_last and np.prod(per(stride)) > 1 and info["flops"] < SMALL_PHASED_FLOPS
        if KERNELS and expect_kernel and not small:
            assert info["lowering"] == "stride_phases" and "_bf16" in info["algorithm"], (info, context)
            assert info["dtype"] == "bfloat16" and not info["widened"]
        else:
            assert info["widened"] and info["dtype"] == "float32", (info, context)
        if KERNELS and expect_kernel:
            forced = _conv_transpose._conv_transpose_with_algorithm(PHASES, xl, w, b, rank=rank, layout=layout,
                                                                    num_threads=1, **kwargs)
            assert_close(first(forced) if channels_last else forced, ref, bound, True, f"forced {context}")
            # Two threads: the phases spread over the threads, or each on both; the same bits.
            two = _conv_transpose._conv_transpose_with_algorithm(PHASES, xl, w, b, rank=rank, layout=layout,
                                                                 num_threads=2, **kwargs)
            assert np.array_equal(two.view(np.uint16), forced.view(np.uint16)), context
            if not small:
                assert np.array_equal(forced.view(np.uint16), y.view(np.uint16))
    return x, w, b


@pytest.mark.parametrize("channels", [1, 15, 16, 17, 31, 32, 33])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_tile_channels(channels, stride):
    rng = make_rng(100 + channels * 4 + stride)
    # One input channel: no bfloat16 kernel takes the phases, the float32 route runs.
    check(rng, 2, channels, channels + 1 if channels % 2 else channels, (3, 3), (7, 9), stride=stride, padding=1,
          output_padding=stride - 1, expect_kernel=channels > 1)


@pytest.mark.parametrize("kernel,stride,padding,output_padding,dilation", [
    ((2, 2), 2, 0, 0, 1),  # U-Net: every phase a 1x1 convolution
    ((4, 4), 2, 1, 0, 1),  # DCGAN: every phase 2x2
    ((3, 3), 1, 1, 0, 1),  # stride 1: one phase, into y itself
    ((3, 3), 2, 1, 1, 1),
    ((3, 2), (3, 2), (2, 0), (1, 1), 1),
    ((3, 3), 2, 0, 1, 2),  # dilation 2 with stride 2: only even residues have taps
    ((3, 3), 3, 2, 0, 2),  # gcd(stride, dilation) 1: dilation 2 between a phase's taps
    ((1, 1), 2, 0, 1, 1),  # phases without taps: bias and activation alone
    ((5, 5), 1, 4, 0, 1),  # padding that crops every tap's reach: a plain valid convolution
    ((2, 3), (1, 2), (1, 2), 0, (2, 1)),
])
@pytest.mark.parametrize("activation", [None, "relu", "sigmoid"])
def test_geometry_2d(kernel, stride, padding, output_padding, dilation, activation):
    rng = make_rng(7)
    check(rng, 2, 24, 20, kernel, (6, 7), stride=stride, padding=padding, output_padding=output_padding,
          dilation=dilation, activation=activation)


@pytest.mark.parametrize("groups", [2, 4])
def test_groups(groups):
    check(make_rng(groups), 2, 32, 16 * groups // 2 * 2, (3, 3), (5, 6), stride=2, padding=1, groups=groups,
          activation="leaky_relu")


@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise(multiplier):
    # Each phase a depthwise convolution (the bfloat16 depthwise kernel where it takes it).
    check(make_rng(3), 2, 16, 16 * multiplier, (3, 3), (5, 5), stride=2, padding=1, groups=16,
          expect_kernel=multiplier == 1)


@pytest.mark.parametrize("kernel,stride,padding,output_padding,dilation", [
    ((4,), 2, 1, 0, 1), ((3,), 3, 0, 2, 1), ((5,), 1, 2, 0, 2), ((2,), 2, 0, 1, 3)])
def test_rank1(kernel, stride, padding, output_padding, dilation):
    check(make_rng(11), 1, 17, 33, kernel, (29,), stride=stride, padding=padding, output_padding=output_padding,
          dilation=dilation, activation="tanh")


@pytest.mark.parametrize("kernel,stride,padding,output_padding", [
    ((2, 2, 2), 2, 0, 0), ((3, 3, 3), 2, 1, 1), ((3, 3, 3), 1, 1, 0), ((1, 4, 4), (1, 2, 2), (0, 1, 1), 0)])
def test_rank3(kernel, stride, padding, output_padding):
    check(make_rng(13), 3, 16, 32, kernel, (3, 5, 4), stride=stride, padding=padding, output_padding=output_padding,
          activation="relu", n=2)


@pytest.mark.parametrize("n,depth", [(2, 2), (4, 4), (2, 3), (3, 2)])
def test_rank3_depth_slices_when_the_batch_equals_the_depth(n, depth):
    """A 2x2x2 stride-2 layer (3-D U-Net's up-convolution), channels-last: each phase writes
    each image's depth slices in place as a batch of 2-D problems; a batch of as many images as
    there are slices was taken for the unsliced problem (outputs left unwritten)."""
    check(make_rng(19 + n * 5 + depth), 3, 32, 16, (2, 2, 2), (depth, 4, 5), stride=2, n=n)


def test_threads_bit_identical():
    rng = make_rng(17)
    x, w, b = case_operands(rng, 2, 2, 48, 40, 1, (4, 4), (11, 13))
    for layout in ("NCHW", "NHWC"):
        xl = last(x) if layout == "NHWC" else x
        kw = dict(stride=2, padding=1, layout=layout, activation="silu")
        one = cppconv.conv_transpose2d(xl, w, b, num_threads=1, **kw)
        two = cppconv.conv_transpose2d(xl, w, b, num_threads=2, **kw)
        assert np.array_equal(one.view(np.uint16), two.view(np.uint16))


@pytest.mark.skipif(not KERNELS, reason="no bfloat16 convolution kernel on this CPU")
def test_forced_phases_refused_without_a_kernel():
    x, w, b = case_operands(make_rng(31), 2, 1, 1, 2, 1, (3, 3), (5, 5))  # one channel: no bfloat16 kernel
    with pytest.raises(ValueError, match="stride_phases_bf16"):
        _conv_transpose._conv_transpose_with_algorithm(PHASES, x, w, b, stride=2)
    with pytest.raises(ValueError, match="stride_phases_bf16"):
        _conv_transpose._conv_transpose_with_algorithm(PHASES, x.astype(F32), w.astype(F32), b, stride=2)


def test_out_and_layer():
    rng = make_rng(19)
    x, w, b = case_operands(rng, 2, 1, 32, 32, 1, (2, 2), (9, 9))
    y = cppconv.conv_transpose2d(x, w, b, stride=2)
    out = np.zeros_like(y)
    assert cppconv.conv_transpose2d(x, w, b, stride=2, out=out) is out
    assert np.array_equal(out.view(np.uint16), y.view(np.uint16))
    layer = cppconv.ConvTranspose2d(w, b, stride=2)
    assert np.array_equal(layer(x).view(np.uint16), y.view(np.uint16))
    assert np.array_equal(layer(x).view(np.uint16), y.view(np.uint16))  # the plan's phases kept


def test_compute_dtype_bfloat16_float32_operands():
    # A float32 layer computing in bfloat16: x and the weight rounded, the result float32 (not rounded).
    rng = make_rng(23)
    x = rng.standard_normal((2, 32, 7, 6)).astype(F32)
    w = rng.standard_normal((32, 16, 3, 3)).astype(F32)
    b = rng.standard_normal(16).astype(F32)
    layer = cppconv.ConvTranspose2d(w, b, stride=2, padding=1, output_padding=1, compute_dtype="bfloat16")
    y = layer(x)
    assert y.dtype == F32
    ref, bound = reference(x.astype(BF16), w.astype(BF16), b, stride=(2, 2), pads=(1, 1, 1, 1),
                           output_padding=(1, 1))
    assert_close(y, ref, bound, False, "compute_dtype=bfloat16")


@pytest.mark.parametrize("algorithm", _native.conv_transpose_algorithms())
def test_forced_float32_algorithms(algorithm):
    # A named (float32) transposed-convolution algorithm runs the widened route.
    rng = make_rng(29)
    x, w, b = case_operands(rng, 2, 1, 16, 16, 1, (3, 3), (5, 6))
    try:
        y = _conv_transpose._conv_transpose_with_algorithm(algorithm, x, w, b, stride=2, padding=1)
    except ValueError as e:
        pytest.skip(str(e))
    assert y.dtype == BF16
    ref, bound = reference(x, w, b, stride=(2, 2), pads=(1, 1, 1, 1))
    assert_close(y, ref, bound, True, algorithm)


def test_layer_from_several_threads():
    # One layer's phase plans, made on first use, shared by calls from several threads at once.
    import threading

    rng = make_rng(37)
    w = bf16_random(rng, (32, 24, 3, 3))
    b = rng.standard_normal(24).astype(F32)
    xs = [last(bf16_random(rng, (1, 32, 5 + i, 7))) for i in range(4)]
    layers = [cppconv.ConvTranspose2d(w, b, stride=s, padding=1, layout="NHWC") for s in (2, 3)]
    want = {(j, i): layers[j](x, num_threads=1).view(np.uint16) for j in range(2) for i, x in enumerate(xs)}
    fresh = [cppconv.ConvTranspose2d(w, b, stride=s, padding=1, layout="NHWC") for s in (2, 3)]
    bad = []

    def work(i):
        for _ in range(5):
            for j in range(2):
                if not np.array_equal(fresh[j](xs[i], num_threads=1).view(np.uint16), want[(j, i)]):
                    bad.append((i, j))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad


# Phase geometries for the forced kernels: rank, C, K, groups, kernel, sizes, stride, padding, output_padding
FORCED_CASES = [
    (2, 32, 48, 1, (4, 4), (6, 7), 2, 1, 0),
    (2, 17, 33, 1, (3, 3), (5, 9), 1, 1, 0),
    (2, 64, 32, 1, (2, 2), (5, 6), 2, 0, 0),
    (2, 3, 16, 1, (3, 3), (9, 8), 2, 1, 1),
    (2, 32, 32, 32, (3, 3), (7, 6), 2, 1, 1),
    (2, 32, 32, 2, (3, 3), (5, 5), 3, 1, 2),
    (2, 32, 32, 32, (3, 3), (9, 10), 1, 1, 0),
    (2, 3, 32, 1, (3, 3), (12, 13), 1, 1, 0),
    (2, 64, 64, 1, (2, 2), (16, 16), 2, 0, 0),
    (2, 64, 64, 2, (2, 2), (16, 16), 2, 0, 0),
    (1, 32, 16, 1, (4,), (33,), 2, 1, 0),
    (3, 16, 32, 1, (2, 2, 2), (3, 4, 5), 2, 0, 0),
]
PHASE_KERNELS = [name for name in BF16_ALGORITHMS if f"__{_native.selected_isa()}_" in name]


@pytest.mark.skipif(not PHASE_KERNELS, reason="no bfloat16 convolution kernel on this CPU")
@pytest.mark.parametrize("kernel", PHASE_KERNELS)
def test_phases_on_each_kernel(kernel):
    # A bfloat16 convolution algorithm's name runs every phase on that kernel (through a
    # scratch): each kernel against the reference on the phase problems it takes.
    rng = make_rng(41)
    ran = 0
    for rank, c, k, groups, kernel_size, sizes, stride, padding, output_padding in FORCED_CASES:
        x, w, b = case_operands(rng, rank, 2, c, k, groups, kernel_size, sizes)
        per = (stride,) * rank, (padding,) * 2 * rank, (output_padding,) * rank
        ref, bound = reference(x, w, b, stride=per[0], pads=per[1], output_padding=per[2], groups=groups,
                               activation="relu")
        for layout in LAYOUTS[rank]:
            channels_last = layout[-1] == "C"
            xl = last(x) if channels_last else x
            try:
                y = _conv_transpose._conv_transpose_with_algorithm(
                    kernel, xl, w, b, rank=rank, layout=layout, stride=stride, padding=padding,
                    output_padding=output_padding, groups=groups, activation="relu")
            except ValueError:
                continue
            ran += 1
            assert_close(first(y) if channels_last else y, ref, bound, True, f"{kernel} {layout} {sizes} c={c}")
    if not ran:
        pytest.skip(f"{kernel} takes none of these phase problems")
