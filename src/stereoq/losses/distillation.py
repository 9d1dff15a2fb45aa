"""Distillation for label-free QAT: the quantized student learns the float teacher's own five
outputs on the same input, so no ground truth is needed."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stereoq.models.loss import valid_mask


class DistillationLoss(nn.Module):
    """Sum over outputs of weight_i * SmoothL1(student_i, teacher_i), mean over the pixels where
    the teacher's disparity is inside (0, maxdisp).

    ``teacher``: a float StereoNet; it runs in eval mode (BN statistics fixed) on the batch's
    ``left`` | ``right`` and returns its five px outputs through ``raw`` + ``postprocess``.
    """

    def __init__(self, teacher: nn.Module, weights: Sequence[float], beta: float,
                 maxdisp: float) -> None:
        super().__init__()
        self.teacher = teacher.eval().requires_grad_(False)
        self.weights = list(weights)
        self.beta = beta
        self.maxdisp = maxdisp

    @torch.no_grad()
    def targets(self, x: Tensor) -> list[Tensor]:
        """(B, 6, h, w) -> the teacher's five (B, 1, h_i, w_i) disparities in px."""
        self.teacher.to(x.device)
        return self.teacher.postprocess(self.teacher.raw(x))

    def forward(self, outputs: Sequence[Tensor], batch: dict[str, Tensor]) -> Tensor:
        x = torch.cat([batch["left"], batch["right"]], dim=1)
        return self.match(outputs, self.targets(x), self.weights)

    def final(self, pred: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """Validation: a (B, 1, H, W) px prediction against the teacher's full-resolution one
        (the teacher in eval form pads any size as the student's predictor does)."""
        x = torch.cat([batch["left"], batch["right"]], dim=1)
        with torch.no_grad():
            self.teacher.to(x.device)
            target = self.teacher(x)
        return self.match([pred], [target], [1.0])

    def match(self, preds: Sequence[Tensor], targets: Sequence[Tensor],
              weights: Sequence[float]) -> Tensor:
        total = preds[-1].new_zeros(())
        for weight, pred, target in zip(weights, preds, targets, strict=True):
            mask = valid_mask(target, self.maxdisp)
            target = torch.where(mask, target, pred.detach())
            per_pixel = F.smooth_l1_loss(pred, target, reduction="none", beta=self.beta)
            total = total + weight * per_pixel.sum() / mask.sum().clamp(min=1).to(pred.dtype)
        return total
