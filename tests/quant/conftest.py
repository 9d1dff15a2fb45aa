"""Quant tests: a tiny StereoNet, single-threaded (tiny convolutions crawl when OpenMP spins on
an oversubscribed 2-core machine), exported and prepared once per module where possible."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch.fx import GraphModule

from stereoq.settings import load_config
from stereoq.settings.config import ExperimentConfig

TINY_MODEL = [  # the quick start's network, narrower, with the reference's 1/16 and 4 levels
    "model.maxdisp=64",
    "model.neck.stride=16",
    "model.refine_levels=4",
    "model.loss.weights=[0.3,0.3,0.5,0.5,1.0]",
    "model.neck.out_channels=[8,8,8,16,16,8]",
    "model.neck.num_blocks=[1,1,1,1]",
    "model.head.num_groups=4",
    "model.head.agg_channels=8",
    "model.head.agg_layers=1",
    "model.refinement.channels=8",
    "model.refinement.num_blocks=1",
]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_cfg(**overrides: object) -> ExperimentConfig:
    return load_config("stereonet_synthetic", overrides=overrides, sets=TINY_MODEL)


def random_pair(batch: int, height: int = 64, width: int = 128, seed: int = 0) -> torch.Tensor:
    """A (B, 6, H, W) input in the network's normalised range [-1, 1)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 6, height, width, generator=gen) * 2 - 1


def calibrated_fake_quant() -> GraphModule:
    """The tiny network (seed 0) as a QAT fake-quant graph holding the ranges calibrated on one
    random batch (every range frozen, training mode)."""
    from stereoq.models.build import build_model
    from stereoq.quant.prepare import calibrate, load_calibration, prepare
    from stereoq.quant.recipes import calibration_recipe, qat_recipe

    cfg = tiny_cfg()
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    observed = prepare(model, calibration_recipe(cfg))
    calibrate(observed, [random_pair(2, seed=1)])
    fake_quant = prepare(model, qat_recipe(cfg))
    load_calibration(observed, fake_quant)
    return fake_quant
