"""``stereoq compile``: the deployable artifact for a backend, with a performance report."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import Field, PositiveInt

from stereoq.cli.common import ConfigOpt, SetOpt, validate_options
from stereoq.cli.export import (
    BackendOpt,
    DeployOptions,
    HeightOpt,
    MinAgreementOpt,
    StageOpt,
    StrictOpt,
    WidthOpt,
    load_for,
    print_acceptance,
)
from stereoq.cli.output import console, print_table
from stereoq.cli.stages import LAST_STAGE


class CompileOptions(DeployOptions):
    backend: str = "ort"
    runs: PositiveInt = 20
    warmup: int = Field(default=3, ge=0)
    threads: PositiveInt | None = None
    validate_: bool = Field(default=False, alias="validate")
    max_samples: PositiveInt | None = None
    strict: bool = False
    min_agreement: float = Field(default=99.9, gt=0.0, le=100.0)


def compile(  # noqa: A001  (the command's name)
    stage: StageOpt = LAST_STAGE,
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
    strict: StrictOpt = False,
    min_agreement: MinAgreementOpt = 99.9,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Build the deployable artifact for a backend and measure its speed and memory.

    Writes RUN_DIR/deploy/BACKEND/ (model, metadata.json, run_stereo.py, report.json) and
    reports latency (median, p90), FPS, peak memory and the 10 costliest layers. With
    --validate, runs the artifact over the validation set beside the PyTorch model and exits 1
    unless it matches what a user sees: 99 % of disparity pixels within 1 px, the same EPE and
    D1 (openvino, which rounds its own way: 90 % and D1 within 1.5 points); bit-level agreement
    is reported, and required with --strict.
    """
    opts = validate_options(
        CompileOptions, stage=stage, backend=backend, height=height, width=width, runs=runs,
        warmup=warmup, threads=threads, validate=validate, max_samples=max_samples,
        strict=strict, min_agreement=min_agreement, config=config, sets=sets or [],
    )
    from stereoq.deploy.backends import get_backend
    from stereoq.deploy.compile import compile_stage
    from stereoq.deploy.compile import validate as validate_artifact

    backend_ = get_backend(opts.backend)
    cfg, h, w = load_for(opts)
    with console.status(f"compiling {opts.stage} for {opts.backend} at {h}x{w} ..."):
        result = compile_stage(
            cfg, opts.stage, opts.backend, h, w, opts.runs, opts.warmup, opts.threads,
            strict=opts.strict,
        )
    with result:  # the new artifact replaces the old one only at commit, report included
        perf = result.performance
        if result.export is not None:
            console.print(f"exported {result.export.path}: {result.export.disparity.summary()}",
                          highlight=False)
        print_table(
            f"{opts.stage} on {opts.backend} at {h}x{w}: {result.artifact_dir}",
            ["latency median (ms)", "p90 (ms)", "FPS", "peak memory (MiB)", "runs", "threads"],
            [(perf["median_ms"], perf["p90_ms"], perf["fps"], perf["peak_rss_mib"],
              f"{perf['runs']} after {perf['warmup']} warm-up", perf["threads"])],
        )
        console.print(f"peak memory: {perf['memory_method']}", highlight=False)
        print_table(
            f"top 10 {backend_.profiler}, mean per run",
            ["node", "op", "PyTorch module", "ms", "share %"],
            [(r["node"], r["op"], r["scope"], r["ms"], r["share_pct"])
             for r in perf["top_layers"]],
        )
        if opts.validate_:
            from stereoq.cli.progress import RichReporter

            result.validation = validate_artifact(
                cfg, backend_, result.current_dir, result.metadata, opts.max_samples,
                RichReporter(), strict=opts.strict, min_agreement=opts.min_agreement,
            )
            print_validation(result.validation)
            if not result.validation["ok"]:
                from stereoq.errors import StereoqError

                # leaving the block discards the staged artifact: the old one stays in place
                raise StereoqError(
                    f"the {opts.backend} artifact departs from PyTorch's {opts.stage} model on "
                    f"{result.validation['samples']} validation frames, not installed: "
                    + "; ".join(result.validation["problems"]) + result.saturation_hint()
                )
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
    print_table("bit-level agreement" + (" (--strict)" if v["strict"] else " (diagnostic)"),
                ["output", "one step", "% within one step", "max |diff|"], rows)
    print_acceptance(v["acceptance"], f"deployed artifact vs PyTorch {v['stage']}")


def register(app: typer.Typer) -> None:
    app.command()(compile)
