"""Policies: one interface (``Policy``), Diffusion Policy (UNet or transformer), the IBC and LSTM-GMM baselines,
and a registry by name.

    from policy import make_policy
    policy = make_policy("diffusion_unet", normalizer, obs_shapes={"state": (5,)}, action_dim=2)
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from .base import Policy
from .diffusion import DiffusionConfig, DiffusionPolicy
from .ema import EMA
from .ibc import IBCConfig, IBCPolicy
from .lstm_gmm import LSTMGMMConfig, LSTMGMMPolicy


class PolicySpec(NamedTuple):
    config_class: type
    policy_class: type
    defaults: dict  # config values the name implies; explicit keyword arguments override them


POLICIES: dict[str, PolicySpec] = {
    "diffusion_unet": PolicySpec(DiffusionConfig, DiffusionPolicy, {"network": "unet"}),
    "diffusion_transformer": PolicySpec(DiffusionConfig, DiffusionPolicy, {"network": "transformer"}),
    "lstm_gmm": PolicySpec(LSTMGMMConfig, LSTMGMMPolicy, {}),
    "ibc": PolicySpec(IBCConfig, IBCPolicy, {}),
}


def _spec(name: str) -> PolicySpec:
    if name not in POLICIES:
        raise KeyError(f"unknown policy {name!r}; known: {sorted(POLICIES)}")
    return POLICIES[name]


def make_config(name: str, **config):
    """The config object of policy ``name`` from keyword arguments (on top of the name's defaults)."""
    spec = _spec(name)
    return spec.config_class(**{**spec.defaults, **config})


def make_policy(name: str, normalizer: nn.Module, **config) -> Policy:
    """Build policy ``name`` (a key of POLICIES) with a fitted normalizer and config keyword arguments."""
    return _spec(name).policy_class(make_config(name, **config), normalizer)


__all__ = ["Policy", "DiffusionConfig", "DiffusionPolicy", "EMA", "IBCConfig", "IBCPolicy", "LSTMGMMConfig",
           "LSTMGMMPolicy", "POLICIES", "PolicySpec", "make_config", "make_policy"]
