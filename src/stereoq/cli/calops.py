"""``stereoq calops``: parameters and FLOPs of the configured model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import BaseModel, ConfigDict, Field

from stereoq.cli.common import ConfigOpt, SetOpt, resolve_config, validate_options
from stereoq.cli.output import console, print_table, write_json


class CalopsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    config: str | None = None
    sets: list[str] = Field(default_factory=list)
    height: int = Field(ge=16, le=4096)
    width: int = Field(ge=16, le=8192)
    json_path: Path | None = None


def calops(
    config: ConfigOpt = None,
    sets: SetOpt = None,
    height: Annotated[int, typer.Option(help="Input height in pixels.")] = 544,
    width: Annotated[int, typer.Option(help="Input width in pixels.")] = 960,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Where to save the figures as JSON.")
    ] = None,
) -> None:
    """Parameters and FLOPs (2 x MACs) of the configured model, total and per module."""
    opts = validate_options(
        CalopsOptions,
        config=config,
        sets=sets or [],
        height=height,
        width=width,
        json_path=json_path,
    )
    import torch

    from stereoq import calops as core
    from stereoq.models.build import build_model
    from stereoq.settings import load_config

    cfg = load_config(resolve_config(opts.config), sets=opts.sets)
    model = build_model(cfg.model)
    result = core.summary(core.count(model, torch.zeros(1, 6, opts.height, opts.width)))
    result.update(config=cfg.name, height=opts.height, width=opts.width)
    rows = [
        (m["name"], f"{m['params'] / 1e6:.3f}", f"{m['flops'] / 1e9:.2f}")
        for m in result["modules"]
    ]
    rows.append(
        ("total", f"{result['total_params'] / 1e6:.3f}", f"{result['total_flops'] / 1e9:.2f}")
    )
    print_table(
        f"{cfg.name} at {opts.height}x{opts.width} (FLOPs = 2 x MACs of conv/linear layers)",
        ["module", "params (M)", "GFLOPs"],
        rows,
    )
    path = write_json(opts.json_path or cfg.run_dir / "calops.json", result)
    console.print(f"saved {path}")


def register(app: typer.Typer) -> None:
    app.command()(calops)
