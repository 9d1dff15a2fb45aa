"""``stereoq compile``: the deployable artifact for a backend, with a performance report."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import Field, PositiveInt

from stereoq.cli.common import ConfigOpt, SetOpt, validate_options
from stereoq.cli.export import BackendOpt, DeployOptions, HeightOpt, StageOpt, WidthOpt, load_for
from stereoq.cli.output import console, print_table


class CompileOptions(DeployOptions):
    backend: str = "ort"
    runs: PositiveInt = 20
    warmup: int = Field(default=3, ge=0)
    threads: PositiveInt | None = None
    validate_: bool = Field(default=False, alias="validate")
    max_samples: PositiveInt | None = None


def compile(  # noqa: A001  (the command's name)
    stage: StageOpt = "int_infer",
    backend: BackendOpt = "ort",
    height: HeightOpt = None,
    width: WidthOpt = None,
    runs: Annotated[int, typer.Option(help="Timed runs (after warm-up).")] = 20,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up runs.")] = 3,
    threads: Annotated[
        int | None, typer.Option(help="Intra-op threads. Default: the runtime's (all cores).")
    ] = None,
    validate: Annotated[
        bool,
        typer.Option(help="Run the artifact over the validation set next to the PyTorch model."),
    ] = False,
    max_samples: Annotated[
        int | None, typer.Option(help="Validate on the first N samples only.")
    ] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Build the deployable artifact for a backend and measure its speed and memory.

    Writes RUN_DIR/deploy/BACKEND/ (model, metadata.json, run_stereo.py, report.json) and
    reports latency (median, p90), FPS, peak memory and the 10 costliest layers.
    """
    opts = validate_options(
        CompileOptions, stage=stage, backend=backend, height=height, width=width, runs=runs,
        warmup=warmup, threads=threads, validate=validate, max_samples=max_samples,
        config=config, sets=sets or [],
    )
    from stereoq.deploy.backends import get_backend
    from stereoq.deploy.compile import compile_stage
    from stereoq.deploy.compile import validate as validate_artifact

    backend_ = get_backend(opts.backend)
    cfg, h, w = load_for(opts)
    with console.status(f"compiling {opts.stage} for {opts.backend} at {h}x{w} ..."):
        result = compile_stage(
            cfg, opts.stage, opts.backend, h, w, opts.runs, opts.warmup, opts.threads
        )
    with result:  # the new artifact replaces the old one only at commit, report included
        perf = result.performance
        if result.export is not None:
            console.print(f"exported {result.export.path}: {result.export.agreement.summary()}",
                          highlight=False)
        print_table(
            f"{opts.stage} on {opts.backend} at {h}x{w}: {result.artifact_dir}",
            ["latency median (ms)", "p90 (ms)", "FPS", "peak memory (MiB)", "runs", "threads"],
            [(perf["median_ms"], perf["p90_ms"], perf["fps"], perf["peak_rss_mib"],
              f"{perf['runs']} after {perf['warmup']} warm-up", perf["threads"])],
        )
        console.print(f"peak memory: {perf['memory_method']}", highlight=False)
        print_table(
            f"top 10 {'layers (ONNX Runtime' if opts.backend == 'ort' else 'ops (torch'}"
            " profiler, mean per run)",
            ["node", "op", "PyTorch module", "ms", "share %"],
            [(r["node"], r["op"], r["scope"], r["ms"], r["share_pct"])
             for r in perf["top_layers"]],
        )
        if opts.validate_:
            from stereoq.cli.progress import RichReporter

            result.validation = validate_artifact(
                cfg, backend_, result.current_dir, result.metadata, opts.max_samples,
                RichReporter(),
            )
            print_validation(result.validation)
        path = result.commit(result.to_json())
    console.print(f"saved {path}", highlight=False)


def print_validation(v: dict) -> None:
    dep, ref = v["deployed"], v["reference"]
    keys = ("epe", "epe_pixel", "d1", "bad1", "bad3")
    print_table(
        f"validation ({v['samples']} samples): deployed artifact vs PyTorch {v['stage']}",
        ["model", "EPE", "EPE px-avg", "D1 %", "bad-1 %", "bad-3 %"],
        [("deployed", *(dep[k] for k in keys)), (f"PyTorch {v['stage']}", *(ref[k] for k in keys))],
    )
    agr = v["agreement"]
    rows = [
        (name, o["step"], o["within_step_pct"], o["max_abs"])
        for name, o in agr["outputs"].items()
    ]
    rows.append(("disparity (px)", agr["disparity_step_px"], agr["disparity_within_step_pct"],
                 agr["disparity_max_abs_px"]))
    print_table("pixel agreement", ["output", "one step", "% within one step", "max |diff|"],
                rows)


def register(app: typer.Typer) -> None:
    app.command()(compile)
