"""The quantized stages in the engine: calibration -> qat -> int_infer.

- ``calibration`` (one pass): float ``best.pt`` -> BN folded, exported, percentile observers,
  ``stages.calibration.batches`` batches of training images at full size (no crop) ->
  ``calibration/calibrated.pt``: the fake-quantized graph with the calibrated ranges.
- ``qat`` (the engine's training loop): starts from the calibration model, as the reference
  recipe does; fake quants keep updating their ranges (moving average) while training and are
  frozen for validation.
- ``int_infer`` (one pass): converts the QAT model (or the calibration model, with
  ``stages.int_infer.source: calibration``) into the integer Q/DQ program
  ``int_infer/model.pt2``.
Each saved model gets ``precision.json`` (``stereoq.quant.report``). torchao is imported inside
the methods only (see ``stereoq.engine.stage``).
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from stereoq.atomic import atomic_write_json
from stereoq.engine.report import Reporter
from stereoq.engine.stage import STAGES, Stage, stage_dir
from stereoq.settings.config import ExperimentConfig

AGREEMENT_IMAGES = 8


def _postprocess(cfg: ExperimentConfig) -> nn.Module:
    post = cfg.model.postprocess
    return post.registry.build(post.type, maxdisp=cfg.model.maxdisp, **post.params())


def _predictor(cfg: ExperimentConfig, graph: nn.Module) -> nn.Module:
    """A (1/2 disparity, offset) graph as a (B, 6, H, W) -> (B, 1, H, W) px predictor."""
    from stereoq.engine.predictor import PaddedGraph
    from stereoq.quant.prepare import min_input_size

    return PaddedGraph(
        graph, _postprocess(cfg), cfg.model.size_multiple,
        min_input_size(cfg.model.num_candidates, cfg.model.size_multiple),
    )


def write_precision_report(cfg: ExperimentConfig, stage: str, converted: nn.Module) -> Path:
    """Save the per-op precision report of ``stage``'s converted graph; returns its path."""
    from stereoq.quant.artifacts import report_path
    from stereoq.quant.report import precision_report

    report = {"stage": stage, "config": cfg.name, **precision_report(converted)}
    return atomic_write_json(report_path(cfg, stage), report)


