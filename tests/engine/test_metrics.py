import math

import pytest
import torch

from stereoq.engine.metrics import DisparityMetrics


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Three 1x4 images; maxdisp 64. Image 2 has no valid pixel."""
    inf = float("inf")
    gt = torch.tensor([[1.0, 2.0, 0.0, 62.0], [10.0, 100.0, inf, 0.0], [0.0, 0.0, 64.0, -3.0]])
    pred = torch.tensor([[1.5, 6.0, 9.0, 58.95], [13.5, 0.0, 0.0, 0.0], [5.0, 5.0, 5.0, 5.0]])
    return pred.view(3, 1, 1, 4), gt.view(3, 1, 1, 4)


def test_metrics_against_hand_computed_values() -> None:
    pred, gt = batch()
    m = DisparityMetrics(maxdisp=64)
    m.update(pred, gt)
    r = m.compute()
    # valid errors: image 0 -> 0.5, 4, 3.05; image 1 -> 3.5 (100, inf and 0 are invalid)
    assert r["epe"] == pytest.approx(((0.5 + 4 + 3.05) / 3 + 3.5) / 2)
    assert r["epe_pixel"] == pytest.approx((0.5 + 4 + 3.05 + 3.5) / 4)
    assert r["bad1"] == pytest.approx(75.0)
    assert r["bad3"] == pytest.approx(75.0)
    # 3.05 px on gt 62 is under 5 % of gt (3.1): bad-3 but not D1
    assert r["d1"] == pytest.approx(50.0)
    assert (r["images"], r["skipped_images"], r["pixels"]) == (2, 1, 4)


def test_batches_accumulate_like_one_batch() -> None:
    pred, gt = batch()
    whole, parts = DisparityMetrics(64), DisparityMetrics(64)
    whole.update(pred, gt)
    parts.update(pred[:1], gt[:1])
    parts.update(pred[1:], gt[1:])
    assert parts.compute() == pytest.approx(whole.compute())


def test_no_valid_pixel_gives_nan_not_zero() -> None:
    m = DisparityMetrics(64)
    m.update(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
    r = m.compute()
    assert math.isnan(r["epe"]) and math.isnan(r["d1"]) and r["skipped_images"] == 1
