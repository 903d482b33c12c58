"""Quantized ONNX models in cppconv.Network: QDQ and QOperator models as
onnxruntime.quantization writes them, each QDQ convolution group run on the int8 kernels,
each of ONNX Runtime's quantized operators against ONNX Runtime, and the errors."""

from __future__ import annotations

import pickle
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import cppconv  # noqa: E402
from cppconv._models import onnx_networks  # noqa: E402
from cppconv.onnx import ModelError  # noqa: E402

F32, U8, I8, I32 = TensorProto.FLOAT, TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32
WITH_MICROSOFT = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]


def _session(model: Any, optimise: bool = True) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    if not optimise:  # each node as its definition says: the reference semantics of a QDQ graph
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _quantized(model: Any, shape: Sequence[int], fmt: str, tmp_path: Any, per_channel: bool = True) -> Any:
    """The float model quantized by onnxruntime.quantization (uint8 activations, int8 weights)."""
    quantization = pytest.importorskip("onnxruntime.quantization")
    src, dst = tmp_path / "float.onnx", tmp_path / f"{fmt}.onnx"
    src.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())

    class Reader(quantization.CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.feeds = iter([{"x": np.random.default_rng(i).standard_normal(shape).astype(np.float32)}
                               for i in range(4)])

        def get_next(self) -> Optional[Dict[str, np.ndarray]]:
            return next(self.feeds, None)

    quantization.quantize_static(str(src), str(dst), Reader(), quant_format=getattr(quantization.QuantFormat, fmt),
                                 per_channel=per_channel, activation_type=quantization.QuantType.QUInt8,
                                 weight_type=quantization.QuantType.QInt8)
    return onnx.load(str(dst))


def _cnn() -> Any:
    """A small float CNN built with onnx.helper (no torch): a stem, a residual block, max pool, a
    strided 1x1, a depthwise conv, a concatenation, a squeeze-and-excitation gate, global
    average pool and a fully connected layer."""
    rng = np.random.default_rng(0)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    inits = {"w1": w(8, 3, 3, 3), "b1": w(8), "w2": w(8, 8, 3, 3), "b2": w(8), "w3": w(16, 8, 1, 1), "b3": w(16),
             "w4": w(16, 1, 3, 3), "b4": w(16), "w5": w(8, 32, 1, 1), "b5": w(8), "fc": w(10, 8), "fcb": w(10)}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["a2"]),
        helper.make_node("Relu", ["a2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p2", "w3", "b3"], ["c3"], strides=[2, 2]),
        helper.make_node("Conv", ["c3", "w4", "b4"], ["c4"], pads=[1, 1, 1, 1], group=16),
        helper.make_node("Relu", ["c4"], ["r4"]),
        helper.make_node("Concat", ["c3", "r4"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "w5", "b5"], ["c5"]),
        helper.make_node("GlobalAveragePool", ["c5"], ["g5"]),
        helper.make_node("Sigmoid", ["g5"], ["s5"]),
        helper.make_node("Mul", ["c5", "s5"], ["m5"]),
        helper.make_node("GlobalAveragePool", ["m5"], ["g6"]),
        helper.make_node("Flatten", ["g6"], ["f6"]),
        helper.make_node("Gemm", ["f6", "fc", "fcb"], ["y"], transB=1),
    ]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", F32, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("y", F32, ["N", 10])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _convolutions(model: Any) -> int:
    return sum(n.op_type in ("Conv", "QLinearConv") for n in model.graph.node)


def _quantized_rows(net: Any) -> List[Dict[str, Any]]:
    return [r for r in net.explain()["nodes"] if r["op"] == "QLinearConv"]


