"""conv1d and conv3d (and their layers) against the float64 NumPy reference of any rank, on
every ISA, every depth lowering and every algorithm that accepts the lowered problem."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import cppconv
from cppconv import _conv, _native

from conftest import assert_close, make_rng
from reference import ACTIVATIONS, PADDING_MODES, conv_nd_abs_bound, conv_nd_ref, same_padding

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
FUNCTIONS = {1: cppconv.conv1d, 2: cppconv.conv2d, 3: cppconv.conv3d}
LAYERS = {1: cppconv.Conv1d, 2: cppconv.Conv2d, 3: cppconv.Conv3d}
LAST = {1: "NWC", 2: "NHWC", 3: "NDHWC"}


def channels_last(a):
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def pads_of(padding, sizes, kernel, stride, dilation):
    """conv_nd_ref's flattened (before, after) pads for a conv argument (int, per-axis ints or
    (before, after) pairs, or "same")."""
    r = len(sizes)
    per = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v,) * r  # noqa: E731
    if padding == "same":
        return tuple(p for i in range(r) for p in same_padding(sizes[i], kernel[i], per(stride)[i], per(dilation)[i]))
    return tuple(p for v in per(padding) for p in (tuple(v) if isinstance(v, (tuple, list)) else (v, v)))


def check(x, w, b=None, *, layout_last=False, algorithm=None, context="", **kw):
    """conv{r}d of channels-first x (passed channels-last when layout_last) against the reference."""
    r = x.ndim - 2
    pads = pads_of(kw.get("padding", 0), x.shape[2:], w.shape[2:], kw.get("stride", 1), kw.get("dilation", 1))
    args = dict(stride=kw.get("stride", 1), padding=pads, dilation=kw.get("dilation", 1), groups=kw.get("groups", 1),
                padding_mode=kw.get("padding_mode", "zeros"), activation=kw.get("activation"))
    ref, bound = conv_nd_ref(x, w, b, **args), conv_nd_abs_bound(x, w, b, **args)
    if layout_last:
        kw["layout"] = LAST[r]
        x = channels_last(x)
    if algorithm is None:
        y = FUNCTIONS[r](x, w, b, **kw)
    else:
        y = _conv._conv_with_algorithm(algorithm, x, w, b, rank=r, **kw)
    if layout_last:
        y = np.moveaxis(y, -1, 1)
    assert_close(y, ref, bound, np.result_type(x, w), context)
    return y


def check_every_algorithm(x, w, b=None, *, layouts=(False,), **kw):
    """check() with each algorithm of x's dtype forced in turn, in each layout (True: channels-last);
    the names of those that accepted the problem."""
    ran = set()
    suffix = "_f32" if x.dtype == F32 else "_f64"
    for name in _native.conv_algorithms():
        if suffix not in name:
            continue
        for last in layouts:
            try:
                check(x, w, b, algorithm=name, layout_last=last, context=name, **kw)
            except ValueError as e:
                assert "does not accept" in str(e), e
                continue
            ran.add(name)
    return ran


def random_case(rng, rank, dtype=F32):
    groups = int(rng.choice([1, 1, 2, 3]))
    cg, kg = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    sizes = tuple(int(rng.integers(1, 12)) for _ in range(rank))
    kernel = tuple(int(rng.integers(1, 4)) for _ in range(rank))
    stride = tuple(int(rng.integers(1, 3)) for _ in range(rank))
    dilation = tuple(int(rng.integers(1, 3)) for _ in range(rank))
    padding = tuple(int(rng.integers(0, 3)) for _ in range(rank))
    sizes = tuple(max(s, d * (k - 1) + 1 - 2 * p) for s, k, d, p in zip(sizes, kernel, dilation, padding))
    x = rng.standard_normal((int(rng.integers(1, 3)), cg * groups) + sizes).astype(dtype)
    w = rng.standard_normal((kg * groups, cg) + kernel).astype(dtype)
    b = rng.standard_normal(kg * groups).astype(dtype) if rng.random() < 0.5 else None
    return x, w, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("seed", range(40))
def test_random_problems(isa, rank, seed):
    rng = make_rng("conv_nd", rank, seed)
    x, w, b, kw = random_case(rng, rank, F32 if seed % 4 else F64)
    check(x, w, b, layout_last=bool(seed % 2), context=f"seed {seed}", **kw)


@pytest.mark.parametrize("rank", [1, 3])
def test_every_algorithm(rank):
    """Each algorithm of each ISA that accepts the (lowered) problem, forced in turn."""
    ran = set()
    for seed in range(8):
        rng = make_rng("conv_nd_algorithms", rank, seed)
        x, w, b, kw = random_case(rng, rank)
        for name in _native.conv_algorithms():
            if "_f32" not in name:
                continue
            try:
                check(x, w, b, algorithm=name, layout_last=bool(seed % 2), context=name, **kw)
            except ValueError as e:
                assert "does not accept" in str(e), e
                continue
            ran.add(name)
    assert len(ran) >= 3, ran  # engine kernels as well as the reference


# (input DHW, kernel, stride, padding, layout_last) -> the lowering explain() names
LOWERINGS = [
    ((4, 6, 7), (3, 1, 1), 1, (1, 0, 0), False, "flatten"),
    ((4, 6, 7), (1, 1, 1), (2, 1, 1), 0, True, "flatten"),
    ((4, 6, 7), (1, 3, 3), 1, (0, 1, 1), True, "depth_into_batch"),
    ((4, 6, 7), (1, 3, 3), 1, (0, 1, 1), False, "depth_gather"),
    ((5, 6, 7), (3, 3, 3), (2, 1, 2), 1, False, "depth_gather"),
    ((5, 6, 7), (3, 3, 3), (2, 1, 2), 1, True, "depth_gather"),
    ((1, 6, 7), (1, 3, 3), 1, 0, False, "none"),
]
# depthwise (groups = channels): interleaved rows where the height is not dilated; with zero
# padding in whole channel blocks, the channel-block kernel's (see deep_depthwise_lowering)
DEPTHWISE_LOWERINGS = [
    ((5, 6, 7), (3, 3, 3), 1, 1, 1, False, "depth_interleave"),
    ((5, 6, 7), (3, 3, 3), (2, 2, 1), (1, 2, 0), 1, True, "depth_interleave"),
    ((6, 6, 7), (2, 3, 1), (1, 1, 2), 1, (2, 1, 1), False, "depth_interleave"),
    ((5, 7, 7), (3, 3, 3), 1, 2, (1, 2, 1), True, "depth_gather"),
    ((5, 6, 7), (1, 3, 3), 1, (0, 1, 1), 1, True, "depth_into_batch"),
]
# The channel-block depthwise kernel's vector width per ISA (it has none on the baseline), and
# the (kernel width, stride) pairs it reads in place (width not dilated).
DEPTHWISE_LANES = {"avx512": 16, "avx2": 8}
IN_PLACE_WIDTHS = {(1, 1), (3, 1), (3, 2), (5, 1), (5, 2), (7, 1)}


def last_of(v):
    return v[-1] if isinstance(v, (tuple, list)) else v


# The channels-first 3-D depthwise kernel (conv3d_depthwise_nchw_f32): kd x 3 x 3 kernels (kd up
# to 8) at unit strides and dilations, zero depth padding, output rows at least as wide as the
# 2-D row kernel's shortest per ISA.
SLICES_MIN_WIDTH = {"avx512": 16, "avx2": 64}


def takes_slices(isa, layout_last, kernel, stride, dilation, out_w, padding_mode="zeros", depth_padded=True):
    """Whether conv3d_depthwise_nchw_f32 takes a float32 3-D depthwise problem."""
    width = SLICES_MIN_WIDTH.get(isa)
    ones = all(v == 1 for v in (stride if isinstance(stride, (tuple, list)) else (stride,)))
    ones = ones and all(v == 1 for v in (dilation if isinstance(dilation, (tuple, list)) else (dilation,)))
    return bool(width and not layout_last and kernel[1:] == (3, 3) and kernel[0] <= 8 and ones and out_w >= width
                and (padding_mode == "zeros" or not depth_padded))


def deep_depthwise_lowering(isa, channels, layout_last, kernel, stride=1, dilation=1, padding_mode="zeros",
                            out_w=0):
    """How a float32 3-D depthwise problem (not one of kernel depth 1 that runs as a batch) runs on
    conv2d_depthwise_cblock_f32, which takes the depth taps itself in whole channel blocks with
    zero padding: "none" (channels-last, read in place), "channels_last" (channels-first,
    transposed in and out), or None (the other lowerings).  Channels-first problems that
    conv3d_depthwise_nchw_f32 takes (out_w: the output width) run on it instead ("none")."""
    if takes_slices(isa, layout_last, kernel, stride, dilation, out_w, padding_mode):
        return "none"
    lanes = DEPTHWISE_LANES.get(isa)
    width = (kernel[-1], last_of(stride))
    if not lanes or padding_mode != "zeros" or channels % lanes or width not in IN_PLACE_WIDTHS:
        return None
    if kernel[-1] > 1 and last_of(dilation) != 1:  # (a one-tap axis has no dilation to take)
        return None
    return "none" if layout_last else "channels_last"


@pytest.mark.parametrize("dhw,kernel,stride,padding,last,lowering", LOWERINGS)
@pytest.mark.parametrize("padding_mode", PADDING_MODES)
def test_depth_lowerings(isa, dhw, kernel, stride, padding, last, lowering, padding_mode):
    rng = make_rng("lowering", dhw, kernel, stride, padding, last, padding_mode)
    x = rng.standard_normal((2, 5) + dhw).astype(np.float32)
    w = rng.standard_normal((7, 5) + kernel).astype(np.float32)
    b = rng.standard_normal(7).astype(np.float32)
    kw = dict(stride=stride, padding=padding, padding_mode=padding_mode, activation="relu")
    check(x, w, b, layout_last=last, **kw)
    x_shape = channels_last(x).shape if last else x.shape
    info = cppconv.explain(x_shape, w.shape, layout=LAST[3] if last else "NCDHW", **kw)
    if lowering == "depth_gather" and info["algorithm"].startswith(ENGINE):
        lowering = "depth_taps"
    assert info["lowering"] == lowering, info


# (k, 1, 1) kernels on planes whose rows of C/g * h * w values exceed 256 KiB run as column
# segments read through strides (cpp/conv.cpp, flatten_segments): widths that divide the plane
# and ones that leave a tail, depth padding (a tile) and none (read in place), groups, float64.
FLATTEN_SEGMENTS = [
    # (N, C, K, groups, (D, H, W), kd, stride_d, pad_d, dilation_d, dtype)
    (1, 48, 20, 1, (3, 40, 40), 3, 1, 1, 1, F32),
    (2, 48, 17, 1, (4, 37, 41), 3, 2, 2, 1, F32),
    (1, 48, 9, 1, (5, 37, 41), 2, 1, 0, 2, F32),
    (1, 32, 32, 2, (3, 48, 48), 2, 1, 1, 1, F64),
]


@pytest.mark.parametrize("n,c,k,groups,dhw,kd,stride,pad,dilation,dtype", FLATTEN_SEGMENTS)
@pytest.mark.parametrize("last", [False, True])
def test_flatten_column_segments(isa, n, c, k, groups, dhw, kd, stride, pad, dilation, dtype, last):
    rng = make_rng("flatten_segments", n, c, k, dhw, kd, stride, pad, last)
    x = rng.standard_normal((n, c) + dhw).astype(dtype)
    w = rng.standard_normal((k, c // groups, kd, 1, 1)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    kw = dict(stride=(stride, 1, 1), padding=(pad, 0, 0), dilation=(dilation, 1, 1), groups=groups)
    info = cppconv.explain((x if not last else channels_last(x)).shape, w.shape, dtype=dtype,
                           layout=LAST[3] if last else "NCDHW", **kw)
    assert info["lowering"] == "flatten", info
    check(x, w, b, layout_last=last, activation="relu", **kw)
    check(x, w, b, layout_last=last, padding_mode="reflect", **kw)
    ran = check_every_algorithm(x, w, b, layouts=(last,), **kw)
    assert any("channelvec" in a or "pixelvec" in a for a in ran), ran


@pytest.mark.parametrize("dhw,kernel,stride,padding,dilation,last,lowering", DEPTHWISE_LOWERINGS)
@pytest.mark.parametrize("padding_mode", PADDING_MODES)
def test_depthwise_lowerings(isa, dhw, kernel, stride, padding, dilation, last, lowering, padding_mode):
    rng = make_rng("dw_lowering", dhw, kernel, stride, padding, dilation, last, padding_mode)
    x = rng.standard_normal((2, 16) + dhw).astype(np.float32)
    w = rng.standard_normal((16, 1) + kernel).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=16, padding_mode=padding_mode)
    check(x, w, b, layout_last=last, **kw)
    layer = cppconv.Conv3d(w, b, layout=LAST[3] if last else "NCDHW", **kw)
    xin = channels_last(x) if last else x
    np.testing.assert_array_equal(layer(xin), cppconv.conv3d(xin, w, b, layout=layer.layout, **kw))
    deep = None if lowering == "depth_into_batch" else deep_depthwise_lowering(isa, 16, last, kernel, stride, dilation,
                                                                               padding_mode)
    expected = expected_gather(layer, xin.shape) if lowering == "depth_gather" else lowering
    assert layer.explain(xin.shape)["lowering"] == (deep or expected)


# 3-D depthwise on the channel-block kernel (depth taps at x's depth stride, the live ones only;
# channels-first between transposes, unless conv3d_depthwise_nchw_f32 takes it: SLICES):
# channels around the vector widths (taken in whole blocks of 8 or 16, the others interleaved),
# depths, rows and columns around the 8-pixel register block, kernels (3,3,3), (1,3,3), (3,1,1),
# (5,5,5), strides 1 and 2 per axis, dilation, padding 0, 1, asymmetric and "same", batch 2.
# (C, (D, H, W), kernel, stride, padding, dilation)
DEEP_DEPTHWISE = [
    (16, (5, 6, 7), (3, 3, 3), 1, 1, 1),
    (96, (4, 9, 17), (3, 3, 3), 1, 1, 1),
    (32, (6, 5, 19), (3, 3, 3), 2, 1, 1),
    (16, (7, 7, 9), (3, 3, 3), (2, 1, 2), ((1, 0), (2, 1), (0, 2)), 1),
    (16, (5, 8, 8), (3, 3, 3), 1, 0, 1),
    (48, (5, 6, 10), (1, 3, 3), (2, 1, 1), (0, 1, 1), 1),
    (16, (7, 5, 6), (3, 1, 1), 1, 1, 1),
    (16, (9, 9, 11), (5, 5, 5), (1, 2, 1), 2, 1),
    (16, (7, 9, 9), (3, 3, 3), 1, "same", (2, 2, 1)),
    (8, (4, 6, 9), (3, 3, 3), 1, 1, 1),
    (24, (4, 6, 9), (3, 3, 3), (1, 1, 2), 1, 1),
    (1, (5, 6, 9), (3, 3, 3), 1, 1, 1),
    (15, (5, 6, 9), (3, 3, 3), 1, 1, 1),
    (17, (5, 6, 9), (3, 3, 3), 2, 1, 1),
    (33, (3, 5, 17), (3, 3, 3), 1, 1, 1),
]


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("c,k,w,kernel_w,dilation_w", [(8, 16, 400, 3, 1),   # FoldRows
                                                       (2, 8, 400, 3, 1),    # TapsAsChannels
                                                       (4, 8, 800, 3, 8)])   # DilationRows
@pytest.mark.parametrize("padding,stride_h", [((1, 0), 3), ((1, 1), 2), ((0, 1), 2), ((2, 0), 1)])
def test_single_row_with_row_padding(isa, padding_mode, c, k, w, kernel_w, dilation_w, padding, stride_h):
    """One input row padded above or below, whose output rows the row lowerings (fold, taps as
    channels, dilation rows) would take as one long row: they must leave it alone where a row of
    padding is read (the fold read past its copy and crashed; the others gave the real row's
    values, or zeros for a replicated row)."""
    rng = make_rng("single_row_pad", padding_mode, c, w, kernel_w, padding, stride_h)
    x = rng.standard_normal((1, c, 1, w)).astype(np.float32)
    weight = rng.standard_normal((k, c, 1, kernel_w)).astype(np.float32)
    if padding_mode == "reflect":
        padding_mode = "symmetric"  # (reflect needs 2 rows to pad 1; symmetric mirrors the edge row)
    if padding_mode != "zeros" and padding_mode != "replicate":
        padding = tuple(min(v, 1) for v in padding)  # (at most the input's 1 row)
    for last in (False, True):
        check(x, weight, None, layout_last=last, stride=(stride_h, 1), padding=padding, dilation=(1, dilation_w),
              padding_mode=padding_mode, context=f"{isa} last={last}")
    x3 = x[:, :, None]  # the same row as conv3d of depth 1
    check(x3, weight[:, :, None], None, stride=(1, stride_h, 1), padding=((0, 0), padding, (0, 0)),
          dilation=(1, 1, dilation_w), padding_mode=padding_mode, context=f"{isa} 3-D")


@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("c,kernel,padding", [(8, (3, 1, 1), ((1, 1), (0, 0), (0, 0))),
                                              (16, (1, 1, 1), ((1, 1), (0, 0), (0, 0))),
                                              (32, (3, 3, 3), ((1, 1), (0, 0), (0, 0))),
                                              (16, (3, 3, 3), ((2, 1), (1, 1), (0, 0)))])
@pytest.mark.parametrize("last", [False, True])
def test_depthwise_deep_padding_modes(isa, padding_mode, c, kernel, padding, last):
    """Depth padding of another mode than zeros, in whole channel blocks: the depthwise kernel that
    reads the depth slices in place skips the taps outside the input as zeros, so it must not
    take it (it did where only the depth was padded: the padded slices' outputs were left out)."""
    rng = make_rng("dw_deep_modes", padding_mode, c, kernel, padding, last)
    x = rng.standard_normal((2, c, 4, 3, 6)).astype(np.float32)
    w = rng.standard_normal((c, 1) + kernel).astype(np.float32)
    for stride in ((1, 1, 1), (2, 2, 1)):
        check(x, w, None, layout_last=last, stride=stride, padding=padding, groups=c, padding_mode=padding_mode,
              context=f"{isa} stride {stride}")


@pytest.mark.parametrize("c,dhw,kernel,stride,padding,dilation", DEEP_DEPTHWISE)
@pytest.mark.parametrize("last", [False, True])
def test_depthwise_deep_in_place(isa, c, dhw, kernel, stride, padding, dilation, last):
    rng = make_rng("dw_deep", c, dhw, kernel, stride, padding, dilation, last)
    x = rng.standard_normal((2, c) + dhw).astype(np.float32)
    w = rng.standard_normal((c, 1) + kernel).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=c)
    activation = ACTIVATIONS[sum(dhw) % len(ACTIVATIONS)]
    y = check(x, w, b, layout_last=last, activation=activation, **kw)
    layout = LAST[3] if last else "NCDHW"
    xin = channels_last(x) if last else x
    layer = cppconv.Conv3d(w, b, layout=layout, activation=activation, **kw)
    info = layer.explain(xin.shape)
    deep = deep_depthwise_lowering(isa, c, last, kernel, stride, dilation, out_w=y.shape[-1])
    if takes_slices(isa, last, kernel, stride, dilation, y.shape[-1]):
        assert info["lowering"] == "none" and info["algorithm"].startswith("conv3d_depthwise_nchw_f32"), info
    elif deep:
        assert info["lowering"] == deep and info["algorithm"].startswith("conv2d_depthwise_cblock_f32"), info
    else:
        assert info["lowering"] not in ("none", "channels_last"), info
    # The same bits whatever the thread count, and into a strided out=.
    one = layer(xin, num_threads=1)
    np.testing.assert_array_equal(one, layer(xin, num_threads=2))
    np.testing.assert_array_equal(one, np.moveaxis(y, 1, -1) if last else y)
    wide = np.zeros(one.shape[:-1] + (2 * one.shape[-1],), np.float32)
    out = wide[..., ::2]
    assert layer(xin, out, num_threads=2) is out
    np.testing.assert_array_equal(out, one)
    # The residual: after the stores, before the activation (as the reference adds it).
    r = rng.standard_normal(one.shape).astype(np.float32)
    got = layer(xin, residual=r, num_threads=2)
    want = layer._call_with_algorithm("conv_reference_f32", xin, residual=r)
    bound = conv_nd_abs_bound(x, w, b, stride=stride, padding=pads_of(padding, dhw, kernel, stride, dilation),
                              dilation=dilation, groups=c)
    bound = (np.moveaxis(bound, 1, -1) if last else bound) + np.abs(r)
    assert_close(got, want, 1.5 * bound + 1.0, F32, "residual")  # (hardswish's slope, sigmoid's 1)


