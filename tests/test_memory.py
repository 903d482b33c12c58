"""Memory: no growth over many calls, a per-call peak bounded by the output plus the workspace
that cppconv.explain reports (no im2col buffer of kh * kw times the input), and requests that
cannot be met refused with MemoryError naming the bytes.

Resident memory is measured in a child process, so that the rest of the test suite does not
blur the numbers: /proc/self/statm for the current resident set, VmHWM in /proc/self/status
(reset through /proc/self/clear_refs) for the peak.  Linux only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import cppconv

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")

MB = 1 << 20

PRELUDE = textwrap.dedent("""
    import json, os, numpy as np, cppconv
    PAGE = os.sysconf("SC_PAGE_SIZE")
    def rss():                       # resident bytes now
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE
    def reset_peak():                # VmHWM := the current RSS (Linux 4.0+)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    def peak():                      # resident high-water mark, bytes (not getrusage's ru_maxrss,
        with open("/proc/self/status") as f:          # which a child inherits from its parent)
            kb = next(line for line in f if line.startswith("VmHWM:")).split()[1]
        return int(kb) * 1024
""")


def run_child(body: str) -> dict:
    p = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(body)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_many_small_calls_leave_memory_flat():
    """100,000 tiny calls over every op: resident memory after them is within 5 MB of what it
    was after a warm-up (which lets caches and the allocator settle)."""
    r = run_child("""
        x = np.ones((1, 2, 6, 6), np.float32); w = np.ones((3, 2, 3, 3), np.float32)
        layer = cppconv.Conv2d(w, padding=1); up = cppconv.ConvTranspose2d(w.transpose(1, 0, 2, 3).copy())
        calls = [lambda: cppconv.conv2d(x, w),                     # the one-step native path
                 lambda: cppconv.conv2d(x, w, padding="same", padding_mode="reflect", activation="silu"),
                 lambda: layer(x), lambda: up(x[:, :, :3, :3]),
                 lambda: cppconv.max_pool2d(x, 2, return_indices=True),
                 lambda: cppconv.avg_pool2d(x, 3, 1, 1), lambda: cppconv.adaptive_avg_pool2d(x, 4),
                 lambda: cppconv.explain(x.shape, w.shape)]
        def run(n):
            for i in range(n):
                calls[i % len(calls)]()
        run(5000)
        before = rss()
        run(100_000)
        print(json.dumps({"before": before, "after": rss()}))
    """)
    growth = r["after"] - r["before"]
    assert growth < 5 * MB, f"resident memory grew {growth / MB:.1f} MB over 100,000 calls"


PEAK_CHILD = """
    cppconv.set_num_threads(2)
    k = {k}
    x = np.random.default_rng(0).standard_normal((1, 64, 128, 128)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((64, 64, k, k)).astype(np.float32)
    info = cppconv.explain(x.shape, w.shape, padding="same")
    cppconv.conv2d(np.ones((1, 64, 8, 8), np.float32), w[:, :, :1, :1])   # thread pool up
    start = rss()
    reset_peak()
    y = cppconv.conv2d(x, w, padding="same")
    print(json.dumps({{"growth": peak() - start, "out": y.nbytes, "workspace": info["workspace_bytes"],
                       "packed": info["packed_weight_bytes"]}}))
"""


def test_peak_memory_of_a_call_is_output_plus_workspace():
    """A 64 -> 64 channel layer on a 128 x 128 input: the peak resident growth during the call
    is at most output + workspace (as explain reports it) + packed weights + 4 MB of slack, and
    a 7x7 kernel needs hardly more than a 1x1 one (im2col would need 49 times the input, 200 MB,
    more)."""
    peaks = {k: run_child(PEAK_CHILD.format(k=k)) for k in (1, 7)}
    for k, r in peaks.items():
        bound = r["out"] + r["workspace"] + r["packed"] + 4 * MB
        assert r["growth"] <= bound, f"{k}x{k}: peak growth {r['growth'] / MB:.1f} MB > {bound / MB:.1f} MB ({r})"
    im2col = 64 * 49 * 128 * 128 * 4
    assert peaks[7]["growth"] - peaks[1]["growth"] < im2col / 10, peaks


def test_workspace_includes_padding_maps():
    """explain's workspace_bytes counts the padding index maps the kernels read, which grow with
    the padded size."""
    small = cppconv.explain((1, 1, 8, 8), (1, 1, 3, 3), padding=0)
    padded = cppconv.explain((1, 1, 8, 8), (1, 1, 3, 3), padding=1000)
    assert not padded["algorithm"].startswith("conv_reference"), padded
    assert padded["workspace_bytes"] - small["workspace_bytes"] >= 8 * 2 * 2000  # 8 bytes per padded row and column


def test_padding_the_stride_skips_costs_nothing():
    """A padding of 2^30 with a stride that skips it: a 3 x 3 result, of the corners of the
    padded plane (replicate padding).  The reference kernel takes it and works its few source
    rows and columns out without index maps (which would take 80 GB)."""
    x = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    w = np.full((1, 1, 1, 1), 2, np.float32)
    kwargs = dict(stride=2**30, padding=2**30, padding_mode="replicate")
    info = cppconv.explain(x.shape, w.shape, **kwargs)
    assert info["algorithm"] == "conv_reference_f32" and info["workspace_bytes"] < 1024, info
    corners = [0, 0, 2]  # padded rows (columns) 0, 2^30 and 2^31 replicate source 0, 0 and 2
    np.testing.assert_array_equal(cppconv.conv2d(x, w, **kwargs)[0, 0], 2 * x[0, 0][corners][:, corners])


def test_workspace_past_physical_memory_is_a_memory_error():
    """A kernel 2^20 tall at stride 2^20 over a padding of 2^40 (2^41 multiply-adds, most on
    zeros): a kernel that tiles it is in proportion to that work, but its index maps alone would
    take 16 TB.  Refused before anything is allocated, naming the bytes explain reports."""
    x, w = np.ones((1, 1, 1, 1), np.float32), np.ones((1, 1, 2**20, 1), np.float32)
    kwargs = dict(stride=(2**20, 1), padding=((2**40, 2**40), (0, 0)))
    need = cppconv.explain(x.shape, w.shape, **kwargs)["workspace_bytes"]
    assert need > cppconv._native.physical_memory_bytes()
    with pytest.raises(MemoryError, match=rf"cannot allocate {need} bytes for conv2d workspace"):
        cppconv.conv2d(x, w, **kwargs)


def test_unallocatable_input_copy_and_output():
    """An input view with zero strides and a gigantic shape: the output (or the contiguous copy
    of the input) cannot exist; MemoryError or ValueError says how big, nothing crashes."""
    x = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (1, 1, 2**20, 2**20), (0, 0, 0, 0))
    with pytest.raises(MemoryError, match=r"TiB|bytes"):
        cppconv.conv2d(x, np.ones((64, 1, 7, 7), np.float32))
    with pytest.raises(MemoryError, match=r"TiB|bytes"):
        cppconv.max_pool2d(x, 2)
    huge = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (1, 1, 2**30, 2**30), (0, 0, 0, 0))
    with pytest.raises(ValueError, match=r"64-bit"):
        cppconv.conv2d(huge, np.ones((2, 1, 1, 1), np.float32))


# Every kernel family, forced where the dispatcher would pick another, on a problem that needs
# at least 64 MiB of scratch (or of packed weights, or of a subsampled input copy) on two
# threads.  The operands are np.zeros (address space only, never touched) and every result goes
# to a preallocated `out`, so what fails under the limit is the call's own allocation.
RLIMIT_CHILD = """
    import resource
    from cppconv import _conv, _native
    cppconv.set_num_threads(2)
    Z = np.zeros
    def forced(prefix, x, w, out, **kw):  # each algorithm of the family that takes the problem
        takes = cppconv.explain(x.shape, w.shape, dtype=x.dtype, precision="high", **kw)["candidates"]
        found = [(n, lambda n=n: _conv._conv_with_algorithm(n, x, w, out=out, **kw))
                 for n in _native.conv_algorithms() if n.startswith(prefix) and n in takes]
        assert found or not any(n.startswith(prefix) for n in _native.conv_algorithms()), prefix
        return found
    dw_x, dw_y = Z((1, 8, 1401, 1401), "f"), Z((1, 8, 1, 1), "f")        # tiles as large as x
    rows_x, rows_y = Z((1, 1, 4001, 4001), "f"), Z((1, 1, 1, 1), "f")
    dense_x, dense_y = Z((1, 64, 701, 701), "f"), Z((1, 16, 3, 3), "f")  # padded: not read in place
    dense64_x, dense64_y = Z((1, 32, 701, 701)), Z((1, 16, 3, 3))
    pix_x, pix_y = Z((1, 4, 2001, 2001), "f"), Z((1, 4, 3, 3), "f")
    wino_x, wino_y = Z((1, 16384, 24, 24), "f"), Z((1, 16, 16, 16), "f")  # one block, 16384 channels
    sub_x, sub_y = Z((1, 64, 2048, 2048), "f"), Z((1, 16, 1024, 1024), "f")  # the subsampled copy
    pool_x, pool_y = Z((1, 1, 4001, 4001), "f"), Z((1, 1, 1, 1), "f")      # the stride-2 row split
    up_x, up_y = Z((1, 512, 256, 256), "f"), Z((1, 16, 256, 256), "f")     # the padded NHWC copy
    cases = (
        forced("conv2d_depthwise_cblock_f32", dw_x, Z((8, 1, 3, 3), "f"), dw_y, dilation=700, groups=8)
        + forced("conv2d_depthwise_nchw", rows_x, Z((1, 1, 3, 3), "f"), rows_y, dilation=2000)
        + forced("conv2d_channelvec_f32", dense_x, Z((16, 64, 3, 3), "f"), dense_y, dilation=350, padding=1)
        + forced("conv2d_channelvec_f64", dense64_x, Z((16, 32, 3, 3)), dense64_y, dilation=350, padding=1)
        + forced("conv2d_pixelvec_f32", pix_x, Z((4, 4, 3, 3), "f"), pix_y, dilation=1000, padding=1)
        + forced("conv2d_winograd", wino_x, Z((16, 16384, 3, 3), "f"), wino_y, dilation=4)
        + forced("conv2d_tiled_f32", dense_x, Z((16, 64, 3, 3), "f"), dense_y, dilation=350, padding=1)
        + forced("conv2d_tiled_f64", dense64_x, Z((16, 32, 3, 3)), dense64_y, dilation=350, padding=1)
        + [("subsampled 1x1", lambda: cppconv.conv2d(sub_x, Z((16, 64, 1, 1), "f"), stride=2, out=sub_y)),
           ("max_pool2d", lambda: cppconv.max_pool2d(pool_x, 3, 2, dilation=2000, out=pool_y)),
           ("conv_transpose2d", lambda: cppconv.conv_transpose2d(up_x, Z((512, 16, 1, 1), "f"), out=up_y))]
    )
    x = np.ones((1, 16, 12, 12), np.float32)
    def healthy():  # a few ordinary calls on two threads
        y = cppconv.conv2d(x, np.ones((16, 16, 3, 3), np.float32), padding=1, num_threads=2)
        cppconv.conv2d(x, np.ones((16, 1, 3, 3), np.float32), groups=16, num_threads=2)
        cppconv.max_pool2d(x, 3, 2); cppconv.conv_transpose2d(x, np.ones((16, 4, 3, 3), np.float32))
        return float(y[0, 0, 5, 5]) == 144.0
    assert healthy()                 # the thread pool is up before the limit
    with open("/proc/self/status") as f:
        vm = int(next(line for line in f if line.startswith("VmSize:")).split()[1]) * 1024
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    resource.setrlimit(resource.RLIMIT_AS, (vm + 16 * 2**20, hard))
    seen = {}
    for name, call in cases:
        try:
            call()
            seen[name] = "no error"
        except MemoryError:
            seen[name] = "MemoryError"
    ok = healthy()
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
    print(json.dumps({"seen": seen, "healthy": ok}))
"""


@pytest.mark.skipif(any(s in os.environ.get("LD_PRELOAD", "") for s in ("libasan", "libtsan")),
                    reason="sanitizer runtimes reserve terabytes of address space")
def test_allocation_failure_on_threads_is_a_memory_error():
    """Under an address-space limit (containers, batch schedulers, vm.overcommit_memory=2), a
    call on two threads whose scratch cannot be allocated raises MemoryError in every kernel
    family, and the process goes on working.  (The depthwise kernels allocated inside their
    OpenMP region: the exception could not leave it, and the process died with SIGABRT.)"""
    r = run_child(RLIMIT_CHILD)
    assert r["seen"] and all(v == "MemoryError" for v in r["seen"].values()), r["seen"]
    assert r["healthy"]


def test_a_network_holds_its_conv_weights_once():
    # After a call a network's packed conv layers hold their packs alone (the plans free their
    # float32 copies, and the network keeps no initializers the layers hold): the resident growth
    # over loading and a call stays near one copy of the weights, not two.
    got = run_child("""
        import ctypes, gc
        import cppconv.onnx
        from onnx import TensorProto, helper, numpy_helper
        libc = ctypes.CDLL("libc.so.6")
        def settled():                # RSS once freed memory is handed back (as the benchmark reads it)
            gc.collect()
            libc.malloc_trim(0)
            return rss()
        C, layers = 1024, 4
        rng = np.random.default_rng(0)
        weights = [numpy_helper.from_array(rng.standard_normal((C, C, 1, 1)).astype(np.float32), f"w{i}")
                   for i in range(layers)]
        nodes = [helper.make_node("Conv", [f"v{i}", f"w{i}"], [f"v{i + 1}"]) for i in range(layers)]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("v0", TensorProto.FLOAT, [1, C, 4, 4])],
                                  [helper.make_tensor_value_info(f"v{layers}", TensorProto.FLOAT, [1, C, 4, 4])],
                                  weights)
        data = helper.make_model(graph).SerializeToString()
        del weights, graph
        x = rng.standard_normal((1, C, 4, 4)).astype(np.float32)
        # (a first network imports the modules loading reads: their memory is not the weights')
        cppconv.onnx.load(helper.make_model(helper.make_graph(
            [helper.make_node("Conv", ["a", "k"], ["b"])], "warm-up",
            [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 1, 4, 4])],
            [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 1, 4, 4])],
            [numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "k")])))(np.ones((1, 1, 4, 4), np.float32))
        before = settled()
        net = cppconv.onnx.load(data, num_threads=1)
        net(x)
        print(json.dumps({"growth": settled() - before, "weights": layers * C * C * 4}))
    """)
    assert got["growth"] < 1.4 * got["weights"], got
