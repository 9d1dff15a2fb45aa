"""A fake-quant graph's latency on a deployment backend, end to end and per layer: what the
accuracy budget's search (``stereoq.quant.budget``) pays for each layer it raises.

The graph is converted as ``int_infer`` converts it, exported to ONNX in a temporary folder,
compiled by the backend as ``stereoq compile`` compiles, and run in a fresh process by the
artifact's own runner: ``runs`` timed runs give the median, then ``profile_runs`` runs under
the runtime's profiler (ONNX Runtime's trace, OpenVINO's PERF_COUNT) give each node's time.
A node's time goes to its layer: the exported program keeps the graph's node names (ONNX
names its nodes ``node_<name>``), so ops are found by the layer the quantizer gave them, and a
quantize/dequantize node goes to the layer whose output it carries (weights' to the convolution
reading them). Nodes named otherwise fall back to the export's module scopes (which spell
``concat_feature`` as ``concat.feature``: names are compared with ``_`` read as ``.``); the rest
(the input's quantization, data movement) are summed apart.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path

import onnx
from torch import Tensor
from torch.fx import Graph, GraphModule, Node

from stereoq.deploy.backends import get_backend
from stereoq.deploy.onnx_export import OPSET, stamp, to_onnx
from stereoq.errors import StereoqError
from stereoq.models.padding import fit, padded_size
from stereoq.quant.latency import Timing, provide_latency
from stereoq.settings.config import ExperimentConfig


def _key(name: str) -> str:
    return name.removeprefix("model.").replace("_", ".")


def attribute(layer_rows: list[dict], names: list[str]) -> tuple[dict[str, float], float]:
    """Per layer of ``names``: the summed ms of the profiled rows (``scope``, ``ms``) whose
    scope names that layer (its own name, or its module's as the export spells it); and the ms
    of the rows that match no layer."""
    lookup = {_key(name): name for name in names}
    per_layer: dict[str, float] = defaultdict(float)
    other = 0.0
    for row in layer_rows:
        name = lookup.get(_key(row.get("scope") or ""))
        if name is None:
            other += float(row["ms"])
        else:
            per_layer[name] += float(row["ms"])
    return dict(per_layer), other


def node_layers(program_graph: Graph, known: dict[str, str]) -> dict[str, str]:
    """Node name -> layer for every node of an exported program's graph that has one:
    ``known`` op nodes, and quantize/dequantize nodes by the tensor they carry (the producer's
    layer, else the first reader's)."""
    found = {}
    nodes = list(program_graph.nodes)
    for node in nodes:
        if node.name in known:
            found[node.name] = known[node.name]
        elif node.op == "call_function" and "quantize" in str(node.target):
            src = next((a for a in node.args if isinstance(a, Node)), None)
            if src is not None and src.name in found:
                found[node.name] = found[src.name]
    for node in reversed(nodes):  # weights' quantize/dequantize: the reader's layer
        if node.name not in found and node.op == "call_function" and "quantize" in str(
            node.target
        ):
            reader = next((u for u in node.users if u.name in found), None)
            if reader is not None:
                found[node.name] = found[reader.name]
    return found


def graph_timing(
    cfg: ExperimentConfig,
    fake_quant: GraphModule,
    example: Tensor,
    backend_name: str,
    names: list[str],
    threads: int | None = None,
    runs: int = 20,
    warmup: int = 3,
    profile_runs: int = 10,
) -> Timing:
    """Latency of ``fake_quant`` (all outputs, ranges frozen) deployed on ``backend_name`` at
    ``example``'s size (padded to the model's multiple, as deployment pads), and the time of
    each layer of ``names``."""
    from stereoq.quant.prepare import LastTwo, convert
    from stereoq.quant.quantizer import LAYER_KEY

    backend = get_backend(backend_name)
    if backend.consumes != "onnx":
        raise StereoqError(
            f"stages.calibration.budget.backend: {backend_name} does not build from the ONNX "
            "export; latency is measured on ort, openvino or openvino-bf16"
        )
    height, width = padded_size(*(int(v) for v in example.shape[-2:]), cfg.model.size_multiple)
    example = fit(example[:1], height, width)
    with tempfile.TemporaryDirectory(prefix="stereoq-latency-") as tmp:
        path = Path(tmp) / "model.onnx"
        converted = convert(fake_quant)
        program = to_onnx(LastTwo(converted), example, path)
        known = {n.name: n.meta[LAYER_KEY] for n in converted.graph.nodes if LAYER_KEY in n.meta}
        layer_scopes = {f"node_{name}": layer
                        for name, layer in node_layers(program.graph, known).items()}
        model = onnx.load(str(path))
        metadata = stamp(model, cfg, "calibration", OPSET, height, width)
        onnx.save(model, str(path))
        artifact = backend.compile(path, metadata, Path(tmp) / "artifact")
        perf = backend.benchmark(artifact, runs, warmup, threads, top=1 << 30,
                                 scopes={**backend.scopes(path), **layer_scopes},
                                 profile_runs=profile_runs)
    per_layer, other = attribute(perf["top_layers"], names)
    return Timing(
        median_ms=float(perf["median_ms"]),
        layer_ms=per_layer,
        other_ms=other,
        where=f"{backend_name}, {perf['threads']} threads, {height}x{width}",
    )


provide_latency(graph_timing)
