"""cppconv.Network: an ONNX model planned once at load and run node by node.

The plan (built by _Planner) is a list of steps, each a closure over its prepared operator:
Conv/ConvTranspose nodes become cppconv layers with BatchNormalization folded into the
weights and the following activation fused; pools run on cppconv's pools; the rest run
in NumPy (_netops).  The convolution path keeps one channels-last layout (NHWC, NWC, NDHWC):
values are converted only at graph inputs and outputs and around operators that need the
ONNX (channels-first) axis order, such as Flatten or Reshape before a Gemm.  The values that
steps write into a buffer (a conv, a Resize, a layout change, a Concat's result) live in one
arena per call, planned at load by their lifetimes (_arena_plan), and an elementwise operator
(activation, residual Add) may write over an input that dies at that step.  A Concat's
convolution inputs are written straight into its result.
"""

from __future__ import annotations

import functools
import heapq
import sys
import threading
from collections import defaultdict
from typing import AbstractSet, Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from . import _args, _native, _netbatch, _netops, _netquant, _quant, _tuning
from . import _pool as _pooling
from ._conv import Conv1d, Conv2d, Conv3d
from ._conv_transpose import ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from ._forksafe import ForkSafeLock
from ._pool import (
    avg_pool1d,
    avg_pool2d,
    avg_pool3d,
    global_avg_pool1d,
    global_avg_pool2d,
    global_avg_pool3d,
    max_pool1d,
    max_pool2d,
    max_pool3d,
)
from ._quant import QConv1d, QConv2d, QConv3d

Perm = Optional[Tuple[int, ...]]  # a value's stored axis order: None (as ONNX), or channels-last


class ModelError(ValueError):
    """A model cppconv cannot run: an unsupported operator or attribute, or a malformed graph.
    Raised at load, naming the node, its operator and (where one is at fault) the attribute."""


def channels_last(rank: int) -> Tuple[int, ...]:
    """The stored axis order of a channels-last value of `rank` dimensions: (0, 2, ..., 1)."""
    return (0, *range(2, rank), 1)


def _inverse(perm: Sequence[int]) -> Tuple[int, ...]:
    return tuple(int(i) for i in np.argsort(perm))


def _activation_word(act: Any) -> str:
    """A fused activation as explain() names it: "relu", or "leaky_relu(0.2)"."""
    return act if isinstance(act, str) else "{}({})".format(*act)


def _layout_word(perm: Perm) -> str:
    if perm is None:
        return "ONNX order"
    if tuple(perm) == channels_last(len(perm)):
        return {3: "NWC", 4: "NHWC", 5: "NDHWC"}.get(len(perm), f"channels-last {tuple(perm)}")
    return f"axes stored as {tuple(perm)}"


class _Node:
    """One ONNX node, with what the fusion pass merged into it."""

    __slots__ = ("name", "op", "inputs", "outputs", "attrs", "bn", "activation", "fused", "residual")

    def __init__(self, name: str, op: str, inputs: List[str], outputs: List[str], attrs: Dict[str, Any]):
        self.name, self.op, self.inputs, self.outputs, self.attrs = name, op, inputs, outputs, attrs
        self.bn: Optional[_Node] = None
        self.activation: Any = None  # a fused activation argument: a name or ("leaky_relu", alpha)
        self.fused: List[_Node] = []
        self.residual: Optional[_Node] = None  # a Conv's residual Add, fused (its other operand is input 3)

    def input(self, i: int) -> str:
        """Input i's name, "" for an absent optional input."""
        return self.inputs[i] if i < len(self.inputs) else ""

    def where(self) -> str:
        return f"node {self.name!r} ({self.op})"


# The attributes each operator accepts (values are checked where they matter).
_ATTRIBUTES: Dict[str, Set[str]] = {
    "Conv": {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"},
    "ConvTranspose": {"auto_pad", "dilations", "group", "kernel_shape", "output_padding", "pads", "strides"},
    "BatchNormalization": {"epsilon", "momentum", "training_mode", "spatial"},
    "Relu": set(), "Sigmoid": set(), "Tanh": set(), "HardSwish": set(), "PRelu": set(),
    "LeakyRelu": {"alpha"}, "Elu": {"alpha"}, "HardSigmoid": {"alpha", "beta"}, "Clip": {"min", "max"},
    "Add": set(), "Sub": set(), "Mul": set(), "Div": set(), "Sum": set(),
    "MaxPool": {"auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "storage_order", "strides"},
    "AveragePool": {"auto_pad", "ceil_mode", "count_include_pad", "dilations", "kernel_shape", "pads", "strides"},
    "GlobalAveragePool": set(), "GlobalMaxPool": set(),
    "Concat": {"axis"}, "Split": {"axis", "split", "num_outputs"}, "Slice": {"starts", "ends", "axes"},
    "Flatten": {"axis"}, "Reshape": {"allowzero"}, "Transpose": {"perm"}, "Squeeze": {"axes"},
    "Unsqueeze": {"axes"}, "Gemm": {"alpha", "beta", "transA", "transB"}, "MatMul": set(),
    "Softmax": {"axis"}, "LogSoftmax": {"axis"}, "Dropout": {"ratio", "seed"}, "Identity": set(),
    "LRN": {"alpha", "beta", "bias", "size"}, "Pad": {"mode", "pads", "value"},
    "Resize": {"mode", "coordinate_transformation_mode", "nearest_mode", "cubic_coeff_a", "exclude_outside",
               "extrapolation_value", "antialias", "keep_aspect_ratio_policy", "axes"},
    "ReduceMean": {"axes", "keepdims", "noop_with_empty_axes"},
    "Constant": {"value", "value_float", "value_floats", "value_int", "value_ints"},
    "Shape": {"start", "end"}, "Gather": {"axis"}, "ConstantOfShape": {"value"}, "Cast": {"to", "saturate"},
    # Quantized models (_netquant): ONNX Runtime's own quantized operators arrive rewritten as these.
    "QuantizeLinear": {"axis", "saturate"}, "DequantizeLinear": {"axis"},
    "QLinearConv": {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"},
}
SUPPORTED_OPERATORS = tuple(sorted(_ATTRIBUTES))

# Operators whose result is a view of their first input (no new memory in the plan).
_VIEWS = {"Identity", "Dropout", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Split", "Transpose"}
# Activations a convolution layer applies as it writes its output (cppconv's activation=).
_FUSABLE = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "HardSwish": "hardswish"}


def _refuse(node: _Node, attribute: str, value: Any, supported: str) -> ModelError:
    return ModelError(f"{node.where()}: attribute {attribute}={value!r} is not supported; supported: {supported}")


# How a step gives its output: it returns a new array; fn(x, out) writes into `out`, a buffer
# of its output's shape, when given one (a conv layer); fn(*inputs, out=...) may write into
# an input that dies at this step (an elementwise NumPy ufunc).
_RETURNS, _INTO_BUFFER, _IN_PLACE = 0, 1, 2


class _Step:
    """One planned call: fn(*inputs) -> outputs, over value slots."""

    __slots__ = ("fn", "ins", "outs", "view", "row", "writes", "role")

    def __init__(self, fn: Callable[..., Tuple[Any, ...]], ins: List[str], outs: List[str], view: bool,
                 row: Dict[str, Any], writes: int = _RETURNS, role: str = ""):
        self.fn, self.ins, self.outs, self.view, self.row = fn, ins, outs, view, row
        self.writes = writes  # how fn gives its output: _RETURNS, _INTO_BUFFER or _IN_PLACE
        # What a recorded run may see it do without a native call (_check_unrecorded_step):
        # _COMPUTES nothing of the sort, _VIEWS_INPUT give views of its inputs, _ALLOCATES make an
        # array that later steps write.
        self.role = role or (_VIEWS_INPUT if row.get("op") in _VIEWS else _COMPUTES)

    @property
    def may_return_input(self) -> bool:
        """Whether an output may be its first input's memory: a view, or a step that may return
        its input (a layout change of one pixel)."""
        return self.view or self.role == _VIEWS_INPUT


_COMPUTES, _VIEWS_INPUT, _ALLOCATES = "computes", "views its input", "allocates"


class _Recording(threading.local):
    """The NetProgram that a run on this thread records its steps into (Network.run), and why
    the recording cannot be replayed, if a step did Python work that it would not repeat."""

    program: Optional[Any] = None
    failed = ""


_recording = _Recording()


def _program() -> Optional[Any]:
    """The NetProgram the steps of this thread's run pass to the native calls, or None."""
    return _recording.program


def _unrecorded(why: str) -> None:
    """Marks this thread's recording (if any) as not replayable: a step did Python work."""
    if _recording.program is not None and not _recording.failed:
        _recording.failed = why


def parse_model(model: Any) -> Any:
    """The ModelProto of a path, bytes or a ModelProto (itself: not serialized, which took half
    of a ResNet-50's load; a network keeps a source for pickles of its own, Network.__init__)."""
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(data)
        except Exception as e:  # noqa: BLE001 - protobuf's DecodeError
            raise ModelError(f"not an ONNX model: {e}") from None
    else:
        import os

        if not isinstance(model, (str, os.PathLike)):
            raise TypeError(f"model must be a path, bytes or an onnx.ModelProto, got {type(model).__name__}")
        path = os.fspath(model)
        with open(path, "rb") as f:
            data = f.read()
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(data)
        except Exception as e:  # noqa: BLE001 - protobuf's DecodeError
            raise ModelError(f"{path}: not an ONNX model: {e}") from None
        del data  # (the proto holds the weights: not the file's bytes beside them)
        # Weights kept in files beside the model are read in, as onnx.load does, so that a
        # pickle carries them.
        if _uses_external_data(proto):
            from onnx.external_data_helper import load_external_data_for_model

            load_external_data_for_model(proto, os.path.dirname(path))
    if not proto.graph.node and not proto.graph.output:
        raise ModelError("not an ONNX model: the model has no graph")
    return proto


def _uses_external_data(proto: Any) -> bool:
    """Whether a tensor of the model (an initializer or a node's tensor attribute, in any
    subgraph) keeps its data in another file."""
    from onnx import AttributeProto, TensorProto

    def graph_uses(graph: Any) -> bool:
        if any(t.data_location == TensorProto.EXTERNAL for t in graph.initializer):
            return True
        for node in graph.node:
            for a in node.attribute:
                if a.type == AttributeProto.TENSOR and a.t.data_location == TensorProto.EXTERNAL:
                    return True
                if a.type == AttributeProto.TENSORS and any(t.data_location == TensorProto.EXTERNAL for t in a.tensors):
                    return True
                if a.type == AttributeProto.GRAPH and graph_uses(a.g):
                    return True
                if a.type == AttributeProto.GRAPHS and any(graph_uses(g) for g in a.graphs):
                    return True
        return False

    return graph_uses(proto.graph)


def _attributes(node: Any) -> Dict[str, Any]:
    from onnx import AttributeProto, helper, numpy_helper

    attrs: Dict[str, Any] = {}
    for a in node.attribute:
        if a.type == AttributeProto.TENSOR:
            attrs[a.name] = numpy_helper.to_array(a.t)
        elif a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
            attrs[a.name] = "<subgraph>"
        else:
            value = helper.get_attribute_value(a)
            attrs[a.name] = value.decode() if isinstance(value, bytes) else value
    return attrs


def _element_dtype(value_info: Any) -> np.dtype:
    """The NumPy dtype of a graph input (float32 where the model does not say)."""
    from onnx import helper

    elem = value_info.type.tensor_type.elem_type
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem)) if elem else np.dtype(np.float32)


def _topological(nodes: List[_Node], available: Set[str]) -> List[_Node]:
    """The nodes in an order where each runs after the producers of its inputs (Kahn)."""
    producer: Dict[str, _Node] = {}
    for n in nodes:
        for o in n.outputs:
            if o in producer or o in available:
                raise ModelError(f"{n.where()}: output {o!r} is also produced by "
                                 f"{producer[o].where() if o in producer else 'an initializer or graph input'}")
            if o:
                producer[o] = n
    for n in nodes:
        for i in n.inputs:
            if i and i not in producer and i not in available:
                raise ModelError(f"{n.where()} reads {i!r}, which no node, initializer or graph input defines "
                                 f"(a missing initializer?)")
    waiting = {id(n): sum(1 for i in n.inputs if i in producer) for n in nodes}
    readers: Dict[str, List[_Node]] = defaultdict(list)
    for n in nodes:
        for i in n.inputs:
            if i in producer:
                readers[i].append(n)
    # The model's own order wherever it is already topological (a heap keyed by position).
    position = {id(n): k for k, n in enumerate(nodes)}
    ready = [(position[id(n)], n) for n in nodes if waiting[id(n)] == 0]
    heapq.heapify(ready)
    order: List[_Node] = []
    while ready:
        _, n = heapq.heappop(ready)
        order.append(n)
        for o in n.outputs:
            for r in readers.get(o, ()):
                waiting[id(r)] -= 1
                if waiting[id(r)] == 0:
                    heapq.heappush(ready, (position[id(r)], r))
    if len(order) != len(nodes):
        stuck = [n.name or n.op for n in nodes if waiting[id(n)] > 0]
        raise ModelError(f"the graph has a cycle: nodes {stuck[:8]} wait on each other's outputs")
    return order


def free_batch(proto: Any) -> Any:
    """A copy of the model whose graph inputs and outputs have a symbolic first axis, "N"."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    _symbolic_batch(model.graph, {t.name for t in model.graph.initializer})
    return model


def batch_inputs(g: Any, initializers: Set[str]) -> List[str]:
    """The graph inputs (the initializers excepted) whose first axis is the batch: that of the
    first input whose first axis the model leaves free (else the first input's), and of every
    input that declares it the same: free under the same name, or the same fixed size.  An
    input that declares another size there (a table of 3 rows beside images of any batch), or
    leaves it free under another name or none (ONNX Runtime takes such sizes as unrelated), is
    not split into images."""
    def first_axis(v: Any) -> Any:  # a size, ("free", its name), or None where the input has no first axis
        t = v.type.tensor_type
        if not t.HasField("shape"):
            return ("free", "")
        dims = t.shape.dim
        if not len(dims):
            return None
        return dims[0].dim_value if dims[0].HasField("dim_value") else ("free", dims[0].dim_param)

    axes = {v.name: first_axis(v) for v in g.input if v.name not in initializers}
    with_first_axis = [a for a in axes.values() if a is not None]
    if not with_first_axis:
        return []
    batch = next((a for a in with_first_axis if isinstance(a, tuple)), with_first_axis[0])
    primary = next(name for name, axis in axes.items() if axis == batch)
    return [name for name, axis in axes.items()
            if name == primary or (axis is not None and axis == batch and axis != ("free", ""))]


def _symbolic_batch(g: Any, initializers: Set[str]) -> None:
    """Marks the first axis of the graph's batch inputs (batch_inputs) and of its outputs "N"."""
    batch = set(batch_inputs(g, initializers))
    for v in [*(v for v in g.input if v.name in batch), *(v for v in g.output if v.name not in initializers)]:
        dims = v.type.tensor_type.shape.dim
        if len(dims):
            dims[0].dim_param = "N"


# Constants of at most this many elements go to ONNX's shape inference (shape-like values; weights
# are declared by their shape alone).
_SMALL_CONSTANT = 64


def _without_weights(proto: Any) -> Any:
    """A copy of the model for shape inference: the graph inputs' first axis symbolic ("N"),
    no value_info, and the large initializers (weights) declared as graph inputs of their
    shape, so their data is neither copied nor serialised (at 64x64, two thirds of ResNet-50's
    load time was that).  Small initializers stay: inference reads shape-like constants."""
    from onnx import ModelProto, helper

    src = proto.graph
    model = ModelProto(ir_version=proto.ir_version)
    model.opset_import.extend(proto.opset_import)
    model.functions.extend(proto.functions)
    g = model.graph
    g.name = src.name
    g.node.extend(src.node)
    weights = {t.name for t in src.initializer if int(np.prod(t.dims)) > _SMALL_CONSTANT}
    g.initializer.extend(t for t in src.initializer if t.name not in weights)
    g.input.extend(src.input)
    g.output.extend(src.output)
    _symbolic_batch(g, {t.name for t in src.initializer})
    # The outputs' shapes left to inference alone: a first axis declared "N" that inference cannot
    # follow would stay "N", and a Reshape(x, [-1, 4]) output would pass as batch-first (_netbatch).
    for v in g.output:
        v.type.tensor_type.ClearField("shape")
    declared = {v.name for v in src.input}
    g.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                   for t in src.initializer if t.name in weights and t.name not in declared)
    return model


def _inferred_shapes(proto: Any, known: Optional[Dict[str, np.ndarray]] = None) -> Tuple[
        Dict[str, Tuple[Optional[int], ...]], Dict[str, np.dtype], Optional[str], Dict[str, Tuple[str, ...]]]:
    """Every value's shape from ONNX shape inference, with the graph inputs' first axis
    symbolic (the batch size is free): None marks a size that is not a constant.  Also the
    values' element types where inference knows them, the error strict inference found, if
    any, and each value's symbolic sizes ("" for a constant or unknown one: which axes hold
    the batch, _netbatch).  `known`: computed values whose contents the planner found (small
    ones, the same at every batch size), read by their nodes' readers as constants: ONNX's
    data propagation does not follow every operator (a Div of a shape's size)."""
    import onnx
    from onnx import helper, numpy_helper

    model = _without_weights(proto)
    if known:
        g = model.graph
        for name, value in known.items():
            g.initializer.append(numpy_helper.from_array(np.asarray(value), f"{name}@known"))
        for n in g.node:
            for j, i in enumerate(n.input):
                if i in known:
                    n.input[j] = f"{i}@known"
    problem = None
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as e:  # noqa: BLE001 - onnx.shape_inference.InferenceError and the checker's errors
        # Planned on what inference can still say, so a node's own check names the attribute
        # at fault; the error stands if no check does (Network.__init__).
        problem = f"the model's shapes do not check: {str(e).strip()}"
        model = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    shapes, dtypes, dim_params = {}, {}, {}
    for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        t = v.type.tensor_type
        if t.HasField("shape"):
            shapes[v.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
            dim_params[v.name] = tuple(d.dim_param for d in t.shape.dim)
        if t.elem_type:
            dtypes[v.name] = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type))
    return shapes, dtypes, problem, dim_params


# Set while a network tabulates a group of its nodes (_tabulated): the group's own network must
# run the group as it is.
_TABULATING = threading.local()
_TABULATING.active = False


def _tabulated(group: List[_Node], x: str, y: str, known: Dict[str, np.ndarray], opset: int) -> Optional[np.ndarray]:
    """y for each of the 256 values of the 8-bit x, computed by a network of `group` alone (the
    nodes that compute y from x; _netquant.quantized_tables), or None where it fails (a NaN to
    quantize)."""
    from onnx import TensorProto, helper, numpy_helper

    def eight_bit(dequantize_or_quantize: _Node) -> np.dtype:  # (an absent zero point: uint8)
        zero = dequantize_or_quantize.input(2)
        return np.dtype(known[zero].dtype) if zero else np.dtype(np.uint8)

    leaf = next(n for n in group if n.op == "DequantizeLinear" and n.input(0) == x)
    x_dtype, y_dtype = eight_bit(leaf), eight_bit(group[-1])
    element = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8}
    constants = sorted({i for n in group for i in n.inputs if i in known})
    graph = helper.make_graph(
        [helper.make_node(n.op, n.inputs, n.outputs, name=n.name, **n.attrs) for n in group], "table",
        [helper.make_tensor_value_info(x, element[x_dtype], [256])],
        [helper.make_tensor_value_info(y, element[y_dtype], [256])],
        [numpy_helper.from_array(np.asarray(known[c]), c) for c in constants])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    _TABULATING.active = True
    try:
        with np.errstate(all="ignore"):  # (a code giving NaN fails the quantization: reported, not warned)
            values = Network(model, num_threads=1)(np.arange(256, dtype=np.uint8).view(x_dtype))
    except (ValueError, TypeError, ModelError):
        return None
    finally:
        _TABULATING.active = False
    return np.ascontiguousarray(values, y_dtype).reshape(256)


