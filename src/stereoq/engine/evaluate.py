"""Validation-set metrics of a stage's model or of a classical baseline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from stereoq.engine.allocator import keep_freed_memory
from stereoq.engine.distributed import Context
from stereoq.engine.metrics import DisparityMetrics
from stereoq.engine.predictor import load_predictor
from stereoq.engine.report import Reporter
from stereoq.settings.config import ExperimentConfig


def val_dataset(cfg: ExperimentConfig) -> Dataset:
    """The validation split at full size (no crop)."""
    from stereoq.data import build_dataset

    return build_dataset(cfg.data, "val", crop=False)


def val_loader(dataset: Dataset, batch_size: int, ctx: Context | None = None) -> DataLoader:
    """Each process takes every ``world_size``-th sample: no sample counted twice."""
    if ctx is not None and ctx.distributed:
        dataset = Subset(dataset, range(ctx.rank, len(dataset), ctx.world_size))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False)


def pair_input(batch: dict[str, Any]) -> Tensor:
    """A collated batch -> the network input (B, 6, H, W): left and right on channels."""
    return torch.cat([batch["left"], batch["right"]], dim=1)


@torch.no_grad()
def accumulate(
    predict: Callable[[Tensor], Tensor],
    loader: DataLoader,
    maxdisp: float,
    device: torch.device,
    reporter: Reporter,
    label: str,
) -> DisparityMetrics:
    """Run ``predict`` ((B, 6, H, W) -> (B, 1, H, W) px) over ``loader``; sums not yet reduced."""
    metrics = DisparityMetrics(maxdisp)
    reporter.task(label, len(loader))
    for batch in loader:
        pred = predict(pair_input(batch).to(device))
        metrics.update(pred.float().cpu(), batch["disp"])
        reporter.advance(1)
    reporter.done()
    return metrics


def evaluate(
    cfg: ExperimentConfig,
    stage: str,
    checkpoint: Path | None = None,
    reporter: Reporter | None = None,
    batch_size: int = 1,
) -> dict[str, float]:
    """Metrics (``stereoq.engine.metrics``) of ``stage``'s model on the validation set."""
    reporter = reporter or Reporter()
    keep_freed_memory()
    model = load_predictor(cfg, stage, checkpoint)
    device = torch.device("cuda" if stage == "float" and torch.cuda.is_available() else "cpu")
    if stage == "float":
        model = model.to(device)
    loader = val_loader(val_dataset(cfg), batch_size)
    metrics = accumulate(model, loader, cfg.model.maxdisp, device, reporter, f"{stage} val")
    return metrics.compute()


def evaluate_sgbm(cfg: ExperimentConfig, reporter: Reporter | None = None) -> dict[str, float]:
    """OpenCV StereoSGBM on the same validation images (see ``stereoq.baselines.sgbm``)."""
    from stereoq.baselines.sgbm import SgbmMatcher

    reporter = reporter or Reporter()
    matcher = SgbmMatcher.for_config(cfg)
    loader = val_loader(val_dataset(cfg), 1)
    metrics = accumulate(
        matcher.predict_normalised, loader, cfg.model.maxdisp, torch.device("cpu"), reporter,
        "sgbm val",
    )
    return metrics.compute()
