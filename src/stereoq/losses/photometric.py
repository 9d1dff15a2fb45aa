"""Photometric reconstruction: the left view rebuilt from the right view warped by the left
disparity, compared by SSIM and L1 on the pixels both views see.

Images here are in [0, 1] (SSIM's constants assume that range); disparities in px.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2


def warp_right_to_left(right: Tensor, disp: Tensor) -> Tensor:
    """(B, C, H, W) right view, (B, 1, H, W) left disparity in px -> (B, C, H, W): the right
    view sampled at (x - d, y), bilinear, border values outside the image."""
    _, _, h, w = right.shape
    xs = torch.arange(w, device=disp.device, dtype=disp.dtype).view(1, 1, 1, w) - disp
    ys = torch.arange(h, device=disp.device, dtype=disp.dtype).view(1, 1, h, 1).expand_as(xs)
    grid = torch.stack(
        [2.0 * xs / max(w - 1, 1) - 1.0, 2.0 * ys / max(h - 1, 1) - 1.0], dim=-1
    ).squeeze(1)
    return F.grid_sample(right, grid, mode="bilinear", padding_mode="border", align_corners=True)


@torch.no_grad()
def visible_mask(disp: Tensor) -> Tensor:
    """(B, 1, H, W) left disparity in px -> bool (B, 1, H, W): pixels the right view also sees.

    A left pixel x lands at x - d(x) in the right view. It is out of view when that is left of
    the image, and occluded when some pixel to its right lands left of it (a nearer surface
    covers it there, or lands on the same spot): the ordering of matches along a row breaks
    exactly at occlusions.
    """
    w = disp.shape[-1]
    target = torch.arange(w, device=disp.device, dtype=disp.dtype) - disp
    suffix_min = target.flip(-1).cummin(-1).values.flip(-1)  # min over x' >= x
    right_min = torch.cat([suffix_min[..., 1:], torch.full_like(target[..., :1], torch.inf)], -1)
    return (target >= 0) & (right_min > target)


def ssim_distance(a: Tensor, b: Tensor) -> Tensor:
    """(1 - SSIM) / 2 per pixel over 3x3 windows (reflect-padded): (B, C, H, W) -> same."""
    a, b = (F.pad(t, (1, 1, 1, 1), mode="reflect") for t in (a, b))
    mu_a, mu_b = F.avg_pool2d(a, 3, 1), F.avg_pool2d(b, 3, 1)
    var_a = F.avg_pool2d(a * a, 3, 1) - mu_a**2
    var_b = F.avg_pool2d(b * b, 3, 1) - mu_b**2
    cov = F.avg_pool2d(a * b, 3, 1) - mu_a * mu_b
    ssim = ((2 * mu_a * mu_b + SSIM_C1) * (2 * cov + SSIM_C2)) / (
        (mu_a**2 + mu_b**2 + SSIM_C1) * (var_a + var_b + SSIM_C2)
    )
    return ((1.0 - ssim) / 2.0).clamp(0.0, 1.0)


def photometric_loss(left: Tensor, right: Tensor, disp: Tensor, ssim_share: float = 0.85
                     ) -> Tensor:
    """Mean over visible pixels of ssim_share * SSIM distance + (1 - ssim_share) * |L1|.

    ``left``, ``right``: (B, C, H, W) in [0, 1]; ``disp``: (B, 1, H, W) left disparity in px.
    The visible mask is eroded by one pixel, so no 3x3 SSIM window reaches a pixel the right
    view does not see: a right view warped by the true disparity gives exactly zero.
    """
    warped = warp_right_to_left(right, disp)
    error = (ssim_share * ssim_distance(left, warped).mean(1, keepdim=True)
             + (1.0 - ssim_share) * (left - warped).abs().mean(1, keepdim=True))
    visible = visible_mask(disp.detach()).to(error.dtype)
    mask = 1.0 - F.max_pool2d(1.0 - visible, 3, 1, 1)  # erode
    return (error * mask).sum() / mask.sum().clamp(min=1.0)
