"""The backends' shared machinery: the benchmark process is tethered to ``compile``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stereoq.deploy.backends.base import run_artifact_bench
from stereoq.staging import pid_alive

# ``compile`` in miniature: benchmark an artifact whose runner writes its PID and sleeps.
PARENT = """
import sys
from pathlib import Path
import stereoq.tethered as tethered
from stereoq.deploy.backends.base import run_artifact_bench
if sys.argv[2] == "pipe":  # what macOS / Windows get: the stdin watcher alone
    tethered.BOOTSTRAP = tethered.BOOTSTRAP.replace('sys.platform.startswith("linux")', "False")
run_artifact_bench(Path(sys.argv[1]), "bench.py", [])
"""
RUNNER = """
import os, sys, time
from pathlib import Path
tmp = Path(sys.argv[1], "child.tmp")
tmp.write_text(str(os.getpid()))
tmp.replace(Path(sys.argv[1], "child.pid"))
time.sleep(120)
"""


def _wait_for(condition, seconds: float) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.mark.skipif(os.name != "posix", reason="kill -9 of the parent")
@pytest.mark.parametrize("tether", ["pdeathsig", "pipe"])
def test_benchmark_process_dies_with_a_killed_parent(tmp_path: Path, tether: str) -> None:
    (tmp_path / "bench.py").write_text(RUNNER)
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path), tether])
    child = None
    try:
        assert _wait_for(pid_file.exists, 60), "the benchmark never started"
        child = int(pid_file.read_text())
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert _wait_for(lambda: not pid_alive(child), 10), "benchmark outlived compile"
    finally:
        parent.kill()
        parent.wait()
        if child is not None and pid_alive(child):
            os.kill(child, signal.SIGKILL)


def test_benchmark_result_and_failure(tmp_path: Path) -> None:
    (tmp_path / "ok.py").write_text(
        "import json, sys\nprint('noise')\nprint(json.dumps({'argv': sys.argv[1:]}))\n"
    )
    (tmp_path / "bad.py").write_text("raise SystemExit('no model here')\n")
    assert run_artifact_bench(tmp_path, "ok.py", ["--runs", "2"]) == {
        "argv": [str(tmp_path), "bench", "--runs", "2"]
    }
    from stereoq.errors import StereoqError

    with pytest.raises(StereoqError, match="failed: no model here"):
        run_artifact_bench(tmp_path, "bad.py", [])
