"""Layers as objects (issue 13, items 6 and 7): every layer class pickles and copies before and
after its first call, also into worker processes, and assigning ``weight`` or ``bias`` is
validated as the constructor validates and honoured by every later call."""

from __future__ import annotations

import copy
import inspect
import multiprocessing
import pickle
import threading
import time

import numpy as np
import pytest

import cppconv

from conftest import make_rng


def _same(a, b):
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(_same(p, q) for p, q in zip(a, b))
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


def _layers():
    """{name: (layer, x)}, every layer class with settings off their defaults."""
    rng = make_rng("layers")
    x = rng.standard_normal((2, 4, 9, 9)).astype(np.float32)
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    wt = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    return {
        # Symmetric padding: the one-step native path, its plan made by the constructor.
        "Conv2d": (cppconv.Conv2d(w, b, stride=(1, 2), padding=1, groups=2, activation="relu"), x),
        "Conv2d same reflect": (
            cppconv.Conv2d(w, None, padding="same", dilation=2, groups=2, padding_mode="reflect", layout="NHWC",
                           precision="high"),
            x_nhwc),
        "Conv2d float64 asymmetric": (cppconv.Conv2d(w.astype(np.float64), b, padding=((1, 0), (0, 2)), groups=2), x),
        "Conv2d 2-D kernel": (cppconv.Conv2d(w[0, 0], activation="leaky_relu"), x[0, 0]),
        "Conv1d": (cppconv.Conv1d(w[:, :, 0], b, stride=2, padding=((1, 0),), groups=2, layout="NWC"),
                   np.ascontiguousarray(x[:, :, 0].transpose(0, 2, 1))),
        "Conv3d": (cppconv.Conv3d(w[:, :, None], b, padding=(0, 1, 1), dilation=(1, 2, 1), groups=2,
                                  activation="silu"), x[:, :, None]),
        "ConvTranspose2d": (
            cppconv.ConvTranspose2d(wt, rng.standard_normal(6).astype(np.float32), stride=2, padding=((1, 0), (0, 1)),
                                    output_padding=1, groups=2, activation="tanh", layout="NHWC"),
            x_nhwc),
        "ConvTranspose1d": (
            cppconv.ConvTranspose1d(wt[:, :, 0], None, stride=3, padding=((2, 1),), dilation=2, groups=2,
                                    activation="relu"),
            x[:, :, 0]),
        "ConvTranspose3d": (
            cppconv.ConvTranspose3d(np.stack([wt, wt], 2), rng.standard_normal(3).astype(np.float32),
                                    stride=(1, 2, 1), padding=(0, 1, 1), output_padding=(0, 1, 0), layout="NDHWC"),
            np.stack([x_nhwc[0], x_nhwc[1]])),
        "MaxPool2d": (cppconv.MaxPool2d((3, 2), stride=(2, 1), padding=1, dilation=(1, 2), ceil_mode=True,
                                        return_indices=True, layout="NHWC"), x_nhwc),
        "AvgPool2d": (cppconv.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False, divisor_override=4), x),
        **_nd_pool_layers(x),
        **_quantized_layers(rng),
    }


def _quantized_layers(rng):
    """The int8 convolution layers, per-channel scales and zero points, on uint8 and int8 inputs."""
    xq = rng.integers(0, 256, (2, 4, 9, 9)).astype(np.uint8)
    wq = rng.integers(-128, 128, (6, 2, 3, 3)).astype(np.int8)
    ws, wz = np.linspace(0.01, 0.02, 6).astype(np.float32), np.arange(-3, 3).astype(np.int8)
    bq = rng.integers(-500, 500, 6).astype(np.int32)
    return {
        "QConv2d": (cppconv.QConv2d(0.05, np.uint8(120), wq, ws, wz, 0.4, np.uint8(7), bq, stride=(1, 2), padding=1,
                                    groups=2, activation="relu"), xq),
        "QConv1d": (cppconv.QConv1d(0.05, -3, wq[:, :, 0], ws, wz, 0.4, 2, None, padding=((1, 0),), groups=2,
                                    layout="NWC"), np.ascontiguousarray(xq[:, :, 0].transpose(0, 2, 1)).view(np.int8)),
        "QConv3d": (cppconv.QConv3d(0.05, 120, wq[:, :, None], ws, wz, 0.4, 7, bq, padding=(0, 1, 1), groups=2,
                                    out_dtype=np.float32), xq[:, :, None]),
    }


