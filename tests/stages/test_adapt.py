"""The adapt stage: unlabeled pairs, bad input as one line, exact resume, and the label-free
chain adapt -> calibration -> distilled QAT -> int_infer -> infer with no ground truth."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from stereoq.data import synthetic
from stereoq.data.images import write_png
from stereoq.data.pfm import write_pfm
from stereoq.engine.checkpoint import load_checkpoint, save_checkpoint
from stereoq.engine.report import Reporter
from stereoq.models.build import build_model
from stereoq.settings import load_config
from stereoq.stages import get_stage, run_stage


def write_pairs(folder: Path, count: int, size: tuple[int, int] = (80, 144),
                with_gt: bool = False) -> Path:
    for i in range(count):
        left, right, disp = synthetic.render_pair(7, i, *size, 20.0)
        write_png(folder / f"{i:03d}_left.png", left)
        write_png(folder / f"{i:03d}_right.png", right)
        if with_gt:
            write_pfm(folder / f"{i:03d}_disp.pfm", disp)
    return folder


@pytest.fixture
def adapt_config(tiny_config: Path, tmp_path: Path) -> Path:
    """The tiny config adapting an untrained (seeded) float model to 3 pairs, 1 held out."""
    data = yaml.safe_load(tiny_config.read_text())
    data["stages"]["adapt"] = {
        "pairs": str(tmp_path / "pairs"), "crop_size": [64, 128], "epochs": 2, "batch_size": 2,
        "crops_per_pair": 2, "val_fraction": 0.34, "proxy": {"num_disparities": 32},
    }
    tiny_config.write_text(yaml.safe_dump(data))
    cfg = load_config(str(tiny_config))
    torch.manual_seed(0)
    save_checkpoint(get_stage(cfg, "float").artifact(),
                    {"model": build_model(cfg.model).state_dict()})
    return tiny_config


def cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    from stereoq.cli import main

    monkeypatch.setattr(sys, "argv", ["stereoq", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return exc.value.code or 0


@pytest.mark.parametrize(
    ("make", "sets", "code", "expected"),
    [
        (lambda d: d.mkdir(), [], 1, "stages.adapt.pairs {d}: no stereo pair found"),
        (lambda d: None, [], 1, "stages.adapt.pairs {d}: no such file or folder"),
        (lambda d: write_pairs(d, 1, (64, 96)), [], 1,
         "pair 000: 96x64 is smaller than the training crop (stages.adapt.crop_size) 128x64"),
        (lambda d: write_pairs(d, 1), ["stages.adapt.crop_size=[60,128]"], 2,
         "stages.adapt.crop_size: 60x128 must be multiples of 16"),
        (lambda d: write_pairs(d, 1) and write_png(
            d / "000_right.png", np.zeros((80, 160, 3), np.uint8)), [], 1,
         "pair 000: left {d}/000_left.png is 144x80 but right {d}/000_right.png is 160x80"),
        (lambda d: None, ["stages.adapt.pairs=null"], 2, "stages.adapt.pairs: not set"),
    ],
    ids=["empty-folder", "missing-folder", "too-small", "bad-crop", "sizes-differ", "unset"],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(
    adapt_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], make: Any, sets: list[str], code: int, expected: str,
) -> None:
    folder = tmp_path / "pairs"
    make(folder)
    args = [arg for item in sets for arg in ("--set", item)]
    assert cli(monkeypatch, "train", "--stage", "adapt", "--config", str(adapt_config),
               *args) == code
    err = " ".join(capsys.readouterr().err.split())
    assert expected.format(d=folder) in err
    assert err.count("error") == 1


def test_pairs_of_any_size_make_batches_of_one_size(adapt_config: Path, tmp_path: Path) -> None:
    write_pairs(tmp_path / "pairs" / "a", 2, (80, 144))
    write_pairs(tmp_path / "pairs" / "b", 1, (100, 136))
    stage = get_stage(load_config(str(adapt_config)), "adapt")
    train, val = stage.pairs
    assert len(train) == 2 and len(val) == 1  # 3 pairs, 0.34 held out
    crops = stage.data("train", crop=True)
    assert len(crops) == 2 * 2 and crops[0]["left"].shape == (3, 64, 128)
    assert crops[0]["proxy"].shape == (1, 64, 128) and crops[0]["disp"].max() == 0
    full = stage.data("train", crop=False)  # calibration: the window every pair holds
    sizes = {tuple(full[i]["left"].shape[-2:]) for i in range(len(full))}
    heights, widths = zip(*(stage.sizes[pair] for pair in train), strict=True)
    assert sizes == {(min(heights) // 16 * 16, min(widths) // 16 * 16)}
    assert tuple(stage.data("val", crop=False)[0]["left"].shape[-2:]) == stage.sizes[val[0]]


class StopAfterFirstEpoch(Reporter):
    def epoch(self, record: dict[str, Any]) -> None:
        raise KeyboardInterrupt


def test_adapt_resumes_where_an_uninterrupted_run_ends(adapt_config: Path, tmp_path: Path
                                                       ) -> None:
    write_pairs(tmp_path / "pairs", 3, with_gt=True)
    whole = load_config(str(adapt_config))
    out = run_stage(whole, "adapt")
    log = [json.loads(line) for line in (whole.run_dir / "adapt" / "log.jsonl").open()]
    # chosen by the label-free loss; the folder's ground truth is only reported
    assert out["best_epoch"] == 1 + int(np.argmin([r["val_loss"] for r in log]))
    assert all(math.isfinite(r["val_epe"]) and math.isfinite(r["val_loss"]) for r in log)
    assert len(list((whole.run_dir / "adapt" / "proxy").glob("*.png"))) == 3

    broken = load_config(str(adapt_config), sets=[f"output_dir={tmp_path / 'second'}"])
    save_checkpoint(get_stage(broken, "float").artifact(),
                    load_checkpoint(get_stage(whole, "float").artifact()))
    with pytest.raises(KeyboardInterrupt):
        run_stage(broken, "adapt", reporter=StopAfterFirstEpoch())
    resumed = run_stage(broken, "adapt", resume=True)
    a = load_checkpoint(whole.run_dir / "adapt" / "last.pt")["model"]
    b = load_checkpoint(broken.run_dir / "adapt" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["best"] == out["best"]


@pytest.mark.slow
def test_label_free_chain_from_pairs_to_depth_maps(
    adapt_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pairs = write_pairs(tmp_path / "pairs", 3)
    config = str(adapt_config)
    sets = ["stages.calibration.source=adapt", "stages.qat.targets=distill"]
    cfg = load_config(config, sets=sets)
    adapted = run_stage(cfg, "adapt")
    assert math.isnan(adapted["best"]["epe"])  # no ground truth anywhere
    calibrated = run_stage(cfg, "calibration")
    assert calibrated["source"] == "adapt"
    qat = run_stage(cfg, "qat")
    assert math.isfinite(qat["best"]["loss"]) and math.isnan(qat["best"]["epe"])
    run_stage(cfg, "int_infer")
    args = [arg for item in sets for arg in ("--set", item)]
    out = tmp_path / "depth"
    assert cli(monkeypatch, "infer", "--stage", "int_infer", "--config", config, *args,
               "--imgl", str(pairs), "--baseline", "0.1", "--f", "100",
               "--save-path", str(out)) == 0
    assert len(list(out.rglob("disparity.pfm"))) == 3


def test_a_label_free_budget_is_measured_against_the_float_model_on_the_pairs(
    adapt_config: Path, tmp_path: Path
) -> None:
    pairs = write_pairs(tmp_path / "pairs", 2)
    left, right, _ = synthetic.render_pair(7, 5, 96, 176, 20.0)  # a third pair, larger
    write_png(pairs / "009_left.png", left)
    write_png(pairs / "009_right.png", right)
    budget = "{max_increase_px: 0, frames: 5, max_layers: 2, cost: macs}"
    cfg = load_config(str(adapt_config), sets=[
        "stages.calibration.source=adapt", "stages.qat.targets=distill",
        "stages.adapt.val_fraction=0", f"stages.calibration.budget={budget}"])
    adapt = get_stage(cfg, "adapt")
    torch.manual_seed(1)  # an adapted model that is not the float one
    save_checkpoint(adapt.artifact(), {"model": build_model(cfg.model).state_dict()})
    summary = run_stage(cfg, "calibration")
    record = json.loads((cfg.run_dir / "calibration" / "mixed_precision.json").read_text())
    assert record["against"] == "float_model"
    assert record["frames"] == 3  # the three pairs (the generated validation set has 4)
    assert abs(record["float_epe_px"]) < 1e-4  # the float model against itself
    assert record["default_epe_px"] > 10 * abs(record["float_epe_px"])  # int8 moves it
    assert len(record["raised"]) == 2  # an unreachable budget raises max_layers
    assert record["final_epe_px"] < record["default_epe_px"]
    assert "default scheme vs float px" in summary and "float EPE px" not in summary
    # the sensitivity report of that model is judged the same way, on the pairs
    report = get_stage(cfg, "calibration").sensitivity(2)
    assert report["against"] == "float_model" and report["frames"] == 2
    assert (report["height"], report["width"]) == (80, 144)  # the pairs' common window
    assert abs(report["float_epe_px"]) < 1e-4 < report["quantized_epe_px"]


@pytest.mark.parametrize(
    ("sets", "error"),
    [
        (["stages.calibration.source=adapt"], "give budget.max_increase_px"),
        (["stages.calibration.budget.against=float_model"], "give budget.max_increase_px"),
        (["stages.calibration.source=adapt",
          "stages.calibration.budget.against=ground_truth"], None),
    ],
    ids=["adapt-auto", "float-model", "adapt-ground-truth"],
)
def test_a_relative_budget_needs_ground_truth(
    adapt_config: Path, sets: list[str], error: str | None
) -> None:
    from stereoq.errors import StereoqError

    all_sets = ["stages.qat.targets=distill",
                "stages.calibration.budget={max_increase_pct: 1}", *sets]
    if error is None:
        cfg = load_config(str(adapt_config), sets=all_sets)
        assert cfg.stages.calibration.budget.reference("adapt") == "ground_truth"
    else:
        with pytest.raises(StereoqError, match=error):
            load_config(str(adapt_config), sets=all_sets)
