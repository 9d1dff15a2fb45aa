"""Deployments are judged on what a user sees: healthy ones pass, broken ones fail, naming why."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from stereoq.deploy.acceptance import (
    DEFAULT,
    FLOAT_CONVS,
    OWN_ROUNDING,
    DisparityComparison,
    Thresholds,
    for_model,
)

from .conftest import DEPLOY_TINY
from .corruptions import CORRUPTIONS, corrupt_file

MAXDISP = 64.0


def gt_and_pred(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gt = rng.uniform(1, 40, (1, 1, 32, 64)).astype(np.float32)
    return gt, gt + rng.normal(0, 2, gt.shape).astype(np.float32)


def test_identical_disparities_are_accepted() -> None:
    gt, pred = gt_and_pred()
    c = DisparityComparison(MAXDISP)
    c.update(pred, pred.copy(), gt)
    result = c.result()
    assert result.ok and result.within_pct == 100.0 and result.max_abs_px == 0.0
    assert result.deployed["epe"] == result.reference["epe"]


def test_one_lsb_flips_on_a_few_pixels_are_accepted() -> None:
    gt, pred = gt_and_pred()
    deployed = pred.copy()
    deployed.reshape(-1)[::200] += 0.4  # 0.5 % of pixels, a fraction of a pixel each
    c = DisparityComparison(MAXDISP)
    c.update(deployed, pred, gt)
    assert c.result().ok


def test_pixels_off_by_more_than_1px_fail_past_one_percent() -> None:
    gt, pred = gt_and_pred()
    deployed = pred.copy()
    deployed.reshape(-1)[::32] += 5.0  # 64 of 2048 pixels
    c = DisparityComparison(MAXDISP)
    c.update(deployed, pred, None)  # no ground truth: the pixel criterion alone
    result = c.result()
    assert not result.ok and result.deployed is None
    assert result.within_pct == pytest.approx(100 * (1 - 64 / 2048))
    (problem,) = result.problems
    assert "96.88% of disparity pixels within 1 px" in problem and "max difference 5 px" in problem


def test_a_uniform_shift_under_1px_fails_on_epe() -> None:
    gt, pred = gt_and_pred()
    c = DisparityComparison(MAXDISP, Thresholds())
    c.update(pred + 0.9, pred, gt)
    result = c.result()
    assert result.within_pct == 100.0
    assert any(p.startswith("EPE ") for p in result.problems), result.problems


def test_nan_is_never_within_tolerance() -> None:
    gt, pred = gt_and_pred()
    deployed = pred.copy()
    deployed[..., :16, :] = np.nan
    c = DisparityComparison(MAXDISP)
    c.update(deployed, pred, gt)
    result = c.result()
    assert not result.ok and result.within_pct == 50.0 and result.max_abs_px == float("inf")


def test_models_with_float_convolutions_are_judged_as_runtimes_that_round_their_own_way(
) -> None:
    assert for_model(DEFAULT, []) is DEFAULT
    assert for_model(OWN_ROUNDING, ["head.score"]) is OWN_ROUNDING
    mixed = for_model(DEFAULT, ["neck.stage1.0.shortcut.0", "neck.stage2.0.shortcut.0"])
    assert OWN_ROUNDING.min_within_pct < mixed.min_within_pct == FLOAT_CONVS.min_within_pct
    assert FLOAT_CONVS.min_within_pct < DEFAULT.min_within_pct
    assert "2 convolution(s)" in mixed.basis
    gt, pred = gt_and_pred()
    flipped = pred.copy()
    flipped.reshape(-1)[::50] += 1.5  # 2 % of pixels moved past 1 px, as carried flips do
    broken = pred.copy()
    broken.reshape(-1)[::16] += 1.5  # 6.25 %: a dropped bias in a deep network
    verdicts = {}
    for name, deployed in (("flipped", flipped), ("broken", broken)):
        for label, thresholds in (("default", DEFAULT), ("mixed", mixed)):
            c = DisparityComparison(MAXDISP, thresholds)
            c.update(deployed, pred, gt)
            verdicts[name, label] = c.result()
    assert not verdicts["flipped", "default"].ok and verdicts["flipped", "mixed"].ok
    assert not verdicts["broken", "default"].ok and not verdicts["broken", "mixed"].ok
    assert verdicts["flipped", "mixed"].thresholds["basis"] == mixed.basis


@pytest.fixture(scope="module")
def trained_int(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained a little (a seeded untrained one outputs nearly constant
    disparity, which no corruption would move), calibrated and converted to int_infer."""
    import torch

    from stereoq.settings import load_config
    from stereoq.stages import run_stage

    root = tmp_path_factory.mktemp("acceptance")
    data = {
        **DEPLOY_TINY,
        "output_dir": str(root / "runs"),
        "data": {**DEPLOY_TINY["data"],
                 "synthetic": {**DEPLOY_TINY["data"]["synthetic"], "train_count": 16,
                               "val_count": 2}},
        "stages": {"float": {"epochs": 6, "batch_size": 2},
                   "calibration": {"batches": 2, "batch_size": 1, "bins": 256},
                   "int_infer": {"source": "calibration"}},
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(str(path))
    torch.manual_seed(0)
    for stage in ("float", "calibration", "int_infer"):
        run_stage(cfg, stage)
    return path


def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        *args: str) -> tuple[int, list[str]]:
    """Run the console script in this process; -> exit code and stderr's lines."""
    from stereoq.cli import main

    monkeypatch.setattr(sys, "argv", ["stereoq", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    return exc.value.code or 0, lines


@pytest.mark.slow
@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_broken_export_fails_naming_what_is_off(
    trained_int: Path, corruption: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import stereoq.deploy.onnx_export as onnx_export

    exported = onnx_export.to_onnx

    def broken_exporter(graph, example, path, opset=onnx_export.OPSET):  # noqa: ANN001, ANN202
        program = exported(graph, example, path, opset)
        corrupt_file(str(path), corruption)
        return program

    monkeypatch.setattr(onnx_export, "to_onnx", broken_exporter)
    code, lines = cli(monkeypatch, capsys, "export", "--stage", "int_infer",
                      "--config", str(trained_int), "--output", str(trained_int.parent / "x.onnx"))
    assert code == 1 and len(lines) == 1, lines
    assert "departs from PyTorch's model" in lines[0]
    assert "disparity pixels within 1 px" in lines[0] or "EPE" in lines[0]
    assert "first quantized tensor that departs" in lines[0]
    assert not (trained_int.parent / "x.onnx").exists()


@pytest.mark.slow
def test_healthy_export_and_compile_pass_and_broken_artifacts_are_not_installed(
    trained_int: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    from stereoq.deploy.onnx_export import default_path
    from stereoq.settings import load_config

    cfg = load_config(str(trained_int))
    code, lines = cli(monkeypatch, capsys, "export", "--config", str(trained_int))
    assert code == 0, lines
    report = json.loads(default_path(cfg, "int_infer").with_suffix(".export.json").read_text())
    assert report["acceptance"]["ok"] and report["acceptance"]["within_pct"] >= 99.0

    args = ("compile", "--config", str(trained_int), "--runs", "1", "--warmup", "0",
            "--threads", "1", "--validate")
    code, lines = cli(monkeypatch, capsys, *args)
    assert code == 0, lines
    installed = cfg.run_dir / "deploy" / "ort"
    good = (installed / "model.onnx").read_bytes()
    validation = json.loads((installed / "report.json").read_text())["validation"]
    assert validation["ok"]
    assert validation["acceptance"]["thresholds"]["min_within_pct"] == 99.0  # ORT: the default

    # One corruption: each kind's detection is the export test's (the same acceptance check);
    # here, that compile installs nothing it failed to validate.
    source = default_path(cfg, "int_infer")
    corrupt_file(str(source), "wrong_scale")  # newer than the run: compile builds from it
    code, lines = cli(monkeypatch, capsys, *args)
    assert code == 1 and len(lines) == 1, lines
    assert "departs from PyTorch's int_infer model" in lines[0] and "not installed" in lines[0]
    assert (installed / "model.onnx").read_bytes() == good  # the healthy one stays
    assert sorted(p.name for p in installed.parent.iterdir() if p.name.startswith(".")) == []
