"""Shared fixtures. The real Push-T demonstrations are never part of the repository: tests that need them
read ../shared/data/pusht.zip (or the file named by $PUSHT_ZIP) and are skipped when it is absent."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame without a screen
os.environ.setdefault("WANDB_MODE", "offline")

REPO = Path(__file__).resolve().parents[1]


def pusht_zip_path() -> Path | None:
    candidates = [os.environ.get("PUSHT_ZIP"), REPO.parent / "shared" / "data" / "pusht.zip"]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    return None


@pytest.fixture(scope="session")
def pusht_zip() -> Path:
    path = pusht_zip_path()
    if path is None:
        pytest.skip("real Push-T data not found: put pusht.zip at ../shared/data/pusht.zip or set PUSHT_ZIP")
    return path