def _nd_pool_layers(x):
    """The 1-D and 3-D pool layers, on a sequence batch cut from x and a volume batch built from it."""
    x1, x3 = x[:, :, 0], np.stack([x, x[:, :, ::-1], x * 2], axis=2)  # (2, 4, 9), (2, 4, 3, 9, 9)
    x1_nwc, x3_ndhwc = np.ascontiguousarray(np.moveaxis(x1, 1, -1)), np.ascontiguousarray(np.moveaxis(x3, 1, -1))
    return {
        "MaxPool1d": (cppconv.MaxPool1d(3, 2, 1, dilation=2, ceil_mode=True, return_indices=True, layout="NWC"),
                      x1_nwc),
        "MaxPool3d": (cppconv.MaxPool3d((1, 3, 2), (1, 2, 1), (0, 1, 1), (2, 1, 2), ceil_mode=True,
                                        return_indices=True),
                      x3),
        "AvgPool1d": (cppconv.AvgPool1d(3, 2, 1, ceil_mode=True, count_include_pad=False, divisor_override=4), x1),
        "AvgPool3d": (cppconv.AvgPool3d(2, 1, 1, count_include_pad=False, layout="NDHWC"), x3_ndhwc),
        "AdaptiveAvgPool1d": (cppconv.AdaptiveAvgPool1d(4, layout="NWC"), x1_nwc),
        "AdaptiveMaxPool1d": (cppconv.AdaptiveMaxPool1d(5, return_indices=True), x1),
        "AdaptiveAvgPool3d": (cppconv.AdaptiveAvgPool3d((2, None, 4)), x3),
        "AdaptiveMaxPool3d": (cppconv.AdaptiveMaxPool3d(2, return_indices=True, layout="NDHWC"), x3_ndhwc),
    }


LAYER_NAMES = list(_layers())


def test_every_layer_class_is_covered():
    public = {name for name in cppconv.__all__ if inspect.isclass(getattr(cppconv, name))} - {"Network"}
    assert public == {type(layer).__name__ for layer, _ in _layers().values()}


def _clones(layer):
    clones = {f"pickle protocol {p}": pickle.loads(pickle.dumps(layer, p)) for p in range(pickle.HIGHEST_PROTOCOL + 1)}
    clones["deepcopy"] = copy.deepcopy(layer)
    clones["copy"] = copy.copy(layer)
    return clones


@pytest.mark.parametrize("called", [False, True], ids=["fresh", "after a call"])
@pytest.mark.parametrize("name", LAYER_NAMES)
def test_pickle_and_copy(name, called):
    layer, x = _layers()[name]
    if called:
        layer(x)
    for how, clone in _clones(layer).items():
        assert type(clone) is type(layer) and repr(clone) == repr(layer), how
        assert _same(clone(x), layer(x)), how  # bit for bit
        if hasattr(layer, "weight"):
            assert not clone.weight.flags.writeable, how
            np.testing.assert_array_equal(clone.weight, layer.weight)
            assert (clone.bias is None) == (layer.bias is None), how
            if how != "copy":
                assert not np.shares_memory(clone.weight, layer.weight), how
        if isinstance(layer, cppconv.Conv2d):  # the layer's precision mode travels with it
            assert clone.explain(x.shape)["precision"] == layer.explain(x.shape)["precision"], how


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_pickled_state_is_the_constructor_arguments(name):
    """No native plan (packed weights depend on the CPU) is in the state: only the constructor's
    arguments, in plain Python values and arrays."""
    layer, x = _layers()[name]
    layer(x)
    state = layer.__getstate__()
    params = inspect.signature(type(layer)).parameters
    assert set(state) == set(params)

    def plain(v):
        if isinstance(v, tuple):
            return all(plain(e) for e in v)
        return v is None or isinstance(v, (bool, int, float, str, np.ndarray))

    assert all(plain(v) for v in state.values()), state
    assert _same(type(layer)(**state)(x), layer(x))


