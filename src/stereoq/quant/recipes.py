"""The quantization recipe of each quantized stage, read from the config.

Calibration runs the float graph with range observers (post-training quantization); QAT
trains the fake-quantized graph, which also holds the calibration's result (its ranges loaded
into it) and is what ``int_infer`` converts. Both follow one scheme, ``stages.calibration``:
QAT starts from the calibrated graph, so the two must quantize the same tensors the same way.

The scheme's per-layer precision is the config's ``stages.calibration.precision`` overrides,
then, with ``stages.calibration.budget``, the layers calibration raised to meet it (recorded in
``RUN_DIR/calibration/mixed_precision.json``, ``MIXED_PRECISION``): every later stage reads the
same file, so QAT, int_infer, export and check follow calibration's choices.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from stereoq.engine.stage import stage_dir
from stereoq.errors import StereoqError
from stereoq.settings.config import ExperimentConfig
from stereoq.settings.stages import SCHEME_SECTION

if TYPE_CHECKING:
    from pathlib import Path

    from stereoq.quant.quantizer import QuantRecipe

MIXED_PRECISION = "mixed_precision.json"
"""The budget search's record, in the calibration stage's folder."""


def mixed_precision_path(cfg: ExperimentConfig) -> Path:
    return stage_dir(cfg, SCHEME_SECTION) / MIXED_PRECISION


def budget_choices(cfg: ExperimentConfig) -> dict[str, str]:
    """The layers the budget search raised (layer -> precision); none without a budget or
    before calibration has run. A record made for another budget is an error."""
    budget = cfg.stages.calibration.budget
    path = mixed_precision_path(cfg)
    if budget is None or not path.is_file():
        return {}
    record = json.loads(path.read_text())
    if record.get("budget") != budget.model_dump():
        raise StereoqError(
            f"{path} was made for another stages.calibration.budget: run `stereoq train "
            f"--stage calibration` with this config ({cfg.name}) again"
        )
    return dict(record.get("raised", {}))


def precision_overrides(
    cfg: ExperimentConfig, extra: dict[str, str] | None = None
) -> tuple[tuple[str, str], ...]:
    """(pattern, precision) pairs in order: the config's, the budget's record, ``extra``."""
    pairs = list(cfg.stages.calibration.precision.items())
    pairs += list(budget_choices(cfg).items()) if extra is None else list(extra.items())
    return tuple(pairs)


def _scheme(cfg: ExperimentConfig, extra: dict[str, str] | None = None) -> dict[str, Any]:
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
        "weight_bits": cal.weight_bits,
        "precision": precision_overrides(cfg, extra),
    }


def calibration_recipe(cfg: ExperimentConfig, raised: dict[str, str] | None = None) -> QuantRecipe:
    """Observers on the float graph (percentile or min/max activations, per-channel weights);
    ``raised``: the budget search's layers (instead of its record)."""
    from stereoq.quant.quantizer import QuantRecipe  # torchao: imported on first use

    return QuantRecipe(is_qat=False, **_scheme(cfg, raised))


def qat_recipe(cfg: ExperimentConfig, raised: dict[str, str] | None = None) -> QuantRecipe:
    """Fake quantization for training, on the same scheme as ``calibration_recipe``."""
    from stereoq.quant.quantizer import QuantRecipe

    return QuantRecipe(is_qat=True, **_scheme(cfg, raised))
