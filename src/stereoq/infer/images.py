"""Reading input pictures and writing output pictures (atomically: temp file + rename)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from stereoq.errors import StereoqError

_UMASK = os.umask(0)
os.umask(_UMASK)


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
    write_bytes_atomic(path, encoded.tobytes())
    return path


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write bytes to ``path`` through a temp file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp creates 0600 files; outputs get the usual permissions.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
