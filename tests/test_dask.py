"""cppconv.dask: lazy results bit for bit equal to the in-memory call, for any chunking."""

from __future__ import annotations

import doctest
import importlib.util
import itertools
import logging
import os
import pickle

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")

import cppconv  # noqa: E402
import cppconv.dask as cd  # noqa: E402
from cppconv import _buffers, _conv, _conv_transpose, _native  # noqa: E402

from conftest import make_rng  # noqa: E402

# 2-D NCHW chunkings of an (N, C, 23, 29) input: single chunk; chunks of 1-3 (smaller than
# most halos); irregular with a last chunk of 1; batch only.
CHUNKINGS_2D = [
    "single",
    (-1, -1, 1, 2),
    (2, -1, 3, 3),
    ((2, 1), -1, (10, 1, 7, 5), (3, 20, 5, 1)),
    (1, -1, -1, -1),
]


def assert_bits(got, ref):
    assert got.shape == ref.shape and got.dtype == ref.dtype
    assert np.array_equal(got.view(np.uint8), np.ascontiguousarray(ref).view(np.uint8))


def chunked(x, chunks, layout="NCHW"):
    if chunks == "single":
        return da.from_array(x, chunks=-1)
    if layout.endswith("C"):  # the same chunks, channel axis moved last
        chunks = (chunks[0], *chunks[2:], chunks[1])
    return da.from_array(x, chunks=chunks)


def random_input(rng, shape, layout):
    """A float32 NCHW-shaped random input, moved to channels-last for NHWC."""
    x = rng.standard_normal(shape).astype(np.float32)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if layout == "NHWC" else x


def operands(rng, x_shape, w_shape, layout):
    """x (see random_input), a float32 weight and a bias as long as the weight's first axis."""
    x = random_input(rng, x_shape, layout)
    return x, rng.standard_normal(w_shape).astype(np.float32), rng.standard_normal(w_shape[0]).astype(np.float32)


def compute(y):
    return compute_checked(y)


def compute_checked(y):
    """y computed block by block, each block checked against the shape y.chunks declares (what
    a later slice or rechunk of y relies on), then assembled."""
    blocks = y.to_delayed(optimize_graph=False)
    values = dask.compute(*blocks.ravel(), scheduler="sync")
    nested = np.empty(blocks.shape, dtype=object)
    for index, value in zip(np.ndindex(blocks.shape), values):
        assert value.shape == tuple(c[i] for c, i in zip(y.chunks, index)), (index, value.shape, y.chunks)
        nested[index] = value
    return np.block(nested.tolist())


