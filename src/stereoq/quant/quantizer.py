"""StereoNet's PT2E quantizer: int8 convolutions, int16 elementwise disparity, Q/DQ where ONNX
Runtime fuses.

Placement follows ONNX Runtime's QDQ fusion conventions, so the exported graph runs as
QLinearConv / QLinearAdd / QLinearConcat there:
- conv (2-D and 3-D) (+ ReLU): uint8 per-tensor input, int8 per-channel symmetric weight in
  [-63, 63] (7 bits; [-127, 127] with ``QuantRecipe.weight_bits = 8``), one uint8 output
  quantizer after the ReLU (BN is folded before export), int32 accumulation. This holds for the
  convolutions that read or write disparity too (refinement stems and offset convs, the
  cost-aggregation score conv): ONNX Runtime has no int16 convolution kernel, so a 16-bit conv
  would run in float there. Why 7 bits: on x86 CPUs without VNNI (AVX2, AVX-512 without VNNI)
  ONNX Runtime's and oneDNN's uint8 x int8 kernels add products in pairs in int16
  (``vpmaddubsw``), which saturates once ``255 * (|w_a| + |w_b|)`` passes 32767; with
  ``|w| <= 63`` no pair can, so every runtime computes the exact int32 sum on every CPU;
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

A *layer* is one quantization unit (a conv with its folded BN and ReLU, an add + ReLU, a
concat, an elementwise op) named by the module it runs in, without the export wrapper's prefix
(``neck.stem.0.0``, ``neck.stage1.0`` (the block's add), ``head`` (the cost volume's products,
means and concats), ``head.regression``, ``refinement`` (the residual adds), ...). Ops of one
kind-less module share its layer. ``QuantRecipe.precision`` overrides the rule of the layers
whose names match its glob patterns (``stages.calibration.precision`` in the config): ``int8``,
``int16`` or ``float`` for the layer's output tensor; a raised layer's output is read as it
is by its consumers (no requantization down), so a convolution reading it runs in float on a
runtime without int16 kernels.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule, Node

from stereoq.errors import StereoqError
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

    precision: str | None = None
    """``None``: the scheme above. ``"int8"`` / ``"int16"``: the layer's output (and any input
    edge it observes itself) at that width; ``"float"``: no quantizer on the layer's output,
    weights or inputs. Set per layer by ``QuantRecipe.precision`` (overrides by name)."""


PRECISIONS = ("int8", "int16", "float")

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


def rule_for(node: Node, overrides: dict[str, str] | None = None) -> Rule:
    """The rule of the innermost module kind around ``node`` in ``RULES``, else ``DEFAULT_RULE``;
    ``overrides`` (layer name -> precision) decides the precision of the node's layer."""
    rule = DEFAULT_RULE
    stack = node.meta.get("nn_module_stack") or {}
    for _path, kind in reversed(list(stack.values())):
        found = _RULE_BY_KIND.get(_kind_name(kind))
        if found is not None:
            rule = found
            break
    precision = (overrides or {}).get(layer_name(node))
    return replace(rule, precision=precision) if precision else rule


WRAPPER_PREFIX = "model."
"""The exported graphs wrap the network as ``model`` (``prepare.RawOutputs``)."""
ROOT_LAYER = "input"
"""The layer of the ops outside every module: the left/right pair stacked along the batch."""
LAYER_KEY = "stereoq_layer"
"""``node.meta`` key: the layer (quantization unit) an annotated node belongs to."""
LAYER_OUTPUT_KEY = "stereoq_layer_output"
"""``node.meta`` key: ``True`` on the node whose output is its layer's output tensor."""


def layer_name(node: Node) -> str:
    """The layer of an op: its module's path without the export wrapper (``neck.stem.0.0``)."""
    path = module_path(node)
    if path + "." == WRAPPER_PREFIX or not path:
        return ROOT_LAYER
    return path.removeprefix(WRAPPER_PREFIX)


