"""``stereoq train`` end to end on the tiny config (subprocesses, single-threaded)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "160"}
    return subprocess.run([sys.executable, "-m", "stereoq", *args], capture_output=True,
                          text=True, timeout=300, env=env, cwd=cwd)


def one_line_error(res: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert res.returncode == code, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.slow
def test_train_float_writes_run_dir_and_prints_tables(tiny_config: Path, tmp_path: Path) -> None:
    res = run("train", "--config", str(tiny_config), "--epochs", "2", "--lr", "0.002",
              "--batch-size", "4")
    assert res.returncode == 0, res.stderr
    assert "epoch 2" in res.stdout and "val" in res.stdout and "EPE" in res.stdout
    run_dir = tmp_path / "runs" / "tiny" / "float"
    assert {p.name for p in run_dir.iterdir()} == {"last.pt", "best.pt", "log.jsonl",
                                                   "metrics.json"}
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert {"train_loss", "lr", "val_epe", "val_d1", "val_bad3"} <= set(records[0])
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["epochs"] == 2 and summary["best"]["images"] == 4

    res = run("train", "--config", str(tiny_config), "--epochs", "3", "--resume")
    assert res.returncode == 0, res.stderr
    assert "resumed from" in res.stdout and "after epoch 2" in res.stdout
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_bad_options_are_one_line(tiny_config: Path) -> None:
    one_line_error(run("train", "--stage", "bogus"), 2, "--stage")
    one_line_error(run("train", "--config", str(tiny_config), "--epochs", "0"), 2, "--epochs")
    one_line_error(run("train", "--config", str(tiny_config), "--stage", "int_infer",
                       "--lr", "0.1"), 2, "--lr", "does not train")
    one_line_error(run("train", "--config", str(tiny_config), "--resume"), 1, "last.pt",
                   "does not exist")


def test_resume_with_another_model_is_one_line(tiny_config: Path, tmp_path: Path) -> None:
    import torch

    from stereoq.engine.checkpoint import save_checkpoint
    from stereoq.models.build import build_model
    from stereoq.settings import load_config

    other = load_config(str(tiny_config), sets=["model.neck.out_channels=[4,8,8,16,16,8]"])
    last = save_checkpoint(tmp_path / "runs" / "tiny" / "float" / "last.pt",
                           {"model": build_model(other.model).state_dict(),
                            "optimizer": torch.optim.Adam([torch.zeros(1)]).state_dict()})
    res = run("train", "--config", str(tiny_config), "--resume")
    one_line_error(res, 1, f"error: checkpoint {last} holds another model",
                   "neck.stem.0.0.weight is 4x3x3x3 in the checkpoint but 8x3x3x3 in the model",
                   "more differences", "train without --resume")
