"""Console output for the CLI: rich tables, one-line errors, JSON results written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from stereoq.atomic import atomic_write_json

console = Console()
err_console = Console(stderr=True)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print rows as a rich table; floats get 4 significant digits."""
    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    console.print(table)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def write_json(path: Path, data: Any) -> Path:
    """Write standard JSON atomically (``stereoq.atomic``), creating parent folders.

    NaN and infinity are refused (``ValueError``), not written as ``NaN``/``Infinity``, which
    strict JSON readers reject: a value that can be undefined must be None at its source.
    """
    return atomic_write_json(path, data, allow_nan=False)


def print_error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


def print_note(message: str) -> None:
    """A one-line remark about how the options were taken (stderr: stdout holds the results)."""
    err_console.print(f"[bold yellow]note:[/] {message}", highlight=False, soft_wrap=True)
