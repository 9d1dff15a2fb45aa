"""Every bench and example script that takes ``--config`` reads it as the commands do: an
unknown name is a one-line error (exit 2) listing the shipped configs and models, before any
work starts."""

import subprocess
import sys
from pathlib import Path

import pytest

from stereoq import weights

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = {
    "bench/bench_acceptance.py": ("--run", "x"),
    "bench/bench_adapt.py": (),
    "bench/bench_deploy.py": (),
    "bench/bench_quant.py": (),
    "bench/default_run.py": (),
    "bench/qat_ranges.py": (),
    "bench/refinement_levels.py": (),
    "examples/motorcycle.py": (),
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_an_unknown_config_is_a_one_line_error(script: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / script), "--config", "no-such-model", *SCRIPTS[script]],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr
    assert "'no-such-model'" in lines[-1] and weights.DEFAULT in lines[-1], lines
    assert list(tmp_path.iterdir()) == []  # nothing written
