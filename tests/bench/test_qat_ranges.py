"""bench/qat_ranges.py on a tiny calibrated run: three runs from the same calibrated model, the
activation ranges kept only in the ``calibrated`` one, and the results as JSON."""

import json
import subprocess
import sys
from pathlib import Path

import torch

from stereoq.engine.checkpoint import save_checkpoint
from stereoq.models.build import build_model
from stereoq.settings import load_config
from stereoq.stages import run_stage

ROOT = Path(__file__).resolve().parents[2]


def test_qat_ranges_keeps_calibrated_ranges_and_moves_the_others(tiny_config: Path) -> None:
    cfg = load_config(str(tiny_config))
    torch.manual_seed(0)
    save_checkpoint(cfg.run_dir / "float" / "best.pt",
                    {"model": build_model(cfg.model).state_dict()})
    run_stage(cfg, "calibration")
    out = tiny_config.parent / "ranges.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench/qat_ranges.py"), "--config", str(tiny_config),
         "--steps", "2", "--frames", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr
    runs = {r["run"]: r for r in json.loads(out.read_text())["runs"]}
    assert list(runs) == ["calibrated", "moving_average", "moving_average, lr 0"]
    starts = {r["before"]["epe"] for r in runs.values()}
    assert len(starts) == 1  # every run starts from the same calibrated model
    assert runs["calibrated"]["largest_growth"][0]["ratio"] == 1.0
    assert runs["moving_average"]["largest_growth"][0]["ratio"] > 1.0
    assert runs["moving_average, lr 0"]["lr"] == 0.0 and runs["calibrated"]["lr"] > 0
    assert "largest range growth" in done.stdout
