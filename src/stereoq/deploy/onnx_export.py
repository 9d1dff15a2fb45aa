"""A stage's deployed graph as an ONNX file: export, metadata, checker, ORT agreement.

The graph is ``DeployGraph`` for float and the quant stages' converted graph (Q/DQ nodes) for
the others: (1, 6, H, W) normalised pair -> (1/2-res disparity, full-res offset), normalised.
Post-processing (upsample, add, ReLU, x maxdisp) stays outside; the metadata describes it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stereoq import staging
from stereoq.deploy.metadata import INPUT_NAME, OUTPUT_NAMES, DeployMetadata, describe
from stereoq.deploy.qdq_graph import QdqGraph
from stereoq.deploy.tensor_agreement import TensorAgreement, compare_tensors
from stereoq.errors import StereoqError
from stereoq.quiet import quiet
from stereoq.settings.config import ExperimentConfig

OPSET = 21
"""ONNX opset of every export: QuantizeLinear/DequantizeLinear take int16 from opset 21."""

EXPORT_STAGES = ("float", "calibration", "qat", "int_infer")
FLOAT_TOLERANCE = 1e-4
"""Float export: |ORT - PyTorch| <= 1e-4 + 1e-4 * |PyTorch| on every element (normalised)."""
INT_AGREEMENT = 99.9
"""Int8 export: % of each output's elements ONNX Runtime must compute within one 8-bit output
step (``OutputInfo.agreement_step``) of PyTorch's integer model, and % of each quantized tensor's
elements within one LSB given the same integer inputs (``stereoq.deploy.tensor_agreement``)."""
VERIFY_SAMPLES = 2


def size_multiple(cfg: ExperimentConfig) -> int:
    return 2**cfg.model.refine_levels


def default_size(cfg: ExperimentConfig) -> tuple[int, int]:
    """The validation frames' size rounded up to the model's multiple (SceneFlow: 544x960).

    Read from the first validation frame (packed LMDB or file tree); SceneFlow's 540x960 when
    the validation set cannot be read.
    """
    if cfg.data.source == "synthetic":
        height, width = cfg.data.synthetic.height, cfg.data.synthetic.width
    else:
        height, width = 540, 960
        try:
            from stereoq.data import build_dataset

            height, width = build_dataset(cfg.data, "val", crop=False)[0]["left"].shape[-2:]
        except (StereoqError, OSError, IndexError):
            pass
    m = size_multiple(cfg)
    return -(-height // m) * m, -(-width // m) * m


def check_size(cfg: ExperimentConfig, height: int, width: int) -> None:
    """One-line option error unless both sides are positive multiples of the model's stride."""
    m = size_multiple(cfg)
    for name, value in (("height", height), ("width", width)):
        if value <= 0 or value % m:
            raise StereoqError(
                f"option --{name}: {value} is not a positive multiple of {m}, the size "
                f"multiple this model needs",
                exit_code=2,
            )


def stage_graph(cfg: ExperimentConfig, stage: str) -> nn.Module:
    """The stage's deployed graph in eval form; one-line error if its artifact is missing."""
    if stage not in EXPORT_STAGES:
        raise StereoqError(
            f"option --stage: unknown stage {stage!r} (one of {', '.join(EXPORT_STAGES)})", 2
        )
    if stage == "float":
        from stereoq.engine.predictor import load_float_model
        from stereoq.models.stereonet import DeployGraph

        return DeployGraph(load_float_model(cfg)).eval()
    try:
        from stereoq.quant import artifacts
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith("stereoq.quant"):
            raise StereoqError(f"stage {stage!r} is not available in this build", 2) from None
        raise
    if stage == "int_infer":
        return artifacts.load_stage_graph(cfg, stage, integer=False)
    # calibration / qat hold fake-quant graphs: deploy what int_infer would make of them
    from stereoq.quant.prepare import LastTwo, convert

    return LastTwo(convert(artifacts.load_fake_quant(cfg, stage)))


def reference_graph(graph: nn.Module) -> nn.Module:
    """What a deployed ``graph`` must reproduce: quantized graphs evaluated as the runtime
    computes them (``stereoq.quant.runtime_eval``), float graphs as they are."""
    from stereoq.quant.runtime_eval import runtime_eval

    return runtime_eval(graph)


def quiet_export() -> contextlib.AbstractContextManager[None]:
    """Hold the exporter's informational warnings (torchvision ops, pytree) back."""
    return quiet(
        "torch.onnx", "torch.onnx._internal.exporter._registration", "torch.utils._pytree"
    )


