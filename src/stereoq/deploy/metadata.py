"""What a deployed model expects and returns, stored in the ONNX file and next to artifacts."""

from __future__ import annotations

import json
from typing import Any, Literal

import onnx
from pydantic import BaseModel, ConfigDict

from stereoq.settings.config import ExperimentConfig

INPUT_NAME = "input"
OUTPUT_NAMES = ("disparity_half", "offset")
POSTPROCESS = (
    "disparity_px = relu(resize_bilinear(disparity_half, (H, W), align_corners=False)"
    " + offset) * maxdisp"
)
KEY_PREFIX = "stereoq."


class OutputInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    shape: list[int]
    meaning: str
    quant_scale: float | None = None
    """Scale of the output's last dequantization (normalised units); ``None`` if float."""
    quant_bits: int | None = None
    agreement_step: float | None = None
    """One 8-bit quantization step over the output's range: the scale for an 8-bit output,
    ``scale * 2**(bits - 8)`` for a 16-bit one. ORT's integer kernels round differently from
    PyTorch's Q/DQ simulation, and a one-LSB difference in the int8 features upstream moves a
    16-bit output by far more than its own step; exports are held to this step."""


class DeployMetadata(BaseModel):
    """The contract of a deployed StereoNet graph, readable without stereoq."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format_version: int = 1
    model_name: str
    stage: str
    precision: Literal["float32", "int8-qdq"]
    opset: int
    input_name: str = INPUT_NAME
    input_shape: list[int]
    input_layout: str = "NCHW; channels 0-2 left image, 3-5 right image (rectified pair)"
    color: str
    normalisation: str
    mean: float
    std: float
    maxdisp: int
    size_multiple: int
    outputs: list[OutputInfo]
    postprocess: str = POSTPROCESS
    float_convs: list[str] = []
    """Convolutions of a quantized graph that run in float, not as 8-bit integer kernels (16-bit
    or float layers; module names where known). Each runtime sums them in its own order, so
    they are not bit-exact to PyTorch's and the thresholds allow for it
    (``stereoq.deploy.acceptance.for_model``)."""

    @property
    def height(self) -> int:
        return self.input_shape[2]

    @property
    def width(self) -> int:
        return self.input_shape[3]

    def onnx_props(self) -> dict[str, str]:
        """One ``stereoq.<field>`` entry per field, values JSON-encoded (ONNX wants strings)."""
        return {KEY_PREFIX + k: json.dumps(v) for k, v in self.model_dump().items()}

    @classmethod
    def from_onnx(cls, model: onnx.ModelProto) -> DeployMetadata | None:
        """The metadata stored by :meth:`onnx_props`, or ``None`` if the file has none."""
        fields: dict[str, Any] = {
            p.key.removeprefix(KEY_PREFIX): json.loads(p.value)
            for p in model.metadata_props
            if p.key.startswith(KEY_PREFIX)
        }
        return cls.model_validate(fields) if fields else None


def describe(
    cfg: ExperimentConfig,
    stage: str,
    precision: Literal["float32", "int8-qdq"],
    opset: int,
    height: int,
    width: int,
    quant: dict[str, tuple[float, int] | None] | None = None,
    float_convs: list[str] | None = None,
) -> DeployMetadata:
    """Metadata of the deployed graph of ``cfg`` at ``height`` x ``width``; ``quant`` maps an
    output to the (scale, bits) of its final dequantization."""
    quant = quant or {}

    def q(name: str) -> dict[str, float | int | None]:
        found = quant.get(name)
        if not found:
            return {}
        scale, bits = found
        return {"quant_scale": scale, "quant_bits": bits,
                "agreement_step": scale * 2 ** (bits - 8)}

    color = cfg.data.color.upper()
    return DeployMetadata(
        model_name=cfg.name,
        stage=stage,
        precision=precision,
        opset=opset,
        input_shape=[1, 6, height, width],
        color=cfg.data.color,
        normalisation=f"{color} pixel values 0-255, then (value - mean) / std",
        mean=cfg.data.mean,
        std=cfg.data.std,
        maxdisp=cfg.model.maxdisp,
        size_multiple=cfg.model.size_multiple,
        outputs=[
            OutputInfo(
                name=OUTPUT_NAMES[0],
                shape=[1, 1, height // 2, width // 2],
                meaning="disparity at 1/2 resolution, normalised (pixels of the full-size"
                " image / maxdisp)",
                **q(OUTPUT_NAMES[0]),
            ),
            OutputInfo(
                name=OUTPUT_NAMES[1],
                shape=[1, 1, height, width],
                meaning="full-resolution disparity offset, normalised",
                **q(OUTPUT_NAMES[1]),
            ),
        ],
        float_convs=list(float_convs or []),
    )
