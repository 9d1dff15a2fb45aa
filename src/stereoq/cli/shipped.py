"""The ``--weights`` option: trained models shipped with the package (``stereoq.weights``)."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import AfterValidator

from stereoq import weights
from stereoq.cli.stages import FIRST_STAGE
from stereoq.errors import StereoqError


def _shipped(value: str) -> str:
    known = weights.names()
    if value not in known:
        raise ValueError(f"unknown shipped model {value!r} (one of {', '.join(known)})")
    return value


ShippedName = Annotated[str, AfterValidator(_shipped)]
"""The name of a shipped model (validated against the package's folders)."""


def weights_help(what: str) -> str:
    """``what``, then each shipped model with its card's one-line summary."""
    listed = "; ".join(f"{name} ({summary})" for name, summary in weights.summaries().items())
    return f"{what}: {listed}."


WeightsOpt = Annotated[
    str | None,
    typer.Option(
        metavar="<name>",
        help=weights_help("A trained model shipped with stereoq, used instead of a run's stage "
                          "(its own model section and input normalisation replace the config's)"),
    ),
]


def check_weights(name: str | None, stage: str, checkpoint: object, sets: list[str]) -> None:
    """--weights names the model: not with another stage, --checkpoint, or --set of what the
    shipped model brings (its model section and input normalisation)."""
    if name is None:
        return
    if stage != FIRST_STAGE:
        raise StereoqError(f"option --weights: a shipped model is a {FIRST_STAGE} model; not "
                           f"with --stage {stage}", exit_code=2)
    if checkpoint is not None:
        raise StereoqError("option --weights: not with --checkpoint (both give the weights)",
                           exit_code=2)
    from stereoq.settings.config import parse_override

    for item in sets:
        keys = parse_override(item)[0]
        if keys[0] == "model" or keys[:2] in [["data", key] for key in weights.INPUT_KEYS]:
            raise StereoqError(
                f"option --set {item}: the shipped model {name} brings its own model section "
                f"and input normalisation (data.{', data.'.join(weights.INPUT_KEYS)})",
                exit_code=2,
            )
