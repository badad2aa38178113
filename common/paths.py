"""Why a path that should be there is not: a symbolic link that loops or points nowhere, said by name (the OS
reports the first as "File exists" to mkdir and both as "No such file" to open)."""

from __future__ import annotations

import os
from pathlib import Path


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
