"""The scenes generator: exact ground truth, occlusions, determinism, texture folders, config."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from stereoq.data import generators, synthetic_scenes
from stereoq.data.datasets import SyntheticStereo
from stereoq.data.pack import SyntheticSource
from stereoq.data.surfaces import Surface
from stereoq.data.synthetic_scenes import render_pair, render_scene
from stereoq.errors import StereoqError
from stereoq.settings import load_config
from stereoq.settings.data import SyntheticConfig

H, W, MAX_DISP = 96, 192, 40.0


OPEN = [0.0, 1.0]
"""``open_share`` of the tests of exactness: scenes' own objects, and every solid one open."""


def _scene(index: int, height: int = H, width: int = W, max_disp: float = MAX_DISP,
           open_share: float = 0.0):
    return render_scene(np.random.default_rng([0, index]), height, width, max_disp,
                        open_share=open_share)


def _coordinate_textures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Textures that hold their own left-view coordinates: channel 0 = x, 1 = y, 2 = the
    surface's number. Bilinear look-ups of such a ramp are exact, so a rendered pixel tells
    which surface point it shows. The ground, textured in world coordinates, gets only its
    number."""
    count = iter(range(10_000))

    def texture(rng, s: Surface, height, width, margin, photos):
        k = float(next(count))
        if s.ground:
            return np.full((8, 8, 3), [0.0, 0.0, k], np.float32), 0, 0
        x0, y0 = max(s.bbox[0], -2), max(s.bbox[1], -2)
        x1, y1 = min(s.bbox[2], width + margin), min(s.bbox[3], height + 2)
        ys, xs = np.mgrid[y0 : max(y1, y0 + 4), x0 : max(x1, x0 + 4)].astype(np.float32)
        return np.stack([xs, ys, np.full_like(xs, k)], -1), x0, y0

    monkeypatch.setattr(synthetic_scenes, "_surface_texture", texture)


def _warp(right: np.ndarray, disp_left: np.ndarray) -> np.ndarray:
    """The right view sampled at x - d (bilinear), (H, W, C)."""
    h, w = disp_left.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(right, xs - disp_left, ys, cv2.INTER_LINEAR)


@pytest.mark.parametrize("open_share", OPEN)
@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_ground_truth_is_exact(
    monkeypatch: pytest.MonkeyPatch, index: int, open_share: float
) -> None:
    """Each right pixel shows the surface point x_r + d_right; warping the right view by the
    left ground truth gives back the left view's surface points on non-occluded pixels."""
    _coordinate_textures(monkeypatch)
    scene = _scene(index, open_share=open_share)
    xs = np.arange(W, dtype=np.float32)[None, :]
    ground_l = scene.left[..., 0] == 0  # ground pixels hold only their number
    ground_r = scene.right[..., 0] == 0
    assert np.allclose(scene.left[..., 0][~ground_l], np.broadcast_to(xs, (H, W))[~ground_l])
    assert np.abs(scene.right[..., 0] - (xs + scene.disp_right))[~ground_r].max() < 1e-3
    warped = _warp(scene.right, scene.disp_left)
    noc = scene.noc_left
    assert noc.mean() > 0.5
    assert np.array_equal(warped[..., 2][noc], scene.left[..., 2][noc])  # the same surface
    xy = noc & ~ground_l
    # Not 0: the warp interpolates linearly between two right pixels a mapping that is curved
    # on curved surfaces (x'' = 2 cxx / (1 - dd/dx)^3), off by up to |x''| / 8: 0.028 px
    # measured on the smallest open ring.
    assert np.abs(warped[..., :2] - scene.left[..., :2])[xy].max() < 0.05


@pytest.mark.parametrize("open_share", OPEN)
@pytest.mark.parametrize("index", [0, 1])
def test_warped_right_view_reproduces_the_left_view(index: int, open_share: float) -> None:
    """With the real textures, before the cameras: warping by the ground truth matches the left
    view on non-occluded pixels far better than a disparity off by one pixel."""
    scene = _scene(index, open_share=open_share)
    noc = scene.noc_left

    def err(shift: float) -> float:
        diff = np.abs(_warp(scene.right, scene.disp_left + shift) - scene.left).mean(-1)
        return float(np.median(diff[noc]))

    # Not zero: bilinear interpolation of sharp textures between right pixels.
    assert err(0.0) < 8.0
    assert min(err(-1.0), err(1.0)) > 2.0 * err(0.0)