def _call(layer, x):
    return layer(x)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_layers_ship_to_worker_processes(method):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    items = list(_layers().values())
    want = [layer(x) for layer, x in items]  # after a first call: plans built
    with multiprocessing.get_context(method).Pool(1) as pool:
        got = pool.starmap(_call, items)
    for name, a, b in zip(LAYER_NAMES, got, want):
        assert _same(a, b), name


def test_layers_ship_through_joblib():
    joblib = pytest.importorskip("joblib")
    items = list(_layers().values())
    want = [layer(x) for layer, x in items]
    got = joblib.Parallel(n_jobs=2)(joblib.delayed(_call)(layer, x) for layer, x in items)
    for name, a, b in zip(LAYER_NAMES, got, want):
        assert _same(a, b), name


# ------------------------------------------------------------------------------------------
# weight and bias assignment


def _conv_data(dtype=np.float32):
    rng = make_rng("assign", np.dtype(dtype).name)
    x = rng.standard_normal((2, 4, 8, 8)).astype(dtype)
    w1, w2 = (rng.standard_normal((6, 2, 3, 3)).astype(dtype) for _ in range(2))
    b1, b2 = (rng.standard_normal(6).astype(dtype) for _ in range(2))
    return x, w1, w2, b1, b2


@pytest.mark.parametrize("padding", [1, "same", ((1, 0), (0, 1))], ids=["one-step path", "same", "asymmetric"])
def test_conv2d_assignment_is_honoured(padding):
    x, w1, w2, b1, b2 = _conv_data()
    kw = dict(padding=padding, groups=2)
    layer = cppconv.Conv2d(w1, b1, **kw)
    strided = np.repeat(x, 2, axis=-1)[..., ::2]  # not C-contiguous: the general path
    np.testing.assert_array_equal(layer(x), cppconv.Conv2d(w1, b1, **kw)(x))
    layer(strided)
    layer(x.astype(np.float64))  # a float64 plan too
    for w, b in [(w2, b1), (w2, b2), (w2, None), (w1, b2)]:
        if w is not layer.weight:
            layer.weight = w
        layer.bias = b
        fresh = cppconv.Conv2d(w, b, **kw)
        for xin in (x, strided, x.astype(np.float64)):
            assert _same(layer(xin), fresh(xin))
        assert _same(layer._call_with_algorithm("", x), fresh(x))
    # A float64 weight on a layer whose float32 plans exist: float64 results, no KeyError.
    layer.weight = w2.astype(np.float64)
    fresh = cppconv.Conv2d(w2.astype(np.float64), b2, **kw)
    for xin in (x, x.astype(np.float64)):
        y = layer(xin)
        assert y.dtype == np.float64
        assert _same(y, fresh(xin))
    assert layer.explain(x.shape)["output_shape"] == fresh(x).shape
    # And back to float32.
    layer.weight = w1
    assert _same(layer(x), cppconv.Conv2d(w1, b2, **kw)(x))


def test_conv_transpose2d_assignment_is_honoured():
    x, w1, w2, b1, b2 = _conv_data()
    w1, w2 = w1[:4], w2[:4]  # (C = 4, K / groups = 2, 3, 3): K = 4 with groups 2
    b1, b2 = b1[:4], b2[:4]
    layer = cppconv.ConvTranspose2d(w1, b1, stride=2, groups=2)
    layer(x)
    layer(x.astype(np.float64))
    for w, b in [(w2, b1), (w2, b2), (w2.astype(np.float64), None)]:
        layer.weight = w
        layer.bias = b
        fresh = cppconv.ConvTranspose2d(w, b, stride=2, groups=2)
        for xin in (x, x.astype(np.float64)):
            assert _same(layer(xin), fresh(xin))


