"""Tiny trees in the KITTI 2015/2012, Middlebury and ETH3D layouts, written file by file.

Images are 8-bit PNGs (ETH3D's grayscale), KITTI ground truth uint16 PNGs of disparity * 256
(0 = none), Middlebury/ETH3D ground truth PFMs built by hand (inf = unknown).
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

H, W = 12, 16
KITTI_CALIB = (
    b"calib_time: 09-Jan-2012 13:57:47\n"
    b"S_rect_02: 1.600000e+01 1.200000e+01\n"
    b"P_rect_02: 7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 "
    b"7.215377e+02 1.728540e+02 2.163791e-01 0.000000e+00 0.000000e+00 1.000000e+00 "
    b"2.745884e-03\n"
    b"P_rect_03: 7.215377e+02 0.000000e+00 6.095593e+02 -3.395242e+02 0.000000e+00 "
    b"7.215377e+02 1.728540e+02 2.199936e+00 0.000000e+00 0.000000e+00 1.000000e+00 "
    b"2.729905e-03\n"
)
KITTI2012_CALIB = (
    b"P0: 7.215377e+02 0.000000e+00 6.095593e+02 0.000000e+00 0.000000e+00 7.215377e+02 "
    b"1.728540e+02 0.000000e+00 0.000000e+00 0.000000e+00 1.000000e+00 0.000000e+00\n"
    b"P2: 7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 7.215377e+02 "
    b"1.728540e+02 2.163791e-01 0.000000e+00 0.000000e+00 1.000000e+00 2.745884e-03\n"
    b"P3: 7.215377e+02 0.000000e+00 6.095593e+02 -3.395242e+02 0.000000e+00 7.215377e+02 "
    b"1.728540e+02 2.199936e+00 0.000000e+00 0.000000e+00 1.000000e+00 2.729905e-03\n"
)
MIDDLEBURY_CALIB = (
    b"cam0=[100.5 0 7.5; 0 100.5 5.5; 0 0 1]\n"
    b"cam1=[100.5 0 9.5; 0 100.5 5.5; 0 0 1]\n"
    b"doffs=2\nbaseline=150.0\nwidth=16\nheight=12\nndisp=10\nisint=0\nvmin=1\nvmax=8\n"
)


def images(seed: int, h: int = H, w: int = W) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (h, w, 3), np.uint8), rng.integers(0, 256, (h, w, 3), np.uint8))


def ground_truth(seed: int, h: int = H, w: int = W) -> np.ndarray:
    """float32 (H, W) in [1, 8) px with quarter-pixel steps (exact in KITTI's /256)."""
    rng = np.random.default_rng(100 + seed)
    return (rng.integers(4, 32, (h, w)) / 4.0).astype(np.float32)


def pfm(array: np.ndarray) -> bytes:
    """A little-endian one-channel PFM, rows bottom to top, by hand."""
    h, w = array.shape
    body = b"".join(struct.pack("<f", float(v)) for v in array[::-1].ravel())
    return b"Pf\n" + f"{w} {h}\n-1.0\n".encode() + body


def _png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


def kitti(root: Path, year: int = 2015, count: int = 3) -> Path:
    """``count`` pairs; ground truth 0 in the top-left 2x3 block (none) and the non-occluded map
    also 0 in row 5 (occluded)."""
    names = (("image_2", "image_3", "disp_occ_0", "disp_noc_0", "calib_cam_to_cam")
             if year == 2015 else ("colored_0", "colored_1", "disp_occ", "disp_noc", "calib"))
    base = root / "training"
    for i in range(count):
        left, right = images(i)
        gt = ground_truth(i)
        gt[:2, :3] = 0
        noc = gt.copy()
        noc[5] = 0
        frame = f"{i:06d}_10.png"
        _png(base / names[0] / frame, left[..., ::-1])
        _png(base / names[0] / f"{i:06d}_11.png", left[..., ::-1])  # no ground truth: ignored
        _png(base / names[1] / frame, right[..., ::-1])
        _png(base / names[2] / frame, np.rint(gt * 256).astype(np.uint16))
        _png(base / names[3] / frame, np.rint(noc * 256).astype(np.uint16))
        (base / names[4]).mkdir(parents=True, exist_ok=True)
        (base / names[4] / f"{i:06d}.txt").write_bytes(
            KITTI_CALIB if year == 2015 else KITTI2012_CALIB)
    return root


def middlebury_scene(scene: Path, seed: int, gt_name: str = "disp0GT.pfm",
                     gt: np.ndarray | None = None, mask: np.ndarray | None = None,
                     gray: bool = False, gt_dir: Path | None = None) -> None:
    """One scene folder; ``gt_dir`` (ETH3D) holds the ground truth and mask when given."""
    left, right = images(seed)
    if gray:
        left, right = left[..., 0], right[..., 0]
    else:
        left, right = left[..., ::-1], right[..., ::-1]
    _png(scene / "im0.png", left)
    _png(scene / "im1.png", right)
    (scene / "calib.txt").write_bytes(MIDDLEBURY_CALIB)
    if gt is None:
        gt = ground_truth(seed)
        gt[0, :4] = np.inf
    if mask is None:
        mask = np.full((H, W), 255, np.uint8)
        mask[3, :] = 128  # occluded
        mask[4, :2] = 0  # unknown
    gt_dir = gt_dir or scene
    gt_dir.mkdir(parents=True, exist_ok=True)
    (gt_dir / gt_name).write_bytes(pfm(gt))
    _png(gt_dir / "mask0nocc.png", mask)


def middlebury(root: Path, count: int = 2) -> Path:
    for i in range(count):
        middlebury_scene(root / f"Scene{i}", i)
    return root


def eth3d(root: Path, count: int = 2) -> Path:
    for i in range(count):
        middlebury_scene(root / "two_view_training" / f"s{i}", i, gray=True,
                         gt_dir=root / "two_view_training_gt" / f"s{i}")
    return root
