"""The one training loop, shared by every training stage (float, QAT).

Read top to bottom: set up processes, data, model (from the stage), optimizer; optionally resume;
then for each epoch train, validate, checkpoint and log. What differs between stages lives in
``stereoq.engine.stage``. The recipe's ``precision`` and ``compile`` change only the training
forward pass (``stereoq.engine.precision``, ``torch.compile``); validation runs the plain fp32
model, and checkpoints hold the plain model's state.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from stereoq import weights
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
from stereoq.engine.evaluate import accumulate_batches, pair_input, val_loader
from stereoq.engine.layout import contiguous_state
from stereoq.engine.metrics import AVERAGING, DisparityMetrics
from stereoq.engine.optim import build_optimizer, lr_at
from stereoq.engine.precision import autocast, check_precision, grad_scaler
from stereoq.engine.report import Reporter
from stereoq.engine.stage import Stage, stage_dir
from stereoq.engine.tensorboard_log import TensorBoardLog
from stereoq.errors import StereoqError
from stereoq.settings.config import ExperimentConfig
from stereoq.settings.data import DataConfig
from stereoq.settings.stages import TrainRecipe

RESUME_HINT = "resume with the config it was trained with, or train without --resume"


def check_init_from(stage: Stage, init_from: Path | str | None, resume: bool) -> None:
    """--init-from: only for stages that take it, never with --resume, an existing file or a
    shipped model's name."""
    if init_from is None:
        return
    if not stage.takes_init:
        raise StereoqError(f"option --init-from: stage {stage.name} does not take initial "
                           "weights (it starts from the previous stage's artifact)", exit_code=2)
    if resume:
        raise StereoqError("option --init-from: not with --resume (which continues last.pt)",
                           exit_code=2)
    init_source(init_from)


def check_fresh_start(stage: Stage, resume: bool, overwrite: bool) -> None:
    """A training stage never silently replaces a run: when its ``last.pt`` exists, the user
    says whether to continue it (--resume) or replace it (--overwrite)."""
    if resume and overwrite:
        raise StereoqError("option --overwrite: not with --resume (which continues last.pt)",
                           exit_code=2)
    if not stage.trains or resume or overwrite:
        return
    last = stage.dir / "last.pt"
    if last.is_file():
        raise StereoqError(
            f"{stage.dir} already holds a {stage.name} run ({last.name}{_epochs_of(last)}); "
            "continue it with --resume, or replace it with --overwrite",
            exit_code=2,
        )


def _epochs_of(last: Path) -> str:
    """", after epoch N" from a ``last.pt``, or nothing when it cannot be read."""
    try:
        return f" after epoch {int(load_checkpoint(last)['epoch'])}"
    except (StereoqError, KeyError, TypeError, ValueError):
        return ""


def init_source(init_from: Path | str) -> Path | str:
    """What --init-from names: a checkpoint file (a path that exists wins), else a shipped
    model (its name, a str); neither is a one-line error naming both possibilities."""
    path = Path(init_from)
    if path.is_file():
        return path
    if str(init_from) in weights.names():
        return str(init_from)
    raise StereoqError(
        f"option --init-from: {init_from}: no such file, and not a shipped model "
        f"({', '.join(weights.names())})",
        exit_code=2,
    )


def init_hint(init_from: Path | str) -> str:
    """What to do when --init-from's weights do not fit the configured model."""
    if isinstance(init_source(init_from), str):
        return (f"train the shipped model with its own config: --config {init_from} "
                f"--init-from {init_from}")
    return "--init-from takes a checkpoint (or a shipped model) of the model this config builds"


def initial_state(init_from: Path | str) -> tuple[dict[str, Any], Path, str]:
    """--init-from's weights: (state dict, the file, how to name it in messages)."""
    source = init_source(init_from)
    if isinstance(source, Path):
        saved = load_checkpoint(source)
        return saved.get("model", saved), source, str(source)
    return weights.state_dict(source), weights.model_file(source), f"the shipped model {source}"


