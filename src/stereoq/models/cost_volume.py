"""Cost volumes over D disparity candidates at feature resolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def shift_right(x: Tensor, d: int) -> Tensor:
    """Shift (B, C, H, W) features ``d`` columns to the right, zero-filling on the left."""
    if d == 0:
        return x
    return F.pad(x[..., :-d], (d, 0))


def groupwise_correlation(left: Tensor, right: Tensor, num_candidates: int, groups: int) -> Tensor:
    """(B, C, H, W) x2 -> (B, G, D, H, W): mean of products within each channel group."""
    b, c, h, w = left.shape
    if c % groups:
        raise ValueError(f"{c} feature channels do not split into {groups} groups")
    planes = [
        (left * shift_right(right, d)).reshape(b, groups, c // groups, h, w).mean(dim=2)
        for d in range(num_candidates)
    ]
    return torch.stack(planes, dim=2)


def concat_volume(left: Tensor, right: Tensor, num_candidates: int) -> Tensor:
    """(B, C, H, W) x2 -> (B, 2C, D, H, W): left features next to right ones shifted by d."""
    planes = [torch.cat([left, shift_right(right, d)], dim=1) for d in range(num_candidates)]
    return torch.stack(planes, dim=2)
