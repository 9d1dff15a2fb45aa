"""Quantization latency benchmark: float eager, float torch.compile, int8 (ONNX Runtime and
torch.compile of the converted PT2E graph), at 544x960 and 256x512, batch 1, in one process.

The int8 model is the project's: the configured StereoNet, BN folded, quantized by
``stereoq.quant`` (ORT-convention Q/DQ, int16 disparity path), calibrated on a few synthetic
frames, converted; ONNX export through ``stereoq.deploy.onnx_export.to_onnx``. Latency does not
depend on the weights, so a float checkpoint is optional (seeded random weights otherwise).
The deployed graph is timed (image pair -> (1/2 disparity, offset)); post-processing is not.
Medians of ``--runs`` (the machine may be shared; p90 is printed too).

    python bench/bench_quant.py                                    # reference model
    python bench/bench_quant.py --config stereonet_synthetic --sizes 256x512
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
from timing import time_torch  # bench/timing.py, beside this script

from stereoq.cli.common import config_argument
from stereoq.cli.output import print_table, write_json
from stereoq.models.build import build_model
from stereoq.models.stereonet import DeployGraph
from stereoq.settings import load_config


def frames(cfg, count: int, height: int, width: int) -> list[torch.Tensor]:
    """Synthetic pairs at the benchmark size (calibration and timing input)."""
    from stereoq.data import build_dataset

    synthetic = cfg.data.synthetic.model_copy(update={"height": height, "width": width})
    data = cfg.data.model_copy(update={"source": "synthetic", "synthetic": synthetic})
    dataset = build_dataset(data, "val", crop=False)
    return [torch.cat([dataset[i]["left"], dataset[i]["right"]], 0)[None] for i in range(count)]


def int8_graph(cfg, model, calib: list[torch.Tensor]) -> torch.nn.Module:
    from stereoq.quant.prepare import LastTwo, calibrate, convert, prepare
    from stereoq.quant.recipes import calibration_recipe

    observed = prepare(model, calibration_recipe(cfg))
    calibrate(observed, calib)
    return LastTwo(convert(observed)).eval()


def compiled(module: torch.nn.Module, x: torch.Tensor, freezing: bool = True):
    """torch.compile (inductor); returns (function, compile seconds)."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = freezing
    torch._dynamo.reset()
    start = time.perf_counter()
    with torch.no_grad():
        fn = torch.compile(module)
        fn(x)
    return fn, time.perf_counter() - start


def compiled_int8(cfg, q: torch.nn.Module, x: torch.Tensor) -> tuple[object, dict]:
    """The int8 graph as the ``inductor`` backend builds it: exported, lowered by
    ``stereoq.quant.lowering`` (16-bit Q/DQ as exact float arithmetic, weights of convs that
    have no int8 lowering folded), compiled with freezing so inductor's x86 passes turn the
    8-bit Q/DQ convs into oneDNN qconv. Returns (function, facts): compile seconds, int8 convs
    counted in inductor's generated code, agreement with the un-lowered int8 graph."""
    import torch._inductor.config as inductor_config
    from torch._inductor.utils import run_and_get_code

    from stereoq.deploy.metadata import OUTPUT_NAMES
    from stereoq.deploy.onnx_export import compare, reference_graph, run_torch
    from stereoq.quant.lowering import lower_for_inductor, output_quant
    from stereoq.quant.prepare import export_program

    start = time.perf_counter()
    module = export_program(q, cfg.model.num_candidates, cfg.model.size_multiple).module()
    steps = {name: (scale * 2 ** (bits - 8) if found else None)
             for name, found in zip(OUTPUT_NAMES, output_quant(module), strict=True)
             for scale, bits in [found or (0.0, 8)]}
    lowered, report = lower_for_inductor(module)
    inductor_config.freezing = True
    torch._dynamo.reset()
    with torch.no_grad():
        fn = torch.compile(lowered)
        out, code = run_and_get_code(fn, x)
    secs = time.perf_counter() - start
    text = "\n".join(code)
    qconv = text.count("torch.ops.onednn.qconv_pointwise") + text.count(
        "torch.ops.onednn.qconv2d_pointwise")
    fconv = text.count("torch.ops.mkldnn._convolution_pointwise.") + text.count(
        "extern_kernels.convolution(")
    reference = run_torch(reference_graph(q), [x])
    agreement = compare([tuple(t.numpy() for t in out)], reference, steps, True)
    facts = {"compile_s": secs, "int8_convs_generated": qconv, "float_convs_generated": fconv,
             "lowering": report.to_json(), "agreement_vs_int8_graph": agreement.to_json()}
    return fn, facts


