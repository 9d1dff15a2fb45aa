from pathlib import Path

import cv2
import numpy as np
import pytest

from stereoq.data.image_size import header_size

WIDTH, HEIGHT = 37, 23


@pytest.mark.parametrize(
    ("suffix", "channels", "params"),
    [
        (".png", 3, []),
        (".jpg", 3, []),
        (".jpg", 3, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        (".bmp", 3, []),
        (".ppm", 3, []),
        (".pgm", 1, []),
        (".tif", 3, []),
        (".tif", 3, [cv2.IMWRITE_TIFF_COMPRESSION, 1]),
        (".webp", 3, [cv2.IMWRITE_WEBP_QUALITY, 80]),  # lossy (VP8)
        (".webp", 3, [cv2.IMWRITE_WEBP_QUALITY, 101]),  # lossless (VP8L)
        (".webp", 4, [cv2.IMWRITE_WEBP_QUALITY, 80]),  # with alpha (VP8X)
    ],
)
def test_header_size_matches_the_decoded_size(
    tmp_path: Path, suffix: str, channels: int, params: list[int]
) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (HEIGHT, WIDTH, channels), dtype=np.uint8).squeeze()
    path = tmp_path / f"image{suffix}"
    assert cv2.imwrite(str(path), image, params)
    assert header_size(path) == (WIDTH, HEIGHT)


def test_pnm_comments_before_the_size_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "image.ppm"
    path.write_bytes(b"P6\n# made by hand\n# twice\n37 23\n255\n" + bytes(WIDTH * HEIGHT * 3))
    assert header_size(path) == (WIDTH, HEIGHT)


@pytest.mark.parametrize("data", [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM"])
def test_unknown_or_truncated_headers_give_none(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "image.png"
    path.write_bytes(data)
    assert header_size(path) is None
