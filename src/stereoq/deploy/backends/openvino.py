"""OpenVINO, CPU plugin: the stage's ONNX export in OpenVINO's form, compiled for this CPU.

OpenVINO reads the Q/DQ ONNX file and its low-precision transformations turn each
``DequantizeLinear -> op -> QuantizeLinear`` they recognise into a u8/i8 kernel; everything
else computes in the inference precision. The export first goes through
``stereoq.deploy.ov_graph`` (integer Pads for the cost volume's shifts, no shared weight zero
point, residual Adds on rounded conv outputs), without which OpenVINO fails to compile it, keeps
most convolutions in float or drifts from the integer model over residual blocks; the
ONNX Runtime file is left as it is. ``check`` reads OpenVINO's compiled model (its execution
graph: each executed layer's ``runtimePrecision``), so it reports what really runs.

OpenVINO is not bit-exact with the integer model: ``ov_graph`` keeps the rounding its conv +
residual-Add fusion would skip, but it adds each conv's float bias on the int32 accumulator's
grid where the integer model adds it in float (~0.01-0.1 % of each conv's outputs one LSB off,
compounding through the network); a quantizer with int32 biases would make it exact.
``compile --validate`` judges it by the acceptance criteria.

Two registrations: ``openvino`` computes the non-integer layers in f32 (the model's float
arithmetic: accuracy as PyTorch's); ``openvino-bf16`` in bfloat16 where the CPU has it (AVX-512
BF16 / AMX), OpenVINO's own default there: faster float layers, an 8-bit mantissa.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import onnx

from stereoq.atomic import atomic_write_json
from stereoq.deploy.acceptance import OWN_ROUNDING
from stereoq.deploy.backends.base import BACKENDS, Backend, RawRunner, run_artifact_bench
from stereoq.deploy.check import (
    BF16,
    CONVERT,
    FLOAT,
    FLOAT_DATA,
    FLOAT_MODEL,
    INT8,
    INT8_DATA,
    INT16_FLOAT,
    CheckReport,
    NodeVerdict,
)
from stereoq.deploy.metadata import DeployMetadata
from stereoq.deploy.ov_graph import OvRewrite, for_openvino
from stereoq.deploy.qdq_graph import QDQ, WIDE_INTEGER_TYPES, QdqGraph, scope_of
from stereoq.errors import StereoqError

RUNNER_SCRIPT = "run_stereo.py"
MODEL_FILE = "model.xml"
"""``ov_runner.MODEL_FILE`` (that module imports openvino, this one only when it is used)."""
INTEGER_PRECISIONS = frozenset({"u8", "i8"})
FLOAT_PRECISIONS = {"f32": FLOAT, "f16": FLOAT, "bf16": BF16}
NOT_LAYERS = frozenset({"Const", "Input", "Output"})
"""Execution-graph nodes that compute nothing at inference time."""
DATA_LAYERS = frozenset(
    {
        "Reorder",
        "Reshape",
        "StridedSlice",
        "Split",
        "Concatenation",
        "Pad",
        "Transpose",
        "Gather",
        "Broadcast",
        "Squeeze",
        "Unsqueeze",
        "Tile",
        "ShapeOf",
        "Slice",
    }
)
CONVERT_LAYERS = frozenset({"Convert", "FakeQuantize"})


def _openvino() -> ModuleType:
    try:
        import openvino
    except ImportError:
        raise StereoqError(
            "the openvino backend needs OpenVINO: pip install 'stereoq[openvino]'"
        ) from None
    return openvino


def _runner() -> ModuleType:
    """``stereoq.deploy.ov_runner`` (imports openvino: only once it is known to be there)."""
    _openvino()
    from stereoq.deploy import ov_runner

    return ov_runner


def _first_line(err: Exception) -> str:
    """The line of an OpenVINO exception that names what failed (its messages nest the
    C++ call chain first)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    named = [line for line in lines if line.startswith("[") or "Check '" in line]
    return ((named or lines or [type(err).__name__])[0])[:300]


def read_source(source: Path, exact_adds: bool = True) -> tuple[Any, OvRewrite, onnx.ModelProto]:
    """The ONNX export in OpenVINO's form (``ov_graph.for_openvino``) as an ``openvino.Model``,
    what was rewritten, and the rewritten ONNX graph (for the check's reasons)."""
    ov = _openvino()
    model, rewrite = for_openvino(onnx.load(str(source)), exact_adds)
    with tempfile.TemporaryDirectory(prefix="stereoq-ov-") as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save(model, str(path))
        try:
            ov_model = ov.Core().read_model(str(path))
        except RuntimeError as err:
            raise StereoqError(f"OpenVINO cannot read {source}: {_first_line(err)}") from None
    return ov_model, rewrite, model


def compile_for_cpu(ov_model: Any, source: Path, precision: str, threads: int | None = None) -> Any:
    """``ov_model`` compiled by the CPU plugin as the artifact's runner compiles it."""
    ov, runner = _openvino(), _runner()
    try:
        return ov.Core().compile_model(
            ov_model, runner.DEVICE, runner.compile_properties(precision, threads)
        )
    except RuntimeError as err:
        raise StereoqError(f"OpenVINO cannot compile {source}: {_first_line(err)}") from None


