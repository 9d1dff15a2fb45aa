"""``compile``: the stage's ONNX file -> a backend's deployable artifact, its performance
report, and optionally its accuracy next to the PyTorch integer model's (``validate``)."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stereoq import staging
from stereoq.agreement import FLOAT_TOLERANCE, within
from stereoq.atomic import atomic_write_json
from stereoq.deploy.acceptance import DisparityComparison, for_model
from stereoq.deploy.backends import get_backend
from stereoq.deploy.backends.base import Backend
from stereoq.deploy.check import CheckReport
from stereoq.deploy.metadata import OUTPUT_NAMES, DeployMetadata
from stereoq.deploy.onnx_export import (
    INT_AGREEMENT,
    ExportResult,
    check_size,
    reference_graph,
    run_torch,
    stage_graph,
)
from stereoq.deploy.ort_runner import postprocess
from stereoq.deploy.saturation import saturation_hint, saturation_risk
from stereoq.engine.report import Reporter
from stereoq.errors import StereoqError
from stereoq.models.padding import fit
from stereoq.settings.config import ExperimentConfig

REPORT_FILE = "report.json"


def artifact_dir(cfg: ExperimentConfig, backend: str) -> Path:
    return cfg.run_dir / "deploy" / backend


@dataclass
class CompileResult:
    """A built and measured artifact; staged beside ``artifact_dir`` until ``commit``."""

    artifact_dir: Path
    """Where the artifact lives once committed: ``<run_dir>/deploy/<backend>/``."""
    metadata: DeployMetadata
    performance: dict[str, Any]
    export: ExportResult | None = None
    validation: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    staged_dir: Path | None = None
    """The staging folder holding the artifact until ``commit`` (None after it or ``discard``)."""
    source: Path | None = None
    """The graph file the artifact was built from (the stage's ONNX export for most backends)."""

    def saturation_hint(self) -> str:
        """Why a validation failure may come from int16 pair sums on this CPU, or ''."""
        return "" if self.source is None else saturation_hint(self.source)

    @property
    def current_dir(self) -> Path:
        """The folder holding the artifact's files now (run or validate it from here)."""
        return self.staged_dir or self.artifact_dir

    def commit(self, report: dict[str, Any] | None = None) -> Path:
        """Write ``report`` (default ``to_json()``) as ``report.json`` into the staged folder,
        then swap that folder in as ``artifact_dir`` whole (the previous artifact goes with
        the swap); -> the report's final path."""
        if self.staged_dir is None:
            raise RuntimeError(f"{self.artifact_dir}: nothing staged to commit")
        # strict JSON, as every result the CLI saves (``stereoq.cli.output.write_json``)
        atomic_write_json(self.staged_dir / REPORT_FILE,
                          self.to_json() if report is None else report, allow_nan=False)
        staging.swap_dir(self.staged_dir, self.artifact_dir)
        self.staged_dir = None
        return self.artifact_dir / REPORT_FILE

    def discard(self) -> None:
        """Remove the staged folder unless committed; the previous artifact stays as it was."""
        if self.staged_dir is not None:
            staging.discard(self.staged_dir)
            self.staged_dir = None

    def __enter__(self) -> CompileResult:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()

    def to_json(self) -> dict[str, Any]:
        return {
            "artifact_dir": str(self.artifact_dir),
            "backend": self.extra.get("backend"),
            "machine": self.extra.get("machine"),
            "metadata": self.metadata.model_dump(),
            "performance": self.performance,
            "export": self.export.to_json() if self.export else None,
            "validation": self.validation,
        }


def check_stage(
    cfg: ExperimentConfig, stage: str, backend_name: str, height: int, width: int
) -> CheckReport:
    """The backend's source for ``stage`` at this size (exported if needed), then how the
    backend runs each of its ops."""
    backend = get_backend(backend_name)
    check_size(cfg, height, width)
    source = backend.stage_source(cfg, stage, height, width).path
    report = backend.check(source)
    report.overrides = precision_overrides(cfg, stage)
    risk = saturation_risk(source)
    report.warnings = [risk] if risk else []
    return report


def precision_overrides(cfg: ExperimentConfig, stage: str) -> dict[str, str]:
    """The layers of ``stage``'s model whose precision was set by name (config or accuracy
    budget), from its precision report; none for a stage without one."""
    import json

    from stereoq.stages import get_stage

    path = getattr(get_stage(cfg, stage), "precision_report", None)
    if path is None or not path.is_file():
        return {}
    return dict(json.loads(path.read_text()).get("overrides", {}))


def compile_stage(
    cfg: ExperimentConfig,
    stage: str,
    backend_name: str,
    height: int,
    width: int,
    runs: int = 20,
    warmup: int = 3,
    threads: int | None = None,
    top: int = 10,
    strict: bool = False,
) -> CompileResult:
    """Export (if needed), build the artifact in a staging folder and time it there.

    Nothing replaces ``<run_dir>/deploy/<backend>/`` until the caller commits, so a kill at any
    point leaves the previous complete artifact (report included) or the new one; a killed
    run's staging folder is removed by the next. Use the result as a context manager::

        with compile_stage(cfg, stage, backend, h, w) as result:
            result.validation = validate(cfg, backend_, result.current_dir, result.metadata)
            result.commit()  # or commit(report): written as report.json, then swapped in

    Leaving the block without ``commit`` discards the staged artifact.
    """
    backend = get_backend(backend_name)
    check_size(cfg, height, width)
    source = backend.stage_source(cfg, stage, height, width, strict)
    metadata, exported = source.metadata, source.export
    target = artifact_dir(cfg, backend_name)
    staged = staging.new_dir(target)
    try:
        backend.compile(source.path, metadata, staged)
        perf = backend.benchmark(staged, runs, warmup, threads, top, backend.scopes(source.path))
    except BaseException:
        staging.discard(staged)
        raise
    # A median below the timer's resolution has no meaningful rate: None (null in report.json).
    perf["fps"] = 1000.0 / perf["median_ms"] if perf["median_ms"] > 0 else None
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
    return CompileResult(
        target, metadata, perf, exported, extra={"backend": backend_name, "machine": machine},
        staged_dir=staged, source=source.path,
    )


class BitAgreement:
    """The diagnostic beside the acceptance verdict: per output, how many elements the
    artifact computes within one quantization step of PyTorch (``stereoq.agreement``) and the
    largest difference; on the final disparity, pixels within ``maxdisp x`` the coarser step."""

    def __init__(self, metadata: DeployMetadata) -> None:
        self.steps = {o.name: o.agreement_step for o in metadata.outputs}
        known = [s for s in self.steps.values() if s]
        maxdisp = float(metadata.maxdisp)
        self.px_step = maxdisp * max(known) if known else maxdisp * FLOAT_TOLERANCE
        self.within = dict.fromkeys(OUTPUT_NAMES, 0)
        self.elements = dict.fromkeys(OUTPUT_NAMES, 0)
        self.max_abs = dict.fromkeys(OUTPUT_NAMES, 0.0)
        self.px_within, self.px_total = 0, 0

    def update(self, got: tuple[np.ndarray, ...], ref: tuple[np.ndarray, ...],
               disp_got: np.ndarray, disp_ref: np.ndarray) -> None:
        for k, name in enumerate(OUTPUT_NAMES):
            diff = np.abs(got[k].astype(np.float64) - ref[k])
            self.within[name] += int(within(diff, self.steps[name], ref[k]).sum())
            self.elements[name] += diff.size
            self.max_abs[name] = max(self.max_abs[name],
                                     float(np.nan_to_num(diff, nan=np.inf).max()))
        self.px_within += int(within(np.abs(disp_got - disp_ref), self.px_step).sum())
        self.px_total += disp_ref.size

    def outputs(self) -> dict[str, dict[str, Any]]:
        return {
            name: {
                "step": self.steps[name],
                "within_step_pct": 100.0 * self.within[name] / max(self.elements[name], 1),
                "max_abs": self.max_abs[name],
            }
            for name in OUTPUT_NAMES
        }

    def to_json(self, max_abs_px: float) -> dict[str, Any]:
        return {
            "outputs": self.outputs(),
            "disparity_step_px": self.px_step,
            "disparity_within_step_pct": 100.0 * self.px_within / max(self.px_total, 1),
            "disparity_max_abs_px": max_abs_px,
        }


def validate(
    cfg: ExperimentConfig,
    backend: Backend,
    artifact: Path,
    metadata: DeployMetadata,
    max_samples: int | None = None,
    reporter: Reporter | None = None,
    strict: bool = False,
    min_agreement: float = INT_AGREEMENT,
) -> dict[str, Any]:
    """Run the artifact and the stage's PyTorch graph over the validation set.

    Both see the same padded input and go through the same post-processing, so differences come
    from the deployed graph alone. Returns EPE/D1/bad-k of each, the verdict on what a user sees
    (``acceptance``: final disparity within 1 px, EPE and D1 of both; ``stereoq.deploy.acceptance``)
    and, as a diagnostic, the bit-level agreement (``BitAgreement``). ``ok`` is the acceptance
    verdict, and with ``strict`` also ``min_agreement`` % of each output within one step.
    """
    from stereoq.data import build_dataset

    reporter = reporter or Reporter()
    dataset = build_dataset(cfg.data, "val", crop=False)
    count = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    if count == 0:
        raise StereoqError("the validation set is empty")
    run_artifact = backend.load(artifact)
    graph = reference_graph(stage_graph(cfg, metadata.stage))
    maxdisp = float(metadata.maxdisp)
    comparison = DisparityComparison(maxdisp, for_model(backend.thresholds, metadata.float_convs))
    bits = BitAgreement(metadata)
    reporter.task(f"validating {artifact.name} against {metadata.stage}", count)
    try:
        for i in range(count):
            item = dataset[i]
            x = torch.cat([item["left"], item["right"]], 0)[None]
            h, w = x.shape[-2:]
            _check_fits(metadata, i, h, w)
            xp = fit(x, metadata.height, metadata.width)
            got = run_artifact(xp.numpy())
            ref = run_torch(graph, [xp])[0]
            disp_got = postprocess(got[0], got[1], maxdisp)[..., :h, :w]
            disp_ref = postprocess(ref[0], ref[1], maxdisp)[..., :h, :w]
            bits.update(got, ref, disp_got, disp_ref)
            comparison.update(disp_got, disp_ref, item["disp"][None].numpy())
            reporter.advance()
    finally:
        reporter.done()
    acceptance = comparison.result()
    problems = list(acceptance.problems)
    if strict:
        problems += [
            f"--strict: {name} {o['within_step_pct']:.3f}% within one step (needs "
            f"{min_agreement:g}%)"
            for name, o in bits.outputs().items()
            if o["within_step_pct"] < min_agreement
        ]
    return {
        "samples": count,
        "stage": metadata.stage,
        "deployed": acceptance.deployed,
        "reference": acceptance.reference,
        "acceptance": acceptance.to_json(),
        "strict": strict,
        "agreement": bits.to_json(acceptance.max_abs_px),
        "problems": problems,
        "ok": not problems,
    }


def _check_fits(metadata: DeployMetadata, index: int, height: int, width: int) -> None:
    """A validation image larger than the artifact's fixed input is an option error."""
    if height > metadata.height or width > metadata.width:
        raise StereoqError(
            f"validation image {index} is {height}x{width}, larger than the artifact's "
            f"{metadata.height}x{metadata.width}: compile with --height {height} --width "
            f"{width} (rounded up to the size multiple)",
            exit_code=2,
        )
