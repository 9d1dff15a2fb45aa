"""Staged outputs: writer-named temps, stale ones removed, live ones kept, folders swapped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stereoq import staging


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def live_pid():  # noqa: ANN201
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_pid_alive(dead_pid: int, live_pid: int) -> None:
    assert staging.pid_alive(live_pid) and not staging.pid_alive(dead_pid)


def test_stale_entries_of_dead_writers_go_and_others_stay(
    tmp_path: Path, dead_pid: int, live_pid: int
) -> None:
    target = tmp_path / "model.onnx"
    dead = tmp_path / f".model.{staging.owner(dead_pid)}.k2j4h5g6.onnx"
    dead_dir = tmp_path / f".model.{staging.owner(dead_pid)}.a1b2c3d4.onnx"
    live = tmp_path / f".model.{staging.owner(live_pid)}.zz99yy88.onnx"
    other_host = tmp_path / f".model.0123abcd-{dead_pid}.q1w2e3r4.onnx"
    unnamed = tmp_path / ".model.x1y2z3w4.onnx"  # tempfile's form: no owner, left alone
    other_target = tmp_path / f".model2.{staging.owner(dead_pid)}.k2j4h5g6.onnx"
    for path in (dead, live, other_host, unnamed, other_target):
        path.write_bytes(b"partial")
    dead_dir.mkdir()
    (dead_dir / "f").write_bytes(b"x")

    made = staging.new_file(target)

    assert made.name.startswith(f".model.{staging.owner()}.") and made.suffix == ".onnx"
    assert staging.remove_stale(target) == []  # our own file: a live writer's
    assert not dead.exists() and not dead_dir.exists()
    assert all(p.exists() for p in (made, live, other_host, unnamed, other_target))


def test_swap_dir_replaces_the_folder_whole(tmp_path: Path) -> None:
    target = tmp_path / "ort"
    target.mkdir()
    (target / "old.txt").write_text("old")
    staged = staging.new_dir(target)
    assert staged.name == "ort" and staged.parent.name.startswith(f".ort.{staging.owner()}.")
    (staged / "new.txt").write_text("new")
    staging.swap_dir(staged, target)
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["ort"]
    staged = staging.new_dir(tmp_path / "fresh")
    staging.swap_dir(staged, tmp_path / "fresh")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "ort"]
    staging.discard(staging.new_dir(target))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "ort"]


def test_crash_inside_a_two_rename_swap_is_undone(
    tmp_path: Path, dead_pid: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an atomic exchange, a kill between the renames leaves no target: the next
    writer puts the old complete folder back before staging its own."""
    target = tmp_path / "ort"
    entry = tmp_path / f".ort.{staging.owner(dead_pid)}.a1b2c3d4"
    for folder in (entry / staging.OLD_NAME, entry / "ort"):
        folder.mkdir(parents=True)
        (folder / "report.json").write_text(folder.name)

    staged = staging.new_dir(target)

    assert (target / "report.json").read_text() == staging.OLD_NAME
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["ort", staged.parent.name])
    monkeypatch.setattr(staging, "_exchange", lambda a, b: False)
    (staged / "new.txt").write_text("new")
    staging.swap_dir(staged, target)
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["ort"]


def test_swap_onto_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("a file")
    staged = staging.new_dir(tmp_path / "out")
    with pytest.raises(NotADirectoryError):
        staging.swap_dir(staged, tmp_path / "out")
    with pytest.raises(ValueError, match="not made by new_dir"):
        staging.swap_dir(staged, tmp_path / "other")
