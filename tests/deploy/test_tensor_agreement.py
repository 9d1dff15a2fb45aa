"""Per-tensor ORT vs PyTorch agreement on a tiny hand-written Q/DQ graph."""

from pathlib import Path

import onnx
import pytest
import torch
import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers the Q/DQ ops)
from onnx import numpy_helper
from torch import Tensor, nn

from stereoq.deploy.onnx_export import Agreement, to_onnx
from stereoq.deploy.tensor_agreement import compare_tensors, quantized_tensors

from .qdq_models import W_MAX

qd = torch.ops.quantized_decomposed


def qdq(x: Tensor, scale: float, zero: int) -> Tensor:
    q = qd.quantize_per_tensor.default(x, scale, zero, 0, 255, torch.uint8)
    return qd.dequantize_per_tensor.default(q, scale, zero, 0, 255, torch.uint8)


class TinyQdq(nn.Module):
    """input -> Q/DQ -> conv (int8 per-channel weights) + ReLU -> Q/DQ -> add the input ->
    Q/DQ; returns both. The shape of a converted PT2E graph."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        conv = nn.Conv2d(6, 6, 3, padding=1)
        scale = conv.weight.detach().abs().amax((1, 2, 3)) / W_MAX
        self.register_buffer("w_int8", qd.quantize_per_channel.default(
            conv.weight.detach(), scale, torch.zeros(6, dtype=torch.int64), 0, -W_MAX, W_MAX,
            torch.int8))
        self.register_buffer("w_scale", scale)
        self.register_buffer("w_zero", torch.zeros(6, dtype=torch.int64))
        self.bias = nn.Parameter(conv.bias.detach())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        xin = qdq(x, 1 / 128, 128)
        w = qd.dequantize_per_channel.default(
            self.w_int8, self.w_scale, self.w_zero, 0, -W_MAX, W_MAX, torch.int8)
        y = qdq(torch.relu(nn.functional.conv2d(xin, w, self.bias, padding=1)), 1 / 64, 0)
        return qdq(y + xin, 1 / 32, 64), y


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.fx.GraphModule, Path]:
    path = tmp_path_factory.mktemp("tensor_agreement") / "tiny.onnx"
    x = torch.rand(1, 6, 16, 16) * 2 - 1
    program = to_onnx(TinyQdq().eval(), x, path)
    return program.module(), path


def inputs() -> list[Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.rand(1, 6, 16, 16, generator=gen) * 2 - 1 for _ in range(2)]


def test_every_quantized_tensor_agrees_within_one_lsb(tiny) -> None:
    module, path = tiny
    model = onnx.load(str(path))
    names = quantized_tensors(model)
    tensors = compare_tensors(module, model, inputs())
    assert [t.name for t in tensors] == names and len(names) == 3
    # the conv is evaluated as ORT's integer kernel computes it: equal to the bit
    assert all(t.exact_pct == 100.0 and t.max_lsb == 0 for t in tensors)
    assert all(t.elements == 2 * 6 * 16 * 16 for t in tensors)
    agreement = Agreement(quantized=True, samples=2, tensors=tensors)
    assert agreement.ok and "3 quantized tensors" in agreement.summary()


def test_a_departing_op_is_located_and_fails_the_export_check(tiny, tmp_path: Path) -> None:
    module, path = tiny
    model = onnx.load(str(path))
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    init = next(i for i in model.graph.initializer if i.name == conv.input[2])  # the bias
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 0.05, init.name))
    source, conv_out, add_out = compare_tensors(module, model, inputs())
    assert source.within_pct == 100.0 and source.max_lsb == 0
    # the conv's output is 0.05 / (1/64) = 3.2 LSB off wherever the ReLU passes it
    assert conv_out.within_pct < 99.9 and conv_out.max_lsb >= 3
    # downstream, PyTorch runs on ORT's tensors: the add itself is right, its input was not
    assert add_out.within_pct == 100.0 and add_out.free_within_pct < 100.0
    agreement = Agreement(quantized=True, samples=2, tensors=[source, conv_out, add_out])
    assert not agreement.ok
    assert agreement.worst_tensor() is conv_out and conv_out.name in agreement.summary()


def test_outputs_and_tensors_both_decide_an_int8_export(tiny) -> None:
    module, path = tiny
    tensors = compare_tensors(module, onnx.load(str(path)), inputs())
    good = {"disparity_half": 99.95, "offset": 100.0}
    assert Agreement(quantized=True, samples=2, within_pct=good, tensors=tensors).ok
    drifted = {"disparity_half": 96.0, "offset": 100.0}  # one output off end to end
    judged = Agreement(quantized=True, samples=2, within_pct=drifted, tensors=tensors)
    assert not judged.ok and not judged.outputs_ok and judged.to_json()["tensors_ok"]
    assert not Agreement(quantized=True, samples=2, within_pct=drifted).ok