def check_plan(y, x_chunks, ref_shape, axes, strides, befores, halos):
    """The output chunks are the plan's: they cover the result; each starts at the first output
    whose window starts at or after a boundary of x's chunks; and each (the last too, unless it
    is the only one) is at least ceil(halo / stride) outputs, so it reads one neighbour only."""
    assert y.shape == ref_shape
    for axis, stride, before, halo in zip(axes, strides, befores, halos):
        chunks = y.chunks[axis]
        assert sum(chunks) == ref_shape[axis]
        floor = max(1, -(-halo // stride))
        assert len(chunks) == 1 or min(chunks) >= floor, (chunks, floor)
        firsts = {-(-(cut + before) // stride) for cut in itertools.accumulate(x_chunks[axis][:-1])}
        starts = set(itertools.accumulate(chunks[:-1]))
        assert starts <= firsts, (chunks, x_chunks[axis], sorted(starts - firsts))


CONV2D_CASES = [
    dict(),
    dict(padding=1),
    dict(padding="same", stride=2),
    dict(padding=((0, 2), (1, 0)), stride=3),
    dict(padding="valid", dilation=2),
    dict(padding=(2, 1), dilation=(1, 2), stride=(2, 1)),
    dict(padding=2, padding_mode="reflect", dilation=2),
    dict(padding=(1, 2), padding_mode="replicate", stride=2),
    dict(padding=((2, 1), (0, 3)), padding_mode="circular", stride=3),
    dict(padding="same", padding_mode="reflect"),
    dict(padding=(3, 2), padding_mode="symmetric", stride=2),
    dict(padding=((2, 1), (0, 3)), padding_mode="constant", padding_value=-1.25, stride=2),
    dict(padding="same", padding_mode="constant", padding_value=0.0),
    dict(padding=1, groups=2, activation="relu"),
    dict(padding=1, activation=("leaky_relu", -0.3)),
    dict(padding=1, groups=4, activation="silu", stride=2),
]


@pytest.mark.parametrize("chunks", CHUNKINGS_2D, ids=str)
@pytest.mark.parametrize("kwargs", CONV2D_CASES, ids=str)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_conv2d_bit_for_bit(kwargs, chunks, layout):
    rng = make_rng("dask-conv2d", str(kwargs), str(chunks), layout)
    x, w, b = operands(rng, (3, 4, 23, 29), (8, 4 // kwargs.get("groups", 1), 3, 3), layout)
    ref = cppconv.conv2d(x, w, b, layout=layout, **kwargs)
    xd = chunked(x, chunks, layout)
    y = cd.conv2d(xd, w, b, layout=layout, **kwargs)
    axes = (1, 2) if layout == "NHWC" else (2, 3)
    strides = np.broadcast_to(kwargs.get("stride", 1), 2)
    dilations = np.broadcast_to(kwargs.get("dilation", 1), 2)
    befores = cppconv.explain(x.shape, w.shape, layout=layout, **kwargs)["padding"][0::2]
    check_plan(y, xd.chunks, ref.shape, axes, strides, befores, dilations * 2 + 1 - strides)
    assert y.chunks[0] == xd.chunks[0]  # the batch keeps its chunks
    assert_bits(compute_checked(y), ref)


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32])
def test_conv2d_dtypes(dtype):
    rng = make_rng("dask-dtypes", np.dtype(dtype).name)
    x = (rng.standard_normal((2, 3, 19, 17)) * 4).astype(dtype)
    w = rng.standard_normal((5, 3, 3, 2))
    ref = cppconv.conv2d(x, w, padding="same", stride=2)
    assert_bits(compute(cd.conv2d(da.from_array(x, chunks=(1, 3, 4, 5)), w, padding="same", stride=2)), ref)


def test_conv2d_unbatched_and_image():
    rng = make_rng("dask-shapes")
    x = rng.standard_normal((3, 20, 21)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    assert_bits(compute(cd.conv2d(da.from_array(x, chunks=(3, 6, 7)), w, padding=1)), cppconv.conv2d(x, w, padding=1))
    image, kernel = x[0], w[0, 0]
    y = cd.conv2d(da.from_array(image, chunks=5), kernel, padding="same", padding_mode="reflect")
    assert_bits(compute(y), cppconv.conv2d(image, kernel, padding="same", padding_mode="reflect"))


def test_winograd_is_pinned_and_tile_aligned():
    """precision="high" lets the whole problem run Winograd F(2x2, 3x3), whose outputs depend
    on their place in a 2x2 tile: chunks must start on even outputs and run it too."""
    rng = make_rng("dask-winograd")
    x = rng.standard_normal((1, 16, 40, 44)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    kw = dict(padding=1, precision="high")
    if "winograd" not in cppconv.explain(x.shape, w.shape, **kw)["algorithm"]:
        pytest.skip("this machine's dispatcher does not pick Winograd here")
    ref = cppconv.conv2d(x, w, **kw)
    for chunks in [(1, 16, 7, 9), (1, 16, (13, 27), (5, 11, 28)), (1, 16, 3, 3)]:
        y = cd.conv2d(da.from_array(x, chunks=chunks), w, **kw)
        for axis in (2, 3):
            starts = np.cumsum((0,) + y.chunks[axis][:-1])
            assert all(s % 2 == 0 for s in starts), y.chunks
        assert_bits(compute(y), ref)
    # The process-wide mode when the graph is built is the one every chunk runs under.
    before = cppconv.get_float32_precision()
    cppconv.set_float32_precision("high")
    try:
        y = cd.conv2d(da.from_array(x, chunks=(1, 16, 9, 9)), w, padding=1)
    finally:
        cppconv.set_float32_precision(before)
    cppconv.set_float32_precision("highest")
    try:
        assert_bits(compute(y), ref)
    finally:
        cppconv.set_float32_precision(before)


def test_outputs_that_read_only_padding_join_a_chunk_that_reads_input():
    """A 1x1 kernel at stride 3 after 2 rows of padding: output 0 reads only padding (the bias),
    which no chunk can compute from an empty input, and output 1 reads row 1."""
    rng = make_rng("dask-padding-only")
    x, w, b = operands(rng, (2, 3, 4, 10), (4, 3, 1, 1), "NCHW")
    kw = dict(padding=((2, 0), (2, 1)), stride=3)
    y = cd.conv2d(da.from_array(x, chunks=(1, 3, 1, 2)), w, b, **kw)
    assert y.chunks[2] == (2,)
    assert_bits(compute(y), cppconv.conv2d(x, w, b, **kw))


def test_depthwise_rows_kernel_needs_wide_chunks():
    """The depthwise row kernel takes rows of at least 64 outputs (on AVX2): narrower chunks
    are merged until it accepts them, so the numbers stay the whole problem's."""
    rng = make_rng("dask-depthwise")
    x = rng.standard_normal((1, 8, 20, 150)).astype(np.float32)
    w = rng.standard_normal((8, 1, 5, 5)).astype(np.float32)
    ref = cppconv.conv2d(x, w, padding=2, groups=8)
    y = cd.conv2d(da.from_array(x, chunks=(1, 8, 7, 10)), w, padding=2, groups=8)
    assert_bits(compute(y), ref)


@pytest.mark.parametrize("chunks", [-1, (1, 2, 7), (2, 2, (100, 1, 150, 49, 1)), (1, 2, 3)], ids=str)
@pytest.mark.parametrize("kwargs", [dict(padding=2), dict(stride=3, dilation=2, padding="same"),
                                    dict(padding=3, padding_mode="reflect", layout="NWC"),
                                    dict(padding=(4,), padding_mode="circular", stride=2, activation="tanh")], ids=str)
def test_conv1d_bit_for_bit(kwargs, chunks):
    """Rows of 192 outputs and more run folded into rows of 96 (the seed's fold_rows lowering)."""
    rng = make_rng("dask-conv1d", str(kwargs), str(chunks))
    x = rng.standard_normal((2, 2, 301)).astype(np.float32)
    if kwargs.get("layout") == "NWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 1))
        chunks = chunks if chunks == -1 else (chunks[0], chunks[2], chunks[1])
    w = rng.standard_normal((6, 2, 5)).astype(np.float32)
    ref = cppconv.conv1d(x, w, **kwargs)
    assert_bits(compute(cd.conv1d(da.from_array(x, chunks=chunks), w, **kwargs)), ref)


@pytest.mark.parametrize("chunks", [-1, (1, 3, 2, 3, 4), (2, 3, (3, 1, 4), (5, 6), (1, 9, 2))], ids=str)
@pytest.mark.parametrize("kwargs", [dict(padding=1), dict(stride=2, padding=(1, 0, 2)),
                                    dict(padding=1, padding_mode="replicate", layout="NDHWC"),
                                    dict(padding=1, groups=3), dict(padding="same", dilation=(2, 1, 1))], ids=str)
def test_conv3d_bit_for_bit(kwargs, chunks):
    rng = make_rng("dask-conv3d", str(kwargs), str(chunks))
    x = rng.standard_normal((2, 3, 8, 11, 12)).astype(np.float32)
    if kwargs.get("layout") == "NDHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 4, 1))
        chunks = chunks if chunks == -1 else (chunks[0], *chunks[2:], chunks[1])
    groups = kwargs.get("groups", 1)
    w = rng.standard_normal((6, 3 // groups, 3, 3, 3)).astype(np.float32)
    ref = cppconv.conv3d(x, w, **kwargs)
    assert_bits(compute(cd.conv3d(da.from_array(x, chunks=chunks), w, **kwargs)), ref)


TRANSPOSE_CASES = [
    dict(),
    dict(stride=2, padding=1),
    dict(stride=3, padding=(2, 0), output_padding=(1, 2)),
    dict(stride=2, dilation=2, padding=3, output_padding=1),
    dict(stride=4),  # gaps: outputs no input reaches
    dict(stride=(1, 3), padding=((0, 2), (3, 1)), groups=2, activation="relu"),
]


@pytest.mark.parametrize("chunks", ["single", (1, -1, 5, 7), (2, -1, 1, 2), (1, -1, (10, 1, 6), (3, 8, 7, 1))], ids=str)
@pytest.mark.parametrize("kwargs", TRANSPOSE_CASES, ids=str)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_conv_transpose2d_bit_for_bit(kwargs, chunks, layout):
    rng = make_rng("dask-transpose", str(kwargs), str(chunks), layout)
    x, w, b = operands(rng, (2, 6, 17, 19), (6, 4 // kwargs.get("groups", 1), 3, 4), layout)
    b = b[:4]  # conv_transpose2d's output channels are weight.shape[1] * groups = 4
    ref = cppconv.conv_transpose2d(x, w, b, layout=layout, **kwargs)
    assert_bits(compute_checked(cd.conv_transpose2d(chunked(x, chunks, layout), w, b, layout=layout, **kwargs)), ref)


def test_conv_transpose1d_and_3d():
    rng = make_rng("dask-transpose-nd")
    x = rng.standard_normal((2, 3, 50))
    w = rng.standard_normal((3, 2, 5))
    kw = dict(stride=3, padding=2, output_padding=1, dilation=2)
    y = cd.conv_transpose1d(da.from_array(x, chunks=(1, 3, (20, 1, 29))), w, **kw)
    assert_bits(compute(y), cppconv.conv_transpose1d(x, w, **kw))
    x = rng.standard_normal((2, 3, 7, 8, 9)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 2, 3)).astype(np.float32)
    kw = dict(stride=(2, 1, 3), padding=1)
    y = cd.conv_transpose3d(da.from_array(x, chunks=(1, 3, 2, 3, 4)), w, **kw)
    assert_bits(compute(y), cppconv.conv_transpose3d(x, w, **kw))


@pytest.mark.parametrize("mode", sorted(m for m in _native.PADDING_MODES if m != "zeros"))
def test_padding_index_mirror_matches_the_native_one(mode):
    """cppconv.dask copies far padding with a Python mirror of the native index map: a 1-tap
    convolution of the indices themselves reads the native map back."""
    for size, before, after in [(1, 0, 0), (1, 3, 2), (2, 3, 4), (5, 4, 4), (7, 1, 6)]:
        if mode == "reflect" and max(before, after) >= size or mode == "circular" and max(before, after) > size:
            continue
        native = cppconv.conv1d(np.arange(size, dtype=np.float64)[None, None], np.ones((1, 1, 1)),
                                padding=((before, after),), padding_mode=mode)[0, 0]
        mirror = [cd._padded_source(i, size, before, _native.PADDING_MODES[mode]) for i in range(size + before + after)]
        assert native.tolist() == mirror


def test_graph_construction_runs_no_kernel(monkeypatch):
    rng = make_rng("dask-lazy")
    x = da.from_array(rng.standard_normal((2, 3, 40, 40)).astype(np.float32), chunks=(1, 3, 10, 10))
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)

    def refuse(*args, **kwargs):
        raise AssertionError("a kernel ran while the graph was built")

    with monkeypatch.context() as m:
        m.setattr(_conv, "_run", refuse)
        m.setattr(_conv_transpose, "_run", refuse)
        for name in ("pool", "adaptive_pool", "conv", "conv_simple"):
            m.setattr(_native, name, refuse)
        y = cd.conv2d(x, w, padding=1)
        pooled = cd.max_pool2d(y, 2), cd.avg_pool2d(y, 3, padding=1), cd.adaptive_avg_pool2d(x, 4)
        cd.conv_transpose2d(y, np.ones((4, 2, 3, 3), np.float32), stride=2)
    # A small constant number of tasks per chunk.
    chunks = x.npartitions + y.npartitions
    assert len(y.__dask_graph__()) <= 8 * chunks
    assert_bits(compute(pooled[0]), cppconv.max_pool2d(cppconv.conv2d(x.compute(), w, padding=1), 2))


POOL_CASES = [
    ("max", dict(kernel_size=3, stride=2, padding=1)),
    ("max", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("max", dict(kernel_size=(3, 2), stride=(2, 3), dilation=2, ceil_mode=True)),
    ("max", dict(kernel_size=2, padding="same")),
    ("avg", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    ("avg", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("avg", dict(kernel_size=2, padding="same", divisor_override=3)),
    ("avg", dict(kernel_size=5, stride=1, padding=2)),
]


@pytest.mark.parametrize("chunks", CHUNKINGS_2D, ids=str)
@pytest.mark.parametrize("kind,kwargs", POOL_CASES, ids=str)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_pool2d_bit_for_bit(kind, kwargs, chunks, layout):
    rng = make_rng("dask-pool", kind, str(kwargs), str(chunks), layout)
    x = random_input(rng, (3, 4, 23, 29), layout)
    ref = getattr(cppconv, f"{kind}_pool2d")(x, layout=layout, **kwargs)
    y = getattr(cd, f"{kind}_pool2d")(chunked(x, chunks, layout), layout=layout, **kwargs)
    assert_bits(compute_checked(y), ref)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("chunks", CHUNKINGS_2D[1:4], ids=str)
def test_max_pool2d_indices_are_the_whole_planes(chunks, layout):
    rng = make_rng("dask-pool-indices", str(chunks), layout)
    x = random_input(rng, (3, 4, 23, 29), layout).round(1)  # ties: the first in the window wins in both
    kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, layout=layout)
    values, indices = cppconv.max_pool2d(x, return_indices=True, **kw)
    got_values, got_indices = cd.max_pool2d(chunked(x, chunks, layout), return_indices=True, **kw)
    assert_bits(compute_checked(got_values), values)
    assert_bits(compute_checked(got_indices), indices)


@pytest.mark.parametrize("rank", [1, 3])
def test_pools_of_other_ranks_when_present(rank):
    if not hasattr(cppconv, f"max_pool{rank}d"):
        pytest.skip(f"this cppconv has no max_pool{rank}d")
    rng = make_rng("dask-pool-rank", rank)
    shape = (2, 3) + (9, 10, 11)[:rank]
    x = rng.standard_normal(shape).astype(np.float32)
    chunks = (1, 3) + (2, 3, 4)[:rank]
    for kind in ("max", "avg"):
        ref = getattr(cppconv, f"{kind}_pool{rank}d")(x, 3, stride=2, padding=1, ceil_mode=True)
        y = getattr(cd, f"{kind}_pool{rank}d")(da.from_array(x, chunks=chunks), 3, stride=2, padding=1, ceil_mode=True)
        assert_bits(compute(y), ref)


@pytest.mark.parametrize("output_size,chunks", [((4, 5), (2, 3, 3, 2)), ((4, 5), (1, 3, 6, 4)), ((3, 2), (2, 3, 8, 5)),
                                                ((1, 1), (1, 3, -1, -1)), ((6, None), (1, 3, 2, 3))], ids=str)
@pytest.mark.parametrize("kind", ["avg", "max"])
def test_adaptive_pools_on_window_aligned_chunks(kind, output_size, chunks):
    x = make_rng("dask-adaptive", kind).standard_normal((4, 3, 12, 10)).astype(np.float32)
    ref = getattr(cppconv, f"adaptive_{kind}_pool2d")(x, output_size)
    assert_bits(compute_checked(getattr(cd, f"adaptive_{kind}_pool2d")(da.from_array(x, chunks=chunks), output_size)),
                ref)


@pytest.mark.parametrize("rank", [1, 3])
def test_adaptive_and_global_pools_of_other_ranks(rank):
    rng = make_rng("dask-adaptive-rank", rank)
    x = rng.standard_normal((2, 3) + (12, 10, 8)[:rank]).astype(np.float32)
    chunks = (1, 3) + (6, 5, 4)[:rank]
    for kind in ("avg", "max"):
        ref = getattr(cppconv, f"adaptive_{kind}_pool{rank}d")(x, 2)
        assert_bits(compute(getattr(cd, f"adaptive_{kind}_pool{rank}d")(da.from_array(x, chunks=chunks), 2)), ref)
    y = getattr(cd, f"global_avg_pool{rank}d")(da.from_array(x, chunks=(1, 3) + (-1,) * rank))
    assert_bits(compute(y), getattr(cppconv, f"global_avg_pool{rank}d")(x))


def test_adaptive_and_global_pools_name_a_chunking_that_works():
    x = da.zeros((2, 3, 12, 10), dtype=np.float32, chunks=(1, 3, 5, 10))
    with pytest.raises(ValueError, match=r"multiples of 3 input rows.*x.rechunk\(\{2: -1\}\)"):
        cd.adaptive_avg_pool2d(x, 4)
    with pytest.raises(ValueError, match="one chunk"):
        cd.global_avg_pool2d(x)
    y = cd.global_avg_pool2d(x.rechunk({2: -1}))
    assert_bits(compute(y), cppconv.global_avg_pool2d(np.zeros((2, 3, 12, 10), np.float32)))


def test_errors_are_the_in_memory_calls():
    x = da.zeros((1, 3, 10, 10), dtype=np.float32, chunks=5)
    with pytest.raises(ValueError, match="groups=2 does not divide the 3 input channels"):
        cd.conv2d(x, np.zeros((4, 1, 3, 3), np.float32), groups=2)
    with pytest.raises(ValueError, match="too large for padding_mode='reflect'"):
        cd.conv2d(x, np.zeros((4, 3, 3, 3), np.float32), padding=10, padding_mode="reflect")


def test_apply_maps_a_layer_over_batch_chunks_and_ships_it_once():
    rng = make_rng("dask-apply")
    x = rng.standard_normal((7, 3, 12, 12)).astype(np.float32)
    layer = cppconv.Conv2d(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), padding=1, activation="relu")
    y = cd.apply(layer, da.from_array(x, chunks=(3, 1, 5, 5)))
    assert y.chunks == ((3, 3, 1), (8,), (12,), (12,))
    graph = dict(y.__dask_graph__())
    assert sum(1 for v in graph.values() if isinstance(v, cppconv.Conv2d)) == 1
    assert_bits(compute(y), layer(x))

    def network(batch):
        return cppconv.max_pool2d(layer(batch), 2)

    y = cd.apply(network, da.from_array(x, chunks=(2, 3, 12, 12)))
    assert_bits(compute(y), network(x))


def small_network(classifier: bool = False):
    """A cppconv.Network (an ONNX graph: convolution, ReLU, max pool; with `classifier`, then
    Flatten and a fully connected layer), or a skip without onnx."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    import cppconv.onnx

    rng = make_rng("dask-network")
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.standard_normal((5, 144)).astype(np.float32), "fc")
    head = [helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("Gemm", ["f", "fc"], ["o"], transB=1)]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["y"], ["z"]),
         helper.make_node("MaxPool", ["z"], ["p"], kernel_shape=[2, 2], strides=[2, 2]), *(head if classifier else [])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 12, 12])],
        [helper.make_tensor_value_info("o", TensorProto.FLOAT, ["n", 5]) if classifier else
         helper.make_tensor_value_info("p", TensorProto.FLOAT, ["n", 4, 6, 6])], [w, fc] if classifier else [w])
    return cppconv.onnx.load(helper.make_model(graph))


@pytest.mark.parametrize("classifier", [False, True])
def test_apply_maps_a_network(classifier):
    """Also a classifier (Flatten, Gemm): its result's shape from an empty batch too."""
    net = small_network(classifier)
    x = make_rng("dask-apply-network").standard_normal((7, 3, 12, 12)).astype(np.float32)
    y = cd.apply(net, da.from_array(x, chunks=(3, 3, 6, 12)))  # the result's shape from an empty batch
    assert y.chunks == (((3, 3, 1), (5,)) if classifier else ((3, 3, 1), (4,), (6,), (6,)))
    assert sum(1 for v in dict(y.__dask_graph__()).values() if isinstance(v, cppconv.Network)) == 1
    assert_bits(compute(y), net(x))


@pytest.mark.parametrize("chunks", [(1, 3, 1, 1), (2, 3, (10, 1, 7, 5), (3, 20, 5, 1)), (1, 3, 5, 6), -1], ids=str)
def test_task_count_is_a_small_constant_times_the_chunks(chunks):
    """Each operation adds at most a few tasks per input and output chunk, for any chunking
    (chunks of 1 merged up to the halo included)."""
    rng = make_rng("dask-tasks", str(chunks))
    x = da.from_array(rng.standard_normal((2, 3, 23, 29)).astype(np.float32), chunks=chunks)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    layer = cppconv.Conv2d(w, padding=1)
    operations = {
        "conv": lambda: cd.conv2d(x, w, padding=1),
        "conv strided dilated": lambda: cd.conv2d(x, w, padding="same", stride=2, dilation=2),
        "conv reflect": lambda: cd.conv2d(x, w, padding=2, padding_mode="reflect"),
        "conv constant": lambda: cd.conv2d(x, w, padding=(1, 2), padding_mode="constant", padding_value=1.5),
        "transpose": lambda: cd.conv_transpose2d(x, np.ones((3, 2, 3, 3), np.float32), stride=2, padding=1),
        "max pool": lambda: cd.max_pool2d(x, 3, stride=2, ceil_mode=True),
        "max pool indices": lambda: cd.max_pool2d(x, 3, stride=2, return_indices=True)[1],
        "avg pool": lambda: cd.avg_pool2d(x, 2, padding=1),
        "apply": lambda: cd.apply(layer, x),
    }
    before = len(x.__dask_graph__())
    for name, make in operations.items():
        y = make()
        added = len(y.__dask_graph__()) - before
        # (plus a fixed few: the far padding's takes and concatenations, 27 tasks on one chunk)
        assert added <= 6 * (x.npartitions + y.npartitions) + 32, (name, added, x.npartitions, y.npartitions)


def test_neighbours_pass_only_their_halos():
    """An output task reads its own core chunk whole and of each neighbour only a halo task's
    copy of the rows or columns it needs (as map_overlap's getitem tasks), so a core chunk
    is released once its block and its few halos ran and only halos travel between workers."""
    from dask.core import get_deps

    rng = make_rng("dask-halos")
    x_np = rng.standard_normal((2, 3, 40, 50)).astype(np.float32)
    x = da.from_array(x_np, chunks=(1, 3, 10, 10))
    w = rng.standard_normal((4, 3, 5, 3)).astype(np.float32)
    y = cd.conv2d(x, w, padding=(2, 1), dilation=(1, 2))
    halos = (5 - 1, 2 * (3 - 1))  # dilation * (k - 1) + 1 - stride per spatial axis
    graph = dict(y.__dask_graph__())
    dependencies, dependents = get_deps(graph)
    outputs = {k for k in graph if isinstance(k, tuple) and k[0] == y.name}
    halo_keys = {k for k in graph if isinstance(k, tuple) and k[0] == f"{y.name}-halo"}
    inputs = {k for k in graph if isinstance(k, tuple) and k[0] == x.name}
    assert len(outputs) == y.npartitions and inputs == set(dict(x.__dask_graph__())) and halo_keys
    assert len(halo_keys) <= 3 * len(outputs)  # at most the right, lower and corner neighbours
    for key in outputs:
        assert len(dependencies[key] & inputs) == 1, key  # its own core chunk only
    for key in inputs:  # each core chunk: its own block and the halos cut from it, nothing more
        assert len(dependents[key] & outputs) <= 1 and len(dependents[key] - outputs - halo_keys) == 0, key
    core = x.chunks[2][0], x.chunks[3][0]
    for key in halo_keys:
        (value,) = dask.get(graph, [key])
        assert value.base is None  # a copy, which does not keep the neighbour alive
        rows, cols = value.shape[2:]
        assert (rows <= halos[0] and cols <= core[1]) or (rows <= core[0] and cols <= halos[1]), value.shape
    assert_bits(compute(y), cppconv.conv2d(x_np, w, padding=(2, 1), dilation=(1, 2)))


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_chained_calls_with_recycled_arrays_match_the_in_memory_chain(scheduler, monkeypatch):
    """Three chained convolutions and a pool on small chunks, their outputs freed as soon as the
    next step read them (so arrays are recycled while other tasks still hold their inputs and
    halos): bit for bit the in-memory chain, under the synchronous and the threaded scheduler."""
    rng = make_rng("dask-recycled")
    x = rng.standard_normal((2, 3, 37, 41)).astype(np.float32)
    w1, w2, w3 = (rng.standard_normal(s).astype(np.float32) for s in [(4, 3, 3, 3), (4, 4, 5, 5), (4, 4, 3, 3)])
    ref = cppconv.conv2d(x, w1, padding=1, activation="relu")
    ref = cppconv.conv2d(ref, w2, padding=2)
    ref = cppconv.max_pool2d(cppconv.conv2d(ref, w3, padding=1, stride=2), 2)
    pool = _buffers.Recycler(buffers=4, smallest=0, max_bytes=1 << 30)  # these chunks are small
    calls, made = [], []
    empty, new_buffer = pool.empty, pool._new_buffer
    monkeypatch.setattr(pool, "empty", lambda shape, dtype: calls.append(shape) or empty(shape, dtype))
    monkeypatch.setattr(pool, "_new_buffer", lambda nbytes: made.append(nbytes) or new_buffer(nbytes))
    monkeypatch.setattr(cd, "_recycled", pool)
    for chunks in [(1, 3, 7, 9), (2, 3, (20, 17), (5, 36))]:
        y = cd.conv2d(da.from_array(x, chunks=chunks), w1, padding=1, activation="relu")
        y = cd.max_pool2d(cd.conv2d(cd.conv2d(y, w2, padding=2), w3, padding=1, stride=2), 2)
        for _ in range(2):  # the second run starts with the first's arrays kept
            got = y.compute(scheduler=scheduler, num_workers=4) if scheduler == "threads" else y.compute(
                scheduler=scheduler)
            assert_bits(got, ref)
    assert len(made) < len(calls)  # some arrays were reused buffers (the rest: many chunks alive at once)


def test_examples_run():
    result = doctest.testmod(cd, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


def test_call_threads(restore_threads):
    assert cd.call_threads(3) == 3
    cppconv.set_num_threads(1)
    assert cd.call_threads() == 1  # never more than cppconv's own setting
    with pytest.raises(ValueError):
        cd.call_threads(0)


def test_call_threads_is_the_workers_share_of_the_cores(restore_threads, monkeypatch):
    """In a worker of 4 threads on 8 cores each call gets 2 threads (cores / worker threads),
    never more than cppconv's setting; in dask's local thread pool, cores / its workers."""
    distributed = pytest.importorskip("distributed")
    monkeypatch.setattr(cd, "_cores", lambda: 8)
    cppconv.set_num_threads(8)
    assert cd.call_threads() == 8  # the caller's thread: the whole process is this task's
    with distributed.LocalCluster(n_workers=1, threads_per_worker=4, processes=False, dashboard_address=None,
                                  silence_logs=logging.ERROR) as cluster, distributed.Client(cluster) as client:
        assert client.submit(cd.call_threads, pure=False).result() == 2
        assert client.submit(cd.call_threads, 3, pure=False).result() == 3  # num_threads= overrides
        cppconv.set_num_threads(1)
        assert client.submit(cd.call_threads, pure=False).result() == 1  # capped by cppconv's setting
    cppconv.set_num_threads(8)
    with dask.config.set(num_workers=2):
        shares = dask.compute(*[dask.delayed(cd.call_threads, pure=False)() for _ in range(4)], scheduler="threads")
    assert set(shares) == {4}


def _threads_seen(batch):
    """A callable without num_threads (as a Network): the threads cppconv would use here."""
    return np.full((len(batch), 1), cppconv.get_num_threads())


def test_apply_limits_a_callable_without_num_threads(restore_threads, monkeypatch):
    """A Network or function passed to apply runs with OpenMP's setting of its thread limited
    to the worker's share (8 threads of a worker on 8 cores: 1 each), then restored."""
    distributed = pytest.importorskip("distributed")
    pytest.importorskip("threadpoolctl")
    if not cd._openmp_controllers():
        pytest.skip("no OpenMP runtime that threadpoolctl controls (cppconv built without OpenMP)")
    monkeypatch.setattr(cd, "_cores", lambda: 8)
    _native.reset_num_threads()
    x = da.zeros((8, 3), chunks=1)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=8, processes=False, dashboard_address=None,
                                  silence_logs=logging.ERROR) as cluster, distributed.Client(cluster) as client:
        def settings() -> set:
            return set(client.gather([client.submit(cppconv.get_num_threads, pure=False) for _ in range(16)]))

        # (The worker threads' own setting: OpenMP keeps one per thread, and the main thread's
        # may differ after earlier tests.)
        before = settings()
        seen = client.compute(cd.apply(_threads_seen, x, output_shape=(1,), dtype=np.int64), sync=True)
        assert seen.ravel().tolist() == [1] * 8
        assert settings() == before  # each thread's setting restored


_CAPPED_NETWORK: list = []  # (a module global: dask pickles the callable by name)


def _run_capped_network(batch):
    """The test's network (loaded with num_threads=8) on a batch, with the threads its calls
    would use and the lanes it would run, seen from the task's thread."""
    net = _CAPPED_NETWORK[0]
    lanes = net._lanes([batch]) or [(None, [(0, len(batch))])]
    seen = np.full((len(batch), 2), (_native.resolve_threads(8), len(lanes)), np.float32)
    return np.concatenate([net(batch).reshape(len(batch), -1), seen], axis=1)


def test_apply_caps_a_network_loaded_with_its_own_threads(restore_threads, monkeypatch):
    """A network loaded with num_threads=8 still runs each of its calls on the worker thread's
    share (1 of 8 cores for each of 8 worker threads): one lane of one thread."""
    distributed = pytest.importorskip("distributed")
    net = small_network()
    _CAPPED_NETWORK[:] = [cppconv.onnx.load(net._model_bytes(), num_threads=8)]
    monkeypatch.setattr(cd, "_cores", lambda: 8)
    x = np.random.default_rng(0).standard_normal((8, 3, 12, 12)).astype(np.float32)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=8, processes=False, dashboard_address=None,
                                  silence_logs=logging.ERROR) as cluster, distributed.Client(cluster) as client:
        got = client.compute(cd.apply(_run_capped_network, da.from_array(x, chunks=(2, 3, 12, 12)),
                                      output_shape=(4 * 6 * 6 + 2,), dtype=np.float32), sync=True)
    assert got[:, -2:].tolist() == [[1, 1]] * 8
    assert_bits(got[:, :-2], net(x).reshape(8, -1))
    assert _native.thread_cap() == 0


def _worker_threads():
    return cd.call_threads(), os.environ.get("OMP_NUM_THREADS"), cppconv.get_num_threads()


def test_on_a_local_cluster_of_processes():
    """Real worker processes: the weights and the layer are pickled to them, the results are
    the in-memory call's, and each call uses at most the worker's share of the cores."""
    distributed = pytest.importorskip("distributed")
    rng = make_rng("dask-cluster")
    x = rng.standard_normal((4, 3, 30, 30)).astype(np.float32)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    layer = cppconv.Conv2d(w, padding="same", padding_mode="reflect")
    pickle.dumps(layer)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=logging.ERROR) as cluster, distributed.Client(cluster) as client:
        xd = da.from_array(x, chunks=(2, 3, 10, 10))
        y, z = client.compute([cd.conv2d(xd, w, padding="same", padding_mode="reflect", stride=2), cd.apply(layer, xd)],
                              sync=True)
        assert_bits(y, cppconv.conv2d(x, w, padding="same", padding_mode="reflect", stride=2))
        assert_bits(z, layer(x))
        if importlib.util.find_spec("onnx") is not None:  # a Network pickles as its model's bytes
            net = small_network()
            assert_bits(client.compute(cd.apply(net, xd[:, :, :12, :12]), sync=True), net(x[:, :, :12, :12]))
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        for threads, omp, setting in client.gather([client.submit(_worker_threads, pure=False, workers=[a])
                                                    for a in client.scheduler_info()["workers"]]):
            assert 1 <= threads <= max(1, cores // 1)
            assert threads <= setting  # the nanny's OMP_NUM_THREADS, through cppconv's setting
            if omp is not None:
                assert threads <= int(omp)
