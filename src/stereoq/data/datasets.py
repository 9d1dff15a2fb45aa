"""Datasets yielding the sample dict of :mod:`stereoq.data.transforms`, and ``build_dataset``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from torch.utils.data import Dataset

from stereoq.data import synthetic
from stereoq.data.transforms import Sample, build_transform
from stereoq.errors import StereoqError
from stereoq.settings.data import DataConfig, SyntheticConfig

Split = Literal["train", "val"]
Transform = Callable[[Sample], Sample]


class SyntheticStereo(Dataset):
    """Generated scenes rendered on the fly; item ``i`` of a split is always the same scene.

    ``val`` draws indices from ``synthetic.VAL_INDEX_OFFSET`` on, so it never repeats a train
    scene.
    """

    def __init__(self, cfg: SyntheticConfig, split: Split, transform: Transform | None = None):
        self.cfg = cfg
        self.split = split
        self.count = cfg.train_count if split == "train" else cfg.val_count
        self.offset = 0 if split == "train" else synthetic.VAL_INDEX_OFFSET
        self.transform = transform

    def __len__(self) -> int:
        return self.count

    def raw(self, index: int) -> Sample:
        """The untransformed sample: uint8 RGB images and float32 (H, W) disparity."""
        if not 0 <= index < self.count:
            raise IndexError(index)
        c = self.cfg
        left, right, disp = synthetic.render_pair(
            c.seed, self.offset + index, c.height, c.width, c.max_disp
        )
        name = f"synthetic/{self.split}/{index:06d}"
        return {"left": left, "right": right, "disp": disp, "name": name}

    def __getitem__(self, index: int) -> Sample:
        sample = self.raw(index)
        return self.transform(sample) if self.transform else sample


def build_dataset(data_cfg: DataConfig, split: Split, crop: bool) -> Dataset:
    """The configured source's ``split`` ("train" or "val") through the configured transforms.

    ``crop`` applies RandomCrop(data.train_crop); evaluation passes ``crop=False``. Validation is
    the synthetic val index space, ``test_lmdb`` for ``lmdb`` and the test list for ``sceneflow``.
    """
    if split not in ("train", "val"):
        raise StereoqError(f"split {split!r}: expected 'train' or 'val'", exit_code=2)
    transform = build_transform(data_cfg, crop)
    if data_cfg.source == "synthetic":
        return SyntheticStereo(data_cfg.synthetic, split, transform)
    raise StereoqError(f"data.source {data_cfg.source!r} is not supported yet", exit_code=2)
