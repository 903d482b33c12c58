"""cppconv.onnx.load and cppconv.Network: whole networks (torch modules exported to ONNX) and
hand-built graphs for each operator and attribute, compared with ONNX Runtime and PyTorch;
every load-time and run-time error."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import threading
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import cppconv  # noqa: E402
from cppconv import _native  # noqa: E402
from cppconv._models import onnx_networks, vision_models  # noqa: E402
from cppconv.onnx import ModelError  # noqa: E402

RNG = np.random.default_rng(0)
F32 = TensorProto.FLOAT


def _rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _model(nodes: List[Any], inputs: Dict[str, np.ndarray], outputs: Sequence[str],
           initializers: Optional[Dict[str, np.ndarray]] = None, opset: int = 17,
           output_types: Optional[Dict[str, int]] = None, batch_free: bool = True) -> Any:
    types = output_types or {}
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, F32, ["N", *a.shape[1:]] if batch_free else list(a.shape))
         for n, a in inputs.items()],
        [helper.make_tensor_value_info(n, types.get(n, F32), None) for n in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (initializers or {}).items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _ort(model: Any, feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _row(net: cppconv.Network, op: str) -> Dict[str, Any]:
    """The explain() row of the first node of operator op."""
    return next(r for r in net.explain()["nodes"] if r["op"] == op)


def _check(nodes: List[Any], inputs: Dict[str, np.ndarray], outputs: Sequence[str] = ("y",),
           initializers: Optional[Dict[str, np.ndarray]] = None, opset: int = 17, rtol: float = 1e-5,
           output_types: Optional[Dict[str, int]] = None, lanes: Optional[int] = None) -> cppconv.Network:
    """Runs a hand-built graph on cppconv and ONNX Runtime and compares every output (a batch of
    several images runs in lanes by default: lanes=1 for tests of one lane's programs and arena)."""
    model = _model(nodes, inputs, outputs, initializers, opset, output_types)
    net = cppconv.onnx.load(model, lanes=lanes)
    got = net.run(inputs)
    for name, want in zip(outputs, _ort(model, inputs)):
        assert got[name].shape == want.shape, name
        scale = max(float(np.abs(want).max()), 1.0) if want.size else 1.0
        np.testing.assert_allclose(got[name], want, rtol=rtol, atol=rtol * scale, err_msg=name)
    # The second call records the steps' native calls and the third replays them as one (or
    # both run the steps in Python, where a step does Python work), on other values each: the
    # outputs are the steps' own in Python.
    for k in range(2):
        other = {n: (a * (0.5 + k) + 0.25).astype(a.dtype) if a.dtype.kind == "f" else a for n, a in inputs.items()}
        again = net.run(other)
        want_steps = net._run_steps([net._feed(spec, other[spec.name]) for spec in net._inputs])
        for name in outputs:
            np.testing.assert_array_equal(again[name], want_steps[name], err_msg=name)
    return net


# ----- whole networks --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def torch():
    t = pytest.importorskip("torch")
    return t


_EXPORTED: Dict[str, Any] = {}


def _exported(name: str) -> Any:
    if name not in _EXPORTED:
        module, shape = onnx_networks.build(name)
        _EXPORTED[name] = (module, shape, onnx_networks.export(module, shape))
    return _EXPORTED[name]


@pytest.mark.parametrize("name", list(onnx_networks.NETWORKS))
def test_network_matches_torch_and_onnxruntime(torch, name):
    module, shape, data = _exported(name)
    net = cppconv.onnx.load(data)
    for batch in (1, 3):  # the batch size is free
        x = _rand(batch, *shape[1:])
        y = net(x)
        with torch.inference_mode():
            want = module(torch.from_numpy(x)).numpy()
        (ref,) = _ort(onnx.load_from_string(data), {"x": x})
        scale = float(np.abs(want).max())
        assert y.shape == want.shape and y.dtype == np.float32
        np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4 * scale)
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("name", list(vision_models.ARCHITECTURES))
def test_real_architecture_matches_torch_and_onnxruntime(torch, name):
    """The full architectures of issue 15 (torchvision's layer for layer), at a small input
    size: every operator their exports use plans and runs, at batch 1 and 2."""
    module, shape = vision_models.build(name, vision_models.ARCHITECTURES[name][1])
    data = onnx_networks.export(module, shape)
    net = cppconv.onnx.load(data)
    model = onnx.load_from_string(data)
    for batch in (1, 2):
        x = _rand(batch, *shape[1:])
        y = net(x)
        with torch.inference_mode():
            want = module(torch.from_numpy(x)).numpy()
        (ref,) = _ort(model, {"x": x})
        scale = float(np.abs(want).max())
        assert y.shape == want.shape and y.dtype == np.float32
        np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4 * scale)
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4 * scale)
    # One layout conversion at the input, and no NumPy matrix product (the classifiers are
    # fully connected cppconv layers).
    rows = net.explain()["nodes"]
    layout_rows = [r for r in rows if r["op"] == "(layout)"]
    assert len(layout_rows) <= (2 if name == "unet" else 1), layout_rows
    assert not any("NumPy matmul" in r["became"] for r in rows)


def test_resnet_plan_fuses_and_keeps_one_layout(torch):
    net = cppconv.onnx.load(_exported("resnet")[2])
    info = net.explain()
    rows = info["nodes"]
    convs = [r for r in rows if r["op"] == "Conv"]
    assert convs and all(r["layout"] == "NHWC" and r.get("algorithm") for r in convs)
    assert sum("activation relu fused" in r["became"] for r in convs) >= 5
    # Torch's exporter folds BatchNormalization itself; any left is folded here.
    assert all(r["became"].startswith("fused into") for r in rows if r["op"] == "BatchNormalization")
    # One layout conversion, at the input: the residual adds stay NHWC (each fused into the
    # convolution that produces its operand, with the Relu after it), and the pooled
    # (N, 1, 1, C) is flattened as it is.
    conversions = [r for r in rows if r["op"] == "(layout)"]
    assert len(conversions) == 1, conversions
    adds = [r for r in rows if r["op"] == "Add"]
    assert len(adds) == 4 and all(r["became"].startswith("fused into") for r in adds)
    fused = [r for r in convs if "residual Add" in r["became"]]
    assert len(fused) == 4 and all("fused in the kernel's stores; activation relu fused (after the residual)"
                                   in r["became"] for r in fused)
    assert info["peak_activation_bytes"] > 16 * 32 * 32 * 4
    # (the arena holds what the planned peak counts but the input and the outputs)
    assert 0 < info["arena_bytes"] <= info["peak_activation_bytes"]
    text = net.summary()
    assert "planned peak activation memory" in text and "activation arena" in text and "Conv2d 7x7" in text


@pytest.mark.parametrize("name", ["resnet", "shufflenet"])
def test_unfolded_export_folds_here(torch, name):
    """Without torch's constant folding the model keeps its BatchNormalization nodes and shape
    arithmetic: the plan folds both, and the results still match."""
    module, shape = onnx_networks.build(name)
    data = onnx_networks.export(module, shape, fold=False)
    net = cppconv.onnx.load(data)
    rows = net.explain()["nodes"]
    bns = [r for r in rows if r["op"] == "BatchNormalization"]
    assert bns and all(r["became"].startswith("fused into") for r in bns)
    if name == "resnet":  # a Conv that took in its BatchNormalization takes the residual Add too
        assert sum("residual Add" in r["became"] for r in rows if r["op"] == "Conv") == 4
    x = _rand(2, *shape[1:])
    with torch.inference_mode():
        want = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(net(x), want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_mobilenet_fuses_relu6_and_silu(torch):
    rows = cppconv.onnx.load(_exported("mobilenet_v2")[2]).explain()["nodes"]
    assert any("relu6 fused" in r["became"] for r in rows)
    assert any("groups" in r["became"] for r in rows if r["op"] == "Conv")  # depthwise
    # Each residual Add goes into the 1x1 projection that produces its operand.
    adds = [r for r in rows if r["op"] == "Add"]
    assert len(adds) == 2 and all(r["became"].startswith("fused into") for r in adds)
    assert sum("Conv2d 1x1; residual Add" in r["became"] and "kernel's stores" in r["became"] for r in rows) == 2
    rows = cppconv.onnx.load(_exported("se_hardswish")[2]).explain()["nodes"]
    assert any("silu fused" in r["became"] for r in rows)
    assert all(r["layout"] == "NHWC" for r in rows if r["op"] == "Mul" and "fused" not in r["became"])  # SE scaling


def test_network_pickles_and_runs_from_threads(torch):
    module, shape, data = _exported("squeezenet")
    net = cppconv.onnx.load(data, num_threads=1)
    x = _rand(2, *shape[1:])
    want = net(x)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        clone = pickle.loads(pickle.dumps(net, protocol))
        np.testing.assert_array_equal(clone(x), want)
        assert clone.explain()["threads"] == 1
    inputs = [_rand(1 + k % 3, *shape[1:]) for k in range(8)]
    expected = [net(v) for v in inputs]
    results: Dict[int, np.ndarray] = {}

    def work(k: int) -> None:
        for _ in range(3):
            results[k] = net(inputs[k])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(8):
        np.testing.assert_array_equal(results[k], expected[k])



@pytest.mark.parametrize("fold", [True, False], ids=["folded", "batchnorm-kept"])
def test_pickle_source_leaves_out_the_weights_the_layers_hold(torch, fold):
    """A network keeps the model's bytes for pickling less the weights its layers hold bit for
    bit (a convolution's with no BatchNormalization folded in here, a Gemm's); a pickle puts
    them back: the same model, initializer for initializer."""
    from onnx import numpy_helper

    module, shape = vision_models.build("resnet18", 32)
    data = onnx_networks.export(module, shape, fold=fold)
    net = cppconv.onnx.load(data)
    if fold:
        assert len(net._bytes) < len(data) / 20
    else:  # (the convolutions' weights are folded with their BatchNormalizations: kept)
        assert len(net._bytes) > len(data) / 2
    original, rebuilt = onnx.load_from_string(data), onnx.load_from_string(net._model_bytes())
    want = {t.name: numpy_helper.to_array(t) for t in original.graph.initializer}
    got = {t.name: numpy_helper.to_array(t) for t in rebuilt.graph.initializer}
    assert list(got) == list(want)
    for name in want:
        assert got[name].dtype == want[name].dtype
        np.testing.assert_array_equal(got[name], want[name])
    original.graph.ClearField("initializer")
    rebuilt.graph.ClearField("initializer")
    assert rebuilt == original
    x = _rand(2, *shape[1:])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(net))(x), net(x))

def test_pickle_source_keeps_every_initializer_the_layers_do_not_hold():
    """The pickle's source comes from the planner's weightless copy of the model and the values
    it kept (the parsed model goes before planning): a large constant no layer holds (a Mul's,
    one stored as float_data rather than raw bytes, a float16 one), and a weight a layer holds
    come back bit for bit, -0.0 and NaN included."""
    w = _rand(8, 4, 3, 3)
    w[0, 0, 0, 0] = -0.0
    scale = _rand(1, 8, 1, 1) * np.ones((1, 8, 6, 6), np.float32)  # (288 values: above the small-constant size)
    scale[0, 0, 0, 0] = np.nan
    listed = helper.make_tensor("listed", F32, [1, 8, 6, 6], _rand(1, 8, 6, 6).ravel().tolist())  # float_data
    half = numpy_helper.from_array(_rand(1, 8, 6, 6).astype(np.float16), "half")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["c", "scale"], ["m"]), helper.make_node("Add", ["m", "listed"], ["a"]),
             helper.make_node("Cast", ["half"], ["h32"], to=F32), helper.make_node("Sub", ["a", "h32"], ["y"])]
    model = _model(nodes, {"x": X4}, ["y"], {"w": w, "scale": scale})
    model.graph.initializer.extend([listed, half])
    for t in model.graph.initializer:  # (a tensor's other fields travel too)
        t.doc_string = f"doc of {t.name}"
        t.metadata_props.add(key="origin", value=t.name)
    for compute_dtype in (None, "bfloat16"):  # (a bfloat16 layer's weights: read back and compared)
        net = cppconv.onnx.load(model.SerializeToString(), compute_dtype=compute_dtype)
        _check_pickle_source(net, model)


def _check_pickle_source(net: cppconv.Network, model: Any) -> None:
    rebuilt = onnx.load_from_string(net._model_bytes())
    want = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    got = {t.name: numpy_helper.to_array(t) for t in rebuilt.graph.initializer}
    assert list(got) == list(want)
    for name in want:
        assert got[name].dtype == want[name].dtype and got[name].tobytes() == want[name].tobytes(), name
    for t in rebuilt.graph.initializer:
        assert t.doc_string == f"doc of {t.name}"
        assert [(e.key, e.value) for e in t.metadata_props] == [("origin", t.name)]
    kept = {t.name: t for t in onnx.load_from_string(net._bytes).graph.initializer}
    assert not kept["w"].raw_data and kept["scale"].raw_data  # (the Conv's weights: its layer's)
    x = _rand(2, 4, 6, 6)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(net))(x), net(x))


def test_model_proto_is_read_not_serialized_and_pickles_as_given():
    """load(ModelProto) plans from the caller's proto itself (serializing a ResNet-50 took half
    of its load); the pickle's source is the model at load, whatever the caller changes later."""
    w = _rand(8, 4, 3, 3)
    model = _model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], {"x": X4}, ["y"], {"w": w})
    assert cppconv._network.parse_model(model) is model
    net = cppconv.onnx.load(model)
    want = net(X4)
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(-w, "w"))  # (the caller's proto, changed after load)
    rebuilt = pickle.loads(pickle.dumps(net))
    np.testing.assert_array_equal(rebuilt(X4), want)
    source = onnx.load_from_string(net._model_bytes())
    assert numpy_helper.to_array(source.graph.initializer[0]).tobytes() == w.tobytes()
    np.testing.assert_allclose(want, _ort(source, {"x": X4})[0], rtol=1e-5, atol=1e-5)


def _runs(net: cppconv.Network) -> List[str]:
    return list(net.explain()["runs"].values())


@pytest.mark.parametrize("name", list(vision_models.ARCHITECTURES))
def test_real_architecture_runs_as_one_native_call(torch, name):
    """From the second call with an input shape on, every architecture of the suite runs as one
    native call (the steps' native calls recorded with their operands bound), whose outputs are
    those of its steps run in Python, bit for bit; each caller owns its outputs."""
    module, shape = vision_models.build(name, vision_models.ARCHITECTURES[name][1])
    net = cppconv.onnx.load(onnx_networks.export(module, shape))
    for batch in (1, 2):
        xs = [_rand(batch, *shape[1:]) for _ in range(4)]
        ys = [net(x) for x in xs]  # in Python; recorded (and checked); replayed twice
        assert _runs(net)[-1].startswith("one native call"), _runs(net)
        kept = [y.copy() for y in ys]
        for x, y in zip(xs, ys):
            np.testing.assert_array_equal(y, net._run_steps([x])["y"])
        np.testing.assert_array_equal(net(xs[0]), kept[0])
        for y, k in zip(ys, kept):  # (later calls leave earlier results alone)
            np.testing.assert_array_equal(y, k)


def test_network_with_a_python_step_keeps_running_its_steps():
    """A step computed in NumPy (here a Softmax) is not recorded: calls with that shape keep
    running the steps in Python, and explain() says which node."""
    net = _check([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                  helper.make_node("Softmax", ["c"], ["y"], axis=1)], {"x": X4}, initializers={"w": _rand(4, 4, 3, 3)},
                 lanes=1)
    (how,) = _runs(net)
    assert how.startswith("the steps in Python") and "Softmax" in how


