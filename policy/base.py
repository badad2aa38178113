"""The one interface every policy implements (Diffusion, IBC, LSTM-GMM).

Batch contract (produced by the data loader; raw, un-normalized values)::

    batch = {
        "obs": {key: Tensor (B, To, *shape)},   # low-dim keys float32; image keys uint8 (B, To, H, W, 3)
        "action": Tensor (B, Tp, Da) float32,   # the whole prediction window
    }

Run-time contract: ``predict_action(obs)`` takes the same obs dict holding the last To observations
and returns the un-normalized actions to execute, shape (B, Ta, Da): the predicted window's entries
To-1 .. To-1+Ta-1 (receding horizon: execute Ta actions, then replan).

Every policy owns ``self.normalizer``: a registered ``torch.nn.Module`` (so its statistics travel in the
policy's state_dict) with ``normalize(key, x)`` and ``unnormalize(key, x)`` acting on tensors whose
trailing dims are that key's feature shape (images: uint8 0..255 -> float [-1, 1]).
"""

from __future__ import annotations

import abc
import dataclasses

import torch
from torch import Tensor, nn

from .nets.vision import is_image_shape


class PolicyConfigBase:
    """Shared by every policy's config dataclass: the checks all policies need and `to_dict()`.

    Subclasses are dataclasses with at least obs_shapes, action_dim, horizon, obs_horizon, action_horizon and
    optimizer_lr / optimizer_betas / optimizer_eps; they call `check_common()` from `__post_init__`.
    """

    def check_common(self) -> None:
        self.obs_shapes = {k: tuple(int(d) for d in v) for k, v in self.obs_shapes.items()}
        if not self.obs_shapes:
            raise ValueError("obs_shapes is empty: the policy needs at least one observation key")
        if "action" in self.obs_shapes:
            raise ValueError("'action' is not an observation key")
        if self.action_dim < 1:
            raise ValueError(f"action_dim must be positive, got {self.action_dim}")
        if min(self.horizon, self.obs_horizon, self.action_horizon) < 1:
            raise ValueError("horizon, obs_horizon and action_horizon must be positive")
        if self.obs_horizon - 1 + self.action_horizon > self.horizon:
            raise ValueError(
                f"obs_horizon - 1 + action_horizon = {self.obs_horizon - 1 + self.action_horizon} exceeds "
                f"horizon {self.horizon}: the executed actions start at index obs_horizon - 1 of the window"
            )
        crop = getattr(self, "crop_shape", None)
        for key in self.image_keys:
            shape = self.obs_shapes[key]
            if crop and (crop[0] > shape[0] or crop[1] > shape[1]):
                raise ValueError(f"crop_shape {crop} is larger than image {key!r} of shape {shape}")

    @property
    def image_keys(self) -> list[str]:
        """Observation keys with (H, W, 3) shapes: the cameras."""
        return [k for k, s in self.obs_shapes.items() if is_image_shape(s)]

    def to_dict(self) -> dict:
        """Plain dict (for checkpoints); ``ConfigClass(**d)`` rebuilds it."""
        return dataclasses.asdict(self)


class Policy(nn.Module, abc.ABC):
    """Abstract base class of all policies. Subclasses set ``self.normalizer`` in ``__init__``."""

    normalizer: nn.Module

    @abc.abstractmethod
    def compute_loss(self, batch: dict) -> dict[str, Tensor]:
        """Training loss for one batch (see the module docstring for its format).

        Returns a dict that holds at least "loss" (a scalar to call ``backward()`` on); other entries are
        detached scalars for logging.
        """

    @abc.abstractmethod
    def predict_action(self, obs: dict[str, Tensor]) -> Tensor:
        """Actions to execute, un-normalized, shape (B, Ta, Da), from obs {key: (B, To, *shape)}."""

    def reset(self) -> None:
        """Clear any per-episode state (recurrent policies); called at the start of every episode."""

    @abc.abstractmethod
    def get_optimizer_groups(self) -> list[dict]:
        """AdamW parameter groups, each with its weight decay."""

    def make_optimizer(self) -> torch.optim.AdamW:
        """AdamW with the policy's published settings (lr, betas, eps from its config; groups' weight decay)."""
        cfg = self.config
        return torch.optim.AdamW(self.get_optimizer_groups(), lr=cfg.optimizer_lr, betas=cfg.optimizer_betas,
                                 eps=cfg.optimizer_eps)

    def obs_window(self, obs: dict[str, Tensor], last: bool) -> dict[str, Tensor]:
        """The To observation steps a policy conditions on: the first To of a training window (last=False),
        or the last To of a run-time history (last=True); a missing key or too few steps is an error."""
        to = self.config.obs_horizon
        window = {}
        for key in self.config.obs_shapes:
            if key not in obs:
                raise KeyError(f"observation {key!r} missing; got keys {sorted(obs)}")
            x = obs[key]
            if x.shape[1] < to:
                raise ValueError(f"obs[{key!r}] has {x.shape[1]} steps, the policy needs obs_horizon={to}")
            window[key] = x[:, -to:] if last else x[:, :to]
        return window

    def forward(self, batch: dict) -> dict[str, Tensor]:
        """Same as ``compute_loss``, so DistributedDataParallel wraps the training call."""
        return self.compute_loss(batch)
