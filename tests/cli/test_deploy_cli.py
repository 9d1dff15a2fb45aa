"""``stereoq export`` / ``check`` / ``compile`` end to end on a tiny float run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stereoq", *args], capture_output=True, text=True, timeout=300,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )


def one_line_error(res: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert res.returncode == code, res.stderr
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def run_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run with a float checkpoint, deployed at 64x128 (validation frames 60x120)."""
    import torch
    import yaml

    from stereoq.engine.checkpoint import save_checkpoint
    from stereoq.models.build import build_model
    from stereoq.settings import load_config

    root = tmp_path_factory.mktemp("deploycli")
    cfg_path = root / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "name": "tiny_cli",
        "output_dir": str(root / "runs"),
        "model": {
            "maxdisp": 64,
            "neck": {"out_channels": [8, 8, 8, 16, 16, 8], "num_blocks": [1, 1, 1, 1]},
            "head": {"num_groups": 4, "agg_channels": 8, "agg_layers": 1},
            "refinement": {"channels": 8, "num_blocks": 1},
        },
        "data": {"synthetic": {"train_count": 2, "val_count": 2, "height": 60, "width": 120,
                               "max_disp": 24.0}},
    }))
    cfg = load_config(str(cfg_path))
    torch.manual_seed(0)
    state = build_model(cfg.model).state_dict()
    save_checkpoint(cfg.run_dir / "float" / "best.pt", {"model": state})
    return cfg_path


def test_export_check_compile_float(run_config: Path) -> None:
    runs = run_config.parent / "runs" / "tiny_cli" / "deploy"
    res = run("export", "--stage", "float", "--config", str(run_config))
    assert res.returncode == 0, res.stderr
    assert "onnx.checker: passed" in res.stdout and "healthy" in res.stdout
    exported = json.loads((runs / "stereonet_float.export.json").read_text())
    assert exported["agreement"]["ok"] and exported["metadata"]["input_shape"] == [1, 6, 64, 128]
    assert exported["acceptance"]["ok"] and exported["acceptance"]["within_pct"] == 100.0

    res = run("check", "--stage", "float", "--config", str(run_config))
    assert res.returncode == 0, res.stderr
    assert "0 of 35 convolutions run in int8" in res.stdout
    res = run("check", "--stage", "float", "--config", str(run_config), "--strict")
    assert res.returncode == 1  # a float model falls back everywhere
    report = json.loads((runs / "check_ort_float.json").read_text())
    assert report["convolutions"] == 35 and report["fallbacks"] > 0

    res = run("compile", "--stage", "float", "--config", str(run_config), "--runs", "2",
              "--warmup", "0", "--threads", "1", "--validate", "--max-samples", "1")
    assert res.returncode == 0, res.stderr
    assert "top 10 layers" in res.stdout and "bit-level agreement" in res.stdout
    report = json.loads((runs / "ort" / "report.json").read_text())
    assert report["performance"]["runs"] == 2 and len(report["performance"]["top_layers"]) == 10
    v = report["validation"]
    assert v["samples"] == 1 and v["agreement"]["disparity_within_step_pct"] == 100.0
    assert v["ok"] and v["acceptance"]["within_pct"] == 100.0 and not v["problems"]


def test_bad_input_is_one_line(run_config: Path) -> None:
    cfg = str(run_config)
    one_line_error(run("export", "--stage", "bogus", "--config", cfg), 2, "--stage")
    one_line_error(run("export", "--stage", "float", "--width", "100", "--config", cfg), 2,
                   "--width", "multiple of 16")
    one_line_error(run("check", "--backend", "trt", "--config", cfg), 2,
                   "unsupported backend 'trt'")
    one_line_error(run("compile", "--backend", "tensorrt", "--config", cfg), 2, "--backend")
    missing = run("export", "--stage", "int_infer", "--config", cfg)
    one_line_error(missing, 1, "model.pt2 does not exist", "stereoq train --stage int_infer")
