"""Surfaces of generated scenes: an analytic disparity field over a shape, both in left-view px.

A surface's disparity is a quadratic in left-view coordinates around its centre,
``d = d0 + bx u + by v + cxx u^2 + cyy v^2 + cxy u v`` with ``u = x - x0``, ``v = y - y0``:
planes (slanted and rotated: any ``bx``, ``by``) and curved surfaces (cylinders, bowls, saddles).
A left pixel ``x`` and the right pixel ``x - d(x, y)`` see the same surface point. Within the
surface's box ``|dd/dx| <= MAX_SLOPE_X`` keeps ``x -> x - d`` strictly increasing, so every right
pixel has at most one source, found by Newton's method and then verified: a right pixel counts as
covered only when its source reproduces it to ``INVERSE_TOL_PX``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_SLOPE_X = 0.5
INVERSE_TOL_PX = 1e-3
NEWTON_STEPS = 4


@dataclass(frozen=True)
class Surface:
    """A shape (``kind``, ``params``) carrying a quadratic disparity field; ``bbox`` (x0, y0, x1,
    y1, left-view px, exclusive end) bounds the shape. ``ground``: textured in world coordinates
    (a floor seen in perspective) rather than in image coordinates."""

    x0: float
    y0: float
    d0: float
    bx: float
    by: float
    cxx: float
    cyy: float
    cxy: float
    kind: str  # "full", "ellipse", "rect", "blob", "polygon", "capsules", "wire", "ring",
    # "frame", "lattice"
    params: tuple[float, ...]
    bbox: tuple[int, int, int, int]
    ground: bool = False

    def disparity(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u, v = x - np.float32(self.x0), y - np.float32(self.y0)
        f = np.float32
        return (f(self.d0) + f(self.bx) * u + f(self.by) * v + f(self.cxx) * u * u
                + f(self.cyy) * v * v + f(self.cxy) * u * v)

    def slope_x(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u, v = x - np.float32(self.x0), y - np.float32(self.y0)
        f = np.float32
        return f(self.bx) + f(2.0 * self.cxx) * u + f(self.cxy) * v

    def right_to_left(self, x_r: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Left-view x of the surface point each right pixel ``(x_r, y)`` sees, and whether it
        exists within the box (x - d(x, y) = x_r solved to ``INVERSE_TOL_PX``)."""
        lo, hi = np.float32(self.bbox[0] - 1), np.float32(self.bbox[2] + 1)
        if self.cxx == self.cyy == self.cxy == 0.0:  # a plane: x (1 - bx) = x_r + d0 - ...
            f = np.float32
            x = (x_r + f(self.d0 - self.bx * self.x0) + f(self.by) * (y - f(self.y0))) / f(
                1.0 - self.bx)
        else:
            x = np.clip(x_r + self.disparity(x_r, y), lo, hi)
            for _ in range(NEWTON_STEPS):
                x = np.clip(x - (x - self.disparity(x, y) - x_r) / (1.0 - self.slope_x(x, y)),
                            lo, hi)
        ok = (np.abs(x - self.disparity(x, y) - x_r) <= INVERSE_TOL_PX) & (x >= lo) & (x <= hi)
        return x, ok

    def covers(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Boolean mask of the points ``(x, y)`` (left-view px) on the shape."""
        p = self.params
        if self.kind == "full":
            return np.ones(np.broadcast_shapes(x.shape, y.shape), bool)
        if self.kind in ("ellipse", "rect", "blob", "ring", "frame", "lattice"):
            cx, cy, rx, ry, cos_t, sin_t = p[:6]
            u = ((x - cx) * cos_t + (y - cy) * sin_t) / rx
            v = (-(x - cx) * sin_t + (y - cy) * cos_t) / ry
            if self.kind in ("ring", "frame", "lattice"):
                return _open_shape(self.kind, p[6:], u, v)
            if self.kind == "ellipse":
                return u * u + v * v <= 1.0
            if self.kind == "rect":
                return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
            # Star-shaped blob: radius 1 + sum_k a_k cos(k theta + phi_k) in the ellipse frame.
            theta = np.arctan2(v, u)
            radius = np.ones_like(theta)
            for k, (amp, phase) in enumerate(zip(p[6::2], p[7::2], strict=True), start=2):
                radius += amp * np.cos(k * theta + phase)
            return u * u + v * v <= radius * radius
        if self.kind == "polygon":  # convex, counter-clockwise vertices (y down)
            pts = np.asarray(p).reshape(-1, 2)
            inside = np.ones(np.broadcast_shapes(x.shape, y.shape), bool)
            for (xa, ya), (xb, yb) in zip(pts, np.roll(pts, -1, 0), strict=True):
                inside &= (xb - xa) * (y - ya) - (yb - ya) * (x - xa) >= 0
            return inside
        if self.kind == "capsules":  # thin segments of one radius: poles, branches
            radius, segs = p[0], np.asarray(p[1:]).reshape(-1, 4)
            inside = np.zeros(np.broadcast_shapes(x.shape, y.shape), bool)
            for xa, ya, xb, yb in segs:
                dx, dy = xb - xa, yb - ya
                t = np.clip(((x - xa) * dx + (y - ya) * dy) / max(dx * dx + dy * dy, 1e-6), 0, 1)
                ex, ey = x - xa - t * dx, y - ya - t * dy
                inside |= ex * ex + ey * ey <= radius * radius
            return inside
        if self.kind == "wire":  # y = ya + s (x - xa) + k (x - xa)^2 for xa <= x <= xb
            xa, xb, ya, s, k, half = p
            t = x - xa
            # Half thickness ``half`` across the curve, not vertically: a steep stretch stays
            # wider than a pixel in every row, so both views sample it.
            slope = s + 2 * k * t
            reach = half * np.sqrt(1.0 + slope * slope)
            return (np.abs(y - (ya + s * t + k * t * t)) <= reach) & (x >= xa) & (x <= xb)
        raise ValueError(f"unknown surface kind {self.kind!r}")


def _open_shape(kind: str, p: tuple[float, ...], u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Shapes with holes, in the unit frame of their ellipse or rectangle (``u``, ``v``).

    ring: an annulus of inner radius ``p[0]`` with ``p[1]`` spokes of half width ``p[3]``
    starting at angle ``p[2]`` (a wheel). frame: the rectangle less its inside, bars ``p[0]`` and
    ``p[1]`` thick (a window, a picture frame). lattice: the rectangle's border of thickness
    ``p[4]``, ``p[5]`` and bars at ``p[0]``, ``p[1]`` per unit of ``u``, ``v`` (0: none), each
    ``p[2]``, ``p[3]`` of its period wide (shelves, fences, slats, grids).
    """
    if kind == "ring":
        inner, spokes, phase, half = p
        r2 = u * u + v * v
        on = (r2 <= 1.0) & (r2 >= inner * inner)
        for k in range(int(spokes)):
            a = phase + np.pi * k / spokes
            on |= (r2 <= 1.0) & (np.abs(v * np.cos(a) - u * np.sin(a)) <= half)
        return on
    box = (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    if kind == "frame":
        bar_u, bar_v = p
        return box & ((np.abs(u) >= 1.0 - bar_u) | (np.abs(v) >= 1.0 - bar_v))
    per_u, per_v, width_u, width_v, edge_u, edge_v = p
    on = (np.abs(u) >= 1.0 - edge_u) | (np.abs(v) >= 1.0 - edge_v)
    if per_u > 0:
        on |= np.mod((u + 1.0) * per_u, 1.0) < width_u
    if per_v > 0:
        on |= np.mod((v + 1.0) * per_v, 1.0) < width_v
    return box & on