class _Planner:
    """Builds a Network's steps from an ONNX model: validation, constant folding, fusion,
    layout assignment and the liveness plan."""

    def __init__(self, proto: Any, num_threads: int, precision: Optional[str], compute_dtype: Optional[str] = None):
        from onnx import numpy_helper

        self.threads = num_threads or None
        self.precision: Any = precision  # checked by Network (_args.precision_code); a layer takes it as is
        self.compute_dtype = compute_dtype  # the float conv layers' compute_dtype= (checked by Network)
        g = proto.graph
        self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.consts: Dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        # (copies: a part of the parsed model would keep all of it, weights too, alive)
        self.inputs = [_detached(v) for v in g.input if v.name not in self.consts]
        # The model less its weights' data, and those weights (each until a layer is found to
        # hold it bit for bit, hold()): a pickle's source (_light_model) once the parsed model,
        # a second copy of every weight through planning, is dropped (Network.__init__).
        self.source, self.source_values = _weightless(proto, self.consts)
        self.batch_inputs = set(batch_inputs(g, set(self.consts)))
        # The batch size the model declares, where it fixes one (a Resize to constant sizes
        # keeps that size as the batch's: a model exported at batch 1 runs any batch).
        fixed = [v.type.tensor_type.shape.dim[0].dim_value for v in self.inputs if v.name in self.batch_inputs
                 and v.type.tensor_type.shape.dim and v.type.tensor_type.shape.dim[0].HasField("dim_value")]
        self.declared_batch = fixed[0] if fixed else None
        self.output_names = [v.name for v in g.output]
        self.layout: Dict[str, Perm] = {name: None for name in self.consts}
        self.layout.update({v.name: None for v in self.inputs})
        self.steps: List[_Step] = []
        self.rows: List[Dict[str, Any]] = []
        self.converted: Dict[Tuple[str, Perm], str] = {}
        self.shape_source: Dict[str, str] = {}  # Shape's output -> its input, for folding Gather
        self.shape_values: Set[str] = set()  # runtime values computed from shapes (not activations)
        self.probes: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}  # shape values at batch 1 and 2
        # Initializer -> (layer, "weight" or "bias", its little-endian dtype): the layer's array
        # holds its values bit for bit (hold()), so a pickle need not carry them (_light_model).
        self.held_by_layers: Dict[str, Tuple[Any, str, np.dtype]] = {}
        self.input_dtypes = {v.name: _element_dtype(v) for v in self.inputs}
        # The dtype of the activations (and of the conv weights): the first float input's.
        self.dtype = next((d for d in self.input_dtypes.values() if d.kind == "f"), np.dtype(np.float32))
        nodes = []
        for i, n in enumerate(g.node):
            node = _Node(n.name or f"{n.op_type}_{i}", n.op_type, list(n.input), list(n.output), _attributes(n))
            if n.domain not in ("", "ai.onnx"):
                raise ModelError(f"{node.where()}: operator domain {n.domain!r} is not supported; supported: "
                                 f"the default ONNX domain, operators {', '.join(SUPPORTED_OPERATORS)}; and "
                                 f"ONNX Runtime's quantized operators (com.microsoft) "
                                 f"{', '.join(_netquant.MICROSOFT_QUANTIZED)}")
            if n.op_type not in _ATTRIBUTES:
                raise ModelError(f"{node.where()}: operator {n.op_type!r} is not supported; supported operators: "
                                 f"{', '.join(SUPPORTED_OPERATORS)}")
            unknown = sorted(set(node.attrs) - _ATTRIBUTES[n.op_type])
            if unknown:
                allowed = ", ".join(sorted(_ATTRIBUTES[n.op_type])) or "none"
                raise ModelError(f"{node.where()}: attribute {unknown[0]!r} is not supported; supported attributes "
                                 f"of {n.op_type}: {allowed}")
            nodes.append(node)
        order = _topological(nodes, set(self.consts) | {v.name for v in self.inputs})
        self.shapes, self.dtypes, self.shape_problem, dim_params = _inferred_shapes(self.source)
        for name in self.output_names:
            if name not in self.layout and not any(name in n.outputs for n in order):
                raise ModelError(f"graph output {name!r} is produced by no node, initializer or input")
        known = self._known_constants(order)
        # (on the model's own nodes, before fusion: the checks read ONNX's operators)
        split_inputs = [v.name for v in self.inputs if v.name in self.batch_inputs]
        self.split_problem = _netbatch.split_problem(order, known, split_inputs, self.output_names, dim_params,
                                                     self.opset)
        # (checked again after planning, which finds the values ONNX's inference could not)
        self._split_check = (self.source, order, known, split_inputs) if self.split_problem and \
            self.split_problem.lost_batch else None
        def activation_of(n: _Node) -> Any:
            return _fused_activation(n, known, self.opset)

        quantized = _netquant.quantized_convolutions(order, known, set(self.output_names), activation_of, _Node)
        quantized = _netquant.quantized_adds(quantized, known, set(self.output_names), activation_of, _Node)
        quantized = _netquant.quantized_data_movement(quantized, known, set(self.output_names))
        if not getattr(_TABULATING, "active", False):
            quantized = _netquant.quantized_tables(quantized, known, set(self.output_names), _Node,
                                                   functools.partial(_tabulated, known=known, opset=self.opset))
        quantized = _netquant.quantized_gates(quantized, known, set(self.output_names), _Node)
        self.nodes = _fuse(quantized, known, set(self.output_names), self.opset, self.shapes)
        # The nodes that read each value (a Concat's input read by it alone may be written in place).
        self.readers: Dict[str, List[_Node]] = defaultdict(list)
        for n in self.nodes:
            for i in n.inputs:
                self.readers[i].append(n)

    def _known_constants(self, nodes: List[_Node]) -> Dict[str, np.ndarray]:
        """Initializers and Constant outputs: what the fusion pass may read as weights."""
        known = dict(self.consts)
        for n in nodes:
            if n.op == "Constant" and n.outputs:
                known[n.outputs[0]] = _constant_value(n)
        return known

    # ----- values ---------------------------------------------------------------------------
    def rank(self, name: str) -> Optional[int]:
        if name in self.consts:
            return int(self.consts[name].ndim)
        perm = self.layout.get(name)
        if perm is not None:
            return len(perm)
        shape = self.shapes.get(name)
        return None if shape is None else len(shape)

    def const(self, node: _Node, i: int, what: str) -> np.ndarray:
        """Input i of node, which must be a constant (an initializer or folded)."""
        name = node.input(i)
        if name not in self.consts:
            raise ModelError(f"{node.where()}: input {i} ({what}, {name!r}) must be a constant (an initializer or "
                             f"computable at load); a computed {what} is not supported")
        return self.consts[name]

    def hold(self, name: str, layer: Any, attribute: str, made_from: Optional[np.ndarray] = None) -> None:
        """Records initializer `name` as held by ``layer.<attribute>`` where that array has its
        values bit for bit (no BatchNormalization folded in, nothing rounded; -0.0 is not 0.0):
        the planner's copy of it may then go.  `made_from`: the array the layer was made from;
        the initializer's own buffer there settles it without reading the values back from the
        layer (an unpacked copy of each weight: 8 MiB of MobileNetV3-Small's 36 MiB load peak)."""
        given = self.source_values.get(name)
        if given is None:
            return  # (its data stays in the source: small, or a dtype kept as it is)
        if made_from is not None and layer.compute_dtype is None and _same_buffer(given, made_from):
            held = True  # (a layer keeps the values it is given)
        else:
            value = getattr(layer, attribute)
            held = value is not None and value.dtype == given.dtype and value.size == given.size and \
                np.array_equal(np.ascontiguousarray(given).reshape(-1).view(np.uint8),
                               np.ascontiguousarray(value).reshape(-1).view(np.uint8))
        if held:
            self.held_by_layers[name] = (layer, attribute, given.dtype.newbyteorder("<"))
            del self.source_values[name]

    def release(self, node: _Node, i: int) -> None:
        """Drops input i of node, a constant that node alone reads and that its layer now holds
        in its own form: the planner's copy would add to the load's peak (a ResNet-50's weights
        three times over: the model's bytes, these copies, the layers')."""
        name = node.input(i)
        if name in self.consts and name not in self.output_names and \
                all(reader is node for reader in self.readers.get(name, ())):
            del self.consts[name]

    def optional_const(self, node: _Node, i: int, what: str) -> Optional[np.ndarray]:
        return None if node.input(i) == "" else self.const(node, i, what)

    def stored_shape(self, name: str, batch: int = 1) -> Optional[Tuple[int, ...]]:
        """The value's shape as stored, at `batch`; None where a size is not known."""
        if name in self.consts:
            return tuple(self.consts[name].shape)
        shape = self.shapes.get(name)
        if shape is None:
            return None
        sizes = [batch if (d is None and i == 0) else d for i, d in enumerate(shape)]
        if any(d is None for d in sizes):
            return None
        perm = self.layout.get(name)
        known = [int(d) for d in sizes if d is not None]
        return tuple(known[p] for p in perm) if perm is not None else tuple(known)

    def value_in(self, name: str, want: Perm) -> str:
        """The name of `name` in layout `want`, converting (once) where it is stored otherwise."""
        if name == "" or self.layout[name] == want:
            return name
        have = self.layout[name]
        key = (name, want)
        if key in self.converted:
            return self.converted[key]
        target = f"{name}@{_layout_word(want)}"
        if have is not None and want is not None:
            return self.value_in(self.value_in(name, None), want)
        perm = _inverse(have) if want is None else want  # type: ignore[arg-type]
        self.shapes.setdefault(target, self.shapes.get(name))  # type: ignore[arg-type]
        self.converted[key] = target
        threads = self.threads or 0

        def convert(x: np.ndarray, out: Optional[np.ndarray] = None) -> Tuple[np.ndarray]:
            return (_netops.relayout(x, perm, threads, out, _program()),)

        if name in self.consts:
            self.consts[target] = convert(self.consts[name])[0]
            self.layout[target] = want
        else:
            row = {"node": f"{name} -> {_layout_word(want)}", "op": "(layout)",
                   "became": f"transpose {_layout_word(have)} -> {_layout_word(want)}", "layout": _layout_word(want)}
            self.rows.append(row)
            # (into its part of the arena: a fresh array costs page faults)
            self.steps.append(_Step(convert, [name], [target], False, row, _INTO_BUFFER, role=_VIEWS_INPUT))
            self.layout[target] = want
        return target

    def broadcast_inputs(self, names: Sequence[str]) -> Tuple[List[str], Perm]:
        """Operands of a broadcasting operator in one layout: channels-last when one of the
        widest operands is and every rank is known (narrower operands are aligned to the
        trailing axes first, as ONNX broadcasts), else all as ONNX stores them."""
        present = [n for n in names if n]
        ranks = [self.rank(n) for n in present]
        widest = max((r for r in ranks if r is not None), default=0)
        perm = channels_last(widest) if widest >= 3 else None
        if perm is None or None in ranks or not any(self.layout[n] == perm for n in present):
            return [self.value_in(n, None) if n else n for n in names], None
        return [self.aligned(n, widest, perm) if n else n for n in names], perm

    def aligned(self, name: str, rank: int, perm: Tuple[int, ...]) -> str:
        """`name` (of rank <= `rank`) with leading axes of 1 added, in layout `perm`."""
        if self.layout[name] == perm:
            return name
        plain = self.value_in(name, None)
        have = self.rank(plain)
        assert have is not None
        if have == rank:
            return self.value_in(plain, perm)
        key = (plain, perm)
        if key in self.converted:
            return self.converted[key]
        target = f"{plain}@aligned{rank}"
        self.converted[key] = target

        def expand(x: np.ndarray) -> Tuple[np.ndarray]:
            return (x.reshape((1,) * (rank - x.ndim) + x.shape).transpose(perm),)

        self.layout[target] = perm
        if plain in self.consts:
            self.consts[target] = np.ascontiguousarray(expand(self.consts[plain])[0])
        else:
            row = {"node": target, "op": "(layout)", "became": "broadcast view, channels-last",
                   "layout": _layout_word(perm)}
            self.rows.append(row)
            self.steps.append(_Step(expand, [plain], [target], True, row))
        return target

    def emit(self, node: _Node, fn: Callable[..., Tuple[Any, ...]], ins: List[str], perms: Sequence[Perm],
             became: str, outs: Optional[List[str]] = None, writes: int = _RETURNS, view: Optional[bool] = None,
             **extra: Any) -> None:
        """Adds node's step (fn over ins, giving outs in layouts perms), or runs it now when every
        input is a constant (constant folding).  view: whether the step may return a view of an
        input (default: as the node's operator may)."""
        outs = list(node.outputs if outs is None else outs)
        for o, p in zip(outs, perms):
            self.layout[o] = p
        if all(i == "" or i in self.consts for i in ins):
            results = fn(*[self.consts.get(i) for i in ins])
            for o, r in zip(outs, results):
                if o:
                    self.consts[o] = np.asarray(r)
            self.rows.append({"node": node.name, "op": node.op, "became": "a constant (folded at load)",
                              "layout": "-"})
            return
        row = {"node": node.name, "op": node.op, "became": became, "layout": _layout_word(perms[0]), **extra}
        self.rows.append(row)
        self.steps.append(_Step(fn, ins, outs, node.op in _VIEWS if view is None else view, row, writes))
        computed = [i for i in ins if i and i not in self.consts]
        if node.op == "Shape" or (computed and all(i in self.shape_values for i in computed)):
            self.shape_values.update(outs)
            self.probe_shapes(fn, ins, outs, values=True)
        elif any(o and None in self.shapes.get(o, (None, None))[1:] for o in outs):
            self.probe_shapes(fn, ins, outs)

    def probe_shapes(self, fn: Callable[..., Tuple[Any, ...]], ins: List[str], outs: List[str],
                     values: bool = False) -> None:
        """Output shapes ONNX's inference left open (after a Reshape to a computed shape, say),
        found by running the step on zeros at batch 1 and 2: sizes that differ follow the batch.
        Shape values (values=True) keep what they compute at both batches, for the probes of
        the steps that read them (a Reshape to a shape computed from the batch size)."""
        found = []
        for b, batch in enumerate((1, 2)):
            args = []
            for i in ins:
                if i == "" or i in self.consts:
                    args.append(self.consts.get(i))
                    continue
                if i in self.probes:
                    args.append(self.probes[i][b])
                    continue
                shape = self.stored_shape(i, batch)
                if shape is None:
                    return
                # (A value converted to another layout is named "<value>@<layout>".)
                args.append(np.zeros(shape, self.dtypes.get(i.split("@")[0], self.dtype)))
            try:
                found.append(list(fn(*args)))
            except Exception:  # noqa: BLE001 - a step that zeros do not suit: its shapes stay unknown
                return
        if values:
            for o, one, two in zip(outs, *found):
                self.probes[o] = (np.asarray(one), np.asarray(two))
            return
        found = [[np.shape(r) for r in results] for results in found]
        for o, one, two in zip(outs, *found):
            perm = self.layout.get(o)
            if len(one) != len(two) or (perm is not None and len(perm) != len(one)):
                continue
            back = range(len(one)) if perm is None else _inverse(perm)
            self.shapes[o] = tuple(one[b] if one[b] == two[b] else None for b in back)

    # ----- the plan -------------------------------------------------------------------------
    def plan(self) -> None:
        for node in self.nodes:
            handler = _HANDLERS[node.op]
            handler(self, node)
            for fused in node.fused:
                self.rows.append({"node": fused.name, "op": fused.op, "became": f"fused into {node.where()}",
                                  "layout": "-"})
        if self._split_check is not None:
            self._check_split_again()

    def _check_split_again(self) -> None:
        """split_problem once more where ONNX's inference lost the batch axis: with the values
        computed from shapes that planning folded to constants (from sizes the model fixes, never
        the batch's) given to inference as such (ShuffleNetV2's channel split: a Slice whose end
        is the shape's channel count, divided by 2).  (Not the values probed alike at batch 1
        and 2: N // 3 is 0 at both.)"""
        proto, order, known, inputs = self._split_check
        self._split_check = None
        found = {o: self.consts[o] for n in order for o in n.outputs
                 if o in self.consts and o not in known and self.consts[o].size <= _SMALL_CONSTANT}
        if found:
            dim_params = _inferred_shapes(proto, found)[3]
            self.split_problem = _netbatch.split_problem(order, known, inputs, self.output_names, dim_params,
                                                         self.opset)

    def drop_unused(self, outputs: List[str]) -> None:
        """Removes the steps no output depends on (a Shape whose readers were all folded, say)."""
        needed = set(outputs)
        kept = []
        for step in reversed(self.steps):
            if any(o in needed for o in step.outs):
                needed.update(step.ins)
                kept.append(step)
            else:
                step.row["became"] += " (unused once folded: dropped)"
        self.steps = kept[::-1]

    def axis(self, node: _Node, name: str, axis: int, rank: Optional[int] = None) -> int:
        """Logical (ONNX) axis of value `name` as an axis of the value as stored."""
        rank = self.rank(name) if rank is None else rank
        if rank is None:
            raise ModelError(f"{node.where()}: the rank of {name!r} is not known at load")
        if not -rank <= axis < rank:
            raise ModelError(f"{node.where()}: axis {axis} is out of range for a {rank}-D input")
        axis %= rank
        perm = self.layout.get(name)
        return perm.index(axis) if perm is not None else axis


def _constant_value(node: _Node) -> np.ndarray:
    a = node.attrs
    if "value" in a:
        return np.asarray(a["value"])
    if "value_float" in a:
        return np.asarray(a["value_float"], np.float32)
    if "value_floats" in a:
        return np.asarray(a["value_floats"], np.float32)
    if "value_int" in a:
        return np.asarray(a["value_int"], np.int64)
    if "value_ints" in a:
        return np.asarray(a["value_ints"], np.int64)
    raise ModelError(f"{node.where()}: no value attribute; supported: value, value_float(s), value_int(s)")


def _clip_bounds(
    node: _Node, known: Dict[str, np.ndarray], opset: int
) -> Optional[Tuple[Optional[float], Optional[float]]]:
    """Clip's (min, max) when they are constants (attributes before opset 11, inputs after)."""
    if opset < 11:
        return node.attrs.get("min"), node.attrs.get("max")
    bounds = []
    for i in (1, 2):
        name = node.input(i)
        if name and name not in known:
            return None
        bounds.append(float(known[name]) if name else None)
    return bounds[0], bounds[1]


def _fused_activation(node: _Node, known: Dict[str, np.ndarray], opset: int) -> Any:
    """The cppconv activation argument that node computes, if a convolution can apply it as it writes."""
    if node.op in _FUSABLE:
        return _FUSABLE[node.op]
    if node.op == "LeakyRelu":  # ONNX's alpha is a float32, as the kernels apply it to float32
        alpha = float(np.float32(node.attrs.get("alpha", _args.DEFAULT_NEGATIVE_SLOPE)))
        return "leaky_relu" if alpha == float(np.float32(_args.DEFAULT_NEGATIVE_SLOPE)) else ("leaky_relu", alpha)
    if (node.op == "HardSigmoid" and np.float32(node.attrs.get("alpha", 0.2)) == np.float32(1 / 6)
            and np.float32(node.attrs.get("beta", 0.5)) == np.float32(0.5)):
        return "hardsigmoid"  # PyTorch's, which its exporter writes with alpha 1/6
    if node.op == "Clip":
        bounds = _clip_bounds(node, known, opset)
        if bounds is not None and bounds[0] == 0 and bounds[1] in (6, None):
            return "relu" if bounds[1] is None else "relu6"
    return None