def resolve_precision(
    patterns: tuple[tuple[str, str], ...], layers: list[str], where: str
) -> dict[str, str]:
    """Layer -> precision from ``(glob pattern, precision)`` pairs, the last match winning.

    A pattern that matches no layer is an error naming it (and the closest layer names).
    """
    chosen: dict[str, str] = {}
    for pattern, precision in patterns:
        if precision not in PRECISIONS:
            raise StereoqError(f"{where}: {pattern}: precision {precision!r} is not one of "
                               f"{', '.join(PRECISIONS)}", exit_code=2)
        matched = [layer for layer in layers if fnmatchcase(layer, pattern)]
        if not matched:
            close = difflib.get_close_matches(pattern, layers, n=3, cutoff=0.5)
            hint = f"; closest: {', '.join(close)}" if close else ""
            raise StereoqError(
                f"{where}: {pattern!r} names no quantized layer of the model ({len(layers)} "
                f"layers, e.g. {layers[0]}, {layers[-1]}{hint})",
                exit_code=2,
            )
        chosen.update(dict.fromkeys(matched, precision))
    return chosen


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
    weight_bits: int = 7  # 7: no uint8 x int8 pair sum saturates int16 (CPUs without VNNI)
    precision: tuple[tuple[str, str], ...] = ()
    """(layer glob pattern, "int8" | "int16" | "float") overrides, in order; the last match wins."""


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


def weight_qmax(bits: int) -> int:
    """Largest |q_w| of symmetric ``bits``-bit weights: 63 for 7 bits, 127 for 8."""
    return 2 ** (bits - 1) - 1


