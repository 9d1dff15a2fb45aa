"""The refinement's disparity unit (``model.refinement.disparity_unit_px``)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from tests.conftest import TINY
from torch import nn

from stereoq.engine.checkpoint import save_checkpoint
from stereoq.engine.predictor import load_model
from stereoq.errors import StereoqError
from stereoq.models.build import build_model
from stereoq.settings import load_config
from stereoq.settings.config import ExperimentConfig


def _config(unit: float | None) -> ExperimentConfig:
    refinement = {**TINY["model"]["refinement"], "disparity_unit_px": unit}
    return load_config(None, overrides={"model": {**TINY["model"], "refinement": refinement}})


def _perturbed(model: nn.Module) -> nn.Module:
    """Random BN statistics and affine parameters, so that folding has something to move."""
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm3d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return model


def test_the_unit_is_a_buffer_of_the_state_dict_only_when_set() -> None:
    plain = build_model(_config(None).model)
    scaled = build_model(_config(12.0).model)
    assert not any("gain" in key for key in plain.state_dict())
    assert float(scaled.state_dict()["refinement.gain"]) == pytest.approx(64 / 12)


@pytest.mark.parametrize(("trained", "loaded"), [(None, 12.0), (12.0, None), (12.0, 5.0)])
def test_weights_of_another_unit_load_as_the_same_function(
    tmp_path: Path, trained: float | None, loaded: float | None
) -> None:
    torch.manual_seed(0)
    source = _perturbed(build_model(_config(trained).model)).eval()
    path = save_checkpoint(tmp_path / "best.pt", {"model": source.state_dict()})
    model = load_model(_config(loaded).model, path).eval()
    assert ("refinement.gain" in model.state_dict()) == (loaded is not None)
    x = torch.randn(1, 6, 64, 128)
    with torch.no_grad():
        for got, want in zip(model.raw(x), source.raw(x), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # The checkpoint's own tensors are left as they were.
    saved = torch.load(path, weights_only=True)["model"]
    for key, value in source.state_dict().items():
        assert torch.equal(saved[key], value), key


def test_a_model_of_another_shape_is_still_refused(tmp_path: Path) -> None:
    other = {**TINY["model"]["refinement"], "channels": 4, "disparity_unit_px": 12.0}
    cfg = load_config(None, overrides={"model": {**TINY["model"], "refinement": other}})
    path = save_checkpoint(tmp_path / "best.pt", {"model": build_model(cfg.model).state_dict()})
    with pytest.raises(StereoqError, match="does not match the config's model"):
        load_model(_config(None).model, path)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_folding_the_gain_keeps_the_outputs(mode: str) -> None:
    torch.manual_seed(0)
    model = _perturbed(build_model(_config(12.0).model))
    folded = copy.deepcopy(model)
    folded.refinement.fold_gain()
    assert "refinement.gain" not in folded.state_dict()
    x = torch.randn(2, 6, 64, 128)
    getattr(model, mode)()
    getattr(folded, mode)()
    with torch.no_grad():
        for got, want in zip(folded.raw(x), model.raw(x), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_the_exported_graph_has_no_multiply_for_the_gain() -> None:
    from stereoq.quant.prepare import RawOutputs, export_graph, fold_batchnorm

    def muls(cfg: ExperimentConfig) -> int:
        model = build_model(cfg.model).eval()
        graph = export_graph(RawOutputs(fold_batchnorm(model)), cfg.model.num_candidates,
                             cfg.model.size_multiple)
        return sum(1 for n in graph.graph.nodes if "mul" in str(n.target))

    scaled = build_model(_config(12.0).model).eval()
    unfolded = torch.export.export(scaled, (torch.zeros(1, 6, 64, 128),)).graph
    assert sum(1 for n in unfolded.nodes if "mul" in str(n.target)) > muls(_config(None))
    assert muls(_config(12.0)) == muls(_config(None))


@pytest.mark.parametrize("unit", ["6", "null"])
def test_the_shipped_weights_load_into_another_unit(unit: str) -> None:
    """The shipped model's weights (saved in 12 px units) loaded into its config with another
    unit, or none, keep their function."""
    from stereoq import weights

    shipped = weights.eval_model(weights.DEFAULT)
    cfg = weights.config(weights.DEFAULT, sets=[f"model.refinement.disparity_unit_px={unit}"])
    assert cfg.model.refinement.params()["disparity_unit_px"] != \
        weights.config(weights.DEFAULT).model.refinement.params()["disparity_unit_px"]
    model = build_model(cfg.model)
    model.load_state_dict(weights.state_dict(weights.DEFAULT))
    model.eval()
    x = torch.randn(1, 6, 64, 128)
    with torch.no_grad():
        torch.testing.assert_close(model(x), shipped(x), rtol=1e-4, atol=1e-3)


def test_the_levels_diagnostic_ends_at_the_models_disparity() -> None:
    """`bench/refinement_levels.py`: five full-size outputs, the last the disparity the model
    predicts (odd sizes padded and cropped back the same way)."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "bench" / "refinement_levels.py"
    spec = importlib.util.spec_from_file_location("refinement_levels", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    torch.manual_seed(0)
    model = _perturbed(build_model(_config(12.0).model)).eval()
    x = torch.randn(1, 6, 50, 140)
    outputs = bench.level_disparities(model, x)
    assert len(outputs) == 5 and all(o.shape == (1, 1, 50, 140) for o in outputs)
    with torch.no_grad():
        torch.testing.assert_close(outputs[-1], model(x), rtol=1e-5, atol=1e-5)
