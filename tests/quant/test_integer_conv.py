"""Integer evaluation of quantized convolutions: bit-exact to ONNX Runtime's QLinearConv, and the
same from a fake-quant graph as from its converted Q/DQ graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers the Q/DQ ops)
from torch import Tensor, nn

from stereoq.deploy.onnx_export import to_onnx
from stereoq.deploy.tensor_agreement import run_ort_tensors
from stereoq.models.build import build_model
from stereoq.quant.integer_conv import (
    ConvGeometry,
    IntegerConv,
    bias_to_int32,
    integer_conv_count,
)
from stereoq.quant.prepare import (
    LastTwo,
    calibrate,
    convert,
    copy_graph,
    load_calibration,
    prepare,
    set_observers,
)
from stereoq.quant.quantizer import QuantRecipe, weight_qmax
from stereoq.quant.report import precision_report
from stereoq.quant.runtime_eval import runtime_eval

from .conftest import random_pair, tiny_cfg

qd = torch.ops.quantized_decomposed


class QConv(nn.Module):
    """Q/DQ input (uint8) -> conv with int8 per-channel weights [+ ReLU] -> Q (uint8) -> DQ,
    the pattern of a converted PT2E graph, with arbitrary scales."""

    def __init__(self, c_in: int, c_out: int, dims: int, relu: bool, stride: int, seed: int,
                 big_weights: bool = False) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        k = (3,) * dims
        # the quantizer's 7-bit range: 8-bit weights saturate ORT's int16 pair sums on CPUs
        # without VNNI, so no integer evaluation could match it there
        self.top = top = weight_qmax(QuantRecipe().weight_bits)
        w = torch.randint(-top, top + 1, (c_out, c_in, *k), generator=gen, dtype=torch.int64)
        if not big_weights:
            w = w // 2
        self.register_buffer("w_int8", w.to(torch.int8))
        self.register_buffer("w_scale", torch.rand(c_out, generator=gen) * 0.01 + 1e-3)
        self.register_buffer("w_zero", torch.zeros(c_out, dtype=torch.int64))
        self.bias = nn.Parameter(torch.randn(c_out, generator=gen) * 0.3)
        self.x_scale = float(torch.rand(1, generator=gen) * 0.02 + 0.005)
        self.y_scale = float(torch.rand(1, generator=gen) * 0.5 + 0.05)
        self.dims, self.relu, self.stride = dims, relu, stride

    def forward(self, x: Tensor) -> Tensor:
        q = qd.quantize_per_tensor.default(x, self.x_scale, 120, 0, 255, torch.uint8)
        xin = qd.dequantize_per_tensor.default(q, self.x_scale, 120, 0, 255, torch.uint8)
        w = qd.dequantize_per_channel.default(
            self.w_int8, self.w_scale, self.w_zero, 0, -self.top, self.top, torch.int8)
        conv = nn.functional.conv2d if self.dims == 2 else nn.functional.conv3d
        y = conv(xin, w, self.bias, self.stride, 1)
        if self.relu:
            y = torch.relu(y)
        zero = 0 if self.relu else 100
        qy = qd.quantize_per_tensor.default(y, self.y_scale, zero, 0, 255, torch.uint8)
        return qd.dequantize_per_tensor.default(qy, self.y_scale, zero, 0, 255, torch.uint8)


CASES = {
    "conv2d_relu": dict(c_in=16, c_out=16, dims=2, relu=True, stride=1, shape=(1, 16, 24, 40)),
    "conv2d_stride2": dict(c_in=8, c_out=32, dims=2, relu=False, stride=2, shape=(2, 8, 20, 36)),
    "conv3d_relu": dict(c_in=8, c_out=16, dims=3, relu=True, stride=1, shape=(1, 8, 6, 10, 14)),
    # 512 * 9 taps of mean |w| ~ 32 times |q_x - z_x| <= 135 pass 2**24: split input
    "conv2d_wide": dict(c_in=512, c_out=16, dims=2, relu=False, stride=1, shape=(1, 512, 12, 20),
                        big_weights=True),
    # 4096 * 9 taps: even 16 * sum |w| passes 2**24: float64 sums
    "conv2d_huge": dict(c_in=4096, c_out=16, dims=2, relu=True, stride=1, shape=(1, 4096, 6, 6),
                        big_weights=True),
}
PARTS = {"conv2d_wide": 2, "conv2d_huge": 0}


@pytest.mark.parametrize("case", list(CASES))
def test_integer_conv_equals_onnx_runtime_to_the_bit(case: str, tmp_path: Path) -> None:
    spec = dict(CASES[case])
    shape = spec.pop("shape")
    module = QConv(seed=len(case), **spec).eval()
    gen = torch.Generator().manual_seed(3)
    x = (torch.rand(*shape, generator=gen) - 0.45) * 255 * module.x_scale
    program = to_onnx(module, x, tmp_path / "conv.onnx")
    model = onnx.load(str(tmp_path / "conv.onnx"))
    assert any(n.op_type == "Conv" for n in model.graph.node)
    (conv_out,) = [n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear"][1:]
    got = run_ort_tensors(model, [x], [conv_out])[0][conv_out]

    exact = runtime_eval(program.module())
    assert integer_conv_count(exact) == 1
    (layer,) = [m for m in exact.modules() if isinstance(m, IntegerConv)]
    assert layer.parts == PARTS.get(case, 1)
    with torch.no_grad():
        ours = exact(x)
        float_path = program.module()(x)
    ours_q = torch.round(ours / module.y_scale).numpy() + (0 if module.relu else 100)
    assert np.array_equal(ours_q.astype(np.int64), got.astype(np.int64))
    # the float evaluation of the same Q/DQ graph is the one that departs by an LSB
    assert (float_path - ours).abs().max().item() <= module.y_scale * 1.001


def test_float32_accumulation_is_exact_under_the_bound() -> None:
    gen = torch.Generator().manual_seed(0)
    w = torch.randint(-127, 128, (16, 32, 3, 3), generator=gen).float()
    x = torch.randint(0, 256, (1, 32, 20, 20), generator=gen).to(torch.uint8)
    args = dict(bias_q=torch.zeros(16, dtype=torch.int64), multiplier=torch.full((16,), 1e-4),
                x_scale=0.01, x_zero=128, x_range=(0, 255), y_scale=0.1, y_zero=128,
                y_range=(0, 255), relu=False, fake=False,
                geometry=ConvGeometry((1, 1), (1, 1), (1, 1), 1))
    layer = IntegerConv(weight_q=w, **args)
    assert layer.parts == 1  # 128 * 32 * 9 * 127 < 2**24
    acc32 = nn.functional.conv2d(x.float() - 128, w, padding=1)
    acc64 = nn.functional.conv2d(x.double() - 128, w.double(), padding=1)
    assert torch.equal(acc32.double(), acc64)
    layer64 = IntegerConv(weight_q=w, **args)
    layer64.parts, layer64.acc_dtype = 0, torch.float64
    layer64.weight_q = layer64.weight_q.double()
    assert torch.equal(layer(x), layer64(x))


def test_bias_rounds_half_to_even_on_the_int32_grid_and_saturates() -> None:
    w_scale = torch.tensor([1.0, 1.0, 1.0, 1.0])
    bias = torch.tensor([2.5, 3.5, -2.5, 1e12])
    assert bias_to_int32(bias, 1.0, w_scale).tolist() == [2, 4, -2, 2**31 - 1]
    assert bias_to_int32(None, 0.5, w_scale).tolist() == [0, 0, 0, 0]


@pytest.fixture(scope="module")
def fake_quant() -> torch.fx.GraphModule:
    """A tiny StereoNet's QAT graph with calibrated, frozen ranges."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg().model)
    observed = prepare(model, QuantRecipe(bins=256))
    calibrate(observed, [random_pair(2, seed=1)])
    fq = prepare(model, QuantRecipe(bins=256, is_qat=True))
    load_calibration(observed, fq)
    set_observers(fq, False)
    return fq


