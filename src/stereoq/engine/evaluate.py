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
from stereoq.engine.metrics import BenchmarkMetrics, DisparityMetrics
from stereoq.engine.report import Reporter
from stereoq.engine.stage import Stage
from stereoq.settings.config import ExperimentConfig

Predictor = Callable[[Tensor], Tensor]
Wrapper = Callable[[Predictor], Predictor]
"""Post-processing around a predictor, e.g. ``stereoq.infer.refine.refined``."""


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


def accumulate(
    predict: Callable[[Tensor], Tensor],
    loader: DataLoader,
    maxdisp: float,
    device: torch.device,
    reporter: Reporter,
    label: str,
    benchmark: BenchmarkMetrics | None = None,
) -> DisparityMetrics:
    """Run ``predict`` ((B, 6, H, W) -> (B, 1, H, W) px) over ``loader``; sums not yet reduced.

    ``benchmark`` also accumulates the benchmarks' figures of batches with a ``noc`` mask."""
    return accumulate_batches(lambda batch: predict(pair_input(batch).to(device)), loader,
                              maxdisp, reporter, label, benchmark)


@torch.no_grad()
def accumulate_batches(
    forward: Callable[[dict[str, Any]], Tensor],
    loader: DataLoader,
    maxdisp: float,
    reporter: Reporter,
    label: str,
    benchmark: BenchmarkMetrics | None = None,
) -> DisparityMetrics:
    """As :func:`accumulate`, for a method that reads more of a batch than its images (SGBM
    takes each pair's disparity range from its calibration): collated batch -> (B, 1, H, W)."""
    metrics = DisparityMetrics(maxdisp)
    reporter.task(label, len(loader))
    for batch in loader:
        pred = forward(batch).float().cpu()
        metrics.update(pred, batch["disp"])
        if benchmark is not None and "noc" in batch:
            benchmark.update(pred, batch["disp"], batch["noc"])
        reporter.advance(1)
    reporter.done()
    return metrics


def evaluate(
    cfg: ExperimentConfig,
    stage: Stage,
    checkpoint: Path | None = None,
    reporter: Reporter | None = None,
    batch_size: int = 1,
    then: Wrapper | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """Metrics (``stereoq.engine.metrics``) of ``stage``'s model on the validation set; with
    ``then``, of ``then(model)`` (the model followed by post-processing)."""
    keep_freed_memory()
    return evaluate_model(cfg, stage.predictor(checkpoint), stage.eval_device(), reporter,
                          batch_size, label or f"{stage.name} val", then)


def evaluate_model(
    cfg: ExperimentConfig,
    model: torch.nn.Module,
    device: torch.device,
    reporter: Reporter | None = None,
    batch_size: int = 1,
    label: str = "val",
    then: Wrapper | None = None,
) -> dict[str, Any]:
    """Metrics of a predictor ((B, 6, H, W) -> (B, 1, H, W) px, eval mode) on the validation
    set, run on ``device``; with ``then``, of ``then(model)``."""
    reporter = reporter or Reporter()
    if device.type != "cpu":  # exported graphs stay as loaded
        model = model.to(device)
    predictor = model if then is None else then(model)
    loader = val_loader(val_dataset(cfg), batch_size)
    return _run(cfg, lambda batch: predictor(pair_input(batch).to(device)), loader, reporter,
                label)


def _run(cfg: ExperimentConfig, forward: Callable[[dict[str, Any]], Tensor], loader: DataLoader,
         reporter: Reporter, label: str) -> dict[str, Any]:
    """EPE/D1/bad-k, plus the benchmark's own figures (and its name) on a benchmark."""
    from stereoq.data.benchmarks import benchmark_metrics
    from stereoq.data.datasets import benchmark_source

    source = benchmark_source(cfg.data)
    names = benchmark_metrics(source) if source else ()
    bench = BenchmarkMetrics() if names else None
    metrics = accumulate_batches(forward, loader, cfg.model.maxdisp, reporter, label, bench)
    out: dict[str, Any] = metrics.compute()
    if bench is not None:
        out.update(bench.compute(names), benchmark=source)
    return out


def evaluate_sgbm(cfg: ExperimentConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """OpenCV StereoSGBM on the same validation images (see ``stereoq.baselines.sgbm``), each
    pair over its calibration's ``ndisp`` when known, else ``model.maxdisp``; the ranges run
    are reported as ``sgbm_num_disparities``."""
    from stereoq.baselines.sgbm import SgbmMatcher

    reporter = reporter or Reporter()
    matcher = SgbmMatcher.for_config(cfg)
    loader = val_loader(val_dataset(cfg), 1)
    out = _run(cfg, matcher.predict_batch, loader, reporter, "sgbm val")
    out["sgbm_num_disparities"] = sorted(matcher.ranges_used)
    return out
