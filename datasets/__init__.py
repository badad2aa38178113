"""Demonstration data: the zarr replay buffer, episode windows and their sampler, normalization, download and
inspection. (Producing demonstrations, from simulations or robomimic files, is `demos/`.)"""

from .normalizer import Normalizer
from .replay_buffer import MissingKeyError, ReplayBuffer, ReplayBufferError
from .windows import StepBatches, WindowDataset, make_loader, split_episodes

__all__ = [
    "MissingKeyError",
    "Normalizer",
    "ReplayBuffer",
    "ReplayBufferError",
    "StepBatches",
    "WindowDataset",
    "make_loader",
    "resolve_pusht",
    "split_episodes",
]


def __getattr__(name: str):
    # Imported on first use, so that `python -m datasets.download` does not find its module already imported.
    if name == "resolve_pusht":
        from .download import resolve_pusht

        return resolve_pusht
    raise AttributeError(f"module 'datasets' has no attribute {name!r}")
