"""16-bit quantization as ONNX ``QuantizeLinear`` rounds it: ``round(x / scale) + zero_point``.

PyTorch's quantize (and fake-quantize) multiplies by the reciprocal of the scale. For 8-bit
tensors the two agree but for a handful of values in a million; a 16-bit tensor spans 256 times
more steps in the same float32 mantissa, and 0.016 % of its values round the other way (measured
on uniformly spread int16 disparities). ONNX Runtime has no 16-bit fused kernels, so every
16-bit quantize of the integer model runs as the standalone ``QuantizeLinear``; evaluating those
with its division makes the disparity path round as deployed.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.fx import GraphModule, Node

from stereoq.quant.integer_conv import _value, replace_with_module

WIDE_STEPS = 256
"""A quantizer with more integer steps than this is 16-bit."""


class DivisionQuantize(nn.Module):
    """``clamp(round(x / s) + z)``: integer output, or ``(q - z) * s`` with ``fake``."""

    def __init__(self, scale: float, zero: int, low: int, high: int, dtype: torch.dtype,
                 fake: bool) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))
        self.zero, self.low, self.high, self.dtype, self.fake = zero, low, high, dtype, fake

    def forward(self, x: Tensor) -> Tensor:
        q = (torch.round(x / self.scale) + self.zero).clamp(self.low, self.high)
        if self.fake:
            return (q - self.zero) * self.scale
        return q.to(self.dtype)


def division_quantizes(gm: GraphModule, fake: bool) -> dict[str, str]:
    """Replace (in place) every 16-bit per-tensor quantize of a Q/DQ graph, or 16-bit fake
    quant of a frozen fake-quant graph, with ``DivisionQuantize``; returns new name -> old."""
    renamed: dict[str, str] = {}
    modules = dict(gm.named_modules(remove_duplicate=False))  # shared fake quants too
    for node in list(gm.graph.nodes):
        if fake:
            mod = modules.get(str(node.target)) if node.op == "call_module" else None
            if mod is None or not hasattr(mod, "fake_quant_enabled") or getattr(
                    mod, "is_per_channel", False):
                continue
            if isinstance(node.args[0], Node) and node.args[0].op == "get_attr":
                continue  # a constant: convert quantizes it with PyTorch's own rounding
            low, high = int(mod.quant_min), int(mod.quant_max)
            params = (float(mod.scale.item()), int(mod.zero_point.item()), low, high,
                      torch.int16)
        else:
            if node.op != "call_function" or "quantize_per_tensor" not in str(node.target) or (
                    "dequantize" in str(node.target)):
                continue
            values = [_value(gm, a) for a in node.args[1:6]]
            if any(isinstance(v, (Node, Tensor)) for v in values):
                continue  # computed or per-element parameters: not a plain 16-bit quantize
            scale, zero, low, high, dtype = values
            params = (float(scale), int(zero), int(low), int(high), dtype)
        if params[3] - params[2] <= WIDE_STEPS:
            continue
        new = replace_with_module(gm, node, DivisionQuantize(*params, fake=fake),
                                  f"division_quantize_{len(renamed)}", (node.args[0],))
        renamed[new.name] = node.name
        gm.graph.erase_node(node)
    if renamed:
        gm.graph.lint()
        gm.recompile()
    return renamed

