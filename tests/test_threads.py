"""Threads: cppconv's own thread count, and Python threads calling it at once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import cppconv

from conftest import assert_close, make_rng
from reference import conv2d_abs_bound, conv2d_ref, resolve_padding


def test_num_threads_round_trip(restore_threads):
    assert isinstance(cppconv.get_num_threads(), int) and cppconv.get_num_threads() >= 1
    for n in (1, 2, 3, 7, 1):
        cppconv.set_num_threads(n)
        assert cppconv.get_num_threads() == n


@pytest.mark.parametrize("n", [0, -1])
def test_num_threads_below_one(restore_threads, n):
    cppconv.set_num_threads(2)
    with pytest.raises(ValueError):
        cppconv.set_num_threads(n)
    assert cppconv.get_num_threads() == 2


# Problems big enough that the library uses more than one thread when it may.
PROBLEMS = [
    dict(x=(2, 16, 32, 32), w=(32, 16, 3, 3), kw=dict(padding=1), dtype=np.float32),
    dict(x=(2, 16, 32, 32), w=(32, 16, 3, 3), kw=dict(padding=1), dtype=np.float64),
    dict(x=(1, 40, 40, 24), w=(40, 24, 3, 3), kw=dict(padding="same", layout="NHWC", activation="relu"),
         dtype=np.float32),
    dict(x=(3, 32, 30, 30), w=(32, 1, 5, 5), kw=dict(padding=2, groups=32, padding_mode="reflect"),
         dtype=np.float32),
    dict(x=(1, 8, 64, 64), w=(16, 8, 3, 3), kw=dict(stride=2, padding=1), dtype=np.float16),
]


def _problem_arrays(i):
    p = PROBLEMS[i]
    rng = make_rng("threads", i)
    x = rng.standard_normal(p["x"]).astype(p["dtype"])
    w = rng.standard_normal(p["w"]).astype(p["dtype"])
    b = rng.standard_normal(p["w"][0]).astype(p["dtype"])
    return x, w, b, p["kw"]


@pytest.mark.parametrize("i", range(len(PROBLEMS)))
def test_one_thread_equals_two(isa, restore_threads, i):
    x, w, b, kw = _problem_arrays(i)
    cppconv.set_num_threads(1)
    y1 = cppconv.conv2d(x, w, b, **kw)
    cppconv.set_num_threads(2)
    y2 = cppconv.conv2d(x, w, b, **kw)
    cppconv.set_num_threads(3)
    y3 = cppconv.conv2d(x, w, b, **kw)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(y1, y3)
    layer = cppconv.Conv2d(w, b, **kw)
    cppconv.set_num_threads(1)
    l1 = layer(x)
    cppconv.set_num_threads(2)
    l2 = layer(x)
    np.testing.assert_array_equal(l1, l2)
    np.testing.assert_array_equal(l1, y1)


@pytest.mark.parametrize("shape, k, stride, activation", [
    ((1, 7, 7, 96), 5, 1, "hardswish"),  # one 7-row band before the split: one per thread now
    ((2, 7, 7, 40), 3, 1, None),          # a partial channel block (40 = 2 x 16 + 8) tiled
    ((1, 14, 14, 64), 3, 2, "relu"),      # stride 2 to a 7x7 plane
    ((1, 3, 5, 33), 3, 1, None),          # fewer rows than threads x 2
    ((1, 2, 9, 16), 5, 1, None),          # kernel taller than the plane
])
def test_small_channels_last_depthwise_planes_split_between_threads(isa, restore_threads, shape, k, stride,
                                                                    activation):
    """A small NHWC depthwise plane read in place is split into a band of rows per thread: the
    result matches the float64 reference and is the same on 1, 2 and 3 threads."""
    rng = make_rng("small depthwise", shape, k, stride)
    n, h, w_, c = shape
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((c, 1, k, k)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    kw = dict(stride=stride, padding=k // 2, groups=c, layout="NHWC", activation=activation)
    layer = cppconv.Conv2d(w, b, **kw)
    if isa != "baseline":  # (the SIMD ISAs' depthwise kernel; the baseline runs the reference's tiles)
        assert layer.explain(shape)["algorithm"].startswith("conv2d_depthwise_cblock_f32")
    results = [layer(x, num_threads=t) for t in (1, 2, 3)]
    x_nchw = x.transpose(0, 3, 1, 2)
    pads = (k // 2,) * 4
    ref = conv2d_ref(x_nchw, w, b, stride, pads, 1, c, activation=activation).transpose(0, 2, 3, 1)
    bound = conv2d_abs_bound(x_nchw, w, b, stride, pads, 1, c, activation=activation).transpose(0, 2, 3, 1)
    assert_close(results[0], ref, bound, np.float32)
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


@pytest.mark.skipif(not cppconv.info()["openmp"], reason="built without OpenMP: one thread")
@pytest.mark.parametrize("dtype", [np.float32, np.int8])
def test_fully_connected_layer_splits_its_weights_between_threads(restore_threads, dtype):
    """A fully connected layer at batch 1 has little arithmetic (1 MFLOP) but streams 2 MiB of
    weights: the thread count counts them, so two threads each keep half in their own cache,
    and the result is the one thread's."""
    rng = make_rng("fully connected", np.dtype(dtype).name)
    m, k = 1000, 512
    x = rng.standard_normal((1, 1, k)).astype(np.float32)
    w = rng.standard_normal((m, k, 1)).astype(np.float32)
    if dtype == np.int8:
        qx = cppconv.quantize_linear(x, 0.05, np.uint8(128))
        qw = cppconv.quantize_linear(w, 0.02, np.int8(0), dtype=np.int8)
        layer = cppconv.QConv1d(0.05, np.uint8(128), qw, 0.02, np.int8(0), 0.5, np.uint8(128), layout="NWC")
        x = qx
    else:
        layer = cppconv.Conv1d(w, layout="NWC")
    cppconv.set_num_threads(2)
    assert layer.explain(x.shape)["threads"] == 2
    cppconv.set_num_threads(1)
    assert layer.explain(x.shape)["threads"] == 1
    np.testing.assert_array_equal(layer(x, num_threads=1), layer(x, num_threads=2))


