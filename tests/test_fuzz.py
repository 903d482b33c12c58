"""Hostile input: random objects, shapes, dtypes, strides and argument combinations thrown at
every public function, and the special floating-point values.

The contract under test: whatever the arguments, a call returns a result or raises TypeError,
ValueError or MemoryError; the process never dies or hangs.  The fuzzer and the table of
known-hostile calls run in a child process (this file run as a script), so that a crash is
reported as a failed test with the call that caused it, not as a dead pytest.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys

import numpy as np
import pytest

import cppconv

ALLOWED = (TypeError, ValueError, MemoryError)
as_strided = np.lib.stride_tricks.as_strided

# ------------------------------------------------------------------------------------------
# The fuzzer (runs in the child)

# Sizes that are cheap to run or absurd enough to be refused on any machine (2^40 elements and
# up); middle sizes (2^12 .. 2^32) are left out: an adaptive pool to (1, 2^31) is a legal 16 GB
# result that the library rightly computes.
INTS = [0, 1, 1, 2, 2, 3, 5, -1, -7, -(2**31), 2**40, 2**62, 2**63 - 1, 2**63, 2**64 + 1, -(2**63) - 1]
DTYPES = [np.float32, np.float32, np.float64, np.float16, np.int8, np.int64, np.uint64, np.bool_,
          np.longdouble, np.complex64, object, "U3", "M8[s]", np.dtype(">f4"), np.dtype([("a", "f4")])]
OBJECTS = [None, "abc", "", 3, -1, 2.5, float("nan"), [], [[1, 2]], [[1, 2], [3]], {}, object(), b"xy",
           2**70, (1, 2), ((1, 2), (3, 4)), ((1,), (2, 3)), np.float32(1), np.array(2.0), True]
WORDS = ["NCHW", "NHWC", "nhwc", "NCW", "ndhwc", "same", "valid", "zeros", "reflect", "replicate", "circular", "relu",
         "silu", "sigmoid", "", "bogus"]


def random_int(rng: random.Random) -> int:
    return rng.choice(INTS) if rng.random() < 0.3 else rng.randint(0, 4)


def random_value(rng: random.Random):
    """An argument value: mostly plausible ints, pairs and words, sometimes anything."""
    r = rng.random()
    if r < 0.45:
        return random_int(rng)
    if r < 0.6:
        return (random_int(rng), random_int(rng))
    if r < 0.65:
        return ((random_int(rng), random_int(rng)), (random_int(rng), random_int(rng)))
    if r < 0.8:
        return rng.choice(WORDS)
    return rng.choice(OBJECTS)


def random_array(rng: random.Random, ndim: int):
    """A small array, or a view with zero, negative or overlapping strides, or an absurd
    zero-strided shape, of a random dtype."""
    shape = tuple(rng.choice([0, 1, 1, 2, 3, 4, 5]) for _ in range(ndim))
    dtype = rng.choice(DTYPES)
    kind = rng.random()
    if kind < 0.1:  # an absurd shape (NumPy caps the byte count below 2^63); no middle sizes, as above
        huge = [rng.choice([1, 2, 2**40, 2**60]) for _ in range(ndim)]
        while np.prod(np.array(huge, dtype=object)) * 4 >= 2**63:
            huge[huge.index(max(huge))] = 1
        return as_strided(np.zeros(1, np.float32), tuple(huge), (0,) * ndim)
    try:
        a = np.zeros(shape, dtype)
        if a.dtype.kind in "fiu":
            a[...] = np.asarray(np.random.default_rng(rng.randrange(2**32)).standard_normal(shape)).astype(a.dtype)
    except (TypeError, ValueError):
        a = np.zeros(shape, np.float32)
    if kind < 0.2 and a.ndim:  # negative strides
        a = a[(slice(None, None, -1),) * a.ndim]
    elif kind < 0.3 and a.size:  # zero strides
        a = np.broadcast_to(a.reshape(-1)[:1].reshape((1,) * a.ndim), tuple(s + 1 for s in a.shape))
    elif kind < 0.4 and a.ndim >= 2 and a.dtype.kind == "f":  # rows that overlap in memory
        rows, cols = a.shape[-2], a.shape[-1]
        flat = np.arange(rows + cols, dtype=a.dtype)
        a = np.lib.stride_tricks.sliding_window_view(flat, cols)[:rows][(None,) * (a.ndim - 2)]
    elif kind < 0.5 and a.ndim >= 2:  # transposed
        a = np.swapaxes(a, 0, -1)
    return a


def random_input(rng: random.Random):
    if rng.random() < 0.1:
        return rng.choice(OBJECTS)
    return random_array(rng, rng.choice([4, 4, 4, 3, 2, 1, 5, 0]))


CONV_KW = ["stride", "padding", "dilation", "groups", "padding_mode", "layout", "activation", "out"]
TRANSPOSE_KW = ["stride", "padding", "output_padding", "groups", "dilation", "layout", "activation", "out"]
MAX_POOL_KW = ["stride", "padding", "dilation", "ceil_mode", "return_indices", "layout", "out"]
AVG_POOL_KW = ["stride", "padding", "ceil_mode", "count_include_pad", "divisor_override", "layout", "out"]
# The 1-D and 3-D pools with the keywords each takes after its size argument.
ND_POOLS = [(cppconv.max_pool1d, MAX_POOL_KW), (cppconv.max_pool3d, MAX_POOL_KW), (cppconv.avg_pool1d, AVG_POOL_KW),
            (cppconv.avg_pool3d, AVG_POOL_KW), (cppconv.adaptive_max_pool1d, ["layout", "out", "return_indices"]),
            (cppconv.adaptive_max_pool3d, ["layout", "out", "return_indices"]),
            (cppconv.adaptive_avg_pool1d, ["layout", "out"]), (cppconv.adaptive_avg_pool3d, ["layout", "out"])]


def describe(value) -> str:
    """repr, with arrays as their shape, dtype and strides (their values do not matter here)."""
    if isinstance(value, np.ndarray):
        return f"<array shape={value.shape} dtype={value.dtype} strides={value.strides}>"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {describe(v)}" for k, v in value.items()) + "}"
    return repr(value)


def random_kwargs(rng: random.Random, names):
    kwargs = {}
    for name in rng.sample(names, rng.randint(0, len(names))):
        kwargs[name] = random_array(rng, 4) if name == "out" and rng.random() < 0.7 else random_value(rng)
    return kwargs


def random_call(rng: random.Random):
    """(description, thunk) of one random call to a public function."""
    x, w = random_input(rng), random_input(rng)
    b = None if rng.random() < 0.6 else random_input(rng)
    what = f"x={describe(x)} w={describe(w)} b={describe(b)}: "
    desc, thunk = _random_call(rng, x, w, b)
    return what + desc, thunk


def _random_call(rng: random.Random, x, w, b):
    choice = rng.randrange(15)
    if choice == 0:
        kw, rank = random_kwargs(rng, CONV_KW), rng.choice([1, 2, 2, 3])
        fn = getattr(cppconv, f"conv{rank}d")
        return f"conv{rank}d(x, w, b, **{describe(kw)})", lambda: fn(x, w, b, **kw)
    if choice == 1:
        kw, rank = random_kwargs(rng, CONV_KW[:-1]), rng.choice([1, 2, 2, 3])
        cls = getattr(cppconv, f"Conv{rank}d")
        return f"Conv{rank}d(w, b, **{describe(kw)})(x)", lambda: cls(w, b, **kw)(x)
    if choice == 2:
        kw, rank = random_kwargs(rng, TRANSPOSE_KW), rng.choice([1, 2, 2, 3])
        fn = getattr(cppconv, f"conv_transpose{rank}d")
        return f"conv_transpose{rank}d(x, w, b, **{describe(kw)})", lambda: fn(x, w, b, **kw)
    if choice == 3:
        kw, rank = random_kwargs(rng, TRANSPOSE_KW[:-1]), rng.choice([1, 2, 2, 3])
        cls = getattr(cppconv, f"ConvTranspose{rank}d")
        return f"ConvTranspose{rank}d(w, b, **{describe(kw)})(x)", lambda: cls(w, b, **kw)(x)
    if choice == 4:
        k, kw = random_value(rng), random_kwargs(rng, MAX_POOL_KW)
        return f"max_pool2d(x, {k!r}, **{describe(kw)})", lambda: cppconv.max_pool2d(x, k, **kw)
    if choice == 5:
        k, kw = random_value(rng), random_kwargs(rng, AVG_POOL_KW)
        return f"avg_pool2d(x, {k!r}, **{describe(kw)})", lambda: cppconv.avg_pool2d(x, k, **kw)
    if choice == 6:
        k, kw = random_value(rng), random_kwargs(rng, MAX_POOL_KW[:-1])
        return f"MaxPool2d({k!r}, **{describe(kw)})(x)", lambda: cppconv.MaxPool2d(k, **kw)(x)
    if choice == 7:
        k, kw = random_value(rng), random_kwargs(rng, AVG_POOL_KW[:-1])
        return f"AvgPool2d({k!r}, **{describe(kw)})(x)", lambda: cppconv.AvgPool2d(k, **kw)(x)
    if choice == 8:
        size, kw = random_value(rng), random_kwargs(rng, ["layout", "out", "return_indices"])
        return f"adaptive_max_pool2d(x, {size!r}, **{describe(kw)})", lambda: cppconv.adaptive_max_pool2d(x, size, **kw)
    if choice == 9:
        size, kw = random_value(rng), random_kwargs(rng, ["layout", "out"])
        return f"adaptive_avg_pool2d(x, {size!r}, **{describe(kw)})", lambda: cppconv.adaptive_avg_pool2d(x, size, **kw)
    if choice == 10:
        kw = random_kwargs(rng, ["layout", "out"])
        return f"global_avg_pool2d(x, **{describe(kw)})", lambda: cppconv.global_avg_pool2d(x, **kw)
    if choice == 11:
        xs = tuple(random_int(rng) for _ in range(rng.choice([4, 4, 3, 2, 5])))
        ws = tuple(random_int(rng) for _ in range(rng.choice([4, 4, 2, 3, 5])))
        kw = random_kwargs(rng, CONV_KW[:-1] + ["dtype", "bias"])
        return f"explain({xs}, {ws}, **{describe(kw)})", lambda: cppconv.explain(xs, ws, **kw)
    if choice == 12:
        args = [random_value(rng) for _ in range(rng.randint(1, 6))]
        fn = rng.choice([cppconv.conv_output_size, cppconv.pool_output_size, cppconv.conv_transpose_output_size])
        return f"{fn.__name__}(*{args!r})", lambda: fn(*args)
    if choice == 13:
        fn, names = rng.choice(ND_POOLS)
        k = rng.choice([random_value(rng), tuple(random_int(rng) for _ in range(3)), (random_int(rng),)])
        kw = random_kwargs(rng, names + ["num_threads"])
        return f"{fn.__name__}(x, {k!r}, **{describe(kw)})", lambda: fn(x, k, **kw)
    n = random_value(rng)
    return f"set_num_threads({n!r})", lambda: cppconv.set_num_threads(n)


def fuzz(seed: int, count: int) -> None:
    """Runs `count` random calls; exits 1 naming the call when one raises anything else."""
    rng = random.Random(seed)
    threads = cppconv.get_num_threads()
    for i in range(count):
        what, thunk = random_call(rng)
        # The call is written down first: if it kills the process, the parent shows it.
        print(f"{i}: {what}"[:2000], file=sys.stderr, flush=True)
        try:
            thunk()
        except ALLOWED:
            pass
        except Exception as e:  # noqa: BLE001 - anything else is the failure under test
            print(f"FAILED {i}: {what}\n  raised {type(e).__name__}: {e}", flush=True)
            sys.exit(1)
        finally:
            cppconv.set_num_threads(threads)
    print(f"OK {count}", flush=True)


# Calls that crashed, hung or raised the wrong error before they were fixed, with the error
# each must raise now (None: must succeed).  Run in the child, each in its own try.
def _known_hostile_calls():
    f32, one = np.float32, np.ones((1, 1, 3, 3), np.float32)
    k1 = np.ones((1, 1, 1, 1), f32)
    return {
        # SIGFPE: an empty reduction or no output channels reached kernels that divide by them.
        "conv2d with C=0": (lambda: cppconv.conv2d(np.ones((1, 0, 4, 4), f32), np.ones((2, 0, 1, 1), f32)), None),
        "explain with K=0": (lambda: cppconv.explain((1, 1, 4, 4), (0, 1, 1, 1)), None),
        # Hung: kernels that tile by stride phase looped over 2^63 phases.
        "conv2d stride 2^63-1": (
            lambda: cppconv.conv2d(np.ones((3, 3), f32), np.ones((1, 1), f32), stride=2**63 - 1), None),
        # Wrong error (TypeError from pybind11's argument conversion) or wrapped arithmetic.
        "conv2d stride 2^70": (lambda: cppconv.conv2d(one, k1, stride=2**70), ValueError),
        "conv2d padding 2^63-1": (
            lambda: cppconv.conv2d(np.ones((3, 3), f32), np.ones((1, 1), f32), padding=2**63 - 1), ValueError),
        "max_pool2d stride 2^63": (lambda: cppconv.max_pool2d(one, 1, stride=2**63), ValueError),
        "explain shape 2^70": (lambda: cppconv.explain((2**70, 1, 2, 2), (1, 1, 1, 1)), ValueError),
        "set_num_threads 2^40": (lambda: cppconv.set_num_threads(2**40), ValueError),
        # std::bad_alloc or a 2^40-entry table: pool windows far wider than the input.
        "max_pool2d kernel 2^40": (lambda: cppconv.max_pool2d(one, 2**40, padding=2**39), None),
        "max_pool3d depth kernel 2^40": (
            lambda: cppconv.max_pool3d(one[None], (2**40, 1, 1), padding=(2**39, 0, 0), return_indices=True), None),
        "avg_pool3d ceil_mode depth stride 2^63-1": (
            lambda: cppconv.avg_pool3d(one[None], (3, 1, 1), stride=(2**63 - 1, 1, 1), padding=(1, 0, 0),
                                       ceil_mode=True),
            None),
        "max_pool2d kernel 2^63-1": (lambda: cppconv.max_pool2d(one, 2**63 - 1, padding=2**62 - 1), ValueError),
        # Signed overflow (UBSan) in the pooled size: ceil_mode with a stride near 2^63.
        "max_pool2d ceil_mode stride 2^63-1": (
            lambda: cppconv.max_pool2d(one, 3, stride=2**63 - 1, padding=1, ceil_mode=True), None),
        # Index maps of 2^31 entries for a 3x3 result: the reference kernel takes it, without maps.
        "conv2d padding and stride 2^30": (
            lambda: cppconv.conv2d(one, k1, stride=2**30, padding=2**30, padding_mode="replicate"), None),
        # Index maps of 2^41 entries for a kernel that tiles its 2^41 multiply-adds: refused.
        "conv2d padding 2^40 stride 2^20": (
            lambda: cppconv.conv2d(np.ones((1, 1, 1, 1), f32), np.ones((1, 1, 2**20, 1), f32), stride=(2**20, 1),
                                   padding=((2**40, 2**40), (0, 0))), MemoryError),
        # Outputs whose byte count passes 64 bits, or that no machine has.
        "conv2d output past 2^64 bytes": (
            lambda: cppconv.conv2d(as_strided(np.zeros(1, f32), (1, 1, 2**31, 2**31), (0,) * 4), k1), ValueError),
        "conv2d output of 256 TiB": (
            lambda: cppconv.conv2d(as_strided(np.zeros(1, f32), (1, 1, 2**20, 2**20), (0,) * 4),
                                   np.ones((64, 1, 7, 7), f32)), MemoryError),
    }


def known_hostile() -> None:
    """Runs the table above; prints one line per call and exits 1 if any misbehaved."""
    bad = 0
    for name, (thunk, expected) in _known_hostile_calls().items():
        print(f"running {name}", file=sys.stderr, flush=True)
        try:
            thunk()
            outcome = None
        except ALLOWED as e:
            outcome = type(e)
            message = str(e)
        except Exception as e:  # noqa: BLE001
            outcome, message = type(e), str(e)
        ok = outcome is expected
        if ok and expected is MemoryError:
            ok = "bytes" in message or "TiB" in message  # the size is named
        print(f"{'ok' if ok else 'BAD'} {name}: {outcome.__name__ if outcome else 'returned'}"
              + ("" if outcome is None else f" ({message[:150]})"), flush=True)
        bad += not ok
    sys.exit(1 if bad else 0)


# ------------------------------------------------------------------------------------------
# The tests (in pytest)


def run_child(*args: str, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    try:
        return subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout,
                              env=env)
    except subprocess.TimeoutExpired as e:
        last = (e.stderr or b"")[-2000:]
        pytest.fail(f"the child hung for {timeout} s; its last lines:\n{last!r}")


@pytest.mark.parametrize("seed", [0, 1])
def test_fuzz_public_api(seed):
    """Random calls: only TypeError, ValueError and MemoryError, and the process survives."""
    p = run_child("fuzz", str(seed), "4000", timeout=120)
    assert p.returncode == 0 and "OK 4000" in p.stdout, (
        f"child exited with {p.returncode}\nstdout:\n{p.stdout[-3000:]}\nlast calls:\n{p.stderr[-3000:]}")


def test_known_hostile_calls():
    p = run_child("known", timeout=120)
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout}\n{p.stderr[-3000:]}"


def test_empty_reduction_is_the_activated_bias():
    """C = 0 input channels: an empty sum, so each output is activation(bias)."""
    bias = np.array([-1.0, 2.0, 7.0], np.float32)
    y = cppconv.conv2d(np.ones((2, 0, 4, 5), np.float32), np.ones((3, 0, 3, 3), np.float32), bias,
                       padding=1, activation="relu6")
    assert y.shape == (2, 3, 4, 5)
    np.testing.assert_array_equal(y, np.broadcast_to(np.array([0, 2, 6], np.float32)[None, :, None, None], y.shape))
    info = cppconv.explain((1, 0, 4, 4), (3, 0, 1, 1))
    assert info["output_shape"] == (1, 3, 4, 4) and info["flops"] == 0


def test_single_output_ignores_a_huge_stride():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    want = cppconv.conv2d(x, w, stride=4)  # one output per axis already
    for stride in (5, 1000, 2**62, 2**63 - 1):
        np.testing.assert_array_equal(cppconv.conv2d(x, w, stride=stride), want)
        np.testing.assert_array_equal(cppconv.conv2d(x, w, stride=(stride, stride), layout="NCHW"), want)


def test_pool_window_wider_than_input():
    x = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    assert cppconv.max_pool2d(x, 2**40, padding=2**39).item() == 8
    # count_include_pad: the divisor is the clipped window, (2^40)^2 here, past 2^63 as an int.
    assert cppconv.avg_pool2d(x, 2**40, padding=2**39).item() == pytest.approx(36 / 2.0**80, rel=1e-6)
    assert cppconv.avg_pool2d(x, 2**40, padding=2**39, count_include_pad=False).item() == 4


def test_ints_past_int64_are_value_errors():
    x, w = np.ones((1, 1, 4, 4), np.float32), np.ones((1, 1, 1, 1), np.float32)
    for kwargs in (dict(stride=2**64), dict(padding=-(2**63) - 1), dict(dilation=(1, 2**80)), dict(groups=2**63)):
        with pytest.raises(ValueError, match="64-bit"):
            cppconv.conv2d(x, w, **kwargs)
    with pytest.raises(ValueError, match="64-bit"):
        cppconv.conv_transpose2d(x, w, stride=2**63)
    with pytest.raises(ValueError, match="64-bit"):
        cppconv.adaptive_avg_pool2d(x, 2**70)


def test_thread_count_bound(restore_threads):
    cppconv.set_num_threads(cppconv._native.MAX_THREADS)
    for n in (cppconv._native.MAX_THREADS + 1, 2**31, 2**40):
        with pytest.raises(ValueError, match="between 1 and"):
            cppconv.set_num_threads(n)
    assert cppconv.get_num_threads() == cppconv._native.MAX_THREADS


def test_impossible_results_name_their_size():
    """A result whose byte count passes 2^63 is a ValueError naming its shape; one larger than
    physical memory a MemoryError naming its bytes.  Nothing is allocated either way."""
    x = as_strided(np.zeros(1, np.float32), (2**20, 2**20, 2**20, 1), (0, 0, 0, 0))  # NHWC, 2^62 bytes
    eight = np.ones((8, 1, 1, 1), np.float32)
    past_64_bits = [
        lambda: cppconv.conv2d(x, eight, layout="NHWC"),
        lambda: cppconv.conv_transpose2d(x, eight.reshape(1, 8, 1, 1), layout="NHWC"),
        lambda: cppconv.adaptive_max_pool2d(x, (2**21, 2**21), layout="NHWC"),
    ]
    for call in past_64_bits:
        with pytest.raises(ValueError, match=r"shape \(1048576, .*64-bit"):
            call()
    past_memory = [
        lambda: cppconv.max_pool2d(x, 1, layout="NHWC"),
        lambda: cppconv.avg_pool2d(x, 1, layout="NHWC"),
        lambda: cppconv.conv2d(x, eight[:1], layout="NHWC"),
    ]
    for call in past_memory:
        with pytest.raises(MemoryError, match=rf"needs {2**62} bytes"):
            call()


# ------------------------------------------------------------------------------------------
# NaN, Inf and denormals

TINY32 = np.float32(1e-40)  # a float32 denormal (the smallest normal is 1.2e-38)


def test_nan_and_inf_follow_ieee():
    x = np.ones((1, 1, 4, 4), np.float32)
    x[0, 0, 0, 0], x[0, 0, 3, 3] = np.nan, np.inf
    w = np.ones((1, 1, 2, 2), np.float32)
    y = cppconv.conv2d(x, w)
    assert np.isnan(y[0, 0, 0, 0]) and np.isposinf(y[0, 0, 2, 2]) and y[0, 0, 1, 1] == 4
    # inf - inf is NaN
    x2 = np.ones((1, 1, 1, 2), np.float32)
    x2[0, 0, 0] = [np.inf, np.inf]
    assert np.isnan(cppconv.conv2d(x2, np.array([[[[1, -1]]]], np.float32))).all()
    # A NaN wins max pooling; average pooling propagates it.
    assert np.isnan(cppconv.max_pool2d(x, 2)[0, 0, 0, 0]) and np.isnan(cppconv.avg_pool2d(x, 2)[0, 0, 0, 0])
    assert np.isposinf(cppconv.max_pool2d(x, 2)[0, 0, 1, 1])
    t = cppconv.conv_transpose2d(x, w)
    assert np.isnan(t[0, 0, 0, 0]) and np.isposinf(t[0, 0, 4, 4])


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_denormals_are_flushed(isa, layout):
    """The kernels run with FTZ/DAZ: denormal inputs count as zero, no denormal comes out."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 8, 9, 9)).astype(np.float32)
    x[:, ::2] = TINY32 * np.sign(x[:, ::2])  # half the channels denormal
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    x_l = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    y = cppconv.conv2d(x_l, w, padding=1, layout=layout)
    flushed = np.where(np.abs(x) < np.finfo(np.float32).tiny, 0, x)
    want = cppconv.conv2d(flushed if layout == "NCHW" else np.ascontiguousarray(flushed.transpose(0, 2, 3, 1)), w,
                          padding=1, layout=layout)
    np.testing.assert_array_equal(y, want)
    # Products that would be denormal are zero.
    small = np.full((1, 1, 3, 3), 1e-20, np.float32)
    assert not cppconv.conv2d(small, small).any()
    assert not cppconv.conv_transpose2d(small, small[:, :, :1, :1]).any()
    assert not cppconv.avg_pool2d(np.full((1, 1, 2, 2), TINY32), 2).any()
    # Max pooling selects, it does not compute: the output is one of the window's inputs.
    m = cppconv.max_pool2d(np.full((1, 1, 2, 2), TINY32), 2)
    assert m.item() in (0.0, TINY32)


def test_callers_float_state_is_restored():
    """FTZ/DAZ are set inside the kernels only: NumPy in the same thread still makes denormals."""
    cppconv.conv2d(np.ones((1, 4, 16, 16), np.float32), np.ones((8, 4, 3, 3), np.float32))
    cppconv.max_pool2d(np.ones((1, 4, 16, 16), np.float32), 2)
    assert np.float32(1e-38) / np.float32(100) != 0


if __name__ == "__main__":
    if sys.argv[1] == "fuzz":
        fuzz(int(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1] == "known":
        known_hostile()
