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

from torch import Tensor, nn


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

    def forward(self, batch: dict) -> dict[str, Tensor]:
        """Same as ``compute_loss``, so DistributedDataParallel wraps the training call."""
        return self.compute_loss(batch)
