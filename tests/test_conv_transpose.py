"""conv_transpose2d against a float64 NumPy scatter reference, and the adjoint identity with conv2d.

The reference scatters every input pixel through every tap (the textbook definition), while
the kernels gather; torch is not imported.  Every kernel runs under every ISA.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import cppconv
from cppconv import _conv_transpose, _native

from conftest import make_rng
from reference import ACTIVATIONS, activate

LAYOUTS = ["NCHW", "NHWC"]


def ref_conv_transpose(x, w, bias=None, stride=(1, 1), pads=(0, 0, 0, 0), output_padding=(0, 0), groups=1,
                       dilation=(1, 1), activation=None):
    """NCHW float64: scatter x[n, c, ih, iw] * w[c, k, i, j] to (ih S + i D, iw S + j D), then crop."""
    n, c, h, wd = x.shape
    _, kg, kh, kw = w.shape
    (sh, sw), (dh, dw), (oph, opw) = stride, dilation, output_padding
    top, bottom, left, right = pads
    full_h = (h - 1) * sh + dh * (kh - 1) + 1 + oph
    full_w = (wd - 1) * sw + dw * (kw - 1) + 1 + opw
    full = np.zeros((n, kg * groups, full_h, full_w))
    cg = c // groups
    for g in range(groups):
        xs = x[:, g * cg:(g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                contrib = np.einsum("nchw,ck->nkhw", xs, w[g * cg:(g + 1) * cg, :, i, j])
                rows = slice(i * dh, i * dh + (h - 1) * sh + 1, sh)
                cols = slice(j * dw, j * dw + (wd - 1) * sw + 1, sw)
                full[:, g * kg:(g + 1) * kg, rows, cols] += contrib
    y = full[:, :, top:full_h - oph - bottom + oph, left:full_w - opw - right + opw]
    if bias is not None:
        y = y + bias[None, :, None, None]
    return activate(y, activation)


def to_layout(a, layout):
    return a if layout == "NCHW" else np.ascontiguousarray(np.moveaxis(a, 1, -1))


def from_layout(a, layout):
    return a if layout == "NCHW" else np.moveaxis(a, -1, 1)


def padding_arg(pads):
    top, bottom, left, right = pads
    if top == bottom and left == right:
        return (top, left)
    return ((top, bottom), (left, right))


def run_case(rng, layout, h, w, c, kg, groups, kernel, stride, pads, op, dilation, bias=True, activation=None,
             dtype=np.float64):
    x = rng.standard_normal((2, c, h, w))
    wt = rng.standard_normal((c, kg, *kernel))
    b = rng.standard_normal(kg * groups) if bias else None
    want = ref_conv_transpose(x, wt, b, stride, pads, op, groups, dilation, activation)
    y = cppconv.conv_transpose2d(to_layout(x, layout).astype(dtype), wt.astype(dtype),
                                 None if b is None else b.astype(dtype), stride=stride, padding=padding_arg(pads),
                                 output_padding=op, groups=groups, dilation=dilation, layout=layout,
                                 activation=activation)
    assert y.dtype == dtype
    return from_layout(y, layout), want


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_small_combination(isa, layout):
    rng = make_rng("combos", layout)
    for s, p, d, groups in itertools.product((1, 2, 3), (0, 1, 2), (1, 2), (1, 2)):
        for op in range(max(s, d)):
            k = 3 if (s + p + d) % 2 else 2
            y, want = run_case(rng, layout, 4, 3, 2 * groups, 2, groups, (k, k + 1), (s, s), (p, p, p, p), (op, op),
                               (d, d), bias=bool(op % 2))
            np.testing.assert_allclose(y, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", range(10))
def test_random(isa, layout, seed):
    rng = make_rng("random", seed)
    groups = int(rng.integers(1, 4))
    c, kg = groups * int(rng.integers(1, 4)), int(rng.integers(1, 40))  # kg crosses vector widths
    kernel = tuple(int(v) for v in rng.integers(1, 5, 2))
    stride = tuple(int(v) for v in rng.integers(1, 4, 2))
    dilation = tuple(int(v) for v in rng.integers(1, 3, 2))
    op = tuple(int(rng.integers(0, max(stride[a], dilation[a]))) for a in (0, 1))
    h, w = (int(v) for v in rng.integers(1, 9, 2))
    full = [(h - 1) * stride[0] + dilation[0] * (kernel[0] - 1) + 1,
            (w - 1) * stride[1] + dilation[1] * (kernel[1] - 1) + 1]
    pads = (int(rng.integers(0, 3)), int(rng.integers(0, 3)), int(rng.integers(0, 3)), int(rng.integers(0, 3)))
    if pads[0] + pads[1] >= full[0] + op[0] or pads[2] + pads[3] >= full[1] + op[1]:
        pads = (0, 0, 0, 0)
    y, want = run_case(make_rng("data", seed), layout, h, w, c, kg, groups, kernel, stride, pads, op, dilation)
    np.testing.assert_allclose(y, want, rtol=1e-10, atol=1e-10)
    y32, _ = run_case(make_rng("data", seed), layout, h, w, c, kg, groups, kernel, stride, pads, op, dilation,
                      dtype=np.float32)
    np.testing.assert_allclose(y32, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation(isa, activation):
    rng = make_rng("act", activation)
    for layout in LAYOUTS:
        y, want = run_case(rng, layout, 5, 4, 3, 5, 1, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), (1, 1),
                           activation=activation)
        np.testing.assert_allclose(y, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", range(8))
def test_adjoint_of_conv2d(isa, layout, seed):
    rng = make_rng("adjoint", seed)
    groups = int(rng.integers(1, 3))
    c, k = groups * int(rng.integers(1, 4)), groups * int(rng.integers(1, 5))
    kh, kw = (int(v) for v in rng.integers(1, 5, 2))
    s = tuple(int(v) for v in rng.integers(1, 4, 2))
    d = tuple(int(v) for v in rng.integers(1, 3, 2))
    p = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
    h = d[0] * (kh - 1) + 1 + int(rng.integers(0, 7))
    w_ = d[1] * (kw - 1) + 1 + int(rng.integers(0, 7))
    x = rng.standard_normal((2, c, h, w_))
    weight = rng.standard_normal((k, c // groups, kh, kw))  # conv2d: C -> K; conv_transpose2d: K -> C
    y = cppconv.conv2d(to_layout(x, layout), weight, stride=s, padding=p, dilation=d, groups=groups, layout=layout)
    oh, ow = (y.shape[2], y.shape[3]) if layout == "NCHW" else (y.shape[1], y.shape[2])
    op = tuple((size + 2 * p[a] - d[a] * (kk - 1) - 1) % s[a] for a, size, kk in ((0, h, kh), (1, w_, kw)))
    assert oh == (h + 2 * p[0] - d[0] * (kh - 1) - 1) // s[0] + 1
    assert ow == (w_ + 2 * p[1] - d[1] * (kw - 1) - 1) // s[1] + 1
    r = rng.standard_normal(y.shape)
    xt = cppconv.conv_transpose2d(r, weight, stride=s, padding=p, output_padding=op, dilation=d, groups=groups,
                                  layout=layout)
    assert xt.shape == to_layout(x, layout).shape
    lhs = float(np.vdot(y, r))
    rhs = float(np.vdot(to_layout(x, layout), xt))
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-10)


def test_every_algorithm():
    rng = make_rng("algorithms")
    x = rng.standard_normal((2, 4, 5, 4))
    w = rng.standard_normal((4, 3, 3, 2))
    b = rng.standard_normal(6)
    want = ref_conv_transpose(x, w, b, (2, 3), (1, 0, 0, 1), (1, 0), 2, (1, 2), "relu")
    ran = set()
    for layout in LAYOUTS:
        for name in _native.conv_transpose_algorithms():
            dtype = np.float32 if "_f32" in name else np.float64
            y = _conv_transpose._conv_transpose_with_algorithm(
                name, to_layout(x, layout).astype(dtype), w.astype(dtype), b.astype(dtype), stride=(2, 3),
                padding=((1, 0), (0, 1)), output_padding=(1, 0), groups=2, dilation=(1, 2), layout=layout,
                activation="relu")
            np.testing.assert_allclose(from_layout(y, layout), want, rtol=1e-4 if dtype == np.float32 else 1e-10,
                                       atol=1e-4 if dtype == np.float32 else 1e-10)
            ran.add(name)
    assert ran == set(_native.conv_transpose_algorithms())
    with pytest.raises(ValueError, match="algorithm"):
        _conv_transpose._conv_transpose_with_algorithm("nope", x, w)


def test_benchmark_shape_float32(isa):
    # The benchmark's shape (256@14 -> 128@28, 4x4 s2 p1) with fewer channels: several
    # output-channel blocks and a partial one, pixel blocks with a remainder.
    rng = make_rng("bench")
    x = rng.standard_normal((1, 24, 14, 14))
    w = rng.standard_normal((24, 40, 4, 4)) * 0.1
    want = ref_conv_transpose(x, w, None, (2, 2), (1, 1, 1, 1))
    for layout in LAYOUTS:
        y = cppconv.conv_transpose2d(to_layout(x, layout).astype(np.float32), w.astype(np.float32), stride=2,
                                     padding=1, layout=layout)
        assert y.shape == to_layout(np.empty((1, 40, 28, 28)), layout).shape
        np.testing.assert_allclose(from_layout(y, layout), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_unbatched_2d_and_layer(isa, layout):
    rng = make_rng("layer", layout)
    x = rng.standard_normal((1, 3, 5, 6))
    w = rng.standard_normal((3, 4, 3, 3))
    b = rng.standard_normal(4)
    want = ref_conv_transpose(x, w, b, (2, 2), (1, 1, 1, 1), (1, 1))
    y = cppconv.conv_transpose2d(to_layout(x, layout)[0], w, b, stride=2, padding=1, output_padding=1, layout=layout)
    np.testing.assert_allclose(from_layout(y[None], layout), want, rtol=1e-10)
    layer = cppconv.ConvTranspose2d(w, b, stride=2, padding=1, output_padding=1, layout=layout)
    layer32 = cppconv.ConvTranspose2d(w.astype(np.float32), b.astype(np.float32), stride=2, padding=1,
                                      output_padding=1, layout=layout)
    w[...] = 0  # the layer keeps its own copy
    for lay, dtype, result, tol in ((layer, np.float64, np.float64, 1e-10), (layer, np.float32, np.float64, 1e-6),
                                    (layer32, np.float32, np.float32, 1e-4), (layer32, np.float16, np.float32, 1e-2),
                                    (layer, np.float64, np.float64, 1e-10), (layer32, np.float32, np.float32, 1e-4)):
        y = lay(to_layout(x, layout).astype(dtype))
        assert y.dtype == result
        np.testing.assert_allclose(from_layout(y, layout), want, rtol=tol, atol=tol * 10)
    out = np.empty(to_layout(want, layout).shape)
    assert layer(to_layout(x, layout), out=out) is out
    np.testing.assert_allclose(from_layout(out, layout), want, rtol=1e-10)
    assert "ConvTranspose2d" in repr(layer)
    img = rng.standard_normal((4, 5))
    k2 = rng.standard_normal((3, 2))
    y2 = cppconv.conv_transpose2d(img, k2, stride=2, layout=layout)
    np.testing.assert_allclose(y2, ref_conv_transpose(img[None, None], k2[None, None], stride=(2, 2))[0, 0], rtol=1e-10)


@pytest.mark.parametrize(
    "dtype, result",
    [(np.float16, np.float16), (np.float32, np.float32), (np.float64, np.float64), (np.int16, np.float64),
     (np.bool_, np.float64)],
)
def test_dtypes(dtype, result):
    rng = make_rng("dtypes", np.dtype(dtype).name)
    x = (rng.standard_normal((1, 2, 4, 4)) * 3).astype(dtype)
    w = (rng.standard_normal((2, 3, 3, 3)) * 3).astype(dtype)
    y = cppconv.conv_transpose2d(x, w, stride=2)
    assert y.dtype == result
    want = ref_conv_transpose(x.astype(np.float64), w.astype(np.float64), stride=(2, 2))
    tol = 5e-2 if dtype == np.float16 else 1e-5
    np.testing.assert_allclose(y.astype(np.float64), want, rtol=tol, atol=tol * np.abs(want).max())
    # Mixed: float32 input, float64 weight -> float64.
    assert cppconv.conv_transpose2d(x.astype(np.float32), w.astype(np.float64)).dtype == np.float64
    with pytest.raises(TypeError):
        cppconv.conv_transpose2d(x.astype(np.complex64), w)
    with pytest.raises(TypeError):
        cppconv.conv_transpose2d(x, w.astype(object))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_out(isa, layout):
    rng = make_rng("out", layout)
    x = to_layout(rng.standard_normal((2, 3, 4, 5)).astype(np.float32), layout)
    w = rng.standard_normal((3, 2, 2, 2)).astype(np.float32)
    want = cppconv.conv_transpose2d(x, w, stride=2, layout=layout)
    out = np.empty_like(want)
    assert cppconv.conv_transpose2d(x, w, stride=2, layout=layout, out=out) is out
    np.testing.assert_array_equal(out, want)
    big = np.zeros(want.shape + (3,), np.float32)
    view = big[..., 1]
    assert cppconv.conv_transpose2d(x, w, stride=2, layout=layout, out=view) is view
    np.testing.assert_array_equal(view, want)
    out64 = np.empty(want.shape)
    with pytest.raises(TypeError, match="out"):
        cppconv.conv_transpose2d(x, w, stride=2, layout=layout, out=out64)
    with pytest.raises(ValueError, match="out"):
        cppconv.conv_transpose2d(x, w, stride=2, layout=layout, out=np.empty((1,) + want.shape[1:], np.float32))


def test_out_overlapping_input():
    rng = make_rng("overlap")
    buf = rng.standard_normal((2, 8, 8))
    x = buf[:, :4, :4]
    w = rng.standard_normal((2, 2, 2, 2))
    want = cppconv.conv_transpose2d(x.copy(), w, stride=2)
    out = buf  # (2, 8, 8), overlaps x
    assert cppconv.conv_transpose2d(x, w, stride=2, out=out) is out
    np.testing.assert_allclose(out, want, rtol=1e-12)


def test_output_size():
    assert cppconv.conv_transpose_output_size(14, 4, stride=2, padding=1) == 28
    assert cppconv.conv_transpose_output_size(5, 3, 2, 1, 1) == 10
    assert cppconv.conv_transpose_output_size(3, 3, 1, 0, 1, 2) == 8
    for i, k, s, p, d in itertools.product(range(1, 5), range(1, 4), range(1, 4), range(3), range(1, 3)):
        for op in range(max(s, d)):
            want = (i - 1) * s - 2 * p + d * (k - 1) + op + 1
            if want < 1:
                with pytest.raises(ValueError, match="output size"):
                    cppconv.conv_transpose_output_size(i, k, s, p, op, d)
                continue
            assert cppconv.conv_transpose_output_size(i, k, s, p, op, d) == want
            assert _native.conv_transpose_output_size(i, k, s, p, p, op, d) == want
            y = cppconv.conv_transpose2d(np.zeros((1, 1, i, i)), np.zeros((1, 1, k, k)), stride=s, padding=p,
                                         output_padding=op, dilation=d)
            assert y.shape == (1, 1, want, want)
    with pytest.raises(ValueError, match="output_padding"):
        cppconv.conv_transpose_output_size(5, 3, 2, 0, 2)


@pytest.mark.parametrize(
    "kwargs, wshape, match",
    [
        (dict(stride=2, output_padding=2), (3, 2, 3, 3), "output_padding"),
        (dict(stride=1, dilation=1, output_padding=1), (3, 2, 3, 3), "output_padding"),
        (dict(stride=(2, 1), output_padding=(1, 1)), (3, 2, 3, 3), "output_padding"),
        (dict(output_padding=-1), (3, 2, 3, 3), "output_padding"),
        (dict(stride=0), (3, 2, 3, 3), "stride"),
        (dict(dilation=0), (3, 2, 3, 3), "dilation"),
        (dict(padding=-1), (3, 2, 3, 3), "padding"),
        (dict(padding="same"), (3, 2, 3, 3), "padding"),
        (dict(padding=5), (3, 2, 3, 3), "output size"),
        (dict(groups=2), (3, 2, 3, 3), "groups"),
        (dict(groups=0), (3, 2, 3, 3), "groups"),
        (dict(), (4, 2, 3, 3), "input channels"),
        (dict(), (3, 2, 3), "weight"),
        (dict(), (3, 2, 0, 3), "kernel"),
        (dict(layout="NCWH"), (3, 2, 3, 3), "layout"),
        (dict(activation="gelu"), (3, 2, 3, 3), "activation"),
    ],
)
def test_bad_input(kwargs, wshape, match):
    x = np.zeros((1, 3, 4, 4))
    with pytest.raises(ValueError, match=match):
        cppconv.conv_transpose2d(x, np.zeros(wshape), **kwargs)


def test_bad_input_more():
    x = np.zeros((1, 3, 4, 4))
    w = np.zeros((3, 2, 3, 3))
    with pytest.raises(ValueError, match="bias"):
        cppconv.conv_transpose2d(x, w, np.zeros(3))
    with pytest.raises(ValueError, match="x is 5-D .*: use conv_transpose3d"):
        cppconv.conv_transpose2d(x[None], w)
    with pytest.raises(ValueError, match="2-D"):
        cppconv.conv_transpose2d(x[0, 0], w)
    with pytest.raises(ValueError, match="empty"):
        cppconv.conv_transpose2d(x[:, :, :0], w)
    with pytest.raises(TypeError, match="stride"):
        cppconv.conv_transpose2d(x, w, stride=1.5)
    with pytest.raises(ValueError, match="bias"):
        cppconv.ConvTranspose2d(w, np.zeros(5), groups=1)
    with pytest.raises(ValueError, match="groups"):
        cppconv.ConvTranspose2d(w, groups=2)
    with pytest.raises(ValueError, match="output_padding"):
        cppconv.ConvTranspose2d(w, output_padding=1)
    plan = _native.ConvTransposePlan(np.zeros((3, 2, 3, 3)), np.zeros(4))

    def settings(output_padding=(0, 0), groups=1):
        return _native.ConvTransposeSettings((1, 1), (0, 0, 0, 0), output_padding, (1, 1), groups, 0, 0)

    with pytest.raises(ValueError, match="match"):
        plan.run(x, np.empty((1, 4, 6, 6)), settings(groups=2))  # bias 4 but K = 2 * 2
    with pytest.raises(ValueError, match="output_padding"):
        settings(output_padding=(1, 1))
    with pytest.raises(ValueError, match="out"):
        plan.run(x, np.empty((1, 2, 5, 6)), settings())
    with pytest.raises(ValueError, match="spatial axes"):
        plan.run(x[:, :, 0].copy(), np.empty((1, 2, 6)),
                 _native.ConvTransposeSettings((1,), (0, 0), (0,), (1,), 1, 0, 0))


def test_threads_agree(isa):
    rng = make_rng("threads")
    x = rng.standard_normal((2, 32, 9, 9)).astype(np.float32)
    w = rng.standard_normal((32, 20, 4, 4)).astype(np.float32)
    before = cppconv.get_num_threads()
    try:
        cppconv.set_num_threads(1)
        one = cppconv.conv_transpose2d(x, w, stride=2, padding=1)
        cppconv.set_num_threads(3)
        three = cppconv.conv_transpose2d(x, w, stride=2, padding=1)
    finally:
        cppconv.set_num_threads(before)
    np.testing.assert_array_equal(one, three)


def test_takes_pytorchs_positional_order_and_words_in_any_case():
    # F.conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation)
    rng = make_rng("positional conv_transpose2d")
    x = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    want = cppconv.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1, groups=2, dilation=1)
    np.testing.assert_array_equal(cppconv.conv_transpose2d(x, w, b, 2, 1, 1, 2, 1), want)
    with pytest.raises(TypeError):  # layout and the rest stay keyword-only
        cppconv.conv_transpose2d(x, w, b, 2, 1, 1, 2, 1, "NCHW")
    got = cppconv.conv_transpose2d(x.transpose(0, 2, 3, 1), w, b, 2, 1, 1, 2, layout="nhwc", activation="ReLU")
    np.testing.assert_array_equal(got, np.maximum(want, 0).transpose(0, 2, 3, 1))


@pytest.mark.parametrize("d", [1000, 3000])
def test_dilation_costs_no_padded_copy(isa, d):
    """A 3x3 depthwise transposed convolution dilated and padded d on 1x1 planes: only the centre
    tap meets the output.  The phase kernel's padded copy of x is as wide as the kernel's reach
    (64 x 1024 x 2d values), out of proportion to the call, so it declines and the reference
    takes the call."""
    rng = make_rng("transpose-dilated", d)
    x = rng.standard_normal((64, 1024, 1, 1)).astype(np.float32)
    w = rng.standard_normal((1024, 1, 3, 3)).astype(np.float32)
    kw = dict(padding=d, dilation=d, groups=1024)
    for name in _native.conv_transpose_algorithms():
        if name.startswith("conv_transpose2d_phase_f32"):
            with pytest.raises(ValueError, match="does not accept"):
                _conv_transpose._conv_transpose_with_algorithm(name, x, w, **kw)
    y = cppconv.conv_transpose2d(x, w, **kw)
    np.testing.assert_allclose(y, x * w[None, :, 0, 1:2, 1:2], rtol=1e-6, atol=1e-6)
