"""leaky_relu with a slope (issue 17): activation=("leaky_relu", negative_slope), PyTorch's
negative_slope, carried to every kernel's epilogue.  Every convolution and transposed-convolution
algorithm of every ISA, forced in turn, against the float64 NumPy reference and against its own
output without the activation (the slope applied to the same sums, so exactly); against torch's
leaky_relu; the layers' settings, pickling and errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import cppconv
from cppconv import _args, _conv, _conv_transpose, _native

from conftest import assert_close, make_rng
from reference import conv_nd_abs_bound, conv_nd_ref

SLOPES = [0.2, -0.5, 1.5, 0.0]
FUNCTIONS = {1: cppconv.conv1d, 2: cppconv.conv2d, 3: cppconv.conv3d}
TRANSPOSED = {1: cppconv.conv_transpose1d, 2: cppconv.conv_transpose2d, 3: cppconv.conv_transpose3d}
LAYERS = {1: cppconv.Conv1d, 2: cppconv.Conv2d, 3: cppconv.Conv3d}

# (x shape, weight shape, keywords): problems the blocked, depthwise, pixel-vector, Winograd
# (precision "high") and tiled kernels take, in both layouts below.
CONV_CASES = [
    ((2, 16, 9, 11), (32, 16, 3, 3), dict(padding=1)),
    ((1, 16, 10, 12), (16, 16, 3, 3), dict(padding=1, precision="high")),
    ((1, 3, 13, 17), (8, 3, 5, 5), dict(padding=2, stride=2)),
    ((2, 16, 9, 19), (16, 1, 3, 3), dict(padding=1, groups=16)),
    ((1, 8, 7, 9), (12, 4, 1, 1), dict(groups=2)),
    ((1, 4, 6, 6), (6, 4, 2, 3), dict(padding=(1, 2), dilation=2, padding_mode="reflect")),
]


def leaky(y, slope):
    """leaky_relu in y's own dtype, as a kernel applies it to the sums it stored."""
    return np.where(y < 0, y * y.dtype.type(slope), y)


@pytest.mark.parametrize("case", range(len(CONV_CASES)))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_conv_algorithm(case, dtype):
    xs, ws, kw = CONV_CASES[case]
    rng = make_rng("leaky-slope", case, np.dtype(dtype).name)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in (xs, ws, ws[:1]))
    tag = "_f32" if dtype == np.float32 else "_f64"
    pads = _conv._explain(_conv._ConvSpec.popped_from(dict(kw)), xs, ws, np.dtype(dtype), True, False)["padding"]
    args = dict(stride=kw.get("stride", 1), padding=pads, dilation=kw.get("dilation", 1), groups=kw.get("groups", 1),
                padding_mode=kw.get("padding_mode", "zeros"))
    bound = conv_nd_abs_bound(x, w, b, **args)
    ran = []
    for name in _native.conv_algorithms():
        if tag not in name:
            continue
        for last in (False, True):
            xin = np.ascontiguousarray(np.moveaxis(x, 1, -1)) if last else x
            layout = "NHWC" if last else "NCHW"
            try:
                plain = _conv._conv_with_algorithm(name, xin, w, b, layout=layout, **kw)
            except ValueError as e:
                assert "does not accept" in str(e), e
                continue
            ran.append(name)
            for slope in SLOPES:
                y = _conv._conv_with_algorithm(name, xin, w, b, layout=layout, activation=("leaky_relu", slope), **kw)
                context = f"{name} {layout} slope {slope}"
                np.testing.assert_array_equal(y, leaky(plain, slope), err_msg=context)
                if "winograd" not in name:  # its own bound: tests/test_precision.py
                    ref = conv_nd_ref(x, w, b, activation=("leaky_relu", slope), **args)
                    got = np.moveaxis(y, -1, 1) if last else y
                    assert_close(got, ref, bound * max(1.0, abs(slope)), dtype, context)
    assert any("reference" in n for n in ran) and any("reference" not in n for n in ran), ran


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_conv_transpose_algorithm(rank, dtype):
    rng = make_rng("leaky-slope-transpose", rank, np.dtype(dtype).name)
    x = rng.standard_normal((2, 16) + (5,) * rank).astype(dtype)
    w = rng.standard_normal((16, 8) + (3,) * rank).astype(dtype)
    b = rng.standard_normal(8).astype(dtype)
    tag = "_f32" if dtype == np.float32 else "_f64"
    ran = []
    for name in _native.conv_transpose_algorithms():
        if tag not in name:
            continue
        try:
            plain = _conv_transpose._conv_transpose_with_algorithm(name, x, w, b, rank=rank, stride=2, padding=1)
        except ValueError as e:
            assert "does not accept" in str(e), e
            continue
        ran.append(name)
        for slope in SLOPES:
            y = _conv_transpose._conv_transpose_with_algorithm(name, x, w, b, rank=rank, stride=2, padding=1,
                                                               activation=("leaky_relu", slope))
            np.testing.assert_array_equal(y, leaky(plain, slope), err_msg=f"{name} slope {slope}")
    assert len(ran) >= 2, ran


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_functions_and_layers_every_isa(isa, rank):
    rng = make_rng("leaky-slope-isa", rank)
    x = rng.standard_normal((2, 8) + (7,) * rank).astype(np.float32)
    w = rng.standard_normal((8, 8) + (3,) * rank).astype(np.float32)
    for slope in SLOPES:
        act = ("leaky_relu", slope)
        ref = conv_nd_ref(x, w, padding=(1,) * (2 * rank), activation=act)
        bound = conv_nd_abs_bound(x, w, padding=(1,) * (2 * rank)) * max(1.0, abs(slope))
        assert_close(FUNCTIONS[rank](x, w, padding=1, activation=act), ref, bound, np.float32, f"{isa} {slope}")
        layer = LAYERS[rank](w, padding=1, activation=act)
        assert_close(layer(x), ref, bound, np.float32, f"layer {isa} {slope}")


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("slope", [0.01, 0.2, -0.3, 2.0])
def test_matches_torch(rank, slope):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = make_rng("leaky-slope-torch", rank, slope)
    x = rng.standard_normal((2, 4) + (8,) * rank).astype(np.float32)
    w = rng.standard_normal((6, 4) + (3,) * rank).astype(np.float32)
    wt = rng.standard_normal((4, 6) + (3,) * rank).astype(np.float32)
    tx = torch.from_numpy(x)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[rank]
    deconv = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[rank]
    expected = F.leaky_relu(conv(tx, torch.from_numpy(w), padding=1), slope).numpy()
    np.testing.assert_allclose(FUNCTIONS[rank](x, w, padding=1, activation=("leaky_relu", slope)), expected,
                               rtol=1e-5, atol=1e-4)
    expected = F.leaky_relu(deconv(tx, torch.from_numpy(wt), stride=2), slope).numpy()
    np.testing.assert_allclose(TRANSPOSED[rank](x, wt, stride=2, activation=("leaky_relu", slope)), expected,
                               rtol=1e-5, atol=1e-4)