def test_recording_that_replays_differently_is_not_used():
    """A step that does Python work beside its recorded native call (here it adds 1 after the
    convolution) passes the per-step check; the replay on other values must catch it, and the
    calls keep running the steps in Python, with the right outputs."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c", "w"], ["y"], pads=[1, 1, 1, 1])]
    model = _model(nodes, {"x": X4}, ["y"], {"w": _rand(4, 4, 3, 3)})
    net = cppconv.onnx.load(model, lanes=1)
    k = next(i for i, row in enumerate(net._step_rows) if row["op"] == "Conv")
    fn, *rest = net._steps[k]

    def plus_one(x: Any, out: Any = None) -> Any:
        (y,) = fn(x, out)
        y += 1
        return (y,)

    net._steps[k] = (plus_one, *rest)
    xs = [_rand(*X4.shape) for _ in range(3)]
    ys = [net(x) for x in xs]
    assert _runs(net) == ["the steps in Python: a replay on other values differed from the Python run"]
    for x, y in zip(xs, ys):
        np.testing.assert_array_equal(y, net._run_steps([x])["y"])


def test_program_inputs_other_values_and_precision():
    """A program is checked on other input values even where the caller's hold the usual map's
    fixed points (pixel values such as 5.0, infinities), is kept per float32 precision (a
    convolution resolves it when recorded), and takes Fortran-ordered inputs."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])]
    net = cppconv.onnx.load(_model(nodes, {"x": X4}, ["y"], {"w": _rand(4, 4, 3, 3)}), lanes=1)
    pixels = np.round(RNG.uniform(0, 255, X4.shape)).astype(np.float32)
    pixels[0, 0, 0, :3] = [5.0, np.inf, -np.inf]
    for _ in range(3):
        y = net(pixels)
    assert _runs(net)[0].startswith("one native call"), _runs(net)
    np.testing.assert_array_equal(y, net._run_steps([pixels])["y"])
    before = cppconv.get_float32_precision()
    x = _rand(*X4.shape)
    try:
        cppconv.set_float32_precision("high")
        for _ in range(3):
            y_high = net(x)
        np.testing.assert_array_equal(y_high, net._run_steps([x])["y"])
        keys = list(net.explain()["runs"])  # (the other precision's shown with its word)
        assert len(keys) == 2 and keys[0].endswith("(float32 precision highest)"), keys
    finally:
        cppconv.set_float32_precision(before)
    np.testing.assert_array_equal(net(x), net._run_steps([x])["y"])
    fortran = np.asfortranarray(x)
    np.testing.assert_array_equal(net(fortran), net._run_steps([x])["y"])


def test_integer_inputs_that_other_values_break_keep_running():
    """The check runs the steps on other input values; an index input moved out of range fails
    there, which leaves the shape in Python instead of failing the caller's call."""
    table = _rand(4, 3)
    nodes = [helper.make_node("Gather", ["t", "i"], ["y"], axis=0)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("i", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("y", F32, None)], [numpy_helper.from_array(table, "t")])
    net = cppconv.onnx.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    i = np.array([0, 3], np.int64)
    for _ in range(4):
        np.testing.assert_array_equal(net.run({"i": i})["y"], table[i])
    (how,) = _runs(net)
    assert how.startswith("the steps in Python")
    # The call that tried to record returns outputs its caller owns, as every call does (here a
    # constant output, which a caller's write must not reach).
    nodes.append(helper.make_node("Identity", ["t"], ["z"]))
    outputs = [helper.make_tensor_value_info(name, F32, None) for name in ("y", "z")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("i", TensorProto.INT64, [2])], outputs,
                              [numpy_helper.from_array(table, "t")])
    net = cppconv.onnx.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    for _ in range(3):
        z = net.run({"i": i})["z"]
        np.testing.assert_array_equal(z, table)
        z += 1.0


def test_programs_of_the_latest_input_shapes_are_kept():
    """Each input shape gets its own program; a network keeps those of the two shapes used
    last (their arrays with them), and a shape dropped starts over."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])]
    net = cppconv.onnx.load(_model(nodes, {"x": X4}, ["y"], {"w": _rand(4, 4, 3, 3)}), lanes=1)
    xs = {n: _rand(n, *X4.shape[1:]) for n in (1, 2, 3)}
    for n in (1, 2):
        for _ in range(3):
            net(xs[n])
    assert len(_runs(net)) == 2 and all(h.startswith("one native call") for h in _runs(net))
    net(xs[3])
    assert list(net.explain()["runs"]) == ["(2, 4, 6, 6) float32", "(3, 4, 6, 6) float32"]
    for x in xs.values():
        np.testing.assert_array_equal(net(x), net._run_steps([x])["y"])


# ----- sub-batches --------------------------------------------------------------------------

def _split_against_whole(name: str, n: int, whole_options: Dict[str, Any], split_options: Dict[str, Any]) -> Any:
    """Architecture `name` loaded twice, run on a batch of n three times (in Python; recorded;
    replayed): the split network's outputs must be the whole one's bit for bit, arrays of their
    own.  Returns the batch and the two networks."""
    module, shape = vision_models.build(name, vision_models.ARCHITECTURES[name][1])
    data = onnx_networks.export(module, shape)
    whole, split = cppconv.onnx.load(data, **whole_options), cppconv.onnx.load(data, **split_options)
    x = _rand(n, *shape[1:])
    for _ in range(3):
        y = split(x)
        np.testing.assert_array_equal(y, whole(x))
        assert y.flags.owndata and y.shape[0] == n
    return x, whole, split


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet50", "efficientnet_b0", "regnet_x_400mf", "densenet121",
                                  "unet"])
def test_sub_batches_give_the_whole_batch_results_bit_for_bit(torch, name):
    """A batch of 7 in sub-batches of at most 4 (4 and 3 images, each through the program
    recorded for its size) gives the whole batch's outputs bit for bit: no kernel's summation
    order depends on the batch size.  A batch no larger than the sub-batch runs whole."""
    x, whole, parts = _split_against_whole(name, 7, dict(sub_batch=7, lanes=1), dict(sub_batch=4, lanes=1))
    size = ", ".join(map(str, x.shape[1:]))
    assert list(parts.explain()["runs"]) == [f"(4, {size}) float32", f"(3, {size}) float32"]
    assert all(h.startswith("one native call") for h in _runs(parts))
    small = x[:3]
    np.testing.assert_array_equal(parts(small), whole(small))
    assert list(parts.explain()["runs"])[-1] == f"(3, {size}) float32"


def test_sub_batch_parts_are_even_and_write_their_rows():
    """The parts of a batch are the fewest of at most sub_batch images, their sizes differing
    by at most one; each part's outputs land in its rows (of every output)."""
    from cppconv import _netbatch

    assert _netbatch.parts(7, 4) == [(0, 4), (4, 7)]
    assert _netbatch.parts(16, 5) == [(0, 4), (4, 8), (8, 12), (12, 16)]
    assert _netbatch.parts(10, 3) == [(0, 3), (3, 6), (6, 8), (8, 10)]
    assert _netbatch.parts(5, 1) == [(k, k + 1) for k in range(5)]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"]),
             helper.make_node("GlobalAveragePool", ["c"], ["g"])]
    model = _model(nodes, {"x": X4}, ["y", "g"], {"w": _rand(4, 4, 3, 3)})
    whole, parts = cppconv.onnx.load(model, sub_batch=100), cppconv.onnx.load(model, sub_batch=2)
    x = _rand(5, *X4.shape[1:])
    for _ in range(3):
        got, want = parts.run({"x": x}), whole.run({"x": x})
        for name in ("y", "g"):
            np.testing.assert_array_equal(got[name], want[name])
    assert parts.run({"x": x}, outputs=["g"])["g"].shape == (5, 4, 1, 1)


def test_inputs_of_other_batch_sizes_run_whole():
    """Inputs whose batch sizes differ (one broadcasts) run as one batch."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Add", ["c", "r"], ["y"])]
    model = _model(nodes, {"x": X4, "r": X4}, ["y"], {"w": _rand(4, 4, 3, 3)})
    net = cppconv.onnx.load(model, sub_batch=1)
    x, r = _rand(3, *X4.shape[1:]), _rand(1, *X4.shape[1:])
    want = cppconv.onnx.load(model, sub_batch=3).run({"x": x, "r": r})["y"]
    np.testing.assert_array_equal(net.run({"x": x, "r": r})["y"], want)
    assert list(net.explain()["runs"]) == ["(3, 4, 6, 6) float32; (1, 4, 6, 6) float32"]


def _matrix_beside_images() -> Any:
    """A model of images x (N, 4, 6, 6) and a (4, 5) matrix m, its first axis not the batch:
    y = Flatten(GlobalAveragePool(Conv(x)))[:, :, None] * m, (N, 4, 5).  (Not a MatMul by m:
    that runs whole, see test_product_with_a_computed_matrix_runs_whole.)"""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Unsqueeze", ["f", "last"], ["u"]), helper.make_node("Mul", ["u", "m"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F32, ["N", 4, 6, 6]),
                                           helper.make_tensor_value_info("m", F32, [4, 5])],
                              [helper.make_tensor_value_info("y", F32, None)],
                              [numpy_helper.from_array(_rand(4, 4, 3, 3), "w"),
                               numpy_helper.from_array(np.array([2], np.int64), "last")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_input_whose_first_axis_is_not_the_batch_reaches_every_part_whole():
    """A second input that declares a fixed first axis (a (4, 5) matrix beside images of any
    batch) is not split into images, even at a batch of its size: every lane and part reads it
    whole, and its first axis must be the model's."""
    model = _matrix_beside_images()
    net = cppconv.onnx.load(model, num_threads=2, sub_batch=1)
    assert "reads input(s) ['m'] whole" in net.explain()["lanes"]
    m = _rand(4, 5)
    for batch in (4, 3):  # (4: the rows of m)
        x = _rand(batch, 4, 6, 6)
        for _ in range(3):  # (the steps in Python, then recording, then the programs)
            np.testing.assert_allclose(net.run({"x": x, "m": m})["y"], _ort(model, {"x": x, "m": m})[0],
                                       rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"input 'm' must have shape \(4, 5\), got \(3, 5\)"):
        net.run({"x": x, "m": m[:3]})


@pytest.mark.parametrize("first_axis", ["K", ""])
def test_input_free_under_another_name_is_not_the_batch(first_axis):
    """A second input whose first axis is free under another name than the images' (or under
    none: ONNX Runtime takes such sizes as unrelated) is not split into images, even at a batch
    of its size: a bias of 2 beside a batch of 2 is added to every image whole (lanes added
    row i of it to image i)."""
    graph = helper.make_graph([helper.make_node("Add", ["x", "b"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", F32, ["N", 2]),
                               helper.make_tensor_value_info("b", F32, [first_axis or None])],
                              [helper.make_tensor_value_info("y", F32, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = {"x": _rand(2, 2), "b": np.array([10, 20], np.float32)}
    for net in (cppconv.onnx.load(model, num_threads=2), cppconv.onnx.load(model, lanes=1, sub_batch=1)):
        for _ in range(3):
            np.testing.assert_array_equal(net.run(feeds)["y"], _ort(model, feeds)[0])


def test_random_feeds_give_an_input_that_is_not_batched_its_own_first_axis():
    from cppconv import _netrun

    feeds = _netrun.random_feeds(_matrix_beside_images(), 3)
    assert {name: v.shape for name, v in feeds.items()} == {"x": (3, 4, 6, 6), "m": (4, 5)}


def test_explain_and_summary_show_the_sub_batch(torch):
    module, shape, data = _exported("mobilenet_v2")
    auto = cppconv.onnx.load(data)
    info = auto.explain()
    assert isinstance(info["sub_batch"], int) and info["sub_batch"] >= 1
    assert info["sub_batch_rule"].startswith("auto: the largest step reads and writes")
    assert "cache" in info["sub_batch_rule"]
    given = cppconv.onnx.load(data, sub_batch=3)
    assert given.explain()["sub_batch"] == 3 and given.explain()["sub_batch_rule"] == "given at load (sub_batch=3)"
    assert "sub-batches: at most 3 image(s) a part (given at load" in given.summary()
    assert "in the parts that run at once, shared out between the lanes (auto: " in auto.summary()
    assert pickle.loads(pickle.dumps(given)).explain()["sub_batch"] == 3
    x = _rand(5, *shape[1:])
    np.testing.assert_array_equal(given(x), auto(x))


def test_auto_sub_batch_follows_the_cache(monkeypatch, torch):
    """Auto: as many images as the largest step's operands fit in the last-level cache."""
    from cppconv import _netbatch

    module, shape, data = _exported("mobilenet_v2")
    chosen = {}
    for cache in (1, 8 << 20, 32 << 20):
        monkeypatch.setattr(_netbatch, "cache_bytes", lambda cache=cache: (cache, "test"))
        chosen[cache] = cppconv.onnx.load(data).explain()["sub_batch"]
    assert chosen[1] == 1  # (at least one image)
    assert 4 * chosen[8 << 20] <= chosen[32 << 20] < 4 * (chosen[8 << 20] + 1)


@pytest.mark.parametrize("value,error,words", [
    (0, ValueError, "at least 1"), (-2, ValueError, "at least 1"), (2.5, TypeError, "integer"),
    ("4", TypeError, "integer"), (True, TypeError, "integer")])
def test_bad_sub_batch_is_refused(value, error, words):
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])]
    with pytest.raises(error, match=words):
        cppconv.onnx.load(_model(nodes, {"x": X4}, ["y"], {"w": _rand(4, 4, 3, 3)}), sub_batch=value)


# ----- lanes ----------------------------------------------------------------------------------

def test_lanes_share_out_images_and_threads():
    from cppconv import _netbatch

    assert _netbatch.lanes(16, 2, None) == [(0, 8, 1), (8, 16, 1)]
    assert _netbatch.lanes(15, 2, None) == [(0, 8, 1), (8, 15, 1)]
    assert _netbatch.lanes(1, 2, None) == [(0, 1, 2)]  # (one image: one lane, every thread)
    assert _netbatch.lanes(3, 16, None) == [(0, 1, 6), (1, 2, 5), (2, 3, 5)]
    assert _netbatch.lanes(16, 3, None) == [(0, 6, 1), (6, 11, 1), (11, 16, 1)]
    assert _netbatch.lanes(16, 4, 1) == [(0, 16, 4)]
    assert _netbatch.lanes(16, 4, 2) == [(0, 8, 2), (8, 16, 2)]


@pytest.mark.parametrize("name", ["mobilenet_v2", "regnet_x_400mf", "densenet121", "shufflenet_v2"])
def test_lanes_give_the_whole_batch_results_bit_for_bit(torch, name):
    """A batch of 5 on 2 threads runs as two lanes (3 and 2 images, each on one thread), the
    first in sub-batches of 2 and 1: each lane through programs of its own, with the outputs of
    the whole batch on both threads bit for bit (no kernel's sums depend on the thread count or
    the batch size)."""
    x, whole, lanes = _split_against_whole(name, 5, dict(num_threads=2, sub_batch=5, lanes=1),
                                           dict(num_threads=2, sub_batch=2))
    size = ", ".join(map(str, x.shape[1:]))
    assert sorted(lanes.explain()["runs"]) == sorted([f"(2, {size}) float32", f"(1, {size}) float32",
                                                      f"(2, {size}) float32 (lane 1)"])
    assert all(h.startswith("one native call") for h in _runs(lanes))
    assert list(whole.explain()["runs"]) == [f"(5, {size}) float32"]


def test_lanes_run_on_their_share_of_the_threads(monkeypatch):
    """Each lane's calls are capped at its threads on its own OS thread, and the caller's thread
    has its cap back afterwards; the lanes run at once (the second starts before the first ends)."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])]
    net = cppconv.onnx.load(_model(nodes, {"x": X4}, ["y"], {"w": _rand(4, 4, 3, 3)}), num_threads=4, sub_batch=1)
    seen, all_four = [], threading.Barrier(4, timeout=30)
    run_whole = net._run_whole

    def spy(values, wanted, rows=None, lane=0):
        first = all(lane != k for k, *_ in seen)
        seen.append((lane, values[0].shape[0], _native.get_num_threads(), threading.get_ident()))
        if first:
            all_four.wait()  # (each lane's first part: all four must be running)
        return run_whole(values, wanted, rows, lane)

    monkeypatch.setattr(net, "_run_whole", spy)
    x = _rand(5, *X4.shape[1:])
    assert _native.thread_cap() == 0
    y = net.run({"x": x})["y"]
    assert _native.thread_cap() == 0
    np.testing.assert_array_equal(y, net._run_steps([x])["y"])
    # 4 threads, 5 images: 4 lanes (2, 1, 1, 1 images) of one thread, sub-batches of 1 image
    assert sorted((lane, n, t) for lane, n, t, _ in seen) == [(0, 1, 1), (0, 1, 1), (1, 1, 1), (2, 1, 1), (3, 1, 1)]
    assert len({ident for *_, ident in seen}) == 4


def test_thread_cap_is_per_os_thread_and_caps_explicit_counts():
    previous = _native.set_thread_cap(1)
    try:
        assert previous == 0 and _native.thread_cap() == 1
        assert _native.resolve_threads(8) == 1 and _native.get_num_threads() == 1
        other = []
        t = threading.Thread(target=lambda: other.append((_native.thread_cap(), _native.resolve_threads(2))))
        t.start()
        t.join()
        assert other == [(0, min(2, cppconv._native.MAX_THREADS))]
    finally:
        _native.set_thread_cap(previous)
    assert _native.resolve_threads(3) == 3
    for bad in (-1, _native.MAX_THREADS + 1):
        with pytest.raises(ValueError, match="thread cap"):
            _native.set_thread_cap(bad)


def test_a_lanes_error_is_raised_after_every_lane_ends(monkeypatch):
    """Lane 0 (the caller's) fails at once while lane 1 still computes: the error reaches the
    caller only after lane 1 has ended (it writes the caller's rows), and the caps are back."""
    import time

    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])]
    net = cppconv.onnx.load(_model(nodes, {"x": X4}, ["y"], {"w": _rand(4, 4, 3, 3)}), num_threads=2)
    ended = []
    run_whole = net._run_whole

    def failing(values, wanted, rows=None, lane=0):
        if lane == 0:
            raise RuntimeError("lane 0 failed")
        time.sleep(0.2)
        result = run_whole(values, wanted, rows, lane)
        ended.append(lane)
        return result

    monkeypatch.setattr(net, "_run_whole", failing)
    with pytest.raises(RuntimeError, match="lane 0 failed"):
        net(_rand(4, *X4.shape[1:]))
    assert ended == [1]
    assert _native.thread_cap() == 0


def test_concurrent_calls_with_other_lane_counts():
    """Networks of other lane counts called from two threads at once: every call's lanes run
    (one executor serves them all, never replaced under another call), results as alone."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])]
    model = _model(nodes, {"x": X4}, ["y"], {"w": _rand(4, 4, 3, 3)})
    nets = {k: cppconv.onnx.load(model, num_threads=k) for k in (2, 3, 5, 8, 13)}
    xs = {k: _rand(k, *X4.shape[1:]) for k in nets}
    want = {k: cppconv.onnx.load(model, lanes=1)(xs[k]) for k in nets}
    errors = []

    def hammer(keys):
        try:
            for _ in range(6):
                for k in keys:
                    np.testing.assert_array_equal(nets[k](xs[k]), want[k])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=hammer, args=(keys,)) for keys in ([2, 13], [8, 3, 5])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_lanes_at_interpreter_exit():
    """A network called from an atexit handler (no new thread may start then) runs its lanes on
    the calling thread."""
    code = """if True:
        import atexit, numpy as np, cppconv.onnx
        from onnx import helper, TensorProto
        g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
        net = cppconv.onnx.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), num_threads=4)
        ones = np.ones((4, 4), np.float32)
        atexit.register(lambda: print("at exit", net(-ones).sum(), net(ones).sum()))
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "at exit 0.0 16.0", out.stdout + out.stderr


