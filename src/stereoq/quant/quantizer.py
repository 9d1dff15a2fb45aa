"""StereoNet's PT2E quantizer: int8 convolutions, int16 elementwise disparity, Q/DQ where ONNX
Runtime fuses.

Placement follows ONNX Runtime's QDQ fusion conventions, so the exported graph runs as
QLinearConv / QLinearAdd / QLinearConcat there:
- conv (2-D and 3-D) (+ ReLU): uint8 per-tensor input, int8 per-channel symmetric weight in
  [-127, 127], one uint8 output quantizer after the ReLU (BN is folded before export), int32
  accumulation. This holds for the convolutions that read or write disparity too (refinement
  stems and offset convs, the cost-aggregation score conv): ONNX Runtime has no int16
  convolution kernel, so a 16-bit conv would run in float there;
- add (+ ReLU), concat/stack, mul, mean, sum, softmax: every input and the output quantized;
- data movement (slice, pad, reshape, squeeze, ...) and bilinear resize: share their input's
  parameters.
The elementwise disparity path (softmax, soft-argmin regression, disparity upsampling, the
residual add + ReLU of each refinement level) is int16: 8 bits there roughly double the error,
and these ops are cheap (one channel). An int16 tensor entering an 8-bit op (the refinement
stem's concat of disparity and image) is requantized to uint8 with its own scale; an 8-bit
tensor entering an int16 op is read as is. ``QuantRecipe.disparity_conv_bits = 16``
(``stages.calibration.disparity_conv_bits: 16`` in the config) makes the disparity
convolutions (and the stem concat) int16 too, for runtimes that have such kernels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch.fx import GraphModule, Node

from stereoq.quant.observer import PercentileObserver
from stereoq.quant.op_kinds import CONV, RELU
from stereoq.quant.torchao_import import pt2e

_q = pt2e().quantizer
QuantizationSpec = _q.QuantizationSpec
SharedQuantizationSpec = _q.SharedQuantizationSpec
FixedQParamsQuantizationSpec = _q.FixedQParamsQuantizationSpec
QuantizationAnnotation = _q.QuantizationAnnotation

aten = torch.ops.aten
ANNOTATION_KEY = "quantization_annotation"

BATCH_NORM = {aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default}
ADD = {aten.add.Tensor, aten.add_.Tensor}
CONCAT = {aten.cat.default, aten.stack.default}
ELEMENTWISE = {
    aten.mul.Tensor,
    aten.mean.dim,
    aten.sum.dim_IntList,
    aten.softmax.int,
    aten._softmax.default,
    aten.relu.default,
    aten.sub.Tensor,
}
# Bilinear resizing stays within its input's range: the output shares the input's scale, which
# lets ONNX Runtime drop the Q/DQ pair and resize uint8 directly.
SAME_RANGE = {aten.upsample_bilinear2d.vec, aten.upsample_bilinear2d.default}
DATA_MOVEMENT = {
    aten.slice.Tensor,
    aten.pad.default,
    aten.constant_pad_nd.default,
    aten.reshape.default,
    aten.view.default,
    aten.squeeze.dim,
    aten.squeeze.default,
    aten.unsqueeze.default,
    aten.select.int,
    aten.contiguous.default,
    aten.clone.default,
}

# Modules whose outputs carry disparity (normalised d / maxdisp) or its matching score.
DISPARITY_MODULES = re.compile(r"(^|\.)(head\.score|head\.regression|levels\.\d+\.offset)(\.|$)")


@dataclass(frozen=True)
class QuantRecipe:
    """How observers are set up: PTQ calibration or QAT, percentile clipping, fixed input."""

    is_qat: bool = False
    observer: str = "percentile"  # "percentile" | "minmax" (PTQ activations only)
    percentile: float = 99.985
    bins: int = 8192
    input_scale: float | None = 1.0 / 128.0  # None: observe the input like any activation
    input_zero_point: int = 128
    disparity_conv_bits: int = 8  # 8: integer convs everywhere in ORT; 16: int16 disparity convs


def _act_spec(recipe: QuantRecipe, bits: int) -> Any:
    if bits == 16:
        dtype, qmin, qmax = torch.int16, -(2**15), 2**15 - 1
    else:
        dtype, qmin, qmax = torch.uint8, 0, 255
    if recipe.is_qat:
        # Plain FakeQuantize, not the fused kernel: the fused one derives scale and zero point
        # its own way (affine fallback for one-signed per-channel weights, nudged zero points),
        # so QAT would train a different quantization than convert_pt2e deploys.
        ctor = pt2e().FakeQuantize.with_args(
            observer=pt2e().MovingAverageMinMaxObserver, eps=2**-20
        )
    elif recipe.observer == "percentile" and bits == 8:
        # int16 has resolution to spare: clipping the disparity range would only cost accuracy.
        ctor = PercentileObserver.with_args(
            percentile=recipe.percentile, bins=recipe.bins, eps=2**-20
        )
    else:
        ctor = pt2e().MinMaxObserver.with_args(eps=2**-20)
    return QuantizationSpec(
        dtype=dtype,
        quant_min=qmin,
        quant_max=qmax,
        qscheme=torch.per_tensor_affine,
        observer_or_fake_quant_ctr=ctor,
    )


def _weight_spec(recipe: QuantRecipe) -> Any:
    if recipe.is_qat:
        ctor = pt2e().FakeQuantize.with_args(
            observer=pt2e().MovingAveragePerChannelMinMaxObserver, eps=2**-20
        )
    else:
        ctor = pt2e().PerChannelMinMaxObserver.with_args(eps=2**-20)
    return QuantizationSpec(
        dtype=torch.int8,
        quant_min=-127,
        quant_max=127,
        qscheme=torch.per_channel_symmetric,
        ch_axis=0,
        observer_or_fake_quant_ctr=ctor,
    )


def module_path(node: Node) -> str:
    """Dotted path of the innermost module that produced ``node`` ('' if unknown)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    return str(list(stack.values())[-1][0])


