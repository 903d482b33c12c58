"""Property tests (hypothesis): random problems against the float64 references, and
metamorphic properties that need no reference at all.

Every strategy is built from small integers, so a failure shrinks to a minimal problem
(fewest channels, smallest kernel, stride 1, ...).  Array data comes from a seed drawn by
hypothesis: the seed shrinks too, and the arrays are reproducible from it.  Runs are
derandomized, so CI sees the same examples every time.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import cppconv
from cppconv import _native

from conftest import assert_close
from reference import ACTIVATIONS, PADDING_MODES, conv2d_abs_bound, conv2d_ref, conv_nd_abs_bound, conv_nd_ref
from test_conv_transpose import ref_conv_transpose
from test_pool import ref_pool

PROPERTY_SETTINGS = settings(
    max_examples=250, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FEW = settings(PROPERTY_SETTINGS, max_examples=40)  # the problems here are larger

ISAS = list(_native.available_isas())


def to_layout(a4, layout):
    return a4 if layout == "NCHW" else np.ascontiguousarray(a4.transpose(0, 2, 3, 1))


def from_layout(a4, layout):
    return a4 if layout == "NCHW" else a4.transpose(0, 3, 1, 2)


def data(seed, shape, dtype=np.float64, integers=False):
    """Reproducible test data: normal values, or small integers (every sum of products exact)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-3, 4, size=shape) if integers else rng.standard_normal(shape)
    return a.astype(dtype)


# ------------------------------------------------------------------------------------------
# Strategies


@st.composite
def conv_problems(draw, max_stride=3, modes=PADDING_MODES, max_channels=3, max_size=7):
    """A valid conv2d problem: shapes and every keyword, padding in each accepted form."""
    groups = draw(st.integers(1, 3))
    cg, kg = draw(st.integers(1, max_channels)), draw(st.integers(1, max_channels))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    mode = draw(st.sampled_from(modes))
    form = draw(st.sampled_from(["int", "pair", "sides", "valid", "same"]))
    if form == "int":
        padding = draw(st.integers(0, 2))
        pads = (padding,) * 4
    elif form == "pair":
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
        pads = (padding[0], padding[0], padding[1], padding[1])
    elif form == "sides":
        pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
        padding = ((pads[0], pads[1]), (pads[2], pads[3]))
    else:
        padding, pads = form, None
    span_h, span_w = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    # Big enough for the kernel, and for reflect padding (pad < size) once "same" is resolved.
    h = draw(st.integers(max(span_h, 3), max(span_h, 3) + max_size - 3))
    w = draw(st.integers(max(span_w, 3), max(span_w, 3) + max_size - 3))
    return dict(
        x_shape=(draw(st.integers(1, 2)), groups * cg, h, w),
        w_shape=(groups * kg, cg, kh, kw),
        bias=draw(st.booleans()),
        kwargs=dict(stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=mode,
                    activation=draw(st.sampled_from(ACTIVATIONS))),
        layout=draw(st.sampled_from(["NCHW", "NHWC"])),
        seed=draw(st.integers(0, 2**16)),
    )


def arrays_for(problem, dtype=np.float64, integers=False):
    s = problem["seed"]
    x = data(s, problem["x_shape"], dtype, integers)
    w = data(s + 1, problem["w_shape"], dtype, integers)
    b = data(s + 2, (problem["w_shape"][0],), dtype, integers) if problem["bias"] else None
    return x, w, b


def run_conv(problem, x, w, b, **override):
    kwargs = dict(problem["kwargs"], **override)
    layout = problem["layout"]
    return from_layout(cppconv.conv2d(to_layout(x, layout), w, b, layout=layout, **kwargs), layout)


def resolved_pads(problem):
    info = cppconv.explain(problem["x_shape"], problem["w_shape"], **problem["kwargs"])
    return info["padding"]


# ------------------------------------------------------------------------------------------
# Against the references


@PROPERTY_SETTINGS
@given(conv_problems(), st.sampled_from([np.float32, np.float64, np.float16]))
def test_conv2d_matches_reference(problem, dtype):
    x, w, b = arrays_for(problem, dtype)
    kw = problem["kwargs"]
    ref_kwargs = dict(stride=kw["stride"], padding=resolved_pads(problem), dilation=kw["dilation"],
                      groups=kw["groups"], padding_mode=kw["padding_mode"], activation=kw["activation"])
    y = run_conv(problem, x, w, b)
    assert_close(y, conv2d_ref(x, w, b, **ref_kwargs), conv2d_abs_bound(x, w, b, **ref_kwargs), dtype)


