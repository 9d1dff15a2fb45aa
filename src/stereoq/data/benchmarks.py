"""Real stereo benchmarks as distributed: one sample reader for every layout, and the layouts.

A layout (KITTI 2015, KITTI 2012, Middlebury 2014 / MiddEval3, ETH3D two-view) only finds the
files of each training pair (``Entry``); reading is the same for all: 8-bit images (grayscale
becomes 3 channels), ground truth as KITTI's uint16 PNG (value / 256 px, 0 = none) or as PFM
(non-finite = unknown), and the non-occlusion mask where the layout has one. Layouts live in
``kitti.py`` and ``middlebury.py`` and register in ``layouts.py``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from stereoq.data.calibration import Calibration, read_calibration
from stereoq.data.layouts import LAYOUTS, Entry, Layout
from stereoq.data.sceneflow import clean_disparity, decode_disparity, decode_image, read_bytes
from stereoq.errors import StereoqError

KITTI_DISP_SCALE = 256.0


def layouts() -> dict[str, Layout]:
    """Every registered layout (importing the modules that register them)."""
    from stereoq.data import kitti, middlebury  # noqa: F401

    return LAYOUTS


def benchmark_metrics(source: str) -> tuple[str, ...]:
    """The official metrics of a benchmark source (empty for any other source)."""
    layout = layouts().get(source)
    return layout.metrics if layout is not None else ()


def find_entries(source: str, root: Path) -> list[Entry]:
    """The pairs of ``root`` in the ``source`` layout (one-line error when it does not match)."""
    known = layouts()
    if source not in known:
        raise StereoqError(f"benchmark {source!r}: expected one of {', '.join(sorted(known))}",
                           exit_code=2)
    root = Path(root)
    if not root.is_dir():
        raise StereoqError(f"{known[source].title} root {root}: no such directory")
    return known[source].find(root)


def split_entries(entries: list[Entry], split: str, val_every: int) -> list[Entry]:
    """``val_every`` 0: every pair in both splits; N: every N-th pair is val only, the rest
    train. ``split`` is "train" or "test"/"val"."""
    if val_every <= 0:
        return list(entries)
    is_val = [(i % val_every) == val_every - 1 for i in range(len(entries))]
    want_val = split != "train"
    picked = [e for e, v in zip(entries, is_val, strict=True) if v == want_val]
    if not picked:
        raise StereoqError(f"data.val_every {val_every} leaves no {split} pair of "
                           f"{len(entries)}", exit_code=2)
    return picked


# ---------------------------------------------------------------- reading


def decode_png16_disparity(data: bytes, label: str) -> np.ndarray:
    """KITTI ground truth: uint16 PNG, disparity = value / 256, 0 = none -> float32 (H, W)."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise StereoqError(f"disparity {label}: cannot decode (not a readable PNG)")
    if img.dtype != np.uint16:
        raise StereoqError(f"disparity {label}: {img.dtype.itemsize * 8}-bit PNG, expected a "
                           "16-bit PNG (KITTI: value / 256 px, 0 = no ground truth)")
    if img.ndim != 2:
        raise StereoqError(f"disparity {label}: {img.shape[2]} channels, expected one")
    return img.astype(np.float32) / np.float32(KITTI_DISP_SCALE)


def decode_mask(data: bytes, label: str) -> np.ndarray:
    """``mask0nocc.png`` -> bool (H, W), True where 255 (non-occluded)."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise StereoqError(f"mask {label}: cannot decode (not a readable PNG)")
    if img.ndim == 3:
        img = img[..., 0]
    return img == 255


def read_disparity(path: Path) -> np.ndarray:
    """float32 (H, W) px, invalid = 0, from a ``.pfm`` or a KITTI 16-bit ``.png``."""
    data = read_bytes(path)
    if path.suffix.lower() == ".pfm":
        return decode_disparity(data, str(path))
    return clean_disparity(decode_png16_disparity(data, str(path)))


def _check_size(path: Path, shape: tuple[int, ...], left: Path, expected: tuple[int, ...]) -> None:
    if tuple(shape[:2]) != tuple(expected[:2]):
        raise StereoqError(
            f"{path}: {shape[1]}x{shape[0]}, but the left image {left} is "
            f"{expected[1]}x{expected[0]}; a pair and its ground truth share one size"
        )


def calibration_record(calib: Calibration) -> dict[str, float]:
    """The calibration a sample carries: numbers only (``ndisp`` 0 when the file has none)."""
    return {"focal_px": calib.focal_px, "cx_px": calib.cx_px, "cy_px": calib.cy_px,
            "baseline_m": calib.baseline_m, "doffs_px": calib.doffs_px,
            "ndisp": float(calib.ndisp or 0)}


def load_sample(entry: Entry) -> dict:
    """A sample: uint8 RGB ``left``/``right``, float32 ``disp`` (invalid = 0), bool ``noc``
    (non-occluded pixels with ground truth; all valid ones when the layout has no mask),
    ``calib`` (see :func:`calibration_record`, when the pair has a file) and ``name``."""
    left = decode_image(read_bytes(entry.left), str(entry.left))
    right = decode_image(read_bytes(entry.right), str(entry.right))
    _check_size(entry.right, right.shape, entry.left, left.shape)
    disp = read_disparity(entry.disp)
    _check_size(entry.disp, disp.shape, entry.left, left.shape)
    noc = disp > 0
    if entry.noc is not None:
        if entry.noc_kind == "disp":
            noc_disp = read_disparity(entry.noc)
            _check_size(entry.noc, noc_disp.shape, entry.left, left.shape)
            noc &= noc_disp > 0
        else:
            mask = decode_mask(read_bytes(entry.noc), str(entry.noc))
            _check_size(entry.noc, mask.shape, entry.left, left.shape)
            noc &= mask
    sample = {"left": left, "right": right, "disp": disp, "noc": noc, "name": entry.name}
    if entry.calib is not None:
        sample["calib"] = calibration_record(read_calibration(entry.calib))
    return sample
