"""Portable Float Map (PFM) files, as SceneFlow and Middlebury distribute disparities.

Header: ``Pf`` (one channel) or ``PF`` (three), then ``W H``, then a scale whose sign gives the
byte order (negative: little endian), each followed by whitespace (one line end after the scale:
LF, or CR LF as Windows tools write it); then float32 rows stored bottom to top. Middlebury marks
unknown disparities as ``inf``; they are returned as they are (callers decide what invalid means).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stereoq.atomic import atomic_write_bytes
from stereoq.errors import StereoqError

_MAX_HEADER = 256


def read_pfm(path: str | Path) -> np.ndarray:
    """Read a PFM file -> float32 (H, W) for ``Pf`` or (H, W, 3) for ``PF``, top row first."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise StereoqError(f"PFM file {path}: cannot read ({err.strerror or err})") from None
    return decode_pfm(raw, str(path))


def _where(label: str | None) -> str:
    """How errors name the data: ``PFM file <label>``, or ``PFM data`` without a name."""
    return f"PFM file {label}" if label else "PFM data"


def decode_pfm(raw: bytes, label: str | None = None) -> np.ndarray:
    """Decode the bytes of a PFM file (see :func:`read_pfm`); ``label`` (its name) in errors."""
    where = _where(label)
    tokens: list[bytes] = []
    pos = 0
    # Three whitespace-separated tokens; exactly one whitespace byte ends the header.
    while len(tokens) < 4 and pos < min(len(raw), _MAX_HEADER):
        while pos < len(raw) and raw[pos : pos + 1].isspace():
            pos += 1
        start = pos
        while pos < len(raw) and not raw[pos : pos + 1].isspace():
            pos += 1
        if start == pos:
            break
        tokens.append(raw[start:pos])
    if len(tokens) < 4 or tokens[0] not in (b"Pf", b"PF") or pos >= len(raw):
        raise StereoqError(f"{where}: bad header (expected Pf or PF, width, height, scale)")
    channels = 3 if tokens[0] == b"PF" else 1
    try:
        width, height, scale = int(tokens[1]), int(tokens[2]), float(tokens[3])
    except ValueError:
        raise StereoqError(f"{where}: bad size or scale in the header") from None
    if width <= 0 or height <= 0 or scale == 0.0:
        raise StereoqError(f"{where}: bad header (size {width}x{height}, scale {scale})")
    count = width * height * channels
    data_start = pos + 1
    # A CRLF ends the scale's line as one line end, unless the size says the LF is data.
    if raw[pos : pos + 2] == b"\r\n" and len(raw) - data_start != 4 * count:
        data_start += 1
    if len(raw) - data_start < 4 * count:
        raise StereoqError(
            f"{where}: truncated ({len(raw) - data_start} data bytes, "
            f"expected {4 * count} for {width}x{height}x{channels})"
        )
    dtype = np.dtype("<f4") if scale < 0 else np.dtype(">f4")
    data = np.frombuffer(raw, dtype, count, data_start)
    shape = (height, width, 3) if channels == 3 else (height, width)
    return np.ascontiguousarray(data.reshape(shape)[::-1], dtype=np.float32)


def encode_pfm(
    array: np.ndarray, little_endian: bool = True, scale: float = 1.0, label: str | None = None
) -> bytes:
    """The bytes of a PFM file holding ``array`` (float (H, W), (H, W, 1) or (H, W, 3))."""
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)) or arr.size == 0:
        raise StereoqError(f"{_where(label)}: cannot write an array of shape {arr.shape}")
    kind = b"PF" if arr.ndim == 3 else b"Pf"
    dtype = "<f4" if little_endian else ">f4"
    signed = -abs(scale) if little_endian else abs(scale)
    header = kind + b"\n%d %d\n" % (arr.shape[1], arr.shape[0]) + repr(signed).encode() + b"\n"
    return header + np.ascontiguousarray(arr[::-1], dtype=dtype).tobytes()


def write_pfm(
    path: str | Path, array: np.ndarray, little_endian: bool = True, scale: float = 1.0
) -> Path:
    """Write ``array`` as PFM atomically (``stereoq.atomic``); rows go bottom to top."""
    path = Path(path)
    return atomic_write_bytes(path, encode_pfm(array, little_endian, scale, label=str(path)))
