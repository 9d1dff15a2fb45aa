"""The base of every config section: unknown keys are errors, values frozen, floats finite."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A part of the config file. ``inf`` and ``nan`` (YAML ``.inf``, ``.nan``, or the strings
    "inf", "nan") are rejected everywhere: no setting means them, and they would only surface
    later as NaN losses or ``Infinity`` in JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
