"""ONNX Runtime, CPU execution provider (x86 and ARM): runs the QDQ ONNX file as is.

ORT fuses DequantizeLinear -> op -> QuantizeLinear into integer kernels (QLinearConv, QLinearAdd,
QLinearConcat, ...) only where the Q/DQ nodes sit around each op's inputs and output; anything
else runs in float between a DequantizeLinear and a QuantizeLinear. ``check`` reads the graph as
ORT rewrote it for this machine, so it reports what really runs.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import onnx

from stereoq.deploy import ort_runner
from stereoq.deploy.backends.base import (
    BACKENDS,
    Backend,
    RawRunner,
    run_artifact_bench,
)
from stereoq.deploy.check import (
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
from stereoq.deploy.profile import top_layers
from stereoq.deploy.qdq_graph import (
    DATA_MOVEMENT,
    INTEGER_TYPES,
    QDQ,
    WIDE_INTEGER_TYPES,
    QdqGraph,
    node_scopes,
    scope_of,
)
from stereoq.errors import StereoqError

INTEGER_KERNELS = frozenset({
    "QLinearConv", "QLinearAdd", "QLinearMul", "QLinearConcat", "QLinearMatMul",
    "QLinearSoftmax", "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearSigmoid",
    "QLinearLeakyRelu", "QLinearReduceMean", "QLinearWhere", "ConvInteger", "MatMulInteger",
    "MatMulIntegerToFloat", "QGemm", "DynamicQuantizeMatMul", "NhwcMaxPool", "QAttention",
})
"""Kernels that compute on 8-bit integers (contrib or standard domain)."""

RUNNER_SCRIPT = "run_stereo.py"


def _session(model_path: Path, level: Any, optimized_path: Path) -> None:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    opts.optimized_model_filepath = str(optimized_path)
    opts.log_severity_level = 3
    try:
        ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own exception types for invalid models
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise StereoqError(f"ONNX Runtime cannot load {model_path}: {first}") from None


def _display(node: onnx.NodeProto) -> str:
    if node.domain == "com.microsoft.nchwc":
        return f"{node.op_type} (NCHWc)"
    return node.op_type


def classify(optimized: onnx.ModelProto, scopes: dict[str, str]) -> list[NodeVerdict]:
    """The precision of every node of ORT's optimized graph and, for float compute, why."""
    g = QdqGraph(optimized)
    has_qdq = any(n.op_type in QDQ for n in g.nodes)
    verdicts = []
    for node in g.nodes:
        scope = scope_of(node.name, scopes) or next(
            (scopes[o] for o in node.output if scopes.get(o)), ""
        )
        inputs = g.data_inputs(node)
        in_type = g.dtype.get(inputs[0], 0) if inputs else 0
        reason = ""
        if node.op_type in QDQ:
            precision = CONVERT
        elif node.op_type in INTEGER_KERNELS:
            precision = INT8
        elif node.op_type in DATA_MOVEMENT:
            precision = INT8_DATA if in_type in INTEGER_TYPES else FLOAT_DATA
        elif in_type in INTEGER_TYPES:
            precision = INT8  # e.g. Resize or MaxPool on uint8, which ORT runs natively
        elif not has_qdq:
            precision, reason = FLOAT, FLOAT_MODEL
        else:
            precision, reason = _fallback(g, node)
        verdicts.append(NodeVerdict(_display(node), node.name, precision, reason, scope))
    return verdicts


def _fallback(g: QdqGraph, node: onnx.NodeProto) -> tuple[str, str]:
    """Why a compute node runs in float: what feeds it and what it feeds."""
    origins = [g.origin(t) for t in g.data_inputs(node)]
    dq_in = [o for o in origins if o is not None and o.op_type == "DequantizeLinear"]
    q_out = [s for o in node.output for s in g.sinks(o) if s.op_type == "QuantizeLinear"]
    wide = [n for n in dq_in if g.dtype.get(n.input[0]) in WIDE_INTEGER_TYPES]
    wide += [n for n in q_out if g.dtype.get(n.output[0]) in WIDE_INTEGER_TYPES]
    if wide:
        return INT16_FLOAT, f"int16 Q/DQ: ORT has no int16 {node.op_type} kernel"
    floats = [o for o in origins if o is not None and o.op_type not in QDQ]
    if dq_in and q_out:
        return FLOAT, "int8 Q/DQ around it, but ORT has no fusion for this pattern"
    if dq_in and not q_out:
        return FLOAT, "output not quantized (no QuantizeLinear after it)"
    if floats:
        src = floats[0]
        return FLOAT, f"input from float op {_display(src)}"
    if q_out:
        return FLOAT, "input not quantized (no DequantizeLinear before it)"
    if any(t in g.graph_inputs for t in g.data_inputs(node)):
        return FLOAT, "reads the float graph input directly"
    return FLOAT, "no Q/DQ around it"


@BACKENDS.register("ort")
class OrtBackend(Backend):
    name = "ort"
    description = "ONNX Runtime, CPU execution provider (x86, ARM)"
    profiler = "layers (ONNX Runtime profiler)"
    model_file = ort_runner.MODEL_FILE

    def check(self, onnx_path: Path) -> CheckReport:
        import onnxruntime as ort

        with tempfile.TemporaryDirectory(prefix="stereoq-ort-") as tmp:
            optimized = Path(tmp) / "optimized.onnx"
            _session(onnx_path, ort.GraphOptimizationLevel.ORT_ENABLE_ALL, optimized)
            model = onnx.load(str(optimized))
        scopes = node_scopes(onnx.load(str(onnx_path)))
        return CheckReport(self.name, str(onnx_path), classify(model, scopes))

    def compile(self, onnx_path: Path, metadata: DeployMetadata, out_dir: Path) -> Path:
        """``model.onnx`` optimized offline up to ORT's EXTENDED level (QDQ fusions applied,
        portable across CPUs; layout transforms happen at load on the target), the metadata as
        JSON and ``run_stereo.py``, the numpy + onnxruntime runner."""
        import onnxruntime as ort

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        model_path = out_dir / ort_runner.MODEL_FILE
        _session(onnx_path, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, model_path)
        (out_dir / ort_runner.METADATA_FILE).write_text(
            metadata.model_dump_json(indent=2) + "\n", encoding="utf-8"
        )
        shutil.copyfile(ort_runner.__file__, out_dir / RUNNER_SCRIPT)
        return out_dir

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
        artifact_dir = Path(artifact_dir)
        with tempfile.TemporaryDirectory(prefix="stereoq-prof-") as tmp:
            result = run_artifact_bench(artifact_dir, RUNNER_SCRIPT, [
                "--runs", str(runs), "--warmup", str(warmup), "--threads", str(threads or 0),
                "--profile", str(profile_runs), "--profile-prefix", str(Path(tmp) / "profile"),
            ])
            trace = json.loads(Path(result.pop("profile")).read_text(encoding="utf-8"))
        result["top_layers"] = top_layers(trace, top, scopes)
        result["memory_method"] = (
            "peak resident set size (Linux VmHWM, else getrusage ru_maxrss) of a fresh "
            "Python process that imports numpy + onnxruntime, loads the artifact and runs it; "
            "rss_before_session_mib is the same figure after the imports"
        )
        return result

    def load(self, artifact_dir: Path, threads: int | None = None) -> RawRunner:
        return self.runner(artifact_dir, threads).raw

    def runner(self, artifact_dir: Path, threads: int | None = None) -> ort_runner.StereoRunner:
        return ort_runner.StereoRunner(artifact_dir, threads)
