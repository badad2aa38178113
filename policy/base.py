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
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from common import is_image_shape

from .nets.vision import ObservationEncoder


@dataclass(kw_only=True)
class PolicyConfigBase:
    """Shared by every policy's config dataclass: the vision encoder's settings, the common checks, `to_dict()`.

    Subclasses are dataclasses with at least horizon, obs_horizon, action_horizon and optimizer_lr /
    optimizer_betas / optimizer_eps / optimizer_weight_decay; they call `check_common()` from `__post_init__`.
    The fields below are keyword-only (`DiffusionConfig(obs_shapes={"state": (5,)}, action_dim=2)`), which lets
    subclasses give every field of their own a default.
    """

    # What the policy sees and does: each observation key's per-step shape ((H, W, C) for cameras, e.g. (5,) or
    # (9, 2) for low-dim keys) and the action size.
    obs_shapes: dict[str, tuple[int, ...]]
    action_dim: int

    # Vision (image keys only): one ResNet-18 / GroupNorm / spatial-softmax encoder per camera (policy/nets/vision.py)
    crop_shape: tuple[int, int] | None = (84, 84)  # random crop in training, center crop at run time; None: none
    image_feature_dim: int = 64
    spatial_softmax_keypoints: int = 32
    vision_base_channels: int = 64  # 64 = ResNet-18; smaller multiples of 16 for tiny test nets

    def check_common(self) -> None:
        """Turn lists (from JSON / the command line) into tuples and check what every policy needs."""
        self.obs_shapes = {k: tuple(int(d) for d in v) for k, v in self.obs_shapes.items()}
        self.crop_shape = tuple(int(d) for d in self.crop_shape) if self.crop_shape is not None else None
        if getattr(self, "optimizer_betas", None) is not None:
            self.optimizer_betas = tuple(self.optimizer_betas)
        if not self.obs_shapes:
            raise ValueError("obs_shapes is empty: the policy needs at least one observation key")
        if "action" in self.obs_shapes:
            raise ValueError("'action' is not an observation key")
        if self.action_dim < 1:
            raise ValueError(f"action_dim must be positive, got {self.action_dim}")
        if not self.optimizer_lr > 0:
            raise ValueError(f"optimizer_lr must be a positive learning rate, got {self.optimizer_lr}")
        if getattr(self, "lr_warmup_steps", 0) < 0:
            raise ValueError(f"lr_warmup_steps must be >= 0, got {self.lr_warmup_steps}")
        if min(self.horizon, self.obs_horizon, self.action_horizon) < 1:
            raise ValueError("horizon, obs_horizon and action_horizon must be positive")
        if self.obs_horizon - 1 + self.action_horizon > self.horizon:
            raise ValueError(
                f"obs_horizon - 1 + action_horizon = {self.obs_horizon - 1 + self.action_horizon} exceeds "
                f"horizon {self.horizon}: the executed actions start at index obs_horizon - 1 of the window"
            )
        if self.crop_shape is not None and len(self.crop_shape) != 2:
            raise ValueError(f"crop_shape must be (height, width) or None, got {self.crop_shape}")
        for key in self.image_keys:
            shape = self.obs_shapes[key]
            if self.crop_shape and (self.crop_shape[0] > shape[0] or self.crop_shape[1] > shape[1]):
                raise ValueError(f"crop_shape {self.crop_shape} is larger than image {key!r} of shape {shape}")

    @property
    def image_keys(self) -> list[str]:
        """Observation keys with (H, W, C) shapes: the cameras."""
        return [k for k, s in self.obs_shapes.items() if is_image_shape(s)]

    def to_dict(self) -> dict:
        """Plain dict (for checkpoints); ``ConfigClass(**d)`` rebuilds it."""
        return dataclasses.asdict(self)


class Policy(nn.Module, abc.ABC):
    """Abstract base class of all policies. Subclasses set ``self.normalizer`` in ``__init__``."""

    normalizer: nn.Module

    def __init__(self, config: PolicyConfigBase, normalizer: nn.Module):
        """Keep the config and the fitted normalizer, and build the observation encoder every policy uses.

        normalizer: an nn.Module with normalize(key, x) / unnormalize(key, x), fitted on the training data for
        every key of ``config.obs_shapes`` and "action". Registered, so it is saved with the policy.
        """
        super().__init__()
        self.config = config
        self.normalizer = normalizer
        self.obs_encoder = ObservationEncoder(config.obs_shapes, config.crop_shape, config.image_feature_dim,
                                              config.spatial_softmax_keypoints, config.vision_base_channels)

    def encode_obs(self, obs: dict[str, Tensor], flatten: bool) -> Tensor:
        """Raw obs {key: (B, T, *shape)} -> features (B, T * F) (flatten) or (B, T, F): normalized, then encoded.
        Callers check the keys first (``obs_window`` or ``check_obs_keys``)."""
        return self.obs_encoder({key: self.normalizer.normalize(key, obs[key]) for key in self.config.obs_shapes},
                                flatten=flatten)

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

    def get_optimizer_groups(self) -> list[dict]:
        """AdamW parameter groups, each with its weight decay: here one group of every trainable parameter
        with ``config.optimizer_weight_decay`` (policies with per-module decay override this)."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "weight_decay": self.config.optimizer_weight_decay}]

    def make_optimizer(self) -> torch.optim.AdamW:
        """AdamW with the policy's published settings (lr, betas, eps from its config; groups' weight decay).
        Build it after moving the policy to its device (fused on CUDA)."""
        cfg = self.config
        # One fused kernel per step on CUDA; multi-tensor (foreach) updates elsewhere: the same update rule.
        groups = self.get_optimizer_groups()
        on_cuda = all(p.is_cuda for g in groups for p in g["params"])
        return torch.optim.AdamW(groups, lr=cfg.optimizer_lr, betas=cfg.optimizer_betas, eps=cfg.optimizer_eps,
                                 **({"fused": True} if on_cuda else {"foreach": True}))

    def obs_window(self, obs: dict[str, Tensor], last: bool) -> dict[str, Tensor]:
        """The To observation steps a policy conditions on: the first To of a training window (last=False),
        or the last To of a run-time history (last=True); a missing key or too few steps is an error."""
        to = self.config.obs_horizon
        self.check_obs_keys(obs)
        window = {}
        for key in self.config.obs_shapes:
            x = obs[key]
            if x.shape[1] < to:
                raise ValueError(f"obs[{key!r}] has {x.shape[1]} steps, the policy needs obs_horizon={to}")
            window[key] = x[:, -to:] if last else x[:, :to]
        return window

    def check_obs_keys(self, obs: dict[str, Tensor]) -> None:
        missing = [key for key in self.config.obs_shapes if key not in obs]
        if missing:
            raise KeyError(f"observation keys {missing} missing; got keys {sorted(obs)}")

    def forward(self, batch: dict) -> dict[str, Tensor]:
        """Same as ``compute_loss``, so DistributedDataParallel wraps the training call."""
        return self.compute_loss(batch)
