"""Worker processes that never outlive their parent, and child commands whose progress is shown.

`worker_pool(n)` is a multiprocessing Pool whose workers ignore Ctrl-C (the terminal sends SIGINT to the whole
process group: the parent alone decides, and its `with` block terminates them), take the default action on SIGTERM
(the parent's handler, inherited through fork, would raise in them), and on Linux die with the parent even when it
is killed outright (SIGKILL, the OOM killer): PR_SET_PDEATHSIG. `run_module` runs `python -m MODULE ARGS` as a
child that dies with us, counting its progress lines into a bar.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import DataError

PR_SET_PDEATHSIG = 1


def _worker_init(parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """In a child (a Popen preexec_fn): receive `signum` when the parent dies, however it dies (Linux; else nothing).
    SIGTERM lets a train.py child end as on a `kill`: its last checkpoint stays, the same command continues."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum)
        except (OSError, AttributeError):
            pass


def worker_pool(processes: int):
    """A Pool of `processes` workers (module docstring); use it as a context manager (its exit terminates them)."""
    return multiprocessing.Pool(processes, initializer=_worker_init, initargs=(os.getpid(),))


def run_module(module: str, args: Sequence[str], what: str, progress_desc: str | None = None,
               total: int | None = None, count_prefix: str = "ep ") -> str:
    """Run `python -m module args` in a child process (one torch thread unless OMP_NUM_THREADS says otherwise);
    return its output. Lines starting with `count_prefix` advance a progress bar titled `progress_desc`. A failure
    raises DataError naming `what` with the child's last lines."""
    from tqdm import tqdm

    # The child runs where we run (relative paths stay valid) and finds this project however we were started.
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    cmd = [sys.executable, "-m", module, *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            preexec_fn=die_with_parent if sys.platform.startswith("linux") else None)
    lines = []
    try:
        with tqdm(total=total, desc=progress_desc, unit="demo", disable=progress_desc is None) as bar:
            for line in proc.stdout:
                lines.append(line)
                if line.startswith(count_prefix):
                    bar.update(1)
    finally:
        if proc.poll() is None and sys.exc_info()[0] is not None:  # interrupted: the child stops with us
            proc.terminate()
        status = proc.wait()
    if status != 0:
        raise DataError(f"{what} failed (exit {status}) on {' '.join(args)}:\n{''.join(lines[-15:])}")
    return "".join(lines)
