"""``float``: StereoNet trained from a fresh initialisation (seeded by ``cfg.seed``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from stereoq.engine.stage import Stage

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn


class FloatStage(Stage):
    """Float training in the engine's loop; its ``best.pt`` starts every later stage."""

    name = "float"
    summary = "train the float model"
    takes_init = True
    takes_checkpoint = True
    deployable = True

    def prepare(self, example: Tensor) -> nn.Module:
        from stereoq.engine.layout import channels_last
        from stereoq.models.build import build_model

        return channels_last(build_model(self.cfg.model))

    def model(self, checkpoint: Path | None = None) -> nn.Module:
        """The configured StereoNet with the weights of ``checkpoint`` (default: best.pt)."""
        from stereoq.engine.predictor import load_model

        return load_model(self.cfg.model, self.artifact(checkpoint), self.hint)

    def predictor(self, checkpoint: Path | None = None) -> nn.Module:
        return self.model(checkpoint).eval()

    def graph(self) -> nn.Module:
        from stereoq.models.stereonet import DeployGraph

        return DeployGraph(self.model()).eval()

    def eval_device(self) -> torch.device:
        import torch

        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
