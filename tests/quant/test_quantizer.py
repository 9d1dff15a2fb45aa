"""The quantizer's placement and precisions, checked on the converted tiny network."""

from __future__ import annotations

from operator import attrgetter

import pytest
import torch
from torch import nn

from stereoq.models.build import build_model
from stereoq.models.refinement import DisparityOffset
from stereoq.quant.prepare import (
    MIN_CONV_CHANNELS,
    RawOutputs,
    calibrate,
    convert,
    export_graph,
    fold_batchnorm,
    prepare,
)
from stereoq.quant.quantizer import (
    ANNOTATION_KEY,
    DEFAULT_RULE,
    RULES,
    QuantRecipe,
    StereoQuantizer,
    rule_for,
)
from stereoq.quant.report import precision_report

from .conftest import random_pair, tiny_cfg


@pytest.fixture(scope="module")
def observed() -> torch.fx.GraphModule:
    torch.manual_seed(0)
    model = build_model(tiny_cfg().model)
    observed = prepare(model, QuantRecipe(bins=256))
    calibrate(observed, [random_pair(2, seed=1), random_pair(1, 96, 192, seed=2)])
    return observed


@pytest.fixture(scope="module")
def converted(observed: torch.fx.GraphModule) -> torch.fx.GraphModule:
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


def test_convolutions_are_8_bit_and_the_elementwise_disparity_path_int16(
    converted: torch.fx.GraphModule,
) -> None:
    (softmax,) = _ops(converted, "head.regression", "softmax.int")
    assert softmax["output"] == "int16"
    (regression,) = _ops(converted, "head.regression", "sum.dim_IntList")
    assert regression["output"] == "int16"
    residual = [
        o for o in _ops(converted, "refinement", "add.Tensor") if "blocks" not in o["module"]
    ]
    assert len(residual) == 3 and all(o["output"] == "int16" for o in residual)
    # every convolution, the disparity ones included, is uint8 x int8 -> uint8 (QLinearConv)
    convs = [o for o in precision_report(converted)["ops"] if o["op"].startswith("conv")]
    disparity_convs = [o for o in convs if any(
        part in o["module"] for part in ("head.score", "levels.")) and "blocks" not in o["module"]]
    assert len(disparity_convs) == 9
    assert all(o["inputs"][:2] == ["uint8", "int8"] and o["output"] == "uint8" for o in convs)
    # the stem's concat requantizes the int16 disparity to uint8 next to the image
    concats = _ops(converted, "refinement.levels", "cat.default")
    assert len(concats) == 4 and all(
        o["inputs"] == ["uint8", "uint8"] and o["output"] == "uint8" for o in concats
    )
    report = precision_report(converted)
    assert report["int16_ops"] and all("conv" not in line for line in report["int16_ops"])


def test_16_bit_disparity_convolutions_on_request() -> None:
    torch.manual_seed(0)
    observed = prepare(build_model(tiny_cfg().model), QuantRecipe(bins=256,
                                                                   disparity_conv_bits=16))
    calibrate(observed, [random_pair(1, seed=1)])
    converted = convert(observed)
    offsets = _ops(converted, ".offset", "conv2d.default")
    assert len(offsets) == 4 and all(o["output"] == "int16" for o in offsets)
    stems = _ops(converted, "refinement.levels", "conv2d.default")
    stems = [o for o in stems if o["module"].endswith(".stem.0")]
    assert len(stems) == 4 and all(o["inputs"][0] == "int16" for o in stems)
    # the stem's output is 8-bit again: the residual blocks stay uint8
    blocks = _ops(converted, "refinement.levels.0.blocks", "conv2d.default")
    assert blocks and all(o["inputs"][0] == "uint8" and o["output"] == "uint8" for o in blocks)
    assert all("disparity_conv_bits" in o["reason"] for o in offsets)


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
        assert (qmin, qmax, dtype, axis) == (-63, 63, torch.int8, 0)
        assert not getattr(converted, zero_points.target).any()
        weights = getattr(converted, node.args[0].target)
        # 7 bits: each channel's largest weight reaches the end of the grid (the channels
        # padded to a full kernel block are zero)
        peaks = weights.abs().amax(dim=tuple(range(1, weights.dim())))
        assert 63 in peaks and set(peaks.tolist()) <= {0, 63}
    # the first quantizer sees the network input: pixel - 128 exactly (scale 1/128, zp 128)
    first_q = next(n for n in converted.graph.nodes
                   if str(n.target).startswith("quantized_decomposed.quantize_per_tensor"))
    assert first_q.args[0].op == "placeholder"
    assert first_q.args[1:4] == (1.0 / 128.0, 128, 0)


def test_8_bit_weights_on_request() -> None:
    torch.manual_seed(0)
    observed = prepare(build_model(tiny_cfg().model), QuantRecipe(bins=256, weight_bits=8))
    calibrate(observed, [random_pair(1, seed=1)])
    per_channel = [n for n in convert(observed).graph.nodes
                   if n.target == torch.ops.quantized_decomposed.dequantize_per_channel.default]
    assert per_channel and all(n.args[4:6] == (-127, 127) for n in per_channel)


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