def _output_step(model: Any) -> float:
    """The scale of the quantization that the graph output was dequantized from."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    node = producer[model.graph.output[0].name]
    while node.op_type != "DequantizeLinear":
        node = producer[node.input[0]]
    return float(inits[node.input[1]])


# ----- whole models -----------------------------------------------------------------------------

def test_qdq_model_runs_every_convolution_on_the_int8_kernels_as_its_definition_says(tmp_path: Any) -> None:
    float_model = _cnn()
    model = _quantized(float_model, (2, 3, 16, 16), "QDQ", tmp_path)
    net = cppconv.onnx.load(model)
    rows = _quantized_rows(net)
    assert len(rows) == _convolutions(float_model) == 5
    assert all("int8 kernels" in r["became"] and "qconv" in r.get("algorithm", "qconv") for r in rows)
    assert not any(r["op"] == "Conv" and "fused into" not in r["became"] for r in net.explain()["nodes"])
    x = np.random.default_rng(7).standard_normal((3, 3, 16, 16)).astype(np.float32)
    want = _session(model, optimise=False).run(None, {"x": x})[0]
    got = net(x)
    step = _output_step(model)
    assert np.abs(got - want).max() <= step * 1.001
    assert np.mean(got == want) >= 0.95  # equal but for a float rounding at a tie, now and then
    # ONNX Runtime's own fused int8 kernels round some operators differently, by a step or so.
    np.testing.assert_allclose(got, _session(model).run(None, {"x": x})[0], atol=4 * step)


def test_qoperator_model_matches_onnx_runtime_and_the_same_model_in_qdq_form(tmp_path: Any) -> None:
    float_model = _cnn()
    qop = _quantized(float_model, (2, 3, 16, 16), "QOperator", tmp_path)
    qdq = _quantized(float_model, (2, 3, 16, 16), "QDQ", tmp_path)
    assert any(n.domain == "com.microsoft" for n in qop.graph.node)  # what the rewrite is for
    net = cppconv.onnx.load(qop)
    assert len(_quantized_rows(net)) == 5
    x = np.random.default_rng(8).standard_normal((2, 3, 16, 16)).astype(np.float32)
    got = net(x)
    step = _output_step(qop)
    np.testing.assert_allclose(got, _session(qop).run(None, {"x": x})[0], atol=4 * step)
    np.testing.assert_allclose(got, cppconv.onnx.load(qdq)(x), atol=step * 1.001)


@pytest.mark.parametrize("name", ["resnet", "mobilenet_v2", "se_hardswish", "squeezenet", "shufflenet", "densenet",
                                  "inception", "unet", "conv1d", "conv3d"])
@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
def test_quantized_torch_networks(name: str, fmt: str, tmp_path: Any) -> None:
    pytest.importorskip("torch")
    module, shape = onnx_networks.build(name)
    float_model = onnx.load_from_string(onnx_networks.export(module, shape))
    model = _quantized(float_model, shape, fmt, tmp_path)
    net = cppconv.onnx.load(model)
    assert len(_quantized_rows(net)) == sum(n.op_type == "Conv" for n in float_model.graph.node)
    x = np.random.default_rng(9).standard_normal((2, *shape[1:])).astype(np.float32)
    got = net(x)
    want = _session(model, optimise=fmt == "QOperator").run(None, {"x": x})[0]
    rng = float(np.abs(want).max())
    if fmt == "QDQ":  # the definition, up to a step where float operators round differently
        assert np.abs(got - want).max() <= 2.001 * _output_step(model) + 1e-6 * rng
    else:  # ONNX Runtime's quantized kernels: their rounding, compounded over the layers
        assert np.abs(got - want).max() <= 0.5 * rng


def test_quantized_network_pickles(tmp_path: Any) -> None:
    model = _quantized(_cnn(), (2, 3, 16, 16), "QDQ", tmp_path)
    net = cppconv.onnx.load(model)
    x = np.random.default_rng(3).standard_normal((1, 3, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(net))(x), net(x))


# ----- QDQ convolution groups --------------------------------------------------------------------

def _qdq_conv(between: Sequence[Any], bias: str = "dq", weight_axis: int = 0) -> Any:
    """x (float) -> Q -> DQ -> Conv(DQ(w), bias) -> [between] -> Q -> DQ -> y."""
    rng = np.random.default_rng(1)
    w = rng.integers(-127, 128, (6, 4, 3, 3)).astype(np.int8)
    w_scale = rng.uniform(0.002, 0.01, 6).astype(np.float32)
    x_scale = np.float32(0.02)
    inits = {"xs": x_scale, "xz": np.uint8(128), "wq": w, "ws": w_scale, "wz": np.zeros(6, np.int8),
             "ys": np.float32(0.05), "yz": np.uint8(100)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xf"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wf"], axis=weight_axis)]
    conv_inputs = ["xf", "wf"]
    if bias == "dq":
        inits.update(bq=rng.integers(-2000, 2000, 6).astype(np.int32), bs=x_scale * w_scale, bz=np.zeros(6, np.int32))
        nodes.append(helper.make_node("DequantizeLinear", ["bq", "bs", "bz"], ["bf"], axis=0))
        conv_inputs.append("bf")
    elif bias == "float":
        inits["bf"] = rng.standard_normal(6).astype(np.float32)
        conv_inputs.append("bf")
    nodes.append(helper.make_node("Conv", conv_inputs, ["c"], pads=[1, 1, 1, 1]))
    last = "c"
    for k, (op, kw, extra) in enumerate(between):
        inits.update(extra)
        nodes.append(helper.make_node(op, [last, *extra], [f"a{k}"], **kw))
        last = f"a{k}"
    nodes += [helper.make_node("QuantizeLinear", [last, "ys", "yz"], ["yq"]),
              helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F32, ["N", 4, 7, 9])],
                              [helper.make_tensor_value_info("y", F32, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("between, fused, activation", [
    ([], True, None),
    ([("Relu", {}, {})], True, "relu"),
    ([("Clip", {}, {"lo": np.float32(0), "hi": np.float32(6)})], True, "relu6"),
    ([("Sigmoid", {}, {})], False, None),  # not a clamp: the group stays in float
])
def test_qdq_convolution_groups_fuse_with_the_clamping_activations(between: Any, fused: bool, activation: Any) -> None:
    model = _qdq_conv(between)
    net = cppconv.onnx.load(model)
    rows = _quantized_rows(net)
    assert len(rows) == int(fused)
    if fused and activation:
        assert f"activation {activation} clamped" in rows[0]["became"]
    x = (np.random.default_rng(2).standard_normal((2, 4, 7, 9)) * 2).astype(np.float32)
    want = _session(model, optimise=False).run(None, {"x": x})[0]
    np.testing.assert_array_equal(net(x), want)


@pytest.mark.parametrize("bias, weight_axis", [("float", 0), ("none", 0), ("dq", 1)])
def test_qdq_groups_the_int8_kernels_cannot_take_stay_in_float(bias: str, weight_axis: int) -> None:
    # A float bias (not DequantizeLinear of int32 at x_scale * w_scale) or weights quantized
    # along another axis: the group runs as dequantize, float conv, quantize.  No bias fuses.
    model = _qdq_conv([], bias=bias, weight_axis=weight_axis) if weight_axis == 0 else None
    if model is None:  # per-axis along axis 1 needs one scale per input channel
        model = _qdq_conv([], bias=bias)
        for t in model.graph.initializer:
            if t.name == "ws":
                t.CopyFrom(numpy_helper.from_array(np.full(4, 0.005, np.float32), "ws"))
            if t.name == "wz":
                t.CopyFrom(numpy_helper.from_array(np.zeros(4, np.int8), "wz"))
            if t.name == "bs":
                t.CopyFrom(numpy_helper.from_array(np.full(6, 0.02 * 0.005, np.float32), "bs"))
        for n in model.graph.node:
            if n.output[0] == "wf":
                n.attribute[0].i = 1
    net = cppconv.onnx.load(model)
    assert len(_quantized_rows(net)) == int(bias == "none")
    x = np.random.default_rng(4).standard_normal((1, 4, 7, 9)).astype(np.float32)
    want = _session(model, optimise=False).run(None, {"x": x})[0]
    np.testing.assert_allclose(net(x), want, atol=0.05 * 1.001)  # at most one step (a float tie)


def test_per_axis_quantization_of_a_channels_last_value() -> None:
    # The conv output is stored NHWC; QuantizeLinear/DequantizeLinear along ONNX axis 1 must
    # follow the channels wherever they are stored.
    rng = np.random.default_rng(5)
    inits = {"w": rng.standard_normal((5, 3, 3, 3)).astype(np.float32),
             "s": rng.uniform(0.01, 0.1, 5).astype(np.float32), "z": rng.integers(0, 255, 5).astype(np.uint8)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["c", "s", "z"], ["q"], axis=1),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F32, ["N", 3, 6, 6])],
                              [helper.make_tensor_value_info("y", F32, None)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    net = cppconv.onnx.load(model)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    want = _session(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(net(x), want, atol=float(inits["s"].max()) * 1.001)
    assert any("per axis" in r["became"] for r in net.explain()["nodes"])


def _qdq_add(relu: bool, a_type: int, y_type: int, b_shape: Sequence[int]) -> Any:
    """x -> Q (a), x2 -> Q (b), DequantizeLinear of each, Add, [Relu], QuantizeLinear, and the
    result dequantized: a QDQ model's residual connection."""
    a_zero, y_zero = (np.uint8(131), np.uint8(120)) if a_type == U8 else (np.int8(-3), np.int8(5))
    if y_type != a_type:
        y_zero = np.int8(-7) if y_type == I8 else np.uint8(127)
    inits = {"as": np.float32(0.031), "az": a_zero, "bs": np.float32(0.047), "bz": a_zero,
             "ys": np.float32(0.062), "yz": y_zero}
    nodes = [helper.make_node("QuantizeLinear", ["x", "as", "az"], ["aq"]),
             helper.make_node("QuantizeLinear", ["x2", "bs", "bz"], ["bq"]),
             helper.make_node("DequantizeLinear", ["aq", "as", "az"], ["af"]),
             helper.make_node("DequantizeLinear", ["bq", "bs", "bz"], ["bf"]),
             helper.make_node("Add", ["af", "bf"], ["s"])]
    last = "s"
    if relu:
        nodes.append(helper.make_node("Relu", ["s"], ["r"]))
        last = "r"
    nodes += [helper.make_node("QuantizeLinear", [last, "ys", "yz"], ["yq"]),
              helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F32, ["N", 5, 6, 7]),
                                           helper.make_tensor_value_info("x2", F32, list(b_shape))],
                              [helper.make_tensor_value_info("y", F32, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("a_type, y_type", [(U8, U8), (I8, I8), (U8, I8), (I8, U8)])
@pytest.mark.parametrize("b_shape", [["N", 5, 6, 7], [1, 5, 1, 1]], ids=["same", "broadcast"])
def test_qdq_addition_runs_as_one_pass_as_its_definition_says(relu: bool, a_type: int, y_type: int,
                                                               b_shape: List[Any]) -> None:
    """DequantizeLinear(a) + DequantizeLinear(b), [Relu], QuantizeLinear is one step over the
    8-bit values: ONNX's definition bit for bit, saturating at both ends (the inputs reach well
    past the output's range); a broadcast addition runs the definition step by step."""
    model = _qdq_add(relu, a_type, y_type, b_shape)
    net = cppconv.onnx.load(model)
    fused = [r for r in net.explain()["nodes"] if "quantized add" in r["became"]]
    assert len(fused) == 1 and ("Relu fused" in fused[0]["became"]) == relu
    assert "QuantizeLinear" in fused[0]["became"] and ("Relu" in fused[0]["became"]) == relu
    rng = np.random.default_rng(11)
    feeds = {"x": (rng.standard_normal((3, 5, 6, 7)) * 4).astype(np.float32),
             "x2": (rng.standard_normal([3 if d == "N" else d for d in b_shape]) * 6).astype(np.float32)}
    feeds["x"][0, 0, 0, :4] = [0.5 * 0.031, 1.5 * 0.031, 100.0, -100.0]  # ties of the input's rounding, saturation
    want = _session(model, optimise=False).run(None, feeds)[0]
    np.testing.assert_array_equal(net.run(feeds)["y"], want)
    for threads in (1, 2):  # one pass cut across threads: the same values
        np.testing.assert_array_equal(cppconv.onnx.load(model, num_threads=threads).run(feeds)["y"], want)


def _qdq_max_pool(y_scale: float, y_type: int, pads: List[int]) -> Any:
    """x -> Q, DequantizeLinear, MaxPool, QuantizeLinear (y_scale, y_type's zero), dequantized."""
    zero = {U8: np.uint8(121), I8: np.int8(-9)}
    inits = {"s": np.float32(0.037), "z": zero[U8], "ys": np.float32(y_scale), "yz": zero[y_type]}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["f"]),
             helper.make_node("MaxPool", ["f"], ["m"], kernel_shape=[3, 3], strides=[2, 2], pads=pads),
             helper.make_node("QuantizeLinear", ["m", "ys", "yz"], ["mq"]),
             helper.make_node("DequantizeLinear", ["mq", "ys", "yz"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F32, ["N", 4, 9, 11])],
                              [helper.make_tensor_value_info("y", F32, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("y_scale, y_type, fused", [(0.037, U8, True), (0.05, U8, False), (0.037, I8, False)])
@pytest.mark.parametrize("pads", [[0, 0, 0, 0], [1, 1, 1, 1]])
def test_qdq_max_pool_runs_on_the_8_bit_values_where_the_quantizations_agree(y_scale: float, y_type: int,
                                                                               fused: bool, pads: List[int]) -> None:
    """DequantizeLinear, MaxPool, QuantizeLinear with one scale and zero point is the max pool
    of the 8-bit values, exactly (saturated inputs and padding included); with another output
    quantization the group runs as its definition says."""
    model = _qdq_max_pool(y_scale, y_type, pads)
    net = cppconv.onnx.load(model)
    rows = [r for r in net.explain()["nodes"] if r["op"] == "MaxPool"]
    assert len(rows) == 1 and ("on the 8-bit values" in rows[0]["became"]) == fused
    x = (np.random.default_rng(13).standard_normal((2, 4, 9, 11)) * 3).astype(np.float32)
    np.testing.assert_array_equal(net(x), _session(model, optimise=False).run(None, {"x": x})[0])


def _qdq_shuffle_unit(concat_scale: float) -> Any:
    """ShuffleNet's unit as onnxruntime.quantization writes it: two QDQ convolutions whose
    8-bit outputs (scale 0.05) are concatenated (into `concat_scale`), the channel shuffle
    (Reshape, Transpose, Reshape) and the channel split (two Slices), each operator between a
    DequantizeLinear and a QuantizeLinear of the Concat's quantization; one half feeds a third
    QDQ convolution, the other is dequantized into the output's Concat."""
    rng = np.random.default_rng(3)
    inits: Dict[str, np.ndarray] = {
        "s": np.float32(0.04), "z": np.uint8(128), "cs": np.float32(0.05), "cz": np.uint8(3),
        "ks": np.float32(concat_scale), "kz": np.uint8(3), "ws": np.float32(0.02), "wz": np.int8(0),
        "shape5": np.array([0, 2, 6, 7, 9], np.int64), "shape4": np.array([0, 12, 7, 9], np.int64),
        "starts": np.array([0], np.int64), "mid": np.array([6], np.int64), "ends": np.array([12], np.int64),
        "axes": np.array([1], np.int64)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xf"])]

    def qdq_conv(name: str, x: str, c: int, k: int, scale: str, zero: str) -> str:
        inits[name + "_w"] = rng.integers(-60, 60, (k, c, 3, 3)).astype(np.int8)
        nodes.extend([helper.make_node("DequantizeLinear", [name + "_w", "ws", "wz"], [name + "_wf"]),
                      helper.make_node("Conv", [x, name + "_wf"], [name + "_y"], pads=[1, 1, 1, 1]),
                      helper.make_node("Relu", [name + "_y"], [name + "_r"]),
                      helper.make_node("QuantizeLinear", [name + "_r", scale, zero], [name + "_q"]),
                      helper.make_node("DequantizeLinear", [name + "_q", scale, zero], [name + "_f"])])
        return name + "_f"

    def qdq(op: str, ins: List[str], out: str, **attrs: Any) -> str:
        nodes.extend([helper.make_node(op, ins, [out + "_raw"], **attrs),
                      helper.make_node("QuantizeLinear", [out + "_raw", "ks", "kz"], [out + "_q"]),
                      helper.make_node("DequantizeLinear", [out + "_q", "ks", "kz"], [out])])
        return out

    a, b = qdq_conv("a", "xf", 4, 6, "cs", "cz"), qdq_conv("b", "xf", 4, 6, "cs", "cz")
    cat = qdq("Concat", [a, b], "cat", axis=1)
    grouped = qdq("Reshape", [cat, "shape5"], "grouped")
    swapped = qdq("Transpose", [grouped], "swapped", perm=[0, 2, 1, 3, 4])
    shuffled = qdq("Reshape", [swapped, "shape4"], "shuffled")
    left = qdq("Slice", [shuffled, "starts", "mid", "axes"], "left")
    right = qdq("Slice", [shuffled, "mid", "ends", "axes"], "right")
    c = qdq_conv("c", right, 6, 6, "cs", "cz")
    nodes.append(helper.make_node("Concat", [left, c], ["y"], axis=1))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F32, ["N", 4, 7, 9])],
                              [helper.make_tensor_value_info("y", F32, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("concat_scale, fused", [(0.05, True), (0.07, False)])
def test_qdq_channel_shuffle_and_split_run_on_the_8_bit_values(concat_scale: float, fused: bool,
                                                              monkeypatch: Any) -> None:
    """Concat, Reshape, Transpose and Slice between a DequantizeLinear and a QuantizeLinear of
    one quantization run on the 8-bit values (each group's QuantizeLinear fused into the
    operator): the same bits as the groups run as defined, and the network stays one recorded
    native call though the shuffle and the split leave strided 8-bit views.  Where the Concat's
    quantization differs from its inputs' it runs as defined, and the shuffle after it still on
    the 8-bit values."""
    from cppconv import _netquant

    model = _qdq_shuffle_unit(concat_scale)
    x = (np.random.default_rng(5).standard_normal((2, 4, 7, 9)) * 2).astype(np.float32)
    # (ONNX Runtime's float convolutions may round a tie the other way than the int8 kernels: one step)
    np.testing.assert_allclose(cppconv.onnx.load(model)(x), _session(model, optimise=False).run(None, {"x": x})[0],
                               atol=concat_scale * 1.001)
    with monkeypatch.context() as patch:  # every group as defined: the oracle of the fusion
        patch.setattr(_netquant, "quantized_data_movement", lambda nodes, known, outputs: nodes)
        want = cppconv.onnx.load(model)(x)
        assert not any(r["became"].startswith("fused into") and f"({op})" in r["became"]
                       for r in cppconv.onnx.load(model).explain()["nodes"] for op in ("Reshape", "Slice"))
    for threads in (1, 2):
        net = cppconv.onnx.load(model, num_threads=threads)
        np.testing.assert_array_equal(net(x), want)
        np.testing.assert_array_equal(net(x), want)  # (the recorded program's replay)
        runs = net.explain()["runs"]  # (2 threads: an image a lane)
        assert runs and all(r.startswith("one native call") for r in runs.values()), runs
    became = {r["node"]: r["became"] for r in net.explain()["nodes"]}
    for op in ("Reshape", "Transpose", "Slice"):
        assert any(f"({op})" in b and n.endswith("_QuantizeLinear") or "fused into" in b and f"({op})" in b
                   for n, b in became.items()), op
    fused_into = [b for b in became.values() if b.startswith("fused into") and "(Concat)" in b]
    assert bool(fused_into) == fused


@pytest.mark.parametrize("op", ["Reshape", "Transpose", "MaxPool"])
def test_qdq_data_movement_needs_given_zero_points(op: str) -> None:
    """DequantizeLinear of int8 values without a zero point (a zero of x's type), op,
    QuantizeLinear without one (a uint8 zero): not one quantization, though both are absent.
    The group runs as defined: uint8 results, the negative values saturated at 0."""
    node = {"Reshape": helper.make_node("Reshape", ["xf", "shape"], ["o"]),
            "Transpose": helper.make_node("Transpose", ["xf"], ["o"], perm=[0, 1, 3, 2]),
            "MaxPool": helper.make_node("MaxPool", ["xf"], ["o"], kernel_shape=[2, 2])}[op]
    nodes = [helper.make_node("DequantizeLinear", ["x8", "s"], ["xf"]), node,
             helper.make_node("QuantizeLinear", ["o", "s"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x8", I8, ["N", 3, 4, 4])],
                              [helper.make_tensor_value_info("y", U8, None)],
                              [numpy_helper.from_array(np.float32(0.1), "s"),
                               numpy_helper.from_array(np.array([0, -1], np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.array([-5, 0, 7] * 16, np.int8).reshape(1, 3, 4, 4)
    got = cppconv.onnx.load(model).run({"x8": x})["y"]
    want = _session(model, optimise=False).run(None, {"x8": x})[0]
    assert got.dtype == want.dtype == np.uint8
    np.testing.assert_array_equal(got, want)


# The native passes a network step calls, with where their thread cap is in the arguments.
THREADED_PASSES = {"quantize_linear": 9, "dequantize_linear": 7, "quantize_nan_count": 1, "quantized_add": 10,
                   "channel_affine": 8, "add": 4}


def test_every_step_keeps_to_the_networks_threads(tmp_path: Any, monkeypatch: Any, restore_threads: Any) -> None:
    """load(num_threads=1) holds for the element-wise passes too (quantize, dequantize, the fused
    addition, a BatchNormalization no convolution takes in), not only the convolutions: they
    took cppconv's process-wide count."""
    from cppconv import _native

    caps: Dict[str, List[int]] = {}

    def spy(name: str, at: int) -> Any:
        real = getattr(_native, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            caps.setdefault(name, []).append(kwargs.get("num_threads", args[at] if len(args) > at else 0))
            return real(*args, **kwargs)
        return call

    for name, at in THREADED_PASSES.items():
        monkeypatch.setattr(_native, name, spy(name, at))
    cppconv.set_num_threads(2)
    model = _quantized(_cnn(), (2, 3, 16, 16), "QDQ", tmp_path)
    x = np.random.default_rng(8).standard_normal((2, 3, 16, 16)).astype(np.float32)
    cppconv.onnx.load(model, num_threads=1)(x)
    inits = {"s": np.full(3, 1.5, np.float32), "b": np.full(3, 0.1, np.float32), "m": np.zeros(3, np.float32),
             "v": np.ones(3, np.float32)}
    bn = helper.make_graph([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["n"]),
                            helper.make_node("Relu", ["n"], ["y"])], "bn",
                           [helper.make_tensor_value_info("x", F32, ["N", 3, 16, 16])],
                           [helper.make_tensor_value_info("y", F32, None)],
                           [numpy_helper.from_array(v, k) for k, v in inits.items()])
    cppconv.onnx.load(helper.make_model(bn, opset_imports=[helper.make_opsetid("", 17)]), num_threads=1)(x)
    assert {"quantize_linear", "dequantize_linear", "quantized_add", "channel_affine"} <= set(caps), caps
    assert all(c == [1] * len(c) for c in caps.values()), caps


def test_qdq_addition_feeding_two_readers_stays_in_float() -> None:
    """An Add whose float sum something else reads too is not fused (the sum must exist)."""
    model = _qdq_add(False, U8, U8, ["N", 5, 6, 7])
    model.graph.node.append(helper.make_node("Sigmoid", ["s"], ["t"]))
    model.graph.output.append(helper.make_tensor_value_info("t", F32, None))
    net = cppconv.onnx.load(model)
    assert not any("quantized add" in r["became"] for r in net.explain()["nodes"])
    rng = np.random.default_rng(12)
    feeds = {"x": rng.standard_normal((2, 5, 6, 7)).astype(np.float32),
             "x2": rng.standard_normal((2, 5, 6, 7)).astype(np.float32)}
    for got, want in zip(net.run(feeds).values(), _session(model, optimise=False).run(None, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


# ----- ONNX Runtime's quantized operators, one node at a time -------------------------------------

def _qparams(name: str, scale: float, zero: int) -> Dict[str, np.ndarray]:
    return {f"{name}_s": np.float32(scale), f"{name}_z": np.uint8(zero)}


def _single(op: str, inputs: List[str], feeds: Dict[str, np.ndarray], inits: Dict[str, np.ndarray],
            domain: str = "com.microsoft", equal: float = 0.9, **attrs: Any) -> None:
    """One quantized node against ONNX Runtime: uint8 results within one step (ties round
    differently) and at least the fraction `equal` of them equal."""
    node = helper.make_node(op, inputs, ["y"], domain=domain, **attrs)
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info(k, U8, list(v.shape)) for k, v in feeds.items()],
                              [helper.make_tensor_value_info("y", U8, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.microsoft", 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    want = _session(model).run(None, feeds)[0]
    got = cppconv.onnx.load(model).run(feeds)["y"]
    assert got.dtype == want.dtype and got.shape == want.shape
    diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
    assert diff.max() <= 1 and np.mean(diff == 0) >= equal, (op, diff.max(), np.mean(diff == 0))


def _u8(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
def test_qlinear_binary(op: str) -> None:
    inits = {**_qparams("a", 0.03, 120), **_qparams("b", 0.05, 130),
             **_qparams("c", 0.08 if op == "QLinearAdd" else 0.2, 128)}
    feeds = {"a": _u8(2, 8, 5, 5), "b": _u8(1, 8, 1, 1, seed=1)}
    _single(op, ["a", "a_s", "a_z", "b", "b_s", "b_z", "c_s", "c_z"], feeds, inits)


@pytest.mark.parametrize("op, attrs", [
    ("QLinearGlobalAveragePool", {}),
    ("QLinearAveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    ("QLinearSigmoid", {}),
    ("QLinearLeakyRelu", {"alpha": 0.1}),
    ("QLinearSoftmax", {"axis": -1, "opset": 13}),
])
def test_qlinear_unary(op: str, attrs: Dict[str, Any]) -> None:
    inits = {**_qparams("x", 0.04, 128), **_qparams("y", 0.004 if op == "QLinearSoftmax" else 0.03, 0 if op in (
        "QLinearSigmoid", "QLinearSoftmax") else 100)}
    # (ONNX Runtime's softmax reads exponentials from a table of the 256 inputs: more ties differ.)
    _single(op, ["x", "x_s", "x_z", "y_s", "y_z"], {"x": _u8(2, 6, 7, 7)}, inits,
            equal=0.8 if op == "QLinearSoftmax" else 0.9, **attrs)


def test_qlinear_concat() -> None:
    inits = {**_qparams("y", 0.05, 128), **_qparams("a", 0.04, 120), **_qparams("b", 0.06, 130)}
    _single("QLinearConcat", ["y_s", "y_z", "a", "a_s", "a_z", "b", "b_s", "b_z"],
            {"a": _u8(2, 3, 4, 4), "b": _u8(2, 5, 4, 4, seed=2)}, inits, axis=1)


@pytest.mark.parametrize("with_bias, quantized_output", [(True, True), (False, True), (True, False)])
def test_qgemm(with_bias: bool, quantized_output: bool) -> None:
    rng = np.random.default_rng(6)
    b_scale = rng.uniform(0.002, 0.01, 7).astype(np.float32)
    # (Weights in [-64, 63]: ONNX Runtime's AVX2 u8 x s8 kernels saturate int16 pair sums beyond.)
    inits: Dict[str, np.ndarray] = {**_qparams("a", 0.05, 128), "b": rng.integers(-64, 64, (7, 12)).astype(np.int8),
                                    "b_s": b_scale, "b_z": np.zeros(7, np.int8)}
    ins = ["a", "a_s", "a_z", "b", "b_s", "b_z"]
    if with_bias:
        inits["c"] = rng.integers(-500, 500, 7).astype(np.int32)
    ins.append("c" if with_bias else "")
    if quantized_output:
        inits.update(_qparams("y", 0.1, 128))
        ins += ["y_s", "y_z"]
    feeds = {"a": _u8(3, 12)}
    if quantized_output:
        _single("QGemm", ins, feeds, inits, transB=1)
        return
    node = helper.make_node("QGemm", ins, ["y"], domain="com.microsoft", transB=1)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", U8, [3, 12])],
                              [helper.make_tensor_value_info("y", F32, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=WITH_MICROSOFT)
    np.testing.assert_allclose(cppconv.onnx.load(model).run(feeds)["y"], _session(model).run(None, feeds)[0],
                               rtol=1e-5, atol=1e-5)


def test_qlinear_matmul() -> None:
    rng = np.random.default_rng(7)
    inits = {**_qparams("a", 0.05, 128), "b": rng.integers(0, 256, (12, 5)).astype(np.uint8), "b_s": np.float32(0.01),
             "b_z": np.uint8(128), **_qparams("y", 0.2, 128)}
    _single("QLinearMatMul", ["a", "a_s", "a_z", "b", "b_s", "b_z", "y_s", "y_z"], {"a": _u8(4, 12)}, inits, domain="")


def test_qlinear_conv_node_is_the_int8_layer() -> None:
    rng = np.random.default_rng(8)
    w = rng.integers(-64, 64, (8, 3, 3, 3)).astype(np.int8)  # ORT's AVX2 kernels saturate int16 beyond this
    inits = {**_qparams("x", 0.02, 128), "w": w, "w_s": rng.uniform(0.002, 0.01, 8).astype(np.float32),
             "w_z": np.zeros(8, np.int8), **_qparams("y", 0.05, 120), "b": rng.integers(-900, 900, 8).astype(np.int32)}
    ins = ["x", "x_s", "x_z", "w", "w_s", "w_z", "y_s", "y_z", "b"]
    feeds = {"x": _u8(2, 3, 9, 11)}
    _single("QLinearConv", ins, feeds, inits, domain="", pads=[1, 1, 1, 1], strides=[2, 1])
    node = helper.make_node("QLinearConv", ins, ["y"], pads=[1, 1, 1, 1], strides=[2, 1])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", U8, [2, 3, 9, 11])],
                              [helper.make_tensor_value_info("y", U8, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    got = cppconv.onnx.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])).run(feeds)["y"]
    want = cppconv.qconv2d(feeds["x"], inits["x_s"], inits["x_z"], w, inits["w_s"], inits["w_z"], inits["y_s"],
                           inits["y_z"], inits["b"], stride=(2, 1), padding=1)
    np.testing.assert_array_equal(got, want)  # exactly cppconv's own QLinearConv


# ----- errors ----------------------------------------------------------------------------------------

def _microsoft_model(op: str, inputs: List[str], inits: Dict[str, np.ndarray], **attrs: Any) -> Any:
    node = helper.make_node(op, inputs, ["y"], domain="com.microsoft", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", U8, [1, 4, 5, 5])],
                              [helper.make_tensor_value_info("y", U8, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=WITH_MICROSOFT)


def test_unsupported_microsoft_operator_names_the_supported_ones() -> None:
    model = _microsoft_model("QLinearWhere", ["x"], {})
    with pytest.raises(ModelError, match=r"com\.microsoft.*QLinearWhere|QLinearWhere.*com\.microsoft") as e:
        cppconv.onnx.load(model)
    assert "QLinearAdd" in str(e.value) and "QGemm" in str(e.value)


def test_channels_last_quantized_pool_is_refused() -> None:
    inits = {**_qparams("x", 0.04, 128), **_qparams("y", 0.03, 100)}
    model = _microsoft_model("QLinearGlobalAveragePool", ["x", "x_s", "x_z", "y_s", "y_z"], inits, channels_last=1)
    with pytest.raises(ModelError, match="channels_last=1 is not supported"):
        cppconv.onnx.load(model)


def test_quantized_softmax_of_the_old_opset_on_an_inner_axis_is_refused() -> None:
    inits = {**_qparams("x", 0.04, 128), **_qparams("y", 0.004, 0)}
    model = _microsoft_model("QLinearSoftmax", ["x", "x_s", "x_z", "y_s", "y_z"], inits, axis=1, opset=12)
    with pytest.raises(ModelError, match="opset=12 is not supported"):
        cppconv.onnx.load(model)


def test_quantize_linear_without_saturation_is_refused() -> None:
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], saturate=0)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", F32, [1, 4])],
                              [helper.make_tensor_value_info("y", U8, None)],
                              [numpy_helper.from_array(np.float32(0.1), "s"),
                               numpy_helper.from_array(np.uint8(3), "z")])
    with pytest.raises(ModelError, match="saturate=0 is not supported"):
        cppconv.onnx.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]))


def test_computed_quantization_scale_is_refused() -> None:
    node = helper.make_node("QuantizeLinear", ["x", "s"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", F32, [1, 4]),
                                            helper.make_tensor_value_info("s", F32, [])],
                              [helper.make_tensor_value_info("y", U8, None)])
    with pytest.raises(ModelError, match="scale.*must be a constant"):
        cppconv.onnx.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


# ----- QDQ elementwise chains as tables ---------------------------------------------------------

def _qdq_silu(x_type: int, y_type: int, outputs: Sequence[str] = ("y",), divide: bool = False) -> Any:
    """x -> QuantizeLinear (x_type), then SiLU as onnxruntime.quantization writes it
    (DequantizeLinear, Sigmoid, QuantizeLinear, DequantizeLinear, Mul, QuantizeLinear (y_type)),
    dequantized; `divide`: f / f instead of the Mul (0 / 0 at x's zero point)."""
    zero = {U8: np.uint8(121), I8: np.int8(-9)}
    inits = {"s": np.float32(0.07), "z": zero[x_type], "gs": np.float32(1 / 255), "gz": np.uint8(0),
             "ys": np.float32(0.05), "yz": zero[y_type]}
    second = helper.make_node("Div", ["f", "f"], ["m"]) if divide else helper.make_node("Mul", ["f", "gf"], ["m"])
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["f"]),
             helper.make_node("Sigmoid", ["f"], ["g"]),
             helper.make_node("QuantizeLinear", ["g", "gs", "gz"], ["gq"]),
             helper.make_node("DequantizeLinear", ["gq", "gs", "gz"], ["gf"]), second,
             helper.make_node("QuantizeLinear", ["m", "ys", "yz"], ["mq"]),
             helper.make_node("DequantizeLinear", ["mq", "ys", "yz"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F32, ["N", 4, 9, 11])],
                              [helper.make_tensor_value_info(o, F32, None) for o in outputs],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _every_code(x_type: int) -> np.ndarray:
    """A (2, 4, 9, 11) float input whose quantization holds every 8-bit code (_qdq_silu's x)."""
    zero = 121 if x_type == U8 else -9
    codes = np.arange(256) if x_type == U8 else np.arange(-128, 128)
    x = np.random.default_rng(3).standard_normal((2, 4, 9, 11)).astype(np.float32) * 8
    x.reshape(-1)[:256] = (codes - zero) * np.float32(0.07)
    return x


@pytest.mark.parametrize("x_type", [U8, I8])
@pytest.mark.parametrize("y_type", [U8, I8])
def test_qdq_elementwise_chain_runs_as_one_table_as_its_definition_says(x_type: int, y_type: int,
                                                                        monkeypatch: Any) -> None:
    """EfficientNet's quantized SiLU (Sigmoid, Mul and three quantizations between two 8-bit
    values) becomes one lookup a value, tabulated at load from the group's own definition: the
    unfused group's results bit for bit on every code, at any thread count, and ONNX Runtime's
    within one step (its sigmoid may round differently)."""
    model = _qdq_silu(x_type, y_type)
    net = cppconv.onnx.load(model)
    tables = [r for r in net.explain()["nodes"] if "8-bit table" in r["became"]]
    assert len(tables) == 1 and "Sigmoid" in tables[0]["became"] and "Mul" in tables[0]["became"]
    with monkeypatch.context() as m:
        m.setattr(cppconv._network._TABULATING, "active", True, raising=False)
        unfused = cppconv.onnx.load(model)
    assert not any("8-bit table" in r["became"] for r in unfused.explain()["nodes"])
    x = _every_code(x_type)
    want = unfused.run({"x": x})["y"]
    for threads in (1, 2, 3):
        np.testing.assert_array_equal(cppconv.onnx.load(model, num_threads=threads).run({"x": x})["y"], want)
    ort = _session(model, optimise=False).run(None, {"x": x})[0]
    assert np.abs(want - ort).max() <= np.float32(0.05) * 1.001


def test_qdq_elementwise_chain_stays_where_a_value_inside_is_read_outside_or_a_code_gives_nan() -> None:
    """A group whose Sigmoid output is also a graph output keeps that Sigmoid (only the outer
    requantization could be tabulated, and it is not a function of one 8-bit value); a group
    that gives NaN for one code (0 / 0) stays unfused and fails only where that code comes."""
    net = cppconv.onnx.load(_qdq_silu(U8, U8, outputs=("y", "g")))
    assert not any("Sigmoid" in r["became"] for r in net.explain()["nodes"] if "8-bit table" in r["became"])
    x = _every_code(U8)
    got = net.run({"x": x})
    assert got["g"].dtype == np.float32 and np.isfinite(got["y"]).all()
    net = cppconv.onnx.load(_qdq_silu(U8, U8, divide=True))
    assert not any("Div" in r["became"] for r in net.explain()["nodes"] if "8-bit table" in r["became"])
    away = np.full((1, 4, 9, 11), 1.0, np.float32)
    np.testing.assert_array_equal(net.run({"x": away})["y"], np.full_like(away, 1.0))
    with pytest.raises(ValueError, match="NaN"):
        net.run({"x": np.zeros((1, 4, 9, 11), np.float32)})


def _silu_cnn() -> Any:
    """A float CNN of a stem, a SiLU (Sigmoid, Mul), a residual block and a 1x1 convolution:
    quantized, every step of it has a native pass (no max pool: its 8-bit pool widens in NumPy)."""
    rng = np.random.default_rng(5)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Sigmoid", ["c0"], ["g0"]), helper.make_node("Mul", ["c0", "g0"], ["s0"]),
             helper.make_node("Conv", ["s0", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]), helper.make_node("Add", ["r1", "s0"], ["a1"]),
             helper.make_node("Conv", ["a1", "w2", "b2"], ["y"])]
    inits = {"w0": w(8, 3, 3, 3), "b0": w(8), "w1": w(8, 8, 3, 3), "b1": w(8), "w2": w(4, 8, 1, 1), "b2": w(4)}
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F32, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("y", F32, None)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_qdq_network_runs_as_one_native_call_and_replays_its_definition(tmp_path: Any) -> None:
    """A QDQ model whose every step has a native pass (quantizations, int8 convolutions, the SiLU
    table, the quantized residual add) runs as one native call from its second call on, with the
    values of its first (Python) run on new inputs; a NaN input still fails its quantization."""
    model = _quantized(_silu_cnn(), (2, 3, 16, 16), "QDQ", tmp_path)
    net = cppconv.onnx.load(model)
    assert any("8-bit table" in r["became"] for r in net.explain()["nodes"])
    rng = np.random.default_rng(9)
    feeds = [rng.standard_normal((2, 3, 16, 16)).astype(np.float32) for _ in range(4)]
    want = [cppconv.onnx.load(model)(x) for x in feeds]  # (each a fresh network's first run: the steps)
    got = [net(x) for x in feeds]
    assert all(run.startswith("one native call") for run in net.explain()["runs"].values()), net.explain()["runs"]
    for g, w_ in zip(got, want):
        np.testing.assert_array_equal(g, w_)
    bad = feeds[0].copy()
    bad[1, 2, 3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        net(bad)
    np.testing.assert_array_equal(net(feeds[1]), want[1])  # (the program runs on after the failure)


def _graph(nodes: List[Any], x_type: int, x_shape: Sequence[Any], outputs: Dict[str, int],
           inits: Dict[str, Any]) -> Any:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", x_type, list(x_shape))],
                              [helper.make_tensor_value_info(o, t, None) for o, t in outputs.items()],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _equal_to_unfused(model: Any, x: np.ndarray, monkeypatch: Any) -> Any:
    """The network of model, after checking its outputs on x against the same network untabulated."""
    with monkeypatch.context() as m:
        m.setattr(cppconv._network._TABULATING, "active", True, raising=False)
        want = cppconv.onnx.load(model).run({"x": x})
    net = cppconv.onnx.load(model)
    for _ in range(2):  # (the second call records a program)
        got = net.run({"x": x})
    for name in want:
        assert got[name].shape == want[name].shape and got[name].dtype == want[name].dtype, name
        np.testing.assert_array_equal(got[name], want[name])
    return net


def test_qdq_tables_keep_the_definition_at_their_edges(monkeypatch: Any) -> None:
    """Sources without a zero point (an int8 or int32 value, which a table of 8-bit codes would
    misread), a one-value constant of higher rank (which broadcasts the result), and a chain of
    600 quantized stages (tabulated in pieces, not walked to the recursion limit)."""
    q = {"s": np.float32(0.05), "gs": np.float32(1 / 255), "gz": np.uint8(0)}
    sigmoid = [helper.make_node("DequantizeLinear", ["x", "s"], ["f"]), helper.make_node("Sigmoid", ["f"], ["g"]),
               helper.make_node("QuantizeLinear", ["g", "gs", "gz"], ["y"])]
    _equal_to_unfused(_graph(sigmoid, I8, [2, 128], {"y": U8}, q), np.arange(-128, 128, dtype=np.int8).reshape(2, 128),
                      monkeypatch)
    x32 = (np.arange(-512, 512, dtype=np.int32) * 7).reshape(4, 256)
    _equal_to_unfused(_graph(sigmoid, I32, [4, 256], {"y": U8}, q), x32, monkeypatch)
    scaled = [helper.make_node("DequantizeLinear", ["x", "s", "z"], ["f"]), helper.make_node("Mul", ["f", "k"], ["g"]),
              helper.make_node("QuantizeLinear", ["g", "gs", "gz"], ["y"])]
    inits = {**q, "z": np.uint8(128), "k": np.full((1, 1, 1), 1.5, np.float32)}
    codes = np.arange(256, dtype=np.uint8).reshape(2, 128)
    net = _equal_to_unfused(_graph(scaled, U8, [2, 128], {"y": U8}, inits), codes, monkeypatch)
    assert net.run({"x": np.zeros((2, 128), np.uint8)})["y"].shape == (1, 2, 128)
    stages, prev = [], "x"
    for i in range(600):
        stages += [helper.make_node("DequantizeLinear", [prev, "s", "z"], [f"f{i}"]),
                   helper.make_node("Tanh" if i % 2 else "Relu", [f"f{i}"], [f"g{i}"]),
                   helper.make_node("QuantizeLinear", [f"g{i}", "s", "z"], [f"q{i}"])]
        prev = f"q{i}"
    net = _equal_to_unfused(_graph(stages, U8, [1, 256], {prev: U8}, {"s": np.float32(0.02), "z": np.uint8(100)}),
                            np.arange(256, dtype=np.uint8).reshape(1, 256), monkeypatch)
    assert 10 <= sum("8-bit table" in r["became"] for r in net.explain()["nodes"]) < 600


def _se_cnn() -> Any:
    """A float CNN with a squeeze-and-excitation block: stem, pool, 1x1, sigmoid, the gate's Mul."""
    rng = np.random.default_rng(6)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c0"], ["p"]),
             helper.make_node("Conv", ["p", "w1", "b1"], ["s"]), helper.make_node("Sigmoid", ["s"], ["g"]),
             helper.make_node("Mul", ["c0", "g"], ["m"]), helper.make_node("Conv", ["m", "w2", "b2"], ["y"])]
    inits = {"w0": w(24, 3, 3, 3), "b0": w(24), "w1": w(24, 24, 1, 1), "b1": w(24), "w2": w(8, 24, 1, 1), "b2": w(8)}
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F32, ["N", 3, 12, 12])],
                              [helper.make_tensor_value_info("y", F32, None)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_qdq_channel_gate_runs_as_one_pass_as_its_definition_says(tmp_path: Any, monkeypatch: Any) -> None:
    """A QDQ squeeze-and-excitation Mul (DequantizeLinear(x) times a float gate per image and
    channel, QuantizeLinear) runs as one pass over the 8-bit values: the unfused group's values
    bit for bit, at any batch and thread count, replays included."""
    model = _quantized(_se_cnn(), (2, 3, 12, 12), "QDQ", tmp_path)
    net = cppconv.onnx.load(model)
    assert any("quantized channel gate" in r["became"] for r in net.explain()["nodes"])
    with monkeypatch.context() as m:
        m.setattr(cppconv._netquant, "quantized_gates", lambda nodes, *args: nodes)
        unfused = cppconv.onnx.load(model)
    assert not any("quantized channel gate" in r["became"] for r in unfused.explain()["nodes"])
    rng = np.random.default_rng(13)
    for batch in (1, 3):
        x = rng.standard_normal((batch, 3, 12, 12)).astype(np.float32) * 3
        want = unfused(x)
        for threads in (1, 2):
            fused = cppconv.onnx.load(model, num_threads=threads)
            for _ in range(3):  # (replays from the second call)
                np.testing.assert_array_equal(fused(x), want)


def test_qdq_network_with_pools_and_concatenations_runs_as_one_native_call(tmp_path: Any) -> None:
    """The 8-bit max pool (widened, pooled and narrowed in three recorded native passes) and a
    Concat of dequantized values (native copies) keep a QDQ network on one native call, with
    the values of its first (Python) runs."""
    model = _quantized(_cnn(), (2, 3, 16, 16), "QDQ", tmp_path)
    net = cppconv.onnx.load(model)
    ops = {r["op"] for r in net.explain()["nodes"]}
    assert {"MaxPool", "Concat"} <= ops
    rng = np.random.default_rng(21)
    feeds = [rng.standard_normal((2, 3, 16, 16)).astype(np.float32) for _ in range(3)]
    want = [cppconv.onnx.load(model)(x) for x in feeds]
    got = [net(x) for x in feeds]
    assert all(run.startswith("one native call") for run in net.explain()["runs"].values()), net.explain()["runs"]
    for g, w_ in zip(got, want):
        np.testing.assert_array_equal(g, w_)
