"""Per-layer precision overrides by name or glob: the quantizer follows them, an unknown name is
a one-line error, and they round-trip through the config, calibration, int_infer, the ONNX
export and ``check``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from stereoq.deploy.acceptance import DEFAULT, for_model
from stereoq.deploy.onnx_export import default_path, read_metadata
from stereoq.engine.checkpoint import save_checkpoint
from stereoq.errors import StereoqError
from stereoq.models.build import build_model
from stereoq.quant.prepare import RawOutputs, export_graph, fold_batchnorm
from stereoq.quant.quantizer import (
    QuantRecipe,
    StereoQuantizer,
    graph_layers,
    resolve_precision,
)
from stereoq.quant.recipes import calibration_recipe, mixed_precision_path, qat_recipe
from stereoq.settings import load_config
from stereoq.stages import get_stage, run_stage

from .conftest import tiny_cfg

OVERRIDES = {"refinement.levels.3.offset.0": "int16", "head.aggregation.*": "float"}


@pytest.fixture(scope="module")
def exported() -> torch.fx.GraphModule:
    model = build_model(tiny_cfg().model)
    return export_graph(
        RawOutputs(fold_batchnorm(model)), model.head.num_candidates, model.size_multiple
    )


def test_layers_are_named_by_module_in_network_order(exported: torch.fx.GraphModule) -> None:
    layers = graph_layers(exported)
    assert layers[:3] == ["input", "neck.stem.0.0", "neck.stem.1.0"]
    assert {"neck.stage1.0", "neck", "head", "head.score", "head.regression", "refinement",
            "refinement.levels.0", "refinement.levels.3.offset.0"} <= set(layers)
    assert len(layers) == len(set(layers))


def test_patterns_resolve_and_the_last_match_wins(exported: torch.fx.GraphModule) -> None:
    layers = graph_layers(exported)
    chosen = resolve_precision(
        (("refinement.levels.*.offset.0", "int16"), ("refinement.levels.3.*", "float")),
        layers, "here",
    )
    assert chosen["refinement.levels.0.offset.0"] == "int16"
    assert chosen["refinement.levels.3.offset.0"] == "float"


def test_an_unknown_layer_is_a_one_line_error_naming_it(
    exported: torch.fx.GraphModule,
) -> None:
    quantizer = StereoQuantizer(QuantRecipe(precision=(("neck.stem.0", "int16"),)))
    with pytest.raises(StereoqError) as err:
        quantizer.annotate(exported)
    message = str(err.value)
    assert "'neck.stem.0'" in message and "stages.calibration.precision" in message
    assert "neck.stem.0.0" in message  # the closest names
    assert "\n" not in message and err.value.exit_code == 2


def test_a_bad_precision_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(StereoqError, match="stages.calibration.precision.head"):
        load_config("stereonet_synthetic", sets=["stages.calibration.precision={head: int4}"])


def test_later_stages_follow_the_budget_record(tiny_config: Path) -> None:
    sets = ["stages.calibration.budget={max_increase_px: 0.05}"]
    cfg = load_config(str(tiny_config), sets=sets)
    assert qat_recipe(cfg).precision == ()  # no record yet: calibration makes it
    path = mixed_precision_path(cfg)
    path.parent.mkdir(parents=True)
    record = {"budget": cfg.stages.calibration.budget.model_dump(),
              "raised": {"head.score": "int16"}}
    path.write_text(json.dumps(record))
    assert qat_recipe(cfg).precision == (("head.score", "int16"),)
    assert calibration_recipe(cfg, {}).precision == ()  # the search passes its own choices
    other = load_config(str(tiny_config), sets=["stages.calibration.budget={max_increase_px: 1}"])
    with pytest.raises(StereoqError, match="another stages.calibration.budget"):
        qat_recipe(other)
    assert qat_recipe(load_config(str(tiny_config))).precision == ()  # no budget: ignored


def stereoq(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "stereoq", *args], capture_output=True,
                          text=True, timeout=600, env=env)


def test_overrides_round_trip_through_calibration_int_infer_export_and_check(
    tiny_config: Path,
) -> None:
    data = yaml.safe_load(tiny_config.read_text())
    data["stages"]["calibration"]["precision"] = OVERRIDES
    tiny_config.write_text(yaml.safe_dump(data))
    cfg = load_config(str(tiny_config))
    torch.manual_seed(0)
    save_checkpoint(cfg.run_dir / "float" / "best.pt",
                    {"model": build_model(cfg.model).state_dict()})
    expected = {"refinement.levels.3.offset.0": "int16", "head.aggregation.0.0": "float",
                "head.aggregation.1.0": "float"}
    run_stage(cfg, "calibration")
    run_stage(cfg, "qat")
    run_stage(cfg, "int_infer")
    for stage in ("calibration", "qat", "int_infer"):
        report = json.loads(get_stage(cfg, stage).precision_report.read_text())
        assert report["overrides"] == expected, stage
        ops = {o["layer"]: o for o in report["ops"] if o["op"].startswith("conv")}
        assert ops["head.aggregation.0.0"]["precision"] == "float"
        assert ops["refinement.levels.3.offset.0"]["output"] == "int16"
        assert ops["neck.stem.0.0"]["precision"] == "int8"
    # the sensitivity report of the calibrated model: JSON and chart in its folder; layers
    # left float by the config have no quantizers to switch
    found = get_stage(cfg, "calibration").sensitivity(1)
    saved = json.loads(Path(found["json"]).read_text())
    assert saved["frames"] == 1 and Path(found["chart"]).is_file()
    names = {row["layer"] for row in saved["layers"]}
    assert "refinement.levels.3.offset.0" in names and "head.aggregation.0.0" not in names
    res = stereoq("check", "--stage", "int_infer", "--config", str(tiny_config))
    assert res.returncode == 0, res.stderr
    assert "precision overrides" in res.stdout and "head.aggregation.0.0" in res.stdout
    checked = json.loads((cfg.run_dir / "deploy" / "check_ort_int_infer.json").read_text())
    assert checked["overrides"] == expected
    # the float 3-D aggregation and the int16 offset conv leave the int8 kernels on ORT
    assert 0 < checked["integer_convolutions"] < checked["convolutions"]
    # ... and the export records them: runtimes sum them in float their own way
    metadata = read_metadata(default_path(cfg, "int_infer"))
    assert metadata is not None
    assert set(expected) <= set(metadata.float_convs)  # and the float head's last conv
    assert len(metadata.float_convs) == checked["convolutions"] - checked["integer_convolutions"]
    assert for_model(DEFAULT, metadata.float_convs).min_within_pct < DEFAULT.min_within_pct
