"""Deployment benchmark: every CPU runtime of the deployed graph side by side, in one run.

Rows (batch 1, the same float ONNX file for every float row and the peers):

- float: eager PyTorch, ONNX Runtime, OpenVINO with the f32 precision hint, OpenVINO in bf16
  (its own default on CPUs with BF16);
- the project's int8 model (``stereoq.quant``: ORT-convention Q/DQ, int16 disparity path) on
  ONNX Runtime and on OpenVINO (``stereoq.deploy.ov_graph``'s form; float layers in f32, and in
  bf16);
- peers quantizing the float file after training: ONNX Runtime's ``quantize_static`` (QDQ,
  per-channel int8 weights, uint8 activations) on ONNX Runtime, NNCF's post-training
  quantization on OpenVINO.

Latency comes from each backend's own measurement (a fresh process running the artifact's
``run_stereo.py``); int8 convs from each backend's ``check`` (for NNCF, OpenVINO's compiled
model). Latency does not depend on the weights: without ``--run`` the model has seeded random
weights and the project's int8 model is calibrated on a few synthetic frames. With ``--run DIR``
(a trained run of ``--config``) the float rows use its float checkpoint, the project's rows its
integer stage (``--stage``, default the QAT integer model), the peers calibrate on its training
frames, and every row gets its EPE on the run's validation frames, so speed and accuracy are one
table. The machine may be shared: medians and p90 are printed.

    python bench/bench_deploy.py                                     # reference model, 544x960
    python bench/bench_deploy.py --height 272 --width 480 --runs 3   # quick
    python bench/bench_deploy.py --config stereonet_synthetic --run runs/stereonet_synthetic
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from timing import time_torch  # bench/timing.py, beside this script

from stereoq.cli.common import config_argument
from stereoq.cli.output import print_table, write_json
from stereoq.deploy.backends import get_backend
from stereoq.deploy.metadata import DeployMetadata, describe
from stereoq.deploy.onnx_export import OPSET, compare, reference_graph, run_torch, to_onnx
from stereoq.deploy.ort_runner import postprocess
from stereoq.deploy.qdq_graph import QdqGraph, node_scopes
from stereoq.models.build import build_model
from stereoq.models.padding import fit
from stereoq.models.stereonet import DeployGraph
from stereoq.settings import load_config

PERF_KEYS = ("median_ms", "p90_ms", "peak_rss_mib", "runs", "warmup", "threads", "top_layers")


def frames_of(cfg, split: str, count: int | None, height: int, width: int) -> list[dict]:
    """Up to ``count`` frames of ``split`` fitted to ``height`` x ``width``: x (1, 6, H, W),
    the ground truth (1, 1, h, w) px and the frame's own size."""
    from stereoq.data import build_dataset

    dataset = build_dataset(cfg.data, split, crop=False)
    frames = []
    for i in range(len(dataset) if count is None else min(count, len(dataset))):
        item = dataset[i]
        x = torch.cat([item["left"], item["right"]], 0)[None]
        h, w = min(x.shape[-2], height), min(x.shape[-1], width)
        frames.append({"x": fit(x, height, width), "gt": item["disp"][None, ..., :h, :w],
                       "size": (h, w)})
    return frames


def synthetic_frames(cfg, count: int, height: int, width: int) -> list[torch.Tensor]:
    """Rendered synthetic pairs at the benchmark size (latency runs and calibration)."""
    data = cfg.data.model_copy(update={
        "source": "synthetic",
        "synthetic": cfg.data.synthetic.model_copy(update={"height": height, "width": width}),
    })
    return [f["x"] for f in frames_of(cfg.model_copy(update={"data": data}), "train", count,
                                      height, width)]


def int8_graph(cfg, model, frames):
    from stereoq.quant.prepare import LastTwo, calibrate, convert, prepare
    from stereoq.quant.recipes import calibration_recipe

    observed = prepare(model, calibration_recipe(cfg))
    calibrate(observed, frames)
    return LastTwo(convert(observed))