def to_onnx(
    graph: nn.Module, example: Tensor, path: Path, opset: int = OPSET
) -> torch.export.ExportedProgram:
    """Export with the dynamo exporter (the only one that handles PT2E Q/DQ graphs).

    Returns the exported program the file was written from: its node names are the ONNX
    tensor names (``quantize_per_tensor_7`` in both), which the per-tensor check relies on.
    """
    with quiet_export(), torch.no_grad():
        try:
            program = torch.export.export(graph, (example,))
            onnx_program = torch.onnx.export(
                program,
                (example,),
                dynamo=True,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                verbose=False,
            )
        except Exception as err:  # the exporter raises many types; the user needs the gist
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise StereoqError(f"ONNX export failed: {first[:300]}") from None
        onnx_program.save(str(path))
    return program


def verification_inputs(cfg: ExperimentConfig, height: int, width: int) -> list[Tensor]:
    """A few validation pairs, (1, 6, height, width), padded (replicate) or cropped to size.

    Falls back to a fixed random pair when the dataset cannot be read.
    """
    try:
        from stereoq.data import build_dataset

        dataset = build_dataset(cfg.data, "val", crop=False)
        count = min(VERIFY_SAMPLES, len(dataset))
        pairs = []
        for i in range(count):
            item = dataset[i]
            pairs.append(fit(torch.cat([item["left"], item["right"]], 0)[None], height, width))
        if pairs:
            return pairs
    except (StereoqError, OSError):
        pass
    gen = torch.Generator().manual_seed(0)
    return [torch.rand(1, 6, height, width, generator=gen) * 2 - 1]


def fit(x: Tensor, height: int, width: int) -> Tensor:
    """(B, C, h, w) -> (B, C, height, width): crop, then replicate-pad right and bottom."""
    x = x[..., :height, :width]
    pad_h, pad_w = height - x.shape[-2], width - x.shape[-1]
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x


@dataclass
class Agreement:
    """ORT vs PyTorch on the same inputs: per output (normalised units) and, for int8
    exports, per quantized tensor (see ``stereoq.deploy.tensor_agreement``)."""

    quantized: bool
    samples: int
    max_abs: dict[str, float] = field(default_factory=dict)
    within_pct: dict[str, float] = field(default_factory=dict)
    """% of output elements within tolerance (float) or one 8-bit output step (int8)."""
    steps: dict[str, float | None] = field(default_factory=dict)
    min_int_pct: float = INT_AGREEMENT
    tensors: list[TensorAgreement] = field(default_factory=list)
    """Int8 exports: every quantized tensor, ORT vs PyTorch given the same integer inputs."""

    @property
    def required_pct(self) -> float:
        return self.min_int_pct if self.quantized else 100.0

    @property
    def outputs_ok(self) -> bool:
        return all(p >= self.required_pct for p in self.within_pct.values())

    @property
    def tensors_ok(self) -> bool:
        return all(t.within_pct >= self.required_pct for t in self.tensors)

    @property
    def ok(self) -> bool:
        """Float: every output element within tolerance. Int8: each output within one 8-bit
        output step on ``required_pct`` % of its elements, against PyTorch's integer model
        (``stereoq.quant.runtime_eval``), and, where measured, every quantized
        tensor within one LSB on ``required_pct`` % of its elements given the same inputs."""
        if self.quantized and self.tensors:
            return self.outputs_ok and self.tensors_ok
        return self.outputs_ok

    def worst_tensor(self) -> TensorAgreement | None:
        return min(self.tensors, key=lambda t: (t.within_pct, t.exact_pct), default=None)

    def outputs_summary(self) -> str:
        parts = [
            f"{name}: {self.within_pct[name]:.3f}% within "
            + (f"1 step ({self.steps[name]:.3g})" if self.steps.get(name) else "tolerance")
            + f", max |diff| {self.max_abs[name]:.3g}"
            for name in self.max_abs
        ]
        return "; ".join(parts)

    def summary(self) -> str:
        worst = self.worst_tensor()
        if worst is None:
            return self.outputs_summary()
        where = f" ({worst.scope})" if worst.scope else ""
        return (
            f"{len(self.tensors)} quantized tensors given the same inputs: lowest "
            f"{worst.within_pct:.3f}% within one LSB ({worst.name}{where}, max "
            f"{worst.max_lsb} LSB); outputs end to end: {self.outputs_summary()}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "quantized": self.quantized,
            "samples": self.samples,
            "required_pct": self.required_pct,
            "max_abs": self.max_abs,
            "within_pct": self.within_pct,
            "steps": self.steps,
            "outputs_ok": self.outputs_ok,
            "tensors_ok": self.tensors_ok,
            "tensors": [t.to_json() for t in self.tensors],
            "ok": self.ok,
        }