def _tensor_args(node: Node) -> list[Node]:
    """Tensor-valued Node arguments (flattening list arguments such as cat's)."""
    out: list[Node] = []
    for arg in node.args:
        items = arg if isinstance(arg, (list, tuple)) else [arg]
        for item in items:
            if isinstance(item, Node) and (
                item.op == "get_attr" or isinstance(item.meta.get("val"), torch.Tensor)
            ):
                out.append(item)
    return out


def _single_user(node: Node) -> Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


class StereoQuantizer(_q.Quantizer):
    """Annotates the whole exported StereoNet graph; see the module docstring for the scheme."""

    def __init__(self, recipe: QuantRecipe) -> None:
        super().__init__()
        self.recipe = recipe
        self.act8 = _act_spec(recipe, 8)
        self.act16 = _act_spec(recipe, 16)
        self.weight = _weight_spec(recipe)
        self.input_spec = None
        if recipe.input_scale is not None:
            self.input_spec = FixedQParamsQuantizationSpec(
                dtype=torch.uint8,
                quant_min=0,
                quant_max=255,
                qscheme=torch.per_tensor_affine,
                scale=recipe.input_scale,
                zero_point=recipe.input_zero_point,
            )

    def annotate(self, model: GraphModule) -> GraphModule:
        out_spec: dict[Node, Any] = {}  # how each node's output is quantized
        out_bits: dict[Node, int] = {}
        disparity: set[Node] = set()  # outputs that carry disparity (int16 ops)
        done: set[Node] = set()
        conv16 = self.recipe.disparity_conv_bits == 16

        def act(bits16: bool) -> Any:
            return self.act16 if bits16 else self.act8

        def edge(arg: Node, bits16: bool) -> Any:
            """Reuse the producer's quantizer when it is not wider than the consumer wants
            (no requantization), else observe the edge at the consumer's width."""
            if arg in out_spec and out_bits[arg] <= (16 if bits16 else 8):
                return out_spec[arg]
            if arg.op == "placeholder" and self.input_spec is not None:
                return self.input_spec
            return act(bits16)

        def output(node: Node, spec: Any, bits16: bool, carries: bool) -> None:
            _annotate(node, None, spec)
            out_spec[node] = spec
            out_bits[node] = 16 if bits16 else 8
            if carries:
                disparity.add(node)

        for node in model.graph.nodes:
            if node.op != "call_function" or node in done:
                continue
            target = node.target
            inputs = _tensor_args(node)
            if not isinstance(node.meta.get("val"), torch.Tensor) or not inputs:
                continue
            carries = any(a in disparity for a in inputs)
            in_disparity_module = bool(DISPARITY_MODULES.search(module_path(node)))
            if target in CONV:
                out16 = conv16 and in_disparity_module
                x, w = node.args[0], node.args[1]
                chain = self._chain(node, BATCH_NORM | RELU)
                _annotate(node, {x: edge(x, conv16 and carries), w: self.weight}, None)
                for n in chain:
                    _annotate(n, {}, None)
                last = chain[-1] if chain else node
                output(last, act(out16), out16, out16)
                done.update(chain)
            elif target in ADD and len(inputs) == 2:
                chain = self._chain(node, RELU)
                _annotate(node, {a: edge(a, carries) for a in inputs}, None)
                last = chain[-1] if chain else node
                if chain:
                    _annotate(last, {}, None)
                output(last, act(carries), carries, carries)
                done.update(chain)
            elif target in CONCAT:
                # a concat feeds convolutions: 8-bit unless those are 16-bit
                bits16 = carries and conv16
                _annotate(node, {a: edge(a, bits16) for a in inputs}, None)
                output(node, act(bits16), bits16, bits16)
            elif target in ELEMENTWISE or in_disparity_module:
                carries = carries or in_disparity_module
                _annotate(node, {a: edge(a, carries) for a in inputs}, None)
                output(node, act(carries), carries, carries)
            elif target in DATA_MOVEMENT or target in SAME_RANGE:
                src = inputs[0]
                spec = edge(src, carries)
                _annotate(node, {src: spec}, None)
                shared = SharedQuantizationSpec((src, node))
                _annotate(node, None, shared)
                out_spec[node] = shared
                out_bits[node] = out_bits[src] if spec is out_spec.get(src) else (
                    16 if spec is self.act16 else 8
                )
                if carries:
                    disparity.add(node)
        return model

    @staticmethod
    def _chain(node: Node, targets: set) -> list[Node]:
        """Single-user successors of ``node`` in ``targets``, stopping after a ReLU."""
        chain: list[Node] = []
        user = _single_user(node)
        while user is not None and user.op == "call_function" and user.target in targets:
            chain.append(user)
            if user.target in RELU:
                break
            user = _single_user(user)
        return chain

    def validate(self, model: GraphModule) -> None:
        """Nothing to check: unsupported ops are reported by ``stereoq.quant.report``."""


def _annotate(node: Node, inputs: dict | None, output: Any) -> None:
    """Merge input specs and/or an output spec into ``node``'s annotation."""
    ann = node.meta.get(ANNOTATION_KEY) or QuantizationAnnotation()
    if inputs:
        ann.input_qspec_map.update(inputs)
    if output is not None:
        ann.output_qspec = output
    ann._annotated = True
    node.meta[ANNOTATION_KEY] = ann