@pytest.mark.parametrize("cls", ["Conv2d", "ConvTranspose2d"])
def test_bad_assignment_is_refused_and_changes_nothing(cls):
    x, w1, w2, b1, b2 = _conv_data()
    if cls == "Conv2d":
        layer = cppconv.Conv2d(w1, b1, padding=1, groups=2)
        odd_groups = np.ones((5, 2, 3, 3), np.float32)  # 5 output channels, groups 2
        more_channels = np.ones((8, 2, 3, 3), np.float32)  # 8 output channels, bias has 6
    else:
        w1, b1 = w1[:4], b1[:4]
        layer = cppconv.ConvTranspose2d(w1, b1, groups=2)
        odd_groups = np.ones((5, 2, 3, 3), np.float32)  # 5 input channels, groups 2
        more_channels = np.ones((4, 3, 3, 3), np.float32)  # 6 output channels, bias has 4
    want = layer(x)
    bad = [
        ("weight", np.ones((6, 2, 3), np.float32), ValueError, "weight must be 4-D"),
        ("weight", odd_groups, ValueError, "groups=2 does not divide"),
        ("weight", more_channels, ValueError, "bias must have shape"),
        ("weight", w1.astype(np.complex64), TypeError, "weight has unsupported dtype complex64"),
        ("weight", w1.astype(object), TypeError, "weight"),
        ("weight", None, TypeError, "weight"),
        ("bias", np.ones(5, np.float32), ValueError, "bias must have shape"),
        ("bias", np.ones((1, b1.size), np.float32), ValueError, "bias must have shape"),
        ("bias", b1.astype(np.complex128), TypeError, "bias has unsupported dtype"),
    ]
    for attr, value, exc, match in bad:
        with pytest.raises(exc, match=match):
            setattr(layer, attr, value)
        assert _same(layer(x), want), (attr, match)
    np.testing.assert_array_equal(layer.weight, w1)
    np.testing.assert_array_equal(layer.bias, b1)


def test_weights_read_back_are_read_only_copies():
    x, w1, w2, b1, b2 = _conv_data()
    for layer in (cppconv.Conv2d(w1, b1, groups=2), cppconv.ConvTranspose2d(w1, b2, groups=3)):
        for attr in ("weight", "bias"):
            with pytest.raises(ValueError, match="read-only"):
                getattr(layer, attr)[0] = 0
        source = w2.copy()
        layer.weight = source
        assert not np.shares_memory(layer.weight, source) and not layer.weight.flags.writeable
        source[:] = 0  # later changes to the caller's array do not reach the layer
        np.testing.assert_array_equal(layer.weight, w2)
        # The layer's native plans borrow these arrays: no one may make them writable again.
        for attr in ("weight", "bias"):
            with pytest.raises(ValueError, match="WRITEABLE"):
                getattr(layer, attr).setflags(write=True)
            with pytest.raises(ValueError, match="WRITEABLE"):
                getattr(layer, attr).base.setflags(write=True)


def test_changing_the_output_channels():
    x, w1, w2, b1, b2 = _conv_data()
    layer = cppconv.Conv2d(w1, b1, padding=1, groups=2)
    wide = np.concatenate([w1, w2[:2]])  # 8 output channels
    layer.bias = None
    layer.weight = wide
    layer.bias = np.arange(8, dtype=np.float32)
    assert _same(layer(x), cppconv.Conv2d(wide, np.arange(8, dtype=np.float32), padding=1, groups=2)(x))


