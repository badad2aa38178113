"""Exponential moving average of a model's weights, as Diffusion Policy uses it for evaluation.

decay(k) = clamp(1 - (1 + s / inv_gamma) ** -power, min_decay, max_decay) with s = max(0, k - update_after_step - 1)
and k the number of previous ``step`` calls, so the first two steps copy the weights (decay 0).
With power 0.75, the decay reaches 0.999 after about 10k steps and the 0.9999 cap after about 215k.

Not diffusers.training_utils.EMAModel: its schedule runs one step ahead of the reference's (it counts
the current step before computing the decay), and it averages parameters only, leaving buffers (e.g. the
normalizer's statistics) out. Here parameters that do not require grad, BatchNorm parameters and all
buffers are copied as they are.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps ``self.averaged``, an eval-mode copy of ``model`` whose weights are the moving average.

    Usage: ``ema = EMA(policy)``; after every optimizer step ``ema.step(policy)``; evaluate and save
    ``ema.averaged`` (or ``ema.copy_to(other)``); checkpoint ``ema.state_dict()`` to resume exactly.
    """

    def __init__(self, model: nn.Module, power: float = 0.75, max_decay: float = 0.9999, min_decay: float = 0.0,
                 inv_gamma: float = 1.0, update_after_step: int = 0):
        self.averaged = copy.deepcopy(model).eval().requires_grad_(False)
        self.power, self.max_decay, self.min_decay = power, max_decay, min_decay
        self.inv_gamma, self.update_after_step = inv_gamma, update_after_step
        self.optimization_step = 0
        self.decay = 0.0  # the decay used by the latest step, for logging
        self._pairs_of, self._pairs = None, None  # the model whose tensors `_pairs` groups (see `step`)

    def get_decay(self, optimization_step: int) -> float:
        step = max(0, optimization_step - self.update_after_step - 1)
        if step <= 0:
            return 0.0
        value = 1 - (1 + step / self.inv_gamma) ** -self.power
        return max(self.min_decay, min(value, self.max_decay))

    @torch.no_grad()
    def step(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights (call after each optimizer step).

        One foreach lerp over all averaged parameters and one foreach copy for the rest (BatchNorm and frozen
        parameters, buffers): a handful of kernels per step instead of two per tensor, and no host sync.
        """
        self.decay = decay = self.get_decay(self.optimization_step)
        if self._pairs_of is not model:
            self._pairs = self._pairs_for(model)
            self._pairs_of = model
        (averaged, current), (copied_to, copied_from) = self._pairs
        if averaged:
            torch._foreach_lerp_(averaged, current, 1.0 - decay)
        if copied_to:
            torch._foreach_copy_(copied_to, copied_from)
        self.optimization_step += 1

    def _pairs_for(self, model: nn.Module):
        """([averaged tensors], [model tensors]) to lerp and ([averaged], [model]) to copy, grouped once."""
        lerp, copy_ = ([], []), ([], [])
        for module, ema_module in zip(model.modules(), self.averaged.modules(), strict=True):
            copy_only = isinstance(module, nn.modules.batchnorm._BatchNorm)
            for param, ema_param in zip(module.parameters(recurse=False), ema_module.parameters(recurse=False),
                                        strict=True):
                same = param.dtype == ema_param.dtype and param.device == ema_param.device
                if not same:
                    raise ValueError(f"EMA: parameter of {type(module).__name__} is {param.dtype} on {param.device}, "
                                     f"its average {ema_param.dtype} on {ema_param.device}; move both together")
                target = copy_ if copy_only or not param.requires_grad else lerp
                target[0].append(ema_param)
                target[1].append(param)
            for buf, ema_buf in zip(module.buffers(recurse=False), ema_module.buffers(recurse=False), strict=True):
                copy_[0].append(ema_buf)
                copy_[1].append(buf)
        return lerp, copy_

    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model`` (same architecture)."""
        model.load_state_dict(self.averaged.state_dict())

    def state_dict(self) -> dict:
        return {
            "averaged": self.averaged.state_dict(),
            "optimization_step": self.optimization_step,
            "decay": self.decay,
            "hyperparameters": dict(power=self.power, max_decay=self.max_decay, min_decay=self.min_decay,
                                    inv_gamma=self.inv_gamma, update_after_step=self.update_after_step),
        }

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state["averaged"])
        self.optimization_step = int(state["optimization_step"])
        self.decay = float(state["decay"])
        for name, value in state.get("hyperparameters", {}).items():
            setattr(self, name, value)
