"""Files written whole or not at all: a temp file in the target's folder, fsync, then a rename.

Readers never see a half-written file, and a failed write leaves the old file (or none) and no
temp file behind. The temp file is created with mode ``0o666`` so the kernel applies the process
umask (and a folder's default ACL) as for any new file: outputs get ``0o666 & ~umask``, where
``tempfile.mkstemp`` would make every one of them ``0o600``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path, keep_name: bool = False) -> Iterator[Path]:
    """A temp path to write ``path``'s content to; it replaces ``path`` when the block succeeds.

    The temp file exists (empty) when the block starts. With ``keep_name`` it is not created and
    carries ``path``'s own name, in a private folder next to it: for writers that derive content
    from the file name (``torch.export.save`` names the archive's top folder after it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.")) if keep_name else None
    tmp = folder / path.name if folder else _new_temp(path)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    _fsync_folder(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, creating parent folders; -> ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, creating parent folders; -> ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any, allow_nan: bool = True) -> Path:
    """Write ``data`` as indented JSON (other objects as their ``str``) to ``path`` atomically.

    ``allow_nan=False`` refuses NaN and infinity (``ValueError``), which strict JSON readers
    reject, instead of writing ``NaN``/``Infinity``.
    """
    text = json.dumps(data, indent=2, default=str, allow_nan=allow_nan) + "\n"
    return atomic_write_text(path, text)


def _new_temp(path: Path) -> Path:
    """Create an empty, unique ``.<name>.<random>.tmp`` beside ``path``."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temp file name beside {path}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable; best effort (not every OS or file system lets a folder sync)."""
    with suppress(OSError):
        _fsync(folder)
