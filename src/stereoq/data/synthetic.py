"""Generated stereo pairs with exact ground truth: textured planar layers composited near-over-far.

A scene is a slanted background plane plus a few foreground shapes (ellipses, rotated rectangles,
triangles). Each layer has a planar disparity field ``d(x, y) = a + b x + c y`` over left-view
coordinates and a texture defined on the left view's plane, so a left pixel ``x`` and the right
pixel ``x - d(x, y)`` see the same surface point. The right view is rendered by inverting that map
per layer in closed form (``x = (x_r + a + c y) / (1 - b)``) and sampling the layer's texture there;
in both views the layer with the largest disparity (the nearest) wins, so occlusions and
disocclusions are exact and there are no splatting holes. Masks are hard-edged, so the ground
truth at every pixel is the disparity of one surface.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

# Val (and the packed test split) draws from an index space that train never reaches.
VAL_INDEX_OFFSET = 1_000_000_000


@dataclass(frozen=True)
class _Layer:
    """One planar layer: disparity ``a + b x + c y`` (left-view px) and its shape."""

    a: float
    b: float
    c: float
    kind: str  # "plane" (covers everything), "ellipse", "rect", "triangle"
    params: tuple[float, ...]
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 in left-view px, texture support


def render_pair(
    seed: int, index: int, height: int, width: int, max_disp: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one scene, deterministic in ``(seed, index)``.

    Returns ``left``, ``right``: uint8 (H, W, 3) RGB, and ``disp``: float32 (H, W) disparity of
    the left view in px, every pixel valid, within ``[0.02, 0.95] * max_disp``.
    """
    rng = np.random.default_rng([int(seed), int(index)])
    max_disp = float(max_disp)
    margin = int(np.ceil(max_disp)) + 2
    layers = _scene(rng, height, width, max_disp)
    textures = [_texture(rng, layer.bbox, height, width, margin) for layer in layers]
    atlas, shift_x, shift_y = _atlas(textures)

    xs = np.arange(width, dtype=np.float32)[None, :]
    ys = np.arange(height, dtype=np.float32)[:, None]
    # The background covers everything: it initialises both views.
    bg = layers[0]
    disp_left = (bg.a + bg.b * xs + bg.c * ys).astype(np.float32)
    disp_right = ((xs + bg.a + bg.c * ys) / (1.0 - bg.b) - xs).astype(np.float32)
    id_left = np.zeros((height, width), np.int32)
    id_right = np.zeros((height, width), np.int32)
    for k, layer in enumerate(layers[1:], start=1):
        bx0, by0, bx1, by1 = layer.bbox
        rows = slice(max(by0, 0), min(by1, height))
        if rows.start >= rows.stop:
            continue
        y = ys[rows]
        # Left view: the plane seen at integer pixels inside the shape's box.
        cols = slice(max(bx0, 0), min(bx1, width))
        if cols.start < cols.stop:
            x = xs[:, cols]
            d = layer.a + layer.b * x + layer.c * y
            win = (rows, cols)
            nearer = _covers(layer, x, y) & (d > disp_left[win])
            disp_left[win] = np.where(nearer, d, disp_left[win])
            id_left[win][nearer] = k
        # Right view: pixel x_r sees left-plane x = (x_r + a + c y) / (1 - b); the box's
        # disparity extremes sit at its corners, which bounds the x_r window.
        corners = [layer.a + layer.b * cx + layer.c * cy for cx in (bx0, bx1) for cy in (by0, by1)]
        cols = slice(max(int(np.floor(bx0 - max(corners))) - 1, 0),
                     min(int(np.ceil(bx1 - min(corners))) + 1, width))
        if cols.start < cols.stop:
            x = xs[:, cols]
            x_src = (x + layer.a + layer.c * y) / (1.0 - layer.b)
            d = x_src - x
            win = (rows, cols)
            nearer = _covers(layer, x_src, y) & (d > disp_right[win])
            disp_right[win] = np.where(nearer, d, disp_right[win])
            id_right[win][nearer] = k

    # One look-up per view into the texture atlas; the right view samples at x_r + d.
    map_y = (ys + shift_y[id_left]).astype(np.float32)
    left = _sample(atlas, (xs + shift_x[id_left]).astype(np.float32), map_y)
    map_y = (ys + shift_y[id_right]).astype(np.float32)
    right = _sample(atlas, (xs + disp_right + shift_x[id_right]).astype(np.float32), map_y)
    # Independent sensor noise and a small exposure difference, so that matching has to be
    # robust rather than exact-equality.
    gain = np.float32(1.0 + rng.uniform(-0.04, 0.04))
    bias = np.float32(rng.uniform(-4.0, 4.0))
    left += _noise(rng, left.shape)
    right *= gain
    right += bias
    right += _noise(rng, right.shape)
    return _to_uint8(left), _to_uint8(right), disp_left


