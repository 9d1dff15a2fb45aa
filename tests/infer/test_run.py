import json
import math
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stereoq.data.pairs import Pair
from stereoq.data.pfm import read_pfm
from stereoq.errors import StereoqError
from stereoq.infer.depth import disparity_to_depth
from stereoq.infer.run import (
    MAX_PIXELS,
    Camera,
    DisparityEstimator,
    InferSettings,
    estimate,
    infer_pair,
    run_pairs,
)
from stereoq.settings import load_config
from stereoq.stages import get_stage


def test_odd_sizes_are_padded_bottom_right_and_cropped_back(float_run: Path, make_pair) -> None:
    cfg = load_config(str(float_run))
    estimator = DisparityEstimator(cfg, "float")
    left, right = make_pair(37, 53)
    disp = estimator(left, right)
    assert disp.shape == (37, 53)
    # The same pair padded by hand (replicate, bottom/right) to 48x64: the top-left crop of its
    # prediction is the prediction at the odd size, pixel for pixel (no shift).
    pad = ((0, 11), (0, 11), (0, 0))
    disp_padded = estimator(np.pad(left, pad, mode="edge"), np.pad(right, pad, mode="edge"))
    np.testing.assert_allclose(disp_padded[:37, :53], disp, atol=1e-4)


def test_estimator_uses_the_training_normalisation(float_run: Path, make_pair) -> None:
    from stereoq.data.transforms import prepare_pair

    cfg = load_config(str(float_run))
    estimator = DisparityEstimator(cfg, "float")
    left, right = make_pair(32, 48, seed=3)
    model = get_stage(cfg, "float").predictor()
    with torch.inference_mode():
        expected = model(prepare_pair(left, right, cfg.data)[None])[0, 0].numpy()
    np.testing.assert_allclose(estimator(left, right), expected, atol=1e-5)