def test_tuned_networks_run_one_lane(monkeypatch):
    """With tuning on, a batch runs as one lane: tuned choices are keyed by the thread count, so
    lanes of other counts could pick other algorithms (and measure alongside each other)."""
    from cppconv import _tuning

    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])]
    net = cppconv.onnx.load(_model(nodes, {"x": X4}, ["y"], {"w": _rand(4, 4, 3, 3)}), num_threads=2)
    x = [_rand(4, *X4.shape[1:])]
    assert len(net._lanes(x)) == 2
    monkeypatch.setattr(_tuning, "_mode", "cached")
    assert net._lanes(x) is None


def _lanes_in_child(net: cppconv.Network, x: np.ndarray) -> Any:
    """In a forked child: a network call (one thread: one lane) and two lanes run through the
    child's own lane pool (a fork keeps only the calling thread)."""
    from cppconv import _netbatch

    seen: List[int] = []
    _netbatch.LANE_POOL.run([(1, lambda: seen.append(threading.get_ident())),
                             (1, lambda: seen.append(threading.get_ident()))])
    return net(x), len(set(seen)), _native.get_num_threads()


def test_lanes_after_a_fork():
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    import multiprocessing

    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])]
    net = cppconv.onnx.load(_model(nodes, {"x": X4}, ["y"], {"w": _rand(4, 4, 3, 3)}), num_threads=2)
    x = _rand(4, *X4.shape[1:])
    want = net(x)  # (the parent's lane threads exist now)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got, lane_threads, threads = pool.apply(_lanes_in_child, (net, x))
    np.testing.assert_array_equal(got, want)
    assert (lane_threads, threads) == (2, 1)


NETWORK_FORK_CHILD = textwrap.dedent("""
    import os, sys, numpy as np, cppconv.onnx
    from onnx import helper, numpy_helper, TensorProto
    w = np.random.default_rng(0).standard_normal((8, 8, 3, 3)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w")])
    net = cppconv.onnx.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    x = np.ones((1, 8, 8, 8), np.float32)
    want = [net(x) for _ in range(3)][0]       # (recorded: the third call replays its program)
    program = next(p for p in net._programs.values() if hasattr(p, "lock"))
    net._lock.acquire()                        # as other threads inside a call at the fork
    program.lock.acquire()
    pid = os.fork()
    if pid == 0:
        import signal
        signal.alarm(20)                       # (hung: killed)
        ok = np.array_equal(net(x), want) and "one native call" in str(net.explain()["runs"])
        ok &= not program.lock.locked()        # (the call replayed the program, not the steps in Python)
        os._exit(0 if ok else 3)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
""")


def test_a_fork_while_other_threads_are_in_a_network_call():
    """A child forked while other threads held a network's lock and ran its recorded program
    gets its own (it waited for ever on the first, and took the program as busy for ever)."""
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    p = subprocess.run([sys.executable, "-c", NETWORK_FORK_CHILD], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "0", p.stdout + p.stderr


def test_quantize_along_the_batch_axis_runs_whole():
    """QuantizeLinear/DequantizeLinear with a scale for each index of axis 0 tie the images
    together: the network runs whole, as ONNX Runtime computes."""
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=0),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=0)]
    model = _model(nodes, {"x": X4}, ["y"], {"s": np.array([0.01, 0.1, 0.5, 1.0], np.float32),
                                             "z": np.zeros(4, np.uint8)})
    net = cppconv.onnx.load(model, num_threads=2)
    assert "scale for each index of the batch axis" in net.explain()["sub_batch_rule"]
    x = (RNG.random((4, 4, 6, 6)) * 3).astype(np.float32)
    (want,) = _ort(model, {"x": x})
    for _ in range(3):
        np.testing.assert_array_equal(net(x), want)


def test_constant_with_a_row_an_image_runs_whole():
    """An Add of a constant with one row for each image of a batch of exactly its size ties the
    images together: the network runs whole (lanes would split the batch, not the constant)."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Add", ["c", "k"], ["y"])]
    model = _model(nodes, {"x": X4}, ["y"], {"w": _rand(4, 4, 3, 3), "k": _rand(3, 4, 6, 6)})
    net = cppconv.onnx.load(model, num_threads=2)
    assert "reads constant 'k' (3 rows on the batch axis) image by image" in net.explain()["sub_batch_rule"]
    x = _rand(3, *X4.shape[1:])
    (want,) = _ort(model, {"x": x})
    np.testing.assert_allclose(net(x), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("value,error,words", [
    (0, ValueError, "at least 1"), (-1, ValueError, "at least 1"), (1.5, TypeError, "integer")])
def test_bad_lanes_are_refused(value, error, words):
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])]
    with pytest.raises(error, match=words):
        cppconv.onnx.load(_model(nodes, {"x": X4}, ["y"], {"w": _rand(4, 4, 3, 3)}), lanes=value)


def test_explain_and_pickle_keep_the_lanes():
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])]
    model = _model(nodes, {"x": X4}, ["y"], {"w": _rand(4, 4, 3, 3)})
    auto, one, two = cppconv.onnx.load(model), cppconv.onnx.load(model, lanes=1), cppconv.onnx.load(model, lanes=2)
    assert auto.explain()["lanes"].startswith("a batch of several images runs as lanes side by side")
    assert one.explain()["lanes"].startswith("one lane (lanes=1 at load)")
    assert "at most 2 (lanes=2 at load)" in two.explain()["lanes"] and "threads: " in two.summary()
    for net in (one, two):
        assert pickle.loads(pickle.dumps(net)).explain()["lanes"] == net.explain()["lanes"]


def test_product_with_a_computed_matrix_runs_whole():
    """x @ m with m a graph input, not a constant: NumPy's BLAS multiplies, and its sums depend
    on the number of rows, so lanes or parts would change the bits: the network runs whole."""
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "m"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", F32, ["N", 256]),
                               helper.make_tensor_value_info("m", F32, [256, 64])],
                              [helper.make_tensor_value_info("y", F32, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    net = cppconv.onnx.load(model, num_threads=2)
    assert "NumPy's BLAS" in net.explain()["sub_batch_rule"] and net.explain()["lanes"].startswith("one lane")
    feeds = {"x": _rand(2, 256), "m": _rand(256, 64)}
    np.testing.assert_array_equal(net.run(feeds)["y"], np.matmul(feeds["x"], feeds["m"]))


def test_programs_of_a_call_in_parts_stay_with_the_call():
    """The programs kept are those of the last two calls, each with all its parts' shapes: a batch
    of 7 in parts of 4 and 3 alternating with batch 2 replays all three (a limit on shapes
    dropped the oldest part's program at every call and never replayed)."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])]
    net = cppconv.onnx.load(_model(nodes, {"x": X4}, ["y"], {"w": _rand(4, 4, 3, 3)}), sub_batch=4, lanes=1)
    seven, two = _rand(7, *X4.shape[1:]), _rand(2, *X4.shape[1:])
    for _ in range(3):
        net(seven)
        net(two)
    assert sorted(net.explain()["runs"]) == ["(2, 4, 6, 6) float32", "(3, 4, 6, 6) float32", "(4, 4, 6, 6) float32"]
    assert all(h.startswith("one native call") for h in _runs(net))
    net(_rand(1, *X4.shape[1:]))  # (a third call's shapes: batch 7's, the oldest, go)
    assert sorted(net.explain()["runs"]) == ["(1, 4, 6, 6) float32", "(2, 4, 6, 6) float32"]


def _half_slice(axis: int) -> List[Any]:
    """x's first half along `axis`, its end computed from x's shape as PyTorch exports
    x.chunk(2, dim=axis) (Shape, Gather, Add, Div, Mul: ONNX's data propagation stops at the
    Div, so inference leaves the Slice's output shape open)."""
    return [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Shape", ["c"], ["s"]), helper.make_node("Gather", ["s", "axis"], ["size"], axis=0),
            helper.make_node("Add", ["size", "one"], ["up"]), helper.make_node("Div", ["up", "two"], ["half"]),
            helper.make_node("Mul", ["half", "one"], ["end"]),
            helper.make_node("Slice", ["c", "zero", "end", "axis"], ["y"])]


def _half_slice_constants(axis: int) -> Dict[str, np.ndarray]:
    return {"w": _rand(4, 4, 3, 3), "axis": np.array([axis], np.int64), "one": np.array([1], np.int64),
            "two": np.array([2], np.int64), "zero": np.array([0], np.int64)}


def test_a_channel_split_from_the_shape_runs_in_lanes():
    """ShuffleNetV2's channel split: a Slice of the channels whose end ONNX's inference cannot
    compute (a Div of the shape's channel count).  Planning finds that end, the same at every
    batch size, and checks again with it: the images run apart, in lanes and sub-batches, bit
    for bit as the whole batch."""
    model = _model(_half_slice(1), {"x": X4}, ["y"], _half_slice_constants(1), opset=13)
    net = cppconv.onnx.load(model, num_threads=2, sub_batch=2)
    whole = cppconv.onnx.load(model, num_threads=2, lanes=1, sub_batch=5)
    assert net.explain()["sub_batch"] == 2, net.explain()["sub_batch_rule"]
    x = _rand(5, *X4.shape[1:])
    (want,) = _ort(model, {"x": x})
    for _ in range(2):
        got = net(x)
        np.testing.assert_array_equal(got, whole(x))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert len(net.explain()["runs"]) == 3  # (lane 0 in parts of 2 and 1, lane 1 a part of 2)


@pytest.mark.parametrize("case", ["softmax-axis-0", "reduce-batch", "batch-as-data", "flatten-all", "concat-batch",
                                  "channel-split-then-concat-batch", "batch-third-in-a-reshape"])
def test_network_that_ties_its_images_together_runs_whole(case):
    """A network with an operator along the batch axis, or that reads the batch size as data,
    runs any batch whole (explain() says which node), and refuses a given sub_batch."""
    conv = helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])
    tail = {
        "softmax-axis-0": [helper.make_node("Softmax", ["c"], ["y"], axis=0)],
        "reduce-batch": [helper.make_node("ReduceMean", ["c"], ["m"], axes=[0], keepdims=1),
                         helper.make_node("Sub", ["c", "m"], ["y"])],
        "batch-as-data": [helper.make_node("Shape", ["c"], ["s"]), helper.make_node("Cast", ["s"], ["f"], to=F32),
                          helper.make_node("Gather", ["f", "zero"], ["n"], axis=0),
                          helper.make_node("Mul", ["c", "n"], ["y"])],
        "flatten-all": [helper.make_node("Flatten", ["c"], ["y"], axis=0)],
        "concat-batch": [helper.make_node("Concat", ["c", "c"], ["y"], axis=0)],
        # (a channel split inference cannot follow, checked again after planning: still whole)
        "channel-split-then-concat-batch": [*_half_slice(1)[1:-1],
                                            helper.make_node("Slice", ["c", "zero", "end", "axis"], ["h"]),
                                            helper.make_node("Concat", ["h", "h"], ["y"], axis=0)],
        # (a size from the batch, N // 3 + 1, the same at batch 1 and 2: not taken as a constant)
        "batch-third-in-a-reshape": [
            helper.make_node("Shape", ["c"], ["s"]), helper.make_node("Gather", ["s", "first"], ["n"], axis=0),
            helper.make_node("Div", ["n", "three"], ["k"]), helper.make_node("Add", ["k", "one"], ["k1"]),
            helper.make_node("Concat", ["first", "k1", "minus_one"], ["t"], axis=0),
            helper.make_node("Reshape", ["c", "t"], ["y"])],
    }[case]
    inits = {"w": _rand(4, 4, 3, 3), "zero": np.array(0, np.int64)}
    if case == "channel-split-then-concat-batch":
        inits.update(_half_slice_constants(1))
    if case == "batch-third-in-a-reshape":
        inits.update({"first": np.array([0], np.int64), "three": np.array([3], np.int64),
                      "one": np.array([1], np.int64), "minus_one": np.array([-1], np.int64)})
    model = _model([conv, *tail], {"x": X4}, ["y"], inits, opset=13)
    net = cppconv.onnx.load(model)
    assert net.explain()["sub_batch"] is None and net.explain()["sub_batch_rule"].startswith("whole batches")
    x = _rand(5, *X4.shape[1:])
    (want,) = _ort(model, {"x": x})
    np.testing.assert_allclose(net(x), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="cannot run a batch in parts"):
        cppconv.onnx.load(model, sub_batch=2)
    with pytest.raises(ValueError, match="lanes=2: this network cannot run a batch in parts"):
        cppconv.onnx.load(model, lanes=2)
    assert cppconv.onnx.load(model, lanes=1).explain()["lanes"].startswith("one lane: the images are not computed")


def test_output_whose_first_axis_is_not_the_batch_runs_whole():
    """A graph output declared with a first axis (as exporters write it) that is not the batch:
    Reshape(conv, [-1, 4]) mixes the images' values into rows; its parts' rows would not be the
    whole batch's.  Inference alone decides (the declared shape is not taken as batch-first)."""
    conv = helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])
    flat = helper.make_node("Reshape", ["c", "s"], ["y"])
    model = _model([conv, flat], {"x": X4}, ["y"], {"w": _rand(4, 4, 3, 3), "s": np.array([-1, 4], np.int64)})
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("y", F32, [None, 4]))
    net = cppconv.onnx.load(model)
    assert net.explain()["sub_batch"] is None and "Reshape" in net.explain()["sub_batch_rule"]
    x = _rand(8, *X4.shape[1:])
    (want,) = _ort(model, {"x": x})
    for _ in range(3):  # (recorded and replayed)
        np.testing.assert_allclose(net(x), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="cannot run a batch in parts"):
        cppconv.onnx.load(model, sub_batch=2)


def test_tuning_runs_the_steps_in_python(monkeypatch):
    """A tuned network's layers may change their algorithm from call to call: no program."""
    from cppconv import _tuning

    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])]
    net = cppconv.onnx.load(_model(nodes, {"x": X4}, ["y"], {"w": _rand(4, 4, 3, 3)}))
    monkeypatch.setattr(_tuning, "_mode", "cached")
    for _ in range(3):
        net(X4)
    assert _runs(net) == []


def test_load_takes_path_bytes_and_proto(tmp_path, torch):
    data = _exported("densenet")[2]
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    x = _rand(1, 3, 32, 32)
    want = cppconv.onnx.load(data)(x)
    for model in (str(path), path, onnx.load_from_string(data)):
        np.testing.assert_array_equal(cppconv.onnx.load(model)(x), want)


def test_precision_high_and_threads(torch):
    module, shape, data = _exported("resnet")
    x = _rand(2, *shape[1:])
    want = cppconv.onnx.load(data)(x)
    got = cppconv.onnx.load(data, precision="high", num_threads=2)(x)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * float(np.abs(want).max()))
    with pytest.raises(ValueError, match="precision"):
        cppconv.onnx.load(data, precision="low")
    with pytest.raises(ValueError, match="num_threads"):
        cppconv.onnx.load(data, num_threads=0)


