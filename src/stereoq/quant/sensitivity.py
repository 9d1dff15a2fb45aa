"""Where quantization loses accuracy: per-layer sensitivity of a fake-quantized StereoNet.

A layer is one quantization unit of ``stereoq.quant.quantizer`` (a conv with its activation, an
add, a concat, the cost volume, a disparity op). It owns the fake quantizers of its output, its
weights and any input edge it observes itself (a requantization); switching them off leaves
the layer in float while the rest of the graph keeps its roundings. On the same validation
frames this measures, for each layer:

- ``delta_only_px``: EPE of the model with only this layer quantized, minus the float EPE;
- ``recovered_px``: EPE of the fully quantized model minus its EPE with this layer left float
  (what leaving it float buys back);
- ``sqnr_db``: signal-to-quantization-noise ratio of the layer's output tensor, float model
  against quantized model on the same inputs (errors accumulated from earlier layers included,
  as torchao's numeric debugger compares).

Layers are ranked by ``recovered_px``, then ``delta_only_px``. Measured on the fake-quant graph
as PyTorch computes it (not ``runtime_eval``'s integer kernels, which fix each conv's
roundings when the graph is copied): the EPEs can differ from ``predict``'s by one-LSB flips.

``cost_macs`` is the compute a layer takes out of the backend's integer kernels when raised
to 16 bits or float: its own MACs (elements for non-conv ops) plus those of the convolutions
that read its output (they then read a 16-bit or float tensor, which ONNX Runtime runs in
float). It is the cost proxy of the accuracy-budget search (``stereoq.quant.budget``), measured
at the frames' size.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.fx import GraphModule, Node

from stereoq.engine.metrics import DisparityMetrics
from stereoq.engine.report import Reporter
from stereoq.errors import StereoqError
from stereoq.quant.op_kinds import CONV
from stereoq.quant.quantizer import ADD, CONCAT, LAYER_KEY, LAYER_OUTPUT_KEY
from stereoq.quant.torchao_import import pt2e

CHUNK = 4
"""Frames per forward pass."""


@dataclass
class Layer:
    """One layer's fake quantizers in a prepared graph."""

    name: str
    kind: str
    quantizers: list[nn.Module] = field(default_factory=list)
    weights: list[nn.Module] = field(default_factory=list)
    outputs: list[nn.Module] = field(default_factory=list)
    convs: list[Node] = field(default_factory=list)
    readers: list[str] = field(default_factory=list)  # layers that read its output

    def activations(self) -> list[nn.Module]:
        return [q for q in self.quantizers if all(q is not w for w in self.weights)]


def _is_fake_quant(module: nn.Module) -> bool:
    return isinstance(module, pt2e().FakeQuantizeBase)


def _kind(nodes: list[Node]) -> str:
    targets = {n.target for n in nodes}
    names = {str(t).split(".")[-2] if "." in str(t) else str(t) for t in targets}
    if targets & CONV:
        return "conv3d" if any("conv3d" in str(t) for t in targets) else "conv"
    if "softmax" in names or "_softmax" in names:
        return "disparity regression"
    if {"mul", "mean"} <= names:
        return "cost volume"
    if targets & ADD:
        return "add"
    if targets & CONCAT:
        return "concat"
    return "elementwise"


def layers(graph: GraphModule) -> list[Layer]:
    """The layers of a fake-quantized graph in network order, each with its fake quantizers.

    A quantizer shared by several edges (data movement shares its input's) belongs to the
    layer that produces the tensor; a requantizing edge quantizer to the layer reading it;
    weight quantizers to their convolution. The fixed input quantizer belongs to none.
    """
    members: dict[str, list[Node]] = {}
    for node in graph.graph.nodes:
        if LAYER_KEY in node.meta:
            members.setdefault(node.meta[LAYER_KEY], []).append(node)
    found = {name: Layer(name, _kind(nodes)) for name, nodes in members.items()}
    for name, nodes in members.items():
        found[name].convs = [n for n in nodes if n.target in CONV]
    owner: dict[int, str | None] = {}
    for node in graph.graph.nodes:
        if node.op != "call_module":
            continue
        module = graph.get_submodule(str(node.target))
        if not _is_fake_quant(module) or id(module) in owner:
            continue
        src = node.args[0]
        reader = _reader_layer(node)
        if src.op == "placeholder":
            owner[id(module)] = None  # the fixed input quantizer
            continue
        if src.op == "get_attr":
            name = reader
            if name is not None:
                found[name].weights.append(module)
        elif src.op == "call_function" and src.meta.get(LAYER_OUTPUT_KEY):
            name = src.meta[LAYER_KEY]
            found[name].outputs.append(module)
        else:
            name = reader if src.op == "call_module" else (reader or src.meta.get(LAYER_KEY))
        if name is None:
            continue
        owner[id(module)] = name
        found[name].quantizers.append(module)
    for name, nodes in members.items():
        out = [n for n in nodes if n.meta.get(LAYER_OUTPUT_KEY)]
        readers = {r for n in out for r in _readers(n)} - {name}
        found[name].readers = sorted(readers, key=list(found).index)
    return [layer for layer in found.values() if layer.quantizers]