def _fuse(nodes: List[_Node], known: Dict[str, np.ndarray], graph_outputs: Set[str], opset: int,
          shapes: Optional[Dict[str, Any]] = None) -> List[_Node]:
    """Merges into each Conv (and ConvTranspose) with constant weights a BatchNormalization that
    alone reads its output, then the activation (Relu, Clip(0, 6), Sigmoid, Tanh, LeakyRelu (any alpha),
    x * Sigmoid(x)) that alone reads the result; likewise the activation after a fully connected
    Gemm or MatMul."""
    readers: Dict[str, List[_Node]] = defaultdict(list)
    for n in nodes:
        for i in n.inputs:
            if i:
                readers[i].append(n)
    merged: Set[int] = set()

    def only_reader(value: str) -> Optional[_Node]:
        r = readers.get(value, [])
        return r[0] if len(r) == 1 and value not in graph_outputs else None

    def take_activation(n: _Node) -> bool:
        """n takes in the activation that alone reads its output, where it is one a layer fuses."""
        act = only_reader(n.outputs[0])
        name = None if act is None else _fused_activation(act, known, opset)
        if act is None or name is None:
            return False
        n.activation, n.outputs = name, [act.outputs[0]]
        n.fused.append(act)
        merged.add(id(act))
        return True

    for n in nodes:
        if n.op not in ("Conv", "ConvTranspose") or n.input(1) not in known or len(n.outputs) != 1:
            continue
        bn = only_reader(n.outputs[0])
        if (bn is not None and bn.op == "BatchNormalization" and all(bn.input(i) in known for i in range(1, 5))
                and not bn.attrs.get("training_mode", 0) and len([o for o in bn.outputs if o]) == 1):
            n.bn, n.outputs = bn, [bn.outputs[0]]
            n.fused.append(bn)
            merged.add(id(bn))
        if take_activation(n):
            continue
        pair = readers.get(n.outputs[0], [])
        if len(pair) == 2 and n.outputs[0] not in graph_outputs:
            sig = next((r for r in pair if r.op == "Sigmoid"), None)
            mul = next((r for r in pair if r.op == "Mul"), None)
            if sig is not None and mul is not None and only_reader(sig.outputs[0]) is mul and \
                    sorted(mul.inputs) == sorted([n.outputs[0], sig.outputs[0]]):
                n.activation, n.outputs = "silu", [mul.outputs[0]]
                n.fused += [sig, mul]
                merged.update({id(sig), id(mul)})
    # A fully connected Gemm or MatMul (a 1x1 Conv1d) applies the activation that alone reads its result.
    sizes = shapes or {}

    def rank(name: str) -> Optional[int]:
        return int(known[name].ndim) if name in known else (None if sizes.get(name) is None else len(sizes[name]))

    for n in nodes:
        if n.op in ("Gemm", "MatMul") and len(n.outputs) == 1 and _is_fully_connected(n, known, rank):
            take_activation(n)
    # A BatchNormalization no convolution took in (a pre-activation one), or a residual Add, and
    # the Relu that alone reads it: one pass.
    for n in nodes:
        if n.op not in ("BatchNormalization", "Add") or id(n) in merged or len([o for o in n.outputs if o]) != 1:
            continue
        act = only_reader(n.outputs[0])
        if act is not None and act.op == "Relu":
            n.activation, n.outputs = "relu", [act.outputs[0]]
            n.fused.append(act)
            merged.add(id(act))
    _fuse_residual_adds(nodes, known, only_reader, merged, shapes or {})
    return [n for n in nodes if id(n) not in merged]


def _fuse_residual_adds(nodes: List[_Node], known: Dict[str, np.ndarray], only_reader: Callable[[str], Optional[_Node]],
                        merged: Set[int], shapes: Dict[str, Any]) -> None:
    """Merges a residual Add (and the Relu it took in) into the 2-D Conv that produces one of
    its operands, where the Add alone reads that Conv's output, the Conv applies no activation
    of its own and the other operand is computed before the Conv runs: the convolution adds it
    as it stores its outputs (Conv2d's residual=), instead of a pass over data that has left
    the cache.  Of ResNet's Add(main path, downsampling Conv), that is the downsampling Conv.
    An operand ONNX's shape inference says is broadcast stays a separate Add."""
    # (Of the nodes that stay: a Conv that took in a BatchNormalization or activation produces
    # that node's output.)
    position = {o: k for k, n in enumerate(nodes) if id(n) not in merged for o in n.outputs if o}
    producer = {o: n for n in nodes if id(n) not in merged for o in n.outputs if o}
    for add in nodes:
        if add.op != "Add" or id(add) in merged or len(add.inputs) != 2 or len([o for o in add.outputs if o]) != 1:
            continue
        for ours, other in (add.inputs, add.inputs[::-1]):
            conv = producer.get(ours)
            if (conv is None or conv.op != "Conv" or id(conv) in merged or conv.activation is not None
                    or conv.residual is not None or conv.input(1) not in known or known[conv.input(1)].ndim != 4
                    or only_reader(ours) is not add or other == ours or other in known or not other):
                continue
            if other in position and position[other] >= position[ours]:
                continue  # computed after the Conv (the main path of a downsampling block)
            a, b = shapes.get(other), shapes.get(ours)
            if a is not None and b is not None and (len(a) != len(b) or any(
                    i > 0 and p is not None and q is not None and p != q for i, (p, q) in enumerate(zip(a, b)))):
                continue  # a broadcast
            conv.inputs = [conv.input(0), conv.input(1), conv.input(2), other]
            conv.residual, conv.activation, conv.outputs = add, add.activation, list(add.outputs)
            conv.fused += [add, *add.fused]
            merged.add(id(add))
            break


# ----- operator handlers: each plans one node (layouts, constants) and emits its step -------------


def _ints(node: _Node, name: str, rank: int, default: int) -> Tuple[int, ...]:
    value = node.attrs.get(name)
    if value is None:
        return (default,) * rank
    if len(value) != rank:
        raise _refuse(node, name, value, f"{rank} values, one per spatial axis")
    return tuple(int(v) for v in value)


def _window_pads(p: _Planner, node: _Node, x: str, kernel: Sequence[int], stride: Sequence[int],
                 dilation: Sequence[int]) -> Any:
    """Explicit (before, after) pads per axis, or "same" (SAME_UPPER), from pads / auto_pad."""
    rank = len(kernel)
    mode = node.attrs.get("auto_pad", "NOTSET")
    if mode in ("NOTSET", ""):
        pads = node.attrs.get("pads", [0] * (2 * rank))
        if len(pads) != 2 * rank or min(pads) < 0:
            raise _refuse(node, "pads", pads, f"{2 * rank} non-negative values (begins, then ends)")
        return tuple((int(pads[i]), int(pads[rank + i])) for i in range(rank))
    if mode == "VALID":
        return tuple((0, 0) for _ in range(rank))
    if mode == "SAME_UPPER":
        return "same"
    if mode == "SAME_LOWER":
        shape = p.shapes.get(x)
        if shape is None or any(d is None for d in shape[2:]):
            raise _refuse(node, "auto_pad", mode, "SAME_LOWER only with spatial sizes known at load; "
                                                  "NOTSET, VALID, SAME_UPPER")
        sizes = [int(i) for i in shape[2:] if i is not None]
        pairs = [_args.same_padding(i, k, s, d) for i, k, s, d in zip(sizes, kernel, stride, dilation)]
        return tuple((after, before) for before, after in pairs)  # the odd pixel before
    raise _refuse(node, "auto_pad", mode, "NOTSET, VALID, SAME_UPPER, SAME_LOWER")


_CONV_LAYERS = {1: Conv1d, 2: Conv2d, 3: Conv3d}
_TRANSPOSE_LAYERS = {1: ConvTranspose1d, 2: ConvTranspose2d, 3: ConvTranspose3d}


def _folded_batch_norm(p: _Planner, bn: _Node, channels: int) -> Tuple[np.ndarray, np.ndarray]:
    """(scale, shift) per channel of an inference BatchNormalization."""
    gamma, beta, mean, var = (p.const(bn, i, what).astype(np.float64)
                              for i, what in ((1, "scale"), (2, "bias"), (3, "mean"), (4, "var")))
    if bn.attrs.get("training_mode", 0):
        raise _refuse(bn, "training_mode", 1, "0 (inference)")
    if bn.attrs.get("spatial", 1) != 1:
        raise _refuse(bn, "spatial", bn.attrs["spatial"], "1")
    if any(a.shape != (channels,) for a in (gamma, beta, mean, var)):
        raise ModelError(f"{bn.where()}: scale, bias, mean and var must have shape ({channels},) for {channels} "
                         f"channels, got {[a.shape for a in (gamma, beta, mean, var)]}")
    scale = gamma / np.sqrt(var + bn.attrs.get("epsilon", 1e-5))
    return scale, beta - mean * scale


def _window(node: _Node, w: np.ndarray) -> Tuple[int, Tuple[int, ...], Tuple[int, ...], Tuple[int, ...], int]:
    """(rank, kernel, stride, dilation, group) of a convolution node with weight w, checked
    (Conv, ConvTranspose, QLinearConv)."""
    rank = w.ndim - 2
    if rank not in (1, 2, 3):
        raise ModelError(f"{node.where()}: a {w.ndim}-D weight is not supported; supported: 3-D to 5-D "
                         f"(1 to 3 spatial axes)")
    kernel = tuple(int(k) for k in w.shape[2:])
    if tuple(node.attrs.get("kernel_shape", kernel)) != kernel:
        raise _refuse(node, "kernel_shape", node.attrs["kernel_shape"], f"the weight's kernel {kernel}")
    return (rank, kernel, _ints(node, "strides", rank, 1), _ints(node, "dilations", rank, 1),
            int(node.attrs.get("group", 1)))


def _conv(p: _Planner, node: _Node) -> None:
    transposed = node.op == "ConvTranspose"
    x = node.input(0)
    w = p.const(node, 1, "weight")
    rank, kernel, stride, dilation, group = _window(node, w)
    bias = p.optional_const(node, 2, "bias")
    in_channels = w.shape[0] if transposed else w.shape[1] * group
    out_channels = w.shape[1] * group if transposed else w.shape[0]
    shape = p.shapes.get(x)
    if shape is not None and len(shape) != rank + 2:
        raise ModelError(f"{node.where()}: input {x!r} is {len(shape)}-D, the {w.ndim}-D weight needs "
                         f"{rank + 2}-D input")
    if shape is not None and shape[1] is not None and shape[1] != in_channels:
        raise ModelError(f"{node.where()}: shape mismatch: input {x!r} has {shape[1]} channels, the weight "
                         f"{w.shape} with group={group} takes {in_channels}")
    b = np.zeros(out_channels) if bias is None else bias.astype(np.float64)
    if node.bn is not None:  # (folded in float64; without it the weights go to the layer as they are)
        w = w.astype(np.float64)
        scale, shift = _folded_batch_norm(p, node.bn, out_channels)
        if transposed:  # weight (C, K/group, ...): output channel g*K/group + j is w[group g's rows, j]
            wg = w.reshape(group, w.shape[0] // group, w.shape[1], *kernel)
            w = (wg * scale.reshape(group, 1, -1, *[1] * rank)).reshape(w.shape)
        else:
            w = w * scale.reshape(-1, *[1] * (rank + 1))
        b = b * scale + shift
        bias = b
    layout = _layout_word(channels_last(rank + 2))
    perm = channels_last(rank + 2)
    residual = node.input(3) if node.residual is not None else ""
    # The residual is added in the convolution where it is a float32 value of the output's
    # shape; anything else (a broadcast, another dtype) runs as the convolution, then the add.
    fused_add = bool(residual) and p.dtype == np.float32 and not p.compute_dtype and not transposed
    if fused_add:
        r_shape, y_shape = p.shapes.get(residual), p.shapes.get(node.outputs[0])
        fused_add = r_shape is not None and y_shape is not None and None not in r_shape[1:] and \
            tuple(r_shape[1:]) == tuple(y_shape[1:])
    kwargs: Dict[str, Any] = dict(stride=stride, dilation=dilation, groups=group, layout=layout,
                                  activation=node.activation if fused_add or not residual else None)
    weight = w.astype(p.dtype, copy=False)
    if transposed:
        if "output_shape" in node.attrs:
            raise _refuse(node, "output_shape", node.attrs["output_shape"], "pads and output_padding")
        mode = node.attrs.get("auto_pad", "NOTSET")
        if mode not in ("NOTSET", "", "VALID"):
            raise _refuse(node, "auto_pad", mode, "NOTSET, VALID")
        kwargs["padding"] = _window_pads(p, node, x, kernel, stride, dilation)
        kwargs["output_padding"] = _ints(node, "output_padding", rank, 0)
        layer: Any = _TRANSPOSE_LAYERS[rank](weight, None if bias is None else b.astype(p.dtype),
                                             compute_dtype=p.compute_dtype, **kwargs)
    else:
        kwargs["padding"] = _window_pads(p, node, x, kernel, stride, dilation)
        layer = _CONV_LAYERS[rank](weight, None if bias is None else b.astype(p.dtype),
                                   precision=p.precision, compute_dtype=p.compute_dtype, **kwargs)
    if node.bn is None:
        p.hold(node.input(1), layer, "weight", weight)
        if node.input(2):
            p.hold(node.input(2), layer, "bias")
    p.release(node, 1)
    out_name, pads = node.outputs[0], kwargs["padding"]
    if not transposed and isinstance(pads, tuple) and shape is not None and None not in shape[2:] and \
            None in p.shapes.get(out_name, (None, None))[1:]:
        # The sizes inference left open (after ShuffleNetV2's Reshape to a computed shape) from
        # the input's: emit() would find them by running the layer on zeros at batch 1 and 2
        # (1.5 s of ShuffleNetV2's load).
        sizes = [int(_native.conv_output_size(int(i), k, s, d, lo, hi))
                 for i, k, s, d, (lo, hi) in zip(shape[2:], kernel, stride, dilation, pads)]
        if min(sizes) > 0:
            p.shapes[out_name] = (shape[0], out_channels, *sizes)
    xin = p.value_in(x, perm)
    threads = p.threads
    direct = None if transposed else layer._float_forward()

    def fn(x: np.ndarray, out: Optional[np.ndarray] = None) -> Tuple[np.ndarray]:
        if direct is not None and _tuning._mode == "off":
            x = _contiguous(x, threads or 0)
            y = direct(x, out, threads or 0, None, _program())
            if y is not None:
                return (y,)
        if transposed:
            x = _contiguous(x, threads or 0)
            program = _program()
            before = 0 if program is None else len(program)
            into_slice = out is not None and not out.flags.c_contiguous  # its channels of a Concat's result
            y = layer._forward(x, None if into_slice else out, threads, program)
            if program is not None and len(program) == before:
                _unrecorded("a transposed convolution through its layer's Python path")
            if into_slice:
                _copy_into(y, out, threads or 0)
                return (out,)
            return (y,)
        # A strided view (a Split or Slice of the channels) misses the layer's planned path,
        # which costs more than the copy (tuning.md, "Whole networks").
        _unrecorded("a convolution through its layer's Python path")
        return (layer(_netops.contiguous(x), out, num_threads=threads),)

    relu_after = node.activation == "relu"  # (the only activation a fused Add brings)
    unfused: List[Any] = []  # a fused Add's layer without the activation, for a residual of another batch
    precision = p.precision

    def fn_residual(x: np.ndarray, r: np.ndarray, out: Optional[np.ndarray] = None) -> Tuple[np.ndarray]:
        if direct is not None and fused_add and _tuning._mode == "off":
            y = direct(x, out, threads or 0, r, _program())  # (None where out overlaps r, among others)
            if y is not None:
                return (y,)
        _unrecorded("a convolution with a residual through its layer's Python path")
        x = _netops.contiguous(x)
        if fused_add and r.shape[0] == x.shape[0] and r.dtype == np.float32:
            if out is not None and np.may_share_memory(out, r):
                out = None  # (the kernels keep partial sums in the output)
            return (layer(x, out, num_threads=threads, residual=_netops.contiguous(r)),)
        conv = layer
        if fused_add:  # the layer applies the activation, which must come after the add
            if not unfused:
                # (from the layer's float32 arrays: the float64 folded weights are not kept past loading)
                unfused.append(_CONV_LAYERS[rank](layer.weight, layer.bias, precision=precision,
                                                  **{**kwargs, "activation": None}))
            conv = unfused[0]
        total = np.add(conv(x, out, num_threads=threads), r)
        return (np.maximum(total, 0, out=total) if relu_after else total,)

    parts = [f"{type(layer).__name__} {'x'.join(map(str, kernel))}"
             + (f" stride {'x'.join(map(str, stride))}" if max(stride) > 1 else "")
             + (f" dilation {'x'.join(map(str, dilation))}" if max(dilation) > 1 else "")
             + (f" groups {group}" if group > 1 else "")]
    if node.bn is not None:
        parts.append(f"BatchNormalization {node.bn.name!r} folded into the weights")
    if residual:
        add_name = node.residual.name  # type: ignore[union-attr]
        parts.append(f"residual Add {add_name!r} fused" if fused_add else f"then residual Add {add_name!r} (NumPy)")
    if node.activation:
        act = node.activation
        parts.append(f"activation {_activation_word(act)} fused"
                     + (" (after the residual)" if residual else ""))
    if p.compute_dtype:
        parts.append(f"computed in {p.compute_dtype}")
    extra: Dict[str, Any] = {"layer": layer}
    in_shape = p.stored_shape(xin)
    if not transposed and in_shape is not None:
        try:
            info = layer.explain(in_shape)
            extra["algorithm"] = info["algorithm"]
            if fused_add:  # the kernel adds it as it stores, or the driver right after its stores
                k = next(i for i, part in enumerate(parts) if part.startswith("residual Add"))
                parts[k] += " in the kernel's stores" if info["fuses_residual"] else " after the kernel's stores"
        except ValueError:
            pass
    if residual:
        rin = p.value_in(residual, perm)
        p.emit(node, fn_residual, [xin, rin], [perm], "; ".join(parts), writes=_INTO_BUFFER, **extra)
        return
    p.emit(node, fn, [xin], [perm], "; ".join(parts), writes=_INTO_BUFFER, **extra)


def _unary(fn: Callable[..., np.ndarray], *attr_defaults: Tuple[str, float],
           in_place: bool = False) -> Callable[[_Planner, _Node], None]:
    """A handler for an elementwise operator of one input: it keeps the input's layout.
    in_place: fn takes out= (and may write over its input when the input dies there)."""

    def handler(p: _Planner, node: _Node) -> None:
        args = [float(node.attrs.get(name, default)) for name, default in attr_defaults]
        x = node.input(0)
        if in_place:
            p.emit(node, lambda v, out=None: (fn(v, *args, out=out),), [x], [p.layout[x]], f"NumPy {node.op.lower()}",
                   writes=_IN_PLACE)
        else:
            p.emit(node, lambda v: (fn(v, *args),), [x], [p.layout[x]], f"NumPy {node.op.lower()}")

    return handler


def _clip(p: _Planner, node: _Node) -> None:
    x = node.input(0)
    if p.opset < 11:
        low, high = node.attrs.get("min"), node.attrs.get("max")
        p.emit(node, lambda v: (_netops.clip(v, low, high),), [x], [p.layout[x]], "NumPy clip")
        return
    bounds = [node.input(1), node.input(2)]
    fn = lambda v, lo, hi: (_netops.clip(v, None if lo is None else lo.item(), None if hi is None else hi.item()),)  # noqa: E731
    p.emit(node, fn, [x, *bounds], [p.layout[x]], "NumPy clip")


_BINARY: Dict[str, Callable[..., np.ndarray]] = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply,
                                                  "Div": _netops.divide, "PRelu": _netops.prelu}


def _broadcasting(p: _Planner, node: _Node) -> None:
    ins, perm = p.broadcast_inputs(node.inputs)
    op: Callable[..., np.ndarray] = np.add if node.op == "Sum" else _BINARY[node.op]
    relu = node.activation == "relu"  # (an Add's only reader, fused)
    threads = p.threads or 0  # the network's threads (0: cppconv's setting)

    def fn(*xs: np.ndarray, out: Optional[np.ndarray] = None) -> Tuple[np.ndarray]:
        if len(xs) == 1:
            return (xs[0],)
        a, b = xs[0], xs[1]
        if (node.op == "Add" and len(xs) == 2 and a.shape == b.shape and a.dtype == b.dtype == np.float32
                and a.flags.c_contiguous and b.flags.c_contiguous):  # a residual: one native pass
            y = np.empty_like(a) if out is None else out
            _native.add(a, b, y, relu, threads, _program())
            return (y,)
        if node.op == "Mul" and len(xs) == 2:  # a squeeze-and-excitation gate: one native pass
            gated = _netops.gate_channels(a, b, out, threads, _program())
            if gated is not None:
                return (gated,)
        total = op(a, b) if out is None else op(a, b, out=out)
        for v in xs[2:]:
            total = op(total, v, out=total)  # the first sum is this step's own array
        return (np.maximum(total, 0, out=total) if relu else total,)

    in_place = _IN_PLACE if node.op != "PRelu" and (node.op != "Div" or p.dtype.kind == "f") else _RETURNS
    how = {"Add": "cppconv add where the shapes agree, else NumPy's",
           "Mul": "cppconv channel scale for a per-image channel gate, else NumPy's multiply"}.get(
        node.op, f"NumPy {node.op.lower()}")
    p.emit(node, fn, ins, [perm], how + " (broadcasting)" + ("; Relu fused" if relu else ""), writes=in_place)


