"""Rewrite a converted (Q/DQ) graph into the form inductor lowers to integer kernels on x86.

Inductor's x86 quantization passes (run with ``torch._inductor.config.freezing = True``) turn
``dequantize_per_tensor(uint8) -> conv2d(dequantize_per_channel(int8 weight)) [-> relu]
[-> quantize_per_tensor(uint8)]`` into oneDNN ``qconv_pointwise`` kernels. Two things in
StereoNet's integer graph break or defeat them:

- 16-bit Q/DQ (the disparity path): the passes assert 8-bit or float outputs and the whole
  compile fails. Each 16-bit quantize becomes ``clamp(round(x * (1 / scale)) + zp, qmin, qmax)``
  and each 16-bit dequantize ``(q - zp) * scale``, in float32, with the same operation order and
  constants as the quantized ops themselves, so the values are bit-identical (a 16-bit integer
  is exact in float32);
- convolutions that are not lowered to ``qconv`` (Conv3d: oneDNN qconv is 1-D/2-D only in
  inductor; or a conv fed by a 16-bit or float tensor): their weight stays a runtime
  ``dequantize_per_channel``, which keeps inductor from packing it, and a batch-1 Conv3d then
  takes ATen's slow reference path. The dequantized weight is computed once (by the same op, so
  it is identical) and stored as a float constant; the conv then runs as a packed oneDNN float
  conv on the (still 8-bit-rounded) dequantized input.

Everything else (8-bit Q/DQ around convs, adds, concats, ...) is left for inductor. The rewrite
is generic over where 16-bit tensors and 3-D convs appear.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch.fx import GraphModule, Node

from stereoq.quant.op_kinds import ANY_CONV

aten = torch.ops.aten

EIGHT_BIT = (torch.uint8, torch.int8)
QCONV_ACTIVATIONS = (torch.uint8,)
"""Activation dtypes inductor's qconv patterns lower on x86 (fp32 output or uint8/int8)."""
QCONV_WEIGHT_DIMS = (3, 4)
"""Weight ranks inductor lowers to oneDNN qconv (conv1d, conv2d)."""

INT8_QCONV = "int8 (oneDNN qconv)"
FLOAT_CONV = "float (oneDNN conv, 8-bit-rounded input)"


def _decomposed() -> Any:
    import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers the Q/DQ ops)

    return torch.ops.quantized_decomposed


def _quantize_ops() -> set:
    q = _decomposed()
    return {q.quantize_per_tensor.default, q.quantize_per_tensor.tensor}


def _dequantize_ops() -> set:
    q = _decomposed()
    return {q.dequantize_per_tensor.default, q.dequantize_per_tensor.tensor}


@dataclass
class ConvVerdict:
    """One convolution of the lowered graph and how inductor will run it."""

    name: str
    scope: str
    dims: int
    precision: str
    reason: str = ""


@dataclass
class LoweringReport:
    wide_quantize: int = 0
    wide_dequantize: int = 0
    folded_weights: int = 0
    convs: list[ConvVerdict] = field(default_factory=list)

    @property
    def int8_convs(self) -> int:
        return sum(c.precision == INT8_QCONV for c in self.convs)

    def to_json(self) -> dict[str, Any]:
        return {
            "wide_quantize_rewritten": self.wide_quantize,
            "wide_dequantize_rewritten": self.wide_dequantize,
            "conv_weights_folded": self.folded_weights,
            "int8_convs": self.int8_convs,
            "convs": [asdict(c) for c in self.convs],
        }


def _value(gm: GraphModule, arg: Any) -> Any:
    """A Q/DQ parameter as a Python value (scalar args or one-element get_attr tensors)."""
    if isinstance(arg, Node):
        if arg.op != "get_attr":
            raise ValueError(f"quantization parameter {arg.name} is not a constant")
        value = _attr(gm, str(arg.target))
        return value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value
    return arg


