"""``stereoq export``: a stage's deployed graph as a verified ONNX file (float or int8 QDQ)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import BaseModel, ConfigDict, Field

from stereoq.cli.common import ConfigOpt, SetOpt, resolve_config, validate_options
from stereoq.cli.output import console, print_table, write_json
from stereoq.cli.stages import LAST_STAGE, StageName, stage_help

StageOpt = Annotated[str, typer.Option(help=stage_help("Stage whose model to deploy"))]
HeightOpt = Annotated[
    int | None,
    typer.Option(help="Input height in px, a multiple of the model's size multiple (its neck's "
                 "stride: 16, or 8). Default: validation frames'."),
]
WidthOpt = Annotated[
    int | None,
    typer.Option(help="Input width in px, a multiple of the model's size multiple. "
                 "Default: validation frames'."),
]
BackendOpt = Annotated[str, typer.Option(
    help="Deployment backend (ort: ONNX Runtime CPU; inductor: AOTInductor package, oneDNN "
    "int8 convs on x86, finished models only; openvino: OpenVINO CPU, float layers in f32; "
    "openvino-bf16: the same, float layers in bfloat16 where the CPU has it).")]


class DeployOptions(BaseModel):
    """Options every deployment command takes."""

    model_config = ConfigDict(extra="forbid")
    config: str | None = None
    sets: list[str] = Field(default_factory=list)
    stage: StageName = LAST_STAGE
    height: int | None = Field(default=None, ge=16, le=8192)
    width: int | None = Field(default=None, ge=16, le=8192)


class ExportOptions(DeployOptions):
    output: Path | None = None
    min_agreement: float = Field(default=99.9, gt=0.0, le=100.0)
    explain: bool = False
    strict: bool = False


StrictOpt = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="Also require bit-level agreement with PyTorch: each output within one "
        "quantization step (and, for int8 exports, each quantized tensor within one LSB) on "
        "--min-agreement % of its elements. Off by default: one-LSB rounding differences "
        "between runtimes and CPUs are normal and invisible in the disparity.",
    ),
]
MinAgreementOpt = Annotated[
    float,
    typer.Option(help="With --strict: % of elements that must agree to one step / one LSB."),
]


def load_for(opts: DeployOptions):  # noqa: ANN201  (returns (config, height, width))
    """The config and the input size (validated against the model's size multiple)."""
    from stereoq.deploy.onnx_export import check_size, default_size
    from stereoq.settings import load_config

    cfg = load_config(resolve_config(opts.config), sets=opts.sets)
    dh, dw = default_size(cfg)
    height, width = opts.height or dh, opts.width or dw
    check_size(cfg, height, width)
    return cfg, height, width


def export(
    stage: StageOpt = LAST_STAGE,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    height: HeightOpt = None,
    width: WidthOpt = None,
    output: Annotated[
        Path | None,
        typer.Option(help="Output .onnx. Default: RUN_DIR/deploy/stereonet_STAGE.onnx."),
    ] = None,
    strict: StrictOpt = False,
    min_agreement: MinAgreementOpt = 99.9,
    explain: Annotated[
        bool,
        typer.Option("--explain", help="Int8 exports: list every quantized tensor's "
                     "agreement (default: the five lowest)."),
    ] = False,
) -> None:
    """Export a stage to ONNX (opset 21) and verify ONNX Runtime against PyTorch.

    Verified on the first validation frames: the final disparity must match PyTorch's model
    (99 % of pixels within 1 px) and score the same EPE and D1 against ground truth. Bit-level
    agreement (per output step; per quantized tensor for int8 exports) is reported beside it,
    required with --strict, listed tensor by tensor with --explain. The input is the training
    input format (YUV444 or RGB per the config, normalised), recorded in the model's metadata
    with the outputs' meaning and the post-processing they need.
    """
    opts = validate_options(
        ExportOptions, stage=stage, config=config, sets=sets or [], height=height,
        width=width, output=output, min_agreement=min_agreement, explain=explain,
        strict=strict,
    )
    if opts.output is not None and opts.output.suffix != ".onnx":
        from stereoq.errors import StereoqError

        raise StereoqError(f"option --output: {opts.output} must end in .onnx", exit_code=2)
    cfg, h, w = load_for(opts)
    from stereoq.deploy.onnx_export import export_stage

    with console.status(f"exporting {opts.stage} at {h}x{w} ..."):
        result = export_stage(
            cfg, opts.stage, h, w, opts.output, min_agreement=opts.min_agreement,
            strict=opts.strict,
        )
    meta = result.metadata
    print_table(
        f"{result.path}",
        ["", "value"],
        [
            ("precision", f"{meta.precision} (opset {meta.opset})"),
            ("input", f"{meta.input_name} {'x'.join(map(str, meta.input_shape))}, NCHW"),
            ("input format", f"{meta.color}: {meta.normalisation}, mean {meta.mean:g}, "
                             f"std {meta.std:g}"),
            *(
                (f"output {o.name}", f"{'x'.join(map(str, o.shape))}"
                 + (f", int{o.quant_bits} scale {o.quant_scale:.3g}" if o.quant_scale
                    else ", float"))
                for o in meta.outputs
            ),
            ("post-processing", meta.postprocess),
            ("maxdisp / size multiple", f"{meta.maxdisp} / {meta.size_multiple}"),
        ],
    )
    console.print("onnx.checker: passed", highlight=False)
    agreement = result.agreement
    if agreement.tensors:
        shown = agreement.tensors if opts.explain else sorted(
            agreement.tensors, key=lambda t: (t.within_pct, t.exact_pct)
        )[:5]
        print_table(
            f"ONNX Runtime vs PyTorch per quantized tensor ({len(shown)} of "
            f"{len(agreement.tensors)}{', lowest first' if not opts.explain else ''})",
            ["tensor", "module", "type", "<=1 LSB %", "exact %", "max LSB",
             "free <=1 step %", "free max"],
            [
                (t.name.replace("quantize_per_tensor", "q"), t.scope or "-", t.dtype,
                 f"{t.within_pct:.3f}", f"{t.exact_pct:.3f}",
                 str(t.max_lsb), f"{t.free_within_pct:.3f}", f"{t.free_max_steps:.2f}")
                for t in shown
            ],
        )
    console.print(f"bit level{' (--strict)' if opts.strict else ' (diagnostic)'}: "
                  f"{agreement.summary()}", highlight=False)
    print_acceptance(result.disparity.to_json(), f"ONNX Runtime vs PyTorch {opts.stage}")
    path = write_json(result.path.with_suffix(".export.json"), result.to_json())
    console.print(f"saved {result.path} and {path}", highlight=False)


def print_acceptance(d: dict, title: str) -> None:
    """The verdict on what a user sees (``DisparityAgreement.to_json()``): final disparity
    agreement and both models' scores."""
    rows = [
        (f"disparity pixels within {d['pixel_tol_px']:g} px", f"{d['within_pct']:.3f} %"),
        ("max / mean difference", f"{d['max_abs_px']:.3g} / {d['mean_abs_px']:.3g} px"),
    ]
    dep, ref = d.get("deployed"), d.get("reference")
    if dep and ref:
        rows += [("EPE deployed / PyTorch", f"{dep['epe']:.4f} / {ref['epe']:.4f}"),
                 ("D1 % deployed / PyTorch", f"{dep['d1']:.2f} / {ref['d1']:.2f}")]
    t = d.get("thresholds") or {}
    if t:
        rows.append(("needs", f"{t['min_within_pct']:g} % within {t['pixel_tol_px']:g} px, EPE "
                              f"±{t['epe_abs_px']:g} px + {100 * t['epe_rel']:g} %, D1 "
                              f"±{t['d1_pp']:g} points ({t.get('basis', '')})"))
    rows.append(("verdict", "healthy" if d["ok"] else "; ".join(d["problems"])))
    print_table(f"{title} on {d['frames']} frame(s)", ["", "value"], rows)


def register(app: typer.Typer) -> None:
    app.command()(export)
