"""Datasets yielding the sample dict of :mod:`stereoq.data.transforms`, and ``build_dataset``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import lmdb
from torch.utils.data import Dataset

from stereoq.data import benchmarks, generators, lmdb_store, sceneflow, synthetic
from stereoq.data.transforms import Sample, build_transform
from stereoq.errors import StereoqError
from stereoq.settings.data import DataConfig, SyntheticConfig

Split = Literal["train", "val"]
Transform = Callable[[Sample], Sample]


class SyntheticStereo(Dataset):
    """Generated scenes (``cfg.kind``) rendered on the fly; item ``i`` of a split is always the
    same scene.

    ``val`` draws indices from ``synthetic.VAL_INDEX_OFFSET`` on, so it never repeats a train
    scene.
    """

    def __init__(self, cfg: SyntheticConfig, split: Split, transform: Transform | None = None):
        self.cfg = cfg
        self.split = split
        self.count = cfg.train_count if split == "train" else cfg.val_count
        self.offset = 0 if split == "train" else synthetic.VAL_INDEX_OFFSET
        self.transform = transform
        self.render = generators.renderer(cfg.kind, cfg.texture_dir, cfg.objects,
                                          cfg.camera_strength)

    def __len__(self) -> int:
        return self.count

    def raw(self, index: int) -> Sample:
        """The untransformed sample: uint8 RGB images and float32 (H, W) disparity."""
        if not 0 <= index < self.count:
            raise IndexError(index)
        c = self.cfg
        left, right, disp = self.render(
            c.seed, self.offset + index, c.height, c.width, c.max_disp
        )
        name = f"synthetic/{self.split}/{index:06d}"
        return {"left": left, "right": right, "disp": disp, "name": name}

    def __getitem__(self, index: int) -> Sample:
        sample = self.raw(index)
        return self.transform(sample) if self.transform else sample


class SceneFlowStereo(Dataset):
    """SceneFlow read directly from the raw layout (PNG frames, PFM disparity) via a list file."""

    def __init__(self, root: Path, split: str, transform: Transform | None = None,
                 list_file: Path | None = None) -> None:
        self.root = Path(root)
        self.entries = sceneflow.load_entries(self.root, split, list_file)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.entries)

    def raw(self, index: int) -> Sample:
        return sceneflow.load_sample(self.root, self.entries[index])

    def __getitem__(self, index: int) -> Sample:
        sample = self.raw(index)
        return self.transform(sample) if self.transform else sample


class BenchmarkStereo(Dataset):
    """A real benchmark (KITTI 2015/2012, Middlebury, ETH3D) read directly from its layout;
    samples carry ``noc`` (non-occluded pixels) and, with a calibration file, ``calib``."""

    def __init__(self, source: str, root: Path, split: str, val_every: int = 0,
                 transform: Transform | None = None) -> None:
        self.root = Path(root)
        entries = benchmarks.find_entries(source, self.root)
        self.entries = benchmarks.split_entries(entries, split, val_every)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.entries)

    def raw(self, index: int) -> Sample:
        return benchmarks.load_sample(self.entries[index])

    def __getitem__(self, index: int) -> Sample:
        sample = self.raw(index)
        return self.transform(sample) if self.transform else sample


class LmdbStereo(Dataset):
    """A packed LMDB (``stereoq pack``); the environment opens lazily in each process, so the
    dataset can be handed to DataLoader workers."""

    def __init__(self, path: Path, transform: Transform | None = None) -> None:
        self.path = Path(path)
        self.meta = lmdb_store.read_meta(self.path)
        self.count = int(self.meta["count"])
        self.codec = str(self.meta["disp_encoding"])
        self.transform = transform
        self._env: lmdb.Environment | None = None
        self._pid = -1

    def __len__(self) -> int:
        return self.count

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_env"], state["_pid"] = None, -1
        return state

    def _environment(self) -> lmdb.Environment:
        if self._env is None or self._pid != os.getpid():
            self._env = lmdb_store.open_env(self.path)
            self._pid = os.getpid()
        return self._env

    def raw(self, index: int) -> Sample:
        if not 0 <= index < self.count:
            raise IndexError(index)
        with self._environment().begin(buffers=False) as txn:
            blob = txn.get(lmdb_store.sample_key(index))
        if blob is None:
            raise StereoqError(f"LMDB {self.path}: sample {index} is missing")
        return lmdb_store.decode_record(blob, self.codec, f"{self.path}[{index}]")

    def __getitem__(self, index: int) -> Sample:
        sample = self.raw(index)
        return self.transform(sample) if self.transform else sample


def build_dataset(data_cfg: DataConfig, split: Split, crop: bool) -> Dataset:
    """The configured source's ``split`` ("train" or "val") through the configured transforms.

    ``crop`` applies RandomCrop(data.train_crop); evaluation passes ``crop=False``. Validation is
    the synthetic val index space, ``test_lmdb`` for ``lmdb``, the test list for ``sceneflow`` and
    ``data.val_every`` for the benchmarks.
    """
    if split not in ("train", "val"):
        raise StereoqError(f"split {split!r}: expected 'train' or 'val'", exit_code=2)
    transform = build_transform(data_cfg, crop)
    if data_cfg.source == "synthetic":
        return SyntheticStereo(data_cfg.synthetic, split, transform)
    on_disk = "train" if split == "train" else "test"
    if data_cfg.source == "lmdb":
        if data_cfg.lmdb_dir is None:
            raise StereoqError("data.lmdb_dir is required when data.source is lmdb", exit_code=2)
        return LmdbStereo(Path(data_cfg.lmdb_dir) / f"{on_disk}_lmdb", transform)
    if data_cfg.root is None:
        raise StereoqError(f"data.root is required when data.source is {data_cfg.source}",
                           exit_code=2)
    if data_cfg.source == "sceneflow":
        return SceneFlowStereo(data_cfg.root, on_disk, transform)
    return BenchmarkStereo(data_cfg.source, data_cfg.root, split, data_cfg.val_every, transform)


def benchmark_source(data_cfg: DataConfig) -> str | None:
    """The benchmark whose pairs the validation split holds (read directly or packed), or None."""
    if data_cfg.source in benchmarks.layouts():
        return data_cfg.source
    if data_cfg.source == "lmdb" and data_cfg.lmdb_dir is not None:
        kind = lmdb_store.read_meta(Path(data_cfg.lmdb_dir) / "test_lmdb")["source"].get("kind")
        return kind if kind in benchmarks.layouts() else None
    return None
