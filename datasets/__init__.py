"""Demonstration data: the zarr replay buffer, episode windows, normalization, converters, demo generators."""

from .replay_buffer import ReplayBuffer, ReplayBufferError

__all__ = ["ReplayBuffer", "ReplayBufferError"]