def _batch_norm(p: _Planner, node: _Node) -> None:
    x = node.input(0)
    channels = p.const(node, 1, "scale").shape[0]
    scale, shift = _folded_batch_norm(p, node, channels)
    rank = p.rank(x)
    if rank is None:
        raise ModelError(f"{node.where()}: the rank of {x!r} is not known at load")
    ax = p.axis(node, x, 1)
    shape = [1] * rank
    shape[ax] = channels
    relu = node.activation == "relu"
    if p.dtype == np.float32:  # one native pass, the Relu after it included
        s32, t32 = np.ascontiguousarray(scale, np.float32), np.ascontiguousarray(shift, np.float32)
        threads = p.threads or 0  # the network's threads (0: cppconv's setting)

        def fn(v: np.ndarray, out: Optional[np.ndarray] = None) -> Tuple[np.ndarray]:
            given, v = v, np.ascontiguousarray(v, np.float32)
            if v is not given:
                _unrecorded("a BatchNormalization's input copied in Python")
            y = np.empty_like(v) if out is None else out
            _native.channel_affine(v, s32, t32, y, *_args.axis_rows(v.shape, ax, channels), relu, threads, _program())
            return (y,)

        p.emit(node, fn, [x], [p.layout[x]], "cppconv per-channel scale and shift" + ("; Relu fused" if relu else ""),
               writes=_IN_PLACE)
        return
    s, t = scale.astype(p.dtype).reshape(shape), shift.astype(p.dtype).reshape(shape)

    def numpy_fn(v: np.ndarray, out: Optional[np.ndarray] = None) -> Tuple[np.ndarray]:
        y = _netops.batch_norm(v, s, t, out=out)
        return (np.maximum(y, 0, out=y) if relu else y,)

    p.emit(node, numpy_fn, [x], [p.layout[x]], "NumPy per-channel scale and shift" + ("; Relu fused" if relu else ""),
           writes=_IN_PLACE)


