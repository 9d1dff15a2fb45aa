"""Inputs of any size for graphs that take only some: replicate-pad the right and bottom, run,
crop the result back. The top-left (H, W) keeps its place, so cropping undoes the padding."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor


def padded_size(
    height: int, width: int, multiple: int, min_size: tuple[int, int] = (1, 1)
) -> tuple[int, int]:
    """The smallest multiples of ``multiple`` that hold (height, width) and ``min_size``."""
    target_h = max(-(-height // multiple), -(-min_size[0] // multiple)) * multiple
    target_w = max(-(-width // multiple), -(-min_size[1] // multiple)) * multiple
    return target_h, target_w


def pad_to(x: Tensor, height: int, width: int) -> Tensor:
    """Replicate-pad (B, C, h, w) on the right and bottom to (B, C, height, width), h <= height
    and w <= width; ``x`` itself when it already has that size."""
    h, w = x.shape[-2:]
    if (h, w) == (height, width):
        return x
    return F.pad(x, (0, width - w, 0, height - h), mode="replicate")


def pad_input(x: Tensor, multiple: int, min_size: tuple[int, int] = (1, 1)) -> Tensor:
    """Replicate-pad (B, C, H, W) on the right and bottom to multiples of ``multiple`` that are
    at least ``min_size`` (height, width)."""
    return pad_to(x, *padded_size(*x.shape[-2:], multiple, min_size))


def run_padded(run: Callable[[Tensor], Tensor], x: Tensor, size: tuple[int, int]) -> Tensor:
    """``run`` on ``x`` (B, C, H, W) padded to ``size``, its (B, 1, *size) result cropped back
    to (B, 1, H, W)."""
    height, width = x.shape[-2:]
    return run(pad_to(x, *size))[..., :height, :width]


def fit(x: Tensor, height: int, width: int) -> Tensor:
    """(B, C, h, w) -> (B, C, height, width): crop, then replicate-pad right and bottom."""
    return pad_to(x[..., :height, :width], height, width)