# ----- operators, one hand-built graph each ---------------------------------------------------

X4 = _rand(2, 4, 6, 6)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("attrs", [
    {}, {"strides": 2, "pads": 1}, {"dilations": 2, "pads": 2}, {"group": 2, "pads": 1}, {"auto_pad": "SAME_UPPER"},
    {"auto_pad": "SAME_LOWER", "strides": 2}, {"auto_pad": "VALID"}, {"asymmetric": True},
], ids=lambda a: "-".join(f"{k}={v}" for k, v in a.items()) or "plain")
def test_conv(rank, attrs):
    x = _rand(2, 4, *[7] * rank)
    group = attrs.get("group", 1)
    w = _rand(6, 4 // group, *[3] * rank)
    kwargs: Dict[str, Any] = {"group": group} if group > 1 else {}
    for key in ("strides", "dilations"):
        if key in attrs:
            kwargs[key] = [attrs[key]] * rank
    if "pads" in attrs:
        kwargs["pads"] = [attrs["pads"]] * (2 * rank)
    if attrs.get("asymmetric"):
        kwargs["pads"] = [0] * rank + [2] * rank
    if "auto_pad" in attrs:
        kwargs["auto_pad"] = attrs["auto_pad"]
    _check([helper.make_node("Conv", ["x", "w", "b"], ["y"], **kwargs)], {"x": x}, initializers={"w": w, "b": _rand(6)},
           rtol=1e-4)


@pytest.mark.parametrize("activation", ["Relu", "Sigmoid", "Tanh", "LeakyRelu", "Clip6", "Clip0", "SiLU"])
def test_conv_batchnorm_activation_fusion(activation):
    w, b = _rand(5, 4, 3, 3), _rand(5)
    bn = {"s": RNG.uniform(0.5, 1.5, 5).astype(np.float32), "t": _rand(5), "m": _rand(5),
          "v": RNG.uniform(0.5, 2, 5).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "t", "m", "v"], ["n"], epsilon=1e-3)]
    inits: Dict[str, Any] = {"w": w, "b": b, **bn}
    if activation == "SiLU":
        nodes += [helper.make_node("Sigmoid", ["n"], ["g"]), helper.make_node("Mul", ["n", "g"], ["y"])]
    elif activation.startswith("Clip"):
        inits.update(lo=np.float32(0), hi=np.float32(6))
        nodes.append(helper.make_node("Clip", ["n", "lo", "hi" if activation == "Clip6" else ""], ["y"]))
    else:
        nodes.append(helper.make_node(activation, ["n"], ["y"]))
    net = _check(nodes, {"x": X4}, initializers=inits, rtol=1e-4)
    want = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "LeakyRelu": "leaky_relu", "Clip6": "relu6",
            "Clip0": "relu", "SiLU": "silu"}[activation]
    became = _row(net, "Conv")["became"]
    assert f"activation {want} fused" in became and "BatchNormalization" in became
    assert net.explain()["steps"] == 3  # NCHW -> NHWC, the fused conv, NHWC -> NCHW


def test_no_fusion_when_the_intermediate_is_read_elsewhere():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["y"])]
    net = _check(nodes, {"x": X4}, outputs=("y", "c"), initializers={"w": _rand(3, 4, 1, 1)})
    assert "fused" not in _row(net, "Conv")["became"]


@pytest.mark.parametrize("alpha", [0.2, 0.01, -0.5, 1.5])
@pytest.mark.parametrize("op", ["Conv", "ConvTranspose"])
def test_leaky_relu_of_any_alpha_fuses(op, alpha):
    nodes = [helper.make_node(op, ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("LeakyRelu", ["c"], ["y"], alpha=alpha)]
    net = _check(nodes, {"x": X4}, initializers={"w": _rand(4, 4, 3, 3), "b": _rand(4)}, rtol=1e-4)
    slope = float(np.float32(alpha))
    want = "leaky_relu" if alpha == 0.01 else f"leaky_relu({slope})"
    assert f"activation {want} fused" in _row(net, op)["became"]


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("attrs", [{}, {"strides": 2}, {"strides": 2, "pads": 1, "output_padding": 1},
                                   {"group": 2, "strides": 2}, {"dilations": 2}], ids=str)
def test_conv_transpose(rank, attrs):
    x = _rand(2, 4, *[5] * rank)
    group = attrs.get("group", 1)
    kwargs: Dict[str, Any] = {"group": group} if group > 1 else {}
    for key in ("strides", "dilations", "output_padding"):
        if key in attrs:
            kwargs[key] = [attrs[key]] * rank
    if "pads" in attrs:
        kwargs["pads"] = [attrs["pads"]] * (2 * rank)
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["c"], **kwargs),
             helper.make_node("BatchNormalization", ["c", "s", "t", "m", "v"], ["n"]),
             helper.make_node("Relu", ["n"], ["y"])]
    inits = {"w": _rand(4, 6 // group, *[3] * rank), "b": _rand(6), "s": RNG.uniform(0.5, 1.5, 6).astype(np.float32),
             "t": _rand(6), "m": _rand(6), "v": RNG.uniform(0.5, 2, 6).astype(np.float32)}
    net = _check(nodes, {"x": x}, initializers=inits, rtol=1e-4)
    assert "relu fused" in _row(net, "ConvTranspose")["became"]


@pytest.mark.parametrize("op,attrs", [
    ("Relu", {}), ("Sigmoid", {}), ("Tanh", {}), ("HardSwish", {}), ("HardSigmoid", {}),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}), ("LeakyRelu", {}), ("LeakyRelu", {"alpha": 0.3}), ("Elu", {}),
    ("Elu", {"alpha": 0.5}), ("Softmax", {}), ("Softmax", {"axis": 1}), ("LogSoftmax", {"axis": 2}),
    ("Identity", {}), ("Dropout", {}), ("LRN", {"size": 3}),
    ("LRN", {"size": 5, "alpha": 0.01, "beta": 0.5, "bias": 2.0}),
    ("GlobalAveragePool", {}), ("GlobalMaxPool", {}), ("Flatten", {}), ("Flatten", {"axis": 2}),
    ("Transpose", {"perm": [0, 2, 3, 1]}), ("Transpose", {}), ("Squeeze", {}), ("ReduceMean", {"keepdims": 0}),
], ids=lambda v: str(v) if isinstance(v, dict) else v)
@pytest.mark.parametrize("after_conv", [False, True], ids=["plain", "channels-last"])
def test_unary_operators(op, attrs, after_conv):
    """Each operator on an input as ONNX stores it, and on a channels-last conv output."""
    x = np.abs(X4[:, :, :1, :1]) if op == "Squeeze" else X4
    if op == "Squeeze" and after_conv:
        pytest.skip("a 1x1 conv output is still 4-D with sizes 1: covered by the plain case")
    nodes = [helper.make_node(op, ["h"], ["y"], **attrs)]
    inits = {}
    if after_conv:
        nodes.insert(0, helper.make_node("Conv", ["x", "w"], ["h"]))
        inits["w"] = _rand(4, 4, 1, 1)
    else:
        nodes.insert(0, helper.make_node("Identity", ["x"], ["h"]))
    _check(nodes, {"x": x}, initializers=inits, rtol=1e-5)


def test_softmax_before_opset_13_flattens():
    _check([helper.make_node("Softmax", ["x"], ["y"], axis=1)], {"x": X4}, opset=11)


def test_prelu_and_batchnorm_alone():
    slope = _rand(4, 1, 1)
    bn = [np.abs(_rand(4)) + 0.5, _rand(4), _rand(4), np.abs(_rand(4)) + 0.5]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("PRelu", ["c", "slope"], ["p"]),
             helper.make_node("BatchNormalization", ["p", "s", "t", "m", "v"], ["y"])]
    _check(nodes, {"x": X4}, initializers={"w": _rand(4, 4, 1, 1), "slope": slope, "s": bn[0], "t": bn[1],
                                           "m": bn[2], "v": bn[3]})


@pytest.mark.parametrize("stored", ["plain", "channels-last"])
@pytest.mark.parametrize("readers", ["relu only", "relu and another"])
def test_preactivation_batchnorm_and_relu_run_as_one_pass(stored, readers):
    # DenseNet's pre-activation: BatchNormalization -> Relu -> Conv.  Fused into one native
    # pass where the Relu alone reads the normalised value; a second reader keeps them apart.
    bn = [np.abs(_rand(4)) + 0.5, _rand(4), _rand(4), np.abs(_rand(4)) + 0.5]
    # (A conv's output through an activation, which the conv takes in: stored channels-last,
    # and not a BatchNormalization the conv could fold.)
    first = [helper.make_node("Conv", ["x", "w0"], ["c"]), helper.make_node("Sigmoid", ["c"], ["h"])] \
        if stored == "channels-last" else [helper.make_node("Identity", ["x"], ["h"])]
    nodes = [*first, helper.make_node("BatchNormalization", ["h", "s", "t", "m", "v"], ["n"]),
             helper.make_node("Relu", ["n"], ["r"]), helper.make_node("Conv", ["r", "w"], ["y"])]
    outputs = ["y"]
    if readers == "relu and another":
        nodes.append(helper.make_node("Sigmoid", ["n"], ["z"]))
        outputs.append("z")
    net = _check(nodes, {"x": X4}, outputs, initializers={"w0": _rand(4, 4, 1, 1), "w": _rand(5, 4, 3, 3),
                                                          "s": bn[0], "t": bn[1], "m": bn[2], "v": bn[3]})
    became = _row(net, "BatchNormalization")["became"]
    assert became.startswith("cppconv per-channel scale and shift")
    assert ("Relu fused" in became) == (readers == "relu only")
    assert _row(net, "BatchNormalization")["layout"] == ("NHWC" if stored == "channels-last" else "ONNX order")


@pytest.mark.parametrize("other", ["residual", "channel"])
def test_add_and_the_relu_that_alone_reads_it_run_as_one_pass(other):
    # ResNet's residual: conv(x) + x, then Relu (one native pass where the shapes agree; a
    # broadcast Add applies the Relu to its own result).
    b = "x" if other == "residual" else "b"
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Add", ["c", b], ["a"]),
             helper.make_node("Relu", ["a"], ["y"])]
    net = _check(nodes, {"x": X4}, initializers={"w": _rand(4, 4, 3, 3), "b": _rand(4, 1, 1)})
    assert _row(net, "Relu")["became"].startswith("fused into")
    if other == "residual":  # the Add and its Relu go into the convolution (a constant operand does not)
        assert _row(net, "Add")["became"].startswith("fused into")
        assert "residual Add" in _row(net, "Conv")["became"]
    else:
        assert _row(net, "Add")["became"].endswith("Relu fused")


