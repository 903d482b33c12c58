"""1-D and 3-D pooling: max, average, adaptive and global, against a float64 NumPy reference
of any rank, through the dispatcher on every ISA and through every pool algorithm by name
(the C++ reference among them).  The 2-D suite is tests/test_pool.py."""

from __future__ import annotations

import copy
import itertools
import pickle

import numpy as np
import pytest

import cppconv
from cppconv import _native, _pool

from conftest import make_rng
from test_pool import random_input, ref_length, ref_windows

RANK_LAYOUTS = {1: ("NCW", "NWC"), 3: ("NCDHW", "NDHWC")}
CASES = [(rank, layout) for rank, names in RANK_LAYOUTS.items() for layout in names]
FUNCTIONS = {1: (cppconv.max_pool1d, cppconv.avg_pool1d), 3: (cppconv.max_pool3d, cppconv.avg_pool3d)}


# ------------------------------------------------------------------------------------------
# NumPy reference (channels-first, float64, any rank)


def ref_pool_nd(x, kind, kernel, stride, pads, dilation, ceil_mode=False, count_include_pad=True, divisor=None,
                adaptive_size=None):
    """(values, flat indices or None) of x (N, C, *sizes); pads is (before, after) per axis."""
    n, c, *sizes = x.shape
    rank = len(sizes)
    axes = []
    for a in range(rank):
        if adaptive_size is None:
            o = ref_length(sizes[a], kernel[a], stride[a], pads[2 * a], pads[2 * a + 1], dilation[a], ceil_mode)
            axes.append(ref_windows(sizes[a], o, kernel[a], stride[a], pads[2 * a], pads[2 * a + 1], dilation[a],
                                    False))
        else:
            axes.append(ref_windows(sizes[a], adaptive_size[a], 0, 0, 0, 0, 1, True))
    out_shape = tuple(len(w) for w in axes)
    flat = np.array([int(np.prod(sizes[a + 1:])) for a in range(rank)])
    y = np.empty((n, c) + out_shape)
    idx = np.empty((n, c) + out_shape, np.int64)
    for o in np.ndindex(*out_shape):
        wins = [axes[a][o[a]] for a in range(rank)]
        taps = list(itertools.product(*(w[0] for w in wins)))
        at = (slice(None), slice(None)) + o
        if kind == "max":
            best = np.full((n, c), -np.inf)
            arg = np.full((n, c), int(np.dot([w[2] for w in wins], flat)), np.int64)
            for t in taps:
                v = x[(slice(None), slice(None)) + t]
                take = (v > best) | np.isnan(v)
                best = np.where(take, v, best)
                arg = np.where(take, int(np.dot(t, flat)), arg)
            y[at], idx[at] = best, arg
        else:
            total = sum((x[(slice(None), slice(None)) + t] for t in taps), np.zeros((n, c)))
            if divisor:
                div = divisor
            elif count_include_pad and adaptive_size is None:
                div = np.prod([w[1] for w in wins])
            else:
                div = len(taps)
            y[at] = total / div
    return y, (idx if kind == "max" else None)


def channels_last(layout):
    return layout in ("NWC", "NDHWC")


def to_layout(a, layout):
    return np.ascontiguousarray(np.moveaxis(a, 1, -1)) if channels_last(layout) else a


def from_layout(a, layout):
    return np.moveaxis(a, -1, 1) if channels_last(layout) else a


