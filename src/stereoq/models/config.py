"""The ``model`` section of the config: registered component names and their parameters,
and what the configured network requires of its input (``size_multiple``)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from pydantic import ConfigDict, Field, PositiveInt, ValidationError, model_validator

from stereoq.models.refinement import per_level
from stereoq.registry import HEADS, LOSSES, NECKS, POSTPROCESS, REFINEMENTS, Registry
from stereoq.section import Section


class Component(Section):
    """``type`` names a registered class; the other keys are checked against its ``Params``."""

    model_config = ConfigDict(extra="allow")
    registry: ClassVar[Registry]
    type: str

    @model_validator(mode="after")
    def _check_params(self) -> Component:
        try:
            cls = self.registry.get(self.type)
        except KeyError as err:
            raise ValueError(str(err.args[0])) from None
        # The components' own Params accept inf and nan; the config file never means them.
        _check_finite(self.model_extra or {})
        try:
            params = cls.Params.model_validate(self.model_extra or {}).model_dump()
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
            raise ValueError(f"{where}: {msg}") from None
        _check_finite(params)  # "inf" given as a string becomes a float only now
        return self

    def params(self) -> dict[str, Any]:
        """The validated parameters with the class's defaults filled in."""
        params_model = self.registry.get(self.type).Params
        return params_model.model_validate(self.model_extra or {}).model_dump()


def _check_finite(params: dict[str, Any]) -> None:
    where = _non_finite(params)
    if where is not None:
        raise ValueError(f"{where}: Input should be a finite number")


def _non_finite(value: Any, path: str = "") -> str | None:
    """The dotted path of the first inf or nan float in nested dicts and lists, else None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    items = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, list | tuple) else ()
    )
    for key, item in items:
        found = _non_finite(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


class NeckSection(Component):
    registry = NECKS
    type: str = "stereonet_neck"


class HeadSection(Component):
    registry = HEADS
    type: str = "stereonet_head"


class RefinementSection(Component):
    registry = REFINEMENTS
    type: str = "edge_aware_refinement"


class PostProcessSection(Component):
    registry = POSTPROCESS
    type: str = "stereonet_postprocess"


class LossSection(Component):
    registry = LOSSES
    type: str = "multiscale_smooth_l1"


class ModelConfig(Section):
    """StereoNet shape: maxdisp in pixels, refinement levels, and each registered part."""

    maxdisp: PositiveInt = 192
    refine_levels: int = Field(default=4, ge=1, le=6)
    neck: NeckSection = Field(default_factory=NeckSection)
    head: HeadSection = Field(default_factory=HeadSection)
    refinement: RefinementSection = Field(default_factory=RefinementSection)
    postprocess: PostProcessSection = Field(default_factory=PostProcessSection)
    loss: LossSection = Field(default_factory=LossSection)

    @model_validator(mode="after")
    def _check_candidates(self) -> ModelConfig:
        step = 2**self.refine_levels
        if self.maxdisp % step:
            raise ValueError(
                f"maxdisp {self.maxdisp} must be a multiple of 2**refine_levels = {step}"
            )
        stride = self.size_multiple
        if stride != step:
            raise ValueError(
                f"refine_levels {self.refine_levels} does not match the neck's stride {stride}"
                f" (needs refine_levels = log2({stride}))"
            )
        weights = self.loss.params().get("weights")
        if weights is not None and len(weights) != self.refine_levels + 1:
            raise ValueError(
                f"loss.weights has {len(weights)} entries; the model has "
                f"{self.refine_levels + 1} outputs (refine_levels + 1)"
            )
        params = self.refinement.params()
        for key in ("channels", "num_blocks"):
            if key in params:
                per_level(params[key], self.refine_levels, key)  # a list of another length fails
        return self

    @property
    def size_multiple(self) -> int:
        """What input height and width must be multiples of: the neck's total stride (its
        ``stride`` parameter, else its class's), which the refinement levels undo one halving
        each (checked above); 2**refine_levels for a neck that declares neither."""
        default = getattr(self.neck.registry.get(self.neck.type), "stride", 2**self.refine_levels)
        return int(self.neck.params().get("stride", default))

    @property
    def num_candidates(self) -> int:
        """Disparity candidates in the cost volume at 1/size_multiple resolution."""
        return self.maxdisp // self.size_multiple
