"""One table for a finished quick start: EPE per stage, latency per runtime, picture paths.

    python examples/summary.py runs/stereonet_synthetic

Reads only the JSON files the commands saved (``predict.json``, ``deploy/*/report.json``,
``infer/summary.json``); prints what exists and names what is missing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table


def load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def main(run_dir: Path) -> int:
    console = Console()
    table = Table(title=f"stereoq quick start: {run_dir}", title_justify="left")
    for col in ("what", "EPE px", "D1 %", "latency ms (median)", "notes"):
        table.add_column(col, justify="left" if col in ("what", "notes") else "right")

    predict = load(run_dir / "predict.json")
    if predict is None:
        console.print(f"missing {run_dir / 'predict.json'}: run `stereoq predict --stage all`")
    else:
        results = predict["results"]
        float_epe = results.get("float", {}).get("epe")
        for name, m in results.items():
            change = ""
            if float_epe and name != "float" and name != "sgbm":
                change = f"{100.0 * (m['epe'] - float_epe) / float_epe:+.1f} % vs float"
            table.add_row(name, f"{m['epe']:.3f}", f"{m['d1']:.2f}", "", change)

    for report_path in sorted(run_dir.glob("deploy/*/report.json")):
        report = load(report_path) or {}
        perf = report.get("performance") or {}
        val = report.get("validation") or {}
        deployed = val.get("deployed") or {}
        accepted = val.get("acceptance") or {}
        within = accepted.get("within_pct")
        note = (f"{within:.2f} % px within 1 px of PyTorch, max {accepted['max_abs_px']:.2f} px"
                if within is not None else "")
        table.add_row(
            f"deployed ({report.get('backend')}, {report.get('metadata', {}).get('stage')})",
            f"{deployed['epe']:.3f}" if "epe" in deployed else "",
            f"{deployed['d1']:.2f}" if "d1" in deployed else "",
            f"{perf['median_ms']:.1f}" if "median_ms" in perf else "",
            note,
        )
    console.print(table)

    infer = run_dir / "infer"
    pictures = sorted(infer.rglob("overview.png")) if infer.is_dir() else []
    for p in pictures:
        console.print(f"pictures: {p.parent}  (overview: {p})")
    if not pictures:
        console.print(f"no pictures under {infer}: run `stereoq infer`")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/stereonet_synthetic")))