def random_case(rng, rank, kind, max_size=9):
    """Per-axis sizes, kernel, stride, dilation and (before, after) pads whose window fits."""
    kernel = tuple(int(v) for v in rng.integers(1, 5, rank))
    stride = tuple(int(v) for v in rng.integers(1, 4, rank))
    dilation = tuple(int(v) for v in rng.integers(1, 3, rank)) if kind == "max" else (1,) * rank
    pads = tuple(int(rng.integers(0, kernel[a // 2] // 2 + 1)) for a in range(2 * rank))
    sizes = tuple(max(int(rng.integers(1, max_size + 1)),
                      dilation[a] * (kernel[a] - 1) + 1 - pads[2 * a] - pads[2 * a + 1], 1)
                  for a in range(rank))
    return sizes, kernel, stride, dilation, pads


def random_problems(rank, kind, seed, nan=False):
    """Four random pools of a kind: (rng, x, kernel, stride, dilation, pads, ceil_mode), x
    channels-first in float32 or float64."""
    rng = make_rng(kind, "nd", rank, seed)
    for _ in range(4):
        sizes, kernel, stride, dilation, pads = random_case(rng, rank, kind)
        ceil_mode = bool(rng.integers(0, 2))
        dtype = (np.float32, np.float64)[int(rng.integers(0, 2))]
        yield rng, random_input(rng, (2, 3) + sizes, dtype, nan=nan), kernel, stride, dilation, pads, ceil_mode


def padding_arg(pads):
    pairs = tuple(zip(pads[0::2], pads[1::2]))
    return tuple(b for b, _ in pairs) if all(b == a for b, a in pairs) else pairs


def tolerance(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------
# max / avg through the dispatcher, every ISA


@pytest.mark.parametrize("rank, layout", CASES)
@pytest.mark.parametrize("seed", range(6))
def test_max_pool_random(isa, rank, layout, seed):
    max_pool = FUNCTIONS[rank][0]
    for _, x, kernel, stride, dilation, pads, ceil_mode in random_problems(rank, "max", seed, nan=seed % 3 == 0):
        dtype = x.dtype
        want, want_idx = ref_pool_nd(x.astype(np.float64), "max", kernel, stride, pads, dilation, ceil_mode)
        y, idx = max_pool(to_layout(x, layout), kernel, stride, padding_arg(pads), dilation, ceil_mode,
                          return_indices=True, layout=layout)
        assert y.dtype == dtype and idx.dtype == np.int64
        np.testing.assert_array_equal(from_layout(y, layout), want.astype(dtype))
        np.testing.assert_array_equal(from_layout(idx, layout), want_idx)
        np.testing.assert_array_equal(max_pool(to_layout(x, layout), kernel, stride, padding_arg(pads), dilation,
                                               ceil_mode, layout=layout), y)


@pytest.mark.parametrize("rank, layout", CASES)
@pytest.mark.parametrize("seed", range(6))
def test_avg_pool_random(isa, rank, layout, seed):
    avg_pool = FUNCTIONS[rank][1]
    for rng, x, kernel, stride, _, pads, ceil_mode in random_problems(rank, "avg", seed):
        cip = bool(rng.integers(0, 2))
        divisor = [None, None, 3, -2][int(rng.integers(0, 4))]
        dtype = x.dtype
        want, _ = ref_pool_nd(x.astype(np.float64), "avg", kernel, stride, pads, (1,) * rank, ceil_mode, cip, divisor)
        y = avg_pool(to_layout(x, layout), kernel, stride, padding_arg(pads), ceil_mode, cip, divisor, layout=layout)
        np.testing.assert_allclose(from_layout(y, layout), want, **tolerance(dtype))


@pytest.mark.parametrize("layout", RANK_LAYOUTS[3])
@pytest.mark.parametrize("width", [1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 65])
def test_3d_widths_around_vectors(isa, layout, width):
    """Rows and channel runs of every length around the SIMD widths, at strides 1 and 2 (the
    float rows kernel's register-blocked paths) and with indices (its generic path)."""
    rng = make_rng("widths", layout, width)
    shape = (1, 3, 4, 5, width) if layout == "NCDHW" else (1, width, 4, 5, 3)
    x = random_input(rng, shape, np.float32)
    x_cf = from_layout(x, layout).astype(np.float64)
    for kernel, stride, pads, dilation in (((2, 3, 3), (1, 1, 1), (0, 1, 1, 1, 1, 1), (1, 1, 1)),
                                           ((3, 3, 3), (2, 2, 2), (1, 1, 1, 1, 1, 1), (1, 1, 1)),
                                           ((2, 2, 2), (2, 2, 2), (0,) * 6, (1, 1, 1)),
                                           ((2, 3, 1), (2, 2, 1), (0, 0, 1, 1, 0, 0), (2, 1, 1))):
        if any(x_cf.shape[2 + a] + pads[2 * a] + pads[2 * a + 1] < dilation[a] * (kernel[a] - 1) + 1 for a in range(3)):
            continue
        want, want_idx = ref_pool_nd(x_cf, "max", kernel, stride, pads, dilation)
        y, idx = cppconv.max_pool3d(x, kernel, stride, padding_arg(pads), dilation, return_indices=True, layout=layout)
        np.testing.assert_array_equal(from_layout(y, layout), want.astype(np.float32))
        np.testing.assert_array_equal(from_layout(idx, layout), want_idx)
        y_plain = cppconv.max_pool3d(x, kernel, stride, padding_arg(pads), dilation, layout=layout)
        np.testing.assert_array_equal(y_plain, y)
        if dilation != (1, 1, 1):
            continue
        for cip in (True, False):
            want, _ = ref_pool_nd(x_cf, "avg", kernel, stride, pads, (1, 1, 1), count_include_pad=cip)
            y = cppconv.avg_pool3d(x, kernel, stride, padding_arg(pads), count_include_pad=cip, layout=layout)
            np.testing.assert_allclose(from_layout(y, layout), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layout", RANK_LAYOUTS[1])
@pytest.mark.parametrize("length", [1, 2, 7, 8, 9, 16, 17, 33, 100])
def test_1d_lengths_around_vectors(isa, layout, length):
    rng = make_rng("lengths", layout, length)
    x = random_input(rng, (2, 5, length), np.float32)
    xl = to_layout(x, layout)
    for k, s, p in ((1, 1, 0), (2, 2, 0), (3, 1, 1), (3, 2, 1), (4, 3, 2)):
        if length + 2 * p < k:
            continue
        want, want_idx = ref_pool_nd(x.astype(np.float64), "max", (k,), (s,), (p, p), (1,))
        y, idx = cppconv.max_pool1d(xl, k, s, p, return_indices=True, layout=layout)
        np.testing.assert_array_equal(from_layout(y, layout), want.astype(np.float32))
        np.testing.assert_array_equal(from_layout(idx, layout), want_idx)
        np.testing.assert_array_equal(cppconv.max_pool1d(xl, k, s, p, layout=layout), y)
        want, _ = ref_pool_nd(x.astype(np.float64), "avg", (k,), (s,), (p, p), (1,))
        np.testing.assert_allclose(from_layout(cppconv.avg_pool1d(xl, k, s, p, layout=layout), layout), want,
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rank, layout", CASES)
def test_ceil_mode_edges(isa, rank, layout):
    """Windows hanging past the padding (dropped when they would start in the right padding),
    a dilated window longer than the padded input, and a window wholly in the padding."""
    max_pool, avg_pool = FUNCTIONS[rank]
    rng = make_rng("ceil-nd", rank)
    for size, k, s, p, d in ((5, 2, 2, 0, 1), (6, 3, 2, 1, 1), (4, 3, 3, 1, 1), (2, 3, 2, 1, 2), (7, 2, 3, 1, 1),
                             (1, 3, 5, 1, 1), (3, 4, 4, 2, 1)):
        sizes = (size,) * rank
        x = random_input(rng, (2, 2) + sizes, np.float64)
        xl = to_layout(x, layout)
        kern, strd, dil, pads = (k,) * rank, (s,) * rank, (d,) * rank, (p,) * (2 * rank)
        want, want_idx = ref_pool_nd(x, "max", kern, strd, pads, dil, True)
        y, idx = max_pool(xl, k, s, p, d, True, return_indices=True, layout=layout)
        np.testing.assert_array_equal(from_layout(y, layout), want)
        np.testing.assert_array_equal(from_layout(idx, layout), want_idx)
        for cip in (True, False):
            want, _ = ref_pool_nd(x, "avg", kern, strd, pads, (1,) * rank, True, cip)
            if d == 1:
                y = avg_pool(xl, k, s, p, True, cip, layout=layout)
                np.testing.assert_allclose(from_layout(y, layout), want, rtol=1e-12)
        assert y.shape[2 if not channels_last(layout) else 1] == cppconv.pool_output_size(size, k, s, p, d, True)


@pytest.mark.parametrize("rank, layout", CASES)
def test_asymmetric_and_same_padding(isa, rank, layout):
    rng = make_rng("same-nd", rank)
    max_pool, avg_pool = FUNCTIONS[rank]
    sizes = (7, 6, 9)[-rank:]
    x = random_input(rng, (2, 3) + sizes, np.float64)
    xl = to_layout(x, layout)
    pads = (0, 1, 1, 0, 1, 1)[-2 * rank:]
    kernel = (2, 3, 2)[-rank:]
    pairs = tuple(zip(pads[0::2], pads[1::2]))
    want, want_idx = ref_pool_nd(x, "max", kernel, (1,) * rank, pads, (1,) * rank)
    y, idx = max_pool(xl, kernel, 1, pairs, return_indices=True, layout=layout)
    np.testing.assert_array_equal(from_layout(y, layout), want)
    np.testing.assert_array_equal(from_layout(idx, layout), want_idx)
    # "same" at stride 2: output ceil(I / 2), the odd padding after.
    y = avg_pool(xl, 3, 2, "same", count_include_pad=False, layout=layout)
    same = tuple(v for i in sizes for v in ((max((-(-i // 2) - 1) * 2 + 3 - i, 0)) // 2,
                                            (max((-(-i // 2) - 1) * 2 + 3 - i, 0) + 1) // 2))
    want, _ = ref_pool_nd(x, "avg", (3,) * rank, (2,) * rank, same, (1,) * rank, count_include_pad=False)
    np.testing.assert_allclose(from_layout(y, layout), want, rtol=1e-12)
    assert y.shape == to_layout(want, layout).shape


# ------------------------------------------------------------------------------------------
# every algorithm by name (all ISAs' kernels and the C++ reference)


def run_named(rank, kind, x, kernel, stride, pads, dilation, ceil_mode, cip, divisor, layout, name, indices):
    """The pool through the algorithm `name`, or None when it does not accept the problem."""
    spec = _pool._PoolSpec(kind, kernel, stride, padding_arg(pads), dilation, ceil_mode, cip, divisor, layout, rank)
    try:
        return _pool._run_pool(spec, x, None, indices, algorithm=name)
    except ValueError as e:
        assert "does not accept" in str(e)
        return None


@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("seed", range(3))
def test_every_pool_algorithm(rank, seed):
    rng = make_rng("algorithms-nd", rank, seed)
    ran = set()
    for case in range(6):
        kind = ("max", "avg")[case % 2]
        sizes, kernel, stride, dilation, pads = random_case(rng, rank, kind, max_size=11)
        ceil_mode, cip = bool(rng.integers(0, 2)), bool(rng.integers(0, 2))
        divisor = 3 if kind == "avg" and case == 5 else None
        x = random_input(rng, (2, 3) + sizes, np.float64, nan=kind == "max" and seed == 1)
        want, want_idx = ref_pool_nd(x, kind, kernel, stride, pads, dilation, ceil_mode, cip, divisor)
        for layout in RANK_LAYOUTS[rank]:
            for name in _native.pool_algorithms():
                dtype = np.float32 if "_f32" in name else np.float64
                xl = to_layout(x, layout).astype(dtype)
                got = run_named(rank, 0 if kind == "max" else 1, xl, kernel, stride, pads, dilation, ceil_mode, cip,
                                divisor, layout, name, kind == "max")
                if got is None:
                    continue
                ran.add(name)
                y, idx = got if kind == "max" else (got, None)
                np.testing.assert_allclose(from_layout(y, layout), want, err_msg=name, **tolerance(dtype))
                if idx is not None and dtype == np.float64:
                    np.testing.assert_array_equal(from_layout(idx, layout), want_idx, err_msg=name)
            for name in _native.pool_algorithms():
                dtype = np.float32 if "_f32" in name else np.float64
                xl = to_layout(x, layout).astype(dtype)
                for size in ((3,) * rank, (1,) * rank):
                    akind = 0 if kind == "max" else 1
                    try:
                        got = _pool._run_adaptive(akind, xl, size, layout, akind == 0, algorithm=name, rank=rank)
                    except ValueError as e:
                        assert "does not accept" in str(e)
                        continue
                    ran.add(name)
                    want_a, want_ai = ref_pool_nd(x, kind, None, None, None, None, adaptive_size=size)
                    y, idx = got if akind == 0 else (got, None)
                    np.testing.assert_allclose(from_layout(y, layout), want_a, err_msg=name, **tolerance(dtype))
                    if idx is not None and dtype == np.float64:
                        np.testing.assert_array_equal(from_layout(idx, layout), want_ai, err_msg=name)
    assert ran == set(_native.pool_algorithms())


# ------------------------------------------------------------------------------------------
# adaptive and global


@pytest.mark.parametrize("rank, layout", CASES)
@pytest.mark.parametrize("seed", range(3))
def test_adaptive_random(isa, rank, layout, seed):
    rng = make_rng("adaptive-nd", rank, seed)
    fns = {1: (cppconv.adaptive_max_pool1d, cppconv.adaptive_avg_pool1d),
           3: (cppconv.adaptive_max_pool3d, cppconv.adaptive_avg_pool3d)}[rank]
    for _ in range(3):
        sizes = tuple(int(v) for v in rng.integers(1, 12, rank))
        out = tuple(int(v) for v in rng.integers(1, 7, rank))
        x = random_input(rng, (2, 3) + sizes, np.float64, nan=seed == 2)
        xl = to_layout(x, layout)
        want, want_idx = ref_pool_nd(x, "max", None, None, None, None, adaptive_size=out)
        y, idx = fns[0](xl, out, return_indices=True, layout=layout)
        np.testing.assert_array_equal(from_layout(y, layout), want)
        np.testing.assert_array_equal(from_layout(idx, layout), want_idx)
        want, _ = ref_pool_nd(x, "avg", None, None, None, None, adaptive_size=out)
        np.testing.assert_allclose(from_layout(fns[1](xl, out, layout=layout), layout), want, rtol=1e-12)


def test_adaptive_none_entries_and_global():
    x = random_input(make_rng("adaptive-none"), (2, 3, 4, 5, 6), np.float64)
    assert cppconv.adaptive_avg_pool3d(x, (None, 2, None)).shape == (2, 3, 4, 2, 6)
    np.testing.assert_allclose(cppconv.global_avg_pool3d(x), x.mean(axis=(2, 3, 4), keepdims=True), rtol=1e-12)
    xl = to_layout(x, "NDHWC")
    np.testing.assert_allclose(cppconv.global_avg_pool3d(xl, layout="NDHWC"),
                               to_layout(x.mean(axis=(2, 3, 4), keepdims=True), "NDHWC"), rtol=1e-12)
    s = x[:, :, 0, 0]  # (2, 3, 6) sequences
    assert cppconv.adaptive_max_pool1d(s, (None,)).shape == (2, 3, 6)
    np.testing.assert_allclose(cppconv.global_avg_pool1d(s), s.mean(axis=2, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(cppconv.global_avg_pool1d(s.transpose(0, 2, 1), layout="NWC"),
                               s.mean(axis=2, keepdims=True).transpose(0, 2, 1), rtol=1e-12)


# ------------------------------------------------------------------------------------------
# unbatched, dtypes, out=, zero copy


@pytest.mark.parametrize("rank, layout", CASES)
def test_unbatched(rank, layout):
    rng = make_rng("unbatched-nd", rank)
    x = random_input(rng, (1, 4) + (6,) * rank, np.float32)
    xl = to_layout(x, layout)
    max_pool, avg_pool = FUNCTIONS[rank]
    y, idx = max_pool(xl[0], 3, 2, 1, return_indices=True, layout=layout)
    yb, idxb = max_pool(xl, 3, 2, 1, return_indices=True, layout=layout)
    np.testing.assert_array_equal(y, yb[0])
    np.testing.assert_array_equal(idx, idxb[0])
    np.testing.assert_array_equal(avg_pool(xl[0], 2, layout=layout), avg_pool(xl, 2, layout=layout)[0])
    adaptive = cppconv.adaptive_avg_pool1d if rank == 1 else cppconv.adaptive_avg_pool3d
    np.testing.assert_array_equal(adaptive(xl[0], 2, layout=layout), adaptive(xl, 2, layout=layout)[0])


@pytest.mark.parametrize("rank", [1, 3])
def test_dtypes(rank):
    x = np.arange(2 * 8 ** rank).reshape((1, 2) + (8,) * rank)
    x1 = x[:, :, :, 0, 0] if rank == 3 else x
    assert cppconv.max_pool1d(x1, 2).dtype == np.int64  # max pooling keeps integers, exactly
    assert cppconv.avg_pool1d(x1, 2).dtype == np.float64  # numpy.mean's float64
    for dtype in (np.float16, np.float32, np.float64):
        y = FUNCTIONS[rank][1](x.astype(dtype), 2)
        assert y.dtype == dtype
        want, _ = ref_pool_nd(x.astype(np.float64), "avg", (2,) * rank, (2,) * rank, (0,) * (2 * rank), (1,) * rank)
        np.testing.assert_allclose(y, want, rtol=1e-3)


@pytest.mark.parametrize("rank, layout", CASES)
def test_out(rank, layout):
    rng = make_rng("out-nd", rank)
    xl = to_layout(random_input(rng, (2, 3) + (6,) * rank, np.float32), layout)
    max_pool, avg_pool = FUNCTIONS[rank]
    want, want_idx = max_pool(xl, 2, return_indices=True, layout=layout)
    values, indices = np.empty_like(want), np.empty_like(want_idx)
    got = max_pool(xl, 2, return_indices=True, layout=layout, out=(values, indices))
    assert got[0] is values and got[1] is indices
    np.testing.assert_array_equal(values, want)
    np.testing.assert_array_equal(indices, want_idx)
    out64 = np.empty(want.shape, np.float64)
    with pytest.raises(TypeError, match="out"):
        avg_pool(xl, 2, layout=layout, out=out64)
    strided = np.empty(want.shape + (2,), np.float32)[..., 0]  # not contiguous: written through a copy
    assert avg_pool(xl, 2, layout=layout, out=strided) is strided
    np.testing.assert_allclose(strided, avg_pool(xl, 2, layout=layout))


@pytest.mark.parametrize("rank", [1, 3])
def test_zero_copy(monkeypatch, rank):
    """Every rank reaches the native pool as is, without a copy."""
    x = np.ones((1, 2) + (4,) * rank, np.float32)
    seen = []
    real = _native.pool

    def spy(xin, *args):
        seen.append(xin)
        return real(xin, *args)

    monkeypatch.setattr(_native, "pool", spy)
    FUNCTIONS[rank][0](x, 2)
    assert np.shares_memory(seen[0], x)
    assert seen[0].ndim == rank + 2


# ------------------------------------------------------------------------------------------
# layers


def test_layers():
    rng = make_rng("layers-nd")
    x1 = random_input(rng, (2, 3, 11), np.float32)
    x3 = random_input(rng, (2, 3, 5, 6, 7), np.float32)
    layers = [
        (cppconv.MaxPool1d(3, 2, 1, ceil_mode=True), x1, lambda x: cppconv.max_pool1d(x, 3, 2, 1, ceil_mode=True)),
        (cppconv.AvgPool1d(2, layout="NWC"), to_layout(x1, "NWC"), lambda x: cppconv.avg_pool1d(x, 2, layout="NWC")),
        (cppconv.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1), return_indices=True), x3,
         lambda x: cppconv.max_pool3d(x, (1, 3, 3), (1, 2, 2), (0, 1, 1), return_indices=True)),
        (cppconv.AvgPool3d(2, count_include_pad=False, divisor_override=3), x3,
         lambda x: cppconv.avg_pool3d(x, 2, count_include_pad=False, divisor_override=3)),
        (cppconv.AdaptiveAvgPool1d(4), x1, lambda x: cppconv.adaptive_avg_pool1d(x, 4)),
        (cppconv.AdaptiveMaxPool1d(4, return_indices=True), x1,
         lambda x: cppconv.adaptive_max_pool1d(x, 4, return_indices=True)),
        (cppconv.AdaptiveAvgPool3d((2, None, 3), layout="NDHWC"), to_layout(x3, "NDHWC"),
         lambda x: cppconv.adaptive_avg_pool3d(x, (2, None, 3), layout="NDHWC")),
        (cppconv.AdaptiveMaxPool3d(2), x3, lambda x: cppconv.adaptive_max_pool3d(x, 2)),
    ]
    for layer, x, call in layers:
        want = call(x)
        for copied in (layer, pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer)):
            got = copied(x)
            for a, b in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
                np.testing.assert_array_equal(a, b)
            assert repr(copied) == repr(layer)
        assert repr(layer).startswith(type(layer).__name__ + "(")
    m = cppconv.MaxPool3d(2)
    assert m.kernel_size == (2, 2, 2) and m.stride == (2, 2, 2) and m.padding == (0, 0, 0) and m.layout == "NCDHW"
    assert cppconv.AvgPool1d(3).layout == "NCW" and cppconv.AvgPool1d(3).kernel_size == (3,)
    assert cppconv.AdaptiveMaxPool3d((1, None, 2)).output_size == (1, None, 2)
    for layer, name in ((m, "kernel_size"), (cppconv.AdaptiveAvgPool1d(2), "output_size"),
                        (cppconv.AdaptiveMaxPool1d(2), "return_indices"), (cppconv.AvgPool1d(2), "divisor_override")):
        with pytest.raises(AttributeError, match="read-only"):
            setattr(layer, name, 1)
    with pytest.raises(ValueError, match="layout"):
        cppconv.MaxPool1d(2, layout="NCHW")
    with pytest.raises(ValueError, match="output_size"):
        cppconv.AdaptiveAvgPool3d((1, 2))


# ------------------------------------------------------------------------------------------
# sizes and errors


def test_pool_output_size_any_rank():
    assert cppconv.pool_output_size((16, 112, 112), (1, 3, 3), (1, 2, 2), (0, 1, 1)) == (16, 56, 56)
    assert cppconv.pool_output_size((5,), 2, ceil_mode=True) == (3,)
    assert cppconv.pool_output_size([9, 9], 3, 1, 0, (1, 2)) == (7, 5)
    with pytest.raises(ValueError, match="kernel_size"):
        cppconv.pool_output_size((4, 4, 4), (2, 2))
    with pytest.raises(ValueError, match="output size below 1"):
        cppconv.pool_output_size((4, 1), 2)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda x1, x3: cppconv.max_pool1d(x3, 2), ValueError, r"max_pool1d takes x of shape .*use max_pool3d"),
        (lambda x1, x3: cppconv.avg_pool3d(x1, 2), ValueError, r"avg_pool3d takes x .*use avg_pool1d"),
        (lambda x1, x3: cppconv.max_pool3d(x3[0, 0], 2), ValueError,
         r"use max_pool1d \(batched\) or max_pool2d \(unbatched\)"),
        (lambda x1, x3: cppconv.adaptive_avg_pool1d(x3, 2), ValueError, "use adaptive_avg_pool3d"),
        (lambda x1, x3: cppconv.adaptive_max_pool3d(x1[0, 0], 2), ValueError, "adaptive_max_pool3d takes x"),
        (lambda x1, x3: cppconv.max_pool3d(x3, 3, padding=(0, 2, 0)), ValueError, "at most half"),
        (lambda x1, x3: cppconv.max_pool1d(x1, 3, padding=((1, 2),)), ValueError, "at most half"),
        (lambda x1, x3: cppconv.max_pool3d(x3, (2, 2)), ValueError, "kernel_size must be an int or 3 ints"),
        (lambda x1, x3: cppconv.avg_pool1d(x1, 2, (1, 1)), ValueError, "stride"),
        (lambda x1, x3: cppconv.max_pool3d(x3, 2, dilation=0), ValueError, "dilation"),
        (lambda x1, x3: cppconv.max_pool3d(x3, (5, 1, 1)), ValueError, "along the depth"),
        (lambda x1, x3: cppconv.max_pool1d(x1, 2, dilation=9), ValueError, "along the length"),
        (lambda x1, x3: cppconv.avg_pool3d(x3, 2, divisor_override=0), ValueError, "divisor_override"),
        (lambda x1, x3: cppconv.max_pool1d(x1, 2, layout="NCHW"), ValueError, "'NCW' or 'NWC'"),
        (lambda x1, x3: cppconv.avg_pool3d(x3, 2, layout="NHWC"), ValueError, "'NCDHW' or 'NDHWC'"),
        (lambda x1, x3: cppconv.max_pool3d(x3[:, :, :0], 1), ValueError, "empty spatial dimension: depth 0"),
        (lambda x1, x3: cppconv.adaptive_avg_pool3d(x3, (1, 2)), ValueError, "output_size"),
        (lambda x1, x3: cppconv.adaptive_avg_pool1d(x1, 0), ValueError, "output_size"),
        (lambda x1, x3: cppconv.max_pool3d(x3, 2.5), TypeError, "kernel_size"),
        (lambda x1, x3: cppconv.avg_pool1d(x1, 2, out=np.empty((2, 3, 3), np.float32)), ValueError, "out"),
        (lambda x1, x3: cppconv.avg_pool3d(x3, 2, return_indices=True), TypeError, "return_indices"),
    ],
)
def test_bad_input(call, exc, match):
    x1 = np.zeros((2, 3, 8), np.float32)
    x3 = np.zeros((2, 3, 4, 6, 6), np.float32)
    with pytest.raises(exc, match=match):
        call(x1, x3)


def test_native_boundary_checks():
    x = np.zeros((1, 2, 4, 4, 4), np.float32)

    def settings(kernel=(2, 2, 2)):
        return _native.PoolSettings(0, kernel, (2, 2, 2), (0,) * 6, (1, 1, 1), False, True, 0, 0)

    with pytest.raises(ValueError, match="out"):
        _native.pool(x, np.empty((1, 2, 2, 2, 3), np.float32), None, settings())
    with pytest.raises(ValueError, match="dimensions"):
        _native.pool(x, np.empty((1, 2, 2, 2), np.float32), None, settings())
    with pytest.raises(ValueError, match="indices"):
        _native.pool(x, np.empty((1, 2, 2, 2, 2), np.float32), np.empty((1, 2, 2, 2, 1), np.int64), settings())
    with pytest.raises(ValueError, match=">= 1"):
        settings((0, 2, 2))
    with pytest.raises(ValueError, match="below 1"):
        _native.pool(x, np.empty((1, 2, 1, 1, 1), np.float32), None, settings((9, 2, 2)))
    with pytest.raises(ValueError, match="algorithm"):
        _native.adaptive_pool(x, np.empty((1, 2, 2, 2, 2), np.float32), None, 1, 0, "no_such_algorithm")


def test_threads_agree(restore_threads):
    x = random_input(make_rng("threads-nd"), (2, 8, 10, 24, 24), np.float32)
    results = []
    for n in (1, 3):
        cppconv.set_num_threads(n)
        results.append([cppconv.max_pool3d(x, 3, 2, 1, return_indices=True)[1], cppconv.avg_pool3d(x, 2),
                        cppconv.max_pool3d(to_layout(x, "NDHWC"), 2, layout="NDHWC")])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_num_threads_per_call():
    x = random_input(make_rng("num-threads-nd"), (2, 8, 6, 20, 20), np.float32)
    s = x[:, :, 0]  # (2, 8, 20, 20) -> sequences below
    calls = [
        lambda n: cppconv.max_pool3d(x, 3, 2, 1, return_indices=True, num_threads=n)[1],
        lambda n: cppconv.avg_pool3d(to_layout(x, "NDHWC"), 2, layout="NDHWC", num_threads=n),
        lambda n: cppconv.adaptive_avg_pool3d(x, (2, 3, 5), num_threads=n),
        lambda n: cppconv.global_avg_pool3d(x, num_threads=n),
        lambda n: cppconv.max_pool1d(s[:, :, 0], 3, 1, 1, num_threads=n),
        lambda n: cppconv.adaptive_max_pool1d(s[:, :, 0], 7, num_threads=n),
        lambda n: cppconv.max_pool2d(s, 3, 2, 1, num_threads=n),
        lambda n: cppconv.MaxPool3d(2)(x, num_threads=n),
        lambda n: cppconv.AdaptiveAvgPool1d(4)(s[:, :, 0], num_threads=n),
    ]
    for call in calls:
        np.testing.assert_array_equal(call(1), call(3))
        np.testing.assert_array_equal(call(None), call(2))
        with pytest.raises(ValueError, match="num_threads"):
            call(0)
