"""Per-op precision report of a converted (Q/DQ) graph: what runs int8, int16 or float."""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.fx import GraphModule, Node

from stereoq.quant.op_kinds import CONV, RELU
from stereoq.quant.quantizer import (
    ADD,
    DATA_MOVEMENT,
    LAYER_KEY,
    PRECISION_KEY,
    module_path,
)

_QDQ_PREFIX = "quantized_decomposed."
_BITS = {torch.uint8: 8, torch.int8: 8, torch.int16: 16, torch.int32: 32}


def _is_qdq(node: Node, kind: str) -> bool:
    return node.op == "call_function" and str(node.target).startswith(_QDQ_PREFIX + kind)


def _qdq_dtype(node: Node) -> str:
    for value in (*node.args, *node.kwargs.values()):
        if isinstance(value, torch.dtype):
            return str(value).removeprefix("torch.")
    return "?"


def _inputs(node: Node) -> list[Node]:
    out: list[Node] = []
    for arg in node.args:
        for item in arg if isinstance(arg, (list, tuple)) else [arg]:
            if isinstance(item, Node) and not isinstance(
                item.meta.get("val"), (int, float, torch.SymInt, torch.SymFloat)
            ):
                out.append(item)
    return out


def _fused_relu(node: Node) -> bool:
    """A conv or add whose only user is a ReLU: quantized as one unit after the ReLU."""
    users = list(node.users)
    return (
        node.op == "call_function"
        and (node.target in CONV or node.target in ADD)
        and len(users) == 1
        and users[0].op == "call_function"
        and users[0].target in RELU
    )


def _precision(dtypes: list[str]) -> str:
    if any(d in ("float", "?") for d in dtypes):
        return "float"
    bits = max(_BITS.get(getattr(torch, d), 32) for d in dtypes)
    return "int16" if bits == 16 else "int8"


SCHEME = {
    "convolutions": "uint8 activations in and out (per tensor), int8 per-channel symmetric "
    "weights in [-63, 63] (7 bits, stages.calibration.weight_bits; 8 bits: [-127, 127]), int32 "
    "accumulation: ONNX Runtime runs them as QLinearConv. This "
    "includes the convolutions that read or write disparity (refinement stems and offset "
    "convs, cost-aggregation score) unless the config sets "
    "stages.calibration.disparity_conv_bits: 16",
    "disparity path": "int16 for the elementwise ops that carry disparity or its matching "
    "scores (softmax, soft-argmin regression, disparity upsampling, residual add + ReLU): "
    "8 bits there cost accuracy, and these ops are cheap (one channel). ONNX Runtime has no "
    "int16 kernels and runs them in float between int16 QuantizeLinear/DequantizeLinear",
    "other ops": "8-bit (add, concat, mul, mean, resize of features): integer kernels in "
    "ONNX Runtime where it has them (QLinearAdd, QLinearConcat, QLinearMul)",
}
"""What runs at which width, and why (stored with every precision report)."""


def _reason(op: str, precision: str, output: str, override: str | None = None) -> str:
    conv = op.startswith("conv")
    if override is not None:
        return f"layer precision override: {override} (stages.calibration.precision or budget)"
    if precision == "float":
        return "not quantized: no Q/DQ around it"
    if precision == "int8":
        return "8-bit convolution (int32 accumulation)" if conv else "8-bit feature op"
    if conv:
        return ("16-bit disparity convolution (stages.calibration.disparity_conv_bits: 16); no "
                "int16 conv kernel in ONNX Runtime, which runs it in float")
    if output == "int16":
        return "carries disparity: int16 elementwise path"
    return "reads an int16 disparity tensor"


def precision_report(graph: GraphModule) -> dict[str, Any]:
    """Each tensor op of a converted graph with the precision of its inputs and output.

    An op is int8/int16 when all its inputs come through dequantize nodes and its output goes
    into a quantize node (conv biases stay float: runtimes fold them into int32 with the
    input x weight scale); otherwise it is reported as float. Each op names its layer
    (``stereoq.quant.quantizer``); ``overrides`` lists the layers whose precision was set by
    name (config or accuracy budget) rather than by the scheme.
    """
    ops: list[dict[str, Any]] = []
    overrides: dict[str, str] = {}
    for node in graph.graph.nodes:
        if node.op != "call_function" or str(node.target).startswith(_QDQ_PREFIX):
            continue
        if not isinstance(node.meta.get("val"), torch.Tensor):
            continue  # shape arithmetic
        inputs = []
        for i, arg in enumerate(_inputs(node)):
            if node.target in RELU and _fused_relu(arg):
                inputs.append("fused")
            elif _is_qdq(arg, "dequantize"):
                inputs.append(_qdq_dtype(arg))
            elif node.target in CONV and i == 2:
                inputs.append("bias")
            else:
                inputs.append("float")
        users = list(node.users)
        if _fused_relu(node):
            users = list(users[0].users)
        quantized_out = bool(users) and all(_is_qdq(u, "quantize") for u in users)
        output = _qdq_dtype(users[0]) if quantized_out else "float"
        dtypes = [d for d in inputs if d not in ("bias", "fused")] + [output]
        op = str(node.target).removeprefix("aten.")
        precision = _precision(dtypes)
        layer = node.meta.get(LAYER_KEY)
        override = node.meta.get(PRECISION_KEY)
        if override is not None:
            overrides[layer] = override
        ops.append(
            {
                "name": node.name,
                "op": op,
                "module": module_path(node),
                "layer": layer,
                "kind": "data movement" if node.target in DATA_MOVEMENT else "compute",
                "inputs": inputs,
                "output": output,
                "precision": precision,
                "reason": _reason(op, precision, output, override),
            }
        )
    counts = Counter(op["precision"] for op in ops)
    by_op: dict[str, Counter] = {}
    for op in ops:
        by_op.setdefault(op["op"], Counter())[op["precision"]] += 1
    return {
        "scheme": SCHEME,
        "summary": {k: counts.get(k, 0) for k in ("int8", "int16", "float")},
        "overrides": overrides,
        "int16_ops": [f"{op['name']} ({op['op']}, {op['module']}): {op['reason']}"
                      for op in ops if op["precision"] == "int16"],
        "by_op": {k: dict(v) for k, v in sorted(by_op.items())},
        "float_ops": [f"{op['name']} ({op['op']}, {op['module']})" for op in ops
                      if op["precision"] == "float"],
        "ops": ops,
    }
