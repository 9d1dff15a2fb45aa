"""TensorBoard event files beside ``log.jsonl``: each epoch's figures as scalars.

Optional: written only where the ``tensorboard`` package is installed (``stereoq[tensorboard]``);
``log.jsonl`` stays the record the toolkit itself reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class TensorBoardLog:
    """Scalars of ``log.jsonl`` records, one TensorBoard step per epoch (1-based, as logged).

    A log without a directory (processes other than rank 0, ``log_tensorboard: false``), or
    where tensorboard is not installed, writes nothing.
    """

    def __init__(self, log_dir: Path | None, epochs_done: int = 0) -> None:
        self.writer = None
        if log_dir is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        if epochs_done == 0:  # a fresh run: a previous run's events go, as its log lines do
            for old in Path(log_dir).glob("events.out.tfevents.*"):
                old.unlink()
        # A resumed run: TensorBoard hides the earlier events from this step on, those of the
        # epochs after the checkpoint, as keep_log drops their lines. It reads event files in
        # name order, which starts with the second the file was opened.
        self.writer = SummaryWriter(str(log_dir), purge_step=epochs_done + 1)

    def add(self, record: dict[str, Any]) -> None:
        """Every number of ``record`` but its ``epoch``, tagged as :func:`tag` says; flushed, so
        an interrupted run keeps its epochs' events."""
        if self.writer is None:
            return
        for key, value in record.items():
            if key != "epoch" and isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(tag(key), value, record["epoch"])
        self.writer.flush()

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()


def tag(key: str) -> str:
    """``train_loss`` -> ``train/loss``, ``val_epe`` -> ``val/epe``: TensorBoard groups charts by
    the part before the slash. Other keys (``lr``, ``time_s``) stay as they are."""
    for split in ("train", "val"):
        if key.startswith(split + "_"):
            return f"{split}/{key.removeprefix(split + '_')}"
    return key
