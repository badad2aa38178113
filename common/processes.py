"""Worker processes that never outlive their parent.

`worker_pool(n)` is a multiprocessing Pool whose workers ignore Ctrl-C (the terminal sends SIGINT to the whole
process group: the parent alone decides, and its `with` block terminates them), take the default action on SIGTERM
(the parent's handler, inherited through fork, would raise in them), and on Linux die with the parent even when it
is killed outright (SIGKILL, the OOM killer): PR_SET_PDEATHSIG.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys

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
