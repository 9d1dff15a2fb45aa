"""Finding a stage by name. Kept apart from ``stereoq.engine.stage``, which the modules that
register stages import: this module imports them in turn (by name, on first lookup), so the
base and its extensions do not import each other."""

from __future__ import annotations

import importlib

from stereoq.engine.stage import STAGE_NAMES, STAGES, Stage
from stereoq.errors import StereoqError
from stereoq.settings.config import ExperimentConfig

STAGE_MODULES = ("stereoq.quant.stages",)
"""Modules that register stages besides float (imported on first lookup; may be absent)."""


def _import_stage_modules() -> None:
    for module in STAGE_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:  # the module exists but something it imports does not
                raise


def get_stage(cfg: ExperimentConfig, name: str) -> Stage:
    """The registered stage ``name`` for ``cfg``; one-line error if it does not exist (yet)."""
    if name not in STAGE_NAMES:
        raise StereoqError(
            f"option --stage: unknown stage {name!r} (one of {', '.join(STAGE_NAMES)})",
            exit_code=2,
        )
    _import_stage_modules()
    if name not in STAGES.names():
        raise StereoqError(
            f"option --stage: stage {name!r} is not available in this build "
            f"(available: {', '.join(registered_stages())})",
            exit_code=2,
        )
    stage = STAGES.build(name, cfg=cfg)
    stage.name = name
    return stage


def registered_stages() -> list[str]:
    """Registered stage names in pipeline order."""
    _import_stage_modules()
    return [n for n in STAGE_NAMES if n in STAGES.names()]
