"""The ``stereoq`` console script: one Typer app, one module per command."""

from __future__ import annotations

import sys

from stereoq.cli import calops, check, compile, export, infer, pack, predict, train
from stereoq.cli.command import StereoqTyper
from stereoq.cli.output import print_error
from stereoq.errors import StereoqError

app = StereoqTyper(
    name="stereoq",
    help="StereoNet from raw stereo data to a deployable integer model and depth maps.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root() -> None:
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