def metadata_of(cfg, path: Path, name: str, height: int, width: int) -> DeployMetadata:
    quant = QdqGraph(onnx.load(str(path))).output_quant()
    precision = "int8-qdq" if any(quant.values()) else "float32"
    return describe(cfg, name, precision, OPSET, height, width, quant)


def epe(run, frames: list[dict], maxdisp: float) -> dict[str, float]:
    """EPE (px, per image averaged) and D1 of a raw runner on ``frames``."""
    from stereoq.engine.metrics import DisparityMetrics

    metrics = DisparityMetrics(maxdisp)
    for f in frames:
        h, w = f["size"]
        disp = postprocess(*run(f["x"].numpy()), maxdisp)[..., :h, :w]
        metrics.update(torch.from_numpy(np.ascontiguousarray(disp)), f["gt"])
    found = metrics.compute()
    return {"epe": found["epe"], "d1": found["d1"], "frames": len(frames)}


def built(backend_name: str, artifact: Path, args, scopes: dict[str, str] | None,
          val: list[dict], maxdisp: float) -> dict[str, Any]:
    """A row whose artifact is built: what ``measure_rounds`` times and, with validation frames,
    its EPE."""
    row: dict[str, Any] = {"backend": backend_name, "artifact": str(artifact),
                           "scopes": scopes or {}}
    if val:
        row["accuracy"] = epe(get_backend(backend_name).load(artifact, args.threads), val,
                              maxdisp)
    return row


def measure_rounds(results: dict[str, dict], failures: dict[str, str], args) -> None:
    """Time every built row ``--rounds`` times, row after row, so that a load on a shared
    machine falls on all rows alike; median and p90 over all the rounds' runs."""
    times: dict[str, list[float]] = {name: [] for name, r in results.items() if "backend" in r}
    for round_ in range(args.rounds):
        for name in list(times):
            r = results[name]
            try:
                perf = get_backend(r["backend"]).benchmark(
                    Path(r["artifact"]), args.runs, args.warmup, args.threads, 10, r["scopes"])
            except Exception as err:  # the row's failure goes next to the figures
                failures[name] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
                del times[name], results[name]
                continue
            times[name] += perf["latency_ms"]
            r.update({k: perf[k] for k in PERF_KEYS if k not in ("median_ms", "p90_ms")})
            print(f"round {round_ + 1}: {name} {perf['median_ms']:.1f} ms", flush=True)
    for name, latency in times.items():
        r = results[name]
        r.pop("scopes")
        r.update(latency_ms=latency, median_ms=float(np.median(latency)),
                 p90_ms=float(np.percentile(latency, 90)), runs=len(latency))


def onnx_row(cfg, backend_name: str, path: Path, name: str, work: Path, args,
             val: list[dict], reference: tuple | None = None) -> dict[str, Any]:
    """A stage's (or a peer's) ONNX file through a backend: check, compile, measure;
    ``reference`` = (graph, x): agreement of one output pair with PyTorch's graph."""
    backend = get_backend(backend_name)
    meta = metadata_of(cfg, path, name, args.height, args.width)
    check = backend.check(path)
    artifact = backend.compile(path, meta, work / f"{name}_{backend_name}")
    row = built(backend_name, artifact, args, node_scopes(onnx.load(str(path))), val,
                cfg.model.maxdisp)
    int_convs, convs = check.conv_summary()
    row.update(int8_convs=int_convs, convs=convs, fallbacks=len(check.fallbacks),
               check=check.to_json())
    if reference is not None:
        graph, x = reference
        got = [backend.load(artifact, args.threads)(x.numpy())]
        row["agreement_vs_pytorch"] = compare(
            got, run_torch(reference_graph(graph), [x]),
            {o.name: o.agreement_step for o in meta.outputs}, meta.precision != "float32",
        ).to_json()
    return row


