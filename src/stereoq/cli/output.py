"""Console output for the CLI: rich tables, one-line errors, JSON results written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

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
    """Write standard JSON atomically (temp file + rename), creating parent folders.

    NaN and infinity are refused (``ValueError``), not written as ``NaN``/``Infinity``, which
    strict JSON readers reject: a value that can be undefined must be None at its source.
    """
    path = Path(path)
    text = json.dumps(data, indent=2, default=str, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def print_error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


def print_note(message: str) -> None:
    """A one-line remark about how the options were taken (stderr: stdout holds the results)."""
    err_console.print(f"[bold yellow]note:[/] {message}", highlight=False, soft_wrap=True)
