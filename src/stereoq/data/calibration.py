"""Stereo calibration files as the benchmarks distribute them.

- Middlebury 2014 / MiddEval3 and ETH3D two-view ``calib.txt``: ``key=value`` lines,
  ``cam0=[f 0 cx; 0 f cy; 0 0 1]``, ``cam1=[...]``, ``doffs`` (px, cx1 - cx0), ``baseline`` in
  millimetres, ``width``, ``height``, ``ndisp``, ... Depth (mm) = baseline · f / (d + doffs).
- KITTI ``calib_cam_to_cam/NNNNNN.txt``: ``key: numbers`` lines; the rectified colour cameras'
  projections ``P_rect_02`` and ``P_rect_03`` (3x4, row major) give f, cx, cy (from P_rect_02) and
  baseline = (P_rect_02[0,3] - P_rect_03[0,3]) / f in metres; both share cx, so doffs is 0.

Everything comes out in one convention: baseline in metres, the rest in pixels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from stereoq.errors import StereoqError

MIDDLEBURY_KEYS = ("cam0", "cam1", "doffs", "baseline")
KITTI_KEYS = ("P_rect_02", "P_rect_03")
KITTI_2012_KEYS = ("P2", "P3")
_MATRIX = re.compile(r"^\[(.*)\]$")


@dataclass(frozen=True)
class Calibration:
    """A rectified pair's geometry: baseline in metres, the rest in pixels."""

    path: Path
    kind: str
    focal_px: float
    cx_px: float
    cy_px: float
    baseline_m: float
    doffs_px: float = 0.0
    ndisp: int | None = None
    width: int | None = None
    height: int | None = None

    def depth_m(self, disparity_px: float) -> float:
        """f · B / (d + doffs), metres."""
        return self.focal_px * self.baseline_m / (disparity_px + self.doffs_px)

    def as_dict(self) -> dict[str, object]:
        return {"file": str(self.path), "kind": self.kind, "focal_px": self.focal_px,
                "cx_px": self.cx_px, "cy_px": self.cy_px, "baseline_m": self.baseline_m,
                "doffs_px": self.doffs_px, "ndisp": self.ndisp}


def read_calibration(path: str | Path) -> Calibration:
    """Read a Middlebury/ETH3D ``calib.txt`` or a KITTI ``calib_cam_to_cam`` file (by content)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else err
        raise StereoqError(f"calibration file {path}: cannot read ({reason})") from None
    if re.search(r"^\s*(P_rect_0\d|P[0-3])\s*:", text, re.MULTILINE):
        return parse_kitti(text, path)
    if re.search(r"^\s*cam0\s*=", text, re.MULTILINE):
        return parse_middlebury(text, path)
    raise StereoqError(
        f"calibration file {path}: neither a Middlebury/ETH3D calib.txt (cam0=...) nor a KITTI "
        "calib_cam_to_cam file (P_rect_02: ...)"
    )


def _fields(text: str, sep: str, path: Path) -> dict[str, str]:
    """``key<sep>value`` lines; a key given twice with different values is an error."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, found, value = line.partition(sep)
        key, value = key.strip(), value.strip()
        if not found or not key:
            continue
        if key in out and out[key] != value:
            raise StereoqError(
                f"calibration file {path}: {key} is given twice ({out[key]!r}, {value!r})"
            )
        out[key] = value
    return out


def _need(fields: dict[str, str], key: str, path: Path) -> str:
    if key not in fields:
        raise StereoqError(f"calibration file {path}: missing key {key}")
    return fields[key]


def _number(value: str, key: str, path: Path) -> float:
    try:
        return float(value)
    except ValueError:
        raise StereoqError(f"calibration file {path}: {key}={value!r} is not a number") from None


def _numbers(value: str, key: str, path: Path, count: int) -> list[float]:
    items = value.replace(";", " ").split()
    if len(items) != count:
        raise StereoqError(
            f"calibration file {path}: {key} has {len(items)} numbers, expected {count}"
        )
    return [_number(item, key, path) for item in items]


def _optional_int(fields: dict[str, str], key: str, path: Path) -> int | None:
    if key not in fields:
        return None
    return round(_number(fields[key], key, path))