def ramp_estimator(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """A fake model: disparity = column index (px at the size it is called with)."""
    return np.tile(np.arange(left.shape[1], dtype=np.float32), (left.shape[0], 1))


def test_downscaled_run_returns_full_resolution_pixels_aligned(make_pair) -> None:
    left, right = make_pair(60, 101)
    disp, scale = estimate(ramp_estimator, left, right, max_size=50)
    assert disp.shape == (60, 101) and scale == pytest.approx(50 / 101)
    # Column index at half size, upsampled and rescaled, is the column index at full size
    # (within the half-pixel of a resampled ramp); a shift would break this in the interior.
    cols = np.arange(101, dtype=np.float32)
    np.testing.assert_allclose(disp[30, 5:-5], cols[5:-5], atol=0.6)
    same, one = estimate(ramp_estimator, left, right, max_size=101)
    assert one == 1.0 and same[0, 100] == 100


def test_large_inputs_are_refused_with_the_way_out() -> None:
    side = int(MAX_PIXELS**0.5) + 1
    big = np.zeros((side, side, 3), np.uint8)
    with pytest.raises(StereoqError, match=r"MP full-size limit; pass --max-size"):
        estimate(ramp_estimator, big, big, label="image big.png")


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A small PNG whose header (IHDR, CRC fixed up) claims ``width`` x ``height``."""
    ok, encoded = cv2.imencode(".png", np.zeros((4, 4), np.uint8))
    data = bytearray(encoded.tobytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def test_huge_inputs_are_refused_from_the_header_before_decoding(
    tmp_path: Path, save_pair
) -> None:
    save_pair(tmp_path / "l.png", tmp_path / "r.png")
    huge = _png_claiming(tmp_path / "huge.png", 20000, 20000)
    for pair in (Pair("p", huge, tmp_path / "r.png"), Pair("p", tmp_path / "l.png", huge)):
        start = time.perf_counter()
        with pytest.raises(StereoqError) as err:
            infer_pair(ramp_estimator, pair, Camera(1.0, 1.0), tmp_path / "out", InferSettings())
        assert time.perf_counter() - start < 1.0
        message = str(err.value)
        assert message.startswith(f"image {huge}: 20000x20000 (400.0 MP) is above the 4.2 MP")
        assert "--max-size" in message and "\n" not in message
    assert not (tmp_path / "out").exists()


def test_run_pairs_writes_consistent_outputs(float_run: Path, tmp_path: Path, save_pair) -> None:
    cfg = load_config(str(float_run))
    save_pair(tmp_path / "in" / "l.png", tmp_path / "in" / "r.png", height=33, width=47)
    pair = Pair("p", tmp_path / "in" / "l.png", tmp_path / "in" / "r.png")
    camera = Camera(baseline_m=0.2, focal_px=300.0)
    out = tmp_path / "out"
    summary = run_pairs(cfg, [pair], camera, out, InferSettings(ply=True))
    (result,) = summary["pairs"]
    assert summary["stage"] == "float" and summary["config"] == "tiny"
    assert summary["artifact"].endswith("float/best.pt") and summary["timings_s"]["load"] > 0
    disp = read_pfm(out / "disparity.pfm")
    assert disp.shape == (33, 47) and disp.dtype == np.float32
    assert result["disparity_px"]["max"] == pytest.approx(float(disp.max()))
    depth_mm = cv2.imread(str(out / "depth_mm.png"), cv2.IMREAD_UNCHANGED)
    assert depth_mm.dtype == np.uint16 and depth_mm.shape == (33, 47)
    valid = disp > 0.01
    expected = np.clip(np.rint(300.0 * 0.2 / disp[valid] * 1000), 1, 65535)
    np.testing.assert_allclose(depth_mm[valid], expected, atol=1)
    assert (depth_mm[~valid] == 0).all()
    for name in ("disparity.png", "depth.png", "overview.png"):
        picture = cv2.imread(str(out / name))
        assert picture is not None and picture.shape[2] == 3
    header = (out / "pointcloud.ply").read_bytes()[:300].decode("ascii", "replace")
    assert f"element vertex {int(valid.sum())}" in header
    json.dumps(summary)  # the summary is plain data


def test_left_right_size_mismatch_names_both_files(
    float_run: Path, tmp_path: Path, save_pair
) -> None:
    cfg = load_config(str(float_run))
    save_pair(tmp_path / "l.png", tmp_path / "r.png")
    cv2.imwrite(str(tmp_path / "r.png"), np.zeros((10, 10, 3), np.uint8))
    pair = Pair("p", tmp_path / "l.png", tmp_path / "r.png")
    with pytest.raises(StereoqError, match=r"l\.png is 70x40 but right .*r\.png is 10x10"):
        run_pairs(cfg, [pair], Camera(1.0, 1.0), tmp_path / "out", InferSettings())


def test_missing_stage_artifact_is_a_clear_error(tiny_config: Path) -> None:
    cfg = load_config(str(tiny_config))
    with pytest.raises(StereoqError, match="float/best.pt does not exist.*stereoq train"):
        DisparityEstimator(cfg, "float")
    with pytest.raises(StereoqError, match="stereoq compile"):
        DisparityEstimator(cfg, "deployed")


@pytest.mark.parametrize("baseline, focal, option", [(0.0, 1.0, "--baseline"), (1.0, -2.0, "--f")])
def test_camera_refuses_non_positive_values(baseline: float, focal: float, option: str) -> None:
    with pytest.raises(StereoqError, match=option):
        Camera(baseline, focal)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"baseline_m": 1e300, "focal_px": 1e300}, "depths overflow"),
        ({"baseline_m": 1e20, "focal_px": 1e20}, "depths overflow"),  # finite, but not in float32
        ({"baseline_m": math.inf, "focal_px": 1.0}, "--baseline inf: not a finite number"),
        ({"baseline_m": 1.0, "focal_px": math.nan}, "--f nan: not a finite number"),
        ({"baseline_m": 1.0, "focal_px": 1.0, "doffs_px": 1e300}, "--doffs 1e\\+300: out of range"),
        ({"baseline_m": 1.0, "focal_px": 1.0, "cx_px": math.inf}, "--cx"),
    ],
)
def test_camera_refuses_values_whose_depths_are_not_finite(kwargs: dict, message: str) -> None:
    with pytest.raises(StereoqError, match=message) as info:
        Camera(**kwargs)
    assert info.value.exit_code == 2


def test_largest_accepted_camera_gives_finite_depth() -> None:
    camera = Camera(baseline_m=1e17, focal_px=3e19)  # f x b / 0.01 px = 3e38 < float32 max
    depth, valid = disparity_to_depth(np.array([[0.0101, 100.0]], np.float32), camera.baseline_m,
                                      camera.focal_px)
    assert valid.all() and np.isfinite(depth).all()


def test_padding_matches_torch_pad_semantics() -> None:
    # Guards the assumption the alignment test relies on: numpy 'edge' == torch 'replicate'.
    a = np.arange(12, dtype=np.float32).reshape(1, 1, 3, 4)
    torch_pad = F.pad(torch.from_numpy(a), (0, 2, 0, 1), mode="replicate").numpy()
    np.testing.assert_array_equal(torch_pad, np.pad(a, ((0, 0), (0, 0), (0, 1), (0, 2)), "edge"))
