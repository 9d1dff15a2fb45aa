"""A picture's size read from its file header, so oversized inputs are refused before decoding.

Covers the formats ``stereoq infer`` accepts (PNG, JPEG, BMP, PNM, TIFF, WebP). The size is a
claim of the header: the decoded picture is checked again, so a header that lies can only make
a refusal come later, never skip it.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

Size = tuple[int, int]
"""(width, height) in px."""

_HEAD_BYTES = 64
# JPEG start-of-frame markers (SOF0..SOF15 except DHT, JPG and DAC), which hold the size.
_JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_PNM_TOKEN = re.compile(rb"(?:\s|#[^\n]*\n)*(\d+)")


def header_size(path: Path) -> Size | None:
    """(width, height) from the header; None for other formats or a header that does not parse."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES)
            for magic, reader in _READERS:
                if head.startswith(magic):
                    return reader(f, head)
    except (OSError, struct.error, ValueError, IndexError):
        return None
    return None


def _png(f: BinaryIO, head: bytes) -> Size | None:
    if head[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", head[16:24])


def _jpeg(f: BinaryIO, head: bytes) -> Size | None:
    f.seek(2)
    for _ in range(1000):  # segments before the frame header: APPn, DQT, DHT, comments...
        byte = f.read(1)
        if byte != b"\xff":
            return None
        marker = f.read(1)
        while marker == b"\xff":  # fill bytes
            marker = f.read(1)
        if not marker:
            return None
        code = marker[0]
        if code == 0x01 or 0xD0 <= code <= 0xD7:  # no length field
            continue
        (length,) = struct.unpack(">H", f.read(2))
        if code in _JPEG_SOF:
            height, width = struct.unpack(">xHH", f.read(5))
            return width, height
        if code == 0xDA or length < 2:  # scan data before any frame header: not a JPEG we know
            return None
        f.seek(length - 2, 1)
    return None


def _bmp(f: BinaryIO, head: bytes) -> Size | None:
    (info_size,) = struct.unpack("<I", head[14:18])
    if info_size == 12:  # OS/2 BITMAPCOREHEADER
        return struct.unpack("<HH", head[18:22])
    width, height = struct.unpack("<ii", head[18:26])
    return abs(width), abs(height)  # negative height: rows stored top-down


def _pnm(f: BinaryIO, head: bytes) -> Size | None:
    f.seek(2)
    text = f.read(4096)  # comments may precede the size
    first = _PNM_TOKEN.match(text)
    second = _PNM_TOKEN.match(text, first.end()) if first else None
    return (int(first.group(1)), int(second.group(1))) if second else None


def _tiff(f: BinaryIO, head: bytes) -> Size | None:
    order = "<" if head[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", head[4:8])
    f.seek(ifd)
    (count,) = struct.unpack(order + "H", f.read(2))
    found: dict[int, int] = {}
    for _ in range(min(count, 4096)):
        tag, kind, _n, value = struct.unpack(order + "HHI4s", f.read(12))
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT or LONG
            fmt = {3: "H", 4: "I"}.get(kind)
            if fmt is None:
                return None
            found[tag] = struct.unpack_from(order + fmt, value)[0]
    return (found[256], found[257]) if len(found) == 2 else None


def _webp(f: BinaryIO, head: bytes) -> Size | None:
    if head[8:12] != b"WEBP":
        return None
    chunk = head[12:16]
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":  # lossy: 14-bit sizes
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and head[20] == 0x2F:  # lossless: 14-bit sizes minus one, packed
        (bits,) = struct.unpack("<I", head[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit canvas sizes minus one
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        return width, height
    return None


_READERS: tuple[tuple[bytes, Callable[[BinaryIO, bytes], Size | None]], ...] = (
    (b"\x89PNG\r\n\x1a\n", _png),
    (b"\xff\xd8", _jpeg),
    (b"BM", _bmp),
    *((b"P" + str(n).encode(), _pnm) for n in range(1, 7)),
    (b"II*\x00", _tiff),
    (b"MM\x00*", _tiff),
    (b"RIFF", _webp),
)
