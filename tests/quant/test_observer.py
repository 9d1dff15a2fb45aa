from __future__ import annotations

import torch

from stereoq.quant.observer import PercentileObserver


def test_percentile_clips_rare_outliers_but_keeps_the_bulk() -> None:
    gen = torch.Generator().manual_seed(0)
    obs = PercentileObserver(percentile=99.9, bins=2048)
    obs(torch.randn(200_000, generator=gen))
    obs(torch.tensor([500.0, -400.0]))  # widens the range: earlier counts are re-binned
    low, high = obs.clipped_range()
    assert obs.max_val.item() == 500.0 and obs.min_val.item() == -400.0
    assert 2.5 < high.item() < 4.5 and -4.5 < low.item() < -2.5
    assert obs.histogram.sum().item() == 200_002
    scale, _ = obs.calculate_qparams()
    assert scale.item() < 9.0 / 255  # not stretched to the outliers' range (900 / 255)


def test_full_percentile_keeps_the_range_and_relu_outputs_keep_zero() -> None:
    obs = PercentileObserver(percentile=100.0, bins=256)
    obs(torch.linspace(0.0, 6.0, 10_000))
    low, high = obs.clipped_range()
    assert low.item() == 0.0
    assert abs(high.item() - 6.0) < 1e-5
    _, zero_point = obs.calculate_qparams()
    assert zero_point.item() == 0
