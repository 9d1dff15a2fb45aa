"""bench/generator_compare.py: both generators' models scored on the real pair as the network
gives it and as `stereoq infer` writes it (refined)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stereoq.data.images import read_rgb
from stereoq.data.pfm import read_pfm
from stereoq.settings import load_config

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples"))
import motorcycle  # noqa: E402

SCRIPT = ROOT / "bench" / "generator_compare.py"
TINY = ["--set", "stages.float.epochs=1", "--set", "data.synthetic.train_count=4",
        "--set", "data.synthetic.val_count=2", "--set", "stages.float.batch_size=2",
        "--set", "stages.float.scheduler.warmup_epochs=0"]


@pytest.mark.slow
def test_each_model_is_scored_alone_and_refined_on_the_real_pair(tmp_path: Path) -> None:
    pytest.importorskip("skimage")
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), *TINY],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "generator_compare.json").read_text())
    moto = report["motorcycle"]
    assert set(moto) == {"planes/network", "planes/refined", "scenes/network",
                         "scenes/refined", "sgbm"}
    _, _, gt = motorcycle.load_motorcycle()
    maxdisp = load_config(None).model.maxdisp
    for kind in ("planes", "scenes"):
        # The refined figure is infer's own output; the network's is another disparity.
        written = read_pfm(tmp_path / f"motorcycle_{kind}" / "infer" / "disparity.pfm")
        assert moto[f"{kind}/refined"] == pytest.approx(motorcycle.score(written, gt, maxdisp))
        assert moto[f"{kind}/network"]["epe"] != pytest.approx(moto[f"{kind}/refined"]["epe"])
    for form in ("network", "refined"):
        cut = report["motorcycle_reduction"][form]
        old, new = moto[f"planes/{form}"], moto[f"scenes/{form}"]
        assert cut["epe"] == pytest.approx(1.0 - new["epe"] / old["epe"])
        assert cut["bad2"] == pytest.approx(1.0 - new["bad2"] / old["bad2"])
    assert set(report["val"]) == {f"{m}/{d}" for m in ("planes", "scenes", "sgbm")
                                  for d in ("planes", "scenes")}
    # Ground truth column, then both forms of both models and SGBM: six panels across.
    picture = read_rgb(tmp_path / "motorcycle_errors.png")
    assert picture.shape[1] >= 6 * gt.shape[1]


@pytest.mark.parametrize(("args", "message"), [
    (["--skip-train"], "--skip-train: no trained run at "),
    (["--set", "stages.float.epochs=0"], "stages.float.epochs"),
])
def test_a_missing_run_or_a_bad_setting_is_a_one_line_error(
    tmp_path: Path, args: list[str], message: str
) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "generator_compare.json").exists()
