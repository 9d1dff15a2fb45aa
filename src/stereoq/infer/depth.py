"""Disparity to depth: depth = focal_px * baseline_m / disparity_px, with an invalid mask."""

from __future__ import annotations

import numpy as np

# A disparity at or below this (px) is "no match / infinitely far": depth is marked invalid, never
# infinite or absurdly large. 0.01 px at f = 1050 px, baseline 0.54 m would already be 56.7 km.
MIN_DISPARITY_PX = 0.01

# 16-bit depth PNGs store millimetres: 65535 mm (65.535 m) is the farthest storable depth, farther
# valid pixels are clipped to it; 0 marks invalid pixels.
DEPTH_PNG_MAX_MM = 65535


def disparity_to_depth(
    disparity_px: np.ndarray,
    baseline_m: float,
    focal_px: float,
    min_disparity_px: float = MIN_DISPARITY_PX,
    doffs_px: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) disparity in px -> (depth in metres, valid mask), both (H, W).

    With the baseline in metres and the focal length in pixels the depth is in metres. Pixels
    whose disparity is not finite or is <= ``min_disparity_px``, or whose ``disparity +
    doffs_px`` is, are invalid and get depth 0.
    """
    if baseline_m <= 0 or focal_px <= 0:
        raise ValueError("baseline and focal length must be positive")
    disparity_px = np.asarray(disparity_px, dtype=np.float32)
    shifted = disparity_px + np.float32(doffs_px)
    valid = (
        np.isfinite(disparity_px)
        & (disparity_px > min_disparity_px)
        & (shifted > min_disparity_px)
    )
    depth_m = np.zeros_like(disparity_px)
    depth_m[valid] = (focal_px * baseline_m) / shifted[valid]
    return depth_m, valid


def depth_to_mm_uint16(depth_m: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(H, W) depth in metres -> uint16 millimetres; 0 = invalid, clipped at 65535 mm."""
    depth_mm = np.zeros(depth_m.shape, dtype=np.uint16)
    scaled = np.rint(depth_m[valid].astype(np.float64) * 1000.0)
    # A valid depth that rounds to 0 mm would read as invalid: keep it at 1 mm.
    depth_mm[valid] = np.clip(scaled, 1, DEPTH_PNG_MAX_MM).astype(np.uint16)
    return depth_mm


def value_range(values: np.ndarray, valid: np.ndarray) -> dict[str, float | None]:
    """min / max / mean of the valid pixels (None when there is none)."""
    picked = values[valid]
    if picked.size == 0:
        return {"min": None, "max": None, "mean": None}
    return {
        "min": float(picked.min()),
        "max": float(picked.max()),
        "mean": float(picked.mean(dtype=np.float64)),
    }
