"""The ``deployed`` stage: the artifact that ``stereoq compile --backend B`` writes.

The artifact (``<run_dir>/deploy/<backend>/``: the model + ``metadata.json``) has a fixed input
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
"""The backend whose artifact ``infer --stage deployed`` runs unless told another."""


class DeployedPredictor:
    """(B, 6, h, w) normalised pair, h and w within the artifact's size -> (B, 1, h, w) px."""

    def __init__(self, folder: Path, backend: str = BACKEND) -> None:
        from stereoq.deploy.backends import get_backend

        self.runner = get_backend(backend).runner(folder)
        self.compile_command = "stereoq compile" + (
            "" if backend == BACKEND else f" --backend {backend}"
        )
        _, _, self.height, self.width = (int(v) for v in self.runner.input_shape)
        self.stage = str(self.runner.metadata.get("stage", "?"))

    def __call__(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        if h > self.height or w > self.width:
            need_h, need_w = padded_size(h, w, int(self.runner.metadata["size_multiple"]))
            raise StereoqError(
                f"the input is {w}x{h} but the deployed model takes at most "
                f"{self.width}x{self.height}: run `{self.compile_command} --height {need_h} "
                f"--width {need_w}`, or pass --max-size {max(self.height, self.width)} with a "
                "smaller longest side"
            )
        return run_padded(self._predict, x, (self.height, self.width))

    def _predict(self, x: Tensor) -> Tensor:
        out = [torch.from_numpy(self.runner.predict(x[i : i + 1].numpy())) for i in range(len(x))]
        return torch.cat(out)


def load_deployed(cfg: ExperimentConfig, backend: str = BACKEND) -> tuple[DeployedPredictor, Path]:
    """The ``backend`` artifact compiled for ``cfg`` as a predictor, and its model file."""
    from stereoq.deploy.backends import get_backend
    from stereoq.deploy.compile import artifact_dir
    from stereoq.deploy.ort_runner import METADATA_FILE

    folder = artifact_dir(cfg, backend)
    model = folder / get_backend(backend).model_file
    if not model.is_file() or not (folder / METADATA_FILE).is_file():
        option = "" if backend == BACKEND else f" --backend {backend}"
        raise StereoqError(
            f"deployed model {model} does not exist: run `stereoq compile{option}` with this "
            f"config ({cfg.name}) first"
        )
    predictor = DeployedPredictor(folder, backend)
    meta = predictor.runner.metadata
    expected = (cfg.data.color, float(cfg.data.mean), float(cfg.data.std), cfg.model.maxdisp)
    found = (meta.get("color"), meta.get("mean"), meta.get("std"), meta.get("maxdisp"))
    if found != expected:
        raise StereoqError(
            f"deployed model {model} was compiled for another input format or maxdisp "
            f"({found} vs this config's {expected}): run `{predictor.compile_command}` again"
        )
    return predictor, model
