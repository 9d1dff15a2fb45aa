"""Python scripts run in a child process that ends when its parent does, even on ``kill -9``.

The child starts through a short bootstrap that, before running the script:

- on Linux, asks the kernel to SIGKILL it when its parent dies (``prctl(PR_SET_PDEATHSIG)``),
  called in the child itself rather than through ``preexec_fn``, which is unsafe in a threaded
  parent (torch's), and then checks that the parent did not die before the request;
- everywhere, watches its stdin: a pipe whose only writer is the parent, which keeps it open
  until the child exits. When the parent dies the OS closes it, the watcher thread reads EOF and
  ends the process. This covers macOS and Windows; PDEATHSIG also covers a child busy in native
  code that holds the GIL, which the watcher would have to wait for.

The script runs as ``python SCRIPT ARGS``: ``__main__``, its folder first on ``sys.path``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping

BOOTSTRAP = """\
import os, runpy, sys, threading
parent = int(sys.argv[1])
if sys.platform.startswith("linux"):
    try:
        import ctypes, signal
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass
    if os.getppid() != parent:
        os._exit(1)
def _watch():  # os.read, not sys.stdin: no buffer lock left held at shutdown
    try:
        while os.read(0, 65536):
            pass
    except OSError:
        return
    os._exit(1)
threading.Thread(target=_watch, daemon=True).start()
sys.argv = sys.argv[2:]
sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_script(
    script: str, args: list[str], env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python script *args`` tethered to this process; stdout and stderr as text.

    Output goes through temporary files, not pipes, so a chatty child never blocks; an
    interrupt here (Ctrl-C) kills the child before it propagates.
    """
    cmd = [sys.executable, "-c", BOOTSTRAP, str(os.getpid()), script, *args]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=err, env=env)
        try:
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            proc.stdin.close()  # type: ignore[union-attr]
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", errors="replace")
        stderr = err.read().decode("utf-8", errors="replace")
    return subprocess.CompletedProcess(cmd, code, stdout, stderr)
