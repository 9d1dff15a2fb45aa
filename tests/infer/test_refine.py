"""Photometric refinement (``stereoq.infer.refine``) on generated scenes with exact ground truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stereoq.data import synthetic_scenes
from stereoq.data.transforms import prepare_pair
from stereoq.engine.regions import occluded, occlusion_mask
from stereoq.infer.refine import (
    best_offset,
    box,
    census,
    luma,
    offsets,
    popcount,
    refine,
    sample_rows,
    window_extremes,
)
from stereoq.losses.photometric import warp_right_to_left as warp
from stereoq.settings.data import DataConfig
from stereoq.settings.refine import RefineConfig

DATA = DataConfig()
WIDE = RefineConfig(span_pct=3.0)
"""A 5.8 px span on the 192 px wide scenes: room for the 2 px errors the tests add."""


def inputs(left: np.ndarray, right: np.ndarray, disp: np.ndarray) -> dict:
    """Network input (1, 6, H, W), ground truth (1, 1, H, W) and the pixels the right view
    sees (every pixel of the ground truth is valid)."""
    return {"pair": prepare_pair(left, right, DATA)[None], "gt": torch.from_numpy(disp)[None, None],
            "visible": ~torch.from_numpy(occlusion_mask(disp))[None, None]}


@pytest.fixture(scope="module")
def scene() -> dict:
    """A generated 96x192 scene as a camera pair sees it (gain, noise, blur, compression)."""
    return inputs(*synthetic_scenes.render_pair(3, 0, 96, 192, 24.0))


@pytest.fixture(scope="module")
def clean_scene() -> dict:
    """The same kind of scene rendered without camera effects."""
    rendered = synthetic_scenes.render_scene(np.random.default_rng(3), 96, 192, 24.0)
    return inputs(rendered.left, rendered.right, rendered.disp_left)


def inner(mask: torch.Tensor, border: int = 8) -> torch.Tensor:
    """``mask`` without the image border, where windows and warps run off the image."""
    out = torch.zeros_like(mask)
    out[..., border:-border, border:-border] = mask[..., border:-border, border:-border]
    return out


def test_occluded_is_the_regions_module_occlusion_mask(scene) -> None:
    gt = scene["gt"]
    got = occluded(gt)[0, 0].numpy()
    np.testing.assert_array_equal(got, occlusion_mask(gt[0, 0].numpy()))
    assert 0.005 < got.mean() < 0.5  # the scene has occlusions, and they are not everything


def test_warping_the_right_view_by_the_true_disparity_gives_the_left(clean_scene) -> None:
    scene = clean_scene
    left, right = luma(scene["pair"][:, :3], DATA), luma(scene["pair"][:, 3:], DATA)
    seen = inner(scene["visible"])
    err_true = (warp(right, scene["gt"]) - left).abs()[seen]
    err_off = (warp(right, scene["gt"] + 1.0) - left).abs()[seen]
    assert err_true.median() < 2 / 255
    assert err_off.median() > 3 * err_true.median()


def test_luma_is_the_same_from_rgb_and_yuv_inputs(scene) -> None:
    left, right, _ = synthetic_scenes.render_pair(3, 0, 24, 40, 8.0)
    rgb = DataConfig(color="rgb", mean=100.0, std=50.0)
    a = luma(prepare_pair(left, right, DATA)[None, :3], DATA)
    b = luma(prepare_pair(left, right, rgb)[None, :3], rgb)
    assert torch.allclose(a, b, atol=0.6 / 255)  # Y is rounded to integers in the YUV input


def test_refinement_recovers_a_disparity_two_px_off(scene) -> None:
    """The network-like input is the ground truth shifted by +2 px on one half and -1.5 px on
    the other: refined, most visible pixels are back within 0.5 px."""
    gt, seen = scene["gt"], inner(scene["visible"])
    off = torch.full_like(gt, 2.0)
    off[..., 96:] = -1.5
    noisy = gt + off
    out = refine(scene["pair"], noisy, DATA, WIDE)
    before = (noisy - gt).abs()[seen]
    after = (out - gt).abs()[seen]
    assert (before > 1.0).float().mean() == 1.0
    assert (after < 0.5).float().mean() > 0.85
    assert after.mean() < 0.25 * before.mean()


def test_refinement_keeps_a_right_disparity_right(scene) -> None:
    gt, seen = scene["gt"], inner(scene["visible"])
    out = refine(scene["pair"], gt, DATA, WIDE)
    assert (out - gt).abs()[seen].mean() < 0.2  # 0.11 measured


def test_pixels_the_disparity_calls_occluded_keep_it(scene) -> None:
    noisy = scene["gt"] + 1.0
    hidden = occluded(noisy)
    out = refine(scene["pair"], noisy, DATA, WIDE)
    assert hidden.any()
    assert torch.equal(out[hidden], noisy[hidden])
    assert not torch.equal(out[~hidden], noisy[~hidden])


def fattened(seed: int, radius: int = 3) -> dict:
    """A generated 96x192 camera pair with a network-like disparity: the ground truth with every
    nearer surface spread ``radius`` px over the farther ones (a (2r+1)^2 window maximum), as a
    low-resolution cost volume does at depth edges; ``spread`` marks the visible pixels it put
    more than 2 px off (away from the border)."""
    scene = inputs(*synthetic_scenes.render_pair(seed, 0, 96, 192, 24.0))
    gt = scene["gt"]
    size = 2 * radius + 1
    fat = torch.nn.functional.max_pool2d(
        torch.nn.functional.pad(gt, (radius,) * 4, mode="replicate"), size, stride=1)
    spread = inner(scene["visible"]) & ((fat - gt) > 2.0) & ~occluded(fat)
    return {**scene, "fat": fat, "spread": spread}


@pytest.mark.parametrize("seed", [3, 4])
def test_the_edge_window_takes_back_a_spread_surface(seed: int) -> None:
    """Spread 3 px, the pixels are 8-14 px off, far beyond the 1.9 px span: the offsets around
    the network's value cannot reach them (measured: 0-2 % back within 1 px), the farthest
    disparity near by can (30-45 % with the default distance cost, 63-87 % without it)."""
    scene = fattened(seed)
    spread, gt = scene["spread"], scene["gt"]
    assert spread.sum() > 500

    def recovered(**settings) -> float:
        out = refine(scene["pair"], scene["fat"], DATA, RefineConfig(**settings))
        return ((out - gt).abs()[spread] < 1.0).float().mean().item()

    alone, default, free = recovered(edge_window_pct=0), recovered(), recovered(distance_cost=0)
    assert alone < 0.05
    assert default > 0.2
    assert free > default + 0.15


def test_the_distance_cost_keeps_a_right_disparity_right(scene) -> None:
    """Given the ground truth, candidates from the edge window must not win on noise: with the
    distance cost no visible pixel moves 2 px (measured 0 %), without it 1.4 % did."""
    gt, seen = scene["gt"], inner(scene["visible"])

    def moved(**settings) -> float:
        out = refine(scene["pair"], gt, DATA, RefineConfig(**settings))
        return ((out - gt).abs()[seen] > 2.0).float().mean().item()

    assert moved() < 0.002
    assert moved(distance_cost=0) > 0.005


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("radius", [1, 6])
def test_window_extremes_are_the_window_min_and_max(dtype: torch.dtype, radius: int) -> None:
    """The CPU path (OpenCV, float32) and the pooling path (float64 here, as on a GPU) against
    the window's min and max written out, borders replicated."""
    disp = torch.rand((2, 1, 9, 20), generator=torch.Generator().manual_seed(0), dtype=dtype)
    size = 2 * radius + 1
    windows = torch.nn.functional.pad(disp, (radius,) * 4, mode="replicate") \
        .unfold(-2, size, 1).unfold(-2, size, 1).flatten(-2)
    low, high = window_extremes(disp * 10, radius)
    assert low.dtype == high.dtype == dtype
    assert torch.equal(low, windows.amin(-1) * 10) and torch.equal(high, windows.amax(-1) * 10)


