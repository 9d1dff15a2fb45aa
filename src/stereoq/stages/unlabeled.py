"""Unlabeled rectified pairs from a folder or glob (a user's own camera), for adaptation.

Pairs are found as ``stereoq infer`` finds them (``stereoq.data.pairs``). A sample is the
pipeline's dict (``stereoq.data.transforms``) plus ``proxy``: (1, H, W) SGBM proxy labels in px,
0 = no label (``stereoq.baselines.proxy_labels``), computed once per pair and cached as 16-bit
PNGs, and ``proxy_fill``: the pixels without a label given the nearest label to their left in
the row (the background side of an occlusion), 0 where labelled. ``disp`` is the pair's
ground truth when the folder happens to have one (a PFM next to the images, see
``ground_truth_of``; only reported), else zeros (no valid pixel).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from stereoq.atomic import atomic_write_bytes
from stereoq.baselines.proxy_labels import VERSION as PROXY_VERSION
from stereoq.baselines.proxy_labels import ProxyParams, proxy_labels
from stereoq.baselines.sgbm import fill_invalid
from stereoq.data.pairs import Pair, resolve_pairs
from stereoq.data.transforms import Sample, build_transform
from stereoq.errors import StereoqError
from stereoq.settings.data import DataConfig

Window = Literal["random", "common", "full"]
"""How a sample is cut from its pair: a random crop of ``crop_size``; the top-left window of
``common_size`` (the largest multiples of the model's size multiple that every pair holds:
what a network in training mode takes, batches of one size); the whole pair (validation,
which pads)."""

PROXY_SCALE = 64.0  # 16-bit PNG: px * 64, 1/64 px steps up to 1023 px


def discover_pairs(pairs: str | None, right: str | None, key: str) -> list[Pair]:
    """The pairs of a folder or glob (``key``: the config key, for messages)."""
    if not pairs:
        raise StereoqError(
            f"{key}.pairs: not set; give a folder or quoted glob of rectified pairs "
            f"(--set {key}.pairs=DIR)", exit_code=2
        )
    try:
        return resolve_pairs(pairs, right)
    except StereoqError as err:
        message = str(err).replace("--imgl", f"{key}.pairs").replace("--imgr", f"{key}.right")
        raise StereoqError(message, err.exit_code) from None


def pair_size(pair: Pair) -> tuple[int, int]:
    """(height, width) of a pair; one-line error when its two images differ in size."""
    from stereoq.data.image_size import header_size
    from stereoq.data.images import read_rgb

    sizes = []
    for path in (pair.left, pair.right):
        size = header_size(path)
        if size is None:
            h, w = read_rgb(path).shape[:2]
            size = (w, h)
        sizes.append(size)
    (wl, hl), (wr, hr) = sizes
    if (wl, hl) != (wr, hr):
        raise StereoqError(
            f"pair {pair.name}: left {pair.left} is {wl}x{hl} but right {pair.right} is "
            f"{wr}x{hr}; a rectified pair has one size"
        )
    return hl, wl


def check_large_enough(pair: Pair, size: tuple[int, int], need: tuple[int, int], what: str
                       ) -> None:
    if size[0] < need[0] or size[1] < need[1]:
        raise StereoqError(
            f"pair {pair.name}: {size[1]}x{size[0]} is smaller than {what} "
            f"{need[1]}x{need[0]}; use larger pairs or a smaller crop"
        )


def common_size(sizes: list[tuple[int, int]], multiple: int) -> tuple[int, int]:
    """The largest (height, width), multiples of ``multiple``, that every size holds."""
    return (min(h for h, _ in sizes) // multiple * multiple,
            min(w for _, w in sizes) // multiple * multiple)


def split_pairs(pairs: list[Pair], val_fraction: float, seed: int
                ) -> tuple[list[Pair], list[Pair]]:
    """(train, val): ``floor(len * val_fraction)`` pairs drawn with ``seed`` are held out; when
    that is none, validation runs on the training pairs."""
    count = int(len(pairs) * val_fraction)
    if count == 0:
        return list(pairs), list(pairs)
    order = np.random.default_rng(seed).permutation(len(pairs))
    held = set(order[:count].tolist())
    return ([p for i, p in enumerate(pairs) if i not in held],
            [p for i, p in enumerate(pairs) if i in held])


def ground_truth_of(pair: Pair) -> Path | None:
    """A PFM ground truth beside the pair, if any: Middlebury's ``disp0GT.pfm`` / ``disp0.pfm``
    next to ``im0``, or the left path with ``left`` -> ``disp`` and the suffix ``.pfm``."""
    left = pair.left
    if left.stem == "im0":
        candidates = [left.with_name("disp0GT.pfm"), left.with_name("disp0.pfm")]
    else:
        swapped = left.as_posix().replace("left", "disp").replace("Left", "Disp")
        candidates = [Path(swapped).with_suffix(".pfm")] if swapped != left.as_posix() else []
    return next((p for p in candidates if p.is_file()), None)


class ProxyCache:
    """Proxy labels of a pair, computed once and kept as ``<folder>/<key>.png`` (16 bit); the
    key hashes both images' paths, sizes and times and the proxy settings."""

    def __init__(self, folder: Path, params: ProxyParams) -> None:
        self.folder = Path(folder)
        self.params = params
        self.settings = json.dumps([asdict(params), PROXY_VERSION], sort_keys=True)

    def path(self, pair: Pair) -> Path:
        stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns)
                 for p in (pair.left, pair.right)]
        key = hashlib.sha1(json.dumps([stats, self.settings]).encode()).hexdigest()[:20]
        return self.folder / f"{key}.png"

    def get(self, pair: Pair, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        path = self.path(pair)
        if path.is_file():
            stored = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if stored is not None and stored.shape == left.shape[:2]:
                return stored.astype(np.float32) / PROXY_SCALE
        labels = proxy_labels(left, right, self.params)
        fixed = np.clip(np.rint(labels * PROXY_SCALE), 0, 65535).astype(np.uint16)
        ok, encoded = cv2.imencode(".png", fixed)
        if ok:
            atomic_write_bytes(path, encoded.tobytes())
        return fixed.astype(np.float32) / PROXY_SCALE


class UnlabeledPairs(Dataset):
    """Pairs as network samples (see the module's docstring); ``repeats`` samples per pair (an
    epoch of random crops sees each pair that many times)."""

    def __init__(self, pairs: list[Pair], data_cfg: DataConfig, proxy: ProxyCache | None,
                 window: Window, crop_size: tuple[int, int],
                 common_size: tuple[int, int] | None = None, repeats: int = 1) -> None:
        self.pairs = pairs
        self.proxy = proxy
        self.window = window
        self.crop_size = crop_size
        self.common_size = common_size
        self.repeats = repeats
        self.transform = build_transform(data_cfg, crop=False)

    def __len__(self) -> int:
        return len(self.pairs) * self.repeats

    def raw(self, index: int) -> Sample:
        """Uncut: uint8 RGB images, float32 (H, W) ``disp`` (ground truth or 0) and ``proxy``."""
        from stereoq.data.images import read_rgb
        from stereoq.data.pfm import read_pfm

        pair = self.pairs[index % len(self.pairs)]
        left, right = read_rgb(pair.left), read_rgb(pair.right)
        if left.shape != right.shape:
            pair_size(pair)  # the one-line error naming both sizes
        h, w = left.shape[:2]
        gt_path = ground_truth_of(pair)
        disp = read_pfm(gt_path).astype(np.float32) if gt_path else np.zeros((h, w), np.float32)
        if disp.shape != (h, w):
            raise StereoqError(f"ground truth {gt_path}: {disp.shape[1]}x{disp.shape[0]} is not "
                               f"the size of its pair ({w}x{h})")
        proxy = (self.proxy.get(pair, left, right) if self.proxy is not None
                 else np.zeros((h, w), np.float32))
        fill = np.where(proxy > 0, 0.0, fill_invalid(proxy, proxy > 0)).astype(np.float32)
        return {"left": left, "right": right, "disp": disp, "proxy": proxy,
                "proxy_fill": fill, "name": pair.name}

    def __getitem__(self, index: int) -> Sample:
        sample = self.raw(index)
        h, w = sample["disp"].shape
        top, left, height, width = self._window(h, w)
        rows, cols = slice(top, top + height), slice(left, left + width)
        cut = {k: v[rows, cols] if isinstance(v, np.ndarray) else v for k, v in sample.items()}
        out = self.transform(cut)
        for key in ("proxy", "proxy_fill"):
            out[key] = torch.from_numpy(np.ascontiguousarray(cut[key]))[None]
        return out

    def _window(self, h: int, w: int) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the sample in its pair."""
        if self.window == "full":
            return 0, 0, h, w
        height, width = self.common_size if self.window == "common" else self.crop_size
        if self.window == "common":
            return 0, 0, height, width
        return _fair_start(h, height), _fair_start(w, width), height, width


def _fair_start(size: int, crop: int) -> int:
    """A crop's first row (column), drawn so that the image's borders are trained too.

    Uniform starts in [0, size - crop] cover a border row rarely (row 0: once in
    size - crop + 1 crops), which on a few pairs leaves the borders untrained (on the
    motorcycle pair the top band kept a +4 px bias). A start drawn uniformly in
    [1 - crop, size - 1] and clamped into the image covers every row with probability at least
    crop / (size + crop - 1) (0.34 for 256 of 500 rows, against 0.004 for row 0 before).
    Torch's RNG: a resumed run draws the same crops.
    """
    start = int(torch.randint(1 - crop, size, ()).item())
    return min(max(start, 0), size - crop)