def test_fused_residual_of_another_batch_runs_the_add_after_the_convolution():
    """A residual whose batch the model leaves free may broadcast at run time (batch 1 against
    the conv's N): the step then runs the convolution without the fused Relu, adds, and applies
    the Relu once."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((4, 4, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Add", ["c", "r"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6, 6]),
                                           helper.make_tensor_value_info("r", TensorProto.FLOAT, ["M", 4, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w")])
    net = cppconv.onnx.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    assert "residual Add" in _row(net, "Conv")["became"]
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    for r_batch in (2, 1):
        r = rng.standard_normal((r_batch, 4, 6, 6)).astype(np.float32)
        want = np.maximum(cppconv.conv2d(x, w, padding=1) + r, 0)
        np.testing.assert_allclose(net.run({"x": x, "r": r})["y"], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("case", ["input", "earlier-conv", "later-conv", "read-elsewhere", "broadcast", "activated"])
def test_residual_add_fuses_into_the_conv(case, relu):
    """Add(Conv(x), r) [Relu]: into the Conv when the Add alone reads its output, r is computed
    before the Conv runs and has the output's shape; the results match ONNX Runtime's."""
    inits = {"w1": _RESIDUAL_W1, "w2": _RESIDUAL_W2, "b": _RESIDUAL_B}
    inputs = {"x": X4}
    outputs = ["y"]
    nodes = []
    if case in ("input", "read-elsewhere", "activated"):
        nodes.append(helper.make_node("Conv", ["x", "w1", "b"], ["c"], pads=[1, 1, 1, 1]))
        if case == "activated":  # Conv, Relu, Add: the Conv keeps its own activation; no fusion
            nodes.append(helper.make_node("Relu", ["c"], ["c1"]))
        nodes.append(helper.make_node("Add", ["c1" if case == "activated" else "c", "x"], ["a"]))
        if case == "read-elsewhere":
            outputs.append("c")
    elif case == "broadcast":
        inputs["r"] = _rand(2, 4, 1, 6)
        nodes += [helper.make_node("Conv", ["x", "w1", "b"], ["c"], pads=[1, 1, 1, 1]),
                  helper.make_node("Add", ["c", "r"], ["a"])]
    else:  # two convolutions of x: the later one takes the earlier one's output as its residual
        first, second = (["x", "w2"], ["x", "w1", "b"]) if case == "earlier-conv" else (["x", "w1", "b"], ["x", "w2"])
        nodes += [helper.make_node("Conv", first, ["c1"], pads=[0, 0, 0, 0] if len(first) == 2 else [1, 1, 1, 1]),
                  helper.make_node("Conv", second, ["c2"], pads=[0, 0, 0, 0] if len(second) == 2 else [1, 1, 1, 1]),
                  helper.make_node("Add", ["c1", "c2"], ["a"])]
    if relu:
        nodes.append(helper.make_node("Relu", ["a"], ["y"]))
    else:
        nodes[-1].output[0] = "y"
    net = _check(nodes, inputs, outputs, initializers=inits)
    rows = net.explain()["nodes"]
    convs = [r for r in rows if r["op"] == "Conv"]
    fused = [r for r in convs if "residual Add" in r["became"]]
    if case in ("read-elsewhere", "activated", "broadcast"):  # (a broadcast Add stays NumPy's)
        assert not fused and _row(net, "Add")["became"].startswith("cppconv add")
        return
    assert len(fused) == 1 and _row(net, "Add")["became"].startswith("fused into")
    if case in ("earlier-conv", "later-conv"):
        assert fused[0] is convs[-1]  # the one that runs second
    assert "fused in the kernel's stores" in fused[0]["became"]
    assert ("activation relu fused (after the residual)" in fused[0]["became"]) == relu
    # The same results on one thread and two.
    model = _model(nodes, inputs, outputs, inits)
    one = cppconv.onnx.load(model, num_threads=1).run(inputs)
    two = cppconv.onnx.load(model, num_threads=2).run(inputs)
    for name in outputs:
        assert np.array_equal(one[name], two[name])


_RESIDUAL_W1, _RESIDUAL_W2, _RESIDUAL_B = _rand(4, 4, 3, 3), _rand(4, 4, 1, 1), _rand(4)


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Sum"])
@pytest.mark.parametrize("other", ["same", "channel", "scalar", "row", "input-plain"])
def test_broadcasting(op, other):
    shapes = {"same": (2, 4, 6, 6), "channel": (4, 1, 1), "scalar": (), "row": (6,), "input-plain": (1, 4, 1, 6)}
    b = _rand(*shapes[other]) + (3 if op == "Div" else 0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node(op, ["c", "b"], ["y"])]
    inputs = {"x": X4}
    inits = {"w": _rand(4, 4, 1, 1)}
    if other == "input-plain":
        inputs["b"] = np.broadcast_to(b, (2, 4, 1, 6)).copy()
    else:
        inits["b"] = b
    net = _check(nodes, inputs, initializers=inits)
    assert _row(net, op)["layout"] == "NHWC"  # broadcasting kept the conv's layout


@pytest.mark.parametrize("gate_first", [False, True])
def test_squeeze_and_excitation_mul_is_one_native_channel_scale(gate_first):
    """The gate (N, C, 1, 1) of a squeeze-and-excitation block times the block's values: one
    native pass, exactly NumPy's products (one multiply each, special values included), at any
    batch size."""
    mul_in = ["g", "c"] if gate_first else ["c", "g"]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c"], ["p"]),
             helper.make_node("Conv", ["p", "w1"], ["q"]), helper.make_node("Relu", ["q"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["s"]), helper.make_node("Sigmoid", ["s"], ["g"]),
             helper.make_node("Mul", mul_in, ["y"])]
    inits = {"w": _rand(6, 4, 3, 3), "w1": _rand(2, 6, 1, 1), "w2": _rand(6, 2, 1, 1)}
    net = _check(nodes, {"x": X4}, initializers=inits)
    assert _row(net, "Mul")["became"].startswith("cppconv channel scale")
    model = _model(nodes, {"x": X4}, ["c", "g", "y"], inits)
    for batch in (1, 3):
        x = _rand(batch, 4, 6, 6)
        got = cppconv.onnx.load(model).run({"x": x})
        np.testing.assert_array_equal(got["y"], got["c"] * got["g"])
    # A 1x1 plane (a small input's last stages), where the gate has the values' shape: still the
    # native pass, so the network still runs as one native call.
    net = cppconv.onnx.load(_model(nodes, {"x": _rand(2, 4, 1, 1)}, ["c", "g", "y"], inits))
    for _ in range(3):  # (the third call replays the program recorded by the second)
        got = net.run({"x": _rand(2, 4, 1, 1)})
    np.testing.assert_array_equal(got["y"], got["c"] * got["g"])
    assert all(run.startswith("one native call") for run in net.explain()["runs"].values()), net.explain()["runs"]
    # Special values in both operands (channels-last: the values along the channels).
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30], np.float32)
    x_nhwc = np.broadcast_to(special, (2, 4, 5, 6)).copy()
    gate = np.array([[2.0, 0.0, 0.5, -1.0, np.inf, np.nan], [1e-30, -0.0, 3.0, np.nan, -np.inf, 1.0]], np.float32)
    y = np.empty_like(x_nhwc)
    cppconv._native.scale_channels(x_nhwc, gate, y, 1)
    with np.errstate(invalid="ignore", over="ignore"):
        want = x_nhwc * gate[:, None, None, :]
    np.testing.assert_array_equal(y, want)
    assert np.array_equal(np.signbit(y), np.signbit(want))


def test_sum_of_three_and_integer_division():
    nodes = [helper.make_node("Sum", ["x", "x", "x"], ["y"])]
    _check(nodes, {"x": X4})
    shape = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Div", ["s", "two"], ["d"]),
             helper.make_node("Mul", ["d", "two"], ["m"]), helper.make_node("Reshape", ["x", "m"], ["y"])]
    x = _rand(2, 4, 7, 6)
    with pytest.raises(ValueError, match="cannot reshape"):  # 7 // 2 * 2 = 6: the sizes no longer multiply out
        _check(shape, {"x": x}, initializers={"two": np.array(2, np.int64)})


@pytest.mark.parametrize("op,attrs", [
    ("MaxPool", {"kernel_shape": [3, 3]}),
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ("MaxPool", {"kernel_shape": [2, 2], "dilations": [2, 2]}),
    ("MaxPool", {"kernel_shape": [3, 3], "pads": [0, 0, 2, 2]}),  # pads past kernel // 2: NumPy
    # NumPy, where ceil_mode's last window would start in the right padding: one output fewer.
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [4, 4], "pads": [0, 0, 2, 2], "ceil_mode": 1}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [4, 4], "pads": [0, 0, 2, 2], "ceil_mode": 1}),
    ("MaxPool", {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
    ("AveragePool", {"kernel_shape": [2, 2], "dilations": [2, 2], "opset": 19}),
    ("MaxPool", {"kernel_shape": [3]}), ("AveragePool", {"kernel_shape": [2], "strides": [2], "pads": [1, 1]}),
    ("MaxPool", {"kernel_shape": [2, 2, 2], "strides": [2, 2, 2]}),
    ("AveragePool", {"kernel_shape": [3, 3, 3], "pads": [1] * 6, "count_include_pad": 1}),
    ("AveragePool", {"kernel_shape": [3, 3, 3], "pads": [1] * 6, "strides": [2, 2, 2], "ceil_mode": 1}),
], ids=str)
def test_pools(op, attrs):
    attrs = dict(attrs)
    opset = attrs.pop("opset", 17)
    rank = len(attrs["kernel_shape"])
    x = _rand(2, 3, *[7] * rank)
    _check([helper.make_node(op, ["x"], ["y"], **attrs)], {"x": x}, opset=opset)


def test_global_pools_1d_3d():
    for shape in ((2, 3, 9), (2, 3, 4, 5, 6)):
        for op in ("GlobalAveragePool", "GlobalMaxPool"):
            _check([helper.make_node(op, ["x"], ["y"])], {"x": _rand(*shape)})


def test_concat_split_slice():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Split", ["c", "sizes"], ["a", "b"], axis=1),
             helper.make_node("Slice", ["b", "st", "en", "ax", "sp"], ["s"]),
             helper.make_node("Concat", ["a", "x", "c"], ["y"], axis=1),
             helper.make_node("Split", ["c"], ["e", "f", "g"], axis=-1, num_outputs=3)]
    inits = {"w": _rand(5, 4, 1, 1), "sizes": np.array([2, 3], np.int64), "st": np.array([1, -1], np.int64),
             "en": np.array([3, -100], np.int64), "ax": np.array([1, 3], np.int64), "sp": np.array([1, -2], np.int64)}
    _check(nodes, {"x": X4}, outputs=("y", "s", "a", "b", "e", "g"), initializers=inits, opset=18)


def test_split_attribute_and_slice_before_opset_10():
    nodes = [helper.make_node("Split", ["x"], ["a", "b"], axis=2, split=[2, 4]),
             helper.make_node("Slice", ["x"], ["y"], starts=[1], ends=[3], axes=[1])]
    _check(nodes, {"x": X4}, outputs=("a", "b", "y"), opset=9)


def test_reshape_squeeze_unsqueeze_gemm_matmul():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Reshape", ["c", "shape"], ["r"]),
             helper.make_node("Unsqueeze", ["r", "ax"], ["u"]),
             helper.make_node("Squeeze", ["u", "ax"], ["q"]),
             helper.make_node("Gemm", ["q", "gw", "gb"], ["g"], transB=1, alpha=0.5, beta=2.0),
             helper.make_node("Gemm", ["gw", "q"], ["g2"], transA=0, transB=1),
             helper.make_node("MatMul", ["q", "mw"], ["y"])]
    inits = {"w": _rand(3, 4, 1, 1), "shape": np.array([0, -1], np.int64), "ax": np.array([1], np.int64),
             "gw": _rand(5, 108), "gb": _rand(5), "mw": _rand(108, 7)}
    _check(nodes, {"x": X4}, outputs=("y", "g", "g2"), initializers=inits, rtol=1e-4)


@pytest.mark.parametrize("trans_b,alpha,beta,c_shape", [
    (0, 1.0, 1.0, None), (1, 1.0, 1.0, (5,)), (1, 0.5, 2.0, (1, 5)), (0, 2.0, -1.0, (1,)), (1, 1.0, 0.5, (3, 5)),
])
def test_gemm_and_matmul_with_constant_weights_run_as_fully_connected(trans_b, alpha, beta, c_shape):
    """A constant B (and a C that is one value per output, or a scalar) makes a fully connected
    cppconv layer; any other C keeps NumPy's product.  Batch 1 and 3: the rows are the batch."""
    weight = _rand(5, 12) if trans_b else _rand(12, 5)
    inits = {"gw": weight, "mw": _rand(12, 4)}
    gemm_inputs = ["f", "gw"]
    if c_shape is not None:
        inits["gc"] = _rand(*c_shape)
        gemm_inputs.append("gc")
    nodes = [helper.make_node("Flatten", ["x"], ["f"]),
             helper.make_node("Gemm", gemm_inputs, ["y"], transB=trans_b, alpha=alpha, beta=beta),
             helper.make_node("MatMul", ["f", "mw"], ["m"])]
    for batch in (1, 3) if c_shape != (3, 5) else (3,):  # a C of 3 rows broadcasts at batch 3 only
        net = _check(nodes, {"x": _rand(batch, 3, 2, 2)}, outputs=("y", "m"), initializers=inits)
        rows = {r["op"]: r["became"] for r in net.explain()["nodes"]}
        assert rows["MatMul"].startswith("fully connected 12->4")
        assert rows["Gemm"].startswith("fully connected 12->5" if c_shape != (3, 5) else "NumPy")


def test_gemm_with_a_column_of_c_is_not_a_bias():
    """A C of shape (M, 1) broadcasts along the rows (one value per row of A), not per output:
    NumPy's product runs it, and the Relu after it stays a step of its own."""
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "w", "c"], ["g"], transB=1),
             helper.make_node("Relu", ["g"], ["y"])]
    net = _check(nodes, {"x": _rand(5, 3, 2, 2)}, initializers={"w": _rand(5, 12), "c": _rand(5, 1)})
    rows = {r["op"]: r["became"] for r in net.explain()["nodes"]}
    assert rows["Gemm"].startswith("NumPy") and not rows["Relu"].startswith("fused")