@pytest.mark.parametrize("open_share", OPEN)
@pytest.mark.parametrize("index", [0, 1, 2])
def test_occlusions_are_consistent(index: int, open_share: float) -> None:
    """Non-occluded: the right view has the same disparity at x - d. Occluded in frame: the
    right view shows something nearer there. Both views have pixels the other cannot see."""
    scene = _scene(index, open_share=open_share)
    d_l, d_r = scene.disp_left, scene.disp_right
    x_r = np.arange(W)[None, :] - d_l
    lo = np.floor(x_r).astype(int)
    in_frame = (lo >= 0) & (lo + 1 < W)
    rows = np.broadcast_to(np.arange(H)[:, None], (H, W))
    lo_c, hi_c = np.clip(lo, 0, W - 1), np.clip(lo + 1, 0, W - 1)
    t = x_r - lo
    d_at = (1 - t) * d_r[rows, lo_c] + t * d_r[rows, hi_c]
    noc = scene.noc_left
    assert np.abs(d_at - d_l)[noc].max() < 0.05
    occluded = in_frame & ~noc
    assert occluded.any()
    # Almost never a clearly farther surface on both sides of x - d. The tolerance: a pixel
    # marked occluded at its own surface's silhouette or where two surfaces cross, whose
    # right-view disparity moves by up to MAX_SLOPE_X / (1 - MAX_SLOPE_X) = 1 px per px; the
    # rare exceptions are a shape's sharp tip hit by a left pixel centre and missed by both
    # right ones (point sampling).
    nearer = np.maximum(d_r[rows, lo_c], d_r[rows, hi_c])
    assert (nearer < d_l - 1.5)[occluded].mean() < 0.002
    assert (nearer > d_l + 1.0)[occluded].mean() > 0.5
    # Right pixels whose surface point the left view cannot see (a nearer surface covers it).
    x_l = np.arange(W)[None, :] + d_r
    li = np.clip(np.round(x_l).astype(int), 0, W - 1)
    right_only = (x_l < W - 1) & (d_l[rows, li] > d_r + 1.0)
    assert right_only.any()


def test_render_pair_shapes_range_and_determinism() -> None:
    left, right, disp = render_pair(3, 7, H, W, MAX_DISP)
    assert left.shape == right.shape == (H, W, 3) and left.dtype == right.dtype == np.uint8
    assert disp.shape == (H, W) and disp.dtype == np.float32 and np.isfinite(disp).all()
    assert disp.min() >= 0.01 * MAX_DISP - 1e-3 and disp.max() <= 0.97 * MAX_DISP + 1e-3
    again = render_pair(3, 7, H, W, MAX_DISP)
    assert all(np.array_equal(a, b) for a, b in zip((left, right, disp), again, strict=True))
    assert not np.array_equal(disp, render_pair(3, 8, H, W, MAX_DISP)[2])
    assert not np.array_equal(disp, render_pair(4, 7, H, W, MAX_DISP)[2])


def test_scenes_cover_the_disparity_range_with_many_objects() -> None:
    disps = [render_pair(0, i, H, W, MAX_DISP)[2] for i in range(6)]
    both = np.concatenate([d.ravel() for d in disps])
    assert both.min() < 0.1 * MAX_DISP and both.max() > 0.9 * MAX_DISP
    margin = int(np.ceil(MAX_DISP)) + 2
    for i in range(6):
        surfaces = synthetic_scenes._scene(np.random.default_rng(i), H, W, MAX_DISP, margin)
        kinds = [s.kind for s in surfaces]
        assert 10 <= len(surfaces) <= 32
        assert "capsules" in kinds or "wire" in kinds  # thin structures
    # Depth edges everywhere, not one or two layers.
    jumps = [(np.abs(np.diff(d, axis=1)) > 1.0).sum() for d in disps]
    assert min(jumps) > 30


def test_structures_show_the_background_through_open_objects() -> None:
    """kind structures: about a third of the solid objects are rings, frames or lattices, and
    pixels inside an open object's outline see something farther; open_share 0 draws nothing
    more: the scenes generator's own scenes."""
    margin = int(np.ceil(MAX_DISP)) + 2
    share = generators.OPEN_SHARE
    opened = solids = seen_through = 0
    for i in range(8):
        surfaces = synthetic_scenes._scene(np.random.default_rng(i), H, W, MAX_DISP, margin,
                                           share)
        kinds = [s.kind for s in surfaces]
        opened += sum(k in ("ring", "frame", "lattice") for k in kinds)
        solids += sum(k not in ("full", "capsules", "wire") for k in kinds)
        scene = render_scene(np.random.default_rng(i), H, W, MAX_DISP, open_share=share)
        ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
        for s in surfaces:
            if s.kind in ("ring", "frame", "lattice") and s.bbox[0] >= 0 and s.bbox[2] <= W:
                x0, y0, x1, y1 = s.bbox
                win = (slice(max(y0, 0), min(y1, H)), slice(x0, x1))
                on = s.covers(xs[win], ys[win])
                # Holes in the outline: not the object's points, and farther than it there.
                hole = ~on & (scene.disp_left[win] < s.disparity(xs[win], ys[win]) - 0.5)
                seen_through += int(hole.any())
    assert 0.15 < opened / solids < 0.6
    assert seen_through >= 3
    plain = render_pair(0, 2, H, W, MAX_DISP)
    with_open = generators.GENERATORS["structures"](0, 2, H, W, MAX_DISP)
    assert not np.array_equal(plain[2], with_open[2])
    assert all(np.array_equal(a, b) for a, b in zip(
        plain, synthetic_scenes.render_pair(0, 2, H, W, MAX_DISP, open_share=0.0), strict=True))


