import numpy as np
import pytest
import torch

from stereoq.baselines.sgbm import (
    InputToRgb,
    SgbmMatcher,
    SgbmParams,
    fill_invalid,
    sgbm_disparity,
)
from stereoq.data.synthetic import render_pair
from stereoq.data.transforms import prepare_pair
from stereoq.engine.metrics import DisparityMetrics
from stereoq.settings.data import DataConfig


def test_fill_invalid_from_the_left_then_right() -> None:
    disp = np.array([[9, 1, 9, 2, 9], [9, 9, 9, 9, 9], [9, 9, 9, 3, 9]], np.float32)
    valid = np.array([[0, 1, 0, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 1, 0]], bool)
    expected = [[1, 1, 1, 2, 2], [0, 0, 0, 0, 0], [3, 3, 3, 3, 3]]
    assert fill_invalid(disp, valid).tolist() == expected


@pytest.mark.parametrize("color", ["yuv444", "rgb"])
def test_input_to_rgb_inverts_the_pipeline(color: str) -> None:
    cfg = DataConfig(color=color)
    rgb = np.random.default_rng(1).integers(0, 256, (16, 32, 3), dtype=np.uint8)
    back = InputToRgb(cfg)(prepare_pair(rgb, rgb, cfg)[:3])
    err = np.abs(back.astype(int) - rgb.astype(int))
    if color == "rgb":
        assert err.max() == 0
    else:  # YUV444 is rounded to integers and clips for saturated colours (pure red's V > 255)
        assert np.percentile(err, 95) <= 1 and np.median(err) <= 1


def test_range_covers_model_maxdisp() -> None:
    assert SgbmParams.covering(96).num_disparities == 96
    assert SgbmParams.covering(100).num_disparities == 112


def test_sgbm_recovers_synthetic_disparity() -> None:
    cfg = DataConfig()
    left, right, disp = render_pair(0, 7, 96, 192, 24.0)
    x = prepare_pair(left, right, cfg)[None]
    pred = SgbmMatcher(cfg, SgbmParams.covering(32)).predict_normalised(x)
    assert pred.shape == (1, 1, 96, 192)
    m = DisparityMetrics(32)
    m.update(pred, torch.from_numpy(disp)[None, None])
    assert m.compute()["epe"] < 3.0


def test_images_narrower_than_the_range_are_padded_and_cropped_back() -> None:
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (12, 19, 3), np.uint8)
    disp = sgbm_disparity(wide[:, 3:].copy(), wide[:, :16].copy(), SgbmParams.covering(64))
    assert disp.shape == (12, 16) and np.isfinite(disp).all()


def test_range_follows_the_calibrations_ndisp_else_maxdisp(tiny_config, tmp_path,
                                                           monkeypatch) -> None:
    """Three Middlebury scenes: ndisp 10 and 33 in calib.txt, and one calib.txt without ndisp
    (the model's maxdisp, 64, applies); each range rounds up to a multiple of 16."""
    from tests.data import benchmark_trees as trees

    from stereoq.baselines import sgbm
    from stereoq.engine.evaluate import evaluate_sgbm
    from stereoq.settings import load_config

    root = trees.middlebury(tmp_path / "mb", count=3)
    calib = trees.MIDDLEBURY_CALIB.decode()
    (root / "Scene1" / "calib.txt").write_text(calib.replace("ndisp=10", "ndisp=33"))
    (root / "Scene2" / "calib.txt").write_text(calib.replace("ndisp=10\n", ""))
    seen: list[int] = []
    real = sgbm.sgbm_disparity

    def spy(left: np.ndarray, right: np.ndarray, params: SgbmParams) -> np.ndarray:
        seen.append(params.num_disparities)
        return real(left, right, params)

    monkeypatch.setattr(sgbm, "sgbm_disparity", spy)
    cfg = load_config(str(tiny_config), sets=["data.source=middlebury", f"data.root={root}"])
    out = evaluate_sgbm(cfg)
    assert seen == [16, 48, 64]  # scenes in name order
    assert out["sgbm_num_disparities"] == [16, 48, 64] and out["images"] == 3
    assert out["benchmark"] == "middlebury"


def test_params_for_unknown_ndisp_keeps_the_default() -> None:
    matcher = SgbmMatcher(DataConfig(), SgbmParams.covering(96))
    assert matcher.params_for(0.0).num_disparities == 96
    assert matcher.params_for(270.0).num_disparities == 272
