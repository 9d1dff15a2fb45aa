"""The pipeline's stages, in order: one module and one ``Stage`` class each.

Adding a stage: write its module (a ``Stage`` subclass; ``stereoq.engine.stage`` says what it
may override), put the class in ``PIPELINE`` below in its place, and give it a section in the
config's ``stages`` (``stereoq.settings.stages``). The CLI's choices and help,
``predict --stage all``, export, the backends and infer take it from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from stereoq.engine.report import Reporter
from stereoq.engine.stage import Stage
from stereoq.stages.adapt import AdaptStage
from stereoq.stages.calibration import CalibrationStage
from stereoq.stages.float_stage import FloatStage
from stereoq.stages.int_infer import IntInferStage
from stereoq.stages.qat import QatStage
from stereoq.stages.registry import (
    get_stage,
    register,
    stage_class,
    stage_classes,
    stage_names,
    unregister,
)

if TYPE_CHECKING:
    from stereoq.settings.config import ExperimentConfig

PIPELINE: tuple[type[Stage], ...] = (
    FloatStage, AdaptStage, CalibrationStage, QatStage, IntInferStage
)
"""Every stage, in pipeline order."""

for _stage in PIPELINE:
    register(_stage)

__all__ = [
    "Stage",
    "get_stage",
    "register",
    "run_stage",
    "stage_class",
    "stage_classes",
    "stage_names",
    "unregister",
    "first_stage",
    "last_stage",
]


def first_stage() -> str:
    """The stage every other starts from (the reference of accuracy tables)."""
    return stage_names()[0]


def last_stage() -> str:
    """The pipeline's end: the model that is deployed by default."""
    return stage_names()[-1]


def run_stage(
    cfg: ExperimentConfig,
    name: str,
    resume: bool = False,
    reporter: Reporter | None = None,
    init_from: Path | str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """``stereoq train --stage NAME``: the engine's loop for training stages, ``Stage.run``
    for one-pass ones. ``init_from``: a checkpoint, or a shipped model's name
    (``stereoq.weights``), whose weights (only) start the stage. A training stage whose
    ``last.pt`` exists runs only with ``resume`` (continue it) or ``overwrite`` (replace it)."""
    from stereoq.engine.allocator import keep_freed_memory
    from stereoq.engine.loop import check_fresh_start, check_init_from, train

    stage = get_stage(cfg, name)
    check_fresh_start(stage, resume, overwrite)
    check_init_from(stage, init_from, resume)
    keep_freed_memory()
    if not stage.trains:
        return stage.run(reporter or Reporter())
    return train(cfg, stage, resume, reporter, init_from)
