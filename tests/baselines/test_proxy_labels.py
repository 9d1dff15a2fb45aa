"""Proxy labels keep only the pixels that pass the confidence checks."""

from __future__ import annotations

import numpy as np

from stereoq.baselines.proxy_labels import ProxyParams, left_right_consistent, proxy_labels
from stereoq.baselines.sgbm import SgbmParams


def test_left_right_check_keeps_only_pixels_whose_match_agrees() -> None:
    left = np.full((1, 8), 2.0)
    right = np.full((1, 8), 2.0)
    right[0, 3] = 5.0  # left pixel 5 matches right pixel 3, which disagrees by 3 px
    left[0, 6] = np.nan  # no left value
    right[0, 0] = np.nan  # left pixel 2's match has no right value
    keep = left_right_consistent(left, right, max_diff_px=1.0)
    #            x: 0 and 1 match outside the image
    assert keep[0].tolist() == [False, False, False, True, True, False, False, True]
    assert left_right_consistent(left, right, max_diff_px=3.0)[0, 5]


def test_proxy_labels_keep_confident_correct_pixels_and_drop_occluded_ones() -> None:
    rng = np.random.default_rng(0)
    h, w, d_bg, d_fg = 80, 160, 8, 20
    background = rng.integers(0, 256, (h, w + d_bg, 3), dtype=np.uint8)
    foreground = rng.integers(0, 256, (h, 40, 3), dtype=np.uint8)
    left = background[:, :w].copy()  # left(x) = right(x - d)
    right = background[:, d_bg:].copy()
    left[:, 100:140] = foreground  # a nearer square 40 px wide at columns 100..139
    right[:, 100 - d_fg:140 - d_fg] = foreground
    truth = np.full((h, w), float(d_bg))
    truth[:, 100:140] = d_fg
    labels = proxy_labels(left, right, ProxyParams(SgbmParams.covering(32), 1.0))
    kept = labels > 0
    assert 0.5 < kept.mean() < 1.0
    error = np.abs(labels[kept] - truth[kept])
    assert (error <= 1.0).mean() > 0.999  # what is kept is right (SGBM blurs one edge column)
    # background columns 88..99 are hidden behind the square in the right view, and columns
    # 0..7 see what the right camera does not: no label
    assert not kept[:, 89:99].any() and not kept[:, :8].any()
    # the left columns whose match is inside the image are labelled (the views are padded)
    assert kept[:, 8:32].mean() > 0.5
