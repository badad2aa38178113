"""Paths: why one that should be there is not (a symbolic link that loops or points nowhere, said by name: the OS
reports the first as "File exists" to mkdir and both as "No such file" to open), and what a training run's dir is."""

from __future__ import annotations

import os
from pathlib import Path


def is_run_dir(path: Path) -> bool:
    """Whether `path` holds a training run's files: train.py's history.jsonl or config.json, or a checkpoint
    (compare.py collects such dirs; eval.py never writes into one). No torch: compare.py's report stays light."""
    return any((path / name).is_file() for name in ("history.jsonl", "config.json", "checkpoints/last.pt"))


def broken_link(path: str | Path) -> str | None:
    """A sentence about the first symbolic link on `path` (itself or a folder above it) that does not resolve, or
    None when there is none."""
    path = Path(os.path.abspath(path))
    for part in [*reversed(path.parents), path]:
        if not part.is_symlink():
            continue
        try:
            part.resolve(strict=True)
        except RuntimeError:  # Python < 3.13 reports a loop as RuntimeError
            return f"{part} is a symbolic link loop (it points, through links, back to itself)"
        except OSError as e:
            if getattr(e, "errno", None) == 40:  # ELOOP
                return f"{part} is a symbolic link loop (it points, through links, back to itself)"
            return f"{part} is a symbolic link to {part.parent / os.readlink(part)}, which does not exist"
    return None
