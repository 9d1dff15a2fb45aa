"""``stereoq pack``: SceneFlow, a benchmark (raw layouts) or generated scenes -> an LMDB per
split."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Literal

import typer
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
)
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from stereoq.cli.common import ConfigOpt, SetOpt, resolve_config, validate_options
from stereoq.cli.output import console, print_table, write_json


class SplitName(str, Enum):
    train = "train"
    test = "test"


class PackType(str, Enum):
    lmdb = "lmdb"


class SourceKind(str, Enum):
    sceneflow = "sceneflow"
    synthetic = "synthetic"
    kitti2015 = "kitti2015"
    kitti2012 = "kitti2012"
    middlebury = "middlebury"
    eth3d = "eth3d"


class DispEncoding(str, Enum):
    png16 = "png16"
    float32 = "float32"


class PackOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: Literal[
        "sceneflow", "synthetic", "kitti2015", "kitti2012", "middlebury", "eth3d"
    ] = "sceneflow"
    src_data_dir: Path | None = None
    split_name: Literal["train", "test"]
    pack_type: Literal["lmdb"] = "lmdb"
    num_workers: int = Field(ge=0, le=256)
    target_data_dir: Path
    list_file: Path | None = None
    num_samples: PositiveInt | None = None
    count: PositiveInt | None = None
    height: int | None = Field(default=None, ge=16, le=8192)
    width: int | None = Field(default=None, ge=16, le=8192)
    max_disp: PositiveFloat | None = Field(default=None, le=1024)
    seed: int | None = Field(default=None, ge=0)
    disp_encoding: Literal["png16", "float32"] = "png16"
    overwrite: bool = False
    config: str | None = None
    sets: list[str] = Field(default_factory=list)
    json_path: Path | None = None

    @field_validator("src_data_dir")
    @classmethod
    def _needed_for_sceneflow(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        source = info.data.get("source")
        if value is None and source != "synthetic":
            raise ValueError(f"required for --source {source} (or pass --source synthetic)")
        return value

    @field_validator("list_file")
    @classmethod
    def _sceneflow_only(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and info.data.get("source") != "sceneflow":
            raise ValueError("applies only to --source sceneflow")
        return value

    @field_validator("count", "height", "width", "max_disp", "seed")
    @classmethod
    def _synthetic_only(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("source") != "synthetic":
            raise ValueError("applies only to --source synthetic")
        return value


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} samples/s" if speed else "- samples/s", style="cyan")


def pack(
    target_data_dir: Annotated[
        Path, typer.Option(help="Output folder; gets train_lmdb/ or test_lmdb/.")
    ],
    src_data_dir: Annotated[
        Path | None,
        typer.Option(help="Dataset root in its raw layout (SceneFlow with its list files, or a "
                     "benchmark's folder)."),
    ] = None,
    split_name: Annotated[SplitName, typer.Option(help="Which split to pack.")] = SplitName.train,
    pack_type: Annotated[PackType, typer.Option(help="Storage format.")] = PackType.lmdb,
    num_workers: Annotated[
        int, typer.Option(help="Processes reading and encoding samples (0 or 1: in this one).")
    ] = 2,
    source: Annotated[
        SourceKind,
        typer.Option(help="sceneflow, kitti2015, kitti2012, middlebury, eth3d: that raw layout "
                     "(benchmarks: train/test split by data.val_every); synthetic: generated "
                     "scenes."),
    ] = SourceKind.sceneflow,
    list_file: Annotated[
        Path | None, typer.Option(help="List file to use instead of the split's default.")
    ] = None,
    num_samples: Annotated[
        int | None, typer.Option(help="Pack only the first N samples of the split.")
    ] = None,
    count: Annotated[
        int | None,
        typer.Option(help="Synthetic: samples (default: the config's train_count/val_count)."),
    ] = None,
    height: Annotated[int | None, typer.Option(help="Synthetic: image height.")] = None,
    width: Annotated[int | None, typer.Option(help="Synthetic: image width.")] = None,
    max_disp: Annotated[float | None, typer.Option(help="Synthetic: disparity range, px.")] = None,
    seed: Annotated[int | None, typer.Option(help="Synthetic: scene seed.")] = None,
    disp_encoding: Annotated[
        DispEncoding,
        typer.Option(help="png16: uint16 PNG of disp*256 (<= 1/512 px error); float32: exact."),
    ] = DispEncoding.png16,
    overwrite: Annotated[bool, typer.Option(help="Rebuild an existing complete target.")] = False,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Where to save the summary as JSON.")
    ] = None,
) -> None:
    """Pack a split into an LMDB: lossless images, compact disparity, resumable."""
    opts = validate_options(
        PackOptions,
        src_data_dir=src_data_dir,
        split_name=split_name.value,
        pack_type=pack_type.value,
        num_workers=num_workers,
        target_data_dir=target_data_dir,
        source=source.value,
        list_file=list_file,
        num_samples=num_samples,
        count=count,
        height=height,
        width=width,
        max_disp=max_disp,
        seed=seed,
        disp_encoding=disp_encoding.value,
        overwrite=overwrite,
        config=config,
        sets=sets or [],
        json_path=json_path,
    )
    from stereoq.data import pack as core

    src = _source(opts)
    core.check_target(opts.target_data_dir, opts.split_name, opts.overwrite)
    progress = Progress(
        TextColumn(f"packing {opts.split_name}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    task = progress.add_task("pack", total=len(src))

    def report(done: int, total: int) -> None:
        # Started on the first report: core starts its worker processes before that, and they
        # should not be forked while the display's refresh thread runs.
        if not progress.live.is_started:
            progress.start()
        progress.update(task, completed=done, total=total)

    try:
        result = core.pack(
            src,
            opts.target_data_dir,
            opts.split_name,
            num_workers=opts.num_workers,
            disp_encoding=opts.disp_encoding,
            overwrite=opts.overwrite,
            progress=report,
        )
    finally:
        if progress.live.is_started:
            progress.stop()
    new = result.samples - result.resumed
    mb = result.stored_bytes / 1e6
    rows = [
        ("samples", result.samples),
        ("resumed from", result.resumed),
        ("seconds", result.seconds),
        ("samples/s", new / result.seconds if result.seconds else None),
        ("stored MB", mb),
        ("MB/s", mb * new / max(result.samples, 1) / result.seconds if result.seconds else None),
        ("bytes/sample", round(result.bytes_per_sample)),
        ("bytes/sample with raw float32 disparity", round(result.reference_bytes_per_sample)),
        ("disparity bytes/sample", round(result.disp_bytes / max(result.samples, 1))),
        ("raw float32 disparity bytes/sample", round(result.raw_disp_bytes / result.samples)),
        ("disparity encoding", result.disp_encoding),
    ]
    print_table(f"packed {result.path}", ["", "value"], rows)
    summary = result.as_dict()
    summary.update(samples_per_s=rows[3][1], mb_per_s=rows[5][1], num_workers=opts.num_workers)
    path = write_json(
        opts.json_path or opts.target_data_dir / f"{opts.split_name}_lmdb.pack.json", summary
    )
    console.print(f"saved {path}")


def _source(opts: PackOptions):  # noqa: ANN202  (a stereoq.data.pack source)
    from stereoq.data.pack import SyntheticOverrides, make_source
    from stereoq.settings import load_config

    data = load_config(resolve_config(opts.config), sets=opts.sets).data
    synthetic = SyntheticOverrides(opts.count, opts.height, opts.width, opts.max_disp, opts.seed)
    return make_source(opts.source, opts.split_name, data, opts.src_data_dir, opts.list_file,
                       opts.num_samples, synthetic)


def register(app: typer.Typer) -> None:
    app.command()(pack)