def test_torch_weight_assignment():
    torch = pytest.importorskip("torch")
    x, w1, w2, b1, b2 = _conv_data()
    layer = cppconv.Conv2d(w1, b1, padding=1, groups=2)
    layer(x)
    with pytest.raises(TypeError, match=r"weight\.detach\(\)"):
        layer.weight = torch.from_numpy(w2).requires_grad_()
    layer.weight = torch.from_numpy(w2)
    assert _same(layer(x), cppconv.Conv2d(w2, b1, padding=1, groups=2)(x))


@pytest.mark.parametrize("padding", [1, "same"], ids=["one-step path", "general path"])
def test_assignment_while_threads_call(padding):
    """A layer shared by threads, its weight swapped back and forth meanwhile: every result is
    the old weights' or the new ones', bit for bit, never a mix."""
    x, w1, w2, b1, b2 = _conv_data()
    x64 = x.astype(np.float64)
    layers = [cppconv.Conv2d(w, b1, padding=padding, groups=2) for w in (w1, w2)]
    allowed = [(lay(x), lay(x64)) for lay in layers]
    shared = cppconv.Conv2d(w1, b1, padding=padding, groups=2)
    stop = threading.Event()
    bad = []
    counts = [0, 0]

    def caller():
        while not stop.is_set():
            for i, xin in enumerate((x, x64)):
                y = shared(xin)
                if _same(y, allowed[0][i]):
                    counts[0] += 1
                elif _same(y, allowed[1][i]):
                    counts[1] += 1
                else:
                    bad.append(y)

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        deadline, k = time.monotonic() + 20, 0
        while min(counts) < 50 and time.monotonic() < deadline:
            shared.weight = (w2, w1)[k % 2]
            k += 1
            time.sleep(0.001)  # let the callers run between swaps
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not bad, f"{len(bad)} results matched neither the old nor the new weights"
    assert counts[0] and counts[1]


# --------------------------------------------------------------------------------------------
# Settings as read-only attributes and a repr in PyTorch's style (issue 17)
# --------------------------------------------------------------------------------------------

