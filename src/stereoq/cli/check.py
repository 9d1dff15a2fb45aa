"""``stereoq check``: does the integer model run in integer kernels on the backend?"""

from __future__ import annotations

from typing import Annotated

import typer

from stereoq.cli.common import ConfigOpt, SetOpt, validate_options
from stereoq.cli.export import BackendOpt, DeployOptions, HeightOpt, StageOpt, WidthOpt, load_for
from stereoq.cli.output import console, print_table, write_json
from stereoq.cli.stages import LAST_STAGE

MAX_NODES = 30


class CheckOptions(DeployOptions):
    backend: str = "ort"
    strict: bool = False


def check(
    stage: StageOpt = LAST_STAGE,
    backend: BackendOpt = "ort",
    strict: Annotated[
        bool, typer.Option(help="Exit with status 1 if any op computes in float.")
    ] = False,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    height: HeightOpt = None,
    width: WidthOpt = None,
) -> None:
    """Which precision each op runs in on the backend, and why any falls back to float.

    Read from the graph the runtime itself optimized (after its fusions), per op type: count,
    precision, and the reason for every float fallback.
    """
    opts = validate_options(
        CheckOptions, stage=stage, backend=backend, strict=strict, config=config,
        sets=sets or [], height=height, width=width,
    )
    from stereoq.deploy.backends import get_backend
    from stereoq.deploy.check import FLOAT, FLOAT_MODEL
    from stereoq.deploy.compile import check_stage

    get_backend(opts.backend)  # an unknown backend fails before any work
    cfg, h, w = load_for(opts)
    with console.status(f"checking {opts.stage} on {opts.backend} ..."):
        report = check_stage(cfg, opts.stage, opts.backend, h, w)
    print_table(
        f"{opts.stage} on {opts.backend} ({report.model})",
        ["op type", "count", "runs in", "why (float fallbacks)"],
        report.rows(),
    )
    quantized = any(n.precision != FLOAT or n.reason != FLOAT_MODEL for n in report.fallbacks)
    if report.fallbacks and quantized:
        shown = report.fallbacks[:MAX_NODES]
        more = len(report.fallbacks) - len(shown)
        print_table(
            "float fallbacks" + (f" (first {MAX_NODES}; all in the JSON)" if more else ""),
            ["node", "op type", "runs in", "PyTorch module", "why"],
            [(n.name, n.op_type, n.precision, n.scope, n.reason) for n in shown],
        )
    if report.overrides:
        print_table(
            "precision overrides (stages.calibration.precision and the accuracy budget)",
            ["layer", "precision"],
            sorted(report.overrides.items()),
        )
    int_convs, convs = report.conv_summary()
    console.print(
        f"{int_convs} of {convs} convolutions run in int8; "
        f"{len(report.fallbacks)} compute op(s) fall back to float",
        highlight=False,
    )
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    path = write_json(
        cfg.run_dir / "deploy" / f"check_{opts.backend}_{opts.stage}.json", report.to_json()
    )
    console.print(f"saved {path}", highlight=False)
    if opts.strict and report.fallbacks:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(check)
