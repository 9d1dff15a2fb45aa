"""Surface textures for generated scenes, with the statistics of real images.

Every texture is a float32 (h, w, 3) RGB array in grey levels (0-255, not clipped), drawn from
``rng`` only, so a scene stays deterministic in its seed. The kinds: 1/f ("pink") multi-scale
noise, dead-leaves patches (occluding discs and polygons, which have the scale invariance and
the hard colour edges of natural images), strokes, repeated patterns (stripes, checkers, dots,
grids), nearly flat low-texture surfaces, and crops of the user's photographs.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from stereoq.errors import StereoqError

# Photographs are shrunk to this longest side on load: crops are resized to object size anyway,
# and DataLoader workers receive the photos pickled.
PHOTO_MAX_SIDE = 640
PHOTO_MAX_COUNT = 256
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

Photos = tuple[np.ndarray, ...]


def load_photos(folder: str | Path) -> Photos:
    """The readable images under ``folder`` (recursive, sorted, at most ``PHOTO_MAX_COUNT``),
    as float32 RGB shrunk to ``PHOTO_MAX_SIDE``. Raises when there is none."""
    root = Path(folder)
    if not root.is_dir():
        raise StereoqError(f"data.synthetic.texture_dir {root}: not a folder", exit_code=2)
    photos = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None or min(image.shape[:2]) < 16:
            continue
        scale = PHOTO_MAX_SIDE / max(image.shape[:2])
        if scale < 1.0:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        photos.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB).astype(np.float32))
        if len(photos) == PHOTO_MAX_COUNT:
            break
    if not photos:
        raise StereoqError(
            f"data.synthetic.texture_dir {root}: no readable image "
            f"({', '.join(PHOTO_SUFFIXES)}, at least 16x16)", exit_code=2,
        )
    return tuple(photos)


def random_texture(rng: np.random.Generator, h: int, w: int, photos: Photos = ()) -> np.ndarray:
    """One texture of a randomly drawn kind, (h, w, 3) float32."""
    kinds = (_pink, _dead_leaves, _strokes, _pattern, _low_texture)
    weights = np.array([0.3, 0.3, 0.15, 0.17, 0.08])
    if photos and rng.random() < 0.4:
        tex = _photo_crop(rng, h, w, photos)
    else:
        tex = kinds[int(rng.choice(len(kinds), p=weights))](rng, h, w)
    if rng.random() < 0.35:  # a second kind seen through a soft or hard mask: mixed materials
        other = kinds[int(rng.choice(len(kinds), p=weights))](rng, h, w)
        mask = pink_noise(rng, h, w, 2.0)[..., None]
        if rng.random() < 0.5:
            mask = (mask > 0).astype(np.float32)
        else:
            mask = np.clip(mask * 2.0 + 0.5, 0.0, 1.0)
        tex = tex * (1.0 - mask) + other * mask
    return tex


def pink_noise(rng: np.random.Generator, h: int, w: int, beta: float) -> np.ndarray:
    """(h, w) float32 noise with power spectrum ~ 1/f**beta (beta 2: amplitude ~ 1/f), zero
    mean, unit standard deviation: octaves of white noise, each upsampled bilinearly into the
    next (a 2D octave band of such a spectrum carries power ~ f**(2 - beta))."""
    levels = max(int(np.ceil(np.log2(max(h, w)))) - 1, 1)
    gain = np.float32(2.0 ** ((2.0 - beta) / 2.0))
    noise = rng.standard_normal((2, 2), dtype=np.float32)
    amp = np.float32(1.0)
    for level in range(1, levels + 1):
        size = (max(w >> (levels - level), 2), max(h >> (levels - level), 2))
        noise = cv2.resize(noise, size, interpolation=cv2.INTER_LINEAR)
        amp *= gain
        noise += rng.standard_normal(noise.shape, dtype=np.float32) * amp
    if noise.shape != (h, w):
        noise = cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR)
    noise -= noise.mean()
    return noise / max(float(noise.std()), 1e-6)


def periodic_pink_noise(rng: np.random.Generator, size: int, beta: float) -> np.ndarray:
    """(size, size) float32 1/f**beta noise shaped in the Fourier domain, so it tiles without
    seams (for textures looked up with wrap-around); zero mean, unit standard deviation."""
    spectrum = np.fft.rfft2(rng.standard_normal((size, size), dtype=np.float32))
    fy = np.fft.fftfreq(size).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(size).astype(np.float32)[None, :]
    freq = np.sqrt(fy * fy + fx * fx)
    freq[0, 0] = 1.0
    spectrum *= freq ** np.float32(-beta / 2.0)
    spectrum[0, 0] = 0.0
    noise = np.fft.irfft2(spectrum, s=(size, size)).astype(np.float32)
    return noise / max(float(noise.std()), 1e-6)


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(15.0, 240.0, 3).astype(np.float32)


def _tinted(rng: np.random.Generator, lum: np.ndarray, amp: float) -> np.ndarray:
    """A luminance field as colour: a base colour plus ``lum`` times a random tint, plus a
    weaker, coarser chroma variation."""
    tint = rng.uniform(0.6, 1.4, 3).astype(np.float32) * np.float32(amp)
    tex = _colour(rng) + lum[..., None] * tint
    h, w = lum.shape
    chroma = rng.standard_normal((max(h // 32, 1) + 1, max(w // 32, 1) + 1, 3), dtype=np.float32)
    return tex + cv2.resize(chroma, (w, h), interpolation=cv2.INTER_LINEAR) * np.float32(
        rng.uniform(0.0, 0.3) * amp
    )


def _pink(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return _tinted(rng, pink_noise(rng, h, w, rng.uniform(1.4, 2.6)), rng.uniform(15.0, 55.0))


def _dead_leaves(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Occluding flat-coloured discs, rectangles and triangles with power-law radii."""
    tex = np.empty((h, w, 3), np.float32)
    tex[:] = _colour(rng)
    r_max = max(min(h, w) * 0.6, 3.0)
    r_min = max(1.5, r_max / rng.uniform(20.0, 80.0))
    # Radii with density ~ r**-3 (scale invariance) by inverse transform; enough shapes to
    # cover the texture about twice (E[r^2] = 2 r_min^2 ln(r_max / r_min) for this density).
    mean_r2 = 2.0 * r_min**2 * np.log(r_max / r_min) + r_min**2
    count = int(np.clip(2.0 * h * w / (np.pi * mean_r2), 8, 2500))
    u = rng.random(count)
    radii = 1.0 / np.sqrt(u / r_min**2 + (1.0 - u) / r_max**2)
    centres = rng.random((count, 2)) * (w, h)
    colours = rng.uniform(0.0, 255.0, (count, 3)).tolist()
    kinds = rng.integers(0, 3, count).tolist()
    # Triangles (three random directions) and squares (four at right angles), all at once.
    angles = rng.uniform(0.0, 2 * np.pi, (count, 4))
    angles[:, 1:] = np.where(np.array(kinds)[:, None] == 2,
                             angles[:, :1] + np.arange(1, 4) * np.pi / 2, angles[:, 1:])
    corners = (centres[:, None, :] + radii[:, None, None] * np.stack(
        [np.cos(angles), np.sin(angles)], -1)).astype(np.int32)
    centre_px = centres.astype(np.int32).tolist()
    radius_px = (radii + 0.5).astype(np.int32).tolist()
    for i in range(count):
        if kinds[i] == 0:
            cv2.circle(tex, centre_px[i], radius_px[i], colours[i], -1, cv2.LINE_8)
        else:
            cv2.fillConvexPoly(tex, corners[i, : 3 if kinds[i] == 1 else 4], colours[i],
                               cv2.LINE_8)
    # Shading inside the patches: real surfaces are never perfectly flat.
    return tex + pink_noise(rng, h, w, 2.0)[..., None] * np.float32(rng.uniform(2.0, 10.0))


