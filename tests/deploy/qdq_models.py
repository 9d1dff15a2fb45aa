"""Tiny hand-built ONNX graphs with known Q/DQ placement, for the backend checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from stereoq.quant.quantizer import QuantRecipe, weight_qmax

OPSET = 21
W_MAX = weight_qmax(QuantRecipe().weight_bits)
"""Largest |int8 weight| of the quantizer's default scheme: wider weights saturate the int16 pair
sums of ONNX Runtime's and OpenVINO's kernels on CPUs without VNNI."""


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(0)
        self.count = 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}_{self.count}"

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def q(self, x: str, scale: float, dtype: type = np.uint8, zero: int = 0) -> str:
        out = self.name("q")
        s = self.const("s", np.array(scale, np.float32))
        z = self.const("z", np.array(zero, dtype))
        self.nodes.append(helper.make_node("QuantizeLinear", [x, s, z], [out], name=out))
        return out

    def dq(self, x: str, scale: float, dtype: type = np.uint8, zero: int = 0) -> str:
        out = self.name("dq")
        s = self.const("s", np.array(scale, np.float32))
        z = self.const("z", np.array(zero, dtype))
        self.nodes.append(helper.make_node("DequantizeLinear", [x, s, z], [out], name=out))
        return out

    def qdq(self, x: str, scale: float, dtype: type = np.uint8, zero: int = 0) -> str:
        return self.dq(self.q(x, scale, dtype, zero), scale, dtype, zero)

    def conv(
        self, x: str, channels: int, quantized_weight: bool, bias: np.ndarray | None = None,
        weight_max: int = W_MAX,
    ) -> str:
        """3x3 conv, ``channels`` in and out; a quantized weight spans [-weight_max, weight_max]
        per output channel."""
        w = (self.rng.standard_normal((channels, channels, 3, 3)) * 0.1).astype(np.float32)
        if quantized_weight:
            scales = np.abs(w).reshape(channels, -1).max(1) / weight_max
            wq = np.round(w / scales[:, None, None, None]).astype(np.int8)
            wname = self.const("w", wq)
            s = self.const("ws", scales.astype(np.float32))
            z = self.const("wz", np.zeros(channels, np.int8))
            wdq = self.name("wdq")
            self.nodes.append(
                helper.make_node("DequantizeLinear", [wname, s, z], [wdq], name=wdq, axis=0)
            )
        else:
            wdq = self.const("w", w)
        out = self.name("conv")
        inputs = [x, wdq] if bias is None else [x, wdq, self.const("b", bias.astype(np.float32))]
        self.nodes.append(helper.make_node("Conv", inputs, [out], name=out, pads=[1, 1, 1, 1]))
        return out

    def relu(self, x: str) -> str:
        out = self.name("relu")
        self.nodes.append(helper.make_node("Relu", [x], [out], name=out))
        return out

    def save(self, path: Path, x: str, y: str, channels: int) -> Path:
        graph = helper.make_graph(
            self.nodes,
            "g",
            [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, channels, 16, 16])],
            [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, channels, 16, 16])],
            initializer=self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, str(path))
        return path


def conv_chain(path: Path, middle: str = "int8", channels: int = 8) -> Path:
    """input -> conv -> relu -> conv (``middle``) -> relu -> conv -> output, 16x16.

    ``middle``: "int8" (Q/DQ everywhere, ORT fuses all three convs), "float" (a float Mul
    feeds the middle conv, which then has no DequantizeLinear on its input) or "int16" (int16
    Q/DQ around the middle conv).
    """
    g = _Graph()
    x = "input"
    h = g.qdq(x, 1 / 128, np.uint8, 128)
    h = g.qdq(g.relu(g.conv(h, channels, True)), 0.05)
    if middle == "float":
        # A float Mul before the conv leaves it without a DequantizeLinear on its input. (A
        # float weight alone would not do: ORT quantizes constant weights itself.)
        scaled = g.name("mul")
        g.nodes.append(
            helper.make_node("Mul", [h, g.const("k", np.array(2.0, np.float32))], [scaled],
                             name=scaled)
        )
        h = g.qdq(g.relu(g.conv(scaled, channels, False)), 0.05)
    elif middle == "int16":
        h16 = g.qdq(h, 0.05 / 256, np.int16)
        h = g.qdq(g.relu(g.conv(h16, channels, True)), 0.05 / 256, np.int16)
        h = g.qdq(h, 0.05)
    else:
        h = g.qdq(g.relu(g.conv(h, channels, True)), 0.05)
    y = g.qdq(g.conv(h, channels, True), 0.05, np.uint8, 128)
    return g.save(path, x, y, channels)