def _attr(gm: GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _dtype(node: Node) -> torch.dtype | None:
    """The quantized dtype argument of a Q/DQ node."""
    dtype = node.args[5] if len(node.args) > 5 else node.kwargs.get("dtype")
    return dtype if isinstance(dtype, torch.dtype) else None


def _scope(node: Node) -> str:
    """The conv's module path: from its bias constant's name (kept by every export), else the
    recorded module stack."""
    bias = node.args[2] if len(node.args) > 2 else None
    if isinstance(bias, Node) and bias.op == "get_attr":
        return str(bias.target).removesuffix(".bias")
    stack = node.meta.get("nn_module_stack") or {}
    return str(list(stack.values())[-1][0]) if stack else ""


BITS = {torch.uint8: 8, torch.int8: 8, torch.int16: 16, torch.int32: 32}


def output_quant(gm: GraphModule) -> list[tuple[float, int] | None]:
    """(scale, bits) of each graph output's final dequantize, ``None`` for a float output."""
    (outputs,) = [n.args[0] for n in gm.graph.nodes if n.op == "output"]
    found: list[tuple[float, int] | None] = []
    for node in outputs:
        if isinstance(node, Node) and node.target in _dequantize_ops():
            found.append((float(_value(gm, node.args[1])), BITS[_dtype(node)]))
        else:
            found.append(None)
    return found


def _copy_meta(new: Node, old: Node) -> None:
    for key in ("nn_module_stack", "stack_trace", "source_fn_stack"):
        if key in old.meta:
            new.meta[key] = old.meta[key]


def _rewrite_wide(gm: GraphModule, report: LoweringReport) -> None:
    """16-bit (any non-8-bit) Q/DQ -> the identical float32 arithmetic."""
    graph = gm.graph
    quantize, dequantize = _quantize_ops(), _dequantize_ops()
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in quantize | dequantize:
            continue
        dtype = _dtype(node)
        if dtype in EIGHT_BIT:
            continue
        x = node.args[0]
        scale, zero_point = float(_value(gm, node.args[1])), int(_value(gm, node.args[2]))
        with graph.inserting_before(node):
            if node.target in quantize:
                qmin, qmax = int(_value(gm, node.args[3])), int(_value(gm, node.args[4]))
                # 1.0 / scale in double, then a float32 multiply: what the op itself computes
                scaled = graph.call_function(aten.mul.Tensor, (x, 1.0 / scale))
                rounded = graph.call_function(aten.round.default, (scaled,))
                shifted = graph.call_function(aten.add.Tensor, (rounded, zero_point))
                new = graph.call_function(aten.clamp.default, (shifted, qmin, qmax))
                report.wide_quantize += 1
            else:
                as_float = x
                if not (isinstance(x, Node) and _is_rewritten_quantize(x)):
                    as_float = graph.call_function(
                        aten._to_copy.default, (x,), {"dtype": torch.float32}
                    )
                centred = graph.call_function(aten.sub.Tensor, (as_float, zero_point))
                new = graph.call_function(aten.mul.Tensor, (centred, scale))
                report.wide_dequantize += 1
        new.meta["stereoq_wide_quantize"] = node.target in quantize
        _copy_meta(new, node)
        node.replace_all_uses_with(new)
        graph.erase_node(node)


def _is_rewritten_quantize(node: Node) -> bool:
    return bool(node.meta.get("stereoq_wide_quantize"))


def _conv_input_dtype(node: Node) -> torch.dtype | None:
    """The 8-bit dtype feeding a conv through a dequantize, or None (float / 16-bit input)."""
    x = node.args[0]
    if isinstance(x, Node) and x.op == "call_function" and x.target in _dequantize_ops():
        return _dtype(x)
    return None


def _fold_weights(gm: GraphModule, report: LoweringReport) -> None:
    """Convs inductor won't lower to qconv get their dequantized weight as a float constant."""
    q = _decomposed()
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in ANY_CONV:
            continue
        weight = node.args[1]
        dims = weight.meta["val"].dim() if "val" in weight.meta else 0
        in_dtype = _conv_input_dtype(node)
        per_channel = (
            weight.op == "call_function" and weight.target == q.dequantize_per_channel.default
        )
        lowered = per_channel and in_dtype in QCONV_ACTIVATIONS and dims in QCONV_WEIGHT_DIMS
        scope = _scope(node)
        if lowered:
            report.convs.append(ConvVerdict(node.name, scope, dims - 2, INT8_QCONV))
            continue
        if dims not in QCONV_WEIGHT_DIMS:
            reason = f"inductor has no int8 conv{dims - 2}d lowering"
        elif in_dtype is None:
            reason = "input is not an 8-bit tensor (16-bit or float)"
        elif not per_channel:
            reason = "weight is not int8 per-channel"
        else:
            reason = f"input dtype {in_dtype} has no qconv lowering"
        report.convs.append(ConvVerdict(node.name, scope, dims - 2, FLOAT_CONV, reason))
        if not per_channel or any(
            isinstance(a, Node) and a.op != "get_attr" for a in weight.args
        ):
            continue
        args = [_attr(gm, str(a.target)) if isinstance(a, Node) else a for a in weight.args]
        with torch.no_grad():
            folded = weight.target(*args, **weight.kwargs)
        attr = f"_stereoq_folded_weight_{report.folded_weights}"
        gm.register_buffer(attr, folded.contiguous())
        with graph.inserting_before(node):
            constant = graph.get_attr(attr)
        constant.meta["val"] = weight.meta.get("val")
        node.replace_input_with(weight, constant)
        if not weight.users:
            graph.erase_node(weight)
        report.folded_weights += 1


def lower_for_inductor(gm: GraphModule) -> tuple[GraphModule, LoweringReport]:
    """Rewrite ``gm`` (a converted PT2E graph or ``ExportedProgram.module()``) in place.

    Returns the graph and a report of what was rewritten and how each conv will run.
    """
    report = LoweringReport()
    _rewrite_wide(gm, report)
    _fold_weights(gm, report)
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    return gm, report