def _readers(node: Node) -> Iterator[str]:
    """Layers whose ops read ``node``'s output, through quantizers and shared (layer-less) ops."""
    seen: set[Node] = set()
    todo = list(node.users)
    while todo:
        user = todo.pop()
        if user in seen:
            continue
        seen.add(user)
        if LAYER_KEY in user.meta and user.op == "call_function":
            yield user.meta[LAYER_KEY]
        elif user.op != "output":
            todo.extend(user.users)


def _reader_layer(node: Node) -> str | None:
    return next(_readers(node), None)


@contextmanager
def quantized_only(graph: GraphModule, enabled: list[nn.Module]) -> Iterator[None]:
    """Inside: only the fake quantizers in ``enabled`` round (by identity); all restored after."""
    mods = {id(m): m for m in graph.modules() if _is_fake_quant(m)}
    before = {k: int(m.fake_quant_enabled[0]) for k, m in mods.items()}
    keep = {id(m) for m in enabled}
    try:
        for k, m in mods.items():
            m.fake_quant_enabled[0] = 1 if k in keep else 0
        yield
    finally:
        for k, m in mods.items():
            m.fake_quant_enabled[0] = before[k]


def all_quantizers(graph: GraphModule) -> list[nn.Module]:
    return list({id(m): m for m in graph.modules() if _is_fake_quant(m)}.values())


def except_for(graph: GraphModule, left_out: list[nn.Module]) -> list[nn.Module]:
    skip = {id(m) for m in left_out}
    return [m for m in all_quantizers(graph) if id(m) not in skip]


@dataclass
class Frames:
    """Validation frames: (N, 6, H, W) inputs and (N, 1, H, W) ground truth in px."""

    inputs: Tensor
    disparity: Tensor

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


def load_frames(cfg: Any, count: int, dataset: Any = None, common: bool = False) -> Frames:
    """The first ``count`` frames (fewer if the set is smaller) of ``dataset`` (default: the
    config's validation set). Frames of different sizes are an error, or with ``common`` cut to
    the largest top-left window, in multiples of the model's size multiple, that all hold."""
    from stereoq.engine.evaluate import pair_input, val_dataset

    dataset = val_dataset(cfg) if dataset is None else dataset
    items = [dataset[i] for i in range(min(count, len(dataset)))]
    sizes = {tuple(item["left"].shape[-2:]) for item in items}
    if len(sizes) > 1 and not common:
        raise StereoqError(f"the first {len(items)} validation frames differ in size "
                           f"{sorted(sizes)}: sensitivity runs on frames of one size")
    m = cfg.model.size_multiple
    h = min(size[0] for size in sizes) // m * m if common else None
    w = min(size[1] for size in sizes) // m * m if common else None
    inputs = torch.cat([pair_input({k: item[k][None, ..., :h, :w] for k in ("left", "right")})
                        for item in items])
    return Frames(inputs, torch.stack([item["disp"][..., :h, :w] for item in items]))


def against_model(frames: Frames, predict: Callable[[Tensor], Tensor]) -> Frames:
    """The same inputs with ``predict``'s disparity as their ground truth: a label-free
    reference (the float model's), against which EPE is the mean difference from it."""
    with torch.no_grad():
        preds = [predict(frames.inputs[i:i + CHUNK]) for i in range(0, len(frames), CHUNK)]
    return Frames(frames.inputs, torch.cat(preds).to(frames.disparity.dtype))


def epe(predict: Callable[[Tensor], Tensor], frames: Frames, maxdisp: float) -> float:
    """EPE (mean over frames of each frame's mean error over valid pixels), in px."""
    metrics = DisparityMetrics(maxdisp)
    with torch.no_grad():
        for i in range(0, len(frames), CHUNK):
            metrics.update(predict(frames.inputs[i:i + CHUNK]), frames.disparity[i:i + CHUNK])
    return float(metrics.compute()["epe"])


