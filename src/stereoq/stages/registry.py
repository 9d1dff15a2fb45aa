"""The stage registry: every stage of the pipeline, in pipeline order, by name.

``stereoq.stages`` registers the project's stages in pipeline order (``PIPELINE``); a stage
registered later (a plug-in, a test) goes at the end or right after the stage it names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from stereoq.engine.stage import Stage
from stereoq.errors import StereoqError

if TYPE_CHECKING:
    from stereoq.settings.config import ExperimentConfig

S = TypeVar("S", bound=type[Stage])

_STAGES: dict[str, type[Stage]] = {}


def register(cls: S, after: str | None = None) -> S:
    """Add a stage (by its ``name``) at the end of the pipeline, or right after ``after``."""
    global _STAGES
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    if cls.name in _STAGES:
        raise ValueError(f"stage {cls.name!r} is registered twice")
    if after is None:
        _STAGES[cls.name] = cls
        return cls
    items = list(_STAGES.items())
    at = [name for name, _ in items].index(after) + 1
    _STAGES = dict([*items[:at], (cls.name, cls), *items[at:]])
    return cls


def unregister(name: str) -> None:
    """Remove a stage (tests that register one of their own)."""
    _STAGES.pop(name, None)


def stage_names() -> list[str]:
    """Every stage, in pipeline order."""
    return list(_STAGES)


def stage_class(name: str) -> type[Stage]:
    """The stage registered as ``name``; a one-line error naming the known ones otherwise."""
    try:
        return _STAGES[name]
    except KeyError:
        raise StereoqError(
            f"unknown stage {name!r} (one of {', '.join(_STAGES)})", exit_code=2
        ) from None


def stage_classes() -> list[type[Stage]]:
    return list(_STAGES.values())


def get_stage(cfg: ExperimentConfig, name: str) -> Stage:
    """The stage ``name`` for this config."""
    return stage_class(name)(cfg)
