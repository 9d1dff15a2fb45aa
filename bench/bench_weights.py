"""The shipped models' card figures (``stereoq.weights``): size, cost, latency and accuracy.

For each shipped model: parameters and FLOPs (``stereoq.calops``) at each ``--sizes``; median
latency over ``--runs`` calls at ``--threads`` threads, batch 1, of the float model as
`stereoq infer` runs it (eager PyTorch, post-processing included) and of the deployed graph
(pair -> (1/2 disparity, offset)) float and int8 on ONNX Runtime, and of the photometric
refinement that `stereoq infer` runs after the network (``stereoq.infer.refine``); EPE
(per-image average, as `stereoq predict`) on ``--val`` generated validation scenes of the
model's own config (float and int8, each alone and refined, and OpenCV SGBM); and the
Middlebury 2014 motorcycle pair (741x500, scikit-image, scored against its ground truth as
examples/motorcycle.py does) for the same five, overall and by region (occluded, depth edges,
surfaces: ``stereoq.engine.regions``).

The int8 model is the calibration stage's: BN folded, percentile observers over the stage's
calibration batches of the model's training data (``stages.calibration``), converted; accuracy
computed as the deployment runtime computes it (``stereoq.quant.runtime_eval``).

    python bench/bench_weights.py                   # every shipped model, 192x384 and 512x752
    python bench/bench_weights.py --runs 3 --val 8  # quicker, noisier
    python bench/bench_weights.py --write-card      # also store the figures in card.json

The default sizes: the generated scenes' 192x384 and the motorcycle's 741x500 padded to the
model's multiple of 16 (512x752). The machine's load average is saved with the figures:
latency on a shared machine is noisy (medians are reported, p90 beside them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_quant import frames, int8_graph, ort_session  # bench/, beside this script
from timing import time_torch

from stereoq import calops, weights
from stereoq.baselines.sgbm import SgbmParams, sgbm_disparity
from stereoq.cli.output import print_table, write_json
from stereoq.cli.progress import RichReporter
from stereoq.data.transforms import prepare_pair
from stereoq.engine.evaluate import evaluate_model, evaluate_sgbm
from stereoq.engine.regions import NOTE as REGIONS_NOTE
from stereoq.engine.regions import region_rows, region_scores
from stereoq.infer.refine import refine, refined
from stereoq.infer.run import estimate
from stereoq.models.stereonet import DeployGraph
from stereoq.quant.runtime_eval import runtime_eval
from stereoq.stages.calibration import CalibrationStage
from stereoq.stages.quantized import padded_predictor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import motorcycle  # noqa: E402

METRIC_KEYS = ("epe", "bad2", "d1")
METHODS = ("float", "float refined", "int8", "int8 refined", "sgbm")
"""The rows of the accuracy tables: each network alone and refined as `stereoq infer` does."""


def pair_estimator(cfg, predictor):
    """(H, W, 3) uint8 RGB pair -> (H, W) disparity px, as `stereoq infer` runs a model."""

    def run(left: np.ndarray, right: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return predictor(prepare_pair(left, right, cfg.data)[None])[0, 0].float().numpy()

    return run


def latencies(cfg, model, q, size: tuple[int, int], args) -> dict:
    """Median (and p90) ms of the float predictor (eager), and of the deployed graph float and
    int8 on ONNX Runtime, on one generated pair of ``size``."""
    (x,) = frames(cfg, 1, *size)
    out = {"float PyTorch eager (network)": time_torch(model, x, args.runs, 1)}
    with torch.inference_mode():
        disp = model(x)
    out["photometric refinement (PyTorch)"] = time_torch(
        lambda pair: refine(pair, disp, cfg.data, cfg.refine), x, args.runs, 1)
    with tempfile.TemporaryDirectory(prefix="bench-weights-") as tmp:
        for label, graph in (("float ONNX Runtime", DeployGraph(model).eval()),
                             ("int8 ONNX Runtime", q)):
            run, ops = ort_session(graph, x, Path(tmp) / "model.onnx", args.threads)
            out[label] = {**time_torch(run, x, args.runs, 1), "ops": ops}
    return out


def motorcycle_scores(cfg, predictors: dict) -> dict:
    """Each predictor and SGBM on the motorcycle pair, scored against its ground truth."""
    left, right, gt, scale = motorcycle.fit_to_maxdisp(*motorcycle.load_motorcycle(),
                                                       cfg.model.maxdisp)
    out = {"size": f"{gt.shape[1]}x{gt.shape[0]}", "downscale": scale}
    disparities = {label: estimate(pair_estimator(cfg, predictor), left, right)[0]
                   for label, predictor in predictors.items()}
    disparities["sgbm"] = sgbm_disparity(left, right, SgbmParams.covering(cfg.model.maxdisp))
    for label, disp in disparities.items():
        out[label] = motorcycle.score(disp, gt, cfg.model.maxdisp)
    out["regions"] = {label: region_scores(disp, gt, cfg.model.maxdisp)
                      for label, disp in disparities.items()}
    return out


def bench(name: str, args, reporter) -> dict:
    sets = [f"data.synthetic.val_count={args.val}", f"output_dir={args.out / 'runs'}",
            *args.set]
    cfg = weights.config(name, sets=sets)
    model = weights.eval_model(name)
    result: dict = {"params": sum(p.numel() for p in model.parameters()),
                    "model_pt_bytes": weights.model_file(name).stat().st_size,
                    "refine": cfg.refine.model_dump()}
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    result["gflops"] = {
        f"{h}x{w}": calops.summary(calops.count(model, torch.zeros(1, 6, h, w)))["total_flops"]
        / 1e9 for h, w in sizes}

    start = time.perf_counter()
    batches = CalibrationStage(cfg).calibration_batches(reporter)
    q = int8_graph(cfg, model, batches)
    result["int8"] = {"calibration_images": sum(len(b) for b in batches),
                      "calibration_s": time.perf_counter() - start,
                      "weight_bits": cfg.stages.calibration.weight_bits}
    int8 = padded_predictor(cfg, runtime_eval(q))
    predictors = {"float": model, "float refined": refined(model, cfg.data, cfg.refine),
                  "int8": int8, "int8 refined": refined(int8, cfg.data, cfg.refine)}

    result["latency_ms"] = {}
    for h, w in sizes:
        result["latency_ms"][f"{h}x{w}"] = latencies(cfg, model, q, (h, w), args)
        print(name, f"{h}x{w}", {k: round(v["median_ms"], 1)
                                  for k, v in result["latency_ms"][f"{h}x{w}"].items()},
              flush=True)

    cpu = torch.device("cpu")
    result["val"] = {
        "set": f"{args.val} generated validation scenes (kind "
        f"{cfg.data.synthetic.kind}, {cfg.data.synthetic.height}x{cfg.data.synthetic.width}, "
        f"seed {cfg.data.synthetic.seed})",
        **{label: evaluate_model(cfg, predictor, cpu, reporter, 1, f"{name} {label} val")
           for label, predictor in predictors.items()},
        "sgbm": evaluate_sgbm(cfg, reporter),
    }
    result["motorcycle"] = motorcycle_scores(cfg, predictors)
    return result


def card_measurements(result: dict, args, command: str) -> dict:
    """What the card keeps of one model's figures (the JSON keeps everything)."""
    def metrics(m: dict) -> dict:
        return {k: round(m[k], 3) for k in METRIC_KEYS}

    def regions(by_method: dict) -> dict:
        """Region -> share % and each method's EPE / bad-2 there (stereoq.engine.regions)."""
        first = next(iter(by_method.values()))
        return {"note": REGIONS_NOTE, **{
            region: {"share": round(first[region]["share"], 1), **{
                method: {k: None if r[region][k] is None else round(r[region][k], 3)
                         for k in ("epe", "bad2")} for method, r in by_method.items()}}
            for region in first}}

    return {
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "machine": result["machine"],
        "gflops": {k: round(v, 3) for k, v in result["gflops"].items()},
        "latency_ms_median": {
            size: {row: round(r["median_ms"], 1) for row, r in rows.items()}
            for size, rows in result["latency_ms"].items()},
        "latency_note": f"median of {args.runs} runs after 1 warm-up, batch 1, {args.threads} "
        "threads; float PyTorch eager is the network as `stereoq infer` runs it, the ONNX "
        "Runtime rows the deployed graph (post-processing outside); `stereoq infer` adds the "
        "photometric refinement row (--no-refine leaves it out). Shared machine: load "
        f"average {result['machine']['load_before']} before, {result['machine']['load_after']} "
        "after",
        "int8": "calibration stage's recipe (percentile observers, "
        f"{result['int8']['calibration_images']} generated training scenes, "
        f"{result['int8']['weight_bits']}-bit weights), converted; "
        "accuracy as the deployment runtime computes it",
        "refine": {"config": result["refine"],
                   "note": "`stereoq infer` refines the network's disparity by default "
                   "(stereoq.infer.refine); the rows named refined are that output"},
        "val": {"set": result["val"]["set"],
                **{k: metrics(result["val"][k]) for k in METHODS}},
        "motorcycle": {
            "pair": "Middlebury 2014 motorcycle via skimage.data.stereo_motorcycle, "
            f"{result['motorcycle']['size']}, against its ground truth (0 < gt < maxdisp)",
            **{k: metrics(result["motorcycle"][k]) for k in METHODS},
            "regions": regions(result["motorcycle"]["regions"])},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(weights.names()))
    parser.add_argument("--sizes", default="192x384,512x752")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--val", type=int, default=48, help="generated validation scenes")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override after the model's own (e.g. "
                        "stages.calibration.weight_bits=8); repeatable")
    parser.add_argument("--write-card", action="store_true",
                        help="store the figures in each model's card.json (source tree)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reporter = RichReporter()
    wait = os.environ.get("OMP_WAIT_POLICY")
    command = (f"OMP_WAIT_POLICY={wait} " if wait else "") + "python " + " ".join(sys.argv)
    results = {}
    for name in args.models.split(","):
        load_before = [round(v, 2) for v in os.getloadavg()]
        result = bench(name, args, reporter)
        result["machine"] = {"cpu": platform.processor() or platform.machine(),
                             "cores": os.cpu_count(), "threads": args.threads,
                             "load_before": load_before,
                             "load_after": [round(v, 2) for v in os.getloadavg()],
                             "torch": torch.__version__}
        results[name] = result
        if args.write_card:
            path = weights.model_file(name).parent / weights.CARD_FILE
            card = json.loads(path.read_text())
            card["measured"] = card_measurements(result, args, command)
            path.write_text(json.dumps(card, indent=2) + "\n")
            print(f"updated {path}")

    for name, r in results.items():
        size_rows = [
            (f"{name} {size}", r["gflops"][size], *(rows[k]["median_ms"] for k in rows))
            for size, rows in r["latency_ms"].items()]
        print_table(f"{name}: {r['params'] / 1e6:.3f} M params, {r['model_pt_bytes']} bytes; "
                    f"median ms at {args.threads} threads",
                    ["model size", "GFLOPs", *next(iter(r["latency_ms"].values()))], size_rows)
        print_table(f"{name}: EPE px / bad-2 % ({r['val']['set']}; motorcycle "
                    f"{r['motorcycle']['size']})",
                    ["model", "val", "motorcycle"],
                    [(k, *(f"{d[k]['epe']:.2f} / {d[k]['bad2']:.1f}"
                           for d in (r["val"], r["motorcycle"])))
                     for k in METHODS])
        by_region = r["motorcycle"]["regions"]
        print_table(f"{name}: motorcycle by region, EPE px / bad-2 %",
                    ["region", "share %", *by_region],
                    region_rows(by_region))
    path = write_json(args.out / "bench_weights.json", {"command": command, "models": results})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
