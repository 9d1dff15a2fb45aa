"""Reading input pictures and writing output pictures (atomically, ``stereoq.atomic``)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from stereoq.atomic import atomic_write_bytes
from stereoq.errors import StereoqError


def read_rgb(path: Path) -> np.ndarray:
    """An image file -> (H, W, 3) uint8 RGB; grey and 16-bit images are converted."""
    path = Path(path)
    if not path.is_file():
        raise StereoqError(f"image {path}: no such file")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise StereoqError(f"image {path}: not a readable image")
    if image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise StereoqError(f"image {path}: unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    else:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def write_png(path: Path, image: np.ndarray) -> Path:
    """Write a PNG atomically: (H, W, 3) uint8 RGB, or (H, W) uint8 / uint16 single channel."""
    path = Path(path)
    if image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise StereoqError(f"{path}: could not encode the picture as PNG")
    return atomic_write_bytes(path, encoded.tobytes())
