"""IBC: implicit behavioral cloning (Florence et al., CoRL 2021), as the Diffusion Policy paper ran it.

An energy model scores (observation, action) pairs; the policy acts by minimizing the energy.

Energy model (Diffusion Policy's ``IbcDfoLowdimPolicy`` / ``IbcDfoHybridImagePolicy``): the To
observation steps' features (low-dim keys concatenated, cameras through the ResNet-18 / spatial-softmax
``ObservationEncoder``) flattened, concatenated with the flattened candidate action sequence, through an
MLP of 4 hidden layers of 1024 units (ReLU, dropout 0.1) to one scalar. The network outputs the logit
-E(obs, action): low energy = high probability. Its first layer is split into an observation part,
computed once per sample, and an action part, computed per candidate (the same linear map, without
repeating the observation product for every one of the ~1000 candidates).

What the energy scores: the Ta actions that are executed, entries To-1 .. To-1+Ta-1 of the window (as in
the reference). Push-T defaults follow the paper: To = 2 observations, Ta = 1 action, so horizon = 2 (the
window must hold To-1+Ta steps; the window's first action, at the previous step, is not used).

Training (InfoNCE): for each sample, the true (normalized) action sequence, with 1e-4 Gaussian noise,
plus N counter-examples drawn uniformly in the normalized action bounds; loss = cross-entropy of the
logits over the N+1 candidates with the true one as the label.

Inference (derivative-free optimization, ``derivative_free_optimize``): draw S candidates uniformly in the
bounds; K times: softmax of the logits -> resample S candidates with replacement -> add Gaussian noise of
std noise_scale * noise_shrink**k (-> clip to the bounds); then score the candidates once more and return one,
un-normalized, shape (B, Ta, Da). Two published variants, both one config away:
  - the Diffusion Policy reference's (the default; what produced the paper's IBC numbers: its configs run
    `kevin_inference=False`, pred_n_iter 5): K = 4, constant noise 0.03, no clipping, the returned candidate
    drawn from the final softmax;
  - IBC's original (Florence et al.; the reference's `kevin_inference=True`): `inference_n_iters=3
    inference_noise_scale=0.33 inference_noise_shrink=0.5 inference_clip=true inference_choice=argmax`.

Bounds: the normalized range of the training actions, [-1, 1] per dimension (a dimension that was
constant in the training data gets its single normalized value), read from the fitted normalizer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Policy, PolicyConfigBase
from .batch_share import per_sample


@dataclass
class IBCConfig(PolicyConfigBase):
    """Everything needed to build an IBCPolicy. Defaults are the Diffusion Policy paper's Push-T IBC settings."""


    # Horizons: the energy sees To observations and the Ta executed actions (window entries To-1..To-1+Ta-1).
    horizon: int = 2
    obs_horizon: int = 2
    action_horizon: int = 1

    # Energy MLP
    hidden_dim: int = 1024
    n_hidden_layers: int = 4
    dropout: float = 0.1

    # InfoNCE training
    train_n_negatives: int = 1024  # uniform counter-examples per sample
    positive_noise_std: float = 1e-4  # added to the true (normalized) action

    # Derivative-free optimizer at inference (the reference's default variant; see the module docstring)
    inference_n_samples: int = 1024
    inference_n_iters: int = 4  # resample-and-perturb rounds (the reference's pred_n_iter 5 counts the last scoring)
    inference_noise_scale: float = 0.03  # std of the resampling noise at iteration 0 (normalized units)
    inference_noise_shrink: float = 1.0  # noise std *= this after every iteration
    inference_clip: bool = False  # clip perturbed candidates to the action bounds
    inference_choice: str = "sample"  # "sample" from the final softmax, or "argmax" (lowest energy)

    # Optimizer (the reference's IBC workspace: AdamW as for Diffusion Policy, cosine schedule, 500 warmup)
    optimizer_lr: float = 1e-4
    optimizer_betas: tuple[float, float] = (0.95, 0.999)
    optimizer_weight_decay: float = 1e-6
    optimizer_eps: float = 1e-8
    lr_warmup_steps: int = 500

    def __post_init__(self):
        self.check_common()
        if self.hidden_dim < 1 or self.n_hidden_layers < 1:
            raise ValueError("hidden_dim and n_hidden_layers must be positive")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.train_n_negatives < 1 or self.inference_n_samples < 1 or self.inference_n_iters < 0:
            raise ValueError("train_n_negatives and inference_n_samples must be >= 1, inference_n_iters >= 0")
        if self.inference_choice not in ("sample", "argmax"):
            raise ValueError(f"inference_choice must be 'sample' or 'argmax', got {self.inference_choice!r}")