def ort_session(module: torch.nn.Module, x: torch.Tensor, path: Path, threads: int):
    """Export to ONNX, open an ORT session; returns (run function, fused op counts)."""
    import onnx
    import onnxruntime as ort

    from stereoq.deploy.onnx_export import to_onnx

    to_onnx(module, x, path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    optimized = path.with_suffix(".opt.onnx")
    options.optimized_model_filepath = str(optimized)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    ops = Counter(n.op_type for n in onnx.load(str(optimized)).graph.node)
    keep = ("QLinearConv", "Conv", "FusedConv", "QLinearAdd", "QLinearConcat", "QLinearMul",
            "Add", "Concat", "Mul", "Softmax", "Resize", "QuantizeLinear", "DequantizeLinear")
    return (lambda t: session.run(None, {name: t.numpy()})), {k: ops[k] for k in keep if ops[k]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="stereonet_sceneflow", type=config_argument)
    parser.add_argument("--checkpoint", type=Path, default=None, help="float best.pt")
    parser.add_argument("--sizes", default="544x960,256x512")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--eager-runs", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--calib-frames", type=int, default=2)
    parser.add_argument("--skip", default="", help="comma list of rows to skip: "
                        "float_compile,int8_compile,ort_float,ort_int8")
    parser.add_argument("--json", type=Path, default=Path("runs/bench/bench_quant.json"))
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    if args.checkpoint is not None:
        from stereoq.stages import get_stage

        model = get_stage(cfg, "float").model(args.checkpoint)
    model.eval()
    float_graph = DeployGraph(model).eval()
    out: dict[str, dict] = {}
    for size in args.sizes.split(","):
        height, width = (int(v) for v in size.split("x"))
        pairs = frames(cfg, args.calib_frames + 1, height, width)
        x = pairs.pop()
        res: dict[str, dict] = {}
        res["float eager"] = time_torch(float_graph, x, args.eager_runs, 1)
        print(size, "float eager", round(res["float eager"]["median_ms"], 1), flush=True)
        if "float_compile" not in skip:
            fn, secs = compiled(float_graph, x)
            res["float torch.compile"] = {**time_torch(fn, x, args.runs, args.warmup),
                                          "compile_s": secs}
            print(size, "float compiled", round(res["float torch.compile"]["median_ms"], 1),
                  flush=True)
        q = int8_graph(cfg, model, pairs)
        with tempfile.TemporaryDirectory(prefix="bench-quant-") as tmp:
            if "ort_float" not in skip:
                run, ops = ort_session(float_graph, x, Path(tmp) / "float.onnx", args.threads)
                timing = time_torch(run, x, args.runs, args.warmup)
                res["float ONNX Runtime"] = {**timing, "ops": ops}
                print(size, "ort float", round(res["float ONNX Runtime"]["median_ms"], 1),
                      flush=True)
            if "ort_int8" not in skip:
                run, ops = ort_session(q, x, Path(tmp) / "int8.onnx", args.threads)
                timing = time_torch(run, x, args.runs, args.warmup)
                res["int8 ONNX Runtime"] = {**timing, "ops": ops}
                print(size, "ort int8", round(res["int8 ONNX Runtime"]["median_ms"], 1), ops,
                      flush=True)
        if "int8_compile" not in skip:
            fn, facts = compiled_int8(cfg, q, x)
            res["int8 torch.compile"] = {**time_torch(fn, x, args.runs, args.warmup), **facts}
            agr = facts["agreement_vs_int8_graph"]
            print(size, "int8 compiled", round(res["int8 torch.compile"]["median_ms"], 1),
                  f"{facts['int8_convs_generated']} qconv + {facts['float_convs_generated']} "
                  f"float conv; within one step: {agr['within_pct']}", flush=True)
        out[size] = res

    rows = []
    for size, res in out.items():
        base = res.get("float torch.compile", res["float eager"])["median_ms"]
        for name, r in res.items():
            ops = r.get("ops", {})
            int8 = ops.get("QLinearConv", 0)
            total = int8 + ops.get("Conv", 0) + ops.get("FusedConv", 0)
            fused = f"{int8}/{total}" if ops else ""
            rows.append((size, name, r["median_ms"], r["p90_ms"], base / r["median_ms"], fused))
    print_table(
        f"{cfg.name}: deployed graph, batch 1, {args.threads} threads "
        f"({'trained' if args.checkpoint else 'random'} weights)",
        ["size", "model", "median ms", "p90 ms", "x vs float compiled", "int8 convs (ORT)"],
        rows,
    )
    write_json(args.json, {"config": cfg.name, "threads": args.threads, "results": out})
    print(f"saved {args.json}")


if __name__ == "__main__":
    main()
