"""Small SceneFlow trees in the real layout, with PFMs written byte by byte."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from stereoq.data.sceneflow import layout_paths
from stereoq.data.synthetic import VAL_INDEX_OFFSET, render_pair

H, W, MAX_DISP = 48, 80, 16.0


def pfm_bytes(array: np.ndarray, little_endian: bool, scale: float = 1.0) -> bytes:
    """A PFM file built by hand (independent of stereoq.data.pfm): rows bottom to top."""
    arr = np.asarray(array, np.float32)
    kind = b"PF" if arr.ndim == 3 else b"Pf"
    h, w = arr.shape[:2]
    sign = -1.0 if little_endian else 1.0
    header = kind + b"\n" + f"{w} {h}\n".encode() + f"{sign * scale}\n".encode()
    fmt = ("<" if little_endian else ">") + "f"
    body = b"".join(struct.pack(fmt, float(v)) for v in arr[::-1].ravel())
    return header + body


def write_tree(root: Path, train: int = 4, test: int = 2) -> Path:
    """Generated frames in SceneFlow's layout; PFMs alternate little and big endian."""
    for split, count, offset in (("train", train, 0), ("test", test, VAL_INDEX_OFFSET)):
        lines = []
        for i in range(count):
            left, right, disp = render_pair(0, offset + i, H, W, MAX_DISP)
            if i == 1:
                disp[:3, :5] = np.inf  # Middlebury-style unknown
            paths = layout_paths(split, i)
            for rel, img in zip(paths[:2], (left, right), strict=True):
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / rel), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            (root / paths[2]).parent.mkdir(parents=True, exist_ok=True)
            (root / paths[2]).write_bytes(pfm_bytes(disp, little_endian=i % 2 == 0))
            lines.append("  ".join(paths))
        name = f"SceneFlow_finalpass_{split}.txt"
        (root / name).write_text("# left right disparity\n" + "\n".join(lines) + "\n")
    return root


@pytest.fixture
def sceneflow_root(tmp_path: Path) -> Path:
    """A tree with 4 train and 2 test samples of 48x80 px."""
    return write_tree(tmp_path / "SceneFlow")


@pytest.fixture
def make_pfm():
    """``make_pfm(array, little_endian, scale=1.0) -> bytes``, written by hand."""
    return pfm_bytes
