"""The ``model`` section: registered component names and their parameters."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

import stereoq.models  # noqa: F401  (registers the built-in components)
from stereoq.registry import HEADS, LOSSES, NECKS, POSTPROCESS, REFINEMENTS, Registry


class Component(BaseModel):
    """``type`` names a registered class; the other keys are checked against its ``Params``."""

    model_config = ConfigDict(extra="allow", frozen=True)
    registry: ClassVar[Registry]
    type: str

    @model_validator(mode="after")
    def _check_params(self) -> Component:
        try:
            cls = self.registry.get(self.type)
        except KeyError as err:
            raise ValueError(str(err.args[0])) from None
        try:
            cls.Params.model_validate(self.model_extra or {})
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
            raise ValueError(f"{where}: {msg}") from None
        return self

    def params(self) -> dict[str, Any]:
        """The validated parameters with the class's defaults filled in."""
        params_model = self.registry.get(self.type).Params
        return params_model.model_validate(self.model_extra or {}).model_dump()


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


class ModelConfig(BaseModel):
    """StereoNet shape: maxdisp in pixels, refinement levels, and each registered part."""

    model_config = ConfigDict(extra="forbid", frozen=True)
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
        stride = getattr(self.neck.registry.get(self.neck.type), "stride", step)
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
        return self

    @property
    def num_candidates(self) -> int:
        """Disparity candidates in the cost volume at 1/2**refine_levels resolution."""
        return self.maxdisp // 2**self.refine_levels
