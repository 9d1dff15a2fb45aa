import numpy as np
import pytest

from stereoq.infer.depth import (
    DEPTH_PNG_MAX_MM,
    depth_to_mm_uint16,
    disparity_to_depth,
    value_range,
)


def test_depth_is_focal_times_baseline_over_disparity() -> None:
    disp = np.array([[10.0, 20.0], [54.0, 1.0]], dtype=np.float32)
    depth, valid = disparity_to_depth(disp, baseline_m=0.54, focal_px=1050.0)
    assert valid.all()
    np.testing.assert_allclose(depth, 1050.0 * 0.54 / disp, rtol=1e-6)
    assert depth[1, 0] == pytest.approx(10.5)


def test_non_positive_tiny_and_non_finite_disparities_are_invalid_never_infinite() -> None:
    disp = np.array([0.0, -3.0, 0.005, np.nan, np.inf, 0.5], dtype=np.float32)
    depth, valid = disparity_to_depth(disp, baseline_m=0.1, focal_px=500.0)
    assert valid.tolist() == [False, False, False, False, False, True]
    assert np.isfinite(depth).all()
    assert (depth[~valid] == 0).all()
    assert depth[5] == pytest.approx(100.0)


def test_min_disparity_is_configurable() -> None:
    _, valid = disparity_to_depth(np.array([0.5, 2.0]), 1.0, 1.0, min_disparity_px=1.0)
    assert valid.tolist() == [False, True]


def test_doffs_shifts_the_denominator_and_keeps_it_positive() -> None:
    disp = np.array([10.0, 2.0, 0.5], dtype=np.float32)
    depth, valid = disparity_to_depth(disp, 0.2, 1000.0, doffs_px=30.0)
    np.testing.assert_allclose(depth, 200.0 / (disp + 30.0), rtol=1e-6)
    # A negative offset can make d + doffs <= 0: invalid, never negative or infinite depth.
    depth, valid = disparity_to_depth(disp, 0.2, 1000.0, doffs_px=-5.0)
    assert valid.tolist() == [True, False, False]
    assert depth[0] == pytest.approx(40.0)
    assert (depth[~valid] == 0).all()


@pytest.mark.parametrize("baseline, focal", [(0.0, 100.0), (-1.0, 100.0), (0.1, 0.0)])
def test_non_positive_geometry_is_refused(baseline: float, focal: float) -> None:
    with pytest.raises(ValueError):
        disparity_to_depth(np.ones((2, 2)), baseline, focal)


def test_depth_png_is_millimetres_zero_invalid_clipped() -> None:
    depth = np.array([1.2346, 100.0, 0.0001, 7.0], dtype=np.float32)
    valid = np.array([True, True, True, False])
    mm = depth_to_mm_uint16(depth, valid)
    assert mm.dtype == np.uint16
    assert mm.tolist() == [1235, DEPTH_PNG_MAX_MM, 1, 0]


def test_value_range_over_valid_only() -> None:
    values = np.array([1.0, 2.0, 100.0])
    stats = value_range(values, np.array([True, True, False]))
    assert stats == {"min": 1.0, "max": 2.0, "mean": 1.5}
    assert value_range(values, np.zeros(3, bool))["min"] is None
