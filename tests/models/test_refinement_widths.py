"""Per-level refinement widths and depths (``model.refinement.channels`` / ``num_blocks`` lists)."""

from __future__ import annotations

import pytest
import torch
from tests.conftest import TINY

from stereoq.errors import StereoqError
from stereoq.models.build import build_model
from stereoq.settings import load_config
from stereoq.settings.config import ExperimentConfig


def _config(**refinement: object) -> ExperimentConfig:
    merged = {**TINY["model"]["refinement"], **refinement}
    return load_config(None, overrides={"model": {**TINY["model"], "refinement": merged}})


def test_each_level_gets_its_own_width_and_depth() -> None:
    model = build_model(_config(channels=[16, 8, 8, 4], num_blocks=[2, 1, 0, 1]).model)
    levels = model.refinement.levels
    assert [level.stem[0].out_channels for level in levels] == [16, 8, 8, 4]
    assert [level.offset[0].in_channels for level in levels] == [16, 8, 8, 4]
    assert [len(level.blocks) for level in levels] == [2, 1, 0, 1]


def test_one_value_still_means_every_level() -> None:
    model = build_model(_config(channels=8, num_blocks=1).model)
    assert [level.stem[0].out_channels for level in model.refinement.levels] == [8] * 4
    assert [len(level.blocks) for level in model.refinement.levels] == [1] * 4


def test_uneven_levels_train_and_fold_their_unit() -> None:
    """Every parameter gets a gradient, and folding the unit keeps the outputs: the unit's
    rescaling is per level, whatever each level's width."""
    model = build_model(
        _config(channels=[8, 8, 4, 4], num_blocks=[1, 0, 1, 0], disparity_unit_px=4.0).model
    )
    torch.manual_seed(0)
    x = torch.randn(2, 6, 64, 128)
    sum(out.mean() for out in model(x)).backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        before = model(x)
        model.refinement.fold_gain()
        after = model(x)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("key", ["channels", "num_blocks"])
def test_a_list_of_the_wrong_length_is_a_one_line_config_error(key: str) -> None:
    with pytest.raises(StereoqError) as err:
        _config(**{key: [8, 8]})
    message = str(err.value)
    assert "\n" not in message
    assert f"refinement.{key} has 2 entries" in message
    assert "4 refinement levels" in message
