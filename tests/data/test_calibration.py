"""Calibration files written byte for byte as the benchmarks distribute them."""

from __future__ import annotations

from pathlib import Path

import pytest

from stereoq.data.calibration import merge_camera, ndisp_note, read_calibration
from stereoq.errors import StereoqError

# Middlebury 2014 (Adirondack-perfect) as distributed: LF lines, baseline in mm.
MIDDLEBURY = (
    b"cam0=[4161.221 0 1445.577; 0 4161.221 984.686; 0 0 1]\n"
    b"cam1=[4161.221 0 1654.636; 0 4161.221 984.686; 0 0 1]\n"
    b"doffs=209.059\nbaseline=176.252\nwidth=2880\nheight=1988\nndisp=280\nisint=0\n"
    b"vmin=33\nvmax=218\ndyavg=0\ndymax=0\n"
)
# ETH3D two-view: the same format, doffs 0, CR LF line ends.
ETH3D = (
    b"cam0=[541.764 0 553.869; 0 541.764 232.396; 0 0 1]\r\n"
    b"cam1=[541.764 0 553.869; 0 541.764 232.396; 0 0 1]\r\n"
    b"doffs=0\r\nbaseline=59.8295\r\nwidth=1016\r\nheight=491\r\nndisp=64\r\nisint=0\r\n"
    b"vmin=9\r\nvmax=47\r\n"
)
# KITTI 2015 calib_cam_to_cam/000000.txt (abridged to the lines that matter plus neighbours).
KITTI = (
    b"calib_time: 09-Jan-2012 13:57:47\n"
    b"corner_dist: 9.950000e-02\n"
    b"S_rect_02: 1.242000e+03 3.750000e+02\n"
    b"R_rect_02: 1.0 0.0 0.0 0.0 1.0 0.0 0.0 0.0 1.0\n"
    b"P_rect_02: 7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 "
    b"7.215377e+02 1.728540e+02 2.163791e-01 0.000000e+00 0.000000e+00 1.000000e+00 "
    b"2.745884e-03\n"
    b"S_rect_03: 1.242000e+03 3.750000e+02\n"
    b"P_rect_03: 7.215377e+02 0.000000e+00 6.095593e+02 -3.395242e+02 0.000000e+00 "
    b"7.215377e+02 1.728540e+02 2.199936e+00 0.000000e+00 0.000000e+00 1.000000e+00 "
    b"2.729905e-03\n"
)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_middlebury_calib_gives_metres_and_doffs(tmp_path: Path) -> None:
    c = read_calibration(write(tmp_path, "calib.txt", MIDDLEBURY))
    assert (c.focal_px, c.cx_px, c.cy_px) == (4161.221, 1445.577, 984.686)
    assert c.baseline_m == pytest.approx(0.176252)
    assert c.doffs_px == 209.059 and c.ndisp == 280 and (c.width, c.height) == (2880, 1988)
    d = 100.0
    assert c.depth_m(d) == pytest.approx(4161.221 * 176.252 / (d + 209.059) / 1000.0)


def test_eth3d_calib_with_crlf(tmp_path: Path) -> None:
    c = read_calibration(write(tmp_path, "calib.txt", ETH3D))
    assert (c.focal_px, c.cx_px, c.cy_px, c.doffs_px) == (541.764, 553.869, 232.396, 0.0)
    assert c.depth_m(20.0) == pytest.approx(541.764 * 0.0598295 / 20.0)
    assert ndisp_note(c, 192) is None


def test_kitti_cam_to_cam(tmp_path: Path) -> None:
    c = read_calibration(write(tmp_path, "000000.txt", KITTI))
    f = 721.5377
    assert (c.focal_px, c.cx_px, c.cy_px) == (f, 609.5593, 172.854)
    assert c.baseline_m == pytest.approx((44.85728 + 339.5242) / f)
    assert c.baseline_m == pytest.approx(0.5327, abs=1e-4)
    assert c.doffs_px == 0.0 and (c.width, c.height) == (1242, 375)
    assert c.depth_m(50.0) == pytest.approx(f * c.baseline_m / 50.0)


@pytest.mark.parametrize(
    "data, drop, key",
    [(MIDDLEBURY, b"baseline=176.252\n", "baseline"), (MIDDLEBURY, b"doffs=209.059\n", "doffs"),
     (ETH3D, ETH3D.splitlines(keepends=True)[1], "cam1"),
     (KITTI, KITTI.splitlines(keepends=True)[-1], "P_rect_03")],
)
def test_missing_key_is_one_line_naming_file_and_key(tmp_path, data, drop, key) -> None:
    path = write(tmp_path, "calib.txt", data.replace(drop, b""))
    with pytest.raises(StereoqError) as err:
        read_calibration(path)
    assert str(err.value) == f"calibration file {path}: missing key {key}"


def test_unknown_or_contradictory_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(StereoqError, match="neither a Middlebury"):
        read_calibration(write(tmp_path, "x.txt", b"hello=1\n"))
    with pytest.raises(StereoqError, match="baseline is given twice"):
        read_calibration(write(tmp_path, "y.txt", MIDDLEBURY + b"baseline=100\n"))
    with pytest.raises(StereoqError, match="cannot read .No such file"):
        read_calibration(tmp_path / "none.txt")


def test_explicit_options_override_and_ndisp_note(tmp_path: Path) -> None:
    c = read_calibration(write(tmp_path, "calib.txt", MIDDLEBURY))
    values, notes = merge_camera(c, {"baseline": None, "f": 4000.0, "cx": None, "cy": None,
                                     "doffs": None})
    assert values == {"baseline": c.baseline_m, "f": 4000.0, "cx": 1445.577, "cy": 984.686,
                      "doffs": 209.059}
    assert notes == [f"--f 4000 overrides 4161.22 from {c.path}"]
    assert "ndisp=280" in ndisp_note(c, 192) and "192" in ndisp_note(c, 192)
    assert ndisp_note(c, 320) is None