def train(
    cfg: ExperimentConfig, stage: Stage, resume: bool = False, reporter: Reporter | None = None,
    init_from: Path | str | None = None,
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
    cfg: ExperimentConfig,
    stage: Stage,
    resume: bool,
    reporter: Reporter | None,
    ctx: Context,
    init_from: Path | str | None = None,
) -> dict[str, Any]:
    """Set up (and resume); then each epoch: train, validate, log and checkpoint; summarise."""
    report = reporter or Reporter()
    run = _setup(cfg, stage, ctx, report, init_from)
    progress = _resume(run, ctx, report) if resume else _Progress()
    if ctx.is_main and keep_log(run.log_path, progress.epochs_done):
        report.note(f"dropped the torn last line of {run.log_path} (an interrupted write)")
    if ctx.is_main and not resume:
        replaced = clear_run(run)
        if replaced:
            report.note(f"replaced the earlier run in {run.out_dir} ({', '.join(replaced)})")
    if not resume and stage.validates_start:
        progress = _validate_start(run, progress, ctx, report)
    forward = _training_forward(run.model, run.recipe, ctx)
    board_dir = run.out_dir if ctx.is_main and run.recipe.log_tensorboard else None

    with TensorBoardLog(board_dir, progress.epochs_done) as board:
        for epoch in range(progress.epochs_done, run.recipe.epochs):
            trained = _train_one_epoch(run, forward, epoch, ctx, report)
            val = _validate(run, epoch, ctx, report)
            record = _epoch_record(run, epoch, trained, val, ctx)
            progress = _save(run, progress, epoch, val, record, ctx)
            board.add(record)
            report.epoch(record)
            distributed.barrier(ctx)

    if stage.validates_start and progress.best_epoch == 0:
        report.note(f"no epoch beat the starting model on val {stage.select_on}: best.pt is "
                    "the model the stage started from")
    return _finish(run, progress, ctx)


@dataclass(frozen=True)
class _Run:
    """What every epoch works with, built once by ``_setup``."""

    stage: Stage
    recipe: TrainRecipe
    out_dir: Path
    maxdisp: int
    sampler: DistributedSampler
    loader: DataLoader
    steps: int  # training batches per epoch and process
    vloader: DataLoader
    model: nn.Module  # unwrapped (DDP and torch.compile wrap it for the forward pass only)
    loss_fn: Callable[[list[Tensor], dict[str, Any]], Tensor]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # fp16's loss scaling; disabled (a pass-through) otherwise

    @property
    def last_path(self) -> Path:
        return self.out_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.out_dir / "best.pt"

    @property
    def log_path(self) -> Path:
        return self.out_dir / "log.jsonl"


@dataclass(frozen=True)
class _Progress:
    """Where training stands: what ``last.pt`` saves for --resume."""

    epochs_done: int = 0
    best_epe: float = math.inf  # the best value of the stage's ``select_on`` figure
    best_epoch: int = 0  # 0: the starting model (``Stage.validates_start``) or none yet
    best_metrics: dict[str, Any] = field(default_factory=dict)
    start_metrics: dict[str, Any] = field(default_factory=dict)  # the starting model's val


@dataclass(frozen=True)
class _EpochTrain:
    """One epoch's training figures, not yet reduced across processes."""

    metrics: DisparityMetrics
    loss_sum: Tensor  # (2,) float64: loss sum, batches
    lr: float  # the last step's
    started: float  # perf_counter() at the epoch's start
    time_s: float


