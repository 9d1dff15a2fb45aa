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
convolutions (and the stem concat) int16 too, for runtimes that have such kernels. Which
modules carry disparity is ``RULES``, a table from the model's module kinds to a ``Rule``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule, Node

from stereoq.models.blocks import BasicBlock
from stereoq.models.head import DisparityRegression, MatchingScore, StereoNetHead
from stereoq.models.neck import StereoNetNeck
from stereoq.models.refinement import DisparityOffset, EdgeAwareRefinement, RefinementLevel
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


@dataclass(frozen=True)
class Rule:
    """How the ops inside one kind of module are quantized."""

    disparity: bool = False
    """Its outputs carry disparity (normalised d / maxdisp) or its matching score: its ops other
    than convolutions, adds and concats are int16, its convolutions output at
    ``QuantRecipe.disparity_conv_bits``. Otherwise ops are 8-bit unless an input carries
    disparity (a refinement level's residual add, an upsampled disparity)."""


FEATURES = Rule()
DISPARITY = Rule(disparity=True)
DEFAULT_RULE = FEATURES
"""The rule of an op that no module kind of ``RULES`` encloses."""

RULES: dict[type[nn.Module], Rule] = {
    StereoNetNeck: FEATURES,
    BasicBlock: FEATURES,
    StereoNetHead: FEATURES,  # cost volumes and 3-D aggregation
    MatchingScore: DISPARITY,
    DisparityRegression: DISPARITY,
    EdgeAwareRefinement: FEATURES,
    RefinementLevel: FEATURES,  # its stem and residual blocks
    DisparityOffset: DISPARITY,
}
"""Module kind -> rule. An op takes the rule of the innermost enclosing module listed here, so
torch's own layers (Conv2d, Sequential, ...) follow the module they sit in."""


def _kind_name(kind: type | str) -> str:
    """``torch.export`` records a module's kind as ``'package.module.QualName'``."""
    return kind if isinstance(kind, str) else f"{kind.__module__}.{kind.__qualname__}"


_RULE_BY_KIND = {_kind_name(kind): rule for kind, rule in RULES.items()}


def rule_for(node: Node) -> Rule:
    """The rule of the innermost module kind around ``node`` in ``RULES``, else ``DEFAULT_RULE``."""
    stack = node.meta.get("nn_module_stack") or {}
    for _path, kind in reversed(list(stack.values())):
        rule = _RULE_BY_KIND.get(_kind_name(kind))
        if rule is not None:
            return rule
    return DEFAULT_RULE


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
        """Each op by its kind (conv, add, concat, elementwise, data movement) and the rule of
        its module; a disparity tensor read by an op makes that op's output disparity too."""
        place = _Placement(self)
        for node in model.graph.nodes:
            if node.op != "call_function" or node in place.done:
                continue
            target = node.target
            inputs = _tensor_args(node)
            if not isinstance(node.meta.get("val"), torch.Tensor) or not inputs:
                continue
            carries = any(a in place.disparity for a in inputs)
            disparity_module = rule_for(node).disparity
            if target in CONV:
                place.conv(node, carries, disparity_module)
            elif target in ADD and len(inputs) == 2:
                place.add(node, inputs, carries)
            elif target in CONCAT:
                place.concat(node, inputs, carries)
            elif target in ELEMENTWISE or disparity_module:
                place.elementwise(node, inputs, carries or disparity_module)
            elif target in DATA_MOVEMENT or target in SAME_RANGE:
                place.shared(node, inputs[0], carries)
        return model

    def validate(self, model: GraphModule) -> None:
        """Nothing to check: unsupported ops are reported by ``stereoq.quant.report``."""


class _Placement:
    """One ``annotate`` pass: the quantizer of each annotated node's output so far."""

    def __init__(self, quantizer: StereoQuantizer) -> None:
        self.q = quantizer
        self.conv16 = quantizer.recipe.disparity_conv_bits == 16
        self.spec: dict[Node, Any] = {}
        self.bits: dict[Node, int] = {}
        self.disparity: set[Node] = set()  # outputs that carry disparity (int16 ops)
        self.done: set[Node] = set()  # folded into a conv's or add's unit

    def act(self, bits16: bool) -> Any:
        return self.q.act16 if bits16 else self.q.act8

    def edge(self, arg: Node, bits16: bool) -> Any:
        """Reuse the producer's quantizer when it is not wider than the consumer wants
        (no requantization), else observe the edge at the consumer's width."""
        if arg in self.spec and self.bits[arg] <= (16 if bits16 else 8):
            return self.spec[arg]
        if arg.op == "placeholder" and self.q.input_spec is not None:
            return self.q.input_spec
        return self.act(bits16)

    def output(self, node: Node, bits16: bool) -> None:
        """Observe ``node``'s output: int16 (and carrying disparity) or 8-bit."""
        spec = self.act(bits16)
        _annotate(node, None, spec)
        self.spec[node] = spec
        self.bits[node] = 16 if bits16 else 8
        if bits16:
            self.disparity.add(node)

    def conv(self, node: Node, carries: bool, disparity_module: bool) -> None:
        """Conv (+ folded BN) (+ ReLU) as one unit, its output observed after the ReLU."""
        x, w = node.args[0], node.args[1]
        chain = _chain(node, BATCH_NORM | RELU)
        _annotate(node, {x: self.edge(x, self.conv16 and carries), w: self.q.weight}, None)
        for n in chain:
            _annotate(n, {}, None)
        self.done.update(chain)
        self.output(chain[-1] if chain else node, self.conv16 and disparity_module)

    def add(self, node: Node, inputs: list[Node], carries: bool) -> None:
        """Add (+ ReLU) as one unit."""
        chain = _chain(node, RELU)
        _annotate(node, {a: self.edge(a, carries) for a in inputs}, None)
        last = chain[-1] if chain else node
        if chain:
            _annotate(last, {}, None)
        self.done.update(chain)
        self.output(last, carries)

    def concat(self, node: Node, inputs: list[Node], carries: bool) -> None:
        """A concat feeds convolutions: 8-bit unless those are 16-bit."""
        bits16 = carries and self.conv16
        _annotate(node, {a: self.edge(a, bits16) for a in inputs}, None)
        self.output(node, bits16)

    def elementwise(self, node: Node, inputs: list[Node], bits16: bool) -> None:
        _annotate(node, {a: self.edge(a, bits16) for a in inputs}, None)
        self.output(node, bits16)

    def shared(self, node: Node, src: Node, carries: bool) -> None:
        """Output shares the input's quantizer (data movement, bilinear resize)."""
        spec = self.edge(src, carries)
        _annotate(node, {src: spec}, None)
        shared = SharedQuantizationSpec((src, node))
        _annotate(node, None, shared)
        self.spec[node] = shared
        self.bits[node] = (
            self.bits[src] if spec is self.spec.get(src) else (16 if spec is self.q.act16 else 8)
        )
        if carries:
            self.disparity.add(node)


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


def _annotate(node: Node, inputs: dict | None, output: Any) -> None:
    """Merge input specs and/or an output spec into ``node``'s annotation."""
    ann = node.meta.get(ANNOTATION_KEY) or QuantizationAnnotation()
    if inputs:
        ann.input_qspec_map.update(inputs)
    if output is not None:
        ann.output_qspec = output
    ann._annotated = True
    node.meta[ANNOTATION_KEY] = ann
