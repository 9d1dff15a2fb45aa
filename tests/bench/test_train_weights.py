"""bench/train_weights.py trains a shipped model again from its card's recipe: a tiny run ends
in a model.pt the shipped config loads strictly, and the same command again resumes (nothing
finished is redone)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stereoq import weights
from stereoq.models.build import build_model
from stereoq.weights import recipe as recipes

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "train_weights.py"
NAME = "light-scenes"  # one run: the quickest recipe
TINY = ["--count", "4", "--set", "stages.float.epochs=1", "--set", "data.synthetic.val_count=2",
        "--set", "data.num_workers=0", "--set", "stages.float.batch_size=2"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_a_tiny_recipe_run_gives_a_shippable_model_and_resumes(tmp_path: Path) -> None:
    done = _run(NAME, "--out", str(tmp_path), *TINY)
    assert done.returncode == 0, done.stderr
    final = recipes.recipe(NAME).final.name
    model = build_model(weights.config(NAME).model)
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    model.load_state_dict(state, strict=True)
    best = torch.load(tmp_path / "runs" / final / "float" / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(state[k], best[k]) for k in best)
    report = json.loads((tmp_path / "train_weights.json").read_text())
    assert list(report["runs"]) == [run.name for run in recipes.recipe(NAME).runs]
    assert report["runs"][final]["epochs"] == 1 and report["count"] == 4
    log = tmp_path / "runs" / final / "float" / "log.jsonl"
    before = log.stat().st_mtime_ns

    again = _run(NAME, "--out", str(tmp_path), *TINY)
    assert again.returncode == 0, again.stderr
    assert "train scenes already packed" in again.stdout
    assert f"run {final} already finished" in again.stdout
    assert log.stat().st_mtime_ns == before

    # Another recipe's scenes in the same folder are refused, not trained on.
    other = _run(NAME, "--out", str(tmp_path), *TINY[2:], "--count", "5")
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert other.stderr.strip().splitlines()[-1].endswith(
        "train_lmdb holds 4 scenes, this recipe packs 5: use another --out (or delete it)")


def test_an_unknown_model_or_a_bad_count_is_a_one_line_error(tmp_path: Path) -> None:
    done = _run("no-such-model", "--out", str(tmp_path / "x"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "unknown shipped model 'no-such-model'" in done.stderr.strip().splitlines()[-1]
    bad = _run(NAME, "--out", str(tmp_path / "y"), "--count", "0")
    assert bad.returncode == 2 and "--count must be at least 1" in bad.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