def _setup(
    cfg: ExperimentConfig,
    stage: Stage,
    ctx: Context,
    report: Reporter,
    init_from: Path | str | None,
) -> _Run:
    """Seed, data, model (from the stage, optionally ``init_from``'s weights), loss, optimizer."""
    recipe = stage.recipe()
    check_precision(recipe.precision, ctx.device, f"stages.{stage.name}.precision")
    seed_everything(cfg.seed)  # the same on every rank: identical initial weights

    # Data: every rank sees a disjoint shard of a permutation drawn from (seed, epoch).
    train_set, val_set = stage.data("train", recipe.crop), stage.data("val", False)
    sampler = DistributedSampler(
        train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=cfg.seed
    )
    loader = DataLoader(
        train_set,
        batch_size=recipe.batch_size,
        sampler=sampler,
        drop_last=True,
        **loader_options(cfg.data, ctx.device),
    )
    if len(loader) == 0:
        raise StereoqError(
            f"stages.{stage.name}.batch_size {recipe.batch_size} x {ctx.world_size} process(es)"
            f" exceeds the {len(train_set)} training samples",
            exit_code=2,
        )
    vloader = val_loader(val_set, recipe.val_batch_size, ctx)

    model = stage.prepare(example_input(train_set, recipe.batch_size).to(ctx.device))
    if init_from is not None:
        # Weights only: the optimizer, schedule and epoch count start afresh (fine-tuning).
        state, path, label = initial_state(init_from)
        load_model_state(model, state, path, init_hint(init_from))
        report.note(f"initialised the weights from {label} (new optimizer and schedule)")
    model = model.to(ctx.device)
    if ctx.distributed and ctx.device.type == "cuda":
        # SyncBatchNorm runs only on accelerators; CPU processes keep per-process BN statistics
        # (DDP broadcasts rank 0's running statistics at every step).
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    loss_fn = stage.criterion()
    return _Run(
        stage=stage,
        recipe=recipe,
        out_dir=stage_dir(cfg, stage.name),
        maxdisp=cfg.model.maxdisp,
        sampler=sampler,
        loader=loader,
        steps=len(loader),
        vloader=vloader,
        model=model,
        loss_fn=loss_fn,
        optimizer=build_optimizer(model, recipe.optimizer),
        scaler=grad_scaler(recipe.precision, ctx.device),
    )


def loader_options(data: DataConfig, device: torch.device) -> dict[str, Any]:
    """The training DataLoader's process options from the ``data`` section (pinned memory only
    for a CUDA device; the worker options only with workers, as DataLoader requires)."""
    options: dict[str, Any] = {
        "num_workers": data.num_workers,
        "pin_memory": data.pin_memory and device.type == "cuda",
    }
    if data.num_workers > 0:
        options["persistent_workers"] = data.persistent_workers
        if data.prefetch_factor is not None:
            options["prefetch_factor"] = data.prefetch_factor
    return options


def _resume(run: _Run, ctx: Context, report: Reporter) -> _Progress:
    """Model, optimizer, progress and this process's random state from ``last.pt``."""
    state = load_checkpoint(run.last_path, hint="nothing to resume: train without --resume")
    load_model_state(run.model, state["model"], run.last_path, RESUME_HINT)
    try:
        check_optimizer_kind(run.optimizer, state["optimizer"])
        run.optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as err:
        raise StereoqError(
            f"checkpoint {run.last_path}: its optimizer state does not fit this config's "
            f"optimizer ({str(err).strip().splitlines()[0].rstrip('.')}); {RESUME_HINT}"
        ) from None
    if run.scaler.is_enabled() and state.get("scaler"):  # absent: saved by another precision
        run.scaler.load_state_dict(state["scaler"])
    progress = _Progress(
        state["epoch"], state["best_epe"], state["best_epoch"], state["best_metrics"],
        state.get("start_metrics", {}),
    )
    rngs = state["rng"]
    set_rng_state(rngs[ctx.rank] if len(rngs) == ctx.world_size else rngs[0])
    report.note(f"resumed from {run.last_path} after epoch {progress.epochs_done}")
    return progress


def _training_forward(model: nn.Module, recipe: TrainRecipe, ctx: Context) -> nn.Module:
    """The module the training forward pass runs through: DDP's wrapper under torchrun, compiled
    when the recipe says so, else ``model`` itself.

    Only this wrapper is compiled: ``model``, which validation runs and checkpoints save, stays
    the plain module, so its state_dict keys carry no ``_orig_mod.`` prefix.
    """
    forward = model
    if ctx.distributed:
        forward = DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )
    return torch.compile(forward) if recipe.compile else forward


