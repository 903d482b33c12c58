"""The native side of a network's one-call run (cppconv.Network records its steps' native
calls into a _native.NetProgram and replays it): the recorded calls keep their operands alive
and repeat exactly, and the strided copy the networks' Concat steps use.  No ONNX here, so the
sanitizer builds run these (tools/sanitize.sh)."""

from __future__ import annotations

import gc
from typing import Any, List

import numpy as np
import pytest

import cppconv
from cppconv import _native

RNG = np.random.default_rng(7)


def _rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _calls(x: np.ndarray, program: Any) -> List[np.ndarray]:
    """One call of each binding that takes `program` (recorded where it is given), chained on
    x (N, 6, 6, 8) channels-last; their operands other than x and the outputs are made here, so
    the caller holds none of them.  Returns the outputs (the copy's written part)."""
    layer = cppconv.Conv2d(np.linspace(-1, 1, 8 * 8 * 9, dtype=np.float32).reshape(8, 8, 3, 3),
                           np.linspace(0, 1, 8, dtype=np.float32), padding=1, layout="NHWC")
    plan, (image, params, _) = layer._weights.forward
    scale, shift = np.linspace(0.5, 2, 8, dtype=np.float32), np.linspace(-1, 1, 8, dtype=np.float32)
    gate = np.linspace(0, 1, 2 * 8, dtype=np.float32).reshape(2, 1, 1, 8)
    low = np.array([0, 0, 1, 2, 3, 4, 5, 5], np.int64)
    high = np.minimum(low + 1, 5)
    frac = np.linspace(0, 1, 8, dtype=np.float32)
    c = plan.forward(x, None, image, params, 2, None, program)
    a = np.empty_like(c)
    _native.channel_affine(c, scale, shift, a, 72, 8, 1, True, 2, program)
    s = np.empty_like(a)
    _native.scale_channels(a, gate, s, 2, program)
    t = np.empty((2, 8, 36), np.float32)
    _native.transpose_matrices(s.reshape(2, 36, 8), t, 2, program)
    total = np.empty_like(c)
    _native.add(c, s, total, False, 2, program)
    pooled = np.empty((2, 3, 3, 8), np.float32)
    settings = _native.PoolSettings(0, [2, 2], [2, 2], [0, 0, 0, 0], [1, 1], False, True, 0, 1)
    _native.pool(total, pooled, None, settings, "", 2, program)
    mean = np.empty((2, 1, 1, 8), np.float32)
    _native.adaptive_pool(total, mean, None, 1, 1, "", 2, program)
    big = np.empty((2, 8, 8, 8), np.float32)
    _native.resize_2d(total, big, low, high, frac, low, high, frac, 2, program)
    joined = np.empty((2, 8, 8, 16), np.float32)
    _native.copy_strided(big, joined[..., 4:12], 2, program)
    return [t, pooled, mean, joined[..., 4:12]]


def test_program_replays_its_calls_with_operands_it_keeps_alive():
    """Every binding that takes `program` records its work; the program keeps the arrays (and
    the layer's plan) alive after the caller drops them, and a replay on changed input values
    gives the calls' results on them."""
    x = _rand(2, 6, 6, 8)
    want = [v.copy() for v in _calls(x, None)]
    want_next = [v.copy() for v in _calls(x + 1.0, None)]
    program = _native.NetProgram()
    got = _calls(x, program)
    gc.collect()  # (everything but x and the outputs is the program's alone now)
    assert len(program) == 9 and program.holds(x) == 1
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
        g[...] = np.nan
    program.run()
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    x += 1.0  # new input values, read in place by the replay
    program.run()
    for g, w in zip(got, want_next):
        np.testing.assert_array_equal(g, w)


def test_timed_replay_is_a_replay_with_a_time_per_call():
    """run_timed (tools/profile_network.py's step times) runs the same calls as run and returns
    one non-negative time per recorded call."""
    x = _rand(2, 6, 6, 8)
    want = [v.copy() for v in _calls(x + 1.0, None)]
    program = _native.NetProgram()
    got = _calls(x, program)
    x += 1.0
    times = program.run_timed()
    assert len(times) == len(program) == 9
    assert all(isinstance(t, float) and t >= 0 for t in times)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.uint8])
def test_copy_strided_is_numpy_assignment(dtype):
    """The networks' native copy (a Concat's inputs into their channels of the result, a
    channel shuffle's interleave): any shape and non-negative strides, as y[...] = x."""
    rng = np.random.default_rng(3)
    big = (rng.standard_normal((3, 5, 7, 24)) * 100).astype(dtype)
    for src, dst_shape, index in [
        (big[:, :, :, 4:9], (3, 5, 7, 17), (Ellipsis, slice(2, 7))),       # a channel slice
        (big[:, ::2, :, :6], (3, 3, 7, 6, 2), (Ellipsis, 1)),             # interleaved lanes
        (big[0], (5, 7, 24), (Ellipsis,)),                                 # contiguous
        (big[:, :, ::3, 1], (3, 5, 3), (Ellipsis,)),                       # strided everywhere
        (big[:0], (0, 5, 7, 24), (Ellipsis,)),                             # empty
    ]:
        y = np.zeros(dst_shape, dtype)
        want = y.copy()
        want[index] = src
        cppconv._native.copy_strided(np.asarray(src), y[index], 2)
        np.testing.assert_array_equal(y, want)
    with pytest.raises(ValueError, match="one shape"):
        cppconv._native.copy_strided(big, np.zeros((3, 5, 7, 23), dtype))
    with pytest.raises(TypeError, match="one dtype"):
        cppconv._native.copy_strided(big, np.zeros(big.shape, np.complex64))
    with pytest.raises(ValueError, match="overlap"):
        cppconv._native.copy_strided(big[..., :12], big[..., 12:][..., ::-1][..., ::-1])
    with pytest.raises(ValueError, match="negative"):
        cppconv._native.copy_strided(big, np.zeros(big.shape, dtype)[::-1])


def test_program_reads_an_input_in_place_unless_a_call_reads_its_own_array():
    """A recorded layout change that reads an input whole reads the caller's array at run time
    (no copy into the program's array); once another recorded call reads the program's array,
    run() copies the caller's values in first."""
    own = _rand(2, 3, 4)
    program = _native.NetProgram()
    program.set_inputs([own])
    moved = np.empty((2, 4, 3), np.float32)
    _native.transpose_matrices(own, moved, 1, program)
    given = _rand(2, 3, 4)
    before = own.copy()
    program.run([given])
    np.testing.assert_array_equal(moved, given.transpose(0, 2, 1))
    np.testing.assert_array_equal(own, before)  # not copied in
    total = np.empty_like(own)
    _native.add(own, own, total, False, 1, program)  # reads the program's array itself
    program.run([given])
    np.testing.assert_array_equal(own, given)
    np.testing.assert_array_equal(total, given + given)
    with pytest.raises(ValueError, match="shape or dtype"):
        program.run([given[:1]])
    with pytest.raises(ValueError, match="one array per input"):
        program.run([given, given])
