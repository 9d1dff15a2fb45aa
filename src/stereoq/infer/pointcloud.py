"""Coloured point clouds from depth: PLY (binary little-endian or ASCII) for common viewers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stereoq.atomic import atomic_write_bytes

PLY_VERTEX = np.dtype(
    [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
)


def back_project(
    depth_m: np.ndarray,
    valid: np.ndarray,
    focal_px: float,
    cx_px: float | None = None,
    cy_px: float | None = None,
) -> np.ndarray:
    """(H, W) depth -> (N, 3) camera-frame points in metres for the N valid pixels (row-major).

    Pinhole model with square pixels (fx = fy = focal_px): x right, y down, z forward. The
    principal point defaults to the image centre ((W - 1) / 2, (H - 1) / 2).
    """
    height, width = depth_m.shape
    cx = (width - 1) / 2.0 if cx_px is None else cx_px
    cy = (height - 1) / 2.0 if cy_px is None else cy_px
    v, u = np.nonzero(valid)
    z = depth_m[v, u].astype(np.float64)
    x = (u - cx) * z / focal_px
    y = (v - cy) * z / focal_px
    return np.stack([x, y, z], axis=1).astype(np.float32)


def write_ply(path: Path, points: np.ndarray, colors_rgb: np.ndarray, binary: bool = True) -> Path:
    """Write (N, 3) float points with (N, 3) uint8 RGB colours as a PLY file (atomically)."""
    if points.shape[0] != colors_rgb.shape[0]:
        raise ValueError("points and colours differ in count")
    vertices = np.empty(points.shape[0], dtype=PLY_VERTEX)
    for i, name in enumerate(("x", "y", "z")):
        vertices[name] = points[:, i]
    for i, name in enumerate(("red", "green", "blue")):
        vertices[name] = colors_rgb[:, i]
    fmt = "binary_little_endian" if binary else "ascii"
    header = (
        f"ply\nformat {fmt} 1.0\ncomment stereoq point cloud, metres, camera frame "
        f"(x right, y down, z forward)\nelement vertex {len(vertices)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    ).encode("ascii")
    if binary:
        body = vertices.tobytes()
    else:
        body = "".join(
            f"{p[0]:.6g} {p[1]:.6g} {p[2]:.6g} {c[0]} {c[1]} {c[2]}\n"
            for p, c in zip(points.tolist(), colors_rgb.tolist(), strict=True)
        ).encode("ascii")
    return atomic_write_bytes(path, header + body)


def depth_to_ply(
    path: Path,
    depth_m: np.ndarray,
    valid: np.ndarray,
    image_rgb: np.ndarray,
    focal_px: float,
    cx_px: float | None = None,
    cy_px: float | None = None,
    binary: bool = True,
) -> int:
    """Back-project the valid pixels, colour them from the left image, write a PLY; -> count."""
    points = back_project(depth_m, valid, focal_px, cx_px, cy_px)
    write_ply(path, points, image_rgb[valid], binary=binary)
    return int(points.shape[0])
