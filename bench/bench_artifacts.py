"""Latency of compiled artifacts side by side, in interleaved rounds (a shared machine's load
drifts; interleaving gives every artifact the same share of it).

Each artifact is a folder ``stereoq compile`` wrote (``RUN_DIR/deploy/BACKEND``); it is loaded
once with its backend's runner at ``--threads``, then every round runs each artifact
``--runs`` times on the same input, in turn. Printed and saved (``--json``): per artifact the
median over all rounds, the median of the round medians' ratio to the first artifact, and the
spread of that ratio over rounds.

    python bench/bench_artifacts.py \\
        default=runs/stereonet_synthetic/deploy/ort:ort \\
        budget=runs/budget/deploy/ort:ort --threads 2 --rounds 6 --runs 15
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from stereoq.deploy.backends import get_backend


def parse(spec: str) -> tuple[str, Path, str]:
    """``LABEL=DIR:BACKEND`` -> (label, folder, backend)."""
    label, _, rest = spec.partition("=")
    folder, _, backend = rest.rpartition(":")
    if not label or not folder or not backend:
        raise SystemExit(f"artifact {spec!r}: expected LABEL=DIR:BACKEND")
    if not Path(folder).is_dir():
        raise SystemExit(f"artifact {label}: {folder} is not a folder")
    return label, Path(folder), backend


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", nargs="+", help="LABEL=DIR:BACKEND, the first the baseline")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--runs", type=int, default=15, help="runs per artifact per round")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--json", type=Path, default=Path("bench_artifacts.json"))
    args = parser.parse_args(argv)
    specs = [parse(s) for s in args.artifacts]
    runners, shapes = {}, set()
    for label, folder, backend in specs:
        runner = get_backend(backend).runner(folder, args.threads)
        runners[label] = runner
        shapes.add(tuple(runner.input_shape))
    if len(shapes) != 1:
        raise SystemExit(f"the artifacts take different inputs: {sorted(shapes)}")
    x = np.random.default_rng(0).uniform(-1, 1, next(iter(shapes))).astype(np.float32)
    for runner in runners.values():
        for _ in range(args.warmup):
            runner.raw(x)
    times: dict[str, list[float]] = {label: [] for label in runners}
    round_medians: dict[str, list[float]] = {label: [] for label in runners}
    for _ in range(args.rounds):
        for label, runner in runners.items():
            these = []
            for _ in range(args.runs):
                start = time.perf_counter()
                runner.raw(x)
                these.append((time.perf_counter() - start) * 1000)
            times[label] += these
            round_medians[label].append(statistics.median(these))
    base = specs[0][0]
    rows = []
    for label, folder, backend in specs:
        ratios = [m / b for m, b in zip(round_medians[label], round_medians[base], strict=True)]
        rows.append({
            "artifact": label, "folder": str(folder), "backend": backend,
            "median_ms": statistics.median(times[label]),
            "p90_ms": float(np.percentile(times[label], 90)),
            "ratio_to_first": statistics.median(ratios),
            "ratio_min": min(ratios), "ratio_max": max(ratios),
        })
    result = {"threads": args.threads, "rounds": args.rounds, "runs": args.runs,
              "input_shape": list(next(iter(shapes))), "rows": rows}
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    table = Table(title=f"latency, {args.threads} threads, {args.rounds} interleaved rounds "
                        f"of {args.runs} runs, input {result['input_shape']}")
    for column in ("artifact", "backend", "median ms", "p90 ms", f"× {base} (round range)"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["artifact"], r["backend"], f"{r['median_ms']:.1f}", f"{r['p90_ms']:.1f}",
                      f"{r['ratio_to_first']:.3f} ({r['ratio_min']:.3f}-{r['ratio_max']:.3f})")
    Console().print(table)
    print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
