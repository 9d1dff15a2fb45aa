"""A stage's deployed graph as an ONNX file: export, metadata, checker, ORT agreement.

The graph is the stage's ``Stage.graph()`` (float, or Q/DQ nodes around integer ops):
(1, 6, H, W) normalised pair -> (1/2-res disparity, full-res offset), normalised.
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
from pydantic import ValidationError
from torch import Tensor, nn

from stereoq import staging
from stereoq.agreement import within_pct
from stereoq.deploy.acceptance import (
    DEFAULT,
    DisparityAgreement,
    DisparityComparison,
    Thresholds,
    for_model,
)
from stereoq.deploy.metadata import INPUT_NAME, OUTPUT_NAMES, DeployMetadata, describe
from stereoq.deploy.ort_runner import postprocess
from stereoq.deploy.qdq_graph import QdqGraph, node_scopes
from stereoq.deploy.saturation import saturation_hint
from stereoq.deploy.tensor_agreement import TensorAgreement, compare_tensors
from stereoq.engine.stage import stage_dir
from stereoq.errors import StereoqError
from stereoq.models.padding import fit, padded_size
from stereoq.quiet import quiet
from stereoq.settings.config import ExperimentConfig

OPSET = 21
"""ONNX opset of every export: QuantizeLinear/DequantizeLinear take int16 from opset 21."""

INT_AGREEMENT = 99.9
"""Int8 export: % of each output's elements ONNX Runtime must compute within one 8-bit output
step (``OutputInfo.agreement_step``) of PyTorch's integer model, and % of each quantized tensor's
elements within one LSB given the same integer inputs (``stereoq.deploy.tensor_agreement``)."""
VERIFY_SAMPLES = 4
"""Validation frames every export is verified on."""


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
    return padded_size(height, width, cfg.model.size_multiple)


def check_size(cfg: ExperimentConfig, height: int, width: int) -> None:
    """One-line option error unless both sides are positive multiples of the model's stride."""
    m = cfg.model.size_multiple
    for name, value in (("height", height), ("width", width)):
        if value <= 0 or value % m:
            raise StereoqError(
                f"option --{name}: {value} is not a positive multiple of {m}, the size "
                f"multiple this model needs",
                exit_code=2,
            )


def stage_graph(cfg: ExperimentConfig, stage: str) -> nn.Module:
    """The stage's deployed graph in eval form (``Stage.graph``); one-line error if its
    artifact is missing."""
    from stereoq.stages import get_stage

    return get_stage(cfg, stage).graph()


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


@dataclass
class VerificationFrame:
    """One validation pair at the export size and what scoring it needs."""

    x: Tensor
    """(1, 6, height, width): cropped, then replicate-padded."""
    gt: Tensor | None
    """(1, 1, h, w) ground truth of the region that came from the frame (None: no dataset)."""
    size: tuple[int, int]
    """(h, w) of that region, at the top left of ``x``."""


def verification_frames(cfg: ExperimentConfig, height: int, width: int) -> list[VerificationFrame]:
    """The first ``VERIFY_SAMPLES`` validation pairs at ``height`` x ``width``.

    Falls back to one fixed random pair (no ground truth) when the dataset cannot be read.
    """
    try:
        from stereoq.data import build_dataset

        dataset = build_dataset(cfg.data, "val", crop=False)
        frames = []
        for i in range(min(VERIFY_SAMPLES, len(dataset))):
            item = dataset[i]
            x = torch.cat([item["left"], item["right"]], 0)[None]
            h, w = min(x.shape[-2], height), min(x.shape[-1], width)
            gt = item["disp"][None, ..., :h, :w] if "disp" in item else None
            frames.append(VerificationFrame(fit(x, height, width), gt, (h, w)))
        if frames:
            return frames
    except (StereoqError, OSError):
        pass
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 6, height, width, generator=gen) * 2 - 1
    return [VerificationFrame(x, None, (height, width))]


