"""conv_transpose1d and conv_transpose3d (and the layers) against a float64 NumPy scatter
reference of any rank, the adjoint identity with a NumPy N-d convolution, and the one engine
they share with conv_transpose2d.  Every kernel runs under every ISA; torch is not imported.
"""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import cppconv
from cppconv import _conv_transpose, _native

from conftest import make_rng
from reference import ACTIVATIONS, activate

FUNCTIONS = {1: cppconv.conv_transpose1d, 2: cppconv.conv_transpose2d, 3: cppconv.conv_transpose3d}
LAYERS = {1: cppconv.ConvTranspose1d, 2: cppconv.ConvTranspose2d, 3: cppconv.ConvTranspose3d}
LAYOUTS = {1: ("NCW", "NWC"), 3: ("NCDHW", "NDHWC")}


def tap_slice(start, count, step):
    return slice(start, start + (count - 1) * step + 1, step)


def ref_conv_transpose(x, w, bias=None, stride=None, pads=None, output_padding=None, groups=1, dilation=None,
                       activation=None):
    """Channels-first float64, any rank: scatter x[n, c, *i] * w[c, k, *t] to i * S + t * D, then
    crop pads[2a] before and pads[2a + 1] after along axis a (output_padding is added at the end)."""
    rank = x.ndim - 2
    stride = stride or (1,) * rank
    dilation = dilation or (1,) * rank
    pads = pads or (0,) * (2 * rank)
    output_padding = output_padding or (0,) * rank
    n, c, *sizes = x.shape
    kg, kernel = w.shape[1], w.shape[2:]
    full = [(i - 1) * s + d * (k - 1) + 1 + op
            for i, k, s, d, op in zip(sizes, kernel, stride, dilation, output_padding)]
    y = np.zeros((n, kg * groups, *full))
    cg = c // groups
    for g in range(groups):
        xs = x[:, g * cg:(g + 1) * cg]
        for tap in itertools.product(*(range(k) for k in kernel)):
            contrib = np.einsum("nc...,ck->nk...", xs, w[(slice(g * cg, (g + 1) * cg), slice(None), *tap)])
            where = tuple(tap_slice(t * d, i, s) for t, d, i, s in zip(tap, dilation, sizes, stride))
            y[(slice(None), slice(g * kg, (g + 1) * kg), *where)] += contrib
    y = y[(slice(None), slice(None), *(slice(pads[2 * a], full[a] - pads[2 * a + 1]) for a in range(rank)))]
    if bias is not None:
        y = y + bias.reshape((1, -1) + (1,) * rank)
    return activate(y, activation)


