"""Each quantized stage's recipe comes from the config: ``stages.calibration`` sets the scheme
(``disparity_conv_bits`` included) for calibration and QAT alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from stereoq.cli import main
from stereoq.models.build import build_model
from stereoq.quant.prepare import calibrate, convert, prepare
from stereoq.quant.quantizer import QuantRecipe
from stereoq.quant.recipes import calibration_recipe, qat_recipe
from stereoq.quant.report import precision_report
from stereoq.settings import load_config

from .conftest import TINY_MODEL, random_pair, tiny_cfg


def test_default_recipes_are_the_calibration_scheme() -> None:
    cfg = tiny_cfg()
    scheme = {"observer": "percentile", "percentile": 99.985, "bins": 2048,
              "input_scale": 1.0 / 128.0, "disparity_conv_bits": 8, "weight_bits": 7,
              "precision": ()}
    assert calibration_recipe(cfg) == QuantRecipe(is_qat=False, **scheme)
    assert qat_recipe(cfg) == QuantRecipe(is_qat=True, **scheme)


def test_disparity_conv_bits_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "int16.yaml"
    path.write_text(yaml.safe_dump(
        {"name": "int16", "stages": {"calibration": {"disparity_conv_bits": 16}}}
    ))
    cfg = load_config(str(path))
    assert calibration_recipe(cfg).disparity_conv_bits == 16
    assert qat_recipe(cfg).disparity_conv_bits == 16


def test_disparity_conv_bits_from_set_reaches_the_quantizer() -> None:
    cfg = load_config(
        "stereonet_synthetic",
        sets=[*TINY_MODEL, "stages.calibration.disparity_conv_bits=16"],
    )
    torch.manual_seed(0)
    observed = prepare(build_model(cfg.model), calibration_recipe(cfg))
    calibrate(observed, [random_pair(1, seed=1)])
    offsets = [o for o in precision_report(convert(observed))["ops"]
               if o["op"] == "conv2d.default" and ".offset" in o["module"]]
    assert len(offsets) == 4 and all(o["output"] == "int16" for o in offsets)
    assert all("stages.calibration.disparity_conv_bits: 16" in o["reason"] for o in offsets)


def test_a_bad_value_is_a_one_line_config_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        "sys.argv",
        ["stereoq", "train", "--stage", "calibration",
         "--set", "stages.calibration.disparity_conv_bits=12"],
    )
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "stages.calibration.disparity_conv_bits: Input should be 8 or 16" in err
