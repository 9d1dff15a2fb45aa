"""An ONNX graph as tensors with producers, consumers and element types (QDQ-aware)."""

from __future__ import annotations

import ast
import re

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

DATA_MOVEMENT = frozenset({
    "Transpose", "Reshape", "Slice", "Pad", "Unsqueeze", "Squeeze", "Split", "Concat",
    "Flatten", "Identity", "Gather", "Expand", "Tile", "ReorderInput", "ReorderOutput",
    "DepthToSpace", "SpaceToDepth", "Shape", "Size", "ConstantOfShape", "Cast", "Constant",
})
"""Ops that move or reshape values without arithmetic: they run in their input's type."""

QDQ = frozenset({"QuantizeLinear", "DequantizeLinear"})

# Index of the output zero point among a QLinear op's inputs (its type is the output type).
_OUTPUT_ZERO_POINT = {
    "QLinearConv": 7, "QLinearAdd": 7, "QLinearMul": 7, "QLinearMatMul": 7, "QLinearConcat": 1,
    "QLinearSoftmax": 4, "QLinearAveragePool": 4, "QLinearGlobalAveragePool": 4,
    "QLinearSigmoid": 4, "QLinearLeakyRelu": 4, "QLinearReduceMean": 4, "QLinearWhere": 8,
}
INTEGER_TYPES = frozenset({TensorProto.UINT8, TensorProto.INT8})
WIDE_INTEGER_TYPES = frozenset({TensorProto.INT16, TensorProto.UINT16})
FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16,
                         TensorProto.DOUBLE})


