"""Does the embedded default learn? Validation EPE untrained vs trained vs OpenCV SGBM.

Trains the float stage of the config (default: the embedded ``stereonet_synthetic``) exactly as
``stereoq train --stage float`` does, timing it, then evaluates on the same full-size synthetic
validation set: a freshly initialised model, the trained best checkpoint and StereoSGBM.

    OMP_WAIT_POLICY=PASSIVE python bench/default_run.py            # trains (~10 min on 2 cores)
    python bench/default_run.py --skip-train                       # re-evaluate an existing run
    python bench/default_run.py --overwrite                        # train again over it

OMP_WAIT_POLICY=PASSIVE matters only on a machine shared with other CPU-heavy processes: there,
OpenMP threads that spin while waiting made training steps up to 10x slower.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from stereoq.cli.common import config_argument
from stereoq.cli.output import print_table, write_json
from stereoq.cli.progress import METRIC_COLUMNS, METRIC_KEYS, RichReporter
from stereoq.engine.evaluate import accumulate, evaluate, evaluate_sgbm, val_dataset, val_loader
from stereoq.engine.loop import seed_everything
from stereoq.engine.metrics import AVERAGING
from stereoq.errors import StereoqError
from stereoq.models.build import build_model
from stereoq.settings import load_config
from stereoq.stages import get_stage, run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, type=config_argument,
                        help="config path or shipped name")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="KEY=VALUE")
    parser.add_argument("--skip-train", action="store_true", help="evaluate the existing run")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing float run of the config (train --overwrite)")
    parser.add_argument("--json", type=Path, default=Path("bench/results/default_run.json"))
    args = parser.parse_args()
    cfg = load_config(args.config, sets=args.sets)
    reporter = RichReporter()

    train_s = None
    if not args.skip_train:
        start = time.perf_counter()
        try:
            run_stage(cfg, "float", reporter=reporter, overwrite=args.overwrite)
        except StereoqError as err:
            parser.error(str(err))
        train_s = time.perf_counter() - start

    seed_everything(cfg.seed)
    untrained = build_model(cfg.model).eval()
    loader = val_loader(val_dataset(cfg), 1)
    results = {
        "untrained": accumulate(untrained, loader, cfg.model.maxdisp, torch.device("cpu"),
                                reporter, "untrained val").compute(),
        "trained (float best.pt)": evaluate(cfg, get_stage(cfg, "float"), reporter=reporter),
        "OpenCV StereoSGBM": evaluate_sgbm(cfg, reporter),
    }
    print_table(
        f"{cfg.name}: {results['untrained']['images']} full-size synthetic validation images",
        ["model", *METRIC_COLUMNS],
        [(name, *(m[k] for k in METRIC_KEYS)) for name, m in results.items()],
    )
    print(AVERAGING)
    if train_s is not None:
        print(f"training wall time: {train_s / 60:.1f} min, {torch.get_num_threads()} threads")
    path = write_json(args.json, {"config": cfg.model_dump(mode="json", by_alias=True),
                                  "train_wall_s": train_s, "threads": torch.get_num_threads(),
                                  "averaging": AVERAGING, "results": results})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
