"""One picture to read at a glance: left image | disparity | depth, titled, with legends."""

from __future__ import annotations

import cv2
import numpy as np

from stereoq.infer.colormap import FONT

PANEL_HEIGHT_PX = 480
GAP_PX = 12


def titled(panel_rgb: np.ndarray, title: str) -> np.ndarray:
    """A (H, W, 3) panel with a white title bar above it."""
    scale = float(np.clip(panel_rgb.shape[0] / 500.0, 0.45, 1.0))
    thick = max(1, round(scale * 2))
    (text_w, text_h), _ = cv2.getTextSize(title, FONT, scale, thick)
    bar_h = text_h + round(20 * scale)
    bar = np.full((bar_h, panel_rgb.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(bar, title, (round(8 * scale), bar_h - round(10 * scale)), FONT, scale, (0, 0, 0),
                thick, cv2.LINE_AA)
    return np.concatenate([bar, panel_rgb], axis=0)


def fit_height(image: np.ndarray, height: int) -> np.ndarray:
    """Resize keeping the aspect ratio (area filter when shrinking)."""
    if image.shape[0] == height:
        return image
    width = max(1, round(image.shape[1] * height / image.shape[0]))
    interp = cv2.INTER_AREA if height < image.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interp)


def compose(panels: list[tuple[str, np.ndarray]], footer: str = "") -> np.ndarray:
    """Titled panels side by side on white, each at the same height, and an optional footer line.

    Panels are (title, (H, W, 3) uint8 RGB); colour-mapped panels should already carry their
    legend (see ``colormap.with_legend``) so that it is scaled with them.
    """
    height = min(PANEL_HEIGHT_PX, max(p.shape[0] for _, p in panels))
    row = []
    for i, (title, panel) in enumerate(panels):
        if i:
            row.append(np.full((0, GAP_PX, 3), 255, dtype=np.uint8))
        row.append(titled(fit_height(panel, height), title))
    full_h = max(p.shape[0] for p in row)
    row = [np.pad(p, ((0, full_h - p.shape[0]), (0, 0), (0, 0)), constant_values=255) for p in row]
    picture = np.concatenate(row, axis=1)
    if footer:
        picture = np.concatenate([picture, _text_line(footer, picture.shape[1])], axis=0)
    return picture


def _text_line(text: str, width: int) -> np.ndarray:
    scale, thick = 0.75, 2
    (_, text_h), _ = cv2.getTextSize(text, FONT, scale, thick)
    line = np.full((text_h + 16, width, 3), 255, dtype=np.uint8)
    cv2.putText(line, text, (8, text_h + 6), FONT, scale, (60, 60, 60), thick, cv2.LINE_AA)
    return line