def test_views_differ_like_two_cameras() -> None:
    """After the cameras the right view is not the warped left view plus a little noise."""
    left, right, disp = render_pair(0, 5, H, W, MAX_DISP)
    assert not np.array_equal(left, right)
    assert left.std() > 15


def _write_image(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    cv2.imwrite(str(path), rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))


@pytest.mark.parametrize("kind", generators.PHOTO_KINDS)
def test_texture_dir_photos_are_used(tmp_path: Path, kind: str) -> None:
    _write_image(tmp_path / "a.png", 0)
    _write_image(tmp_path / "b.jpg", 1)
    (tmp_path / "notes.txt").write_text("not an image")
    render = generators.renderer(kind, tmp_path)
    with_photos = render(0, 1, H, W, MAX_DISP)
    assert np.array_equal(with_photos[0], render(0, 1, H, W, MAX_DISP)[0])
    # Photos change what the textures look like, never the geometry.
    plain = generators.GENERATORS[kind](0, 1, H, W, MAX_DISP)
    assert np.array_equal(with_photos[2], plain[2])
    assert not np.array_equal(with_photos[0], plain[0])


@pytest.mark.parametrize("content", ["empty", "unreadable", "missing"])
def test_texture_dir_without_a_readable_image_is_one_line_error(
    tmp_path: Path, content: str
) -> None:
    folder = tmp_path / "photos"
    if content != "missing":
        folder.mkdir()
    if content == "unreadable":
        (folder / "broken.png").write_bytes(b"\x89PNG not really")
        (folder / "readme.md").write_text("hello")
    with pytest.raises(StereoqError) as err:
        generators.renderer("scenes", folder)
    assert "texture_dir" in str(err.value) and "\n" not in str(err.value)
    cfg = SyntheticConfig(kind="scenes", texture_dir=folder, height=32, width=64)
    with pytest.raises(StereoqError):  # before any scene is rendered
        SyntheticStereo(cfg, "train")
    with pytest.raises(StereoqError):
        SyntheticSource(2, 32, 64, 8.0, 0, generator="scenes", texture_dir=folder)


def test_config_selects_and_validates_the_generator() -> None:
    assert load_config().data.synthetic.kind == "scenes"  # the quick start's default (#14)
    cfg = load_config(sets=["data.synthetic.kind=planes"])
    assert cfg.data.synthetic.kind == "planes"
    for bad in (["data.synthetic.kind=cubes"],
                ["data.synthetic.kind=planes", "data.synthetic.texture_dir=/tmp"]):  # photos
        # need kind scenes
        with pytest.raises(StereoqError):
            load_config(sets=bad)
    literal = SyntheticConfig.model_fields["kind"].annotation.__args__
    assert set(literal) == set(generators.GENERATORS)


def test_dataset_and_pack_source_render_the_configured_generator() -> None:
    cfg = SyntheticConfig(kind="scenes", train_count=2, val_count=1, height=32, width=64,
                          max_disp=8.0)
    sample = SyntheticStereo(cfg, "val").raw(0)
    expected = render_pair(0, 1_000_000_000, 32, 64, 8.0)
    assert np.array_equal(sample["left"], expected[0])
    assert np.array_equal(sample["disp"], expected[2])
    source = SyntheticSource(2, 32, 64, 8.0, 0, generator="scenes")
    assert source.describe()["generator"] == "scenes"
    assert source.encode(0, "float32").height == 32


