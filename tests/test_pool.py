"""Pooling: max, average, adaptive and global, against a float64 NumPy reference.

The reference follows PyTorch's definitions (checked against torch when writing these tests;
torch is not imported here).  Every fast kernel runs under every ISA this machine supports.
"""

from __future__ import annotations

import numpy as np
import pytest

import cppconv
from cppconv import _native

from conftest import make_rng

LAYOUTS = ["NCHW", "NHWC"]


# ------------------------------------------------------------------------------------------
# NumPy reference (NCHW, float64)


def ref_length(i, k, s, before, after, d, ceil_mode):
    span = i + before + after - d * (k - 1) - 1
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= i + before:
        out -= 1
    return out


def ref_windows(i, o, k, s, before, after, d, adaptive):
    """Per output: (taps inside the input, padded-size divisor factor, first tap >= 0)."""
    wins = []
    for q in range(o):
        if adaptive:
            start, end = (q * i) // o, -(-((q + 1) * i) // o)
            taps = list(range(start, end))
            wins.append((taps, len(taps), start))
            continue
        start = q * s - before
        all_taps = [start + t * d for t in range(k)]
        first = next(t for t in all_taps if t >= 0)
        wins.append(([t for t in all_taps if 0 <= t < i], min(start + k, i + after) - start, first))
    return wins


def ref_pool(x, kind, kernel=(1, 1), stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), ceil_mode=False,
             count_include_pad=True, divisor=None, adaptive_size=None):
    """Returns (values, indices) for NCHW float64 x; indices None for avg."""
    n, c, h, w = x.shape
    top, bottom, left, right = pads
    if adaptive_size is None:
        oh = ref_length(h, kernel[0], stride[0], top, bottom, dilation[0], ceil_mode)
        ow = ref_length(w, kernel[1], stride[1], left, right, dilation[1], ceil_mode)
        rows = ref_windows(h, oh, kernel[0], stride[0], top, bottom, dilation[0], False)
        cols = ref_windows(w, ow, kernel[1], stride[1], left, right, dilation[1], False)
    else:
        oh, ow = adaptive_size
        rows = ref_windows(h, oh, 0, 0, 0, 0, 1, True)
        cols = ref_windows(w, ow, 0, 0, 0, 0, 1, True)
    y = np.empty((n, c, oh, ow))
    idx = np.empty((n, c, oh, ow), np.int64)
    for a, (rtaps, rsize, rfirst) in enumerate(rows):
        for b, (ctaps, csize, cfirst) in enumerate(cols):
            if kind == "max":
                best = np.full((n, c), -np.inf)
                arg = np.full((n, c), rfirst * w + cfirst, np.int64)
                for r in rtaps:
                    for q in ctaps:
                        v = x[:, :, r, q]
                        take = (v > best) | np.isnan(v)
                        best = np.where(take, v, best)
                        arg = np.where(take, r * w + q, arg)
                y[:, :, a, b], idx[:, :, a, b] = best, arg
            else:
                total = np.zeros((n, c))
                for r in rtaps:
                    for q in ctaps:
                        total += x[:, :, r, q]
                if divisor:
                    div = divisor
                elif count_include_pad and adaptive_size is None:
                    div = rsize * csize
                else:
                    div = len(rtaps) * len(ctaps)
                y[:, :, a, b] = total / div
    return y, (idx if kind == "max" else None)


def to_layout(a, layout):
    return a if layout == "NCHW" else np.ascontiguousarray(np.moveaxis(a, 1, -1))


def from_layout(a, layout):
    return a if layout == "NCHW" else np.moveaxis(a, -1, 1)


def random_input(rng, shape, dtype=np.float32, nan=False):
    x = rng.standard_normal(shape)
    if rng.random() < 0.3:
        x = np.round(x)  # ties: the first maximum wins
    if nan:
        x[rng.random(shape) < 0.15] = np.nan
    return x.astype(dtype)


