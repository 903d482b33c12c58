"""Quantized ONNX models (as onnxruntime.quantization writes them) for cppconv.Network.

Two forms reach the planner as one:
- QOperator models use quantized operators, some of them ONNX Runtime's own (com.microsoft:
  QLinearAdd, QLinearConcat, QGemm, ...).  expand_qoperator rewrites each of those, and the
  standard QLinearMatMul, into the standard operators that define it: DequantizeLinear of the
  inputs, the float operator, QuantizeLinear of the result (a QDQ group).  QLinearConv stays:
  it runs on cppconv's int8 kernels as it is.
- QDQ models are float graphs with QuantizeLinear/DequantizeLinear pairs around each quantized
  operator.  quantized_convolutions turns each group DequantizeLinear(x), DequantizeLinear(w),
  DequantizeLinear(int32 bias), Conv, [Relu or Clip(0, 6)], QuantizeLinear into one QLinearConv
  node, so the convolution runs on the int8 kernels with the activation clamped in the
  quantized domain (which equals quantizing the activated float: rounding is monotonic).

quantized_adds turns each residual addition, DequantizeLinear(a) + DequantizeLinear(b), [Relu],
QuantizeLinear, into one pass over the 8-bit values with the same float32 arithmetic,
quantized_data_movement runs a max pool, Concat, Reshape, Transpose, Slice, Flatten, Squeeze,
Unsqueeze or Identity between dequantizations and the same quantization on the 8-bit values
themselves, and quantized_tables turns each chain of elementwise operators between one 8-bit
value and a QuantizeLinear (a quantized SiLU, hard-swish, sigmoid) into one lookup a value in a
table of its 256 results, computed at load by the chain's own definition.

Every other QDQ group runs as its definition says: dequantized, the float operator, quantized.
That is ONNX's reference semantics exactly; ONNX Runtime's fused int8 kernels for those
operators may round differently by one step.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

# ONNX Runtime's quantized operators that expand_qoperator rewrites, with their float operator;
# the standard QLinearMatMul too.
MICROSOFT_QUANTIZED = ("QGemm", "QLinearAdd", "QLinearAveragePool", "QLinearConcat", "QLinearGlobalAveragePool",
                       "QLinearLeakyRelu", "QLinearMul", "QLinearSigmoid", "QLinearSoftmax")
_FLOAT_OP = {"QLinearAdd": "Add", "QLinearMul": "Mul", "QLinearAveragePool": "AveragePool",
             "QLinearGlobalAveragePool": "GlobalAveragePool", "QLinearLeakyRelu": "LeakyRelu",
             "QLinearSigmoid": "Sigmoid", "QLinearSoftmax": "Softmax", "QLinearConcat": "Concat",
             "QGemm": "Gemm", "QLinearMatMul": "MatMul"}


class ExpansionError(ValueError):
    """A quantized operator whose attributes have no standard equivalent here."""


def _is_expanded(node: Any) -> bool:
    if node.domain == "com.microsoft":
        return node.op_type in MICROSOFT_QUANTIZED
    return node.domain in ("", "ai.onnx") and node.op_type == "QLinearMatMul"


def expand_qoperator(proto: Any) -> Any:
    """The model with each quantized operator of MICROSOFT_QUANTIZED (and QLinearMatMul)
    rewritten as DequantizeLinear -> float operator -> QuantizeLinear; the model itself when it
    has none.  Raises ExpansionError for attributes with no standard equivalent."""
    if not any(_is_expanded(n) for n in proto.graph.node):
        return proto
    import onnx
    from onnx import helper

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    nodes = list(model.graph.node)
    del model.graph.node[:]
    for i, node in enumerate(nodes):
        if not _is_expanded(node):
            model.graph.node.append(node)
            continue
        name = node.name or f"{node.op_type}_{i}"
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        model.graph.node.extend(_expansion(helper, name, node.op_type, list(node.input), list(node.output), attrs))
    return model


def _expansion(helper: Any, name: str, op: str, ins: List[str], outs: List[str],
               attrs: Dict[str, Any]) -> List[Any]:
    """The standard nodes that compute one quantized operator."""
    new: List[Any] = []

    def dequantized(value: str, scale: str, zero_point: str, tag: str, axis: Optional[int] = None) -> str:
        out = f"{name}/{tag}_dequantized"
        kw = {} if axis is None else {"axis": axis}
        new.append(helper.make_node("DequantizeLinear", [value, scale, zero_point], [out],
                                    name=f"{name}/dequantize_{tag}", **kw))
        return out

    def result(float_value: str, scale: str, zero_point: str) -> None:
        if scale:
            new.append(helper.make_node("QuantizeLinear", [float_value, scale, zero_point], outs[:1],
                                        name=f"{name}/quantize"))

    def refuse(attribute: str, value: Any, supported: str) -> ExpansionError:
        return ExpansionError(f"node {name!r} ({op}): attribute {attribute}={value!r} is not supported; "
                              f"supported: {supported}")

    float_out = f"{name}/float_result"
    if op in ("QLinearAdd", "QLinearMul"):  # A, A_scale, A_zp, B, B_scale, B_zp, C_scale, C_zp
        a = dequantized(ins[0], ins[1], _at(ins, 2), "a")
        b = dequantized(ins[3], ins[4], _at(ins, 5), "b")
        new.append(helper.make_node(_FLOAT_OP[op], [a, b], [float_out], name=f"{name}/float"))
        result(float_out, ins[6], _at(ins, 7))
    elif op == "QLinearMatMul":  # a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp
        a = dequantized(ins[0], ins[1], ins[2], "a")
        b = dequantized(ins[3], ins[4], ins[5], "b", axis=-1)  # per column when b_scale is a vector
        new.append(helper.make_node("MatMul", [a, b], [float_out], name=f"{name}/float"))
        result(float_out, ins[6], ins[7])
    elif op in ("QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearSigmoid", "QLinearLeakyRelu",
                "QLinearSoftmax"):  # X, X_scale, X_zp, Y_scale, Y_zp
        if attrs.pop("channels_last", 0):
            raise refuse("channels_last", 1, "0 (channels-first input, as ONNX's own operators)")
        if op == "QLinearSoftmax":
            version = attrs.pop("opset", 13)
            if version < 13 and attrs.get("axis", 1) != -1:
                raise refuse("opset", version, "13 or later, or axis=-1 (where the opset-1 and opset-13 "
                                                "Softmax agree)")
        x = dequantized(ins[0], ins[1], _at(ins, 2), "x")
        new.append(helper.make_node(_FLOAT_OP[op], [x], [float_out], name=f"{name}/float", **attrs))
        result(float_out, ins[3], _at(ins, 4))
    elif op == "QLinearConcat":  # Y_scale, Y_zp, then (X, X_scale, X_zp) per input
        if (len(ins) - 2) % 3:
            raise ExpansionError(f"node {name!r} (QLinearConcat): {len(ins)} inputs; it takes Y_scale, "
                                 f"Y_zero_point and a (X, X_scale, X_zero_point) triple per input")
        parts = [dequantized(ins[k], ins[k + 1], ins[k + 2], f"x{j}") for j, k in enumerate(range(2, len(ins), 3))]
        new.append(helper.make_node("Concat", parts, [float_out], name=f"{name}/float", **attrs))
        result(float_out, ins[0], ins[1])
    elif op == "QGemm":  # A, a_scale, a_zp, B, b_scale, b_zp, [C (int32)], [y_scale, y_zp]
        trans_b = int(attrs.get("transB", 0))
        a = dequantized(ins[0], ins[1], ins[2], "a")
        b = dequantized(ins[3], ins[4], ins[5], "b", axis=0 if trans_b else 1)
        gemm_ins = [a, b]
        if _at(ins, 6):  # C's scale is a_scale * b_scale, its zero point 0
            c_scale = f"{name}/c_scale"
            new.append(helper.make_node("Mul", [ins[1], ins[4]], [c_scale], name=f"{name}/c_scale"))
            gemm_ins.append(dequantized(ins[6], c_scale, "", "c", axis=0))
        new.append(helper.make_node("Gemm", gemm_ins, [float_out if _at(ins, 7) else outs[0]], name=f"{name}/float",
                                    **attrs))
        result(float_out, _at(ins, 7), _at(ins, 8))
    else:  # pragma: no cover - MICROSOFT_QUANTIZED and this function list the same operators
        raise AssertionError(op)
    return new


def _at(values: Sequence[str], i: int) -> str:
    return values[i] if i < len(values) else ""


_EIGHT_BIT = (np.uint8, np.int8)


def _one_value(known: Dict[str, np.ndarray], name: str, dtypes: Sequence[Any] = ()) -> bool:
    """Whether `name` is a constant of one value (of one of `dtypes`, where given)."""
    return name in known and known[name].size == 1 and (not dtypes or known[name].dtype in dtypes)


def _eight_bit_quantization(known: Dict[str, np.ndarray], node: Any, zero_point_required: bool = False) -> bool:
    """Whether a QuantizeLinear or DequantizeLinear node is per tensor: one scale, and one 8-bit
    zero point (or none, ONNX's uint8 zero, unless `zero_point_required`)."""
    zero = node.input(2)
    return _one_value(known, node.input(1)) and (
        _one_value(known, zero, _EIGHT_BIT) if zero != "" or zero_point_required else True)


class _Wiring:
    """Which node produces each value of a node list and which read it."""

    def __init__(self, nodes: List[Any], graph_outputs: Set[str]) -> None:
        self.producer: Dict[str, Any] = {o: n for n in nodes for o in n.outputs if o}
        self.readers: Dict[str, List[Any]] = {}
        for n in nodes:
            for i in n.inputs:
                if i:
                    self.readers.setdefault(i, []).append(n)
        self.graph_outputs = graph_outputs

    def only_reader(self, value: str) -> Optional[Any]:
        """The one node that reads value, None where several do or it is a graph output."""
        r = self.readers.get(value, [])
        return r[0] if len(r) == 1 and value not in self.graph_outputs else None

    def dequantize_of(self, value: str) -> Optional[Any]:
        """The DequantizeLinear node that produces value, if one does."""
        n = self.producer.get(value)
        return n if n is not None and n.op == "DequantizeLinear" else None


# ----- QDQ convolutions -----------------------------------------------------------------------

# Activations a quantized convolution clamps in the quantized domain.
_QUANTIZED_ACTIVATIONS = ("relu", "relu6")


def quantized_convolutions(nodes: List[Any], known: Dict[str, np.ndarray], graph_outputs: Set[str],
                           activation_of: Callable[[Any], Any], make_node: Callable[..., Any]) -> List[Any]:
    """The nodes with each QDQ convolution group (see the module's doc) replaced by one
    QLinearConv node, placed where its Conv was.  The DequantizeLinear nodes stay (other nodes
    may read them; the plan drops the unread); the QuantizeLinear (and activation) nodes go.
    activation_of(node): the cppconv activation a node computes, or None."""
    wiring = _Wiring(nodes, graph_outputs)
    only_reader, dequantize_of = wiring.only_reader, wiring.dequantize_of
    replaced: Dict[int, Any] = {}
    removed: Set[int] = set()
    for n in nodes:
        if n.op != "Conv" or len(n.outputs) != 1:
            continue
        dq_x, dq_w = dequantize_of(n.input(0)), dequantize_of(n.input(1))
        if dq_x is None or dq_w is None:
            continue
        x_q, x_scale, x_zero = dq_x.input(0), dq_x.input(1), dq_x.input(2)
        w_q, w_scale, w_zero = dq_w.input(0), dq_w.input(1), dq_w.input(2)
        if not (_one_value(known, x_scale) and (x_zero == "" or _one_value(known, x_zero)) and x_q not in known):
            continue
        if not (w_q in known and w_scale in known and (w_zero == "" or w_zero in known)
                and known[w_q].dtype in (np.int8, np.uint8) and (known[w_scale].size == 1 or
                                                                 int(dq_w.attrs.get("axis", 1)) == 0)):
            continue
        bias = _integer_bias(n.input(2), dequantize_of(n.input(2)), known, known[x_scale], known[w_scale])
        if bias is None:
            continue
        # Conv -> [activation ->] QuantizeLinear, each the only reader of the value before it.
        after = only_reader(n.outputs[0])
        activation = None if after is None else activation_of(after)
        fused: List[Any] = []
        if after is not None and activation in _QUANTIZED_ACTIVATIONS:
            fused.append(after)
            after = only_reader(after.outputs[0])
        elif activation is not None:
            continue
        if after is None or after.op != "QuantizeLinear" or not _one_value(known, after.input(1)) or \
                not (after.input(2) == "" or _one_value(known, after.input(2))):
            continue
        fused.append(after)
        x_zero_value = known[x_zero] if x_zero else np.zeros((), np.uint8)
        y_zero_value = known[after.input(2)] if after.input(2) else np.zeros((), np.uint8)
        if x_zero_value.dtype not in (np.uint8, np.int8) or y_zero_value.dtype not in (np.uint8, np.int8):
            continue
        q = make_node(n.name, "QLinearConv", [x_q, x_scale, x_zero, w_q, w_scale, w_zero, after.input(1),
                                              after.input(2), bias], [after.outputs[0]], dict(n.attrs))
        q.activation = activation
        q.fused = [n, *fused]  # (the DequantizeLinear nodes stay: others may read them)
        replaced[id(n)] = q
        removed.update(id(f) for f in fused)
    return [replaced.get(id(n), n) for n in nodes if id(n) not in removed]


# ----- QDQ residual additions ------------------------------------------------------------------

# A QDQ group of an Add fused by quantized_adds (cppconv's own operator name, not ONNX's).
QUANTIZED_ADD = "cppconv.QuantizedAdd"


def quantized_adds(nodes: List[Any], known: Dict[str, np.ndarray], graph_outputs: Set[str],
                   activation_of: Callable[[Any], Any], make_node: Callable[..., Any]) -> List[Any]:
    """The nodes with each QDQ addition, DequantizeLinear(a) + DequantizeLinear(b), [Relu],
    QuantizeLinear (per-tensor parameters; a residual connection of a quantized CNN), replaced by
    one QUANTIZED_ADD node [a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero] placed where
    its Add was: one pass over the 8-bit values instead of three over floats, with the same
    arithmetic (cpp/elementwise.h, quantized_add).  The DequantizeLinear nodes stay, as in
    quantized_convolutions."""
    wiring = _Wiring(nodes, graph_outputs)
    only_reader = wiring.only_reader

    replaced: Dict[int, Any] = {}
    removed: Set[int] = set()
    for n in nodes:
        if n.op != "Add" or len(n.inputs) != 2 or len(n.outputs) != 1:
            continue
        dqs = [wiring.dequantize_of(v) for v in n.inputs]
        if not all(d is not None and d.input(0) not in known and _eight_bit_quantization(known, d) for d in dqs):
            continue
        after = only_reader(n.outputs[0])
        activation = None if after is None else activation_of(after)
        fused: List[Any] = []
        if after is not None and activation == "relu":
            fused.append(after)
            after = only_reader(after.outputs[0])
        if after is None or after.op != "QuantizeLinear" or not _eight_bit_quantization(known, after):
            continue
        fused.append(after)
        a, b = dqs
        q = make_node(n.name, QUANTIZED_ADD, [a.input(0), a.input(1), a.input(2), b.input(0), b.input(1), b.input(2),
                                              after.input(1), after.input(2)], [after.outputs[0]], {})
        q.activation = "relu" if activation == "relu" and len(fused) == 2 else None
        q.fused = [n, *fused]
        replaced[id(n)] = q
        removed.update(id(f) for f in fused)
    return [replaced.get(id(n), n) for n in nodes if id(n) not in removed]


# ----- QDQ elementwise chains as tables -----------------------------------------------------

# A chain of elementwise operators on one 8-bit value fused by quantized_tables (cppconv's own
# operator name, not ONNX's): inputs [x], attribute "table" (256 values of y's dtype).
QUANTIZED_TABLE = "cppconv.QuantizedTable"
# Operators that act value by value (with constant operands of one value).
# Nodes deep a tabulated group goes at most (a long chain becomes several tables; the walk's
# recursion stays shallow).
_MOST_TABULATED = 32
_ELEMENTWISE = ("Sigmoid", "Relu", "Tanh", "HardSigmoid", "HardSwish", "LeakyRelu", "Elu", "Clip", "Add", "Sub", "Mul",
                "Div", "Identity", "QuantizeLinear", "DequantizeLinear")


def quantized_tables(nodes: List[Any], known: Dict[str, np.ndarray], graph_outputs: Set[str],
                     make_node: Callable[..., Any],
                     tabulate: Callable[[List[Any], str, str], Optional[np.ndarray]]) -> List[Any]:
    """The nodes with each QuantizeLinear whose input is computed from one 8-bit value x alone,
    by elementwise operators (_ELEMENTWISE, constant operands of one value) and per-tensor
    quantizations (EfficientNet's SiLU: DequantizeLinear, Sigmoid, QuantizeLinear,
    DequantizeLinear, Mul), replaced by one QUANTIZED_TABLE node: y = table[x].  Such a group is
    a function of x's 256 values, so tabulate(group's nodes, x, y) evaluates the group's own
    definition on them once, at load (the network's own operators: the table holds the unfused
    group's results bit for bit); it returns None where it cannot (a NaN to quantize: the group
    then stays, and fails only if that value comes).  Values made inside the group must be read
    inside it alone; the DequantizeLinear nodes of x stay (the plan drops the unread)."""
    wiring = _Wiring(nodes, graph_outputs)

    def walk(value: str, depth: int, through: bool) -> Optional[Tuple[List[Any], Set[str]]]:
        """The nodes computing a float value (producers first) and the 8-bit values they read;
        `through`: across the group's own quantizations (Q then DQ) while depth allows."""
        # (An operand of rank 2 and up would broadcast y.)
        if value == "" or (_one_value(known, value) and known[value].ndim <= 1):
            return [], set()
        n = wiring.producer.get(value)
        if depth > _MOST_TABULATED or n is None or n.op not in _ELEMENTWISE or n.op == "QuantizeLinear" or \
                len([o for o in n.outputs if o]) != 1:
            return None
        if n.op == "DequantizeLinear":
            x = n.input(0)
            if not _eight_bit_quantization(known, n) or x in known:
                return None
            q = wiring.producer.get(x)
            if through and depth < _MOST_TABULATED and q is not None and q.op == "QuantizeLinear" and \
                    _eight_bit_quantization(known, q):
                inner = walk(q.input(0), depth + 2, through)
                if inner is not None and len(inner[1]) == 1:
                    return [*inner[0], q, n], inner[1]
            # x is a leaf: its dtype must be known, so its zero point given (absent, x may be int32).
            return ([n], {x}) if n.input(2) != "" else None
        found: List[Any] = []
        sources: Set[str] = set()
        for v in n.inputs:
            part = walk(v, depth + 1, through)
            if part is None:
                return None
            found += [m for m in part[0] if all(m is not f for f in found)]
            sources |= part[1]
        return [*found, n], sources

    def group_of(q: Any, through: bool) -> Optional[Tuple[List[Any], str]]:
        """The group q's input comes from and its one 8-bit source, where it is tabulated."""
        walked = walk(q.input(0), 0, through)
        if walked is None or len(walked[1]) != 1:
            return None
        group, (x,) = walked[0], tuple(walked[1])
        if all(n.op in ("QuantizeLinear", "DequantizeLinear") for n in group) or any(id(n) in removed for n in group):
            return None
        # What the group makes must be read inside it alone: all but x's own dequantizations.
        inside = {id(n) for n in group} | {id(q)}
        made = [o for n in group if not (n.op == "DequantizeLinear" and n.input(0) == x) for o in n.outputs if o]
        if any(o in graph_outputs or any(id(r) not in inside for r in wiring.readers.get(o, [])) for o in made):
            return None
        return group, x

    replaced: Dict[int, Any] = {}
    removed: Set[int] = set()
    for q in reversed(nodes):  # (consumers first: SiLU's last QuantizeLinear takes its Sigmoid's in)
        if q.op != "QuantizeLinear" or id(q) in removed or not _eight_bit_quantization(known, q):
            continue
        # The longest group; else the one that stops at the 8-bit values the group quantized.
        found = group_of(q, through=True) or group_of(q, through=False)
        if found is None:
            continue
        group, x = found
        table = tabulate([*group, q], x, q.outputs[0])
        if table is None:
            continue
        t = make_node(q.name, QUANTIZED_TABLE, [x], [q.outputs[0]], {"table": table})
        t.fused = [*group, q]
        replaced[id(q)] = t
        removed.update(id(n) for n in group if not (n.op == "DequantizeLinear" and n.input(0) == x))
    return [replaced.get(id(n), n) for n in nodes if id(n) not in removed]


# ----- QDQ channel gates -----------------------------------------------------------------------

# A QDQ squeeze-and-excitation Mul fused by quantized_gates (cppconv's own operator name):
# inputs [x, x_scale, x_zero, gate, y_scale, y_zero].
QUANTIZED_GATE = "cppconv.QuantizedGate"


def quantized_gates(nodes: List[Any], known: Dict[str, np.ndarray], graph_outputs: Set[str],
                    make_node: Callable[..., Any]) -> List[Any]:
    """The nodes with each Mul of DequantizeLinear(x) (an 8-bit x, per tensor) by a computed
    float value, read by a QuantizeLinear alone (per tensor), replaced by one QUANTIZED_GATE node
    placed where its Mul was: for a squeeze-and-excitation gate (one value per image and channel)
    one pass over the 8-bit values, with the group's float32 arithmetic; else the group's
    definition step by step.  The DequantizeLinear stays (the block's pool reads it too)."""
    wiring = _Wiring(nodes, graph_outputs)

    replaced: Dict[int, Any] = {}
    removed: Set[int] = set()
    for n in nodes:
        if n.op != "Mul" or len(n.inputs) != 2 or len([o for o in n.outputs if o]) != 1:
            continue
        after = wiring.only_reader(n.outputs[0])
        # (each zero point required: its dtype is the gate's x's or y's)
        if after is None or after.op != "QuantizeLinear" or not _eight_bit_quantization(
                known, after, zero_point_required=True):
            continue
        for i in (0, 1):
            dq, gate = wiring.dequantize_of(n.inputs[i]), n.inputs[1 - i]
            if (dq is None or not _eight_bit_quantization(known, dq, zero_point_required=True)
                    or dq.input(0) in known or gate in known):
                continue
            q = make_node(n.name, QUANTIZED_GATE, [dq.input(0), dq.input(1), dq.input(2), gate, after.input(1),
                                                   after.input(2)], [after.outputs[0]], {})
            q.fused = [n, after]
            replaced[id(n)] = q
            removed.add(id(after))
            break
    return [replaced.get(id(n), n) for n in nodes if id(n) not in removed]


# ----- QDQ max pools and data movement --------------------------------------------------------

# Operators whose results are values of their data inputs, unchanged (the max pool: the largest
# of them): on 8-bit values they give the 8-bit values of their float results.  Their data
# inputs: the first (the others are shapes, axes, starts), or every input of a Concat.
_VALUE_PRESERVING = ("MaxPool", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Identity",
                     "Concat")


def quantized_data_movement(nodes: List[Any], known: Dict[str, np.ndarray], graph_outputs: Set[str]) -> List[Any]:
    """The nodes with each DequantizeLinear(x), op, QuantizeLinear whose quantizations are all
    the same (per tensor; how onnxruntime.quantization wraps a max pool, a Concat, and the
    Reshape, Transpose and Slice of ShuffleNet's channel shuffle and split) replaced by the op on
    the 8-bit x itself, for the ops of _VALUE_PRESERVING with one output: each result value is
    an input value (the max pool: dequantizing is increasing, so the maximum commutes with it),
    and quantizing a dequantized value with the same scale and zero point gives it back (|x -
    zero| <= 255, so ((x - zero) * scale) / scale is within far less than half of x - zero).
    A DequantizeLinear that other nodes read too stays for them."""
    wiring = _Wiring(nodes, graph_outputs)

    def same(a: str, b: str) -> bool:  # two per-tensor parameters, both given
        # (an absent zero point is not one value: DequantizeLinear's is a zero of x's type, which
        # may be int8, and QuantizeLinear's a uint8 zero)
        return a != "" and b != "" and a in known and b in known and known[a].size == 1 and \
            known[a].dtype == known[b].dtype and known[a].tobytes() == known[b].tobytes()

    removed: Set[int] = set()
    for n in nodes:
        if n.op not in _VALUE_PRESERVING or len([o for o in n.outputs if o]) != 1:  # (not a MaxPool's Indices)
            continue
        data = range(len(n.inputs)) if n.op == "Concat" else range(1)
        dqs = [wiring.dequantize_of(n.input(i)) for i in data]
        q = wiring.only_reader(n.outputs[0])
        if not dqs or any(dq is None for dq in dqs) or q is None or q.op != "QuantizeLinear":
            continue
        if q.input(1) == "" or not all(same(dq.input(1), q.input(1)) and same(dq.input(2), q.input(2))
                                       and dq.input(0) not in known for dq in dqs):
            continue
        for i, dq in zip(data, dqs):
            n.inputs[i] = dq.input(0)  # (this list's own node: the model's proto is not touched)
        n.outputs = [q.outputs[0]]
        alone = [dq for dq in dict.fromkeys(dqs) if all(r is n for r in wiring.readers[dq.outputs[0]])
                 and dq.outputs[0] not in graph_outputs]
        n.fused = [*n.fused, *alone, q]
        removed.update(id(f) for f in (*alone, q))
    return [n for n in nodes if id(n) not in removed]


def _integer_bias(name: str, dequantize: Optional[Any], known: Dict[str, np.ndarray], x_scale: np.ndarray,
                  w_scale: np.ndarray) -> Optional[str]:
    """The int32 bias a QDQ convolution's bias input is ("" for none), or None where it is not
    DequantizeLinear(int32 constant, x_scale * w_scale, 0): then the group stays in float."""
    if name == "":
        return ""
    if dequantize is None:
        return None
    b: str = dequantize.input(0)
    scale, zero = dequantize.input(1), dequantize.input(2)
    if b not in known or known[b].dtype != np.int32 or scale not in known:
        return None
    if zero and (zero not in known or np.any(known[zero] != 0)):
        return None
    expected = np.float32(x_scale).reshape(()) * np.asarray(w_scale, np.float32).reshape(-1)
    given = np.asarray(known[scale], np.float32).reshape(-1)
    if given.size not in (1, expected.size) or not np.allclose(given, expected, rtol=1e-6, atol=0):
        return None
    return b
