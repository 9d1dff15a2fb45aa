"""JET colour maps of disparity and depth, and a legend bar that states their range."""

from __future__ import annotations

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
INVALID_RGB = (0, 0, 0)


def colorize(
    values: np.ndarray,
    valid: np.ndarray,
    vmin: float,
    vmax: float,
    reverse: bool = False,
) -> np.ndarray:
    """(H, W) values -> (H, W, 3) uint8 RGB with JET: vmin blue, vmax red (swapped if reverse).

    Values outside [vmin, vmax] saturate; invalid pixels are black.
    """
    span = max(vmax - vmin, 1e-12)
    scaled = np.clip((np.nan_to_num(values, nan=vmin) - vmin) / span, 0.0, 1.0)
    if reverse:
        scaled = 1.0 - scaled
    rgb = cv2.applyColorMap(np.rint(scaled * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    rgb = np.ascontiguousarray(rgb)
    rgb[~valid] = INVALID_RGB
    return rgb


def legend_bar(
    height: int,
    vmin: float,
    vmax: float,
    unit: str,
    reverse: bool = False,
    clipped_top: bool = False,
) -> np.ndarray:
    """A (height, W, 3) uint8 RGB white strip: a JET bar with min / mid / max labels and unit.

    ``clipped_top`` marks the top label with ">" (values above it share its colour).
    """
    scale = float(np.clip(height / 500.0, 0.35, 1.2))
    thick = max(1, round(scale * 2))
    margin = max(4, round(10 * scale))
    bar_w = max(10, round(height / 25))
    labels = [
        _fmt(vmax, unit, ">" if clipped_top else ""),
        _fmt((vmin + vmax) / 2, unit),
        _fmt(vmin, unit),
    ]
    text_w = max(cv2.getTextSize(t, FONT, scale, thick)[0][0] for t in labels)
    text_h = cv2.getTextSize("0", FONT, scale, thick)[0][1]
    width = margin + bar_w + margin + text_w + margin
    strip = np.full((height, width, 3), 255, dtype=np.uint8)

    top, bottom = margin + text_h // 2, height - margin - text_h // 2
    if bottom - top < 4:
        return strip
    ramp = np.linspace(1.0, 0.0, bottom - top, dtype=np.float32)[:, None].repeat(bar_w, axis=1)
    if reverse:
        ramp = 1.0 - ramp
    bar = cv2.applyColorMap(np.rint(ramp * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    strip[top:bottom, margin : margin + bar_w] = bar
    x_text = margin + bar_w + margin
    for label, y in zip(labels, (top, (top + bottom) // 2, bottom), strict=True):
        origin = (x_text, y + text_h // 2)
        cv2.putText(strip, label, origin, FONT, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return strip


def with_legend(
    picture_rgb: np.ndarray,
    vmin: float,
    vmax: float,
    unit: str,
    reverse: bool = False,
    clipped_top: bool = False,
) -> np.ndarray:
    """A colour-mapped picture (H, W, 3) with its legend bar appended on the right."""
    bar = legend_bar(picture_rgb.shape[0], vmin, vmax, unit, reverse, clipped_top)
    return np.concatenate([picture_rgb, bar], axis=1)


def _fmt(value: float, unit: str, prefix: str = "") -> str:
    digits = 1 if abs(value) >= 10 else 2
    return f"{prefix}{value:.{digits}f} {unit}"


def display_range(
    values: np.ndarray, valid: np.ndarray, upper_percentile: float = 100.0
) -> tuple[float, float, bool]:
    """(vmin, vmax, clipped_top) of the valid values for colouring.

    Depth has a long far tail (small disparities): ``upper_percentile`` < 100 keeps the colours
    for the scene rather than for a few far pixels, and ``clipped_top`` says the legend's top is
    a saturation point.
    """
    picked = values[valid]
    if picked.size == 0:
        return 0.0, 1.0, False
    vmin = float(picked.min())
    vmax_all = float(picked.max())
    vmax = vmax_all if upper_percentile >= 100 else float(np.percentile(picked, upper_percentile))
    if vmax <= vmin:
        vmax = vmin + 1e-3
    return vmin, vmax, vmax < vmax_all