@st.composite
def pool_problems(draw):
    kind = draw(st.sampled_from(["max", "avg"]))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if kind == "max" else (1, 1)
    pads = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kh // 2)),
            draw(st.integers(0, kw // 2)), draw(st.integers(0, kw // 2)))
    h = draw(st.integers(dilation[0] * (kh - 1) + 1, 8))
    w = draw(st.integers(dilation[1] * (kw - 1) + 1, 8))
    return dict(kind=kind, kernel=(kh, kw), stride=stride, dilation=dilation, pads=pads,
                shape=(draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w),
                ceil_mode=draw(st.booleans()), count_include_pad=draw(st.booleans()),
                layout=draw(st.sampled_from(["NCHW", "NHWC"])), seed=draw(st.integers(0, 2**16)))


@PROPERTY_SETTINGS
@given(pool_problems(), st.sampled_from([np.float32, np.float64]))
def test_pools_match_reference(p, dtype):
    x = data(p["seed"], p["shape"], dtype)
    top, bottom, left, right = p["pads"]
    padding = ((top, bottom), (left, right))
    layout = p["layout"]
    if p["kind"] == "max":
        want, want_idx = ref_pool(x.astype(np.float64), "max", p["kernel"], p["stride"], p["pads"], p["dilation"],
                                  p["ceil_mode"])
        y, idx = cppconv.max_pool2d(to_layout(x, layout), p["kernel"], p["stride"], padding, p["dilation"],
                                    p["ceil_mode"], return_indices=True, layout=layout)
        np.testing.assert_array_equal(from_layout(y, layout), want.astype(dtype))
        np.testing.assert_array_equal(from_layout(idx, layout), want_idx)
    else:
        want, _ = ref_pool(x.astype(np.float64), "avg", p["kernel"], p["stride"], p["pads"], (1, 1), p["ceil_mode"],
                           p["count_include_pad"])
        y = cppconv.avg_pool2d(to_layout(x, layout), p["kernel"], p["stride"], padding, p["ceil_mode"],
                               p["count_include_pad"], layout=layout)
        np.testing.assert_allclose(from_layout(y, layout), want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)
    # Adaptive pooling to a random size.
    out = (p["shape"][2] // p["stride"][0] or 1, p["shape"][3] // p["stride"][1] or 1)
    kind = p["kind"]
    want, _ = ref_pool(x.astype(np.float64), kind, adaptive_size=out)
    fn = cppconv.adaptive_max_pool2d if kind == "max" else cppconv.adaptive_avg_pool2d
    np.testing.assert_allclose(from_layout(fn(to_layout(x, layout), out, layout=layout), layout), want,
                               rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)


@PROPERTY_SETTINGS
@given(conv_problems(modes=["zeros"]), st.data())
def test_conv_transpose2d_matches_reference(problem, draw):
    kw = problem["kwargs"]
    if isinstance(kw["padding"], str):
        kw = dict(kw, padding=0)
    x_shape, w_shape = problem["x_shape"], problem["w_shape"]
    # conv_transpose2d's weight is (C_in, K/groups, kh, kw): reuse the conv shapes swapped.
    groups = kw["groups"]
    c_in, k_out = w_shape[0], x_shape[1]
    weight = data(problem["seed"], (c_in, k_out // groups, *w_shape[2:]))
    x = data(problem["seed"] + 1, (x_shape[0], c_in, 3, 4))
    bias = data(problem["seed"] + 2, (k_out,)) if problem["bias"] else None
    stride, dilation = kw["stride"], kw["dilation"]
    op = tuple(draw.draw(st.integers(0, max(stride[a], dilation[a]) - 1)) for a in (0, 1))
    pads = cppconv._args.explicit_padding(kw["padding"])
    full = [(size - 1) * stride[a] + dilation[a] * (w_shape[2 + a] - 1) + 1 + op[a] for a, size in ((0, 3), (1, 4))]
    # Cropped to nothing is an error case, covered in test_conv_transpose.py.
    assume(full[0] - pads[0] - pads[1] >= 1 and full[1] - pads[2] - pads[3] >= 1)
    layout = problem["layout"]
    y = cppconv.conv_transpose2d(to_layout(x, layout), weight, bias, stride=stride, padding=kw["padding"],
                                 output_padding=op, groups=groups, dilation=dilation, layout=layout,
                                 activation=kw["activation"])
    want = ref_conv_transpose(x, weight, bias, stride, pads, op, groups, dilation, kw["activation"])
    np.testing.assert_allclose(from_layout(y, layout), want, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------------------------
# Metamorphic properties (small-integer data: every sum is exact, so equalities are exact)


def linear(problem):
    """The problem without bias and activation: conv2d is then linear in x and in weight."""
    return dict(problem, bias=False, kwargs=dict(problem["kwargs"], activation=None))


@PROPERTY_SETTINGS
@given(conv_problems(), st.integers(-3, 3), st.integers(-3, 3))
def test_linear_in_x_and_in_weight(problem, a, b):
    problem = linear(problem)
    x1, w1, _ = arrays_for(problem, np.float64, integers=True)
    x2 = data(problem["seed"] + 7, problem["x_shape"], np.float64, integers=True)
    w2 = data(problem["seed"] + 8, problem["w_shape"], np.float64, integers=True)
    np.testing.assert_array_equal(run_conv(problem, a * x1 + b * x2, w1, None),
                                  a * run_conv(problem, x1, w1, None) + b * run_conv(problem, x2, w1, None))
    np.testing.assert_array_equal(run_conv(problem, x1, a * w1 + b * w2, None),
                                  a * run_conv(problem, x1, w1, None) + b * run_conv(problem, x1, w2, None))


@PROPERTY_SETTINGS
@given(conv_problems(max_stride=1, modes=["zeros"]), st.sampled_from([np.float32, np.float64]))
def test_translation_equivariance(problem, dtype):
    """Stride 1, zero padding: moving the image one pixel down and right (zeros filling in)
    moves the output one pixel down and right; compared where both outputs exist."""
    if isinstance(problem["kwargs"]["padding"], str):
        problem = dict(problem, kwargs=dict(problem["kwargs"], padding=1))
    x, w, b = arrays_for(problem, dtype, integers=True)
    n, c, h, wd = x.shape
    before = np.zeros((n, c, h + 1, wd + 1), dtype)
    after = np.zeros_like(before)
    before[:, :, :h, :wd] = x
    after[:, :, 1:, 1:] = x
    y0, y1 = run_conv(problem, before, w, b), run_conv(problem, after, w, b)
    np.testing.assert_array_equal(y1[:, :, 1:, 1:], y0[:, :, :-1, :-1])


@PROPERTY_SETTINGS
@given(conv_problems(modes=["zeros"]))
def test_conv_transpose2d_is_the_adjoint_of_conv2d(problem):
    """<conv2d(x, w), r> == <x, conv_transpose2d(r, w)>, output_padding recovering x's size."""
    problem = linear(problem)
    x, w, _ = arrays_for(problem)
    kw = problem["kwargs"]
    top, bottom, left, right = resolved_pads(problem)
    y = run_conv(problem, x, w, None)
    r = data(problem["seed"] + 5, y.shape)
    sizes = []
    for a, (size, k, before, after) in enumerate(((x.shape[2], w.shape[2], top, bottom),
                                                  (x.shape[3], w.shape[3], left, right))):
        sizes.append((size + before + after - kw["dilation"][a] * (k - 1) - 1) % kw["stride"][a])
    # Rows that conv2d skips past any output_padding conv_transpose2d allows have no adjoint.
    assume(all(sizes[a] < max(kw["stride"][a], kw["dilation"][a]) for a in (0, 1)))
    xt = cppconv.conv_transpose2d(r, w, stride=kw["stride"], padding=((top, bottom), (left, right)),
                                  output_padding=tuple(sizes), dilation=kw["dilation"], groups=kw["groups"])
    assert xt.shape == x.shape
    assert float(np.vdot(y, r)) == pytest.approx(float(np.vdot(x, xt)), rel=1e-10, abs=1e-10)


@PROPERTY_SETTINGS
@given(conv_problems(), st.sampled_from([np.float32, np.float64]))
def test_nchw_and_nhwc_agree(problem, dtype):
    x, w, b = arrays_for(problem, dtype, integers=True)
    kwargs = problem["kwargs"]
    if kwargs["activation"] in ("sigmoid", "tanh", "silu"):
        kwargs = dict(kwargs, activation="relu")  # transcendental: vectorised and scalar may differ in ulps
    nchw = cppconv.conv2d(x, w, b, layout="NCHW", **kwargs)
    nhwc = cppconv.conv2d(to_layout(x, "NHWC"), w, b, layout="NHWC", **kwargs)
    np.testing.assert_array_equal(from_layout(nhwc, "NHWC"), nchw)


@FEW
@given(conv_problems(max_channels=12, max_size=12), st.sampled_from([np.float32, np.float64]))
def test_every_isa_agrees(problem, dtype):
    x, w, b = arrays_for(problem, dtype)
    results = {}
    try:
        for isa in ISAS:
            _native.select_isa(isa)
            results[isa] = run_conv(problem, x, w, b)
    finally:
        _native.select_isa(_native.default_isa())
    kw = problem["kwargs"]
    ref_kwargs = dict(stride=kw["stride"], padding=resolved_pads(problem), dilation=kw["dilation"],
                      groups=kw["groups"], padding_mode=kw["padding_mode"], activation=kw["activation"])
    bound = conv2d_abs_bound(x, w, b, **ref_kwargs)
    for isa, y in results.items():
        assert_close(y, results[ISAS[0]].astype(np.float64), 2 * bound, dtype, context=f"{isa} vs {ISAS[0]}")


@FEW
@given(conv_problems(max_channels=16, max_size=24), st.sampled_from([np.float32, np.float64]))
def test_thread_count_does_not_change_results(problem, dtype):
    """Bit-identical for 1, 2 and 7 threads: every output is reduced by one thread in a fixed
    order, whatever the split."""
    problem = dict(problem, x_shape=(4, *problem["x_shape"][1:]))
    x, w, b = arrays_for(problem, dtype)
    transpose_weight = data(problem["seed"] + 3, (x.shape[1], 3, 3, 3), dtype)
    before = cppconv.get_num_threads()
    try:
        results = []
        for n in (1, 2, 7):
            cppconv.set_num_threads(n)
            results.append((run_conv(problem, x, w, b), cppconv.max_pool2d(x, 2, ceil_mode=True),
                            cppconv.avg_pool2d(x, 3, 1, 1), cppconv.conv_transpose2d(x, transpose_weight, stride=2)))
    finally:
        cppconv.set_num_threads(before)
    for other in results[1:]:
        for one_thread, more in zip(results[0], other):
            np.testing.assert_array_equal(more, one_thread)


# ------------------------------------------------------------------------------------------
# conv1d and conv3d: the same properties on ranks 1 and 3 (their lowerings onto the 2-D
# kernels included: long rows fold, deep problems gather or interleave)


@st.composite
def conv_nd_problems(draw, rank, modes=PADDING_MODES):
    """A valid conv1d/conv3d problem, channels-first shapes; rank 1 rows long enough to fold."""
    groups = draw(st.integers(1, 3))
    cg, kg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    if draw(st.booleans()):
        cg = kg = 1  # depthwise
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    stride = tuple(draw(st.integers(1, 2)) for _ in range(rank))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(rank))
    padding = draw(st.one_of(st.sampled_from(["same", "valid"]),
                             st.tuples(*[st.integers(0, 2) for _ in range(rank)])))
    spans = [d * (k - 1) + 1 for d, k in zip(dilation, kernel)]
    high = 420 if rank == 1 else 6
    sizes = tuple(draw(st.integers(max(s, 3), max(s, 3) + high)) for s in spans)
    return dict(
        x_shape=(draw(st.integers(1, 2)), groups * cg) + sizes, w_shape=(groups * kg, cg) + kernel,
        bias=draw(st.booleans()), seed=draw(st.integers(0, 2**16)),
        kwargs=dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                    padding_mode=draw(st.sampled_from(modes)), activation=draw(st.sampled_from(ACTIVATIONS))),
    )


def _nd(rank):
    return getattr(cppconv, f"conv{rank}d")


def _channels_last(a):
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


@FEW
@pytest.mark.parametrize("rank", [1, 3])
@given(data=st.data())
def test_conv_nd_matches_reference(rank, data):
    problem = data.draw(conv_nd_problems(rank))
    x, w, b = arrays_for(problem, np.float32)
    kw = problem["kwargs"]
    pads = cppconv.explain(problem["x_shape"], problem["w_shape"], **kw)["padding"]
    args = dict(kw, padding=pads)
    ref, bound = conv_nd_ref(x, w, b, **args), conv_nd_abs_bound(x, w, b, **args)
    assert_close(_nd(rank)(x, w, b, **kw), ref, bound, np.float32)


@FEW
@pytest.mark.parametrize("rank", [1, 3])
@given(data=st.data(), a=st.integers(-3, 3), c=st.integers(-3, 3))
def test_conv_nd_linear_in_x(rank, data, a, c):
    problem = data.draw(conv_nd_problems(rank))
    problem["kwargs"]["activation"] = None
    x, w, _ = arrays_for(problem, np.float64, integers=True)
    x2 = np.roll(x, 1)  # a second input of the same shape
    f = _nd(rank)
    np.testing.assert_array_equal(f(a * x + c * x2, w, **problem["kwargs"]),
                                  a * f(x, w, **problem["kwargs"]) + c * f(x2, w, **problem["kwargs"]))


@FEW
@pytest.mark.parametrize("rank", [1, 3])
@given(data=st.data())
def test_conv_nd_layouts_and_threads_agree(rank, data):
    problem = data.draw(conv_nd_problems(rank))
    x, w, b = arrays_for(problem, np.float64, integers=True)
    kw, f = problem["kwargs"], _nd(rank)
    first = f(x, w, b, **kw)
    last = f(_channels_last(x), w, b, layout="NWC" if rank == 1 else "NDHWC", **kw)
    np.testing.assert_array_equal(np.moveaxis(last, -1, 1), first)
    np.testing.assert_array_equal(f(x, w, b, num_threads=1, **kw), f(x, w, b, num_threads=3, **kw))
