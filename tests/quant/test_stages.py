"""The quantized stages through the engine: missing inputs, and the whole chain (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stereoq.engine.checkpoint import save_checkpoint
from stereoq.errors import StereoqError
from stereoq.models.build import build_model
from stereoq.settings import load_config
from stereoq.stages import get_stage, run_stage


def stereoq(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "160"}
    return subprocess.run([sys.executable, "-m", "stereoq", *args], capture_output=True,
                          text=True, timeout=600, env=env)


@pytest.mark.parametrize(
    ("stage", "sets", "missing", "command"),
    [
        ("calibration", [], "float/best.pt", "stereoq train --stage float"),
        ("qat", [], "calibration/calibrated.pt", "stereoq train --stage calibration"),
        ("int_infer", [], "qat/best.pt", "stereoq train --stage qat"),
        ("int_infer", ["stages.int_infer.source=calibration"], "calibration/calibrated.pt",
         "stereoq train --stage calibration"),
    ],
)
def test_stage_refuses_to_start_without_its_input(
    tiny_config: Path, stage: str, sets: list[str], missing: str, command: str
) -> None:
    cfg = load_config(str(tiny_config), sets=sets)
    with pytest.raises(StereoqError) as err:
        run_stage(cfg, stage)
    message = str(err.value)
    assert missing in message and command in message
    assert "\n" not in message


def test_predict_of_a_missing_int_model_names_file_and_command(tiny_config: Path) -> None:
    cfg = load_config(str(tiny_config))
    expected = r"int_infer/model\.pt2.*stereoq train --stage int_infer"
    with pytest.raises(StereoqError, match=expected):
        get_stage(cfg, "int_infer").predictor()


def test_predict_all_lists_what_exists_and_names_what_is_missing(tiny_config: Path) -> None:
    cfg = load_config(str(tiny_config))
    torch.manual_seed(0)
    save_checkpoint(cfg.run_dir / "float" / "best.pt",
                    {"model": build_model(cfg.model).state_dict()})
    res = stereoq("predict", "--stage", "all", "--config", str(tiny_config))
    assert res.returncode == 0, res.stderr
    assert "skipped calibration" in res.stdout and "calibration/calibrated.pt" in res.stdout
    assert "skipped int_infer" in res.stdout
    results = json.loads((cfg.run_dir / "predict.json").read_text())["results"]
    assert list(results) == ["float"]


@pytest.mark.slow
def test_float_calibration_qat_int_infer_chain(tiny_config: Path) -> None:
    cfg = load_config(str(tiny_config))
    run_stage(cfg, "float")
    cal = run_stage(cfg, "calibration")
    assert cal["batches"] == 2 and cal["activation_ranges"] > 50
    run_stage(cfg, "qat")
    # resume continues the same QAT graph (state dict of the re-prepared graph + optimizer)
    cfg2 = load_config(str(tiny_config), sets=["stages.qat.epochs=2"])
    qat = run_stage(cfg2, "qat", resume=True)
    log = (cfg.run_dir / "qat" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2]
    assert qat["epochs"] == 2
    out = run_stage(cfg, "int_infer")
    # the integer program reproduces the QAT fake-quant model (to one int16 output step)
    assert out["within_one_step_pct"] >= 99.9

    for stage in ("calibration", "qat", "int_infer"):
        assert get_stage(cfg, stage).artifact().is_file()
        report = json.loads(get_stage(cfg, stage).precision_report.read_text())
        assert report["float_ops"] == [] and report["summary"]["int8"] > 0
    # predict --stage all: one row per stage, change against float, no torchao noise
    metrics = cfg.run_dir / "predict.json"
    res = stereoq("predict", "--stage", "all", "--config", str(tiny_config), "--json",
                  str(metrics))
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip() == ""
    assert "Failed to load" not in res.stdout and "register_constant" not in res.stdout
    assert "EPE vs float" in res.stdout
    assert not [s for s in ("calibration", "qat", "int_infer") if f"skipped {s}:" in res.stdout]
    results = json.loads(metrics.read_text())["results"]
    assert list(results) == ["float", "calibration", "qat", "int_infer"]
    for figures in results.values():
        assert figures["images"] == 4 and figures["epe"] == figures["epe"]  # not NaN
    assert abs(results["int_infer"]["epe"] - results["qat"]["epe"]) < 1e-3

    # the saved program runs without stereoq: only torch and its quantize/dequantize ops
    script = (
        "import sys, torch, torch.ao.quantization.fx._decomposed\n"
        f"ep = torch.export.load({str(get_stage(cfg, 'int_infer').artifact())!r})\n"
        "prev, offset = ep.module()(torch.zeros(1, 6, 64, 128))\n"
        "assert offset.shape == (1, 1, 64, 128) and prev.shape == (1, 1, 32, 64)\n"
        "assert not [m for m in sys.modules if m.startswith('stereoq')]\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=cfg.run_dir)