def verification_inputs(cfg: ExperimentConfig, height: int, width: int) -> list[Tensor]:
    """The inputs of ``verification_frames``."""
    return [f.x for f in verification_frames(cfg, height, width)]


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
        agreement.max_abs[name] = float(diff.max()) if diff.size else 0.0
        agreement.within_pct[name] = within_pct(diff, step if quantized else None, b)
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
    """Bit level: per output step and, for int8, per quantized tensor (a diagnostic unless
    the export was strict)."""
    disparity: DisparityAgreement
    """What a user sees: final disparity and accuracy of both models (the exit criterion)."""
    op_counts: dict[str, int]
    strict: bool = False

    @property
    def ok(self) -> bool:
        return self.disparity.ok and (self.agreement.ok or not self.strict)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "metadata": self.metadata.model_dump(),
            "acceptance": self.disparity.to_json(),
            "strict": self.strict,
            "agreement": self.agreement.to_json(),
            "op_counts": self.op_counts,
            "ok": self.ok,
        }


def default_path(cfg: ExperimentConfig, stage: str) -> Path:
    return cfg.run_dir / "deploy" / f"stereonet_{stage}.onnx"


def compare_disparity(
    got: list[tuple[np.ndarray, ...]],
    ref: list[tuple[np.ndarray, ...]],
    frames: list[VerificationFrame],
    maxdisp: float,
    thresholds: Thresholds = DEFAULT,
) -> DisparityAgreement:
    """Final disparity (after the deployed post-processing) of two runs' outputs, scored
    against each frame's ground truth where it has one (``stereoq.deploy.acceptance``)."""
    comparison = DisparityComparison(maxdisp, thresholds)
    for g, r, frame in zip(got, ref, frames, strict=True):
        h, w = frame.size
        comparison.update(
            postprocess(g[0], g[1], maxdisp)[..., :h, :w],
            postprocess(r[0], r[1], maxdisp)[..., :h, :w],
            None if frame.gt is None else frame.gt.numpy(),
        )
    return comparison.result()


def first_departing(tensors: list[TensorAgreement], min_pct: float) -> TensorAgreement | None:
    """The first quantized tensor, in graph order, that ONNX Runtime computes differently
    from PyTorch given the same inputs: where a broken export goes wrong."""
    return next((t for t in tensors if t.within_pct < min_pct), None)


def failure_message(stage: str, result: ExportResult) -> str:
    """One line: what is off in a rejected export, and where it starts."""
    agreement = result.agreement
    if not result.disparity.ok:
        text = (f"ONNX Runtime's {stage} export departs from PyTorch's model on "
                f"{result.disparity.frames} validation frame(s): "
                + "; ".join(result.disparity.problems))
    else:
        need = ("within one step on each output and one LSB on every quantized tensor"
                if agreement.quantized else "everywhere")
        text = (f"--strict: ONNX Runtime disagrees with PyTorch on the {stage} export (needs "
                f"{agreement.required_pct:g}% {need}): {agreement.summary()}")
    worst = first_departing(agreement.tensors, INT_AGREEMENT)
    if worst is not None and not result.disparity.ok:
        where = f" in {worst.scope}" if worst.scope else ""
        text += (f"; first quantized tensor that departs: {worst.name}{where} "
                 f"({worst.within_pct:.2f}% within one LSB, max {worst.max_lsb} LSB)")
    return text


