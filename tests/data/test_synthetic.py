"""The synthetic generator: determinism, ground-truth consistency, disjoint splits."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stereoq.data.synthetic import render_pair


def _warp_error(left: np.ndarray, right: np.ndarray, disp: np.ndarray) -> np.ndarray:
    """Per-pixel |left - right sampled at x - disp| (mean over channels), NaN outside the image."""
    h, w = disp.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    map_x = xs - disp
    warped = cv2.remap(right.astype(np.float32), map_x, ys, cv2.INTER_LINEAR)
    err = np.abs(warped - left.astype(np.float32)).mean(-1)
    err[map_x < 0] = np.nan
    return err


def test_render_pair_shapes_dtypes_and_range() -> None:
    left, right, disp = render_pair(0, 5, 96, 160, 32.0)
    assert left.shape == right.shape == (96, 160, 3)
    assert left.dtype == right.dtype == np.uint8
    assert disp.shape == (96, 160) and disp.dtype == np.float32
    assert np.isfinite(disp).all()
    assert disp.min() >= 0.02 * 32 - 1e-3 and disp.max() <= 0.95 * 32 + 1e-3
    # Textured: images are not flat and the two views differ.
    assert left.std() > 20 and not np.array_equal(left, right)


def test_render_pair_is_deterministic_per_seed_and_index() -> None:
    a = render_pair(3, 7, 64, 128, 24.0)
    b = render_pair(3, 7, 64, 128, 24.0)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)
    other_index = render_pair(3, 8, 64, 128, 24.0)
    other_seed = render_pair(4, 7, 64, 128, 24.0)
    assert not np.array_equal(a[2], other_index[2])
    assert not np.array_equal(a[2], other_seed[2])


@pytest.mark.parametrize("index", [0, 1, 2])
def test_ground_truth_disparity_matches_the_views(index: int) -> None:
    """Warping the right view by the ground truth reproduces the left view (up to noise, the
    exposure difference and occlusions); a disparity off by 2 px either way does not."""
    left, right, disp = render_pair(1, index, 128, 256, 48.0)
    good = _warp_error(left, right, disp)
    assert np.nanmedian(good) < 7.0
    assert np.nanmean(good < 12.0) > 0.7
    for shift in (-2.0, 2.0):
        bad = _warp_error(left, right, disp + shift)
        assert np.nanmedian(bad) > 1.4 * np.nanmedian(good)


def test_scenes_have_depth_structure() -> None:
    """Several layers at different disparities: many distinct values and sharp depth edges."""
    _, _, disp = render_pair(0, 11, 128, 256, 64.0)
    assert disp.max() - disp.min() > 8.0
    jumps = np.abs(np.diff(disp, axis=1)) > 2.0
    assert jumps.sum() > 20
