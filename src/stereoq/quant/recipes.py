"""The quantization recipe of each quantized stage, read from the config.

Calibration runs the float graph with range observers (post-training quantization); QAT
trains the fake-quantized graph, which also holds the calibration's result (its ranges loaded
into it) and is what ``int_infer`` converts. Both follow one scheme, ``stages.calibration``:
QAT starts from the calibrated graph, so the two must quantize the same tensors the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stereoq.settings.config import ExperimentConfig

if TYPE_CHECKING:
    from stereoq.quant.quantizer import QuantRecipe


def _scheme(cfg: ExperimentConfig) -> dict[str, Any]:
    cal = cfg.stages.calibration
    # With mean = std = 128 the normalised input is exactly (pixel - 128) / 128: fix its scale
    # instead of observing a range that a calibration set might not cover.
    exact_input = cfg.data.mean == 128.0 and cfg.data.std == 128.0
    return {
        "observer": cal.observer,
        "percentile": cal.percentile,
        "bins": cal.bins,
        "input_scale": 1.0 / 128.0 if exact_input else None,
        "disparity_conv_bits": cal.disparity_conv_bits,
    }


def calibration_recipe(cfg: ExperimentConfig) -> QuantRecipe:
    """Observers on the float graph (percentile or min/max activations, per-channel weights)."""
    from stereoq.quant.quantizer import QuantRecipe  # torchao: imported on first use

    return QuantRecipe(is_qat=False, **_scheme(cfg))


def qat_recipe(cfg: ExperimentConfig) -> QuantRecipe:
    """Fake quantization for training, on the same scheme as ``calibration_recipe``."""
    from stereoq.quant.quantizer import QuantRecipe

    return QuantRecipe(is_qat=True, **_scheme(cfg))
