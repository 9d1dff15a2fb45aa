"""The input pipeline: RandomCrop, ToTensor, RGB -> YUV444, Normalize, applied to a sample dict.

A raw sample is ``{"left": uint8 (H, W, 3) RGB, "right": same, "disp": float32 (H, W) px with
invalid = 0, "name": str}``; after the pipeline ``left``/``right`` are float32 (3, H, W) in the
network's format and ``disp`` is float32 (1, H, W).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from stereoq.data.augment import Augment
from stereoq.data.color import rgb_to_yuv444
from stereoq.errors import StereoqError
from stereoq.settings.data import DataConfig

Sample = dict[str, Any]

class RandomCrop:
    """The same random (height, width) window on left, right and disparity (uses torch's RNG,
    which DataLoader seeds per worker)."""

    def __init__(self, size: Sequence[int]) -> None:
        self.height, self.width = int(size[0]), int(size[1])

    def __call__(self, sample: Sample) -> Sample:
        h, w = sample["disp"].shape[-2:]
        if h < self.height or w < self.width:
            raise StereoqError(
                f"sample {sample.get('name', '?')}: {h}x{w} is smaller than the crop "
                f"{self.height}x{self.width} (data.train_crop)",
                exit_code=2,
            )
        top = int(torch.randint(0, h - self.height + 1, ()).item())
        left = int(torch.randint(0, w - self.width + 1, ()).item())
        rows, cols = slice(top, top + self.height), slice(left, left + self.width)
        out = dict(sample)
        for key in ("left", "right", "disp", "noc"):
            if key in sample:
                out[key] = sample[key][rows, cols]
        return out


class ToTensor:
    """uint8 (H, W, 3) images -> float32 (3, H, W) in [0, 255]; disparity -> float32 (1, H, W);
    a non-occlusion mask ``noc`` -> bool (1, H, W)."""

    def __call__(self, sample: Sample) -> Sample:
        out = dict(sample)
        for key in ("left", "right"):
            out[key] = torch.from_numpy(np.ascontiguousarray(sample[key])).permute(2, 0, 1).float()
        out["disp"] = torch.from_numpy(np.ascontiguousarray(sample["disp"], np.float32))[None]
        if "noc" in sample:
            out["noc"] = torch.from_numpy(np.ascontiguousarray(sample["noc"], np.bool_))[None]
        return out


class RgbToYuv444:
    """Converts both images (3, H, W) RGB -> YUV444 (see :func:`rgb_to_yuv444`)."""

    def __call__(self, sample: Sample) -> Sample:
        out = dict(sample)
        for key in ("left", "right"):
            out[key] = rgb_to_yuv444(sample[key])
        return out


class Normalize:
    """``(x - mean) / std`` on both images."""

    def __init__(self, mean: float, std: float) -> None:
        self.mean, self.std = float(mean), float(std)

    def __call__(self, sample: Sample) -> Sample:
        out = dict(sample)
        for key in ("left", "right"):
            out[key] = (sample[key] - self.mean) / self.std
        return out


class Compose:
    """Applies transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[Sample], Sample]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for t in self.transforms:
            sample = t(sample)
        return sample


def build_transform(data_cfg: DataConfig, crop: bool) -> Compose:
    """The configured pipeline; ``crop`` (training only) adds the augmentation when
    ``data.augment.enabled`` and RandomCrop(data.train_crop)."""
    steps: list[Callable[[Sample], Sample]] = []
    if crop and data_cfg.augment.enabled:
        steps.append(Augment(data_cfg.augment, data_cfg.train_crop))
    if crop and data_cfg.train_crop is not None:
        steps.append(RandomCrop(data_cfg.train_crop))
    steps.append(ToTensor())
    if data_cfg.color == "yuv444":
        steps.append(RgbToYuv444())
    steps.append(Normalize(data_cfg.mean, data_cfg.std))
    return Compose(steps)


def prepare_pair(left_rgb: np.ndarray, right_rgb: np.ndarray, data_cfg: DataConfig) -> torch.Tensor:
    """uint8 (H, W, 3) RGB left and right -> the network input (6, H, W), no crop."""
    for name, img in (("left", left_rgb), ("right", right_rgb)):
        if img.ndim != 3 or img.shape[2] != 3:
            raise StereoqError(f"{name} image: expected (H, W, 3) RGB, got shape {img.shape}")
    if left_rgb.shape != right_rgb.shape:
        raise StereoqError(
            f"left and right images differ in size: {left_rgb.shape[:2]} vs {right_rgb.shape[:2]}"
        )
    h, w = left_rgb.shape[:2]
    sample = {"left": left_rgb, "right": right_rgb, "disp": np.zeros((h, w), np.float32)}
    sample = build_transform(data_cfg, crop=False)(sample)
    return torch.cat([sample["left"], sample["right"]], dim=0)


def collate(batch: Sequence[Sample]) -> Sample:
    """Stacks ``left``, ``right``, ``disp`` (and ``noc`` when every sample has it) into
    (B, ...) tensors; ``name`` into a list."""
    out = {
        "left": torch.stack([s["left"] for s in batch]),
        "right": torch.stack([s["right"] for s in batch]),
        "disp": torch.stack([s["disp"] for s in batch]),
        "name": [s["name"] for s in batch],
    }
    if all("noc" in s for s in batch):
        out["noc"] = torch.stack([s["noc"] for s in batch])
    return out
