"""Time and memory of the adapt stage on a folder of unlabeled pairs (default: 20 at 741x500).

Writes the pairs (generated scenes, PNG, ``*_left.png`` / ``*_right.png``) to a temporary
folder, then, with the config's ``stages.adapt`` recipe:

1. proxy labels of every pair (SGBM twice per pair, cached as the stage caches them), timed
   apart because a real run pays them once, in its first epoch;
2. ``stereoq train --stage adapt`` for ``--epochs`` epochs (it reuses the cached labels):
   training steps (random crops), validation on the held-out pairs at full size.

The float model is the run's ``float/best.pt`` when ``--float`` names one, else a seeded
untrained one (the cost does not depend on the weights). Peak memory is the peak resident set
of this process and, separately, of its data-loader workers.

    python bench/bench_adapt.py                       # 20 pairs, 1 epoch, default config
    python bench/bench_adapt.py --epochs 2 --float runs/stereonet_synthetic/float/best.pt
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from stereoq.cli.common import config_argument
from stereoq.cli.output import print_table, write_json
from stereoq.data import synthetic
from stereoq.data.images import write_png
from stereoq.engine.checkpoint import load_checkpoint, save_checkpoint
from stereoq.engine.report import Reporter
from stereoq.settings import load_config
from stereoq.stages import get_stage, run_stage

RESULTS = Path(__file__).resolve().parent / "results"


class Timings(Reporter):
    """Wall time of every task (training epochs, validation passes) by label."""

    def __init__(self) -> None:
        self.tasks: list[dict[str, Any]] = []
        self.started = 0.0

    def task(self, label: str, total: int) -> None:
        self.tasks.append({"label": label, "steps": total})
        self.started = time.perf_counter()

    def done(self) -> None:
        self.tasks[-1]["time_s"] = time.perf_counter() - self.started

    def epoch(self, record: dict[str, Any]) -> None:
        print(f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}, "
              f"val loss {record.get('val_loss', float('nan')):.4f}, {record['time_s']:.1f} s",
              flush=True)


def peak_rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # kB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", "-c", default=None, type=config_argument)
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--height", type=int, default=500)
    parser.add_argument("--width", type=int, default=741)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--float", type=Path, default=None, help="float checkpoint to adapt")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="KEY.PATH=VALUE config overrides (as stereoq --set)")
    parser.add_argument("--json", type=Path, default=RESULTS / "bench_adapt.json")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench_adapt_"))
    try:
        folder = work / "pairs"
        for i in range(args.pairs):
            left, right, _ = synthetic.render_pair(11, i, args.height, args.width, 64.0)
            write_png(folder / f"{i:03d}_left.png", left)
            write_png(folder / f"{i:03d}_right.png", right)
        cfg = load_config(args.config, sets=[
            *args.sets, f"output_dir={work / 'runs'}", f"stages.adapt.pairs={folder}",
            f"stages.adapt.epochs={args.epochs}",
        ])
        if args.float is not None:
            state = load_checkpoint(args.float)
        else:
            import torch

            from stereoq.models.build import build_model

            torch.manual_seed(0)
            state = {"model": build_model(cfg.model).state_dict()}
        save_checkpoint(get_stage(cfg, "float").artifact(), state)

        stage = get_stage(cfg, "adapt")
        train_pairs, val_pairs = stage.pairs
        dataset = stage.pair_data("train", crop=False)
        started = time.perf_counter()
        for i in range(len(train_pairs)):  # fills adapt/proxy/ as the first epoch would
            dataset.raw(i)
        for i in range(len(val_pairs)):
            stage.pair_data("val", crop=False).raw(i)
        proxy_s = time.perf_counter() - started
        proxied = len(train_pairs) + len(val_pairs)

        timings = Timings()
        started = time.perf_counter()
        summary = run_stage(cfg, "adapt", reporter=timings)
        stage_s = time.perf_counter() - started
    finally:
        shutil.rmtree(work, ignore_errors=True)

    recipe = cfg.stages.adapt
    train = [t for t in timings.tasks if " epoch " in t["label"]]
    val = [t for t in timings.tasks if " val " in t["label"]]
    steps = sum(t["steps"] for t in train)
    train_s = sum(t["time_s"] for t in train)
    val_s = sum(t["time_s"] for t in val)
    result = {
        "pairs": args.pairs, "size": [args.height, args.width], "config": cfg.name,
        "train_pairs": len(train_pairs), "val_pairs": len(val_pairs),
        "epochs": args.epochs, "crop_size": list(recipe.crop_size),
        "batch_size": recipe.batch_size, "crops_per_pair": recipe.crops_per_pair,
        "proxy_s_per_pair": proxy_s / proxied,
        "train_steps": steps, "train_s_per_step": train_s / max(steps, 1),
        "train_samples_per_s": steps * recipe.batch_size / train_s if train_s else None,
        "val_s_per_pair": val_s / max(sum(t["steps"] for t in val), 1),
        "stage_s": stage_s,
        "peak_rss_mb": peak_rss_mb(resource.RUSAGE_SELF),
        "peak_rss_workers_mb": peak_rss_mb(resource.RUSAGE_CHILDREN),
        "torch_threads": __import__("torch").get_num_threads(),
        "best_val_loss": summary["best"].get("loss"),
    }
    write_json(args.json, result)
    print_table(
        f"adapt: {args.pairs} pairs at {args.width}x{args.height}, {cfg.name}",
        ["proxy s/pair", "train s/step", "samples/s", "val s/pair", "stage s", "peak RSS MB",
         "workers MB"],
        [(result["proxy_s_per_pair"], result["train_s_per_step"],
          result["train_samples_per_s"], result["val_s_per_pair"], stage_s,
          result["peak_rss_mb"], result["peak_rss_workers_mb"])],
    )
    print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