@STAGES.register("calibration")
class CalibrationStage(Stage):
    """Post-training calibration of the float model (percentile observers, BN folded)."""

    name = "calibration"
    previous = "float"
    trains = False

    def run(self, reporter: Reporter) -> dict[str, Any]:
        from torch.utils.data import DataLoader

        from stereoq.data import build_dataset
        from stereoq.engine.checkpoint import save_checkpoint
        from stereoq.engine.evaluate import pair_input
        from stereoq.engine.predictor import load_float_model
        from stereoq.quant.artifacts import artifact_path, fresh_fake_quant
        from stereoq.quant.prepare import calibrate, convert, load_calibration, prepare
        from stereoq.quant.recipes import calibration_recipe

        cfg, recipe = self.cfg, self.cfg.stages.calibration
        model = load_float_model(cfg)
        reporter.note("exporting the float model and inserting observers")
        observed = prepare(model, calibration_recipe(cfg))
        dataset = build_dataset(cfg.data, "train", crop=False)
        loader = DataLoader(
            dataset, batch_size=recipe.batch_size, shuffle=True,
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        count = min(recipe.batches, len(loader))
        reporter.task("calibration", count)
        calibrate(observed, (pair_input(b) for b in islice(loader, count)),
                  on_batch=lambda: reporter.advance(1))
        reporter.done()
        fake_quant = fresh_fake_quant(cfg)
        ranges = load_calibration(observed, fake_quant)
        path = save_checkpoint(artifact_path(cfg, "calibration"), {
            "model": fake_quant.state_dict(), "stage": "calibration", "batches": count,
            "batch_size": recipe.batch_size, "observer": recipe.observer,
            "percentile": recipe.percentile,
        })
        report = write_precision_report(cfg, "calibration", convert(fake_quant))
        return {"stage": "calibration", "batches": count, "batch_size": recipe.batch_size,
                "activation_ranges": ranges, "model": str(path), "precision_report": str(report)}


@STAGES.register("qat")
class QatStage(Stage):
    """Quantization-aware training from the calibration model, in the engine's loop."""

    name = "qat"
    previous = "calibration"

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        self.post = _postprocess(cfg)

    def prepare(self, example: Tensor) -> nn.Module:
        from stereoq.quant.artifacts import load_fake_quant

        return load_fake_quant(self.cfg, "calibration")

    def set_mode(self, model: nn.Module, training: bool) -> None:
        from stereoq.quant.prepare import set_observers

        model.train(training)
        set_observers(model, training)

    def outputs(self, model: nn.Module, x: Tensor) -> list[Tensor]:
        return self.post(list(model(x)))

    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        from stereoq.quant.prepare import LastTwo

        return _predictor(self.cfg, LastTwo(model))(x)

    def save(self, model: nn.Module, out_dir: Path, metrics: dict[str, Any]) -> None:
        from stereoq.quant.prepare import convert

        write_precision_report(self.cfg, "qat", convert(model))


@STAGES.register("int_infer")
class IntInferStage(Stage):
    """Conversion to the integer program, saved with ``torch.export.save``."""

    name = "int_infer"
    trains = False

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        self.previous = cfg.stages.int_infer.source

    def run(self, reporter: Reporter) -> dict[str, Any]:
        from stereoq.quant.artifacts import artifact_path, load_fake_quant, save_program
        from stereoq.quant.prepare import LastTwo, convert, export_program

        cfg, source = self.cfg, self.previous
        fake_quant = load_fake_quant(cfg, source)
        reporter.note(f"converting the {source} model and exporting the integer program")
        converted = convert(fake_quant)
        program = export_program(
            LastTwo(converted), cfg.model.num_candidates, cfg.model.size_multiple
        )
        report = write_precision_report(cfg, "int_infer", converted)
        path = save_program(artifact_path(cfg, "int_infer"), program)
        summary = {"stage": "int_infer", "source": source, "model": str(path),
                   "precision_report": str(report)}
        agreement = self.agreement(LastTwo(fake_quant), program.module(), converted, reporter)
        summary.update(agreement)
        atomic_write_json(stage_dir(cfg, "int_infer") / "agreement.json", agreement)
        return summary

    @torch.no_grad()
    def agreement(self, fake_quant: nn.Module, program: nn.Module, converted: nn.Module,
                  reporter: Reporter) -> dict[str, Any]:
        """Integer program vs fake-quant model on the first validation images, in px.

        Both are evaluated as the deployment runtime computes them (as every quantized stage is,
        ``stereoq.quant.runtime_eval``), each from its own quantization parameters.
        One quantization step = the coarser of the two output quantizers' steps (the 1/2
        disparity, int16, and the offset, uint8 as every conv output) times maxdisp.
        """
        from stereoq.engine.evaluate import pair_input, val_dataset
        from stereoq.quant.prepare import output_scales
        from stereoq.quant.runtime_eval import runtime_eval

        cfg = self.cfg
        step_px = max(output_scales(converted)[-2:]) * cfg.model.maxdisp
        dataset = val_dataset(cfg)
        count = min(AGREEMENT_IMAGES, len(dataset))
        a = _predictor(cfg, runtime_eval(fake_quant))
        b = _predictor(cfg, runtime_eval(program))
        diffs = []
        reporter.task("int_infer vs fake-quant", count)
        for i in range(count):
            x = pair_input({k: v[None] for k, v in dataset[i].items() if k in ("left", "right")})
            diffs.append((a(x) - b(x)).abs().flatten())
            reporter.advance(1)
        reporter.done()
        diff = torch.cat(diffs)
        return {
            "agreement_images": count,
            "step_px": step_px,
            "within_one_step_pct": 100.0 * (diff <= step_px * 1.0001).float().mean().item(),
            "within_1px_pct": 100.0 * (diff <= 1.0).float().mean().item(),
            "max_abs_diff_px": diff.max().item(),
            "mean_abs_diff_px": diff.mean().item(),
        }