def ref_conv(x, w, stride, padding, dilation, groups):
    """Channels-first float64 convolution (cross-correlation) of any rank, symmetric zero padding:
    the forward operator whose adjoint conv_transpose is, with w (K, C / groups, *kernel)."""
    rank = x.ndim - 2
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding])
    k, cg, kernel = w.shape[0], w.shape[1], w.shape[2:]
    out = [(xp.shape[2 + a] - dilation[a] * (kernel[a] - 1) - 1) // stride[a] + 1 for a in range(rank)]
    y = np.zeros((x.shape[0], k, *out))
    kg = k // groups
    for g in range(groups):
        for tap in itertools.product(*(range(kk) for kk in kernel)):
            where = tuple(tap_slice(t * d, o, s) for t, d, o, s in zip(tap, dilation, out, stride))
            xs = xp[(slice(None), slice(g * cg, (g + 1) * cg), *where)]
            wg = w[(slice(g * kg, (g + 1) * kg), slice(None), *tap)]
            y[:, g * kg:(g + 1) * kg] += np.einsum("nc...,kc->nk...", xs, wg)
    return y


def to_layout(a, channels_last):
    return np.ascontiguousarray(np.moveaxis(a, 1, -1)) if channels_last else a


def from_layout(a, channels_last):
    return np.moveaxis(a, -1, 1) if channels_last else a


def padding_arg(pads):
    pairs = tuple(zip(pads[0::2], pads[1::2]))
    return tuple(b for b, _ in pairs) if all(b == a for b, a in pairs) else pairs


def random_case(rng, rank, max_size=6, max_kg=20):
    """Random settings whose cropped output is non-empty, with x, w and bias."""
    groups = int(rng.integers(1, 3))
    c, kg = groups * int(rng.integers(1, 4)), int(rng.integers(1, max_kg))
    kernel = tuple(int(v) for v in rng.integers(1, 4, rank))
    stride = tuple(int(v) for v in rng.integers(1, 4, rank))
    dilation = tuple(int(v) for v in rng.integers(1, 3, rank))
    op = tuple(int(rng.integers(0, max(s, d))) for s, d in zip(stride, dilation))
    sizes = tuple(int(v) for v in rng.integers(1, max_size + 1, rank))
    pads = tuple(int(v) for v in rng.integers(0, 3, 2 * rank))
    full = [(i - 1) * s + d * (k - 1) + 1 + o for i, k, s, d, o in zip(sizes, kernel, stride, dilation, op)]
    if any(pads[2 * a] + pads[2 * a + 1] >= full[a] for a in range(rank)):
        pads = (0,) * (2 * rank)
    kw = dict(stride=stride, padding=padding_arg(pads), output_padding=op, groups=groups, dilation=dilation)
    x = rng.standard_normal((2, c, *sizes))
    w = rng.standard_normal((c, kg, *kernel))
    b = rng.standard_normal(kg * groups)
    want = ref_conv_transpose(x, w, b, stride, pads, op, groups, dilation)
    return x, w, b, kw, want


@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("channels_last", [False, True], ids=["first", "last"])
@pytest.mark.parametrize("seed", range(6))
def test_random(isa, rank, channels_last, seed):
    x, w, b, kw, want = random_case(make_rng("nd random", rank, seed), rank)
    layout = LAYOUTS[rank][channels_last]
    f = FUNCTIONS[rank]
    y = f(to_layout(x, channels_last), w, b, layout=layout, **kw)
    assert y.dtype == np.float64
    np.testing.assert_allclose(from_layout(y, channels_last), want, rtol=1e-10, atol=1e-10)
    y32 = f(to_layout(x, channels_last).astype(np.float32), w.astype(np.float32), b.astype(np.float32), layout=layout,
            **kw)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(from_layout(y32, channels_last), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rank", [1, 3])
def test_every_small_combination(isa, rank):
    rng = make_rng("nd combos", rank)
    for s, p, d, groups in itertools.product((1, 2, 3), (0, 1), (1, 2), (1, 2)):
        for op in range(max(s, d)):
            k = 3 if (s + p + d) % 2 else 2
            kernel = (k,) if rank == 1 else (k, 2, k + 1)
            sizes = (4,) if rank == 1 else (3, 2, 3)
            x = rng.standard_normal((1, 2 * groups, *sizes))
            w = rng.standard_normal((2 * groups, 3, *kernel))
            b = rng.standard_normal(3 * groups) if op % 2 else None
            want = ref_conv_transpose(x, w, b, (s,) * rank, (p,) * (2 * rank), (op,) * rank, groups, (d,) * rank)
            for channels_last in (False, True):
                y = FUNCTIONS[rank](to_layout(x, channels_last), w, b, s, p, op, groups, d,
                                    layout=LAYOUTS[rank][channels_last])
                np.testing.assert_allclose(from_layout(y, channels_last), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rank", [1, 3])
def test_around_vector_widths(isa, rank, dtype):
    """Output channels across every tile of NR = 2 vectors (8 to 32 values) and a partial one;
    output rows of 1 to 17 pixels, across micro-tiles of 6 or 8 pixels and their remainders."""
    rng = make_rng("nd widths", rank, np.dtype(dtype).name)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for kg, width in ((7, 1), (8, 5), (9, 6), (15, 7), (16, 8), (17, 9), (31, 13), (32, 16), (33, 17)):
        sizes = (width,) if rank == 1 else (2, 2, width)
        kernel = (3,) if rank == 1 else (2, 1, 3)
        x = rng.standard_normal((1, 3, *sizes))
        w = rng.standard_normal((3, kg, *kernel))
        want = ref_conv_transpose(x, w, None, (2,) * rank, (1,) * (2 * rank), (1,) * rank)
        for channels_last in (False, True):
            y = FUNCTIONS[rank](to_layout(x, channels_last).astype(dtype), w.astype(dtype), stride=2, padding=1,
                                output_padding=1, layout=LAYOUTS[rank][channels_last])
            np.testing.assert_allclose(from_layout(y, channels_last), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("rank", [1, 3])
def test_every_algorithm(rank):
    x, w, b, kw, want = random_case(make_rng("nd algorithms", rank), rank, max_size=4)
    want = np.maximum(want, 0)
    ran = set()
    for channels_last in (False, True):
        for name in _native.conv_transpose_algorithms():
            dtype = np.float32 if "_f32" in name else np.float64
            tol = 1e-4 if dtype == np.float32 else 1e-10
            y = _conv_transpose._conv_transpose_with_algorithm(
                name, to_layout(x, channels_last).astype(dtype), w.astype(dtype), b.astype(dtype), rank,
                layout=LAYOUTS[rank][channels_last], activation="relu", **kw)
            np.testing.assert_allclose(from_layout(y, channels_last), want, rtol=tol, atol=tol)
            ran.add(name)
    assert ran == set(_native.conv_transpose_algorithms())


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation(isa, activation):
    rng = make_rng("nd act", activation)
    for rank in (1, 3):
        x = rng.standard_normal((2, 3) + (3,) * rank)
        w = rng.standard_normal((3, 5) + (2,) * rank)
        b = rng.standard_normal(5)
        want = ref_conv_transpose(x, w, b, (2,) * rank, activation=activation)
        for channels_last in (False, True):
            y = FUNCTIONS[rank](to_layout(x, channels_last), w, b, stride=2, layout=LAYOUTS[rank][channels_last],
                                activation=activation)
            np.testing.assert_allclose(from_layout(y, channels_last), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("seed", range(5))
def test_adjoint_of_convolution(isa, rank, seed):
    """<conv(x, w), r> == <x, conv_transpose(r, w)>, output_padding recovering x's size."""
    rng = make_rng("nd adjoint", rank, seed)
    groups = int(rng.integers(1, 3))
    c, k = groups * int(rng.integers(1, 4)), groups * int(rng.integers(1, 5))
    kernel = tuple(int(v) for v in rng.integers(1, 4, rank))
    s = tuple(int(v) for v in rng.integers(1, 4, rank))
    d = tuple(int(v) for v in rng.integers(1, 3, rank))
    p = tuple(int(v) for v in rng.integers(0, 3, rank))
    sizes = tuple(dd * (kk - 1) + 1 + int(rng.integers(0, 5)) for dd, kk in zip(d, kernel))
    x = rng.standard_normal((2, c, *sizes))
    w = rng.standard_normal((k, c // groups, *kernel))  # forward: C -> K; transposed: K -> C
    y = ref_conv(x, w, s, p, d, groups)
    op = tuple((i + 2 * pp - dd * (kk - 1) - 1) % ss for i, pp, dd, kk, ss in zip(sizes, p, d, kernel, s))
    r = rng.standard_normal(y.shape)
    for channels_last in (False, True):
        xt = FUNCTIONS[rank](to_layout(r, channels_last), w, stride=s, padding=p, output_padding=op, dilation=d,
                             groups=groups, layout=LAYOUTS[rank][channels_last])
        xt = from_layout(xt, channels_last)
        assert xt.shape == x.shape
        assert float(np.vdot(y, r)) == pytest.approx(float(np.vdot(x, xt)), rel=1e-10, abs=1e-10)


def test_one_engine_across_ranks():
    """1-D is 2-D with height 1 and 2-D is 3-D with depth 1, bit for bit (the same kernels)."""
    rng = make_rng("nd one engine")
    x = rng.standard_normal((2, 6, 11)).astype(np.float32)
    w = rng.standard_normal((6, 5, 3)).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    kw = dict(stride=2, padding=1, output_padding=1, groups=2, dilation=1, activation="relu")
    y1 = cppconv.conv_transpose1d(x, w, b, **kw)
    y2 = cppconv.conv_transpose2d(x[:, :, None], w[:, :, None], b, stride=(1, 2), padding=(0, 1),
                                  output_padding=(0, 1), groups=2, activation="relu")
    np.testing.assert_array_equal(y1, y2[:, :, 0])
    x2 = rng.standard_normal((2, 6, 5, 7)).astype(np.float32)
    w2 = rng.standard_normal((6, 5, 3, 2)).astype(np.float32)
    y2 = cppconv.conv_transpose2d(x2, w2, b, stride=(2, 3), padding=(1, 0), groups=2)
    y3 = cppconv.conv_transpose3d(x2[:, :, None], w2[:, :, None], b, stride=(1, 2, 3), padding=(0, 1, 0), groups=2)
    np.testing.assert_array_equal(y2, y3[:, :, 0])


@pytest.mark.parametrize("rank", [1, 3])
def test_unbatched_out_and_layer(isa, rank):
    rng = make_rng("nd layer", rank)
    x = rng.standard_normal((1, 4) + (3,) * rank)
    w = rng.standard_normal((4, 3) + (2,) * rank)
    b = rng.standard_normal(6)
    kw = dict(stride=2, padding=1, output_padding=1, groups=2)
    want = ref_conv_transpose(x, w, b, (2,) * rank, (1,) * (2 * rank), (1,) * rank, groups=2)
    for channels_last in (False, True):
        layout = LAYOUTS[rank][channels_last]
        xl, wantl = to_layout(x, channels_last), to_layout(want, channels_last)
        np.testing.assert_allclose(FUNCTIONS[rank](xl[0], w, b, layout=layout, **kw), wantl[0], rtol=1e-10)
        out = np.empty(wantl.shape)
        assert FUNCTIONS[rank](xl, w, b, layout=layout, out=out, num_threads=1, **kw) is out
        np.testing.assert_allclose(out, wantl, rtol=1e-10)
        layer = LAYERS[rank](w, b, layout=layout, **kw)
        np.testing.assert_allclose(layer(xl), wantl, rtol=1e-10)
        np.testing.assert_allclose(layer(xl[0], num_threads=2), wantl[0], rtol=1e-10)
        y32 = LAYERS[rank](w.astype(np.float32), b.astype(np.float32), layout=layout, **kw)(xl.astype(np.float32))
        assert y32.dtype == np.float32
        np.testing.assert_allclose(y32, wantl, rtol=1e-4, atol=1e-4)
        clone = pickle.loads(pickle.dumps(layer))
        assert repr(clone) == repr(layer)
        np.testing.assert_array_equal(clone(xl), layer(xl))
        assert layer.kernel_size == (2,) * rank and layer.stride == (2,) * rank and layer.layout == layout
        assert layer.in_channels == 4 and layer.out_channels == 6


def test_threads_agree():
    rng = make_rng("nd threads")
    x = rng.standard_normal((2, 16, 4, 6, 6)).astype(np.float32)
    w = rng.standard_normal((16, 12, 3, 3, 3)).astype(np.float32)
    one = cppconv.conv_transpose3d(x, w, stride=2, padding=1, num_threads=1)
    three = cppconv.conv_transpose3d(x, w, stride=2, padding=1, num_threads=3)
    np.testing.assert_array_equal(one, three)


def test_output_size_any_rank():
    assert cppconv.conv_transpose_output_size((8, 14, 14), 4, stride=(1, 2, 2), padding=(0, 1, 1)) == (11, 28, 28)
    assert cppconv.conv_transpose_output_size([100], 4, 2, 1) == (200,)
    assert cppconv.conv_transpose_output_size((5, 5), (3, 1), 2, ((1, 0), (0, 0)), (1, 0)) == (11, 9)
    with pytest.raises(ValueError, match="output_padding"):
        cppconv.conv_transpose_output_size((5, 5), 3, (2, 1), 0, 1)
    with pytest.raises(ValueError, match="output size"):
        cppconv.conv_transpose_output_size((1, 1, 1), 1, padding=(0, 1, 0))
    with pytest.raises(ValueError, match="1 to 3"):
        cppconv.conv_transpose_output_size((1, 1, 1, 1), 1)
    x = np.zeros((1, 1, 5, 5, 5))
    y = cppconv.conv_transpose3d(x, np.zeros((1, 2, 3, 3, 1)), stride=(2, 1, 3), padding=(1, 0, 0),
                                 output_padding=(1, 0, 2))
    assert y.shape[2:] == cppconv.conv_transpose_output_size((5, 5, 5), (3, 3, 1), (2, 1, 3), (1, 0, 0), (1, 0, 2))


@pytest.mark.parametrize(
    "rank, x_shape, kwargs, w_shape, match",
    [
        (1, (1, 3, 4, 4), dict(), (3, 2, 3), r"x is 4-D .*: use conv_transpose2d \(batched\)"),
        (1, (3, 4, 4, 4), dict(), (3, 2, 3), r"use conv_transpose2d \(batched\) or conv_transpose3d \(unbatched\)"),
        (3, (1, 3, 4), dict(), (3, 2, 3, 3, 3), r"x is 3-D .*: use conv_transpose1d \(batched\)"),
        (1, (1, 3, 4), dict(), (3, 2, 3, 3), r"weight must be 3-D \(C, K/groups, kl\)"),
        (3, (1, 3, 4, 4, 4), dict(), (3, 2, 3, 3), r"weight must be 5-D"),
        (1, (1, 3, 4), dict(padding="same"), (3, 2, 3), "padding"),
        (1, (1, 3, 4), dict(padding=(1, 1)), (3, 2, 3), "padding"),
        (3, (1, 3, 4, 4, 4), dict(stride=(1, 2)), (3, 2, 3, 3, 3), "stride"),
        (3, (1, 3, 4, 4, 4), dict(stride=(1, 2, 1), output_padding=(0, 0, 1)), (3, 2, 3, 3, 3), "output_padding"),
        (1, (1, 3, 4), dict(stride=0), (3, 2, 3), "stride"),
        (1, (1, 3, 4), dict(dilation=0), (3, 2, 3), "dilation"),
        (1, (1, 3, 4), dict(padding=5), (3, 2, 3), "output size"),
        (3, (1, 3, 4, 4, 4), dict(groups=2), (3, 2, 3, 3, 3), "groups"),
        (1, (1, 3, 4), dict(), (4, 2, 3), "input channels"),
        (1, (1, 3, 4), dict(), (3, 2, 0), "kernel"),
        (1, (1, 3, 0), dict(), (3, 2, 2), "empty"),
        (1, (1, 3, 4), dict(layout="NCHW"), (3, 2, 3), "layout must be 'NCW' or 'NWC'"),
        (3, (1, 3, 4, 4, 4), dict(layout="NHWC"), (3, 2, 3, 3, 3), "layout must be 'NCDHW' or 'NDHWC'"),
        (3, (1, 3, 4, 4, 4), dict(activation="gelu"), (3, 2, 3, 3, 3), "activation"),
    ],
)
def test_bad_input(rank, x_shape, kwargs, w_shape, match):
    with pytest.raises(ValueError, match=match):
        FUNCTIONS[rank](np.zeros(x_shape), np.zeros(w_shape), **kwargs)


def test_bad_input_more():
    x, w = np.zeros((1, 3, 4, 4, 4)), np.zeros((3, 2, 3, 3, 3))
    with pytest.raises(ValueError, match="bias"):
        cppconv.conv_transpose3d(x, w, np.zeros(3))
    with pytest.raises(ValueError, match="out has shape"):
        cppconv.conv_transpose3d(x, w, out=np.zeros((1, 2, 6, 6, 5)))
    with pytest.raises(TypeError, match="out"):
        cppconv.conv_transpose3d(x, w, out=np.zeros((1, 2, 6, 6, 6), np.float32))
    with pytest.raises(ValueError, match="num_threads"):
        cppconv.conv_transpose1d(x[:, :, 0, 0], w[:, :, 0, 0], num_threads=0)
    with pytest.raises(ValueError, match="weight must be 3-D"):
        cppconv.ConvTranspose1d(w)
    with pytest.raises(ValueError, match="groups"):
        cppconv.ConvTranspose3d(w, groups=2)
    with pytest.raises(ValueError, match="bias"):
        cppconv.ConvTranspose3d(w, np.zeros(3))
    with pytest.raises(ValueError, match="output_padding"):
        cppconv.ConvTranspose1d(w[:, :, 0, 0], output_padding=1)
    with pytest.raises(TypeError):  # layout and the rest stay keyword-only
        cppconv.conv_transpose1d(x[:, :, 0, 0], w[:, :, 0, 0], None, 1, 0, 0, 1, 1, "NCW")


# ------------------------------------------------------------------------------------------
# Properties (hypothesis): every parameter a small integer, so failures shrink to a minimal problem.

PROPERTIES = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                      suppress_health_check=[HealthCheck.too_slow])


@st.composite
def transpose_problems(draw):
    """A valid problem of rank 1 or 3: x, w, bias (channels first) and the keyword arguments."""
    rank = draw(st.sampled_from([1, 3]))
    groups = draw(st.integers(1, 2))
    c, kg = groups * draw(st.integers(1, 3)), draw(st.integers(1, 18))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(rank))
    op = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    sizes = tuple(draw(st.integers(1, 9 if rank == 1 else 4)) for _ in range(rank))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(2 * rank))
    full = [(i - 1) * s + d * (k - 1) + 1 + o for i, k, s, d, o in zip(sizes, kernel, stride, dilation, op)]
    assume(all(pads[2 * a] + pads[2 * a + 1] < full[a] for a in range(rank)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.integers(-3, 4, (draw(st.integers(1, 2)), c, *sizes)).astype(np.float64)
    w = rng.integers(-3, 4, (c, kg, *kernel)).astype(np.float64)
    b = rng.integers(-3, 4, kg * groups).astype(np.float64) if draw(st.booleans()) else None
    kw = dict(stride=stride, padding=padding_arg(pads), output_padding=op, groups=groups, dilation=dilation)
    return rank, x, w, b, pads, kw


@PROPERTIES
@given(transpose_problems(), st.sampled_from([np.float32, np.float64]))
def test_property_matches_reference_in_both_layouts(problem, dtype):
    """Small-integer data: every sum is exact, so both layouts equal the reference exactly."""
    rank, x, w, b, pads, kw = problem
    want = ref_conv_transpose(x, w, b, kw["stride"], pads, kw["output_padding"], kw["groups"], kw["dilation"])
    bias = None if b is None else b.astype(dtype)
    for channels_last in (False, True):
        y = FUNCTIONS[rank](to_layout(x, channels_last).astype(dtype), w.astype(dtype), bias,
                            layout=LAYOUTS[rank][channels_last], **kw)
        np.testing.assert_array_equal(from_layout(y, channels_last), want.astype(dtype))


@PROPERTIES
@given(transpose_problems(), st.integers(-3, 3), st.integers(-3, 3))
def test_property_linear_in_x(problem, a, c):
    rank, x, w, _, _, kw = problem
    x2 = np.roll(x, 1) - 1
    f = FUNCTIONS[rank]
    np.testing.assert_array_equal(f(a * x + c * x2, w, **kw), a * f(x, w, **kw) + c * f(x2, w, **kw))


def test_sizes_past_the_index_range_are_refused():
    """The native size arithmetic saturates instead of wrapping; the Python layer refuses it."""
    assert _native.conv_transpose_output_size(3, 2, 2**62, 0, 0, 0, 1) == 2**61
    assert _native.conv_transpose_output_size(2**61, 1, 1, 0, 0, 0, 1) == 2**61
    with pytest.raises(ValueError, match="64-bit"):
        cppconv.conv_transpose_output_size(3, 2, stride=2**62)
    with pytest.raises(ValueError, match="64-bit"):
        cppconv.conv_transpose1d(np.zeros((1, 1, 3)), np.zeros((1, 1, 2)), stride=2**62)
    with pytest.raises(ValueError, match="64-bit"):
        cppconv.conv_transpose3d(np.zeros((1, 1, 1, 1, 3)), np.zeros((1, 1, 1, 1, 2)), dilation=(1, 1, 2**62))
