from pathlib import Path

import numpy as np
import pytest
import torch

from stereoq.models import DeployGraph, StereoNet
from stereoq.models.build import build_loss, build_model
from stereoq.models.cost_volume import concat_volume, groupwise_correlation
from stereoq.settings import load_config


@pytest.fixture
def tiny(tiny_config: Path) -> StereoNet:
    torch.manual_seed(0)
    return build_model(load_config(str(tiny_config)).model)


def test_reference_shape() -> None:
    model = build_model(load_config("stereonet_sceneflow").model)
    assert model.head.num_candidates == 12
    assert len(model.refinement.levels) == 4
    assert model.neck.gwc_channels == 256 and model.neck.concat_channels == 16
    assert len(model.neck.stage2) == 16


def test_train_outputs_five_scales_in_pixels(tiny: StereoNet) -> None:
    tiny.train()
    outs = tiny(torch.randn(2, 6, 64, 128))
    assert [tuple(o.shape) for o in outs] == [
        (2, 1, 4, 8),
        (2, 1, 8, 16),
        (2, 1, 16, 32),
        (2, 1, 32, 64),
        (2, 1, 64, 128),
    ]
    assert all((o >= 0).all() for o in outs[1:])


@pytest.mark.parametrize(("h", "w"), [(64, 128), (50, 77), (33, 161)])
def test_eval_returns_full_size_disparity(tiny: StereoNet, h: int, w: int) -> None:
    tiny.eval()
    with torch.no_grad():
        disp = tiny(torch.randn(1, 6, h, w))
    assert disp.shape == (1, 1, h, w)
    assert (disp >= 0).all() and (disp <= tiny.maxdisp * 2).all()


def test_padding_keeps_content_aligned(tiny: StereoNet) -> None:
    """The prediction on a cropped input equals the crop of the padded input's prediction."""
    tiny.eval()
    x = torch.randn(1, 6, 64, 128)
    with torch.no_grad():
        full = tiny(x)
        # An input 3 columns short gets replicate-padded back to 128: the left part matches
        # wherever the receptive field does not reach the padding.
        cut = tiny(x[..., :125])
    assert cut.shape[-1] == 125
    assert torch.allclose(cut[..., :64], full[..., :64], atol=1e-4)


def test_neck_runs_once_on_stacked_pair(tiny: StereoNet) -> None:
    calls: list[tuple[int, ...]] = []
    tiny.neck.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    tiny.eval()
    with torch.no_grad():
        tiny(torch.randn(3, 6, 64, 128))
    assert calls == [(6, 3, 64, 128)]


