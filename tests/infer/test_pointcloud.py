from pathlib import Path

import numpy as np
import pytest

from stereoq.infer.pointcloud import PLY_VERTEX, back_project, depth_to_ply


def read_ply(path: Path) -> tuple[list[str], bytes]:
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    return data[:end].decode("ascii").splitlines(), data[end:]


def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    depth = np.full((5, 7), 2.0, dtype=np.float32)
    depth[0, 0] = 4.0
    valid = np.ones((5, 7), bool)
    valid[4, 6] = False
    valid[1, 2] = False
    rgb = np.zeros((5, 7, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[0, 0] = (1, 2, 3)
    return depth, valid, rgb


def test_binary_ply_header_count_and_points(tmp_path: Path) -> None:
    depth, valid, rgb = scene()
    path = tmp_path / "cloud.ply"
    count = depth_to_ply(path, depth, valid, rgb, focal_px=10.0)
    header, body = read_ply(path)
    assert count == valid.sum() == 33
    assert header[:2] == ["ply", "format binary_little_endian 1.0"]
    assert f"element vertex {count}" in header
    props = [h.split()[-1] for h in header if h.startswith("property")]
    assert props == ["x", "y", "z", "red", "green", "blue"]
    assert len(body) == count * PLY_VERTEX.itemsize == count * 15
    vertices = np.frombuffer(body, dtype=PLY_VERTEX)
    # Pixel (0, 0) at depth 4 m, principal point at the centre (3, 2), f = 10 px.
    first = vertices[0]
    assert (first["x"], first["y"], first["z"]) == pytest.approx((-3 * 4 / 10, -2 * 4 / 10, 4.0))
    assert (first["red"], first["green"], first["blue"]) == (1, 2, 3)
    # The centre pixel (u=3, v=2) lies on the optical axis.
    centre = vertices[2 * 7 + 3 - 1]  # one invalid pixel (1, 2) precedes it
    assert (centre["x"], centre["y"], centre["z"]) == pytest.approx((0.0, 0.0, 2.0))


def test_ascii_ply_and_given_principal_point(tmp_path: Path) -> None:
    depth, valid, rgb = scene()
    path = tmp_path / "cloud.ply"
    count = depth_to_ply(path, depth, valid, rgb, focal_px=10.0, cx_px=0.0, cy_px=0.0, binary=False)
    header, body = read_ply(path)
    assert header[1] == "format ascii 1.0"
    rows = [line.split() for line in body.decode("ascii").splitlines()]
    assert len(rows) == count
    assert [float(v) for v in rows[0][:3]] == pytest.approx([0.0, 0.0, 4.0])
    assert rows[0][3:] == ["1", "2", "3"]


def test_back_project_only_valid_pixels() -> None:
    depth, valid, _ = scene()
    points = back_project(depth, valid, focal_px=10.0)
    assert points.shape == (33, 3) and points.dtype == np.float32
    assert (points[:, 2] > 0).all()
