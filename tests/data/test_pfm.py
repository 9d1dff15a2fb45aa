"""PFM reading (both byte orders, bottom-to-top rows, Pf/PF, Middlebury inf) and writing."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest

from stereoq.data.pfm import decode_pfm, encode_pfm, read_pfm, write_pfm
from stereoq.data.sceneflow import decode_disparity
from stereoq.errors import StereoqError


def _ramp(h: int, w: int, c: int | None = None) -> np.ndarray:
    shape = (h, w) if c is None else (h, w, c)
    return (np.arange(np.prod(shape), dtype=np.float32).reshape(shape) * 0.25 + 0.5)


@pytest.mark.parametrize("little_endian", [True, False])
@pytest.mark.parametrize("channels", [None, 3])
def test_reads_handwritten_pfm(
    tmp_path: Path, make_pfm, little_endian: bool, channels: int | None
) -> None:
    arr = _ramp(5, 7, channels)
    path = tmp_path / "d.pfm"
    path.write_bytes(make_pfm(arr, little_endian))
    out = read_pfm(path)
    assert out.dtype == np.float32 and out.dtype.isnative
    assert out.shape == arr.shape
    # Top row first: the file stores the bottom row first.
    assert np.array_equal(out, arr)


def test_header_whitespace_variants(tmp_path: Path, make_pfm) -> None:
    arr = _ramp(3, 4)
    body = make_pfm(arr, True).split(b"\n", 3)[3]
    path = tmp_path / "d.pfm"
    path.write_bytes(b"Pf\n4   3\r\n-1.000000\n" + body)  # CRLF, extra spaces
    out = read_pfm(path)
    assert out.shape == (3, 4) and np.array_equal(out, arr)
    path.write_bytes(b"Pf 4 3 -0.5\n" + body)  # all on one line, scale other than 1
    assert np.array_equal(read_pfm(path), arr)


def test_middlebury_inf_is_kept_by_the_reader_and_invalid_for_disparity(
    tmp_path: Path, make_pfm
) -> None:
    arr = _ramp(4, 6)
    arr[1, 2] = np.inf
    arr[3, 0] = np.nan
    arr[0, 5] = -2.0
    raw = make_pfm(arr, False)
    path = tmp_path / "d.pfm"
    path.write_bytes(raw)
    read = read_pfm(path)
    assert np.isinf(read[1, 2]) and np.isnan(read[3, 0])
    disp = decode_disparity(raw, "d.pfm")
    assert disp[1, 2] == 0 and disp[3, 0] == 0 and disp[0, 5] == 0
    assert disp[2, 2] == arr[2, 2]


@pytest.mark.parametrize("little_endian", [True, False])
def test_write_matches_the_format(tmp_path: Path, make_pfm, little_endian: bool) -> None:
    arr = _ramp(6, 5)
    arr[0, 0] = np.inf
    path = write_pfm(tmp_path / "sub" / "w.pfm", arr, little_endian=little_endian)
    assert path.read_bytes() == make_pfm(arr, little_endian)
    assert np.array_equal(read_pfm(path), arr)
    rgb = _ramp(2, 3, 3)
    assert np.array_equal(read_pfm(write_pfm(tmp_path / "c.pfm", rgb)), rgb)
    assert not list((tmp_path / "sub").glob(".*tmp"))


def test_written_pfm_follows_the_umask(tmp_path: Path, umask_022: int) -> None:
    path = write_pfm(tmp_path / "disparity.pfm", _ramp(2, 2))
    assert stat.S_IMODE(path.stat().st_mode) == umask_022  # mkstemp made it 0o600


def test_bad_files_name_the_file(tmp_path: Path, make_pfm) -> None:
    good = make_pfm(_ramp(4, 4), True)
    cases = {
        "truncated.pfm": good[:-8],
        "magic.pfm": b"P6\n4 4\n255\n" + b"\0" * 48,
        "size.pfm": b"Pf\nfour 4\n-1\n" + good[-64:],
        "empty.pfm": b"",
    }
    for name in [*cases, "missing.pfm"]:
        if name in cases:
            (tmp_path / name).write_bytes(cases[name])
        with pytest.raises(StereoqError) as err:
            read_pfm(tmp_path / name)
        message = str(err.value)
        # one "PFM", then the file's name: "PFM file <path>: <what is wrong>"
        assert message.startswith(f"PFM file {tmp_path / name}: ") and message.count("PFM") == 1


def test_errors_without_a_file_name_say_pfm_once(make_pfm) -> None:
    with pytest.raises(StereoqError) as err:
        decode_pfm(make_pfm(_ramp(4, 4), True)[:-8])
    assert str(err.value).startswith("PFM data: truncated (")
    with pytest.raises(StereoqError, match=r"^PFM data: cannot write an array of shape \(0,\)$"):
        encode_pfm(np.zeros(0, np.float32))


@pytest.mark.parametrize("little_endian", [True, False])
def test_crlf_header_reads_exactly(tmp_path: Path, make_pfm, little_endian: bool) -> None:
    arr = _ramp(3, 4)
    body = make_pfm(arr, little_endian).split(b"\n", 3)[3]
    scale = b"-1.0" if little_endian else b"1.0"
    path = tmp_path / "d.pfm"
    path.write_bytes(b"Pf\r\n4 3\r\n" + scale + b"\r\n" + body)
    assert np.array_equal(read_pfm(path), arr)


def test_lone_cr_before_data_that_starts_with_lf(tmp_path: Path) -> None:
    # one whitespace byte after the scale, and the first data byte happens to be "\n"
    value = np.frombuffer(b"\n\x00\x80\x3f", "<f4")
    path = tmp_path / "d.pfm"
    path.write_bytes(b"Pf\n1 1\n-1\r" + value.tobytes())
    assert read_pfm(path)[0, 0] == value[0]
