"""JSON results: standard JSON only, written atomically."""

from __future__ import annotations

import json
import math
import stat
from pathlib import Path

import pytest

from stereoq.cli.output import write_json


def test_write_json_writes_standard_json(tmp_path: Path) -> None:
    path = write_json(tmp_path / "sub" / "r.json", {"fps": None, "epe": 1.5, "p": tmp_path})
    assert json.loads(path.read_text()) == {"fps": None, "epe": 1.5, "p": str(tmp_path)}


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_write_json_refuses_non_finite_and_keeps_the_old_file(tmp_path: Path, bad: float) -> None:
    path = tmp_path / "summary.json"
    path.write_text('{"old": true}\n')
    with pytest.raises(ValueError, match="JSON"):
        write_json(path, {"depth_m": {"max": bad}})
    assert path.read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temp file left


def test_json_results_follow_the_umask(tmp_path: Path, umask_022: int) -> None:
    path = write_json(tmp_path / "out" / "summary.json", {"epe": 1.5, "path": tmp_path})
    assert stat.S_IMODE(path.stat().st_mode) == umask_022  # mkstemp made it 0o600
    assert json.loads(path.read_text()) == {"epe": 1.5, "path": str(tmp_path)}
    assert path.read_text().endswith("}\n")
    assert [p.name for p in path.parent.iterdir()] == ["summary.json"]