def test_settings_read_back_and_pickle():
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    layer = cppconv.Conv2d(w, activation=("Leaky_ReLU", 0.2))
    assert layer.activation == ("leaky_relu", 0.2)
    assert "activation=('leaky_relu', 0.2)" in repr(layer)
    assert cppconv.Conv2d(w, activation=["leaky_relu", 0.01]).activation == "leaky_relu"  # the default slope
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(layer))(x), layer(x))
    transposed = cppconv.ConvTranspose2d(w, activation=("leaky_relu", 1.5))
    assert transposed.activation == ("leaky_relu", 1.5)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(transposed))(x[:, :, :4, :4].repeat(4, 1)[:, :4]),
                                  transposed(x[:, :, :4, :4].repeat(4, 1)[:, :4]))
    # The bare name keeps PyTorch's default.
    np.testing.assert_array_equal(cppconv.conv2d(x, w, activation="leaky_relu"),
                                  cppconv.conv2d(x, w, activation=("leaky_relu", 0.01)))


def test_one_default_slope():
    """The default slope is one C++ constant (PyTorch's 0.01): Python reads it, and the native
    settings that omit negative_slope apply it."""
    assert _args.DEFAULT_NEGATIVE_SLOPE == _native.DEFAULT_NEGATIVE_SLOPE == 0.01
    rng = make_rng("leaky-default")
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    code = _native.ACTIVATIONS["leaky_relu"]
    outs = []
    for slope in ((), (_native.DEFAULT_NEGATIVE_SLOPE,)):
        out = np.empty((1, 4, 4, 4), np.float32)
        _native.conv(x, w, None, out, _native.ConvParams(2, (1, 1), (1, 1), (0,) * 4, 1, 0, 0, code, -1, *slope))
        outs.append(out)
        out_t = np.empty((1, 3, 6, 6), np.float32)
        settings = _native.ConvTransposeSettings((1, 1), (0,) * 4, (0, 0), (1, 1), 1, 0, code, *slope)
        _native.conv_transpose(out, w, None, out_t, settings)
        outs.append(out_t)
    np.testing.assert_array_equal(outs[0], outs[2])
    np.testing.assert_array_equal(outs[1], outs[3])
    assert (outs[0] < 0).any()  # the slope applied


@pytest.mark.parametrize("activation, error, message", [
    (("relu", 0.2), ValueError, "only 'leaky_relu' takes a parameter"),
    (("leaky_relu", "0.2"), TypeError, "negative_slope must be a real number, got str"),
    (("leaky_relu", float("nan")), ValueError, "negative_slope must be finite"),
    (("leaky_relu",), ValueError, "activation must be None, one of"),
    (("gelu", 0.1), ValueError, "activation must be None, one of"),
])
def test_errors(activation, error, message):
    for call in (lambda: cppconv.conv2d(np.ones((4, 4)), np.ones((3, 3)), activation=activation),
                 lambda: cppconv.ConvTranspose1d(np.ones((1, 1, 3)), activation=activation)):
        with pytest.raises(error, match=message):
            call()
