"""``stereoq predict``: validation metrics (EPE, D1, bad-k) of a stage, optionally vs SGBM."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from stereoq.cli.common import ConfigOpt, SetOpt, resolve_config, validate_options
from stereoq.cli.output import console, print_table, write_json
from stereoq.cli.shipped import ShippedName, WeightsOpt, check_weights
from stereoq.cli.stages import FIRST_STAGE, StageName, check_checkpoint, stage_help
from stereoq.errors import StereoqError


class PredictOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stage: StageName | Literal["all"]
    config: str | None = None
    sets: list[str] = Field(default_factory=list)
    checkpoint: Path | None = None
    weights: ShippedName | None = None
    baseline: Literal["sgbm"] | None = None
    batch_size: PositiveInt = 1
    json_path: Path | None = None
    sensitivity: PositiveInt | None = None
    refine: bool = False


def predict(
    stage: Annotated[
        str, typer.Option(help=stage_help("Stage whose model to evaluate", ("all (one row each)",)))
    ] = FIRST_STAGE,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help=f"{FIRST_STAGE} checkpoint to evaluate. Default: "
                     f"RUN_DIR/{FIRST_STAGE}/best.pt."),
    ] = None,
    weights: WeightsOpt = None,
    baseline: Annotated[
        str | None, typer.Option(help="Also evaluate a classical method: sgbm (OpenCV StereoSGBM).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Validation batch size.")] = 1,
    refine: Annotated[
        bool,
        typer.Option(help="Also score each model with its disparity refined photometrically, as "
                     "stereoq infer does by default (a second row, NAME refined; config section "
                     "refine)."),
    ] = False,
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Where to save the metrics. Default: RUN_DIR/predict.json "
                     "(RUN_DIR/predict-NAME.json with --weights NAME)."),
    ] = None,
    sensitivity: Annotated[
        int | None,
        typer.Option(
            help="Instead of the metrics: per-layer sensitivity of a fake-quantized stage "
            "(calibration, qat) on the first N validation frames: EPE change with only each "
            "layer quantized and with only it left float, SQNR of each layer's output; a "
            "ranked table, RUN_DIR/STAGE/sensitivity.json and sensitivity.png.",
            metavar="N",
        ),
    ] = None,
) -> None:
    """EPE, D1 and bad-1/2/3 on the full-size validation set, as a table and JSON.

    Quantized stages are evaluated as the deployment runtime computes them (8-bit convolutions
    as integer kernels; see stereoq.quant.runtime_eval). --weights NAME evaluates a shipped
    float model on the config's validation set, as the float stage would be.
    """
    opts = validate_options(
        PredictOptions, stage=stage, config=config, sets=sets or [], checkpoint=checkpoint,
        weights=weights, baseline=baseline, batch_size=batch_size, json_path=json_path,
        sensitivity=sensitivity, refine=refine,
    )
    if opts.stage != "all":
        check_checkpoint(opts.stage, opts.checkpoint)
    check_weights(opts.weights, opts.stage, opts.checkpoint, opts.sets)
    if opts.weights is not None and opts.sensitivity is not None:
        raise StereoqError("option --sensitivity: not with --weights (it reads a "
                           "fake-quantized stage)", exit_code=2)
    if opts.refine and opts.sensitivity is not None:
        raise StereoqError("option --refine: not with --sensitivity (it ranks the network's "
                           "layers)", exit_code=2)
    from stereoq.cli.progress import RichReporter
    from stereoq.engine.evaluate import evaluate, evaluate_sgbm
    from stereoq.settings import load_config
    from stereoq.stages import get_stage

    cfg = load_config(resolve_config(opts.config), sets=opts.sets)
    reporter = RichReporter()
    if opts.sensitivity is not None:
        print_sensitivity(layer_sensitivity(cfg, opts, reporter))
        return
    json_name = "predict.json"
    if opts.weights is not None:
        cfg, results = evaluate_shipped(cfg, opts, reporter)
        json_name = f"predict-{opts.weights}.json"
    elif opts.stage == "all":
        results = evaluate_all(cfg, opts, reporter)
    else:
        stage = get_stage(cfg, opts.stage)
        results = with_refined(
            opts.stage, cfg, opts.refine,
            lambda then, label: evaluate(cfg, stage, opts.checkpoint, reporter, opts.batch_size,
                                         then, label),
        )
    if opts.baseline == "sgbm":
        results["sgbm"] = evaluate_sgbm(cfg, reporter)
    print_results(cfg.name, results)
    path = write_json(opts.json_path or cfg.run_dir / json_name, results_json(cfg, results))
    console.print(f"saved {path}", highlight=False)


SENSITIVITY_ROWS = 20


def layer_sensitivity(cfg: Any, opts: PredictOptions, reporter: Any) -> dict[str, Any]:
    """``--sensitivity N``: the stage's per-layer report (fake-quantized stages only)."""
    from stereoq.stages import get_stage, stage_classes
    from stereoq.stages.quantized import FakeQuantStage

    stage = get_stage(cfg, opts.stage) if opts.stage != "all" else None
    if not isinstance(stage, FakeQuantStage):
        takers = [s.name for s in stage_classes() if issubclass(s, FakeQuantStage)]
        raise StereoqError(f"option --sensitivity: give --stage {' or '.join(takers)} (a "
                           "fake-quantized model, whose quantizers switch on and off)", 2)
    return stage.sensitivity(opts.sensitivity, reporter)


