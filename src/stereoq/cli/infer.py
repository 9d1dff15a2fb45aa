"""``stereoq infer``: disparity, depth, pictures and point clouds from rectified stereo pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ConfigDict, Field

from stereoq.cli.common import ConfigOpt, SetOpt, resolve_config, validate_options
from stereoq.cli.export import BackendOpt
from stereoq.cli.output import console, print_note, print_table, write_json
from stereoq.cli.shipped import ShippedName, WeightsOpt, check_weights
from stereoq.cli.stages import FIRST_STAGE, check_checkpoint, stage_help, stage_or
from stereoq.errors import StereoqError
from stereoq.infer import DEPLOYED

InferStage = stage_or(DEPLOYED)

MODEL_INPUT_KEYS = {"imgl": "imgl", "imgr": "imgr", "baseline": "baseline", "f": "f"}


class InferOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    config: str | None = None
    sets: list[str] = Field(default_factory=list)
    imgl: str = Field(min_length=1)
    imgr: str | None = None
    baseline: float = Field(gt=0, allow_inf_nan=False, description="metres")
    f: float = Field(gt=0, allow_inf_nan=False, description="pixels")
    cx: float | None = Field(default=None, allow_inf_nan=False)
    cy: float | None = Field(default=None, allow_inf_nan=False)
    doffs: float = Field(default=0.0, allow_inf_nan=False, description="pixels")
    save_path: Path
    stage: InferStage = FIRST_STAGE
    max_size: int | None = Field(default=None, ge=16, le=8192)
    checkpoint: Path | None = None
    weights: ShippedName | None = None
    backend: str = "ort"
    ply: bool = False
    ply_ascii: bool = False
    refine: bool = True


def parse_model_inputs(text: str) -> dict[str, str]:
    """``imgl:PATH,imgr:PATH,baseline:B,f:F`` -> {"imgl": PATH, ...} (the reference CLI's form)."""
    values: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition(":")
        key = key.strip()
        if not sep or key not in MODEL_INPUT_KEYS or not value.strip():
            raise StereoqError(
                f"--model-inputs {text!r}: expected imgl:PATH,imgr:PATH,baseline:B,f:F "
                f"(bad item {item!r})",
                exit_code=2,
            )
        if key in values:
            raise StereoqError(f"--model-inputs: {key} given twice", exit_code=2)
        values[key] = value.strip()
    return values


def merge_inputs(explicit: dict[str, object], model_inputs: str | None) -> dict[str, object]:
    """Explicit options plus ``--model-inputs``; the same value given both ways is an error."""
    merged = dict(explicit)
    if model_inputs is None:
        return merged
    for key, value in parse_model_inputs(model_inputs).items():
        if merged.get(key) is not None:
            raise StereoqError(
                f"--model-inputs: {key} is also given as --{key}; give it once", exit_code=2
            )
        merged[key] = value
    return merged


def infer(
    imgl: Annotated[
        str | None,
        typer.Option(help="Left image, a folder of pairs, or a quoted glob of left images."),
    ] = None,
    imgr: Annotated[
        str | None,
        typer.Option(help="Right image (a folder or glob when --imgl is one; optional then)."),
    ] = None,
    baseline: Annotated[
        float | None, typer.Option(help="Stereo baseline in metres (depth comes out in metres).")
    ] = None,
    f: Annotated[float | None, typer.Option("--f", help="Focal length in pixels.")] = None,
    save_path: Annotated[
        Path | None, typer.Option(help="Output folder (one sub-folder per pair for several).")
    ] = None,
    stage: Annotated[
        str,
        typer.Option(help=stage_help(
            "Model: a stage", (f"{DEPLOYED} (the --backend artifact that stereoq compile wrote)",)
        )),
    ] = FIRST_STAGE,
    backend: BackendOpt = "ort",
    model_inputs: Annotated[
        str | None,
        typer.Option(help="Reference form: imgl:PATH,imgr:PATH,baseline:B,f:F (instead of those)."),
    ] = None,
    cx: Annotated[
        float | None, typer.Option(help="Principal point x in px for --ply (default: centre).")
    ] = None,
    cy: Annotated[
        float | None, typer.Option(help="Principal point y in px for --ply (default: centre).")
    ] = None,
    doffs: Annotated[
        float | None,
        typer.Option(
            help="x-offset of the right view's principal point in px (Middlebury's doffs): "
            "depth = f x baseline / (disparity + doffs). Default: 0 (or from --calib)."
        ),
    ] = None,
    calib: Annotated[
        Path | None,
        typer.Option(
            help="Calibration file: a Middlebury/ETH3D calib.txt (baseline in mm) or a KITTI "
            "calib_cam_to_cam file; fills --baseline (m), --f, --cx, --cy and --doffs. "
            "Options given explicitly override it."
        ),
    ] = None,
    ply: Annotated[bool, typer.Option(help="Also write a coloured point cloud (PLY).")] = False,
    refine: Annotated[
        bool,
        typer.Option(help="Refine the network's disparity by matching the pair again at full "
                     "resolution, within a few px of it and of the nearest and farthest "
                     "disparity close by (config section refine; --set "
                     "refine.edge_window_pct=0 for the faster span-only form). --no-refine: "
                     "the network's output as it is."),
    ] = True,
    ply_ascii: Annotated[bool, typer.Option(help="Write the PLY as ASCII, not binary.")] = False,
    max_size: Annotated[
        int | None,
        typer.Option(
            help="Run inputs whose longest side exceeds N px downscaled to N (disparity is "
            "rescaled to full resolution). Without it, inputs above 4.2 MP are refused."
        ),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help=f"Weights to use instead of RUN_DIR/{FIRST_STAGE}/best.pt "
                     f"({FIRST_STAGE} only)."),
    ] = None,
    weights: WeightsOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Disparity, depth, pictures and a point cloud from rectified stereo pairs.

    Depth = f x baseline / disparity: metres for a baseline in metres and f in pixels; pixels
    with disparity <= 0.01 px are invalid (0 in depth_mm.png, black in the pictures). Writes to
    --save-path: disparity.pfm, disparity.png, depth_mm.png (uint16 mm, clipped at 65535),
    depth.png, overview.png, pointcloud.ply (--ply) and summary.json; several pairs get one
    sub-folder each. A folder or glob pairs each image with "left" in its path (or named im0)
    with the same path with "right" (im1).

    The model is the --stage of the config's run, or a shipped model (--weights); with neither
    a --weights, a --checkpoint nor RUN_DIR/float/best.pt, the default shipped model runs (a
    note says so).
    """
    values = merge_inputs(
        {"imgl": imgl, "imgr": imgr, "baseline": baseline, "f": f}, model_inputs
    )
    from stereoq.data.calibration import merge_camera, ndisp_note, read_calibration

    calibration = read_calibration(calib) if calib is not None else None
    geometry, notes = merge_camera(calibration, {
        "baseline": _float(values.pop("baseline", None)), "f": _float(values.pop("f", None)),
        "cx": cx, "cy": cy, "doffs": doffs,
    })
    for key in ("imgl", "baseline", "f"):
        if {**values, **geometry}.get(key) is None:
            alternative = "--model-inputs" + ("" if key == "imgl" else " or --calib")
            raise StereoqError(f"--{key}: missing (or give {alternative})", exit_code=2)
    if save_path is None:
        raise StereoqError("--save-path: missing (the output folder)", exit_code=2)
    opts = validate_options(
        InferOptions,
        config=config,
        sets=sets or [],
        save_path=save_path,
        stage=stage,
        cx=geometry["cx"],
        cy=geometry["cy"],
        doffs=geometry["doffs"] if geometry["doffs"] is not None else 0.0,
        baseline=geometry["baseline"],
        f=geometry["f"],
        ply=ply,
        ply_ascii=ply_ascii,
        refine=refine,
        max_size=max_size,
        checkpoint=checkpoint,
        weights=weights,
        backend=backend,
        **values,
    )
    check_checkpoint(opts.stage, opts.checkpoint)
    check_weights(opts.weights, opts.stage, opts.checkpoint, opts.sets)
    from stereoq import weights as shipped
    from stereoq.cli.progress import RichReporter
    from stereoq.data.pairs import resolve_pairs
    from stereoq.infer.run import SUMMARY_FILE, Camera, InferSettings, run_pairs
    from stereoq.settings import load_config

    cfg = load_config(resolve_config(opts.config), sets=opts.sets)
    pairs = resolve_pairs(opts.imgl, opts.imgr)
    model_weights = opts.weights
    if model_weights is None and untrained(cfg, opts):
        model_weights = shipped.DEFAULT
        print_note(f"no {FIRST_STAGE} model in {cfg.run_dir} yet: running the shipped model "
                   f"{model_weights} (see --weights in stereoq infer --help)")
    if model_weights is not None:
        cfg = shipped.configure(cfg, model_weights)
    if calibration is not None:
        note = ndisp_note(calibration, cfg.model.maxdisp)
        notes += [note] if note else []
    for note in notes:
        console.print(note, highlight=False)
    camera = Camera(opts.baseline, opts.f, opts.cx, opts.cy, opts.doffs)
    settings = InferSettings(
        stage=opts.stage,
        max_size=opts.max_size,
        ply=opts.ply,
        ply_ascii=opts.ply_ascii,
        checkpoint=opts.checkpoint,
        backend=opts.backend,
        weights=model_weights,
        refine=opts.refine,
    )
    summary = run_pairs(cfg, pairs, camera, opts.save_path, settings, reporter=RichReporter())
    rows = [
        (
            r["name"],
            f"{r['width']}x{r['height']}",
            _range(r["disparity_px"]),
            _range(r["depth_m"]),
            f"{100 * r['valid_depth_fraction']:.1f}",
            f"{1000 * r['timings_s']['inference']:.0f}",
        )
        for r in summary["pairs"]
    ]
    print_table(
        f"{summary['config']} ({settings.model_label}), model loaded in "
        f"{summary['timings_s']['load']:.2f} s",
        ["pair", "size", "disparity px", "depth m", "valid %", "ms"],
        rows,
    )
    if calibration is not None:
        summary["calibration"] = calibration.as_dict()
    summary["notes"] = notes
    path = write_json(opts.save_path / SUMMARY_FILE, summary)
    console.print(f"saved {opts.save_path}/ (summary: {path})")


def untrained(cfg: Any, opts: InferOptions) -> bool:
    """The user named no model (default stage, no --checkpoint) and the run has none."""
    from stereoq.stages import get_stage

    if opts.stage != FIRST_STAGE or opts.checkpoint is not None:
        return False
    return not get_stage(cfg, FIRST_STAGE).artifact().is_file()


def _float(value: object) -> float | None:
    """A --model-inputs number (a string) as a float; bad text is left to option validation."""
    if value is None:
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except ValueError:
        raise StereoqError(f"--model-inputs: {value!r} is not a number", exit_code=2) from None


def _range(stats: dict[str, float | None]) -> str:
    if stats["min"] is None:
        return "none valid"
    return f"{stats['min']:.3g} .. {stats['max']:.3g}"


def register(app: typer.Typer) -> None:
    app.command()(infer)
