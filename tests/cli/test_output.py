import json
import stat
from pathlib import Path

from stereoq.cli.output import write_json


def test_json_results_follow_the_umask(tmp_path: Path, umask_022: int) -> None:
    path = write_json(tmp_path / "out" / "summary.json", {"epe": 1.5, "path": tmp_path})
    assert stat.S_IMODE(path.stat().st_mode) == umask_022  # mkstemp made it 0o600
    assert json.loads(path.read_text()) == {"epe": 1.5, "path": str(tmp_path)}
    assert path.read_text().endswith("}\n")
    assert [p.name for p in path.parent.iterdir()] == ["summary.json"]
