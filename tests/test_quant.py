"""Quantized convolution (ONNX QLinearConv semantics), QuantizeLinear/DequantizeLinear and
max pooling of 8-bit tensors.

Every native algorithm of every ISA is compared bit for bit with `numpy_qconv`, an int64 NumPy
reference written here independently of the C++ one, and with ONNX Runtime where installed.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import cppconv
from cppconv import _native, _quant

from conftest import make_rng

U8, I8 = np.uint8, np.int8
RANGE = {np.dtype(U8): (0, 255), np.dtype(I8): (-128, 127)}


def numpy_qconv(x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, bias=None, stride=1, padding=0, dilation=1,
                groups=1, channels_last=False, activation=None, out_dtype=None):
    """QLinearConv in int64 NumPy: x (N, C, *sizes) (or channels last), w (K, C/g, *kernel);
    padding an int; the float32 requantization of ONNX Runtime (multiplier (x_s * w_s) / y_s,
    product, round half to even, zero point, saturation)."""
    rank = x.ndim - 2
    if channels_last:
        x = np.moveaxis(x, -1, 1)
    k = w.shape[0]
    w_zp = np.broadcast_to(np.asarray(w_zp, np.int64), (k,))
    wc = w.astype(np.int64) - w_zp.reshape((k,) + (1,) * (rank + 1))
    xp = np.pad(x.astype(np.int64) - int(x_zp), [(0, 0), (0, 0)] + [(padding, padding)] * rank)
    n, c = x.shape[:2]
    cg, kg = c // groups, k // groups
    kernel = w.shape[2:]
    outs = [(xp.shape[2 + a] - dilation * (kernel[a] - 1) - 1) // stride + 1 for a in range(rank)]
    acc = np.zeros((n, k, *outs), np.int64)
    for tap in np.ndindex(*kernel):
        window = tuple(slice(t * dilation, t * dilation + (o - 1) * stride + 1, stride) for t, o in zip(tap, outs))
        for g in range(groups):
            xs = xp[(slice(None), slice(g * cg, (g + 1) * cg)) + window]  # (n, cg, *outs)
            ws = wc[(slice(g * kg, (g + 1) * kg), slice(None)) + tuple(tap)]  # (kg, cg)
            acc[:, g * kg:(g + 1) * kg] += np.einsum("nc...,kc->nk...", xs, ws)
    if bias is not None:
        acc += np.asarray(bias, np.int64).reshape((1, k) + (1,) * rank)
    assert np.abs(acc).max(initial=0) < 2**31
    shape = (1, k) + (1,) * rank
    scale = np.float32(x_scale) * np.broadcast_to(np.asarray(w_scale, np.float32), (k,))
    if out_dtype == np.int32:
        y = acc.astype(np.int32)
    elif out_dtype == np.float32:
        y = acc.astype(np.float32) * scale.reshape(shape)
        if activation:
            y = np.clip(y, 0, 6 if activation == "relu6" else np.inf).astype(np.float32)
    else:
        dtype = np.dtype(out_dtype or np.asarray(y_zp).dtype)
        lo, hi = RANGE[dtype]
        mult = (scale / np.float32(y_scale)).astype(np.float32)
        v = acc.astype(np.float32) * mult.reshape(shape)
        q = np.clip(np.rint(v), lo - 1000, hi + 1000).astype(np.int64) + int(y_zp)
        if activation in ("relu", "relu6"):
            lo = max(lo, int(y_zp))
        if activation == "relu6":
            hi = min(hi, int(y_zp) + int(np.rint(min(np.float32(6) / np.float32(y_scale), 1e4))))
        y = np.clip(q, lo, hi).astype(dtype)
    return np.moveaxis(y, 1, -1) if channels_last else y


def algorithms_for(call):
    """The native algorithms (every available ISA's, the reference) that accept a call: call(algorithm)."""
    names = []
    for name in _native.qconv_algorithms():
        try:
            call(name, explain=True)
        except ValueError as e:
            if "does not accept" in str(e):
                continue
            raise
        names.append(name)
    return names


def accepting_algorithms(rank, x, *args, **kw):
    """algorithms_for a call of run_forced(algorithm, rank, x, *args, **kw)."""
    return algorithms_for(lambda a, explain=False: run_forced(a, rank, x, *args, explain=explain, **kw))


def random_case(rng, x_dtype, n, c, sizes, k, kernel, groups, w_dtype=I8, per_channel=True, int8_centred=False):
    """A random QLinearConv case; int8_centred: weights within int8 of their zero point (what
    the int8-product kernels such as VNNI's accept), the extremes included."""
    lo, hi = RANGE[np.dtype(x_dtype)]
    x = rng.integers(lo, hi + 1, size=(n, c, *sizes)).astype(x_dtype)
    wlo, whi = RANGE[np.dtype(w_dtype)]
    w = rng.integers(wlo, whi + 1, size=(k, c // groups, *kernel)).astype(w_dtype)
    x_zp = np.array(rng.integers(lo, hi + 1), x_dtype)
    w_zp = rng.integers(wlo, whi + 1, size=k if per_channel else ()).astype(w_dtype)
    if int8_centred:
        zp = np.broadcast_to(w_zp.astype(np.int64), (k,)).reshape((k,) + (1,) * (w.ndim - 1))
        centred = np.clip(w.astype(np.int64) - zp, -128, 127)
        centred.reshape(-1)[::7] = -128  # the extremes
        centred.reshape(-1)[3::7] = 127
        w = np.clip(centred + zp, wlo, whi).astype(w_dtype)
    w_scale = (rng.uniform(0.5, 2, size=k if per_channel else ()) * 2.0**-7).astype(np.float32)
    bias = rng.integers(-5000, 5000, size=k).astype(np.int32)
    return x, x_zp, w, w_zp, w_scale, bias


def run_forced(algorithm, rank, x, *args, explain=False, **kw):
    if explain:
        layout = kw.get("layout")
        spec = _quant._spec(rank, kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1),
                            kw.get("groups", 1), layout)
        weights = _quant._QuantizedWeights(spec, *args[:7], args[7] if len(args) > 7 else None,
                                           kw.get("activation"), kw.get("out_dtype"), x.dtype)
        return weights.explain(x.shape, x.dtype, algorithm)
    return _quant._qconv(rank, x, *args, kw.get("bias"), kw.get("stride", 1), kw.get("padding", 0),
                         kw.get("dilation", 1), kw.get("groups", 1), kw.get("layout"), kw.get("activation"),
                         kw.get("out_dtype"), None, kw.get("num_threads"), algorithm)


# (rank, n, c, sizes, k, kernel, stride, padding, dilation, groups): around the AVX2 kernel's
# 6 pixels x 16 channels block and its channel pairs.
CASES = [
    (2, 1, 3, (9, 13), 16, (3, 3), 1, 1, 1, 1),
    (2, 2, 5, (7, 7), 17, (3, 3), 2, 1, 1, 1),
    (2, 1, 8, (6, 5), 15, (1, 1), 1, 0, 1, 1),
    (2, 1, 16, (8, 12), 32, (3, 3), 1, 2, 2, 1),
    (2, 1, 6, (11, 11), 8, (5, 5), 2, 2, 1, 2),
    (2, 1, 12, (7, 9), 12, (3, 3), 1, 1, 1, 12),   # depthwise
    (2, 1, 8, (5, 7), 24, (3, 3), 1, 1, 1, 8),     # depthwise multiplier 3
    (2, 1, 3, (23, 23), 8, (7, 7), 2, 3, 1, 1),    # first layer
    (2, 1, 33, (4, 7), 33, (2, 3), 1, 0, 1, 1),
    (1, 2, 7, (40,), 9, (5,), 2, 2, 1, 1),
    (1, 1, 4, (13,), 4, (3,), 1, 1, 1, 4),
    (3, 1, 4, (4, 5, 6), 6, (3, 3, 3), 1, 1, 1, 1),
    (3, 1, 6, (5, 4, 7), 6, (2, 1, 3), 2, 1, 1, 3),
    # a pass's weights past 96 KiB: the VNNI kernel's tap chunks over several runs of pixels
    (2, 1, 64, (6, 7), 64, (5, 5), 1, 2, 1, 1),
    (2, 2, 30, (5, 9), 40, (7, 7), 1, 3, 1, 1),
    (2, 1, 64, (4, 5), 64, (9, 9), 1, 4, 1, 2),
    # rows no window reads (strides past the kernel's extent), which the VNNI kernel's tile skips
    (2, 1, 20, (9, 10), 40, (1, 1), 2, 0, 1, 1),
    (2, 2, 8, (10, 11), 16, (2, 2), 3, 1, 1, 1),
    # more than 64 outputs (two passes) with weights under the image: on 2 threads the threads
    # share the pixel runs and each takes both passes
    (2, 1, 8, (12, 14), 80, (1, 1), 1, 0, 1, 1),
    (2, 1, 8, (24, 30), 80, (3, 3), 1, 1, 1, 1),
    # channels-first 1x1 layers for the pointwise VNNI kernel: planes around its 64-pixel chunks,
    # channel quads and blocks of 6 output channels
    (2, 1, 20, (8, 8), 13, (1, 1), 1, 0, 1, 1),
    (2, 2, 7, (5, 25), 14, (1, 1), 1, 0, 1, 1),
    (1, 1, 9, (120,), 6, (1,), 1, 0, 1, 1),
    (3, 1, 8, (2, 4, 8), 12, (1, 1, 1), 1, 0, 1, 2),
]


# Input channels a group the AMX kernel needs (a first layer's 3 are the VNNI kernel's).
AMX_MIN_GROUP_CHANNELS = 4


def int8_product_algorithms(group_channels=None):
    """The registered algorithms that multiply int8 weights (and refuse wider centred ones); given
    group_channels, those that take groups of that many input channels."""
    return [name for name in _native.qconv_algorithms() if "_u8s8_" in name and
            (group_channels is None or "_amx_" not in name or group_channels >= AMX_MIN_GROUP_CHANNELS)]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("x_dtype", [U8, I8])
@pytest.mark.parametrize("layout_last", [False, True])
@pytest.mark.parametrize("int8_centred", [False, True])
def test_every_algorithm_matches_numpy_bit_exact(isa, case, x_dtype, layout_last, int8_centred):
    rank, n, c, sizes, k, kernel, stride, padding, dilation, groups = case
    rng = make_rng("qconv", case, np.dtype(x_dtype).name, layout_last, *(["int8"] if int8_centred else []))
    x, x_zp, w, w_zp, w_scale, bias = random_case(rng, x_dtype, n, c, sizes, k, kernel, groups,
                                                  int8_centred=int8_centred)
    x_scale, y_scale = np.float32(0.05), np.float32(0.7)
    y_zp = np.array(rng.integers(*RANGE[np.dtype(x_dtype)]), x_dtype)
    xin = np.ascontiguousarray(np.moveaxis(x, 1, -1)) if layout_last else x
    layout = ("NWC", "NHWC", "NDHWC")[rank - 1] if layout_last else None
    args = (x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp)
    kw = dict(bias=bias, stride=stride, padding=padding, dilation=dilation, groups=groups, layout=layout)
    ref = numpy_qconv(xin, *args, bias=bias, stride=stride, padding=padding, dilation=dilation, groups=groups,
                      channels_last=layout_last)
    algorithms = algorithms_for(lambda a, explain=False: run_forced(a, rank, xin, *args, explain=explain, **kw))
    assert "qconv_reference" in algorithms
    if int8_centred and c // groups >= 2:  # (single-channel groups: the depthwise kernel's)
        expected = set(int8_product_algorithms(c // groups))
        if "qconv_pointwise_vnni__avx512_6x64" in algorithms and c // groups <= 64:
            expected.discard(AMX)  # (which leaves the pointwise kernel its layers)
        assert expected <= set(algorithms)
    for algorithm in algorithms:
        for threads in (1, 2):
            y = run_forced(algorithm, rank, xin, *args, num_threads=threads, **kw)
            assert y.dtype == np.dtype(x_dtype)
            np.testing.assert_array_equal(y, ref, err_msg=f"{algorithm}, {threads} threads")
    for out_dtype in (np.int32, np.float32):
        ref = numpy_qconv(xin, *args, bias=bias, stride=stride, padding=padding, dilation=dilation, groups=groups,
                          channels_last=layout_last, out_dtype=out_dtype)
        for algorithm in algorithms:
            y = run_forced(algorithm, rank, xin, *args, out_dtype=out_dtype, **kw)
            assert y.dtype == np.dtype(out_dtype)
            np.testing.assert_array_equal(y, ref, err_msg=f"{algorithm}, out_dtype {out_dtype}")


# Depthwise (groups = C = K) around the row kernel's 64-pixel blocks (16 lanes, 4/stride
# loads) and its 4-tap dword groups: (rank, n, c, sizes, kernel, stride, padding, dilation).
DEPTHWISE_CASES = [
    (2, 1, 3, (5, 63), (3, 3), 1, 1, 1),
    (2, 2, 17, (4, 64), (3, 3), 1, 1, 1),
    (2, 1, 5, (6, 66), (3, 3), 1, 2, 1),
    (2, 1, 4, (7, 129), (3, 3), 2, 1, 1),
    (2, 1, 33, (5, 7), (3, 3), 2, 1, 1),
    (2, 1, 63, (3, 5), (3, 3), 1, 1, 1),
    (2, 2, 65, (4, 3), (3, 3), 2, 1, 1),
    (2, 1, 130, (3, 3), (2, 2), 1, 0, 1),
    (2, 1, 2, (5, 130), (5, 5), 2, 2, 1),
    (2, 1, 3, (9, 70), (3, 7), 4, 3, 1),
    (2, 1, 6, (8, 18), (3, 3), 1, 2, 2),
    (2, 1, 2, (3, 9), (1, 4), 1, 1, 1),
    (2, 1, 1, (1, 1), (3, 3), 1, 1, 1),
    (2, 1, 1, (70, 130), (3, 3), 1, 1, 1),  # one-channel images: a flat plane past several blocks
    (2, 1, 1, (300, 300), (3, 3), 1, 1, 1),  # (which the s16 kernel's 16-lane tile bound refuses)
    # small planes of 64 channels and more: the transposed kernel, its 16 x 32 byte blocks and tails
    (2, 2, 70, (10, 10), (3, 3), 2, 1, 1),
    (2, 1, 129, (7, 7), (3, 3), 1, 1, 1),
    (1, 2, 80, (40,), (3,), 1, 1, 1),
    (3, 1, 64, (2, 4, 5), (3, 3, 3), 1, 1, 1),
    (1, 2, 7, (200,), (3,), 1, 1, 1),
    (1, 1, 3, (65,), (9,), 2, 4, 1),
    (3, 1, 4, (4, 5, 67), (3, 3, 3), 1, 1, 1),
    (3, 1, 3, (5, 4, 33), (2, 1, 3), 2, 1, 1),
]


@pytest.mark.parametrize("case", DEPTHWISE_CASES)
@pytest.mark.parametrize("x_dtype,x_zp", [(U8, 0), (U8, 128), (U8, 255), (I8, -128), (I8, 0), (I8, 127)])
@pytest.mark.parametrize("w_zp", [0, 3])
@pytest.mark.parametrize("layout_last", [False, True])
def test_depthwise_every_algorithm_bit_exact(isa, case, x_dtype, x_zp, w_zp, layout_last):
    """int8 weights that fit int8 once centred (w_zp 0) and ones that do not (w_zp 3 moves
    -128 to -131), every output kind, relu and relu6, per-channel scales, 1 and 2 threads,
    channels first and last."""
    rank, n, c, sizes, kernel, stride, padding, dilation = case
    rng = make_rng("qconv-dw", case, np.dtype(x_dtype).name, x_zp, w_zp, layout_last)
    lo, hi = RANGE[np.dtype(x_dtype)]
    x = rng.integers(lo, hi + 1, size=(n, c, *sizes)).astype(x_dtype)
    w = rng.integers(-128, 128, size=(c, 1, *kernel)).astype(I8)
    w.reshape(c, -1)[:, 0] = -128  # the extreme weight in every channel
    w_scale = (rng.uniform(0.5, 2, size=c) * 2.0**-7).astype(np.float32)
    bias = rng.integers(-5000, 5000, size=c).astype(np.int32)
    args = (np.float32(0.05), np.array(x_zp, x_dtype), w, w_scale, np.full(c, w_zp, I8), np.float32(0.3),
            np.array(lo + 9, x_dtype))
    if layout_last:
        x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    layout = ("NWC", "NHWC", "NDHWC")[rank - 1] if layout_last else None
    kw = dict(bias=bias, stride=stride, padding=padding, dilation=dilation, groups=c, layout=layout)
    algorithms = algorithms_for(lambda a, explain=False: run_forced(a, rank, x, *args, explain=explain, **kw))
    assert "qconv_reference" in algorithms
    for activation in (None, "relu", "relu6"):
        ref = numpy_qconv(x, *args, bias=bias, stride=stride, padding=padding, dilation=dilation, groups=c,
                          channels_last=layout_last, activation=activation)
        for algorithm in algorithms:
            for threads in (1, 2):
                y = run_forced(algorithm, rank, x, *args, num_threads=threads, activation=activation, **kw)
                np.testing.assert_array_equal(y, ref, err_msg=f"{algorithm}, {threads} threads, {activation}")
    for out_dtype in (np.int32, np.float32):
        ref = numpy_qconv(x, *args, bias=bias, stride=stride, padding=padding, dilation=dilation, groups=c,
                          channels_last=layout_last, out_dtype=out_dtype)
        for algorithm in algorithms:
            y = run_forced(algorithm, rank, x, *args, out_dtype=out_dtype, **kw)
            np.testing.assert_array_equal(y, ref, err_msg=f"{algorithm}, out_dtype {out_dtype}")


def test_depthwise_vnni_kernels_are_chosen_where_they_can_run(isa):
    x = np.zeros((1, 8, 20, 20), U8)
    layer = cppconv.QConv2d(0.1, 3, np.ones((8, 1, 3, 3), I8), 0.1, 0, 0.2, 0, padding=1, groups=8)
    name = layer.explain(x.shape)["algorithm"]
    row_kernel = "qconv_depthwise_rows_vnni__avx512_1x64"
    vnni = "avx512" in _native.available_isas() and "avx512_vnni" in _native.cpu_features()
    assert (row_kernel in _native.qconv_algorithms()) == vnni
    assert (name == row_kernel) == (vnni and isa == "avx512")
    if isa in ("avx2", "avx512") and name != row_kernel:
        assert name == f"qconv_depthwise_s16__{isa}_4x16"
    last = cppconv.QConv2d(0.1, 3, np.ones((8, 1, 3, 3), I8), 0.1, 0, 0.2, 0, padding=1, groups=8, layout="NHWC")
    name = last.explain((1, 20, 20, 8))["algorithm"]
    assert (name == "qconv_depthwise_channels_vnni__avx512_1x64") == (vnni and isa == "avx512")


# Zero padding (x_zero_point) and dilation that dwarf the input, so that no kernel copies the
# padded input and some taps read only padding for every output: (n, c, sizes, k, kernel,
# stride, padding, dilation, groups).  The kernels then run the live taps alone.
SPARSE_WINDOWS = [
    (1, 70, (1, 1), 70, (3, 3), 1, 130, 130, 70),  # depthwise on one-pixel planes: the centre tap
    (1, 17, (2, 3), 17, (3, 3), 1, 150, 150, 17),  # depthwise, small planes
    (1, 8, (2, 3), 20, (3, 3), 1, 300, 300, 1),  # dense
    (1, 8, (1, 1), 20, (3, 3), 2, 300, 300, 2),  # grouped, strided
    (1, 8, (60000,), 12, (9,), 1, 200000, 50000, 1),  # 1-D: three live taps of nine
]


def has_int8_kernels(isa):
    return isa not in ("baseline", "neon")  # (the int8 kernels are x86's)


@pytest.mark.parametrize("case", SPARSE_WINDOWS)
@pytest.mark.parametrize("layout_last", [False, True])
def test_padding_that_dwarfs_the_input_runs_the_live_taps(isa, case, layout_last):
    """Every algorithm, one-shot and prepacked, 1 and 2 threads, bit for bit against NumPy with
    the zero point as padding (at the ends of the range and between), weights within int8 once
    centred (the VNNI kernels') and beyond (theirs refuse); where the ISA has int8 kernels a
    kernel runs the live taps, not the reference on the whole padded extent."""
    n, c, sizes, k, kernel, stride, padding, dilation, groups = case
    rank = len(sizes)
    layer_class = {1: cppconv.QConv1d, 2: cppconv.QConv2d}[rank]
    layout = ("NWC", "NHWC")[rank - 1] if layout_last else None
    for x_dtype, int8_centred, zp_at in ((U8, True, "low"), (I8, False, "high"), (U8, False, "any")):
        rng = make_rng("qconv-sparse", case, layout_last, np.dtype(x_dtype).name, zp_at)
        x, x_zp, w, w_zp, w_scale, bias = random_case(rng, x_dtype, n, c, sizes, k, kernel, groups,
                                                      int8_centred=int8_centred)
        lo, hi = RANGE[np.dtype(x_dtype)]
        x_zp = {"low": np.array(lo, x_dtype), "high": np.array(hi, x_dtype), "any": x_zp}[zp_at]
        if layout_last:
            x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
        args = (np.float32(0.05), x_zp, w, w_scale, w_zp, np.float32(0.7), np.array(lo + 7, x_dtype))
        kw = dict(bias=bias, stride=stride, padding=padding, dilation=dilation, groups=groups, layout=layout)
        ref = numpy_qconv(x, *args, bias=bias, stride=stride, padding=padding, dilation=dilation, groups=groups,
                          channels_last=layout_last)
        algorithms = accepting_algorithms(rank, x, *args, **kw)
        assert "qconv_reference" in algorithms
        layer = layer_class(*args, bias, stride=stride, padding=padding, dilation=dilation, groups=groups,
                            layout=layout or ("NCW", "NCHW")[rank - 1])
        info = layer.explain(x.shape, x_dtype)
        if has_int8_kernels(isa):
            assert info["live_taps_only"] and info["algorithm"] != "qconv_reference", info
            assert len(algorithms) > 1
        for algorithm in algorithms:
            for threads in (1, 2):
                y = run_forced(algorithm, rank, x, *args, num_threads=threads, **kw)
                np.testing.assert_array_equal(y, ref, err_msg=f"{algorithm}, {threads} threads")
        for threads in (1, 2):
            np.testing.assert_array_equal(layer(x, num_threads=threads), ref)


def test_the_benchmark_sanity_rows_run_their_live_taps(isa):
    """The benchmark's int8 sanity rows (64 x 1024 channels of one pixel, 3x3 depthwise, padding
    = dilation = 300 to 1000) against the reference forced on the whole padded problem, with
    x_zero_point 128 and at the ends of uint8."""
    from cppconv.bench import LAYERS, LayerData

    for layer in LAYERS:
        if not layer.sanity:
            continue
        d = LayerData.make(layer, dtype="int8")
        x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, bias = d.qconv_args()
        for zp in (x_zp, np.uint8(0), np.uint8(255)):
            args = (x_scale, zp, w, w_scale, w_zp, y_scale, y_zp)
            ref = run_forced("qconv_reference", 2, d.x, *args, bias=bias, **layer.conv_kwargs)
            conv = cppconv.QConv2d(*args, bias, **layer.conv_kwargs)
            info = conv.explain(d.x.shape)
            assert info["live_taps_only"] == has_int8_kernels(isa), info
            for threads in (1, 2):
                np.testing.assert_array_equal(conv(d.x, num_threads=threads), ref)
                np.testing.assert_array_equal(
                    cppconv.qconv2d(d.x, *args, bias, num_threads=threads, **layer.conv_kwargs), ref)


def vnni_algorithm(isa):
    """The VNNI kernel's name where this process may run it under `isa`, else None."""
    name = f"qconv_u8s8_vnni__{isa}_6x64"
    return name if name in _native.qconv_algorithms() else None


def amx_algorithm(isa):
    """The AMX kernel's name where this process may run it under `isa`, else None."""
    name = f"qconv_u8s8_amx__{isa}_32x32"
    return name if name in _native.qconv_algorithms() else None


def dense_int8_algorithm(isa, group_channels):
    """The int8-product kernel a dense layer of int8-centred weights runs under `isa`: AMX's
    where this process may run it and the groups are wide enough, else VNNI's (or None)."""
    amx = amx_algorithm(isa)
    return amx if amx and group_channels >= AMX_MIN_GROUP_CHANNELS else vnni_algorithm(isa)


@pytest.mark.parametrize("int8_centred", [False, True])
def test_the_fast_kernel_is_chosen_and_named(isa, int8_centred):
    rng = make_rng("explain")
    x, x_zp, w, w_zp, w_scale, bias = random_case(rng, U8, 1, 64, (14, 14), 64, (3, 3), 1, int8_centred=int8_centred)
    layer = cppconv.QConv2d(0.1, x_zp, w, w_scale, w_zp, 0.2, np.uint8(3), bias, padding=1, layout="NHWC")
    info = layer.explain((1, 14, 14, 64))
    if isa in ("baseline", "neon"):  # (the int8 kernels are x86's; NEON ones are to come)
        assert info["algorithm"] == "qconv_reference"
    elif int8_centred and vnni_algorithm(isa):
        assert info["algorithm"] == dense_int8_algorithm(isa, 64) and info["isa"] == isa
    else:
        assert info["algorithm"] == f"qconv_s16__{isa}_6x16" and info["isa"] == isa
    assert info["output_shape"] == (1, 14, 14, 64) and info["dtype"] == np.uint8


def test_pointwise_kernel_takes_channels_first_1x1_layers(isa):
    """Where VNNI runs, a channels-first 1x1 layer (stride 1, no padding) of 64 channels runs the
    pointwise kernel and gives NumPy's bits; channels-last, strided or padded ones run the dense
    kernel (AMX's where the CPU has it, else the 6x64 one)."""
    rng = make_rng("pointwise")
    x, x_zp, w, w_zp, w_scale, bias = random_case(rng, U8, 1, 64, (14, 18), 40, (1, 1), 1, int8_centred=True)
    args = (np.float32(0.05), x_zp, w, w_scale, w_zp, np.float32(0.3), np.uint8(7))
    pointwise = f"qconv_pointwise_vnni__{isa}_6x64"
    vnni = vnni_algorithm(isa)
    dense = dense_int8_algorithm(isa, 64)
    for kw, expected in ((dict(), pointwise), (dict(layout="NHWC"), dense), (dict(stride=2), dense),
                         (dict(padding=1), dense)):
        layer = cppconv.QConv2d(*args, bias, **kw)
        xin = np.ascontiguousarray(np.moveaxis(x, 1, -1)) if kw.get("layout") == "NHWC" else x
        chosen = layer.explain(xin.shape)["algorithm"]
        if vnni is None:
            assert "vnni" not in chosen, chosen
        else:
            assert chosen == expected, (kw, chosen)
        ref = numpy_qconv(xin, *args, bias=bias, stride=kw.get("stride", 1), padding=kw.get("padding", 0),
                          channels_last="layout" in kw)
        np.testing.assert_array_equal(layer(xin), ref)


def test_weights_beyond_int8_fall_back_from_the_int8_kernels(isa):
    """uint8 weights with a zero point: centred within int8 (w_zero_point 128) the VNNI kernel
    runs; beyond it (w_zero_point 3, weights up to 255) it refuses, the next kernel runs, and
    forcing it is a ValueError."""
    rng = make_rng("u8-fallback")
    x = rng.integers(0, 256, (1, 24, 9, 10)).astype(U8)
    for w_zp, fits in ((np.uint8(128), True), (np.full(32, 3, np.uint8), False)):
        w = rng.integers(0, 256, (32, 24, 3, 3)).astype(U8)
        w[0, 0, 0, :2] = (0, 255)  # centred -128 and 127 (zero point 128), or -3 and 252 (3)
        args = (np.float32(0.05), np.uint8(77), w, np.float32(0.01), w_zp, np.float32(0.3), np.uint8(9))
        ref = numpy_qconv(x, *args, padding=1)
        layer = cppconv.QConv2d(*args, padding=1)
        chosen = layer.explain(x.shape)["algorithm"]
        dense = dense_int8_algorithm(isa, 24)
        assert (chosen == dense) == (fits and dense is not None), chosen
        np.testing.assert_array_equal(layer(x), ref)
        for name in int8_product_algorithms():
            if fits:
                np.testing.assert_array_equal(run_forced(name, 2, x, *args, padding=1), ref)
            else:
                with pytest.raises(ValueError, match="does not accept these weights"):
                    run_forced(name, 2, x, *args, padding=1)


@pytest.mark.parametrize("activation", [None, "relu", "relu6"])
@pytest.mark.parametrize("y_dtype", [U8, I8])
def test_saturation_zero_points_and_activations(isa, activation, y_dtype):
    """Both ends saturate; (255, 255) x (127, 127) pairs; zero points 0, 255 and -128 with padding."""
    for x_dtype, x_zp in ((U8, 0), (U8, 255), (U8, 128), (I8, -128), (I8, 127), (I8, 0)):
        rng = make_rng("sat", np.dtype(x_dtype).name, x_zp, activation, np.dtype(y_dtype).name)
        lo, hi = RANGE[np.dtype(x_dtype)]
        x = rng.choice([lo, hi], size=(1, 16, 6, 7)).astype(x_dtype)
        x[0, :, 0, :] = hi  # every channel pair at the extreme
        w = rng.choice([-128, 127], size=(16, 16, 3, 3)).astype(I8)
        w[:8] = 127
        for y_scale in (np.float32(1.0), np.float32(1000.0)):
            y_zp = np.array(RANGE[np.dtype(y_dtype)][0] + 7, y_dtype)
            args = (np.float32(1.0), np.array(x_zp, x_dtype), w, np.float32(1.0), np.int8(0), y_scale, y_zp)
            ref = numpy_qconv(x, *args, padding=1, activation=activation)
            y = cppconv.qconv2d(x, *args, padding=1, activation=activation)
            np.testing.assert_array_equal(y, ref)
            kw = dict(padding=1, activation=activation)
            for name in accepting_algorithms(2, x, *args, **kw):
                np.testing.assert_array_equal(run_forced(name, 2, x, *args, **kw), ref, err_msg=name)
            if y_scale == 1.0 and activation != "relu6":
                lo_y, hi_y = RANGE[np.dtype(y_dtype)]
                assert (y == hi_y).any() and ((y == lo_y).any() or activation)


@pytest.mark.parametrize("scale", [1.0, 1.0 - 2.0**-20, 1.0 + 2.0**-20, 2.0**-30, 3.0 * 2.0**-31, 0.5])
def test_requantization_scales_near_one_and_tiny(isa, scale):
    rng = make_rng("scale", scale)
    x, x_zp, w, w_zp, w_scale, bias = random_case(rng, U8, 1, 16, (7, 9), 16, (3, 3), 1, per_channel=False)
    big = rng.integers(-2**28, 2**28, size=16).astype(np.int32)  # with 2^-30, products near 0.5 and below
    for b in (bias, big):
        args = (np.float32(1.0), x_zp, w, np.float32(1.0), w_zp, np.float32(1.0 / scale), np.uint8(128))
        ref = numpy_qconv(x, *args, bias=b, padding=1)
        for name in _native.qconv_algorithms():
            try:
                y = _quant._qconv(2, x, *args, b, 1, 1, 1, 1, None, None, None, None, None, name)
            except ValueError as e:
                assert "does not accept" in str(e)
                continue
            np.testing.assert_array_equal(y, ref, err_msg=name)


def test_exact_ties_round_to_even(isa):
    """acc * multiplier lands on k + 0.5 exactly: ties go to the even integer, not up or away."""
    x = np.arange(0, 16, dtype=np.uint8).reshape(1, 16, 1, 1)
    w = np.zeros((16, 16, 1, 1), np.int8)
    for k in range(16):
        w[k, k] = 1  # y[k] = x[k] * 0.5: 0, 0.5, 1, 1.5, ...
    w = np.concatenate([w, -w])  # and the negative ties
    y = cppconv.qconv2d(x, 1.0, 0, w, 0.5, 0, 1.0, np.int8(0))
    expect = np.rint(np.arange(16) * 0.5)
    np.testing.assert_array_equal(y.ravel(), np.concatenate([expect, -expect]).astype(np.int8))


def test_accumulators_near_2_to_31_and_overflow_refused(isa):
    # 16 channels x 81 taps x 255 x 127 = 41,990,... per channel; with bias near the limit.
    x = np.full((1, 16, 9, 9), 255, np.uint8)
    w = np.full((16, 16, 9, 9), 127, np.int8)
    bound = 16 * 81 * 255 * 127
    bias = np.full(16, 2**31 - 1 - bound, np.int32)
    y = cppconv.qconv2d(x, 1.0, 0, w, 1.0, 0, 1.0, 0, bias, out_dtype=np.int32)
    assert y.ravel()[0] == 2**31 - 1
    np.testing.assert_array_equal(y, numpy_qconv(x, 1.0, 0, w, 1.0, 0, 1.0, 0, bias, out_dtype=np.int32))
    # Every algorithm at both ends, exactly +-(2^31 - 1) with the bias (the VNNI kernel's
    # partial sums wrap there): (255 - 0) x 127, (0 - 255) x 127, (255 - 0) x -128, and s8
    # (-128 - 127) x 127, (127 - -128) x -128.
    top = 2**31 - 1
    b127, b128 = np.full(16, -top + bound, np.int32), np.full(16, -top + 16 * 81 * 255 * 128, np.int32)
    s8_low, s8_high = np.full(x.shape, -128, np.int8), np.full(x.shape, 127, np.int8)
    for xs, x_zp, ws, b in ((x, 0, w, bias), (np.zeros_like(x), 255, w, b127), (x, 0, np.full_like(w, -128), b128),
                            (s8_low, np.int8(127), w, b127), (s8_high, np.int8(-128), np.full_like(w, -128), b128)):
        args = (1.0, x_zp, ws, 1.0, 0, 1.0, 0)
        ref = numpy_qconv(xs, *args, b, out_dtype=np.int32)
        assert np.abs(ref.astype(np.int64)).min() == top
        for name in accepting_algorithms(2, xs, *args, bias=b, out_dtype=np.int32):
            y = run_forced(name, 2, xs, *args, bias=b, out_dtype=np.int32)
            np.testing.assert_array_equal(y, ref, err_msg=name)
    with pytest.raises(ValueError, match="w: the int32 accumulator can overflow"):
        cppconv.qconv2d(x, 1.0, 0, w, 1.0, 0, 1.0, 0, bias + 1, out_dtype=np.int32)
    big = np.full((1, 8192, 3, 3), 255, np.uint8)
    with pytest.raises(ValueError, match="can overflow"):
        cppconv.qconv2d(big, 1.0, 0, np.full((1, 8192, 3, 3), -128, np.int8), 1.0, 0, 1.0, 0)


def test_uint8_weights_and_per_tensor_zero_points(isa):
    rng = make_rng("u8w")
    x, x_zp, w, w_zp, w_scale, bias = random_case(rng, U8, 2, 6, (8, 8), 10, (3, 3), 2, w_dtype=U8,
                                                  per_channel=False)
    args = (np.float32(0.02), x_zp, w, w_scale, w_zp, np.float32(0.1), np.uint8(100))
    np.testing.assert_array_equal(cppconv.qconv2d(x, *args, bias, groups=2, padding=1),
                                  numpy_qconv(x, *args, bias, groups=2, padding=1))


def test_layer_matches_function_and_threads(isa, restore_threads):
    rng = make_rng("layer")
    x, x_zp, w, w_zp, w_scale, bias = random_case(rng, I8, 3, 32, (10, 10), 48, (3, 3), 1)
    args = (np.float32(0.03), x_zp, w, w_scale, w_zp, np.float32(0.3), np.int8(-5))
    layer = cppconv.QConv2d(*args, bias, stride=2, padding=1, activation="relu")
    ref = numpy_qconv(x, *args, bias, stride=2, padding=1, activation="relu")
    for threads in (1, 2, 3):
        np.testing.assert_array_equal(layer(x, num_threads=threads), ref)
    out = np.empty_like(ref)
    assert layer(x, out=out) is out
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(cppconv.qconv2d(x[0], *args, bias, stride=2, padding=1, activation="relu"), ref[0])
    l1 = cppconv.QConv1d(*args[:2], w[:, :, 1], *args[3:], bias, padding=1)
    np.testing.assert_array_equal(l1(x[:, :, 0]), numpy_qconv(x[:, :, 0], *args[:2], w[:, :, 1], *args[3:], bias,
                                                              padding=1))
    w3 = w[:, :, None]
    l3 = cppconv.QConv3d(*args[:2], w3, *args[3:], bias, padding=(0, 1, 1))
    np.testing.assert_array_equal(l3(x[:, :, None]), numpy_qconv(x[:, :, None], *args[:2], w3, *args[3:], bias,
                                                                 padding=1)[:, :, 1:2])


FEATURE_LEVELS = ("avx512_vnni", "avx512_bf16", "amx")  # CPPCONV_MAX_ISA's levels above the ISAs


def test_each_cpu_feature_path_through_max_isa():
    """The same call in processes capped by CPPCONV_MAX_ISA gives the same bits."""
    code = (
        "import numpy as np, cppconv, hashlib;"
        "r = np.random.default_rng(5);"
        "x = r.integers(0, 256, (2, 24, 11, 13)).astype(np.uint8);"
        "w = r.integers(-128, 128, (40, 24, 3, 3)).astype(np.int8);"
        "y = cppconv.qconv2d(x, 0.02, 131, w, np.full(40, 0.01, np.float32), 0, 0.5, 7, padding=1);"
        # (a padding that dwarfs the input: its live taps, on each level's kernels)
        "xs = r.integers(0, 256, (3, 70, 1, 2)).astype(np.uint8);"
        "ws = r.integers(-128, 128, (70, 1, 3, 3)).astype(np.int8);"
        "y = np.concatenate([y.ravel(), cppconv.qconv2d(xs, 0.02, 131, ws, np.full(70, 0.01, np.float32), 0, 0.5, 7,"
        " padding=300, dilation=300, groups=70).ravel()]);"
        "print(cppconv.info()['isa'], hashlib.sha256(y.tobytes()).hexdigest())"
    )
    digests = {}
    levels = list(_native.max_isa_levels())  # the ISAs, then the feature levels (avx512_vnni, ...)
    isas = [level for level in levels if level not in FEATURE_LEVELS]  # (whatever this process's own cap)
    for cap in levels:
        env = dict(os.environ, CPPCONV_MAX_ISA=cap)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        isa, digest = out.stdout.split()
        assert isa == (cap if cap in isas else isas[-1])
        digests[cap] = digest
    assert len(set(digests.values())) == 1, digests


AMX = "qconv_u8s8_amx__avx512_32x32"


def require_amx():
    """Skips where this process may not use AMX int8 (CPU, OS grant or CPPCONV_MAX_ISA); where it
    may, the AMX kernel must be registered."""
    if "amx_int8" not in _native.cpu_features():
        pytest.skip("no AMX int8 here (CPU, OS grant or CPPCONV_MAX_ISA): the AMX kernel is not tested")
    assert AMX in _native.qconv_algorithms()


# (rank, n, c, sizes, k, kernel, stride, padding, dilation, groups) around the AMX kernel's tiles:
# output planes of 1, 15, 16, 17, 31, 32, 33 pixels and odd rows (16-pixel A tiles in pairs,
# virtual pixels along padded rows); input channels around its 64-byte tile rows (4 to 64 one
# chunk, 65 and 130 two, 200 four of 52); output channels around its 2 blocks of 16; groups.
AMX_CASES = [
    (2, 1, 16, (1, 1), 16, (1, 1), 1, 0, 1, 1),
    (2, 1, 17, (3, 5), 15, (1, 1), 1, 0, 1, 1),
    (2, 2, 32, (4, 4), 17, (1, 1), 1, 0, 1, 1),
    (2, 1, 31, (1, 17), 31, (1, 1), 1, 0, 1, 1),
    (2, 1, 63, (1, 31), 32, (1, 1), 1, 0, 1, 1),
    (2, 1, 64, (4, 8), 33, (1, 1), 1, 0, 1, 1),
    (2, 1, 65, (3, 11), 48, (3, 3), 1, 1, 1, 1),
    (2, 2, 33, (5, 7), 64, (3, 3), 1, 1, 1, 1),
    (2, 1, 130, (7, 7), 65, (3, 3), 1, 1, 1, 1),
    (2, 1, 200, (3, 5), 24, (3, 3), 1, 1, 1, 1),
    (2, 1, 16, (23, 29), 17, (3, 3), 1, 1, 1, 1),
    (2, 1, 24, (6, 20), 20, (2, 5), 1, 1, 1, 1),
    (2, 1, 32, (10, 11), 32, (3, 3), 1, 2, 2, 1),    # dilation
    (2, 2, 40, (9, 10), 40, (3, 3), 2, 1, 1, 1),     # stride 2: a row's pixels at 2 pixels a row
    (2, 1, 64, (9, 35), 33, (1, 1), 2, 0, 1, 1),     # 18 pixels a row: two A tiles, one partial
    (2, 1, 96, (16, 20), 80, (1, 1), 1, 0, 1, 1),    # weights under the tile: passes (of 2 blocks) inner
    (2, 1, 64, (5, 6), 80, (3, 3), 1, 1, 1, 1),      # weights over the tile: pixel pairs inner
    (2, 1, 64, (6, 9), 48, (3, 3), 1, 1, 1, 2),      # groups of 32 -> 24
    (2, 1, 96, (5, 6), 36, (3, 3), 1, 1, 1, 3),      # groups of 32 -> 12
    (2, 1, 48, (5, 5), 96, (1, 1), 1, 0, 1, 3),      # groups of 16 -> 32
    (2, 1, 128, (7, 9), 128, (3, 3), 1, 1, 1, 32),   # groups of 4 -> 4 (ResNeXt's)
    (2, 2, 10, (6, 7), 34, (3, 3), 1, 1, 1, 2),      # groups of 5 -> 17
    (2, 1, 4, (9, 11), 16, (5, 5), 2, 2, 1, 1),
    (1, 1, 48, (50,), 40, (5,), 2, 2, 1, 1),
    (3, 1, 20, (3, 4, 5), 18, (3, 3, 3), 1, 1, 1, 1),
    (3, 1, 32, (5, 4, 6), 16, (1, 3, 3), 2, 1, 1, 2),
]


@pytest.mark.parametrize("case", AMX_CASES)
@pytest.mark.parametrize("x_dtype,x_zp", [(U8, 0), (U8, 255), (I8, -128), (I8, 5)])
@pytest.mark.parametrize("layout_last", [False, True])
def test_amx_kernel_bit_exact_around_its_tiles(case, x_dtype, x_zp, layout_last):
    """The AMX kernel forced on shapes around its tiles gives NumPy's bits for 1, 2 and 3
    threads, quantized (with and without activations, per-channel weights), int32 and float32;
    padding holds the zero point (0, 255, -128)."""
    require_amx()
    rank, n, c, sizes, k, kernel, stride, padding, dilation, groups = case
    rng = make_rng("amx", case, np.dtype(x_dtype).name, x_zp, layout_last)
    x, _, w, w_zp, w_scale, bias = random_case(rng, x_dtype, n, c, sizes, k, kernel, groups, int8_centred=True)
    x_zp = np.array(x_zp, x_dtype)
    args = (np.float32(0.05), x_zp, w, w_scale, w_zp, np.float32(0.4), np.array(RANGE[np.dtype(x_dtype)][0] + 90,
                                                                                  x_dtype))
    xin = np.ascontiguousarray(np.moveaxis(x, 1, -1)) if layout_last else x
    layout = ("NWC", "NHWC", "NDHWC")[rank - 1] if layout_last else None
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    kw = dict(bias=bias, layout=layout, **geometry)
    assert AMX in accepting_algorithms(rank, xin, *args, **kw)
    activation = (None, "relu", "relu6")[AMX_CASES.index(case) % 3]
    ref = numpy_qconv(xin, *args, bias=bias, channels_last=layout_last, activation=activation, **geometry)
    for threads in (1, 2, 3):
        y = run_forced(AMX, rank, xin, *args, num_threads=threads, activation=activation, **kw)
        np.testing.assert_array_equal(y, ref, err_msg=f"{threads} threads")
    for out_dtype in (np.int32, np.float32):
        ref = numpy_qconv(xin, *args, bias=bias, channels_last=layout_last, out_dtype=out_dtype, **geometry)
        np.testing.assert_array_equal(run_forced(AMX, rank, xin, *args, out_dtype=out_dtype, num_threads=2, **kw),
                                      ref, err_msg=f"out_dtype {out_dtype}")


def test_amx_kernel_takes_groups_of_4_channels_and_more():
    """Groups of 4 input channels and more run the AMX kernel; 3 and fewer (a first layer) the VNNI
    one."""
    require_amx()
    rng = make_rng("amx-groups")
    vnni = "qconv_u8s8_vnni__avx512_6x64"
    for c, groups, expected in ((32, 2, AMX), (128, 32, AMX), (6, 2, vnni), (3, 1, vnni)):
        x, x_zp, w, w_zp, w_scale, bias = random_case(rng, U8, 1, c, (9, 9), 32, (3, 3), groups, int8_centred=True)
        layer = cppconv.QConv2d(np.float32(0.05), x_zp, w, w_scale, w_zp, np.float32(0.4), np.uint8(3), bias,
                                padding=1, groups=groups, layout="NHWC")
        xin = np.ascontiguousarray(np.moveaxis(x, 1, -1))
        assert layer.explain(xin.shape)["algorithm"] == expected, (c, groups)


def test_amx_kernel_leaves_narrow_channels_first_1x1_layers_to_the_pointwise_kernel():
    """Channels-first 1x1 layers (stride 1, no padding) of up to 64 input channels a group that
    the pointwise VNNI kernel takes run it; 65 and more, channels-last ones, and planes it
    refuses run the AMX kernel."""
    require_amx()
    rng = make_rng("amx-pointwise")
    pointwise = "qconv_pointwise_vnni__avx512_6x64"
    for c, groups, hw, layout, expected in ((64, 1, 8, "NCHW", pointwise), (128, 2, 8, "NCHW", pointwise),
                                            (65, 1, 8, "NCHW", AMX), (128, 1, 9, "NCHW", AMX),
                                            (64, 1, 8, "NHWC", AMX), (64, 1, 7, "NCHW", AMX)):
        x, x_zp, w, w_zp, w_scale, bias = random_case(rng, U8, 1, c, (hw, hw), 40, (1, 1), groups,
                                                      int8_centred=True)
        args = (np.float32(0.05), x_zp, w, w_scale, w_zp, np.float32(0.4), np.uint8(3))
        layer = cppconv.QConv2d(*args, bias, groups=groups, layout=layout)
        xin = np.ascontiguousarray(np.moveaxis(x, 1, -1)) if layout == "NHWC" else x
        assert layer.explain(xin.shape)["algorithm"] == expected, (c, groups, hw, layout)
        ref = numpy_qconv(xin, *args, bias=bias, groups=groups, channels_last=layout == "NHWC")
        np.testing.assert_array_equal(layer(xin), ref)


def test_amx_kernel_not_chosen_below_the_amx_cap():
    """CPPCONV_MAX_ISA=avx512_vnni or avx512_bf16 leaves the AMX kernel out (the VNNI kernel runs);
    amx keeps it."""
    require_amx()
    code = (
        "import numpy as np, cppconv; from cppconv import _native;"
        "w = np.ones((64, 64, 3, 3), np.int8);"
        "layer = cppconv.QConv2d(0.1, np.uint8(3), w, 0.01, 0, 0.2, np.uint8(5), padding=1, layout='NHWC');"
        "print(layer.explain((1, 14, 14, 64))['algorithm'],"
        " 'qconv_u8s8_amx__avx512_32x32' in _native.qconv_algorithms())"
    )
    for cap, expected in (("avx512_vnni", "qconv_u8s8_vnni__avx512_6x64 False"),
                          ("avx512_bf16", "qconv_u8s8_vnni__avx512_6x64 False"), ("amx", f"{AMX} True")):
        env = dict(os.environ, CPPCONV_MAX_ISA=cap)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.split() == expected.split(), cap


# <fenv.h>'s FE_TOWARDZERO and FE_TONEAREST, which differ between architectures.
FENV_ROUNDING = {"x86_64": (0xC00, 0), "aarch64": (0xC00000, 0)}


def _libm_rounding():
    """libm (for fesetround) and this machine's (FE_TOWARDZERO, FE_TONEAREST); skips elsewhere."""
    import ctypes
    import platform

    if platform.machine() not in FENV_ROUNDING:
        pytest.skip(f"<fenv.h> rounding constants not known for {platform.machine()}")
    try:
        return ctypes.CDLL("libm.so.6"), FENV_ROUNDING[platform.machine()]
    except OSError:
        pytest.skip("no libm.so.6 (fesetround) on this platform")


def test_rounding_mode_of_the_caller_is_ignored(isa):
    """MXCSR (FPCR) set to round toward zero by the caller changes nothing (and is restored)."""
    libm, (FE_TOWARDZERO, FE_TONEAREST) = _libm_rounding()
    rng = make_rng("mxcsr")
    x, x_zp, w, w_zp, w_scale, bias = random_case(rng, U8, 1, 16, (6, 6), 16, (3, 3), 1)
    args = (np.float32(0.37), x_zp, w, w_scale, w_zp, np.float32(0.11), np.uint8(9))
    ref = cppconv.qconv2d(x, *args, bias, padding=1)
    libm.fesetround(FE_TOWARDZERO)
    try:
        y = cppconv.qconv2d(x, *args, bias, padding=1, num_threads=1)
        assert libm.fegetround() == FE_TOWARDZERO
    finally:
        libm.fesetround(FE_TONEAREST)
    np.testing.assert_array_equal(y, ref)


def onnx_qlinearconv(x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, bias, stride, padding, groups):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.asarray(v), name) for v, name in (
        (np.float32(x_scale), "xs"), (np.asarray(x_zp), "xz"), (w, "w"), (np.asarray(w_scale, np.float32), "ws"),
        (np.asarray(w_zp), "wz"), (np.float32(y_scale), "ys"), (np.asarray(y_zp), "yz"), (bias, "b"))]
    kernel = list(w.shape[2:])
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
                            strides=[stride] * len(kernel), pads=[padding] * 2 * len(kernel), group=groups,
                            kernel_shape=kernel)
    elem = TensorProto.UINT8 if x.dtype == np.uint8 else TensorProto.INT8
    yelem = TensorProto.UINT8 if np.asarray(y_zp).dtype == np.uint8 else TensorProto.INT8
    graph = helper.make_graph([node], "q", [helper.make_tensor_value_info("x", elem, list(x.shape))],
                              [helper.make_tensor_value_info("y", yelem, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("case", [
    (U8, 16, 32, (3, 3), 1, 1, 1), (U8, 3, 16, (7, 7), 2, 3, 1), (U8, 32, 32, (3, 3), 1, 1, 32),
    (U8, 64, 16, (1, 1), 1, 0, 1), (I8, 16, 24, (3, 3), 2, 1, 1), (U8, 12, 12, (3, 3), 1, 1, 3),
])
def test_matches_onnx_runtime_qlinearconv(case):
    x_dtype, c, k, kernel, stride, padding, groups = case
    rng = make_rng("ort", case)
    x, x_zp, w, w_zp, w_scale, bias = random_case(rng, x_dtype, 1, c, (12, 12), k, kernel, groups)
    w_zp = np.zeros(k, np.int8)
    # Weights within [-64, 63]: ONNX Runtime's u8 x s8 kernels on AVX2 without VNNI sum adjacent
    # products in int16 (vpmaddubsw) and saturate for full-range pairs, e.g. (255, 255) x
    # (127, 127); cppconv stays exact there (test_saturation_zero_points_and_activations).
    w = np.clip(w, -64, 63).astype(np.int8)
    y_zp = np.array(5, x_dtype)
    args = (np.float32(0.04), x_zp, w, w_scale, w_zp, np.float32(0.25), y_zp)
    ours = cppconv.qconv2d(x, *args, bias, stride=stride, padding=padding, groups=groups)
    theirs = onnx_qlinearconv(x, *args, bias, stride, padding, groups)
    assert ours.shape == theirs.shape
    diff = np.abs(ours.astype(np.int32) - theirs.astype(np.int32))
    assert diff.max() <= 1
    if diff.any():  # only at exact rounding ties of the float32 product
        ref = numpy_qconv(x, *args, bias, stride=stride, padding=padding, groups=groups, out_dtype=np.float32)
        v = ref * np.float32(1.0 / 0.25)
        assert np.all(np.abs(np.abs(v - np.floor(v))[diff > 0] - 0.5) < 1e-3)


def test_quantize_and_dequantize_linear_as_onnx():
    x = np.array([-1.0, -0.25, 0.25, 0.75, 1.25, 2.5, 1e9, -np.inf, np.inf], np.float32)
    np.testing.assert_array_equal(cppconv.quantize_linear(x, 0.5, np.uint8(128)),
                                  np.array([126, 128, 128, 130, 130, 133, 255, 0, 255], np.uint8))
    np.testing.assert_array_equal(cppconv.quantize_linear(x, 0.5, np.int8(-1)),
                                  np.array([-3, -1, -1, 1, 1, 4, 127, -128, 127], np.int8))
    per_axis = cppconv.quantize_linear(np.ones((2, 3), np.float32), np.array([1, 0.5, 0.25], np.float32),
                                       np.array([0, 1, 2], np.uint8), axis=1)
    np.testing.assert_array_equal(per_axis, [[1, 3, 6], [1, 3, 6]])
    q = np.array([0, 128, 255], np.uint8)
    np.testing.assert_array_equal(cppconv.dequantize_linear(q, 0.5, np.uint8(128)), np.float32([-64, 0, 63.5]))
    np.testing.assert_array_equal(cppconv.dequantize_linear(np.int32([7, -8]), 0.25), np.float32([1.75, -2]))
    rng = make_rng("qdq")
    v = rng.normal(size=1000).astype(np.float32)
    back = cppconv.dequantize_linear(cppconv.quantize_linear(v, 0.01, np.int8(0)), 0.01, np.int8(0))
    inside = np.abs(v) < 1.2
    assert np.abs(back - v)[inside].max() <= 0.005 + 1e-7


def test_quantize_linear_matches_onnx_runtime():
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    rng = make_rng("qlinear")
    x = np.concatenate([rng.normal(size=500) * 50, np.arange(-40, 40) * 0.5]).astype(np.float32)
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
    graph = helper.make_graph([node], "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("y", TensorProto.INT8, None)],
                              [numpy_helper.from_array(np.float32(0.5), "s"), numpy_helper.from_array(np.int8(3), "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    theirs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(cppconv.quantize_linear(x, 0.5, np.int8(3)), theirs)


@pytest.mark.parametrize("dtype", [U8, I8])
def test_max_pool_of_8_bit_tensors_is_exact(dtype):
    rng = make_rng("pool", np.dtype(dtype).name)
    lo, hi = RANGE[np.dtype(dtype)]
    x = rng.integers(lo, hi + 1, size=(2, 5, 9, 11)).astype(dtype)
    y, idx = cppconv.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)
    ref = cppconv.max_pool2d(x.astype(np.float64), 3, stride=2, padding=1)
    assert y.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(y, ref.astype(dtype))
    np.testing.assert_array_equal(x.reshape(2, 5, -1)[np.arange(2)[:, None, None], np.arange(5)[None, :, None],
                                                        idx.reshape(2, 5, -1)].reshape(y.shape), y)
    assert cppconv.max_pool1d(x[:, :, 0], 2).dtype == np.dtype(dtype)
    assert cppconv.max_pool3d(x[:, :, None], (1, 2, 2)).dtype == np.dtype(dtype)
    assert cppconv.MaxPool2d(2)(x).dtype == np.dtype(dtype)


@pytest.mark.parametrize("change, error, match", [
    (dict(x_scale=0.0), ValueError, "x_scale must be positive and finite"),
    (dict(x_scale=np.inf), ValueError, "x_scale must be positive and finite"),
    (dict(y_scale=-1.0), ValueError, "y_scale must be positive and finite"),
    (dict(y_scale=1e-50), ValueError, "y_scale must be positive and finite"),
    (dict(w_scale=np.ones(3, np.float32)), ValueError, "w_scale must be a scalar or 4 values"),
    (dict(w_zero_point=np.zeros(5, np.int8)), ValueError, "w_zero_point must be a scalar or 4 values"),
    (dict(w_zero_point=np.uint8(0)), TypeError, "w_zero_point has dtype uint8"),
    (dict(x_zero_point=np.int8(0)), TypeError, "x_zero_point has dtype int8"),
    (dict(x_zero_point=256), ValueError, r"x_zero_point must lie in \[0, 255\]"),
    (dict(y_zero_point=-1), ValueError, r"y_zero_point must lie in \[0, 255\]"),
    (dict(x_zero_point=1.5), TypeError, "x_zero_point must be an integer"),
    (dict(x=np.zeros((1, 2, 5, 5), np.float32)), TypeError, "x must be a uint8 or int8 array"),
    (dict(w=np.zeros((4, 2, 3, 3), np.int16)), TypeError, "w must be a uint8 or int8 array"),
    (dict(bias=np.zeros(4, np.float32)), TypeError, "bias must be an int32 array"),
    (dict(bias=np.zeros(3, np.int32)), ValueError, r"bias must have shape \(4,\)"),
    (dict(activation="sigmoid"), ValueError, "activation must be None, 'relu' or 'relu6'"),
    (dict(out_dtype=np.float64), TypeError, "out_dtype must be uint8, int8, int32 or float32"),
    (dict(out_dtype=np.int8, y_zero_point=np.uint8(3)), ValueError, "out_dtype int8 differs"),
    (dict(x=np.zeros((1, 3, 5, 5), np.uint8)), ValueError, "weight expects 2 input channels"),
    (dict(padding_mode_probe=True), TypeError, "unexpected keyword"),
    (dict(num_threads=0), ValueError, "num_threads must be between"),
    (dict(out=np.zeros((1, 4, 3, 3), np.int8)), TypeError, "out has dtype int8"),
])
def test_bad_arguments_name_the_argument(change, error, match):
    kw = dict(x=np.zeros((1, 2, 5, 5), np.uint8), x_scale=0.1, x_zero_point=0, w=np.zeros((4, 2, 3, 3), np.int8),
              w_scale=0.1, w_zero_point=0, y_scale=0.1, y_zero_point=0)
    kw.update(change)
    with pytest.raises(error, match=match):
        cppconv.qconv2d(**kw)


def test_bad_quantize_arguments():
    with pytest.raises(ValueError, match="x: NaN"):
        cppconv.quantize_linear(np.float32([np.nan]), 1.0)
    with pytest.raises(ValueError, match="scale must be positive"):
        cppconv.quantize_linear(np.float32([1]), -1.0)
    with pytest.raises(ValueError, match="scale must be a scalar, got shape"):
        cppconv.quantize_linear(np.ones((2, 3), np.float32), np.ones(3, np.float32))
    with pytest.raises(ValueError, match="dtype int8 differs from zero_point's dtype uint8"):
        cppconv.quantize_linear(np.float32([1]), 1.0, np.uint8(0), dtype=np.int8)
    with pytest.raises(TypeError, match="x must be a uint8, int8 or int32"):
        cppconv.dequantize_linear(np.float32([1]), 1.0)


def test_examples_in_the_docstrings_run():
    import doctest

    result = doctest.testmod(_quant, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted >= 8


def _quantize_reference(x, scale, zero_point, lo, hi):
    """ONNX QuantizeLinear in NumPy: the quotient in x's float type, clamped, half to even."""
    v = np.clip(x / scale.astype(x.dtype), (lo - zero_point).astype(x.dtype), (hi - zero_point).astype(x.dtype))
    return (np.rint(v).astype(np.int64) + zero_point).astype(np.int64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("q", [U8, I8])
@pytest.mark.parametrize("shape, axis", [((3000,), None), ((2, 5, 7, 3), 1), ((4, 6, 6, 5), 3), ((3, 4), 0),
                                         ((1100, 1000), None)])  # the last: 1.1 M values, several threads
def test_native_quantize_and_dequantize_passes(isa, dtype, q, shape, axis):
    rng = make_rng("native-qdq", str(shape), np.dtype(dtype).name)
    lo, hi = RANGE[np.dtype(q)]
    count = 1 if axis is None else shape[axis]
    scale = rng.uniform(0.01, 0.3, count).astype(np.float32)
    zero = rng.integers(lo, hi + 1, count).astype(q)
    x = (rng.normal(size=shape) * 30).astype(dtype)
    ties = min(200, x.size)
    x.reshape(-1)[:ties] = np.arange(-100, ties - 100) * 0.5 * float(scale[0])  # ties at one scale
    bshape = [1] * len(shape)
    if axis is not None:
        bshape[axis] = -1
    s, z = scale.reshape(bshape), zero.astype(np.int64).reshape(bshape)
    y = cppconv.quantize_linear(x, scale if axis is not None else scale[0], zero if axis is not None else zero[0],
                                axis=axis)
    assert y.dtype == q
    np.testing.assert_array_equal(y.astype(np.int64), _quantize_reference(x, s, z, lo, hi))
    back = cppconv.dequantize_linear(y, scale if axis is not None else scale[0], zero if axis is not None else zero[0],
                                     axis=axis)
    np.testing.assert_array_equal(back, ((y.astype(np.int64) - z).astype(np.float32) * s).astype(np.float32))


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("q, y_type", [(U8, U8), (I8, I8), (U8, I8), (I8, U8)])
@pytest.mark.parametrize("n", [1, 15, 16, 17, 63, 64, 65, 1000, 300_001])  # around vector widths; several threads
def test_native_quantized_add(isa, q, y_type, relu, n):
    """_native.quantized_add is DequantizeLinear of both, float32 add, [ReLU], QuantizeLinear,
    bit for bit, on every ISA (ties of the output's rounding and saturation at both ends included)."""
    rng = make_rng("quantized-add", q.__name__, y_type.__name__, n)
    lo, hi = RANGE[np.dtype(q)]
    a = rng.integers(lo, hi + 1, n).astype(q)
    b = rng.integers(lo, hi + 1, n).astype(q)
    sa, za = np.float32(0.03), int(rng.integers(lo, hi + 1))
    sb, zb = np.float32(0.5), int(rng.integers(lo, hi + 1))
    sy, zy = np.float32(0.06), int(rng.integers(*RANGE[np.dtype(y_type)]))
    y = np.empty(n, y_type)
    _native.quantized_add(a, float(sa), za, b, float(sb), zb, y, float(sy), zy, relu)
    total = (a.astype(np.int32) - za).astype(np.float32) * sa + (b.astype(np.int32) - zb).astype(np.float32) * sb
    if relu:
        total = np.maximum(total, np.float32(0))
    ylo, yhi = RANGE[np.dtype(y_type)]
    want = _quantize_reference(total, np.float32(sy), np.int64(zy), ylo, yhi)
    np.testing.assert_array_equal(y.astype(np.int64), want)


@pytest.mark.parametrize("q, y_type", [(U8, U8), (I8, I8), (U8, I8), (I8, U8)])
@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 127, 128, 1000, 300_001])  # around the 64-byte step; threads
def test_native_lookup_bytes(isa, q, y_type, n):
    """_native.lookup_bytes (a QDQ network's 8-bit table) is table[x] by x's bits on every ISA
    (AVX512-VBMI's two half-table permutes, the scalar loop), in place too; misuse is refused."""
    rng = make_rng("lookup-bytes", q.__name__, y_type.__name__, n)
    lo, hi = RANGE[np.dtype(q)]
    x = rng.integers(lo, hi + 1, n).astype(q)
    table = rng.integers(*RANGE[np.dtype(y_type)], 256, endpoint=True).astype(y_type)
    want = table[x.view(np.uint8)]
    y = np.empty(n, y_type)
    _native.lookup_bytes(x, table, y)
    np.testing.assert_array_equal(y, want)
    if q == y_type:
        _native.lookup_bytes(x, table, x)
        np.testing.assert_array_equal(x, want)
    with pytest.raises(ValueError):
        _native.lookup_bytes(x, table[:255], y)
    if n > 1:
        with pytest.raises(ValueError):  # (y overlapping x other than as x itself)
            _native.lookup_bytes(x[:-1], table, x[1:].view(y_type))
    with pytest.raises(TypeError):
        _native.lookup_bytes(x.astype(np.int16), table, y)


def test_native_quantize_ignores_the_callers_rounding_mode():
    libm, (FE_TOWARDZERO, FE_TONEAREST) = _libm_rounding()
    x = (np.arange(-300, 300) * 0.25).astype(np.float32)  # halves and quarters: ties and near-ties
    want = cppconv.quantize_linear(x, 0.5, np.int8(0))
    libm.fesetround(FE_TOWARDZERO)
    try:
        got = cppconv.quantize_linear(x, 0.5, np.int8(0))
        assert libm.fegetround() == FE_TOWARDZERO
    finally:
        libm.fesetround(FE_TONEAREST)
    np.testing.assert_array_equal(got, want)
    assert [int(want[x == v][0]) for v in (0.25, 0.75, -0.25, -0.75, 1.25)] == [0, 2, 0, -2, 2]  # ties to even
