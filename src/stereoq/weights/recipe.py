"""How a shipped model was made, as data: its card's ``training.reproduce`` section.

The section names the training scenes to pack and the training runs in order, each with its
thread count, its config overrides and the earlier run whose best weights it starts from. From
it come the commands the card lists (``commands``) and the steps ``bench/train_weights.py``
replays (``pack_argv``, ``train_argv``): one source, so the card cannot drift from what runs.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from stereoq.errors import StereoqError

SPLITS = ("train", "test")
"""Packed in this order into ``OUT/data`` (``test`` has the config's ``val_count`` scenes)."""

RunName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$")]


class TrainingRun(BaseModel):
    """One ``stereoq train --stage float`` run of the recipe."""

    model_config = ConfigDict(extra="forbid")
    name: RunName
    """Its run folder: ``OUT/runs/NAME``."""
    init_from: RunName | None = None
    """An earlier run of the recipe whose ``best.pt`` it starts from (a fresh optimizer)."""
    threads: PositiveInt
    """``OMP_NUM_THREADS`` it ran with (the first runs of the two light models shared 2 cores)."""
    sets: list[str] = []
    """``--set KEY.PATH=VALUE`` overrides of the model's own config."""


class Recipe(BaseModel):
    """Pack ``train_count`` generated scenes (and the validation scenes), then the runs in order;
    the model is the last run's ``best.pt``."""

    model_config = ConfigDict(extra="forbid")
    train_count: PositiveInt
    runs: list[TrainingRun] = Field(min_length=1)

    @model_validator(mode="after")
    def _earlier_runs_only(self) -> Recipe:
        seen: set[str] = set()
        for run in self.runs:
            if run.name in seen:
                raise ValueError(f"run {run.name!r} appears twice")
            if run.init_from is not None and run.init_from not in seen:
                raise ValueError(f"run {run.name!r} starts from {run.init_from!r}, which is "
                                 "not an earlier run of the recipe")
            seen.add(run.name)
        return self

    @property
    def final(self) -> TrainingRun:
        return self.runs[-1]


def recipe(name: str) -> Recipe:
    """The shipped model's recipe; a one-line error when its card has none or a broken one."""
    from stereoq import weights

    section = weights.card(name).get("training", {}).get("reproduce")
    if section is None:
        raise StereoqError(f"shipped model {name}: its card has no training.reproduce section")
    try:
        return Recipe.model_validate(section)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise StereoqError(f"shipped model {name}: card training.reproduce"
                           f"{'.' + where if where else ''}: {first['msg']}") from None


def data_dir(out: Path) -> Path:
    return out / "data"


def runs_dir(out: Path) -> Path:
    return out / "runs"


def stage_dir(out: Path, run_name: str) -> Path:
    """Where a run's float stage writes ``last.pt``, ``best.pt`` and ``metrics.json``."""
    return runs_dir(out) / run_name / "float"


def best_checkpoint(out: Path, run_name: str) -> Path:
    return stage_dir(out, run_name) / "best.pt"


def pack_argv(name: str, split: str, out: Path, count: int | None,
              sets: list[str] = ()) -> list[str]:
    """``stereoq pack`` arguments of one split (``count``: train only; None: the config's)."""
    argv = ["pack", "--source", "synthetic", "--split-name", split]
    if count is not None:
        argv += ["--count", str(count)]
    argv += ["--num-workers", "2", "--target-data-dir", str(data_dir(out)), "--config", name]
    return argv + [arg for s in sets for arg in ("--set", s)]


def train_argv(name: str, run: TrainingRun, out: Path, sets: list[str] = ()) -> list[str]:
    """``stereoq train`` arguments of one run; ``sets`` come after the run's own (they win)."""
    argv = ["train", "--stage", "float"]
    if run.init_from is not None:
        argv += ["--init-from", str(best_checkpoint(out, run.init_from))]
    argv += ["--config", name]
    overrides = ["data.source=lmdb", f"data.lmdb_dir={data_dir(out)}",
                 f"output_dir={runs_dir(out)}", f"name={run.name}", *run.sets, *sets]
    return argv + [arg for s in overrides for arg in ("--set", s)]


def thread_env(threads: int) -> dict[str, str]:
    """The environment a run's thread count means (passive waits: no spinning between ops)."""
    return {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(threads)}


def commands(name: str, steps: Recipe, out: str = "OUT") -> list[str]:
    """The recipe as shell commands, for the card and the README."""
    root = Path(out)
    lines = [shlex.join(["python", "-m", "stereoq",
                         *pack_argv(name, split, root, steps.train_count if split == "train"
                                    else None)]) for split in SPLITS]
    for run in steps.runs:
        env = " ".join(f"{k}={v}" for k, v in thread_env(run.threads).items())
        argv = ["python", "-m", "stereoq", *train_argv(name, run, root)]
        lines.append(f"{env} {shlex.join(argv)}")
    return lines
