"""Generated scenes in the spirit of FlyingThings3D, with exact analytic ground truth.

A scene is a far background, often a ground plane seen in perspective, and 10-30 objects at
every depth: slanted and rotated planes and curved surfaces (ellipses, rectangles, star-shaped
blobs, convex polygons) and thin structures (poles, wires, branches). Each is a
:class:`~stereoq.data.surfaces.Surface`: a disparity field over left-view coordinates. In each
view the nearest surface wins at every pixel (the left view evaluates the field at its pixels,
the right view inverts ``x_r = x - d(x, y)``), so occlusions on both sides of every object come
out exact and the ground truth at each pixel is the disparity of one surface. Textures
(:mod:`stereoq.data.textures`) live on the surfaces, and each view then goes through its own
camera (:mod:`stereoq.data.camera_effects`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stereoq.data import camera_effects
from stereoq.data.surfaces import MAX_SLOPE_X, Surface
from stereoq.data.textures import Photos, periodic_pink_noise, random_texture

# Disparities stay within [LO, HI] * max_disp: positive, and valid below the model's maxdisp.
LO, HI = 0.01, 0.97
GROUND_TEXTURE_PX = 512
OBJECTS = (10, 30)
"""The default range of a scene's object count."""


@dataclass(frozen=True)
class RenderedScene:
    """Both views before the cameras (float32 (H, W, 3) grey levels), both disparity maps
    (float32 (H, W), px, of the view's own pixels) and ``noc_left``: left pixels whose surface
    point the right view sees too (in frame and not occluded)."""

    left: np.ndarray
    right: np.ndarray
    disp_left: np.ndarray
    disp_right: np.ndarray
    noc_left: np.ndarray


