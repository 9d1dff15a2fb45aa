"""The ``stages`` section: the recipe of float training, adaptation, calibration, QAT and
int_infer."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
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


TrainPrecision = Literal["fp32", "bf16", "fp16"]


class TrainRecipe(Section):
    """One training stage (float or QAT)."""

    epochs: PositiveInt = 200
    batch_size: PositiveInt = 16
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    crop: bool = Field(default=True, description="random crops (data.train_crop) in training")
    grad_clip: PositiveFloat | None = None
    val_batch_size: PositiveInt = 1
    precision: TrainPrecision = Field(
        default="fp32", description="the training forward pass and loss: fp32, or autocast to "
        "bf16, or to fp16 with a gradient scaler (CUDA only); weights, optimizer and validation "
        "stay fp32"
    )
    compile: bool = Field(
        default=False, description="run the training forward pass through torch.compile "
        "(checkpoints stay those of the plain model)"
    )
    log_tensorboard: bool = Field(
        default=True, description="also write each epoch's log.jsonl figures as TensorBoard "
        "scalars beside it, when the tensorboard package is installed"
    )

    @model_validator(mode="after")
    def _check_warmup(self) -> TrainRecipe:
        if self.scheduler.warmup_epochs > self.epochs:
            raise ValueError(
                f"scheduler.warmup_epochs ({self.scheduler.warmup_epochs}) exceeds "
                f"epochs ({self.epochs})"
            )
        return self


Precision = Literal["int8", "int16", "float"]
Reference = Literal["ground_truth", "float_model"]


def label_reference(source: str) -> Reference:
    """What quantization of a float model from the stage ``source`` is judged against by
    default: its ground truth, or (``adapt``: unlabeled pairs) the float model's own disparity."""
    return "float_model" if source == "adapt" else "ground_truth"


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
    cost: Literal["latency", "macs"] = Field(
        default="latency", description="what raising a layer costs: its latency measured on "
        "`backend` (the model exported, compiled and profiled with no candidate raised and "
        "with all of them), or the MACs it takes out of the int8 kernels (no export)"
    )
    backend: Literal["ort", "openvino", "openvino-bf16"] = Field(
        default="ort", description="the deployment backend the latency is measured on"
    )
    threads: PositiveInt | None = Field(
        default=None, description="threads of the latency runs (default: the runtime's, all "
        "cores)"
    )
    against: Literal["auto", "ground_truth", "float_model"] = Field(
        default="auto", description="what the EPE is measured against: ground_truth (the "
        "validation frames' disparity), or float_model (no label: the float model's own "
        "disparity on the validation pairs of calibration.source, so the EPE is the mean "
        "difference from the float model, which bounds the EPE increase against any ground "
        "truth; needs max_increase_px); auto: float_model when calibration.source is adapt"
    )

    @model_validator(mode="after")
    def _one_limit(self) -> AccuracyBudget:
        if (self.max_increase_px is None) == (self.max_increase_pct is None):
            raise ValueError("give exactly one of max_increase_px and max_increase_pct")
        return self

    def reference(self, source: str) -> Reference:
        """What the budget's EPE is measured against, for a float model from ``source``."""
        return label_reference(source) if self.against == "auto" else self.against

    def allowed_px(self, float_epe: float) -> float:
        """The largest EPE increase allowed over a float EPE of ``float_epe`` px."""
        if self.max_increase_px is not None:
            return self.max_increase_px
        return float_epe * (self.max_increase_pct or 0.0) / 100.0

    def describe(self, reference: str = "ground_truth") -> str:
        if reference == "float_model":
            return f"mean difference from the float model <= {self.max_increase_px:g} px"
        if self.max_increase_px is not None:
            return f"EPE +{self.max_increase_px:g} px over float"
        return f"EPE +{self.max_increase_pct:g} % over float"


