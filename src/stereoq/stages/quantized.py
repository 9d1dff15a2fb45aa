"""What the quantized stages share: their fake-quant or integer graphs as predictors, and the
per-op precision report (``precision.json``) saved next to each of their models.

torchao is imported inside functions only (stage modules are imported to list the stages).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from stereoq.atomic import atomic_write_json
from stereoq.engine.report import Reporter
from stereoq.engine.stage import Stage
from stereoq.stages.registry import get_stage

if TYPE_CHECKING:
    from torch import nn
    from torch.fx import GraphModule
    from torch.utils.data import Dataset

    from stereoq.quant.sensitivity import Frames
    from stereoq.settings.config import ExperimentConfig

PRECISION_REPORT = "precision.json"
SENSITIVITY_REPORT = "sensitivity.json"
SENSITIVITY_CHART = "sensitivity.png"


def padded_predictor(cfg: ExperimentConfig, graph: nn.Module) -> nn.Module:
    """A (1/2 disparity, offset) graph as a (B, 6, H, W) -> (B, 1, H, W) px predictor of any
    input size (padded to the model's multiple and smallest size, cropped back)."""
    from stereoq.engine.predictor import PaddedGraph
    from stereoq.models.build import build_postprocess
    from stereoq.quant.prepare import min_input_size

    return PaddedGraph(
        graph,
        build_postprocess(cfg.model),
        cfg.model.size_multiple,
        min_input_size(cfg.model.num_candidates, cfg.model.size_multiple),
    ).eval()


class QuantizedStage(Stage):
    """A stage whose model is a quantized graph in its folder (``artifact_name``)."""

    artifact_name: ClassVar[str] = ""

    def data(self, split: Literal["train", "val"], crop: bool) -> Dataset:
        """The float model's data: a quantized stage calibrates, trains and checks on the
        samples of the stage it starts from (the generated scenes, or adapt's own pairs)."""
        return get_stage(self.cfg, self.previous).data(split, crop)

    def artifact(self, checkpoint: Path | None = None) -> Path:
        self.check_checkpoint(checkpoint)
        return self.dir / self.artifact_name

    @property
    def precision_report(self) -> Path:
        return self.dir / PRECISION_REPORT

    def write_precision_report(self, converted: nn.Module) -> Path:
        """Save the per-op precision report of this stage's converted graph."""
        from stereoq.quant.report import precision_report

        report = {"stage": self.name, "config": self.cfg.name, **precision_report(converted)}
        return atomic_write_json(self.precision_report, report)

    def predictor(self, checkpoint: Path | None = None) -> nn.Module:
        """Evaluated as the deployment runtime computes (``stereoq.quant.runtime_eval``)."""
        from stereoq.quant.runtime_eval import runtime_eval

        self.check_checkpoint(checkpoint)
        return padded_predictor(self.cfg, runtime_eval(self.graph()))


class FakeQuantStage(QuantizedStage):
    """A stage that saves the fake-quantized graph's state (ranges and weights)."""

    def fake_quant(self) -> GraphModule:
        """The fake-quant graph (all outputs), eval mode, ranges frozen."""
        from stereoq.quant.artifacts import load_fake_quant

        return load_fake_quant(self.cfg, self.artifact(), self.hint)

    def graph(self) -> nn.Module:
        """What ``int_infer`` would make of this stage's model (Q/DQ around integer ops)."""
        from stereoq.quant.prepare import LastTwo, convert

        return LastTwo(convert(self.fake_quant()))

    def predictor(self, checkpoint: Path | None = None) -> nn.Module:
        from stereoq.quant.prepare import LastTwo
        from stereoq.quant.runtime_eval import runtime_eval

        self.check_checkpoint(checkpoint)
        return padded_predictor(self.cfg, runtime_eval(LastTwo(self.fake_quant())))

    def judged_frames(self, count: int, against: str) -> Frames:
        """The frames quantization is judged on: the first ``count`` validation frames with
        their ground truth, or (``float_model``, no label) the first ``count`` validation pairs
        of the quantized float model's stage (``stages.calibration.source``), cut to one size,
        with that model's own disparity as their reference."""
        from stereoq.quant.sensitivity import against_model, load_frames

        if against == "ground_truth":
            return load_frames(self.cfg, count)
        source = get_stage(self.cfg, self.cfg.stages.calibration.source)
        frames = load_frames(self.cfg, count, source.data("val", crop=False), common=True)
        return against_model(frames, source.predictor())

    def sensitivity(self, frames: int, reporter: Reporter | None = None) -> dict[str, Any]:
        """Per-layer sensitivity of this stage's model on the first ``frames`` validation
        frames (``stereoq.quant.sensitivity``), saved as JSON and a bar chart in its folder.
        A model quantized from ``adapt`` (unlabeled pairs) is judged on those pairs against the
        adapted float model's own disparity."""
        from stereoq.quant.prepare import LastTwo
        from stereoq.quant.sensitivity import sensitivity
        from stereoq.quant.sensitivity_chart import save_chart
        from stereoq.settings.stages import label_reference

        graph = self.fake_quant()
        predict = padded_predictor(self.cfg, LastTwo(graph))
        against = label_reference(self.cfg.stages.calibration.source)
        found = sensitivity(graph, predict, self.judged_frames(frames, against),
                            self.cfg.model.maxdisp, reporter)
        report = {"stage": self.name, "config": self.cfg.name, "against": against, **found}
        report["json"] = str(atomic_write_json(self.dir / SENSITIVITY_REPORT, _finite(report)))
        report["chart"] = str(self.dir / SENSITIVITY_CHART)
        save_chart(report, report["chart"])
        return report


def _finite(value: Any) -> Any:
    """JSON has no infinity: an exact layer's SQNR (no noise) is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def fake_quant_source(cfg: ExperimentConfig, name: str) -> FakeQuantStage:
    """The stage ``name`` as the fake-quant stage a later stage starts from."""
    stage = get_stage(cfg, name)
    if not isinstance(stage, FakeQuantStage):
        raise TypeError(f"stage {name!r} does not hold a fake-quantized model")
    return stage