def ort_quantize_static(float_path: Path, frames: list[torch.Tensor], out: Path) -> Path:
    """ONNX Runtime's own post-training quantization of the float file (its recommended
    CPU setting: QDQ, per-channel int8 weights, uint8 activations)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self.todo = [{"input": f.numpy()} for f in frames]

        def get_next(self) -> dict | None:
            return self.todo.pop() if self.todo else None

    pre = out.with_name(out.stem + "_pre.onnx")
    quant_pre_process(str(float_path), str(pre))
    quantize_static(str(pre), str(out), Frames(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    return out


def nncf_row(cfg, float_path: Path, frames: list[torch.Tensor], work: Path, args,
             val: list[dict]) -> dict[str, Any]:
    """NNCF's post-training quantization (default preset) of the float file, on OpenVINO
    with float layers in f32 like the project's OpenVINO row."""
    import nncf
    import openvino as ov

    from stereoq.deploy.backends.openvino import (
        INTEGER_PRECISIONS,
        compile_for_cpu,
        runtime_layers,
        write_artifact,
    )

    start = time.perf_counter()
    model = nncf.quantize(ov.Core().read_model(str(float_path)),
                          nncf.Dataset([f.numpy() for f in frames]), subset_size=len(frames))
    quantize_s = time.perf_counter() - start
    precision = get_backend("openvino").inference_precision
    convs = [layer for layer in runtime_layers(compile_for_cpu(model, float_path, precision))
             if layer["type"] == "Convolution"]
    meta = metadata_of(cfg, float_path, "nncf_ptq", args.height, args.width)
    artifact = write_artifact(model, meta, work / "nncf_openvino", precision,
                              {"quantized_by": f"nncf {nncf.__version__}"})
    row = built("openvino", artifact, args, node_scopes(onnx.load(str(float_path))), val,
                cfg.model.maxdisp)
    row.update(int8_convs=sum(c["precision"] in INTEGER_PRECISIONS for c in convs),
               convs=len(convs), quantize_s=quantize_s)
    return row


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
    return {**{k: perf[k] for k in PERF_KEYS},
            "compile_s": summary["compile_s"], "int8_convs": summary["generated_int8_convs"],
            "convs": summary["generated_convs"], "lowering": summary,
            "agreement_vs_pytorch": agreement.to_json()}


