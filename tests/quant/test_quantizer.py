"""The quantizer's placement and precisions, checked on the converted tiny network."""

from __future__ import annotations

import pytest
import torch

from stereoq.models.build import build_model
from stereoq.quant.prepare import calibrate, convert, prepare
from stereoq.quant.quantizer import QuantRecipe
from stereoq.quant.report import precision_report

from .conftest import random_pair, tiny_cfg


@pytest.fixture(scope="module")
def converted() -> torch.fx.GraphModule:
    torch.manual_seed(0)
    model = build_model(tiny_cfg().model)
    observed = prepare(model, QuantRecipe(bins=256))
    calibrate(observed, [random_pair(2, seed=1), random_pair(1, 96, 192, seed=2)])
    return convert(observed)


def test_every_op_is_quantized(converted: torch.fx.GraphModule) -> None:
    report = precision_report(converted)
    assert report["float_ops"] == []
    assert report["summary"]["float"] == 0
    by_op = report["by_op"]
    # 2-D and 3-D convolutions, adds, concats and the cost volume all in 8 bits
    for op in ("conv2d.default", "conv3d.default", "add.Tensor", "cat.default", "mean.dim",
               "stack.default"):
        assert by_op[op].get("int8", 0) > 0, op


def _ops(converted: torch.fx.GraphModule, module: str, op: str) -> list[dict]:
    return [o for o in precision_report(converted)["ops"]
            if o["op"] == op and module in o["module"]]


def test_disparity_tensors_are_int16_and_features_uint8(converted: torch.fx.GraphModule) -> None:
    (softmax,) = _ops(converted, "head.regression", "softmax.int")
    assert softmax["output"] == "int16"
    (regression,) = _ops(converted, "head.regression", "sum.dim_IntList")
    assert regression["output"] == "int16"
    offsets = _ops(converted, ".offset", "conv2d.default")
    assert len(offsets) == 4 and all(o["output"] == "int16" for o in offsets)
    residual = [
        o for o in _ops(converted, "refinement", "add.Tensor") if "blocks" not in o["module"]
    ]
    assert len(residual) == 3 and all(o["output"] == "int16" for o in residual)
    concats = _ops(converted, "refinement.levels", "cat.default")
    assert len(concats) == 4 and all(o["output"] == "int16" for o in concats)
    agg = _ops(converted, "head.aggregation", "conv3d.default")
    assert agg and all(o["inputs"][:2] == ["uint8", "int8"] and o["output"] == "uint8"
                       for o in agg)


def test_weights_per_channel_symmetric_and_input_fixed_scale(
    converted: torch.fx.GraphModule,
) -> None:
    per_channel = [n for n in converted.graph.nodes
                   if n.target == torch.ops.quantized_decomposed.dequantize_per_channel.default]
    convs = [n for n in converted.graph.nodes
             if n.op == "call_function" and "conv" in str(n.target)]
    assert len(per_channel) == len(convs)
    for node in per_channel:
        _, _, zero_points, axis, qmin, qmax, dtype = node.args
        assert (qmin, qmax, dtype, axis) == (-127, 127, torch.int8, 0)
        assert not getattr(converted, zero_points.target).any()
    # the first quantizer sees the network input: pixel - 128 exactly (scale 1/128, zp 128)
    first_q = next(n for n in converted.graph.nodes
                   if str(n.target).startswith("quantized_decomposed.quantize_per_tensor"))
    assert first_q.args[0].op == "placeholder"
    assert first_q.args[1:4] == (1.0 / 128.0, 128, 0)


def test_converted_graph_tracks_the_float_model() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_cfg().model).eval()
    x = random_pair(1, seed=3)
    observed = prepare(model, QuantRecipe(observer="minmax"))
    calibrate(observed, [x])
    with torch.no_grad():
        ref, out = model.raw(x)[-1], convert(observed)(x)[-1]
    err = (ref - out).abs().mean().item()
    assert err < 0.1 * ref.abs().mean().item()