def test_fake_quant_and_converted_graphs_evaluate_identically(fake_quant) -> None:
    x = random_pair(1, seed=5)
    a = runtime_eval(LastTwo(copy_graph(fake_quant)))
    b = runtime_eval(LastTwo(convert(fake_quant)))
    convs = sum(1 for n in fake_quant.graph.nodes if "conv" in str(n.target)
                and n.op == "call_function")
    assert integer_conv_count(a) == integer_conv_count(b) == convs
    with torch.no_grad():
        for ya, yb in zip(a(x), b(x), strict=True):
            assert torch.equal(ya, yb)
    # the rewrite works on a copy: the QAT graph itself still trains in float
    assert not any(isinstance(m, IntegerConv) for m in fake_quant.modules())


def test_16_bit_convolutions_keep_their_float_arithmetic() -> None:
    torch.manual_seed(0)
    observed = prepare(build_model(tiny_cfg().model),
                       QuantRecipe(bins=256, disparity_conv_bits=16))
    calibrate(observed, [random_pair(1, seed=1)])
    converted = convert(observed)
    convs = [o for o in precision_report(converted)["ops"] if "conv" in o["op"]]
    eight_bit = [o for o in convs if o["inputs"][0] == "uint8" and o["output"] == "uint8"]
    exact = runtime_eval(converted)
    # the offset convs, refinement stems and score conv touch int16 tensors: ORT runs them in
    # float (no int16 kernels), so PyTorch does too
    assert len(convs) - len(eight_bit) == 9
    assert integer_conv_count(exact) == len(eight_bit)
    x = random_pair(1, seed=2)
    with torch.no_grad():
        for ya, yb in zip(exact(x), converted(x), strict=True):
            assert ya.shape == yb.shape and torch.isfinite(ya).all()