class Probe:
    """Forward hooks on each layer's output quantizer: the first tensor it passes per run."""

    def __init__(self, found: list[Layer]) -> None:
        self.found = found
        self.tensors: dict[str, Tensor] = {}
        self.handles = []
        for layer in found:
            for q in layer.outputs[:1]:
                self.handles.append(q.register_forward_hook(self._hook(layer.name)))
        self.weight_shapes: dict[str, tuple[int, ...]] = {}
        for layer in found:
            for w in layer.weights[:1]:
                self.handles.append(w.register_forward_hook(self._weight_hook(layer.name)))

    def _hook(self, name: str) -> Callable:
        def hook(_module: nn.Module, _args: Any, out: Tensor) -> None:
            self.tensors.setdefault(name, out.detach())
        return hook

    def _weight_hook(self, name: str) -> Callable:
        def hook(_module: nn.Module, args: Any, _out: Tensor) -> None:
            self.weight_shapes.setdefault(name, tuple(args[0].shape))
        return hook

    def take(self) -> dict[str, Tensor]:
        tensors, self.tensors = self.tensors, {}
        return tensors

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _sqnr_db(signal: float, noise: float) -> float:
    if noise <= 0.0:
        return math.inf
    if signal <= 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def measure_sqnr_and_costs(
    graph: GraphModule, predict: Callable[[Tensor], Tensor], found: list[Layer], frames: Frames
) -> tuple[dict[str, float], dict[str, float], float]:
    """Per layer: SQNR of its output (float vs quantized, same inputs, frame by frame) and its
    cost in MACs per frame (see the module docstring); and the MACs of all layers per frame."""
    probe = Probe(found)
    signal = {layer.name: 0.0 for layer in found}
    noise = dict(signal)
    own: dict[str, float] = {}
    everything = all_quantizers(graph)
    try:
        with torch.no_grad():
            for i in range(len(frames)):
                x = frames.inputs[i:i + 1]
                with quantized_only(graph, []):
                    predict(x)
                reference = probe.take()
                with quantized_only(graph, everything):
                    predict(x)
                quantized = probe.take()
                for name, ref in reference.items():
                    q = quantized.get(name)
                    if q is None or q.shape != ref.shape:
                        continue
                    signal[name] += float(ref.double().pow(2).sum())
                    noise[name] += float((ref.double() - q.double()).pow(2).sum())
                    if i == 0:
                        per_element = 1
                        if name in probe.weight_shapes:
                            per_element = math.prod(probe.weight_shapes[name][1:])
                        own[name] = float(ref.numel() * per_element)
    finally:
        probe.close()
    sqnr = {layer.name: _sqnr_db(signal[layer.name], noise[layer.name]) for layer in found}
    kinds = {layer.name: layer.kind for layer in found}
    costs = {
        layer.name: own.get(layer.name, 0.0)
        + sum(own.get(r, 0.0) for r in conv_readers(layer, kinds))
        for layer in found
    }
    return sqnr, costs, sum(own.values())


def conv_readers(layer: Layer, kinds: dict[str, str]) -> list[str]:
    """The convolution layers reading ``layer``'s output: what a raise of it also takes out of
    the int8 kernels (they then read a 16-bit or float tensor). ``kinds``: name -> kind."""
    return [r for r in layer.readers if kinds.get(r, "").startswith("conv")]


def sensitivity(
    graph: GraphModule,
    predict: Callable[[Tensor], Tensor],
    frames: Frames,
    maxdisp: float,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """The sensitivity report of a frozen fake-quant graph (see the module docstring).

    ``predict`` runs ``graph`` on (B, 6, H, W) inputs and returns (B, 1, H, W) px.
    """
    reporter = reporter or Reporter()
    start = time.perf_counter()
    found = layers(graph)
    everything = all_quantizers(graph)
    reporter.task("sensitivity", 3 + 2 * len(found))
    with quantized_only(graph, []):
        float_epe = epe(predict, frames, maxdisp)
    reporter.advance(1)
    with quantized_only(graph, everything):
        quant_epe = epe(predict, frames, maxdisp)
    reporter.advance(1)
    sqnr, costs, total = measure_sqnr_and_costs(graph, predict, found, frames)
    reporter.advance(1)
    rows = []
    for order, layer in enumerate(found):
        with quantized_only(graph, layer.quantizers):
            only = epe(predict, frames, maxdisp)
        reporter.advance(1)
        with quantized_only(graph, except_for(graph, layer.quantizers)):
            left_float = epe(predict, frames, maxdisp)
        reporter.advance(1)
        rows.append({
            "layer": layer.name,
            "kind": layer.kind,
            "order": order,
            "quantizers": len(layer.quantizers),
            "epe_only_px": only,
            "delta_only_px": only - float_epe,
            "epe_left_float_px": left_float,
            "recovered_px": quant_epe - left_float,
            "sqnr_db": sqnr[layer.name],
            "cost_macs": costs[layer.name],
        })
    reporter.done()
    ranked = sorted(rows, key=lambda r: (-r["recovered_px"], -r["delta_only_px"]))
    for rank, row in enumerate(ranked, 1):
        row["rank"] = rank
    return {
        "frames": len(frames),
        "height": int(frames.inputs.shape[-2]),
        "width": int(frames.inputs.shape[-1]),
        "float_epe_px": float_epe,
        "quantized_epe_px": quant_epe,
        "ranking": [r["layer"] for r in ranked],
        "total_macs": total,
        "layers": rows,
        "seconds": time.perf_counter() - start,
        "method": "fake-quant graph as PyTorch computes it; a layer's quantizers (output, "
        "weights, its own input requantizations) switched on alone or off alone",
    }
