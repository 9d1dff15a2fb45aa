"""Error regions from ground truth: occlusions, depth edges, per-region scores."""

from __future__ import annotations

import numpy as np
import pytest

from stereoq.data.synthetic_scenes import render_scene
from stereoq.engine.regions import (
    depth_edge_mask,
    occlusion_mask,
    region_masks,
    region_scores,
)


def square_scene() -> np.ndarray:
    """Background at 5 px, a square at 15 px over rows 10-29, columns 40-59."""
    disp = np.full((40, 80), 5.0)
    disp[10:30, 40:60] = 15.0
    return disp


def test_occlusions_of_a_square_are_its_left_band_and_the_image_border() -> None:
    occluded = occlusion_mask(square_scene())
    expected = np.zeros((40, 80), dtype=bool)
    expected[:, :5] = True             # land left of the right image (x - 5 < 0)
    expected[10:30, 30:40] = True      # background the square hides: 15 - 5 = 10 px wide
    assert np.array_equal(occluded, expected)


def test_unknown_pixels_are_neither_occluded_nor_occluding() -> None:
    disp = square_scene()
    disp[10:30, 40:60] = np.inf        # the square has no ground truth: it hides nothing
    disp[0, 0] = 0.0
    occluded = occlusion_mask(disp)
    assert not occluded[10:30, 30:40].any() and not occluded[10:30, 40:60].any()
    assert not occluded[0, 0] and occluded[1, 0]


@pytest.mark.parametrize("index", range(4))
def test_occlusions_agree_with_the_generators_own(index: int) -> None:
    """The generator knows which left pixels the right view sees (its surface ids). Its mask is
    conservative at silhouettes (a right pixel either side showing another surface hides the
    point); ours needs both sides covered, so ours is all but inside its mask (a few silhouette
    pixels: our z-buffer splats each point one px wide) and close to it. Measured on scenes 0-5
    at 192x384: 0-3 pixels of ours outside theirs, 96.4-98.9 % of pixels agreeing."""
    scene = render_scene(np.random.default_rng([0, index, 14]), 192, 384, 64.0)
    ours = occlusion_mask(scene.disp_left)
    theirs = ~scene.noc_left
    assert ours.mean() > 0.05
    assert (ours & ~theirs).mean() < 0.001
    assert (ours == theirs).mean() > 0.95


def test_depth_edges_are_a_band_around_each_step() -> None:
    disp = np.full((20, 40), 5.0)
    disp[:, 20:] = 6.5                 # a 1.5 px step between columns 19 and 20
    disp[:, 30:] += 0.8                # a step below the 1 px threshold: no edge
    edges = depth_edge_mask(disp, jump_px=1.0, radius_px=2)
    assert np.array_equal(np.nonzero(edges.any(axis=0))[0], np.arange(17, 23))
    assert edges[:, 17:23].all()


def test_region_scores_split_the_error_by_region() -> None:
    gt = square_scene()
    gt[0, :] = np.nan                  # no ground truth: scored nowhere
    masks = region_masks(gt, maxdisp=64)
    assert not masks["all"][0].any()
    assert np.array_equal(masks["all"], masks["visible"] | masks["occluded"])
    assert not (masks["visible"] & masks["occluded"]).any()
    assert np.array_equal(masks["visible"], masks["depth edges"] | masks["surfaces"])

    pred = np.where(masks["occluded"], gt + 3.0, np.nan_to_num(gt))
    pred[masks["depth edges"]] += 1.0
    scores = region_scores(pred, gt, maxdisp=64)
    assert scores["occluded"]["epe"] == pytest.approx(3.0)
    assert scores["occluded"]["bad2"] == pytest.approx(100.0)
    assert scores["depth edges"]["epe"] == pytest.approx(1.0)
    assert scores["depth edges"]["bad2"] == 0.0
    assert scores["surfaces"]["epe"] == 0.0
    assert sum(scores[k]["share"] for k in ("occluded", "depth edges", "surfaces")) == (
        pytest.approx(100.0))
    share = {k: scores[k]["share"] / 100 for k in ("occluded", "depth edges")}
    assert scores["all"]["epe"] == pytest.approx(3.0 * share["occluded"]
                                                 + 1.0 * share["depth edges"])


def test_a_region_without_pixels_scores_none() -> None:
    gt = np.full((8, 16), 20.0)        # beyond maxdisp 16: nothing is scored
    scores = region_scores(np.zeros_like(gt), gt, maxdisp=16)
    assert scores["all"] == {"share": 0.0, "pixels": 0, "epe": None, "bad2": None}
