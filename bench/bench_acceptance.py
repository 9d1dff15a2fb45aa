"""Where the deployment acceptance thresholds sit: healthy deployments against broken ones.

For each trained run (its ``int_infer`` stage must exist), over its validation set, as
``stereoq compile --validate`` judges it (``stereoq.deploy.acceptance``):

- healthy: each ``--backend``'s artifact (default ``ort``; ``inductor``, ``openvino``, ...);
- broken on purpose, on each backend that builds from the ONNX export: one activation's scale
  doubled, one zero point moved by 16, one convolution's bias dropped, left and right swapped
  at the input (``tests/deploy/corruptions.py``).

Prints one row per (run, deployment): % of final-disparity pixels within 1 px of PyTorch's, the
max difference, EPE and D1 of both, and whether the backend's thresholds accept it; saves JSON.

    python bench/bench_acceptance.py --run qs_seed0 --run qs_seed1 \
        --set data.source=lmdb --set data.lmdb_dir=data/synthetic_lmdb \
        [--backend ort --backend inductor --backend openvino]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "deploy"))
from corruptions import CORRUPTIONS  # noqa: E402  (tests/deploy/corruptions.py)

from stereoq.cli.common import config_argument  # noqa: E402
from stereoq.cli.output import print_table, write_json  # noqa: E402
from stereoq.deploy.backends import get_backend  # noqa: E402
from stereoq.deploy.compile import compile_stage, validate  # noqa: E402
from stereoq.deploy.onnx_export import default_size, read_metadata, stage_onnx  # noqa: E402
from stereoq.settings import load_config  # noqa: E402


def row(run: str, deployment: str, v: dict) -> dict:
    a = v["acceptance"]
    dep, ref = a["deployed"], a["reference"]
    return {
        "run": run, "deployment": deployment, "frames": a["frames"],
        "within_1px_pct": a["within_pct"], "max_px": a["max_abs_px"],
        "mean_px": a["mean_abs_px"], "epe": dep["epe"], "epe_ref": ref["epe"],
        "d_epe": dep["epe"] - ref["epe"], "d1": dep["d1"], "d1_ref": ref["d1"],
        "d_d1": dep["d1"] - ref["d1"], "accepted": a["ok"], "problems": a["problems"],
    }


def measure(cfg, run: str, backends: list[str], max_samples: int | None) -> list[dict]:
    h, w = default_size(cfg)
    stage = "int_infer"
    rows = []
    for name in backends:
        with compile_stage(cfg, stage, name, h, w, runs=1, warmup=0, threads=None) as result:
            v = validate(cfg, get_backend(name), result.current_dir, result.metadata,
                         max_samples)
        rows.append(row(run, f"{name} (healthy)", v))
    source, _ = stage_onnx(cfg, stage, h, w)
    metadata = read_metadata(source)
    for name in backends:
        backend = get_backend(name)
        if backend.consumes != "onnx":
            continue
        for corruption, apply in CORRUPTIONS.items():
            with tempfile.TemporaryDirectory() as tmp:
                broken = Path(tmp) / "broken.onnx"
                onnx.save(apply(onnx.load(str(source))), str(broken))
                out = backend.compile(broken, metadata, Path(tmp) / name)
                v = validate(cfg, backend, out, metadata, max_samples)
            rows.append(row(run, f"{name}, {corruption}", v))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, type=config_argument)
    parser.add_argument("--run", action="append", required=True, help="run name (repeatable)")
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--backend", dest="backends", action="append", default=None,
                        help="backend to deploy to (repeatable; default ort)")
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--json", type=Path, default=Path("bench/results/acceptance.json"))
    args = parser.parse_args()
    rows = []
    for run in args.run:
        cfg = load_config(args.config, sets=[*args.sets, f"name={run}"])
        rows += measure(cfg, run, args.backends or ["ort"], args.max_samples)
        write_json(args.json, rows)  # what is measured so far survives an interruption
    print_table(
        "deployments against PyTorch's int_infer model (final disparity, validation set)",
        ["run", "deployment", "within 1 px %", "max px", "EPE", "EPE PyTorch", "ΔEPE",
         "ΔD1 pp", "accepted"],
        [(r["run"], r["deployment"], f"{r['within_1px_pct']:.3f}", f"{r['max_px']:.2f}",
          f"{r['epe']:.4f}", f"{r['epe_ref']:.4f}", f"{r['d_epe']:+.4f}", f"{r['d_d1']:+.2f}",
          "yes" if r["accepted"] else "no") for r in rows],
    )
    print(f"saved {args.json}")


if __name__ == "__main__":
    main()
