"""The ``stages`` section: the recipe of float training, calibration, QAT and int_infer."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from stereoq.section import Section


class OptimizerConfig(Section):
    """Weight decay applies to conv/linear weights only, never to BN parameters or biases."""

    type: Literal["adam", "adamw", "sgd"] = "adam"
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 4e-5
    momentum: NonNegativeFloat = 0.9


class SchedulerConfig(Section):
    """LR schedule by epoch: linear warmup, then cosine decay or step decay."""

    type: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: NonNegativeInt = 0
    min_lr_ratio: NonNegativeFloat = 0.0
    milestones: list[PositiveInt] = Field(default_factory=list)
    gamma: PositiveFloat = 0.1


class TrainRecipe(Section):
    """One training stage (float or QAT)."""

    epochs: PositiveInt = 200
    batch_size: PositiveInt = 16
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    crop: bool = Field(default=True, description="random crops (data.train_crop) in training")
    grad_clip: PositiveFloat | None = None
    val_batch_size: PositiveInt = 1

    @model_validator(mode="after")
    def _check_warmup(self) -> TrainRecipe:
        if self.scheduler.warmup_epochs > self.epochs:
            raise ValueError(
                f"scheduler.warmup_epochs ({self.scheduler.warmup_epochs}) exceeds "
                f"epochs ({self.epochs})"
            )
        return self


Precision = Literal["int8", "int16", "float"]


class AccuracyBudget(Section):
    """Mixed precision under an accuracy budget: the most EPE the quantized model may lose
    against the float one. Calibration raises the layers that cost the most accuracy per unit
    of compute (``stereoq.quant.budget``) until the budget holds."""

    max_increase_px: NonNegativeFloat | None = Field(
        default=None, description="largest EPE increase over float, in px"
    )
    max_increase_pct: NonNegativeFloat | None = Field(
        default=None, description="largest EPE increase over float, in % of the float EPE"
    )
    frames: PositiveInt = Field(default=8, description="validation frames the EPE is measured on")
    raise_to: Literal["int16", "float"] = "int16"
    max_layers: PositiveInt = Field(default=12, description="most layers raised before giving up")

    @model_validator(mode="after")
    def _one_limit(self) -> AccuracyBudget:
        if (self.max_increase_px is None) == (self.max_increase_pct is None):
            raise ValueError("give exactly one of max_increase_px and max_increase_pct")
        return self

    def allowed_px(self, float_epe: float) -> float:
        """The largest EPE increase allowed over a float EPE of ``float_epe`` px."""
        if self.max_increase_px is not None:
            return self.max_increase_px
        return float_epe * (self.max_increase_pct or 0.0) / 100.0

    def describe(self) -> str:
        if self.max_increase_px is not None:
            return f"EPE +{self.max_increase_px:g} px over float"
        return f"EPE +{self.max_increase_pct:g} % over float"


class CalibrationRecipe(Section):
    """Post-training calibration of the int8 model (BN folded, percentile observers), and the
    quantization scheme that QAT and int_infer keep: they start from the calibrated graph."""

    batches: PositiveInt = 20
    batch_size: PositiveInt = 1
    observer: Literal["percentile", "minmax"] = "percentile"
    percentile: float = Field(default=99.985, gt=50.0, le=100.0)
    bins: PositiveInt = 8192
    disparity_conv_bits: Literal[8, 16] = Field(
        default=8,
        description="8: every convolution int8 (integer kernels in ONNX Runtime); 16: the "
        "convolutions that read or write disparity in int16, for runtimes with such kernels",
    )
    precision: dict[str, Precision] = Field(
        default_factory=dict,
        description="layer name or glob pattern -> int8 | int16 | float, overriding the scheme "
        "for those layers (the last matching pattern wins); a pattern that matches no layer "
        "of the model is an error",
    )
    budget: AccuracyBudget | None = Field(
        default=None,
        description="raise the most sensitive layers until the quantized EPE is within this "
        "budget of the float EPE; the choices go to calibration/mixed_precision.json and the "
        "later stages follow them",
    )


class IntInferRecipe(Section):
    """Conversion of a fake-quantized model into the integer model."""

    source: Literal["qat", "calibration"] = "qat"


def _qat_default() -> TrainRecipe:
    return TrainRecipe(
        epochs=40,
        batch_size=4,
        crop=False,
        optimizer=OptimizerConfig(lr=5e-5),
        scheduler=SchedulerConfig(type="cosine", warmup_epochs=0),
    )


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = (
            _merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


SCHEME_SECTION = "calibration"
"""The section holding the quantization scheme every quantized stage follows; the stage of that
name keeps the scheme's run-time choices (the accuracy budget's record) in its folder."""


class StagesConfig(Section):
    model_config = ConfigDict(populate_by_name=True)
    float_: TrainRecipe = Field(default_factory=TrainRecipe, alias="float")
    calibration: CalibrationRecipe = CalibrationRecipe()
    qat: TrainRecipe = Field(default_factory=_qat_default)
    int_infer: IntInferRecipe = IntInferRecipe()

    @model_validator(mode="before")
    @classmethod
    def _qat_defaults(cls, data: object) -> object:
        """A partial ``qat`` section keeps the QAT defaults for the keys it leaves out."""
        if isinstance(data, dict) and isinstance(data.get("qat"), dict):
            if "disparity_conv_bits" in data["qat"]:
                raise ValueError(
                    "qat.disparity_conv_bits: set stages.calibration.disparity_conv_bits "
                    "(QAT trains the calibrated graph and keeps its scheme)"
                )
            base = _qat_default().model_dump()
            data = {**data, "qat": _merge(base, data["qat"])}
        return data

    def section(self, stage: str) -> Section:
        """The section of ``stage`` (named as in the config file)."""
        for field, info in type(self).model_fields.items():
            if (info.alias or field) == stage:
                return getattr(self, field)
        raise KeyError(f"the config has no stages.{stage} section")

    @classmethod
    def section_fields(cls, stage: str) -> set[str]:
        """The keys the ``stage`` section takes (for option checks before a config is read)."""
        for field, info in cls.model_fields.items():
            if (info.alias or field) == stage:
                return set(info.annotation.model_fields)
        return set()
