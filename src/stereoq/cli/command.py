"""The Typer classes behind every command: help that reads well, and Ctrl-C as one line.

Every command gets these through ``StereoqTyper``, so a command module only declares options.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from stereoq.errors import StereoqError

INTERRUPTED = (
    "interrupted (`pack` resumes when rerun and `train --resume` continues from the last "
    "finished epoch; other work starts over)"
)


def reflow(text: str | None) -> str | None:
    """Join the lines of each paragraph of a docstring into one.

    Typer's rich help keeps a docstring's line breaks and then wraps each line to the terminal
    again, which breaks sentences mid-line; joined paragraphs wrap cleanly at any width.
    Paragraphs starting with ``\\b`` keep their lines (click's convention).
    """
    if not text:
        return text
    paragraphs = text.split("\n\n")
    return "\n\n".join(
        p if p.lstrip().startswith("\b") else " ".join(line.strip() for line in p.splitlines())
        for p in paragraphs
    )


def _hide_flag_type(param: Any) -> Any:
    # A flag takes no value: no type placeholder (Typer would show <bool>) beside it.
    if getattr(param, "is_flag", False) and param.metavar is None:
        param.metavar = ""
    return param


class _HelpStyle:
    """Mixed into Typer's command and group classes."""

    params: list[Any]
    help: str | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = reflow(self.help)
        for param in self.params:
            _hide_flag_type(param)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        return _hide_flag_type(option) if option is not None else None


class StereoqCommand(_HelpStyle, TyperCommand):
    pass


class StereoqGroup(_HelpStyle, TyperGroup):
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

    def command(self, *args: Any, cls: type[TyperCommand] | None = None, **kwargs: Any) -> Any:
        return super().command(*args, cls=cls or StereoqCommand, **kwargs)