class QdqGraph:
    """Lookup tables over one ``onnx.GraphProto`` (nodes assumed topologically sorted)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        self.nodes = list(graph.node)
        self.initializers = {t.name: t for t in graph.initializer}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.nodes:
            for out in node.output:
                self.producer[out] = node
            for inp in node.input:
                self.consumers.setdefault(inp, []).append(node)
        self.graph_inputs = {i.name for i in graph.input} - set(self.initializers)
        self.graph_outputs = [o.name for o in graph.output]
        self.dtype = self._element_types(graph)

    def _element_types(self, graph: onnx.GraphProto) -> dict[str, int]:
        types = {t.name: t.data_type for t in graph.initializer}
        for info in [*graph.input, *graph.value_info, *graph.output]:
            if info.type.tensor_type.elem_type:
                types[info.name] = info.type.tensor_type.elem_type
        for node in self.nodes:
            out_type = self._output_type(node, types)
            for out in node.output:
                if out and out not in types and out_type:
                    types[out] = out_type
        return types

    def _output_type(self, node: onnx.NodeProto, types: dict[str, int]) -> int:
        op = node.op_type
        if op == "QuantizeLinear":
            if len(node.input) > 2 and node.input[2]:
                return types.get(node.input[2], TensorProto.UINT8)
            attr = {a.name: a for a in node.attribute}.get("output_dtype")
            return attr.i if attr is not None and attr.i else TensorProto.UINT8
        if op == "DequantizeLinear":
            return types.get(node.input[1], TensorProto.FLOAT)
        if op in _OUTPUT_ZERO_POINT:
            idx = _OUTPUT_ZERO_POINT[op]
            return types.get(node.input[idx], TensorProto.UINT8) if len(node.input) > idx else 0
        if op in ("ConvInteger", "MatMulInteger"):
            return TensorProto.INT32
        if op in ("Shape", "Size"):
            return TensorProto.INT64
        if op == "Cast":
            return {a.name: a.i for a in node.attribute}.get("to", 0)
        if op == "QLinearConcat":
            return types.get(node.input[1], TensorProto.UINT8)
        for inp in node.input:
            if inp and inp in types:
                return types[inp]
        return 0

    def data_inputs(self, node: onnx.NodeProto) -> list[str]:
        """Inputs that carry activations (not weights, constants or empty slots)."""
        return [i for i in node.input if i and i not in self.initializers]

    def origin(self, tensor: str) -> onnx.NodeProto | None:
        """The node that computed ``tensor``, looking through data-movement ops."""
        node = self.producer.get(tensor)
        while node is not None and node.op_type in DATA_MOVEMENT:
            inputs = self.data_inputs(node)
            node = self.producer.get(inputs[0]) if inputs else None
        return node

    def sinks(self, tensor: str) -> list[onnx.NodeProto]:
        """Nodes that use ``tensor``, looking through data-movement ops."""
        found, todo = [], list(self.consumers.get(tensor, []))
        while todo:
            node = todo.pop()
            if node.op_type in DATA_MOVEMENT:
                for out in node.output:
                    todo.extend(self.consumers.get(out, []))
            else:
                found.append(node)
        return found

    def scalar(self, name: str) -> float | None:
        tensor = self.initializers.get(name)
        if tensor is None:
            return None
        value = numpy_helper.to_array(tensor)
        return float(value.reshape(-1)[0]) if value.size == 1 else float(np.max(value))

    def output_quant(self) -> dict[str, tuple[float, int] | None]:
        """Per graph output: (scale, bits) of the dequantization that produced it, or None."""
        found: dict[str, tuple[float, int] | None] = {}
        for name in self.graph_outputs:
            node = self.origin(name)
            if node is None or node.op_type != "DequantizeLinear":
                found[name] = None
                continue
            scale = self.scalar(node.input[1])
            bits = 16 if self.dtype.get(node.input[0]) in WIDE_INTEGER_TYPES else 8
            found[name] = (scale, bits) if scale is not None else None
        return found

    def float_convs(self) -> list[str]:
        """Names of a quantized graph's convolutions that are not 8-bit integer kernels, in graph
        order: those reading or writing a 16-bit or float tensor (empty for a float graph).

        No runtime has int16 convolution kernels: each dequantizes, convolves in float (summing
        in its own order) and rounds, so these are not bit-exact across runtimes.
        """
        if not any(n.op_type == "QuantizeLinear" for n in self.nodes):
            return []
        found = []
        for node in self.nodes:
            if node.op_type != "Conv":
                continue
            reads = [self.origin(i) for i in self.data_inputs(node)[:2]]
            writes = self.sinks(node.output[0])
            while any(n.op_type == "Relu" for n in writes):  # Conv + Relu + Q fuse too
                writes = [s for n in writes for s in (
                    self.sinks(n.output[0]) if n.op_type == "Relu" else [n])]
            integer = all(
                n is not None and n.op_type == "DequantizeLinear"
                and self.dtype.get(n.input[0]) in INTEGER_TYPES for n in reads
            ) and bool(writes) and all(
                n.op_type == "QuantizeLinear" and self.dtype.get(n.output[0]) in INTEGER_TYPES
                for n in writes
            )
            if not integer:
                found.append(node.name)
        return found


_PARAM = re.compile(r"%p_(?:net_)?(model_\w+?)_(?:weight|bias)\b")
_PARAM_NAME = re.compile(r"^(?:net\.)?(model\..+)\.(?:weight|bias)$")
_ORT_SUFFIX = re.compile(r"(_token_\d+|_nchwc|/duplicated)+$")


def scope_of(name: str, scopes: dict[str, str]) -> str:
    """The module of a node of ORT's optimized graph, from the source graph's ``scopes``.

    ORT keeps node names but appends ``_token_<n>`` / ``_nchwc`` when it rewrites nodes.
    """
    base = _ORT_SUFFIX.sub("", name)
    for key in (name, base, f"node_{base}"):
        if scopes.get(key):
            return scopes[key]
    return ""


def node_scopes(model: onnx.ModelProto) -> dict[str, str]:
    """Node name and output name -> the PyTorch module it came from (dynamo exporter metadata)."""
    scopes: dict[str, str] = {}
    params = {t.name for t in model.graph.initializer if _PARAM_NAME.match(t.name)}
    for node in model.graph.node:
        props = {p.key: p.value for p in node.metadata_props}
        raw = props.get("pkg.torch.onnx.name_scopes", "")
        try:
            names = [s for s in ast.literal_eval(raw) if s] if raw else []
        except (ValueError, SyntaxError):
            names = []
        # "...stem.2" is the ReLU of a conv-BN-ReLU Sequential that ORT fuses: name the block
        scope = re.sub(r"\.\d+$", "", names[-2]) if len(names) >= 2 else ""
        if not scope:  # re-exported graphs (PT2E) lose module scopes but keep parameter names
            # the parameter's own name keeps the module path (underscores in names included)
            named = [m.group(1) for i in node.input if i in params
                     and (m := _PARAM_NAME.match(i)) is not None]
            param = _PARAM.search(props.get("pkg.torch.onnx.fx_node", ""))
            scope = named[0] if named else param.group(1).replace("_", ".") if param else ""
        if not scope:
            continue
        scopes[node.name] = scope
        for out in node.output:
            scopes.setdefault(out, scope)
    return scopes
