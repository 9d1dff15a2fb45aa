"""The ``stereoq`` console script: one Typer app, one module per command."""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from stereoq.cli import calops, check, compile, export, infer, pack, predict, train
from stereoq.cli.command import StereoqTyper
from stereoq.cli.output import console, print_error
from stereoq.errors import StereoqError

app = StereoqTyper(
    name="stereoq",
    help="StereoNet from raw stereo data to a deployable integer model and depth maps.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(given: bool) -> None:
    if not given:
        return
    try:
        number = version("stereoq")
    except PackageNotFoundError:  # running from a source tree that was never installed
        from stereoq import __version__ as number
    console.print(f"stereoq {number}", highlight=False)
    raise typer.Exit()


@app.callback()
def _root(
    _version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", is_eager=True,
            callback=_print_version,
        ),
    ] = False,
) -> None:
    """StereoNet from raw stereo data to a deployable integer model and depth maps."""


for module in (pack, calops, infer, train, predict, check, compile, export):
    module.register(app)


def main() -> None:
    """Entry point: user mistakes end in one line on stderr and a non-zero exit code.

    Typer reports usage errors itself (exit 2); ``StereoqError`` from core code, and Ctrl-C
    during a command (``StereoqGroup.invoke``), are printed here.
    """
    try:
        app()
    except StereoqError as err:
        print_error(str(err))
        sys.exit(err.exit_code)
