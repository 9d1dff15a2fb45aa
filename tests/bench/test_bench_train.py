"""bench/bench_train.py reads ``--config`` as the commands do: a shipped model's name is its own
config, and an unknown name is a one-line error."""

import json
import subprocess
import sys
from pathlib import Path

from stereoq import weights

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_train.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=300)


def test_a_shipped_models_name_benchmarks_its_own_config(tmp_path: Path) -> None:
    out = tmp_path / "train.json"
    done = _run("--config", weights.DEFAULT, "--height", "64", "--width", "128", "--steps", "1",
                "--warmup", "0", "--batch-size", "1", "--threads", "1", "--json", str(out))
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["config"] == weights.config(weights.DEFAULT).name
    assert result["crop"] == [64, 128] and result["samples_per_s"] > 0


def test_an_unknown_config_is_a_one_line_error(tmp_path: Path) -> None:
    done = _run("--config", "no-such-model", "--json", str(tmp_path / "x.json"))
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert "'no-such-model'" in last and weights.DEFAULT in last
    assert not (tmp_path / "x.json").exists()


def test_data_that_cannot_be_read_is_a_one_line_error_before_timing(tmp_path: Path) -> None:
    done = _run("--config", weights.DEFAULT, "--set", "data.train_crop=[1024,2048]",
                "--json", str(tmp_path / "x.json"))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "smaller than the crop 1024x2048 (data.train_crop)" in last
    assert not (tmp_path / "x.json").exists()
