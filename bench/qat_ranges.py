"""What QAT's training does to a calibrated model, by how its ranges are kept: from the run's
calibrated graph, a few QAT steps with the activation ranges kept (``stages.qat.ranges:
calibrated``), with every range moving (``moving_average``), and with the ranges moving but no
weight update (lr 0): each scored on validation scenes, with the activation ranges that grew most.

This is how QAT's loss on the reference network was traced (README "The reference network,
trained on 2 cores"): its one epoch with moving ranges took 5.11 px to 6.45.

    python bench/qat_ranges.py                                  # the quick start's run
    python bench/qat_ranges.py --config stereonet_sceneflow --steps 30 --frames 16 \\
        --set data.source=lmdb --set data.lmdb_dir=data/scenes_lmdb --json ranges.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from stereoq.cli.common import config_argument
from stereoq.cli.output import print_table, write_json
from stereoq.engine.evaluate import accumulate, pair_input, val_dataset
from stereoq.engine.optim import build_optimizer
from stereoq.engine.report import Reporter
from stereoq.errors import StereoqError
from stereoq.settings import load_config

RUNS = {  # name -> (stages.qat.ranges, learning rate from the recipe)
    "calibrated": ("calibrated", True),
    "moving_average": ("moving_average", True),
    "moving_average, lr 0": ("moving_average", False),
}


def activation_scales(graph: torch.nn.Module) -> dict[str, tuple[str, float]]:
    """Each activation fake quant's (layer name, scale), by quantizer name."""
    from stereoq.quant.sensitivity import layers

    names = {id(q): layer.name for layer in layers(graph) for q in layer.activations()}
    return {name: (names[id(mod)], float(mod.scale.max()))
            for name, mod in graph.named_modules() if id(mod) in names}


def run(cfg_source: str | None, sets: list[str], name: str, steps: int, frames: int
        ) -> dict[str, object]:
    """``steps`` QAT steps from the calibrated graph under ``RUNS[name]``; scores and ranges."""
    from stereoq.stages.qat import QatStage

    ranges, learns = RUNS[name]
    cfg = load_config(cfg_source, sets=[*sets, f"stages.qat.ranges={ranges}"])
    stage = QatStage(cfg)
    recipe = cfg.stages.qat
    graph = stage.prepare(None)
    val = DataLoader(Subset(val_dataset(cfg), range(frames)), batch_size=1)
    train = DataLoader(stage.data("train", recipe.crop), batch_size=recipe.batch_size,
                       shuffle=True, generator=torch.Generator().manual_seed(cfg.seed))

    def score() -> dict[str, float]:
        stage.set_mode(graph, False)
        return accumulate(lambda x: stage.predict(graph, x), val, cfg.model.maxdisp,
                          torch.device("cpu"), Reporter(), "val").compute()

    before, scales = score(), activation_scales(graph)
    optimizer = build_optimizer(graph, recipe.optimizer)
    for group in optimizer.param_groups:
        group["lr"] = recipe.optimizer.lr if learns else 0.0
    loss_fn = stage.criterion()
    started = time.perf_counter()
    for step, batch in enumerate(train):
        if step == steps:
            break
        stage.set_mode(graph, True)
        loss = loss_fn(stage.outputs(graph, pair_input(batch)), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - started
    after, grown = score(), activation_scales(graph)
    growth = sorted(((grown[q][1] / scales[q][1], scales[q][0]) for q in scales), reverse=True)
    return {"run": name, "ranges": ranges, "lr": optimizer.param_groups[0]["lr"],
            "steps": steps, "seconds": round(seconds, 1), "before": before, "after": after,
            "largest_growth": [{"layer": layer, "ratio": ratio} for ratio, layer in growth[:3]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", "-c", default=None, type=config_argument)
    parser.add_argument("--steps", type=int, default=30, help="QAT steps of each run")
    parser.add_argument("--frames", type=int, default=16, help="validation scenes to score")
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = []
    try:
        for name in RUNS:
            torch.manual_seed(0)
            results.append(run(args.config, args.sets, name, args.steps, args.frames))
    except StereoqError as err:
        raise SystemExit(f"error: {err}") from None
    rows = [[r["run"], f"{r['before']['epe']:.4f} / {r['before']['bad2']:.2f}",
             f"{r['after']['epe']:.4f} / {r['after']['bad2']:.2f}",
             f"{r['largest_growth'][0]['layer']} {r['largest_growth'][0]['ratio']:.2f}x",
             r["seconds"]] for r in results]
    print_table(f"{args.steps} QAT steps from the calibrated model, {args.frames} scenes",
                ["run", "EPE / bad-2 before", "after", "largest range growth", "s"], rows)
    print("the three largest growths of each run are in the JSON (--json)")
    if args.json:
        write_json(args.json, {"steps": args.steps, "frames": args.frames, "runs": results})


if __name__ == "__main__":
    main()
