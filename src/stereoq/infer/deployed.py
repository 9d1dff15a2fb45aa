"""The ``deployed`` stage: the ONNX Runtime artifact that ``stereoq compile`` writes.

The artifact (``<run_dir>/deploy/ort/``: ``model.onnx`` + ``metadata.json``) has a fixed input
size. Smaller inputs (down to 1x1) are replicate-padded on the right and bottom to it and the
disparity is cropped back, as the PyTorch stages pad to the smallest input their model takes;
larger inputs are refused with the command that compiles a larger artifact.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from stereoq.errors import StereoqError
from stereoq.models.padding import padded_size, run_padded
from stereoq.settings.config import ExperimentConfig

BACKEND = "ort"


class DeployedPredictor:
    """(B, 6, h, w) normalised pair, h and w within the artifact's size -> (B, 1, h, w) px."""

    def __init__(self, folder: Path) -> None:
        from stereoq.deploy.ort_runner import StereoRunner

        self.runner = StereoRunner(folder)
        _, _, self.height, self.width = (int(v) for v in self.runner.input_shape)
        self.stage = str(self.runner.metadata.get("stage", "?"))

    def __call__(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        if h > self.height or w > self.width:
            need_h, need_w = padded_size(h, w, int(self.runner.metadata["size_multiple"]))
            raise StereoqError(
                f"the input is {w}x{h} but the deployed model takes at most "
                f"{self.width}x{self.height}: run `stereoq compile --height {need_h} --width "
                f"{need_w}`, or pass --max-size {max(self.height, self.width)} with a smaller "
                "longest side"
            )
        return run_padded(self._predict, x, (self.height, self.width))

    def _predict(self, x: Tensor) -> Tensor:
        out = [torch.from_numpy(self.runner.predict(x[i : i + 1].numpy())) for i in range(len(x))]
        return torch.cat(out)


def load_deployed(cfg: ExperimentConfig) -> tuple[DeployedPredictor, Path]:
    """The compiled artifact of ``cfg`` as a predictor, and its ONNX file."""
    from stereoq.deploy.compile import artifact_dir
    from stereoq.deploy.ort_runner import METADATA_FILE, MODEL_FILE

    folder = artifact_dir(cfg, BACKEND)
    model = folder / MODEL_FILE
    if not model.is_file() or not (folder / METADATA_FILE).is_file():
        raise StereoqError(
            f"deployed model {model} does not exist: run `stereoq compile` with this config "
            f"({cfg.name}) first"
        )
    predictor = DeployedPredictor(folder)
    meta = predictor.runner.metadata
    expected = (cfg.data.color, float(cfg.data.mean), float(cfg.data.std), cfg.model.maxdisp)
    found = (meta.get("color"), meta.get("mean"), meta.get("std"), meta.get("maxdisp"))
    if found != expected:
        raise StereoqError(
            f"deployed model {model} was compiled for another input format or maxdisp "
            f"({found} vs this config's {expected}): run `stereoq compile` again"
        )
    return predictor, model
