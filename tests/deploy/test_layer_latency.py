"""Measured per-layer latency for the accuracy budget: profiled nodes go to their layers, and
``stereoq train --stage calibration`` with a budget orders and prices its raises by it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch.fx import Graph

from stereoq.deploy.layer_latency import attribute, graph_timing, node_layers
from stereoq.errors import StereoqError
from stereoq.settings import load_config


def test_profiled_nodes_go_to_the_layer_of_their_module() -> None:
    rows = [
        {"scope": "model.neck.concat.feature.0.0", "ms": 1.0},  # the export's spelling
        {"scope": "model.neck.concat.feature.0.0", "ms": 0.5},  # a second node of that conv
        {"scope": "model.head.aggregation.0.0", "ms": 2.0},
        {"scope": "", "ms": 0.25},  # a quantize/dequantize node
        {"scope": "model.neck.stem.9.0", "ms": 4.0},  # no such layer
    ]
    per_layer, other = attribute(rows, ["neck.concat_feature.0.0", "head.aggregation.0.0",
                                        "neck.stem.0.0"])
    assert per_layer == {"neck.concat_feature.0.0": 1.5, "head.aggregation.0.0": 2.0}
    assert other == pytest.approx(4.25)


def quantize_per_tensor(x):  # noqa: ANN001, ANN201 (stand-ins named as the exported ops)
    return x


def dequantize_per_tensor(x):  # noqa: ANN001, ANN201
    return x


def test_quantize_nodes_go_to_the_layer_whose_tensor_they_carry() -> None:
    graph = Graph()
    x = graph.placeholder("x")
    w = graph.get_attr("weight")
    wq = graph.call_function(quantize_per_tensor, (w,))
    wdq = graph.call_function(dequantize_per_tensor, (wq,))
    conv = graph.call_function(torch.add, (x, wdq))
    conv.name = "conv2d"
    q = graph.call_function(quantize_per_tensor, (conv,))
    dq = graph.call_function(dequantize_per_tensor, (q,))
    add = graph.call_function(torch.add, (dq, dq))
    add.name = "add"
    iq = graph.call_function(quantize_per_tensor, (x,))  # the input's: no layer
    graph.output((add, iq))
    found = node_layers(graph, {"conv2d": "neck.conv", "add": "neck.block"})
    assert found[q.name] == found[dq.name] == "neck.conv"  # the conv's output
    assert found[wq.name] == found[wdq.name] == "neck.conv"  # its weights: the reader's
    assert found["add"] == "neck.block" and iq.name not in found


def test_only_backends_that_build_from_onnx_time_layers() -> None:
    cfg = load_config(None)
    with pytest.raises(StereoqError, match="budget.backend: inductor does not build from"):
        graph_timing(cfg, None, None, "inductor", [])  # type: ignore[arg-type]


def test_the_budget_backend_is_validated_with_the_config() -> None:
    with pytest.raises(StereoqError, match="backend"):
        load_config(None, sets=["stages.calibration.budget={max_increase_px: 0.1, "
                                "backend: tensorrt}"])


def test_budget_calibration_prices_its_raises_by_measured_latency(
    deploy_config: Path, tmp_path: Path
) -> None:
    data = yaml.safe_load(deploy_config.read_text())
    source = load_config(str(deploy_config))
    data["name"] = "tiny_latency_budget"
    data["output_dir"] = str(tmp_path / "runs")
    path = tmp_path / "budget.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(str(path))
    (cfg.run_dir / "float").mkdir(parents=True)
    shutil.copyfile(source.run_dir / "float" / "best.pt", cfg.run_dir / "float" / "best.pt")
    budget = "{max_increase_px: 0, frames: 1, max_layers: 1, threads: 1}"
    done = subprocess.run(
        [sys.executable, "-m", "stereoq", "train", "--stage", "calibration", "--config",
         str(path), "--set", f"stages.calibration.budget={budget}"],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    record = json.loads((cfg.run_dir / "calibration" / "mixed_precision.json").read_text())
    assert record["cost"] == "latency"
    timed = record["latency"]
    assert timed["where"] == "ort, 1 threads, 64x128"
    assert timed["default_ms"] > 0 and timed["all_candidates_raised_ms"] > 0
    assert len(record["raised"]) == 1  # an unreachable budget: max_layers raised
    assert timed["chosen_ms"] > 0
    candidates = record["candidates"]
    assert candidates and all(c["cost_ms"] >= 0.0 for c in candidates)
    # the profiler found the convolutions: some raise costs measurable time
    assert any(c["cost_ms"] > 0.0 for c in candidates)
    assert "latency paid" in done.stdout
