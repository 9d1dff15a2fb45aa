"""``calibration`` (one pass): post-training calibration of the float model.

Float ``best.pt`` (or adapt's, ``stages.calibration.source``) -> BN folded, exported,
percentile observers, ``stages.calibration.batches`` batches of that stage's training images
at full size (no crop; no label is read) -> ``calibration/calibrated.pt``: the fake-quantized
graph's state with the calibrated ranges, and its ``precision.json``.

With ``stages.calibration.budget`` the layers that cost the most accuracy are raised to 16 bits
(or float) until the EPE on the budget's validation frames is within it
(``stereoq.quant.budget``); the choices go to ``calibration/mixed_precision.json``, which QAT,
int_infer, export and check follow.
"""

from __future__ import annotations

from itertools import islice
from typing import TYPE_CHECKING, Any

from stereoq.engine.report import Reporter
from stereoq.stages.float_stage import FloatStage
from stereoq.stages.quantized import FakeQuantStage
from stereoq.stages.registry import get_stage

if TYPE_CHECKING:
    from torch import Tensor, nn
    from torch.fx import GraphModule

    from stereoq.quant.budget import Calibrate
    from stereoq.quant.latency import Timing
    from stereoq.settings.config import ExperimentConfig


RANGES_KEY = "stereoq_activation_ranges"


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
        from stereoq.atomic import atomic_write_json
        from stereoq.engine.checkpoint import save_checkpoint
        from stereoq.quant.prepare import convert
        from stereoq.quant.recipes import mixed_precision_path

        cfg, recipe = self.cfg, self.recipe()
        if recipe.budget is not None and recipe.budget.cost == "latency":
            from stereoq.quant.latency import latency_provider

            latency_provider()  # its one-line error before any work
        model = self.source().model()
        batches = self.calibration_batches(reporter)

        def calibrate(raised: dict[str, str]) -> GraphModule:
            return self.calibrated(model, batches, raised, reporter)

        summary: dict[str, Any] = {"stage": self.name, "source": self.previous}
        if recipe.budget is None:
            fake_quant, raised = calibrate({}), {}
        else:
            fake_quant, record = self.meet_budget(calibrate, reporter)
            raised = record["raised"]
            atomic_write_json(mixed_precision_path(cfg), record)
            summary.update(budget_summary(record))
        path = save_checkpoint(
            self.artifact(),
            {
                "model": fake_quant.state_dict(),
                "stage": self.name,
                "source": self.previous,
                "batches": len(batches),
                "batch_size": recipe.batch_size,
                "observer": recipe.observer,
                "percentile": recipe.percentile,
                "raised": raised,
            },
        )
        report = self.write_precision_report(convert(fake_quant))
        return {
            **summary,
            "batches": len(batches),
            "activation_ranges": fake_quant.meta.get(RANGES_KEY),
            "batch_size": recipe.batch_size,
            "model": str(path),
            "precision_report": str(report),
        }

    def calibration_batches(self, reporter: Reporter) -> list[Tensor]:
        """``stages.calibration.batches`` training batches at full size, (B, 6, H, W) each."""
        import torch
        from torch.utils.data import DataLoader

        from stereoq.engine.evaluate import pair_input

        cfg, recipe = self.cfg, self.recipe()
        dataset = self.data("train", crop=False)
        loader = DataLoader(
            dataset,
            batch_size=recipe.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        count = min(recipe.batches, len(loader))
        reporter.task("loading calibration batches", count)
        batches = []
        for batch in islice(loader, count):
            batches.append(pair_input(batch))
            reporter.advance(1)
        reporter.done()
        return batches

    def calibrated(
        self, model: nn.Module, batches: list[Tensor], raised: dict[str, str], reporter: Reporter
    ) -> GraphModule:
        """The fake-quant graph calibrated on ``batches``, ``raised`` layers at their
        precision (on top of the config's overrides); eval mode, ranges frozen."""
        from stereoq.quant.artifacts import fresh_fake_quant
        from stereoq.quant.prepare import calibrate, load_calibration, prepare, set_observers
        from stereoq.quant.recipes import calibration_recipe

        cfg = self.cfg
        reporter.note(f"exporting the {self.previous} model and inserting observers")
        observed = prepare(model, calibration_recipe(cfg, raised))
        reporter.task(self.name, len(batches))
        calibrate(observed, batches, on_batch=lambda: reporter.advance(1))
        reporter.done()
        fake_quant = fresh_fake_quant(cfg, raised)
        fake_quant.meta[RANGES_KEY] = load_calibration(observed, fake_quant)
        fake_quant.eval()
        set_observers(fake_quant, False)
        return fake_quant

    def meet_budget(
        self, calibrate: Calibrate, reporter: Reporter
    ) -> tuple[GraphModule, dict[str, Any]]:
        """``stereoq.quant.budget.search`` on the budget's validation frames."""
        from stereoq.quant.budget import search
        from stereoq.quant.latency import latency_provider
        from stereoq.quant.prepare import LastTwo
        from stereoq.quant.sensitivity import layers
        from stereoq.stages.quantized import padded_predictor

        cfg = self.cfg
        budget = self.recipe().budget
        measure = latency_provider() if budget.cost == "latency" else None
        reference = budget.reference(self.previous)
        if reference == "float_model":
            reporter.note(f"budget: against the {self.previous} model's own disparity on its "
                          "validation pairs (no label)")
        frames = self.judged_frames(budget.frames, reference)
        fixed = list(cfg.stages.calibration.precision)

        def latency(graph: GraphModule) -> Timing:
            names = [layer.name for layer in layers(graph)]
            return measure(cfg, graph, frames.inputs[:1], budget.backend, names, budget.threads)

        return search(
            calibrate,
            lambda graph: padded_predictor(cfg, LastTwo(graph)),
            frames,
            cfg.model.maxdisp,
            budget,
            fixed,
            reporter,
            latency if measure is not None else None,
            reference,
        )


def budget_summary(record: dict[str, Any]) -> dict[str, Any]:
    """The budget search's figures for the stage's summary table."""
    raised = record["raised"]
    total = record.get("total_macs") or 0.0
    cost = record.get("raised_macs", 0.0)
    if record.get("against") == "float_model":
        accuracy = {
            "default scheme vs float px": round(record["default_epe_px"], 4),
            "chosen vs float px": round(record["final_epe_px"], 4),
        }
    else:
        accuracy = {
            "float EPE px": round(record["float_epe_px"], 4),
            "default scheme EPE px": round(record["default_epe_px"], 4),
            "chosen EPE px": round(record["final_epe_px"], 4),
        }
    return {
        "budget": f"{record['budget_text']} = {record['allowed_increase_px']:.4f} px on "
        f"{record['frames']} val frames",
        **accuracy,
        "budget met": record["met"],
        "raised layers": ", ".join(f"{k}={v}" for k, v in raised.items()) or "none",
        "MACs out of int8": f"{cost / 1e6:.1f} M ({100 * cost / total:.1f} % of the model)"
        if total else "0",
        **latency_paid(record),
    }


def latency_paid(record: dict[str, Any]) -> dict[str, str]:
    """The measured latency of the chosen model against the default scheme's, when timed."""
    timed = record.get("latency") or {}
    if "chosen_ms" not in timed:
        return {}
    default, chosen = timed["default_ms"], timed["chosen_ms"]
    return {"latency paid": f"{chosen:.1f} ms against {default:.1f} ms "
            f"({100 * (chosen / default - 1):+.0f} %) on {timed['where']}"}
