"""padding_mode="constant" with padding_value= (issue 17): conv1d/2d/3d and their layers against
the float64 NumPy reference on every ISA with every algorithm forced, and against
torch.nn.functional.pad(mode="constant", value=v) followed by torch's convolution."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import cppconv
from cppconv import _conv, _native

from conftest import assert_close, make_rng
from reference import conv_nd_abs_bound, conv_nd_ref, same_padding

FUNCTIONS = {1: cppconv.conv1d, 2: cppconv.conv2d, 3: cppconv.conv3d}
LAYERS = {1: cppconv.Conv1d, 2: cppconv.Conv2d, 3: cppconv.Conv3d}
LAST = {1: "NWC", 2: "NHWC", 3: "NDHWC"}
VALUES = [0.0, 1.5, -3.25, 1e3]


def random_case(rng, rank, dtype=np.float32):
    groups = int(rng.choice([1, 2]))
    cg, kg = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    kernel = tuple(int(rng.integers(1, 4)) for _ in range(rank))
    dilation = tuple(int(rng.integers(1, 3)) for _ in range(rank))
    stride = tuple(int(rng.integers(1, 3)) for _ in range(rank))
    pads = tuple(int(v) for _ in range(rank) for v in rng.integers(0, 4, size=2))
    sizes = tuple(int(rng.integers(1, 9)) for _ in range(rank))
    sizes = tuple(max(s, d * (k - 1) + 1 - pads[2 * i] - pads[2 * i + 1])
                  for i, (s, k, d) in enumerate(zip(sizes, kernel, dilation)))
    x = rng.standard_normal((int(rng.integers(1, 3)), cg * groups) + sizes).astype(dtype)
    w = rng.standard_normal((kg * groups, cg) + kernel).astype(dtype)
    b = rng.standard_normal(kg * groups).astype(dtype) if rng.random() < 0.5 else None
    padding = tuple(zip(pads[0::2], pads[1::2]))
    return x, w, b, dict(stride=stride, dilation=dilation, groups=groups, padding=padding), pads


def check(x, w, b, kw, pads, value, *, last=False, algorithm=None, context=""):
    r = x.ndim - 2
    args = dict(stride=kw["stride"], padding=pads, dilation=kw["dilation"], groups=kw["groups"],
                padding_mode="constant", activation=kw.get("activation"), padding_value=value)
    ref, bound = conv_nd_ref(x, w, b, **args), conv_nd_abs_bound(x, w, b, **args)
    kw = dict(kw, padding_mode="constant", padding_value=value)
    xin = np.ascontiguousarray(np.moveaxis(x, 1, -1)) if last else x
    if last:
        kw["layout"] = LAST[r]
    if algorithm is None:
        y = FUNCTIONS[r](xin, w, b, **kw)
    else:
        y = _conv._conv_with_algorithm(algorithm, xin, w, b, rank=r, **kw)
    if last:
        y = np.moveaxis(y, -1, 1)
    assert_close(y, ref, bound, np.result_type(x, w), context)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("seed", range(12))
def test_matches_reference(isa, rank, seed):
    rng = make_rng("constant-padding", rank, seed)
    x, w, b, kw, pads = random_case(rng, rank, np.float32 if seed % 3 else np.float64)
    check(x, w, b, kw, pads, VALUES[seed % len(VALUES)], last=bool(seed % 2), context=f"seed {seed}")


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_every_algorithm(isa, rank):
    """Every algorithm of every ISA that accepts the problem, forced in turn, both dtypes."""
    ran = set()
    for seed in range(6):
        for dtype, tag in ((np.float32, "_f32"), (np.float64, "_f64")):
            rng = make_rng("constant-padding-algorithms", rank, seed, tag)
            x, w, b, kw, pads = random_case(rng, rank, dtype)
            # Wide enough planes and channel counts for the blocked kernels to take some.
            if seed >= 3:
                x = rng.standard_normal(x.shape[:1] + (16,) + (12,) * rank).astype(dtype)
                w = rng.standard_normal((16, 16 // kw["groups"]) + w.shape[2:]).astype(dtype)
                b = None
            for name in _native.conv_algorithms():
                if tag not in name:
                    continue
                try:
                    check(x, w, b, kw, pads, -2.5, last=bool(seed % 2), algorithm=name, context=name)
                except ValueError as e:
                    assert "does not accept" in str(e), e
                    continue
                ran.add(name)
    assert any("reference" in n for n in ran) and any("reference" not in n for n in ran), ran


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_special_values_reach_exactly_the_windows_that_meet_padding(value):
    rng = make_rng("constant-padding-special", str(value))
    x = rng.standard_normal((1, 2, 7, 6)).astype(np.float32)
    w = np.abs(rng.standard_normal((3, 2, 3, 3))).astype(np.float32)
    y = cppconv.conv2d(x, w, padding=1, padding_mode="constant", padding_value=value)
    ref = conv_nd_ref(x, w, padding=(1, 1, 1, 1), padding_mode="constant", padding_value=value)
    assert_close(y, ref, conv_nd_abs_bound(x, w, padding=(1, 1, 1, 1)), np.float32)
    assert np.isfinite(y[:, :, 1:-1, 1:-1]).all() and not np.isfinite(y[:, :, 0]).any()


def test_layers_match_functions_pickle_and_read_back():
    rng = make_rng("constant-padding-layers")
    for rank in (1, 2, 3):
        x = rng.standard_normal((2, 4) + (6,) * rank).astype(np.float32)
        w = rng.standard_normal((5, 4) + (3,) * rank).astype(np.float32)
        kw = dict(padding="same", padding_mode="Constant", padding_value=0.75, activation="relu")
        layer = LAYERS[rank](w, **kw)
        assert (layer.padding_mode, layer.padding_value) == ("constant", 0.75)
        assert "padding_mode='constant', padding_value=0.75" in repr(layer)
        expected = FUNCTIONS[rank](x, w, **kw)
        np.testing.assert_array_equal(layer(x), expected)
        np.testing.assert_array_equal(pickle.loads(pickle.dumps(layer))(x), expected)
        zero = LAYERS[rank](w, padding=1, padding_mode="constant")  # value 0: zero padding
        np.testing.assert_array_equal(zero(x), FUNCTIONS[rank](x, w, padding=1))


def test_float16_and_integer_inputs_pad_in_the_compute_dtype():
    x = np.arange(12, dtype=np.uint8).reshape(1, 1, 3, 4)
    w = np.ones((1, 1, 3, 3))
    y = cppconv.conv2d(x, w, padding=1, padding_mode="constant", padding_value=0.5)
    ref = conv_nd_ref(x, w, padding=(1, 1, 1, 1), padding_mode="constant", padding_value=0.5)
    np.testing.assert_allclose(y, ref, rtol=1e-12)
    h = cppconv.conv2d(x.astype(np.float16), w.astype(np.float16), padding=1, padding_mode="constant",
                       padding_value=1 / 3)
    assert h.dtype == np.float16
    np.testing.assert_allclose(h, conv_nd_ref(x, w, padding=(1, 1, 1, 1), padding_mode="constant",
                                              padding_value=1 / 3), rtol=1e-3)


def test_explain_counts_the_padded_copy():
    plain = cppconv.explain((2, 3, 20, 20), (4, 3, 3, 3), padding=2, padding_mode="constant")
    filled = cppconv.explain((2, 3, 20, 20), (4, 3, 3, 3), padding=2, padding_mode="constant", padding_value=1.0)
    assert filled["workspace_bytes"] - plain["workspace_bytes"] == 2 * 3 * 24 * 24 * 4
    assert filled["output_shape"] == plain["output_shape"] == (2, 4, 22, 22)


@pytest.mark.parametrize("call, error, message", [
    (lambda: cppconv.conv2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)), padding=1, padding_value=2.0),
     ValueError, "padding_value=2.0 needs padding_mode='constant', got padding_mode='zeros'"),
    (lambda: cppconv.Conv1d(np.ones((1, 1, 3)), padding_mode="reflect", padding_value=-1),
     ValueError, "needs padding_mode='constant', got padding_mode='reflect'"),
    (lambda: cppconv.conv3d(np.ones((1, 1, 4, 4, 4)), np.ones((1, 1, 3, 3, 3)), padding_mode="constant",
                            padding_value="1"), TypeError, "padding_value must be a real number, got str"),
    (lambda: cppconv.conv2d(np.ones((4, 4)), np.ones((3, 3)), padding_mode="constant", padding_value=True),
     TypeError, "padding_value must be a real number"),
    (lambda: cppconv.conv2d(np.ones((4, 4)), np.ones((3, 3)), padding_mode="constant", padding_value=[1.0]),
     TypeError, "padding_value must be a real number, got list"),
    (lambda: cppconv.correlate2d(np.ones((4, 4)), np.ones((3, 3)), fillvalue=[1.0, 2.0]),
     ValueError, "fillvalue must be a single real number"),
])
def test_errors(call, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("value", [0.0, 2.5, -0.75])
def test_matches_torch(rank, value):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = make_rng("constant-padding-torch", rank, value)
    x = rng.standard_normal((2, 4) + (9,) * rank).astype(np.float32)
    w = rng.standard_normal((6, 2) + (3,) * rank).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    stride, dilation = 2, (1,) * (rank - 1) + (2,)
    pads = [same_padding(9, 3, stride, d) for d in dilation]
    torch_pad = tuple(v for p in reversed(pads) for v in p)  # F.pad: last axis first
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[rank]
    expected = conv(F.pad(torch.from_numpy(x), torch_pad, mode="constant", value=value), torch.from_numpy(w),
                    torch.from_numpy(b), stride=stride, dilation=dilation, groups=2).numpy()
    y = FUNCTIONS[rank](x, w, b, stride, "same", dilation, 2, padding_mode="constant", padding_value=value)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-4)
    layer = LAYERS[rank](w, b, stride=stride, padding=tuple(pads), dilation=dilation, groups=2,
                         padding_mode="constant", padding_value=value)
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-4)
