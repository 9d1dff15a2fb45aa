"""Tiny and thin images run on every stage: each model's input is padded (replicate, right and
bottom) to what that model accepts, and the disparity is cropped back to the image's size."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from stereoq.engine.predictor import PaddedGraph
from stereoq.infer.run import DisparityEstimator
from stereoq.models.build import build_model
from stereoq.models.padding import pad_input
from stereoq.settings import load_config

#: (height, width): below, at and across the size multiple (16) and the cost volume's width.
SIZES = [(1, 1), (2, 2), (16, 16), (32, 32), (1, 96), (160, 1), (96, 96), (37, 53)]


def _ids(sizes: list[tuple[int, int]]) -> list[str]:
    return [f"{w}x{h}" for h, w in sizes]


@pytest.mark.parametrize("size", SIZES, ids=_ids(SIZES))
def test_float_stage_runs_any_size(float_run: Path, make_pair, size: tuple[int, int]) -> None:
    left, right = make_pair(*size)
    disp = DisparityEstimator(load_config(str(float_run)), "float")(left, right)
    assert disp.shape == size and np.isfinite(disp).all()


def test_pad_input_reaches_the_multiple_and_the_minimum() -> None:
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    padded = pad_input(x, 16, (32, 80))
    assert padded.shape == (1, 1, 32, 80)
    assert torch.equal(padded[..., :2, :3], x)
    assert torch.equal(padded[..., -1, -1], x[..., -1, -1])  # replicate: the corner spreads
    assert pad_input(x, 16).shape == (1, 1, 16, 16)
    same = torch.zeros(1, 1, 48, 96)
    assert pad_input(same, 16, (32, 80)) is same


def tiny_run(root: Path, **stages: dict) -> Path:
    """The tests' tiny config with its runs under ``root`` and ``stages`` merged in."""
    from ..conftest import TINY

    data = {**TINY, "output_dir": str(root / "runs"), "stages": {**TINY["stages"], **stages}}
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """The tiny float model and its graph as the quantized stages export it (dynamic H, W)."""
    from stereoq.quant.prepare import LastTwo, RawOutputs, export_graph, fold_batchnorm

    cfg = load_config(str(tiny_run(tmp_path_factory.mktemp("exported"))))
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    graph = export_graph(
        RawOutputs(fold_batchnorm(model)), cfg.model.num_candidates, cfg.model.size_multiple
    )
    return cfg, model, LastTwo(graph)


def test_exported_graph_is_padded_past_its_shape_guards(exported) -> None:
    from stereoq.quant.prepare import min_input_size

    cfg, model, graph = exported
    min_h, min_w = min_input_size(cfg.model.num_candidates, cfg.model.size_multiple)
    x = torch.rand(1, 6, 1, 1) * 2 - 1
    with torch.no_grad(), pytest.raises(AssertionError, match="Guard failed"):
        graph(pad_input(x, 16))  # the multiple alone is not enough for the exported program
    predictor = PaddedGraph(graph, model.postprocess, 16, (min_h, min_w)).eval()
    for height, width in [(1, 1), (1, 96), (160, 1)]:
        x = torch.rand(1, 6, height, width, generator=torch.Generator().manual_seed(1)) * 2 - 1
        with torch.no_grad():
            got = predictor(x)
            # the float model on the same padded input, cropped: padding and crop line up
            want = model(pad_input(x, 16, (min_h, min_w)))[..., :height, :width]
        assert got.shape == (1, 1, height, width)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


DEPLOYED_SIZE = (160, 160)
"""Size of the compiled ONNX artifact: every entry of SIZES fits in it."""


@pytest.fixture(scope="module")
def all_stages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run with every stage's artifact: float (seeded, untrained), calibration, qat (the
    calibration graph saved as the QAT checkpoint: same graph, same loader), int_infer from
    calibration, and the float model compiled for ONNX Runtime at DEPLOYED_SIZE."""
    from stereoq.deploy.backends import get_backend
    from stereoq.deploy.compile import artifact_dir
    from stereoq.deploy.onnx_export import default_path, export_stage, read_metadata
    from stereoq.engine.checkpoint import save_checkpoint
    from stereoq.stages import get_stage, run_stage

    path = tiny_run(
        tmp_path_factory.mktemp("small_images"),
        calibration={"batches": 1, "batch_size": 1, "bins": 256},
        int_infer={"source": "calibration"},
    )
    cfg = load_config(str(path))
    torch.manual_seed(0)
    save_checkpoint(cfg.run_dir / "float" / "best.pt",
                    {"model": build_model(cfg.model).state_dict()})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_stage(cfg, "calibration")
        run_stage(cfg, "int_infer")
        qat = get_stage(cfg, "qat").artifact()
        qat.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(get_stage(cfg, "calibration").artifact(), qat)
        onnx = export_stage(cfg, "float", *DEPLOYED_SIZE, default_path(cfg, "float"))
        get_backend("ort").compile(onnx.path, read_metadata(onnx.path), artifact_dir(cfg, "ort"))
    finally:
        torch.set_num_threads(threads)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["float", "calibration", "qat", "int_infer", "deployed"])
def test_every_stage_runs_any_size(all_stages: Path, make_pair, stage: str) -> None:
    estimator = DisparityEstimator(load_config(str(all_stages)), stage)
    reference = DisparityEstimator(load_config(str(all_stages)), "float")
    for size in SIZES:
        left, right = make_pair(*size)
        disp = estimator(left, right)
        assert disp.shape == size and np.isfinite(disp).all(), size
        # an untrained model, padded differently per stage: the same scene, not the same bits
        np.testing.assert_allclose(disp, reference(left, right), atol=0.5, err_msg=str(size))
