"""examples/middlebury_eval.py: the motorcycle pair written in the Middlebury 2014 layout reads
back through the project's Middlebury reader unchanged."""

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from stereoq.data.benchmarks import find_entries, load_sample
from stereoq.data.calibration import read_calibration
from stereoq.data.pfm import read_pfm

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(EXAMPLES))  # as when run as a script: imports motorcycle.py
    spec = importlib.util.spec_from_file_location("middlebury_eval_example",
                                                  EXAMPLES / "middlebury_eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_motorcycle_scene_round_trips_through_the_middlebury_reader(tmp_path: Path,
                                                                    monkeypatch) -> None:
    skdata = pytest.importorskip("skimage.data")
    module = load_example(monkeypatch)

    scene = module.write_scene(tmp_path / "mb")
    assert sorted(p.name for p in scene.iterdir()) == ["calib.txt", "disp0.pfm", "im0.png",
                                                       "im1.png"]  # no made-up occlusion mask
    [entry] = find_entries("middlebury", tmp_path / "mb")
    assert entry.name == "motorcycle" and entry.noc is None and entry.disp.name == "disp0.pfm"

    calib = read_calibration(entry.calib)
    assert calib.focal_px == pytest.approx(994.978)
    assert (calib.cx_px, calib.cy_px) == pytest.approx((311.193, 254.877))
    assert calib.baseline_m == pytest.approx(0.193001)  # written in mm
    assert calib.doffs_px == pytest.approx(31.086)
    assert (calib.width, calib.height) == (741, 500)
    left, right, gt = skdata.stereo_motorcycle()
    known = np.isfinite(gt)
    assert calib.ndisp == int(np.ceil(gt[known].max())) + 1 == 61

    raw = read_pfm(entry.disp)  # inf stays inf in the file
    assert np.array_equal(np.isinf(raw), ~known) and (~known).sum() > 10_000
    sample = load_sample(entry)
    assert np.array_equal(sample["left"], left) and np.array_equal(sample["right"], right)
    assert np.array_equal(sample["disp"][known], gt[known].astype(np.float32))
    assert (sample["disp"][~known] == 0).all()  # inf -> invalid
    assert np.array_equal(sample["noc"], known)  # no mask: every pixel with ground truth
    assert sample["calib"]["ndisp"] == 61.0


@pytest.mark.slow
def test_without_a_trained_model_the_sgbm_row_still_prints(tiny_config: Path, tmp_path: Path,
                                                           monkeypatch, capsys) -> None:
    pytest.importorskip("skimage")
    monkeypatch.setenv("COLUMNS", "200")
    module = load_example(monkeypatch)
    out = tmp_path / "mb"
    assert module.main(["--config", str(tiny_config), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "skipped float" in stdout and "bad-2.0-noc %" in stdout
    results = json.loads((out / "predict.json").read_text())["results"]
    assert list(results) == ["sgbm"]
    sgbm = results["sgbm"]
    assert sgbm["benchmark"] == "middlebury" and sgbm["sgbm_num_disparities"] == [64]  # ndisp 61
    assert sgbm["bad-2.0-all"] < 20.0 and sgbm["avgerr-all"] < 3.0  # SGBM's known quality here
