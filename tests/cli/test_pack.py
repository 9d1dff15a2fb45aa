"""``stereoq pack`` end to end: synthetic and SceneFlow sources, summary, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stereoq.data.datasets import LmdbStereo
from stereoq.data.pfm import write_pfm
from stereoq.data.sceneflow import write_tree
from stereoq.data.synthetic import split_scenes


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stereoq", "pack", *args], capture_output=True, text=True,
        timeout=300,
    )


def _one_line_error(res: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert res.returncode == code, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_pack_synthetic_then_refuse_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    args = ("--source", "synthetic", "--split-name", "test", "--count", "5", "--height", "48",
            "--width", "64", "--max-disp", "12", "--num-workers", "0", "--target-data-dir",
            str(out))
    res = run(*args)
    assert res.returncode == 0, res.stderr
    assert "samples/s" in res.stdout and "bytes/sample" in res.stdout
    summary = json.loads((out / "test_lmdb.pack.json").read_text())
    assert summary["samples"] == 5 and summary["disp_encoding"] == "png16"
    assert summary["bytes_per_sample"] < summary["reference_float32_bytes_per_sample"]
    ds = LmdbStereo(out / "test_lmdb")
    assert len(ds) == 5 and ds.raw(0)["left"].shape == (48, 64, 3)
    assert ds.meta["source"]["index_offset"] > 0  # the val index space
    _one_line_error(run(*args), 2, "holds 5 samples", "--overwrite")


def test_pack_sceneflow_subset_and_bad_input(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "sf", {s: split_scenes(s, n, 32, 48, 8.0)
                                        for s, n in (("train", 3), ("test", 1))})
    out = tmp_path / "out"
    res = run("--src-data-dir", str(root), "--split-name", "train", "--num-samples", "2",
              "--num-workers", "0", "--target-data-dir", str(out), "--disp-encoding", "float32")
    assert res.returncode == 0, res.stderr
    assert len(LmdbStereo(out / "train_lmdb")) == 2
    # A disparity map of the wrong size: one line naming the sample, nothing complete left.
    entry = (root / "SceneFlow_finalpass_test.txt").read_text().split()
    write_pfm(root / entry[2], np.ones((30, 48), np.float32))
    res = run("--src-data-dir", str(root), "--split-name", "test", "--num-workers", "0",
              "--target-data-dir", str(out))
    _one_line_error(res, 1, entry[0], "sizes differ", "disparity 30x48")
    assert not (out / "test_lmdb").exists()
    _one_line_error(run("--src-data-dir", str(tmp_path / "none"), "--target-data-dir", str(out)),
                    1, "none: no such directory")
    _one_line_error(run("--target-data-dir", str(out)), 2, "--src-data-dir")
    _one_line_error(run("--source", "synthetic", "--num-workers", "-1", "--target-data-dir",
                        str(out)), 2, "--num-workers")


def test_pack_kitti_split_by_val_every_and_no_layout(tmp_path, monkeypatch, capsys) -> None:
    """In process (fast): the split follows data.val_every; a wrong layout is one line."""
    from tests.data import benchmark_trees as trees

    from stereoq.cli import main

    def invoke(*args: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["stereoq", "pack", *args])
        with pytest.raises(SystemExit) as exc:
            main()
        return exc.value.code or 0, capsys.readouterr().err

    root = trees.kitti(tmp_path / "kitti", count=3)
    out = tmp_path / "out"
    for split, count in (("train", 2), ("test", 1)):
        code, err = invoke("--source", "kitti2015", "--src-data-dir", str(root), "--split-name",
                           split, "--num-workers", "0", "--target-data-dir", str(out), "--set",
                           "data.val_every=3")
        assert code == 0, err
        ds = LmdbStereo(out / f"{split}_lmdb")
        assert len(ds) == count and ds.raw(0)["noc"].shape == (trees.H, trees.W)
    assert ds.raw(0)["name"] == "image_2/000002"
    code, err = invoke("--source", "eth3d", "--src-data-dir", str(root), "--target-data-dir",
                       str(tmp_path / "o2"))
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 1 and len(lines) == 1, err
    assert "not in the ETH3D two-view layout" in lines[0]
    assert "missing two_view_training/, two_view_training_gt/" in lines[0]
    assert not (tmp_path / "o2").exists()
