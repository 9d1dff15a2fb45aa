"""The project's QDQ ONNX graph in the form OpenVINO's low-precision transformations take.

ONNX Runtime runs the export as it is; OpenVINO's ``PadTransformation`` cannot move a
dequantization through a ``Pad`` whose pad value is a float zero and fails to compile the
model. The cost volume's shifts are exactly that: ``DequantizeLinear -> Pad -> QuantizeLinear``
with one scale and zero point on both sides. Padding the integer tensor with the quantized pad
value gives the same integers, bit for bit, so each such triple becomes one integer ``Pad``.
Three more rewrites bring OpenVINO closer to the integer model or to its int8 kernels: the
weights' shared zero point is dropped, conv biases go on their int32 grid, and (optionally) the
rounding of conv outputs that residual Adds read is kept. The ONNX Runtime file is left as it
is: this works on a copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from stereoq.deploy.qdq_graph import QdqGraph
from stereoq.quant.integer_conv import bias_to_int32


@dataclass
class OvRewrite:
    """What ``for_openvino`` changed."""

    integer_pads: int = 0
    """``DequantizeLinear -> Pad -> QuantizeLinear`` triples turned into one integer Pad."""
    weight_zero_points: int = 0
    """Weight dequantizations whose all-zero zero point was dropped."""
    rounded_adds: int = 0
    """Conv outputs feeding an Add whose rounding is kept (``keep_add_rounding``)."""
    grid_biases: int = 0
    """Float conv biases put on their int32 grid (``biases_on_grid``)."""

    def to_json(self) -> dict[str, int]:
        return {
            "integer_pads": self.integer_pads,
            "weight_zero_points": self.weight_zero_points,
            "rounded_adds": self.rounded_adds,
            "grid_biases": self.grid_biases,
        }


def _attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _same_quant(g: QdqGraph, dq: onnx.NodeProto, q: onnx.NodeProto) -> bool:
    """Per-tensor, with the same scale, zero point and integer type on both sides."""
    if len(dq.input) < 3 or len(q.input) < 3:
        return False
    values = []
    for name in (dq.input[1], dq.input[2], q.input[1], q.input[2]):
        tensor = g.initializers.get(name)
        if tensor is None:
            return False
        values.append(numpy_helper.to_array(tensor))
    ds, dz, qs, qz = values
    return (
        ds.size == dz.size == qs.size == qz.size == 1
        and dz.dtype == qz.dtype
        and float(ds) == float(qs)
        and int(dz) == int(qz)
    )


def _pad_value(g: QdqGraph, pad: onnx.NodeProto) -> float | None:
    """The float pad value of a constant-mode Pad (None: not constant mode or not known)."""
    mode = _attr(pad, "mode", b"constant")
    if (mode.decode() if isinstance(mode, bytes) else mode) != "constant":
        return None
    if len(pad.input) < 3 or not pad.input[2]:
        return 0.0
    tensor = g.initializers.get(pad.input[2])
    return None if tensor is None else float(numpy_helper.to_array(tensor).reshape(-1)[0])


def integer_pads(model: onnx.ModelProto) -> int:
    """Rewrite every ``DequantizeLinear -> Pad -> QuantizeLinear`` with one quantization on both
    sides into a Pad of the integer tensor (pad value: the quantized pad value) in place;
    returns how many. Consumers of the QuantizeLinear read the integer Pad instead."""
    g = QdqGraph(model)
    graph_outputs = set(g.graph_outputs)
    drop: set[int] = set()
    replace: dict[int, onnx.NodeProto] = {}
    for pad in g.nodes:
        if pad.op_type != "Pad":
            continue
        dq = g.producer.get(pad.input[0])
        sinks = g.consumers.get(pad.output[0], [])
        if dq is None or dq.op_type != "DequantizeLinear" or len(sinks) != 1:
            continue
        q = sinks[0]
        value = _pad_value(g, pad)
        if q.op_type != "QuantizeLinear" or value is None or not _same_quant(g, dq, q):
            continue
        if pad.output[0] in graph_outputs or q.output[0] in graph_outputs:
            continue
        scale = float(numpy_helper.to_array(g.initializers[q.input[1]]))
        zero = numpy_helper.to_array(g.initializers[q.input[2]])
        info = np.iinfo(zero.dtype)
        quantized = np.clip(np.round(value / scale) + int(zero), info.min, info.max)
        const = f"{pad.name}_integer_value"
        model.graph.initializer.append(
            numpy_helper.from_array(np.array(quantized, dtype=zero.dtype), const)
        )
        new = helper.make_node(
            "Pad",
            [dq.input[0], pad.input[1], const, *pad.input[3:4]],
            [q.output[0]],
            name=f"{pad.name}_integer",
            mode="constant",
        )
        new.metadata_props.extend(pad.metadata_props)
        replace[id(pad)] = new
        drop.add(id(q))
        if len(g.consumers.get(dq.output[0], [])) == 1:
            drop.add(id(dq))
    if not replace:
        return 0
    nodes = [replace.get(id(n), n) for n in g.nodes if id(n) not in drop]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return len(replace)


def drop_weight_zero_points(model: onnx.ModelProto) -> int:
    """Drop the all-zero zero point of every weight ``DequantizeLinear`` in place; returns how
    many. The exporter gives all weights one shared zero-point constant, and OpenVINO's
    convolution transformation leaves a conv in float when its weights' zero point is shared
    with other convs (measured: 4 of 35 convs in u8 with it, 34 of 35 without). An absent zero
    point means zero, so the arithmetic is unchanged."""
    inits = {t.name: t for t in model.graph.initializer}
    dropped = 0
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or len(node.input) < 3:
            continue
        weight, zero = inits.get(node.input[0]), inits.get(node.input[2])
        if weight is None or zero is None or np.any(numpy_helper.to_array(zero)):
            continue
        del node.input[2]
        dropped += 1
    used = {i for n in model.graph.node for i in n.input}
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return dropped


def keep_add_rounding(model: onnx.ModelProto) -> int:
    """Keep the rounding of every conv output that a residual ``Add`` reads; returns how many.

    OpenVINO fuses ``Conv -> QuantizeLinear -> DequantizeLinear -> Add`` into one kernel that
    adds the other branch to the conv's accumulator, skipping the rounding of the conv's output
    to its 8-bit scale that the integer model (and ONNX Runtime) do: one LSB off on ~8 % of the
    Add's elements, compounded over residual blocks. An integer ``Max`` with the type's lowest
    value (the identity on those integers) between the QuantizeLinear and the DequantizeLinear
    is not fused, so the conv's output is rounded and the Add computes on it as written.
    """
    g = QdqGraph(model)
    inserted: dict[str, str] = {}
    new_nodes: dict[int, list[onnx.NodeProto]] = {}
    for add in g.nodes:
        if add.op_type != "Add":
            continue
        for tensor in add.input:
            dq = g.producer.get(tensor)
            if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 3:
                continue
            q = g.producer.get(dq.input[0])
            source = g.producer.get(q.input[0]) if q is not None else None
            if source is not None and source.op_type == "Relu":
                source = g.producer.get(source.input[0])
            zero = g.initializers.get(dq.input[2])
            if q is None or q.op_type != "QuantizeLinear" or zero is None:
                continue
            if source is None or source.op_type != "Conv" or dq.input[0] in inserted:
                continue
            dtype = numpy_helper.to_array(zero).dtype
            if dtype not in (np.uint8, np.int8):
                continue
            lowest = f"{q.name}_lowest"
            model.graph.initializer.append(
                numpy_helper.from_array(np.array(np.iinfo(dtype).min, dtype), lowest)
            )
            kept = f"{q.output[0]}_rounded"
            node = helper.make_node("Max", [q.output[0], lowest], [kept], name=f"{q.name}_keep")
            new_nodes.setdefault(id(q), []).append(node)
            inserted[q.output[0]] = kept
    if not inserted:
        return 0
    for node in g.nodes:
        if node.op_type == "DequantizeLinear" and node.input[0] in inserted:
            node.input[0] = inserted[node.input[0]]
    nodes = []
    for node in g.nodes:
        nodes.append(node)
        nodes.extend(new_nodes.get(id(node), []))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return len(inserted)


def _scalar_scale(g: QdqGraph, dq: onnx.NodeProto | None) -> np.ndarray | None:
    """The float32 scale(s) of a DequantizeLinear whose scale is a constant."""
    if dq is None or dq.op_type != "DequantizeLinear" or dq.input[1] not in g.initializers:
        return None
    return numpy_helper.to_array(g.initializers[dq.input[1]]).astype(np.float32)


def biases_on_grid(model: onnx.ModelProto) -> int:
    """Put each quantized conv's float bias on its int32 grid in place; returns how many.

    ONNX Runtime and the integer model add a conv's bias as ``round(bias / (s_x * s_w[c]))``
    steps of the int32 accumulator (``integer_conv.bias_to_int32``); OpenVINO adds the float
    bias after scaling the accumulator, so the part of the bias below one accumulator step moves
    ~0.05 % of a conv's outputs across a rounding boundary (measured on the quick start's
    trained model: second conv 0.045 % one LSB off, 0.001 % with this). A bias that is already a
    whole number of steps gives both runtimes the same sum; ONNX Runtime's integer bias is
    unchanged, so its results are too.
    """
    g = QdqGraph(model)
    snapped = 0
    for conv in g.nodes:
        if conv.op_type != "Conv" or len(conv.input) < 3 or conv.input[2] not in g.initializers:
            continue
        s_x = _scalar_scale(g, g.producer.get(conv.input[0]))
        s_w = _scalar_scale(g, g.producer.get(conv.input[1]))
        bias = g.initializers[conv.input[2]]
        if s_x is None or s_w is None or s_x.size != 1 or len(g.consumers[bias.name]) != 1:
            continue
        x_scale, w_scale = float(s_x.reshape(())), torch.from_numpy(s_w.reshape(-1))
        values = torch.from_numpy(numpy_helper.to_array(bias).astype(np.float32))
        steps = bias_to_int32(values, x_scale, w_scale)  # the integer model's own grid
        step = torch.tensor(x_scale, dtype=torch.float32) * w_scale
        on_grid = (steps.double() * step.double()).float().numpy()
        bias.CopyFrom(numpy_helper.from_array(on_grid, bias.name))
        snapped += 1
    return snapped


def for_openvino(
    model: onnx.ModelProto, exact_adds: bool = True
) -> tuple[onnx.ModelProto, OvRewrite]:
    """A copy of ``model`` that OpenVINO compiles with its int8 transformations, and what
    changed. Float models come back unchanged.

    ``exact_adds`` keeps the rounding of conv outputs that residual Adds read
    (``keep_add_rounding``): closer to the integer model, but each such Add then runs as a
    kernel of its own (measured on ``stereonet_sceneflow`` at 544x960, 2 threads: 44 ms of
    Adds against 3.5 ms fused, ~10 % of the int8 model's time)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    rewrite = OvRewrite(
        integer_pads=integer_pads(out),
        weight_zero_points=drop_weight_zero_points(out),
        rounded_adds=keep_add_rounding(out) if exact_adds else 0,
        grid_biases=biases_on_grid(out),
    )
    return out, rewrite