def test_gradient_reaches_every_parameter(tiny: StereoNet, tiny_config: Path) -> None:
    loss_fn = build_loss(load_config(str(tiny_config)).model)
    tiny.train()
    gt = torch.rand(2, 1, 64, 128) * 40 + 1
    loss_fn(tiny(torch.randn(2, 6, 64, 128)), gt).backward()
    missing = [n for n, p in tiny.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert missing == []


def test_loss_ignores_invalid_pixels(tiny_config: Path) -> None:
    loss_fn = build_loss(load_config(str(tiny_config)).model)  # maxdisp 64
    gt = torch.full((1, 1, 8, 8), 10.0)
    gt[..., :4] = torch.tensor([0.0, -3.0, 64.0, float("inf")])
    preds = [torch.full((1, 1, 8, 8), 10.0, requires_grad=True) for _ in range(5)]
    with torch.no_grad():
        for p in preds:
            p[..., :4] = 1000.0  # wildly wrong, but only where gt is invalid
    loss = loss_fn(preds, gt)
    assert loss.item() == 0.0
    loss.backward()
    assert all(p.grad[..., :4].abs().sum() == 0 for p in preds)


def test_loss_weights_and_smooth_l1(tiny_config: Path) -> None:
    loss_fn = build_loss(load_config(str(tiny_config)).model)
    gt = torch.full((1, 1, 4, 4), 10.0)
    preds = [torch.full((1, 1, 4, 4), 10.0 + d) for d in (0.5, 0.5, 3.0, 3.0, 2.0)]
    # SmoothL1 (beta 1): 0.5 * 0.5**2 = 0.125 below beta, |d| - 0.5 above.
    expected = 0.3 * 0.125 + 0.3 * 0.125 + 0.5 * 2.5 + 0.5 * 2.5 + 1.0 * 1.5
    assert loss_fn(preds, gt).item() == pytest.approx(expected)


def test_loss_without_valid_pixels_is_zero_with_graph(tiny_config: Path) -> None:
    loss_fn = build_loss(load_config(str(tiny_config)).model)
    preds = [torch.rand(1, 1, 4, 4, requires_grad=True) for _ in range(5)]
    loss = loss_fn(preds, torch.zeros(1, 1, 4, 4))
    loss.backward()
    assert loss.item() == 0.0


def test_cost_volumes_match_a_direct_loop() -> None:
    torch.manual_seed(1)
    left, right = torch.randn(1, 8, 3, 10), torch.randn(1, 8, 3, 10)
    gwc = groupwise_correlation(left, right, num_candidates=4, groups=2)
    cat = concat_volume(left, right, num_candidates=4)
    assert gwc.shape == (1, 2, 4, 3, 10) and cat.shape == (1, 16, 4, 3, 10)
    for d in range(4):
        for x in range(10):
            r = right[..., x - d] if x >= d else torch.zeros(1, 8, 3)
            prod = (left[..., x] * r).reshape(1, 2, 4, 3).mean(2)
            assert torch.allclose(gwc[:, :, d, :, x], prod, atol=1e-6)
            assert torch.allclose(cat[:, 8:, d, :, x], r)


def test_torch_export_with_dynamic_batch(tiny: StereoNet) -> None:
    tiny.eval()
    batch = torch.export.Dim("batch", min=1, max=8)
    program = torch.export.export(
        DeployGraph(tiny), (torch.randn(2, 6, 64, 128),), dynamic_shapes=({0: batch},)
    )
    graph = program.module()
    for b in (1, 3):
        x = torch.randn(b, 6, 64, 128)
        with torch.no_grad():
            ref = DeployGraph(tiny)(x)
            got = graph(x)
        assert got[0].shape == (b, 1, 32, 64) and got[1].shape == (b, 1, 64, 128)
        assert all(torch.allclose(g, r, atol=1e-5) for g, r in zip(got, ref, strict=True))


def test_onnx_export_matches_onnxruntime(tiny: StereoNet, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    tiny.eval()
    x = torch.randn(1, 6, 64, 128)
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(DeployGraph(tiny).eval(), (x,), dynamo=True, opset_version=18).save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    got = session.run(None, {name: x.numpy()})
    with torch.no_grad():
        ref = DeployGraph(tiny)(x)
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(g, r.numpy(), atol=1e-4, rtol=1e-4)


def test_loss_is_the_mean_over_valid_pixels_at_each_scale(tiny_config: Path) -> None:
    loss_fn = build_loss(load_config(str(tiny_config)).model)  # maxdisp 64
    torch.manual_seed(0)
    gt = torch.rand(2, 1, 16, 32) * 80 - 5  # some below 0 and above maxdisp
    gt[0, 0, :2] = float("nan")
    preds = [torch.rand(2, 1, 16 // s, 32 // s) * 64 for s in (8, 4, 2, 1, 1)]
    expected = 0.0
    for weight, pred in zip(loss_fn.weights, preds, strict=True):
        target = torch.nn.functional.interpolate(gt, size=pred.shape[-2:], mode="nearest")
        ok = torch.isfinite(target) & (target > 0) & (target < 64)
        expected += weight * torch.nn.functional.smooth_l1_loss(pred[ok], target[ok]).item()
    assert loss_fn(preds, gt).item() == pytest.approx(expected, rel=1e-5)
