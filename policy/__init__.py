"""Policies: one interface (``Policy``), Diffusion Policy (UNet or transformer), flow matching on the same networks,
the IBC and LSTM-GMM baselines, and a registry by name.

    from policy import make_policy
    policy = make_policy("diffusion_unet", normalizer, obs_shapes={"state": (5,)}, action_dim=2)
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from common import ConfigError

from .base import Policy
from .consistency import ConsistencyConfig, ConsistencyPolicy
from .diffusion import DiffusionConfig, DiffusionPolicy
from .ema import EMA
from .flow import FlowConfig, FlowPolicy
from .ibc import IBCConfig, IBCPolicy
from .lstm_gmm import LSTMGMMConfig, LSTMGMMPolicy


class PolicySpec(NamedTuple):
    """A policy name: the classes it builds and the settings the name implies.

    `presets` are `section.field` values: `policy.<field>` of the config dataclass (applied by `make_config`
    and by the command line), and `training.<field>` of the training recipe (applied by the command line,
    config.py). Explicit keyword arguments and command-line overrides come after them.
    """

    config_class: type
    policy_class: type
    presets: dict


POLICIES: dict[str, PolicySpec] = {
    # A small UNet ([64,128,256], 5.4M parameters) trains in minutes on a CPU; the paper's is
    # policy.down_dims=[256,512,1024] (65.8M, the DiffusionConfig default).
    "diffusion_unet": PolicySpec(DiffusionConfig, DiffusionPolicy,
                                 {"policy.network": "unet", "policy.down_dims": [64, 128, 256]}),
    # Every transformer configuration of the reference warms up for 1000 steps (the UNet's: 500).
    "diffusion_transformer": PolicySpec(DiffusionConfig, DiffusionPolicy,
                                        {"policy.network": "transformer", "policy.lr_warmup_steps": 1000}),
    # Flow matching on the same networks and presets (policy/flow.py): acts in a few network passes.
    "flow_unet": PolicySpec(FlowConfig, FlowPolicy, {"policy.network": "unet", "policy.down_dims": [64, 128, 256]}),
    "flow_transformer": PolicySpec(FlowConfig, FlowPolicy,
                                   {"policy.network": "transformer", "policy.lr_warmup_steps": 1000}),
    # Consistency students of a diffusion_unet / diffusion_transformer teacher (distill.py; policy/consistency.py)
    "consistency_unet": PolicySpec(ConsistencyConfig, ConsistencyPolicy,
                                   {"policy.network": "unet", "policy.down_dims": [64, 128, 256]}),
    "consistency_transformer": PolicySpec(ConsistencyConfig, ConsistencyPolicy,
                                          {"policy.network": "transformer", "policy.lr_warmup_steps": 1000}),
    # robomimic's BC-RNN trains with a constant learning rate and no weight averaging.
    "lstm_gmm": PolicySpec(LSTMGMMConfig, LSTMGMMPolicy, {"training.use_ema": False}),
    "ibc": PolicySpec(IBCConfig, IBCPolicy, {}),
}


def sampling_of(policy: Policy) -> dict | None:
    """How a policy samples an action chunk, as eval.json, checkpoints and W&B record it: {"sampler", "steps",
    "passes_per_chunk"}; None for policies without an iterative sampler (IBC samples by its own search, LSTM-GMM
    in one pass)."""
    config = policy.config
    if not hasattr(config, "passes_per_chunk"):
        return None
    return {"sampler": config.inference_scheduler, "steps": config.num_inference_steps,
            "passes_per_chunk": config.passes_per_chunk}


def get_spec(name: str) -> PolicySpec:
    if name not in POLICIES:
        raise ConfigError(f"unknown policy {name!r}; known policies: {', '.join(POLICIES)}")
    return POLICIES[name]


def config_presets(name: str) -> dict:
    """The `policy.*` presets of policy `name` as config keyword arguments."""
    return {k.split(".", 1)[1]: v for k, v in get_spec(name).presets.items() if k.startswith("policy.")}


def make_config(name: str, **config):
    """The config object of policy ``name`` from keyword arguments (on top of the name's presets)."""
    return get_spec(name).config_class(**{**config_presets(name), **config})


def make_policy(name: str, normalizer: nn.Module, **config) -> Policy:
    """Build policy ``name`` (a key of POLICIES) with a fitted normalizer and config keyword arguments."""
    return get_spec(name).policy_class(make_config(name, **config), normalizer)


__all__ = ["Policy", "ConsistencyConfig", "ConsistencyPolicy", "DiffusionConfig", "DiffusionPolicy", "EMA",
           "FlowConfig", "FlowPolicy", "IBCConfig", "IBCPolicy", "LSTMGMMConfig", "LSTMGMMPolicy", "POLICIES",
           "PolicySpec", "config_presets", "get_spec", "make_config", "make_policy", "sampling_of"]