def compare(
    got: list[tuple[np.ndarray, ...]],
    ref: list[tuple[np.ndarray, ...]],
    steps: dict[str, float | None],
    quantized: bool,
    min_int_pct: float = INT_AGREEMENT,
) -> Agreement:
    """Agreement of two runs' outputs (lists over samples of (disparity_half, offset))."""
    agreement = Agreement(
        quantized=quantized, samples=len(got), steps=dict(steps), min_int_pct=min_int_pct
    )
    for k, name in enumerate(OUTPUT_NAMES):
        a = np.concatenate([g[k].ravel() for g in got])
        b = np.concatenate([r[k].ravel() for r in ref])
        diff = np.abs(a.astype(np.float64) - b)
        step = steps.get(name)
        # 1.001: rounding of the scale product itself
        tol = step * 1.001 if quantized and step else FLOAT_TOLERANCE * (1 + np.abs(b))
        agreement.max_abs[name] = float(diff.max()) if diff.size else 0.0
        agreement.within_pct[name] = float(100.0 * np.mean(diff <= tol)) if diff.size else 100.0
    return agreement


def run_torch(graph: nn.Module, inputs: list[Tensor]) -> list[tuple[np.ndarray, ...]]:
    with torch.no_grad():
        return [tuple(t.numpy() for t in graph(x)) for x in inputs]


def run_onnx(path: Path, inputs: list[Tensor]) -> list[tuple[np.ndarray, ...]]:
    import onnxruntime as ort

    from stereoq.deploy.ort_runner import session_options

    session = ort.InferenceSession(
        str(path), session_options(None), providers=["CPUExecutionProvider"]
    )
    return [tuple(session.run(None, {INPUT_NAME: x.numpy()})) for x in inputs]


@dataclass
class ExportResult:
    path: Path
    metadata: DeployMetadata
    agreement: Agreement
    op_counts: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "metadata": self.metadata.model_dump(),
            "agreement": self.agreement.to_json(),
            "op_counts": self.op_counts,
        }


def default_path(cfg: ExperimentConfig, stage: str) -> Path:
    return cfg.run_dir / "deploy" / f"stereonet_{stage}.onnx"


def export_stage(
    cfg: ExperimentConfig,
    stage: str,
    height: int,
    width: int,
    out_path: Path | None = None,
    opset: int = OPSET,
    min_agreement: float = INT_AGREEMENT,
) -> ExportResult:
    """Export ``stage`` at ``height`` x ``width``, check it, verify ORT against PyTorch.

    The file appears at its final path only once the checker and the agreement passed; an
    int8 export needs ``min_agreement`` % of each output's elements within one output step of
    PyTorch's integer model (as the runtime computes it) and of each quantized
    tensor's elements within one LSB given the same inputs.
    """
    check_size(cfg, height, width)
    graph = stage_graph(cfg, stage)
    path = Path(out_path) if out_path is not None else default_path(cfg, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs = verification_inputs(cfg, height, width)
    tmp = staging.new_file(path)  # named for this process; dead writers' temps removed
    try:
        program = to_onnx(graph, inputs[0], tmp, opset)
        model = onnx.load(str(tmp))
        quant = QdqGraph(model).output_quant()
        quantized = any(n.op_type == "QuantizeLinear" for n in model.graph.node)
        metadata = describe(
            cfg, stage, "int8-qdq" if quantized else "float32", opset, height, width, quant
        )
        steps = {o.name: o.agreement_step for o in metadata.outputs}
        for key, value in metadata.onnx_props().items():
            model.metadata_props.add(key=key, value=value)
        model.doc_string = f"stereoq {stage} StereoNet; outputs need: {metadata.postprocess}"
        try:
            onnx.checker.check_model(model, full_check=True)
        except onnx.checker.ValidationError as err:
            first = str(err).strip().splitlines()[0]
            raise StereoqError(f"exported model fails onnx.checker: {first}") from None
        onnx.save(model, str(tmp))
        agreement = compare(
            run_onnx(tmp, inputs), run_torch(reference_graph(graph), inputs), steps,
            quantized, min_agreement,
        )
        if quantized:
            agreement.tensors = compare_tensors(program.module(), model, inputs)
            if not agreement.tensors:
                raise StereoqError(
                    f"cannot match the {stage} export's quantized tensors to PyTorch's graph"
                )
        if not agreement.ok:
            need = ("within one step on each output and one LSB on every quantized tensor"
                    if quantized else "everywhere")
            raise StereoqError(
                f"ONNX Runtime disagrees with PyTorch on the {stage} export (needs "
                f"{agreement.required_pct:g}% {need}): {agreement.summary()}"
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return ExportResult(path, metadata, agreement, dict(sorted(counts.items())))


def read_metadata(path: Path) -> DeployMetadata | None:
    """The stereoq metadata of an exported file (None for files without it)."""
    return DeployMetadata.from_onnx(onnx.load(str(path), load_external_data=False))
