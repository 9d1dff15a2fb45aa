"""The label-free loss terms on constructed cases."""

from __future__ import annotations

import pytest
import torch

from stereoq.losses.photometric import photometric_loss, visible_mask, warp_right_to_left
from stereoq.losses.smoothness import edge_aware_smoothness


def shifted_pair(disp_px: int, h: int = 24, w: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """A random texture seen by two cameras: left(x) = right(x - d) for a constant d."""
    scene = torch.rand(1, 3, h, w + disp_px, generator=torch.Generator().manual_seed(0))
    return scene[..., :w], scene[..., disp_px:]  # left, right


@pytest.mark.parametrize("disp_px", [0, 3, 7])
def test_right_view_warped_by_the_true_disparity_gives_zero_loss(disp_px: int) -> None:
    left, right = shifted_pair(disp_px)
    true = torch.full((1, 1, *left.shape[-2:]), float(disp_px))
    assert torch.allclose(warp_right_to_left(right, true)[..., disp_px:], left[..., disp_px:],
                          atol=1e-5)
    assert photometric_loss(left, right, true).item() == pytest.approx(0.0, abs=1e-5)
    assert photometric_loss(left, right, true + 1.0).item() > 0.05
    if disp_px > 0:
        assert photometric_loss(left, right, true - 1.0).item() > 0.05


def test_photometric_loss_pulls_the_disparity_towards_the_truth() -> None:
    left, right = shifted_pair(5)
    disp = torch.full((1, 1, *left.shape[-2:]), 4.4, requires_grad=True)
    photometric_loss(left, right, disp).backward()
    assert disp.grad.sum().item() < 0  # raise it, towards 5


def test_visible_mask_leaves_out_occluded_and_out_of_view_pixels() -> None:
    # Background at 2 px, a nearer object at 6 px from column 10 on: the 4 background pixels
    # left of it (6..9) land behind the object in the right view; columns 0..1 leave the image.
    disp = torch.full((1, 1, 1, 20), 2.0)
    disp[..., 10:] = 6.0
    visible = visible_mask(disp)[0, 0, 0].tolist()
    assert visible == [False] * 2 + [True] * 4 + [False] * 4 + [True] * 10


def test_smoothness_is_zero_for_constant_disparity_and_cheaper_across_image_edges() -> None:
    image = torch.zeros(1, 3, 16, 16)
    assert edge_aware_smoothness(torch.full((1, 1, 16, 16), 5.0), image).item() == 0.0
    step = torch.full((1, 1, 16, 16), 5.0)
    step[..., 8:] = 10.0
    flat = edge_aware_smoothness(step, image)
    edged = image.clone()
    edged[..., 8:] = 1.0  # the image has an edge where the disparity jumps
    assert edge_aware_smoothness(step, edged).item() < 0.01 * flat.item()
    # scaled by its mean: halving the disparity does not lower the term
    assert edge_aware_smoothness(step / 2, image).item() == pytest.approx(flat.item())
