"""Quantized convolutions evaluated with integer arithmetic, bit-exact to ONNX Runtime.

A Q/DQ graph (or a frozen fake-quant graph) states *what* each convolution quantizes; evaluated
op by op it computes the convolution in float32 from dequantized values and rounds the result.
An integer runtime computes the same convolution as ONNX Runtime's ``QLinearConv`` does::

    bias_q[c] = round(bias[c] / (s_x * s_w[c]))                                    (int32)
    acc[c]    = sum (q_x - z_x) * q_w[c] + bias_q[c]                               (int32, exact)
    q_y[c]    = clamp(round(float32(acc[c]) * (s_x * s_w[c] / s_y)) + z_y, lo, q_max)

(float32 scale arithmetic, round half to even; a fused ReLU raises ``lo`` to ``z_y``). The two
differ by one LSB on ~0.05 % of each conv's outputs, and a trained network carries such flips
forward until 10 % of the final disparity pixels differ by more than one output step (measured on
the quick start's model). Evaluating the convolutions here the runtime's way makes PyTorch's
integer model and the deployed one agree to the bit on every convolution.

The sums are exact: float32 convolutions of integer operands whenever no partial sum can reach
2**24 (``max |q_x - z_x| * sum |q_w[c]|``, bounded per conv); wider convs split the input into
``16 * high + low`` and sum two such convolutions in float64; float64 beyond that.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.fx import GraphModule, Node

from stereoq.quant.op_kinds import CONV, RELU

aten = torch.ops.aten
FLOAT32_EXACT = 2**24
SPLIT = 16
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
RENAMED_KEY = "stereoq_integer_conv_names"
"""``GraphModule.meta`` key: name of each IntegerConv node -> the quantize node it replaced."""


def bias_to_int32(bias: Tensor | None, x_scale: float, w_scale: Tensor) -> Tensor:
    """(C,) float bias -> int32 steps of ``s_x * s_w[c]`` (float32 arithmetic, half to even)."""
    bias_scale = torch.tensor(x_scale, dtype=torch.float32) * w_scale.float()
    if bias is None:
        return torch.zeros_like(bias_scale, dtype=torch.int64)
    steps = torch.round(bias.detach().float() / bias_scale)
    return steps.double().clamp(INT32_MIN, INT32_MAX).to(torch.int64)  # float32 lacks 2**31-1


def requant_multiplier(x_scale: float, w_scale: Tensor, y_scale: float) -> Tensor:
    """(C,) float32 ``s_x * s_w[c] / s_y``, operation by operation in float32."""
    sx = torch.tensor(x_scale, dtype=torch.float32)
    sy = torch.tensor(y_scale, dtype=torch.float32)
    return (sx * w_scale.float()) / sy


@dataclass(frozen=True)
class ConvGeometry:
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int


class IntegerConv(nn.Module):
    """One quantized convolution (+ optional fused ReLU) computed with integer arithmetic.

    ``fake=False``: input is the integer tensor ``q_x`` and output the integer ``q_y`` (Q/DQ
    graphs). ``fake=True``: input and output are fake-quantized floats ``(q - z) * s``
    (frozen fake-quant graphs). Weights (out, in/groups, kH, kW[, kD]) are integers.
    """

    def __init__(
        self,
        weight_q: Tensor,
        bias_q: Tensor,
        multiplier: Tensor,
        x_scale: float,
        x_zero: int,
        x_range: tuple[int, int],
        y_scale: float,
        y_zero: int,
        y_range: tuple[int, int],
        relu: bool,
        geometry: ConvGeometry,
        fake: bool,
        out_dtype: torch.dtype = torch.uint8,
    ) -> None:
        super().__init__()
        x_max = max(x_zero - x_range[0], x_range[1] - x_zero)
        weight_sum = weight_q.abs().flatten(1).sum(1).max().item()
        if x_max * weight_sum < FLOAT32_EXACT:
            self.parts = 1
        elif SPLIT * weight_sum < FLOAT32_EXACT and x_max < SPLIT * SPLIT:
            self.parts = 2  # q - z = 16 hi + lo, |hi|, lo <= 16: two exact float32 convs
        else:
            self.parts = 0
        self.acc_dtype = torch.float32 if self.parts else torch.float64
        self.register_buffer("weight_q", weight_q.to(self.acc_dtype))
        self.register_buffer("bias_q", bias_q.to(torch.float64))
        self.register_buffer("multiplier", multiplier.to(torch.float32))
        self.register_buffer("y_scale", torch.tensor(y_scale, dtype=torch.float32))
        self.x_scale, self.x_zero, self.y_zero = float(x_scale), int(x_zero), int(y_zero)
        self.low = max(y_range[0], y_zero) if relu else y_range[0]
        self.high = y_range[1]
        self.geometry, self.fake, self.out_dtype = geometry, fake, out_dtype

    def forward(self, x: Tensor) -> Tensor:
        # a fake-quantized x is (q - z) * s, so round(x / s) recovers q - z exactly
        centred = (torch.round(x / self.x_scale) if self.fake
                   else x.to(torch.float32) - self.x_zero)
        g = self.geometry
        conv = F.conv2d if self.weight_q.dim() == 4 else F.conv3d
        def run(v: Tensor) -> Tensor:
            out = conv(v.to(self.acc_dtype), self.weight_q, None, g.stride, g.padding,
                       g.dilation, g.groups)
            return out.to(torch.float64)

        if self.parts == 2:
            high = torch.floor(centred / SPLIT)  # zero padding pads both parts with 0
            acc = SPLIT * run(high) + run(centred - SPLIT * high)
        else:
            acc = run(centred)
        shape = (1, -1) + (1,) * (acc.dim() - 2)
        acc = (acc + self.bias_q.view(shape)).to(torch.float32)
        q = torch.round(acc * self.multiplier.view(shape)) + self.y_zero
        q = q.clamp(self.low, self.high)
        if self.fake:
            return (q - self.y_zero) * self.y_scale
        return q.to(self.out_dtype)


def _is_call(node: object, names: tuple[str, ...]) -> bool:
    return isinstance(node, Node) and node.op == "call_function" and any(
        n in str(node.target) for n in names
    )


def _attr(gm: nn.Module, target: str) -> Tensor:
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _value(gm: nn.Module, arg: object) -> object:
    if isinstance(arg, Node) and arg.op == "get_attr":
        value = _attr(gm, str(arg.target))
        return value.item() if value.numel() == 1 else value
    return arg


def _geometry(conv: Node) -> ConvGeometry:
    dims = 2 if conv.target == aten.conv2d.default else 3
    args = list(conv.args) + [None] * (7 - len(conv.args))
    defaults = ([1] * dims, [0] * dims, [1] * dims, 1)
    stride, padding, dilation, groups = (
        a if a is not None else d for a, d in zip(args[3:7], defaults, strict=True)
    )
    expand = (lambda v: tuple(v) if len(v) == dims else tuple(v) * dims)  # noqa: E731
    return ConvGeometry(expand(stride), expand(padding), expand(dilation), int(groups))


def _is_shape_query(node: Node) -> bool:
    """``sym_size`` of a spatial or batch dim: the integer output has the same one."""
    return node.op == "call_function" and "sym_size" in str(node.target) and (
        len(node.args) > 1 and node.args[1] != 1
    )


def _value_users(node: Node) -> list[Node]:
    return [u for u in node.users if not _is_shape_query(u)]


def _output_consumer(conv: Node) -> tuple[Node, bool] | None:
    """The single quantizer of a conv's output (through one ReLU) and whether ReLU is fused."""
    node, relu = conv, False
    while len(users := _value_users(node)) == 1:
        (user,) = users
        if user.op == "call_function" and user.target in RELU and not relu:
            node, relu = user, True
            continue
        return user, relu
    return None


