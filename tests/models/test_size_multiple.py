"""The size multiple comes from the network: a neck of stride 8 (refine_levels 3) or 4
(refine_levels 2) flows through
the model's padding, export's size check and metadata, the exported graph's shapes and the
padded predictor that infer runs; a registered neck may declare its stride as a class
attribute instead of a parameter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from pydantic import BaseModel
from torch import nn

from stereoq.deploy.metadata import describe
from stereoq.deploy.onnx_export import check_size
from stereoq.engine.predictor import PaddedGraph
from stereoq.errors import StereoqError
from stereoq.models.build import build_model
from stereoq.models.neck import StereoNetNeck
from stereoq.registry import NECKS
from stereoq.settings import load_config
from stereoq.settings.config import ExperimentConfig

NECK = "class_stride8_neck_for_tests"


@NECKS.register(NECK)
class ClassStride8Neck(nn.Module):
    """A neck of another author's: features at 1/8, the stride a class attribute."""

    stride = 8

    class Params(BaseModel):
        out_channels: list[int]
        num_blocks: list[int]

    def __init__(self, out_channels: list[int], num_blocks: list[int]) -> None:
        super().__init__()
        self.inner = StereoNetNeck(out_channels, num_blocks, stride=8)
        self.gwc_channels = self.inner.gwc_channels
        self.concat_channels = self.inner.concat_channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inner(x)


def with_stride(tiny_config: Path, neck: dict, levels: int = 3) -> ExperimentConfig:
    data = yaml.safe_load(tiny_config.read_text())
    data["model"].update(refine_levels=levels, loss={"weights": [0.5] * levels + [1.0]})
    data["model"]["neck"].update(neck)
    tiny_config.write_text(yaml.safe_dump(data))
    return load_config(str(tiny_config))


@pytest.fixture
def stride8(tiny_config: Path) -> ExperimentConfig:
    return with_stride(tiny_config, {"stride": 8})


@pytest.fixture
def stride4(tiny_config: Path) -> ExperimentConfig:
    return with_stride(tiny_config, {"stride": 4}, levels=2)


def test_the_config_asks_the_neck(stride8: ExperimentConfig) -> None:
    assert stride8.model.size_multiple == 8
    assert stride8.model.num_candidates == 64 // 8
    assert load_config("stereonet_sceneflow").model.size_multiple == 16


def test_a_neck_may_declare_its_stride_on_its_class(tiny_config: Path) -> None:
    cfg = with_stride(tiny_config, {"type": NECK})
    assert cfg.model.size_multiple == 8
    model = build_model(cfg.model).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 6, 24, 96)).shape == (1, 1, 24, 96)


def test_features_are_at_one_stride() -> None:
    neck = StereoNetNeck([8, 8, 8, 8, 8, 4], [1, 1, 1, 1], stride=8)
    gwc, cat = neck(torch.randn(2, 3, 32, 64))
    assert gwc.shape == (2, 16, 4, 8) and cat.shape == (2, 4, 4, 8)
    neck4 = StereoNetNeck([8, 8, 8, 8, 8, 4], [1, 1, 1, 1], stride=4)
    gwc4, cat4 = neck4(torch.randn(2, 3, 32, 64))
    assert gwc4.shape == (2, 16, 8, 16) and cat4.shape == (2, 4, 8, 16)
    gwc16, _ = StereoNetNeck([8, 8, 8, 8, 8, 4], [1, 1, 1, 1])(torch.randn(2, 3, 32, 64))
    assert gwc16.shape == (2, 16, 2, 4)


def test_a_stride_that_does_not_match_the_levels_is_refused(tiny_config: Path) -> None:
    data = yaml.safe_load(tiny_config.read_text())
    data["model"]["neck"]["stride"] = 8  # refine_levels stays 4
    tiny_config.write_text(yaml.safe_dump(data))
    with pytest.raises(StereoqError, match="refine_levels 4 does not match the neck's stride 8"):
        load_config(str(tiny_config))


def test_model_pads_to_its_multiple(stride8: ExperimentConfig) -> None:
    torch.manual_seed(0)
    model = build_model(stride8.model).eval()
    assert model.size_multiple == 8
    with torch.no_grad():
        assert model(torch.randn(1, 6, 21, 70)).shape == (1, 1, 21, 70)


def test_export_checks_and_records_the_multiple(stride8: ExperimentConfig) -> None:
    check_size(stride8, 24, 72)  # not a multiple of 16, fine for a stride-8 network
    with pytest.raises(StereoqError, match="not a positive multiple of 8"):
        check_size(stride8, 20, 72)
    assert describe(stride8, "float", "float32", 17, 24, 72).size_multiple == 8


def test_stride4_has_two_levels_and_a_quarter_of_maxdisp_candidates(
    stride4: ExperimentConfig,
) -> None:
    assert stride4.model.size_multiple == 4
    assert stride4.model.num_candidates == 64 // 4
    torch.manual_seed(0)
    model = build_model(stride4.model)
    outputs = model(torch.randn(1, 6, 32, 96))  # training: coarse at 1/4, 1/2, full
    assert [tuple(o.shape[-2:]) for o in outputs] == [(8, 24), (16, 48), (32, 96)]
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 6, 22, 70)).shape == (1, 1, 22, 70)


@pytest.mark.parametrize("stride", [8, 4])
def test_exported_graph_and_predictor_take_the_multiple(
    stride: int, request: pytest.FixtureRequest
) -> None:
    stride8: ExperimentConfig = request.getfixturevalue(f"stride{stride}")
    from stereoq.quant.prepare import (
        LastTwo,
        RawOutputs,
        export_graph,
        fold_batchnorm,
        min_input_size,
    )

    torch.manual_seed(0)
    model = build_model(stride8.model).eval()
    m, candidates = stride8.model.size_multiple, stride8.model.num_candidates
    graph = LastTwo(export_graph(RawOutputs(fold_batchnorm(model)), candidates, m))
    post = stride8.model.postprocess
    predictor = PaddedGraph(
        graph,
        post.registry.build(post.type, maxdisp=64, **post.params()),
        m,
        min_input_size(candidates, m),
    ).eval()
    x = torch.randn(1, 6, 21, 70)
    with torch.no_grad():
        got, want = predictor(x), model(x)
    assert got.shape == (1, 1, 21, 70)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3)


class _Runner:
    """ONNX Runtime's stand-in: a 24x80 artifact of a stride-8 network, disparity = column."""

    def __init__(self, folder: Path, threads: int | None = None) -> None:
        self.input_shape = (1, 6, 24, 80)
        self.metadata = {"size_multiple": 8, "stage": "float"}

    def predict(self, x: np.ndarray) -> np.ndarray:
        assert x.shape == self.input_shape
        return np.broadcast_to(np.arange(80, dtype=np.float32), (1, 1, 24, 80)).copy()


def test_deployed_artifact_pads_and_names_its_multiple(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from stereoq.infer.deployed import DeployedPredictor

    monkeypatch.setattr("stereoq.deploy.ort_runner.StereoRunner", _Runner)
    predictor = DeployedPredictor(tmp_path)
    out = predictor(torch.zeros(2, 6, 21, 70))
    assert out.shape == (2, 1, 21, 70) and out[0, 0, 0, -1] == 69
    with pytest.raises(StereoqError, match="--height 32 --width 88"):
        predictor(torch.zeros(1, 6, 25, 81))