def test_a_textureless_pair_keeps_the_networks_disparity() -> None:
    """Every offset costs the same on a flat grey pair: no evidence, so no change, whatever the
    edge window offers."""
    pair = torch.zeros((1, 6, 32, 64))
    disp = torch.zeros((1, 1, 32, 64))
    disp[..., 32:] = 6.0
    out = refine(pair, disp, DATA, RefineConfig(edge_window_pct=10))
    assert torch.equal(out, disp)


def test_best_offset_is_the_parabola_vertex_and_distrusts_the_range_ends() -> None:
    cfg = RefineConfig(span_pct=2.0, steps=4)
    shifts = torch.tensor(offsets(cfg, 100))  # -2 .. 2 px, 0.5 apart
    assert shifts.tolist() == [-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0]
    cost = torch.stack([(shifts - 0.3) ** 2, (shifts + 5.0) ** 2]).T.reshape(1, 9, 1, 2)
    delta, trusted, _ = best_offset(cost, 0.5, 2.0)
    assert delta[0, 0, 0, 0].item() == pytest.approx(0.3, abs=1e-6)
    assert trusted[0, 0, 0].tolist() == [True, False]  # the second's minimum is past -2 px


def test_census_codes_and_their_popcount() -> None:
    gray = torch.tensor([[0.5, 0.1, 0.9], [0.2, 0.5, 0.7], [0.4, 0.6, 0.3]])[None, None]
    code = census(gray, 1)[0, 0, 1, 1].item()
    # Neighbours in row order, the centre skipped: darker than 0.5 are 0.1, 0.2, 0.4 and 0.3.
    assert code == 0b10101010  # bits 1, 3, 5, 7
    assert census(torch.full((1, 1, 4, 5), 0.3), 3).eq(0).all()  # flat: no neighbour darker
    codes = torch.randint(0, 2**48, (1000,), generator=torch.Generator().manual_seed(0))
    expected = torch.tensor([bin(v).count("1") for v in codes.tolist()], dtype=torch.float32)
    assert torch.equal(popcount(codes, 48), expected)
    small = codes % 2**24  # radius 2's 24 bits, held in int32
    expected = torch.tensor([bin(v).count("1") for v in small.tolist()], dtype=torch.float32)
    assert torch.equal(popcount(small.int(), 24), expected)


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_census_codes_are_the_window_written_out_in_either_integer_type(radius: int) -> None:
    """Up to 24 bits (radius 2) the codes are int32, above int64: each the window's bits."""
    gray = torch.rand((2, 1, 11, 13), generator=torch.Generator().manual_seed(radius))
    code = census(gray, radius)
    assert code.dtype == (torch.int32 if radius <= 2 else torch.int64)
    size, centre = 2 * radius + 1, gray[0, 0, 5, 6]
    window = gray[0, 0, 5 - radius: 6 + radius, 6 - radius: 7 + radius].flatten()
    darker = [bool(v < centre) for i, v in enumerate(window) if i != size * size // 2]
    assert code[0, 0, 5, 6].item() == sum(1 << bit for bit, d in enumerate(darker) if d)


def test_sample_rows_is_the_bilinear_warp_along_each_row(clean_scene) -> None:
    """The refinement's row sampler against ``grid_sample`` (bilinear, border values): the
    same views at any sub-pixel column, out of the image too."""
    views = clean_scene["pair"][:, :2].float()
    disp = torch.rand((1, 1, *views.shape[-2:]), generator=torch.Generator().manual_seed(0))
    disp = disp * 260.0 - 30.0  # columns from x - 230 to x + 30: off both sides of 192 px
    columns = torch.arange(views.shape[-1], dtype=torch.float32) - disp
    torch.testing.assert_close(sample_rows(views, columns), warp(views, disp), atol=5e-5, rtol=0)


@pytest.mark.parametrize("radius", [1, 7])
def test_box_filter_paths_agree_with_a_direct_window_mean(radius: int) -> None:
    """The CPU path (OpenCV, float32) and the pooling path (taken for float64 here, as on a
    GPU) against the window mean written out, borders replicated."""
    x = torch.rand((2, 3, 9, 20), generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (radius,) * 4, mode="replicate")
    size = 2 * radius + 1
    direct = padded.unfold(-2, size, 1).unfold(-2, size, 1).mean(dim=(-1, -2))
    torch.testing.assert_close(box(x, radius), direct, atol=1e-6, rtol=0)
    torch.testing.assert_close(box(x.double(), radius).float(), direct, atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (17, 9)])
def test_any_size_and_batch(shape: tuple[int, int]) -> None:
    generator = torch.Generator().manual_seed(0)
    pair = torch.rand((2, 6, *shape), generator=generator) * 2 - 1
    disp = torch.rand((2, 1, *shape), generator=generator) * 3
    for settings in (RefineConfig(), RefineConfig(edge_window_pct=10)):  # window radius 0-1
        out = refine(pair, disp, DATA, settings)
        assert out.shape == disp.shape and torch.isfinite(out).all() and (out >= 0).all()


def test_sizes_must_match() -> None:
    with pytest.raises(ValueError, match="differ"):
        refine(torch.zeros(1, 6, 8, 8), torch.zeros(1, 1, 8, 9), DATA, RefineConfig())
