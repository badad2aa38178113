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


@pytest.fixture(autouse=True)
def _one_torch_thread_and_seed():
    """Tiny networks: on a 2-core machine intra-op threads mostly wait on each other (10-100x slower); and a
    fixed seed so that every test is reproducible on its own."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
