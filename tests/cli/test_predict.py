"""``stereoq predict`` on the tiny config: a float checkpoint against SGBM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stereoq.engine.checkpoint import save_checkpoint
from stereoq.models.build import build_model
from stereoq.settings import load_config


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "160"}
    return subprocess.run([sys.executable, "-m", "stereoq", *args], capture_output=True,
                          text=True, timeout=300, env=env)


def test_predict_float_and_sgbm_table_and_json(tiny_config: Path, tmp_path: Path) -> None:
    cfg = load_config(str(tiny_config))
    torch.manual_seed(0)
    save_checkpoint(cfg.run_dir / "float" / "best.pt",
                    {"model": build_model(cfg.model).state_dict()})
    out = tmp_path / "metrics.json"
    res = run("predict", "--config", str(tiny_config), "--baseline", "sgbm", "--json", str(out))
    assert res.returncode == 0, res.stderr
    assert "float" in res.stdout and "sgbm" in res.stdout and "EPE vs float" in res.stdout
    assert "mean over images" in res.stdout  # says how EPE is averaged
    data = json.loads(out.read_text())
    assert set(data["results"]) == {"float", "sgbm"}
    for metrics in data["results"].values():
        assert metrics["images"] == 4 and metrics["epe"] >= 0
        assert {"d1", "bad1", "bad2", "bad3", "epe_pixel"} <= set(metrics)
    # an untrained network is far worse than SGBM on textured synthetic scenes
    assert data["results"]["sgbm"]["epe"] < data["results"]["float"]["epe"]


def test_predict_without_checkpoint_names_file_and_command(tiny_config: Path) -> None:
    res = run("predict", "--config", str(tiny_config))
    assert res.returncode == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "float/best.pt" in lines[0]
    assert "stereoq train --stage float" in lines[0]


def test_predict_bad_baseline(tiny_config: Path) -> None:
    res = run("predict", "--config", str(tiny_config), "--baseline", "census")
    assert res.returncode == 2 and "--baseline" in res.stderr and "Traceback" not in res.stderr


def test_results_json_writes_undefined_metrics_as_null(tiny_config: Path) -> None:
    from stereoq.cli.predict import results_json

    cfg = load_config(str(tiny_config))
    nan = float("nan")
    data = results_json(cfg, {"float": {"epe": nan, "d1": 2.0, "images": 0}})
    assert data["results"]["float"] == {"epe": None, "d1": 2.0, "images": 0}
    json.dumps(data, allow_nan=False)


def test_predict_on_a_benchmark_prints_its_own_metrics(tiny_config, tmp_path, monkeypatch,
                                                       capsys) -> None:
    """In process: a Middlebury tree of odd-sized scenes (12x16, padded and cropped back)."""
    from tests.data import benchmark_trees as trees

    from stereoq.cli import main

    cfg = load_config(str(tiny_config))
    torch.manual_seed(0)
    save_checkpoint(cfg.run_dir / "float" / "best.pt",
                    {"model": build_model(cfg.model).state_dict()})
    root = trees.middlebury(tmp_path / "mb")
    out = tmp_path / "m.json"
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(sys, "argv", [
        "stereoq", "predict", "-c", str(tiny_config), "--set", "data.source=middlebury",
        "--set", f"data.root={root}", "--baseline", "sgbm", "--json", str(out)])
    with pytest.raises(SystemExit) as exc:
        main()
    stdout, err = capsys.readouterr()
    assert (exc.value.code or 0) == 0, err
    assert "middlebury metrics" in stdout and "bad-2.0-noc %" in stdout
    assert "avgerr-all px" in stdout
    results = json.loads(out.read_text())["results"]
    for model in ("float", "sgbm"):
        m = results[model]
        assert m["benchmark"] == "middlebury" and m["images"] == 2
        assert {"bad-2.0-all", "bad-2.0-noc", "avgerr-all", "avgerr-noc", "epe", "d1"} <= set(m)
        assert 0 <= m["bad-2.0-noc"] <= 100 and m["avgerr-all"] >= 0
    assert results["sgbm"]["sgbm_num_disparities"] == [16]  # calib.txt ndisp=10, not maxdisp 64


def test_predict_sensitivity_ranks_layers_and_saves_json_and_chart(tiny_config: Path) -> None:
    from stereoq.stages import run_stage

    cfg = load_config(str(tiny_config))
    torch.manual_seed(0)
    save_checkpoint(cfg.run_dir / "float" / "best.pt",
                    {"model": build_model(cfg.model).state_dict()})
    run_stage(cfg, "calibration")
    res = run("predict", "--stage", "calibration", "--sensitivity", "1",
              "--config", str(tiny_config))
    assert res.returncode == 0, res.stderr
    assert "layers ranked by EPE recovered when left float" in res.stdout
    report = json.loads((cfg.run_dir / "calibration" / "sensitivity.json").read_text())
    assert report["stage"] == "calibration" and report["frames"] == 1
    layers = report["layers"]
    assert len(layers) > 10 and sorted(r["rank"] for r in layers) == list(range(1, len(layers) + 1))
    assert len({r["layer"] for r in layers}) == len(layers)
    top = min(layers, key=lambda r: r["rank"])
    assert top["layer"] in res.stdout
    # ranked by EPE recovered when the layer is left float, most first
    recovered = [r["recovered_px"] for r in sorted(layers, key=lambda r: r["rank"])]
    assert recovered == sorted(recovered, reverse=True)
    assert (cfg.run_dir / "calibration" / "sensitivity.png").stat().st_size > 1000

    res = run("predict", "--stage", "float", "--sensitivity", "1", "--config", str(tiny_config))
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1 and "--sensitivity" in lines[0]
    assert "calibration" in lines[0] and "qat" in lines[0]