def _run_threads(fns):
    """Runs each fn in its own Python thread, all released together; returns their results."""
    barrier = threading.Barrier(len(fns))
    results = [None] * len(fns)
    errors = []

    def wrap(k, fn):
        try:
            barrier.wait()
            results[k] = fn()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(k, fn)) for k, fn in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]
    return results


def test_two_python_threads_at_once():
    """Two threads convolving different inputs at the same time get the sequential results."""
    inputs = [_problem_arrays(i) for i in range(len(PROBLEMS))]
    sequential = [cppconv.conv2d(x, w, b, **kw) for x, w, b, kw in inputs]
    rounds = 6

    def worker(offset):
        def fn():
            got = []
            for r in range(rounds):
                k = (offset + r) % len(inputs)
                x, w, b, kw = inputs[k]
                got.append((k, cppconv.conv2d(x, w, b, **kw)))
            return got
        return fn

    for got in _run_threads([worker(0), worker(2)]):
        for k, y in got:
            np.testing.assert_array_equal(y, sequential[k])


def test_two_python_threads_share_a_layer():
    """One Conv2d layer called from two threads at once with different inputs."""
    rng = make_rng("shared-layer")
    w = rng.standard_normal((24, 12, 3, 3)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    layer = cppconv.Conv2d(w, b, padding=1, activation="silu")
    xs = [rng.standard_normal(s).astype(np.float32) for s in
          [(2, 12, 30, 30), (1, 12, 17, 45), (3, 12, 9, 9), (1, 12, 40, 20)]]
    sequential = [layer(x) for x in xs]

    def worker(offset):
        return lambda: [(k, layer(xs[k])) for k in [(offset + r) % len(xs) for r in range(8)]]

    for got in _run_threads([worker(0), worker(1)]):
        for k, y in got:
            np.testing.assert_array_equal(y, sequential[k])
    # And they are right.
    for x, y in zip(xs, sequential):
        pads = resolve_padding(1, x.shape[2:], w.shape[2:])
        ref = conv2d_ref(x, w, b, 1, pads, 1, 1, "zeros", "silu")
        bound = conv2d_abs_bound(x, w, b, 1, pads, 1, 1, "zeros", "silu")
        assert_close(y, ref, bound, np.float32)


def test_out_from_two_threads():
    """Threads writing into disjoint halves of one out array."""
    rng = make_rng("out-threads")
    x = rng.standard_normal((4, 8, 24, 24))
    w = rng.standard_normal((8, 8, 3, 3))
    out = np.zeros((4, 8, 24, 24))
    expected = cppconv.conv2d(x, w, padding=1)
    _run_threads([
        lambda: cppconv.conv2d(x[:2], w, padding=1, out=out[:2]),
        lambda: cppconv.conv2d(x[2:], w, padding=1, out=out[2:]),
    ])
    np.testing.assert_array_equal(out, expected)


def test_gil_released(restore_threads):
    """While one thread is inside a long convolution, another Python thread keeps running."""
    cppconv.set_num_threads(1)       # leave a core for the Python thread
    rng = make_rng("gil")
    w = rng.standard_normal((64, 64, 3, 3), dtype=np.float32)
    n = 2
    while True:         # a convolution that takes a while on this machine
        x = rng.standard_normal((n, 64, 64, 64), dtype=np.float32)
        t0 = time.perf_counter()
        cppconv.conv2d(x, w, padding=1)
        duration = time.perf_counter() - t0
        if duration >= 0.25 or n >= 128:
            break
        n *= 2

    done = threading.Event()

    def convolve():
        try:
            cppconv.conv2d(x, w, padding=1)
        finally:
            done.set()

    t = threading.Thread(target=convolve)
    stamps = []
    t.start()
    while not done.is_set():
        stamps.append(time.perf_counter())
        time.sleep(0.001)
    t.join()
    stamps.append(time.perf_counter())
    gaps = np.diff(stamps)
    assert len(stamps) > 10, f"the main thread ran {len(stamps)} times during a {duration:.3f} s conv"
    assert gaps.max() < 0.5 * duration, (
        f"the main thread stalled {gaps.max():.3f} s during a {duration:.3f} s conv: GIL held?")


def test_unknown_isa_cap_warns_and_caps_nothing():
    """CPPCONV_MAX_ISA with a name that is not an available ISA is reported, not silently ignored."""
    env = dict(os.environ, CPPCONV_MAX_ISA="avx-512")
    code = "import warnings, cppconv; print(cppconv.info()['isa'] == cppconv._native.default_isa())"
    p = subprocess.run([sys.executable, "-W", "always", "-c", code], env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert "CPPCONV_MAX_ISA='avx-512' names no ISA or feature level available" in p.stderr
    assert p.stdout.strip() == "True"


# The default thread count follows OpenMP's setting, as NumPy's OpenMP BLAS and PyTorch do:
# OMP_NUM_THREADS at start (Dask and joblib workers set it), then omp_set_num_threads
# (tests/test_threadpool.py); set_num_threads wins over both, and a forked child gets 1.
OMP_CHILD = textwrap.dedent("""
    import os, sys, cppconv
    big = ((8, 64, 56, 56), (64, 64, 3, 3))           # big enough for every thread allowed
    def counts():
        return (cppconv.get_num_threads(), cppconv.info()["threads"], cppconv.explain(*big, padding=1)["threads"])
    print("default", *counts())
    cppconv.set_num_threads(2)
    print("set", *counts())
    cppconv._native.reset_num_threads()
    print("reset", *counts())
    if hasattr(os, "fork"):  # (not on Windows)
        pid = os.fork()
        if pid == 0:
            os._exit(0 if counts() == (1, 1, 1) else 3)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
""")


def _run_with_omp_num_threads(value):
    env = dict(os.environ, OMP_NUM_THREADS=value)
    p = subprocess.run([sys.executable, "-c", OMP_CHILD], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    return dict((line.split()[0], [int(v) for v in line.split()[1:]]) for line in p.stdout.splitlines())


@pytest.mark.skipif(not cppconv.info()["openmp"], reason="a build without OpenMP runs one thread anyway")
@pytest.mark.parametrize("omp", [1, 3])
def test_omp_num_threads_sets_the_default(omp):
    got = _run_with_omp_num_threads(str(omp))
    assert got["default"] == [omp, omp, omp]
    assert got["set"] == [2, 2, 2]           # set_num_threads wins
    assert got["reset"] == [omp, omp, omp]   # and can be forgotten
    assert got.get("child", [0]) == [0]      # a forked child runs one thread whatever the setting
