"""The input pipeline: YUV conversion against OpenCV, aligned crops, the network input."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from stereoq.data import build_dataset
from stereoq.data.color import rgb_to_yuv444
from stereoq.data.transforms import RandomCrop, prepare_pair
from stereoq.settings.data import DataConfig, SyntheticConfig


def test_yuv444_matches_opencv() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    # Include the extremes where OpenCV clips V.
    rgb[0, :8] = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0],
                  [255, 255, 0], [0, 255, 255], [255, 0, 255]]
    ours = rgb_to_yuv444(torch.from_numpy(rgb).permute(2, 0, 1)).permute(1, 2, 0).numpy()
    ref = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV).astype(np.float32)
    diff = np.abs(ours - ref)
    assert diff.max() <= 1.0
    assert diff.mean() < 0.05
    # Batched input gives the same.
    batched = rgb_to_yuv444(torch.from_numpy(rgb).permute(2, 0, 1)[None])[0]
    assert torch.equal(batched.permute(1, 2, 0), torch.from_numpy(ours))


def test_random_crop_keeps_left_right_disparity_aligned() -> None:
    h, w = 40, 60
    rows, cols = np.mgrid[0:h, 0:w]
    coords = np.stack([rows, cols, rows + cols], -1).astype(np.uint8)
    sample = {"left": coords, "right": coords[..., ::-1].copy(),
              "disp": (rows * 1000 + cols).astype(np.float32), "name": "x"}
    crop = RandomCrop((16, 24))
    seen = set()
    for _ in range(20):
        out = crop(sample)
        assert out["left"].shape == out["right"].shape == (16, 24, 3)
        top, left = int(out["disp"][0, 0]) // 1000, int(out["disp"][0, 0]) % 1000
        seen.add((top, left))
        assert np.array_equal(out["left"], coords[top:top + 16, left:left + 24])
        assert np.array_equal(out["right"], coords[top:top + 16, left:left + 24, ::-1])
        assert np.array_equal(out["disp"], sample["disp"][top:top + 16, left:left + 24])
    assert len(seen) > 5  # the window moves


def test_prepare_pair_is_normalised_yuv() -> None:
    cfg = DataConfig()
    rng = np.random.default_rng(1)
    left = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    right = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    x = prepare_pair(left, right, cfg)
    assert x.shape == (6, 32, 48) and x.dtype == torch.float32
    expect = (cv2.cvtColor(left, cv2.COLOR_RGB2YUV).astype(np.float32) - 128) / 128
    assert np.abs(x[:3].permute(1, 2, 0).numpy() - expect).max() <= 1 / 128 + 1e-6
    rgb = prepare_pair(left, right, cfg.model_copy(update={"color": "rgb"}))
    assert torch.allclose(rgb[3:].permute(1, 2, 0), (torch.from_numpy(right).float() - 128) / 128)


def test_build_dataset_synthetic_train_and_val() -> None:
    cfg = DataConfig(synthetic=SyntheticConfig(train_count=4, val_count=3, height=64, width=128,
                                               max_disp=24.0), train_crop=(32, 64))
    train = build_dataset(cfg, "train", crop=True)
    val = build_dataset(cfg, "val", crop=False)
    assert len(train) == 4 and len(val) == 3
    batch = next(iter(DataLoader(train, batch_size=2)))
    assert batch["left"].shape == (2, 3, 32, 64) and batch["disp"].shape == (2, 1, 32, 64)
    assert batch["left"].dtype == torch.float32 and batch["left"].abs().max() <= 1.0
    assert batch["name"][0] != batch["name"][1]
    item = val[0]
    assert item["left"].shape == (3, 64, 128) and item["disp"].shape == (1, 64, 128)
    assert (item["disp"] > 0).all()
    # Val never repeats a train scene.
    train_full = build_dataset(cfg, "train", crop=False)
    assert not torch.equal(train_full[0]["disp"], val[0]["disp"])


def test_collate_stacks_tensors_and_lists_names() -> None:
    from stereoq.data.transforms import collate

    cfg = DataConfig(synthetic=SyntheticConfig(train_count=3, val_count=1, height=32, width=64,
                                               max_disp=8.0))
    ds = build_dataset(cfg, "train", crop=False)
    batch = collate([ds[0], ds[2]])
    assert batch["left"].shape == (2, 3, 32, 64) and batch["disp"].shape == (2, 1, 32, 64)
    assert torch.equal(batch["right"][1], ds[2]["right"])
    assert batch["name"] == [ds[0]["name"], ds[2]["name"]]