def parse_middlebury(text: str, path: Path) -> Calibration:
    """A Middlebury / ETH3D ``calib.txt`` (baseline converted from mm to m)."""
    fields = _fields(text, "=", path)
    cams = []
    for key in ("cam0", "cam1"):
        match = _MATRIX.match(_need(fields, key, path))
        if match is None:
            raise StereoqError(f"calibration file {path}: {key} is not a [a b c; d e f; g h i] "
                               "matrix")
        cams.append(_numbers(match.group(1), key, path, 9))
    doffs = _number(_need(fields, "doffs", path), "doffs", path)
    baseline_mm = _number(_need(fields, "baseline", path), "baseline", path)
    cam0 = cams[0]
    # ETH3D writes the same format; the kind names the format, not the benchmark.
    return _checked(Calibration(
        path=path, kind="middlebury", focal_px=cam0[0], cx_px=cam0[2], cy_px=cam0[5],
        baseline_m=baseline_mm / 1000.0, doffs_px=doffs,
        ndisp=_optional_int(fields, "ndisp", path), width=_optional_int(fields, "width", path),
        height=_optional_int(fields, "height", path),
    ))


def parse_kitti(text: str, path: Path) -> Calibration:
    """A KITTI 2015 ``calib_cam_to_cam`` file (left = camera 2, right = camera 3), or a KITTI
    2012 ``calib/NNNNNN.txt`` (``P2``/``P3``, the projections of the colour pair)."""
    fields = _fields(text, ":", path)
    keys = KITTI_KEYS if "P2" not in fields else KITTI_2012_KEYS
    p2, p3 = (_numbers(_need(fields, key, path), key, path, 12) for key in keys)
    focal = p2[0]
    if not focal > 0:
        raise StereoqError(f"calibration file {path}: {keys[0]} focal length {focal} is not "
                           "positive")
    size = fields.get("S_rect_02")
    width = height = None
    if size is not None:
        width, height = (round(v) for v in _numbers(size, "S_rect_02", path, 2))
    return _checked(Calibration(
        path=path, kind="kitti", focal_px=focal, cx_px=p2[2], cy_px=p2[6],
        baseline_m=(p2[3] - p3[3]) / focal, doffs_px=p3[2] - p2[2], width=width, height=height,
    ))


def _checked(calib: Calibration) -> Calibration:
    if not calib.focal_px > 0:
        raise StereoqError(f"calibration file {calib.path}: focal length {calib.focal_px} is not "
                           "positive")
    if not calib.baseline_m > 0:
        raise StereoqError(f"calibration file {calib.path}: baseline {calib.baseline_m} m is not "
                           "positive")
    return calib


def ndisp_note(calib: Calibration, maxdisp: float) -> str | None:
    """A note when the file's disparity range exceeds what the model can output, else None."""
    if calib.ndisp is None or calib.ndisp <= maxdisp:
        return None
    return (f"note: {calib.path} has ndisp={calib.ndisp} but the model's maxdisp is {maxdisp:g} "
            "px: nearer objects than that disparity cannot be estimated")


CAMERA_KEYS = {"baseline": "baseline_m", "f": "focal_px", "cx": "cx_px", "cy": "cy_px",
               "doffs": "doffs_px"}


def merge_camera(calib: Calibration | None,
                 explicit: dict[str, float | None]) -> tuple[dict[str, float | None], list[str]]:
    """Options (``baseline`` m, ``f``, ``cx``, ``cy``, ``doffs`` px) filled from ``calib``.

    An option given explicitly wins over the file; -> (values, notes on each override).
    """
    values = dict(explicit)
    notes: list[str] = []
    if calib is None:
        return values, notes
    for option, attr in CAMERA_KEYS.items():
        from_file = getattr(calib, attr)
        given = values.get(option)
        if given is None:
            values[option] = from_file
        elif abs(float(given) - from_file) > 1e-9 * max(1.0, abs(from_file)):
            notes.append(f"--{option} {given:g} overrides {from_file:g} from {calib.path}")
    return values, notes
