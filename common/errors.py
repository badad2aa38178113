"""The project's errors for bad input, and the command-line wrapper that turns them into one line.

Every one derives from `StackError`; the command-line entry points
(train.py, eval.py, compare.py, the `python -m` tools) print its message on one line and exit with status 2,
so a message must name the file, key or value at fault and say what was expected.

The subclasses also derive from the built-in class that code catching them before expects (ValueError,
RuntimeError), so `except ValueError` keeps working.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable


class StackError(Exception):
    """Base class: bad input named in the message (a file, key or value, and what was expected)."""


class ConfigError(StackError, ValueError):
    """A bad command-line override or configuration value: the message names the key."""


class DataError(StackError, ValueError):
    """A dataset that cannot be used: unreadable, malformed, or not what the task needs (file and key named)."""


class CheckpointError(StackError, ValueError):
    """A checkpoint that cannot be used: unreadable, incomplete, or of another task, policy or network."""


class TrainingError(StackError, RuntimeError):
    """A run that cannot go on (e.g. a non-finite loss): the message says where and what was kept."""


class EnvError(StackError, ValueError):
    """An action, reset state or setting that an environment cannot take: the message names the value and what
    the environment expects."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a `kill`, a job scheduler's stop) or SIGHUP (the terminal closed), raised in the main thread like
    Ctrl-C's KeyboardInterrupt; `signum` says which."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__()
        self.signum = signum


@contextlib.contextmanager
def signals_deferred():
    """Ctrl-C, SIGTERM and SIGHUP that arrive inside the block are acted on when it ends: for writes that must not be
    cut in the middle (zarr writes a chunk from its own event loop thread: interrupted there, it leaves pending tasks
    that print tracebacks at exit). Off the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum))
                for s in (signal.SIGINT, *STOP_SIGNALS)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if caught:
            signal.raise_signal(caught[0])  # now, to the handler it would have met (KeyboardInterrupt, Terminated)


class ArgumentParser(argparse.ArgumentParser):
    """argparse for the `python -m` tools: a bad argument is a ConfigError (one `error:` line from run_cli, naming the
    argument), and the usage line names the command as it is typed (`python -m demos.pusht`)."""

    def __init__(self, *args, **kwargs):
        if "prog" not in kwargs:
            module = getattr(getattr(sys.modules.get("__main__"), "__spec__", None), "name", None)
            kwargs["prog"] = f"python -m {module}" if module else None
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise ConfigError(f"{self.prog}: {message} (see --help)")


@contextlib.contextmanager
def on_interrupt(note: Callable[[str], str | None]):
    """While the block runs, an interruption carries `note(command_line)`: what the command has saved so far and how
    to continue, said in the line run_cli ends it with (train.py: its last checkpoint)."""
    try:
        yield
    except KeyboardInterrupt as e:
        e.saved_notes = [*getattr(e, "saved_notes", []), note]
        raise


def run_cli(command: Callable[[list[str]], object], argv: list[str] | None = None,
            usage: str | None = None) -> int:
    """Run `command(argv)` (default argv: the process's arguments) and return its exit status: the command's own
    if it returns an int, else 0. Bad input (any StackError, or a file that does not exist) prints one line,
    `error: <message>`, and returns 2; so does an OSError about a file (permission denied, no space left, a
    read-only file system: `<file>: <reason>`). Ctrl-C and SIGTERM end with one line saying what was saved and the
    command that continues (130 and 143, the shells' codes); a closed pipe (`... | head`) ends quietly; `--help` or
    `-h` prints `usage` (the command's docstring). Anything else is a bug and keeps its traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if usage and any(a in ("-h", "--help") for a in argv):
        print(usage.strip())
        return 0
    previous = _install_stop_signals()
    try:
        status = _call(command, argv)
    except (StackError, FileNotFoundError) as e:
        if previous is not None:  # stopping anyway: a SIGTERM now (torchrun stopping the other ranks) just ends it
            _restore(previous)
            previous = None
        print_error(e)
        return 2
    except KeyboardInterrupt as e:
        signum = e.signum if isinstance(e, Terminated) else signal.SIGINT
        print_interrupted(signum, argv, getattr(e, "saved_notes", []))
        return 128 + signum  # the shells' codes: 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP
    except BrokenPipeError:
        # The reader went away (`| head`): nothing more can be said there; stop writing to it, quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if previous is not None:
            _restore(previous)
    return status if isinstance(status, int) else 0


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _install_stop_signals() -> dict | None:
    """SIGTERM and SIGHUP raise Terminated in the main thread; returns the handlers they had (None off the main
    thread, where signals cannot be set)."""
    def terminated(signum, frame):
        raise Terminated(signum)

    if threading.current_thread() is not threading.main_thread():
        return None
    return {s: signal.signal(s, terminated) for s in STOP_SIGNALS}


def _restore(previous: dict) -> None:
    for s, handler in previous.items():
        signal.signal(s, handler)


def command_line(argv: list[str] | None = None) -> str:
    """This process's command as one would type it (`python train.py ...`, `python -m demos.pusht ...`), or ""."""
    argv = sys.argv[1:] if argv is None else argv
    main = sys.modules.get("__main__")
    module = getattr(getattr(main, "__spec__", None), "name", None)  # `python -m datasets.inspect ...`
    program = f"-m {module}" if module else os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return f"python {program} {shlex.join(argv)}".strip() if program else ""


def print_interrupted(signum: int, argv: list[str], saved_notes: list[Callable[[str], str | None]]) -> None:
    """One line for an interrupted command: the signal, what it saved, and the same command, which continues."""
    again = command_line(argv) or "the same command"
    notes = [n for n in (note(again) for note in saved_notes) if n]
    what = "; ".join(notes) if notes else "nothing was saved"
    how = "interrupted (Ctrl-C)" if signum == signal.SIGINT else f"stopped ({signal.Signals(signum).name})"
    print(f"\n{how}: {what}", file=sys.stderr)


def print_error(error: Exception, grace_s: float = 3.0) -> None:
    """`error: <message>` on stderr, once per torchrun launch (train.py on several processes, RANK set): every
    rank meets the same bad argument, so rank 0 prints it and another rank prints it (its rank named) only when it
    is still running `grace_s` later. torchrun stops every process as soon as one exits with an error, so an error
    that only some ranks meet (a dataset missing on one machine) is still shown, and a shared one is shown once."""
    rank = int(os.environ.get("RANK") or 0)
    if rank:
        time.sleep(grace_s)
    print(f"error: {f'[rank {rank}] ' if rank else ''}{error}", file=sys.stderr)


def _call(command: Callable[[list[str]], object], argv: list[str]):
    """`command(argv)`, with an OSError that names a file (one the machine refused: permissions, a full disk, a
    read-only file system) turned into a StackError naming it (an OSError naming no file stays a bug); progress
    bars still open when it ends are closed, so that an error starts a line of its own."""
    try:
        return command(argv)
    except OSError as e:
        if e.filename is None or isinstance(e, StackError):
            raise
        where = f"{e.filename}" + (f" -> {e.filename2}" if e.filename2 else "")
        raise StackError(f"{where}: {e.strerror or e}") from e
    finally:
        tqdm = sys.modules.get("tqdm")
        for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
            bar.close()
