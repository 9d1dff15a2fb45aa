"""Disparity metrics over valid pixels (0 < gt < maxdisp): EPE, D1, bad-1/2/3.

EPE is reported two ways: ``epe`` is the mean over images of each image's mean absolute error
(images without a valid pixel are skipped), as the reference toolkit does; ``epe_pixel`` is the
mean over all valid pixels of the set. D1 (error > 3 px and > 5 % of gt) and bad-k (error > k px)
are percentages of all valid pixels of the set.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stereoq.engine.distributed import Context, all_reduce_sum
from stereoq.models.loss import valid_mask

BAD_THRESHOLDS_PX = (1, 2, 3)
_FIELDS = ("images", "skipped", "epe_image_sum", "pixels", "abs_err_sum", "d1", "bad1", "bad2",
           "bad3")

AVERAGING = (
    "EPE: mean over images of each image's mean error over valid pixels (0 < gt < maxdisp), "
    "images without valid pixels skipped; EPE px-avg: mean over all valid pixels of the set; "
    "D1 and bad-k: % of all valid pixels of the set"
)


class DisparityMetrics:
    """Accumulates sums over batches; ``compute`` turns them into the reported figures."""

    def __init__(self, maxdisp: float) -> None:
        self.maxdisp = maxdisp
        self.sums = torch.zeros(len(_FIELDS), dtype=torch.float64)

    @torch.no_grad()
    def update(self, pred: Tensor, gt: Tensor) -> None:
        """``pred``, ``gt``: (B, 1, H, W) disparities in px; invalid gt pixels are ignored."""
        pred, gt = pred.detach().double(), gt.detach().double()
        mask = valid_mask(gt, self.maxdisp)
        err = torch.where(mask, (pred - gt).abs(), torch.zeros_like(gt))
        count = mask.flatten(1).sum(1)
        err_sum = err.flatten(1).sum(1)
        has = count > 0
        s = self.sums
        s[0] += has.sum().item()
        s[1] += (~has).sum().item()
        s[2] += (err_sum[has] / count[has]).sum().item()
        s[3] += count.sum().item()
        s[4] += err_sum.sum().item()
        s[5] += (mask & (err > 3.0) & (err > 0.05 * gt)).sum().item()
        for i, k in enumerate(BAD_THRESHOLDS_PX):
            s[6 + i] += (mask & (err > k)).sum().item()

    def reduce(self, ctx: Context) -> DisparityMetrics:
        """Sum the accumulators over processes (every process then holds the set's figures)."""
        all_reduce_sum(self.sums, ctx)
        return self

    def compute(self) -> dict[str, float]:
        d = dict(zip(_FIELDS, self.sums.tolist(), strict=True))
        nan = float("nan")
        pixels = d["pixels"]

        def percent(count: float) -> float:
            return 100.0 * count / pixels if pixels else nan

        out = {
            "epe": d["epe_image_sum"] / d["images"] if d["images"] else nan,
            "epe_pixel": d["abs_err_sum"] / pixels if pixels else nan,
            "d1": percent(d["d1"]),
            **{f"bad{k}": percent(d[f"bad{k}"]) for k in BAD_THRESHOLDS_PX},
            "images": int(d["images"]),
            "skipped_images": int(d["skipped"]),
            "pixels": int(d["pixels"]),
        }
        return out
