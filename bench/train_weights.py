"""Train a shipped model again, in one command, from its card's recipe.

    python bench/train_weights.py light-scenes-4x --out OUT    # hours on 2 cores (card: wall_s)
    python bench/train_weights.py light-scenes --out OUT --count 8 \\
        --set stages.float.epochs=1 --set data.synthetic.val_count=2   # a smoke run, seconds

Packs the card's generated training scenes and the validation scenes into ``OUT/data``, runs the
card's training runs in order (``OUT/runs/<run>``; each `stereoq train --stage float` with its
own thread count and overrides, starting from the earlier run's ``best.pt`` where the recipe
says so), then writes the last run's best weights as the package stores them: ``OUT/model.pt``
(a plain state dict, contiguous tensors) and ``OUT/train_weights.json`` (each run's best
validation figures beside the card's, the commands, the wall time and model.pt's sha256).

Interrupted, the same command resumes: a packed split is kept, a finished run (its
``metrics.json``) is skipped, an unfinished one continues from its ``last.pt``. ``--set`` and
``--count`` go after the recipe's own values (for smoke runs; the figures then are not the
card's). Ship the result by copying ``OUT/model.pt`` into ``src/stereoq/weights/NAME/`` and
re-measuring the card (``python bench/bench_weights.py --write-card``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from stereoq import weights
from stereoq.atomic import atomic_path
from stereoq.cli.output import print_table, write_json
from stereoq.data.lmdb_store import read_meta
from stereoq.data.pack import target_path
from stereoq.engine.checkpoint import load_checkpoint
from stereoq.errors import StereoqError
from stereoq.weights import recipe as recipes

FIGURES = ("epe", "bad2", "d1")


def stereoq(argv: list[str], env: dict[str, str] | None = None) -> None:
    """Run one stereoq command in its own process (its own thread count); a failure stops."""
    print("$ stereoq " + " ".join(argv), flush=True)
    done = subprocess.run([sys.executable, "-m", "stereoq", *argv],
                          env={**os.environ, **(env or {})}, check=False)
    if done.returncode != 0:
        raise StereoqError(f"`stereoq {argv[0]}` failed (exit {done.returncode}); rerun the same "
                           "command to resume", exit_code=done.returncode)


def check_packed(path: Path, count: int) -> None:
    """A split packed by an earlier call must be this recipe's (a smoke run's 4 scenes are not)."""
    held = read_meta(path).get("count")
    if held != count:
        raise StereoqError(f"{path} holds {held} scenes, this recipe packs {count}: use another "
                           "--out (or delete it)", exit_code=2)


def export_weights(checkpoint: Path, dest: Path) -> str:
    """The checkpoint's model state dict as the package ships it; -> its sha256."""
    state = load_checkpoint(checkpoint)["model"]
    with atomic_path(dest) as tmp:
        torch.save({key: value.contiguous() for key, value in state.items()}, tmp)
    return hashlib.sha256(dest.read_bytes()).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help=f"a shipped model ({', '.join(weights.names())})")
    parser.add_argument("--out", type=Path, required=True, help="folder for data, runs, model.pt")
    parser.add_argument("--count", type=int, default=None,
                        help="training scenes to pack instead of the recipe's")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="KEY.PATH=VALUE after each run's own overrides (and the pack's)")
    args = parser.parse_args()
    try:
        steps = recipes.recipe(args.name)
        if args.count is not None and args.count < 1:
            raise StereoqError(f"--count must be at least 1, not {args.count}", exit_code=2)
        scenes = weights.config(args.name, args.sets).data.synthetic  # checks the --sets too
        counts = {"train": args.count or steps.train_count, "test": scenes.val_count}
        args.out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        for split in recipes.SPLITS:
            packed = target_path(recipes.data_dir(args.out), split)
            if packed.exists():
                check_packed(packed, counts[split])
                print(f"{split} scenes already packed: {packed}")
                continue
            count = counts[split] if split == "train" else None
            stereoq(recipes.pack_argv(args.name, split, args.out, count, args.sets))
        wall: dict[str, float] = {}
        for run in steps.runs:
            float_dir = recipes.stage_dir(args.out, run.name)
            if (float_dir / "metrics.json").is_file():
                print(f"run {run.name} already finished: {float_dir}")
                continue
            argv = recipes.train_argv(args.name, run, args.out, args.sets)
            if (float_dir / "last.pt").is_file():
                argv.append("--resume")
            began = time.perf_counter()
            stereoq(argv, recipes.thread_env(run.threads))
            wall[run.name] = round(time.perf_counter() - began, 1)
        sha256 = export_weights(recipes.best_checkpoint(args.out, steps.final.name),
                                args.out / "model.pt")
    except StereoqError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code

    card = weights.card(args.name)
    rows, runs = [], {}
    for run in steps.runs:
        best = json.loads((recipes.stage_dir(args.out, run.name) / "metrics.json").read_text())
        runs[run.name] = {"best_epoch": best["best_epoch"], "epochs": best["epochs"],
                          "val": {k: best["best"].get(k) for k in FIGURES},
                          "wall_s": wall.get(run.name)}
        rows.append([run.name, f"{best['best_epoch']} / {best['epochs']}",
                     *(f"{best['best'][k]:.3f}" if k in best["best"] else "-" for k in FIGURES)])
    shipped = card.get("measured", {}).get("val", {}).get("float", {})
    rows.append([f"card of {args.name}", "", *(f"{shipped[k]:.3f}" if k in shipped else "-"
                                               for k in FIGURES)])
    print_table(f"{args.name} trained again (validation scenes, best epoch)",
                ["run", "best epoch", "EPE px", "bad-2 %", "D1 %"], rows)
    report = {"name": args.name, "count": args.count, "sets": args.sets, "runs": runs,
              "wall_s": round(time.perf_counter() - start, 1),
              "commands": recipes.commands(args.name, steps, str(args.out)),
              "model_pt": str(args.out / "model.pt"), "sha256": sha256,
              "card_sha256": card["architecture"].get("model_pt_sha256")}
    path = write_json(args.out / "train_weights.json", report)
    print(f"wrote {args.out / 'model.pt'} (sha256 {sha256[:12]}) and {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