# The channels-first 3-D depthwise kernel (conv3d_depthwise_nchw_f32: the input slices read in
# place with one column of zero padding on either side, else each slice's band copied once into
# a ring of padded tiles; an output block sums the live depth taps' 3x3 windows): output widths
# around the vector widths and its 4-row blocks (16, 17, 28, 33 and 65 columns on AVX-512; 64
# to 68 on AVX2), kernel depths 1 to 5, depth padding past the kernel (slices with no live tap:
# the bias alone), row bands (a 100-row plane), runs of slices split between threads (one
# channel, 40 slices), channel counts off the vector widths, tiles for other column paddings and
# for the padding modes along rows and columns with no depth padding, batch 2.
# (C, (D, H, W), kd, padding, padding_mode)
SLICES = [
    (5, (4, 5, 16), 3, 1, "zeros"),
    (3, (3, 9, 17), 3, 1, "zeros"),
    (4, (6, 28, 28), 3, 1, "zeros"),
    (2, (5, 7, 33), 3, ((2, 0), (1, 1), (1, 1)), "zeros"),
    (3, (4, 4, 65), 1, (0, 1, 1), "zeros"),
    (2, (7, 6, 64), 5, (3, 1, 1), "zeros"),
    (3, (5, 3, 67), 2, ((0, 1), (0, 0), (2, 1)), "zeros"),
    (1, (40, 4, 66), 3, 1, "zeros"),
    (2, (3, 100, 70), 3, 1, "zeros"),
    (3, (4, 5, 18), 3, (1, 1, 0), "zeros"),
    (2, (4, 5, 66), 3, ((1, 1), (0, 2), (0, 2)), "zeros"),
    (3, (4, 6, 66), 3, (0, 1, 1), "reflect"),
    (3, (4, 6, 66), 3, (0, 1, 2), "replicate"),
    (3, (4, 6, 66), 3, (0, 2, 1), "circular"),
]