def attempt(results: dict, failures: dict, name: str, fn, *args) -> None:
    """One row: its figures, or its failure next to the others'."""
    try:
        results[name] = fn(*args)
        print(name, "built", flush=True)
    except Exception as err:  # report the row's failure next to the figures
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        failures[name] = f"{type(err).__name__}: {first[:200]}"
        print(name, "failed:", failures[name], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="stereonet_sceneflow", type=config_argument)
    parser.add_argument("--run", type=Path, default=None,
                        help="a trained run of --config (its float checkpoint, integer stage, "
                        "training and validation frames; adds EPE to every row)")
    parser.add_argument("--stage", default="int_infer",
                        help="with --run: the integer stage whose export is the project's row")
    parser.add_argument("--checkpoint", type=Path, default=None, help="float best.pt")
    parser.add_argument("--height", type=int, default=None, help="default: 544, or with --run "
                        "the validation frames' size")
    parser.add_argument("--width", type=int, default=None, help="default: 960, or as --height")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per row and round")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds over all rows (interleaved: fair on a shared machine)")
    parser.add_argument("--eager-runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--calib-frames", type=int, default=8,
                        help="calibration frames of the project's model (without --run) and "
                        "of the peers")
    parser.add_argument("--val-frames", type=int, default=None,
                        help="with --run: validation frames scored (default all)")
    parser.add_argument("--no-peers", action="store_true", help="skip quantize_static and NNCF")
    parser.add_argument("--inductor", action="store_true",
                        help="also build and time the int8 graph with the inductor backend")
    parser.add_argument("--json", type=Path, default=Path("runs/bench/bench_deploy.json"))
    parser.add_argument("--keep", type=Path, default=None, help="keep the ONNX files and "
                        "artifacts in this folder (default: a temporary one)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    if args.run is not None:
        cfg = cfg.model_copy(update={"output_dir": args.run.parent, "name": args.run.name})
    if args.height is None or args.width is None:
        from stereoq.deploy.onnx_export import default_size

        args.height, args.width = default_size(cfg) if args.run else (544, 960)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    if args.checkpoint is not None or args.run is not None:
        from stereoq.stages import get_stage

        model = get_stage(cfg, "float").model(args.checkpoint)
    model.eval()
    h, w = args.height, args.width
    x = synthetic_frames(cfg, 1, h, w)[0]
    if args.run is not None:
        calib = [f["x"] for f in frames_of(cfg, "train", args.calib_frames, h, w)]
        val = frames_of(cfg, "val", args.val_frames, h, w)
    else:
        calib, val = synthetic_frames(cfg, args.calib_frames + 1, h, w)[1:], []
    results: dict[str, dict] = {}
    failures: dict[str, str] = {}
    float_graph = DeployGraph(model).eval()
    results["PyTorch float (eager)"] = time_torch(float_graph, x, args.eager_runs, 1)
    print("float eager", results["PyTorch float (eager)"]["median_ms"], flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        float_path = work / "float.onnx"
        to_onnx(float_graph, x, float_path)
        for backend, name in (("ort", "ONNX Runtime float"),
                              ("openvino", "OpenVINO float, f32 hint"),
                              ("openvino-bf16", "OpenVINO float, bf16 (its default here)")):
            attempt(results, failures, name, onnx_row, cfg, backend, float_path, "float", work,
                    args, val)
        if args.run is not None:
            source = get_backend("ort").stage_source(cfg, args.stage, h, w)
            int8_path, q = source.path, None
        else:
            q = int8_graph(cfg, model, calib)
            int8_path = work / "int8.onnx"
            to_onnx(q, x, int8_path)
        reference = (q, x) if q is not None else None
        for backend, name in (("ort", "ONNX Runtime int8 (project)"),
                              ("openvino", "OpenVINO int8 (project), f32 float layers"),
                              ("openvino-bf16",
                               "OpenVINO int8 (project), bf16 float layers, fused Adds")):
            attempt(results, failures, name, onnx_row, cfg, backend, int8_path, "int8", work,
                    args, val, reference)
        if not args.no_peers:
            attempt(results, failures, "ONNX Runtime int8 (ORT quantize_static)",
                    lambda: onnx_row(cfg, "ort", ort_quantize_static(
                        float_path, calib, work / "ort_qdq.onnx"), "ort_qdq", work, args, val))
            attempt(results, failures, "OpenVINO int8 (NNCF post-training)", nncf_row, cfg,
                    float_path, calib, work, args, val)
        measure_rounds(results, failures, args)
        if args.inductor and q is not None:
            attempt(results, failures, "int8 AOTInductor (inductor backend)", inductor_figures,
                    cfg, q, x, h, w, work, args.runs, args.warmup, args.threads)
    base = results.get("ONNX Runtime float", {}).get("median_ms")
    float_epe = results.get("ONNX Runtime float", {}).get("accuracy", {}).get("epe")
    rows = []
    for name, r in results.items():
        acc = r.get("accuracy")
        rows.append((
            name, r["median_ms"], r["p90_ms"], base / r["median_ms"] if base else "",
            f"{r['int8_convs']}/{r['convs']}" if "convs" in r else "",
            acc["epe"] if acc else "",
            f"{100 * (acc['epe'] / float_epe - 1):+.2f}" if acc and float_epe else "",
        ))
    print_table(
        f"{cfg.name} deployed graph at {h}x{w}, {args.threads} threads, batch 1"
        + (f", EPE on {len(val)} validation frames of {args.run}" if val else ", random weights"
           if args.run is None and args.checkpoint is None else ""),
        ["runtime", "median ms", "p90 ms", "x vs ORT float", "int8 convs", "EPE px",
         "EPE vs float %"],
        rows,
    )
    for name, why in failures.items():
        print(f"{name}: failed: {why}")
    write_json(args.json, {"config": cfg.name, "run": str(args.run), "height": h, "width": w,
                           "threads": args.threads, "checkpoint": str(args.checkpoint),
                           "results": results, "failures": failures})
    print(f"saved {args.json}")


if __name__ == "__main__":
    main()
