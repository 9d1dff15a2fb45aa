"""Training-time augmentation of a raw sample: spatial scale, colour, and erased patches.

Each part targets a way a network trained on a fixed set of generated scenes fails on real pairs:
- ``scale``: one random zoom of both views and the disparity (disparity values scaled with the
  width), so objects and disparities come in more sizes than the rendered ones;
- ``color``: brightness, contrast, gamma and saturation, the same for both views or (with
  ``asymmetric_prob``) drawn for each view, so matching cannot lean on exact intensities;
- ``eraser``: rectangles of the right view painted with its mean colour, so left pixels whose
  match is hidden must be filled from their context, as real occlusions must.

Applied before RandomCrop, to uint8 (H, W, 3) images and float32 (H, W) disparity (invalid = 0);
draws from torch's RNG, which the DataLoader seeds per worker.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

from stereoq.data.color import Y_COEFFS
from stereoq.settings.data import AugmentConfig

Sample = dict[str, Any]


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()).item())


class Augment:
    """The configured augmentations; ``min_size`` (height, width) is the crop that must still fit
    after the zoom."""

    def __init__(self, cfg: AugmentConfig, min_size: tuple[int, int] | None = None) -> None:
        self.cfg = cfg
        self.min_size = min_size

    def __call__(self, sample: Sample) -> Sample:
        out = sample
        if self.cfg.scale is not None:
            out = self._zoom(out)
        if self.cfg.color:
            out = self._color(out)
        if self.cfg.eraser_prob > 0:
            out = self._erase(out)
        return out

    def _zoom(self, sample: Sample) -> Sample:
        h, w = sample["disp"].shape[:2]
        low, high = self.cfg.scale
        if self.min_size is not None:
            low = max(low, self.min_size[0] / h, self.min_size[1] / w)
        factor = _uniform(low, max(low, high))
        size = (max(1, round(w * factor)), max(1, round(h * factor)))
        if size == (w, h):
            return sample
        out = dict(sample)
        for key in ("left", "right"):
            out[key] = cv2.resize(sample[key], size, interpolation=cv2.INTER_LINEAR)
        # Nearest keeps invalid (0) pixels invalid and does not blend depths across an edge.
        disp = cv2.resize(sample["disp"], size, interpolation=cv2.INTER_NEAREST)
        out["disp"] = (disp * (size[0] / w)).astype(np.float32)
        if "noc" in sample:
            noc = cv2.resize(sample["noc"].astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
            out["noc"] = noc.astype(bool)
        return out

    def _color(self, sample: Sample) -> Sample:
        same = float(torch.rand(()).item()) >= self.cfg.asymmetric_prob
        params = self._color_params()
        out = dict(sample)
        for key in ("left", "right"):
            out[key] = _apply_color(sample[key], *params)
            if not same:
                params = self._color_params()
        return out

    def _color_params(self) -> tuple[float, float, float, float]:
        c = self.cfg
        return (_uniform(*c.brightness), _uniform(*c.contrast), _uniform(*c.gamma),
                _uniform(*c.saturation))

    def _erase(self, sample: Sample) -> Sample:
        if float(torch.rand(()).item()) >= self.cfg.eraser_prob:
            return sample
        right = sample["right"].copy()
        h, w = right.shape[:2]
        fill = right.reshape(-1, 3).mean(axis=0).round().astype(np.uint8)
        low, high = self.cfg.eraser_size
        for _ in range(int(torch.randint(1, self.cfg.eraser_max + 1, ()).item())):
            eh = max(1, round(_uniform(low, high) * h))
            ew = max(1, round(_uniform(low, high) * w))
            top = int(torch.randint(0, max(1, h - eh + 1), ()).item())
            left = int(torch.randint(0, max(1, w - ew + 1), ()).item())
            right[top:top + eh, left:left + ew] = fill
        return {**sample, "right": right}


def _apply_color(img: np.ndarray, brightness: float, contrast: float, gamma: float,
                 saturation: float) -> np.ndarray:
    """uint8 (H, W, 3) RGB -> the same after gamma, contrast (about the mean), brightness and
    saturation (about the grey value), rounded and clipped."""
    x = (img.astype(np.float32) / 255.0) ** gamma
    x = (x - x.mean()) * contrast + x.mean()
    x = x * brightness
    grey = x @ np.array(Y_COEFFS, np.float32)
    x = grey[..., None] + (x - grey[..., None]) * saturation
    return (x * 255.0).round().clip(0, 255).astype(np.uint8)