def _train_one_epoch(
    run: _Run, forward: nn.Module, epoch: int, ctx: Context, report: Reporter
) -> _EpochTrain:
    """One pass over this process's training shard, one optimizer step per batch; forward pass
    and loss in the recipe's precision."""
    recipe, optimizer, scaler = run.recipe, run.optimizer, run.scaler
    run.sampler.set_epoch(epoch)
    run.stage.set_mode(run.model, True)
    report.task(f"{run.stage.name} epoch {epoch + 1}/{recipe.epochs}", run.steps)
    metrics = DisparityMetrics(run.maxdisp)
    loss_sum = torch.zeros(2, dtype=torch.float64)  # loss sum, batches
    started = time.perf_counter()
    for step, batch in enumerate(run.loader):
        lr = lr_at(
            recipe.scheduler, recipe.optimizer.lr, epoch + (step + 0.5) / run.steps, recipe.epochs
        )
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = on_device(batch, ctx.device)
        x, gt = pair_input(batch), batch["disp"]
        with autocast(recipe.precision, ctx.device):
            outputs = run.stage.outputs(forward, x)
            loss = run.loss_fn(outputs, batch)
        check_finite(loss, ctx, epoch, step, run.last_path)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if recipe.grad_clip is not None:
            scaler.unscale_(optimizer)  # clip the true gradients, not fp16's scaled ones
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), recipe.grad_clip)
        scaler.step(optimizer)  # fp16: skipped when a gradient overflowed
        scaler.update()

        loss_sum += torch.tensor([loss.item(), 1.0], dtype=torch.float64)
        metrics.update(outputs[-1].detach().cpu(), gt.cpu())
        rate = (step + 1) * recipe.batch_size * ctx.world_size / (time.perf_counter() - started)
        report.advance(1, loss=loss.item(), lr=lr, samples_per_s=rate)
    report.done()
    return _EpochTrain(metrics, loss_sum, lr, started, time.perf_counter() - started)


def _validate(run: _Run, epoch: int, ctx: Context, report: Reporter) -> dict[str, Any]:
    """Figures on the full-size validation split, reduced across processes: the metrics against
    the split's ``disp`` and, where the stage has one, its label-free ``loss``."""
    run.stage.set_mode(run.model, False)
    loss_sum = torch.zeros(2, dtype=torch.float64)  # loss x images, images

    def forward(batch: dict[str, Any]) -> Tensor:
        batch = on_device(batch, ctx.device)
        pred = run.stage.predict(run.model, pair_input(batch))
        loss = run.stage.val_loss(pred, batch)
        if loss is not None:
            loss_sum.add_(torch.tensor([loss.item() * len(pred), len(pred)], dtype=torch.float64))
        return pred

    val = accumulate_batches(
        forward,
        run.vloader,
        run.maxdisp,
        report,
        f"{run.stage.name} val {epoch + 1}/{run.recipe.epochs}",
    ).reduce(ctx).compute()
    loss_sum = distributed.all_reduce_sum(loss_sum, ctx)
    if loss_sum[1] > 0:
        val["loss"] = loss_sum[0].item() / loss_sum[1].item()
    return val


def _validate_start(run: _Run, progress: _Progress, ctx: Context, report: Reporter
                    ) -> _Progress:
    """The prepared model's validation before any training; it is ``best.pt`` (epoch 0) until
    an epoch beats it on the stage's ``select_on`` figure."""
    val = _validate(run, -1, ctx, report)
    progress = replace(progress, start_metrics=val)
    score = val[run.stage.select_on]
    if not math.isfinite(score):
        return progress
    report.note(f"the starting model: val {run.stage.select_on} {score:.4g}")
    if ctx.is_main:
        save_checkpoint(run.best_path,
                        {"model": contiguous_state(run.model), "epoch": 0, "metrics": val})
        run.stage.save(run.model, run.out_dir, val)
    return replace(progress, best_epe=score, best_epoch=0, best_metrics=val)


