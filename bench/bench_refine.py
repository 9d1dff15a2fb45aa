"""How much the photometric refinement (``stereoq.infer.refine``) buys, by span, and what it costs.

A shipped model's disparity alone and refined with each ``--spans`` (``refine.span_pct``: the
offsets tried reach that % of the image width either way), scored on ``--val`` generated
validation scenes of the model's generator at ``--size`` (default: its config's) and on the
Middlebury motorcycle pair (741x500, as examples/motorcycle.py scores it); plus the median
refinement time per image at each size.

    python bench/bench_refine.py                                   # default model, its scenes
    python bench/bench_refine.py --size 384x768 --max-disp 90 --val 24
    python bench/bench_refine.py --weights light-scenes --spans 0.5,1,2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from stereoq import weights
from stereoq.cli.output import print_table, write_json
from stereoq.data.datasets import SyntheticStereo
from stereoq.data.transforms import prepare_pair
from stereoq.engine.metrics import DisparityMetrics
from stereoq.errors import StereoqError
from stereoq.infer.refine import refine

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=weights.DEFAULT)
    parser.add_argument("--spans", default="0.5,1,1.5,2", help="refine.span_pct values")
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
        spans = [None, *(float(v) for v in args.spans.split(","))]
        scored = pairs(args, cfg)
    except (StereoqError, ValueError) as err:
        sys.exit(f"error: {err}")
    results: dict = {}
    for label, items in scored.items():
        metrics = {span: DisparityMetrics(cfg.model.maxdisp) for span in spans}
        settings = {span: cfg.refine.model_copy(update={"span_pct": span}) for span in spans[1:]}
        times: dict = {span: [] for span in spans[1:]}
        for x, gt in items:
            with torch.inference_mode():
                disp = model(x)
                for span in spans:
                    out = disp
                    if span is not None:
                        start = time.perf_counter()
                        out = refine(x, disp, cfg.data, settings[span])
                        times[span].append(time.perf_counter() - start)
                    metrics[span].update(out, gt)
        width = items[0][0].shape[-1]
        results[label] = {
            "network" if span is None else f"span_pct {span:g}": {
                **{k: v for k, v in metrics[span].compute().items()
                   if k in ("epe", "bad1", "bad2", "d1")},
                **({} if span is None else {
                    "span_px": settings[span].span_px(width),
                    "ms_median": 1000 * statistics.median(times[span])})}
            for span in spans}
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