def print_sensitivity(report: dict[str, Any]) -> None:
    """The ranked table (top ``SENSITIVITY_ROWS``), the reference EPEs and where it is saved."""
    rows = sorted(report["layers"], key=lambda r: r["rank"])
    shown = rows[:SENSITIVITY_ROWS]
    print_table(
        f"{report['stage']}: layers ranked by EPE recovered when left float "
        f"({report['frames']} validation frame(s) {report['height']}x{report['width']}"
        + (f"; top {len(shown)} of {len(rows)}, all in the JSON)" if len(rows) > len(shown)
           else ")"),
        ["rank", "layer", "kind", "EPE +px only it quantized", "EPE -px it left float",
         "SQNR dB", "MMACs if raised"],
        [(r["rank"], r["layer"], r["kind"], r["delta_only_px"], r["recovered_px"], r["sqnr_db"],
          r["cost_macs"] / 1e6) for r in shown],
    )
    console.print(
        f"float EPE {report['float_epe_px']:.4f} px, quantized {report['quantized_epe_px']:.4f} px "
        f"(+{report['quantized_epe_px'] - report['float_epe_px']:.4f}) on the fake-quant graph; "
        f"{len(rows)} layers in {report['seconds']:.0f} s",
        highlight=False,
    )
    console.print(f"saved {report['json']} and {report['chart']}", highlight=False)


def evaluate_shipped(
    cfg: Any, opts: PredictOptions, reporter: Any
) -> tuple[Any, dict[str, dict[str, Any]]]:
    """--weights NAME: the config with the shipped model's model section and input
    normalisation, and the model's metrics (one row named NAME), on the float stage's device."""
    from stereoq import weights
    from stereoq.engine.evaluate import evaluate_model
    from stereoq.stages import get_stage

    name = str(opts.weights)
    cfg = weights.configure(cfg, name)
    device = get_stage(cfg, FIRST_STAGE).eval_device()
    model = weights.eval_model(name)
    return cfg, with_refined(
        name, cfg, opts.refine,
        lambda then, label: evaluate_model(cfg, model, device, reporter, opts.batch_size, label,
                                           then),
    )


def evaluate_all(cfg: Any, opts: PredictOptions, reporter: Any) -> dict[str, dict[str, Any]]:
    """Every stage whose model exists, in pipeline order; missing ones are named and skipped."""
    from stereoq.engine.evaluate import evaluate
    from stereoq.stages import get_stage, stage_names

    results: dict[str, dict[str, Any]] = {}
    for name in stage_names():
        stage = get_stage(cfg, name)
        checkpoint = opts.checkpoint if stage.takes_checkpoint else None
        try:
            results.update(with_refined(
                name, cfg, opts.refine,
                lambda then, label, stage=stage, checkpoint=checkpoint: evaluate(
                    cfg, stage, checkpoint, reporter, opts.batch_size, then, label),
            ))
        except StereoqError as err:
            console.print(f"skipped {name}: {err}", highlight=False)
    if not results:
        raise StereoqError(f"no stage has a model yet: run `stereoq train --stage {FIRST_STAGE}`")
    return results


REFINED = " refined"
"""Suffix of the row of a model whose disparity ``stereoq.infer.refine`` refined."""


def with_refined(
    name: str, cfg: Any, refine: bool, score: Callable[[Any, str], dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """``{name: score(None, label)}``, plus with ``refine`` the row ``name + REFINED`` scored
    with the model followed by ``stereoq.infer.refine`` (``score(wrapper, label)``)."""
    results = {name: score(None, f"{name} val")}
    if refine:
        from stereoq.infer.refine import refined

        results[name + REFINED] = score(
            lambda model: refined(model, cfg.data, cfg.refine), f"{name}{REFINED} val")
    return results


def print_results(name: str, results: dict[str, dict[str, Any]]) -> None:
    """One row per model (stage or baseline); a change-vs-the-first-stage column (float) when
    it is a row."""
    from stereoq.cli.progress import METRIC_COLUMNS, METRIC_KEYS
    from stereoq.engine.metrics import AVERAGING

    ref = results.get(FIRST_STAGE, {}).get("epe")
    compare = ref is not None and len(results) > 1
    rows = []
    for model, m in results.items():
        row = [model, *(m[k] for k in METRIC_KEYS), m["images"]]
        if compare:
            row.append("" if model == FIRST_STAGE else f"{100.0 * (m['epe'] - ref) / ref:+.1f} %")
        rows.append(row)
    columns = [*METRIC_COLUMNS, "images", *([f"EPE vs {FIRST_STAGE}"] if compare else [])]
    images = next(iter(results.values()))["images"]
    print_table(f"{name}: validation set, {images} full-size images", ["model", *columns], rows)
    console.print(AVERAGING, highlight=False)
    first = next(iter(results.values()))
    if first.get("benchmark"):
        from stereoq.engine.metrics import BENCHMARK_AVERAGING, REGIONS

        keys = [k for k in first if k.endswith(tuple(f"-{r}" for r in REGIONS))]
        units = [" px" if k.startswith("avgerr") else " %" for k in keys]
        print_table(
            f"{name}: {first['benchmark']} metrics, {images} images",
            ["model", *(k + u for k, u in zip(keys, units, strict=True))],
            [[model, *(m.get(k) for k in keys)] for model, m in results.items()],
        )
        console.print(BENCHMARK_AVERAGING, highlight=False)


def results_json(cfg: Any, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from stereoq.engine.metrics import AVERAGING

    # A metric over no valid pixel is NaN in memory, null in the file.
    finite = {
        model: {k: None if isinstance(v, float) and not math.isfinite(v) else v
                for k, v in m.items()}
        for model, m in results.items()
    }
    return {"config": cfg.name, "maxdisp": cfg.model.maxdisp, "averaging": AVERAGING,
            "results": finite}


def register(app: typer.Typer) -> None:
    app.command()(predict)
