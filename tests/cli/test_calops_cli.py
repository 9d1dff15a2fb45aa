import json
import subprocess
import sys
from pathlib import Path


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stereoq", *args], capture_output=True, text=True, timeout=120
    )


def test_calops_prints_table_and_json(tiny_config: Path, tmp_path: Path) -> None:
    out = tmp_path / "ops.json"
    res = run(
        "calops",
        "--config",
        str(tiny_config),
        "--height",
        "64",
        "--width",
        "128",
        "--json",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    assert "GFLOPs" in res.stdout and "refinement" in res.stdout
    data = json.loads(out.read_text())
    assert data["total_flops"] == sum(m["flops"] for m in data["modules"]) > 0
    assert data["height"] == 64


def test_config_error_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel:\n  neck:\n    out_channels: [1, 2]\n")
    res = run("calops", "--config", str(bad))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "model.neck: out_channels" in lines[0]


def test_bad_option_value(tmp_path: Path) -> None:
    res = run("calops", "--height", "4")
    assert res.returncode == 2 and "--height" in res.stderr and "Traceback" not in res.stderr