@pytest.mark.parametrize("c_shape", [None, (5,), (3, 5)])
def test_fully_connected_layers_take_the_activation_after_them(c_shape):
    """A Gemm or MatMul run as a fully connected layer applies the activation that alone reads
    its result (Relu, HardSwish, Sigmoid, LeakyRelu); a NumPy product (C of 3 rows), an
    activation with a second reader, or one on a graph output of the product stay separate."""
    inits = {"gw": _rand(5, 12), "mw": _rand(12, 4), "lw": _rand(12, 6)}
    gemm_inputs = ["f", "gw"]
    if c_shape is not None:
        inits["gc"] = _rand(*c_shape)
        gemm_inputs.append("gc")
    nodes = [helper.make_node("Flatten", ["x"], ["f"]),
             helper.make_node("Gemm", gemm_inputs, ["g"], transB=1),
             helper.make_node("HardSwish", ["g"], ["y"]),
             helper.make_node("MatMul", ["f", "mw"], ["m"]), helper.make_node("Sigmoid", ["m"], ["s"]),
             helper.make_node("MatMul", ["f", "lw"], ["l"]), helper.make_node("LeakyRelu", ["l"], ["r"], alpha=0.3),
             helper.make_node("Relu", ["l"], ["r2"]),  # a second reader of l: nothing fuses into it
             helper.make_node("Gemm", ["f", "gw"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["hr"])]
    outputs = ("y", "s", "r", "r2", "h", "hr")  # h is a graph output: its Relu stays a step
    net = _check(nodes, {"x": _rand(3, 3, 2, 2)}, outputs=outputs, initializers=inits)
    rows = [(r["op"], r["became"]) for r in net.explain()["nodes"]]
    fused = [op for op, became in rows if "fully connected" in became and "activation" in became]
    assert fused == (["MatMul"] if c_shape == (3, 5) else ["Gemm", "MatMul"])
    assert sum(op == "Relu" and not became.startswith("fused") for op, became in rows) == 2
    if c_shape != (3, 5):
        assert next(b for op, b in rows if op == "Gemm").endswith("activation hardswish fused")
        assert any(op == "HardSwish" and b.startswith("fused into") for op, b in rows)


def test_hardswish_and_pytorch_hardsigmoid_fuse_into_the_convolution():
    inits = {"w": _rand(4, 4, 3, 3), "b": _rand(4)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("HardSwish", ["c"], ["h"]),
             helper.make_node("Conv", ["h", "w"], ["d"], pads=[1, 1, 1, 1]),
             helper.make_node("HardSigmoid", ["d"], ["y"], alpha=1 / 6, beta=0.5),
             helper.make_node("Conv", ["h", "w"], ["e"], pads=[1, 1, 1, 1]),
             helper.make_node("HardSigmoid", ["e"], ["z"])]  # ONNX's default alpha 0.2: not PyTorch's, not fused
    net = _check(nodes, {"x": X4 * 4}, outputs=("y", "z"), initializers=inits)
    became = [r["became"] for r in net.explain()["nodes"] if r["op"] == "Conv"]
    assert "activation hardswish fused" in became[0] and "activation hardsigmoid fused" in became[1]
    assert "fused" not in became[2].split(";")[-1]


def test_reshape_to_a_batch_dependent_shape_keeps_later_shapes_known():
    """ShuffleNet's channel shuffle: a Reshape to a shape computed from Shape (the batch size
    included), then a Split whose sizes come from the shuffled tensor's channels: the shapes
    after the Reshape are found by probing at two batch sizes, so the split folds at load."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Shape", ["c"], ["s"]),
             helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),
             helper.make_node("Concat", ["n", "rest"], ["target"], axis=0),
             helper.make_node("Reshape", ["c", "target"], ["r"]),
             helper.make_node("Shape", ["r"], ["rs"]), helper.make_node("Gather", ["rs", "i1"], ["width"], axis=0),
             helper.make_node("Div", ["width", "two"], ["half"]),
             helper.make_node("Slice", ["r", "zero", "half", "one"], ["y"])]
    inits = {"w": _rand(4, 4, 1, 1), "i0": np.array([0], np.int64), "rest": np.array([-1], np.int64),
             "i1": np.array([1], np.int64), "two": np.array([2], np.int64), "zero": np.array([0], np.int64),
             "one": np.array([1], np.int64)}
    net = _check(nodes, {"x": X4}, outputs=("y",), initializers=inits)
    assert _row(net, "Div")["became"] == "a constant (folded at load)"


def test_conv_after_a_computed_reshape_knows_its_shape_without_running(monkeypatch):
    """A convolution after a Reshape to a shape computed through a Div (ONNX's inference leaves
    the sizes open, as after ShuffleNetV2's channel shuffle): its output's sizes come from its
    input's and its window, not from running the layer on zeros at batch 1 and 2 (ShuffleNetV2's
    load spent 1.5 s so); a Slice of its channels computed from them still folds."""
    g = lambda name, i: helper.make_node("Gather", ["s", f"i{i}"], [name], axis=0)  # noqa: E731
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Shape", ["c"], ["s"]),
             g("n", 0), g("ch", 1), g("h", 2), g("wd", 3), helper.make_node("Mul", ["h", "two"], ["h2"]),
             helper.make_node("Div", ["h2", "two"], ["hh"]),
             helper.make_node("Concat", ["n", "ch", "hh", "wd"], ["target"], axis=0),
             helper.make_node("Reshape", ["c", "target"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["c2"], strides=[2, 2], pads=[1, 0, 2, 1], dilations=[1, 2]),
             helper.make_node("Shape", ["c2"], ["cs"]), helper.make_node("Gather", ["cs", "i1"], ["k"], axis=0),
             helper.make_node("Div", ["k", "two"], ["half"]),
             helper.make_node("Slice", ["c2", "zero", "half", "one"], ["y"])]
    inits = {"w": _rand(4, 4, 1, 1), "w2": _rand(6, 4, 3, 3), **{f"i{i}": np.array([i], np.int64) for i in range(4)},
             "two": np.array([2], np.int64), "zero": np.array([0], np.int64), "one": np.array([1], np.int64)}
    model = _model(nodes, {"x": X4}, ["y"], inits)
    probed: List[str] = []
    probe = cppconv._network._Planner.probe_shapes

    def probe_recorded(self: Any, fn: Any, ins: List[str], outs: List[str], values: bool = False) -> None:
        probed.extend(outs)
        probe(self, fn, ins, outs, values)

    monkeypatch.setattr(cppconv._network._Planner, "probe_shapes", probe_recorded)
    net = cppconv.onnx.load(model)
    assert "r" in probed and "c2" not in probed, probed
    assert [r["became"] for r in net.explain()["nodes"] if r["op"] == "Div"][-1] == "a constant (folded at load)"
    monkeypatch.undo()
    for batch in (1, 3):
        x = _rand(batch, 4, 6, 6)
        np.testing.assert_allclose(net(x), _ort(model, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_reshape_to_a_batch_scaled_shape_drops_the_shape_steps():
    """A Reshape target built from the batch size (Shape, Gather, Unsqueeze, Concat, as
    PyTorch exports a channel shuffle) is found from the input's size: the shape arithmetic
    leaves the plan, and every batch size still reshapes right."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Shape", ["c"], ["s"]),
             helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"]),
             helper.make_node("Concat", ["n1", "split"], ["target"], axis=0),
             helper.make_node("Reshape", ["c", "target"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["t", "merge"], ["m"]),
             helper.make_node("Conv", ["m", "w2"], ["y"])]
    inits = {"w": _rand(6, 4, 1, 1), "w2": _rand(3, 6, 1, 1), "i0": np.array(0, np.int64),
             "ax0": np.array([0], np.int64), "split": np.array([2, 3, 6, 6], np.int64),
             "merge": np.array([0, 6, 6, 6], np.int64)}
    model = _model(nodes, {"x": X4}, ["y"], inits)
    net = cppconv.onnx.load(model)
    for op in ("Shape", "Gather", "Unsqueeze", "Concat"):
        assert _row(net, op)["became"].endswith("(unused once folded: dropped)"), op
    for batch in (1, 3):
        x = _rand(batch, 4, 6, 6)
        np.testing.assert_allclose(net(x), _ort(model, {"x": x})[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("groups, perm, fused", [(2, [0, 2, 1, 3, 4], True), (3, [0, 2, 1, 3, 4], True),
                                                 (2, [0, 1, 2, 3, 4], False)])
def test_concat_then_channel_shuffle_is_one_interleaving_copy(groups, perm, fused):
    """Concat of g parts, Reshape (N, g, C/g, H, W), Transpose (0, 2, 1, 3, 4), Reshape
    (N, C, H, W): one step interleaves the parts' channels (the Concat and the steps between
    drop out); a Transpose that does not shuffle keeps the plain steps.  Every batch size runs."""
    c = 4
    nodes = [helper.make_node("Conv", ["x", f"w{i}"], [f"c{i}"]) for i in range(groups)]
    nodes += [helper.make_node("Concat", [f"c{i}" for i in range(groups)], ["cat"], axis=1),
              helper.make_node("Reshape", ["cat", "split"], ["r"]),
              helper.make_node("Transpose", ["r"], ["t"], perm=perm),
              helper.make_node("Reshape", ["t", "merge"], ["m"]),
              helper.make_node("Conv", ["m", "wf"], ["y"])]
    inits = {**{f"w{i}": _rand(c, 4, 1, 1) for i in range(groups)}, "wf": _rand(3, c * groups, 1, 1),
             "split": np.array([0, groups, c, 6, 6] if perm[1] == 2 else [0, c, groups, 6, 6], np.int64),
             "merge": np.array([0, c * groups, 6, 6], np.int64)}
    model = _model(nodes, {"x": X4}, ["y"], inits)
    net = cppconv.onnx.load(model)
    became = [r["became"] for r in net.explain()["nodes"] if r["op"] == "Reshape"]
    assert became[-1].startswith("channel shuffle of the Concat") == fused, became
    assert ("(unused once folded: dropped)" in _row(net, "Concat")["became"]) == fused
    for batch in (1, 3):
        x = _rand(batch, 4, 6, 6)
        np.testing.assert_allclose(net(x), _ort(model, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_shuffle_and_channel_split_write_into_the_arena():
    """ShuffleNet's unit: the interleaving copy of a channel shuffle and a Slice of channels read
    by a convolution (copied: the convolution would copy the strided view anyway) write into
    their parts of the arena, not into arrays a recorded program keeps apart (at batch 16 they
    took 70 of ShuffleNetV2's 113 MiB); the other Slice, read by the Concat, stays a view.
    Recorded and replayed, every batch size gives ONNX Runtime's values."""
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"]), helper.make_node("Conv", ["x", "w1"], ["c1"]),
             helper.make_node("Concat", ["c0", "c1"], ["cat"], axis=1),
             helper.make_node("Reshape", ["cat", "split"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["t", "merge"], ["m"]),
             helper.make_node("Slice", ["m", "s0", "e0", "axes"], ["left"]),
             helper.make_node("Slice", ["m", "s1", "e1", "axes"], ["right"]),
             helper.make_node("Conv", ["right", "w2"], ["branch"], pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["left", "branch"], ["y"], axis=1)]
    inits = {"w0": _rand(4, 4, 1, 1), "w1": _rand(4, 4, 1, 1), "w2": _rand(4, 4, 3, 3),
             "split": np.array([0, 2, 4, 6, 6], np.int64), "merge": np.array([0, 8, 6, 6], np.int64),
             "s0": np.array([0], np.int64), "e0": np.array([4], np.int64), "s1": np.array([4], np.int64),
             "e1": np.array([8], np.int64), "axes": np.array([1], np.int64)}
    model = _model(nodes, {"x": X4}, ["y"], inits)
    net = cppconv.onnx.load(model)
    placed = {row["became"].split(":")[0].split(" (")[0]: at for row, at in zip(net._step_rows, net._arena_at)}
    assert placed["channel shuffle of the Concat before it"] is not None
    assert placed["a contiguous copy of the channels"] is not None
    assert [r["became"] for r in net.explain()["nodes"] if r["op"] == "Slice"].count("NumPy slice (a view)") == 1
    for batch in (1, 3):
        x = _rand(batch, 4, 6, 6)
        for _ in range(3):  # (the third call replays the program recorded by the second)
            np.testing.assert_allclose(net(x), _ort(model, {"x": x})[0], rtol=1e-5, atol=1e-5)
    assert all(run.startswith("one native call") for run in net.explain()["runs"].values()), net.explain()["runs"]


def test_pool_writes_into_the_arena():
    """A MaxPool or AveragePool between convolutions writes its part of the arena (GoogLeNet's
    13 pools' results were arrays a recorded program kept apart); replays give ONNX Runtime's
    values at every batch size."""
    for op in ("MaxPool", "AveragePool"):
        nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                 helper.make_node(op, ["c"], ["m"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
                 helper.make_node("Conv", ["m", "w2"], ["y"])]
        model = _model(nodes, {"x": X4}, ["y"], {"w": _rand(8, 4, 3, 3), "w2": _rand(4, 8, 1, 1)})
        net = cppconv.onnx.load(model)
        at = [a for row, a in zip(net._step_rows, net._arena_at) if row["op"] == op]
        assert at and at[0] is not None, op
        for batch in (1, 3):
            x = _rand(batch, 4, 6, 6)
            for _ in range(3):  # (the third call replays the program recorded by the second)
                np.testing.assert_allclose(net(x), _ort(model, {"x": x})[0], rtol=1e-5, atol=1e-5)
        assert all(run.startswith("one native call") for run in net.explain()["runs"].values())


def test_reshape_of_a_strided_view_copies_in_its_order():
    """_netops.reshape: a view where NumPy can give one; else the copy (_netops.contiguous) a
    channel shuffle's transposed view or an NCHW image seen as NHWC needs (its last axis short
    and strided), equal to NumPy's."""
    from cppconv import _netops

    x = np.arange(2 * 3 * 4 * 10, dtype=np.float32).reshape(2, 3, 4, 10)
    view = _netops.reshape(x, (6, 40))
    assert np.shares_memory(view, x) and np.array_equal(view, x.reshape(6, 40))
    for last in (2, 5):
        shuffled = x.reshape(2, 3, 4, last, 10 // last).transpose(0, 1, 2, 4, 3)
        y = _netops.reshape(shuffled, (2, 3, 4, 10))
        assert not np.shares_memory(y, x) and y.flags.c_contiguous
        np.testing.assert_array_equal(y, shuffled.reshape(2, 3, 4, 10))
    wide = x.transpose(0, 1, 3, 2)  # a long strided last axis: NumPy's copy
    np.testing.assert_array_equal(_netops.reshape(wide, (6, 40)), wide.reshape(6, 40))
    image = x.transpose(0, 2, 3, 1)  # NCHW as NHWC: three channels, strided
    assert _netops.contiguous(x) is x
    np.testing.assert_array_equal(_netops.contiguous(image), np.ascontiguousarray(image))
    assert _netops.contiguous(image).flags.c_contiguous


def test_convolution_of_a_strided_channel_slice():
    """A Split's half of the channels (a strided view of the NHWC value) into a convolution."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Split", ["c", "halves"], ["a", "b"], axis=1),
             helper.make_node("Conv", ["b", "w2"], ["d"]),
             helper.make_node("Concat", ["a", "d"], ["y"], axis=1)]
    inits = {"w": _rand(8, 4, 1, 1), "w2": _rand(4, 4, 1, 1), "halves": np.array([4, 4], np.int64)}
    _check(nodes, {"x": X4}, initializers=inits)


def test_concat_inputs_written_in_place():
    """A channel Concat's convolution inputs that only it reads are written straight into their
    channels of its result; the other inputs (a pool, a convolution read twice, the graph
    input) are copied in."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("Conv", ["x", "w2"], ["b"]),
             helper.make_node("Conv", ["x", "w3"], ["c"]),
             helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["ar", "b", "c", "p", "x"], ["y"], axis=1),
             helper.make_node("Conv", ["c", "w4"], ["z"])]
    inits = {"w1": _rand(6, 4, 3, 3), "w2": _rand(5, 4, 1, 1), "w3": _rand(3, 4, 1, 1), "w4": _rand(2, 3, 1, 1)}
    net = _check(nodes, {"x": X4}, outputs=("y", "z"), initializers=inits)
    rows = net.explain()["nodes"]
    placed = [r["node"] for r in rows if "written into channels" in r["became"]]
    assert len(placed) == 2 and "channels 0:6" in _row(net, "Conv")["became"], rows
    assert _row(net, "(buffer)")["node"] == "y@concat buffer"
    assert _row(net, "Concat")["became"].startswith("copies 3 of 5 inputs")
    # Another batch size, twice: the second call's arrays are new ones again; the same results.
    x = RNG.standard_normal((3, *X4.shape[1:])).astype(np.float32)
    first = net.run({"x": x})["y"].copy()
    np.testing.assert_array_equal(net.run({"x": x})["y"], first)


def test_concat_of_a_graph_output_is_copied():
    """A convolution whose output is also a graph output is not written into the Concat."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"]), helper.make_node("Conv", ["x", "w2"], ["b"]),
             helper.make_node("Concat", ["a", "b"], ["y"], axis=1)]
    net = _check(nodes, {"x": X4}, outputs=("y", "a"), initializers={"w1": _rand(3, 4, 1, 1), "w2": _rand(2, 4, 1, 1)})
    placed = [r["became"] for r in net.explain()["nodes"] if "written into channels" in r["became"]]
    assert len(placed) == 1 and "channels 3:5" in placed[0], placed


def test_channel_shuffle_stays_channels_last():
    """Reshape (N, g, C/g, H, W) -> Transpose (0, 2, 1, 3, 4) -> Reshape (N, C, H, W) between
    two convolutions runs on the NHWC value as stored: no conversion to ONNX's order and back.
    A final NCHW -> NHWC Transpose stays a view; a Reshape that mixes channels with pixels
    (a flatten) still runs in ONNX's order."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Reshape", ["c", "split"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["t", "merge"], ["m"]),
             helper.make_node("Conv", ["m", "w2"], ["y"]),
             helper.make_node("Transpose", ["y"], ["nhwc"], perm=[0, 2, 3, 1]),
             helper.make_node("Reshape", ["y", "flat"], ["f"])]
    inits = {"w": _rand(6, 4, 1, 1), "w2": _rand(3, 6, 3, 3), "split": np.array([0, 2, 3, 6, 6], np.int64),
             "merge": np.array([0, 6, 6, 6], np.int64), "flat": np.array([0, -1], np.int64)}
    net = _check(nodes, {"x": X4}, outputs=("y", "nhwc", "f"), initializers=inits)
    rows = net.explain()["nodes"]
    conversions = [r["node"] for r in rows if r["op"] == "(layout)"]
    assert conversions[0] == "x -> NHWC" and not any(c.startswith(("m", "r", "t")) for c in conversions), conversions
    reshapes = [r["became"] for r in rows if r["op"] == "Reshape"]
    assert reshapes[0] == "NumPy reshape in layout NHWC" and reshapes[2] == "NumPy reshape"


def test_pad_modes():
    for mode in ("constant", "reflect", "edge"):
        nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
                 helper.make_node("Pad", ["c", "pads", "v"], ["y"], mode=mode)]
        inits = {"w": _rand(4, 4, 1, 1), "pads": np.array([0, 0, 1, 2, 0, 0, 2, -1], np.int64),
                 "v": np.array(1.5, np.float32)}
        if mode != "constant":
            inits["pads"] = np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64)
        _check(nodes, {"x": X4}, initializers=inits)
    _check([helper.make_node("Pad", ["x"], ["y"], pads=[0, 0, 1, 1, 0, 0, 1, 1], value=2.0)], {"x": X4}, opset=10)
    _check([helper.make_node("Pad", ["x", "pads", "", "axes"], ["y"])], {"x": X4}, opset=18,
           initializers={"pads": np.array([1, 2, 3, 0], np.int64), "axes": np.array([2, -1], np.int64)})


@pytest.mark.parametrize("mode,transform,nearest", [
    ("nearest", "asymmetric", "floor"), ("nearest", "half_pixel", "round_prefer_floor"),
    ("nearest", "half_pixel", "round_prefer_ceil"), ("nearest", "align_corners", "ceil"),
    ("linear", "half_pixel", None), ("linear", "pytorch_half_pixel", None), ("linear", "align_corners", None),
    ("linear", "asymmetric", None),
])
@pytest.mark.parametrize("by", ["scales", "sizes", "downscale"])
def test_resize(mode, transform, nearest, by):
    attrs = {"mode": mode, "coordinate_transformation_mode": transform}
    if nearest:
        attrs["nearest_mode"] = nearest
    inits: Dict[str, np.ndarray] = {"w": _rand(4, 4, 1, 1)}
    if by == "sizes":
        inputs = ["c", "", "", "sizes"]
        inits["sizes"] = np.array([2, 4, 13, 9], np.int64)
    else:
        inputs = ["c", "", "scales"]
        inits["scales"] = np.array([1, 1, 2.0, 1.5] if by == "scales" else [1, 1, 0.5, 0.75], np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Resize", inputs, ["y"], **attrs)]
    _check(nodes, {"x": X4}, initializers=inits)


@pytest.mark.parametrize("mode,transform,nearest", [
    ("linear", "half_pixel", None), ("linear", "pytorch_half_pixel", None), ("linear", "align_corners", None),
    ("linear", "asymmetric", None), ("nearest", "asymmetric", "floor"), ("nearest", "half_pixel", "round_prefer_ceil"),
])
@pytest.mark.parametrize("shape,sizes", [
    ((2, 5, 7, 3), (2, 10, 14, 3)),  # NHWC, both axes up
    ((2, 3, 5, 7), (2, 3, 4, 11)),  # NCHW, one axis down, one up
    ((2, 5, 7, 16), (2, 5, 13, 16)),  # only w (h kept)
    ((2, 5, 7, 16), (2, 9, 7, 16)),  # only h (w kept)
    ((3, 6, 1), (3, 12, 1)),  # the axis before the last
    ((6, 4), (6, 9)),  # the last axis
])
def test_resize_native_pass(mode, transform, nearest, shape, sizes):
    """_netops.resize's native pass (float32, at most two adjacent axes) against its NumPy path
    on the same values in float64, and into a given buffer."""
    from cppconv import _netops

    x = RNG.standard_normal(shape).astype(np.float32)
    scales = [o / i for o, i in zip(sizes, shape)]
    args = (sizes, scales, mode, transform, nearest or "round_prefer_floor")
    want = _netops.resize(x.astype(np.float64), *args)
    got = _netops.resize(x, *args, num_threads=2)
    assert got.dtype == np.float32 and got.shape == tuple(sizes)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    buffer = np.full(sizes, np.nan, np.float32)
    assert _netops.resize(x, *args, out=buffer) is buffer
    np.testing.assert_array_equal(buffer, got)


def test_resize_native_pass_keeps_special_values():
    """Infinities on an axis that is only picked (nearest, or a kept axis) stay infinities, as
    NumPy's path keeps them; NaN spreads as the interpolation reads it."""
    from cppconv import _netops

    x = np.ones((1, 4, 4, 2), np.float32)
    x[0, 1, 2, 0] = np.inf
    x[0, 2, 1, 1] = np.nan
    for sizes, mode in (((1, 8, 8, 2), "nearest"), ((1, 4, 8, 2), "linear"), ((1, 8, 8, 2), "linear")):
        scales = [o / i for o, i in zip(sizes, x.shape)]
        args = (sizes, scales, mode, "half_pixel", "round_prefer_floor")
        with np.errstate(invalid="ignore"):  # (inf - inf in NumPy's path, as in the native pass)
            want = _netops.resize(x.astype(np.float64), *args)
        np.testing.assert_array_equal(_netops.resize(x, *args), want)


def test_resize_of_axes_apart_runs_in_numpy():
    """Axes that are not adjacent (channels and width of an NHWC value) take the NumPy path."""
    from cppconv import _netops

    x = RNG.standard_normal((1, 3, 4, 5)).astype(np.float32)
    sizes, scales = (1, 6, 4, 10), [1, 2.0, 1, 2.0]
    got = _netops.resize(x, sizes, scales, "linear", "half_pixel", "round_prefer_floor")
    want = _netops.resize(x.astype(np.float64), sizes, scales, "linear", "half_pixel", "round_prefer_floor")
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_resize_rejects_taps_outside_the_input():
    from cppconv import _native

    x, y = np.zeros((1, 2, 2, 1), np.float32), np.zeros((1, 3, 2, 1), np.float32)
    rows, cols = np.array([0, 1, 2], np.int64), np.arange(2, dtype=np.int64)
    with pytest.raises(ValueError, match="row index is outside the input"):
        _native.resize_2d(x, y, rows, rows, None, cols, cols, None)
    with pytest.raises(ValueError, match="must not overlap"):
        _native.resize_2d(x, x, cols, cols, None, cols, cols, None)


@pytest.mark.parametrize("tail", ["flatten", "softmax-opset-11", "reshape-keep-batch", "flatten-gemm"])
def test_an_empty_batch_runs_through_flatten_softmax_and_reshape(tail):
    """A batch of no images (cppconv.dask.apply learns a network's output shape from one) runs
    through Flatten, a Softmax of opset 11 over flattened axes and a Reshape to (0, -1): each
    gives the shape one image's result has, with no rows (NumPy cannot infer a -1 beside a 0)."""
    conv = helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])
    nodes = {"flatten": [helper.make_node("Flatten", ["c"], ["y"])],
             "softmax-opset-11": [helper.make_node("Softmax", ["c"], ["y"], axis=2)],
             "reshape-keep-batch": [helper.make_node("Reshape", ["c", "target"], ["y"])],
             "flatten-gemm": [helper.make_node("Flatten", ["c"], ["f"]),
                              helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)]}[tail]
    model = _model([conv, *nodes], {"x": X4}, ["y"], {"w": _rand(4, 4, 3, 3), "target": np.array([0, -1], np.int64),
                                                      "fc": _rand(5, 144)}, opset=11)
    net = cppconv.onnx.load(model)
    one = net(X4[:1])
    empty = net(X4[:0])
    assert empty.shape == (0, *one.shape[1:]) and empty.dtype == one.dtype


