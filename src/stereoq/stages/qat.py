"""``qat``: quantization-aware training from the calibration model, in the engine's loop.

It starts from the calibrated graph, as the reference recipe does. While training, the weights'
per-channel ranges follow the weights; the activation ranges stay calibration's percentile-clipped
ones (``stages.qat.ranges: calibrated``) or follow the batches' min/max as a moving average
(``moving_average``, torchao's default, which on the reference network let a near-silent
refinement offset's range grow 21x in 30 steps, see the README). Every range is frozen for
validation. ``best.pt`` / ``last.pt`` hold the fake-quant graph's state; ``precision.json`` is
rewritten on each new best.

``stages.qat.targets: distill`` reads no ground truth: the loss is the distance to the float
model's own outputs (``stereoq.losses.distillation``; the teacher is calibration's source, float
or adapt), and ``best.pt`` is chosen by that distance on the validation pairs.

The calibrated graph is validated before the first epoch and competes for ``best.pt``: when no
epoch beats it, QAT hands on the model it started from.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stereoq.stages.calibration import CalibrationStage
from stereoq.stages.quantized import FakeQuantStage, padded_predictor

if TYPE_CHECKING:
    from torch import Tensor, nn

    from stereoq.losses.distillation import DistillationLoss
    from stereoq.settings.config import ExperimentConfig


class QatStage(FakeQuantStage):
    """Fine-tunes the calibrated fake-quant graph; the int8 scheme stays calibration's."""

    name = "qat"
    summary = "quantization-aware training from the calibrated model"
    previous = CalibrationStage.name
    artifact_name = "best.pt"
    validates_start = True  # fine-tuning can lose what calibration reached

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        from stereoq.models.build import build_postprocess

        self.post = build_postprocess(cfg.model)
        self.distills = cfg.stages.qat.targets == "distill"
        if self.distills:
            self.select_on = "loss"

    def prepare(self, example: Tensor) -> nn.Module:
        return CalibrationStage(self.cfg).fake_quant()

    def set_mode(self, model: nn.Module, training: bool) -> None:
        from stereoq.quant.prepare import set_observers

        model.train(training)
        set_observers(model, training, self.cfg.stages.qat.ranges == "moving_average")

    def outputs(self, model: nn.Module, x: Tensor) -> list[Tensor]:
        return self.post(list(model(x)))

    @cached_property
    def distillation(self) -> DistillationLoss:
        from stereoq.losses.distillation import DistillationLoss

        model = self.cfg.model
        params = model.loss.params()
        teacher = CalibrationStage(self.cfg).source().model()
        return DistillationLoss(teacher, params.get("weights", [0.3, 0.3, 0.5, 0.5, 1.0]),
                                params.get("beta", 1.0), model.maxdisp)

    def criterion(self) -> Callable[[list[Tensor], dict[str, Any]], Tensor]:
        return self.distillation if self.distills else super().criterion()

    def val_loss(self, pred: Tensor, batch: dict[str, Any]) -> Tensor | None:
        return self.distillation.final(pred, batch) if self.distills else None

    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        from stereoq.quant.prepare import LastTwo

        return padded_predictor(self.cfg, LastTwo(model))(x)

    def save(self, model: nn.Module, out_dir: Path, metrics: dict[str, Any]) -> None:
        from stereoq.quant.prepare import convert

        self.write_precision_report(convert(model))
