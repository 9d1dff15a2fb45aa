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


def test_benchmark_metrics_against_hand_computed_values() -> None:
    from stereoq.engine.metrics import BenchmarkMetrics

    inf = float("inf")
    gt = torch.tensor([[10.0, 2.0, 0.0], [inf, 50.0, 4.0]]).view(1, 1, 2, 3)
    pred = torch.tensor([[14.0, 2.5, 7.0], [3.0, 52.6, 8.0]]).view(1, 1, 2, 3)
    noc = torch.tensor([[False, True, True], [True, True, False]]).view(1, 1, 2, 3)
    m = BenchmarkMetrics()
    m.update(pred, gt, noc)
    r = m.compute(("D1", "bad-1.0", "bad-2.0", "bad-3.0", "avgerr"))
    # With ground truth: 10, 2, 50, 4 (50 counts although above a maxdisp of 32); errors 4, 0.5,
    # 2.6, 4. Non-occluded with ground truth: 2 and 50 (errors 0.5, 2.6).
    assert r["D1-all"] == pytest.approx(50.0)  # 4 on 10 and 4 on 4; 2.6 is under 3 px
    assert r["D1-noc"] == pytest.approx(0.0)
    assert (r["bad-1.0-all"], r["bad-1.0-noc"]) == pytest.approx((75.0, 50.0))
    assert (r["bad-2.0-all"], r["bad-2.0-noc"]) == pytest.approx((75.0, 50.0))
    assert (r["bad-3.0-all"], r["bad-3.0-noc"]) == pytest.approx((50.0, 0.0))
    assert (r["avgerr-all"], r["avgerr-noc"]) == pytest.approx((11.1 / 4, 3.1 / 2))
    # Pixel-weighted over the set: a second image with one exact pixel.
    m.update(torch.ones(1, 1, 1, 1), torch.ones(1, 1, 1, 1), torch.ones(1, 1, 1, 1, dtype=bool))
    assert m.compute(("avgerr",))["avgerr-all"] == pytest.approx(11.1 / 5)
    empty = BenchmarkMetrics().compute(("D1",))
    assert math.isnan(empty["D1-all"]) and math.isnan(empty["D1-noc"])
