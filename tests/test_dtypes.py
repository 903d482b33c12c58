"""Data types at the API: the result-type rule and dtype= (one decision, _args.call_dtypes),
integer max pooling that keeps its dtype, and bfloat16 (ml_dtypes' NumPy dtype) through every
convolution, transposed convolution, pooling function and layer, on every ISA and forced
algorithm, against float64 references of the same bfloat16 values."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import cppconv
from cppconv import _conv, _conv_transpose, _native, _pool

from conftest import RTOL, make_rng
from reference import conv_nd_abs_bound, conv_nd_ref
from test_conv_transpose_nd import ref_conv_transpose
from test_pool_nd import ref_pool_nd

try:
    import ml_dtypes
except ImportError:  # the bfloat16 tests below skip, visibly, without it
    ml_dtypes = None

needs_bfloat16 = pytest.mark.skipif(ml_dtypes is None, reason="ml_dtypes is not installed: no NumPy bfloat16 dtype")
BF16 = None if ml_dtypes is None else np.dtype(ml_dtypes.bfloat16)
F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)

CONV = {1: cppconv.conv1d, 2: cppconv.conv2d, 3: cppconv.conv3d}
CONV_LAYER = {1: cppconv.Conv1d, 2: cppconv.Conv2d, 3: cppconv.Conv3d}
TRANSPOSE = {1: cppconv.conv_transpose1d, 2: cppconv.conv_transpose2d, 3: cppconv.conv_transpose3d}
TRANSPOSE_LAYER = {1: cppconv.ConvTranspose1d, 2: cppconv.ConvTranspose2d, 3: cppconv.ConvTranspose3d}
LAST = {1: "NWC", 2: "NHWC", 3: "NDHWC"}


def channels_last(a):
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def bits(a):
    """The bit patterns of a 2- or 4-byte float array, for exact comparison (NaNs included)."""
    return np.ascontiguousarray(a).view(np.uint16 if a.dtype.itemsize == 2 else np.uint32)


def rounded_f32(a):
    """float32 values rounded to bfloat16 by the native helper, kept as float32."""
    a = np.ascontiguousarray(a, np.float32)
    out = np.empty_like(a)
    _native.round_to_bf16(a, out)
    return out


# ---------------------------------------------------------------------------------------------
# The conversion helpers, exactly (no ml_dtypes needed)

def f32_of_bits(u):
    return np.asarray(u, np.uint32).view(np.float32)


def to_bf16_bits(values_f32):
    src = np.ascontiguousarray(values_f32, np.float32)
    dst = np.empty(src.shape, np.uint16)
    _native.float32_to_bf16(src, dst)
    return dst


# float32 bits -> the bfloat16 bits round-to-nearest-even gives
RNE_CASES = [
    (0x3F800000, 0x3F80),  # 1.0, exact
    (0x3F808000, 0x3F80),  # tie, even below
    (0x3F818000, 0x3F82),  # tie, even above
    (0x3F808001, 0x3F81),  # just above the tie
    (0x3F807FFF, 0x3F80),  # just below the tie
    (0xBF818000, 0xBF82),  # negative tie
    (0x00008000, 0x0000),  # subnormal tie to even zero
    (0x00018000, 0x0002),  # subnormal tie up
    (0x80000000, 0x8000),  # -0
    (0x7F7F8000, 0x7F80),  # tie at the top rounds to +inf (0x7F7F is odd)
    (0x7F7F7FFF, 0x7F7F),  # largest finite that stays finite
    (0x7F7FFFFF, 0x7F80),  # FLT_MAX overflows to +inf
    (0xFF7FFFFF, 0xFF80),  # -FLT_MAX to -inf
    (0x7F800000, 0x7F80),  # +inf
    (0xFF800000, 0xFF80),  # -inf
    (0x7FC00000, 0x7FC0),  # quiet NaN
    (0x7F800001, 0x7FC0),  # signalling NaN whose payload sits in the dropped bits: still NaN
    (0xFF800001, 0xFFC0),  # negative NaN keeps its sign
    (0x7FFFFFFF, 0x7FFF),  # NaN with a full payload
]


def test_float32_to_bf16_rounds_to_nearest_even_exactly():
    src = f32_of_bits([c[0] for c in RNE_CASES])
    want = np.array([c[1] for c in RNE_CASES], np.uint16)
    got = to_bf16_bits(src)
    for (f, w), g in zip(RNE_CASES, got):
        assert g == w, f"float32 bits {f:#010x} -> bfloat16 {int(g):#06x}, expected {w:#06x}"
    rounded = np.empty_like(src)
    _native.round_to_bf16(src, rounded)
    np.testing.assert_array_equal(bits(rounded), want.astype(np.uint32) << 16)


def test_bf16_to_float32_every_pattern_exactly():
    every = np.arange(2**16, dtype=np.uint16)
    wide = np.empty(every.shape, np.float32)
    _native.bf16_to_float32(every, wide)
    np.testing.assert_array_equal(bits(wide), every.astype(np.uint32) << 16)
    # and back: every bfloat16 (NaNs quieted) survives the round trip
    back = to_bf16_bits(wide)
    nan = (every & 0x7FFF) > 0x7F80
    np.testing.assert_array_equal(back[~nan], every[~nan])
    np.testing.assert_array_equal(back[nan], every[nan] | 0x0040)


def test_float32_to_bf16_against_integer_rounding():
    """Random finite float32 bit patterns against round-half-even written on the integers."""
    rng = make_rng("bf16_random_bits")
    u = rng.integers(0, 2**32, size=200_000, dtype=np.uint64).astype(np.uint32)
    u = u[(u & 0x7F800000) != 0x7F800000]  # finite
    low, high = u & 0xFFFF, (u >> 16).astype(np.uint32)
    up = (low > 0x8000) | ((low == 0x8000) & ((high & 1) == 1))
    want = (high + up).astype(np.uint16)
    np.testing.assert_array_equal(to_bf16_bits(f32_of_bits(u)), want)


def test_conversions_identical_across_thread_counts():
    rng = make_rng("bf16_threads_conversion")
    x = rng.standard_normal(3_000_001).astype(np.float32) * 1e3
    one, two = np.empty(x.shape, np.uint16), np.empty(x.shape, np.uint16)
    _native.float32_to_bf16(x, one, 1)
    _native.float32_to_bf16(x, two, 2)
    np.testing.assert_array_equal(one, two)
    wide1, wide2 = np.empty(x.shape, np.float32), np.empty(x.shape, np.float32)
    _native.bf16_to_float32(one, wide1, 1)
    _native.bf16_to_float32(one, wide2, 2)
    np.testing.assert_array_equal(bits(wide1), bits(wide2))


def test_conversion_arguments_checked():
    with pytest.raises(TypeError, match="src"):
        _native.float32_to_bf16(np.zeros(4, np.float64), np.zeros(4, np.uint16))
    with pytest.raises(TypeError, match="dst"):
        _native.float32_to_bf16(np.zeros(4, np.float32), np.zeros(4, np.int16))
    with pytest.raises(ValueError, match="dst"):
        _native.bf16_to_float32(np.zeros(4, np.uint16), np.zeros(5, np.float32))
    with pytest.raises(TypeError, match="src"):
        _native.round_to_bf16(np.zeros((4, 4), np.float32)[:, ::2], np.zeros(8, np.float32))


# ---------------------------------------------------------------------------------------------
# The result-type rule and dtype= (no ml_dtypes needed)

# (x dtype, weight dtype, bias dtype or None) -> result dtype
RESULT_TYPES = [
    (np.uint8, F32, None, F32),  # an image with float32 weights stays float32 (issue 17)
    (np.uint8, F32, F32, F32),
    (np.uint8, F16, None, F16),
    (np.int8, F32, None, F32),
    (np.int16, F32, None, F32),
    (np.int32, F32, None, F64),  # NumPy: int32 with float32 is float64
    (np.bool_, F32, None, F32),
    (F32, np.uint8, None, F32),
    (np.uint8, np.uint8, None, F64),  # integers alone: float64 (documented)
    (np.int64, np.int64, np.int64, F64),
    (np.bool_, np.bool_, None, F64),
    (F32, F64, None, F64),
    (F32, F32, F64, F64),
    (np.uint8, F32, np.int64, F64),
    (F16, F16, None, F16),
    (F16, F16, F32, F32),
]


@pytest.mark.parametrize("xd,wd,bd,want", RESULT_TYPES, ids=lambda d: str(d if d is None else np.dtype(d).name))
def test_result_type_follows_numpy(xd, wd, bd, want):
    rng = make_rng("result_type", str(xd), str(wd), str(bd))
    x = rng.integers(0, 3, (1, 3, 6, 7)).astype(xd)
    w = rng.integers(-1, 2, (4, 3, 3, 3)).astype(wd)
    b = None if bd is None else rng.integers(-2, 3, 4).astype(bd)
    ref = conv_nd_ref(x.astype(F64), w.astype(F64), None if b is None else b.astype(F64), padding=(1, 1, 1, 1))
    y = cppconv.conv2d(x, w, b, padding=1)
    assert y.dtype == want
    np.testing.assert_array_equal(y.astype(F64), ref)  # small integers: exact in every dtype
    assert cppconv.Conv2d(w, b, padding=1)(x).dtype == want
    wt = rng.integers(-1, 2, (3, 4, 2, 2)).astype(wd)
    assert cppconv.conv_transpose2d(x, wt, b, stride=2).dtype == want
    assert cppconv.ConvTranspose2d(wt, b, stride=2)(x).dtype == want


def test_uint8_image_with_float32_kernel_everywhere():
    rng = make_rng("uint8_image")
    image = rng.integers(0, 256, (3, 20, 24), dtype=np.uint8)
    for rank in (1, 2, 3):
        x = image.reshape((3,) + image.shape[1:] if rank == 2 else ((3, 480) if rank == 1 else (3, 4, 5, 24)))
        w = rng.standard_normal((5, 3) + (3,) * rank).astype(F32)
        y = CONV[rank](x, w)
        assert y.dtype == F32
        ref = conv_nd_ref(x[None].astype(F64), w.astype(F64))[0]
        bound = conv_nd_abs_bound(x[None].astype(F64), w.astype(F64))[0]
        assert np.all(np.abs(y - ref) <= RTOL[F32] * bound)
    kernel = rng.standard_normal((3, 3)).astype(F32)
    assert cppconv.correlate2d(image[0], kernel).dtype == F32
    assert cppconv.convolve2d(image[0], kernel, boundary="symm").dtype == F32


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64,
                                   np.bool_])
def test_integer_max_pooling_keeps_dtype_exactly(dtype):
    rng = make_rng("int_max_pool", np.dtype(dtype).name)
    info = np.iinfo(dtype) if np.dtype(dtype).kind != "b" else None
    if info is None:
        x = rng.random((2, 3, 7, 9)) < 0.3
    else:
        # 8-byte integers: the range float64 holds exactly, its ends and neighbours included
        low, high = (max(info.min, -(2**53)), min(info.max, 2**53)) if info.bits == 64 else (info.min, info.max)
        x = rng.integers(low, high, (2, 3, 7, 9), dtype=dtype, endpoint=True)
        x.flat[:4] = [low, high, high - 1, low + 1]
    want, want_idx = ref_pool_nd(x.astype(F64), "max", (3, 2), (2, 2), (1, 1, 0, 1), (1, 1))
    for layout in ("NCHW", "NHWC"):
        xl = x if layout == "NCHW" else channels_last(x)
        y, idx = cppconv.max_pool2d(xl, (3, 2), 2, ((1, 1), (0, 1)), return_indices=True, layout=layout)
        if layout == "NHWC":
            y, idx = np.moveaxis(y, -1, 1), np.moveaxis(idx, -1, 1)
        assert y.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(y, want.astype(dtype))
        np.testing.assert_array_equal(idx, want_idx)
    for fn, rank in ((cppconv.max_pool1d, 1), (cppconv.max_pool3d, 3)):
        xr = x.reshape(2, 3, 63) if rank == 1 else x.reshape(2, 3, 7, 3, 3)
        y = fn(xr, 2)
        assert y.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(y, ref_pool_nd(xr.astype(F64), "max", (2,) * rank, (2,) * rank, (0,) * 2 * rank,
                                                      (1,) * rank)[0].astype(dtype))
    assert cppconv.MaxPool2d(2)(x).dtype == np.dtype(dtype)
    assert cppconv.adaptive_max_pool2d(x, 3).dtype == np.dtype(dtype)
    assert cppconv.avg_pool2d(x, 2).dtype == F64  # numpy.mean's float64
    assert cppconv.max_pool2d(x, 2, dtype=np.float32).dtype == F32


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_wide_integer_max_pooling_beyond_float64_is_refused(dtype):
    x = np.full((1, 2, 4, 4), 2**53, dtype)
    # 2^53 + 1, which float64 would round to 2^53, set from a Python int: `x[...] += 1` is not
    # exact under NumPy 1.x, where a uint64 scalar plus a Python int is a float64 (2^53 again).
    x[0, 1, 2, 3] = 2**53 + 1
    assert int(x.max()) == 2**53 + 1
    for call in (lambda: cppconv.max_pool2d(x, 2), lambda: cppconv.adaptive_max_pool2d(x, 1),
                 lambda: cppconv.MaxPool1d(2)(x[0])):
        with pytest.raises(ValueError, match=r"x holds .*2\^53"):
            call()
    assert cppconv.max_pool2d(x, 2, dtype=np.float64).dtype == F64  # asked for: float64's rounding


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_wide_integer_max_pooling_refusal_bounds(dtype):
    # +-2^53 are exact in float64 and pass; one past them is refused, whichever end (the values
    # from Python ints, so the inputs do not depend on NumPy's promotion rules).
    inside = [2**53, 0] if dtype == np.uint64 else [2**53, -(2**53)]
    x = np.array(inside * 8, dtype).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(cppconv.max_pool2d(x, 2), np.full((1, 1, 2, 2), 2**53, dtype))
    outside = [2**53 + 1, 2**64 - 1] if dtype == np.uint64 else [2**53 + 1, -(2**53) - 1, 2**63 - 1, -(2**63)]
    for value in outside:
        y = x.copy()
        y[0, 0, 3, 3] = value
        assert int(y[0, 0, 3, 3]) == value
        with pytest.raises(ValueError, match=r"x holds .*2\^53"):
            cppconv.max_pool2d(y, 2)


def test_dtype_argument_sets_the_computation():
    rng = make_rng("dtype_argument")
    x = rng.standard_normal((2, 4, 9, 10))
    w = rng.standard_normal((5, 4, 3, 3))
    b = rng.standard_normal(5)
    # float64 operands computed in float32 are the float32 operands' result, bit for bit
    y32 = cppconv.conv2d(x, w, b, padding=1, dtype="float32")
    assert y32.dtype == F32
    np.testing.assert_array_equal(y32, cppconv.conv2d(x.astype(F32), w.astype(F32), b.astype(F32), padding=1))
    # float32 operands computed in float64: exact products, float64 accumulation
    x32, w32 = x.astype(F32), w.astype(F32)
    y64 = cppconv.conv2d(x32, w32, padding=1, dtype=np.float64)
    assert y64.dtype == F64
    args = dict(padding=(1, 1, 1, 1))
    ref = conv_nd_ref(x32.astype(F64), w32.astype(F64), **args)
    assert np.all(np.abs(y64 - ref) <= RTOL[F64] * conv_nd_abs_bound(x32.astype(F64), w32.astype(F64), **args))
    # float16: as if x and w were cast to float16 (computed in float32), returned as float16
    y16 = cppconv.conv2d(x32, w32, padding=1, dtype=np.float16)
    assert y16.dtype == F16
    np.testing.assert_array_equal(y16, cppconv.conv2d(x32.astype(F16), w32.astype(F16), padding=1))
    # an integer image asked for in float32
    image = rng.integers(0, 256, (4, 9, 10), dtype=np.uint8)
    assert cppconv.conv2d(image, w.astype(np.int8), dtype="float32").dtype == F32
    for fn in (cppconv.avg_pool2d, cppconv.max_pool2d):
        y = fn(image, 2, dtype="float32")
        assert y.dtype == F32
        np.testing.assert_array_equal(y, fn(image.astype(F32), 2))
    assert cppconv.global_avg_pool2d(image, dtype=np.float32).dtype == F32
    assert cppconv.adaptive_avg_pool1d(image[0], 3, dtype=np.float16).dtype == F16
    assert cppconv.correlate2d(image[0], w[0, 0], dtype="float32").dtype == F32
    assert cppconv.conv_transpose1d(x[0], np.ones((9, 2, 3)), dtype="float32").dtype == F32
    assert cppconv.Conv3d(w[..., None])(x[..., None], dtype="float32").dtype == F32
    assert cppconv.AvgPool2d(2)(image, dtype="float32").dtype == F32
    assert cppconv.AdaptiveMaxPool1d(2)(image[0], dtype="float64").dtype == F64


BAD_DTYPES = [("int8", ValueError), (np.int32, ValueError), ("complex64", ValueError), ("nonsense", ValueError),
              (np.float128 if hasattr(np, "float128") else "float128", ValueError), (3, TypeError)]


@pytest.mark.parametrize("dtype,error", BAD_DTYPES, ids=str)
def test_unsupported_dtype_argument_names_it(dtype, error):
    x = np.ones((1, 2, 5, 5), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    calls = [
        lambda: cppconv.conv2d(x, w, dtype=dtype),
        lambda: cppconv.conv1d(x[0], w[:, :, 0], dtype=dtype),
        lambda: cppconv.Conv2d(w)(x, dtype=dtype),
        lambda: cppconv.conv_transpose2d(x, w.transpose(1, 0, 2, 3), dtype=dtype),
        lambda: cppconv.max_pool2d(x, 2, dtype=dtype),
        lambda: cppconv.avg_pool3d(x[None], 1, dtype=dtype),
        lambda: cppconv.adaptive_avg_pool2d(x, 2, dtype=dtype),
        lambda: cppconv.MaxPool2d(2)(x, dtype=dtype),
        lambda: cppconv.correlate2d(x[0, 0], w[0, 0], dtype=dtype),
    ]
    for call in calls:
        with pytest.raises(error, match="dtype"):
            call()


def test_compute_dtype_argument_checked():
    w = np.ones((3, 2, 3, 3), np.float32)
    for bad in ("float16", "float64", "int8", 3):
        with pytest.raises(ValueError, match="compute_dtype"):
            cppconv.Conv2d(w, compute_dtype=bad)
        with pytest.raises(ValueError, match="compute_dtype"):
            cppconv.ConvTranspose2d(w, compute_dtype=bad)
    assert cppconv.Conv2d(w, compute_dtype="float32").compute_dtype is None


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("transposed", [False, True])
def test_compute_dtype_bfloat16_layers(isa, rank, transposed):
    """A float32 layer with compute_dtype="bfloat16": the float32 convolution of the operands
    rounded to bfloat16 (weights once, activations per call), float32 accumulation and output.
    Needs no ml_dtypes: the expectation rounds with the native helper, which the tests above
    check bit for bit."""
    rng = make_rng("compute_dtype", rank, transposed)
    sizes = (5, 6, 7)[:rank]
    x = rng.standard_normal((2, 8) + sizes).astype(F32)
    w = rng.standard_normal((8, 6) + (3,) * rank).astype(F32)
    b = rng.standard_normal(6).astype(F32)
    layers = TRANSPOSE_LAYER if transposed else CONV_LAYER
    function = TRANSPOSE if transposed else CONV
    kw = dict(stride=2, padding=1) if transposed else dict(padding=1)
    if not transposed:
        w = np.ascontiguousarray(w.swapaxes(0, 1))  # (K, C, ...)
    layer = layers[rank](w, b, compute_dtype="bfloat16", **kw)
    assert layer.compute_dtype == "bfloat16"
    assert "compute_dtype='bfloat16'" in repr(layer)
    want = function[rank](rounded_f32(x), rounded_f32(w), b, **kw)
    # Both may run the native bfloat16 kernels (the transposed convolution its stride phases),
    # whose float32 sums run in another order than the float32 operator's: within their bound
    # (tests/test_bf16_kernel.py), identical across thread counts.
    if transposed:
        bound = function[rank](np.abs(rounded_f32(x)), np.abs(rounded_f32(w)), np.abs(b), **kw).astype(F64)
        same = lambda y: np.testing.assert_array_less(  # noqa: E731
            np.abs(y.astype(F64) - want), 2 * RTOL[F32] * bound + 1e-30)
    else:
        args = dict(padding=(1, 1) * rank)
        x64, w64 = rounded_f32(x).astype(F64), rounded_f32(w).astype(F64)
        ref, bound = conv_nd_ref(x64, w64, b.astype(F64), **args), conv_nd_abs_bound(x64, w64, b.astype(F64), **args)
        same = lambda y: np.testing.assert_array_less(np.abs(y - ref), RTOL[F32] * bound + 1e-30)  # noqa: E731
    first = layer(x, num_threads=1)
    for threads in (1, 2):
        y = layer(x, num_threads=threads)
        assert y.dtype == F32
        same(y)
        np.testing.assert_array_equal(bits(y), bits(first))
    again = pickle.loads(pickle.dumps(layer))
    assert again.compute_dtype == "bfloat16"
    same(again(x))
    # the weights are rounded: a float32 layer without compute_dtype differs
    assert not np.array_equal(layers[rank](w, b, **kw)(x), want)
    if not transposed:
        info = layer.explain(x.shape)
        assert info["compute_dtype"] == "bfloat16" and info["result_dtype"] == "float32"
        assert CONV_LAYER[rank](w, b, **kw).explain(x.shape)["compute_dtype"] == "float32"


# ---------------------------------------------------------------------------------------------
# bfloat16 arrays (ml_dtypes)

def bf16_random(rng, shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32).astype(BF16)


def assert_bf16_close(y, ref, bound, context=""):
    """y is bfloat16 and within one bfloat16 ulp of the float64 reference (2^-8 relative:
    the output's rounding) plus the float32 accumulation bound; special values exactly."""
    assert y.dtype == BF16, f"result dtype {y.dtype}, expected bfloat16 [{context}]"
    assert y.shape == ref.shape, f"shape {y.shape}, expected {ref.shape} [{context}]"
    y64 = y.astype(F64)
    np.testing.assert_array_equal(np.isnan(y64), np.isnan(ref), err_msg=context)
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(y64[~finite & ~np.isnan(ref)], ref[~finite & ~np.isnan(ref)], err_msg=context)
    tol = 2.0**-8 * (np.abs(ref) + RTOL[F32] * bound) + RTOL[F32] * bound + 1e-30
    err = np.abs(np.where(finite, y64 - np.where(finite, ref, 0), 0))
    assert np.all(err <= np.where(finite, tol, 0)), f"worst err/tol {np.max(err / tol):.3g} [{context}]"


def same_as_float32_rounded(y, float32_result):
    """The bfloat16 path is the float32 operator on the widened values, rounded once (RNE)."""
    np.testing.assert_array_equal(bits(y), bits(float32_result.astype(BF16)))


# Shapes around the vector and tile widths: channels 1, 7-9, 16-17, 31-33; widths 1 to 17.
CONV_SHAPES = [
    # (C, K, spatial, kernel, kwargs)
    (1, 8, (9, 17), (3, 3), dict(padding=1)),
    (3, 16, (12, 13), (7, 7), dict(stride=2, padding=3)),
    (8, 9, (5, 8), (1, 1), {}),
    (17, 33, (7, 15), (3, 3), dict(padding="same")),
    (16, 16, (10, 11), (3, 3), dict(groups=16, padding=1)),  # depthwise
    (12, 6, (6, 16), (3, 3), dict(groups=3, dilation=2, padding=2)),
    (32, 32, (14, 14), (3, 3), dict(padding=1)),  # a Winograd-sized problem
    (9, 7, (1, 1), (1, 1), {}),
]


@needs_bfloat16
@pytest.mark.parametrize("case", range(len(CONV_SHAPES)))
@pytest.mark.parametrize("layout_last", [False, True])
def test_conv2d_bfloat16(isa, case, layout_last):
    c, k, hw, kernel, kw = CONV_SHAPES[case]
    rng = make_rng("bf16_conv2d", case)
    groups = kw.get("groups", 1)
    x = bf16_random(rng, (2, c) + hw)
    w = bf16_random(rng, (k, c // groups) + kernel)
    b = rng.standard_normal(k).astype(F32) if case % 2 else bf16_random(rng, k)
    pads = cppconv.explain(x.shape, w.shape, dtype=F32, **kw)["padding"]
    args = dict(stride=kw.get("stride", 1), padding=pads, dilation=kw.get("dilation", 1), groups=groups)
    x64, w64, b64 = x.astype(F64), w.astype(F64), b.astype(F64)
    ref, bound = conv_nd_ref(x64, w64, b64, **args), conv_nd_abs_bound(x64, w64, b64, **args)
    xl = channels_last(x) if layout_last else x
    layout = {"layout": "NHWC"} if layout_last else {}
    for y in (cppconv.conv2d(xl, w, b, **kw, **layout), cppconv.Conv2d(w, b, **kw, **layout)(xl)):
        if layout_last:
            y = np.moveaxis(y, -1, 1)
        assert_bf16_close(y, ref, bound, f"case {case}")
        if "_bf16__" not in cppconv.explain(xl.shape, w.shape, dtype=BF16, **kw, **layout)["algorithm"]:
            float32 = cppconv.conv2d(x.astype(F32), w.astype(F32), b.astype(F32), **kw)
            same_as_float32_rounded(y, float32)  # the widened path (the kernel: test_bf16_kernel.py)


@needs_bfloat16
@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("layout_last", [False, True])
def test_conv1d_conv3d_bfloat16(isa, rank, layout_last):
    rng = make_rng("bf16_conv_nd", rank)
    sizes = (300,) if rank == 1 else (4, 6, 9)  # a long 1-D row folds; 3-D gathers depth
    x = bf16_random(rng, (2, 9) + sizes)
    w = bf16_random(rng, (17, 9) + (3,) * rank)
    b = rng.standard_normal(17).astype(F32)
    args = dict(padding=(1, 1) * rank)
    x64, w64, b64 = x.astype(F64), w.astype(F64), b.astype(F64)
    ref, bound = conv_nd_ref(x64, w64, b64, **args), conv_nd_abs_bound(x64, w64, b64, **args)
    xl = channels_last(x) if layout_last else x
    layout = {"layout": LAST[rank]} if layout_last else {}
    for y in (CONV[rank](xl, w, b, padding=1, **layout), CONV_LAYER[rank](w, b, padding=1, **layout)(xl)):
        if layout_last:
            y = np.moveaxis(y, -1, 1)
        assert_bf16_close(y, ref, bound, f"conv{rank}d")


@needs_bfloat16
@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("layout_last", [False, True])
def test_conv_transpose_bfloat16(isa, rank, layout_last):
    rng = make_rng("bf16_transpose", rank)
    sizes = (11, 6, 5)[:rank]
    x = bf16_random(rng, (2, 16) + sizes)
    w = bf16_random(rng, (16, 9) + (4,) * rank)
    b = bf16_random(rng, 9)
    ref = ref_conv_transpose(x.astype(F64), w.astype(F64), b.astype(F64), stride=(2,) * rank, pads=(1,) * 2 * rank)
    bound = ref_conv_transpose(np.abs(x.astype(F64)), np.abs(w.astype(F64)), np.abs(b.astype(F64)),
                               stride=(2,) * rank, pads=(1,) * 2 * rank)
    xl = channels_last(x) if layout_last else x
    layout = {"layout": LAST[rank]} if layout_last else {}
    for y in (TRANSPOSE[rank](xl, w, b, stride=2, padding=1, **layout),
              TRANSPOSE_LAYER[rank](w, b, stride=2, padding=1, **layout)(xl)):
        if layout_last:
            y = np.moveaxis(y, -1, 1)
        assert_bf16_close(y, ref, bound, f"conv_transpose{rank}d")


POOLS = [
    # (function, rank, args, kwargs, reference kind, kernel, stride, pads)
    (cppconv.max_pool2d, 2, (3,), dict(stride=2, padding=1), "max", (3, 3), (2, 2), (1, 1, 1, 1)),
    (cppconv.avg_pool2d, 2, (2,), {}, "avg", (2, 2), (2, 2), (0, 0, 0, 0)),
    (cppconv.max_pool1d, 1, (3,), dict(stride=1), "max", (3,), (1,), (0, 0)),
    (cppconv.avg_pool1d, 1, (4,), dict(stride=3, padding=2), "avg", (4,), (3,), (2, 2)),
    (cppconv.max_pool3d, 3, (2,), {}, "max", (2, 2, 2), (2, 2, 2), (0,) * 6),
    (cppconv.avg_pool3d, 3, (3,), dict(stride=1, padding=1), "avg", (3, 3, 3), (1, 1, 1), (1,) * 6),
]


@needs_bfloat16
@pytest.mark.parametrize("case", range(len(POOLS)))
@pytest.mark.parametrize("layout_last", [False, True])
def test_pools_bfloat16(isa, case, layout_last):
    fn, rank, args, kw, kind, kernel, stride, pads = POOLS[case]
    rng = make_rng("bf16_pool", case)
    x = bf16_random(rng, (2, 17) + (9, 8, 7)[:rank], scale=10)
    ref = ref_pool_nd(x.astype(F64), kind, kernel, stride, pads, (1,) * rank)[0]
    xl = channels_last(x) if layout_last else x
    layout = {"layout": LAST[rank]} if layout_last else {}
    y = fn(xl, *args, **kw, **layout)
    if layout_last:
        y = np.moveaxis(y, -1, 1)
    if kind == "max":  # the maximum of bfloat16 values is one of them: exact
        assert y.dtype == BF16
        np.testing.assert_array_equal(y.astype(F64), ref)
    else:
        assert_bf16_close(y, ref, np.full(ref.shape, np.abs(x.astype(F64)).max()), fn.__name__)
    for adaptive, kind_name in ((cppconv.adaptive_avg_pool2d, "avg"), (cppconv.adaptive_max_pool2d, "max")):
        if rank == 2:
            y = adaptive(x, (4, 3))
            ref = ref_pool_nd(x.astype(F64), kind_name, None, None, None, None, adaptive_size=(4, 3))[0]
            assert_bf16_close(y, ref, np.full(ref.shape, np.abs(x.astype(F64)).max()), adaptive.__name__)
    global_pool = {1: cppconv.global_avg_pool1d, 2: cppconv.global_avg_pool2d, 3: cppconv.global_avg_pool3d}[rank]
    y = global_pool(x)
    ref = x.astype(F64).mean(axis=tuple(range(2, 2 + rank)), keepdims=True)
    assert_bf16_close(y, ref, np.full(ref.shape, np.abs(x.astype(F64)).max()), global_pool.__name__)


@needs_bfloat16
def test_pool_layers_bfloat16():
    rng = make_rng("bf16_pool_layers")
    x = bf16_random(rng, (2, 5, 8, 8))
    for layer in (cppconv.MaxPool2d(2), cppconv.AvgPool2d(2), cppconv.AdaptiveAvgPool1d(3), cppconv.MaxPool3d(1),
                  cppconv.AdaptiveMaxPool3d(2)):
        xin = x[:, :, 0] if "1d" in type(layer).__name__ else (x[:, :, None] if "3d" in type(layer).__name__ else x)
        y = layer(xin)
        assert y.dtype == BF16
        same_as_float32_rounded(y, layer(xin.astype(F32)))


@needs_bfloat16
def test_every_algorithm_bfloat16():
    """Every registered float32 algorithm forced in turn on bfloat16 operands: the float32
    algorithm on the widened values, rounded once."""
    rng = make_rng("bf16_algorithms")
    x = bf16_random(rng, (1, 16, 10, 12))
    w = bf16_random(rng, (16, 16, 3, 3))
    wd = bf16_random(rng, (16, 1, 3, 3))
    ran = set()
    for name in _native.conv_algorithms():
        if "_f32" not in name:
            continue
        for weight, kw in ((w, dict(padding=1)), (wd, dict(padding=1, groups=16))):
            try:
                y = _conv._conv_with_algorithm(name, x, weight, **kw)
            except ValueError as e:
                assert "does not accept" in str(e), e
                continue
            ran.add(name)
            assert y.dtype == BF16
            x64, w64 = x.astype(F64), weight.astype(F64)
            args = dict(padding=(1, 1, 1, 1), groups=kw.get("groups", 1))
            assert_bf16_close(y, conv_nd_ref(x64, w64, **args), conv_nd_abs_bound(x64, w64, **args), name)
    assert len(ran) >= 3, ran
    wt = bf16_random(rng, (16, 8, 4, 4))
    ref = ref_conv_transpose(x.astype(F64), wt.astype(F64), stride=(2, 2), pads=(1, 1, 1, 1))
    bound = ref_conv_transpose(np.abs(x.astype(F64)), np.abs(wt.astype(F64)), stride=(2, 2), pads=(1, 1, 1, 1))
    ran_transposed = 0
    for name in _native.conv_transpose_algorithms():
        if "_f32" not in name:
            continue
        y = _conv_transpose._conv_transpose_with_algorithm(name, x, wt, stride=2, padding=1)
        assert_bf16_close(y, ref, bound, name)
        ran_transposed += 1
    assert ran_transposed >= 2
    ran_pools = 0
    for name in _native.pool_algorithms():
        if "_f32" not in name:
            continue
        for kind, reference in ((0, "max"), (1, "avg")):
            spec = _pool._PoolSpec(kind, 3, 2, 1, 1, False, True, None, "NCHW")
            try:
                y = _pool._run_pool(spec, x, None, algorithm=name)
            except ValueError as e:
                assert "does not accept" in str(e), e
                continue
            ran_pools += 1
            want = ref_pool_nd(x.astype(F64), reference, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1))[0]
            assert_bf16_close(y, want, np.full(want.shape, np.abs(x.astype(F64)).max()), name)
    assert ran_pools >= 2


@needs_bfloat16
def test_bfloat16_special_values():
    x = np.ones((1, 2, 5, 5), BF16)
    x[0, 0, 1, 1] = np.inf
    x[0, 1, 3, 3] = np.nan
    w = np.ones((1, 2, 1, 1), BF16)
    y = cppconv.conv2d(x, w)
    assert y.dtype == BF16
    assert np.isinf(y[0, 0, 1, 1]) and y[0, 0, 1, 1] > 0
    assert np.isnan(y[0, 0, 3, 3])
    assert np.all(y.astype(F64)[np.isfinite(y.astype(F64))] == 2.0)
    # a float32 sum beyond bfloat16's largest finite value rounds to infinity
    big = np.full((1, 2, 2, 2), 3e38, np.float32).astype(BF16)
    assert np.all(np.isposinf(cppconv.conv2d(big, np.ones((1, 2, 1, 1), BF16)).astype(F64)))
    assert np.isnan(cppconv.max_pool2d(x, 5)[0, 1, 0, 0])
    assert np.isposinf(cppconv.max_pool2d(x[:, :1], 5)[0, 0, 0, 0].astype(F64))


@needs_bfloat16
def test_bfloat16_identical_across_thread_counts(restore_threads):
    rng = make_rng("bf16_threads")
    x = bf16_random(rng, (4, 32, 40, 40))
    w = bf16_random(rng, (32, 32, 3, 3))
    results = [cppconv.conv2d(x, w, padding=1, num_threads=n) for n in (1, 2)]
    np.testing.assert_array_equal(bits(results[0]), bits(results[1]))
    pools = [cppconv.avg_pool2d(x, 3, 1, 1, num_threads=n) for n in (1, 2)]
    np.testing.assert_array_equal(bits(pools[0]), bits(pools[1]))


@needs_bfloat16
def test_bfloat16_result_types_and_dtype_argument():
    rng = make_rng("bf16_rules")
    x = bf16_random(rng, (1, 3, 6, 6))
    w = bf16_random(rng, (4, 3, 3, 3))
    assert cppconv.conv2d(x, w, np.zeros(4, np.float32)).dtype == BF16  # a float32 bias keeps bfloat16
    assert cppconv.conv2d(x, w, np.zeros(4, np.float64)).dtype == F64
    assert cppconv.conv2d(x, w.astype(F32)).dtype == F32
    assert cppconv.conv2d(x, w.astype(F16)).dtype == F32  # as ml_dtypes promotes
    assert cppconv.conv2d(x, w.astype(F64)).dtype == F64
    assert cppconv.conv2d(x, w, dtype=F32).dtype == F32
    assert cppconv.conv2d(np.ones((1, 3, 6, 6), np.uint8), w).dtype == BF16  # uint8 with bfloat16, as float16
    # dtype="bfloat16" on float32 operands: as if they were cast to bfloat16 first
    x32, w32 = x.astype(F32) * 1.001, w.astype(F32) * 0.999
    for dtype in ("bfloat16", BF16, ml_dtypes.bfloat16):
        y = cppconv.conv2d(x32, w32, dtype=dtype)
        assert y.dtype == BF16
        np.testing.assert_array_equal(bits(y), bits(cppconv.conv2d(x32.astype(BF16), w32.astype(BF16))))
    y = cppconv.max_pool2d(x32, 2, dtype="bfloat16")
    np.testing.assert_array_equal(bits(y), bits(cppconv.max_pool2d(x32.astype(BF16), 2)))
    y = cppconv.correlate2d(x32[0, 0], w32[0, 0], boundary="fill", fillvalue=0.5, dtype="bfloat16")
    same_as_float32_rounded(y, cppconv.correlate2d(x32[0, 0].astype(BF16).astype(F32),
                                                   w32[0, 0].astype(BF16).astype(F32), fillvalue=0.5))
    assert cppconv.convolve2d(x[0, 0], w[0, 0]).dtype == BF16
    # out= of bfloat16
    out = np.empty((1, 4, 4, 4), BF16)
    assert cppconv.conv2d(x, w, out=out) is out
    np.testing.assert_array_equal(bits(out), bits(cppconv.conv2d(x, w)))
    strided = np.empty((1, 4, 4, 8), BF16)[..., ::2]  # not contiguous: rounded, then copied in
    assert cppconv.conv2d(x, w, out=strided) is strided
    np.testing.assert_array_equal(bits(strided), bits(out))
    with pytest.raises(TypeError, match="out"):
        cppconv.conv2d(x, w, out=np.empty((1, 4, 4, 4), np.float32))
    # explain names the arithmetic
    info = cppconv.explain(x.shape, w.shape, dtype=BF16)
    assert info["compute_dtype"] == "float32" and info["result_dtype"] == "bfloat16"
