"""The stage options of the commands, from the stage registry (``stereoq.stages``)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator

from stereoq.errors import StereoqError
from stereoq.stages import first_stage, last_stage, stage_classes, stage_names


def _known(value: str, extra: tuple[str, ...] = ()) -> str:
    names = [*stage_names(), *extra]
    if value not in names:
        raise ValueError(f"unknown stage {value!r} (one of {', '.join(names)})")
    return value


StageName = Annotated[str, AfterValidator(_known)]
"""A stage of the pipeline (validated against the registry)."""


def stage_or(*extra: str) -> Any:
    """The type of a stage of the pipeline or one of ``extra`` (other model sources)."""
    return Annotated[str, AfterValidator(lambda value: _known(value, extra))]


def or_names(names: list[str]) -> str:
    """``a, b or c``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def stage_help(what: str, extra: tuple[str, ...] = ()) -> str:
    """``what``: the stages in pipeline order (and ``extra`` choices)."""
    return f"{what}: {or_names([*stage_names(), *extra])}."


def train_help() -> str:
    """Each stage with what it does, in pipeline order."""
    return "Stage to run: " + "; ".join(f"{s.name} ({s.summary})" for s in stage_classes()) + "."


def checkpoint_takers() -> list[str]:
    return [s.name for s in stage_classes() if s.takes_checkpoint]


def init_takers() -> list[str]:
    return [s.name for s in stage_classes() if s.takes_init]


FIRST_STAGE = first_stage()
"""The default of the commands that evaluate or run a model."""
LAST_STAGE = last_stage()
"""The default of the deployment commands."""


def check_checkpoint(stage: str, checkpoint: object) -> None:
    """--checkpoint only with a stage that loads a checkpoint file (one trained from scratch)."""
    takers = checkpoint_takers()
    if checkpoint is not None and stage not in takers:
        raise StereoqError(
            f"option --checkpoint: only the {or_names(takers)} stage takes one, not {stage}", 2
        )
