"""The one training loop, shared by every training stage (float, QAT).

Read top to bottom: set up processes, data, model (from the stage), optimizer; optionally resume;
then for each epoch train, validate, checkpoint and log. What differs between stages lives in
``stereoq.engine.stage``.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from stereoq.atomic import atomic_write_json, atomic_write_text
from stereoq.engine import distributed
from stereoq.engine.checkpoint import (
    load_checkpoint,
    load_model_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from stereoq.engine.distributed import Context
from stereoq.engine.evaluate import accumulate, pair_input, val_loader
from stereoq.engine.layout import contiguous_state
from stereoq.engine.metrics import AVERAGING, DisparityMetrics
from stereoq.engine.optim import build_optimizer, lr_at
from stereoq.engine.report import Reporter
from stereoq.engine.stage import Stage, stage_dir
from stereoq.errors import StereoqError
from stereoq.models.build import build_loss
from stereoq.settings.config import ExperimentConfig

RESUME_HINT = "resume with the config it was trained with, or train without --resume"


def build_datasets(cfg: ExperimentConfig, crop: bool) -> tuple[Dataset, Dataset]:
    """Train split (random crops when ``crop``) and the full-size validation split."""
    from stereoq.data import build_dataset

    return build_dataset(cfg.data, "train", crop=crop), build_dataset(cfg.data, "val", crop=False)


def check_init_from(stage: Stage, init_from: Path | None, resume: bool) -> None:
    """--init-from: only for stages that take it, never with --resume, an existing file."""
    if init_from is None:
        return
    if not stage.takes_init:
        raise StereoqError(f"option --init-from: stage {stage.name} does not take initial "
                           "weights (it starts from the previous stage's artifact)", exit_code=2)
    if resume:
        raise StereoqError("option --init-from: not with --resume (which continues last.pt)",
                           exit_code=2)
    if not Path(init_from).is_file():
        raise StereoqError(f"option --init-from: {init_from}: no such file", exit_code=2)


def train(
    cfg: ExperimentConfig, stage: Stage, resume: bool = False, reporter: Reporter | None = None,
    init_from: Path | None = None,
) -> dict[str, Any]:
    """Train ``stage`` as its recipe says; returns the summary also saved as metrics.json.

    Runs in one process or under ``torchrun`` (DDP); only rank 0 writes files and reports.
    """
    ctx = distributed.setup()
    try:
        return _train(cfg, stage, resume, reporter if ctx.is_main else None, ctx, init_from)
    finally:
        distributed.teardown(ctx)


def _train(
    cfg: ExperimentConfig, stage: Stage, resume: bool, reporter: Reporter | None, ctx: Context,
    init_from: Path | None = None,
) -> dict[str, Any]:
    report = reporter or Reporter()
    recipe = stage.recipe()
    out_dir = stage_dir(cfg, stage.name)
    last_path, best_path, log_path = out_dir / "last.pt", out_dir / "best.pt", out_dir / "log.jsonl"
    seed_everything(cfg.seed)  # the same on every rank: identical initial weights

    # Data: every rank sees a disjoint shard of a permutation drawn from (seed, epoch).
    train_set, val_set = build_datasets(cfg, recipe.crop)
    sampler = DistributedSampler(
        train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=cfg.seed
    )
    loader = DataLoader(
        train_set, batch_size=recipe.batch_size, sampler=sampler, drop_last=True,
        num_workers=cfg.data.num_workers,
    )
    steps = len(loader)
    if steps == 0:
        raise StereoqError(
            f"stages.{stage.name}.batch_size {recipe.batch_size} x {ctx.world_size} process(es)"
            f" exceeds the {len(train_set)} training samples",
            exit_code=2,
        )
    vloader = val_loader(val_set, recipe.val_batch_size, ctx)

    # Model, loss, optimizer.
    model = stage.prepare(example_input(train_set, recipe.batch_size).to(ctx.device))
    if init_from is not None:
        # Weights only: the optimizer, schedule and epoch count start afresh (fine-tuning).
        saved = load_checkpoint(init_from)
        load_model_state(model, saved.get("model", saved), init_from,
                         "--init-from takes a checkpoint of the model this config builds")
        report.note(f"initialised the weights from {init_from} (new optimizer and schedule)")
    model = model.to(ctx.device)
    if ctx.distributed and ctx.device.type == "cuda":
        # SyncBatchNorm runs only on accelerators; CPU processes keep per-process BN statistics
        # (DDP broadcasts rank 0's running statistics at every step).
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    loss_fn = build_loss(cfg.model)
    optimizer = build_optimizer(model, recipe.optimizer)

    start_epoch, best_epe, best_epoch, best_metrics = 0, math.inf, 0, {}
    if resume:
        state = load_checkpoint(last_path, hint="nothing to resume: train without --resume")
        load_model_state(model, state["model"], last_path, RESUME_HINT)
        try:
            check_optimizer_kind(optimizer, state["optimizer"])
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as err:
            raise StereoqError(
                f"checkpoint {last_path}: its optimizer state does not fit this config's "
                f"optimizer ({str(err).strip().splitlines()[0].rstrip('.')}); {RESUME_HINT}"
            ) from None
        start_epoch, best_epe, best_epoch = state["epoch"], state["best_epe"], state["best_epoch"]
        best_metrics = state["best_metrics"]
        rngs = state["rng"]
        set_rng_state(rngs[ctx.rank] if len(rngs) == ctx.world_size else rngs[0])
        report.note(f"resumed from {last_path} after epoch {start_epoch}")
    if ctx.is_main and keep_log(log_path, start_epoch):
        report.note(f"dropped the torn last line of {log_path} (an interrupted write)")
    ddp = model
    if ctx.distributed:
        ddp = DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )

    for epoch in range(start_epoch, recipe.epochs):
        # Train one epoch.
        sampler.set_epoch(epoch)
        stage.set_mode(model, True)
        report.task(f"{stage.name} epoch {epoch + 1}/{recipe.epochs}", steps)
        train_metrics = DisparityMetrics(cfg.model.maxdisp)
        loss_sum = torch.zeros(2, dtype=torch.float64)  # loss sum, batches
        started = time.perf_counter()
        for step, batch in enumerate(loader):
            lr = lr_at(recipe.scheduler, recipe.optimizer.lr, epoch + (step + 0.5) / steps,
                       recipe.epochs)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, gt = pair_input(batch).to(ctx.device), batch["disp"].to(ctx.device)
            outputs = stage.outputs(ddp, x)
            loss = loss_fn(outputs, gt)
            check_finite(loss, ctx, epoch, step, last_path)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            optimizer.step()

            loss_sum += torch.tensor([loss.item(), 1.0], dtype=torch.float64)
            train_metrics.update(outputs[-1].detach().cpu(), gt.cpu())
            rate = (step + 1) * recipe.batch_size * ctx.world_size / (time.perf_counter() - started)
            report.advance(1, loss=loss.item(), lr=lr, samples_per_s=rate)
        report.done()
        train_time_s = time.perf_counter() - started

        # Validate on the full-size validation split.
        stage.set_mode(model, False)
        val = accumulate(
            lambda x: stage.predict(model, x), vloader, cfg.model.maxdisp, ctx.device, report,
            f"{stage.name} val {epoch + 1}/{recipe.epochs}",
        )
        val = val.reduce(ctx).compute()
        train_figures = train_metrics.reduce(ctx).compute()
        distributed.all_reduce_sum(loss_sum, ctx)
        record = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": loss_sum[0].item() / loss_sum[1].item(),
            "train_samples_per_s": steps * recipe.batch_size * ctx.world_size / train_time_s,
            **{f"train_{k}": v for k, v in train_figures.items() if k in _SHOWN},
            **{f"val_{k}": v for k, v in val.items() if k in _SHOWN},
            "time_s": time.perf_counter() - started,
        }

        # Checkpoint (rank 0): best on validation EPE, last every epoch for --resume.
        improved = val["epe"] < best_epe
        if improved:
            best_epe, best_epoch, best_metrics = val["epe"], epoch + 1, val
        rngs = distributed.all_gather(rng_state(), ctx)
        if ctx.is_main:
            if improved:
                save_checkpoint(best_path, {"model": contiguous_state(model), "epoch": epoch + 1,
                                            "metrics": val})
                stage.save(model, out_dir, val)
            append_log(log_path, record)
            save_checkpoint(last_path, {
                "model": contiguous_state(model), "optimizer": optimizer.state_dict(),
                "epoch": epoch + 1, "best_epe": best_epe, "best_epoch": best_epoch,
                "best_metrics": best_metrics, "rng": rngs,
            })
        report.epoch(record)
        distributed.barrier(ctx)

    summary = {
        "stage": stage.name,
        "epochs": recipe.epochs,
        "best_epoch": best_epoch,
        "best": best_metrics,
        "averaging": AVERAGING,
        "checkpoint": str(best_path),
        "processes": ctx.world_size,
    }
    if ctx.is_main:
        write_summary(out_dir / "metrics.json", summary)
    return summary


_SHOWN = ("epe", "epe_pixel", "d1", "bad1", "bad2", "bad3")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def example_input(dataset: Dataset, batch_size: int) -> Tensor:
    """A (B, 6, h, w) input shaped like a training batch, for stages that trace or export."""
    return pair_input({k: v[None] for k, v in dataset[0].items() if k in ("left", "right")}
                      ).expand(batch_size, -1, -1, -1).contiguous()


def check_optimizer_kind(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """``ValueError`` unless ``saved`` comes from the same kind of optimizer.

    ``load_state_dict`` accepts another optimizer's state (Adam's into SGD) and the first step
    then fails on a missing hyper-parameter; the groups' hyper-parameter names tell them apart.
    Names on one side only (a newer PyTorch adding an option) are not another optimizer.
    """
    want = {k for group in optimizer.param_groups for k in group if k != "params"}
    have = {k for group in saved.get("param_groups", []) for k in group if k != "params"}
    if want - have and have - want:
        raise ValueError(
            f"it was saved by another optimizer: it lacks {', '.join(sorted(want - have))}"
        )


def check_finite(loss: Tensor, ctx: Context, epoch: int, step: int, last_path: Path) -> None:
    """Stop every process when any process's loss is NaN or infinite, before it updates weights.

    The last checkpoint on disk is from the last completed epoch and stays as it is.
    """
    bad = torch.tensor([0.0 if torch.isfinite(loss).item() else 1.0])
    if distributed.all_reduce_sum(bad, ctx).item() == 0:
        return
    kept = (f"last good checkpoint kept: {last_path}" if last_path.exists()
            else "no checkpoint was written yet")
    raise StereoqError(
        f"loss became {loss.item()} at epoch {epoch + 1} step {step + 1}: training stopped "
        f"({kept}); lower the learning rate or check the data"
    )


def keep_log(path: Path, epochs_done: int) -> bool:
    """Drop log lines of epochs after ``epochs_done`` (a fresh run keeps none); -> whether a
    torn last line was dropped.

    A kill during ``append_log`` can leave the last line cut short (no newline, not JSON): it
    is dropped. An unreadable line before the last is corruption: a one-line error naming it.
    """
    if not path.exists():
        return False
    kept, torn = [], False
    if epochs_done > 0:
        text = path.read_text(encoding="utf-8", errors="replace")
        lines = text.split("\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                epoch = json.loads(line)["epoch"]
            except (ValueError, KeyError, TypeError) as err:
                if number == len(lines):  # the last line, without its newline
                    torn = True
                    continue
                raise StereoqError(
                    f"training log {path} line {number} is corrupt ({type(err).__name__}); "
                    "repair or delete that line and run again"
                ) from None
            if epoch <= epochs_done:
                kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))
    return torn


def append_log(path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one JSON line in a single ``O_APPEND`` write, so that an
    interruption leaves at most a torn last line (which ``keep_log`` drops)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = memoryview((json.dumps(record) + "\n").encode("utf-8"))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        while data:  # one write in practice; a short write continues where it stopped
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    atomic_write_json(path, summary)
