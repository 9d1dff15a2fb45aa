"""8-bit quantized additions evaluated as ONNX Runtime's ``QLinearAdd`` computes them.

PyTorch adds the two dequantized values and quantizes the sum; ONNX Runtime's kernel (MLAS)
works on the integers with precomputed float32 ratios, two fused multiply-adds and round half to
even::

    r_a, r_b = s_a / s_c, s_b / s_c
    v = fma(q_a, r_a, fma(q_b, r_b, z_c - (r_b * z_b + r_a * z_a)))
    q_c = clamp(round(v), lo, q_max)                     (a fused ReLU raises lo to z_c)

The two disagree by one LSB on ~0.001 % of the elements, which on StereoNet's residual neck
grows to ~10 % of its output differing by more than one LSB (reference model at 256x512). The
fused multiply-add is evaluated exactly in float64 and rounded once to float32 (each product of
an 8-bit integer and a float32 fits float64 exactly). The operand order (``b`` first) is the one
that reproduced ONNX Runtime on every add of the reference model at 544x960 (``a`` first missed
4 of them by one LSB on up to 0.04 % of the elements); measured on x86 (AVX-512), a kernel
without FMA would round differently.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.fx import GraphModule, Node

from stereoq.quant.integer_conv import _output_consumer, _Quant, _Rewriter

ADDS = (torch.ops.aten.add.Tensor,)
EIGHT_BIT_STEPS = 255


def _fma32(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """float32 ``a * b + c`` with one rounding (exact in float64 for 8-bit ``a``)."""
    return (a.double() * b.double() + c.double()).float()


class IntegerAdd(nn.Module):
    """``q_c = QLinearAdd(q_a, q_b)`` (+ fused ReLU); integer in/out, or fake-quantized floats
    ``(q - z) * s`` with ``fake``."""

    def __init__(self, qa: _Quant, qb: _Quant, qc: _Quant, relu: bool, fake: bool) -> None:
        super().__init__()
        f32 = torch.float32
        ratio_a = torch.tensor(qa.scale, dtype=f32) / torch.tensor(qc.scale, dtype=f32)
        ratio_b = torch.tensor(qb.scale, dtype=f32) / torch.tensor(qc.scale, dtype=f32)
        fixed = torch.tensor(qc.zero, dtype=f32) - (ratio_b * qb.zero + ratio_a * qa.zero)
        self.register_buffer("ratio_a", ratio_a)
        self.register_buffer("ratio_b", ratio_b)
        self.register_buffer("fixed", fixed)
        self.register_buffer("y_scale", torch.tensor(qc.scale, dtype=f32))
        self.a_scale, self.a_zero = qa.scale, qa.zero
        self.b_scale, self.b_zero = qb.scale, qb.zero
        self.y_zero, self.y_range = qc.zero, (qc.low, qc.high)
        self.low = max(qc.low, qc.zero) if relu else qc.low
        self.high, self.fake, self.out_dtype = qc.high, fake, qc.dtype

    def _integers(self, x: Tensor, scale: float, zero: int) -> Tensor:
        if self.fake:  # (q - z) * s exactly: recovers q
            return torch.round(x / scale) + zero
        return x.to(torch.float32)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        qa = self._integers(a, self.a_scale, self.a_zero)
        qb = self._integers(b, self.b_scale, self.b_zero)
        v = _fma32(qb, self.ratio_b, self.fixed)
        v = _fma32(qa, self.ratio_a, v)
        q = torch.round(v).clamp(self.low, self.high)
        if self.fake:
            return (q - self.y_zero) * self.y_scale
        return q.to(self.out_dtype)


def _dq_quant(rewriter: _Rewriter, node: object) -> tuple[_Quant, Node] | None:
    """Quant params of a dequantize node's 8-bit input and that integer tensor."""
    if not (isinstance(node, Node) and node.op == "call_function"
            and "dequantize_per_tensor" in str(node.target)):
        return None
    return rewriter._qdq_quant(node), node.args[0]


def rewrite_adds(gm: GraphModule, fake: bool) -> dict[str, str]:
    """Replace each 8-bit quantized add of ``gm`` (in place) with ``IntegerAdd``; returns new
    node name -> the quantize node it replaced."""
    rewriter = _Rewriter(gm, fake)
    graph = gm.graph
    renamed: dict[str, str] = {}
    for add in [n for n in graph.nodes if n.op == "call_function" and n.target in ADDS]:
        if len(add.args) != 2 or add.kwargs.get("alpha", 1) != 1:
            continue
        found = _output_consumer(add)
        if found is None:
            continue
        out, relu = found
        if fake:
            qa, qb = (rewriter.fake_quant_of(a) for a in add.args)
            fy = rewriter._fq(out)
            qc = None if fy is None or fy.is_per_channel else rewriter._fq_quant(fy)
            inputs = tuple(add.args)
        else:
            pa, pb = (_dq_quant(rewriter, a) for a in add.args)
            is_q = (out.op == "call_function" and "quantize_per_tensor" in str(out.target)
                    and "dequantize" not in str(out.target))
            qc = rewriter._qdq_quant(out) if is_q else None
            qa, qb = (p[0] if p else None for p in (pa, pb))
            inputs = (pa[1], pb[1]) if pa and pb else ()
        quants = (qa, qb, qc)
        if any(q is None for q in quants) or any(
                q.high - q.low > EIGHT_BIT_STEPS for q in quants):
            continue
        name = f"integer_add_{len(renamed)}"
        gm.add_submodule(name, IntegerAdd(qa, qb, qc, relu, fake))
        with graph.inserting_before(out):
            node = graph.call_module(name, inputs)
        node.meta = dict(out.meta)
        renamed[node.name] = out.name
        out.replace_all_uses_with(node)
    if renamed:
        graph.eliminate_dead_code()
        graph.lint()
        gm.recompile()
    return renamed
