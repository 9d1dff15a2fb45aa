"""``stereoq train``: run one stage of the pipeline (``stereoq.stages``)."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

from stereoq import weights
from stereoq.cli.common import ConfigOpt, SetOpt, resolve_config, validate_options
from stereoq.cli.output import console, print_note, print_table
from stereoq.cli.stages import FIRST_STAGE, StageName, init_takers, or_names, train_help
from stereoq.errors import StereoqError


class TrainOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stage: StageName
    config: str | None = None
    sets: list[str] = Field(default_factory=list)
    epochs: PositiveInt | None = None
    batch_size: PositiveInt | None = None
    lr: PositiveFloat | None = None
    resume: bool = False
    overwrite: bool = False
    init_from: str | None = Field(default=None, min_length=1)


def overrides_for(opts: TrainOptions) -> dict[str, object]:
    """Typed options -> config keys of the chosen stage (they win over --set and the file)."""
    from stereoq.settings.stages import StagesConfig
    from stereoq.stages import stage_class

    key = f"stages.{opts.stage}"
    if not stage_class(opts.stage).trains:
        for name, value in (("--epochs", opts.epochs), ("--lr", opts.lr)):
            if value is not None:
                raise StereoqError(f"option {name}: stage {opts.stage} does not train", 2)
    if opts.batch_size is not None and "batch_size" not in StagesConfig.section_fields(opts.stage):
        raise StereoqError(f"option --batch-size: stage {opts.stage} takes no batch size", 2)
    return {
        f"{key}.epochs": opts.epochs,
        f"{key}.batch_size": opts.batch_size,
        f"{key}.optimizer.lr": opts.lr,
    }


# On --resume, torch restores these with the optimizer's state, over the current recipe's values.
RESTORED_FROM_CHECKPOINT = ("optimizer.weight_decay", "optimizer.momentum")


def resume_notes(opts: TrainOptions) -> list[str]:
    """What --resume does with the recipe options given now, one line each.

    ``last.pt`` holds the weights, the optimizer's state and the epochs done, not the recipe: the
    loop sets the learning rate at every step from the current recipe (``lr_at``), so --lr,
    --epochs, --batch-size and other ``stages.STAGE`` overrides apply from the next step, while
    the optimizer's weight decay and momentum come back from the checkpoint.
    """
    from stereoq.settings.config import parse_override

    if not opts.resume:
        return []
    applied = [
        f"--{name.replace('_', '-')} {value:g}"
        for name, value in (("lr", opts.lr), ("epochs", opts.epochs),
                            ("batch_size", opts.batch_size))
        if value is not None
    ]
    ignored = []
    prefix = f"stages.{opts.stage}."
    for item in opts.sets:
        key = ".".join(parse_override(item)[0])
        if key.startswith(prefix):
            restored = key.removeprefix(prefix) in RESTORED_FROM_CHECKPOINT
            (ignored if restored else applied).append(f"--set {item}")
    notes = []
    if applied:
        notes.append(
            "--resume continues last.pt's weights, optimizer state and epoch count; "
            f"{', '.join(applied)} {'applies' if len(applied) == 1 else 'apply'} from the next "
            "step (the learning-rate schedule is recomputed from the current recipe)"
        )
    if ignored:
        notes.append(
            "--resume restores the optimizer's weight decay and momentum from last.pt; "
            f"{', '.join(ignored)} {'is' if len(ignored) == 1 else 'are'} ignored"
        )
    return notes


def train(
    stage: Annotated[str, typer.Option(help=train_help())] = FIRST_STAGE,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    epochs: Annotated[int | None, typer.Option(help="Override the stage's epochs.")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Override the stage's batch size (per process).")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Override the stage's learning rate.")] = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue from the stage's last.pt (weights, optimizer state, epochs done); "
            "recipe options given now apply from the next step. Training stages only."
        ),
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            help="Replace the stage's earlier run (last.pt, best.pt, metrics.json, log.jsonl): "
            "without it (or --resume), a stage that has a last.pt refuses to start. Training "
            "stages only."
        ),
    ] = False,
    init_from: Annotated[
        str | None,
        typer.Option(
            metavar="<file|name>",
            help="Start from this checkpoint's weights only (e.g. a SceneFlow model to fine-tune "
            f"on KITTI), or a shipped model's: {or_names(weights.names())} (a file of that name "
            "wins; train it with its own config: --config NAME); the optimizer, schedule and "
            "epochs start afresh. Stage "
            f"{or_names(init_takers())} only."
        ),
    ] = None,
) -> None:
    """Train a stage; writes last.pt, best.pt, log.jsonl and metrics.json to RUN_DIR/STAGE/.

    Runs on one process, or with DDP under `torchrun --nproc_per_node N -m stereoq train ...`.
    """
    opts = validate_options(
        TrainOptions, stage=stage, config=config, sets=sets or [], epochs=epochs,
        batch_size=batch_size, lr=lr, resume=resume, overwrite=overwrite,
        init_from=init_from,
    )
    import stereoq.deploy.layer_latency  # noqa: F401  (installs the budget's latency timing)
    from stereoq.cli.progress import RichReporter
    from stereoq.engine.distributed import launched_rank
    from stereoq.engine.loop import check_fresh_start, check_init_from
    from stereoq.settings import load_config
    from stereoq.stages import get_stage, run_stage

    cfg = load_config(resolve_config(opts.config), overrides=overrides_for(opts), sets=opts.sets)
    stage = get_stage(cfg, opts.stage)
    check_fresh_start(stage, opts.resume, opts.overwrite)
    check_init_from(stage, opts.init_from, opts.resume)
    main = launched_rank() == 0
    if main:
        console.print(f"stage {opts.stage} of {cfg.name} -> {stage.dir}", highlight=False)
    if main and not stage.trains:
        for flag in ("resume", "overwrite"):
            if getattr(opts, flag):
                print_note(f"--{flag} applies to training stages; {opts.stage} runs from the "
                           "start and rewrites its output")
    if main and opts.resume and stage.trains and (stage.dir / "last.pt").is_file():
        for note in resume_notes(opts):  # (no last.pt: the loop's error says why)
            print_note(note)
    summary = run_stage(cfg, opts.stage, resume=opts.resume, reporter=RichReporter(),
                        init_from=opts.init_from, overwrite=opts.overwrite)
    if main:
        print_summary(summary)


def print_summary(summary: dict) -> None:
    """The best validation figures of a training stage, or a one-pass stage's own summary."""
    best = summary.get("best")
    if not isinstance(best, dict):
        print_table(f"{summary.get('stage', 'stage')} done", ["item", "value"],
                    [(k, v) for k, v in summary.items() if not isinstance(v, dict | list)])
        return
    from stereoq.cli.progress import METRIC_COLUMNS, METRIC_KEYS

    chosen = "EPE" if summary.get("selected_on") is None else "label-free loss"
    loss = ["loss"] if "loss" in best else []
    print_table(
        f"{summary['stage']}: best validation {chosen} at epoch {summary['best_epoch']} of "
        f"{summary['epochs']} ({summary['checkpoint']})",
        ["split", *loss, *METRIC_COLUMNS, "images"],
        [("val", *(best[k] for k in loss), *(best.get(k) for k in METRIC_KEYS),
          best.get("images"))],
    )
    console.print(summary["averaging"], highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(train)
