"""Fixtures for inference tests: a tiny float checkpoint and textured stereo pairs on disk."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from stereoq.engine.checkpoint import save_checkpoint
from stereoq.models.build import build_model
from stereoq.settings import load_config
from stereoq.stages import get_stage


def textured_pair(height: int, width: int, shift_px: int = 4, seed: int = 0):
    """(left, right) uint8 RGB: random texture, the right view shifted by ``shift_px``."""
    rng = np.random.default_rng(seed)
    wide = rng.integers(0, 256, size=(height, width + shift_px, 3), dtype=np.uint8)
    return wide[:, shift_px:].copy(), wide[:, :width].copy()


def write_pair(left_path: Path, right_path: Path, height: int = 40, width: int = 70) -> None:
    left, right = textured_pair(height, width)
    left_path.parent.mkdir(parents=True, exist_ok=True)
    right_path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(left_path), left[..., ::-1])
    cv2.imwrite(str(right_path), right[..., ::-1])


@pytest.fixture
def make_pair():
    """``textured_pair(height, width, shift_px=4, seed=0)``."""
    return textured_pair


@pytest.fixture
def save_pair():
    """``write_pair(left_path, right_path, height=40, width=70)``."""
    return write_pair


@pytest.fixture
def float_run(tiny_config: Path) -> Path:
    """The tiny config with an (untrained) float checkpoint where the float stage looks for it."""
    cfg = load_config(str(tiny_config))
    torch.manual_seed(0)
    state = {"model": build_model(cfg.model).state_dict()}
    save_checkpoint(get_stage(cfg, "float").artifact(), state)
    return tiny_config
