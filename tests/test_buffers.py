"""Large results from kept buffers (cppconv._buffers): a buffer is handed out again only once
nothing else holds it, the numbers are those of a fresh array, and the buffers kept are
bounded and can be freed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import cppconv
from cppconv import _buffers

from conftest import make_rng

MiB = 1 << 20


def address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def test_recycled_buffers_are_handed_out_only_when_unshared():
    """A buffer comes back from the recycler only once it alone holds it (a reference, a view or
    a buffer export keeps it busy), for any shape that fills at least half of it; only
    `buffers` are kept, and small arrays are NumPy's own."""
    pool = _buffers.Recycler(buffers=2, smallest=64, max_bytes=1 << 30)
    a = pool.empty((3, 50), np.float32)
    assert a.shape == (3, 50) and a.dtype == np.float32 and a.flags.c_contiguous and a.flags.writeable
    buffer_a = id(a.base)  # (not the buffer itself: a reference would keep it busy)
    b = pool.empty((3, 50), np.float32)
    assert id(b.base) != buffer_a
    view = a[1:]
    del a
    assert id(pool.empty((3, 50), np.float32).base) != buffer_a  # the view holds it
    del view
    c = pool.empty((5, 15), np.float64)  # another shape and dtype that fits: the same bytes
    assert id(c.base) == buffer_a and c.shape == (5, 15) and c.dtype == np.float64
    del c
    under_half = pool.empty((20,), np.float32)  # 80 bytes: past `smallest`, under half of a's 600
    assert under_half.base is not None and id(under_half.base) != buffer_a
    del under_half
    held = memoryview(pool.empty((3, 50), np.float32))
    assert pool.empty((3, 50), np.float32).base is not held.obj.base  # exported: busy
    assert pool.empty((4,), np.float32).base is None  # under `smallest`: NumPy's
    assert len(pool._kept) == 2
    del b, held
    pool.clear()
    assert not pool._kept
    capped = _buffers.Recycler(buffers=8, smallest=64, max_bytes=1000)  # room for one 600-byte buffer
    first = capped.empty((150,), np.float32)
    second = capped.empty((150,), np.float32)  # the first is busy: a new one, not kept
    assert len(capped._kept) == 1 and capped._kept[0] is first.base
    del first, second
    third = capped.empty((200,), np.float32)  # 800 bytes: the free 600-byte one is dropped for it
    assert len(capped._kept) == 1 and capped._kept[0] is third.base
    assert capped.empty((300,), np.float32).base is None  # over max_bytes: NumPy's


def large_calls():
    """(name, call) pairs whose results are 8 MiB or more: one-shot functions and layers (whose
    one-step native path allocates its result itself), of several operations and ranks."""
    rng = make_rng("buffers")
    x2 = rng.standard_normal((1, 8, 256, 256)).astype(np.float32)
    w2 = rng.standard_normal((32, 8, 3, 3)).astype(np.float32)
    x3 = rng.standard_normal((1, 3, 8, 96, 96)).astype(np.float32)
    w3 = rng.standard_normal((32, 3, 3, 3, 3)).astype(np.float32)
    layer2, layer3 = cppconv.Conv2d(w2, padding=1), cppconv.Conv3d(w3, padding=1, layout="NCDHW")
    nhwc = cppconv.Conv2d(w2, padding=1, layout="NHWC")
    x2_last = np.ascontiguousarray(x2.transpose(0, 2, 3, 1))
    up = rng.standard_normal((8, 32, 2, 2)).astype(np.float32)
    return [
        ("conv2d", lambda: cppconv.conv2d(x2, w2, padding=1)),
        ("Conv2d", lambda: layer2(x2)),
        ("Conv2d NHWC", lambda: nhwc(x2_last)),
        ("Conv3d", lambda: layer3(x3)),
        ("conv2d float64", lambda: cppconv.conv2d(x2.astype(np.float64), w2.astype(np.float64), padding=1)),
        ("conv_transpose2d", lambda: cppconv.conv_transpose2d(x2, up, stride=2)),
        ("max_pool2d", lambda: cppconv.max_pool2d(np.repeat(x2, 8, axis=1), 3, stride=1, padding=1)),
    ]


