"""Deployment benchmark: float eager, float ONNX Runtime, int8 ONNX Runtime (and the int8 graph
through the ``inductor`` backend, an AOTInductor package) at 544x960 on 2 threads, in one run.

The int8 model is the project's own: the configured StereoNet, BN folded, quantized by
``stereoq.quant`` (ORT-convention Q/DQ, int16 disparity path) and calibrated on a few synthetic
frames, then exported by ``stereoq.deploy``. ORT figures come from ``stereoq compile``'s own
measurement (a fresh process running the artifact's ``run_stereo.py``). Latency does not depend
on the weights, so a float checkpoint is optional (seeded random weights otherwise); the
agreement figure is only meaningful with trained weights. The machine may be shared: medians
and p90 are printed.

    python bench/bench_deploy.py                                   # reference model, 544x960
    python bench/bench_deploy.py --checkpoint runs/x/float/best.pt --inductor
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from timing import time_torch  # bench/timing.py, beside this script

from stereoq.cli.output import print_table, write_json
from stereoq.deploy.backends import get_backend
from stereoq.deploy.metadata import describe
from stereoq.deploy.onnx_export import OPSET, compare, reference_graph, run_torch, to_onnx
from stereoq.deploy.qdq_graph import QdqGraph, node_scopes
from stereoq.models.build import build_model
from stereoq.models.stereonet import DeployGraph
from stereoq.settings import load_config


def calibration_frames(cfg, count: int, height: int, width: int) -> list[torch.Tensor]:
    from stereoq.data import build_dataset

    data = cfg.data.model_copy(update={
        "source": "synthetic",
        "synthetic": cfg.data.synthetic.model_copy(update={"height": height, "width": width}),
    })
    dataset = build_dataset(data, "train", crop=False)
    frames = []
    for i in range(count):
        item = dataset[i]
        frames.append(torch.cat([item["left"], item["right"]], 0)[None])
    return frames


def int8_graph(cfg, model, frames):
    from stereoq.quant.prepare import LastTwo, calibrate, convert, prepare
    from stereoq.quant.recipes import calibration_recipe

    observed = prepare(model, calibration_recipe(cfg))
    calibrate(observed, frames)
    return LastTwo(convert(observed))


def ort_figures(cfg, graph, x, name, height, width, work, runs, warmup, threads) -> dict:
    import onnx

    backend = get_backend("ort")
    path = work / f"{name}.onnx"
    start = time.perf_counter()
    to_onnx(graph, x, path)
    export_s = time.perf_counter() - start
    quant = QdqGraph(onnx.load(str(path))).output_quant()
    precision = "int8-qdq" if any(quant.values()) else "float32"
    meta = describe(cfg, name, precision, OPSET, height, width, quant)
    check = backend.check(path)
    artifact = backend.compile(path, meta, work / name)
    scopes = node_scopes(onnx.load(str(path)))
    perf = backend.benchmark(artifact, runs, warmup, threads, 10, scopes)
    got = [backend.load(artifact, threads)(x.numpy())]
    agreement = compare(got, run_torch(reference_graph(graph), [x]),
                        {o.name: o.agreement_step for o in meta.outputs}, precision != "float32")
    int_convs, convs = check.conv_summary()
    return {**{k: perf[k] for k in ("median_ms", "p90_ms", "peak_rss_mib", "runs", "warmup",
                                    "threads", "top_layers")},
            "export_s": export_s, "int8_convs": int_convs, "convs": convs,
            "fallbacks": len(check.fallbacks), "check": check.to_json(),
            "agreement_vs_pytorch": agreement.to_json()}


def inductor_figures(cfg, q, x, height, width, work, runs, warmup, threads) -> dict:
    """The int8 graph through the ``inductor`` backend: lowered, AOTInductor-compiled, timed
    in a fresh process; convs counted in the generated code; agreement with the int8 graph."""
    from stereoq.deploy.backends.inductor import lower_module, save_source
    from stereoq.quant.prepare import export_program

    backend = get_backend("inductor")
    module = export_program(q, cfg.model.num_candidates, cfg.model.size_multiple).module()
    program, lowering, meta = lower_module(cfg, "int_infer", module, height, width)
    source = save_source(work / "int8_inductor.pt2", program, lowering, meta)
    artifact = backend.compile(source, meta, work / "inductor")
    summary = json.loads((artifact / "lowering.json").read_text(encoding="utf-8"))
    perf = backend.benchmark(artifact, runs, warmup, threads, 10)
    got = [backend.load(artifact, threads)(x.numpy())]
    agreement = compare(got, run_torch(reference_graph(q), [x]),
                        {o.name: o.agreement_step for o in meta.outputs}, True)
    return {**{k: perf[k] for k in ("median_ms", "p90_ms", "peak_rss_mib", "runs", "warmup",
                                    "threads", "top_layers")},
            "compile_s": summary["compile_s"], "int8_convs": summary["generated_int8_convs"],
            "convs": summary["generated_convs"], "lowering": summary,
            "agreement_vs_pytorch": agreement.to_json()}


def work_dir(args) -> Path:
    if args.keep is not None:
        return args.keep
    return Path(tempfile.mkdtemp(prefix="bench-deploy-inductor-"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="stereonet_sceneflow")
    parser.add_argument("--checkpoint", type=Path, default=None, help="float best.pt")
    parser.add_argument("--height", type=int, default=544)
    parser.add_argument("--width", type=int, default=960)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--eager-runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--calib-frames", type=int, default=2)
    parser.add_argument("--inductor", action="store_true",
                        help="also build and time the int8 graph with the inductor backend")
    parser.add_argument("--json", type=Path, default=Path("runs/bench/bench_deploy.json"))
    parser.add_argument("--keep", type=Path, default=None, help="keep the ONNX files and "
                        "artifacts in this folder (default: a temporary one)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    if args.checkpoint is not None:
        from stereoq.stages import get_stage

        model = get_stage(cfg, "float").model(args.checkpoint)
    model.eval()
    frames = calibration_frames(cfg, args.calib_frames + 1, args.height, args.width)
    x = frames.pop()
    results: dict[str, dict] = {}
    results["float eager (PyTorch)"] = time_torch(
        DeployGraph(model).eval(), x, args.eager_runs, 1
    )
    print("float eager", results["float eager (PyTorch)"]["median_ms"], flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        results["float ONNX Runtime"] = ort_figures(
            cfg, DeployGraph(model).eval(), x, "float", args.height, args.width, work,
            args.runs, args.warmup, args.threads)
        print("ort float", results["float ONNX Runtime"]["median_ms"], flush=True)
        q = int8_graph(cfg, model, frames)
        results["int8 ONNX Runtime"] = ort_figures(
            cfg, q, x, "int8", args.height, args.width, work, args.runs, args.warmup,
            args.threads)
        print("ort int8", results["int8 ONNX Runtime"]["median_ms"], flush=True)
    failures: dict[str, str] = {}
    if args.inductor:
        try:
            results["int8 AOTInductor (inductor backend)"] = inductor_figures(
                cfg, q, x, args.height, args.width, work_dir(args), args.runs, args.warmup,
                args.threads)
            print("inductor int8", results["int8 AOTInductor (inductor backend)"]["median_ms"],
                  flush=True)
        except Exception as err:  # report the backend's failure next to the figures
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            failures["int8 AOTInductor (inductor backend)"] = (
                f"{type(err).__name__}: {first[:200]}")
    base = results["float ONNX Runtime"]["median_ms"]
    rows = [
        (name, r["median_ms"], r["p90_ms"], 1000 / r["median_ms"], base / r["median_ms"],
         f"{r['int8_convs']}/{r['convs']}" if "convs" in r else "", r.get("peak_rss_mib"))
        for name, r in results.items()
    ]
    print_table(
        f"{cfg.name} deployed graph at {args.height}x{args.width}, {args.threads} threads, "
        f"batch 1",
        ["model", "median ms", "p90 ms", "FPS", "x vs ORT float", "int8 convs",
         "peak MiB"],
        rows,
    )
    for name, why in failures.items():
        print(f"{name}: failed: {why}")
    agr = results["int8 ONNX Runtime"]["agreement_vs_pytorch"]
    print(f"int8 ORT vs PyTorch's integer model (runtime_eval): {agr['within_pct']} % within "
          f"one step, max {agr['max_abs']} (normalised)"
          f"{'' if args.checkpoint else ' (random weights)'}")
    write_json(args.json, {"config": cfg.name, "height": args.height, "width": args.width,
                           "threads": args.threads, "checkpoint": str(args.checkpoint),
                           "results": results, "failures": failures})
    print(f"saved {args.json}")


if __name__ == "__main__":
    main()