def _rt(info: Any, key: str) -> str:
    return info[key].astype(str) if key in info else ""


def runtime_layers(compiled: Any) -> list[dict[str, Any]]:
    """Every executed layer of a compiled model's execution graph: name, layer type, runtime
    precision, implementation and the source nodes fused into it."""
    layers = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer_type = _rt(info, "layerType")
        if layer_type in NOT_LAYERS:
            continue
        layers.append(
            {
                "name": op.get_friendly_name(),
                "type": layer_type,
                "precision": _rt(info, "runtimePrecision"),
                "primitive": _rt(info, "primitiveType"),
                "sources": [n for n in _rt(info, "originalLayersNames").split(",") if n],
            }
        )
    return layers


def source_nodes(by_name: dict[str, onnx.NodeProto], layer: dict[str, Any]) -> list[onnx.NodeProto]:
    """The ONNX nodes fused into a layer (OpenVINO suffixes ``_<n>`` to nodes it splits)."""
    found = []
    for name in layer["sources"]:
        node = by_name.get(name) or by_name.get(re.sub(r"_\d+$", "", name))
        if node is not None:
            found.append(node)
    return found


def _reason(
    g: QdqGraph, by_name: dict[str, onnx.NodeProto], layer: dict[str, Any], runs_in: str
) -> tuple[str, str]:
    """(precision, why) of a layer that computes in float, from the source nodes fused into it."""
    nodes = source_nodes(by_name, layer)
    compute = [n for n in nodes if n.op_type not in QDQ]
    if not compute:
        return FLOAT_PRECISIONS.get(layer["precision"], FLOAT), f"added by OpenVINO ({runs_in})"
    node = compute[0]
    dq_in = [
        o
        for o in (g.origin(t) for t in g.data_inputs(node))
        if o is not None and o.op_type == "DequantizeLinear"
    ]
    # a fused activation (Relu) sits between the op and its QuantizeLinear in the source
    q_out = [n for n in nodes if n.op_type == "QuantizeLinear"] or [
        s for o in node.output for s in g.sinks(o) if s.op_type == "QuantizeLinear"
    ]
    wide = any(g.dtype.get(n.input[0]) in WIDE_INTEGER_TYPES for n in dq_in) or any(
        g.dtype.get(n.output[0]) in WIDE_INTEGER_TYPES for n in q_out
    )
    if wide:
        return INT16_FLOAT, f"int16 Q/DQ: OpenVINO has no int16 kernels, computes in {runs_in}"
    precision = FLOAT_PRECISIONS.get(layer["precision"], FLOAT)
    if dq_in and q_out:
        detail = ""
        weights = [g.initializers.get(n.input[0]) for n in dq_in]
        channels = [w.dims[1] for w in weights if w is not None and len(w.dims) >= 4]
        if node.op_type == "Conv" and channels and channels[0] < 4:
            detail = f" ({channels[0]} input channels)"
        return precision, (
            f"int8 Q/DQ around it, but the CPU plugin runs {node.op_type}{detail} in {runs_in}"
        )
    if dq_in:
        return precision, f"output not quantized (no QuantizeLinear after it): {runs_in}"
    if q_out:
        return precision, f"input not quantized (no DequantizeLinear before it): {runs_in}"
    return precision, f"no Q/DQ around it: {runs_in}"


def _scope(name: str, scopes: dict[str, str]) -> str:
    """The PyTorch module of an OpenVINO layer (it names the parts of a node it splits
    ``<node>/WithoutBiases``, ``<node>_<n>``)."""
    base = name.split("/")[0]
    return scope_of(base, scopes) or scope_of(re.sub(r"_\d+$", "", base), scopes)


def _only_qdq(nodes: list[onnx.NodeProto]) -> bool:
    return bool(nodes) and all(n.op_type in QDQ for n in nodes)


def classify(
    layers: list[dict[str, Any]], model: onnx.ModelProto, scopes: dict[str, str]
) -> list[NodeVerdict]:
    """The precision of every executed layer and, for float compute, why."""
    g = QdqGraph(model)
    by_name = {n.name: n for n in g.nodes}
    quantized = any(n.op_type in QDQ for n in g.nodes)
    verdicts = []
    for layer in layers:
        kind, runs_in = layer["type"], layer["precision"]
        scope = next((s for s in (_scope(n, scopes) for n in layer["sources"]) if s), "")
        op_type = "Subgraph (fused eltwise)" if kind == "Subgraph" else kind
        reason = ""
        if kind in CONVERT_LAYERS:
            precision = CONVERT
        elif kind in DATA_LAYERS:
            precision = INT8_DATA if runs_in in INTEGER_PRECISIONS else FLOAT_DATA
        elif runs_in in INTEGER_PRECISIONS:
            precision = INT8
        elif quantized and _only_qdq(source_nodes(by_name, layer)):
            precision = CONVERT
        elif not quantized:
            precision, reason = FLOAT_PRECISIONS.get(runs_in, FLOAT), FLOAT_MODEL
        else:
            precision, reason = _reason(g, by_name, layer, runs_in)
        verdicts.append(NodeVerdict(op_type, layer["name"], precision, reason, scope))
    return verdicts


