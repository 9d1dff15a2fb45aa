"""QAT's ranges while training: the calibrated activation ranges stay (``stages.qat.ranges:
calibrated``, the default) or follow the batches (``moving_average``); the weights' per-channel
ranges follow the weights either way, and nothing moves in evaluation mode."""

from __future__ import annotations

import pytest
import torch
from torch.fx import GraphModule

from stereoq.quant.prepare import copy_graph, observers
from stereoq.stages.qat import QatStage

from .conftest import calibrated_fake_quant, random_pair, tiny_cfg


@pytest.fixture(scope="module")
def calibrated() -> GraphModule:
    """The tiny network's fake-quant graph with calibration's ranges loaded (all frozen)."""
    torch.set_num_threads(1)
    return calibrated_fake_quant()


def _scales(graph: GraphModule, per_channel: bool) -> dict[str, torch.Tensor]:
    return {name: mod.scale.clone() for name, mod in observers(graph).items()
            if bool(getattr(mod, "is_per_channel", False)) == per_channel}


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> list[str]:
    return [name for name, old in before.items()
            if old.shape != after[name].shape or not torch.equal(old, after[name])]


def _train_forward(graph: GraphModule, ranges: str) -> None:
    """One training-mode forward, as QAT's loop runs it, on inputs unlike calibration's and
    after the weights moved (each conv weight doubled)."""
    stage = QatStage(tiny_cfg(**{"stages.qat.ranges": ranges}))
    with torch.no_grad():
        for name, param in graph.named_parameters():
            if "weight" in name and param.dim() >= 4:
                param.mul_(2.0)
        stage.set_mode(graph, True)
        graph(random_pair(2, seed=7) * 0.5)


@pytest.mark.parametrize("ranges", ["calibrated", "moving_average"])
def test_training_moves_weight_ranges_and_activation_ranges_only_when_asked(
    calibrated: GraphModule, ranges: str
) -> None:
    graph = copy_graph(calibrated)
    activations, weights = _scales(graph, False), _scales(graph, True)
    assert activations and weights
    _train_forward(graph, ranges)
    assert len(_changed(weights, _scales(graph, True))) == len(weights)
    moved = _changed(activations, _scales(graph, False))
    if ranges == "calibrated":
        assert moved == []
    else:
        assert len(moved) > len(activations) // 2


def test_evaluation_mode_freezes_every_range(calibrated: GraphModule) -> None:
    graph = copy_graph(calibrated)
    stage = QatStage(tiny_cfg(**{"stages.qat.ranges": "moving_average"}))
    stage.set_mode(graph, True)
    stage.set_mode(graph, False)
    before = {**_scales(graph, False), **_scales(graph, True)}
    with torch.no_grad():
        for name, param in graph.named_parameters():
            if "weight" in name:
                param.mul_(2.0)
        graph(random_pair(2, seed=7) * 0.5)
    assert _changed(before, {**_scales(graph, False), **_scales(graph, True)}) == []


def test_ranges_is_validated() -> None:
    from stereoq.errors import StereoqError

    with pytest.raises(StereoqError, match=r"stages\.qat\.ranges"):
        tiny_cfg(**{"stages.qat.ranges": "minmax"})
