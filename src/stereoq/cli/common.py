"""Options shared by several commands, and option validation with pydantic."""

from __future__ import annotations

import math
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

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
