"""TensorBoard scalars beside log.jsonl: written when tensorboard is installed, read back with
tensorboard's own reader, hidden again where --resume drops their epochs."""

from __future__ import annotations

import json
import time

import pytest

from stereoq.engine.tensorboard_log import TensorBoardLog, tag
from stereoq.settings import load_config
from stereoq.stages import run_stage

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="tensorboard is not installed (optional: stereoq[tensorboard])",
)


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag in ``folder``'s event files -> (step, value), as TensorBoard shows them."""
    acc = event_accumulator.EventAccumulator(str(folder))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_one_epoch_writes_the_log_records_scalars(tiny_config) -> None:
    cfg = load_config(str(tiny_config))
    run_stage(cfg, "float")
    folder = cfg.run_dir / "float"
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1
    record = json.loads((folder / "log.jsonl").read_text())
    found = scalars(folder)
    assert {"train/loss", "val/epe", "val/d1", "lr", "train/samples_per_s"} <= set(found)
    assert found["train/loss"][0] == (1, pytest.approx(record["train_loss"]))
    assert found["val/epe"][0] == (1, pytest.approx(record["val_epe"]))


def test_switched_off_writes_nothing(tiny_config) -> None:
    cfg = load_config(str(tiny_config), sets=["stages.float.log_tensorboard=false"])
    run_stage(cfg, "float")
    assert not list((cfg.run_dir / "float").glob("events.out.tfevents.*"))


def next_second() -> None:
    """Wait for the clock's next second: event files are named, and read in order, by the second
    they were opened, then by a per-process counter that does not sort as a number (9 > 10)."""
    start = int(time.time())
    while int(time.time()) == start:
        time.sleep(0.02)


def test_a_resumed_run_hides_the_epochs_it_repeats(tmp_path) -> None:
    with TensorBoardLog(tmp_path) as first:  # a run interrupted after epoch 3's events
        for epoch in (1, 2, 3):
            first.add({"epoch": epoch, "train_loss": 10.0 * epoch})
    next_second()  # a resume is a later process
    with TensorBoardLog(tmp_path, epochs_done=2) as resumed:  # last.pt was epoch 2's
        resumed.add({"epoch": 3, "train_loss": 3.5})
    assert scalars(tmp_path)["train/loss"] == [(1, 10.0), (2, 20.0), (3, 3.5)]


def test_a_fresh_run_replaces_the_previous_runs_events(tmp_path) -> None:
    with TensorBoardLog(tmp_path) as first:
        for epoch in (1, 2, 3):
            first.add({"epoch": epoch, "train_loss": 10.0 * epoch})
    (tmp_path / "log.jsonl").write_text("{}\n")  # not an event file: stays
    with TensorBoardLog(tmp_path) as fresh:  # the same second: ordering by name cannot help
        fresh.add({"epoch": 1, "train_loss": 7.0})
    assert scalars(tmp_path)["train/loss"] == [(1, 7.0)]
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1
    assert (tmp_path / "log.jsonl").exists()


def test_tags_group_by_split() -> None:
    assert [tag(k) for k in ("train_loss", "val_epe", "lr", "time_s")] == [
        "train/loss", "val/epe", "lr", "time_s"]