def render_pair(
    seed: int, index: int, height: int, width: int, max_disp: float, photos: Photos = (),
    open_share: float = 0.0, objects: tuple[int, int] = OBJECTS,
    camera_strength: tuple[float, float] | None = camera_effects.STRENGTH,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scene, deterministic in ``(seed, index)`` (and the photos, ``open_share``: the
    share of solid objects drawn with holes, and ``objects``: see ``render_scene``; the
    cameras' ``camera_strength``: see :func:`stereoq.data.camera_effects.apply`).

    Returns ``left``, ``right``: uint8 (H, W, 3) RGB, and ``disp``: float32 (H, W) disparity of
    the left view in px, every pixel valid, within ``[0.01, 0.97] * max_disp``.
    """
    rng = np.random.default_rng([int(seed), int(index), 14])
    scene = render_scene(rng, height, width, max_disp, photos, open_share, objects)
    left, right = camera_effects.apply(rng, scene.left, scene.right, camera_strength)
    return left, right, scene.disp_left


def render_scene(
    rng: np.random.Generator, height: int, width: int, max_disp: float, photos: Photos = (),
    open_share: float = 0.0, objects: tuple[int, int] = OBJECTS,
) -> RenderedScene:
    """Sample a scene from ``rng`` and render both views without camera effects.

    A scene has ``objects[0]`` to ``objects[1]`` objects besides its background and ground.

    ``open_share`` of the solid objects are open (rings with spokes, frames, lattices: what is
    behind shows through them). With 0 no random number is drawn for it: the scenes are those
    of the generator without open shapes, scene for scene.
    """
    max_disp = float(max_disp)
    margin = int(np.ceil(max_disp)) + 2
    surfaces = _scene(rng, height, width, max_disp, margin, open_share, objects)
    xs = np.arange(width, dtype=np.float32)[None, :]
    ys = np.arange(height, dtype=np.float32)[:, None]

    disp_l = np.full((height, width), -np.inf, np.float32)
    disp_r = np.full((height, width), -np.inf, np.float32)
    id_l = np.zeros((height, width), np.int32)
    id_r = np.zeros((height, width), np.int32)
    for k, s in enumerate(surfaces):
        bx0, by0, bx1, by1 = s.bbox
        rows = slice(max(by0, 0), min(by1, height))
        if rows.start >= rows.stop:
            continue
        y = ys[rows]
        cols = slice(max(bx0, 0), min(bx1, width))
        if cols.start < cols.stop:
            x = xs[:, cols]
            d = s.disparity(x, y)
            win = (rows, cols)
            nearer = (d > disp_l[win]) & (d > 0) & s.covers(x, y)
            disp_l[win] = np.where(nearer, d, disp_l[win])
            id_l[win] = np.where(nearer, k, id_l[win])
        # Right pixels that can see the box: x_r = x - d with d within the surface's range.
        d_lo, d_hi = _range(s)
        cols = slice(max(int(np.floor(bx0 - d_hi)) - 1, 0),
                     min(int(np.ceil(bx1 - d_lo)) + 1, width))
        if cols.start < cols.stop:
            x_r = np.broadcast_to(xs[:, cols], (rows.stop - rows.start, cols.stop - cols.start))
            x_src, ok = s.right_to_left(x_r, y)
            d = x_src - x_r
            win = (rows, cols)
            nearer = ok & (d > disp_r[win]) & (d > 0) & s.covers(x_src, y)
            disp_r[win] = np.where(nearer, d, disp_r[win])
            id_r[win] = np.where(nearer, k, id_r[win])

    textures = [_surface_texture(rng, s, height, width, margin, photos) for s in surfaces]
    left = _shade(surfaces, textures, id_l, np.broadcast_to(xs, id_l.shape), ys, disp_l)
    right = _shade(surfaces, textures, id_r, xs + disp_r, ys, disp_r)

    # A left pixel is seen by the right view when the right pixels either side of x - d show
    # the same surface (conservative at that surface's own edges).
    x_r = xs - disp_l
    lo = np.floor(x_r).astype(np.int32)
    inside = (lo >= 0) & (lo + 1 < width)
    rr = np.broadcast_to(np.arange(height)[:, None], lo.shape)
    lo_c, hi_c = np.clip(lo, 0, width - 1), np.clip(lo + 1, 0, width - 1)
    noc = inside & (id_r[rr, lo_c] == id_l) & (id_r[rr, hi_c] == id_l)
    return RenderedScene(left, right, disp_l, disp_r, noc)


def _range(s: Surface) -> tuple[float, float]:
    """Bounds of the surface's disparity over its box (the quadratic's terms bounded one by
    one, so slightly wide)."""
    hw = max(abs(s.bbox[0] - s.x0), abs(s.bbox[2] - s.x0))
    hh = max(abs(s.bbox[1] - s.y0), abs(s.bbox[3] - s.y0))
    spread = (abs(s.bx) * hw + abs(s.by) * hh + abs(s.cxx) * hw * hw + abs(s.cyy) * hh * hh
              + abs(s.cxy) * hw * hh)
    return s.d0 - spread, s.d0 + spread


def _shade(
    surfaces: list[Surface], textures: list[tuple[np.ndarray, int, int]], ids: np.ndarray,
    x_src: np.ndarray, ys: np.ndarray, disp: np.ndarray,
) -> np.ndarray:
    """Look up every pixel's texture: ``x_src`` is the left-view x of the surface point it sees
    (the pixel itself in the left view, x_r + d in the right)."""
    h, w = ids.shape
    out = np.empty((h * w, 3), np.float32)
    flat_ids = ids.ravel()
    order = np.argsort(flat_ids, kind="stable")
    bounds = np.searchsorted(flat_ids[order], np.arange(len(surfaces) + 1))
    x_all = np.ascontiguousarray(x_src, np.float32).ravel()
    y_all = np.broadcast_to(ys, (h, w)).ravel()
    d_all = disp.ravel()
    for k, s in enumerate(surfaces):
        pix = order[bounds[k] : bounds[k + 1]]
        if pix.size == 0:
            continue
        tex, tx0, ty0 = textures[k]
        x, y = x_all[pix], y_all[pix]
        if s.ground:
            # World coordinates on the floor: across ~ (x - cx) / d, along ~ 1 / d.
            d = np.maximum(d_all[pix], np.float32(1e-3))
            u = np.float32(s.params[0]) * (x - np.float32(s.x0)) / d
            v = np.float32(s.params[1]) / d
            size = np.float32(tex.shape[0])
            u, v = np.mod(u, size), np.mod(v, size)
        else:
            u, v = x - np.float32(tx0), y - np.float32(ty0)
        border = cv2.BORDER_WRAP if s.ground else cv2.BORDER_REPLICATE
        out[pix] = _lookup(tex, u, v, border)
    return out.reshape(h, w, 3)


def _lookup(tex: np.ndarray, u: np.ndarray, v: np.ndarray, border: int) -> np.ndarray:
    """Bilinear look-up of ``tex`` at N points -> (N, 3); maps are folded into rows of 1024
    (OpenCV's maps must stay below 32767 a side)."""
    n = u.size
    rows = -(-n // 1024)
    maps = np.zeros((2, rows * 1024), np.float32)
    maps[0, :n], maps[1, :n] = u, v
    maps = maps.reshape(2, rows, 1024)
    return cv2.remap(tex, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=border).reshape(-1, 3)[:n]


def _surface_texture(
    rng: np.random.Generator, s: Surface, height: int, width: int, margin: int, photos: Photos,
) -> tuple[np.ndarray, int, int]:
    """The surface's texture and its origin in left-view px (the ground's is periodic, in
    world coordinates). The support is clipped to what either view can look up."""
    if s.ground:
        size = GROUND_TEXTURE_PX if max(height, width) > 512 else GROUND_TEXTURE_PX // 2
        # Rough, periodic materials (gravel, asphalt, grass): aliasing far away stays plausible.
        tex = random_texture(rng, size, size, photos) if rng.random() < 0.3 else None
        lum = periodic_pink_noise(rng, size, rng.uniform(1.6, 2.4))
        base = rng.uniform(40.0, 200.0, 3).astype(np.float32)
        ground = base + lum[..., None] * rng.uniform(10.0, 40.0, 3).astype(np.float32)
        return (ground if tex is None else 0.5 * (ground + tex)), 0, 0
    x0, y0 = max(s.bbox[0], -2), max(s.bbox[1], -2)
    x1, y1 = min(s.bbox[2], width + margin), min(s.bbox[3], height + 2)
    h, w = max(y1 - y0, 4), max(x1 - x0, 4)
    return random_texture(rng, h, w, photos), x0, y0


def _field(
    rng: np.random.Generator, d_centre: float, lo: float, hi: float, hw: float, hh: float,
    curved: bool,
) -> tuple[float, float, float, float, float]:
    """Coefficients (bx, by, cxx, cyy, cxy) of a field around ``d_centre`` that stays within
    [lo, hi] over a box of half size (hw, hh) and keeps |dd/dx| <= MAX_SLOPE_X there."""
    hw, hh = max(hw, 1.0), max(hh, 1.0)
    room = min(d_centre - lo, hi - d_centre) * rng.uniform(0.0, 1.0) ** 0.7
    share = rng.dirichlet(np.ones(5)) if curved else np.r_[rng.dirichlet(np.ones(2)), 0, 0, 0]
    signs = rng.choice([-1.0, 1.0], 5)
    bx, by, cxx, cyy, cxy = signs * room * share / [hw, hh, hw * hw, hh * hh, hw * hh]
    slope = abs(bx) + 2 * abs(cxx) * hw + abs(cxy) * hh
    if slope > MAX_SLOPE_X:  # scaling every term keeps the range bound too
        bx, by, cxx, cyy, cxy = np.array([bx, by, cxx, cyy, cxy]) * MAX_SLOPE_X / slope
    return float(bx), float(by), float(cxx), float(cyy), float(cxy)


def _scene(
    rng: np.random.Generator, height: int, width: int, max_disp: float, margin: int,
    open_share: float = 0.0, objects: tuple[int, int] = OBJECTS,
) -> list[Surface]:
    """Background first (it covers everything), then a ground plane and the objects."""
    lo, hi = LO * max_disp, HI * max_disp
    span = hi - lo
    full = (-2, -2, width + margin, height + 2)
    cx, cy = (full[0] + full[2]) / 2, (full[1] + full[3]) / 2
    hw, hh = (full[2] - full[0]) / 2, (full[3] - full[1]) / 2
    bg_d = lo + rng.uniform(0.02, 0.3) * span
    field = _field(rng, bg_d, lo, lo + 0.4 * span, hw, hh, rng.random() < 0.3)
    surfaces = [Surface(cx, cy, bg_d, *field, "full", (), full)]

    if rng.random() < 0.6:
        # A floor: d = k (y - y_horizon) + roll (x - cx), nearest at the bottom row.
        horizon = rng.uniform(0.15, 0.65) * height
        d_bottom = rng.uniform(0.35, 1.0) * hi
        roll = rng.uniform(-0.15, 0.15) * d_bottom / (width / 2 + margin)
        d_bottom = min(d_bottom, hi - abs(roll) * (width / 2 + margin))
        k = d_bottom / (height + 2 - horizon)
        # Texture scale: about one texel per pixel at the bottom row.
        scale_u = d_bottom * rng.uniform(0.5, 1.5)
        scale_v = d_bottom * d_bottom / k * rng.uniform(0.5, 1.5)
        surfaces.append(Surface(width / 2, horizon, 0.0, roll, k, 0.0, 0.0, 0.0, "full",
                                (scale_u, scale_v), full, ground=True))

    area_side = np.sqrt(height * width)
    count = int(rng.integers(objects[0], objects[1] + 1))
    thin = int(rng.integers(1, 6))
    for i in range(count):
        ox = rng.uniform(-0.1, 1.1) * width
        oy = rng.uniform(-0.1, 1.1) * height
        # Any depth in front of the background: uniform in disparity, which favours near.
        d_min = min(surfaces[0].disparity(np.float32(ox), np.float32(oy)) + 0.5, hi - 1.0)
        d_c = rng.uniform(max(d_min, lo), hi)
        if i < thin:
            kind, params, box = _thin(rng, ox, oy, height, width)
        else:
            size = area_side * np.exp(rng.uniform(np.log(0.03), np.log(0.35)))
            size *= 0.6 + 0.8 * (d_c - lo) / span  # nearer objects tend to look bigger
            if open_share > 0.0 and rng.random() < open_share:
                kind, params, box = _open(rng, ox, oy, size * 1.3)
            else:
                kind, params, box = _solid(rng, ox, oy, size)
        bx0, by0, bx1, by1 = box
        if bx1 < -2 or by1 < -2 or bx0 > width + margin or by0 > height + 2:
            continue
        hw, hh = max(ox - bx0, bx1 - ox), max(oy - by0, by1 - oy)
        field = _field(rng, d_c, lo, hi, hw, hh, rng.random() < 0.4)
        bbox = (int(np.floor(bx0)) - 1, int(np.floor(by0)) - 1, int(np.ceil(bx1)) + 2,
                int(np.ceil(by1)) + 2)
        surfaces.append(Surface(ox, oy, d_c, *field, kind, params, bbox))
    return surfaces


def _solid(
    rng: np.random.Generator, cx: float, cy: float, size: float
) -> tuple[str, tuple[float, ...], tuple[float, float, float, float]]:
    """An ellipse, rectangle, star-shaped blob or convex polygon: kind, params, float box."""
    kind = str(rng.choice(["ellipse", "rect", "blob", "polygon"], p=[0.2, 0.25, 0.25, 0.3]))
    rx, ry = size * rng.uniform(0.3, 1.0), size * rng.uniform(0.3, 1.0)
    theta = rng.uniform(0.0, np.pi)
    cos_t, sin_t = float(np.cos(theta)), float(np.sin(theta))
    if kind == "polygon":
        n = int(rng.integers(3, 8))
        angles = np.sort(rng.uniform(0.0, 2 * np.pi, n))
        pts = np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], 1)
        params = tuple(float(v) for v in pts.ravel())
        return kind, params, (*pts.min(0), *pts.max(0))
    params: tuple[float, ...] = (cx, cy, rx, ry, cos_t, sin_t)
    reach = 1.0
    if kind == "blob":
        amps = rng.uniform(0.0, 0.25, 3)
        params += tuple(float(v) for pair in zip(amps, rng.uniform(0, 2 * np.pi, 3), strict=True)
                        for v in pair)
        reach = 1.0 + float(amps.sum())
    # Ellipses; blobs within ``reach`` times theirs.
    return kind, params, _box(cx, cy, rx, ry, cos_t, sin_t, kind == "rect", reach)


def _box(
    cx: float, cy: float, rx: float, ry: float, cos_t: float, sin_t: float, rect: bool,
    reach: float = 1.0,
) -> tuple[float, float, float, float]:
    """Float box of a rotated rectangle (``rect``) or ellipse of half axes ``rx``, ``ry``
    (times ``reach``)."""
    if rect:
        ex, ey = abs(rx * cos_t) + abs(ry * sin_t), abs(rx * sin_t) + abs(ry * cos_t)
    else:
        ex, ey = np.hypot(rx * cos_t, ry * sin_t) * reach, np.hypot(rx * sin_t, ry * cos_t) * reach
    return cx - ex, cy - ey, cx + ex, cy + ey


def _open(
    rng: np.random.Generator, cx: float, cy: float, size: float
) -> tuple[str, tuple[float, ...], tuple[float, float, float, float]]:
    """A ring with spokes, a frame or a lattice (``Surface.covers``): kind, params, float box.
    Bars are 1.5-8 px wide whatever the object's size, as real ones are."""
    kind = str(rng.choice(["ring", "frame", "lattice"], p=[0.3, 0.25, 0.45]))
    rx, ry = size * rng.uniform(0.4, 1.0), size * rng.uniform(0.4, 1.0)
    rx, ry = max(rx, 6.0), max(ry, 6.0)
    theta = rng.uniform(0.0, np.pi) if rng.random() < 0.5 else rng.normal(0.0, 0.1)
    cos_t, sin_t = float(np.cos(theta)), float(np.sin(theta))
    params: tuple[float, ...] = (cx, cy, rx, ry, cos_t, sin_t)
    small = min(rx, ry)
    if kind == "ring":
        rim = rng.uniform(1.5, 8.0) / small
        spokes = int(rng.choice([0, 0, 2, 3, 4, 6, 8]))
        half = rng.uniform(0.75, 2.0) / small
        params += (max(1.0 - rim, 0.2), float(spokes), float(rng.uniform(0.0, np.pi)),
                   float(half))
    else:
        bar_u, bar_v = rng.uniform(1.5, 8.0, 2) / [rx, ry]
        if kind == "frame":
            params += (float(min(bar_u, 0.6)), float(min(bar_v, 0.6)))
        else:
            # Bars one way (shelves, slats, pickets), or both (grids), 5-30 px apart.
            ways = rng.choice(["u", "v", "uv"], p=[0.35, 0.35, 0.3])
            gap_u, gap_v = rng.uniform(5.0, 30.0, 2)
            per_u = 2 * rx / gap_u if "u" in ways else 0.0
            per_v = 2 * ry / gap_v if "v" in ways else 0.0
            width_u, width_v = rng.uniform(1.5, 6.0, 2) / [gap_u, gap_v]
            edge = rng.uniform(0.0, 6.0, 2) / [rx, ry] * (rng.random() < 0.6)
            params += (float(per_u), float(per_v), float(min(width_u, 0.6)),
                       float(min(width_v, 0.6)), float(edge[0]), float(edge[1]))
    return kind, params, _box(cx, cy, rx, ry, cos_t, sin_t, kind != "ring")


def _thin(
    rng: np.random.Generator, cx: float, cy: float, height: int, width: int
) -> tuple[str, tuple[float, ...], tuple[float, float, float, float]]:
    """A pole, a wire or a branch, 1.6-6 px wide: kind, params, float box."""
    pick = rng.random()
    if pick < 0.4:  # a pole, mostly upright
        length = rng.uniform(0.3, 1.2) * height
        angle = np.pi / 2 + rng.normal(0.0, 0.25)
        radius = rng.uniform(0.8, 3.0)
        dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
        segs = [(cx - dx, cy - dy, cx + dx, cy + dy)]
        kind = "capsules"
    elif pick < 0.7:  # a wire across the view, sagging
        half_len = rng.uniform(0.2, 0.7) * width
        half = rng.uniform(0.8, 1.5)
        slope, sag = rng.uniform(-0.3, 0.3), rng.uniform(0.0, 2.0) / half_len
        xa, xb = cx - half_len, cx + half_len
        ya = cy - slope * half_len - sag * half_len * half_len
        t = np.linspace(0.0, xb - xa, 9)
        yy = ya + slope * t + sag * t * t
        reach = half * np.sqrt(1.0 + (abs(slope) + 2 * sag * (xb - xa)) ** 2)
        return "wire", (xa, xb, ya, slope, sag, half), (xa, yy.min() - reach, xb,
                                                         yy.max() + reach)
    else:  # a branch: a limb with twigs
        radius = rng.uniform(0.8, 2.5)
        length = rng.uniform(0.15, 0.5) * min(height, width)
        angle = rng.uniform(0.0, 2 * np.pi)
        end = (cx + np.cos(angle) * length, cy + np.sin(angle) * length)
        segs = [(cx, cy, *end)]
        for _ in range(int(rng.integers(2, 6))):
            t = rng.uniform(0.2, 1.0)
            sx, sy = cx + t * (end[0] - cx), cy + t * (end[1] - cy)
            a = angle + rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 1.2)
            twig = length * rng.uniform(0.2, 0.5)
            segs.append((sx, sy, sx + np.cos(a) * twig, sy + np.sin(a) * twig))
        kind = "capsules"
    pts = np.asarray(segs, np.float64).reshape(-1, 2)
    params = (float(radius), *(float(v) for seg in segs for v in seg))
    lo, hi = pts.min(0) - radius, pts.max(0) + radius
    return kind, params, (lo[0], lo[1], hi[0], hi[1])