class EnergyMLP(nn.Module):
    """(obs features (B, D_obs), candidates (B, N, D_act)) -> logits = -energy, (B, N).

    Equal to an MLP on concat(obs, candidate): the first layer's product with the observation is computed once
    per sample and broadcast over the N candidates.
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden_dim: int = 1024, n_hidden_layers: int = 4,
                 dropout: float = 0.1):
        super().__init__()
        self.obs_in = nn.Linear(obs_dim, hidden_dim)
        self.action_in = nn.Linear(action_dim, hidden_dim, bias=False)
        self.hidden = nn.ModuleList(nn.Linear(hidden_dim, hidden_dim) for _ in range(n_hidden_layers - 1))
        self.out = nn.Linear(hidden_dim, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, obs: Tensor, candidates: Tensor) -> Tensor:
        x = self.obs_in(obs).unsqueeze(1) + self.action_in(candidates)  # (B, N, H)
        x = self.dropout(F.relu(x))
        for layer in self.hidden:
            x = self.dropout(F.relu(layer(x)))
        return self.out(x).squeeze(-1)


def derivative_free_optimize(logits_fn: Callable[[Tensor], Tensor], low: Tensor, high: Tensor, batch: int,
                             n_samples: int, n_iters: int = 4, noise_scale: float = 0.03, noise_shrink: float = 1.0,
                             generator: torch.Generator | None = None, clip: bool = False,
                             choice: str = "sample") -> Tensor:
    """IBC's derivative-free optimizer: one low-energy candidate per sample.

    logits_fn: candidates (batch, n_samples, *low.shape) -> logits (batch, n_samples), logit = -energy.
    low, high: bounds of a candidate (any shape, e.g. (Ta, Da)); candidates are drawn uniformly in them.
        Returns (batch, *low.shape).
    Iteration k: softmax(logits) -> resample with replacement -> + N(0, (noise_scale * noise_shrink**k)^2)
    (-> clip to the bounds when `clip`). The final candidates are scored once more; `choice` "argmax" returns
    the best, "sample" one drawn from their softmax. Defaults: the Diffusion Policy reference's variant.
    """
    shape = (batch, n_samples, *low.shape)
    device, dtype = low.device, low.dtype
    samples = low + (high - low) * torch.rand(shape, generator=generator, device=device, dtype=dtype)
    rows = torch.arange(batch, device=device)[:, None]
    std = noise_scale
    for _ in range(n_iters):
        probs = torch.softmax(logits_fn(samples).float(), dim=-1)
        idx = torch.multinomial(probs, n_samples, replacement=True, generator=generator)  # (batch, n_samples)
        samples = samples[rows, idx]
        samples = samples + std * torch.randn(shape, generator=generator, device=device, dtype=dtype)
        if clip:
            samples = torch.maximum(torch.minimum(samples, high), low)
        std *= noise_shrink
    logits = logits_fn(samples)
    if choice == "argmax":
        best = logits.argmax(dim=-1)  # (batch,)
    else:
        best = torch.multinomial(torch.softmax(logits.float(), dim=-1), 1, generator=generator)[:, 0]
    return samples[torch.arange(batch, device=device), best]


class IBCPolicy(Policy):
    """Implicit BC with an MLP energy model, InfoNCE training and derivative-free inference (module docstring).

    Built from a IBCConfig and a fitted normalizer (see ``Policy.__init__``).
    """

    def __init__(self, config: IBCConfig, normalizer: nn.Module):
        super().__init__(config, normalizer)
        self.energy = EnergyMLP(config.obs_horizon * self.obs_encoder.feature_dim,
                                config.action_horizon * config.action_dim, config.hidden_dim,
                                config.n_hidden_layers, config.dropout)

    # ----------------------------------------------------------------------------------------- helpers
    def _obs_features(self, obs: dict[str, Tensor], last: bool) -> Tensor:
        """Raw obs {key: (B, >=To, ...)} -> flattened features (B, To * F) (see Policy.obs_window)."""
        return self.encode_obs(self.obs_window(obs, last), flatten=True)

    def logits(self, features: Tensor, candidates: Tensor) -> Tensor:
        """features (B, To*F), candidates (B, N, Ta, Da) normalized -> logits = -energy (B, N)."""
        return self.energy(features, candidates.flatten(2)).float()

    def action_bounds(self, device=None, dtype=torch.float32) -> tuple[Tensor, Tensor]:
        """Normalized (low, high) of one action, (Da,) each: the training actions' range, i.e. [-1, 1] per
        dimension (a constant dimension: its single value). [-1, 1] if the normalizer keeps no min/max."""
        da = self.config.action_dim
        low, high = -torch.ones(da), torch.ones(da)
        fields = getattr(self.normalizer, "fields", None)
        if fields is not None and "action" in fields and hasattr(fields["action"], "min"):
            f = fields["action"]
            low = self.normalizer.normalize("action", f.min.float()).reshape(da)
            high = self.normalizer.normalize("action", f.max.float()).reshape(da)
            low, high = torch.minimum(low, high), torch.maximum(low, high)
        return low.to(device=device, dtype=dtype), high.to(device=device, dtype=dtype)

    # ------------------------------------------------------------------------------------------ training
    def compute_loss(self, batch: dict) -> dict[str, Tensor]:
        """batch {"obs": {key: (B, To, ...)}, "action": (B, Tp, Da)} raw -> {"loss": InfoNCE cross-entropy}."""
        cfg = self.config
        action = batch["action"]
        if action.shape[1:] != (cfg.horizon, cfg.action_dim):
            raise ValueError(f"action has shape {tuple(action.shape)}, expected (B, {cfg.horizon}, {cfg.action_dim})")
        features = self._obs_features(batch["obs"], last=False)
        start = cfg.obs_horizon - 1
        target = self.normalizer.normalize("action", action[:, start:start + cfg.action_horizon]).float()
        # Random values per sample of the global batch (policy/batch_share.py): the same whatever the world size.
        b, device = target.shape[0], target.device
        target = target + cfg.positive_noise_std * per_sample(
            lambda n: torch.randn((n, *target.shape[1:]), device=device, dtype=target.dtype), b)
        low, high = self.action_bounds(device)
        negatives = low + (high - low) * per_sample(
            lambda n: torch.rand(n, cfg.train_n_negatives, *target.shape[1:], device=device), b)
        candidates = torch.cat([target.unsqueeze(1), negatives], dim=1)  # (B, 1+N, Ta, Da), the true one first
        logits = self.logits(features, candidates)
        labels = torch.zeros(b, dtype=torch.long, device=logits.device)
        return {"loss": F.cross_entropy(logits, labels)}

    # ----------------------------------------------------------------------------------------- inference
    @torch.no_grad()
    def predict_action(self, obs: dict[str, Tensor], generator: torch.Generator | None = None) -> Tensor:
        """obs {key: (B, >=To, ...)} raw (the last To steps are used) -> actions to execute (B, Ta, Da).

        Call ``.eval()`` first (dropout off, center crops). ``generator`` (on the policy's device) makes the
        optimizer's sampling reproducible.
        """
        cfg = self.config
        features = self._obs_features(obs, last=True)
        low, high = self.action_bounds(features.device)
        low = low.expand(cfg.action_horizon, -1)
        high = high.expand(cfg.action_horizon, -1)
        best = derivative_free_optimize(lambda c: self.logits(features, c), low, high, features.shape[0],
                                        cfg.inference_n_samples, cfg.inference_n_iters, cfg.inference_noise_scale,
                                        cfg.inference_noise_shrink, generator, cfg.inference_clip,
                                        cfg.inference_choice)
        return self.normalizer.unnormalize("action", best)