@pytest.mark.parametrize("c,dhw,kd,padding,padding_mode", SLICES)
def test_depthwise_slices_channels_first(isa, c, dhw, kd, padding, padding_mode):
    rng = make_rng("dw_slices", c, dhw, kd, padding, padding_mode)
    x = rng.standard_normal((2, c) + dhw).astype(np.float32)
    w = rng.standard_normal((c, 1, kd, 3, 3)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    kw = dict(padding=padding, padding_mode=padding_mode, groups=c)
    activation = ACTIVATIONS[(sum(dhw) + kd) % len(ACTIVATIONS)]
    y = check(x, w, b, activation=activation, **kw)
    ran = check_every_algorithm(x, w, b, activation=activation, **kw)
    layer = cppconv.Conv3d(w, b, activation=activation, **kw)
    info = layer.explain(x.shape)
    if takes_slices(isa, False, (kd, 3, 3), 1, 1, y.shape[-1], padding_mode, depth_padded=False):
        assert info["lowering"] == "none" and info["algorithm"].startswith("conv3d_depthwise_nchw_f32"), info
        assert any(a.startswith("conv3d_depthwise_nchw_f32") for a in ran), ran
    # The same bits whatever the thread count, and the layer's as the function's.
    one = layer(x, num_threads=1)
    np.testing.assert_array_equal(one, layer(x, num_threads=2))
    np.testing.assert_array_equal(one, layer(x, num_threads=3))
    np.testing.assert_array_equal(one, y)
    r = rng.standard_normal(one.shape).astype(np.float32)
    got = layer(x, residual=r, num_threads=2)
    want = layer._call_with_algorithm("conv_reference_f32", x, residual=r)
    bound = conv_nd_abs_bound(x, w, b, padding=pads_of(padding, dhw, (kd, 3, 3), 1, 1), groups=c) + np.abs(r)
    assert_close(got, want, 1.5 * bound + 1.0, F32, "residual")


@pytest.mark.parametrize("last", [False, True])
def test_gathered_in_several_chunks(isa, last):
    """Output slices beyond one gathered chunk (16 MiB of input slices: 24 slices of 96 x 42 x 42
    here), a part chunk, and several images."""
    rng = make_rng("chunks", last)
    x = rng.standard_normal((2, 32, 30, 40, 40)).astype(np.float32)
    w = rng.standard_normal((8, 32, 3, 3, 3)).astype(np.float32)
    check(x, w, None, layout_last=last, padding=1, stride=(1, 2, 1))
    # Depthwise, interleaved rows in chunks of 4 MiB: 13 slices of 16 x 126 x 40 here.
    x = rng.standard_normal((2, 16, 30, 40, 40)).astype(np.float32)
    w = rng.standard_normal((16, 1, 3, 3, 3)).astype(np.float32)
    check(x, w, None, layout_last=last, padding=1, groups=16)


ENGINE = ("conv2d_channelvec", "conv2d_pixelvec")  # the kernels that read depth taps in place


def expected_gather(layer, x_shape):
    """depth_taps where the chosen algorithm reads the kd slices in place, else depth_gather."""
    return "depth_taps" if layer.explain(x_shape)["algorithm"].startswith(ENGINE) else "depth_gather"


# (channels, output channels): around the vector widths (16 float32 lanes on AVX-512, 8 on
# AVX2) and the ChannelVec blocks (32/64 outputs); 3 is a first layer (PixelVec channels-first).
DEPTH_TAP_CHANNELS = [(1, 16), (3, 32), (15, 17), (16, 64), (17, 33), (33, 16)]


@pytest.mark.parametrize("last", [False, True])
@pytest.mark.parametrize("channels,out_channels", DEPTH_TAP_CHANNELS)
@pytest.mark.parametrize("kd", [1, 2, 3, 5])
def test_depth_taps_in_place(isa, last, channels, out_channels, kd):
    """Gathered problems whose kernel takes the kd depth slices from x itself: against the
    reference and every algorithm forced (the others still copy), batch 2, depth padding that
    some taps read only, out= into a strided view, bit-identical on 1 and 2 threads."""
    rng = make_rng("depth_taps", last, channels, out_channels, kd)
    x = rng.standard_normal((2, channels, kd + 2, 7, 9)).astype(np.float32)
    w = rng.standard_normal((out_channels, channels, kd, 3, 3)).astype(np.float32)
    b = rng.standard_normal(out_channels).astype(np.float32)
    kw = dict(padding=((kd // 2 + 1, kd // 2), (1, 1), (2, 0)), stride=(1, 2, 1), dilation=(1, 1, 2), activation="relu")
    y = check(x, w, b, layout_last=last, **kw)
    ran = check_every_algorithm(x, w, b, layouts=(last,), **kw)
    assert any(name.startswith(ENGINE) for name in ran), ran
    layer = LAYERS[3](w, b, layout=LAST[3] if last else "NCDHW", **kw)
    xin = channels_last(x) if last else x
    if channels > 1:  # (one channel in one group is depthwise: interleaved rows)
        assert layer.explain(xin.shape)["lowering"] == expected_gather(layer, xin.shape)
    yin = channels_last(y) if last else y
    one = layer(xin, num_threads=1)
    np.testing.assert_array_equal(layer(xin, num_threads=2), one)
    np.testing.assert_allclose(one, yin, rtol=1e-5, atol=1e-4)
    wide = np.full(yin.shape[:-1] + (yin.shape[-1] * 2,), np.nan, np.float32)
    out = wide[..., ::2]  # every other element: a strided y
    assert layer(xin, out) is out
    np.testing.assert_array_equal(out, one)


@pytest.mark.parametrize("last", [False, True])
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("depth,kd,pad,dilation", [
    (1, 3, (1, 1), 1), (2, 3, (2, 0), 1), (3, 2, (0, 1), 1), (5, 3, (2, 2), 2), (8, 3, (1, 1), 1), (4, 5, (3, 1), 1)])
def test_depth_taps_skip_padding_slices(isa, last, dtype, depth, kd, pad, dilation):
    """An output slice's depth taps that read only zero padding are left out (run_blocks' live
    depth taps) where the weights are finite; a non-finite weight there gives NaN, as in the
    reference.  Function and layer, every algorithm forced, 1 and 2 threads alike."""
    rng = make_rng("depth_skip", last, dtype.name, depth, kd, pad, dilation)
    x = rng.standard_normal((2, 5, depth, 4, 6)).astype(dtype)
    w = rng.standard_normal((40, 5, kd, 3, 3)).astype(dtype)
    b = rng.standard_normal(40).astype(dtype)
    kw = dict(padding=(pad, (1, 1), (1, 1)), dilation=(dilation, 1, 1), activation="relu")
    inf = w.copy()
    inf[3, 1, 0, 1, 1], inf[17, 4, -1, 0, 2] = np.inf, -np.inf
    xin = channels_last(x) if last else x
    for weight in (w, inf):
        ran = check_every_algorithm(x, weight, b, layouts=(last,), **kw)
        assert any(name.startswith(ENGINE) for name in ran), ran
        layer = LAYERS[3](weight, b, layout=LAST[3] if last else "NCDHW", **kw)
        y = check(x, weight, b, layout_last=last, **kw)
        one = layer(xin, num_threads=1)
        np.testing.assert_array_equal(layer(xin, num_threads=2), one)
        np.testing.assert_array_equal(np.isnan(one), np.isnan(channels_last(y) if last else y))


@pytest.mark.parametrize("last", [False, True])
@pytest.mark.parametrize("padding_mode", PADDING_MODES)
@pytest.mark.parametrize("dtype", [F32, F64])
def test_depth_taps_padding_modes(isa, last, padding_mode, dtype):
    """Every padding mode along every axis (the depth one resolved into the slice map), strides
    and dilations per axis, asymmetric and "same" padding, groups, float64."""
    rng = make_rng("depth_taps_modes", last, padding_mode, dtype.name)
    x = rng.standard_normal((2, 6, 7, 8, 9)).astype(dtype)
    for kernel, kw in [
        ((3, 3, 3), dict(padding=((2, 1), (1, 2), (1, 1)), stride=(2, 1, 2), dilation=(2, 1, 1))),
        ((2, 3, 1), dict(padding="same")),
        ((5, 1, 3), dict(padding=((2, 2), (0, 0), (0, 2)), dilation=(1, 2, 2))),
        ((3, 3, 3), dict(padding=1, groups=2)),
    ]:
        groups = kw.get("groups", 1)
        w = rng.standard_normal((20, 6 // groups) + kernel).astype(dtype)
        b = rng.standard_normal(20).astype(dtype)
        check(x, w, b, layout_last=last, padding_mode=padding_mode, activation="leaky_relu", **kw)


@pytest.mark.parametrize("last", [False, True])
def test_depth_taps_residual(isa, last):
    """A residual added by the kernel in place of the copying gather's, on 1 and 2 threads."""
    rng = make_rng("depth_taps_residual", last)
    x = rng.standard_normal((2, 17, 5, 6, 7)).astype(np.float32)
    w = rng.standard_normal((33, 17, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(33).astype(np.float32)
    layout = LAST[3] if last else "NCDHW"
    xin = channels_last(x) if last else x
    plain = LAYERS[3](w, b, padding=1, layout=layout)
    fused = LAYERS[3](w, b, padding=1, layout=layout, activation="relu")
    r = rng.standard_normal(plain(xin).shape).astype(np.float32)
    for algorithm in plain.explain(xin.shape)["candidates"]:
        want = np.maximum(plain._call_with_algorithm(algorithm, xin) + r, 0)
        one = fused._call_with_algorithm(algorithm, xin, num_threads=1, residual=r)
        np.testing.assert_array_equal(fused._call_with_algorithm(algorithm, xin, num_threads=2, residual=r), one)
        np.testing.assert_allclose(one, want, rtol=2e-6, atol=1e-5, err_msg=algorithm)


@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activations_and_depthwise(isa, rank, activation):
    rng = make_rng("act", rank, activation)
    sizes = (37,) if rank == 1 else (3, 9, 10)
    x = rng.standard_normal((1, 16) + sizes).astype(np.float32)
    w = rng.standard_normal((16, 1) + (5,) * rank).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    check(x, w, b, padding="same", groups=16, activation=activation)


@pytest.mark.parametrize("rank", [1, 3])
def test_same_padding_strided_dilated(isa, rank):
    rng = make_rng("same", rank)
    sizes = (29,) if rank == 1 else (7, 8, 9)
    x = rng.standard_normal((2, 3) + sizes).astype(np.float32)
    w = rng.standard_normal((4, 3) + (3,) * rank).astype(np.float32)
    y = check(x, w, None, padding="same", stride=2, dilation=2)
    assert y.shape[2:] == tuple(-(-s // 2) for s in sizes)


def test_asymmetric_padding_pairs():
    rng = make_rng("pairs")
    x = rng.standard_normal((1, 2, 5, 6, 7))
    w = rng.standard_normal((3, 2, 2, 2, 2))
    y = cppconv.conv3d(x, w, padding=((1, 0), (0, 2), (1, 1)))
    ref = conv_nd_ref(x, w, None, padding=(1, 0, 0, 2, 1, 1))
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    y1 = cppconv.conv1d(x[:, :, 0, 0], w[:, :, 0, 0], padding=((2, 1),))
    np.testing.assert_allclose(y1, conv_nd_ref(x[:, :, 0, 0], w[:, :, 0, 0], padding=(2, 1)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rank", [1, 3])
def test_unbatched_out_and_threads(rank):
    rng = make_rng("unbatched", rank)
    sizes = (50,) if rank == 1 else (6, 10, 12)
    x = rng.standard_normal((4,) + sizes).astype(np.float32)
    w = rng.standard_normal((6, 4) + (3,) * rank).astype(np.float32)
    y = FUNCTIONS[rank](x, w, padding=1)
    assert y.shape == (6,) + sizes
    np.testing.assert_allclose(y, FUNCTIONS[rank](x[None], w, padding=1)[0], rtol=0, atol=0)
    out = np.empty_like(y)
    assert FUNCTIONS[rank](x, w, padding=1, out=out) is out
    np.testing.assert_array_equal(out, y)
    for threads in (1, 2, 3):
        np.testing.assert_array_equal(FUNCTIONS[rank](x, w, padding=1, num_threads=threads), y)


@pytest.mark.parametrize("rank", [1, 3])
def test_layer_matches_function_and_pickles(rank):
    rng = make_rng("layer", rank)
    sizes = (40,) if rank == 1 else (5, 9, 9)
    x = rng.standard_normal((2, 4) + sizes).astype(np.float32)
    w = rng.standard_normal((6, 2) + (3,) * rank).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    kw = dict(stride=2, padding="same", groups=2, activation="relu")
    layer = LAYERS[rank](w, b, **kw)
    expected = FUNCTIONS[rank](x, w, b, **kw)
    np.testing.assert_array_equal(layer(x), expected)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(layer))(x), expected)
    assert layer.kernel_size == (3,) * rank and layer.stride == (2,) * rank
    assert layer.layout == ("NCW" if rank == 1 else "NCDHW")
    assert layer.explain(x.shape)["output_shape"] == expected.shape


def test_channels_first_equals_channels_last():
    rng = make_rng("layouts")
    x = rng.standard_normal((2, 6, 4, 7, 8)).astype(np.float32)
    w = rng.standard_normal((6, 3, 2, 3, 1)).astype(np.float32)
    a = cppconv.conv3d(x, w, padding=1, groups=2)
    c = cppconv.conv3d(channels_last(x), w, padding=1, groups=2, layout="ndhwc")
    np.testing.assert_allclose(np.moveaxis(c, -1, 1), a, rtol=1e-5, atol=1e-5)


def test_linearity_and_translation():
    rng = make_rng("properties")
    x1, x2 = rng.standard_normal((2, 1, 3, 9, 8, 7))
    w = rng.standard_normal((2, 3, 3, 3, 3))
    y = cppconv.conv3d(2 * x1 - 3 * x2, w)
    np.testing.assert_allclose(y, 2 * cppconv.conv3d(x1, w) - 3 * cppconv.conv3d(x2, w), rtol=1e-10, atol=1e-10)
    # Shifting the input by one slice along each axis (circular padding) shifts the output.
    shifted = np.roll(x1, (1, 2, 1), axis=(2, 3, 4))
    y1 = cppconv.conv3d(x1, w, padding=(1, 1, 1), padding_mode="circular")
    y2 = cppconv.conv3d(shifted, w, padding=(1, 1, 1), padding_mode="circular")
    np.testing.assert_allclose(np.roll(y1, (1, 2, 1), axis=(2, 3, 4)), y2, rtol=1e-10, atol=1e-10)


def test_matches_torch():
    torch = pytest.importorskip("torch")
    rng = make_rng("torch")
    x = rng.standard_normal((1, 4, 6, 10, 11)).astype(np.float32)
    w = rng.standard_normal((8, 2, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    y = cppconv.conv3d(x, w, b, stride=(1, 2, 2), padding=(1, 0, 1), dilation=(2, 1, 1), groups=2)
    t = torch.nn.functional.conv3d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride=(1, 2, 2),
                                   padding=(1, 0, 1), dilation=(2, 1, 1), groups=2).numpy()
    np.testing.assert_allclose(y, t, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("call,message", [
    (lambda: cppconv.conv2d(np.zeros((1, 1, 2, 3, 3)), np.zeros((1, 1, 1, 1))), "x is 5-D .*use conv3d"),
    (lambda: cppconv.conv3d(np.zeros((1, 3, 3)), np.zeros((1, 1, 1, 1, 1))),
     r"use conv1d \(batched\) or conv2d \(unbatched\)"),
    (lambda: cppconv.conv1d(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 1))), "conv1d takes x of shape .N, C, L."),
    (lambda: cppconv.conv3d(np.zeros((1, 1, 3, 3, 3)), np.zeros((1, 1, 3, 3))), "weight must be 5-D .*fits conv2d"),
    (lambda: cppconv.conv1d(np.zeros((1, 1, 3)), np.zeros((1, 1, 1)), layout="NCHW"), "layout must be 'NCW' or 'NWC'"),
    (lambda: cppconv.conv3d(np.zeros((1, 1, 3, 3, 3)), np.zeros((1, 1, 4, 1, 1))), "larger than the padded input"),
    (lambda: cppconv.conv3d(np.zeros((1, 1, 3, 3, 3)), np.zeros((1, 1, 1, 1, 1)), stride=(1, 2)), "3 ints"),
    (lambda: cppconv.conv3d(np.zeros((1, 1, 2, 3, 3)), np.zeros((1, 1, 1, 1, 1)), padding=2,
                            padding_mode="reflect"), "too large for padding_mode='reflect'"),
])
def test_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_output_size_helper_is_the_native_one():
    assert cppconv.conv_output_size(16000, 10, stride=5) == 3199
    assert _native.conv_output_size(16000, 10, 5, 1, 0, 0) == 3199
    assert _native.conv_output_size(3, 5, 1, 1, 0, 0) == 0


# (length, kernel, stride, padding, dilation): folded rows of 96 outputs, with and without a tail
FOLDS = [(192 * 2 + 2, 3, 2, 0, 1), (3000, 3, 2, 1, 1), (1000, 10, 5, 3, 1), (700, 3, 1, 8, 8), (700, 7, 3, "same", 2)]


@pytest.mark.parametrize("length,kernel,stride,padding,dilation", FOLDS)
@pytest.mark.parametrize("padding_mode", PADDING_MODES)
@pytest.mark.parametrize("last", [False, True])
def test_long_rows_fold(isa, length, kernel, stride, padding, dilation, padding_mode, last):
    rng = make_rng("fold", length, kernel, stride, padding, dilation, padding_mode, last)
    x = rng.standard_normal((2, 6, length)).astype(np.float32)
    w = rng.standard_normal((10, 3, kernel)).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=2, padding_mode=padding_mode)
    y = check(x, w, b, layout_last=last, **kw)
    shape = channels_last(x).shape if last else x.shape
    info = cppconv.explain(shape, w.shape, layout="NWC" if last else "NCW", **kw)
    assert info["lowering"] == "fold_rows", info
    assert y.shape[-1] >= 192


# (channels, groups, length, kernel, stride, padding, dtype): the fold's other routes.
# Channels-last copies whose pixel pitch (stride * channels values) is a multiple of 4 KiB get
# a padded channel pitch (512 at stride 2 as wav2vec2's conv1, 128 at 8, float64 256 at 2);
# unpadded channels-last rows with a pitch that spreads are read in place; channels-first rows of
# 96 or more channels per group without padding are read in place channels-first.  Output
# widths of 192 (two rows, no tail) and around it and the pixel blocks (a tail of 1, 11, 13).
FOLD_ROUTES = [(512, 1, 192 * 2 + 1, 3, 2, 0, F32), (512, 1, 2 * 205 + 1, 3, 2, 1, F32),
               (128, 2, 8 * 203 + 6, 7, 8, 3, F32), (256, 1, 2 * 203 + 1, 3, 2, 1, F64),
               (96, 1, 193 + 2, 3, 1, 0, F32), (192, 2, 2 * 204 + 1, 3, 2, 0, F64), (20, 1, 300, 5, 1, 0, F32)]


@pytest.mark.parametrize("channels,groups,length,kernel,stride,padding,dtype", FOLD_ROUTES)
@pytest.mark.parametrize("last", [False, True])
def test_long_rows_fold_routes(isa, channels, groups, length, kernel, stride, padding, dtype, last):
    rng = make_rng("fold_routes", channels, groups, length, kernel, stride, padding, dtype, last)
    x = rng.standard_normal((2, channels, length)).astype(dtype)
    w = rng.standard_normal((5 * groups, channels // groups, kernel)).astype(dtype)
    b = rng.standard_normal(5 * groups).astype(dtype)
    kw = dict(stride=stride, padding=padding, groups=groups, activation="relu")
    y = check(x, w, b, layout_last=last, **kw)
    shape = channels_last(x).shape if last else x.shape
    assert cppconv.explain(shape, w.shape, layout="NWC" if last else "NCW", **kw)["lowering"] == "fold_rows"
    assert y.shape[-1] >= 192
    xin = channels_last(x) if last else x
    layout = "NWC" if last else "NCW"
    one = cppconv.conv1d(xin, w, b, layout=layout, num_threads=1, **kw)
    np.testing.assert_array_equal(cppconv.conv1d(xin, w, b, layout=layout, num_threads=2, **kw), one)


def test_long_rows_fold_routes_every_algorithm():
    """Each route's rows (read in place channels-first, in place channels-last, a channels-last
    copy with a padded channel pitch) with every algorithm that takes them forced."""
    rng = make_rng("fold_routes_algorithms")
    for channels, stride, padding in ((96, 1, 0), (8, 1, 0), (128, 8, 3)):
        x = rng.standard_normal((1, channels, 200 * stride + 3)).astype(np.float32)
        w = rng.standard_normal((8, channels, 3)).astype(np.float32)
        kw = dict(stride=stride, padding=padding)
        assert cppconv.explain(x.shape, w.shape, **kw)["lowering"] == "fold_rows"
        ran = check_every_algorithm(x, w, None, layouts=(False, True), **kw)
        assert len(ran) >= 3, ran


# (channels, groups, length, kernel, stride, padding): long rows with at most 16 (channel, tap)
# pairs run as a 1x1 problem on each tap's window copied as a channel; output widths around
# the 192-output threshold and the pixel blocks, odd tails, strided and padded windows
TAPS = [(1, 1, 16000 // 8, 10, 5, 0), (1, 1, 194, 3, 1, 0), (1, 1, 201, 3, 1, 2), (2, 2, 400, 5, 2, 1),
        (3, 1, 1000, 5, 3, "same"), (1, 1, 2000, 16, 7, 4)]


@pytest.mark.parametrize("channels,groups,length,kernel,stride,padding", TAPS)
@pytest.mark.parametrize("padding_mode", PADDING_MODES)
@pytest.mark.parametrize("last", [False, True])
@pytest.mark.parametrize("dtype", [F32, F64])
def test_long_rows_taps_as_channels(isa, channels, groups, length, kernel, stride, padding, padding_mode, last, dtype):
    rng = make_rng("taps", channels, groups, length, kernel, stride, padding, padding_mode, last, dtype)
    x = rng.standard_normal((2, channels, length)).astype(dtype)
    w = rng.standard_normal((6 * groups, channels // groups, kernel)).astype(dtype)
    b = rng.standard_normal(6 * groups).astype(dtype)
    kw = dict(stride=stride, padding=padding, groups=groups, padding_mode=padding_mode, activation="relu")
    y = check(x, w, b, layout_last=last, **kw)
    shape = channels_last(x).shape if last else x.shape
    info = cppconv.explain(shape, w.shape, layout="NWC" if last else "NCW", **kw)
    assert info["lowering"] == "taps_as_channels", info
    assert y.shape[-1] >= 192


# (channels, groups, length, kernel, dilation, padding): stride 1, length and zero padding
# multiples of the dilation, so the row is a plane of rows of `dilation` values; row counts
# around the microkernels' blocks
DILATION_ROWS = [(64, 1, 4096, 3, 8, 8), (5, 1, 8 * 7, 3, 8, 0), (6, 2, 16 * 13, 2, 16, 16), (4, 1, 8 * 25, 5, 8, 16),
                 (3, 1, 24 * 9, 3, 24, 48)]


@pytest.mark.parametrize("channels,groups,length,kernel,dilation,padding", DILATION_ROWS)
@pytest.mark.parametrize("last", [False, True])
@pytest.mark.parametrize("dtype", [F32, F64])
def test_dilation_rows(isa, channels, groups, length, kernel, dilation, padding, last, dtype):
    rng = make_rng("dilation_rows", channels, groups, length, kernel, dilation, padding, last, dtype)
    x = rng.standard_normal((2, channels, length)).astype(dtype)
    w = rng.standard_normal((7 * groups, channels // groups, kernel)).astype(dtype)
    b = rng.standard_normal(7 * groups).astype(dtype)
    kw = dict(padding=padding, dilation=dilation, groups=groups, activation="leaky_relu")
    check(x, w, b, layout_last=last, **kw)
    shape = channels_last(x).shape if last else x.shape
    layout = "NWC" if last else "NCW"
    assert cppconv.explain(shape, w.shape, layout=layout, **kw)["lowering"] == "dilation_rows"
    # a padding that is not zeros, or not a multiple of the dilation, reads values rows would not hold
    for other in (dict(kw, padding_mode="reflect"), dict(kw, padding=padding + 1)):
        if padding or other.get("padding_mode") is None:
            check(x, w, b, layout_last=last, **other)
            assert cppconv.explain(shape, w.shape, layout=layout, **other)["lowering"] != "dilation_rows"


@pytest.mark.parametrize("lowering,kw", [("taps_as_channels", dict(stride=5, padding=3)),
                                         ("dilation_rows", dict(dilation=8, padding=8))])
def test_1d_lowerings_every_algorithm(lowering, kw):
    rng = make_rng("1d_lowerings", lowering)
    channels = 1 if lowering == "taps_as_channels" else 4
    x = rng.standard_normal((1, channels, 1200)).astype(np.float32)
    w = rng.standard_normal((8, channels, 3)).astype(np.float32)
    assert cppconv.explain(x.shape, w.shape, **kw)["lowering"] == lowering
    ran = check_every_algorithm(x, w, None, layouts=(False, True), **kw)
    assert len(ran) >= 3, ran


def test_long_rows_every_algorithm():
    rng = make_rng("fold_algorithms")
    x = rng.standard_normal((1, 4, 1001)).astype(np.float32)
    w = rng.standard_normal((8, 4, 5)).astype(np.float32)
    ran = set()
    for name in _native.conv_algorithms():
        for last in (False, True):
            try:
                check(x, w, None, algorithm=name, layout_last=last, padding=2, stride=3, context=name)
            except ValueError as e:
                assert "does not accept" in str(e), e
                continue
            ran.add(name)
    assert len(ran) >= 3, ran


def test_symmetric_padding_is_numpys():
    """"symmetric" repeats the edge value (NumPy's np.pad mode and SciPy's), at any padding size."""
    x = np.arange(5.0)[None, None]
    w = np.ones((1, 1, 1))
    y = cppconv.conv1d(x, w, padding=7, padding_mode="symmetric")
    np.testing.assert_array_equal(y[0, 0], np.pad(np.arange(5.0), 7, mode="symmetric"))


# Zero padding that dwarfs the input, so that no kernel's tiles stay in proportion to the call,
# and taps that read only padding for every output: the kernels run the other taps, unpadded
# where the dropped taps spanned the padding (explain's live_taps_only).  (sizes, kernel,
# stride, padding, dilation, live taps only); the last case keeps every tap.
LIVE_TAPS = [
    ((1,), (3,), 1, 200, 200, True),
    ((3, 1), (3, 3), 1, (1, 300), (1, 300), True),
    ((4, 4), (2, 3), (1, 3), ((300, 250), (400, 401)), 256, True),
    ((2, 3), (3, 3), 1, 500, 500, True),
    ((2, 2, 2), (3, 3, 3), 1, 300, 300, True),
    ((3, 1, 2), (2, 3, 1), (2, 1, 1), ((0, 0), (300, 300), (1, 0)), (1, 300, 1), True),
    ((5,), (3,), 2, ((150, 190),), 97, False),
]


@pytest.mark.parametrize("sizes,kernel,stride,padding,dilation,live", LIVE_TAPS, ids=lambda v: str(v))
@pytest.mark.parametrize("channels,groups", [((4, 6), 1), ((6, 6), 3), ((8, 8), 8)])
@pytest.mark.parametrize("last", [False, True])
@pytest.mark.parametrize("dtype", [F32, F64])
def test_live_taps_only(isa, sizes, kernel, stride, padding, dilation, live, channels, groups, last, dtype):
    """Against the native float64 reference, which runs every tap and reads padding without
    copying it (a NumPy reference would pad 600^3 values), with its bound from |x| and |w|."""
    r = len(sizes)
    rng = make_rng("live_taps", sizes, kernel, channels, groups, last, dtype)
    C, K = channels
    x = rng.standard_normal((2, C) + sizes).astype(dtype)
    w = rng.standard_normal((K, C // groups) + kernel).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    if last:
        x, kw["layout"] = channels_last(x), LAST[r]

    def reference(x, w, b, **extra):
        x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
        return _conv._conv_with_algorithm("conv_reference_f64", x64, w64, b64, rank=r, **kw, **extra)

    ref = reference(x, w, b, activation="relu")
    bound = reference(np.abs(x), np.abs(w), np.abs(b))
    info = cppconv.explain(x.shape, w.shape, dtype, **kw)
    # (The channel-block kernel takes a 3-D depthwise problem, its taps clipped to the input as it
    # goes: no plan of live taps there.)
    if r == 3 and groups == C and dtype == F32 and deep_depthwise_lowering(isa, C, last, kernel, stride, dilation):
        live = False
    assert info["live_taps_only"] == live, info
    assert_close(FUNCTIONS[r](x, w, b, activation="relu", **kw), ref, bound, dtype)
    for name in info["candidates"]:
        y = _conv._conv_with_algorithm(name, x, w, b, rank=r, activation="relu", **kw)
        assert_close(y, ref, bound, dtype, name)
    layer = LAYERS[r](w, b, activation="relu", **kw)
    assert layer.explain(x.shape)["live_taps_only"] == live
    np.testing.assert_array_equal(layer(x), FUNCTIONS[r](x, w, b, activation="relu", **kw))
