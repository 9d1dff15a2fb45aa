"""``stereoq train`` end to end on the tiny config (subprocesses, single-threaded)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


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
    assert {p.name for p in run_dir.iterdir() if not p.name.startswith("events.")} == {
        "last.pt", "best.pt", "log.jsonl", "metrics.json"}  # events: TensorBoard's, if installed
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

    # Training again without --resume never replaces the run unless told so.
    one_line_error(run("train", "--config", str(tiny_config)), 2,
                   f"{run_dir} already holds a float run (last.pt after epoch 3)", "--resume",
                   "--overwrite")
    assert (run_dir / "log.jsonl").read_text().splitlines() == lines
    res = run("train", "--config", str(tiny_config), "--epochs", "1", "--overwrite")
    assert res.returncode == 0, res.stderr
    assert [json.loads(line)["epoch"]
            for line in (run_dir / "log.jsonl").read_text().splitlines()] == [1]


def test_bad_options_are_one_line(tiny_config: Path) -> None:
    one_line_error(run("train", "--stage", "bogus"), 2, "--stage")
    one_line_error(run("train", "--config", str(tiny_config), "--epochs", "0"), 2, "--epochs")
    one_line_error(run("train", "--config", str(tiny_config), "--stage", "int_infer",
                       "--lr", "0.1"), 2, "--lr", "does not train")
    one_line_error(run("train", "--config", str(tiny_config), "--resume"), 1, "last.pt",
                   "does not exist")
    one_line_error(run("train", "--config", str(tiny_config), "--resume", "--overwrite"), 2,
                   "--overwrite: not with --resume")


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is refused only without CUDA")
def test_fp16_without_cuda_is_one_line(tiny_config: Path, tmp_path: Path) -> None:
    one_line_error(run("train", "--config", str(tiny_config), "--set",
                       "stages.float.precision=fp16"), 2, "stages.float.precision", "use bf16")
    assert not (tmp_path / "runs").exists()


def test_resume_notes_say_which_options_apply() -> None:
    from stereoq.cli.train import TrainOptions, resume_notes

    assert resume_notes(TrainOptions(stage="float", lr=0.01)) == []  # not resuming
    assert resume_notes(TrainOptions(stage="float", resume=True)) == []  # nothing given
    (note,) = resume_notes(TrainOptions(stage="float", resume=True, lr=0.01))
    assert "--lr 0.01 applies from the next step" in note and "last.pt" in note
    notes = resume_notes(TrainOptions(
        stage="qat", resume=True, epochs=30, sets=[
            "stages.qat.scheduler.type=step", "stages.qat.optimizer.weight_decay=0.1",
            "stages.float.optimizer.lr=1", "data.num_workers=2",
        ],
    ))
    assert notes == [
        "--resume continues last.pt's weights, optimizer state and epoch count; --epochs 30, "
        "--set stages.qat.scheduler.type=step apply from the next step (the learning-rate "
        "schedule is recomputed from the current recipe)",
        "--resume restores the optimizer's weight decay and momentum from last.pt; "
        "--set stages.qat.optimizer.weight_decay=0.1 is ignored",
    ]


def test_resume_with_a_new_lr_prints_one_note(
    tiny_config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import stereoq.stages
    from stereoq.cli import main

    monkeypatch.setattr(stereoq.stages, "run_stage", lambda *a, **k: {"stage": "float"})
    args = ["stereoq", "train", "--config", str(tiny_config), "--resume", "--lr", "0.01"]
    monkeypatch.setattr(sys, "argv", args)
    last = tiny_config.parent / "runs" / "tiny" / "float" / "last.pt"
    for exists in (False, True):
        if exists:
            last.parent.mkdir(parents=True)
            last.write_bytes(b"")
        with pytest.raises(SystemExit) as exc:
            main()
        assert exc.value.code in (0, None)
        notes = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("note:")]
        # Without last.pt the loop's own error explains; the note would only add noise.
        assert len(notes) == exists and all("--lr 0.01 applies" in n for n in notes), notes


@pytest.mark.slow
def test_resume_takes_the_new_lr_as_the_note_says(tiny_config: Path, tmp_path: Path) -> None:
    constant = ("--set", "stages.float.scheduler.type=constant")
    res = run("train", "--config", str(tiny_config), "--epochs", "1", "--lr", "0.002", *constant)
    assert res.returncode == 0, res.stderr
    res = run("train", "--config", str(tiny_config), "--epochs", "2", "--lr", "0.01", "--resume",
              *constant)
    assert res.returncode == 0, res.stderr
    assert "note: --resume continues last.pt's weights" in res.stderr and "--lr 0.01," in res.stderr
    log = tmp_path / "runs" / "tiny" / "float" / "log.jsonl"
    assert [json.loads(line)["lr"] for line in log.read_text().splitlines()] == [0.002, 0.01]


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


def test_init_from_errors_are_one_line(tiny_config, tmp_path, monkeypatch, capsys) -> None:
    """In process: a missing --init-from file and --init-from on a non-float stage."""
    from stereoq.cli import main

    for extra, needle in ((["--init-from", str(tmp_path / "none.pt")], "none.pt: no such file"),
                          (["--stage", "qat", "--init-from", str(tiny_config)],
                           "stage qat does not take initial weights")):
        monkeypatch.setattr(sys, "argv", ["stereoq", "train", "-c", str(tiny_config), *extra])
        with pytest.raises(SystemExit) as exc:
            main()
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert exc.value.code == 2 and len(lines) == 1 and needle in lines[0], err
