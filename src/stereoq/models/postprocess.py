"""Float post-processing outside the deployed graph: last offset, ReLU, scale to pixels."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from stereoq.models.refinement import resize
from stereoq.registry import POSTPROCESS


@POSTPROCESS.register("stereonet_postprocess")
class StereoNetPostProcess(nn.Module):
    """Turns the network's normalised outputs into disparities in pixels."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def __init__(self, maxdisp: int) -> None:
        super().__init__()
        self.maxdisp = maxdisp

    def final(self, previous: Tensor, offset: Tensor) -> Tensor:
        """Deployed outputs (B, 1, H/2, W/2) and (B, 1, H, W) -> disparity (B, 1, H, W) in px."""
        return F.relu(resize(previous, tuple(offset.shape[-2:])) + offset) * self.maxdisp

    def forward(self, raw: Sequence[Tensor]) -> list[Tensor]:
        """All raw outputs (coarse ... offset) -> disparities in px, coarse to full resolution."""
        scaled = [r * self.maxdisp for r in raw[:-1]]
        return [*scaled, self.final(raw[-2], raw[-1])]
