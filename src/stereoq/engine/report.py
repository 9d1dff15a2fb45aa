"""How the engine tells its caller about progress: core code never prints.

The CLI passes a subclass that draws rich progress bars and tables; tests and non-zero ranks use
the silent base class.
"""

from __future__ import annotations

from typing import Any


class Reporter:
    """Progress and results of long work. Every method is a no-op here."""

    def task(self, label: str, total: int) -> None:
        """A new phase of ``total`` steps begins (an epoch, a validation pass, ...)."""

    def advance(self, steps: int = 1, **fields: float) -> None:
        """``steps`` more done; ``fields`` are live figures to show (loss, lr, samples/s)."""

    def done(self) -> None:
        """The current phase ended."""

    def epoch(self, record: dict[str, Any]) -> None:
        """One epoch's train and validation metrics (the line also written to log.jsonl)."""

    def note(self, text: str) -> None:
        """A one-line remark for the user (resumed from ..., new best, ...)."""