def write_artifact(
    ov_model: Any,
    metadata: DeployMetadata,
    out_dir: Path,
    precision: str,
    notes: dict[str, Any] | None = None,
    label: str = "the model",
) -> Path:
    """An artifact folder from an ``openvino.Model`` (also one quantized by other tools): the
    IR, ``metadata.json``, ``openvino.json`` (``precision``, ``notes``, u8 convs on this CPU)
    and ``run_stereo.py``. Compiled once first, so a model the CPU plugin refuses fails here."""
    ov, runner = _openvino(), _runner()
    layers = runtime_layers(compile_for_cpu(ov_model, Path(label), precision))
    out_dir.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov_model, str(out_dir / runner.MODEL_FILE), compress_to_fp16=False)
    convs = [layer for layer in layers if layer["type"] == "Convolution"]
    atomic_write_json(
        out_dir / runner.CONFIG_FILE,
        {
            "inference_precision": precision,
            "openvino": ov.__version__,
            **(notes or {}),
            "integer_convolutions": sum(c["precision"] in INTEGER_PRECISIONS for c in convs),
            "convolutions": len(convs),
        },
    )
    (out_dir / runner.METADATA_FILE).write_text(
        metadata.model_dump_json(indent=2) + "\n", encoding="utf-8"
    )
    shutil.copyfile(runner.__file__, out_dir / RUNNER_SCRIPT)
    return out_dir


@BACKENDS.register("openvino")
class OpenVinoBackend(Backend):
    name = "openvino"
    description = "OpenVINO CPU plugin (int8 where its transformations fuse; float32 elsewhere)"
    profiler = "layers (OpenVINO PERF_COUNT)"
    model_file = MODEL_FILE
    inference_precision: ClassVar[str] = "f32"
    """OpenVINO's ``INFERENCE_PRECISION_HINT``: what non-integer layers compute in."""
    exact_adds: ClassVar[bool] = True
    """Keep the rounding of conv outputs that residual Adds read (``ov_graph.for_openvino``)."""
    thresholds = OWN_ROUNDING

    def check(self, source: Path) -> CheckReport:
        ov_model, _rewrite, model = read_source(source, self.exact_adds)
        layers = runtime_layers(compile_for_cpu(ov_model, source, self.inference_precision))
        return CheckReport(self.name, str(source), classify(layers, model, self.scopes(source)))

    def compile(self, source: Path, metadata: DeployMetadata, out_dir: Path) -> Path:
        """``model.xml``/``model.bin`` (OpenVINO IR of the rewritten export, float weights
        kept in f32), ``metadata.json``, ``openvino.json`` (inference precision, what was
        rewritten, the runtime precision of every convolution) and ``run_stereo.py``, the
        numpy + openvino runner."""
        ov_model, rewrite, _model = read_source(source, self.exact_adds)
        return write_artifact(
            ov_model,
            metadata,
            Path(out_dir),
            self.inference_precision,
            {"rewrite": rewrite.to_json()},
            str(source),
        )

    def benchmark(
        self,
        artifact_dir: Path,
        runs: int,
        warmup: int,
        threads: int | None,
        top: int,
        scopes: dict[str, str] | None = None,
        profile_runs: int = 3,
    ) -> dict[str, Any]:
        result = run_artifact_bench(
            Path(artifact_dir),
            RUNNER_SCRIPT,
            [
                "--runs",
                str(runs),
                "--warmup",
                str(warmup),
                "--threads",
                str(threads or 0),
                "--profile",
                str(profile_runs),
            ],
        )
        profile = result.pop("profile")
        total = sum(r["ms"] for r in profile) or 1.0
        scopes = scopes or {}
        result["top_layers"] = [
            {
                "node": r["node"],
                "op": f"{r['op']} ({r['exec_type']})",
                "scope": _scope(r["node"], scopes),
                "ms": round(r["ms"], 3),
                "share_pct": round(100.0 * r["ms"] / total, 1),
            }
            for r in profile[:top]
        ]
        result["memory_method"] = (
            "peak resident set size (Linux VmHWM, else getrusage ru_maxrss) of a fresh "
            "Python process that imports numpy + openvino, loads the artifact and runs it; "
            "rss_before_session_mib is the same figure after the imports"
        )
        return result

    def load(self, artifact_dir: Path, threads: int | None = None) -> RawRunner:
        return self.runner(artifact_dir, threads).raw

    def runner(self, artifact_dir: Path, threads: int | None = None) -> Any:
        return _runner().StereoRunner(artifact_dir, threads)


@BACKENDS.register("openvino-bf16")
class OpenVinoBf16Backend(OpenVinoBackend):
    name = "openvino-bf16"
    description = ("OpenVINO CPU plugin as it runs fastest: non-integer layers in bfloat16 where "
                   "the CPU has it, residual Adds fused into their convs")
    inference_precision = "bf16"
    exact_adds = False
