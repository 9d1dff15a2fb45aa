"""A stage's trained model as a predictor: (B, 6, H, W) normalised pair of any size -> px."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from stereoq.engine.checkpoint import load_checkpoint
from stereoq.engine.stage import STAGE_NAMES, stage_dir, train_hint
from stereoq.errors import StereoqError
from stereoq.models.padding import padded_size, run_padded
from stereoq.settings.config import ExperimentConfig


def float_checkpoint(cfg: ExperimentConfig) -> Path:
    """The float stage's artifact: the checkpoint of the best validation EPE."""
    return stage_dir(cfg, "float") / "best.pt"


def load_float_model(cfg: ExperimentConfig, checkpoint: Path | None = None) -> nn.Module:
    """The configured StereoNet with the weights of ``checkpoint`` (default: float best.pt)."""
    from stereoq.models.build import build_model

    path = Path(checkpoint) if checkpoint is not None else float_checkpoint(cfg)
    state = load_checkpoint(path, hint=train_hint(cfg, "float"))
    model = build_model(cfg.model)
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


def load_predictor(
    cfg: ExperimentConfig, stage: str, checkpoint: Path | None = None
) -> nn.Module:
    """Eval-mode model mapping a (B, 6, H, W) normalised pair to (B, 1, H, W) disparity in px.

    ``float`` loads ``<run_dir>/float/best.pt`` (or ``checkpoint``); the quantized stages load
    their graph through ``stereoq.quant.artifacts.load_stage_graph``. A missing artifact raises
    ``StereoqError`` naming the file and the command that makes it.
    """
    if stage not in STAGE_NAMES:
        raise StereoqError(f"unknown stage {stage!r} (one of {', '.join(STAGE_NAMES)})", 2)
    if stage == "float":
        return load_float_model(cfg, checkpoint).eval()
    if checkpoint is not None:
        raise StereoqError(f"option --checkpoint: only the float stage takes one, not {stage}", 2)
    try:
        from stereoq.quant.artifacts import load_stage_graph
        from stereoq.quant.prepare import min_input_size
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith("stereoq.quant"):
            raise StereoqError(f"stage {stage!r} is not available in this build", 2) from None
        raise
    graph = load_stage_graph(cfg, stage)
    post = cfg.model.postprocess.registry.build(
        cfg.model.postprocess.type, maxdisp=cfg.model.maxdisp, **cfg.model.postprocess.params()
    )
    return PaddedGraph(
        graph,
        post,
        cfg.model.size_multiple,
        min_input_size(cfg.model.num_candidates, cfg.model.size_multiple),
    ).eval()
