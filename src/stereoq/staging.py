"""Outputs staged beside their final path and moved in whole, and what killed writers left.

A staged entry of ``DIR/NAME.SUF`` is ``DIR/.NAME.{owner}.{token}.SUF`` (a file or a folder),
``owner`` being ``{host}-{pid}`` of the process writing it: ``host`` an 8-hex-digit hash of the
host name, so a run folder shared over a network filesystem is never cleaned on the strength of
another machine's PID. Before making a new one, the writer removes the entries of the same
target whose owner is on this host and no longer alive (``remove_stale``); a live process's
entries and other hosts' are never touched. PID reuse can only make a dead writer's entry look
alive, which leaves it for a later run: the safe side. Entries of the old unnamed form
(``tempfile``'s ``.NAME.{token}.SUF``) have no owner and are left alone.

A staged folder is ``.NAME.{owner}.{token}.SUF/NAME.SUF``: named like its target inside the
hidden entry, so whatever reads it before the swap sees the final name. It is swapped in with
one atomic exchange where the OS has it (Linux ``renameat2``), so a kill at any moment leaves
the old complete folder or the new one. Elsewhere the old folder is first moved into the entry
as ``.old``; a kill between the two renames leaves no target, and the next writer's
``remove_stale`` puts that old folder back.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import re
import shutil
import socket
import sys
import tempfile
from pathlib import Path

HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
OLD_NAME = ".old"
"""Where a two-rename swap parks the folder it replaces, inside the staged entry."""

def owner(pid: int | None = None) -> str:
    """``{host}-{pid}`` of this process (or of ``pid`` on this host), as staged names carry it."""
    return f"{HOST}-{os.getpid() if pid is None else pid}"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host is running; True when that cannot be told."""
    if pid <= 0:
        return False
    if os.name != "posix":  # no probe that is both cheap and harmless: assume it runs
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:  # killed but not reaped yet: a zombie writes nothing more
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _pattern(target: Path) -> re.Pattern[str]:
    return re.compile(
        rf"^\.{re.escape(target.stem)}\.(?P<host>[0-9a-f]{{8}})-(?P<pid>\d+)\.[a-z0-9_]+"
        rf"{re.escape(target.suffix)}$"
    )


def _prefix(target: Path) -> str:
    return f".{target.stem}.{owner()}."


def remove_stale(target: Path) -> list[Path]:
    """Remove the staged entries of ``target`` whose writer on this host is dead; -> them.

    A folder parked by a two-rename swap that was cut short goes back to ``target`` first,
    when ``target`` is missing (it was complete).
    """
    target = Path(target)
    if not target.parent.is_dir():
        return []
    pattern = _pattern(target)
    removed = []
    for entry in sorted(target.parent.iterdir()):
        match = pattern.match(entry.name)
        if not match or match["host"] != HOST or pid_alive(int(match["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            parked = entry / OLD_NAME
            if parked.is_dir() and not os.path.lexists(target):
                try:
                    os.replace(parked, target)
                except OSError:
                    continue  # never remove the only complete copy
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
        removed.append(entry)
    return removed


def new_file(target: Path) -> Path:
    """An empty staged file for ``target`` (its folder created), stale ones removed first."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=_prefix(target), suffix=target.suffix)
    os.close(fd)
    return Path(name)


def new_dir(target: Path) -> Path:
    """An empty folder named like ``target``, inside a new staged entry beside it; stale
    entries removed first. Move it in with ``swap_dir``, or drop it with ``discard``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target)
    entry = tempfile.mkdtemp(dir=target.parent, prefix=_prefix(target), suffix=target.suffix)
    staged = Path(entry) / target.name
    staged.mkdir()  # the usual permissions, which follow it into place (not mkdtemp's 0700)
    return staged


def discard(staged: Path) -> None:
    """Remove a folder made by ``new_dir`` and its staged entry."""
    shutil.rmtree(Path(staged).parent, ignore_errors=True)


def swap_dir(staged: Path, target: Path) -> None:
    """Move ``staged`` (from ``new_dir(target)``) to ``target``, replacing the folder there
    whole; the old folder and the staged entry are removed.

    ``target`` always holds the old or the new folder (atomic exchange); see the module's note
    for systems without one. Raises NotADirectoryError when ``target`` is not a folder.
    """
    staged, target = Path(staged), Path(target)
    entry = staged.parent
    if staged.name != target.name or not _pattern(target).match(entry.name):
        raise ValueError(f"{staged} was not made by new_dir({target})")
    if not os.path.lexists(target):
        os.replace(staged, target)
    elif not target.is_dir() or target.is_symlink():
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(target))
    elif not _exchange(staged, target):
        os.replace(target, entry / OLD_NAME)
        try:
            os.replace(staged, target)
        except BaseException:
            os.replace(entry / OLD_NAME, target)
            raise
    shutil.rmtree(entry, ignore_errors=True)  # now holding the old folder, if any


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # e.g. a filesystem without exchange: the two-rename path
    raise OSError(err, os.strerror(err), str(b))
