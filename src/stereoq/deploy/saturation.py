"""Whether an int8 model's weights can saturate a runtime's int16 pair sums on this CPU.

Without VNNI (AVX2, AVX-512 without VNNI), ONNX Runtime's and oneDNN's (OpenVINO's) uint8 x int8
kernels multiply and add products in pairs into int16 (``vpmaddubsw``), which saturates when
``255 * (|w_a| + |w_b|)`` passes 32767: with weights up to 127 a wide convolution's sums go
wrong there (on one AVX2 CPU, 90 % of a 256-channel conv's outputs), while PyTorch's integer
model sums exactly. Weights within ``PAIR_SAFE_WEIGHT`` never saturate, which is why the
quantizer's default grid is [-63, 63] (``stages.calibration.weight_bits: 7``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

PAIR_SAFE_WEIGHT = 32767 // (2 * 255)
"""Largest |int8 weight| whose pair sums with uint8 activations always fit int16 (64)."""


def cpu_has_vnni() -> bool:
    """VNNI (AVX512-VNNI or AVX-VNNI): int8 products summed in int32, no int16 step. Asked of
    torch's CPU probe (private in torch 2.13: without it, assume none, which only adds a hint)."""
    probe = getattr(torch.cpu, "_is_vnni_supported", None)
    return bool(probe()) if probe is not None else False


def widest_weight(model: onnx.ModelProto) -> int:
    """Largest |value| of the int8 initializers that DequantizeLinear reads (0 if none)."""
    inits = {t.name: t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8}
    widest = 0
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            values = numpy_helper.to_array(inits[node.input[0]]).astype(np.int16)
            widest = max(widest, int(np.abs(values).max(initial=0)))
    return widest


def saturation_risk(model: onnx.ModelProto | Path) -> str:
    """What can go wrong on this CPU with this model's int8 weights, in one sentence, or ''.
    A path that is not an ONNX file (another backend's source) has nothing to say."""
    if cpu_has_vnni():
        return ""
    if isinstance(model, Path):
        if model.suffix != ".onnx":
            return ""
        model = onnx.load(str(model), load_external_data=False)
    widest = widest_weight(model)
    if widest <= PAIR_SAFE_WEIGHT:
        return ""
    return (f"its int8 weights reach {widest} and this CPU has no VNNI, where ONNX Runtime and "
            "OpenVINO add uint8 x int8 products in pairs in int16, which saturates: quantize "
            "again with stages.calibration.weight_bits: 7 (weights in [-63, 63])")


def saturation_hint(model: onnx.ModelProto | Path) -> str:
    """``saturation_risk`` as the tail of a failure message ('; ...'), or ''."""
    risk = saturation_risk(model)
    return f"; {risk}" if risk else ""
