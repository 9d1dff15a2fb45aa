"""The CLI's reporter: rich progress bars for long work, a table per epoch, one-line notes."""

from __future__ import annotations

from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from stereoq.cli.output import console, print_table
from stereoq.engine.report import Reporter

_FIELD_FORMATS = {"loss": "loss {:.4f}", "lr": "lr {:.2e}", "samples_per_s": "{:.1f} samples/s"}


class RichReporter(Reporter):
    """Draws each phase as a progress bar that stays on screen when it ends."""

    def __init__(self) -> None:
        self._progress: Progress | None = None
        self._task: Any = None

    def task(self, label: str, total: int) -> None:
        self.done()
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
        )
        self._progress.start()
        self._task = self._progress.add_task(label, total=total, info="")

    def advance(self, steps: int = 1, **fields: float) -> None:
        if self._progress is None:
            return
        info = "  ".join(_FIELD_FORMATS.get(k, k + " {:.4g}").format(v) for k, v in fields.items())
        self._progress.update(self._task, advance=steps, **({"info": info} if fields else {}))

    def done(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def epoch(self, record: dict[str, Any]) -> None:
        rows = [
            (split, record.get(f"{split}_loss"), *(record[f"{split}_{k}"] for k in METRIC_KEYS))
            for split in ("train", "val")
        ]
        print_table(
            f"epoch {record['epoch']}  lr {record['lr']:.2e}  "
            f"{record['train_samples_per_s']:.1f} samples/s  {record['time_s']:.0f} s",
            ["split", "loss", *METRIC_COLUMNS],
            rows,
        )

    def note(self, text: str) -> None:
        console.print(text, highlight=False)


METRIC_KEYS = ("epe", "epe_pixel", "d1", "bad1", "bad2", "bad3")
METRIC_COLUMNS = ("EPE px", "EPE px-avg", "D1 %", "bad-1 %", "bad-2 %", "bad-3 %")
