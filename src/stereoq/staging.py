"""Outputs staged beside their final path and moved in whole, and what killed writers left.

A staged entry of ``DIR/NAME.SUF`` is ``DIR/.NAME.{owner}.{token}.SUF`` (a file or a folder),
``owner`` being ``{host}-{pid}`` of the process writing it: ``host`` an 8-hex-digit hash of the
host name, so a run folder shared over a network filesystem is never cleaned on the strength of
another machine's PID. Before making a new one, the writer removes the entries of the same
target whose owner is on this host and no longer alive (``remove_stale``); a live process's
entries and other hosts' are never touched. PID reuse can only make a dead writer's entry look
alive, which leaves it for a later run: the safe side. Entries of the old unnamed form
(``tempfile``'s ``.NAME.{token}.SUF``) have no owner and are left alone.

Folders are swapped in with one atomic exchange where the OS has it (Linux ``renameat2``), so a
kill at any moment leaves the old complete folder or the new one. Elsewhere the old folder is
first renamed to ``{staged}.old``; a kill between the two renames leaves no target, and the
next writer's ``remove_stale`` puts that old folder back.
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
OLD_SUFFIX = ".old"

_UMASK = os.umask(0)
os.umask(_UMASK)


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
        rf"{re.escape(target.suffix)}(?P<old>{re.escape(OLD_SUFFIX)})?$"
    )


def _prefix(target: Path) -> str:
    return f".{target.stem}.{owner()}."


def remove_stale(target: Path) -> list[Path]:
    """Remove the staged entries of ``target`` whose writer on this host is dead; -> them.

    An ``.old`` folder left between the two renames of a non-atomic swap is moved back to
    ``target`` when ``target`` is missing (it was complete), else removed.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return []
    pattern = _pattern(target)
    stale = []
    for entry in target.parent.iterdir():
        match = pattern.match(entry.name)
        if match and match["host"] == HOST and not pid_alive(int(match["pid"])):
            stale.append((match["old"] is None, entry))  # .old entries first
    removed = []
    for _, entry in sorted(stale):
        if entry.name.endswith(OLD_SUFFIX) and not os.path.lexists(target):
            with contextlib.suppress(OSError):  # never remove the only complete copy
                os.replace(entry, target)
            continue
        if entry.is_dir() and not entry.is_symlink():
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
    """An empty staged folder for ``target`` (usual permissions), stale ones removed first."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target)
    path = Path(tempfile.mkdtemp(dir=target.parent, prefix=_prefix(target), suffix=target.suffix))
    os.chmod(path, 0o777 & ~_UMASK)  # mkdtemp's 0700 would follow the folder into place
    return path


def swap_dir(staged: Path, target: Path) -> None:
    """Move the complete folder ``staged`` to ``target``; the folder it replaces is removed.

    ``target`` always holds the old or the new folder (atomic exchange); see the module's note
    for systems without one. Raises NotADirectoryError when ``target`` is not a folder.
    """
    staged, target = Path(staged), Path(target)
    if not os.path.lexists(target):
        os.replace(staged, target)
        return
    if not target.is_dir() or target.is_symlink():
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(target))
    if _exchange(staged, target):
        shutil.rmtree(staged, ignore_errors=True)  # now the old folder
        return
    old = staged.with_name(staged.name + OLD_SUFFIX)
    os.replace(target, old)
    os.replace(staged, target)
    shutil.rmtree(old, ignore_errors=True)


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
