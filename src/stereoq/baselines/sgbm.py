"""OpenCV StereoSGBM as a baseline, on the same validation pairs as the network.

The validation set yields normalised network inputs (YUV444 or RGB, then (x - mean) / std);
SGBM wants RGB uint8. ``InputToRgb`` inverts the data pipeline's colour transform, which is
affine per pixel, by fitting it once on probe colours through ``prepare_pair`` itself, so it
stays right whatever conversion the data pipeline uses. YUV444 values are rounded (and clipped
for very saturated colours), so the recovered RGB is within a few grey levels of the original.

Pixels SGBM leaves invalid (occlusions, failed uniqueness or left-right checks, the left border
where the full disparity range does not fit) are filled with the nearest valid disparity to
their left in the same row (the background side of an occlusion), or to their right where there
is none; a row without any valid pixel gets 0. Every ground-truth-valid pixel is therefore
scored, none is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor

from stereoq.settings.config import ExperimentConfig
from stereoq.settings.data import DataConfig


@dataclass(frozen=True)
class SgbmParams:
    """StereoSGBM settings; P1/P2 follow OpenCV's advice (8 and 32 x channels x block²)."""

    num_disparities: int = 96
    block_size: int = 5
    uniqueness_ratio: int = 10
    speckle_window_size: int = 100
    speckle_range: int = 2
    disp12_max_diff: int = 1
    pre_filter_cap: int = 63

    @classmethod
    def covering(cls, max_disp_px: float, block_size: int = 5) -> SgbmParams:
        """Parameters whose range (a multiple of 16) covers disparities up to ``max_disp_px``."""
        return cls(num_disparities=max(16, int(np.ceil(max_disp_px / 16.0)) * 16),
                   block_size=block_size)


def sgbm_disparity(left_rgb: np.ndarray, right_rgb: np.ndarray, params: SgbmParams) -> np.ndarray:
    """(H, W, 3) uint8 RGB pair -> (H, W) float32 disparity of the left view in px, filled."""
    disp, valid = sgbm_unfilled(left_rgb, right_rgb, params)
    return fill_invalid(disp, valid)


def sgbm_unfilled(
    left_rgb: np.ndarray, right_rgb: np.ndarray, params: SgbmParams
) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 RGB pair -> (H, W) float32 disparity in px and the (H, W) bool mask of
    the pixels SGBM kept (uniqueness, its left-right check, speckle filter)."""
    channels = 3
    matcher = cv2.StereoSGBM_create(
        minDisparity=0,
        numDisparities=params.num_disparities,
        blockSize=params.block_size,
        P1=8 * channels * params.block_size**2,
        P2=32 * channels * params.block_size**2,
        disp12MaxDiff=params.disp12_max_diff,
        uniquenessRatio=params.uniqueness_ratio,
        speckleWindowSize=params.speckle_window_size,
        speckleRange=params.speckle_range,
        preFilterCap=params.pre_filter_cap,
        mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY,
    )
    # OpenCV's SGBM fails on images not wider than its range: pad both views on the left
    # (replicate; disparities do not change) and crop back.
    pad = max(0, params.num_disparities + params.block_size - left_rgb.shape[1])
    left_bgr, right_bgr = (
        cv2.copyMakeBorder(np.ascontiguousarray(img[..., ::-1]), 0, 0, pad, 0,
                           cv2.BORDER_REPLICATE)
        for img in (left_rgb, right_rgb)
    )
    # OpenCV expects BGR; SGBM sums costs over channels, so the order only matters for clarity.
    raw = matcher.compute(left_bgr, right_bgr)[:, pad:]
    disp = raw.astype(np.float32) / 16.0  # fixed point with 4 fractional bits
    return disp, raw >= 0


def fill_invalid(disp: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill invalid pixels from the nearest valid one to the left, else to the right, else 0."""
    h, w = disp.shape
    cols = np.broadcast_to(np.arange(w), (h, w))
    left = np.maximum.accumulate(np.where(valid, cols, -1), axis=1)
    right = np.minimum.accumulate(np.where(valid, cols, w)[:, ::-1], axis=1)[:, ::-1]
    src = np.where(left >= 0, left, right)
    rows = np.broadcast_to(np.arange(h)[:, None], (h, w))
    out = disp[rows, np.clip(src, 0, w - 1)]
    return np.where(src < w, out, 0.0).astype(np.float32)


class InputToRgb:
    """Inverts the data pipeline: a normalised (3, H, W) image -> (H, W, 3) uint8 RGB."""

    def __init__(self, data_cfg: DataConfig) -> None:
        from stereoq.data.transforms import prepare_pair

        # Moderate colours: saturated ones clip in YUV444 (V of pure red exceeds 255), which
        # would bend the fit.
        probe = np.random.default_rng(0).integers(32, 224, (1, 256, 3), dtype=np.uint8)
        net = prepare_pair(probe, probe, data_cfg)[:3].reshape(3, -1).double().numpy().T
        rgb = np.concatenate([probe.reshape(-1, 3).astype(np.float64), np.ones((256, 1))], 1)
        forward, *_ = np.linalg.lstsq(rgb, net, rcond=None)  # net = [rgb, 1] @ forward
        self.matrix = np.linalg.inv(forward[:3])
        self.offset = forward[3]

    def __call__(self, image: Tensor) -> np.ndarray:
        net = image.detach().cpu().double().numpy().reshape(3, -1).T
        rgb = (net - self.offset) @ self.matrix
        h, w = image.shape[-2:]
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).reshape(h, w, 3)


class SgbmMatcher:
    """StereoSGBM behind the network's interface: (B, 6, H, W) normalised -> (B, 1, H, W) px.

    ``params`` is the default range; a pair whose calibration gives ``ndisp`` (Middlebury and
    ETH3D ``calib.txt``) is searched over that range instead. ``ranges_used`` collects each
    range actually run, for the report.
    """

    def __init__(self, data_cfg: DataConfig, params: SgbmParams) -> None:
        self.to_rgb = InputToRgb(data_cfg)
        self.params = params
        self.ranges_used: set[int] = set()

    @classmethod
    def for_config(cls, cfg: ExperimentConfig) -> SgbmMatcher:
        """SGBM over the model's range (``model.maxdisp``) unless a pair's ``ndisp`` says."""
        return cls(cfg.data, SgbmParams.covering(cfg.model.maxdisp))

    def params_for(self, ndisp: float) -> SgbmParams:
        """The data's own range when known (``ndisp`` > 0), else the default one."""
        if ndisp > 0:
            return SgbmParams.covering(ndisp, self.params.block_size)
        return self.params

    def predict_normalised(self, x: Tensor, ndisp: Tensor | None = None) -> Tensor:
        """``ndisp`` (B,): each pair's disparity range from its calibration, 0 = unknown."""
        out = []
        for i, pair in enumerate(x):
            params = self.params_for(float(ndisp[i]) if ndisp is not None else 0.0)
            self.ranges_used.add(params.num_disparities)
            out.append(sgbm_disparity(self.to_rgb(pair[:3]), self.to_rgb(pair[3:]), params))
        return torch.from_numpy(np.stack(out))[:, None]

    def predict_batch(self, batch: dict[str, Any]) -> Tensor:
        """A collated validation batch -> (B, 1, H, W) px, ranges from ``batch["calib"]``."""
        calib = batch.get("calib")
        pairs = torch.cat([batch["left"], batch["right"]], dim=1)
        return self.predict_normalised(pairs, calib["ndisp"] if calib is not None else None)
