"""What a stage is to the engine and to everything that loads a stage's model.

A stage (float, calibration, ...) says only what differs from the others; the stages
themselves, and the registry that names them, live in ``stereoq.stages``. The engine knows this
interface, never a stage by name:

- ``previous``: the stage whose artifact this one starts from (``None`` for the first);
- ``recipe()``: the stage's section of the config's ``stages`` (epochs, batch, optimizer, ...);
- ``prepare(example)``: the model to train, built from the previous stage's artifact
  (``example`` is one training input batch (B, 6, h, w) on the training device, for stages that
  trace or export);
- ``set_mode(model, training)``: switch train/eval (exported graphs need their own calls);
- ``data(split, crop)``: the stage's training ("train", random crops when ``crop``) or
  full-size validation ("val") samples; default: the config's ``data`` source;
- ``outputs(model, x)``: the five disparities in px, coarse to full resolution, for the loss;
- ``criterion()``: the training loss, (all outputs, batch on the device) -> scalar; default:
  the model config's loss against the batch's ground truth ``disp``;
- ``val_loss(pred, batch)``: a label-free validation figure of the (B, 1, H, W) px prediction,
  logged as ``val_loss``; default: none;
- ``select_on``: the validation figure (lower is better) that picks ``best.pt``: ``epe``, or
  ``loss`` for stages that read no ground truth;
- ``predict(model, x)``: the (B, 1, H, W) disparity in px for validation metrics;
- ``save(model, out_dir, metrics)``: extra artifacts written (rank 0) when validation finds a
  new best, besides the loop's own ``last.pt`` / ``best.pt`` checkpoints;
- ``trains``: ``False`` for one-pass stages, which implement ``run(reporter)`` instead of using
  the loop;
- ``takes_init``: ``True`` where ``train --init-from`` may load a checkpoint's weights into the
  prepared model (fine-tuning; the optimizer and schedule start afresh);
- ``validates_start``: ``True`` where the prepared model competes for ``best.pt``: it is
  validated before the first epoch and an epoch must beat it (fine-tuning that can lose what
  it starts with, such as QAT).

And for the commands that use a finished stage (predict, export, check, compile, infer):

- ``artifact(checkpoint)``: the file the stage's model lives in (``takes_checkpoint``: a
  stage whose model may come from another file given by the user);
- ``predictor(checkpoint)``: eval-mode (B, 6, H, W) normalised pair of any size -> (B, 1, H, W)
  disparity in px, computed as the deployment runtime would;
- ``graph()``: the deployed graph in eval form, (1, 6, H, W) with H and W multiples of the
  model's size multiple -> (1/2-res disparity, full-res offset), normalised, in the form that
  exports (float, or quantize/dequantize nodes around integer ops);
- ``deployable``: the artifact is a finished model that backends compile (not an
  intermediate one that only exports for inspection);
- ``eval_device()``: where ``predict`` runs the model.

Rules the loop relies on: under DDP ``outputs`` receives the DDP wrapper, so it must call
``model(x)`` (never ``model.raw``) for gradients to synchronise; ``set_mode``, ``save`` and the
checkpoints get the unwrapped module; ``model.state_dict()`` must round-trip through
``load_state_dict`` on a model freshly returned by ``prepare`` (that is how ``--resume`` works).
Stage modules are imported by the CLI to list the stages, so heavy libraries (torch, torchao)
are imported inside methods, not at module level.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from stereoq.engine.report import Reporter
from stereoq.errors import StereoqError

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn
    from torch.utils.data import Dataset

    from stereoq.section import Section
    from stereoq.settings.config import ExperimentConfig


class Stage:
    """Defaults of a training stage; each stage overrides what differs."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    """One line for the CLI's help: what the stage does."""
    previous: ClassVar[str | None] = None
    trains: ClassVar[bool] = True
    takes_init: ClassVar[bool] = False
    validates_start: ClassVar[bool] = False
    takes_checkpoint: ClassVar[bool] = False
    deployable: ClassVar[bool] = False
    select_on: str = "epe"

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg

    @property
    def dir(self) -> Path:
        """``<run_dir>/<stage>/``: where the stage writes its checkpoints, logs and artifacts."""
        return stage_dir(self.cfg, self.name)

    @property
    def hint(self) -> str:
        """The command that makes this stage's artifact, for 'file missing' errors."""
        return train_hint(self.cfg, self.name)

    def recipe(self) -> Section:
        return self.cfg.stages.section(self.name)

    # Training --------------------------------------------------------------------------------

    def prepare(self, example: Tensor) -> nn.Module:
        """The model to train, from the previous stage's artifact; ``example``: (B, 6, h, w)."""
        raise NotImplementedError

    def set_mode(self, model: nn.Module, training: bool) -> None:
        model.train(training)

    def data(self, split: Literal["train", "val"], crop: bool) -> Dataset:
        """The samples this stage trains (``split`` "train") or validates on."""
        from stereoq.data import build_dataset

        return build_dataset(self.cfg.data, split, crop=crop)

    def outputs(self, model: nn.Module, x: Tensor) -> list[Tensor]:
        """(B, 6, h, w) -> five (B, 1, h_i, w_i) disparities in px, coarse to full resolution."""
        return model(x)

    def criterion(self) -> Callable[[list[Tensor], dict[str, Any]], Tensor]:
        """The training loss of (all outputs, the batch with its tensors on the device)."""
        from stereoq.models.build import build_loss

        loss = build_loss(self.cfg.model)
        return lambda outputs, batch: loss(outputs, batch["disp"])

    def val_loss(self, pred: Tensor, batch: dict[str, Any]) -> Tensor | None:
        """A label-free figure of a validation batch's (B, 1, H, W) px prediction, or None."""
        return None

    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        """(B, 6, H, W) -> (B, 1, H, W) disparity in px (eval mode)."""
        return model(x)

    def save(self, model: nn.Module, out_dir: Path, metrics: dict[str, Any]) -> None:
        """Extra artifacts on a new best validation EPE (the loop writes the checkpoints)."""

    def run(self, reporter: Reporter) -> dict[str, Any]:
        """One-pass stages (``trains = False``): do the work, return a summary to print."""
        raise NotImplementedError

    # Using the finished stage ----------------------------------------------------------------

    def artifact(self, checkpoint: Path | None = None) -> Path:
        """The file this stage's model is loaded from (``checkpoint`` where it takes one)."""
        self.check_checkpoint(checkpoint)
        return Path(checkpoint) if checkpoint is not None else self.dir / "best.pt"

    def predictor(self, checkpoint: Path | None = None) -> nn.Module:
        """Eval-mode model: (B, 6, H, W) normalised pair of any size -> (B, 1, H, W) px."""
        raise NotImplementedError

    def graph(self) -> nn.Module:
        """The deployed graph (see the module's docstring); one-line error if it is missing."""
        raise NotImplementedError

    def eval_device(self) -> torch.device:
        import torch

        return torch.device("cpu")

    def check_checkpoint(self, checkpoint: Path | None) -> None:
        if checkpoint is not None and not self.takes_checkpoint:
            raise StereoqError(
                f"stage {self.name} loads its own artifact ({self.dir}); a checkpoint file is "
                "taken only by stages trained from scratch",
                exit_code=2,
            )


def stage_dir(cfg: ExperimentConfig, name: str) -> Path:
    """``<run_dir>/<stage>/``: where a stage writes its checkpoints, logs and artifacts."""
    return cfg.run_dir / name


def train_hint(cfg: ExperimentConfig, stage: str) -> str:
    """The command that makes a stage's artifact, for 'file missing' errors."""
    return f"run `stereoq train --stage {stage}` with this config ({cfg.name}) first"
