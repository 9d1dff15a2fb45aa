"""The sensitivity report as a picture: one bar per layer, in network order (OpenCV, no plotting
library). Three panels share the x axis: EPE increase with only the layer quantized, EPE
recovered with only the layer left float, and the SQNR of its output; bars are coloured by the
layer's kind and the top-ranked layers carry their rank."""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
BAR_PX = 12
PANEL_PX = 170
MARGIN_PX = 70
TOP_MARKED = 5
MIN_WIDTH_PX = 1000
COLORS = {  # RGB
    "conv": (66, 110, 200),
    "conv3d": (130, 80, 190),
    "add": (60, 160, 90),
    "concat": (40, 160, 170),
    "cost volume": (230, 140, 40),
    "disparity regression": (210, 60, 60),
    "elementwise": (140, 140, 140),
}


def _text(img: np.ndarray, text: str, xy: tuple[int, int], scale: float = 0.45,
          color: tuple[int, int, int] = (0, 0, 0)) -> None:
    cv2.putText(img, text, xy, FONT, scale, color, 1, cv2.LINE_AA)


def _panel(rows: list[dict[str, Any]], key: str, title: str, unit: str,
           marked: dict[str, int]) -> np.ndarray:
    width = MARGIN_PX + BAR_PX * len(rows) + 20
    img = np.full((PANEL_PX, width, 3), 255, np.uint8)
    values = [r[key] if math.isfinite(r[key]) else 0.0 for r in rows]
    top, bottom = max(max(values), 0.0), min(min(values), 0.0)
    span = (top - bottom) or 1.0
    plot_h = PANEL_PX - 40
    zero_y = 28 + round(plot_h * top / span)
    cv2.line(img, (MARGIN_PX, zero_y), (width - 10, zero_y), (120, 120, 120), 1)
    _text(img, title, (8, 16), 0.5)
    _text(img, f"{top:.3g}{unit}", (4, 34), 0.38, (90, 90, 90))
    _text(img, f"{bottom:.3g}{unit}", (4, PANEL_PX - 8), 0.38, (90, 90, 90))
    for i, (row, value) in enumerate(zip(rows, values, strict=True)):
        x0 = MARGIN_PX + i * BAR_PX
        y = zero_y - round(plot_h * value / span)
        color = COLORS.get(row["kind"], (140, 140, 140))
        cv2.rectangle(img, (x0 + 1, min(y, zero_y)), (x0 + BAR_PX - 2, max(y, zero_y)),
                      color, -1)
        if row["layer"] in marked:
            _text(img, str(marked[row["layer"]]), (x0, max(min(y, zero_y) - 3, 26)), 0.35)
    return img


def _labels(rows: list[dict[str, Any]], width: int) -> np.ndarray:
    """Layer names written vertically under their bars."""
    longest = max(len(r["layer"]) for r in rows)
    height = 8 + 6 * longest
    # drawn on a canvas rotated a quarter turn clockwise: right-aligned there is top-aligned
    canvas = np.full((width, height, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        (text_w, _), _ = cv2.getTextSize(row["layer"], FONT, 0.32, 1)
        _text(canvas, row["layer"], (height - 4 - text_w, MARGIN_PX + i * BAR_PX + BAR_PX - 2),
              0.32)
    return np.ascontiguousarray(np.rot90(canvas, 1))


def _legend(width: int, report: dict[str, Any]) -> np.ndarray:
    img = np.full((46, width, 3), 255, np.uint8)
    title = (f"{report.get('stage', '')} sensitivity on {report['frames']} frame(s) "
             f"{report['height']}x{report['width']}: float EPE {report['float_epe_px']:.4f} px, "
             f"quantized {report['quantized_epe_px']:.4f} px; numbers: rank")
    _text(img, title, (8, 16), 0.5)
    x = 8
    for kind, color in COLORS.items():
        cv2.rectangle(img, (x, 26), (x + 12, 38), color, -1)
        _text(img, kind, (x + 16, 37), 0.4)
        x += 30 + 8 * len(kind)
    return img


def sensitivity_chart(report: dict[str, Any]) -> np.ndarray:
    """(H, W, 3) uint8 RGB bar chart of a ``stereoq.quant.sensitivity`` report."""
    rows = sorted(report["layers"], key=lambda r: r["order"])
    marked = {r["layer"]: r["rank"] for r in rows if r["rank"] <= TOP_MARKED}
    panels = [
        _panel(rows, "delta_only_px", "EPE increase, only this layer quantized", " px", marked),
        _panel(rows, "recovered_px", "EPE recovered, only this layer left float", " px",
               marked),
        _panel(rows, "sqnr_db", "SQNR of the layer's output (float vs quantized model)", " dB",
               {}),
    ]
    width = max(panels[0].shape[1], MIN_WIDTH_PX)
    parts = [_legend(width, report), *panels, _labels(rows, panels[0].shape[1])]
    return np.concatenate(
        [np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in parts],
        axis=0,
    )


def save_chart(report: dict[str, Any], path: Any) -> None:
    image = sensitivity_chart(report)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        from stereoq.errors import StereoqError

        raise StereoqError(f"cannot write {path}")
