"""The ``deployed`` stage: the ONNX Runtime artifact written by ``stereoq compile``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stereoq.errors import StereoqError
from stereoq.settings.config import ExperimentConfig


def load_deployed(cfg: ExperimentConfig) -> tuple[Any, Path]:
    """A predictor running the deployed ONNX model; (B, 6, H, W) any size -> (B, 1, H, W) px."""
    path = cfg.run_dir / "deploy"
    raise StereoqError(
        f"deployed model {path}/ does not exist: run `stereoq compile` with this config "
        f"({cfg.name}) first"
    )