def test_objects_option_sets_the_object_count_and_keeps_the_defaults_scenes() -> None:
    """data.synthetic.objects: the count of objects in a scene is drawn from the range; the
    default range gives the generator's own scenes, pixel for pixel."""
    margin = int(np.ceil(MAX_DISP)) + 2
    for lo, hi in ((2, 4), (40, 45)):
        counts = []
        for i in range(6):
            surfaces = synthetic_scenes._scene(np.random.default_rng(i), H, W, MAX_DISP,
                                               margin, objects=(lo, hi))
            counts.append(sum(s.kind != "full" and not s.ground for s in surfaces))
        # An object drawn wholly out of frame is dropped: a few may be missing, none extra.
        assert max(counts) <= hi and np.mean(counts) >= lo - 1
    default = render_pair(0, 4, H, W, MAX_DISP)
    again = render_pair(0, 4, H, W, MAX_DISP, objects=generators.OBJECTS)
    assert all(np.array_equal(a, b) for a, b in zip(default, again, strict=True))
    few = render_pair(0, 4, H, W, MAX_DISP, objects=(2, 2))
    many = render_pair(0, 4, H, W, MAX_DISP, objects=(40, 40))
    edges = [(np.abs(np.diff(d[2], axis=1)) > 1.0).sum() for d in (few, default, many)]
    assert edges[0] < edges[1] < edges[2]


def test_camera_strength_option_scales_the_difference_between_the_views() -> None:
    """data.synthetic.camera_strength: None renders both views exactly (only rounded), and a
    stronger camera makes them differ more; the geometry never changes."""
    scene = render_scene(np.random.default_rng([0, 3, 14]), H, W, MAX_DISP)
    left, right, disp = render_pair(0, 3, H, W, MAX_DISP, camera_strength=None)
    assert np.array_equal(disp, scene.disp_left)
    assert np.array_equal(left, np.clip(scene.left + 0.5, 0, 255).astype(np.uint8))
    assert np.array_equal(right, np.clip(scene.right + 0.5, 0, 255).astype(np.uint8))

    def gap(strength: tuple[float, float] | None) -> float:
        # How far the right view is from the warped exact rendering, over 6 scenes.
        errs = []
        for i in range(6):
            s = render_scene(np.random.default_rng([0, i, 14]), H, W, MAX_DISP)
            _, r, d = render_pair(0, i, H, W, MAX_DISP, camera_strength=strength)
            assert np.array_equal(d, s.disp_left)
            errs.append(np.abs(r.astype(np.float32) - np.clip(s.right, 0, 255)).mean())
        return float(np.median(errs))

    assert gap(None) < 0.3 < gap((0.0, 0.0)) < gap((1.0, 1.0)) < gap((2.0, 2.0))
    default = render_pair(0, 3, H, W, MAX_DISP)
    again = render_pair(0, 3, H, W, MAX_DISP, camera_strength=generators.STRENGTH)
    assert all(np.array_equal(a, b) for a, b in zip(default, again, strict=True))


def test_scene_options_reach_the_dataset_and_pack_and_are_validated() -> None:
    cfg = SyntheticConfig(kind="scenes", train_count=2, val_count=1, height=32, width=64,
                          max_disp=8.0, objects=(3, 5), camera_strength=None)
    expected = render_pair(0, 1, 32, 64, 8.0, objects=(3, 5), camera_strength=None)
    sample = SyntheticStereo(cfg, "train").raw(1)
    assert np.array_equal(sample["right"], expected[1])
    source = SyntheticSource(2, 32, 64, 8.0, 0, generator="scenes", objects=(3, 5),
                             camera_strength=None)
    described = source.describe()
    assert described["objects"] == [3, 5] and described["camera_strength"] is None
    # The defaults are not named: packs made before these options keep their fingerprint.
    plain = SyntheticSource(2, 32, 64, 8.0, 0, generator="scenes").describe()
    assert "objects" not in plain and "camera_strength" not in plain
    assert SyntheticConfig().objects == generators.OBJECTS
    assert SyntheticConfig().camera_strength == generators.STRENGTH
    for bad in (["data.synthetic.objects=[9,3]"], ["data.synthetic.camera_strength=[0.5,2.5]"],
                ["data.synthetic.camera_strength=[-1,1]"],
                ["data.synthetic.kind=planes", "data.synthetic.objects=[3,5]"],
                ["data.synthetic.kind=planes", "data.synthetic.camera_strength=null"]):
        with pytest.raises(StereoqError) as err:
            load_config(sets=bad)
        assert "\n" not in str(err.value)
    with pytest.raises(StereoqError, match="camera_strength"):
        generators.renderer("planes", camera_strength=None)
    cfg = load_config(sets=["data.synthetic.objects=[20,50]",
                            "data.synthetic.camera_strength=null"])
    assert cfg.data.synthetic.objects == (20, 50) and cfg.data.synthetic.camera_strength is None