class ProxyConfig(Section):
    """Proxy labels from OpenCV SGBM for adaptation: only pixels that pass SGBM's uniqueness test
    and an explicit left-right consistency check are labels; the rest carry none."""

    num_disparities: PositiveInt | None = Field(
        default=None, description="SGBM's search range in px (rounded up to a multiple of 16); "
        "default: model.maxdisp"
    )
    block_size: PositiveInt = Field(default=5, description="SGBM's matching block, odd px")
    uniqueness_ratio: NonNegativeInt = Field(
        default=15, description="% by which the best cost must beat the second best"
    )
    lr_max_diff_px: NonNegativeFloat = Field(
        default=1.0, description="largest left-right disagreement of a kept pixel, px"
    )


class LabelFreeLossConfig(Section):
    """Weights of the label-free loss terms (0 switches a term off). The defaults did best of
    the few tried on the motorcycle pair (photometric 1 -> 5 and smoothness 0.01 -> 0.1:
    EPE 2.92 -> 2.82 px; proxy_fill 0 -> 0.3: 2.41 -> 2.33 px; one seed each)."""

    proxy: NonNegativeFloat = Field(
        default=1.0, description="SmoothL1 to the proxy labels, over all outputs with "
        "model.loss's weights"
    )
    proxy_fill: NonNegativeFloat = Field(
        default=0.3, description="the same on the pixels without a label, against the nearest "
        "label to their left (the background side of an occlusion)"
    )
    photometric: NonNegativeFloat = Field(
        default=5.0, description="left view vs the right view warped by the prediction, in "
        "grey levels / 255, occluded pixels left out"
    )
    ssim: float = Field(
        default=0.85, ge=0.0, le=1.0, description="SSIM's share of the photometric term (the "
        "rest is L1)"
    )
    smoothness: NonNegativeFloat = Field(
        default=0.1, description="edge-aware smoothness of the disparity (scaled by its mean)"
    )


class AdaptRecipe(TrainRecipe):
    """Adaptation of the float model to unlabeled rectified pairs: no ground truth is read by the
    loss or by the choice of best.pt (a folder's ground truth, when it has one, is only
    reported)."""

    pairs: str | None = Field(
        default=None, description="folder or quoted glob of rectified pairs, found as `stereoq "
        "infer --imgl` finds them (left/right names, left/ and right/ folders, im0/im1)"
    )
    right: str | None = Field(
        default=None, description="a second folder or glob of right images (as infer's --imgr)"
    )
    crop_size: tuple[PositiveInt, PositiveInt] = Field(
        default=(256, 512), description="training crop (height, width), multiples of the "
        "model's size multiple; every pair must be at least this large"
    )
    crops_per_pair: PositiveInt = Field(
        default=1, description="random crops of each training pair per epoch"
    )
    val_fraction: float = Field(
        default=0.1, ge=0.0, le=0.5, description="pairs held out to validate on (seeded); "
        "when that is no pair, validation runs on the training pairs at full size"
    )
    freeze_bn: bool = Field(
        default=True, description="keep BatchNorm's statistics from float training (few pairs "
        "make noisy batch statistics)"
    )
    loss: LabelFreeLossConfig = LabelFreeLossConfig()
    proxy: ProxyConfig = ProxyConfig()


def _adapt_default() -> AdaptRecipe:
    # lr 1e-3 (the float recipe's peak is 2e-3): 2e-4 moved the motorcycle EPE 3.42 -> 3.04 px
    # in 96 steps, 1e-3 3.42 -> 2.92 px in 160.
    return AdaptRecipe(
        epochs=10,
        batch_size=4,
        optimizer=OptimizerConfig(lr=1e-3),
        scheduler=SchedulerConfig(type="cosine", warmup_epochs=0),
    )


