"""stereoq.atomic: outputs follow the umask; a failed write leaves no target and no temp file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from stereoq.atomic import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_written_files_get_0o666_less_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        written = [
            atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01"),
            atomic_write_text(tmp_path / "sub" / "b.txt", "text"),
            atomic_write_json(tmp_path / "c.json", {"x": 1}),
        ]
        with atomic_path(tmp_path / "d.pt") as tmp:
            torch.save({"w": torch.ones(2)}, tmp)
        with atomic_path(tmp_path / "e.pt2", keep_name=True) as tmp:
            assert tmp.name == "e.pt2"
            tmp.write_bytes(b"archive")
        written += [tmp_path / "d.pt", tmp_path / "e.pt2"]
    finally:
        os.umask(old)
    for path in written:
        assert _mode(path) == 0o666 & ~umask, path
    assert json.loads((tmp_path / "c.json").read_text()) == {"x": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.bin", "c.json", "d.pt", "e.pt2", "sub"]


@pytest.mark.parametrize("keep_name", [False, True])
def test_a_writer_that_raises_leaves_no_target_and_no_temp(
    tmp_path: Path, keep_name: bool
) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError, match="disk on fire"), \
            atomic_path(target, keep_name=keep_name) as tmp:
        tmp.write_bytes(b"half a fi")
        raise RuntimeError("disk on fire")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "out.txt", "old")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("ne")
        raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