SETTINGS = {
    "Conv2d": dict(in_channels=4, out_channels=6, kernel_size=(3, 3), stride=(1, 2), padding=(1, 1),
                   dilation=(1, 1), groups=2, padding_mode="zeros", layout="NCHW", activation="relu", precision=None),
    "Conv2d same reflect": dict(in_channels=4, out_channels=6, padding="same", dilation=(2, 2), padding_mode="reflect",
                                layout="NHWC", activation=None, precision="high"),
    "Conv2d float64 asymmetric": dict(padding=((1, 0), (0, 2))),
    "Conv2d 2-D kernel": dict(in_channels=1, out_channels=1, kernel_size=(3, 3), groups=1, activation="leaky_relu"),
    "Conv1d": dict(in_channels=4, out_channels=6, kernel_size=(3,), stride=(2,), padding=((1, 0),), dilation=(1,),
                   groups=2, layout="NWC", activation=None, padding_mode="zeros"),
    "Conv3d": dict(in_channels=4, out_channels=6, kernel_size=(1, 3, 3), stride=(1, 1, 1), padding=(0, 1, 1),
                   dilation=(1, 2, 1), groups=2, layout="NCDHW", activation="silu"),
    "ConvTranspose2d": dict(in_channels=4, out_channels=6, kernel_size=(3, 3), stride=(2, 2), padding=((1, 0), (0, 1)),
                            output_padding=(1, 1), groups=2, dilation=(1, 1), layout="NHWC", activation="tanh"),
    "ConvTranspose1d": dict(in_channels=4, out_channels=6, kernel_size=(3,), stride=(3,), padding=((2, 1),),
                            output_padding=(0,), groups=2, dilation=(2,), layout="NCW", activation="relu"),
    "ConvTranspose3d": dict(in_channels=4, out_channels=3, kernel_size=(2, 3, 3), stride=(1, 2, 1), padding=(0, 1, 1),
                            output_padding=(0, 1, 0), groups=1, dilation=(1, 1, 1), layout="NDHWC", activation=None),
    "MaxPool2d": dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1), dilation=(1, 2), ceil_mode=True,
                      return_indices=True, layout="NHWC"),
    "AvgPool2d": dict(kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), ceil_mode=True, count_include_pad=False,
                      divisor_override=4, layout="NCHW"),
    "MaxPool1d": dict(kernel_size=(3,), stride=(2,), padding=(1,), dilation=(2,), ceil_mode=True, return_indices=True,
                      layout="NWC"),
    "MaxPool3d": dict(kernel_size=(1, 3, 2), stride=(1, 2, 1), padding=(0, 1, 1), dilation=(2, 1, 2), ceil_mode=True,
                      return_indices=True, layout="NCDHW"),
    "AvgPool1d": dict(kernel_size=(3,), stride=(2,), padding=(1,), ceil_mode=True, count_include_pad=False,
                      divisor_override=4, layout="NCW"),
    "AvgPool3d": dict(kernel_size=(2, 2, 2), stride=(1, 1, 1), padding=(1, 1, 1), ceil_mode=False,
                      count_include_pad=False, divisor_override=None, layout="NDHWC"),
    "QConv2d": dict(in_channels=4, out_channels=6, kernel_size=(3, 3), stride=(1, 2), padding=(1, 1), groups=2,
                    layout="NCHW", activation="relu", out_dtype=None),
    "QConv1d": dict(in_channels=4, out_channels=6, kernel_size=(3,), padding=((1, 0),), groups=2, layout="NWC"),
    "QConv3d": dict(in_channels=4, out_channels=6, kernel_size=(1, 3, 3), padding=(0, 1, 1), out_dtype="float32"),
    "AdaptiveAvgPool1d": dict(output_size=(4,), layout="NWC"),
    "AdaptiveMaxPool1d": dict(output_size=(5,), return_indices=True, layout="NCW"),
    "AdaptiveAvgPool3d": dict(output_size=(2, None, 4), layout="NCDHW"),
    "AdaptiveMaxPool3d": dict(output_size=(2, 2, 2), return_indices=True, layout="NDHWC"),
}


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_settings_are_read_only_attributes_shown_by_repr(name):
    layer, x = _layers()[name]
    cls = type(layer).__name__
    text = repr(layer)
    assert text.startswith(f"{cls}(")
    for setting, value in SETTINGS[name].items():
        assert getattr(layer, setting) == value, setting
    for setting in layer._repr_settings + layer._repr_positional:
        value = getattr(layer, setting)
        shown = value is not None if setting == "bias" else value
        assert (f"{setting}={shown!r}" in text) if setting in layer._repr_settings else (repr(shown) in text), setting
        if setting == "bias":
            continue  # assignable: it replaces the weights (see above)
        with pytest.raises(AttributeError, match=rf"{cls}\.{setting} is read-only.*new {cls}"):
            setattr(layer, setting, value)
        assert getattr(layer, setting) == value
    layer(x)  # still works


def test_repr_in_pytorchs_style():
    layer = cppconv.Conv2d(np.zeros((64, 64, 3, 3), np.float32), np.zeros(64, np.float32), padding=1)
    assert repr(layer) == (
        "Conv2d(64, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, bias=True, "
        "padding_mode='zeros', padding_value=0.0, layout='NCHW', activation=None, precision=None, compute_dtype=None)"
    )
    assert repr(cppconv.MaxPool2d(3, 2, 1)) == (
        "MaxPool2d(kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(1, 1), ceil_mode=False, "
        "return_indices=False, layout='NCHW')"
    )
    # Words given in any case read back in their canonical one.
    layer = cppconv.Conv2d(np.zeros((8, 3, 3, 3)), padding="SAME", padding_mode="Reflect", layout="nhwc",
                           activation="ReLU", precision="HIGH")
    assert (layer.padding, layer.padding_mode, layer.layout, layer.activation, layer.precision) == (
        "same", "reflect", "NHWC", "relu", "high")