def export_stage(
    cfg: ExperimentConfig,
    stage: str,
    height: int,
    width: int,
    out_path: Path | None = None,
    opset: int = OPSET,
    min_agreement: float = INT_AGREEMENT,
    strict: bool = False,
) -> ExportResult:
    """Export ``stage`` at ``height`` x ``width``, check it, verify ORT against PyTorch.

    The file appears at its final path only once the checker and the verification passed:
    on ``VERIFY_SAMPLES`` validation frames, the final disparity and its accuracy must match
    PyTorch's (``stereoq.deploy.acceptance``). Bit-level agreement is measured beside it and,
    with ``strict``, required too: for int8, ``min_agreement`` % of each output's elements
    within one output step of PyTorch's integer model (as the runtime computes it) and of
    each quantized tensor's elements within one LSB given the same inputs.
    """
    check_size(cfg, height, width)
    graph = stage_graph(cfg, stage)
    path = Path(out_path) if out_path is not None else default_path(cfg, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = verification_frames(cfg, height, width)
    inputs = [f.x for f in frames]
    tmp = staging.new_file(path)  # named for this process; dead writers' temps removed
    try:
        program = to_onnx(graph, inputs[0], tmp, opset)
        model = onnx.load(str(tmp))
        metadata = stamp(model, cfg, stage, opset, height, width)
        quantized = metadata.precision == "int8-qdq"
        steps = {o.name: o.agreement_step for o in metadata.outputs}
        try:
            onnx.checker.check_model(model, full_check=True)
        except onnx.checker.ValidationError as err:
            first = str(err).strip().splitlines()[0]
            raise StereoqError(f"exported model fails onnx.checker: {first}") from None
        onnx.save(model, str(tmp))
        got, ref = run_onnx(tmp, inputs), run_torch(reference_graph(graph), inputs)
        agreement = compare(got, ref, steps, quantized, min_agreement)
        if quantized:
            agreement.tensors = compare_tensors(program.module(), model, inputs)
            if not agreement.tensors:
                raise StereoqError(
                    f"cannot match the {stage} export's quantized tensors to PyTorch's graph"
                )
        counts: dict[str, int] = {}
        for node in model.graph.node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
        result = ExportResult(
            path, metadata, agreement,
            compare_disparity(got, ref, frames, float(metadata.maxdisp),
                              for_model(DEFAULT, metadata.float_convs)),
            dict(sorted(counts.items())), strict,
        )
        if not result.ok:
            raise StereoqError(failure_message(stage, result) + saturation_hint(model))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return result


def stamp(
    model: onnx.ModelProto, cfg: ExperimentConfig, stage: str, opset: int, height: int, width: int
) -> DeployMetadata:
    """Describe an exported ``model`` of ``stage`` (float, or int8 Q/DQ when it quantizes) and
    write the description into it (metadata properties, doc string); returns it."""
    quantized = any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    graph = QdqGraph(model)
    convs = graph.float_convs()
    if convs:  # module names only where there is something to name
        scopes = node_scopes(model)
        convs = [scopes.get(n, n).removeprefix("model.") for n in convs]
    metadata = describe(cfg, stage, "int8-qdq" if quantized else "float32", opset, height, width,
                        graph.output_quant(), convs)
    for key, value in metadata.onnx_props().items():
        model.metadata_props.add(key=key, value=value)
    model.doc_string = f"stereoq {stage} StereoNet; outputs need: {metadata.postprocess}"
    return metadata


def read_metadata(path: Path) -> DeployMetadata | None:
    """The stereoq metadata of an exported file (None for files without it); metadata this
    version cannot read (another stereoq version's) is a one-line error."""
    try:
        return DeployMetadata.from_onnx(onnx.load(str(path), load_external_data=False))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "metadata"
        raise StereoqError(f"{path}: stereoq metadata this version cannot read ({where}: "
                           f"{first['msg']}); export it again with stereoq export") from None


def _newest_mtime(folder: Path) -> float:
    times = [p.stat().st_mtime for p in folder.rglob("*") if p.is_file()]
    return max(times, default=0.0)


def stage_onnx(
    cfg: ExperimentConfig, stage: str, height: int, width: int, strict: bool = False
) -> tuple[Path, ExportResult | None]:
    """The stage's ONNX file at this size: the existing export when it matches and is newer
    than everything in the stage's run folder, else a fresh (verified) export. ``strict``
    always exports afresh, verified bit by bit (``export_stage``)."""
    path, meta = default_path(cfg, stage), None
    if path.is_file() and not strict:
        with contextlib.suppress(StereoqError):  # another version's export: made again
            meta = read_metadata(path)
        fresh = path.stat().st_mtime >= _newest_mtime(stage_dir(cfg, stage))
        if meta is not None and fresh and (meta.stage, meta.height, meta.width) == (
            stage,
            height,
            width,
        ):
            return path, None
    result = export_stage(cfg, stage, height, width, path, strict=strict)
    return result.path, result