class CalibrationRecipe(Section):
    """Post-training calibration of the int8 model (BN folded, percentile observers), and the
    quantization scheme that QAT and int_infer keep: they start from the calibrated graph."""

    source: Literal["float", "adapt"] = Field(
        default="float", description="the float model quantized: float's or adapt's best.pt; "
        "its stage's training images calibrate, and QAT trains on them"
    )
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
    weight_bits: Literal[7, 8] = Field(
        default=7,
        description="7: int8 weights in [-63, 63], exact on every x86 CPU; 8: [-127, 127], "
        "exact only where the CPU has VNNI: without it (AVX2) ONNX Runtime and OpenVINO add "
        "uint8 x int8 products in pairs in int16, which saturates",
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

    @model_validator(mode="after")
    def _budget_needs_labels(self) -> CalibrationRecipe:
        """Against the float model (no label) the float EPE is zero: a share of it means
        nothing."""
        budget = self.budget
        if budget is not None and budget.reference(self.source) == "float_model" \
                and budget.max_increase_pct is not None:
            raise ValueError(
                "budget.max_increase_pct: the budget is measured against the float model "
                f"(budget.against: {budget.against}, calibration.source: {self.source}), whose "
                "own EPE is 0; give budget.max_increase_px, the mean disparity difference "
                "from the float model allowed"
            )
        return self


class QatRecipe(TrainRecipe):
    """Quantization-aware training from the calibrated graph.

    In fp32 only: under autocast the fake quants would observe and round bf16/fp16 values, and
    the int16 grids of the tensors that carry disparity need more mantissa than bf16 (8 bits)
    or fp16 (11 bits) have. Not compiled: torchao's fake quants branch on their observers'
    state, which breaks torch.compile's graph at each of them (on the tests' tiny model, with
    the aot_eager backend, an epoch took 164 s instead of 4 s and hit the recompile limit).
    """

    ranges: Literal["calibrated", "moving_average"] = Field(
        default="calibrated", description="calibrated: the activation ranges stay the ones "
        "calibration chose (percentile-clipped) while the weights train, only the weights' "
        "per-channel ranges follow them; moving_average: every fake quant updates its range "
        "from the training batches (min/max, averaged), as torchao's QAT does by default"
    )
    targets: Literal["ground_truth", "distill"] = Field(
        default="ground_truth", description="ground_truth: the data's disparity; distill: the "
        "float model's own outputs (calibration.source), no ground truth read, best.pt "
        "chosen by the distillation loss on the validation pairs"
    )

    @field_validator("precision")
    @classmethod
    def _fp32_only(cls, value: str) -> str:
        if value != "fp32":
            raise ValueError(
                f"{value}: QAT trains in fp32 only (fake quantization's int16 disparity grid "
                "needs more mantissa than bf16 or fp16 has)"
            )
        return value

    @field_validator("compile")
    @classmethod
    def _not_compiled(cls, value: bool) -> bool:
        if value:
            raise ValueError(
                "QAT is not compiled (torch.compile breaks its graph at every fake quant, "
                "which made training slower); leave it false"
            )
        return value


class IntInferRecipe(Section):
    """Conversion of a fake-quantized model into the integer model."""

    source: Literal["qat", "calibration"] = "qat"


def _qat_default() -> QatRecipe:
    return QatRecipe(
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
    adapt: AdaptRecipe = Field(default_factory=_adapt_default)
    calibration: CalibrationRecipe = CalibrationRecipe()
    qat: QatRecipe = Field(default_factory=_qat_default)
    int_infer: IntInferRecipe = IntInferRecipe()

    @model_validator(mode="before")
    @classmethod
    def _qat_defaults(cls, data: object) -> object:
        """A partial ``qat`` or ``adapt`` section keeps that stage's defaults for the keys it
        leaves out."""
        if isinstance(data, dict) and isinstance(data.get("qat"), dict):
            for key in ("disparity_conv_bits", "weight_bits"):
                if key in data["qat"]:
                    raise ValueError(
                        f"qat.{key}: set stages.calibration.{key} "
                        "(QAT trains the calibrated graph and keeps its scheme)"
                    )
            base = _qat_default().model_dump()
            data = {**data, "qat": _merge(base, data["qat"])}
        if isinstance(data, dict) and isinstance(data.get("adapt"), dict):
            data = {**data, "adapt": _merge(_adapt_default().model_dump(), data["adapt"])}
        return data

    @model_validator(mode="after")
    def _labels_where_quantized(self) -> StagesConfig:
        """Unlabeled pairs have no ground truth for QAT to train on."""
        if self.calibration.source == "adapt" and self.qat.targets == "ground_truth":
            raise ValueError(
                "qat.targets: ground_truth, but calibration.source is adapt (unlabeled pairs); "
                "set stages.qat.targets: distill"
            )
        return self

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
