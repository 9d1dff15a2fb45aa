"""What two real cameras do differently to the same scene: exposure, gain, gamma and colour
balance per view, lens blur, sensor noise (read and shot), and lossy compression.

Applied after the exact rendering, so the ground truth is untouched; the views differ by
realistic amounts, which is what a matcher must learn to ignore.
"""

from __future__ import annotations

import cv2
import numpy as np

STRENGTH = (0.0, 1.0)
"""The default range of a scene's camera strength: some pairs nearly clean, some far apart."""


def apply(
    rng: np.random.Generator, left: np.ndarray, right: np.ndarray,
    strength: tuple[float, float] | None = STRENGTH,
) -> tuple[np.ndarray, np.ndarray]:
    """Both views (float32 (H, W, 3), grey levels) through their cameras -> uint8 RGB.

    The strength, drawn from ``strength`` once for both views, scales every difference; with
    ``None`` the views are only rounded (no random number is drawn).
    """
    if strength is None:
        return _rounded(left), _rounded(right)
    exposure = rng.uniform(0.6, 1.3)  # shared: the scene's brightness
    s = rng.uniform(*strength)
    return _camera(rng, left, exposure, s), _camera(rng, right, exposure, s)


def _rounded(img: np.ndarray) -> np.ndarray:
    return np.clip(img + np.float32(0.5), 0, 255).astype(np.uint8)


def _camera(rng: np.random.Generator, img: np.ndarray, exposure: float,
            strength: float) -> np.ndarray:
    gain = exposure * (1.0 + strength * rng.uniform(-0.15, 0.15))
    colour = 1.0 + strength * rng.uniform(-0.06, 0.06, 3)
    gamma = np.exp(strength * rng.uniform(-0.2, 0.2))
    x = np.clip(img * (gain * colour).astype(np.float32) / np.float32(255.0), 0.0, 1.0)
    x = np.float32(255.0) * x ** np.float32(gamma)
    x += np.float32(strength * rng.uniform(-6.0, 6.0))
    sigma_blur = rng.uniform(0.0, 1.2) * strength
    if sigma_blur > 0.25:
        x = cv2.GaussianBlur(x, (0, 0), sigma_blur)
    read_sigma = rng.uniform(0.3, 1.0 + 3.0 * strength)
    shot = rng.uniform(0.0, 0.25) * strength
    noise = rng.standard_normal(x.shape, dtype=np.float32)
    x += noise * (np.float32(read_sigma) + np.float32(shot) * np.sqrt(np.maximum(x, 0.0)))
    out = np.clip(x + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.4 * strength + 0.1:
        quality = int(rng.integers(45, 96))
        ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:  # OpenCV's JPEG is BGR; its chroma subsampling must see the real colours
            out = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    return out
