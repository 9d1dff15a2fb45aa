"""A stage: the small description of what changes between float, calibration, QAT and int_infer.

The engine has ONE training loop (``stereoq.engine.loop.train``). A stage does not copy it; it
says only what differs:

- ``previous``: the stage whose artifact this one starts from (``None`` for float);
- ``recipe()``: the training recipe (epochs, batch, optimizer, schedule, crops);
- ``prepare(example)``: the model to train, built from the previous stage's artifact
  (``example`` is one training input batch (B, 6, h, w) on the training device, for stages that
  trace or export);
- ``set_mode(model, training)``: switch train/eval (exported graphs need their own calls);
- ``outputs(model, x)``: the five disparities in px, coarse to full resolution, for the loss;
- ``predict(model, x)``: the (B, 1, H, W) disparity in px for validation metrics;
- ``save(model, out_dir, metrics)``: extra artifacts written (rank 0) when validation finds a
  new best, besides the loop's own ``last.pt`` / ``best.pt`` checkpoints;
- ``trains``: ``False`` for one-pass stages (calibration, int_infer), which implement
  ``run(reporter)`` instead of using the loop;
- ``takes_init``: ``True`` where ``train --init-from`` may load a float checkpoint's weights
  into the prepared model (fine-tuning; the optimizer and schedule start afresh).

Adding a stage: subclass ``Stage`` in the module that owns it and register it in one line::

    @STAGES.register("qat")
    class QatStage(Stage):
        previous = "calibration"
        def prepare(self, example): ...

and list the module in ``stereoq.engine.stage_lookup.STAGE_MODULES`` (``stereoq.quant.stages``
already is). Stage modules are
imported when a stage is looked up, so they must import heavy or noisy libraries (torchao)
inside methods, not at module level.

Rules the loop relies on: under DDP ``outputs`` receives the DDP wrapper, so it must call
``model(x)`` (never ``model.raw``) for gradients to synchronise; ``set_mode``, ``save`` and the
checkpoints get the unwrapped module; ``model.state_dict()`` must round-trip through
``load_state_dict`` on a model freshly returned by ``prepare`` (that is how ``--resume`` works).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor, nn

from stereoq.engine.report import Reporter
from stereoq.registry import Registry
from stereoq.settings.config import ExperimentConfig
from stereoq.settings.stages import TrainRecipe

STAGE_NAMES = ("float", "calibration", "qat", "int_infer")
"""Every stage the CLI accepts, in pipeline order."""

STAGES = Registry("stage")


class Stage:
    """Float behaviour by default; other stages override what differs."""

    name: ClassVar[str] = ""
    previous: ClassVar[str | None] = None
    trains: ClassVar[bool] = True
    takes_init: ClassVar[bool] = False

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg

    def recipe(self) -> TrainRecipe:
        return self.cfg.stages.recipe(self.name)

    def prepare(self, example: Tensor) -> nn.Module:
        """The model to train, from the previous stage's artifact; ``example``: (B, 6, h, w)."""
        raise NotImplementedError

    def set_mode(self, model: nn.Module, training: bool) -> None:
        model.train(training)

    def outputs(self, model: nn.Module, x: Tensor) -> list[Tensor]:
        """(B, 6, h, w) -> five (B, 1, h_i, w_i) disparities in px, coarse to full resolution."""
        return model(x)

    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        """(B, 6, H, W) -> (B, 1, H, W) disparity in px (eval mode)."""
        return model(x)

    def save(self, model: nn.Module, out_dir: Path, metrics: dict[str, Any]) -> None:
        """Extra artifacts on a new best validation EPE (the loop writes the checkpoints)."""

    def run(self, reporter: Reporter) -> dict[str, Any]:
        """One-pass stages (``trains = False``): do the work, return a summary to print."""
        raise NotImplementedError


@STAGES.register("float")
class FloatStage(Stage):
    """Float training from a fresh initialisation (seeded by ``cfg.seed``)."""

    name = "float"
    takes_init = True

    def prepare(self, example: Tensor) -> nn.Module:
        from stereoq.engine.layout import channels_last
        from stereoq.models.build import build_model

        return channels_last(build_model(self.cfg.model))


def stage_dir(cfg: ExperimentConfig, name: str) -> Path:
    """``<run_dir>/<stage>/``: where a stage writes its checkpoints, logs and artifacts."""
    return cfg.run_dir / name


def train_hint(cfg: ExperimentConfig, stage: str) -> str:
    """The command that makes a stage's artifact, for 'file missing' errors."""
    return f"run `stereoq train --stage {stage}` with this config ({cfg.name}) first"
