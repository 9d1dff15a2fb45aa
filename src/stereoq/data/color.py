"""Colour conversion of the network's input: RGB -> YUV444 as OpenCV computes it, and the
BT.601 luma weights the pipeline, its augmentation and the refinement share."""

from __future__ import annotations

import torch

# BT.601 full range as OpenCV's COLOR_RGB2YUV computes it (Y, U = 0.492 (B - Y) + 128,
# V = 0.877 (R - Y) + 128), written out so it runs on tensors.
Y_COEFFS = (0.299, 0.587, 0.114)
"""BT.601 luma weights of R, G, B."""
_U_SCALE = 0.492111
_V_SCALE = 0.877283


def rgb_to_yuv444(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB in [0, 255] -> YUV444 rounded and clipped to [0, 255], float32.

    Rounded like OpenCV's uint8 ``cv2.COLOR_RGB2YUV`` (within 1 grey level), so the network sees
    the integer pixels a deployed camera pipeline would give it.
    """
    r, g, b = rgb.float().unbind(-3)
    # Chroma from the rounded luma, as OpenCV's 8-bit path does.
    y = (Y_COEFFS[0] * r + Y_COEFFS[1] * g + Y_COEFFS[2] * b).round()
    u = _U_SCALE * (b - y) + 128.0
    v = _V_SCALE * (r - y) + 128.0
    return torch.stack([y, u, v], dim=-3).round().clamp(0.0, 255.0)