def _pool(p: _Planner, node: _Node) -> None:
    x = node.input(0)
    if len([o for o in node.outputs if o]) > 1:
        raise ModelError(f"{node.where()}: the Indices output is not supported; supported: the pooled values only")
    kernel = tuple(int(k) for k in node.attrs.get("kernel_shape", ()))
    rank = len(kernel)
    if rank not in (1, 2, 3):
        raise _refuse(node, "kernel_shape", node.attrs.get("kernel_shape"), "1 to 3 sizes")
    if node.attrs.get("storage_order", 0):
        raise _refuse(node, "storage_order", node.attrs["storage_order"], "0 (row major)")
    stride = _ints(node, "strides", rank, 1)
    dilation = _ints(node, "dilations", rank, 1)
    pads = _window_pads(p, node, x, kernel, stride, dilation)
    ceil_mode = bool(node.attrs.get("ceil_mode", 0))
    include_pad = bool(node.attrs.get("count_include_pad", 0))
    kind = "max" if node.op == "MaxPool" else "avg"
    perm = channels_last(rank + 2)
    xin = p.value_in(x, perm)
    # cppconv's pools take PyTorch's padding (at most half the kernel) and no dilation when
    # averaging; ONNX allows more: those run in NumPy.
    fits = pads == "same" or all(max(pair) <= k // 2 for pair, k in zip(pads, kernel))
    if fits and (kind == "max" or max(dilation) == 1):
        layout, threads = _layout_word(perm), p.threads
        pool = _POOLS[kind][rank]
        spec = _pooling._PoolSpec(_pooling._MAX if kind == "max" else _pooling._AVG, kernel, stride, pads,
                               dilation if kind == "max" else 1, ceil_mode, include_pad, None, layout, rank)

        def fn(v: np.ndarray, out: Optional[np.ndarray] = None) -> Tuple[np.ndarray]:
            if kind == "max" and v.dtype in (np.uint8, np.int8):
                recorded = _max_pool_8_bit(spec, v, out, threads or 0)
                if recorded is not None:
                    return (recorded,)
            return (_pooling._run_pool(spec, v, out, num_threads=threads, program=_program()),)
        fused = ", ".join(f.op for f in node.fused)
        on_8_bit = f" on the 8-bit values (QDQ group fused: {fused})" if fused else ""
        # (into its part of the arena: GoogLeNet's 13 pools' results were arrays a recorded program kept apart)
        p.emit(node, fn, [xin], [perm], f"cppconv {pool.__name__} {'x'.join(map(str, kernel))}{on_8_bit}",
               writes=_INTO_BUFFER)
        return
    if pads == "same":
        raise _refuse(node, "auto_pad", "SAME_UPPER", "NOTSET, VALID with pads over half the kernel or dilated "
                                                      "average pooling")
    flat = [b for b, _ in pads] + [a for _, a in pads]
    fn = lambda v: (_netops.pool_nd(v, kind, kernel, stride, flat, dilation, ceil_mode, include_pad),)  # noqa: E731
    p.emit(node, fn, [xin], [perm], f"NumPy {kind} pool {'x'.join(map(str, kernel))}")


_UNIT_SCALE, _ZERO_POINT = np.ones(1, np.float32), np.zeros(1, np.int32)


def _max_pool_8_bit(spec: Any, v: np.ndarray, out: Optional[np.ndarray], threads: int) -> Optional[np.ndarray]:
    """The max pool of 8-bit values as three native passes a network's program records (the
    pool's own path widens them in NumPy, which kept QDQ networks on the Python loop): widened to
    float32, pooled, narrowed back, each exact (the maxima are codes).  None where v or out is not
    a C-contiguous array of v's dtype: the pool's own path then."""
    if not v.flags.c_contiguous or (out is not None and (out.dtype != v.dtype or not out.flags.c_contiguous)):
        return None
    program = _program()
    wide = np.empty(v.shape, np.float32)
    _native.dequantize_linear(v, _UNIT_SCALE, _ZERO_POINT, wide, *_args.axis_rows(v.shape, None, 1), threads, program)
    pooled = _pooling._run_pool(spec, wide, None, num_threads=threads or None, program=program)
    if out is not None and out.shape != pooled.shape:  # (not the planned shape: recorded steps must not replay)
        _unrecorded("an 8-bit max pool into an array of another shape")
        return None
    y = np.empty(pooled.shape, v.dtype) if out is None else out
    info = np.iinfo(v.dtype)
    _native.quantize_linear(pooled, _UNIT_SCALE, _ZERO_POINT, y, *_args.axis_rows(pooled.shape, None, 1),
                            int(info.min), int(info.max), num_threads=threads, program=program)
    return y


_POOLS: Dict[str, Dict[int, Callable[..., Any]]] = {
    "max": {1: max_pool1d, 2: max_pool2d, 3: max_pool3d},
    "avg": {1: avg_pool1d, 2: avg_pool2d, 3: avg_pool3d},
}
_GLOBAL_AVERAGE: Dict[int, Callable[..., np.ndarray]] = {3: global_avg_pool1d, 4: global_avg_pool2d,
                                                         5: global_avg_pool3d}


def _global_pool(p: _Planner, node: _Node) -> None:
    x = node.input(0)
    rank = p.rank(x)
    if rank is None or rank < 3:
        raise ModelError(f"{node.where()}: input {x!r} must be 3-D to 5-D with its rank known at load")
    perm = channels_last(rank)
    xin = p.value_in(x, perm)
    axes = tuple(range(1, rank - 1))
    if node.op == "GlobalAveragePool" and rank in _GLOBAL_AVERAGE:
        pool, layout, threads = _GLOBAL_AVERAGE[rank], _layout_word(perm), p.threads

        def fn(v: np.ndarray) -> Tuple[np.ndarray]:
            y = _pooling._global_average_batch(v, layout, threads or 0, _program())
            return (pool(v, layout=layout, num_threads=threads) if y is None else y,)
        word = f"cppconv {pool.__name__}"
    else:
        reduce = np.mean if node.op == "GlobalAveragePool" else np.max
        fn = lambda v: (reduce(v, axis=axes, keepdims=True),)  # noqa: E731
        word = f"NumPy {reduce.__name__} over the spatial axes"
    p.emit(node, fn, [xin], [perm], word)


def _concat(p: _Planner, node: _Node) -> None:
    # Channels-last when any input is (the others are converted), so a branch stays in layout.
    perm = next((p.layout[n] for n in node.inputs if p.layout[n] is not None), None)
    if perm is not None and {p.rank(n) for n in node.inputs} != {len(perm)}:
        perm = None
    ins = [p.value_in(n, perm) for n in node.inputs]
    axis = p.axis(node, ins[0], int(node.attrs.get("axis", 1 if p.opset < 4 else 0)))
    if perm == channels_last(4) and axis == 3 and _concat_in_place(p, node, ins, perm):
        return
    threads = p.threads or 0

    def concat(*xs: np.ndarray) -> Tuple[np.ndarray]:
        if (len({x.dtype for x in xs}) != 1 or not 0 <= axis < xs[0].ndim
                or len({x.shape[:axis] + x.shape[axis + 1:] for x in xs}) != 1 or len({x.ndim for x in xs}) != 1):
            return (np.concatenate(xs, axis=axis),)  # (NumPy's promotion and errors)
        y = np.empty(xs[0].shape[:axis] + (sum(x.shape[axis] for x in xs),) + xs[0].shape[axis + 1:], xs[0].dtype)
        start = 0
        for x in xs:  # (a recorded native copy each, so the network stays one native call)
            _copy_into(x, y[(slice(None),) * axis + (slice(start, start + x.shape[axis]),)], threads)
            start += x.shape[axis]
        return (y,)

    p.emit(node, concat, ins, [perm], "cppconv copies into the result")


def _concat_in_place(p: _Planner, node: _Node, ins: List[str], perm: Tuple[int, ...]) -> bool:
    """A Concat of NHWC values along the channels whose inputs include convolutions read by it
    alone: those write their outputs straight into their channels of the Concat's result (the
    layer's run into a channel slice), which a step allocates before the first of them runs;
    the Concat copies in only the other inputs.  False (nothing planned) where no input
    qualifies or the channel counts are not known at load."""
    out = node.outputs[0]
    if any(r.op == "Reshape" for r in p.readers[out]):
        return False  # a channel shuffle after it interleaves the inputs instead (_shuffled_concat)
    p.layout[out] = perm  # (as emit would set it: the shape below is the stored one)
    shape = p.stored_shape(out)
    widths = [(p.stored_shape(i) or (None,))[-1] for i in ins]
    if shape is None or None in widths or sum(widths) != shape[-1] or len(set(ins)) != len(ins):  # type: ignore[arg-type]
        return False
    producer = {o: k for k, s in enumerate(p.steps) for o in s.outs}
    graph_outputs = set(p.output_names)
    fused = [i for i in ins if i in producer and p.steps[producer[i]].writes == _INTO_BUFFER
             and len(p.steps[producer[i]].ins) == 1 and "layer" in p.steps[producer[i]].row
             and len(p.readers[i]) == 1 and i not in graph_outputs]
    if not fused:
        return False
    starts = dict(zip(ins, np.cumsum([0, *widths[:-1]]).tolist()))
    bounds = {i: (int(starts[i]), int(starts[i]) + int(w)) for i, w in zip(ins, widths)}  # type: ignore[arg-type]
    buffer = f"{out}@concat buffer"
    p.shapes[buffer] = p.shapes.get(out)  # type: ignore[assignment]
    p.layout[buffer] = perm
    dtype = p.dtypes.get(out, p.dtype)  # (8-bit where the Concat runs on quantized values)

    for name in fused:
        step = p.steps[producer[name]]
        c0, c1 = bounds[name]

        def into_slice(buf: np.ndarray, x: np.ndarray, run: Callable[..., Tuple[Any, ...]] = step.fn, c0: int = c0,
                       c1: int = c1) -> Tuple[Any, ...]:
            return run(x, buf[..., c0:c1])

        step.fn, step.ins, step.view, step.writes = into_slice, [buffer, step.ins[0]], True, _RETURNS
        step.row["became"] += f"; written into channels {c0}:{c1} of the result of Concat {node.name!r}"
    first = min(producer[name] for name in fused)
    sizes = tuple(shape[1:])

    def allocate(x: np.ndarray, spare: Optional[np.ndarray] = None) -> Tuple[np.ndarray]:
        return (spare if spare is not None else np.empty((x.shape[0], *sizes), dtype),)

    row = {"node": buffer, "op": "(buffer)", "became": f"the result of Concat {node.name!r}, allocated before "
           f"{len(fused)} of its {len(ins)} inputs are written into it", "layout": _layout_word(perm)}
    p.rows.insert(next(k for k, r in enumerate(p.rows) if r is p.steps[first].row), row)
    p.steps.insert(first, _Step(allocate, [p.steps[first].ins[1]], [buffer], False, row, _INTO_BUFFER,
                                role=_ALLOCATES))
    copied = {i: bounds[i] for i in ins if i not in fused}
    threads = p.threads or 0

    def concat(buf: np.ndarray, *parts: np.ndarray) -> Tuple[np.ndarray]:
        for name, part in zip(ins, parts):
            if name in copied:
                c0, c1 = copied[name]
                _copy_into(part, buf[..., c0:c1], threads)
        return (buf,)

    p.emit(node, concat, [buffer, *ins], [perm], f"copies {len(copied)} of {len(ins)} inputs into the result "
           f"(the others were written there)")
    p.steps[-1].view = True  # the result is the buffer
    if not copied:
        p.steps[-1].role = _VIEWS_INPUT
    return True


def _split(p: _Planner, node: _Node) -> None:
    x = node.input(0)
    perm = p.layout[x]
    axis = p.axis(node, x, int(node.attrs.get("axis", 0)))
    parts = len(node.outputs)
    if node.input(1):
        sizes: Optional[List[int]] = [int(s) for s in p.const(node, 1, "split")]
    else:
        sizes = [int(s) for s in node.attrs["split"]] if "split" in node.attrs else None

    def fn(v: np.ndarray) -> Tuple[np.ndarray, ...]:
        return _netops.split(v, axis, sizes if sizes is not None else _netops.even_split_sizes(v.shape[axis], parts))

    p.emit(node, fn, [x], [perm] * parts, "NumPy split (views)")


def _slice(p: _Planner, node: _Node) -> None:
    x = node.input(0)
    if p.opset < 10:
        starts, ends = node.attrs["starts"], node.attrs["ends"]
        axes = node.attrs.get("axes", list(range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts, ends = p.const(node, 1, "starts"), p.const(node, 2, "ends")
        axes = p.const(node, 3, "axes") if node.input(3) else list(range(len(starts)))
        steps = list(p.const(node, 4, "steps")) if node.input(4) else [1] * len(starts)
    stored = [p.axis(node, x, int(a)) for a in axes]
    args = ([int(s) for s in starts], [int(e) for e in ends], stored, [int(s) for s in steps])
    readers = p.readers.get(node.outputs[0], [])
    if p.layout[x] is not None and stored == [p.rank(x) - 1] and readers and all(r.op == "Conv" for r in readers) \
            and node.outputs[0] not in p.output_names:
        # Channels of a channels-last value (ShuffleNet's split), read by convolutions: they
        # would copy the strided view first (_contiguous); copied here instead, into the
        # slice's part of the arena, and not into memory a recorded program keeps apart.
        threads = p.threads or 0

        def copy(v: np.ndarray, out: Optional[np.ndarray] = None) -> Tuple[np.ndarray]:
            part = _netops.slice_array(v, *args)
            # (A copy even where the part is contiguous, all the channels: the step is planned
            # as writing its own buffer, view=False, and its output must not alias x.)
            out = np.empty(part.shape, part.dtype) if out is None else out
            _copy_into(part, out, threads)
            return (out,)

        p.emit(node, copy, [x], [p.layout[x]], "a contiguous copy of the channels (the convolutions reading "
               "them take their planned paths)", writes=_INTO_BUFFER, view=False)
        return
    p.emit(node, lambda v: (_netops.slice_array(v, *args),), [x], [p.layout[x]], "NumPy slice (a view)")


def _plain(p: _Planner, node: _Node, fn: Callable[..., Tuple[Any, ...]], became: str) -> None:
    """A node that computes on its inputs as ONNX orders their axes."""
    ins = [p.value_in(n, None) if n else n for n in node.inputs]
    p.emit(node, fn, ins, [None] * len(node.outputs), became)


def _flatten(p: _Planner, node: _Node) -> None:
    axis = int(node.attrs.get("axis", 1))
    x = node.input(0)
    shape = p.shapes.get(x)
    if p.layout[x] is not None and axis == 1 and shape is not None and all(d == 1 for d in shape[2:]):
        # (N, C, 1, 1) after a global pool: channels-last holds the same numbers in the same order.
        p.emit(node, lambda v: (_netops.flatten(v, 1),), [x], [None], "NumPy reshape (no layout change needed)")
        return

    def fn(v: np.ndarray) -> Tuple[np.ndarray]:
        return (_netops.flatten(v, axis % v.ndim if v.ndim else 0),)

    _plain(p, node, fn, "NumPy reshape")


def _reshape(p: _Planner, node: _Node) -> None:
    allowzero = bool(node.attrs.get("allowzero", 0))
    x = node.input(0)
    have = p.layout[x]
    perm = _reshape_layout(p, x, node.input(1), allowzero) if have is not None else None
    if perm is None:
        _plain(p, node, lambda v, s: (_netops.reshape(v, _netops.reshape_target(v.shape, s, allowzero)),),
               "NumPy reshape")
        return
    back = _inverse(have)  # type: ignore[arg-type]
    threads = p.threads or 0
    target, ins = node.input(1), [x, node.input(1)]
    batch_target = _batch_scaled_target(p, x, target)
    if batch_target is not None:
        # The target is computed from the batch size (Shape, Gather, Unsqueeze, Concat): it is
        # found from the input's size instead, and those steps drop out of the plan.
        per_image, base, scaled = batch_target
        ins = [x]

    def fn(v: np.ndarray, s: Any = None) -> Tuple[np.ndarray]:
        if batch_target is not None:
            batch = v.size // per_image
            s = [t * batch if grows else t for t, grows in zip(base, scaled)]
        out = _netops.reshape_target(tuple(v.shape[b] for b in back), s, allowzero)
        # (a copy where the view cannot be reshaped, recorded: a channel shuffle's transposed
        # 8-bit values, which _shuffled_concat leaves to it where a QuantizeLinear follows the Concat)
        program = _program()
        before = 0 if program is None else len(program)
        y = _netops.reshape(v, [out[a] for a in perm], threads, program)
        if program is not None and not np.may_share_memory(y, v) and len(program) == before:
            _unrecorded("a copy in NumPy")
        return (y,)

    out_perm = None if perm == tuple(range(len(perm))) else perm
    shuffled = _shuffled_concat(p, node, fn, ins, out_perm)
    if shuffled is not None:
        p.emit(node, shuffled[0], shuffled[1], [out_perm],
               "channel shuffle of the Concat before it: one interleaving copy of its inputs (the Concat, "
               "Reshape and Transpose between drop out)", writes=_INTO_BUFFER, view=False)
        return
    p.emit(node, fn, ins, [out_perm], f"NumPy reshape in layout {_layout_word(have)}")


def _copy_into(x: np.ndarray, y: np.ndarray, threads: int) -> None:
    """y[...] = x: one native copy (recorded into this thread's NetProgram) where x is an array of
    y's shape and dtype apart from it, else NumPy's assignment."""
    if not _netops.native_copy(x, y, threads, _program()):
        _unrecorded("a copy in NumPy")
        y[...] = x


def _contiguous(x: np.ndarray, threads: int) -> np.ndarray:
    """_netops.contiguous(x) (a strided view: a Split or Slice of the channels, which the kernels'
    planned paths do not take), its copy recorded into this thread's NetProgram or the
    recording marked as not replayable."""
    program = _program()
    before = 0 if program is None else len(program)
    y = _netops.contiguous(x, threads, program)
    if program is not None and y is not x and len(program) == before:
        _unrecorded("a copy in NumPy")
    return y


def _shuffled_concat(p: _Planner, node: _Node, fn: Callable[..., Tuple[Any, ...]], ins: List[str],
                     perm: Perm) -> Optional[Tuple[Callable[..., Tuple[Any, ...]], List[str]]]:
    """A channel shuffle after a Concat of g equal channels-last parts (ShuffleNet's Concat,
    Reshape (N, g, C/g, H, W), Transpose (0, 2, 1, 3, 4), and this Reshape (N, C, H, W)): a
    step that writes the parts' channels interleaved into the result, in place of copying them
    once to concatenate and again to shuffle.  The chain is recognised by its steps and then
    checked by running it and the interleave on numbered inputs at batch 1 and 2.  None where
    it does not apply."""
    producer = {o: s for s in p.steps for o in s.outs}
    chain = [producer.get(node.input(0))]
    for op in ("Transpose", "Reshape", "Concat"):
        if chain[-1] is None or chain[-1].row.get("op") != op or (op == "Concat" and not chain[-1].ins):
            return None
        chain.append(producer.get(chain[-1].ins[0]) if op != "Concat" else None)
    transpose, first_reshape, concat = chain[0], chain[1], chain[2]
    parts = concat.ins  # type: ignore[union-attr]
    if perm != channels_last(4) or len(parts) < 2 or any(p.layout.get(x) != perm for x in parts):
        return None
    sizes = [p.stored_shape(x, batch=1) for x in parts]
    if any(s is None or s != sizes[0] for s in sizes):
        return None
    g = len(parts)

    threads = p.threads or 0

    def interleave(*operands: Optional[np.ndarray]) -> Tuple[np.ndarray]:
        """The g parts interleaved, into the output given after them (its part of the arena)."""
        xs, out = operands[:g], operands[g] if len(operands) > g else None
        n, h, w, c = xs[0].shape  # type: ignore[union-attr]
        y = np.empty((n, h, w, c * g), xs[0].dtype) if out is None else out  # type: ignore[union-attr]
        lanes = y.reshape(n, h, w, c, g)
        for i, x in enumerate(xs):
            _copy_into(x, lanes[..., i], threads)
        return (y,)

    def value(name: str, b: int, env: Dict[str, Any]) -> Any:
        if name in env:
            return env[name]
        if name == "" or name in p.consts:
            return p.consts.get(name)
        return p.probes[name][b] if name in p.probes else None

    for b, batch in enumerate((1, 2)):
        env: Dict[str, Any] = {}
        shape = (batch, *sizes[0][1:])  # type: ignore[index]
        count = int(np.prod(shape, dtype=np.int64))
        for k, x in enumerate(parts):  # every value distinct (float64: exact integers)
            env[x] = np.arange(k * count, (k + 1) * count, dtype=np.float64).reshape(shape)
        try:
            for step in (concat, first_reshape, transpose):
                results = step.fn(*[value(i, b, env) for i in step.ins])  # type: ignore[union-attr]
                env.update(zip(step.outs, results))  # type: ignore[union-attr]
            want = fn(*[value(i, b, env) for i in ins])[0]
        except Exception:  # noqa: BLE001 - a chain that numbered inputs do not suit: not fused
            return None
        got = interleave(*[env[x] for x in parts])[0]
        if want.shape != got.shape or not np.array_equal(want, got):
            return None
    return interleave, list(parts)


def _batch_scaled_target(p: _Planner, x: str, target: str) -> Optional[Tuple[int, List[int], List[bool]]]:
    """A Reshape target computed at run time whose values are constants or the batch size
    times a constant (the probes at batch 1 and 2 say which): (x's size per image, the values
    at batch 1, which of them scale with the batch).  None otherwise."""
    probes = p.probes.get(target)
    shape = p.stored_shape(x, batch=1)
    if target in p.consts or probes is None or shape is None or 0 in shape:
        return None
    one, two = (np.asarray(t, np.int64).ravel() for t in probes)
    if one.shape != two.shape:
        return None
    scaled = one != two
    if not np.array_equal(two[scaled], 2 * one[scaled]):
        return None
    return int(np.prod(shape, dtype=np.int64)), [int(t) for t in one], [bool(g) for g in scaled]


def _reshape_layout(p: _Planner, x: str, target: str, allowzero: bool) -> Optional[Tuple[int, ...]]:
    """The layout of a Reshape's output when it can run on x as stored, without converting to
    ONNX's order: each run of input axes the reshape merges or splits lies together, in order,
    in the stored layout (ShuffleNet's channel shuffle splits and merges only the channels of
    an NHWC value).  None when it cannot, or when the sizes are not known at load."""
    shape, have = p.shapes.get(x), p.layout[x]
    values = (p.consts[target],) * 2 if target in p.consts else p.probes.get(target)
    if shape is None or have is None or values is None or any(d is None for d in shape[1:]):
        return None
    groupings = []
    for batch, t in zip((1, 2), values):
        sizes = [batch if i == 0 else int(d) for i, d in enumerate(shape)]  # type: ignore[arg-type]
        out = list(_netops.reshape_target(sizes, [int(v) for v in np.ravel(t)], allowzero))
        if out.count(-1) == 1:
            known = int(np.prod([d for d in out if d != -1]))
            out[out.index(-1)] = int(np.prod(sizes)) // max(known, 1)
        groupings.append(_reshape_groups(sizes, out))
    if groupings[0] is None or groupings[0] != groupings[1]:
        return None
    group_of = {a: g for g, (ins, _) in enumerate(groupings[0]) for a in ins}
    order: List[int] = []  # the groups in the order the stored layout holds them
    for j, a in enumerate(have):
        g = group_of[a]
        if order and order[-1] == g:
            if have[j - 1] != a - 1:  # a group's axes must be stored in their logical order
                return None
        elif g in order:
            return None
        else:
            order.append(g)
    return tuple(b for g in order for b in groupings[0][g][1])


def _reshape_groups(a: Sequence[int], b: Sequence[int]) -> Optional[List[Tuple[List[int], List[int]]]]:
    """The runs of axes of shape a that reshape into runs of axes of shape b (equal products),
    in order; None where the sizes do not pair up (or hold zeros)."""
    if int(np.prod(a)) != int(np.prod(b)) or 0 in a or 0 in b or not a or not b:
        return None
    groups, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        gi, gj, pi, pj = [i], [j], a[i], b[j]
        i, j = i + 1, j + 1
        while pi != pj:
            if pi < pj and i < len(a):
                gi.append(i)
                pi, i = pi * a[i], i + 1
            elif pj < pi and j < len(b):
                gj.append(j)
                pj, j = pj * b[j], j + 1
            else:
                return None
        groups.append((gi, gj))
    # Trailing axes of size 1 join the last run.
    groups[-1][0].extend(range(i, len(a)))
    groups[-1][1].extend(range(j, len(b)))
    return groups


def _transpose(p: _Planner, node: _Node) -> None:
    x = node.input(0)
    rank = p.rank(x)
    perm = node.attrs.get("perm")
    have = p.layout[x]
    if have is not None:
        # A view of the channels-last value, no conversion: in ONNX's order, or in x's own
        # layout, whichever reads the data in the more nearly sequential order (a channel
        # shuffle keeps NHWC; a final NCHW -> NHWC transpose is NHWC data in ONNX's order).
        logical = perm if perm is not None else list(range(rank - 1, -1, -1))  # type: ignore[operator]
        back = _inverse(have)
        plain = [back[a] for a in logical]
        kept = [back[logical[a]] for a in have]
        if len(logical) == len(have) and _inversions(kept) < _inversions(plain):
            p.emit(node, lambda v: (v.transpose(kept),), [x], [have],
                   f"NumPy transpose (a view, layout {_layout_word(have)})")
        else:
            p.emit(node, lambda v: (v.transpose(plain),), [x], [None],
                   "NumPy transpose (a view of the channels-last value)")
        return
    p.emit(node, lambda v: (v.transpose(perm),), [x], [None], "NumPy transpose (a view)")


def _inversions(order: Sequence[int]) -> int:
    return sum(order[i] > order[j] for i in range(len(order)) for j in range(i + 1, len(order)))


def _axes_input(p: _Planner, node: _Node) -> Optional[List[int]]:
    """The axes of Squeeze/Unsqueeze/ReduceMean: an attribute, or input 1 from opset 13/18."""
    if "axes" in node.attrs:
        return [int(a) for a in node.attrs["axes"]]
    if node.input(1):
        return [int(a) for a in p.const(node, 1, "axes")]
    return None


def _squeeze(p: _Planner, node: _Node) -> None:
    axes = _axes_input(p, node)

    def fn(v: np.ndarray, *_: Any) -> Tuple[np.ndarray]:
        return (np.squeeze(v, axis=None if axes is None else tuple(a % v.ndim for a in axes)),)

    p.emit(node, fn, [p.value_in(node.input(0), None)], [None], "NumPy squeeze (a view)")


def _unsqueeze(p: _Planner, node: _Node) -> None:
    axes = _axes_input(p, node)
    if axes is None:
        raise ModelError(f"{node.where()}: Unsqueeze needs axes")
    known = axes

    def fn(v: np.ndarray) -> Tuple[np.ndarray]:
        rank = v.ndim + len(known)
        return (np.expand_dims(v, tuple(sorted(a % rank for a in known))),)

    p.emit(node, fn, [p.value_in(node.input(0), None)], [None], "NumPy expand_dims (a view)")


def _is_fully_connected(node: _Node, consts: Dict[str, np.ndarray], rank: Callable[[str], Optional[int]]) -> bool:
    """Whether a Gemm or MatMul is a fully connected layer, which cppconv runs as a 1x1 Conv1d
    (_fully_connected): a constant 2-D B, a 2-D A not transposed, and for Gemm a C that is
    absent or constant with one value per output (or one for all)."""
    b = consts.get(node.input(1))
    if b is None or b.ndim != 2 or rank(node.input(0)) != 2:
        return False
    if node.op == "MatMul":
        return True
    if node.attrs.get("transA", 0):
        return False
    c_name = node.input(2)
    c = consts.get(c_name)
    out_features = b.shape[0 if node.attrs.get("transB", 0) else 1]
    # (A C of shape (M, 1) broadcasts along the rows, not the outputs: not a bias.)
    return c_name == "" or (c is not None and (c.size == 1 or (c.size == out_features and c.shape[-1] == out_features)))


def _fully_connected_operands(node: _Node, consts: Dict[str, np.ndarray]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """(weight (M, K), bias or None) of a fully connected Gemm or MatMul (_is_fully_connected)."""
    b = consts[node.input(1)]
    if node.op == "MatMul":
        return b.T, None
    a = node.attrs
    alpha, beta, tb = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0)), bool(a.get("transB", 0))
    out_features = b.shape[0 if tb else 1]
    c = consts.get(node.input(2))
    bias = None if c is None else np.broadcast_to(np.asarray(c, np.float64).reshape(-1), (out_features,)) * beta
    weight = b.T if not tb else b
    return (weight * alpha if alpha != 1.0 else weight), bias  # (no copy of the weights for nothing)


def _gemm(p: _Planner, node: _Node) -> None:
    a = node.attrs
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    ta, tb = bool(a.get("transA", 0)), bool(a.get("transB", 0))
    if node.input(1) in p.consts and node.input(0) in p.shapes:
        k_a = p.shapes[node.input(0)][0 if ta else -1]
        k_b = p.consts[node.input(1)].shape[-1 if tb else 0]
        if k_a is not None and k_a != k_b:
            raise ModelError(f"{node.where()}: shape mismatch: A has {k_a} columns, B has {k_b} rows")
    if _is_fully_connected(node, p.consts, p.rank):
        _fully_connected(p, node, *_fully_connected_operands(node, p.consts))
        return
    _unfused_activation(node)
    fn = lambda x, w, c=None: (_netops.gemm(x, w, c, alpha, beta, ta, tb),)  # noqa: E731
    _plain(p, node, fn, "NumPy matmul (BLAS)")


def _matmul(p: _Planner, node: _Node) -> None:
    if _is_fully_connected(node, p.consts, p.rank):
        _fully_connected(p, node, *_fully_connected_operands(node, p.consts))
    else:
        _unfused_activation(node)
        _plain(p, node, lambda a, b: (np.matmul(a, b),), "NumPy matmul (BLAS)")


def _unfused_activation(node: _Node) -> None:
    """The fusion pass gives a Gemm or MatMul an activation only where it is fully connected
    (_is_fully_connected, with the shapes known then); a NumPy product takes none."""
    if node.activation is not None:
        raise RuntimeError(f"{node.where()}: internal error: activation {node.activation!r} fused into a "
                           f"{node.op} that is not run as a fully connected layer")


def _fully_connected(p: _Planner, node: _Node, weight: np.ndarray, bias: Optional[np.ndarray]) -> None:
    """y = x @ weight.T + bias for a 2-D x (N, K) and a constant weight (M, K): a 1x1 Conv1d over
    the N rows as the pixels of one NWC row, weights packed at load, in the network's threads.
    (NumPy's BLAS keeps its own thread pool: at batch 1 the hand-off to it cost far more than
    the product, and it competes with cppconv's threads.)"""
    out_features, in_features = weight.shape
    rows = np.ascontiguousarray(weight, p.dtype).reshape(out_features, in_features, 1)
    layer = Conv1d(rows, None if bias is None else np.asarray(bias, p.dtype), layout="NWC", precision=p.precision,
                   compute_dtype=p.compute_dtype, activation=node.activation)
    p.hold(node.input(1), layer, "weight", rows)  # (where no transpose or alpha changed it)
    if node.op == "Gemm" and node.input(2):
        p.hold(node.input(2), layer, "bias")
    p.release(node, 1)
    threads = p.threads
    direct = layer._float_forward()

    def fn(x: np.ndarray, out: Optional[np.ndarray] = None) -> Tuple[np.ndarray]:
        if not x.shape[0]:  # (an empty batch: no rows for the layer's length axis)
            return (np.empty((0, out_features), x.dtype) if out is None else out,)
        rows = x.reshape(1, x.shape[0], in_features)
        out_rows = None if out is None else out.reshape(1, *out.shape)
        if direct is not None and _tuning._mode == "off" and np.may_share_memory(rows, x):
            y = direct(rows, out_rows, threads or 0, None, _program())
            if y is not None:
                return (y[0],)
        _unrecorded("a fully connected layer through its layer's Python path")
        return (layer(rows, out_rows, num_threads=threads)[0],)

    ins = [p.value_in(node.input(0), None)]
    fused = "" if node.activation is None else f"; activation {_activation_word(node.activation)} fused"
    p.emit(node, fn, ins, [None],
           f"fully connected {in_features}->{out_features} (cppconv 1x1 Conv1d over rows){fused}",
           writes=_INTO_BUFFER, layer=layer)


def _softmax(p: _Planner, node: _Node) -> None:
    x = node.input(0)
    log = node.op == "LogSoftmax"
    if p.opset < 13:
        axis = int(node.attrs.get("axis", 1))
        _plain(p, node, lambda v: (_netops.softmax_2d(v, axis % v.ndim, log),), f"NumPy {node.op.lower()}")
        return
    axis = p.axis(node, x, int(node.attrs.get("axis", -1)))
    p.emit(node, lambda v: (_netops.softmax(v, axis, log),), [x], [p.layout[x]], f"NumPy {node.op.lower()}")


def _identity(p: _Planner, node: _Node) -> None:
    x = node.input(0)
    outs = [o for o in node.outputs if o]
    if node.op == "Dropout" and len(outs) > 1:
        fn: Callable[..., Tuple[Any, ...]] = lambda v, *_: (v, np.ones(v.shape, bool))  # noqa: E731
    else:
        fn = lambda v, *_: (v,)  # noqa: E731
    p.emit(node, fn, [x], [p.layout[x]] * len(node.outputs), "nothing (an alias of its input)")


def _lrn(p: _Planner, node: _Node) -> None:
    x = node.input(0)
    if "size" not in node.attrs:
        raise ModelError(f"{node.where()}: attribute 'size' is required")
    args = (int(node.attrs["size"]), float(node.attrs.get("alpha", 1e-4)), float(node.attrs.get("beta", 0.75)),
            float(node.attrs.get("bias", 1.0)))
    axis = p.axis(node, x, 1)
    p.emit(node, lambda v: (_netops.lrn(v, axis, *args),), [x], [p.layout[x]], "NumPy local response normalisation")


def _pad(p: _Planner, node: _Node) -> None:
    x = node.input(0)
    mode = node.attrs.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise _refuse(node, "mode", mode, "constant, reflect, edge, wrap")
    rank = p.rank(x)
    if rank is None:
        raise ModelError(f"{node.where()}: the rank of {x!r} is not known at load")
    if p.opset < 11:
        pads, value = list(node.attrs.get("pads", [])), float(node.attrs.get("value", 0.0))
        axes = list(range(rank))
    else:
        pads = [int(v) for v in p.const(node, 1, "pads")]
        value_array = p.optional_const(node, 2, "constant_value")
        value = 0 if value_array is None else value_array.item()
        axes = [int(a) % rank for a in p.const(node, 3, "axes")] if node.input(3) else list(range(rank))
    if len(pads) != 2 * len(axes):
        raise _refuse(node, "pads", pads, f"{2 * len(axes)} values (begins, then ends)")
    full = [0] * (2 * rank)
    for i, a in enumerate(axes):
        s = p.axis(node, x, a)
        full[s], full[rank + s] = pads[i], pads[len(axes) + i]
    p.emit(node, lambda v: (_netops.pad(v, full, mode, value),), [x], [p.layout[x]], f"NumPy pad ({mode})")


def _resize(p: _Planner, node: _Node) -> None:
    a = node.attrs
    x = node.input(0)
    mode = a.get("mode", "nearest")
    if mode not in ("nearest", "linear"):
        raise _refuse(node, "mode", mode, "nearest, linear")
    transform = a.get("coordinate_transformation_mode", "half_pixel" if p.opset >= 11 else "asymmetric")
    if transform not in ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"):
        raise _refuse(node, "coordinate_transformation_mode", transform,
                      "half_pixel, pytorch_half_pixel, align_corners, asymmetric")
    nearest_mode = a.get("nearest_mode", "round_prefer_floor")
    if nearest_mode not in ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil"):
        raise _refuse(node, "nearest_mode", nearest_mode, "round_prefer_floor, round_prefer_ceil, floor, ceil")
    for name, default in (("antialias", 0), ("exclude_outside", 0), ("keep_aspect_ratio_policy", "stretch")):
        if a.get(name, default) != default:
            raise _refuse(node, name, a[name], repr(default))
    rank = p.rank(x)
    if rank is None:
        raise ModelError(f"{node.where()}: the rank of {x!r} is not known at load")
    axes = [int(v) % rank for v in a.get("axes", range(rank))]
    stored = [p.axis(node, x, ax) for ax in axes]
    scales_name, sizes_name = (node.input(1), "") if p.opset < 11 else (node.input(2), node.input(3))
    batch_axis = p.axis(node, x, 0)  # (where the batch is stored: a Resize may not change it)
    resizes_batch = "a Resize of the batch axis (axis 0) is not supported"
    scales, sizes = p.consts.get(scales_name), p.consts.get(sizes_name)
    if 0 in axes and scales is not None and scales.size and float(scales[axes.index(0)]) != 1.0:
        raise ModelError(f"{node.where()}: {resizes_batch}; its scale there is {float(scales[axes.index(0)])}, "
                         "supported: 1")
    # Constant sizes that give the batch the model declares (onnx-simplifier writes them so) keep
    # any batch's size; others must equal the call's batch size (checked in fn).
    keeps_batch = 0 in axes and sizes is not None and sizes.size and p.declared_batch is not None and \
        int(sizes[axes.index(0)]) == p.declared_batch

    threads = p.threads

    def fn(v: np.ndarray, scales: Optional[np.ndarray], sizes: Optional[np.ndarray],
           out: Optional[np.ndarray] = None) -> Tuple[np.ndarray]:
        out_sizes, out_scales = list(v.shape), [1.0] * v.ndim
        use_sizes = sizes is not None and sizes.size
        for i, s in enumerate(stored):
            if use_sizes:
                out_sizes[s] = v.shape[s] if (keeps_batch and s == batch_axis) else int(sizes[i])  # type: ignore[index]
                out_scales[s] = out_sizes[s] / v.shape[s]
            else:
                out_scales[s] = float(scales[i])  # type: ignore[index]
                out_sizes[s] = int(np.floor(v.shape[s] * out_scales[s]))
        if out_sizes[batch_axis] != v.shape[batch_axis]:
            raise ValueError(f"{resizes_batch}; it asks for {v.shape[batch_axis]} -> {out_sizes[batch_axis]}")
        return (_netops.resize(v, out_sizes, out_scales, mode, transform, nearest_mode, out, threads, _program()),)

    became = f"resize ({mode}, {transform}): cppconv's pass for float32 height and width, else NumPy"
    if all(n == "" or n in p.consts for n in (scales_name, sizes_name)):
        # Constant scales or sizes (as exported): a step of x alone, written into its part of the arena.
        p.emit(node, lambda v, out=None: fn(v, scales, sizes, out), [x], [p.layout[x]], became, writes=_INTO_BUFFER)
        return
    p.emit(node, fn, [x, scales_name, sizes_name], [p.layout[x]], became)


def _reduce_mean(p: _Planner, node: _Node) -> None:
    x = node.input(0)
    keepdims = bool(node.attrs.get("keepdims", 1))
    axes = _axes_input(p, node) if p.opset < 18 or node.input(1) or "axes" in node.attrs else None
    if axes is None and node.attrs.get("noop_with_empty_axes", 0):
        _identity(p, node)
        return
    if not keepdims:
        x = p.value_in(x, None)
    rank = p.rank(x)
    stored = None if axes is None else tuple(p.axis(node, x, ax, rank) for ax in axes)
    p.emit(node, lambda v: (np.mean(v, axis=stored, keepdims=keepdims),), [x], [p.layout[x]], "NumPy mean")


def _constant(p: _Planner, node: _Node) -> None:
    value = _constant_value(node)
    p.emit(node, lambda: (value,), [], [None], "a constant")


def _shape(p: _Planner, node: _Node) -> None:
    x = node.input(0)
    start, end = node.attrs.get("start", 0), node.attrs.get("end")
    shape = p.shapes.get(x)
    if shape is not None and all(d is not None for d in shape):
        value = np.asarray(shape[slice(start, end)], np.int64)
        p.emit(node, lambda: (value,), [], [None], "a constant")
        return
    perm = p.layout[x]
    back = None if perm is None else _inverse(perm)

    def fn(v: np.ndarray) -> Tuple[np.ndarray]:
        dims = v.shape if back is None else tuple(v.shape[i] for i in back)
        return (np.asarray(dims[slice(start, end)], np.int64),)

    p.shape_source[node.outputs[0]] = x
    p.emit(node, fn, [x], [None], "the input's shape")


def _gather(p: _Planner, node: _Node) -> None:
    data, indices = node.input(0), node.input(1)
    axis = int(node.attrs.get("axis", 0))
    source = p.shape_source.get(data)
    if source is not None and indices in p.consts and axis == 0:
        # Shape -> Gather of sizes that shape inference knows: a constant (the batch size is not).
        shape = p.shapes.get(source)
        picked = np.asarray(p.consts[indices])
        if shape is not None and all(shape[int(i)] is not None for i in picked.ravel()):
            value = np.asarray([shape[int(i)] for i in picked.ravel()], np.int64).reshape(picked.shape)
            p.emit(node, lambda: (value,), [], [None], "a constant")
            return
    _plain(p, node, lambda v, i: (np.take(v, i, axis=axis),), "NumPy take")


def _constant_of_shape(p: _Planner, node: _Node) -> None:
    value = np.asarray(node.attrs.get("value", np.zeros(1, np.float32))).reshape(-1)[:1]
    _plain(p, node, lambda s: (np.full(tuple(int(d) for d in s), value[0], value.dtype),), "NumPy full")


def _cast(p: _Planner, node: _Node) -> None:
    from onnx import helper

    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(int(node.attrs["to"])))
    x = node.input(0)
    p.emit(node, lambda v: (v.astype(dtype),), [x], [p.layout[x]], f"NumPy astype {dtype}")


def _quantization_axis(p: _Planner, node: _Node, x: str, scale: np.ndarray) -> Optional[int]:
    """The stored axis a per-axis scale runs along (None for a per-tensor one)."""
    if scale.size == 1 and scale.ndim <= 1:
        return None
    return p.axis(node, x, int(node.attrs.get("axis", 1)))


def _quantize(p: _Planner, node: _Node) -> None:
    """QuantizeLinear and DequantizeLinear: elementwise native passes, in the input's layout,
    their parameters validated once here."""
    x = node.input(0)
    scale = p.const(node, 1, "scale")
    zero_point = p.optional_const(node, 2, "zero point")
    axis = _quantization_axis(p, node, x, scale)
    try:
        s, z, dtype = _quant.prepared_parameters(scale, zero_point, None if axis is None else scale.size)
    except (TypeError, ValueError) as e:
        raise ModelError(f"{node.where()}: {e}") from None
    threads = p.threads or 0  # the network's threads (0: cppconv's setting)
    if node.op == "QuantizeLinear":
        if int(node.attrs.get("saturate", 1)) != 1:
            raise _refuse(node, "saturate", node.attrs["saturate"], "1 (integer results always saturate)")

        def fn(v: np.ndarray) -> Tuple[np.ndarray]:
            if v.dtype == np.float32 and not v.flags.c_contiguous:  # (a view: a recorded copy first)
                v = _contiguous(v, threads)
            return (_quant.quantize_values(v, s, z, axis, dtype, threads, _program()),)
        became = "cppconv quantize_linear"
    else:
        def fn(v: np.ndarray) -> Tuple[np.ndarray]:
            if zero_point is not None and v.dtype != dtype:  # (absent, it is a zero of x's type)
                raise TypeError(f"x has dtype {v.dtype}; the zero point's is {dtype}")
            given = _contiguous(v, threads)  # (a view, a Slice's of 8-bit channels: a recorded copy first)
            return (_quant.dequantize_values(given, s, z, axis, threads, _program()),)
        became = "cppconv dequantize_linear"
    p.emit(node, fn, [x], [p.layout.get(x)], became + ("" if axis is None else f" (per axis {axis} as stored)"))


def _quantized_add(p: _Planner, node: _Node) -> None:
    """A QDQ residual addition fused by _netquant.quantized_adds: one native pass over the 8-bit
    values where both have one shape and dtype, else the group's definition step by step."""
    names = ("a scale", "a zero point", "b scale", "b zero point", "y scale", "y zero point")
    consts = [(p.const if i % 3 == 0 else p.optional_const)(node, k, names[i])
              for i, k in enumerate((1, 2, 4, 5, 6, 7))]
    try:
        (sa, za, ta), (sb, zb, tb), (sy, zy, ty) = (_quant.prepared_parameters(consts[i], consts[i + 1], None)
                                                     for i in (0, 2, 4))
    except (TypeError, ValueError) as e:
        raise ModelError(f"{node.where()}: {e}") from None
    ins, perm = p.broadcast_inputs([node.input(0), node.input(3)])
    relu = node.activation == "relu"
    threads = p.threads or 0

    def fn(a: np.ndarray, b: np.ndarray) -> Tuple[np.ndarray]:
        if a.dtype != ta or b.dtype != tb:
            raise TypeError(f"the added values have dtypes {a.dtype} and {b.dtype}; their zero points' are {ta} "
                            f"and {tb}")
        if a.shape == b.shape and ta == tb and a.flags.c_contiguous and b.flags.c_contiguous:
            y = np.empty(a.shape, ty)
            _native.quantized_add(a, float(sa[0]), int(za[0]), b, float(sb[0]), int(zb[0]), y, float(sy[0]),
                                  int(zy[0]), relu, threads, _program())
            return (y,)
        total = (_quant.dequantize_values(np.ascontiguousarray(a), sa, za, None, threads)
                 + _quant.dequantize_values(np.ascontiguousarray(b), sb, zb, None, threads))
        return (_quant.quantize_values(np.maximum(total, 0, out=total) if relu else total, sy, zy, None, ty, threads),)

    p.emit(node, fn, ins, [perm], "cppconv quantized add (QDQ group fused: "
           + ", ".join(f.op for f in node.fused) + ")" + ("; Relu fused" if relu else ""))


def _quantized_gate(p: _Planner, node: _Node) -> None:
    """A QDQ channel gate fused by _netquant.quantized_gates: one native pass over the 8-bit
    values where the gate holds one value per image and channel of them (channels-last), else
    the group's definition step by step."""
    names = ("x scale", "x zero point", "y scale", "y zero point")
    consts = [p.const(node, k, names[i]) for i, k in enumerate((1, 2, 4, 5))]
    try:
        (sx, zx, tx), (sy, zy, ty) = (_quant.prepared_parameters(consts[i], consts[i + 1], None) for i in (0, 2))
    except (TypeError, ValueError) as e:
        raise ModelError(f"{node.where()}: {e}") from None
    ins, perm = p.broadcast_inputs([node.input(0), node.input(3)])
    threads = p.threads or 0

    def fn(x: np.ndarray, gate: np.ndarray) -> Tuple[np.ndarray]:
        if x.dtype != tx:
            raise TypeError(f"the gated values have dtype {x.dtype}; their zero point's is {tx}")
        if (x.ndim == gate.ndim >= 3 and gate.dtype == np.float32 and gate.shape[0] == x.shape[0]
                and gate.shape[-1] == x.shape[-1] and gate.size == x.shape[0] * x.shape[-1]
                and x.flags.c_contiguous and gate.flags.c_contiguous):
            y = np.empty(x.shape, ty)
            _native.quantized_scale_channels(x, float(sx[0]), int(zx[0]), gate, y, float(sy[0]), int(zy[0]), threads,
                                             _program())
            return (y,)
        values = _quant.dequantize_values(np.ascontiguousarray(x), sx, zx, None, threads) * gate
        return (_quant.quantize_values(values, sy, zy, None, ty, threads),)

    p.emit(node, fn, ins, [perm], "cppconv quantized channel gate (QDQ group fused: "
           + ", ".join(f.op for f in node.fused) + "), else its definition")


def _quantized_table(p: _Planner, node: _Node) -> None:
    """A QDQ group of elementwise operators on one 8-bit value, tabulated at load by
    _netquant.quantized_tables: one native lookup a value."""
    table: np.ndarray = node.attrs["table"]
    x = node.input(0)
    threads = p.threads or 0

    def fn(v: np.ndarray, out: Optional[np.ndarray] = None) -> Tuple[np.ndarray]:
        if v.dtype.itemsize != 1 or v.dtype.kind not in "iu":
            raise TypeError(f"the tabulated values have dtype {v.dtype}; 8-bit integers expected")
        given = np.ascontiguousarray(v)  # (a copy is not recorded: the step then is not replayed)
        y = np.empty(v.shape, table.dtype) if out is None else out
        _native.lookup_bytes(given, table, y, threads, _program() if given is v else None)
        return (y,)

    p.emit(node, fn, [x], [p.layout.get(x)], "cppconv 8-bit table (QDQ group fused: "
           + ", ".join(f.op for f in node.fused) + ")", writes=_IN_PLACE)


_QCONV_LAYERS = {1: QConv1d, 2: QConv2d, 3: QConv3d}


def _qlinear_conv(p: _Planner, node: _Node) -> None:
    """QLinearConv (ONNX's, or a QDQ convolution group fused by _netquant): a cppconv QConv
    layer, channels-last, on the int8 kernels."""
    x = node.input(0)
    w = p.const(node, 3, "weight")
    rank, kernel, stride, dilation, group = _window(node, w)
    quantization = [p.const(node, 1, "x_scale"), p.optional_const(node, 2, "x_zero_point"), w,
                    p.const(node, 4, "w_scale"), p.optional_const(node, 5, "w_zero_point"),
                    p.const(node, 6, "y_scale"), p.optional_const(node, 7, "y_zero_point"),
                    p.optional_const(node, 8, "bias")]
    for i, default in ((1, np.uint8), (4, np.int8), (6, np.uint8)):  # ONNX's absent zero points
        if quantization[i] is None:
            quantization[i] = np.zeros((), default)
    perm = channels_last(rank + 2)
    try:
        layer = _QCONV_LAYERS[rank](*quantization, stride=stride, dilation=dilation, groups=group,
                                    padding=_window_pads(p, node, x, kernel, stride, dilation),
                                    layout=_layout_word(perm), activation=node.activation)
    except (TypeError, ValueError) as e:
        raise ModelError(f"{node.where()}: {e}") from None
    xin = p.value_in(x, perm)
    threads = p.threads
    parts = [f"{type(layer).__name__} {'x'.join(map(str, kernel))}"
             + (f" stride {'x'.join(map(str, stride))}" if max(stride) > 1 else "")
             + (f" groups {group}" if group > 1 else "") + " (int8 kernels)"]
    if node.fused:
        parts.append(f"QDQ group fused: {', '.join(f.op for f in node.fused)}")
    if node.activation:
        parts.append(f"activation {node.activation} clamped in the quantized domain")
    extra: Dict[str, Any] = {"layer": layer}
    in_shape = p.stored_shape(xin)
    if in_shape is not None:
        try:
            x_zero_point = quantization[1]
            assert x_zero_point is not None  # (filled in above where absent)
            extra["algorithm"] = layer.explain(in_shape, x_zero_point.dtype)["algorithm"]
        except (TypeError, ValueError):
            pass
    def fn(v: np.ndarray) -> Tuple[np.ndarray]:
        if not v.flags.c_contiguous:  # (a view, a Slice's of 8-bit channels: a recorded copy first)
            v = _contiguous(v, threads or 0)
        return (layer._forward(v, threads, _program()),)

    p.emit(node, fn, [xin], [perm], "; ".join(parts), **extra)


_HANDLERS: Dict[str, Callable[[_Planner, _Node], None]] = {
    "Conv": _conv, "ConvTranspose": _conv, "BatchNormalization": _batch_norm,
    "Relu": _unary(_netops.relu, in_place=True),
    "LeakyRelu": _unary(_netops.leaky_relu, ("alpha", _args.DEFAULT_NEGATIVE_SLOPE)),
    "Sigmoid": _unary(_netops.sigmoid, in_place=True), "Tanh": _unary(_netops.tanh, in_place=True),
    "HardSigmoid": _unary(_netops.hard_sigmoid, ("alpha", 0.2), ("beta", 0.5), in_place=True),
    "HardSwish": _unary(_netops.hard_swish, in_place=True), "Elu": _unary(_netops.elu, ("alpha", 1.0)),
    "Clip": _clip, "PRelu": _broadcasting,
    "Add": _broadcasting, "Sub": _broadcasting, "Mul": _broadcasting, "Div": _broadcasting, "Sum": _broadcasting,
    "MaxPool": _pool, "AveragePool": _pool, "GlobalAveragePool": _global_pool, "GlobalMaxPool": _global_pool,
    "Concat": _concat, "Split": _split, "Slice": _slice, "Flatten": _flatten, "Reshape": _reshape,
    "Transpose": _transpose, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze, "Gemm": _gemm,
    "MatMul": _matmul,
    "Softmax": _softmax, "LogSoftmax": _softmax, "Dropout": _identity, "Identity": _identity, "LRN": _lrn,
    "Pad": _pad, "Resize": _resize, "ReduceMean": _reduce_mean, "Constant": _constant, "Shape": _shape,
    "Gather": _gather, "ConstantOfShape": _constant_of_shape, "Cast": _cast,
    "QuantizeLinear": _quantize, "DequantizeLinear": _quantize, "QLinearConv": _qlinear_conv,
    _netquant.QUANTIZED_ADD: _quantized_add,
    _netquant.QUANTIZED_TABLE: _quantized_table,
    _netquant.QUANTIZED_GATE: _quantized_gate,
}
assert set(_HANDLERS) == set(_ATTRIBUTES) | {_netquant.QUANTIZED_ADD, _netquant.QUANTIZED_TABLE,
                                             _netquant.QUANTIZED_GATE}  # (from fusions)


class _Input:
    """A graph input: batch, whether its first axis is the batch (batch_inputs; else every
    part of a batch reads it whole, and its first axis is the model's)."""
    __slots__ = ("name", "slot", "shape", "dtype", "batch")

    def __init__(self, name: str, slot: int, shape: Tuple[Optional[int], ...], dtype: np.dtype, batch: bool):
        self.name, self.slot, self.shape, self.dtype, self.batch = name, slot, shape, dtype, batch


class Network:
    """An ONNX model planned for cppconv: call it on arrays (see :func:`cppconv.onnx.load`).

    ``net(x)`` runs a network of one input and one output; ``net.run({name: array, ...})``
    any network, returning ``{output name: array}``.  The batch size (the first axis of
    every input but one that declares another fixed size there: batch_inputs) is free; the
    other sizes must be the model's.  A network pickles (it is
    rebuilt from the model's bytes) and may be called from many threads at once.

    >>> import numpy as np, cppconv
    >>> from onnx import TensorProto, helper, numpy_helper
    >>> w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    >>> graph = helper.make_graph(
    ...     [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["y"], ["z"])],
    ...     "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
    ...     [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 8, 8])], [w])
    >>> net = cppconv.onnx.load(helper.make_model(graph))
    >>> net(np.ones((2, 3, 8, 8), np.float32)).shape
    (2, 4, 8, 8)
    """

    def __init__(self, model: Any, *, num_threads: Optional[int] = None, precision: Optional[str] = None,
                 compute_dtype: Optional[str] = None, sub_batch: Optional[int] = None,
                 lanes: Optional[int] = None):
        self._threads = _args.thread_count(num_threads)
        _args.precision_code(precision)  # rejects unknown modes now
        self._precision = precision
        self._compute_dtype = _args.layer_rounding(compute_dtype)  # None or "bfloat16"; rejects others now
        self._sub_batch_given = None if sub_batch is None else _args.as_int(sub_batch, "sub_batch")
        if self._sub_batch_given is not None and self._sub_batch_given < 1:
            raise ValueError(f"sub_batch must be None (chosen from the plan) or at least 1, got {sub_batch!r}")
        self._lanes_given = None if lanes is None else _args.as_int(lanes, "lanes")
        if self._lanes_given is not None and self._lanes_given < 1:
            raise ValueError(f"lanes must be None (one a thread) or at least 1, got {lanes!r}")
        original = parse_model(model)
        try:
            proto = _netquant.expand_qoperator(original)
        except _netquant.ExpansionError as e:
            raise ModelError(str(e)) from None
        planner = _Planner(proto, self._threads, precision, self._compute_dtype)
        # The source a pickle rebuilds the network from (__reduce__): the model's bytes, less
        # the weights a layer holds as they are (the network would hold them twice); from the
        # planner's weightless copy and values, so that the parsed model goes now (not with a
        # QOperator model, whose expansion the planner read).
        expanded = None if proto is original else original
        del original, proto
        planner.plan()
        self._bytes: bytes = expanded.SerializeToString() if expanded is not None else \
            _light_model(planner.source, planner.source_values)
        self._weights_in_layers: Dict[str, Tuple[Any, str, np.dtype]] = \
            {} if expanded is not None else planner.held_by_layers
        del expanded
        outputs = [planner.value_in(name, None) for name in planner.output_names]
        planner.drop_unused(outputs)
        self._compile(planner, outputs)
        self._choose_sub_batch(planner)
        if planner.shape_problem:
            self._trial_run(planner.shape_problem)

    def _choose_sub_batch(self, planner: _Planner) -> None:
        """The most images one pass of the steps takes (None: any batch runs whole) and why:
        a larger batch runs as consecutive sub-batches (docs/design.md, "Sub-batches").  Auto:
        as many images as the largest step's operands fit in the last-level cache (its largest
        layers then stream from the cache, not from memory), at least 1."""
        self._sub_batch: Optional[int] = None
        self._splits = not planner.split_problem
        given = self._sub_batch_given
        if planner.split_problem:
            for word, value in (("sub_batch", given), ("lanes", self._lanes_given)):
                if value is not None and (word == "sub_batch" or value > 1):
                    raise ValueError(f"{word}={value}: this network cannot run a batch in parts: "
                                     f"{planner.split_problem}")
            self._sub_batch_rule = f"whole batches: {planner.split_problem}"
            return
        if given is not None:
            self._sub_batch, self._sub_batch_rule = given, f"given at load (sub_batch={given})"
            return

        def value_bytes(name: str) -> Optional[int]:
            shape = planner.stored_shape(name, batch=1)
            dtype = planner.dtypes.get(name.split("@")[0])
            if name in planner.consts or name in planner.shape_values or shape is None or dtype is None:
                return None
            return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize

        step = _netbatch.largest_step_bytes(planner.steps, value_bytes)
        cache, source = _netbatch.cache_bytes()
        if not step:
            self._sub_batch_rule = "whole batches: the steps' sizes are not known at load"
            return
        self._sub_batch = max(1, cache // step)
        self._sub_batch_rule = (f"auto: the largest step reads and writes {step / 2**20:.2f} MiB an image; "
                                f"{self._sub_batch} image(s) fit the {cache / 2**20:.0f} MiB cache ({source}), "
                                "shared by the lanes that run at once")

    def _trial_run(self, problem: str) -> None:
        """ONNX's strict shape inference refused the model, and no node's own check did: a
        run on zeros at batch 1 decides (a model it cannot infer may still be sound)."""
        feeds = {}
        for spec in self._inputs:
            sizes = [1 if k == 0 and spec.batch else d for k, d in enumerate(spec.shape)]
            if None in sizes:
                raise ModelError(problem)
            feeds[spec.name] = np.zeros([int(d) for d in sizes if d is not None], spec.dtype)
        try:
            self.run(feeds)
        except Exception as e:  # noqa: BLE001 - any failure of the run is the model's error
            raise ModelError(f"{problem}; a run on zeros fails too: {e}") from None
        self._programs.clear()  # (not a caller's first call with the shape)

    def _compile(self, planner: _Planner, outputs: List[str]) -> None:
        """Value names become list slots (slot 0 holds None, for absent optional inputs);
        each step lists the slots whose last reader it is, to drop them after it runs."""
        slots: Dict[str, int] = {"": 0}

        def slot(name: str) -> int:
            return slots.setdefault(name, len(slots))

        self._inputs = []
        for v in planner.inputs:
            shape = planner.shapes.get(v.name, ())
            self._inputs.append(_Input(v.name, slot(v.name), shape, planner.input_dtypes[v.name],
                                       v.name in planner.batch_inputs))
        # (the input whose first axis gives a call's batch size, for the arena and the lanes)
        self._batch_input = next((k for k, spec in enumerate(self._inputs) if spec.batch), None)
        used_consts = {i for s in planner.steps for i in s.ins if i in planner.consts} | \
            {o for o in outputs if o in planner.consts}
        for name in sorted(used_consts):
            slot(name)
        last: Dict[str, int] = {}
        root: Dict[str, str] = {}  # a view's value -> the value whose memory it shares
        for k, s in enumerate(planner.steps):
            for i in s.ins:
                last[root.get(i, i)] = k
                last[i] = k
            for o in s.outs:
                slot(o)
                if s.view and s.ins:
                    root[o] = root.get(s.ins[0], s.ins[0])
        keep = set(outputs) | set(planner.consts)
        dead_after: List[List[int]] = [[] for _ in planner.steps]
        for name, k in last.items():
            if name not in keep and name in slots:
                dead_after[k].append(slots[name])
        self._steps = [(s.fn, tuple(slots[i] for i in s.ins), tuple(slot(o) for o in s.outs), tuple(d),
                        s.writes, _overwritable_positions(s, [slots[i] for i in s.ins], set(d)))
                       for s, d in zip(planner.steps, dead_after)]
        self._step_rows = [s.row for s in planner.steps]
        self._roles = [s.role for s in planner.steps]
        self._dtype = planner.dtype
        self._template: List[Any] = [None] * len(slots)
        for name in used_consts:
            self._template[slots[name]] = planner.consts[name]
        self._outputs = [(name, slots[o]) for name, o in zip(planner.output_names, outputs)]
        given = set(planner.consts) | {v.name for v in planner.inputs}
        self._fresh_outputs = {name for name, o in zip(planner.output_names, outputs) if o not in given}
        self._rows = planner.rows
        self._peak = _peak_bytes(planner, last, keep, root)
        self._arena_at, self._arena_in_place, self._arena_elements = _arena_plan(planner, last, keep, root)
        self._steps_alias = [s.may_return_input for s in planner.steps]
        self._arenas: List[np.ndarray] = []  # the last call's arena, for the next (run)
        # Guards _arenas and _programs; fork-safe, as a child forked while another thread held it
        # would wait for ever.
        self._lock = ForkSafeLock()
        # Input shapes and dtypes -> _SEEN, a _Program, or why the shape runs in Python; at most
        # _programs_kept of them (0: every call runs its steps in Python).
        self._programs: Dict[Any, Any] = {}
        self._programs_kept = _PROGRAMS_KEPT
        self._recent_calls: Dict[frozenset, None] = {}  # the last calls' program keys, oldest first

    # ----- running --------------------------------------------------------------------------
    @property
    def input_names(self) -> List[str]:
        return [i.name for i in self._inputs]

    @property
    def output_names(self) -> List[str]:
        return [name for name, _ in self._outputs]

    def _feed(self, spec: _Input, value: Any) -> np.ndarray:
        x = _args.as_input_array(value, spec.name)
        if x.dtype != spec.dtype:
            if x.dtype.kind not in "fiub":
                raise TypeError(f"input {spec.name!r} must be numeric, got dtype {x.dtype}")
            x = x.astype(spec.dtype)
        if spec.shape:
            free = 1 if spec.batch else 0  # (the batch axis takes any size)
            if x.ndim != len(spec.shape) or any(d is not None and d != s
                                                for d, s in zip(spec.shape[free:], x.shape[free:])):
                want = ", ".join("N" if i < free else ("?" if d is None else str(d)) for i, d in enumerate(spec.shape))
                raise ValueError(f"input {spec.name!r} must have shape ({want})"
                                 + (" (any batch size N)" if free else "") + f", got {x.shape}")
        return x

    def run(self, feeds: Dict[str, Any], outputs: Union[str, Sequence[str], None] = None) -> Dict[str, np.ndarray]:
        """Runs the network on ``feeds`` ({input name: array}); returns {output name: array}
        for ``outputs`` (names, or one name; default, or an empty list as ONNX Runtime
        takes it: all of the model's outputs, in its order)."""
        if not isinstance(feeds, dict):
            raise TypeError(f"feeds must be a dict of input name -> array, got {type(feeds).__name__}")
        wanted = [outputs] if isinstance(outputs, str) else [] if outputs is None else list(outputs)
        wanted = wanted or self.output_names
        unknown = [n for n in wanted if n not in self.output_names]
        if unknown:
            raise KeyError(f"{unknown[0]!r} is not an output of the network; its outputs: {self.output_names}")
        extra = sorted(set(feeds) - set(self.input_names))
        missing = [n for n in self.input_names if n not in feeds]
        if extra or missing:
            raise KeyError(f"feeds must give exactly the inputs {self.input_names}; "
                           + (f"missing {missing}" if missing else f"unknown {extra}"))
        values = [self._feed(spec, feeds[spec.name]) for spec in self._inputs]
        lanes = self._lanes(values)
        self._keep_programs(frozenset([_program_key(0, values)] if lanes is None else
                                      [_program_key(k, self._images(values, lo, hi))
                                       for k, (_, bounds) in enumerate(lanes) for lo, hi in bounds]))
        if lanes is None:
            return self._run_whole(values, wanted)
        # Each part runs as a batch of its own (its program's arena sized for it), its outputs
        # copied into their rows of the batch's, as a whole batch's leave its program; the lanes
        # at once, each on its threads, the parts of a lane one after another.
        batch_outputs = _BatchOutputs(lanes[-1][1][-1][1])  # (the last part's end: the batch size)

        def run_lane(lane: int, bounds: List[Tuple[int, int]]) -> None:
            for lo, hi in bounds:
                self._run_whole(self._images(values, lo, hi), self.output_names, batch_outputs.rows(lo, hi), lane)

        _netbatch.LANE_POOL.run([(threads, functools.partial(run_lane, k, bounds))
                                 for k, (threads, bounds) in enumerate(lanes)])
        return {n: batch_outputs.arrays[n] for n in wanted}

    def _lanes(self, values: List[np.ndarray]) -> Optional[List[Tuple[int, List[Tuple[int, int]]]]]:
        """How a call's batch runs (docs/design.md, "Batch lanes"): lanes side by side, each on
        its share of the threads and through its sub-batches in turn, [(threads, [(first image,
        end), ...]), ...]; None where it runs whole on the network's threads: one lane of one
        part, a network whose images are not computed apart, inputs of different batch sizes
        (one that broadcasts).  Auto sub-batches share the cache between the lanes."""
        batch = [v for spec, v in zip(self._inputs, values) if spec.batch]
        if not self._splits or not batch or any(v.ndim == 0 for v in batch):
            return None
        n = batch[0].shape[0]
        if n < 2 or any(v.shape[0] != n for v in batch):
            return None
        # (Tuned layers key their choices by the thread count: lanes of other counts could choose
        # other algorithms, and measure alongside each other.)
        most = 1 if _tuning._mode != "off" else self._lanes_given
        lanes = _netbatch.lanes(n, _native.resolve_threads(self._threads), most)
        part = self._sub_batch
        if part is not None and self._sub_batch_given is None:
            part = max(1, part // len(lanes))
        plan = [(threads, [(lo + a, lo + b) for a, b in _netbatch.parts(hi - lo, part or hi - lo)])
                for lo, hi, threads in lanes]
        return None if len(plan) == 1 and len(plan[0][1]) == 1 else plan

    def _images(self, values: List[np.ndarray], lo: int, hi: int) -> List[np.ndarray]:
        """The inputs of images lo to hi-1 of a batch: the batch inputs' rows, the others whole."""
        return [v[lo:hi] if spec.batch else v for spec, v in zip(self._inputs, values)]

    def _lanes_rule(self) -> str:
        """How a batch is shared between the threads, in words (explain()["lanes"])."""
        if not self._splits:
            return "one lane: the images are not computed apart"
        if self._lanes_given == 1:
            return "one lane (lanes=1 at load): every step's threads share each batch"
        most = "" if self._lanes_given is None else f", at most {self._lanes_given} (lanes={self._lanes_given} at load)"
        whole = [spec.name for spec in self._inputs if not spec.batch]
        return ("a batch of several images runs as lanes side by side, one a thread and at least one image "
                f"a lane{most}, each lane's images on its share of the threads"
                + (f"; every lane and part reads input(s) {whole} whole (their first axis is not the batch)"
                   if whole else ""))

    def _keep_programs(self, keys: frozenset) -> None:
        """Keeps the recorded programs of the last _programs_kept calls' shapes (a call's keys:
        each lane's part shapes, _program_key), and forgets the others with their arrays."""
        with self._lock:
            self._recent_calls.pop(keys, None)
            self._recent_calls[keys] = None
            while len(self._recent_calls) > max(1, self._programs_kept):
                del self._recent_calls[next(iter(self._recent_calls))]
            kept = frozenset().union(*self._recent_calls)
            for key in [k for k in self._programs if k not in kept]:
                del self._programs[key]

    def _run_whole(self, values: List[np.ndarray], wanted: Sequence[str],
                   rows: Optional[Callable[[str, np.ndarray], None]] = None, lane: int = 0) -> Dict[str, np.ndarray]:
        """One pass of the steps over the inputs' batch: the recorded program's (lane's own) or
        the steps' in Python.  rows: where given, each output is handed to it (to copy into the
        rows of a larger batch's) instead of returned as an array the caller owns."""
        if _tuning._mode == "off":  # (a tuned layer may change its choice from call to call)
            found = self._run_program(values, rows, lane)
            if found is not None:
                return {n: found[n] for n in wanted} if rows is None else {}
        return _hand_out(self._owned(self._run_steps(values), wanted).items(), rows, owned=True)

    def _owned(self, found: Dict[str, Any], wanted: Sequence[str]) -> Dict[str, np.ndarray]:
        """The wanted outputs of a run of the steps as arrays the caller owns: a result that is an
        input, a constant or a view is copied."""
        return {n: found[n] if n in self._fresh_outputs and found[n].flags.owndata else np.array(found[n])
                for n in wanted}

    def _run_steps(self, values: List[np.ndarray], program: Any = None) -> Dict[str, Any]:
        """The outputs of one run of the steps in Python on the inputs' values ({output name:
        value}).  program: a NetProgram to record the native calls into (_run_program); the
        run's arena is then the program's own, else the last call's is reused."""
        env = list(self._template)
        for spec, value in zip(self._inputs, values):
            env[spec.slot] = value
        batch = None if self._batch_input is None else values[self._batch_input]
        n = batch.shape[0] if batch is not None and batch.ndim else 0
        # Every step that writes into a buffer, where its output's size is known, writes into
        # its planned part of one arena (docs/design.md, "Activation memory"): reused from call
        # to call, as fresh memory costs page faults as it is first written (at batch 16 a
        # U-Net's 200 MB activations spent a second of its 11 on them, tuning.md).
        arena = self._take_arena(n * self._arena_elements, program) if n and self._arena_elements else None
        memory = None if arena is None else arena.base
        handed: Dict[int, np.ndarray] = {}  # offset -> the array handed out there (this call's)
        for k, (fn, ins, outs, dead, writes, extra) in enumerate(self._steps):
            recorded = 0 if program is None else len(program)
            spare = None
            try:
                if writes == _RETURNS:
                    results = fn(env[ins[0]]) if len(ins) == 1 else fn(*[env[i] for i in ins])
                elif writes == _INTO_BUFFER:
                    x = env[ins[0]]
                    at = self._arena_at[k]
                    if at is not None and arena is not None and x.shape[0] == n:
                        spare = handed[at[0]] = _arena_part(arena, at, n)
                    # (a Conv with its residual Add fused reads a second input)
                    results = fn(x, spare) if len(ins) == 1 else fn(x, *[env[i] for i in ins[1:]], spare)
                    del x
                else:  # extra: the positions of inputs that die here, which the step may overwrite
                    args = [env[i] for i in ins]
                    over, at = self._arena_in_place[k], self._arena_at[k]
                    if over is not None and arena is not None:  # (the input's part of the arena, by plan)
                        spare = _in_arena(args, over[0], handed.get(over[1]))
                    elif at is not None and arena is not None:  # (a part of its own)
                        part = _arena_part(arena, at, n)
                        if _is_broadcast_shape(part.shape, args):
                            spare = handed[at[0]] = part
                    if spare is None and extra:
                        spare = _overwritable(args, extra, program)
                    results = fn(*args, out=spare)
                    del args
            except Exception as e:  # a size the model did not fix changed, say: name the node
                raise _step_error(e, self._step_rows[k]) from e
            if memory is not None and not self._steps_alias[k]:
                results = _outside_arena(results, memory, spare, self._step_rows[k])
            if program is not None and len(program) == recorded:
                _check_unrecorded_step(self._step_rows[k], self._roles[k], results, [env[i] for i in ins])
            if len(outs) == 1:
                env[outs[0]] = results[0]
            else:
                for o, r in zip(outs, results):
                    env[o] = r
            del results, spare
            for d in dead:
                env[d] = None
        found = {name: env[s] for name, s in self._outputs}
        if arena is not None and program is None:
            # (an output that shares the arena's memory leaves as a copy: the next call reuses it)
            found = {name: np.array(v) if isinstance(v, np.ndarray) and v.base is memory else v
                     for name, v in found.items()}
            del env
            with self._lock:
                self._arenas = [arena]
        return found

    def _take_arena(self, elements: int, program: Any) -> np.ndarray:
        """An arena of `elements` values of the network's dtype, 64-byte aligned: the last
        call's where it has that size (and no other call holds it), else a fresh one (a
        recording's is always fresh: the program keeps it)."""
        if program is None:
            with self._lock:
                kept, self._arenas = self._arenas, []
            if kept and kept[0].size == elements:
                return kept[0]
            del kept
        itemsize = self._dtype.itemsize
        raw = np.empty(elements + 64 // itemsize, self._dtype)
        first = (-raw.ctypes.data % 64) // itemsize
        return raw[first:first + elements]

    def _run_program(self, values: List[np.ndarray], rows: Optional[Callable[[str, np.ndarray], None]] = None,
                     lane: int = 0) -> Optional[Dict[str, np.ndarray]]:
        """The outputs (arrays the caller owns) from the native program recorded for these
        inputs' shapes and dtypes: one call that runs every step without Python (docs/design.md,
        "Whole networks in one call").  The second call with a shape records it (its steps run
        in Python, handing their native calls to a NetProgram) and checks it: a replay on other
        values must give the Python run's outputs bit for bit, else the shape stays on the
        Python loop (a step that did Python work the program would not repeat).  None where no
        program runs: the first call with a shape, one that cannot be recorded, or a program
        busy with another thread's call.  rows: as _run_whole's (each output handed to it, from the
        program's own array: no copy of its own; {} returned).  Each lane has programs of its own
        (the lanes of a call run theirs at once)."""
        if not self._programs_kept:
            return None
        key = _program_key(lane, values)
        with self._lock:
            entry = self._programs.get(key)
            if entry is _SEEN:
                entry = _Program()
            self._programs[key] = _SEEN if entry is None else entry
        if not isinstance(entry, _Program) or not entry.lock.acquire(blocking=False):
            return None  # (the first call with the shape; one that stays in Python; a busy program)
        try:
            if entry.native is None:
                found = self._record(key, entry, values)
            else:
                entry.native.run([np.ascontiguousarray(v) for v in values])
                return _hand_out(entry.outputs, rows, owned=False)  # (while the program's arrays are this call's)
        finally:
            entry.lock.release()
        return _hand_out(found.items(), rows, owned=True)

    def _record(self, key: Any, entry: _Program, values: List[np.ndarray]) -> Dict[str, np.ndarray]:
        """Records the steps' native calls on the inputs' values into entry (see _run_program),
        or marks the shape as one that runs in Python (its reason kept for explain()); returns
        the run's outputs."""
        # The check's outputs first: the steps' Python run on other values, whose arrays are
        # freed before the recording allocates the program's (so the two never add up).  Other
        # values may be ones the model refuses (an index out of range): then no program.
        probe = [_other_values(v) for v in values]
        expected, failed = None, ""
        if any(p is None for p in probe):
            failed = "an input whose values cannot be varied to check the recording"
        else:
            try:
                expected = self._run_steps(probe)  # type: ignore[arg-type]
            except Exception as e:  # noqa: BLE001 - any failure on values the caller did not give
                failed = f"the check's run on other input values failed: {e}"
        if failed:
            with self._lock:
                self._programs[key] = failed
            return self._owned(self._run_steps(values), self.output_names)
        with self._lock:  # (the program's arena serves this shape from now on)
            self._arenas = []
        native = _native.NetProgram()
        inputs = [np.array(v, order="C") for v in values]  # the program's own: the caller's change
        native.set_inputs(inputs)
        _recording.program, _recording.failed = native, ""
        try:
            outputs = self._run_steps(inputs, native)
            failed = _recording.failed
        except BaseException:  # the caller's values fail in Python too: record at a later call
            with self._lock:
                self._programs[key] = _SEEN
            raise
        finally:
            _recording.program, _recording.failed = None, ""
        result = {name: np.array(outputs[name]) for name, _ in self._outputs}  # (the replay below overwrites)
        if not failed:
            native.run(probe)
            if not all(_same_values(expected[name], outputs[name]) for name in expected):  # type: ignore[index]
                failed = "a replay on other values differed from the Python run"
        with self._lock:
            if failed:
                self._programs[key] = failed
            else:
                entry.native = native
                entry.outputs = [(name, outputs[name]) for name, _ in self._outputs]
        return result

    def __call__(self, x: Any) -> np.ndarray:
        """The output of a network with one input and one output."""
        if len(self._inputs) != 1 or len(self._outputs) != 1:
            raise TypeError(f"net(x) needs one input and one output; this network has inputs {self.input_names} "
                            f"and outputs {self.output_names}: use net.run(feeds)")
        return self.run({self._inputs[0].name: x})[self._outputs[0][0]]

    # ----- reporting ------------------------------------------------------------------------
    def explain(self) -> Dict[str, Any]:
        """The plan: each node and what it became (fused convolution, layout, algorithm chosen
        for batch 1, or the one a tuned convolution ran last, with ``chosen_by``: see
        :func:`cppconv.set_tuning`), the planned peak activation memory at batch 1 (None
        where shapes are not known at load), and the activation arena's bytes per image
        (``arena_bytes``: the values it holds, placed by their lifetimes)."""
        nodes = []
        for row in self._rows:
            node = {k: v for k, v in row.items() if k != "layer"}
            choices = list(getattr(row.get("layer"), "_choices", {}).values())
            if choices:
                node["algorithm"], node["chosen_by"] = choices[-1].algorithm, choices[-1].chosen_by
            nodes.append(node)
        return {
            "inputs": self.input_names, "outputs": self.output_names, "nodes": nodes, "steps": len(self._steps),
            "convolution_layout": "channels-last (NWC, NHWC, NDHWC)",
            "peak_activation_bytes": self._peak,
            "arena_bytes": self._arena_elements * self._dtype.itemsize,
            "threads": self._threads or None, "precision": self._precision,
            "compute_dtype": self._compute_dtype or "float32",
            "sub_batch": self._sub_batch, "sub_batch_rule": self._sub_batch_rule,
            "lanes": self._lanes_rule(),
            "runs": self._runs(),
        }

    def _runs(self) -> Dict[str, str]:
        """How calls with each input shape seen lately run: {"shapes, dtypes": how}."""
        with self._lock:
            entries = list(self._programs.items())
        runs, in_force = {}, _native.get_float32_precision()
        for (lane, inputs, precision), entry in entries:
            shapes = "; ".join(f"{shape} {np.dtype(dtype).name}" for shape, dtype in inputs)
            if lane:
                shapes += f" (lane {lane})"
            if precision != in_force:
                shapes += f" (float32 precision {_PRECISION_WORDS.get(precision, precision)})"
            if isinstance(entry, _Program):
                runs[shapes] = "recording" if entry.native is None else \
                    f"one native call ({len(entry.native)} native steps recorded)"
            elif isinstance(entry, str):
                runs[shapes] = f"the steps in Python: {entry}"
            else:
                runs[shapes] = "the steps in Python (once; recorded at the next call)"
        return runs

    def summary(self) -> str:
        """explain() as a table, one line per node."""
        info = self.explain()
        lines = [f"cppconv.Network: {len(info['nodes'])} nodes -> {info['steps']} steps; "
                 f"inputs {info['inputs']}, outputs {info['outputs']}"]
        width = max((len(str(r["node"])) for r in info["nodes"]), default=4)
        for r in info["nodes"]:
            algo = f" [{r['algorithm']}]" if r.get("algorithm") else ""
            lines.append(f"  {str(r['node']):<{width}}  {r['op']:<18} {r['layout']:<15} {r['became']}{algo}")
        for shapes, how in info["runs"].items():
            lines.append(f"input {shapes}: {how}")
        peak = info["peak_activation_bytes"]
        lines.append("planned peak activation memory at batch 1: "
                     + ("unknown (shapes not known at load)" if peak is None else f"{peak / 2**20:.2f} MiB")
                     + f"; activation arena {info['arena_bytes'] / 2**20:.2f} MiB per image")
        if not info["sub_batch"]:
            parts = "none, a lane's images run as one part"
        elif self._sub_batch_given is None:
            parts = f"at most {info['sub_batch']} image(s) in the parts that run at once, shared out between the lanes"
        else:
            parts = f"at most {info['sub_batch']} image(s) a part"
        lines.append(f"sub-batches: {parts} ({info['sub_batch_rule']})")
        lines.append(f"threads: {info['lanes']}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<cppconv.Network {len(self._steps)} steps, inputs {self.input_names}, outputs {self.output_names}>"

    def __reduce__(self) -> Any:
        return (_rebuild, (self._model_bytes(), self._threads or None, self._precision, self._compute_dtype,
                           self._sub_batch_given, self._lanes_given))

    def _model_bytes(self) -> bytes:
        """The model's bytes again: the kept bytes with the weights the layers hold put back."""
        if not self._weights_in_layers:
            return self._bytes
        import onnx

        model = onnx.ModelProto()
        model.ParseFromString(self._bytes)
        for t in model.graph.initializer:
            held = self._weights_in_layers.get(t.name)
            if held is not None:
                t.raw_data = np.ascontiguousarray(getattr(held[0], held[1]), held[2]).tobytes()
        return model.SerializeToString()


_SEEN = object()  # Network._programs: a shape run once (recorded at its second call)
_PRECISION_WORDS = {0: "highest", 1: "high"}  # _native.get_float32_precision()'s codes
_PROGRAMS_KEPT = 2  # calls (of other input shapes) whose programs, and their arrays, a network keeps


def _hand_out(outputs: Iterable[Tuple[str, np.ndarray]], rows: Optional[Callable[[str, np.ndarray], None]],
              owned: bool) -> Dict[str, np.ndarray]:
    """A pass's outputs for its caller: each handed to rows (copied into the rows of a larger
    batch's; {} returned) where given, else {name: array the caller owns} (copied unless owned:
    a program's arrays are overwritten by its next run)."""
    if rows is None:
        return {name: value if owned else np.array(value) for name, value in outputs}
    for name, value in outputs:
        rows(name, value)
    return {}


def _program_key(lane: int, values: List[np.ndarray]) -> Tuple[Any, ...]:
    """Network._programs' key: the lane, the inputs' shapes and dtypes, and the float32 precision
    in force (a convolution's problem resolves it when recorded)."""
    return lane, tuple((v.shape, v.dtype.str) for v in values), _native.get_float32_precision()


class _BatchOutputs:
    """The outputs of a batch run in sub-batches (Network.run): each made at the first part's
    output (its dtype and sizes after the batch axis), each part's copied into its rows."""

    def __init__(self, n: int):
        self.n = n
        self.arrays: Dict[str, np.ndarray] = {}
        self._lock = threading.Lock()  # (lanes put their rows at once)

    def rows(self, lo: int, hi: int) -> Callable[[str, np.ndarray], None]:
        def put(name: str, value: np.ndarray) -> None:
            with self._lock:
                full = self.arrays.get(name)
                if full is None:
                    full = self.arrays[name] = np.empty((self.n, *value.shape[1:]), value.dtype)
            if value.shape[:1] != (hi - lo,) or value.shape[1:] != full.shape[1:] or value.dtype != full.dtype:
                # (the plan found the images independent: a part's output of other sizes is a bug)
                raise RuntimeError(f"output {name!r} of images {lo}-{hi - 1} has shape {value.shape} {value.dtype}, "
                                   f"not that of rows {lo}-{hi - 1} of {full.shape} {full.dtype}")
            full[lo:hi] = value
        return put


class _Program:
    """A recorded native program for one input shape (Network._run_program): its NetProgram
    (which holds the arrays it reads its inputs from) and the arrays holding its outputs after
    a run."""

    def __init__(self) -> None:
        # One call at a time (the arrays are the program's); fork-safe, as a child forked during
        # a run would take the program as busy for ever and run its steps in Python.
        self.lock = ForkSafeLock()
        self.native: Any = None
        self.outputs: List[Tuple[str, np.ndarray]] = []


def _check_unrecorded_step(row: Dict[str, Any], role: str, results: Any, inputs: List[Any]) -> None:
    """A step that recorded no native call must have computed nothing: by its role (_Step.role)
    it only makes an array for later steps to write, or it may give views of its inputs and
    did.  Else the recording is marked as not replayable."""
    if role == _ALLOCATES:
        return
    arrays = [i for i in inputs if isinstance(i, np.ndarray)]
    for r in results:
        if role != _VIEWS_INPUT or not (isinstance(r, np.ndarray) and any(np.may_share_memory(r, i) for i in arrays)):
            _unrecorded(f"node {row['node']!r} ({row['op']}) computes in Python")
            return


def _other_values(v: np.ndarray) -> Optional[np.ndarray]:
    """Values other than v's at every position where that can be made (None where not): the
    input of the replay that checks a recording."""
    if v.dtype.kind == "b":
        other = ~v
    elif v.dtype.kind in "iu":
        other = v + np.ones((), v.dtype)
    elif v.dtype.kind in "fc":
        with np.errstate(all="ignore"):
            other = np.asarray(v * 0.75 + 1.25).astype(v.dtype)
            # (5 and the infinities are that map's fixed points, and a NaN stays one)
            same = (other == v) | np.isnan(v)
            if same.any():
                other[same] = np.where(np.isfinite(v[same]), v[same] * 0.5 - 3, 0).astype(v.dtype)
    else:
        return None
    return None if np.any(other == v) else np.ascontiguousarray(other)


def _same_values(a: Any, b: Any) -> bool:
    """Whether two results are equal bit for bit in value (NaN equal to NaN)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and bool(
        np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


def _step_error(error: Exception, row: Dict[str, Any]) -> Exception:
    """The error of a step, of the same type where it can be, with its node in front."""
    message = f"node {row['node']!r} ({row['op']}, {row['became']}): {error}"
    try:
        return type(error)(message)
    except Exception:  # noqa: BLE001 - an exception type whose constructor takes other arguments
        return RuntimeError(message)


def _overwritable_positions(step: _Step, ins: List[int], dead: Set[int]) -> Any:
    """For an in-place step, the positions of its inputs that die at this step (each one it
    may overwrite, where nothing else holds it): the first or second operand only, as an
    elementwise step computes op(a, b, out) before it adds any third (a Sum's); None for any
    other step (a step that writes into a buffer gets its part of the arena, _arena_plan)."""
    if step.writes == _IN_PLACE:
        return tuple(j for j, i in enumerate(ins[:2]) if i in dead and ins.count(i) == 1)
    return None


def _overwritable(args: List[Any], candidates: Tuple[int, ...], program: Any = None) -> Optional[np.ndarray]:
    """An input the step may write its result into: it dies at this step, nothing else holds
    it (four references: the env slot, args, `a` and getrefcount's argument; and those of a
    NetProgram being recorded), it owns its data and has the result's shape."""
    if not _REFCOUNTS_TELL:
        return None
    for j in candidates:
        a = args[j]
        held = 0 if program is None else program.holds(a)
        if (a.__class__ is np.ndarray and sys.getrefcount(a) == 4 + held and a.dtype.kind == "f"
                and a.flags.owndata and a.flags.c_contiguous and _is_broadcast_shape(a.shape, args)):
            return a
    return None


def _is_broadcast_shape(shape: Tuple[int, ...], args: List[Any]) -> bool:
    """Whether `shape` is the broadcast shape of the args' (first without NumPy's general rule,
    which costs microseconds a step: most steps' operands have the same shape)."""
    for v in args:
        if v.__class__ is not np.ndarray or v.shape != shape:
            try:
                return shape == np.broadcast_shapes(*(np.shape(v) for v in args))
            except ValueError:
                return False
    return True


def _refcounts_tell() -> bool:
    """Whether sys.getrefcount counts references as _overwritable expects on this interpreter
    (an interpreter that borrows references would read shared arrays as free): without it,
    no step writes into its input."""
    try:
        env: List[Any] = [np.zeros(2, np.float32)]
        args = [env[0]]
        alone = _overwritable(args, (0,)) is args[0]
        held = args[0]
        shared = _overwritable(args, (0,)) is None
        del args, held
        return alone and shared
    except Exception:  # noqa: BLE001 - an interpreter this probe does not suit: nothing in place
        return False


_REFCOUNTS_TELL = True
_REFCOUNTS_TELL = _refcounts_tell()


def _light_model(source: Any, values: Dict[str, np.ndarray]) -> bytes:
    """The model's bytes from its weightless copy (_weightless): the data of each initializer
    kept in `values` put back, none for the others (those a layer holds: the planner's
    held_by_layers, the network's to restore them from)."""
    from onnx import ModelProto

    light = ModelProto()
    _copy_fields(source, light, {"graph"})
    _copy_fields(source.graph, light.graph, {"initializer"})
    for t in source.graph.initializer:
        kept = light.graph.initializer.add()
        kept.CopyFrom(t)  # (of the source: no weights' data)
        value = values.get(t.name)
        if value is not None:
            kept.raw_data = np.ascontiguousarray(value, value.dtype.newbyteorder("<")).tobytes()
    return light.SerializeToString()


def _weightless(proto: Any, consts: Dict[str, np.ndarray]) -> Tuple[Any, Dict[str, np.ndarray]]:
    """A copy of the model without the data of its initializers of more than _SMALL_CONSTANT
    values and a plain NumPy dtype (their name, dims and type stay: _without_weights declares
    them as inputs), and those initializers' values from `consts` (the same arrays)."""
    from onnx import ModelProto, TensorProto

    plain = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.INT8, TensorProto.UINT8,
             TensorProto.INT16, TensorProto.UINT16, TensorProto.INT32, TensorProto.UINT32, TensorProto.INT64,
             TensorProto.UINT64, TensorProto.BOOL}
    model = ModelProto()
    _copy_fields(proto, model, {"graph"})
    _copy_fields(proto.graph, model.graph, {"initializer"})
    values: Dict[str, np.ndarray] = {}
    for t in proto.graph.initializer:
        if t.data_type in plain and t.data_location == TensorProto.DEFAULT and \
                int(np.prod(t.dims, dtype=np.int64)) > _SMALL_CONSTANT and t.name in consts:
            _copy_fields(t, model.graph.initializer.add(), _TENSOR_DATA)  # (its name, doc_string, ...)
            values[t.name] = consts[t.name]
        else:
            model.graph.initializer.append(t)
    return model, values


# A TensorProto's fields that hold its values.
_TENSOR_DATA = frozenset({"raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data",
                          "string_data"})


def _copy_fields(source: Any, target: Any, skip: AbstractSet[str]) -> None:
    """source's fields but those in `skip` into target (not copying the weights just to drop them)."""
    for field, value in source.ListFields():
        if field.name in skip:
            continue
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
        if repeated:
            getattr(target, field.name).extend(value)
        elif field.message_type is not None:
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)


def _same_buffer(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether a and b are the same values in the same memory, in C order."""
    return a.dtype == b.dtype and a.nbytes == b.nbytes and a.flags.c_contiguous and b.flags.c_contiguous and \
        a.ctypes.data == b.ctypes.data


def _detached(message: Any) -> Any:
    """A copy of a part of a parsed model that does not keep the rest of it alive."""
    copy = type(message)()
    copy.CopyFrom(message)
    return copy


def _rebuild(data: bytes, num_threads: Optional[int], precision: Optional[str],
             compute_dtype: Optional[str] = None, sub_batch: Optional[int] = None,
             lanes: Optional[int] = None) -> Network:
    return Network(data, num_threads=num_threads, precision=precision, compute_dtype=compute_dtype,
                   sub_batch=sub_batch, lanes=lanes)


def _arena_plan(planner: _Planner, last: Dict[str, int], keep: Set[str], root: Dict[str, str]
                ) -> Tuple[List[Optional[Tuple[int, int, Tuple[int, ...]]]], List[Optional[Tuple[int, int]]], int]:
    """Where the steps write in one arena per call (docs/design.md, "Activation memory"):
    per step that writes into a buffer or in place, None or (offset, elements, shape) per image
    (times the batch at run time; shape after the batch axis); per in-place step, None or (the
    position of the input it writes over, that input's offset): the output keeps the input's
    part (else it has a part of its own); and the arena's elements per image.

    Two values alive at the same step never share memory (greedy by size, as TensorFlow
    Lite's arena planner: largest first, each at the lowest offset free over its lifetime).
    A value lives from its step to its last reader, and to the last reader of any value that
    may share its memory: a view, and the output of a step that may return its input (a
    layout change of one pixel); a value an output may share lives to the end.  Only values
    of the network's dtype are placed; the network's outputs are not (the caller keeps them)."""
    n_steps = len(planner.steps)
    end: Dict[str, int] = {name: k for name, k in last.items()}
    for name in keep:
        end[name] = n_steps
    # The value whose memory a value may be (its own where absent), and its lifetime extended
    # over every value that may be its memory.
    memory: Dict[str, str] = {}
    for s in planner.steps:
        if s.ins and s.may_return_input:
            for o in s.outs:
                if o:
                    memory[o] = memory.get(s.ins[0], s.ins[0])
    for o, source in memory.items():
        end[source] = max(end.get(source, -1), end.get(o, -1))

    def memory_of(name: str) -> str:
        return memory.get(name, name)

    def placeable(name: str) -> Optional[Tuple[int, ...]]:
        """The value's shape after the batch axis where it may live in the arena."""
        shape = planner.stored_shape(name, batch=1)
        dtype = planner.dtypes.get(name.split("@")[0])
        if name in keep or name in root or not shape or dtype is None or np.dtype(dtype) != planner.dtype:
            return None
        if (planner.stored_shape(name, batch=2) or ())[:1] != (2,):  # (a first axis that is not the batch)
            return None
        return tuple(shape[1:])

    # [shape after the batch axis, first step, last step, writing step]
    groups: List[List[Any]] = []
    group_of: Dict[str, int] = {}
    in_place: List[Any] = [None] * n_steps  # (input position, group), then (position, offset)
    for k, s in enumerate(planner.steps):
        if s.view or len(s.outs) != 1 or not s.outs[0]:
            continue
        o = s.outs[0]
        tail = placeable(o) if s.writes in (_INTO_BUFFER, _IN_PLACE) else None
        if s.writes == _IN_PLACE:
            for j, i in enumerate(s.ins[:2]):  # (see _overwritable_positions)
                g = group_of.get(i)
                # (not where another operand may share i's memory: a native pass such as the
                # channel gate reads its operands as it writes)
                if (g is not None and tail == groups[g][0] and end.get(i) == k and s.ins.count(i) == 1
                        and i not in keep and all(memory_of(v) != i for v in s.ins if v != i)):
                    group_of[o] = g  # (the output takes over the input's part)
                    groups[g][2] = max(groups[g][2], end.get(o, k))
                    in_place[k] = (j, g)
                    tail = None
                    break
        # (a part of its own; for an in-place step, one whose input is read later, say a
        # DenseNet block's Concat by its BatchNormalization)
        if tail is not None:
            group_of[o] = len(groups)
            groups.append([tail, k, max(k, end.get(o, k)), k])
    align = max(1, 64 // planner.dtype.itemsize)
    at: List[Optional[Tuple[int, int, Tuple[int, ...]]]] = [None] * n_steps
    placed: List[Tuple[int, int, int, int]] = []  # (offset, elements, first step, last step)
    total = 0
    offsets: Dict[int, int] = {}
    def elements(shape: Tuple[int, ...]) -> int:
        return int(np.prod(shape, dtype=np.int64))

    for g, (tail, first, final, k) in sorted(enumerate(groups), key=lambda e: (-elements(e[1][0]), e[1][1])):
        size = -(-elements(tail) // align) * align  # (each value 64-byte aligned at any batch)
        offset = 0
        for lo, hi in sorted((o, o + e) for o, e, f, z in placed if f <= final and first <= z):
            if offset + size <= lo:
                break
            offset = max(offset, hi)
        placed.append((offset, size, first, final))
        at[k] = (offset, elements(tail), tail)
        offsets[g] = offset
        total = max(total, offset + size)
    for k, planned in enumerate(in_place):
        if planned is not None:
            in_place[k] = (planned[0], offsets[planned[1]])
    return at, in_place, total


def _arena_part(arena: np.ndarray, at: Tuple[int, int, Tuple[int, ...]], n: int) -> np.ndarray:
    """The part `at` (offset, elements, shape after the batch axis; per image) of a call's
    arena at batch n."""
    offset, elements, tail = at
    return arena[offset * n:(offset + elements) * n].reshape(n, *tail)


def _in_arena(args: List[Any], j: int, handed: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """args[j], where an in-place step may write its result into it: the array this call
    handed out at the input's planned part of the arena (which the plan gives the result), of
    a float dtype, of the result's shape, sharing no memory with the other operands."""
    a = args[j]
    if (a is not handed or a.dtype.kind != "f" or not _is_broadcast_shape(a.shape, args)
            or any(np.may_share_memory(a, v) for i, v in enumerate(args) if i != j)):
        return None
    return a


def _outside_arena(results: Tuple[Any, ...], memory: np.ndarray, spare: Optional[np.ndarray],
                   row: Dict[str, Any]) -> Tuple[Any, ...]:
    """A step's results, each a copy where it shares the arena's memory though the plan gave
    it none (a view of an input the step is not known to return): the plan may hand that
    memory to a later value.  The copy is Python work: the shape does not record."""
    # (cheap first: most results are the step's part itself, or memory outside the arena)
    stray = [j for j, r in enumerate(results) if r is not spare and isinstance(r, np.ndarray) and r.base is memory
             and not (spare is not None and _byte_bounds(spare)[0] <= _byte_bounds(r)[0]
                      and _byte_bounds(r)[1] <= _byte_bounds(spare)[1])]
    if not stray:
        return results
    _unrecorded(f"node {row['node']!r} ({row['op']}) returned a view of an input in the arena")
    return tuple(np.array(r) if j in stray else r for j, r in enumerate(results))


try:
    from numpy.lib.array_utils import byte_bounds as _byte_bounds
except ImportError:  # NumPy 1.x
    _byte_bounds = np.byte_bounds  # type: ignore[attr-defined]


def _peak_bytes(planner: _Planner, last: Dict[str, int], keep: Set[str], root: Dict[str, str]) -> Optional[int]:
    """The most activation memory alive at once at batch 1, walking the steps: a value is
    alive from its step until its last reader (views count with the value they share)."""
    def nbytes(name: str) -> Optional[int]:
        shape = planner.stored_shape(name)
        if shape is None:
            return None
        itemsize = planner.dtype.itemsize
        return int(np.prod(shape, dtype=np.int64)) * itemsize

    live: Dict[str, int] = {}
    for v in planner.inputs:
        size = nbytes(v.name)
        if size is None:
            return None
        live[v.name] = size
    peak = sum(live.values())
    for k, s in enumerate(planner.steps):
        for o in s.outs:
            if o and not s.view and o not in root:
                size = nbytes(o)
                if size is None:
                    return None
                live[o] = size
        peak = max(peak, sum(live.values()))
        for name in list(live):
            if name not in keep and last.get(name, -1) <= k:
                del live[name]
    return peak