def test_narrow_convs_are_padded_to_full_kernel_blocks_without_changing_results(
    observed: torch.fx.GraphModule, converted: torch.fx.GraphModule
) -> None:
    unpadded = convert(observed, min_channels=0)

    def out_channels(graph: torch.fx.GraphModule) -> list[int]:
        weights = [n.args[1].args[0] for n in graph.graph.nodes
                   if n.op == "call_function" and "conv" in str(n.target)]
        return [attrgetter(w.target)(graph).shape[0] for w in weights]

    before, after = out_channels(unpadded), out_channels(converted)
    assert min(before) < MIN_CONV_CHANNELS  # the tiny model has 1-, 8- and 16-channel convs
    assert min(after) == MIN_CONV_CHANNELS
    assert [max(c, MIN_CONV_CHANNELS) for c in before] == after
    x = random_pair(1, seed=4)
    with torch.no_grad():
        for a, b in zip(unpadded(x), converted(x), strict=True):
            assert a.shape == b.shape and torch.equal(a, b)


class _UnknownKind(nn.Module):
    """A module kind the rule table does not name."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.conv(x), dim=1)


def test_the_rule_table_covers_every_quantized_module_kind_of_the_model() -> None:
    model = build_model(tiny_cfg().model)
    graph = export_graph(
        RawOutputs(fold_batchnorm(model)), model.head.num_candidates, model.size_multiple
    )
    StereoQuantizer(QuantRecipe()).annotate(graph)
    kinds: set[str] = set()
    for node in graph.graph.nodes:
        if ANNOTATION_KEY in node.meta:
            kinds |= {
                kind
                for _, kind in node.meta["nn_module_stack"].values()
                if kind.startswith("stereoq.models.")
            }
    named = {f"{kind.__module__}.{kind.__qualname__}" for kind in RULES}
    assert kinds and kinds <= named, sorted(kinds - named)
    # the disparity kinds are the matching score, the regression and the refinement offsets
    assert {kind.__name__ for kind, rule in RULES.items() if rule.disparity} == {
        "MatchingScore",
        "DisparityRegression",
        "DisparityOffset",
    }


def test_an_unknown_module_kind_gets_the_default_rule() -> None:
    graph = torch.export.export(_UnknownKind(), (torch.zeros(1, 1, 4, 4),)).module()
    StereoQuantizer(QuantRecipe()).annotate(graph)
    ops = [n for n in graph.graph.nodes if n.op == "call_function"]
    assert ops and all(rule_for(n) is DEFAULT_RULE for n in ops)
    assert not DEFAULT_RULE.disparity
    (softmax,) = [n for n in ops if "softmax" in str(n.target)]
    assert softmax.meta[ANNOTATION_KEY].output_qspec.dtype == torch.uint8  # 8-bit, not int16
    # torch's own layers take the rule of the module they sit in
    offset = f"{DisparityOffset.__module__}.{DisparityOffset.__qualname__}"
    softmax.meta["nn_module_stack"] = {
        "a": ("levels.0.offset", offset),
        "b": ("levels.0.offset.0", "torch.nn.modules.conv.Conv2d"),
    }
    assert rule_for(softmax).disparity


def test_a_second_model_of_one_config_reuses_the_export_and_keeps_its_own_weights() -> None:
    from stereoq.quant import prepare as prepare_module

    cfg = tiny_cfg()
    torch.manual_seed(1)
    first = build_model(cfg.model).eval()
    torch.manual_seed(2)
    second = build_model(cfg.model).eval()
    for bn in (m for m in second.modules() if isinstance(m, nn.BatchNorm2d | nn.BatchNorm3d)):
        bn.running_mean.normal_()  # folding must carry this model's statistics too
    x = random_pair(1, seed=3)

    def prepared_and_converted(model: nn.Module) -> tuple[torch.Tensor, ...]:
        observed = prepare(model, QuantRecipe(bins=256))
        calibrate(observed, [x])
        with torch.no_grad():
            return (*observed(x), *convert(observed)(x))

    prepare_module._EXPORTED.clear()
    fresh = prepared_and_converted(second)  # exported from the second model itself
    prepare_module._EXPORTED.clear()
    prepared_and_converted(first)  # the cache now holds the first model's export
    (cached,) = prepare_module._EXPORTED.values()
    reused = prepared_and_converted(second)
    assert list(prepare_module._EXPORTED.values()) == [cached]  # not exported again
    for a, b in zip(reused, fresh, strict=True):
        assert torch.equal(a, b)
    # another config, another graph: its key differs, so it never gets this one
    other = build_model(cfg.model.model_copy(update={"maxdisp": 48}))
    keys = [prepare_module._export_key(m, RawOutputs(fold_batchnorm(m))) for m in (first, other)]
    assert keys[0] != keys[1]


def test_a_model_not_built_from_a_config_is_never_taken_from_the_cache() -> None:
    from stereoq.quant.prepare import _export_key

    torch.manual_seed(1)
    model = build_model(tiny_cfg().model).eval()
    assert _export_key(model, RawOutputs(fold_batchnorm(model))) is not None
    model.built_from = None  # e.g. a StereoNet assembled by hand
    assert _export_key(model, RawOutputs(fold_batchnorm(model))) is None
