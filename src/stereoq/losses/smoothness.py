"""Edge-aware smoothness: disparity gradients cost less where the image itself has an edge."""

from __future__ import annotations

import torch
from torch import Tensor

EDGE_GAMMA = 10.0
"""exp(-gamma |dI|): at gamma 10 an edge of 0.1 (26 grey levels) discounts a jump by e."""


def edge_aware_smoothness(disp: Tensor, image: Tensor, gamma: float = EDGE_GAMMA) -> Tensor:
    """Mean |dD/dx| exp(-gamma |dI/dx|) + the same along y.

    ``disp``: (B, 1, H, W) px, divided by its per-image mean so that shrinking the disparity
    cannot lower the term; ``image``: (B, C, H, W) in [0, 1], gradients averaged over channels.
    """
    d = disp / (disp.mean(dim=(2, 3), keepdim=True).abs() + 1e-6)
    dx = (d[..., :, 1:] - d[..., :, :-1]).abs()
    dy = (d[..., 1:, :] - d[..., :-1, :]).abs()
    ix = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(1, keepdim=True)
    iy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean(1, keepdim=True)
    return (dx * torch.exp(-gamma * ix)).mean() + (dy * torch.exp(-gamma * iy)).mean()