def _epoch_record(
    run: _Run, epoch: int, trained: _EpochTrain, val: dict[str, Any], ctx: Context
) -> dict[str, Any]:
    """The epoch's line of log.jsonl (training figures reduced across processes)."""
    train_figures = trained.metrics.reduce(ctx).compute()
    loss_sum = distributed.all_reduce_sum(trained.loss_sum, ctx)
    samples = run.steps * run.recipe.batch_size * ctx.world_size
    return {
        "epoch": epoch + 1,
        "lr": trained.lr,
        "train_loss": loss_sum[0].item() / loss_sum[1].item(),
        "train_samples_per_s": samples / trained.time_s,
        **{f"train_{k}": v for k, v in train_figures.items() if k in _SHOWN},
        **{f"val_{k}": v for k, v in val.items() if k in _SHOWN},
        "time_s": time.perf_counter() - trained.started,
    }


def _save(
    run: _Run,
    progress: _Progress,
    epoch: int,
    val: dict[str, Any],
    record: dict[str, Any],
    ctx: Context,
) -> _Progress:
    """Checkpoint (rank 0): best on the stage's validation figure (EPE unless it reads no
    ground truth), last every epoch for --resume; log."""
    score = val[run.stage.select_on]
    improved = score < progress.best_epe
    if improved:
        progress = replace(progress, best_epe=score, best_epoch=epoch + 1, best_metrics=val)
    progress = replace(progress, epochs_done=epoch + 1)
    rngs = distributed.all_gather(rng_state(), ctx)
    if ctx.is_main:
        if improved:
            save_checkpoint(
                run.best_path,
                {"model": contiguous_state(run.model), "epoch": epoch + 1, "metrics": val},
            )
            run.stage.save(run.model, run.out_dir, val)
        append_log(run.log_path, record)
        save_checkpoint(
            run.last_path,
            {
                "model": contiguous_state(run.model),
                "optimizer": run.optimizer.state_dict(),
                "epoch": epoch + 1,
                "best_epe": progress.best_epe,
                "best_epoch": progress.best_epoch,
                "best_metrics": progress.best_metrics,
                "start_metrics": progress.start_metrics,
                "rng": rngs,
                "scaler": run.scaler.state_dict(),  # {} unless fp16
            },
        )
    return progress


def _finish(run: _Run, progress: _Progress, ctx: Context) -> dict[str, Any]:
    """The run's summary, also saved (rank 0) as metrics.json."""
    summary = {
        "stage": run.stage.name,
        "epochs": run.recipe.epochs,
        "best_epoch": progress.best_epoch,
        "best": progress.best_metrics,
        "averaging": AVERAGING,
        "checkpoint": str(run.best_path),
        "processes": ctx.world_size,
    }
    if run.stage.select_on != "epe":  # a stage that reads no ground truth says what chose
        summary["selected_on"] = f"val_{run.stage.select_on}"
    if progress.start_metrics:
        summary["start"] = progress.start_metrics
    if ctx.is_main:
        write_summary(run.out_dir / "metrics.json", summary)
    return summary


_SHOWN = ("epe", "epe_pixel", "d1", "bad1", "bad2", "bad3", "loss")


def on_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """A collated batch with its tensors on ``device`` (names and other entries as they are).

    Copies to a GPU do not wait (from pinned memory they overlap the GPU's work; later kernels
    on the stream wait for them)."""
    cuda = device.type == "cuda"
    return {k: v.to(device, non_blocking=cuda) if isinstance(v, Tensor) else v
            for k, v in batch.items()}


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


def clear_run(run: _Run) -> list[str]:
    """A fresh run's start: remove an earlier run's checkpoints and summary (``check_fresh_start``
    let it through: --overwrite, or no ``last.pt``), so that none outlives the run that replaces
    it; -> the names removed."""
    removed = []
    for path in (run.last_path, run.best_path, run.out_dir / "metrics.json"):
        if path.is_file():
            path.unlink()
            removed.append(path.name)
    return removed


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
