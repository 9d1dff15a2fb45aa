"""KITTI 2015/2012, Middlebury and ETH3D read from tiny trees in their distributed layouts."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from tests.data import benchmark_trees as trees

from stereoq.data import build_dataset
from stereoq.data.benchmarks import find_entries, load_sample
from stereoq.data.datasets import LmdbStereo
from stereoq.data.pack import BenchmarkSource, pack
from stereoq.errors import StereoqError
from stereoq.settings.data import DataConfig


@pytest.mark.parametrize("year", [2015, 2012])
def test_kitti_disparity_noc_and_calibration(tmp_path: Path, year: int) -> None:
    root = trees.kitti(tmp_path / "kitti", year)
    entries = find_entries(f"kitti{year}", root)
    assert [e.name.split("/")[1] for e in entries] == ["000000", "000001", "000002"]
    s = load_sample(entries[1])
    want = trees.ground_truth(1)
    want[:2, :3] = 0
    np.testing.assert_array_equal(s["disp"], want)  # value / 256, 0 = no ground truth
    left, _ = trees.images(1)
    np.testing.assert_array_equal(s["left"], left)
    noc = want > 0
    noc[5] = False
    np.testing.assert_array_equal(s["noc"], noc)
    assert s["calib"]["baseline_m"] == pytest.approx(0.5327, abs=1e-4)
    assert s["calib"]["focal_px"] == 721.5377


def test_kitti_refuses_an_8bit_ground_truth(tmp_path: Path) -> None:
    root = trees.kitti(tmp_path / "kitti", count=1)
    bad = root / "training/disp_occ_0/000000_10.png"
    cv2.imwrite(str(bad), np.full((trees.H, trees.W), 7, np.uint8))
    with pytest.raises(StereoqError) as err:
        load_sample(find_entries("kitti2015", root)[0])
    assert str(err.value).startswith(f"disparity {bad}: 8-bit PNG, expected a 16-bit PNG")


def test_middlebury_inf_is_unknown_and_mask_255_is_non_occluded(tmp_path: Path) -> None:
    root = trees.middlebury(tmp_path / "mb")
    # A 2014 scene names its ground truth disp0.pfm and may have no mask.
    trees.middlebury_scene(root / "Zed2014", 5, gt_name="disp0.pfm")
    (root / "Zed2014/mask0nocc.png").unlink()
    entries = find_entries("middlebury", root)
    assert [e.name for e in entries] == ["Scene0", "Scene1", "Zed2014"]
    s = load_sample(entries[0])
    want = trees.ground_truth(0)
    want[0, :4] = 0
    np.testing.assert_array_equal(s["disp"], want)
    noc = want > 0
    noc[3, :] = False
    noc[4, :2] = False
    np.testing.assert_array_equal(s["noc"], noc)
    assert s["calib"] == {"focal_px": 100.5, "cx_px": 7.5, "cy_px": 5.5, "baseline_m": 0.15,
                          "doffs_px": 2.0, "ndisp": 10.0}
    z = load_sample(entries[2])
    np.testing.assert_array_equal(z["noc"], z["disp"] > 0)


def test_eth3d_grayscale_becomes_three_channels(tmp_path: Path) -> None:
    root = trees.eth3d(tmp_path / "eth3d")
    s = load_sample(find_entries("eth3d", root)[1])
    gray = trees.images(1)[0][..., 0]
    assert s["left"].shape == (trees.H, trees.W, 3)
    for c in range(3):
        np.testing.assert_array_equal(s["left"][..., c], gray)
    assert s["noc"][3].sum() == 0 and s["noc"][5].all()


@pytest.mark.parametrize(
    "source, make, needle",
    [("kitti2015", lambda r: (r / "training/image_2").mkdir(parents=True),
      "not in the KITTI 2015 layout (expected training/{image_2,image_3,disp_occ_0,disp_noc_0}"
      "/NNNNNN_10.png; missing training/image_3/, training/disp_occ_0/)"),
     ("kitti2012", lambda r: None, "missing training/colored_0/, training/colored_1/"),
     ("middlebury", lambda r: (r / "trainingQ").mkdir(), "(pick one of trainingQ as the root)"),
     ("eth3d", lambda r: (r / "two_view_training").mkdir(), "missing two_view_training_gt/)"),
     ("middlebury", lambda r: trees.middlebury_scene(r / "A", 0) or (r / "A/disp0GT.pfm").unlink(),
      "missing A/disp0GT.pfm or disp0.pfm)")],
)
def test_a_folder_in_no_layout_is_one_line(tmp_path: Path, source, make, needle) -> None:
    root = tmp_path / "data"
    root.mkdir()
    make(root)
    with pytest.raises(StereoqError) as err:
        find_entries(source, root)
    assert "\n" not in str(err.value)
    assert needle in str(err.value)


def test_ground_truth_of_another_size_names_the_file(tmp_path: Path) -> None:
    root = tmp_path / "mb"
    trees.middlebury_scene(root / "S", 0, gt=np.ones((trees.H, trees.W + 1), np.float32))
    with pytest.raises(StereoqError) as err:
        load_sample(find_entries("middlebury", root)[0])
    assert str(err.value).startswith(f"{root / 'S/disp0GT.pfm'}: 17x12, but the left image")


def test_data_source_and_val_every(tmp_path: Path) -> None:
    root = trees.kitti(tmp_path / "kitti", count=3)
    cfg = DataConfig(source="kitti2015", root=root, val_every=3, train_crop=(8, 8))
    train, val = build_dataset(cfg, "train", crop=True), build_dataset(cfg, "val", crop=False)
    assert (len(train), len(val)) == (2, 1)
    item = train[0]
    assert item["left"].shape == (3, 8, 8) and item["noc"].shape == (1, 8, 8)
    assert val[0]["name"] == "image_2/000002" and val[0]["disp"].shape == (1, trees.H, trees.W)
    with pytest.raises(StereoqError, match="data.root is required when data.source is eth3d"):
        build_dataset(DataConfig(source="eth3d"), "val", crop=False)


@pytest.mark.parametrize("source, make", [("middlebury", trees.middlebury),
                                          ("eth3d", trees.eth3d)])
def test_pack_keeps_mask_and_calibration(tmp_path: Path, source, make) -> None:
    root = make(tmp_path / "raw")
    entries = find_entries(source, root)
    pack(BenchmarkSource(source, root, tuple(entries)), tmp_path / "out", "test",
         disp_encoding="float32")
    packed = LmdbStereo(tmp_path / "out/test_lmdb")
    for i, entry in enumerate(entries):
        a, b = load_sample(entry), packed.raw(i)
        for key in ("left", "right", "disp", "noc"):
            np.testing.assert_array_equal(a[key], b[key])
        assert a["calib"] == b["calib"] and a["name"] == b["name"]


def test_png16_pack_refuses_disparities_it_cannot_hold(tmp_path: Path) -> None:
    root = tmp_path / "mb"
    trees.middlebury_scene(root / "S", 0, gt=np.full((trees.H, trees.W), 300.0, np.float32))
    with pytest.raises(StereoqError, match="pack with --disp-encoding float32"):
        pack(BenchmarkSource("middlebury", root, tuple(find_entries("middlebury", root))),
             tmp_path / "out", "train")
    assert not (tmp_path / "out/train_lmdb").exists()
