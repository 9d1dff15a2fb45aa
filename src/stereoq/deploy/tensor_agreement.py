"""ONNX Runtime vs PyTorch on every quantized tensor of an int8 QDQ export.

A QDQ graph is a chain of integer tensors (each ``QuantizeLinear`` output). ONNX Runtime computes
them with fused integer kernels (QLinearConv with an int32 bias and accumulator, QLinearAdd, ...)
and the remaining ops as dequantize -> float op -> quantize. PyTorch's reference evaluates the
graph as the runtime does where it matters (``stereoq.quant.runtime_eval``: integer convolutions,
``QuantizeLinear``'s 16-bit rounding, its resize order), everything else op by op.
Each tensor is compared *given the same integer inputs*: PyTorch's graph runs with every
quantized tensor replaced by ONNX Runtime's (teacher forcing), which locates an op that departs
from the graph's meaning even where a trained network would carry a small difference forward.
Convolutions, resizes and 16-bit quantizes agree to the bit; the softmax (ONNX Runtime's own
``exp``) may round a value near a half-step the other way (one LSB). The free-running difference
(how far such flips carried) is reported next to it, in 8-bit steps of the tensor's range.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx
import torch
from torch import Tensor
from torch.fx import GraphModule, Interpreter, Node

from stereoq.deploy.metadata import INPUT_NAME
from stereoq.deploy.qdq_graph import QdqGraph, node_scopes, scope_of


@dataclass
class TensorAgreement:
    """One quantized tensor, ONNX Runtime vs PyTorch (steps of the tensor's integer type)."""

    name: str
    dtype: str
    scope: str
    elements: int
    within_pct: float
    """% of elements within one LSB of PyTorch's value computed from ORT's inputs (local)."""
    exact_pct: float
    max_lsb: int
    """Largest local difference, in LSB."""
    free_within_pct: float
    """% of elements within one 8-bit step (1 LSB for 8-bit, 256 for 16-bit) when both run
    freely from the same float input: how far rounding differences have carried."""
    free_max_steps: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def quantized_tensors(model: onnx.ModelProto) -> list[str]:
    """Outputs of every ``QuantizeLinear`` node, in graph order."""
    return [n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear"]


def run_ort_tensors(
    model: onnx.ModelProto, inputs: list[Tensor], names: list[str]
) -> list[dict[str, np.ndarray]]:
    """ONNX Runtime (all optimizations, as deployed) with ``names`` exposed as outputs.

    Exposing a fused node's output keeps the fusion (the QuantizeLinear output is the fused
    node's output), so these are the values the deployed session computes.
    """
    import onnxruntime as ort

    from stereoq.deploy.ort_runner import session_options

    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output}
    for name in names:
        if name not in present:
            exposed.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(
        exposed.SerializeToString(), session_options(None), providers=["CPUExecutionProvider"]
    )
    out_names = [o.name for o in session.get_outputs()]
    return [
        dict(zip(out_names, session.run(None, {INPUT_NAME: x.numpy()}), strict=True))
        for x in inputs
    ]


def _is_quantize(node: Node) -> bool:
    return node.op == "call_function" and "quantize_per_tensor" in str(node.target) and (
        "dequantize" not in str(node.target)
    )


class _Recorder(Interpreter):
    """Runs a graph, records each quantize output, optionally substitutes ORT's value.

    Nodes of ``stereoq.quant.runtime_eval`` count as the quantize they replaced.
    """

    def __init__(self, module: GraphModule, forced: dict[str, np.ndarray] | None) -> None:
        super().__init__(module)
        self.forced = forced or {}
        self.values: dict[str, np.ndarray] = {}
        from stereoq.quant.integer_conv import RENAMED_KEY

        self.renamed: dict[str, str] = module.meta.get(RENAMED_KEY, {})

    def run_node(self, n: Node) -> Any:
        out = super().run_node(n)
        if _is_quantize(n) or n.name in self.renamed:
            name = self.renamed.get(n.name, n.name)
            self.values[name] = out.numpy().copy()
            other = self.forced.get(name)
            if other is not None and other.shape == tuple(out.shape):
                return torch.from_numpy(other).to(out.dtype)
        return out


def run_torch_tensors(
    module: GraphModule, x: Tensor, forced: dict[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Quantized tensors of ``module`` on ``x`` by FX node name; ``forced`` replaces them."""
    with torch.no_grad():
        recorder = _Recorder(module, forced)
        recorder.run(x)
    return recorder.values


def compare_tensors(
    module: GraphModule, model: onnx.ModelProto, inputs: list[Tensor]
) -> list[TensorAgreement]:
    """Every quantized tensor of the export (present in both graphs), over ``inputs``.

    ``module`` must be the program the ONNX file was exported from (same node names); its
    graph is evaluated as the runtime computes it (``stereoq.quant.runtime_eval``).
    """
    from stereoq.quant.runtime_eval import runtime_eval

    module = runtime_eval(module)
    names = quantized_tensors(model)
    ort_runs = run_ort_tensors(model, inputs, names)
    local: dict[str, list[np.ndarray]] = {}
    free: dict[str, list[np.ndarray]] = {}
    for x, got in zip(inputs, ort_runs, strict=True):
        forced = {n: got[n] for n in names}
        ref_local = run_torch_tensors(module, x, forced)
        ref_free = run_torch_tensors(module, x)
        for name in names:
            if name not in ref_local or ref_local[name].shape != got[name].shape:
                continue
            ort_val = got[name].astype(np.int64)
            local.setdefault(name, []).append(np.abs(ort_val - ref_local[name]).ravel())
            free.setdefault(name, []).append(np.abs(ort_val - ref_free[name]).ravel())
    scopes = node_scopes(model)
    graph = QdqGraph(model)
    results = []
    for name in names:
        if name not in local:
            continue
        d_local, d_free = np.concatenate(local[name]), np.concatenate(free[name])
        dtype = str(ort_runs[0][name].dtype)
        step = 256 if ort_runs[0][name].itemsize == 2 else 1  # one 8-bit step of the range
        results.append(TensorAgreement(
            name=name,
            dtype=dtype,
            scope=_scope(graph, name, scopes),
            elements=int(d_local.size),
            within_pct=float(100.0 * np.mean(d_local <= 1)),
            exact_pct=float(100.0 * np.mean(d_local == 0)),
            max_lsb=int(d_local.max()) if d_local.size else 0,
            free_within_pct=float(100.0 * np.mean(d_free <= step)),
            free_max_steps=float(d_free.max() / step) if d_free.size else 0.0,
        ))
    return results


def _scope(graph: QdqGraph, tensor: str, scopes: dict[str, str]) -> str:
    """The module that computed a quantized tensor (looking through Relu and data movement)."""
    node = graph.producer.get(tensor)
    for _ in range(4):
        if node is None:
            return ""
        found = scope_of(node.name, scopes)
        if found:
            return found
        inputs = graph.data_inputs(node)
        node = graph.origin(inputs[0]) if inputs else None
    return ""
