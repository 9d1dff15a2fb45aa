"""The runtime's float arithmetic outside the convolutions: bilinear resize and 16-bit
quantization, bit-exact to ONNX Runtime, and the rewrite of a whole tiny network."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from stereoq.models.build import build_model
from stereoq.quant.bilinear import RuntimeBilinear, bilinear
from stereoq.quant.integer_conv import RENAMED_KEY, IntegerConv
from stereoq.quant.prepare import calibrate, convert, prepare
from stereoq.quant.quantize_linear import DivisionQuantize
from stereoq.quant.quantizer import QuantRecipe
from stereoq.quant.runtime_eval import runtime_eval

from .conftest import random_pair, tiny_cfg


def _run(node: helper.NodeProto, x: np.ndarray, out_type: int,
         inits: list[TensorProto]) -> np.ndarray:
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", out_type, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize(("shape", "size"), [
    ((1, 1, 12, 24), (24, 48)),     # the disparity's 2x upsampling
    ((1, 3, 64, 128), (8, 16)),     # the image's 1/8 downsampling
    ((2, 2, 10, 14), (25, 21)),     # uneven scales
])
def test_bilinear_equals_onnx_runtime_resize_to_the_bit(shape, size) -> None:
    gen = np.random.default_rng(len(shape) + size[0])
    # dequantized int16 values: the float rounding is what this is about
    x = (gen.integers(-32768, 32767, shape) * np.float32(9.2e-6)).astype(np.float32)
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear",
                            coordinate_transformation_mode="half_pixel")
    sizes = helper.make_tensor("sizes", TensorProto.INT64, [4], [*shape[:2], *size])
    got = _run(node, x, TensorProto.FLOAT, [sizes])
    ours = bilinear(torch.from_numpy(x), size).numpy()
    assert np.array_equal(ours, got)
    # the same interpolation in PyTorch's own order: equal values, other roundings
    theirs = torch.nn.functional.interpolate(torch.from_numpy(x), size=size, mode="bilinear",
                                             align_corners=False).numpy()
    assert np.abs(theirs - got).max() < 1e-6


def test_16_bit_quantize_rounds_as_onnx_quantizelinear() -> None:
    gen = np.random.default_rng(0)
    scale, zero = 9.2299e-06, -32768
    x = (gen.random((1, 1, 96, 192)) * 0.6).astype(np.float32)
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
    inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [scale]),
             helper.make_tensor("z", TensorProto.INT16, [], [zero])]
    got = _run(node, x, TensorProto.INT16, inits)
    quantize = DivisionQuantize(scale, zero, -32768, 32767, torch.int16, fake=False)
    assert np.array_equal(quantize(torch.from_numpy(x)).numpy(), got)
    fake = DivisionQuantize(scale, zero, -32768, 32767, torch.int16, fake=True)
    assert np.array_equal(fake(torch.from_numpy(x)).numpy(),
                          ((got.astype(np.float32) - zero) * np.float32(scale)))


def test_a_tiny_network_is_rewritten_where_the_runtime_computes_differently() -> None:
    torch.manual_seed(0)
    observed = prepare(build_model(tiny_cfg().model), QuantRecipe(bins=256))
    calibrate(observed, [random_pair(1, seed=1)])
    converted = convert(observed)
    ev = runtime_eval(converted)
    kinds = [type(m) for m in ev.modules()]
    convs = sum(1 for n in converted.graph.nodes if n.op == "call_function"
                and "conv" in str(n.target))
    assert kinds.count(IntegerConv) == convs
    assert kinds.count(RuntimeBilinear) == sum(
        1 for n in converted.graph.nodes if "upsample_bilinear2d" in str(n.target))
    wide = [n for n in converted.graph.nodes if n.op == "call_function"
            and "quantize_per_tensor" in str(n.target) and "dequantize" not in str(n.target)
            and n.args[5] == torch.int16]
    assert wide and kinds.count(DivisionQuantize) == len(wide)
    # every replaced quantize keeps its name for the per-tensor check
    assert len(ev.meta[RENAMED_KEY]) == convs + len(wide)
    # the original graph is untouched and both compute the same outputs within a step
    assert not any(isinstance(m, IntegerConv) for m in converted.modules())
    x = random_pair(1, seed=3)
    with torch.no_grad():
        for a, b in zip(ev(x), converted(x), strict=True):
            assert a.shape == b.shape and (a - b).abs().max() < 0.05
