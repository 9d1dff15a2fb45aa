"""``calibration`` (one pass): post-training calibration of the float model.

Float ``best.pt`` (or adapt's, ``stages.calibration.source``) -> BN folded, exported,
percentile observers, ``stages.calibration.batches`` batches of that stage's training images
at full size (no crop; no label is read) -> ``calibration/calibrated.pt``: the fake-quantized
graph's state with the calibrated ranges, and its ``precision.json``.
"""

from __future__ import annotations

from itertools import islice
from typing import TYPE_CHECKING, Any

from stereoq.engine.report import Reporter
from stereoq.stages.float_stage import FloatStage
from stereoq.stages.quantized import FakeQuantStage
from stereoq.stages.registry import get_stage

if TYPE_CHECKING:
    from stereoq.settings.config import ExperimentConfig


class CalibrationStage(FakeQuantStage):
    """Percentile observers over training images; BN folded; the int8 scheme chosen here."""

    name = "calibration"
    summary = "calibrate an int8 model from the float one"
    trains = False
    artifact_name = "calibrated.pt"

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        self.previous = cfg.stages.calibration.source

    def source(self) -> FloatStage:
        """The stage whose float model is quantized (and, in label-free QAT, the teacher)."""
        stage = get_stage(self.cfg, self.previous)
        if not isinstance(stage, FloatStage):
            raise TypeError(f"stage {self.previous!r} does not hold a float model")
        return stage

    def run(self, reporter: Reporter) -> dict[str, Any]:
        import torch
        from torch.utils.data import DataLoader

        from stereoq.engine.checkpoint import save_checkpoint
        from stereoq.engine.evaluate import pair_input
        from stereoq.quant.artifacts import fresh_fake_quant
        from stereoq.quant.prepare import calibrate, convert, load_calibration, prepare
        from stereoq.quant.recipes import calibration_recipe

        cfg, recipe = self.cfg, self.recipe()
        model = self.source().model()
        reporter.note(f"exporting the {self.previous} model and inserting observers")
        observed = prepare(model, calibration_recipe(cfg))
        dataset = self.data("train", crop=False)
        loader = DataLoader(
            dataset,
            batch_size=recipe.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        count = min(recipe.batches, len(loader))
        reporter.task(self.name, count)
        calibrate(
            observed,
            (pair_input(b) for b in islice(loader, count)),
            on_batch=lambda: reporter.advance(1),
        )
        reporter.done()
        fake_quant = fresh_fake_quant(cfg)
        ranges = load_calibration(observed, fake_quant)
        path = save_checkpoint(
            self.artifact(),
            {
                "model": fake_quant.state_dict(),
                "stage": self.name,
                "source": self.previous,
                "batches": count,
                "batch_size": recipe.batch_size,
                "observer": recipe.observer,
                "percentile": recipe.percentile,
            },
        )
        report = self.write_precision_report(convert(fake_quant))
        return {
            "stage": self.name,
            "source": self.previous,
            "batches": count,
            "batch_size": recipe.batch_size,
            "activation_ranges": ranges,
            "model": str(path),
            "precision_report": str(report),
        }
