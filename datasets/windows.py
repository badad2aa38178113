"""Episode windows: the training samples of every task and observation type, and the loader that batches them.

A window is `horizon` (Tp) consecutive steps of one episode (docs/design.md section 4). Per episode of length L,
window starts t run from -(To-1) to L-Tp+(Ta-1) inclusive (To = obs_horizon, Ta = action_horizon), so that
the first window's last observation is the episode's first step and the last window still holds Ta actions
to execute from index To-1. Positions outside [0, L) repeat the episode's first/last step (edge padding);
windows never cross episodes. A window gives
    {"obs": {key: (To, ...)}, "action": (Tp, *action_shape) float32}
with images ((N, H, W, C) arrays) as uint8 (To, H, W, C), untouched (the policy normalizes and crops them
on its device), and low-dim observations as float32.

Episodes shorter than the window are padded like any other; an episode with L < Tp - To - Ta + 2 has an
empty start range and gives no window (as in Diffusion Policy's sampler). A horizon longer than every
selected episode is an error.

Speed: all (window, position) -> step indices are precomputed once (an (n_windows, Tp) table) and a batch
is two numpy fancy-indexing gathers into in-memory arrays (`__getitems__`, which torch's DataLoader calls
once per batch), with no per-sample Python.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from common import is_image_shape

from .replay_buffer import ReplayBuffer, ReplayBufferError


class WindowDataset(Dataset):
    """Windows of (obs, action) over the chosen episodes of one replay buffer.

    source: a ReplayBuffer (read into memory here unless it already is: pass one opened with
        `in_memory=True` to share its arrays between the train and validation datasets), or a mapping
        {key: np.ndarray (n_steps, ...)} together with `episode_ends`.
    obs_keys: data keys returned under "obs" (first To steps of the window).
    horizon (Tp), obs_horizon (To), action_horizon (Ta): see the module docstring.
    episodes: episode indices to draw windows from (default: all), e.g. from `split_episodes`.
    name: what error messages call a mapping of arrays (e.g. the file they were read from).

    ds[i] -> {"obs": {key: tensor (To, ...)}, "action": tensor (Tp, ...)}; ds.__getitems__(indices) gives the
    same with a leading batch dimension B. `ds.windows[i]` = (episode, start) of window i.
    """

    def __init__(self, source: ReplayBuffer | Mapping[str, np.ndarray], obs_keys: Sequence[str],
                 action_key: str = "action", horizon: int = 16, obs_horizon: int = 2, action_horizon: int = 8,
                 episodes: Sequence[int] | None = None, episode_ends: Sequence[int] | None = None,
                 name: str = "<arrays>"):
        if isinstance(source, ReplayBuffer):
            if episode_ends is not None:
                raise ValueError("episode_ends is taken from the ReplayBuffer; pass it only with a dict of arrays")
            rb = source
        else:
            if episode_ends is None:
                raise ValueError("a dict of arrays needs episode_ends (cumulative exclusive ends, one per episode)")
            rb = ReplayBuffer.from_arrays(source, episode_ends, name)
        if not 1 <= obs_horizon <= horizon or action_horizon < 1 or obs_horizon - 1 + action_horizon > horizon:
            raise ValueError(f"{rb.source}: need 1 <= obs_horizon <= horizon and obs_horizon - 1 + action_horizon "
                             f"<= horizon (the executed actions must lie in the window); got horizon={horizon}, "
                             f"obs_horizon={obs_horizon}, action_horizon={action_horizon}")
        self.obs_keys, self.action_key = list(obs_keys), action_key
        self.horizon, self.obs_horizon, self.action_horizon = horizon, obs_horizon, action_horizon
        self.source = rb.source

        arrays = rb.to_memory(list(dict.fromkeys([*self.obs_keys, action_key])))
        self.image_keys = [k for k in self.obs_keys if is_image_shape(arrays[k].shape[1:])]
        for k in self.image_keys:
            if arrays[k].dtype != np.uint8:
                scaled = " (they look scaled to 0..1: store them times 255)" if arrays[k].max() <= 1 else ""
                raise ReplayBufferError(f"{rb.source}: image observation {k!r} must be uint8 or floats holding "
                                        f"whole numbers 0..255; got {arrays[k].dtype} with other values{scaled}")
        # float32 once here, not per batch (no copy when it already is)
        self._obs = {k: a if k in self.image_keys else a.astype(np.float32, copy=False) for k, a in arrays.items()
                     if k in self.obs_keys}
        self._action = arrays[action_key].astype(np.float32, copy=False)

        self.episodes = np.arange(rb.n_episodes) if episodes is None else np.asarray(episodes, dtype=np.int64)
        if self.episodes.ndim != 1 or len(self.episodes) == 0:
            raise ValueError(f"{rb.source}: episodes must be a non-empty list of episode indices")
        if self.episodes.min() < 0 or self.episodes.max() >= rb.n_episodes:
            raise IndexError(f"{rb.source}: episodes must lie in 0..{rb.n_episodes - 1}, got "
                             f"{self.episodes.min()}..{self.episodes.max()}")
        lengths = rb.episode_lengths[self.episodes]
        self._episode_ends = rb.episode_ends
        if horizon > lengths.max():
            raise ReplayBufferError(f"{rb.source}: horizon {horizon} is longer than every selected episode "
                                    f"(the longest has {lengths.max()} steps); expected episodes of at least "
                                    f"{horizon} steps, or a shorter policy.horizon")
        self.device: torch.device | None = None  # None: numpy arrays on the host (see `to`)
        self.windows, self._index = _window_tables(rb.episode_ends, self.episodes, horizon, obs_horizon,
                                                   action_horizon)

    def __len__(self) -> int:
        return len(self._index)

    def __getitems__(self, indices) -> dict:
        """A batch of windows: {"obs": {key: (B, To, ...)}, "action": (B, Tp, ...)} as torch tensors (on the
        dataset's device after `to(device)`; `indices` may then be a tensor on that device)."""
        if self.device is not None:  # gathered where the data lives: no host work, no copy
            steps = self._index[torch.as_tensor(indices, device=self.device)]
            obs_steps = steps[:, : self.obs_horizon]
            return {"obs": {k: a[obs_steps] for k, a in self._obs.items()}, "action": self._action[steps]}
        steps = self._index[np.asarray(indices, dtype=np.intp)]  # (B, Tp) step indices
        obs_steps = steps[:, : self.obs_horizon]
        return {
            "obs": {k: torch.from_numpy(a[obs_steps]) for k, a in self._obs.items()},
            "action": torch.from_numpy(self._action[steps]),
        }

    def nbytes(self) -> int:
        """Bytes of the arrays this dataset holds (observations, actions, window table)."""
        arrays = [*self._obs.values(), self._action, self._index]
        return int(sum(a.nbytes if isinstance(a, np.ndarray) else a.numel() * a.element_size() for a in arrays))

    def to(self, device: str | torch.device) -> WindowDataset:
        """A copy of this dataset whose arrays (images as uint8) and window table live on `device`, so batches
        are gathered there by indexing: the GPU-resident path of train.py when the data fits. Same batches."""
        device = torch.device(device)
        other = copy.copy(self)
        other._obs = {k: torch.as_tensor(a).to(device) for k, a in self._obs.items()}
        other._action = torch.as_tensor(self._action).to(device)
        other._index = torch.as_tensor(self._index, dtype=torch.int64).to(device)
        other.device = device
        return other

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"window {i} out of range (0..{len(self) - 1})")
        batch = self.__getitems__([i])
        return {"obs": {k: v[0] for k, v in batch["obs"].items()}, "action": batch["action"][0]}

    def step_arrays(self, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Every step of this dataset's episodes (no padding) {key: (n_steps, ...)}, for fitting a Normalizer.

        Default keys: the low-dim observation keys and the action key (images need no fitted statistics).
        """
        keys = [*[k for k in self.obs_keys if k not in self.image_keys], self.action_key] if keys is None else keys
        starts = np.concatenate([[0], self._episode_ends[:-1]])
        steps = np.concatenate([np.arange(starts[e], self._episode_ends[e]) for e in self.episodes])
        arrays = {**self._obs, self.action_key: self._action}
        return {k: arrays[k][steps] for k in keys}


def _window_tables(episode_ends: np.ndarray, episodes: np.ndarray, horizon: int, obs_horizon: int,
                   action_horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """(windows (n, 2) = episode, start; index (n, horizon) = global step of each window position)."""
    starts_of_episode = np.concatenate([[0], episode_ends[:-1]])
    offsets = np.arange(horizon)
    windows, index = [], []
    for e in episodes:
        first, length = int(starts_of_episode[e]), int(episode_ends[e] - starts_of_episode[e])
        starts = np.arange(-(obs_horizon - 1), length - horizon + (action_horizon - 1) + 1)
        windows.append(np.stack([np.full_like(starts, e), starts], axis=1))
        index.append(first + np.clip(starts[:, None] + offsets, 0, length - 1))  # edge padding inside episode e
    return (np.concatenate(windows).astype(np.int64),
            np.concatenate(index).astype(np.intp).reshape(-1, horizon))


def split_episodes(n_episodes: int, val_ratio: float = 0.02, seed: int = 42,
                   max_train_episodes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation split by episode: (train_idx, val_idx), sorted int64 arrays.

    round(n_episodes * val_ratio) validation episodes, at least 1 and at most n_episodes - 1 when
    n_episodes >= 2 and val_ratio > 0 (val_ratio=0 means no validation set; 1 episode goes to train).
    `max_train_episodes` keeps a seeded subset of the training episodes; subsets for growing caps are nested.
    """
    if n_episodes < 1:
        raise ValueError(f"cannot split {n_episodes} episodes")
    if not 0 <= val_ratio < 1:
        raise ValueError(f"val_ratio must be in [0, 1), got {val_ratio}")
    order = np.random.default_rng(seed).permutation(n_episodes)
    n_val = 0 if val_ratio == 0 or n_episodes < 2 else min(max(1, round(n_episodes * val_ratio)), n_episodes - 1)
    val, train = order[:n_val], order[n_val:]
    if max_train_episodes is not None:
        if max_train_episodes < 1:
            raise ValueError(f"max_train_episodes must be >= 1, got {max_train_episodes}")
        train = train[:max_train_episodes]  # a prefix of a seeded permutation: a seeded subset
    return np.sort(train).astype(np.int64), np.sort(val).astype(np.int64)


class StepBatches(Sampler):
    """Batch indices as a function of the step: epoch e is a permutation seeded by (seed, e).

    Starting at any step reproduces the batches an uninterrupted run would have drawn (exact resume).
    Data-parallel training: `batch_size` is the global batch, and rank r of `world_size` gets its rows
    r*b .. (r+1)*b - 1 (b = batch_size / world_size), so the ranks together train on the very windows one
    process would, at every step and whatever the world size (a resume with another world size keeps them).
    """

    def __init__(self, n: int, batch_size: int, seed: int, start_step: int, total_steps: int, rank: int = 0,
                 world_size: int = 1):
        # At most the whole dataset, in a multiple of the world size (datasets smaller than one batch).
        self.n, self.batch_size, self.seed = n, min(batch_size, n - n % world_size), seed
        if self.batch_size == 0 or self.batch_size % world_size:
            raise ValueError(f"a global batch of {self.batch_size} windows (of {n}) cannot be split evenly over "
                             f"{world_size} processes")
        self.start_step, self.total_steps = start_step, total_steps
        self.rank, self.local = rank, self.batch_size // world_size
        self.per_epoch = n // self.batch_size  # drop the ragged last batch: constant batch shapes

    def __iter__(self):
        epoch, perm = None, None
        for step in range(self.start_step, self.total_steps):
            e, i = divmod(step, self.per_epoch)
            if e != epoch:
                epoch, perm = e, np.random.default_rng([self.seed, e]).permutation(self.n)
            start = i * self.batch_size + self.rank * self.local
            yield perm[start:start + self.local].tolist()

    def __len__(self) -> int:
        return self.total_steps - self.start_step


def _already_batched(batch):
    """collate_fn for datasets whose __getitems__ returns a whole batch."""
    return batch


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int = 0, num_workers: int = 0,
                drop_last: bool = False, pin_memory: bool | None = None, batch_sampler=None) -> DataLoader:
    """The DataLoader training uses: batches of `dataset.__getitems__`, reshuffled each epoch from `seed`.

    num_workers=0: a batch is a couple of numpy gathers from memory (well under a millisecond for state,
    ~1 ms for 64 image windows), cheaper than shipping it from a worker process through shared memory;
    workers only help if a dataset decodes from disk. pin_memory (default: when CUDA is available) lets
    the training loop copy batches to the GPU with non_blocking=True. drop_last=False: every window is
    seen once per epoch, as in the reference implementation. `batch_sampler` (yielding lists of window
    indices, e.g. for exactly resumable runs) replaces batch_size/shuffle/seed/drop_last.
    """
    pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
    common = dict(num_workers=num_workers, collate_fn=_already_batched, pin_memory=pin_memory,
                  persistent_workers=num_workers > 0)
    # Its own generator: a DataLoader without one draws its base seed from torch's global RNG, which would
    # shift the training noise of a resumed run.
    generator = torch.Generator()
    generator.manual_seed(seed)
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, generator=generator, **common)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last,
                      **common)
