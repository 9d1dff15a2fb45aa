"""Options shared by several commands, and option validation with pydantic."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from stereoq import weights
from stereoq.errors import StereoqError

M = TypeVar("M", bound=BaseModel)

ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config",
        "-c",
        metavar="<file|name>",
        help="Config file (YAML), shipped config name, or shipped model name (its own config). "
        "Default: stereonet_synthetic.",
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", metavar="<key.path=value>", help="Override a config value (repeatable)."
    ),
]


def validate_options(model: type[M], **values: Any) -> M:
    """Validate a command's options; a bad value ends in one line naming the option.

    Floats must be finite: typer reads ``inf`` and ``nan`` as floats, and no option means them.
    """
    for key, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise StereoqError(
                f"option --{key.replace('_', '-')}: {value} is not a finite number", exit_code=2
            )
    try:
        return model.model_validate(values)
    except ValidationError as err:
        first = err.errors()[0]
        name = "--" + str(first["loc"][0]).replace("_", "-") if first["loc"] else "options"
        raise StereoqError(
            f"option {name}: {first['msg'].removeprefix('Value error, ')}", exit_code=2
        ) from None


def resolve_config(config: str | None) -> str | None:
    """``--config`` as ``load_config`` takes it: a shipped model's name becomes its own
    ``config.yaml`` (a file, or a shipped config, of that name wins)."""
    from stereoq.settings.config import shipped_configs  # the config machinery loads torch

    if config is None or Path(config).exists() or config in shipped_configs():
        return config
    if config in weights.names():
        return str(weights.config_file(config))
    raise StereoqError(
        f"config {config!r}: no such file, and not a shipped config "
        f"({', '.join(shipped_configs())}) or shipped model ({', '.join(weights.names())})",
        exit_code=2,
    )


def config_argument(config: str) -> str | None:
    """``resolve_config`` as an argparse ``type``, for the bench and example scripts: their
    ``--config`` reads as the commands' does, an unknown name is the parser's one-line error."""
    import argparse

    try:
        return resolve_config(config)
    except StereoqError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
