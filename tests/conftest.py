"""Shared fixtures and helpers for the cppconv tests.

The `isa` fixture runs a test once per instruction set this machine supports, so the whole
correctness suite checks every kernel table, not only the one the dispatcher picks by default.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import cppconv
from cppconv import _native

ISAS = list(_native.available_isas())

# |y - ref| <= RTOL * bound + ATOL, where bound is conv2d_abs_bound (sum of |w| |x| + |bias|).
RTOL = {
    np.dtype(np.float16): 1e-2,
    np.dtype(np.float32): 1e-5,
    np.dtype(np.float64): 1e-12,
}
ATOL = 1e-30


@pytest.fixture(params=ISAS)
def isa(request):
    """Selects one available ISA for the test; the default comes back afterwards."""
    _native.select_isa(request.param)
    assert _native.selected_isa() == request.param
    try:
        yield request.param
    finally:
        _native.select_isa(_native.default_isa())


@pytest.fixture
def restore_threads():
    """Puts the thread setting back after a test that changes it (set_num_threads or not)."""
    before = cppconv.get_num_threads()
    was_set = _native.num_threads_is_set()
    try:
        yield before
    finally:
        if was_set:
            cppconv.set_num_threads(before)
        else:
            _native.reset_num_threads()


def make_rng(*keys):
    """A generator seeded from the keys (stable across runs and processes)."""
    return np.random.default_rng(zlib.crc32(repr(keys).encode()))


def random_array(rng, shape, dtype=np.float32, scale=1.0):
    """Random test data of a dtype: normal floats, small signed/unsigned integers, or bools."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind == "i":
        return rng.integers(-4, 5, size=shape).astype(dtype)
    if dtype.kind == "u":
        return rng.integers(0, 5, size=shape).astype(dtype)
    return (scale * rng.standard_normal(shape)).astype(dtype)


def assert_close(y, ref, bound, dtype, context=""):
    """y has `dtype` and ref's shape; NaN and +-Inf exactly where the float64 reference has them;
    elsewhere |y - ref| <= RTOL[dtype] * bound + ATOL."""
    dtype = np.dtype(dtype)
    ref = np.asarray(ref, np.float64)
    bound = np.broadcast_to(np.asarray(bound, np.float64), ref.shape)
    where = f" [{context}]" if context else ""
    assert isinstance(y, np.ndarray), f"result is {type(y).__name__}, not ndarray{where}"
    assert y.dtype == dtype, f"result dtype {y.dtype}, expected {dtype}{where}"
    assert y.shape == ref.shape, f"result shape {y.shape}, expected {ref.shape}{where}"
    y64 = y.astype(np.float64)

    nan_ref, nan_y = np.isnan(ref), np.isnan(y64)
    if not np.array_equal(nan_y, nan_ref):
        idx = np.argwhere(nan_y != nan_ref)[:5]
        raise AssertionError(
            f"NaN positions differ at {len(np.argwhere(nan_y != nan_ref))} places, first "
            f"{[tuple(i) for i in idx]}: y={[y64[tuple(i)] for i in idx]} ref={[ref[tuple(i)] for i in idx]}{where}")
    inf_ref, inf_y = np.isinf(ref), np.isinf(y64)
    if not np.array_equal(inf_y, inf_ref) or not np.array_equal(y64[inf_ref], ref[inf_ref]):
        idx = np.argwhere((inf_y != inf_ref) | (inf_ref & (y64 != ref)))[:5]
        raise AssertionError(
            f"Inf positions or signs differ, first {[tuple(i) for i in idx]}: "
            f"y={[y64[tuple(i)] for i in idx]} ref={[ref[tuple(i)] for i in idx]}{where}")

    finite = np.isfinite(ref)
    err = np.where(finite, np.abs(y64 - np.where(finite, ref, 0.0)), 0.0)
    tol = np.where(finite, RTOL[dtype] * np.where(finite, bound, 0.0) + ATOL, 1.0)
    bad = err > tol
    if bad.any():
        idx = np.argwhere(bad)[:5]
        ratio = float(np.max(err / tol))
        raise AssertionError(
            f"{int(bad.sum())} of {ref.size} values off by more than {RTOL[dtype]:g} * bound "
            f"(worst err/tol {ratio:.3g}); first {[tuple(i) for i in idx]}: "
            f"y={[y64[tuple(i)] for i in idx]} ref={[ref[tuple(i)] for i in idx]} "
            f"bound={[bound[tuple(i)] for i in idx]}{where}")
