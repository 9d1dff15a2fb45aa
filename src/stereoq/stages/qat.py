"""``qat``: quantization-aware training from the calibration model, in the engine's loop.

It starts from the calibrated graph, as the reference recipe does; fake quants keep updating
their ranges (moving average) while training and are frozen for validation. ``best.pt`` /
``last.pt`` hold the fake-quant graph's state; ``precision.json`` is rewritten on each new best.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from stereoq.stages.calibration import CalibrationStage
from stereoq.stages.quantized import FakeQuantStage, padded_predictor, postprocess

if TYPE_CHECKING:
    from torch import Tensor, nn

    from stereoq.settings.config import ExperimentConfig


class QatStage(FakeQuantStage):
    """Fine-tunes the calibrated fake-quant graph; the int8 scheme stays calibration's."""

    name = "qat"
    summary = "quantization-aware training from the calibrated model"
    previous = CalibrationStage.name
    artifact_name = "best.pt"

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        self.post = postprocess(cfg)

    def prepare(self, example: Tensor) -> nn.Module:
        return CalibrationStage(self.cfg).fake_quant()

    def set_mode(self, model: nn.Module, training: bool) -> None:
        from stereoq.quant.prepare import set_observers

        model.train(training)
        set_observers(model, training)

    def outputs(self, model: nn.Module, x: Tensor) -> list[Tensor]:
        return self.post(list(model(x)))

    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        from stereoq.quant.prepare import LastTwo

        return padded_predictor(self.cfg, LastTwo(model))(x)

    def save(self, model: nn.Module, out_dir: Path, metrics: dict[str, Any]) -> None:
        from stereoq.quant.prepare import convert

        self.write_precision_report(convert(model))
