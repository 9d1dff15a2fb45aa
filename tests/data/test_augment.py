"""Training-time augmentation: the zoom keeps the ground truth exact, colour draws are shared or
per view as configured, the eraser paints the right view only, and the options are checked."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest
import torch

from stereoq.data import build_dataset
from stereoq.data.augment import Augment
from stereoq.data.transforms import build_transform
from stereoq.settings.data import AugmentConfig, DataConfig

OFF = {"scale": None, "color": False, "eraser_prob": 0.0}


def _shifted_pair(h: int, w: int, shift: int) -> dict:
    """A textured left view, the right view it gives at constant disparity ``shift``."""
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (h, w + shift, 3), dtype=np.uint8)
    wide = np.repeat(np.repeat(wide[::4, ::4], 4, 0), 4, 1)[:h, : w + shift]  # smooth enough
    left, right = wide[:, :w], wide[:, shift:]
    disp = np.full((h, w), float(shift), np.float32)
    disp[:, :3] = 0.0  # unknown pixels stay unknown
    return {"left": np.ascontiguousarray(left), "right": np.ascontiguousarray(right),
            "disp": disp, "name": "x"}


def _warp_error(sample: dict) -> float:
    """Mean |left - right sampled at x - d| over known pixels away from the borders."""
    left = sample["left"].astype(np.float32)
    right = sample["right"].astype(np.float32)
    disp = sample["disp"]
    h, w = disp.shape
    cols = np.arange(w)[None, :] - disp
    ok = (disp > 0) & (cols >= 0) & (cols <= w - 1)
    ok[:, : w // 8] = ok[:, -w // 8:] = False
    c0 = np.clip(np.floor(cols).astype(int), 0, w - 2)
    t = (cols - c0)[..., None]
    rows = np.arange(h)[:, None]
    warped = right[rows, c0] * (1 - t) + right[rows, c0 + 1] * t
    return float(np.abs(left - warped)[ok].mean())


def test_zoom_scales_disparity_with_the_width_and_keeps_it_exact() -> None:
    sample = _shifted_pair(64, 128, 12)
    torch.manual_seed(0)
    aug = Augment(AugmentConfig(enabled=True, **{**OFF, "scale": (1.3, 1.6)}))
    out = aug(sample)
    h, w = out["disp"].shape
    factor = w / 128
    assert 1.3 <= factor <= 1.6 and abs(h - 64 * factor) <= 1
    known = out["disp"] > 0
    assert np.allclose(out["disp"][known], 12 * factor, rtol=1e-6)
    assert (~known).any()  # unknown pixels are not blended into known ones
    # warping the zoomed right view by the zoomed disparity gives the zoomed left view
    assert _warp_error(out) < 0.1 * _warp_error({**out, "disp": np.where(known, 12.0, 0.0)})
    assert _warp_error(out) < 6.0


def test_zoom_never_makes_the_training_crop_impossible() -> None:
    sample = _shifted_pair(64, 128, 4)
    aug = Augment(AugmentConfig(enabled=True, **{**OFF, "scale": (0.25, 0.5)}), (48, 120))
    for seed in range(5):
        torch.manual_seed(seed)
        h, w = aug(sample)["disp"].shape
        assert h >= 48 and w >= 120


def test_color_is_shared_or_per_view_as_configured() -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    sample = {"left": img, "right": img.copy(), "disp": np.ones((32, 48), np.float32)}
    shared = Augment(AugmentConfig(enabled=True, **{**OFF, "color": True, "asymmetric_prob": 0.0}))
    own = Augment(AugmentConfig(enabled=True, **{**OFF, "color": True, "asymmetric_prob": 1.0}))
    changed = 0
    for seed in range(4):
        torch.manual_seed(seed)
        out = shared(sample)
        assert np.array_equal(out["left"], out["right"])
        changed += int(not np.array_equal(out["left"], img))
        torch.manual_seed(seed)
        out = own(sample)
        assert not np.array_equal(out["left"], out["right"])
    assert changed == 4


def test_eraser_paints_the_right_view_only() -> None:
    sample = _shifted_pair(64, 128, 8)
    aug = Augment(AugmentConfig(enabled=True, **{**OFF, "eraser_prob": 1.0, "eraser_max": 2}))
    torch.manual_seed(3)
    out = aug(sample)
    assert np.array_equal(out["left"], sample["left"])
    assert np.array_equal(out["disp"], sample["disp"])
    painted = (out["right"] != sample["right"]).any(-1)
    share = painted.mean()
    assert 0.005 < share < 2 * 0.25**2 + 0.01
    fill = sample["right"].reshape(-1, 3).mean(0).round()
    assert np.all(out["right"][painted] == fill)


def test_same_seed_same_augmented_sample() -> None:
    sample = _shifted_pair(64, 128, 8)
    aug = Augment(AugmentConfig(enabled=True, eraser_prob=1.0))
    torch.manual_seed(7)
    a = aug(sample)
    torch.manual_seed(7)
    b = aug(sample)
    assert all(np.array_equal(a[k], b[k]) for k in ("left", "right", "disp"))


def test_training_pipeline_augments_only_when_enabled_and_only_training() -> None:
    base = {"synthetic": {"train_count": 2, "val_count": 1, "height": 48, "width": 96},
            "train_crop": [32, 64]}
    off = DataConfig.model_validate(base)
    on = DataConfig.model_validate({**base, "augment": {"enabled": True}})
    assert not any(isinstance(t, Augment) for t in build_transform(off, True).transforms)
    assert isinstance(build_transform(on, True).transforms[0], Augment)
    assert not any(isinstance(t, Augment) for t in build_transform(on, False).transforms)
    item = build_dataset(on, "train", crop=True)[0]
    assert item["left"].shape == (3, 32, 64) and item["disp"].shape == (1, 32, 64)


@pytest.mark.parametrize(
    "option, match",
    [
        ({"scale": [1.5, 1.0]}, "scale: the low end"),
        ({"gamma": [1.2, 0.9]}, "gamma: the low end"),
        ({"eraser_size": [0.5, 1.5]}, "at most 1"),
        ({"asymmetric_prob": 1.5}, "asymmetric_prob"),
    ],
)
def test_bad_ranges_are_refused(option: dict, match: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=match):
        AugmentConfig.model_validate(option)
