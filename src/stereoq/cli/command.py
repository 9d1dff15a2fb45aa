"""The Typer classes behind every command: Ctrl-C as one line.

Every command gets these through ``StereoqTyper``, so a command module only declares options.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from stereoq.errors import StereoqError

INTERRUPTED = (
    "interrupted (`pack` resumes when rerun and `train --resume` continues from the last "
    "finished epoch; other work starts over)"
)


class StereoqGroup(TyperGroup):
    def invoke(self, ctx: Any) -> Any:
        # Typer turns KeyboardInterrupt into a silent exit 130 before ``main`` could see it.
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise StereoqError(INTERRUPTED, exit_code=130) from None


class StereoqTyper(typer.Typer):
    """A Typer app whose group and commands use the classes above."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cls=StereoqGroup, **kwargs)