def _weight_spec(recipe: QuantRecipe) -> Any:
    if recipe.is_qat:
        ctor = pt2e().FakeQuantize.with_args(
            observer=pt2e().MovingAveragePerChannelMinMaxObserver, eps=2**-20
        )
    else:
        ctor = pt2e().PerChannelMinMaxObserver.with_args(eps=2**-20)
    return QuantizationSpec(
        dtype=torch.int8,
        quant_min=-weight_qmax(recipe.weight_bits),
        quant_max=weight_qmax(recipe.weight_bits),
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
        its layer; a disparity tensor read by an op makes that op's output disparity too."""
        found = units(model)
        overrides = resolve_precision(
            self.recipe.precision, unit_layers(found), "stages.calibration.precision"
        )
        place = _Placement(self)
        for unit in found:
            node, inputs = unit.anchor, unit.inputs
            carries = any(a in place.disparity for a in inputs)
            rule = rule_for(node, overrides)
            if unit.kind == "shared":
                place.shared(node, inputs[0], carries)
                continue
            for n in (node, *unit.chain):
                n.meta[LAYER_KEY] = unit.layer
            unit.last.meta[LAYER_OUTPUT_KEY] = True
            if rule.precision is not None:
                node.meta[PRECISION_KEY] = rule.precision
            if unit.kind == "conv":
                place.conv(unit, carries, rule)
            elif unit.kind == "add":
                place.add(unit, carries, rule)
            elif unit.kind == "concat":
                place.concat(unit, carries, rule)
            else:
                place.elementwise(unit, carries or rule.disparity, rule)
        return model

    def validate(self, model: GraphModule) -> None:
        """Nothing to check: unsupported ops are reported by ``stereoq.quant.report``."""


PRECISION_KEY = "stereoq_precision"
"""``node.meta`` key: a layer's precision override, on the layer's first op."""


@dataclass
class Unit:
    """One quantization unit: an op and the ops folded into it (BN, ReLU)."""

    anchor: Node
    kind: str  # "conv" | "add" | "concat" | "elementwise" | "shared" (output shares its input's)
    inputs: list[Node]
    chain: list[Node]
    layer: str

    @property
    def last(self) -> Node:
        """The node whose output is the unit's output tensor."""
        return self.chain[-1] if self.chain else self.anchor


def units(model: GraphModule) -> list[Unit]:
    """The quantization units of an exported graph, in graph order."""
    found: list[Unit] = []
    done: set[Node] = set()
    for node in model.graph.nodes:
        if node.op != "call_function" or node in done:
            continue
        target = node.target
        inputs = _tensor_args(node)
        if not isinstance(node.meta.get("val"), torch.Tensor) or not inputs:
            continue
        chain: list[Node] = []
        if target in CONV:
            kind, chain = "conv", _chain(node, BATCH_NORM | RELU)
        elif target in ADD and len(inputs) == 2:
            kind, chain = "add", _chain(node, RELU)
        elif target in CONCAT:
            kind = "concat"
        elif target in ELEMENTWISE or rule_for(node).disparity:
            kind = "elementwise"
        elif target in DATA_MOVEMENT or target in SAME_RANGE:
            kind = "shared"
        else:
            continue
        done.update(chain)
        found.append(Unit(node, kind, inputs, chain, layer_name(node)))
    return found


def unit_layers(found: list[Unit]) -> list[str]:
    """The layers of ``units``, in graph order (shared ops belong to none)."""
    return list(dict.fromkeys(u.layer for u in found if u.kind != "shared"))


def graph_layers(model: GraphModule) -> list[str]:
    """The layer names of an exported (not yet annotated) graph, in graph order."""
    return unit_layers(units(model))


class _Placement:
    """One ``annotate`` pass: the quantizer of each annotated node's output so far."""

    def __init__(self, quantizer: StereoQuantizer) -> None:
        self.q = quantizer
        self.conv16 = quantizer.recipe.disparity_conv_bits == 16
        self.spec: dict[Node, Any] = {}
        self.bits: dict[Node, int] = {}
        self.disparity: set[Node] = set()  # outputs that carry disparity (int16 ops)
        self.raised: set[Node] = set()  # widened by an override: consumers read them as they are
        self.floating: set[Node] = set()  # float by an override: consumers read them unquantized

    def act(self, bits16: bool) -> Any:
        return self.q.act16 if bits16 else self.q.act8

    def edge(self, arg: Node, bits16: bool) -> Any:
        """Reuse the producer's quantizer when it is not wider than the consumer wants, or was
        widened by an override (no requantization), else observe the edge at the consumer's
        width; ``None`` (no quantizer) for a float producer."""
        if arg in self.floating:
            return None
        if arg in self.spec and (arg in self.raised or self.bits[arg] <= (16 if bits16 else 8)):
            return self.spec[arg]
        if arg.op == "placeholder" and self.q.input_spec is not None:
            return self.q.input_spec
        return self.act(bits16)

    def edges(self, inputs: list[Node], bits16: bool) -> dict[Node, Any]:
        return {a: spec for a in inputs if (spec := self.edge(a, bits16)) is not None}

    def output(self, node: Node, scheme16: bool, rule: Rule) -> bool:
        """Observe ``node``'s output at the scheme's width (int16 carries disparity) or at the
        rule's override; returns whether the unit is quantized at all."""
        if scheme16:
            self.disparity.add(node)
        if rule.precision == "float":
            self.floating.add(node)
            return False
        bits16 = scheme16 if rule.precision is None else rule.precision == "int16"
        spec = self.act(bits16)
        _annotate(node, None, spec)
        self.spec[node] = spec
        self.bits[node] = 16 if bits16 else 8
        if bits16 and not scheme16:
            self.raised.add(node)
        return True

    def width(self, scheme16: bool, rule: Rule) -> bool:
        """Whether the unit's own input edges are 16-bit: the scheme's, or the override's."""
        return scheme16 if rule.precision is None else rule.precision == "int16"

    def conv(self, unit: Unit, carries: bool, rule: Rule) -> None:
        """Conv (+ folded BN) (+ ReLU) as one unit, its output observed after the ReLU."""
        node = unit.anchor
        x, w = node.args[0], node.args[1]
        if self.output(unit.last, self.conv16 and rule.disparity, rule):
            spec = self.edge(x, self.width(self.conv16 and carries, rule))
            _annotate(node, {x: spec, w: self.q.weight} if spec else {w: self.q.weight}, None)
            for n in unit.chain:
                _annotate(n, {}, None)

    def add(self, unit: Unit, carries: bool, rule: Rule) -> None:
        """Add (+ ReLU) as one unit."""
        if self.output(unit.last, carries, rule):
            _annotate(unit.anchor, self.edges(unit.inputs, self.width(carries, rule)), None)
            if unit.chain:
                _annotate(unit.last, {}, None)

    def concat(self, unit: Unit, carries: bool, rule: Rule) -> None:
        """A concat feeds convolutions: 8-bit unless those are 16-bit."""
        bits16 = carries and self.conv16
        if self.output(unit.anchor, bits16, rule):
            _annotate(unit.anchor, self.edges(unit.inputs, self.width(bits16, rule)), None)

    def elementwise(self, unit: Unit, bits16: bool, rule: Rule) -> None:
        if self.output(unit.anchor, bits16, rule):
            _annotate(unit.anchor, self.edges(unit.inputs, self.width(bits16, rule)), None)

    def shared(self, node: Node, src: Node, carries: bool) -> None:
        """Output shares the input's quantizer (data movement, bilinear resize)."""
        if carries:
            self.disparity.add(node)
        spec = self.edge(src, carries)
        if spec is None:
            self.floating.add(node)
            return
        _annotate(node, {src: spec}, None)
        shared = SharedQuantizationSpec((src, node))
        _annotate(node, None, shared)
        self.spec[node] = shared
        self.bits[node] = (
            self.bits[src] if spec is self.spec.get(src) else (16 if spec is self.q.act16 else 8)
        )
        if src in self.raised and spec is self.spec.get(src):
            self.raised.add(node)


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