@pytest.mark.parametrize("name, call", large_calls(), ids=[n for n, _ in large_calls()])
def test_a_large_result_reuses_a_freed_one_and_never_a_held_one(name, call):
    """The second call gets new memory while the first result is held; once the first result is
    gone, a later call reuses its memory; every result equals the first, bit for bit."""
    _buffers.release_buffers()
    first = call()
    assert first.nbytes >= 8 * MiB, name
    expected = first.copy()
    second = call()
    assert not np.shares_memory(first, second)
    np.testing.assert_array_equal(second, expected)
    where = address(first)
    del first
    third = call()
    assert address(third) == where, "a freed result's buffer is handed out again"
    np.testing.assert_array_equal(third, expected)
    view = third[..., 1:]
    del third
    fourth = call()
    assert not np.shares_memory(fourth, view), "a view keeps its buffer busy"
    np.testing.assert_array_equal(fourth, expected)
    np.testing.assert_array_equal(view, expected[..., 1:])


def test_small_results_are_numpys_own_and_release_frees_the_kept_buffers():
    x = np.ones((1, 3, 16, 16), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    assert cppconv.conv2d(x, w).flags.owndata
    assert cppconv.Conv2d(w)(x).flags.owndata
    big = cppconv.conv2d(np.ones((1, 1, 1100, 1100), np.float32), np.ones((2, 1, 1, 1), np.float32))
    assert big.nbytes >= 8 * MiB and _buffers.OUTPUTS._kept
    cppconv.release_buffers()
    assert not _buffers.OUTPUTS._kept
    assert np.all(big == 1)  # a result in use stays alive, its user's


def test_concurrent_callers_get_their_own_results():
    """Threads calling at once, each keeping some results and dropping others: no two results
    alive share memory, and each is right."""
    rng = make_rng("buffers-threads")
    x = rng.standard_normal((1, 4, 384, 384)).astype(np.float32)
    w = rng.standard_normal((16, 4, 3, 3)).astype(np.float32)
    layer = cppconv.Conv2d(w, padding=1)
    expected = layer(x)
    kept, errors = [], []

    def work(seed):
        try:
            for i in range(6):
                y = layer(x, num_threads=1) if (seed + i) % 2 else cppconv.conv2d(x, w, padding=1, num_threads=1)
                if not np.array_equal(y, expected):
                    errors.append("wrong result")
                if i % 3 == 0:
                    kept.append(y)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i, a in enumerate(kept):
        assert np.array_equal(a, expected)
        for b in kept[i + 1:]:
            assert not np.shares_memory(a, b)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_fork_while_another_thread_holds_the_recycler_lock():
    """The child of a fork made while another thread holds the recycler's lock still gets large
    results (the lock is made anew in the child)."""
    child = textwrap.dedent("""
        import os, threading, numpy as np, cppconv
        from cppconv import _buffers
        _buffers.OUTPUTS._lock.acquire()           # as another thread in the middle of a call
        pid = os.fork()
        if pid == 0:
            y = cppconv.conv2d(np.ones((1, 1, 1100, 1100), np.float32), np.ones((2, 1, 1, 1), np.float32))
            os._exit(0 if y.nbytes >= 8 << 20 and np.all(y == 1) else 3)
        _buffers.OUTPUTS._lock.release()
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    """)
    p = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "0", p.stdout + p.stderr


def test_a_call_made_inside_the_recycler_on_its_own_thread_does_not_wait_for_itself():
    """A garbage collector's finalizer or a signal handler runs on whatever thread allocates: one
    that calls cppconv for a large result while its thread is inside the recycler gets NumPy's
    array (it waited on the lock its own thread held, forever)."""
    pool = _buffers.Recycler(buffers=2, smallest=64, max_bytes=1 << 30)
    nested = []
    new_buffer = pool._new_buffer

    def allocate_inside(nbytes):  # (as a finalizer run by the allocation would)
        if not nested:
            nested.append(pool.empty((100,), np.float32))
        return new_buffer(nbytes)

    pool._new_buffer = allocate_inside
    done = []
    worker = threading.Thread(target=lambda: done.append(pool.empty((100,), np.float32)), daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive() and done and nested
    assert nested[0].base is None and not np.shares_memory(nested[0], done[0])


def test_a_recycler_no_one_holds_is_freed_with_its_buffers():
    """The registry of recyclers (for release_buffers and the fork hook) holds them weakly: a
    recycler and its kept buffers go when its owner drops it."""
    import gc
    import weakref

    pool = _buffers.Recycler(buffers=2, smallest=64, max_bytes=1 << 30)
    pool.empty((100,), np.float32)  # (one buffer kept)
    gone = weakref.ref(pool)
    del pool
    gc.collect()
    assert gone() is None
