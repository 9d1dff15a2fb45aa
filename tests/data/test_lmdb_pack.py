"""Packing to LMDB and reading back: round trips, metadata, interruption, overwrite, bad input."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from stereoq.data import build_dataset, sceneflow
from stereoq.data.datasets import LmdbStereo, SceneFlowStereo, SyntheticStereo
from stereoq.data.lmdb_store import decode_disparity, encode_disparity, read_meta
from stereoq.data.pack import SceneFlowSource, SyntheticSource, pack
from stereoq.data.synthetic import VAL_INDEX_OFFSET
from stereoq.errors import StereoqError
from stereoq.settings.data import DataConfig, SyntheticConfig


def _source(root: Path, split: str = "train") -> SceneFlowSource:
    path = sceneflow.list_path(root, split)
    return SceneFlowSource(root, tuple(sceneflow.load_entries(root, split)), path)


def test_disparity_codecs() -> None:
    rng = np.random.default_rng(0)
    disp = rng.uniform(0.01, 250.0, (30, 40)).astype(np.float32)
    disp[0, :4] = [np.inf, np.nan, -1.0, 300.0]
    clean = disp.copy()
    clean[0, :3] = 0
    exact = decode_disparity(encode_disparity(disp, "float32"), "float32", 30, 40)
    assert np.array_equal(exact, clean)
    q = decode_disparity(encode_disparity(disp, "png16"), "png16", 30, 40)
    assert q.dtype == np.float32
    assert (q[0, :4] == 0).all()  # invalid, and >= 256 px stored as invalid
    assert np.abs(q - clean)[:, 4:].max() <= 1 / 512 + 1e-6
    assert np.abs(q[1:] - clean[1:]).max() <= 1 / 512 + 1e-6
    with pytest.raises(StereoqError, match="codec"):
        encode_disparity(disp, "jpeg")


@pytest.mark.parametrize("codec", ["float32", "png16"])
def test_sceneflow_pack_round_trip(sceneflow_root: Path, tmp_path: Path, codec: str) -> None:
    seen = []
    report = pack(_source(sceneflow_root), tmp_path / "out", "train", num_workers=0,
                  disp_encoding=codec, progress=lambda d, t: seen.append((d, t)))
    assert report.samples == 4 and seen[-1] == (4, 4)
    assert report.path == tmp_path / "out" / "train_lmdb"
    assert report.raw_disp_bytes == 4 * 4 * 48 * 80
    assert report.bytes_per_sample < report.reference_bytes_per_sample
    raw = SceneFlowStereo(sceneflow_root, "train")
    packed = LmdbStereo(report.path)
    assert len(packed) == 4
    for i in range(4):
        a, b = raw.raw(i), packed.raw(i)
        assert a["name"] == b["name"]
        assert np.array_equal(a["left"], b["left"]) and np.array_equal(a["right"], b["right"])
        if codec == "float32":
            assert np.array_equal(a["disp"], b["disp"])
        else:
            assert np.abs(a["disp"] - b["disp"]).max() <= 1 / 512 + 1e-6
            assert np.array_equal(a["disp"] == 0, b["disp"] == 0)
    meta = read_meta(report.path)
    assert meta["complete"] and meta["count"] == 4 and meta["format_version"] == 1
    assert meta["shapes"] == {"48x80": 4} and (meta["height"], meta["width"]) == (48, 80)
    assert meta["source"]["kind"] == "sceneflow" and meta["disp_encoding"] == codec
    assert not (tmp_path / "out" / "train_lmdb.partial").exists()


def test_lmdb_and_raw_sources_give_the_same_network_input(
    sceneflow_root: Path, tmp_path: Path
) -> None:
    pack(_source(sceneflow_root, "test"), tmp_path / "lmdb", "test", num_workers=0,
         disp_encoding="float32")
    from_lmdb = build_dataset(DataConfig(source="lmdb", lmdb_dir=tmp_path / "lmdb"), "val", False)
    from_raw = build_dataset(DataConfig(source="sceneflow", root=sceneflow_root), "val", False)
    a, b = from_lmdb[1], from_raw[1]
    assert a["left"].shape == (3, 48, 80) and a["disp"].shape == (1, 48, 80)
    for key in ("left", "right", "disp"):
        assert torch.equal(a[key], b[key])
    # Lazily opened per DataLoader worker process.
    batches = list(DataLoader(from_lmdb, batch_size=1, num_workers=2))
    assert [x["name"][0] for x in batches] == [from_raw[i]["name"] for i in range(2)]
    assert torch.equal(batches[1]["disp"][0], b["disp"])


def test_synthetic_pack_matches_the_synthetic_val_split(tmp_path: Path) -> None:
    syn = SyntheticConfig(train_count=3, val_count=3, height=48, width=64, max_disp=12.0, seed=5)
    src = SyntheticSource(3, 48, 64, 12.0, 5, index_offset=VAL_INDEX_OFFSET, split="test")
    report = pack(src, tmp_path, "test", num_workers=0, disp_encoding="float32")
    packed, generated = LmdbStereo(report.path), SyntheticStereo(syn, "val")
    for i in range(3):
        a, b = packed.raw(i), generated.raw(i)
        for key in ("left", "right", "disp", "name"):
            assert np.array_equal(a[key], b[key])
    assert read_meta(report.path)["source"]["kind"] == "synthetic"


@dataclass(frozen=True)
class _Failing:
    """A source that fails at one index, like a pack interrupted part way."""

    inner: SyntheticSource
    fail_at: int

    def __len__(self) -> int:
        return len(self.inner)

    def describe(self) -> dict:
        return self.inner.describe()

    def fingerprint_items(self) -> list[str]:
        return self.inner.fingerprint_items()

    def encode(self, index: int, codec: str):
        if index == self.fail_at:
            raise KeyboardInterrupt
        return self.inner.encode(index, codec)


def test_interrupted_pack_is_not_complete_and_resumes(tmp_path: Path) -> None:
    src = SyntheticSource(7, 32, 48, 8.0, 1)
    with pytest.raises(KeyboardInterrupt):
        pack(_Failing(src, 5), tmp_path, "train", num_workers=0, commit_every=2)
    final = tmp_path / "train_lmdb"
    assert not final.exists() and (tmp_path / "train_lmdb.partial").exists()
    with pytest.raises(StereoqError, match=r"incomplete.*rerun `stereoq pack --split-name train"):
        LmdbStereo(final)
    with pytest.raises(StereoqError, match="incomplete"):
        build_dataset(DataConfig(source="lmdb", lmdb_dir=tmp_path), "train", False)
    report = pack(src, tmp_path, "train", num_workers=0, commit_every=2)
    assert report.resumed == 4 and report.samples == 7
    fresh = pack(src, tmp_path / "fresh", "train", num_workers=0)
    assert fresh.stored_bytes == report.stored_bytes
    a, b = LmdbStereo(final), LmdbStereo(fresh.path)
    for i in range(7):
        assert np.array_equal(a.raw(i)["left"], b.raw(i)["left"])
    # A different source does not resume someone else's partial pack: it rebuilds.
    with pytest.raises(KeyboardInterrupt):
        pack(_Failing(src, 3), tmp_path / "x", "train", num_workers=0, commit_every=1)
    other = SyntheticSource(7, 32, 48, 8.0, 2)
    assert pack(other, tmp_path / "x", "train", num_workers=0).resumed == 0


def test_existing_target_needs_overwrite(tmp_path: Path) -> None:
    pack(SyntheticSource(2, 32, 48, 8.0, 0), tmp_path, "train", num_workers=0)
    with pytest.raises(StereoqError, match="holds 2 samples; pass --overwrite") as err:
        pack(SyntheticSource(3, 32, 48, 8.0, 0), tmp_path, "train", num_workers=0)
    assert err.value.exit_code == 2
    report = pack(SyntheticSource(3, 32, 48, 8.0, 0), tmp_path, "train", num_workers=0,
                  overwrite=True)
    assert len(LmdbStereo(report.path)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_lmdb"]


def test_bad_sample_stops_the_pack_with_nothing_complete(
    sceneflow_root: Path, tmp_path: Path
) -> None:
    src = _source(sceneflow_root)
    (sceneflow_root / src.entries[2].disp).write_bytes(b"garbage")
    with pytest.raises(StereoqError, match=rf"PFM file \S*{src.entries[2].disp}: bad header"):
        pack(src, tmp_path, "train", num_workers=0)
    assert not (tmp_path / "train_lmdb").exists()


def test_parallel_pack_equals_serial(sceneflow_root: Path, tmp_path: Path) -> None:
    serial = pack(_source(sceneflow_root), tmp_path / "a", "train", num_workers=0)
    parallel = pack(_source(sceneflow_root), tmp_path / "b", "train", num_workers=2)
    assert parallel.stored_bytes == serial.stored_bytes
    a, b = LmdbStereo(serial.path), LmdbStereo(parallel.path)
    for i in range(len(a)):
        assert a.raw(i)["name"] == b.raw(i)["name"]
        assert np.array_equal(a.raw(i)["disp"], b.raw(i)["disp"])