@dataclass
class _Quant:
    scale: float
    zero: int
    low: int
    high: int
    dtype: torch.dtype


class _Rewriter:
    """Replaces each conv pattern of a graph with an ``IntegerConv`` module call."""

    def __init__(self, gm: GraphModule, fake: bool) -> None:
        self.gm, self.fake = gm, fake
        # remove_duplicate=False: fake quants of a shared qspec are one module under two names
        self.modules = dict(gm.named_modules(remove_duplicate=False))

    # -- fake-quant graphs: call_module FakeQuantize nodes -------------------------------
    def _fq(self, node: object) -> nn.Module | None:
        if isinstance(node, Node) and node.op == "call_module":
            mod = self.modules.get(str(node.target))
            if mod is not None and hasattr(mod, "scale") and hasattr(mod, "quant_min"):
                return mod
        return None

    def _fq_quant(self, mod: nn.Module) -> _Quant:
        dtype = getattr(mod, "dtype", torch.uint8)
        return _Quant(float(mod.scale.item()), int(mod.zero_point.item()), int(mod.quant_min),
                      int(mod.quant_max), dtype)

    # -- Q/DQ graphs: quantized_decomposed calls -----------------------------------------
    def _qdq_quant(self, node: Node) -> _Quant:
        scale, zero, low, high, dtype = (_value(self.gm, a) for a in node.args[1:6])
        return _Quant(float(scale), int(zero), int(low), int(high), dtype)

    def match(self, conv: Node) -> tuple[Tensor, Tensor | None, Node, _Quant, _Quant, Tensor,
                                         bool] | None:
        """(integer weight, bias, output node, input quant, output quant, weight scales, relu)
        of a quantized conv, or None."""
        x, w = conv.args[0], conv.args[1]
        bias_node = conv.args[2] if len(conv.args) > 2 else None
        if bias_node is not None and not (isinstance(bias_node, Node)
                                          and bias_node.op == "get_attr"):
            return None
        bias = _attr(self.gm, str(bias_node.target)) if bias_node is not None else None
        found = _output_consumer(conv)
        if found is None:
            return None
        out, relu = found
        if self.fake:
            fx, fw, fy = self._fq(x), self._fq(w), self._fq(out)
            if fx is None or fw is None or fy is None or not getattr(fw, "is_per_channel", 0):
                return None
            if fx.is_per_channel or fy.is_per_channel or w.args[0].op != "get_attr":
                return None
            weight = _attr(self.gm, str(w.args[0].target)).detach()
            w_scale = fw.scale.detach().float()
            shape = (-1,) + (1,) * (weight.dim() - 1)
            weight_q = torch.round(fw(weight) / w_scale.view(shape))
            return weight_q, bias, out, self._fq_quant(fx), self._fq_quant(fy), w_scale, relu
        if not (_is_call(x, ("dequantize_per_tensor",)) and _is_call(
                w, ("dequantize_per_channel",)) and _is_call(out, ("quantize_per_tensor",))
                and "dequantize" not in str(out.target)):
            return None
        w_int, w_scale, w_zero = (_value(self.gm, a) for a in w.args[:3])
        if not isinstance(w_int, Tensor) or bool(torch.as_tensor(w_zero).ne(0).any()):
            return None
        return (w_int.float(), bias, out, self._qdq_quant(x), self._qdq_quant(out),
                torch.as_tensor(w_scale).float(), relu)

    def run(self) -> int:
        graph = self.gm.graph
        renamed: dict[str, str] = {}
        convs = [n for n in graph.nodes if n.op == "call_function" and n.target in CONV]
        # match all first: rewriting one conv replaces the fake quant the next conv reads
        matches = [(conv, found) for conv in convs if (found := self.match(conv)) is not None]
        for conv, (weight_q, bias, out, qx, qy, w_scale, relu) in matches:
            if max(qx.high - qx.low, qy.high - qy.low) > 255:
                continue  # 16-bit convs run in float on ONNX Runtime too (no int16 kernels)
            module = IntegerConv(
                weight_q=weight_q,
                bias_q=bias_to_int32(bias, qx.scale, w_scale),
                multiplier=requant_multiplier(qx.scale, w_scale, qy.scale),
                x_scale=qx.scale, x_zero=qx.zero, x_range=(qx.low, qx.high),
                y_scale=qy.scale, y_zero=qy.zero, y_range=(qy.low, qy.high),
                relu=relu, geometry=_geometry(conv), fake=self.fake, out_dtype=qy.dtype,
            )
            # the fake-quant graph feeds the input fake quant's output, the Q/DQ graph the
            # integer tensor under the dequantize (read now: an earlier rewrite may have
            # replaced its producer)
            arg = conv.args[0] if self.fake else conv.args[0].args[0]
            node = replace_with_module(self.gm, out, module, f"integer_conv_{len(renamed)}",
                                       (arg,))
            renamed[node.name] = out.name
            for query in [u for u in conv.users if _is_shape_query(u)]:
                query.replace_input_with(conv, node)
        graph.eliminate_dead_code()
        graph.lint()
        self.gm.recompile()
        self.gm.meta[RENAMED_KEY] = renamed
        return len(renamed)


def replace_with_module(gm: GraphModule, node: Node, module: nn.Module, name: str,
                        args: tuple) -> Node:
    """Add ``module`` to ``gm`` as ``name`` and route every use of ``node`` to a call of it on
    ``args``; returns the call. ``node`` stays in the graph until erased or dead-code removed."""
    gm.add_submodule(name, module)
    with gm.graph.inserting_before(node):
        call = gm.graph.call_module(name, args)
    call.meta = dict(node.meta)
    node.replace_all_uses_with(call)
    return call


def rewrite_convs(gm: GraphModule, fake: bool) -> int:
    """Replace each 8-bit quantized conv of ``gm`` (in place) with an ``IntegerConv``; returns
    the number replaced. ``fake``: ``gm`` is a frozen fake-quant graph, else a Q/DQ graph."""
    return _Rewriter(gm, fake).run()


def integer_conv_count(graph: nn.Module) -> int:
    return sum(isinstance(m, IntegerConv) for m in graph.modules())
