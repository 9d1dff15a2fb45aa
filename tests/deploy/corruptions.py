"""Broken-on-purpose ONNX exports: one thing wrong each, as an exporter or runtime bug would.

Shared by the deployment tests and ``bench/bench_acceptance.py`` (which measures how far each
moves the disparity, to place the acceptance thresholds between healthy and broken).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

INPUT = "input"


def _initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    raise KeyError(name)


def _add_initializer(model: onnx.ModelProto, name: str, value: np.ndarray) -> str:
    model.graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def _quantize_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """QuantizeLinear nodes of 8-bit activations (a constant's quantize is folded away)."""
    return [
        n for n in model.graph.node
        if n.op_type == "QuantizeLinear" and len(n.input) == 3
        and _initializer(model, n.input[2]).dtype == np.uint8
    ]


def _middle(nodes: list[onnx.NodeProto]) -> onnx.NodeProto:
    if not nodes:
        raise ValueError("the model has no node to corrupt")
    return nodes[len(nodes) // 3]


def wrong_scale(model: onnx.ModelProto, factor: float = 2.0) -> onnx.ModelProto:
    """One activation quantized with ``factor`` x its scale; its dequantize keeps the old one."""
    node = _middle(_quantize_nodes(model))
    scale = _initializer(model, node.input[1]) * np.float32(factor)
    node.input[1] = _add_initializer(model, node.input[1] + "_corrupt", scale)
    return model


def wrong_zero_point(model: onnx.ModelProto, shift: int = 16) -> onnx.ModelProto:
    """One activation quantized with its zero point moved by ``shift``."""
    node = _middle(_quantize_nodes(model))
    zp = _initializer(model, node.input[2]).astype(np.int32) + shift
    new = np.clip(zp, 0, 255).astype(np.uint8)
    node.input[2] = _add_initializer(model, node.input[2] + "_corrupt", new)
    return model


def dropped_bias(model: onnx.ModelProto) -> onnx.ModelProto:
    """One convolution's bias left out."""
    convs = [n for n in model.graph.node if n.op_type == "Conv" and len(n.input) == 3]
    node = _middle(convs)
    del node.input[2]
    return model


def swapped_pair(model: onnx.ModelProto) -> onnx.ModelProto:
    """Left and right views swapped at the input (channels 3:6 first)."""
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name == INPUT:
                node.input[i] = "input_swapped"
    split = _add_initializer(model, "swap_split", np.array([3, 3], dtype=np.int64))
    model.graph.node.insert(0, helper.make_node(
        "Concat", ["input_right", "input_left"], ["input_swapped"], axis=1))
    model.graph.node.insert(0, helper.make_node(
        "Split", [INPUT, split], ["input_left", "input_right"], axis=1))
    return model


CORRUPTIONS: dict[str, Callable[[onnx.ModelProto], onnx.ModelProto]] = {
    "wrong_scale": wrong_scale,
    "wrong_zero_point": wrong_zero_point,
    "dropped_bias": dropped_bias,
    "swapped_pair": swapped_pair,
}
"""Name -> corruption; the first three apply to int8 QDQ exports, the last to any."""


def corrupt_file(path: str, name: str) -> None:
    """Apply corruption ``name`` to the ONNX file at ``path`` in place."""
    model = onnx.load(path)
    onnx.save(CORRUPTIONS[name](model), path)
