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


BENCHMARK_BAD_PX = (1.0, 2.0, 3.0, 4.0)
REGIONS = ("all", "noc")
BENCHMARK_AVERAGING = (
    "benchmark metrics: over every pixel with ground truth (no maxdisp limit: a disparity the "
    "model cannot reach counts as an error), all = occluded included, noc = non-occluded; "
    "pixel-weighted over the set; D1: error > 3 px and > 5 % of gt; bad-k: error > k px; "
    "avgerr: mean absolute error, px"
)


class BenchmarkMetrics:
    """The real benchmarks' own figures, over all and non-occluded ground-truth pixels.

    Every figure is computed; ``compute(names)`` returns those named (``D1``, ``bad-1.0``,
    ``bad-2.0``, ``bad-3.0``, ``bad-4.0``, ``avgerr``) as ``"<name>-<region>"``.
    """

    def __init__(self) -> None:
        # Per region: pixels, |err| sum, D1 count, then one count per bad-k threshold.
        self.sums = torch.zeros(len(REGIONS), 3 + len(BENCHMARK_BAD_PX), dtype=torch.float64)

    @torch.no_grad()
    def update(self, pred: Tensor, gt: Tensor, noc: Tensor) -> None:
        """``pred``, ``gt``: (B, 1, H, W) px, gt <= 0 or non-finite = none; ``noc``: bool
        (B, 1, H, W), True where non-occluded."""
        pred, gt = pred.detach().double(), gt.detach().double()
        valid = torch.isfinite(gt) & (gt > 0)
        err = torch.where(valid, (pred - gt).abs(), torch.zeros_like(gt))
        for row, mask in enumerate((valid, valid & noc.bool())):
            s = self.sums[row]
            s[0] += mask.sum().item()
            s[1] += err[mask].sum().item()
            s[2] += (mask & (err > 3.0) & (err > 0.05 * gt)).sum().item()
            for i, k in enumerate(BENCHMARK_BAD_PX):
                s[3 + i] += (mask & (err > k)).sum().item()

    def reduce(self, ctx: Context) -> BenchmarkMetrics:
        all_reduce_sum(self.sums, ctx)
        return self

    def compute(self, names: tuple[str, ...]) -> dict[str, float]:
        out: dict[str, float] = {}
        for name in names:
            for row, region in enumerate(REGIONS):
                pixels, err_sum, d1, *bad = self.sums[row].tolist()
                if not pixels:
                    value = float("nan")
                elif name == "avgerr":
                    value = err_sum / pixels
                elif name == "D1":
                    value = 100.0 * d1 / pixels
                elif name.startswith("bad-") and float(name[4:]) in BENCHMARK_BAD_PX:
                    value = 100.0 * bad[BENCHMARK_BAD_PX.index(float(name[4:]))] / pixels
                else:
                    raise ValueError(f"unknown benchmark metric {name!r}")
                out[f"{name}-{region}"] = value
        return out