def _strokes(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Lines, arcs and scribbles (1-6 px) over a pink-noise ground."""
    tex = _tinted(rng, pink_noise(rng, h, w, 2.0), rng.uniform(5.0, 25.0))
    count = int(np.clip(h * w / rng.uniform(300.0, 3000.0), 3, 400))
    for _ in range(count):
        c = tuple(float(v) for v in rng.uniform(0.0, 255.0, 3))
        thickness = int(rng.integers(1, 7))
        pts = np.cumsum(rng.normal(0.0, rng.uniform(3.0, 30.0), (int(rng.integers(2, 8)), 2)),
                        0) + rng.random(2) * (w, h)
        cv2.polylines(tex, [pts.astype(np.int32)], False, c, thickness, cv2.LINE_AA)
    return tex


def _pattern(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Stripes, checkers, dots or a grid: repetitive texture, ambiguous for a matcher."""
    period = np.float32(rng.uniform(3.0, 40.0))
    t = rng.uniform(0.0, np.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    u = (xs * np.float32(np.cos(t)) + ys * np.float32(np.sin(t))) / period
    v = (-xs * np.float32(np.sin(t)) + ys * np.float32(np.cos(t))) / period
    kind = int(rng.integers(0, 4))
    if kind == 0:  # stripes, hard or sinusoidal
        m = (np.floor(u) % 2) if rng.random() < 0.6 else 0.5 + 0.5 * np.sin(2 * np.pi * u)
    elif kind == 1:  # checkers
        m = (np.floor(u) + np.floor(v)) % 2
    elif kind == 2:  # dots
        m = (((u % 1) - 0.5) ** 2 + ((v % 1) - 0.5) ** 2 < rng.uniform(0.02, 0.2)).astype(
            np.float32)
    else:  # grid lines (tiles, windows, fences)
        width = rng.uniform(0.05, 0.3)
        m = (((u % 1) < width) | ((v % 1) < width)).astype(np.float32)
    a, b = _colour(rng), _colour(rng)
    tex = a + m.astype(np.float32)[..., None] * (b - a)
    return tex + pink_noise(rng, h, w, 2.0)[..., None] * np.float32(rng.uniform(1.0, 8.0))


def _low_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A nearly flat surface: a colour, a gentle gradient and faint noise (walls, sky)."""
    ys = np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None, None]
    xs = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :, None]
    gx, gy = rng.uniform(-20.0, 20.0, (2, 3)).astype(np.float32)
    faint = pink_noise(rng, h, w, 2.4)[..., None] * np.float32(rng.uniform(0.3, 3.0))
    return _colour(rng) + xs * gx + ys * gy + faint


def _photo_crop(rng: np.random.Generator, h: int, w: int, photos: Photos) -> np.ndarray:
    """A random crop of a photograph, at a random scale and flip, resized to (h, w)."""
    photo = photos[int(rng.integers(len(photos)))]
    ph, pw = photo.shape[:2]
    scale = rng.uniform(0.3, 1.5) * min(pw / w, ph / h, 1.0)
    ch, cw = max(int(h * scale), 4), max(int(w * scale), 4)
    ch, cw = min(ch, ph), min(cw, pw)
    y0, x0 = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    crop = photo[y0 : y0 + ch, x0 : x0 + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    crop = cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=cv2.INTER_LINEAR)
    gain = rng.uniform(0.7, 1.3, 3).astype(np.float32)
    return crop * gain + np.float32(rng.uniform(-20.0, 20.0))
