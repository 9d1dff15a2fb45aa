"""8-bit weights and CPUs without VNNI: the hint that names the cause, and the cause itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from stereoq.deploy import saturation
from stereoq.deploy.saturation import (
    PAIR_SAFE_WEIGHT,
    saturation_hint,
    saturation_risk,
    widest_weight,
)

from .qdq_models import W_MAX, _Graph

CHANNELS = 64


def wide_conv(path: Path, weight_max: int) -> Path:
    """input -> uint8 Q/DQ (zero point 128) -> 3x3 conv of 64 channels with int8 weights
    reaching ``weight_max`` -> uint8 Q/DQ."""
    g = _Graph()
    h = g.qdq("input", 1 / 128, np.uint8, 128)
    y = g.qdq(g.conv(h, CHANNELS, True, weight_max=weight_max), 0.02, np.uint8, 128)
    return g.save(path, "input", y, CHANNELS)


def exact_output(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The conv's uint8 output from the exact integer sum (float64), as the graph states it."""
    import torch

    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    dq_w = next(n for n in model.graph.node if n.output[0] == conv.input[1])
    w_q, w_scale = inits[dq_w.input[0]].astype(np.float64), inits[dq_w.input[1]]
    q_x = np.clip(np.rint(x * 128) + 128, 0, 255) - 128
    acc = torch.nn.functional.conv2d(torch.from_numpy(q_x.astype(np.float64)),
                                     torch.from_numpy(w_q), padding=1).numpy()
    y = acc * (w_scale[None, :, None, None] / 128)
    return np.clip(np.rint(y / 0.02) + 128, 0, 255)


def test_widest_weight_reads_the_dequantized_int8_initializers(tmp_path: Path) -> None:
    assert widest_weight(onnx.load(str(wide_conv(tmp_path / "w7.onnx", W_MAX)))) == W_MAX
    assert widest_weight(onnx.load(str(wide_conv(tmp_path / "w8.onnx", 127)))) == 127


def test_the_hint_names_weight_bits_only_where_saturation_can_happen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    eight = wide_conv(tmp_path / "w8.onnx", 127)
    seven = wide_conv(tmp_path / "w7.onnx", W_MAX)
    assert W_MAX <= PAIR_SAFE_WEIGHT < 127 and 2 * 255 * PAIR_SAFE_WEIGHT <= 32767
    monkeypatch.setattr(saturation, "cpu_has_vnni", lambda: False)
    hint = saturation_hint(eight)
    assert "reach 127" in hint and "stages.calibration.weight_bits: 7" in hint
    assert saturation_hint(seven) == ""
    assert hint == f"; {saturation_risk(eight)}"  # check's warning, as a message's tail
    monkeypatch.setattr(saturation, "cpu_has_vnni", lambda: True)
    assert saturation_hint(eight) == "" and saturation_risk(eight) == ""


def test_onnx_runtime_sums_7_bit_weights_exactly_and_8_bit_ones_only_with_vnni(
    tmp_path: Path,
) -> None:
    import onnxruntime as ort

    x = np.random.default_rng(2).uniform(-1, 1, (1, CHANNELS, 16, 16)).astype(np.float32)
    within = {}
    for bits, top in ((7, W_MAX), (8, 127)):
        model = onnx.load(str(wide_conv(tmp_path / f"w{bits}.onnx", top)))
        session = ort.InferenceSession(model.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        (y,) = session.run(None, {"input": x})
        got = np.rint(y / 0.02) + 128  # the uint8 output (all optimizations: QLinearConv)
        within[bits] = float(np.mean(np.abs(got - exact_output(model, x)) <= 1))
    assert within[7] == 1.0  # 7 bits: exact on every CPU (an LSB for float32 scaling)
    if saturation.cpu_has_vnni():
        assert within[8] == 1.0
    else:  # int16 pair sums saturate: what the hint explains
        assert within[8] < 0.99
