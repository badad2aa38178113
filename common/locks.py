"""One writer per place: who is writing (pid, host, process start, command), whether that writer is still alive,
and a lock file for a directory that holds it.

A run directory (train.py, eval.py) and a replay buffer being written (the demonstration generators) each have one
writer at a time: a second one is refused naming the first; a writer that died (killed, a crash, a power cut) leaves
a stale record that the next writer takes over, saying so. Liveness is checked with the pid *and* the process's
start time (Linux /proc), so a pid reused by an unrelated process is not mistaken for the old writer. A writer on
another host cannot be checked from here: it is refused, and the message names the file to delete if it is gone.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from .errors import ConfigError, command_line


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # fields after the command name, which may hold spaces


def this_writer() -> dict:
    """This process as a writer record."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "start_ticks": _start_ticks(os.getpid()),
            "command": command_line() or "python",
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def alive(writer: dict) -> bool | None:
    """Whether the process of a writer record still runs: True, False, or None (another host: unknown)."""
    if writer.get("host") != socket.gethostname():
        return None
    pid = int(writer.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    ticks = writer.get("start_ticks")
    return ticks is None or _start_ticks(pid) in (None, ticks)  # a new process with the old pid is not the writer


def describe(writer: dict) -> str:
    command = str(writer.get("command", "?"))
    command = command if len(command) <= 70 else command[:67] + "..."
    return f"pid {writer.get('pid')} on {writer.get('host')} (`{command}`, since {writer.get('since', '?')})"


class DirLock:
    """`<directory>/.lock`: held while a command writes the directory (a context manager).

    Refused (ConfigError, one line) while another live process holds it; a stale lock (its process is gone) is taken
    over with a line on stderr, and the temporary files the dead writer left (`.*.<pid>.tmp`) are removed.
    """

    NAME = ".lock"

    def __init__(self, directory: Path, key: str = "output_dir"):
        self.directory, self.key = Path(directory), key
        self.path = self.directory / self.NAME
        self.held = False

    def _claim(self, record: dict) -> bool:
        tmp = self.path.with_name(f"{self.NAME}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record))
        try:
            os.link(tmp, self.path)  # atomic: fails if a lock exists
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def acquire(self) -> DirLock:
        record = this_writer()
        for _ in range(3):  # a lock can vanish between our failed claim and our read of it: try again
            if self._claim(record):
                self.held = True
                return self
            try:
                holder = json.loads(self.path.read_text())
            except FileNotFoundError:
                continue
            except ValueError:
                holder = {}  # a lock cut short (its writer died while writing it): stale
            state = alive(holder) if holder else False
            if state is None:
                raise ConfigError(f"{self.key}={str(self.directory)!r}: in use by {describe(holder)}, another "
                                  f"machine; wait for it or use another {self.key}= (if that process is gone, delete "
                                  f"{self.path})")
            if state:
                raise ConfigError(f"{self.key}={str(self.directory)!r}: in use by {describe(holder)}; wait for it to "
                                  f"end, stop it, or use another {self.key}=")
            print(f"note: {self.path}: taking over the lock of {describe(holder) if holder else 'a writer'}, which "
                  "is no longer running", file=sys.stderr)
            self._remove_leftovers(holder.get("pid"))
            self.path.unlink(missing_ok=True)
        raise ConfigError(f"{self.key}={str(self.directory)!r}: could not take {self.path} (other writers keep "
                          "taking it); use another output_dir=")

    def _remove_leftovers(self, pid) -> None:
        if not isinstance(pid, int):
            return
        for tmp in [*self.directory.glob(f".*.{pid}.tmp"), *self.directory.glob(f"*/.*.{pid}.tmp")]:
            tmp.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
