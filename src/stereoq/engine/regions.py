"""Where a disparity map's errors are: scores over regions that ground truth alone defines.

A single EPE mixes pixels of very different difficulty. From the left view's ground truth:

- **occluded**: left pixels the right camera cannot see, because their match falls outside the
  right image or a nearer surface covers it there (no method can match them: they are filled
  by guessing);
- **depth edges**: visible pixels within a few px of a jump in ground-truth disparity, where
  windows and cost volumes straddle two surfaces;
- **surfaces**: the remaining visible pixels.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from stereoq.models.loss import valid_mask

EDGE_JUMP_PX = 1.0
"""A ground-truth disparity step larger than this between neighbours is a depth edge."""
EDGE_RADIUS_PX = 3
"""Visible pixels this close (Chebyshev distance) to a depth edge count as "depth edges"."""
NOTE = ("stereoq.engine.regions from the ground truth: occluded = left pixels the right camera "
        f"cannot see; visible = depth edges (within {EDGE_RADIUS_PX} px of a ground-truth step "
        f"over {EDGE_JUMP_PX:g} px) + surfaces (the rest); share = % of the scored pixels")
"""What the regions are, in one line, for reports that save :func:`region_scores`."""


def _known(disp: np.ndarray) -> np.ndarray:
    """Pixels with a disparity: finite and positive."""
    return np.isfinite(disp) & (disp > 0)


def occlusion_mask(disp: np.ndarray, tol_px: float = EDGE_JUMP_PX) -> np.ndarray:
    """(H, W) bool: :func:`occluded` of the left view's (H, W) disparity ``disp``, in float64."""
    tensor = torch.from_numpy(np.asarray(disp, dtype=np.float64))[None, None]
    return occluded(tensor, tol_px)[0, 0].numpy()


def occluded(disp: torch.Tensor, tol_px: float = EDGE_JUMP_PX) -> torch.Tensor:
    """Left pixels the right view cannot see, from the left view's (B, 1, H, W) disparity
    ``disp`` (px; non-finite or non-positive: unknown, never occluded and never occluding).

    Left pixel ``x`` lands at ``x - d`` in the right view. The right view is rendered with a
    z-buffer: every known left pixel writes its disparity to the two right pixels either side of
    where it lands, and each right pixel keeps the largest (the nearest surface). A left pixel
    is hidden when it lands left of the image, or when both right pixels either side of it hold
    a disparity more than ``tol_px`` above its own (a nearer surface covers it).
    """
    width = disp.shape[-1]
    known = torch.isfinite(disp) & (disp > 0)
    d = torch.where(known, disp, torch.zeros_like(disp))
    lo = torch.floor(torch.arange(width, dtype=d.dtype, device=d.device) - d).long()
    lo_c, hi_c = lo.clamp(0, width - 1), (lo + 1).clamp(0, width - 1)
    landed = torch.where(known & (lo >= 0), d, torch.zeros_like(d))
    nearest = torch.zeros_like(d)
    for column in (lo_c, hi_c):
        nearest = nearest.scatter_reduce(-1, column, landed, reduce="amax")
    covered = torch.minimum(nearest.gather(-1, lo_c), nearest.gather(-1, hi_c)) > d + tol_px
    return known & ((lo < 0) | covered)


def depth_edge_mask(disp: np.ndarray, jump_px: float = EDGE_JUMP_PX,
                    radius_px: int = EDGE_RADIUS_PX) -> np.ndarray:
    """Pixels within ``radius_px`` of a step of more than ``jump_px`` between 4-neighbours of
    ``disp`` (only steps between two known pixels count)."""
    disp = np.asarray(disp, dtype=np.float64)
    known = _known(disp)
    step = np.zeros(disp.shape, dtype=bool)
    for axis in (0, 1):
        both = np.logical_and(np.take(known, range(1, disp.shape[axis]), axis),
                              np.take(known, range(disp.shape[axis] - 1), axis))
        jump = both & (np.abs(np.diff(np.where(known, disp, 0.0), axis=axis)) > jump_px)
        pad = [(0, 0), (0, 0)]
        pad[axis] = (0, 1)
        step |= np.pad(jump, pad)  # the pixel before the step
        pad[axis] = (1, 0)
        step |= np.pad(jump, pad)  # and the pixel after it
    size = 2 * radius_px + 1
    return cv2.dilate(step.astype(np.uint8), np.ones((size, size), np.uint8)).astype(bool)


def region_masks(gt: np.ndarray, maxdisp: float) -> dict[str, np.ndarray]:
    """The scored pixels (finite ``gt`` with 0 < gt < maxdisp, as EPE counts them) split into
    ``visible`` = ``depth edges`` + ``surfaces``, and ``occluded``; ``all`` is their union."""
    gt = np.asarray(gt, dtype=np.float64)
    valid = valid_mask(torch.from_numpy(gt), maxdisp).numpy()
    occluded = valid & occlusion_mask(gt)
    visible = valid & ~occluded
    edges = visible & depth_edge_mask(gt)
    return {"all": valid, "visible": visible, "occluded": occluded, "depth edges": edges,
            "surfaces": visible & ~edges}


def region_scores(pred: np.ndarray, gt: np.ndarray, maxdisp: float) -> dict[str, dict]:
    """Per region of :func:`region_masks`: its share of the scored pixels (%), EPE (px, mean
    over its pixels) and bad-2 (% of its pixels off by more than 2 px); a region without pixels
    scores None."""
    masks = region_masks(gt, maxdisp)
    error = np.abs(np.asarray(pred, dtype=np.float64) - np.where(masks["all"], gt, 0.0))
    total = max(int(masks["all"].sum()), 1)
    out: dict[str, dict] = {}
    for name, mask in masks.items():
        count = int(mask.sum())
        e = error[mask]
        out[name] = {"share": 100.0 * count / total, "pixels": count,
                     "epe": float(e.mean()) if count else None,
                     "bad2": float(100.0 * (e > 2.0).mean()) if count else None}
    return out


def region_rows(by_method: dict[str, dict[str, dict]]) -> list[tuple[str, ...]]:
    """Table rows of :func:`region_scores` results of several methods on one ground truth:
    region, its share %, then "EPE / bad-2" per method ("-" where the region has no pixels)."""
    first = next(iter(by_method.values()))
    return [(region, f"{first[region]['share']:.1f}",
             *(f"{r[region]['epe']:.2f} / {r[region]['bad2']:.1f}" if r[region]["pixels"]
               else "-" for r in by_method.values()))
            for region in first]