def test_resize_of_the_batch_axis_is_refused():
    """A Resize that scales the batch axis (ONNX allows it; no CNN does it) is a clear error: at
    load for a constant scale, at the call for computed sizes (it gave the input's batch of
    outputs after a convolution, silently)."""
    conv = helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])
    resize = helper.make_node("Resize", ["c", "", "scales"], ["y"], mode="nearest")
    model = _model([conv, resize], {"x": X4}, ["y"],
                   {"w": _rand(4, 4, 3, 3), "scales": np.array([0.5, 1, 2, 2], np.float32)})
    with pytest.raises(cppconv.onnx.ModelError, match=r"Resize of the batch axis \(axis 0\) is not supported; "
                                                      r"its scale there is 0.5, supported: 1"):
        cppconv.onnx.load(model)
    sizes = [helper.make_node("Shape", ["c"], ["s"]), helper.make_node("Mul", ["s", "twice"], ["sz"])]
    resize = helper.make_node("Resize", ["c", "", "", "sz"], ["y"], mode="nearest")
    model = _model([conv, *sizes, resize], {"x": X4}, ["y"],
                   {"w": _rand(4, 4, 3, 3), "twice": np.array([2, 1, 2, 2], np.int64)})
    net = cppconv.onnx.load(model)
    with pytest.raises(ValueError, match=r"Resize of the batch axis \(axis 0\) is not supported; it asks for 3 -> 6"):
        net(_rand(3, *X4.shape[1:]))
    # Constant sizes whose batch is the batch the model declares (as onnx-simplifier writes a
    # model exported at batch 1): any batch runs, image by image; other sizes must be the call's.
    resize = helper.make_node("Resize", ["c", "", "", "sizes"], ["y"], mode="nearest")
    inits = {"w": _rand(4, 4, 3, 3), "sizes": np.array([1, 4, 12, 12], np.int64)}
    fixed = _model([conv, resize], {"x": X4[:1]}, ["y"], inits, batch_free=False)
    net, x = cppconv.onnx.load(fixed), _rand(3, *X4.shape[1:])
    got = net(x)
    assert got.shape == (3, 4, 12, 12)
    for i in range(3):
        np.testing.assert_array_equal(got[i:i + 1], net(x[i:i + 1]))
    np.testing.assert_allclose(net(x[:1]), _ort(fixed, {"x": x[:1]})[0], rtol=1e-5, atol=1e-5)
    free = cppconv.onnx.load(_model([conv, resize], {"x": X4}, ["y"], inits))
    assert free(x[:1]).shape == (1, 4, 12, 12)
    with pytest.raises(ValueError, match=r"Resize of the batch axis \(axis 0\) is not supported; it asks for 3 -> 1"):
        free(x)


def test_resize_opset_10_scales_input():
    _check([helper.make_node("Resize", ["x", "scales"], ["y"], mode="nearest")], {"x": X4}, opset=10,
           initializers={"scales": np.array([1, 1, 2, 2], np.float32)})


@pytest.mark.parametrize("attrs", [{}, {"keepdims": 0}, {"axes": [2, 3]}, {"axes": [1], "keepdims": 0}, {"axes": [-1]}],
                         ids=str)
def test_reduce_mean(attrs):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("ReduceMean", ["c"], ["y"], **attrs)]
    _check(nodes, {"x": X4}, initializers={"w": _rand(4, 4, 1, 1)}, opset=13)


def test_reduce_mean_axes_input_opset_18():
    nodes = [helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=1)]
    _check(nodes, {"x": X4}, initializers={"axes": np.array([2, 3], np.int64)}, opset=18)


def test_shape_gather_constant_of_shape_fold():
    """Shape arithmetic on sizes the model fixes folds at load; the batch size stays a runtime value."""
    nodes = [helper.make_node("Constant", [], ["one"], value_ints=[1]),
             helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "idx"], ["hw"], axis=0),
             helper.make_node("ConstantOfShape", ["hw"], ["z"],
                              value=numpy_helper.from_array(np.array([2.0], np.float32))),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Concat", ["n", "one", "minus"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"]),
             helper.make_node("Shape", ["x"], ["tail"], start=1),
             helper.make_node("Cast", ["tail"], ["f"], to=TensorProto.FLOAT)]
    inits = {"idx": np.array([2, 3], np.int64), "zero": np.array([0], np.int64), "minus": np.array([-1], np.int64)}
    net = _check(nodes, {"x": X4}, outputs=("y", "z", "f", "n"), initializers=inits,
                 output_types={"n": TensorProto.INT64})
    rows = {r["node"]: r["became"] for r in net.explain()["nodes"]}
    assert "folded" in rows["ConstantOfShape_3"] and "folded" in rows["Gather_2"]
    assert "folded" not in rows["Gather_4"]  # the batch size


def test_constant_forms():
    nodes = [helper.make_node("Constant", [], ["a"], value_float=2.0),
             helper.make_node("Constant", [], ["b"], value_floats=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
             helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(_rand(6))),
             helper.make_node("Mul", ["x", "a"], ["m"]), helper.make_node("Add", ["m", "b"], ["p"]),
             helper.make_node("Sub", ["p", "c"], ["y"])]
    _check(nodes, {"x": X4})


def test_constant_output_and_unused_steps():
    nodes = [helper.make_node("Constant", [], ["k"], value_floats=[1.0, 2.0]), helper.make_node("Relu", ["x"], ["y"]),
             helper.make_node("Shape", ["x"], ["unused"])]
    net = _check(nodes, {"x": X4}, outputs=("y", "k"))
    out = net.run({"x": X4})["k"]
    out[0] = 5  # the caller's own copy
    assert net.run({"x": X4})["k"][0] == 1
    assert net.explain()["steps"] == 1


def _spy_buffers(net: cppconv.Network) -> List[Any]:
    """Wraps the network's convolution steps to log the buffer each is given (None, or its
    shape and address); every call through the steps (not one recorded native call)."""
    given: List[Any] = []

    def spy(fn: Any) -> Any:
        def call(x: Any, out: Any) -> Any:
            given.append(None if out is None else (out.shape, out.ctypes.data))
            return fn(x, out)
        return call

    net._steps = [(spy(fn) if writes == 1 and "layer" in row else fn, ins, outs, dead, writes, extra)
                  for (fn, ins, outs, dead, writes, extra), row in zip(net._steps, net._step_rows)]
    net._programs_kept = 0
    return given


def test_conv_outputs_write_into_one_arena():
    """Each conv writes into its planned part of one arena (values alive at once apart, the
    others sharing memory), kept for the next call of the batch size; the results stay ONNX
    Runtime's."""
    nodes, inits, prev = [], {}, "x"
    for i in range(4):
        nodes += [helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("LeakyRelu", [f"c{i}"], [f"r{i}"], alpha=0.2)]  # fused into the Conv
        inits[f"w{i}"] = _rand(4, 4, 3, 3) * 0.3
        prev = f"r{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    net = _check(nodes, {"x": X4}, initializers=inits, lanes=1)
    given = _spy_buffers(net)
    net._arenas = []  # as after loading
    want = net(X4)
    first = list(given)
    assert all(g is not None for g in first)
    # A conv's output dies at the next conv: two parts of the arena take turns.
    assert len({address for _, address in first}) == 2
    given.clear()
    np.testing.assert_array_equal(net(X4), want)
    assert given == first  # the same arena, the same places
    given.clear()  # another batch size: an arena of its size
    x3 = RNG.standard_normal((3, *X4.shape[1:])).astype(np.float32)
    np.testing.assert_allclose(net(x3), _ort(_model(nodes, {"x": x3}, ["y"], inits), {"x": x3})[0],
                               rtol=1e-5, atol=1e-5)
    assert all(g is not None and g[0][0] == 3 for g in given)
    assert [a.size for a in net._arenas] == [3 * net._arena_elements]


def test_values_of_other_shapes_share_the_arena():
    """A conv output is written where one of another shape lived (2x8x8x4 then 2x4x4x16,
    channels-last); the Python loop and the recorded program give ONNX Runtime's results."""
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c0", "w1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Conv", ["c1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c2", "w3"], ["y"], pads=[1, 1, 1, 1])]
    inits = {"w0": _rand(4, 4, 3, 3) * 0.3, "w1": _rand(16, 4, 3, 3) * 0.3, "w2": _rand(16, 16, 3, 3) * 0.2,
             "w3": _rand(16, 16, 3, 3) * 0.2}
    x = RNG.standard_normal((2, 4, 8, 8)).astype(np.float32)
    net = _check(nodes, {"x": x}, initializers=inits, lanes=1)
    given = _spy_buffers(net)
    want = net(x)
    assert given[0][0] == (2, 8, 8, 4) and given[2][0] == (2, 4, 4, 16) and given[0][1] == given[2][1]
    again = net(x)
    np.testing.assert_array_equal(again, want)
    assert again.flags.owndata and not np.shares_memory(again, want)  # (the caller's own)


def test_arena_value_lives_while_a_layout_change_views_it():
    """A layout change of one-pixel images returns a view of its input: the input's part of
    the arena stays its own until the view's last reader (the Add), though later convs write
    into the arena in between."""
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"]),
             helper.make_node("Reshape", ["c0", "shape"], ["r"]),  # (ONNX order: a view of c0)
             helper.make_node("Conv", ["c0", "w1"], ["c1"]),
             helper.make_node("Conv", ["c1", "w2"], ["c2"]),
             helper.make_node("Reshape", ["c2", "shape"], ["q"]),
             helper.make_node("Add", ["r", "q"], ["y"])]
    inits = {"w0": _rand(8, 8, 1, 1), "w1": _rand(8, 8, 1, 1), "w2": _rand(8, 8, 1, 1),
             "shape": np.array([3, 2, 4], np.int64)}
    net = _check(nodes, {"x": RNG.standard_normal((3, 8, 1, 1)).astype(np.float32)}, initializers=inits)
    assert any(row["op"] == "(layout)" and row["node"].startswith("c0 ") for row in net._step_rows)
    assert _runs(net)[-1].startswith("one native call"), _runs(net)


def test_unplanned_view_of_the_arena_leaves_as_a_copy():
    """A step result that shares the arena's memory outside the step's own part (a view the
    plan did not expect) is copied, and a recording of the run is refused (the copy is
    Python work); the step's own part and memory outside the arena pass through."""
    from cppconv import _network

    raw = np.zeros(64, np.float32)
    arena = raw[8:56]
    spare = arena[16:32]
    other = np.ones(4, np.float32)
    row = {"node": "n", "op": "Op"}
    same = (spare, spare[4:8].reshape(2, 2), other)
    assert all(a is b for a, b in zip(_network._outside_arena(same, raw, spare, row), same))
    foreign = arena[:4]
    _network._recording.program, _network._recording.failed = object(), ""
    try:
        got = _network._outside_arena((foreign, spare), raw, spare, row)
        assert "returned a view of an input in the arena" in _network._recording.failed
    finally:
        _network._recording.program, _network._recording.failed = None, ""
    assert got[1] is spare and got[0].flags.owndata and not np.shares_memory(got[0], raw)
    np.testing.assert_array_equal(got[0], foreign)


def test_in_place_step_keeps_an_operand_that_views_its_input():
    """A channel gate (Mul) of a conv output by a one-pixel slice of that same output: the
    gate is a view of the dying input, so the step must not write over it."""
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Slice", ["c", "st", "en", "ax"], ["s"]),
             helper.make_node("Mul", ["c", "s"], ["m"]),
             helper.make_node("Conv", ["m", "w1"], ["y"], pads=[1, 1, 1, 1])]
    inits = {"w0": _rand(8, 4, 3, 3), "w1": _rand(8, 8, 3, 3), "st": np.array([0, 0], np.int64),
             "en": np.array([1, 1], np.int64), "ax": np.array([2, 3], np.int64)}
    net = _check(nodes, {"x": _rand(1, 4, 6, 6)}, initializers=inits)
    assert all(over is None for over in net._arena_in_place)


def test_elementwise_step_writes_into_its_part_of_the_arena():
    """An elementwise step whose input is read later (so it cannot write over it) writes into
    a part of the arena of its own, in the Python loop and in the recorded program."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c"], ["s"]),  # (c is read again below: not fused)
             helper.make_node("Add", ["s", "c"], ["y"])]
    net = _check(nodes, {"x": X4}, initializers={"w": _rand(4, 4, 3, 3)}, lanes=1)
    seen: List[Any] = []

    def spy(fn: Any) -> Any:
        def call(*args: Any, out: Any = None) -> Any:
            seen.append(out is not None and not any(out is a for a in args))
            return fn(*args, out=out)
        return call

    net._steps = [(spy(fn) if writes == 2 and row["op"] == "Sigmoid" else fn, ins, outs, dead, writes, extra)
                  for (fn, ins, outs, dead, writes, extra), row in zip(net._steps, net._step_rows)]
    net._programs_kept = 0
    want = net(X4)
    assert seen == [True]
    np.testing.assert_array_equal(net(X4), want)


def test_sum_of_three_does_not_write_over_its_third_input():
    """Sum(a, b, c) with only c dying there: the step computes a + b first, so it may write
    over its first two operands only."""
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "w1"], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["a", "w2"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Sum", ["a", "b", "c"], ["s"]),
             helper.make_node("Mul", ["s", "a"], ["m"]),
             helper.make_node("Mul", ["m", "b"], ["y"])]
    inits = {"w0": _rand(4, 4, 3, 3), "w1": _rand(4, 4, 3, 3), "w2": _rand(4, 4, 3, 3)}
    _check(nodes, {"x": _rand(2, 4, 6, 6)}, initializers=inits)


def test_elementwise_writes_into_its_dying_input():
    """A residual Add writes into the conv output that dies at it; an input still read later
    (or the caller's array) is never overwritten."""
    # (The Add's other operand is computed after the Conv, so the Add is not fused into it.)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("LeakyRelu", ["x"], ["l"]),
             helper.make_node("Add", ["c", "l"], ["s"]),
             helper.make_node("Mul", ["s", "k"], ["m"]),  # s is also read below: written fresh
             helper.make_node("Sub", ["m", "s"], ["y"])]
    x = X4.copy()
    net = _check(nodes, {"x": x}, initializers={"w": _rand(4, 4, 3, 3), "k": _rand(4, 1, 1)}, lanes=1)
    np.testing.assert_array_equal(x, X4)  # the caller's input is untouched
    seen: List[Any] = []

    def spy(fn: Any) -> Any:
        def call(*args: Any, out: Any = None) -> Any:
            seen.append(out is not None and any(out is a for a in args))
            return fn(*args, out=out)
        return call

    net._steps = [(spy(fn) if writes == 2 else fn, ins, outs, dead, writes, extra)
                  for fn, ins, outs, dead, writes, extra in net._steps]
    want = net(X4)
    assert seen == [True, False, True]  # Add into c; Mul must keep s; Sub into m
    np.testing.assert_array_equal(net(X4), want)


def test_broadcasting_step_writes_only_into_a_full_size_input():
    """Of two inputs dying at a broadcasting Add, only the one of the result's shape may take
    the result (in either operand order); the per-channel one is too small."""
    for order in (["r", "d"], ["d", "r"]):
        nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                 helper.make_node("ReduceMean", ["c"], ["r"], axes=[2, 3], keepdims=1),
                 helper.make_node("Conv", ["x", "w2"], ["d"], pads=[1, 1, 1, 1]),
                 helper.make_node("Add", order, ["y"])]
        net = _check(nodes, {"x": X4}, initializers={"w": _rand(4, 4, 3, 3), "w2": _rand(4, 4, 3, 3)}, lanes=1)
        taken: List[Any] = []

        def spy(fn: Any, taken: List[Any] = taken) -> Any:
            def call(*args: Any, out: Any = None) -> Any:
                taken.append(None if out is None else [i for i, a in enumerate(args) if a is out])
                return fn(*args, out=out)
            return call

        steps = net._steps
        net._steps = [(spy(fn) if writes == 2 else fn, ins, outs, dead, writes, extra)
                      for fn, ins, outs, dead, writes, extra in steps]
        want = net(X4)
        assert taken == [[order.index("d")]], (order, taken)
        net._steps = steps
        np.testing.assert_array_equal(net(X4), want)


