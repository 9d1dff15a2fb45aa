"""How much the photometric refinement (``stereoq.infer.refine``) buys, by setting, and what it
costs.

A shipped model's disparity alone and refined with each value of each ``--sweep KEY=V1,V2,..``
(a ``refine`` setting; the others at the model config's values), scored on ``--val`` generated
validation scenes of the model's generator at ``--size`` (default: its config's) and on the
Middlebury motorcycle pair (741x500, as examples/motorcycle.py scores it); plus the median
refinement time per image. Without ``--sweep``: the span, the edge window and its distance
cost, four values each.

    python bench/bench_refine.py                                   # default model, its scenes
    python bench/bench_refine.py --size 384x768 --max-disp 90 --val 24
    python bench/bench_refine.py --weights light-scenes --sweep span_pct=0.5,1,2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from pydantic import ValidationError

from stereoq import weights
from stereoq.cli.output import print_table, write_json
from stereoq.data.datasets import SyntheticStereo
from stereoq.data.transforms import prepare_pair
from stereoq.engine.metrics import DisparityMetrics
from stereoq.errors import StereoqError
from stereoq.infer.refine import refine
from stereoq.settings.refine import RefineConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import motorcycle  # noqa: E402


def pairs(args, cfg) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Network inputs (1, 6, H, W) with ground truth (1, 1, H, W): the validation scenes and the
    motorcycle pair."""
    syn = cfg.data.synthetic
    update = {"val_count": args.val}
    if args.size:
        height, width = (int(v) for v in args.size.split("x"))
        update |= {"height": height, "width": width}
    if args.max_disp:
        update["max_disp"] = args.max_disp
    syn = syn.model_copy(update=update)
    scenes = SyntheticStereo(syn, "val")
    val = []
    for i in range(len(scenes)):
        s = scenes.raw(i)
        val.append((prepare_pair(s["left"], s["right"], cfg.data)[None],
                    torch.from_numpy(s["disp"])[None, None]))
    left, right, gt, _ = motorcycle.fit_to_maxdisp(*motorcycle.load_motorcycle(),
                                                   cfg.model.maxdisp)
    moto = [(prepare_pair(left, right, cfg.data)[None], torch.from_numpy(gt)[None, None])]
    return {f"val {syn.height}x{syn.width} ({len(val)} scenes, kind {syn.kind})": val,
            f"motorcycle {gt.shape[1]}x{gt.shape[0]}": moto}


DEFAULT_SWEEPS = ("span_pct=0.5,1,1.5,2", "edge_window_pct=0,1,2,3",
                  "distance_cost=0,0.005,0.01,0.02")


def variants(sweeps: list[str], base: RefineConfig) -> dict[str, RefineConfig]:
    """``KEY=V1,V2`` items -> {"KEY V1": the base settings with KEY=V1, ...}, validated."""
    out = {}
    for item in sweeps:
        key, sep, values = item.partition("=")
        if not sep or not values or key not in RefineConfig.model_fields:
            raise ValueError(f"--sweep {item!r}: expected KEY=V1,V2,.. with KEY one of "
                             f"{', '.join(RefineConfig.model_fields)}")
        for value in values.split(","):
            try:
                settings = RefineConfig.model_validate({**base.model_dump(), key: value})
            except ValidationError as err:
                raise ValueError(f"--sweep {key}={value}: {err.errors()[0]['msg']}") from None
            out[f"{key} {value}"] = settings
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=weights.DEFAULT)
    parser.add_argument("--sweep", action="append", default=None,
                        help="KEY=V1,V2,..: each value of a refine setting (repeatable)")
    parser.add_argument("--size", default=None, help="HxW of the validation scenes")
    parser.add_argument("--max-disp", type=float, default=None, help="of the scenes, px")
    parser.add_argument("--val", type=int, default=48, help="generated validation scenes")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        cfg = weights.config(args.weights)
        model = weights.eval_model(args.weights)
        settings = variants(args.sweep or list(DEFAULT_SWEEPS), cfg.refine)
        scored = pairs(args, cfg)
    except (StereoqError, ValueError) as err:
        sys.exit(f"error: {err}")
    names = [None, *settings]
    results: dict = {}
    for label, items in scored.items():
        metrics = {name: DisparityMetrics(cfg.model.maxdisp) for name in names}
        times: dict = {name: [] for name in settings}
        for x, gt in items:
            with torch.inference_mode():
                disp = model(x)
                metrics[None].update(disp, gt)
                for name, refine_cfg in settings.items():
                    start = time.perf_counter()
                    out = refine(x, disp, cfg.data, refine_cfg)
                    times[name].append(time.perf_counter() - start)
                    metrics[name].update(out, gt)
        width = items[0][0].shape[-1]
        results[label] = {
            "network" if name is None else name: {
                **{k: v for k, v in metrics[name].compute().items()
                   if k in ("epe", "bad1", "bad2", "d1")},
                **({} if name is None else {
                    "span_px": settings[name].span_px(width),
                    "ms_median": 1000 * statistics.median(times[name])})}
            for name in names}
        rows = [(name, f"{m.get('span_px', 0):.2f}" if "span_px" in m else "", m["epe"],
                 m["bad1"], m["bad2"], f"{m['ms_median']:.0f}" if "ms_median" in m else "")
                for name, m in results[label].items()]
        print_table(f"{args.weights}: {label}", ["refinement", "span px", "EPE px", "bad-1 %",
                                                  "bad-2 %", "ms"], rows)
    command = "python " + " ".join(sys.argv)
    path = write_json(args.out / "bench_refine.json",
                      {"command": command, "weights": args.weights,
                       "refine": cfg.refine.model_dump(), "results": results})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