def random_pool_case(rng, kind):
    h, w = (int(v) for v in rng.integers(1, 11, 2))
    kernel = tuple(int(v) for v in rng.integers(1, 5, 2))
    stride = tuple(int(v) for v in rng.integers(1, 4, 2))
    dilation = tuple(int(v) for v in rng.integers(1, 3, 2)) if kind == "max" else (1, 1)
    pads = (int(rng.integers(0, kernel[0] // 2 + 1)), int(rng.integers(0, kernel[0] // 2 + 1)),
            int(rng.integers(0, kernel[1] // 2 + 1)), int(rng.integers(0, kernel[1] // 2 + 1)))
    # Make the kernel fit the padded input.
    h = max(h, dilation[0] * (kernel[0] - 1) + 1 - pads[0] - pads[1], 1)
    w = max(w, dilation[1] * (kernel[1] - 1) + 1 - pads[2] - pads[3], 1)
    return h, w, kernel, stride, dilation, pads, bool(rng.integers(0, 2))


def padding_arg(pads):
    top, bottom, left, right = pads
    if top == bottom and left == right:
        return (top, left)
    return ((top, bottom), (left, right))


# ------------------------------------------------------------------------------------------
# max / avg


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", range(12))
def test_max_pool_random(isa, layout, seed):
    rng = make_rng("max", seed)
    for _ in range(4):
        h, w, kernel, stride, dilation, pads, ceil_mode = random_pool_case(rng, "max")
        x = random_input(rng, (2, 3, h, w), np.float32, nan=seed % 3 == 0)
        want, want_idx = ref_pool(x.astype(np.float64), "max", kernel, stride, pads, dilation, ceil_mode)
        y, idx = cppconv.max_pool2d(to_layout(x, layout), kernel, stride, padding_arg(pads), dilation, ceil_mode,
                                    return_indices=True, layout=layout)
        assert y.dtype == np.float32 and idx.dtype == np.int64
        np.testing.assert_array_equal(from_layout(y, layout), want.astype(np.float32))
        np.testing.assert_array_equal(from_layout(idx, layout), want_idx)
        y2 = cppconv.max_pool2d(to_layout(x, layout), kernel, stride, padding_arg(pads), dilation, ceil_mode,
                                layout=layout)
        np.testing.assert_array_equal(y2, y)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", range(12))
def test_avg_pool_random(isa, layout, seed):
    rng = make_rng("avg", seed)
    for _ in range(4):
        h, w, kernel, stride, _, pads, ceil_mode = random_pool_case(rng, "avg")
        cip = bool(rng.integers(0, 2))
        divisor = [None, None, 3, -2][int(rng.integers(0, 4))]
        x = random_input(rng, (2, 3, h, w), np.float64)
        want, _ = ref_pool(x, "avg", kernel, stride, pads, (1, 1), ceil_mode, cip, divisor)
        y = cppconv.avg_pool2d(to_layout(x, layout), kernel, stride, padding_arg(pads), ceil_mode, cip, divisor,
                               layout=layout)
        np.testing.assert_allclose(from_layout(y, layout), want, rtol=1e-12, atol=1e-12)
        y32 = cppconv.avg_pool2d(to_layout(x.astype(np.float32), layout), kernel, stride, padding_arg(pads),
                                 ceil_mode, cip, divisor, layout=layout)
        assert y32.dtype == np.float32
        np.testing.assert_allclose(from_layout(y32, layout), want, rtol=1e-5, atol=1e-5)


# Rows wide enough for whole vectors and blocks of them held in registers (16 lanes x 4 on
# AVX-512, 8 x 4 on AVX2), around those sizes, at strides 1 and 2 (input rows split into even
# and odd columns), padding, dilation, ceil_mode; float32 without indices takes that path.
WIDE_POOL_CASES = [
    # kind, (kh, kw), (sh, sw), pads (t, b, l, r), (dh, dw), ceil_mode
    ("max", (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), False),
    ("max", (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), True),
    ("max", (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), False),
    ("max", (3, 5), (1, 2), (0, 1, 2, 1), (2, 2), True),
    ("avg", (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False),
    ("avg", (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), True),
    ("avg", (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), False),
    ("avg", (1, 4), (1, 2), (0, 0, 2, 1), (1, 1), True),
]


@pytest.mark.parametrize("case", range(len(WIDE_POOL_CASES)))
@pytest.mark.parametrize("W", [15, 16, 17, 31, 33, 63, 64, 65, 129, 130, 257])
def test_wide_rows(isa, case, W):
    kind, kernel, stride, pads, dilation, ceil_mode = WIDE_POOL_CASES[case]
    rng = make_rng("wide-rows", case, W)
    x = random_input(rng, (2, 3, 7, W), np.float32, nan=kind == "max" and W % 2 == 1)
    want, _ = ref_pool(x.astype(np.float64), kind, kernel, stride, pads, dilation, ceil_mode)
    if kind == "max":
        y = cppconv.max_pool2d(x, kernel, stride, padding_arg(pads), dilation, ceil_mode)
        np.testing.assert_array_equal(y, want.astype(np.float32))
    else:
        y = cppconv.avg_pool2d(x, kernel, stride, padding_arg(pads), ceil_mode)
        np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("C", [1, 16, 17, 63, 64, 65, 130, 256, 300])
@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), (3, 2, 0), (2, 2, 0)])
def test_max_pool_nhwc_sparse_nan_inf_and_signed_zeros(isa, C, kernel, stride, padding):
    # The NHWC float max takes a plain max and reruns a window exactly where a NaN or an
    # infinity was read: a few of them, so that most windows take the plain path in the same
    # call; ties of -0 and +0 keep the first, as PyTorch's strict compare (bits compared).
    rng = make_rng("sparse-nan-nhwc", C, kernel, stride, padding)
    x = np.round(rng.standard_normal((2, C, 10, 9)))
    x[x == 0] = np.where(rng.random(x.shape) < 0.5, -0.0, 0.0)[x == 0]
    special = rng.random(x.shape)
    x[special < 0.004] = np.nan
    x[(special >= 0.004) & (special < 0.008)] = np.inf
    x[(special >= 0.008) & (special < 0.012)] = -np.inf
    x = x.astype(np.float32)
    want, _ = ref_pool(x.astype(np.float64), "max", (kernel, kernel), (stride, stride), (padding,) * 4, (1, 1), True)
    want = want.astype(np.float32)
    y = from_layout(cppconv.max_pool2d(to_layout(x, "NHWC"), kernel, stride, padding, ceil_mode=True, layout="NHWC"),
                    "NHWC")
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    finite = ~np.isnan(want)
    np.testing.assert_array_equal(y[finite].view(np.uint32), want[finite].view(np.uint32))


@pytest.mark.parametrize("case", [0, 3, 4, 5])
@pytest.mark.parametrize("C", [16, 17, 63, 64, 65, 130, 300])
def test_many_channels_nhwc(isa, case, C):
    # NHWC vectorises across channels, in blocks of up to 256 channels per work item: counts
    # around the vector and block sizes, and global pooling (a few items per pixel).
    kind, kernel, stride, pads, dilation, ceil_mode = WIDE_POOL_CASES[case]
    rng = make_rng("many-channels", case, C)
    x = random_input(rng, (2, C, 9, 11), np.float32, nan=kind == "max")
    want, _ = ref_pool(x.astype(np.float64), kind, kernel, stride, pads, dilation, ceil_mode)
    xl = to_layout(x, "NHWC")
    if kind == "max":
        y = cppconv.max_pool2d(xl, kernel, stride, padding_arg(pads), dilation, ceil_mode, layout="NHWC")
        np.testing.assert_array_equal(from_layout(y, "NHWC"), want.astype(np.float32))
    else:
        y = cppconv.avg_pool2d(xl, kernel, stride, padding_arg(pads), ceil_mode, layout="NHWC")
        np.testing.assert_allclose(from_layout(y, "NHWC"), want, rtol=1e-6, atol=1e-6)
    g = cppconv.adaptive_avg_pool2d(xl, 1, layout="NHWC")
    np.testing.assert_allclose(from_layout(g, "NHWC"), x.astype(np.float64).mean(axis=(2, 3), keepdims=True),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_ceil_mode_windows_hang_over(isa, layout):
    # 5 wide, kernel 2 stride 2: ceil_mode adds a window [4, 6) that hangs over the edge.
    x = np.arange(2 * 5 * 5, dtype=np.float64).reshape(1, 2, 5, 5)
    xl = to_layout(x, layout)
    y = from_layout(cppconv.avg_pool2d(xl, 2, ceil_mode=True, layout=layout), layout)
    assert y.shape == (1, 2, 3, 3)
    assert y[0, 0, 2, 2] == x[0, 0, 4, 4]  # divisor 1: the window clipped to the input (no padding)
    # padding 1, kernel 3, stride 2 on 6: last window starts at 5 - 1 = 4 ... hangs past the padding.
    x = np.ones((1, 1, 6, 6))
    y = from_layout(cppconv.avg_pool2d(to_layout(x, layout), 3, 2, 1, ceil_mode=True, layout=layout), layout)
    want, _ = ref_pool(x, "avg", (3, 3), (2, 2), (1, 1, 1, 1), ceil_mode=True)
    np.testing.assert_allclose(y, want)
    # One input pixel; the divisor counts the window clipped to input + padding: [5, 7)^2.
    assert want[0, 0, -1, -1] == 1 / 4 and want[0, 0, 0, -1] == 2 / 6
    y = from_layout(cppconv.avg_pool2d(to_layout(x, layout), 3, 2, 1, ceil_mode=True, count_include_pad=False,
                                       layout=layout), layout)
    np.testing.assert_allclose(y, np.ones_like(y))
    y, i = cppconv.max_pool2d(to_layout(x, layout), 3, 2, 1, ceil_mode=True, return_indices=True, layout=layout)
    assert from_layout(y, layout).shape == (1, 1, 4, 4)


# ceil_mode windows longer than the padded input (issue 13, item 5): PyTorch keeps the one
# window that starts at the input's first pixel while it overhangs by less than the stride.


@pytest.mark.parametrize("layout", LAYOUTS)
def test_ceil_mode_window_longer_than_padded_input(isa, layout):
    # The example: 2 rows under a 3-row window; torch gives these values.
    x = np.arange(10, dtype=np.float32).reshape(1, 1, 2, 5)
    xl = to_layout(x, layout)
    assert cppconv.pool_output_size(2, 3, stride=3, ceil_mode=True) == 1
    y, idx = cppconv.max_pool2d(xl, 3, stride=3, ceil_mode=True, return_indices=True, layout=layout)
    np.testing.assert_array_equal(from_layout(y, layout), [[[[7, 9]]]])
    np.testing.assert_array_equal(from_layout(idx, layout), [[[[7, 9]]]])
    np.testing.assert_array_equal(from_layout(cppconv.max_pool2d(xl, 3, 3, ceil_mode=True, layout=layout), layout),
                                  [[[[7, 9]]]])
    for cip in (True, False):  # no padding: both count the window clipped to the input
        y = cppconv.avg_pool2d(xl, 3, stride=3, ceil_mode=True, count_include_pad=cip, layout=layout)
        np.testing.assert_array_equal(from_layout(y, layout), [[[[3.5, 6]]]])
    y = cppconv.avg_pool2d(xl, 3, stride=3, ceil_mode=True, divisor_override=2, layout=layout)
    np.testing.assert_array_equal(from_layout(y, layout), [[[[10.5, 12]]]])
    np.testing.assert_array_equal(
        from_layout(cppconv.MaxPool2d(3, 3, ceil_mode=True, layout=layout)(xl), layout), [[[[7, 9]]]])
    np.testing.assert_array_equal(
        from_layout(cppconv.AvgPool2d(3, 3, ceil_mode=True, layout=layout)(xl), layout), [[[[3.5, 6]]]])
    # Padding 1 on 1 row, kernel 3, stride 2: span 3 = padded 3, then the window [-1, 2) is the
    # only one; kernel 4 (padding 1 < 2) spans 4 > 3 and still gives one window at stride 2.
    one = np.full((1, 1, 1, 1), 5.0)
    assert cppconv.max_pool2d(one, 4, 2, 1, ceil_mode=True).shape == (1, 1, 1, 1)
    assert cppconv.avg_pool2d(one, 4, 2, 1, ceil_mode=True).item() == 5 / 9  # window clipped to [-1, 2)^2
    # Overhang equal to the stride: no window, as in PyTorch.
    with pytest.raises(ValueError, match="ceil_mode"):
        cppconv.max_pool2d(x, (3, 1), (1, 1), ceil_mode=True, layout="NCHW")
    with pytest.raises(ValueError, match="ceil_mode"):
        cppconv.pool_output_size(2, 3, stride=1, ceil_mode=True)


def random_overhang_case(rng, kind):
    """A pooling case with ceil_mode where at least one axis has a window longer than the
    padded input, and an output of at least 1 along both axes."""
    while True:
        kernel = tuple(int(v) for v in rng.integers(1, 8, 2))
        stride = tuple(int(v) for v in rng.integers(1, 9, 2))
        dilation = tuple(int(v) for v in rng.integers(1, 4, 2)) if kind == "max" else (1, 1)
        pads = (int(rng.integers(0, kernel[0] // 2 + 1)), int(rng.integers(0, kernel[0] // 2 + 1)),
                int(rng.integers(0, kernel[1] // 2 + 1)), int(rng.integers(0, kernel[1] // 2 + 1)))
        h, w = (int(v) for v in rng.integers(1, 7, 2))
        oh = ref_length(h, kernel[0], stride[0], pads[0], pads[1], dilation[0], True)
        ow = ref_length(w, kernel[1], stride[1], pads[2], pads[3], dilation[1], True)
        longer = (dilation[0] * (kernel[0] - 1) + 1 > h + pads[0] + pads[1]
                  or dilation[1] * (kernel[1] - 1) + 1 > w + pads[2] + pads[3])
        if oh >= 1 and ow >= 1 and longer:
            return h, w, kernel, stride, dilation, pads


@pytest.mark.parametrize("seed", range(6))
def test_ceil_mode_overhang_random_every_algorithm(seed):
    """Against the float64 NumPy reference through the dispatcher (both layouts, values and
    indices, every average divisor) and through every pool algorithm by name."""
    rng = make_rng("ceil-overhang", seed)
    ran = set()
    for _ in range(8):
        kind = ("max", "avg")[int(rng.integers(0, 2))]
        h, w, kernel, stride, dilation, pads = random_overhang_case(rng, kind)
        x = random_input(rng, (2, 3, h, w), np.float64, nan=kind == "max" and seed % 2 == 1)
        cip = bool(rng.integers(0, 2))
        divisor = [None, None, 3][int(rng.integers(0, 3))] if kind == "avg" else None
        want, want_idx = ref_pool(x, kind, kernel, stride, pads, dilation, True, cip, divisor)
        for layout, code in (("NCHW", 0), ("NHWC", 1)):
            xl = to_layout(x, layout)
            if kind == "max":
                y, idx = cppconv.max_pool2d(xl, kernel, stride, padding_arg(pads), dilation, True,
                                            return_indices=True, layout=layout)
                np.testing.assert_array_equal(from_layout(idx, layout), want_idx)
            else:
                y = cppconv.avg_pool2d(xl, kernel, stride, padding_arg(pads), True, cip, divisor, layout=layout)
            np.testing.assert_allclose(from_layout(y, layout), want, rtol=1e-12, atol=1e-12)
            for name in _native.pool_algorithms():
                dtype = np.float32 if "_f32" in name else np.float64
                shape = (2, 3) + want.shape[2:] if code == 0 else (2,) + want.shape[2:] + (3,)
                out = np.empty(shape, dtype)
                out_idx = np.empty(shape, np.int64) if kind == "max" else None
                try:
                    settings = _native.PoolSettings(0 if kind == "max" else 1, kernel, stride, pads, dilation, True,
                                                    cip, divisor or 0, code)
                    _native.pool(np.ascontiguousarray(xl, dtype), out, out_idx, settings, name)
                except ValueError as e:
                    assert "does not accept" in str(e)
                    continue
                ran.add(name)
                np.testing.assert_allclose(from_layout(out, layout), want, rtol=1e-5 if dtype == np.float32 else 1e-12,
                                           atol=1e-6 if dtype == np.float32 else 1e-12, err_msg=name)
                if out_idx is not None:
                    np.testing.assert_array_equal(from_layout(out_idx, layout), want_idx, err_msg=name)
    assert ran, "no pool algorithm accepted these cases"


def test_ceil_mode_sizes_and_values_match_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = make_rng("ceil-torch")
    for _ in range(300):
        kernel = tuple(int(v) for v in rng.integers(1, 7, 2))
        stride = tuple(int(v) for v in rng.integers(1, 8, 2))
        dilation = tuple(int(v) for v in rng.integers(1, 3, 2))
        pad = tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel)
        h, w = (int(v) for v in rng.integers(1, 7, 2))
        x = rng.standard_normal((1, 2, h, w))
        tx = torch.from_numpy(x)
        for i, k, s, p, d in ((h, kernel[0], stride[0], pad[0], dilation[0]),
                              (w, kernel[1], stride[1], pad[1], dilation[1])):
            try:
                want = F.max_pool1d(torch.zeros(1, 1, i), k, s, p, d, ceil_mode=True).shape[-1]
            except RuntimeError:
                want = None
            if want is None:
                with pytest.raises(ValueError):
                    cppconv.pool_output_size(i, k, s, p, d, ceil_mode=True)
            else:
                assert cppconv.pool_output_size(i, k, s, p, d, ceil_mode=True) == want, (i, k, s, p, d)
        try:
            ty, ti = F.max_pool2d(tx, kernel, stride, pad, dilation, ceil_mode=True, return_indices=True)
        except RuntimeError:
            with pytest.raises(ValueError):
                cppconv.max_pool2d(x, kernel, stride, pad, dilation, ceil_mode=True)
            continue
        y, idx = cppconv.max_pool2d(x, kernel, stride, pad, dilation, ceil_mode=True, return_indices=True)
        np.testing.assert_array_equal(y, ty.numpy())
        np.testing.assert_array_equal(idx, ti.numpy())
        for cip in (True, False):
            for divisor in (None, 3):
                try:
                    ta = F.avg_pool2d(tx, kernel, stride, pad, ceil_mode=True, count_include_pad=cip,
                                      divisor_override=divisor)
                except RuntimeError:
                    with pytest.raises(ValueError):
                        cppconv.avg_pool2d(x, kernel, stride, pad, True, cip, divisor)
                    continue
                np.testing.assert_allclose(cppconv.avg_pool2d(x, kernel, stride, pad, True, cip, divisor), ta.numpy(),
                                           rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_nan_wins_with_its_index(isa, layout):
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 0, 1] = 5
    x[0, 0, 1, 0] = np.nan
    x[0, 0, 2, 3] = np.nan
    x[0, 0, 3, 2] = 7
    y, i = cppconv.max_pool2d(to_layout(x, layout), 2, return_indices=True, layout=layout)
    y, i = from_layout(y, layout)[0, 0], from_layout(i, layout)[0, 0]
    assert np.isnan(y[0, 0]) and i[0, 0] == 4
    assert np.isnan(y[1, 1]) and i[1, 1] == 11  # NaN at (2, 3) beats 7 at (3, 2)
    assert y[0, 1] == 0 and i[0, 1] == 2  # ties: the first
    y = cppconv.global_avg_pool2d(to_layout(x, layout), layout=layout)
    assert np.isnan(y).all()
    y, i = cppconv.adaptive_max_pool2d(to_layout(x, layout), 1, return_indices=True, layout=layout)
    assert np.isnan(y).all() and i.ravel()[0] == 11  # the last NaN of the window wins


@pytest.mark.parametrize("layout", LAYOUTS)
def test_all_padding_dilated_window(isa, layout):
    # kernel 2, dilation 3, padding 1 on width 2: the taps -1 and 2 both miss the input.
    x = np.ones((1, 1, 2, 2), np.float32)
    want, want_idx = ref_pool(x.astype(np.float64), "max", (2, 2), (1, 1), (1, 1, 1, 1), (3, 3))
    y, i = cppconv.max_pool2d(to_layout(x, layout), 2, 1, 1, 3, return_indices=True, layout=layout)
    np.testing.assert_array_equal(from_layout(y, layout), want)
    np.testing.assert_array_equal(from_layout(i, layout), want_idx)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_same_and_asymmetric_padding(isa, layout):
    rng = make_rng("same")
    x = random_input(rng, (2, 3, 9, 7), np.float64)
    for k, s in [(3, 2), (2, 2), (3, 1), (4, 3)]:
        top, bottom = cppconv._args.same_padding(9, k, s, 1)
        left, right = cppconv._args.same_padding(7, k, s, 1)
        pads = (top, bottom, left, right)
        y = from_layout(cppconv.max_pool2d(to_layout(x, layout), k, s, "same", layout=layout), layout)
        assert y.shape[2:] == (-(-9 // s), -(-7 // s))
        np.testing.assert_array_equal(y, ref_pool(x, "max", (k, k), (s, s), pads)[0])
        y = from_layout(cppconv.avg_pool2d(to_layout(x, layout), k, s, "same", layout=layout), layout)
        np.testing.assert_allclose(y, ref_pool(x, "avg", (k, k), (s, s), pads)[0], rtol=1e-12)
    pads = (0, 1, 1, 0)
    y = from_layout(cppconv.avg_pool2d(to_layout(x, layout), 3, 2, ((0, 1), (1, 0)), count_include_pad=True,
                                       layout=layout), layout)
    np.testing.assert_allclose(y, ref_pool(x, "avg", (3, 3), (2, 2), pads)[0], rtol=1e-12)


# ------------------------------------------------------------------------------------------
# adaptive / global


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", range(6))
def test_adaptive_random(isa, layout, seed):
    rng = make_rng("adaptive", seed)
    for _ in range(3):
        h, w = (int(v) for v in rng.integers(1, 13, 2))
        size = (int(rng.integers(1, h + 3)), int(rng.integers(1, w + 3)))  # also larger than the input
        x = random_input(rng, (2, 3, h, w), np.float64, nan=seed == 0)
        xl = to_layout(x, layout)
        want, _ = ref_pool(x, "avg", adaptive_size=size)
        np.testing.assert_allclose(from_layout(cppconv.adaptive_avg_pool2d(xl, size, layout=layout), layout), want,
                                   rtol=1e-12, atol=1e-12)
        want, want_idx = ref_pool(x, "max", adaptive_size=size)
        y, i = cppconv.adaptive_max_pool2d(xl, size, return_indices=True, layout=layout)
        np.testing.assert_array_equal(from_layout(y, layout), want)
        np.testing.assert_array_equal(from_layout(i, layout), want_idx)
        np.testing.assert_array_equal(cppconv.adaptive_max_pool2d(xl, size, layout=layout), y)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_adaptive_none_and_int_sizes(isa, layout):
    x = random_input(make_rng("none"), (2, 4, 10, 7), np.float64)
    xl = to_layout(x, layout)
    y = from_layout(cppconv.adaptive_avg_pool2d(xl, (3, None), layout=layout), layout)
    np.testing.assert_allclose(y, ref_pool(x, "avg", adaptive_size=(3, 7))[0], rtol=1e-12)
    y = from_layout(cppconv.adaptive_max_pool2d(xl, 4, layout=layout), layout)
    np.testing.assert_array_equal(y, ref_pool(x, "max", adaptive_size=(4, 4))[0])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(2, 5, 7, 7), (1, 300, 3, 5), (3, 2, 1, 1), (1, 1, 17, 19)])
def test_global_avg_pool(isa, layout, shape):
    x = random_input(make_rng("gap", shape), shape, np.float64)
    y = cppconv.global_avg_pool2d(to_layout(x, layout), layout=layout)
    assert y.shape == to_layout(np.empty(shape[:2] + (1, 1)), layout).shape
    np.testing.assert_allclose(from_layout(y, layout), x.mean(axis=(2, 3), keepdims=True), rtol=1e-12, atol=1e-14)
    y32 = cppconv.global_avg_pool2d(to_layout(x.astype(np.float32), layout), layout=layout)
    np.testing.assert_allclose(from_layout(y32, layout), x.mean(axis=(2, 3), keepdims=True), rtol=1e-5, atol=1e-6)
    for threads in (1, 2):  # (the call a network makes, with its thread count)
        y32 = cppconv.global_avg_pool2d(to_layout(x.astype(np.float32), layout), layout=layout, num_threads=threads)
        np.testing.assert_allclose(from_layout(y32, layout), x.mean(axis=(2, 3), keepdims=True), rtol=1e-5,
                                   atol=1e-6)


def test_global_avg_pool_thread_count_is_checked():
    x = np.ones((1, 2, 3, 3), np.float32)
    for bad in (0, -1, cppconv._native.MAX_THREADS + 1):
        with pytest.raises(ValueError, match="num_threads"):
            cppconv.global_avg_pool2d(x, num_threads=bad)


# ------------------------------------------------------------------------------------------
# every algorithm by name, unbatched and 2-D inputs, dtypes, out=


def test_every_pool_algorithm():
    rng = make_rng("algorithms")
    x = random_input(rng, (2, 3, 9, 8), np.float64, nan=False)
    cases = [
        dict(kind=0, args=(3, 3, 2, 2, 1, 1, 1, 1, 1, 1), ceil=True),
        dict(kind=1, args=(2, 3, 1, 2, 1, 1, 1, 0, 1, 1), ceil=False),
        dict(kind=0, args=(2, 2, 1, 1, 2, 2, 1, 0, 0, 1), ceil=False),
    ]
    ran = set()
    for layout, code in (("NCHW", 0), ("NHWC", 1)):
        xl = to_layout(x, layout)
        for case in cases:
            kh, kw, sh, sw, dh, dw, pt, pb, pl, pr = case["args"]
            oh = ref_length(9, kh, sh, pt, pb, dh, case["ceil"])
            ow = ref_length(8, kw, sw, pl, pr, dw, case["ceil"])
            kind = "max" if case["kind"] == 0 else "avg"
            want, want_idx = ref_pool(x, kind, (kh, kw), (sh, sw), (pt, pb, pl, pr), (dh, dw), case["ceil"])
            for name in _native.pool_algorithms():
                dtype = np.float32 if "_f32" in name else np.float64
                xin = np.ascontiguousarray(xl, dtype)
                shape = (2, 3, oh, ow) if code == 0 else (2, oh, ow, 3)
                out = np.empty(shape, dtype)
                idx = np.empty(shape, np.int64) if kind == "max" else None
                try:
                    settings = _native.PoolSettings(case["kind"], (kh, kw), (sh, sw), (pt, pb, pl, pr), (dh, dw),
                                                    case["ceil"], True, 0, code)
                    _native.pool(xin, out, idx, settings, name)
                except ValueError as e:
                    assert "does not accept" in str(e)
                    continue
                ran.add(name)
                np.testing.assert_allclose(from_layout(out, layout), want, rtol=1e-5 if dtype == np.float32 else 1e-12)
                if idx is not None:
                    np.testing.assert_array_equal(from_layout(idx, layout), want_idx)
            for name in _native.pool_algorithms():
                out = np.empty((2, 3, 4, 3) if code == 0 else (2, 4, 3, 3),
                               np.float64 if "_f64" in name else np.float32)
                try:
                    _native.adaptive_pool(np.ascontiguousarray(xl, out.dtype), out, None, 1, code, name)
                except ValueError as e:
                    assert "does not accept" in str(e)
                    continue
                ran.add(name)
                np.testing.assert_allclose(from_layout(out, layout), ref_pool(x, "avg", adaptive_size=(4, 3))[0],
                                           rtol=1e-5)
            for name in _native.pool_algorithms():
                dtype = np.float64 if "_f64" in name else np.float32
                out = np.empty((2, 3, 1, 1) if code == 0 else (2, 1, 1, 3), dtype)
                try:
                    _native.adaptive_pool(np.ascontiguousarray(xl, dtype), out, None, 1, code, name)
                except ValueError as e:
                    assert "does not accept" in str(e)
                    continue
                ran.add(name)
                np.testing.assert_allclose(from_layout(out, layout), x.mean(axis=(2, 3), keepdims=True), rtol=1e-5)
    assert ran == set(_native.pool_algorithms())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_unbatched_and_2d(isa, layout):
    x = random_input(make_rng("unbatched"), (1, 3, 8, 6), np.float64)
    full = cppconv.max_pool2d(to_layout(x, layout), 3, 2, 1, layout=layout)
    assert np.array_equal(cppconv.max_pool2d(to_layout(x, layout)[0], 3, 2, 1, layout=layout), full[0])
    y, i = cppconv.max_pool2d(to_layout(x, layout)[0], 3, 2, 1, return_indices=True, layout=layout)
    assert y.shape == i.shape == full.shape[1:]
    img = x[0, 0]
    y2 = cppconv.avg_pool2d(img, 2, layout=layout)
    np.testing.assert_allclose(y2, ref_pool(x[:, :1], "avg", (2, 2), (2, 2))[0][0, 0], rtol=1e-12)
    assert cppconv.global_avg_pool2d(img, layout=layout).shape == (1, 1)
    assert cppconv.adaptive_max_pool2d(img, (3, 2), layout=layout).shape == (3, 2)


@pytest.mark.parametrize(
    "dtype, result, max_result",
    [(np.float16, np.float16, np.float16), (np.float32, np.float32, np.float32), (np.float64, np.float64, np.float64),
     (np.int32, np.float64, np.int32), (np.uint8, np.float64, np.uint8), (np.bool_, np.float64, np.bool_),
     (np.int64, np.float64, np.int64)],
)
def test_dtypes(dtype, result, max_result):
    """Average pools follow numpy.mean (float64 for integers); max pools keep integer dtypes, exactly."""
    rng = make_rng("dtypes", np.dtype(dtype).name)
    x = (rng.standard_normal((2, 3, 6, 6)) * 4).astype(dtype)
    want = ref_pool(x.astype(np.float64), "avg", (2, 2), (2, 2))[0]
    tol = 1e-2 if dtype == np.float16 else 1e-6
    for fn, kw in [(cppconv.avg_pool2d, {}), (cppconv.adaptive_avg_pool2d, {}), (cppconv.global_avg_pool2d, None)]:
        y = fn(x) if kw is None else fn(x, (3, 3) if fn is cppconv.adaptive_avg_pool2d else 2)
        assert y.dtype == result
    assert cppconv.max_pool2d(x, 2).dtype == max_result
    assert cppconv.adaptive_max_pool2d(x, 3).dtype == max_result
    y = cppconv.avg_pool2d(x, 2)
    np.testing.assert_allclose(y.astype(np.float64), want, rtol=tol, atol=tol)
    y, i = cppconv.max_pool2d(x, 2, return_indices=True)
    assert y.dtype == max_result and i.dtype == np.int64
    ref_values, ref_indices = ref_pool(x.astype(np.float64), "max", (2, 2), (2, 2))
    np.testing.assert_array_equal(i, ref_indices)
    np.testing.assert_array_equal(y, ref_values.astype(max_result))


def test_bad_dtypes():
    for x in [np.ones((1, 4, 4), np.complex64), np.ones((1, 4, 4), object), np.array([["a", "b"], ["c", "d"]])]:
        with pytest.raises(TypeError):
            cppconv.max_pool2d(x, 2)
        with pytest.raises(TypeError):
            cppconv.avg_pool2d(x, 2)
        with pytest.raises(TypeError):
            cppconv.adaptive_max_pool2d(x, 1)
        with pytest.raises(TypeError):
            cppconv.global_avg_pool2d(x)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_out(isa, layout):
    x = random_input(make_rng("out"), (2, 3, 8, 8), np.float32)
    xl = to_layout(x, layout)
    want = cppconv.avg_pool2d(xl, 2, layout=layout)
    out = np.empty_like(want)
    assert cppconv.avg_pool2d(xl, 2, layout=layout, out=out) is out
    np.testing.assert_array_equal(out, want)
    # Any strides.
    big = np.zeros(want.shape + (2,), np.float32)
    view = big[..., 0]
    assert cppconv.avg_pool2d(xl, 2, layout=layout, out=view) is view
    np.testing.assert_array_equal(view, want)
    # float16 result into a float16 out.
    out16 = np.empty(want.shape, np.float16)
    cppconv.avg_pool2d(xl.astype(np.float16), 2, layout=layout, out=out16)
    np.testing.assert_allclose(out16, want, rtol=1e-2, atol=1e-2)
    # Values and indices.
    wv, wi = cppconv.max_pool2d(xl, 3, 2, 1, return_indices=True, layout=layout)
    ov, oi = np.empty_like(wv), np.empty_like(wi)
    rv, ri = cppconv.max_pool2d(xl, 3, 2, 1, return_indices=True, layout=layout, out=(ov, oi))
    assert rv is ov and ri is oi
    np.testing.assert_array_equal(ov, wv)
    np.testing.assert_array_equal(oi, wi)
    ov2 = np.empty_like(wv)
    rv, ri = cppconv.max_pool2d(xl, 3, 2, 1, return_indices=True, layout=layout, out=ov2)
    assert rv is ov2
    np.testing.assert_array_equal(ri, wi)
    out = np.empty(want.shape, np.float32)
    assert cppconv.adaptive_avg_pool2d(xl, 4, layout=layout, out=out) is out
    np.testing.assert_allclose(out, want, rtol=1e-6)


def test_out_overlapping_input():
    buf = random_input(make_rng("overlap"), (3, 8, 8), np.float64)
    x = buf  # the whole buffer
    want = cppconv.max_pool2d(x.copy(), 2)
    out = buf[:, :4, :4]  # overlaps x
    assert cppconv.max_pool2d(x, 2, out=out) is out
    np.testing.assert_array_equal(out, want)
    buf = random_input(make_rng("overlap2"), (3, 8, 8), np.float64)
    want = cppconv.avg_pool2d(buf.copy(), 2, 1, 0)
    out = buf[:, 1:, 1:]
    cppconv.avg_pool2d(buf, 2, 1, 0, out=out)
    np.testing.assert_allclose(out, want)


def test_zero_copy_input(monkeypatch):
    # A C-contiguous input of the compute dtype reaches the kernel without a copy.
    x = np.ones((1, 2, 4, 4), np.float32)
    seen = []
    real = _native.pool

    def spy(xin, *args):
        seen.append(xin)
        return real(xin, *args)

    monkeypatch.setattr(_native, "pool", spy)
    cppconv.max_pool2d(x, 2)
    assert np.shares_memory(seen[0], x)


def test_layers():
    x = random_input(make_rng("layers"), (2, 3, 9, 9), np.float32)
    m = cppconv.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
    np.testing.assert_array_equal(m(x), cppconv.max_pool2d(x, 3, 2, 1, ceil_mode=True))
    m = cppconv.MaxPool2d((2, 3), return_indices=True, layout="NHWC")
    xl = to_layout(x, "NHWC")
    for a, b in zip(m(xl), cppconv.max_pool2d(xl, (2, 3), return_indices=True, layout="NHWC")):
        np.testing.assert_array_equal(a, b)
    a = cppconv.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False, divisor_override=None)
    np.testing.assert_array_equal(a(x), cppconv.avg_pool2d(x, 3, 2, 1, True, False))
    out = np.empty_like(a(x))
    assert a(x, out=out) is out
    assert "MaxPool2d" in repr(m) and "AvgPool2d" in repr(a)


def test_pool_output_size():
    assert cppconv.pool_output_size(112, 3, 2, 1) == 56
    assert cppconv.pool_output_size(5, 2) == 2
    assert cppconv.pool_output_size(5, 2, ceil_mode=True) == 3
    assert cppconv.pool_output_size(6, 3, 2, 1, ceil_mode=True) == 4
    assert cppconv.pool_output_size(9, 3, 1, 0, dilation=2) == 5
    for i in range(1, 12):
        for k in range(1, 8):
            for s in range(1, 6):
                for p in range(0, k // 2 + 1):
                    for d in (1, 2):
                        for ceil in (False, True):
                            want = ref_length(i, k, s, p, p, d, ceil)
                            if want < 1:
                                assert _native.pool_output_size(i, k, s, p, p, d, ceil) == 0
                                with pytest.raises(ValueError, match="output size below 1"):
                                    cppconv.pool_output_size(i, k, s, p, d, ceil)
                                continue
                            assert cppconv.pool_output_size(i, k, s, p, d, ceil) == want
                            assert _native.pool_output_size(i, k, s, p, p, d, ceil) == want
    with pytest.raises(ValueError, match="kernel_size"):
        cppconv.pool_output_size(2, 5)
    with pytest.raises(ValueError, match="stride"):
        cppconv.pool_output_size(8, 2, 0)


# ------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda x: cppconv.max_pool2d(x, 3, padding=2), ValueError, "padding"),
        (lambda x: cppconv.avg_pool2d(x, 2, padding=(0, 2)), ValueError, "padding"),
        (lambda x: cppconv.max_pool2d(x, 3, 2, ((0, 2), (0, 0))), ValueError, "padding"),
        (lambda x: cppconv.max_pool2d(x, 3, padding=-1), ValueError, "padding"),
        (lambda x: cppconv.max_pool2d(x, 9), ValueError, "kernel_size"),
        (lambda x: cppconv.max_pool2d(x, 3, dilation=4), ValueError, "kernel_size"),
        (lambda x: cppconv.avg_pool2d(x, (1, 9)), ValueError, "kernel_size"),
        (lambda x: cppconv.max_pool2d(x, 0), ValueError, "kernel_size"),
        (lambda x: cppconv.avg_pool2d(x, (2, -1)), ValueError, "kernel_size"),
        (lambda x: cppconv.max_pool2d(x, 2, 0), ValueError, "stride"),
        (lambda x: cppconv.avg_pool2d(x, 2, -2), ValueError, "stride"),
        (lambda x: cppconv.max_pool2d(x, 2, dilation=0), ValueError, "dilation"),
        (lambda x: cppconv.avg_pool2d(x, 2, divisor_override=0), ValueError, "divisor_override"),
        (lambda x: cppconv.adaptive_avg_pool2d(x, 0), ValueError, "output_size"),
        (lambda x: cppconv.adaptive_max_pool2d(x, (2, -1)), ValueError, "output_size"),
        (lambda x: cppconv.adaptive_max_pool2d(x, (1, 2, 3)), ValueError, "output_size"),
        (lambda x: cppconv.max_pool2d(x[0, 0, 0], 1), ValueError, "x must be"),
        (lambda x: cppconv.avg_pool2d(x[None], 2), ValueError, "x must be"),
        (lambda x: cppconv.global_avg_pool2d(x[None]), ValueError, "x must be"),
        (lambda x: cppconv.max_pool2d(x, 2, layout="CHWN"), ValueError, "layout"),
        (lambda x: cppconv.max_pool2d(x, 2.5), TypeError, "kernel_size"),
        (lambda x: cppconv.max_pool2d(x, 2, padding="full"), ValueError, "padding"),
        (lambda x: cppconv.max_pool2d(x[:, :, :0], 1), ValueError, "empty"),
        (lambda x: cppconv.avg_pool2d(x, 2, out=np.empty((2, 3, 3, 3), np.float32)), ValueError, "out"),
        (lambda x: cppconv.avg_pool2d(x, 2, out=np.empty((2, 3, 4, 4))), TypeError, "out"),
        (lambda x: cppconv.max_pool2d(x, 2, out=(np.empty((2, 3, 4, 4), np.float32),) * 2), TypeError, "out"),
    ],
)
def test_bad_input(call, exc, match):
    x = np.zeros((2, 3, 8, 8), np.float32)
    with pytest.raises(exc, match=match):
        call(x)


def test_native_boundary_checks():
    x = np.zeros((1, 2, 4, 4), np.float32)
    max_2x2 = _native.PoolSettings(0, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False, True, 0, 0)
    with pytest.raises(ValueError, match="out"):
        _native.pool(x, np.empty((1, 2, 3, 3), np.float32), None, max_2x2)
    with pytest.raises(TypeError):
        _native.pool(x, np.empty((1, 2, 2, 2)), None, max_2x2)
    with pytest.raises(ValueError, match="below 1"):
        _native.pool(x, np.empty((1, 2, 1, 1), np.float32), None,
                     _native.PoolSettings(0, (9, 9), (1, 1), (0, 0, 0, 0), (1, 1), False, True, 0, 0))
    with pytest.raises(ValueError, match="indices"):
        _native.pool(x, np.empty((1, 2, 2, 2), np.float32), np.empty((1, 2, 2, 1), np.int64), max_2x2)
    with pytest.raises(ValueError, match="spatial axes"):
        _native.pool(x[0], np.empty((2, 2, 2), np.float32), None, max_2x2)
    with pytest.raises(ValueError, match="one value per spatial axis"):
        _native.PoolSettings(0, (2, 2), (2,), (0, 0, 0, 0), (1, 1), False, True, 0, 0)
    with pytest.raises(ValueError, match="padding >= 0"):
        _native.PoolSettings(0, (2, 2), (2, 2), (0, -1, 0, 0), (1, 1), False, True, 0, 0)
    with pytest.raises(ValueError, match="kind"):
        _native.PoolSettings(2, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False, True, 0, 0)
    with pytest.raises(ValueError, match="algorithm"):
        _native.adaptive_pool(x, np.empty((1, 2, 2, 2), np.float32), None, 1, 0, "no_such_algorithm")
    with pytest.raises(ValueError, match="below 1"):
        _native.adaptive_pool(x, np.empty((1, 2, 0, 2), np.float32), None, 1, 0)
    with pytest.raises(ValueError, match="3 to 5 dimensions"):
        _native.adaptive_pool(x[0, 0], np.empty((1, 1), np.float32), None, 1, 0)


def test_threads_agree(isa):
    before = cppconv.get_num_threads()
    x = random_input(make_rng("threads"), (4, 16, 40, 40), np.float32)
    try:
        cppconv.set_num_threads(1)
        one = [cppconv.max_pool2d(x, 3, 2, 1), cppconv.avg_pool2d(to_layout(x, "NHWC"), 2, layout="NHWC")]
        cppconv.set_num_threads(3)
        three = [cppconv.max_pool2d(x, 3, 2, 1), cppconv.avg_pool2d(to_layout(x, "NHWC"), 2, layout="NHWC")]
    finally:
        cppconv.set_num_threads(before)
    for a, b in zip(one, three):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_step_path_matches_full_path(isa, layout, dtype):
    """The common call (contiguous float array, int sizes) takes a one-step native path; it must
    give what the general path gives (reached here with a non-contiguous view of the same data,
    and with out=) and raise what it raises."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 5, 13, 11)).astype(dtype)
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    strided = np.repeat(x, 2, axis=-1)[..., ::2]
    assert not strided.flags.c_contiguous
    for k, s, p in [(2, None, 0), (3, 2, 1), (3, 1, 1), (5, 3, 2), (1, 1, 0), (11, 1, 0)]:
        for fn, extra in ((cppconv.max_pool2d, {}), (cppconv.avg_pool2d, {}),
                          (cppconv.avg_pool2d, {"count_include_pad": False})):
            fast = fn(x, k, s, p, layout=layout, **extra)
            full = fn(strided, k, s, p, layout=layout, **extra)
            out = np.empty_like(fast)
            assert fn(x, k, s, p, layout=layout, out=out, **extra) is out
            np.testing.assert_array_equal(fast, full, err_msg=f"{fn.__name__} k={k} s={s} p={p} {extra}")
            np.testing.assert_array_equal(fast, out)
            assert fast.dtype == dtype
    with pytest.raises(ValueError):
        cppconv.max_pool2d(x, 3, 1, 2, layout=layout)  # padding above kernel_size // 2
    with pytest.raises(ValueError):
        cppconv.max_pool2d(x, 30, layout=layout)       # window larger than the input


def test_pools_take_pytorchs_positional_order_and_words_in_any_case():
    # F.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)
    # F.avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    x = make_rng("positional pools").standard_normal((1, 2, 9, 9)).astype(np.float32)
    y, i = cppconv.max_pool2d(x, 3, 2, 1, 2, True, True)
    y2, i2 = cppconv.max_pool2d(x, 3, stride=2, padding=1, dilation=2, ceil_mode=True, return_indices=True)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(i, i2)
    np.testing.assert_array_equal(
        cppconv.avg_pool2d(x, 3, 2, 1, True, False, 5),
        cppconv.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False, divisor_override=5),
    )
    xt = x.transpose(0, 2, 3, 1)
    for pool in (cppconv.max_pool2d, cppconv.avg_pool2d):
        np.testing.assert_array_equal(pool(xt, 3, layout="nhwc"), pool(xt, 3, layout="NHWC"))
        np.testing.assert_array_equal(pool(x, 3, padding="SAME"), pool(x, 3, padding="same"))
    np.testing.assert_array_equal(cppconv.global_avg_pool2d(xt, layout="nhwc"),
                                  cppconv.global_avg_pool2d(xt, layout="NHWC"))