# ----- running: inputs and outputs --------------------------------------------------------------

def _two_in_two_out() -> cppconv.Network:
    nodes = [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Mul", ["a", "b"], ["p"])]
    return cppconv.onnx.load(_model(nodes, {"a": X4, "b": X4}, ["s", "p"]))


def test_run_feeds_and_outputs():
    net = _two_in_two_out()
    assert net.input_names == ["a", "b"] and net.output_names == ["s", "p"]
    out = net.run({"a": X4, "b": X4}, outputs=["p"])
    assert list(out) == ["p"]
    np.testing.assert_allclose(out["p"], X4 * X4)
    assert list(net.run({"a": X4, "b": X4}, outputs="p")) == ["p"]  # (one name: not its letters)
    assert list(net.run({"a": X4, "b": X4}, outputs=[])) == ["s", "p"]  # (ONNX Runtime's reading)
    assert list(net.run({"a": X4, "b": X4}, outputs=np.array(["p", "s"]))) == ["p", "s"]
    out = net.run({"a": X4.astype(np.float64), "b": X4.tolist()})  # converted to the model's dtype
    assert out["s"].dtype == np.float32
    with pytest.raises(TypeError, match="net.run"):
        net(X4)
    with pytest.raises(KeyError, match="missing"):
        net.run({"a": X4})
    with pytest.raises(KeyError, match="unknown"):
        net.run({"a": X4, "b": X4, "c": X4})
    with pytest.raises(KeyError, match="not an output"):
        net.run({"a": X4, "b": X4}, outputs=["q"])
    with pytest.raises(TypeError, match="dict"):
        net.run([X4, X4])  # type: ignore[arg-type]
    assert "inputs" in repr(net)


def test_run_error_names_the_node():
    """A model that fixes its batch size in a Reshape fails at another batch size, naming the node."""
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], name="flat")]
    net = cppconv.onnx.load(_model(nodes, {"x": X4}, ["y"], {"shape": np.array([2, 144], np.int64)}))
    assert net(X4).shape == (2, 144)
    with pytest.raises(ValueError, match="node 'flat' \\(Reshape"):
        net(_rand(3, 4, 6, 6))


def test_integer_input_keeps_its_dtype():
    model = _model([helper.make_node("Cast", ["i"], ["f"], to=TensorProto.FLOAT),
                    helper.make_node("Add", ["x", "f"], ["y"])], {"x": X4}, ["y"])
    model.graph.input.append(helper.make_tensor_value_info("i", TensorProto.INT64, [6]))
    net = cppconv.onnx.load(model)
    i = np.arange(6, dtype=np.int64)
    np.testing.assert_array_equal(net.run({"x": X4, "i": i})["y"], X4 + i.astype(np.float32))
    assert net.run({"x": X4, "i": i.astype(np.int32)})["y"].dtype == np.float32


def test_supported_operators_cover_the_issue():
    wanted = ("Conv ConvTranspose BatchNormalization Relu LeakyRelu PRelu Clip Sigmoid Tanh HardSigmoid HardSwish Elu "
              "Add Sub Mul Div Sum MaxPool AveragePool GlobalAveragePool GlobalMaxPool Concat Split Slice Flatten "
              "Reshape Transpose Squeeze Unsqueeze Gemm MatMul Softmax LogSoftmax Dropout Identity LRN Pad Resize "
              "ReduceMean Constant Shape Gather ConstantOfShape").split()
    assert set(wanted) <= set(cppconv.onnx.SUPPORTED_OPERATORS)
    assert cppconv.onnx.Network is cppconv.Network


def test_input_shape_is_checked_but_batch_is_free():
    net = cppconv.onnx.load(_model([helper.make_node("Relu", ["x"], ["y"])], {"x": X4}, ["y"], batch_free=False))
    assert net(_rand(5, 4, 6, 6)).shape == (5, 4, 6, 6)
    with pytest.raises(ValueError, match=r"input 'x' must have shape \(N, 4, 6, 6\)"):
        net(_rand(2, 4, 6, 7))
    with pytest.raises(ValueError, match="must have shape"):
        net(_rand(4, 6, 6))
    with pytest.raises(TypeError, match="numeric"):
        net(np.array([["a"]]))


# ----- load-time errors ---------------------------------------------------------------------------

def _load_error(nodes: List[Any], inits: Optional[Dict[str, np.ndarray]] = None, opset: int = 17,
                inputs: Optional[Dict[str, np.ndarray]] = None, outputs: Sequence[str] = ("y",)) -> str:
    with pytest.raises(ModelError) as info:
        cppconv.onnx.load(_model(nodes, inputs or {"x": X4}, outputs, inits, opset))
    return str(info.value)


def test_unsupported_operator_names_node_and_supported():
    message = _load_error([helper.make_node("Erf", ["x"], ["y"], name="my_erf")])
    assert "node 'my_erf' (Erf)" in message and "'Erf' is not supported" in message and "Conv" in message
    assert isinstance(ModelError("x"), ValueError)


def test_unsupported_domain():
    node = helper.make_node("Gelu", ["x"], ["y"], domain="com.microsoft", name="g")
    assert "domain 'com.microsoft'" in _load_error([node])


@pytest.mark.parametrize("node,inits,words", [
    (helper.make_node("Relu", ["x"], ["y"], color=1), {}, ["attribute 'color'", "supported attributes of Relu: none"]),
    (helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME"), {"w": _rand(2, 4, 1, 1)},
     ["auto_pad='SAME'", "NOTSET, VALID, SAME_UPPER"]),
    (helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3]), {"w": _rand(2, 4, 1, 1)}, ["kernel_shape"]),
    (helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1]), {"w": _rand(2, 4, 1, 1)},
     ["pads=[1, 1]", "4 non-negative"]),
    (helper.make_node("Conv", ["x", "w"], ["y"], strides=[1, 1, 1]), {"w": _rand(2, 4, 1, 1)}, ["strides", "2 values"]),
    (helper.make_node("ConvTranspose", ["x", "w"], ["y"], output_shape=[8, 8]), {"w": _rand(4, 2, 2, 2)},
     ["attribute 'output_shape' is not supported", "output_padding"]),
    (helper.make_node("ConvTranspose", ["x", "w"], ["y"], auto_pad="SAME_UPPER"), {"w": _rand(4, 2, 2, 2)},
     ["auto_pad='SAME_UPPER'", "NOTSET, VALID"]),
    (helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2]), {}, ["Indices output"]),
    (helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], storage_order=1), {}, ["storage_order=1"]),
    (helper.make_node("Resize", ["x", "", "s"], ["y"], mode="cubic"), {"s": np.ones(4, np.float32)},
     ["mode='cubic'", "nearest, linear"]),
    (helper.make_node("Resize", ["x", "", "s"], ["y"], coordinate_transformation_mode="tf_crop_and_resize"),
     {"s": np.ones(4, np.float32)}, ["tf_crop_and_resize", "half_pixel"]),
    (helper.make_node("Resize", ["x", "", "s"], ["y"], antialias=1), {"s": np.ones(4, np.float32)}, ["antialias=1"]),
    (helper.make_node("Pad", ["x", "p"], ["y"], mode="mirror"), {"p": np.zeros(8, np.int64)}, ["mode='mirror'"]),
    (helper.make_node("BatchNormalization", ["x", "s", "s", "s", "s"], ["y"], training_mode=1),
     {"s": np.ones(4, np.float32)}, ["training_mode=1", "0 (inference)"]),
], ids=lambda v: v.op_type if hasattr(v, "op_type") else "")
def test_unsupported_attribute_values(node, inits, words):
    message = _load_error([node], inits)
    assert node.op_type in message
    for w in words:
        assert w in message, message


def test_computed_weight_is_refused():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Conv", ["x", "r"], ["y"], name="c")]
    assert "node 'c' (Conv): input 1 (weight, 'r') must be a constant" in _load_error(nodes)


def test_malformed_models():
    missing = _load_error([helper.make_node("Conv", ["x", "w"], ["y"], name="c")])
    assert "node 'c' (Conv) reads 'w'" in missing and "missing initializer" in missing
    cycle = [helper.make_node("Add", ["x", "b"], ["a"], name="n1"), helper.make_node("Relu", ["a"], ["b"], name="n2"),
             helper.make_node("Relu", ["a"], ["y"], name="n3")]
    message = _load_error(cycle)
    assert "cycle" in message and "n1" in message and "n2" in message
    twice = [helper.make_node("Relu", ["x"], ["y"], name="r1"), helper.make_node("Relu", ["x"], ["y"], name="r2")]
    assert "also produced by node 'r1'" in _load_error(twice)
    assert "graph output 'z'" in _load_error([helper.make_node("Relu", ["x"], ["y"])], outputs=("y", "z"))
    mismatch = [helper.make_node("Conv", ["x", "w"], ["y"], name="c")]
    message = _load_error(mismatch, {"w": _rand(2, 3, 1, 1)})
    assert "shape" in message and "c" in message
    gemm = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "w"], ["y"], name="fc")]
    assert "shape" in _load_error(gemm, {"w": _rand(7, 3)})
    add = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Add", ["c", "b"], ["y"], name="plus")]
    message = _load_error(add, {"w": _rand(4, 4, 1, 1), "b": _rand(5)})
    assert "shapes do not check" in message and "node 'plus' (Add" in message


def test_not_a_model():
    with pytest.raises(ModelError, match="not an ONNX model"):
        cppconv.onnx.load(b"\x00\x01garbage")
    with pytest.raises(TypeError, match="path, bytes or an onnx.ModelProto"):
        cppconv.onnx.load(12)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        cppconv.onnx.load("/nonexistent/model.onnx")


def test_external_data(tmp_path):
    """Weights kept in a file beside the model are read in (and travel in the pickle)."""
    w = _rand(3, 4, 3, 3)
    model = _model([helper.make_node("Conv", ["x", "w"], ["y"])], {"x": X4}, ["y"], {"w": w})
    onnx.save_model(model, str(tmp_path / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").exists()
    net = cppconv.onnx.load(tmp_path / "m.onnx")
    want = cppconv.conv2d(X4, w)
    np.testing.assert_allclose(net(X4), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pickle.loads(pickle.dumps(net))(X4), want, rtol=1e-5, atol=1e-5)


def test_cppconv_imports_without_onnx():
    code = ("import sys; sys.modules['onnx'] = None\n"
            "import cppconv\n"
            "try:\n    cppconv.onnx.load(b'')\nexcept ImportError as e:\n    print('hint:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 'pip install "cppconv[onnx]"' in out


# ----- the command line ---------------------------------------------------------------------------

def test_cli_run(tmp_path, capsys):
    from cppconv import _cli

    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    path = tmp_path / "m.onnx"
    path.write_bytes(_model(nodes, {"x": X4}, ["y"], {"w": _rand(3, 4, 3, 3)}, batch_free=False).SerializeToString())
    threads = cppconv.get_num_threads()
    assert _cli.main(["run", str(path), "--batch", "3", "--compare", "onnxruntime", "--bench", "--budget", "0.01",
                      "--threads", "1"]) == 0
    assert cppconv.get_num_threads() == threads  # the process-wide setting is left as it was
    out = capsys.readouterr().out
    assert "output 'y': shape (3, 3, 6, 6)" in out and "activation relu fused" in out
    assert "vs onnxruntime 'y'" in out and "(ok)" in out and "images/s" in out
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(_model([helper.make_node("Erf", ["x"], ["y"], name="e")], {"x": X4}, ["y"]).SerializeToString())
    assert _cli.main(["run", str(bad)]) == 1
    assert "node 'e' (Erf)" in capsys.readouterr().err
    assert _cli.main(["run", str(tmp_path / "missing.onnx")]) == 1
    assert "No such file" in capsys.readouterr().err


# ----- bfloat16 -------------------------------------------------------------------------------------

def test_float_model_runs_in_bfloat16() -> None:
    pytest.importorskip("ml_dtypes")
    w1, w2, wt = _rand(8, 3, 3, 3), _rand(6, 8, 1, 1), _rand(6, 4, 2, 2)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"]),
             helper.make_node("ConvTranspose", ["c2", "wt"], ["y"], strides=[2, 2])]
    x = _rand(2, 3, 9, 9)
    model = _model(nodes, {"x": x}, ["y"], {"w1": w1, "w2": w2, "wt": wt})
    net = cppconv.onnx.load(model, compute_dtype="bfloat16")
    assert net.explain()["compute_dtype"] == "bfloat16"
    convs = [r for r in net.explain()["nodes"] if r["op"] in ("Conv", "ConvTranspose")]
    assert convs and all("computed in bfloat16" in r["became"] for r in convs)
    # Each layer as its own bfloat16 layer would compute it, in the network's layout.
    want = cppconv.Conv2d(w1, padding=1, activation="relu", compute_dtype="bfloat16")(x)
    want = cppconv.Conv2d(w2, compute_dtype="bfloat16")(want)
    want = cppconv.ConvTranspose2d(wt, stride=2, compute_dtype="bfloat16")(want)
    got = net(x)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    exact = _ort(model, {"x": x})[0]
    assert not np.allclose(got, exact, rtol=1e-5, atol=1e-5)  # rounded to bfloat16 on the way
    np.testing.assert_allclose(got, exact, rtol=0.05, atol=0.05 * float(np.abs(exact).max()))
    again = pickle.loads(pickle.dumps(net))
    assert again.explain()["compute_dtype"] == "bfloat16"
    np.testing.assert_array_equal(again(x), got)
    assert cppconv.onnx.load(model).explain()["compute_dtype"] == "float32"
    with pytest.raises(ValueError, match="compute_dtype"):
        cppconv.onnx.load(model, compute_dtype="float16")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relayout_between_channels_first_and_last(isa, dtype):
    """The networks' layout changes (one native transpose of (channels, pixels) matrices) against
    NumPy's: channel counts around the narrow paths (1-4) and the vector width, odd planes, one
    and two threads, ranks 3 to 5."""
    from cppconv import _netops

    rng = np.random.default_rng(7)
    for shape in [(1, 3, 224, 224), (2, 1, 5, 7), (2, 2, 33, 17), (1, 4, 9, 9), (3, 5, 7, 9), (1, 16, 4, 4),
                  (2, 17, 3, 11), (1, 33, 40), (2, 3, 2, 3, 5), (1, 64, 1, 1), (1, 1, 1, 1)]:
        x = rng.standard_normal(shape).astype(dtype)
        r = x.ndim
        for perm in [(0, *range(2, r), 1), (0, r - 1, *range(1, r - 1))]:
            want = np.ascontiguousarray(x.transpose(perm))
            for threads in (1, 2):
                got = _netops.relayout(x, perm, threads)
                assert got.dtype == want.dtype and got.shape == want.shape
                np.testing.assert_array_equal(got, want)
    empty = np.zeros((0, 3, 4, 4), dtype)
    assert _netops.relayout(empty, (0, 2, 3, 1)).shape == (0, 4, 4, 3)


def test_transpose_matrices_checks_its_arrays():
    from cppconv import _native

    x = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match=r"shape \(batch, cols, rows\)"):
        _native.transpose_matrices(x, np.zeros((2, 3, 4), np.float32))
    with pytest.raises(TypeError, match="both float32 or float64"):
        _native.transpose_matrices(x, np.zeros((2, 4, 3), np.float64))
    with pytest.raises(ValueError, match="must not overlap"):
        _native.transpose_matrices(x, x.reshape(2, 4, 3))
    for shape in [(0, 5, 6), (2, 0, 5), (2, 5, 0)]:  # nothing to move, nothing to divide the work by
        for dtype in (np.float32, np.float64):
            _native.transpose_matrices(np.zeros(shape, dtype), np.zeros((shape[0], shape[2], shape[1]), dtype), 2)


def test_relayout_into_a_given_array():
    from cppconv import _netops

    x = _rand(2, 3, 5, 7)
    want = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    out = np.full(want.shape, np.nan, np.float32)
    assert _netops.relayout(x, (0, 2, 3, 1), 2, out) is out
    np.testing.assert_array_equal(out, want)
    for wrong in (np.zeros((2, 5, 7, 3), np.float64), np.zeros((2, 7, 5, 3), np.float32),
                  np.zeros((2, 5, 7, 6), np.float32)[..., ::2]):
        got = _netops.relayout(x, (0, 2, 3, 1), 2, wrong)
        assert got is not wrong
        np.testing.assert_array_equal(got, want)
    one_channel = _rand(2, 1, 4, 4)  # already in channels-last order: a view, no copy
    assert np.shares_memory(_netops.relayout(one_channel, (0, 2, 3, 1)), one_channel)
