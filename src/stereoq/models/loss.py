"""Weighted multi-scale SmoothL1 loss over valid ground-truth pixels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat
from torch import Tensor, nn

from stereoq.registry import LOSSES


def valid_mask(gt: Tensor, maxdisp: float) -> Tensor:
    """Pixels that count: finite ground truth with 0 < gt < maxdisp."""
    return torch.isfinite(gt) & (gt > 0) & (gt < maxdisp)


def resize_nearest(gt: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize keeps invalid markers invalid (no blending across holes)."""
    if tuple(gt.shape[-2:]) == tuple(size):
        return gt
    return F.interpolate(gt, size=size, mode="nearest")


@LOSSES.register("multiscale_smooth_l1")
class MultiScaleSmoothL1(nn.Module):
    """Sum over outputs of weight_i * SmoothL1(pred_i, gt resized to pred_i) on valid pixels.

    Predictions and ground truth are disparities in full-resolution pixels.
    """

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        weights: list[NonNegativeFloat] = Field(default=[0.3, 0.3, 0.5, 0.5, 1.0], min_length=1)
        beta: PositiveFloat = 1.0

    def __init__(self, maxdisp: float, weights: Sequence[float], beta: float) -> None:
        super().__init__()
        self.maxdisp = maxdisp
        self.weights = list(weights)
        self.beta = beta

    def forward(self, preds: Sequence[Tensor], gt: Tensor) -> Tensor:
        """``preds``: (B, 1, h_i, w_i) each; ``gt``: (B, 1, H, W) disparity in px."""
        if len(preds) != len(self.weights):
            raise ValueError(f"{len(preds)} outputs but {len(self.weights)} loss weights")
        total = preds[-1].new_zeros(())
        for weight, pred in zip(self.weights, preds, strict=True):
            target = resize_nearest(gt, tuple(pred.shape[-2:]))
            mask = valid_mask(target, self.maxdisp)
            # The mean over valid pixels as a masked sum: no boolean indexing (a nonzero scan
            # and a scatter in backward per scale). Invalid pixels get target = prediction, so
            # their loss and gradient are exactly 0, also where gt is inf or NaN; with no valid
            # pixel the term is 0 and still part of the graph.
            target = torch.where(mask, target, pred.detach())
            per_pixel = F.smooth_l1_loss(pred, target, reduction="none", beta=self.beta)
            count = mask.sum().clamp(min=1).to(pred.dtype)
            total = total + weight * per_pixel.sum() / count
        return total