def _packed_weights_case(dtype=np.float32):
    """A layer whose dispatcher packs its weights (ChannelVec: output channels in blocks, input
    channels in slices), with NaN, infinities and -0.0 among them."""
    rng = make_rng("packed weights", np.dtype(dtype).name)
    w = rng.standard_normal((40, 24, 3, 3)).astype(dtype)
    w.flat[[5, 77, 300, 1000]] = [np.nan, np.inf, -np.inf, -0.0]
    b = rng.standard_normal(40).astype(dtype)
    x = rng.standard_normal((1, 24, 12, 12)).astype(dtype)
    return x, w, b


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_keeps_one_copy_of_its_weights(dtype):
    # The plan's copy of the weights is the layer's only one, freed once a pack that gives them
    # back exists: the layer then holds the pack alone, and reads its weights back from it.
    x, w, b = _packed_weights_case(dtype)
    # A one-shot call leaves its larger packed weights as the thread's spare buffer, which the
    # layer's pack, kept for the layer's lifetime, must not take.
    big = np.ones((128, 128, 3, 3), dtype)
    cppconv.conv2d(np.ones((2, 128, 16, 16), dtype), big, padding=1)
    layer = cppconv.Conv2d(w, b, padding=1)
    plan = layer._weights.held
    before = plan.held_bytes()
    assert before >= w.nbytes + b.nbytes
    info = layer.explain(x.shape, dtype)
    assert info["packed_weight_bytes"] > 0, info["algorithm"]
    y = layer(x)
    assert plan.held_bytes() == before - w.nbytes + info["packed_weight_bytes"]
    bits = np.uint32 if dtype == np.float32 else np.uint64
    np.testing.assert_array_equal(layer.weight.view(bits), w.view(bits))  # NaN and -0.0 bit for bit
    assert not layer.weight.flags.writeable
    for clone in (pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer), copy.copy(layer)):
        np.testing.assert_array_equal(clone(x), y)
    # Another shape, algorithm or thread count reads the weights again: unpacked from the pack.
    fresh = cppconv.Conv2d(w, b, padding=1)
    for shape in [(3, 24, 30, 7), (1, 24, 1, 1)]:
        z = make_rng("packed weights", "other shape").standard_normal(shape).astype(dtype)
        for threads in (1, 2):
            np.testing.assert_array_equal(layer(z, num_threads=threads), fresh(z, num_threads=threads))


def test_layer_of_unpacked_weights_runs_bit_for_bit_under_every_algorithm():
    # Weights read back from a pack rebuild the layer exactly: every algorithm, forced in turn, on
    # the layer itself (its freed copy unpacked again), a layer of its read-back weights, and
    # one of the original array give the same bits.
    rng = make_rng("unpacked weights")
    w = rng.standard_normal((40, 24, 3, 3)).astype(np.float32)
    b = rng.standard_normal(40).astype(np.float32)
    x = rng.standard_normal((2, 24, 10, 10)).astype(np.float32)
    layer = cppconv.Conv2d(w, b, padding=1)
    layer(x)  # packs, and frees the plan's copy
    rebuilt, original = cppconv.Conv2d(layer.weight, b, padding=1), cppconv.Conv2d(w, b, padding=1)
    ran = 0
    for algorithm in cppconv._native.conv_algorithms():
        try:
            want = original._call_with_algorithm(algorithm, x)
        except ValueError as e:
            if "accept" in str(e) or "lacks" in str(e):
                continue
            raise
        ran += 1
        np.testing.assert_array_equal(rebuilt._call_with_algorithm(algorithm, x), want, err_msg=algorithm)
        np.testing.assert_array_equal(layer._call_with_algorithm(algorithm, x), want, err_msg=algorithm)
    assert ran >= 3
