"""A trained model as a predictor: (B, 6, H, W) normalised pair of any size -> disparity in px."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from stereoq.engine.checkpoint import load_checkpoint
from stereoq.errors import StereoqError
from stereoq.models.config import ModelConfig
from stereoq.models.padding import padded_size, run_padded


def load_model(cfg: ModelConfig, path: Path, hint: str = "") -> nn.Module:
    """The configured StereoNet with the weights of the checkpoint ``path``; a missing file or
    another model's weights are one-line errors (``hint``: how to make the file)."""
    from stereoq.models.build import build_model

    state = load_checkpoint(path, hint=hint)
    model = build_model(cfg)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
        raise StereoqError(
            f"checkpoint {path} does not match the config's model ({first.rstrip('.')})"
        ) from None
    return model


class PaddedGraph(nn.Module):
    """Wraps a deployed graph ((B, 6, H, W) -> (1/2 disparity, offset), normalised, H and W
    multiples of ``multiple`` and at least ``min_size`` (height, width)) into a predictor of
    (B, 1, H, W) px for any input size: inputs are padded (replicate) and the result cropped."""

    def __init__(
        self,
        graph: nn.Module,
        postprocess: nn.Module,
        multiple: int,
        min_size: tuple[int, int] = (1, 1),
    ) -> None:
        super().__init__()
        self.graph = graph
        self.postprocess = postprocess
        self.multiple = multiple
        self.min_size = min_size

    def train(self, mode: bool = True) -> PaddedGraph:
        # Exported graphs refuse .train()/.eval(); the quant stages hand them over in eval form.
        self.training = mode
        return self

    def forward(self, x: Tensor) -> Tensor:
        size = padded_size(*x.shape[-2:], self.multiple, self.min_size)
        return run_padded(lambda padded: self.postprocess.final(*self.graph(padded)), x, size)
