"""Reading SceneFlow's raw layout: list files, PNG frames, PFM disparity, bad input."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from stereoq.data.datasets import SceneFlowStereo
from stereoq.data.pfm import read_pfm
from stereoq.data.sceneflow import load_entries, read_list
from stereoq.errors import StereoqError


def test_reads_samples_as_distributed(sceneflow_root: Path) -> None:
    ds = SceneFlowStereo(sceneflow_root, "train")
    assert len(ds) == 4
    for i in range(len(ds)):
        entry = ds.entries[i]
        sample = ds.raw(i)
        bgr = cv2.imread(str(sceneflow_root / entry.left))
        assert np.array_equal(sample["left"], bgr[..., ::-1])
        assert sample["right"].shape == sample["left"].shape == (48, 80, 3)
        expected = read_pfm(sceneflow_root / entry.disp)
        finite = np.isfinite(expected)
        assert np.array_equal(sample["disp"][finite], expected[finite])
        assert (sample["disp"][~finite] == 0).all()
        assert sample["name"] == str(Path(entry.left).with_suffix(""))
    # Sample 1 carries Middlebury inf (unknown) in its PFM: invalid -> 0.
    assert (ds.raw(1)["disp"][:3, :5] == 0).all()
    assert len(SceneFlowStereo(sceneflow_root, "test")) == 2


def test_list_format_errors(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("a.png b.png c.pfm\n\n# note\n a.png  b.png\tc.pfm \n")
    entries = read_list(path)
    assert [e.line for e in entries] == [1, 4] and entries[1].disp == "c.pfm"
    path.write_text("a.png b.png c.pfm\na.png b.png\n")
    with pytest.raises(StereoqError, match=r"list.txt line 2: .*got 2 fields"):
        read_list(path)


def test_missing_root_list_and_files(sceneflow_root: Path, tmp_path: Path) -> None:
    with pytest.raises(StereoqError, match="nowhere: no such directory"):
        load_entries(tmp_path / "nowhere", "train")
    with pytest.raises(StereoqError, match="other.txt: no such file"):
        load_entries(sceneflow_root, "train", sceneflow_root / "other.txt")
    entries = read_list(sceneflow_root / "SceneFlow_finalpass_train.txt")
    for rel in (entries[0].left, entries[1].disp, entries[2].right, entries[2].disp):
        (sceneflow_root / rel).unlink()
    with pytest.raises(StereoqError) as err:
        load_entries(sceneflow_root, "train")
    msg = str(err.value)
    assert "3 of 4 lines name missing files" in msg
    assert entries[0].left in msg and "and 1 more" in msg and "\n" not in msg


def test_unreadable_files_and_size_mismatch_name_the_file(sceneflow_root: Path) -> None:
    ds = SceneFlowStereo(sceneflow_root, "train")
    e0, e1, e2 = ds.entries[:3]
    (sceneflow_root / e0.right).write_bytes(b"not a png")
    with pytest.raises(StereoqError, match=f"{e0.right}: cannot decode"):
        ds.raw(0)
    (sceneflow_root / e1.disp).write_bytes(b"Pf\n80 48\n-1.0\n" + b"\0" * 100)
    with pytest.raises(StereoqError, match=f"{e1.disp}: truncated"):
        ds.raw(1)
    small = np.zeros((40, 80, 3), np.uint8)
    cv2.imwrite(str(sceneflow_root / e2.right), small)
    with pytest.raises(StereoqError, match=rf"{e2.left} .*sizes differ .*right 40x80"):
        ds.raw(2)
