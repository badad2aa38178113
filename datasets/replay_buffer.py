"""The zarr replay buffer: the field's demonstration format (Diffusion Policy's `ReplayBuffer`).

A replay buffer is a zarr group with
    data/<key>          one array per key, all episodes concatenated along axis 0 (time)
    meta/episode_ends   int64, cumulative exclusive ends: episode i is [ends[i-1], ends[i])
stored as a directory or a zip file. Files written by Diffusion Policy (zarr format v2, e.g. `pusht.zip`,
whose group sits under `pusht/pusht_cchi_v7_replay.zarr/` inside the zip) open as they are.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import zarr
import zarr.storage


class ReplayBufferError(ValueError):
    """A replay buffer that is not what the format requires; the message names the file and key."""


_ENDS_MARKERS = ("meta/episode_ends/.zarray", "meta/episode_ends/zarr.json")


def _find_group_prefix(names: list[str], source: str) -> str:
    """The prefix of the replay-buffer group among a store's member names ('' for the root).

    Diffusion Policy's zips nest the group (`pusht/pusht_cchi_v7_replay.zarr/`) without group metadata
    on the levels above it, so we look for `meta/episode_ends` rather than walk groups from the root.
    """
    prefixes = sorted(
        {n[: -len(m)] for n in names for m in _ENDS_MARKERS if n == m or n.endswith("/" + m)},
        key=lambda p: (p.count("/"), p),
    )
    if not prefixes:
        raise ReplayBufferError(f"{source}: no 'meta/episode_ends' array found; not a zarr replay buffer")
    return prefixes[0].rstrip("/")


class ReplayBuffer:
    """Read access to a zarr replay buffer.

    >>> rb = ReplayBuffer.open("../shared/data/pusht.zip")
    >>> rb.n_episodes, rb.keys, rb.episode_lengths[:3]
    >>> ep = rb.get_episode(0)            # {"state": (161, 5), "action": (161, 2), ...}
    """

    def __init__(self, group: zarr.Group, source: str, store=None):
        self.source = source
        self._store = store
        self.root = group
        if "meta" not in group or "episode_ends" not in group["meta"]:
            raise ReplayBufferError(f"{source}: missing key 'meta/episode_ends'")
        if "data" not in group:
            raise ReplayBufferError(f"{source}: missing group 'data'")
        self.data = group["data"]
        ends = np.asarray(group["meta/episode_ends"][:])
        if ends.ndim != 1 or not np.issubdtype(ends.dtype, np.integer):
            raise ReplayBufferError(
                f"{source}: 'meta/episode_ends' must be a 1-D integer array, got shape {ends.shape} {ends.dtype}"
            )
        if len(ends) and (ends[0] <= 0 or np.any(np.diff(ends) <= 0)):
            raise ReplayBufferError(
                f"{source}: 'meta/episode_ends' must be strictly increasing and positive (no empty episodes), "
                f"got {ends[:10].tolist()}{'...' if len(ends) > 10 else ''}"
            )
        self.episode_ends = ends.astype(np.int64)
        n = int(ends[-1]) if len(ends) else 0
        for key in self.keys:
            if self.data[key].shape[0] != n:
                raise ReplayBufferError(
                    f"{source}: 'data/{key}' has {self.data[key].shape[0]} steps but meta/episode_ends[-1] is {n}"
                )

    @classmethod
    def open(cls, path: str | Path) -> ReplayBuffer:
        """Open a replay buffer read-only: a `.zarr` directory or a `.zip` file (zarr v2 or v3)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such replay buffer (a .zarr directory or .zip file)")
        store = None
        if path.is_file():
            if not zipfile.is_zipfile(path):
                raise ReplayBufferError(f"{path}: not a zip file nor a zarr directory")
            with zipfile.ZipFile(path) as zf:
                prefix = _find_group_prefix(zf.namelist(), str(path))
            store = zarr.storage.ZipStore(path, mode="r")
        else:
            names = [p.relative_to(path).as_posix() for p in path.rglob("zarr.json")]
            names += [p.relative_to(path).as_posix() for p in path.rglob(".zarray")]
            prefix = _find_group_prefix(names, str(path))
            store = zarr.storage.LocalStore(path, read_only=True)
        group = zarr.open_group(store, mode="r", path=prefix)
        return cls(group, str(path), store)

    @property
    def keys(self) -> list[str]:
        return sorted(self.data.array_keys())

    @property
    def n_episodes(self) -> int:
        return len(self.episode_ends)

    @property
    def n_steps(self) -> int:
        return int(self.episode_ends[-1]) if len(self.episode_ends) else 0

    @property
    def episode_lengths(self) -> np.ndarray:
        return np.diff(self.episode_ends, prepend=0)

    def episode_slice(self, i: int) -> slice:
        if not -self.n_episodes <= i < self.n_episodes:
            raise IndexError(f"{self.source}: episode {i} out of range (0..{self.n_episodes - 1})")
        i = i % self.n_episodes
        start = int(self.episode_ends[i - 1]) if i > 0 else 0
        return slice(start, int(self.episode_ends[i]))

    def get_episode(self, i: int, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        """Episode i as {key: array of shape (T, ...)}."""
        sl = self.episode_slice(i)
        keys = self.keys if keys is None else keys
        missing = [k for k in keys if k not in self.data]
        if missing:
            raise KeyError(f"{self.source}: missing data keys {missing}; available: {self.keys}")
        return {k: self.data[k][sl] for k in keys}

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