def _atlas(
    textures: list[tuple[np.ndarray, int, int]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack textures vertically (2-px gaps so bilinear taps never mix neighbours).

    Returns the atlas and per-layer offsets that map left-view coordinates to atlas coordinates.
    """
    height = sum(t.shape[0] + 2 for t, _, _ in textures)
    width = max(t.shape[1] for t, _, _ in textures)
    atlas = np.zeros((height, width, 3), np.float32)
    shift_x = np.empty(len(textures), np.float32)
    shift_y = np.empty(len(textures), np.float32)
    top = 0
    for k, (tex, x0, y0) in enumerate(textures):
        atlas[top : top + tex.shape[0], : tex.shape[1]] = tex
        shift_x[k], shift_y[k] = -x0, top - y0
        top += tex.shape[0] + 2
    return atlas, shift_x, shift_y


# Gaussian quantiles (sigma 1.5 grey levels) looked up by random bytes: per-pixel sensor noise at
# a fraction of the cost of drawing normals.
_NOISE_TABLE = (np.sort(np.random.default_rng(0).standard_normal(256)) * 1.5).astype(np.float32)


def _noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    idx = np.frombuffer(rng.bytes(int(np.prod(shape))), np.uint8).reshape(shape)
    return _NOISE_TABLE[idx]


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _plane(
    rng: np.random.Generator, lo: float, hi: float, cx: float, cy: float, half_w: float,
    half_h: float,
) -> tuple[float, float, float]:
    """A plane with values in ``[lo, hi]`` over a box of half size (half_w, half_h) at (cx, cy)."""
    centre = rng.uniform(lo, hi)
    room = min(centre - lo, hi - centre)
    # Split the allowed variation between x and y slopes; keep |b| small so 1 - b stays > 0.5.
    share = rng.uniform(0.0, 1.0)
    b = rng.uniform(-1.0, 1.0) * room * share / max(half_w, 1.0)
    c = rng.uniform(-1.0, 1.0) * room * (1.0 - share) / max(half_h, 1.0)
    b = float(np.clip(b, -0.3, 0.3))
    return centre - b * cx - c * cy, b, c


def _scene(rng: np.random.Generator, height: int, width: int, max_disp: float) -> list[_Layer]:
    lo, hi = 0.02 * max_disp, 0.95 * max_disp
    # Texture must cover the right view's look-ups: left-plane x reaches width + max_disp.
    margin = int(np.ceil(max_disp)) + 2
    bg_hi = lo + rng.uniform(0.25, 0.6) * (hi - lo)
    a, b, c = _plane(
        rng, lo, bg_hi, width / 2 + margin / 2, height / 2, (width + margin) / 2, height / 2
    )
    layers = [_Layer(a, b, c, "plane", (), (-2, -2, width + margin, height + 2))]
    area = height * width
    for _ in range(int(rng.integers(3, 9))):
        kind = str(rng.choice(["ellipse", "rect", "triangle"]))
        size = np.sqrt(area) * rng.uniform(0.08, 0.35)
        rx, ry = size * rng.uniform(0.5, 1.5), size * rng.uniform(0.5, 1.5)
        cx = rng.uniform(-0.1, 1.1) * width
        cy = rng.uniform(-0.1, 1.1) * height
        theta = rng.uniform(0.0, np.pi)
        if kind == "triangle":
            angles = theta + np.sort(rng.uniform(0.0, 2 * np.pi, 3))
            radii = rng.uniform(0.6, 1.2, 3) * max(rx, ry)
            pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
            params = tuple(float(v) for v in pts.ravel())
            ex, ey = np.abs(pts - [cx, cy]).max(0)
        else:
            cos_t, sin_t = np.cos(theta), np.sin(theta)
            params = (cx, cy, rx, ry, cos_t, sin_t)
            # Half extents of the rotated shape's axis-aligned box (tight, so textures are small).
            if kind == "ellipse":
                ex, ey = np.hypot(rx * cos_t, ry * sin_t), np.hypot(rx * sin_t, ry * cos_t)
            else:
                ex = abs(rx * cos_t) + abs(ry * sin_t)
                ey = abs(rx * sin_t) + abs(ry * cos_t)
        # Foreground layers sit in front of most of the background.
        d_lo = lo + rng.uniform(0.1, 0.6) * (hi - lo)
        a, b, c = _plane(rng, d_lo, hi, cx, cy, float(ex), float(ey))
        bbox = (
            int(np.floor(cx - ex)) - 2,
            int(np.floor(cy - ey)) - 2,
            int(np.ceil(cx + ex)) + 2,
            int(np.ceil(cy + ey)) + 2,
        )
        layers.append(_Layer(a, b, c, kind, tuple(float(p) for p in params), bbox))
    return layers


def _covers(layer: _Layer, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean mask of the points ``(x, y)`` (left-view px) inside the layer's shape."""
    if layer.kind == "plane":
        return np.ones(x.shape, bool)
    if layer.kind == "triangle":
        p = np.asarray(layer.params).reshape(3, 2)
        signs = []
        for i in range(3):
            (xa, ya), (xb, yb) = p[i], p[(i + 1) % 3]
            signs.append((xb - xa) * (y - ya) - (yb - ya) * (x - xa) >= 0)
        return (signs[0] & signs[1] & signs[2]) | (~signs[0] & ~signs[1] & ~signs[2])
    cx, cy, rx, ry, cos_t, sin_t = layer.params
    u = ((x - cx) * cos_t + (y - cy) * sin_t) / rx
    v = (-(x - cx) * sin_t + (y - cy) * cos_t) / ry
    if layer.kind == "ellipse":
        return u * u + v * v <= 1.0
    return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)


def _sample(texture: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear look-up of ``texture`` (h, w, 3) at float coordinates; clamps outside."""
    return cv2.remap(texture, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _texture(
    rng: np.random.Generator, bbox: tuple[int, int, int, int], height: int, width: int,
    margin: int,
) -> tuple[np.ndarray, int, int]:
    """A float32 (h, w, 3) RGB texture over ``bbox`` and its origin (x0, y0) in left-view px.

    Colour, a gradient, multi-scale noise and sharp edges. The support is clipped to what either
    view can look up (left-plane x in [0, width + margin)); outside it the shape is never visible.
    """
    x0, y0 = max(bbox[0], -2), max(bbox[1], -2)
    x1, y1 = min(bbox[2], width + margin), min(bbox[3], height + 2)
    h, w = max(y1 - y0, 2), max(x1 - x0, 2)
    # Pyramid synthesis: base colour and a linear gradient (exact under bilinear resizing) on
    # the coarsest grid, then octaves of value noise added while upsampling towards pixel scale.
    # Only the last resize and the edge pattern touch full-size arrays, which keeps this fast.
    gh, gw = max(h // 48, 1) + 2, max(w // 48, 1) + 2
    angle = rng.uniform(0.0, 2 * np.pi)
    ramp = np.cos(angle) * np.linspace(-1, 1, gw, dtype=np.float32)[None, :] + np.sin(
        angle
    ) * np.linspace(-1, 1, gh, dtype=np.float32)[:, None]
    grid = rng.uniform(30.0, 225.0, 3).astype(np.float32) + ramp[..., None] * rng.uniform(
        -50.0, 50.0, 3
    ).astype(np.float32)
    # Per-layer contrast: some layers are weakly textured (hard to match, as in real scenes);
    # the fine octaves are strong enough that a 1 px shift is visible on most layers.
    contrast = rng.uniform(0.3, 1.0)
    for cell, amp_hi in ((48, 30.0), (16, 25.0), (6, 30.0), (2, 40.0)):
        gh, gw = max(h // cell, 1) + 2, max(w // cell, 1) + 2
        if grid.shape[:2] != (gh, gw):
            grid = cv2.resize(grid, (gw, gh), interpolation=cv2.INTER_LINEAR)
        amp = np.float32(contrast * rng.uniform(0.3, 1.0) * amp_hi)
        if rng.random() < 0.5:  # coloured noise
            grid += rng.standard_normal((gh, gw, 3), dtype=np.float32) * amp
        else:  # luminance noise with a random tint
            tint = rng.uniform(0.6, 1.4, 3).astype(np.float32) * amp
            grid += rng.standard_normal((gh, gw, 1), dtype=np.float32) * tint
    tex = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    # Sharp edges: stripes or a checkerboard of random period and orientation.
    pattern = rng.random()
    if pattern < 0.6:
        period = rng.uniform(4.0, 40.0)
        t = rng.uniform(0.0, np.pi)
        cos_t, sin_t = np.float32(np.cos(t) / period), np.float32(np.sin(t) / period)
        ys = np.arange(h, dtype=np.float32)
        xs = np.arange(w, dtype=np.float32)
        # The offset keeps the coordinates positive so truncation acts like floor.
        u = np.add.outer(ys * sin_t + np.float32(1e4), xs * cos_t).astype(np.int32)
        if pattern >= 0.3:
            u += np.add.outer(ys * cos_t + np.float32(1e4), -xs * sin_t).astype(np.int32)
        step = np.stack([np.zeros(3), rng.uniform(-60.0, 60.0, 3)]).astype(np.float32)
        tex += step[u & 1]
    return tex, x0, y0


def split_scenes(
    split: str, count: int, height: int, width: int, max_disp: float, seed: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The first ``count`` scenes of ``split`` ("train"; any other: the val index space) as
    ``render_pair`` makes them."""
    offset = 0 if split == "train" else VAL_INDEX_OFFSET
    for i in range(count):
        yield render_pair(seed, offset + i, height, width, max_disp)
