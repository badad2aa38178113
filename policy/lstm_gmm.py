"""LSTM-GMM: robomimic's BC-RNN with a Gaussian-mixture head, the Diffusion Policy paper's baseline.

Network (robomimic ``RNNGMMActorNetwork`` with the BC-RNN settings the paper ran, see
``modify_bc_rnn_config_for_dataset``): per-step observation features (low-dim keys concatenated, cameras
through the ResNet-18 / spatial-softmax ``ObservationEncoder``) -> 2-layer LSTM (hidden 400 for low-dim
observations, 1000 with cameras) -> no MLP -> linear heads for a 5-mode GMM over the (normalized) action:
means squashed by tanh (so they stay in the normalized action range [-1, 1]), std = softplus(.) + 1e-4,
mixture logits. Loss: negative log-likelihood of every step's action, averaged over batch and time.

Training (teacher forcing): a window of ``horizon`` = 10 steps (robomimic's seq_length) holds one
observation and one action per step; the LSTM starts from zeros at the window's first step and step t's
output predicts action t. With the loader's window layout this means ``obs_horizon = horizon`` (every
step's observation is needed) and ``action_horizon = 1``, so ``WindowDataset(horizon=cfg.horizon,
obs_horizon=cfg.obs_horizon, action_horizon=cfg.action_horizon)`` gives exactly these sequences (windows
start up to 9 steps before an episode, edge-padded with its first step, and end at its last step).

Rollout (stateful, acts every step): ``predict_action(obs)`` feeds the *latest* observation of the history
(obs[:, -1]) through the LSTM, carrying the hidden state from the previous call, and returns one action,
(B, 1, Da). As in robomimic's ``BC_RNN.get_action``, the state restarts from zeros every ``horizon`` steps:
the LSTM was trained on ``horizon``-step sequences from a zero state, and carried over hundreds of steps
it drifts out of what it was trained on (measured on Push-T: coverage 0.10 carried over the episode).
``reset()`` clears the hidden state and the step counter; the rollout calls it at the start of every episode
batch. In eval mode the GMM is sampled with robomimic's "low-noise evaluation": a mode is drawn from the
mixture weights and its mean returned with std 1e-4.

Batch and obs formats: see ``policy/base.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Policy, PolicyConfigBase

STD_ACTIVATIONS = ("softplus", "exp")


@dataclass
class LSTMGMMConfig(PolicyConfigBase):
    """Everything needed to build an LSTMGMMPolicy. Defaults are robomimic's BC-RNN-GMM (as the paper ran it)."""


    # Horizons: training sequences of `horizon` steps with one observation per step (obs_horizon = horizon);
    # one action per call at run time (action_horizon = 1).
    horizon: int = 10
    obs_horizon: int | None = None  # None: = horizon (the only value that works; kept for the loader)
    action_horizon: int = 1

    # RNN + GMM head
    rnn_hidden_dim: int | None = None  # None: 400 for low-dim observations, 1000 with a camera (robomimic)
    rnn_num_layers: int = 2
    actor_layer_dims: tuple[int, ...] = ()  # MLP between the LSTM and the GMM heads (BC-RNN: none)
    gmm_num_modes: int = 5
    gmm_min_std: float = 1e-4
    gmm_std_activation: str = "softplus"  # "softplus" or "exp"
    gmm_tanh_means: bool = True  # squash the means to [-1, 1] (robomimic does when use_tanh is off)
    gmm_low_noise_eval: bool = True  # eval mode: std 1e-4 for every mode

    # Optimizer: robomimic uses Adam, lr 1e-4, no weight decay, constant learning rate
    optimizer_lr: float = 1e-4
    optimizer_betas: tuple[float, float] = (0.9, 0.999)
    optimizer_weight_decay: float = 0.0
    optimizer_eps: float = 1e-8
    lr_warmup_steps: int = 0  # robomimic has no warmup (and a constant lr: the trainer's cosine decay is extra)

    def __post_init__(self):
        self.actor_layer_dims = tuple(int(d) for d in self.actor_layer_dims)
        if self.obs_horizon is None:
            self.obs_horizon = self.horizon
        if self.obs_horizon != self.horizon:
            raise ValueError(f"LSTM-GMM needs one observation per step of its training sequence: obs_horizon must "
                             f"equal horizon ({self.horizon}), got {self.obs_horizon}")
        if self.action_horizon != 1:
            raise ValueError(f"LSTM-GMM acts every step (stateful): action_horizon must be 1, got "
                             f"{self.action_horizon}")
        self.check_common()
        if self.rnn_num_layers < 1 or self.gmm_num_modes < 1:
            raise ValueError("rnn_num_layers and gmm_num_modes must be positive")
        if self.gmm_std_activation not in STD_ACTIVATIONS:
            raise ValueError(f"gmm_std_activation must be one of {STD_ACTIVATIONS}, got {self.gmm_std_activation!r}")
        if self.gmm_min_std < 0:
            raise ValueError(f"gmm_min_std must be >= 0, got {self.gmm_min_std}")
        if self.rnn_hidden_dim is None:
            self.rnn_hidden_dim = 1000 if self.image_keys else 400
        if self.rnn_hidden_dim < 1:
            raise ValueError(f"rnn_hidden_dim must be positive, got {self.rnn_hidden_dim}")


class LSTMGMMPolicy(Policy):
    """BC-RNN with a GMM head (robomimic), stateful at run time; see the module docstring.

    Built from a LSTMGMMConfig and a fitted normalizer (see ``Policy.__init__``).
    """

    def __init__(self, config: LSTMGMMConfig, normalizer: nn.Module):
        super().__init__(config, normalizer)
        self.rnn = nn.LSTM(self.obs_encoder.feature_dim, config.rnn_hidden_dim, config.rnn_num_layers,
                           batch_first=True)
        layers, width = [], config.rnn_hidden_dim
        for dim in config.actor_layer_dims:
            layers += [nn.Linear(width, dim), nn.ReLU()]
            width = dim
        self.mlp = nn.Sequential(*layers)
        k, da = config.gmm_num_modes, config.action_dim
        self.mean_head = nn.Linear(width, k * da)
        self.scale_head = nn.Linear(width, k * da)
        self.logits_head = nn.Linear(width, k)
        self._hidden: tuple[Tensor, Tensor] | None = None  # run-time LSTM state (h, c); not saved
        self._steps_since_reset = 0  # the state restarts every `horizon` steps (robomimic's rnn_horizon)

    # ------------------------------------------------------------------------------------------ network
    def gmm_params(self, features: Tensor, hidden: tuple[Tensor, Tensor] | None = None
                   ) -> tuple[Tensor, Tensor, Tensor, tuple[Tensor, Tensor]]:
        """Features (B, T, F) -> means (B, T, K, Da), stds (B, T, K, Da), logits (B, T, K), new hidden state.

        Means and stds are of the normalized action. In eval mode with ``gmm_low_noise_eval`` the stds are 1e-4.
        """
        cfg = self.config
        out, hidden = self.rnn(features, hidden)
        out = self.mlp(out).float()  # heads in float32 (bf16 autocast makes the log-likelihood coarse)
        b, t = out.shape[:2]
        means = self.mean_head(out).float().reshape(b, t, cfg.gmm_num_modes, cfg.action_dim)
        if cfg.gmm_tanh_means:
            means = torch.tanh(means)
        if cfg.gmm_low_noise_eval and not self.training:
            stds = torch.full_like(means, 1e-4)
        else:
            raw = self.scale_head(out).float().reshape(b, t, cfg.gmm_num_modes, cfg.action_dim)
            stds = (F.softplus(raw) if cfg.gmm_std_activation == "softplus" else torch.exp(raw)) + cfg.gmm_min_std
        logits = self.logits_head(out).float()
        return means, stds, logits, hidden

    @staticmethod
    def gmm_log_prob(means: Tensor, stds: Tensor, logits: Tensor, x: Tensor) -> Tensor:
        """log p(x) under the mixture: means/stds (..., K, Da), logits (..., K), x (..., Da) -> (...)."""
        comp = torch.distributions.Normal(means, stds).log_prob(x.unsqueeze(-2)).sum(-1)  # (..., K)
        return torch.logsumexp(comp + torch.log_softmax(logits, dim=-1), dim=-1)

    @staticmethod
    def gmm_sample(means: Tensor, stds: Tensor, logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One sample per mixture: means/stds (N, K, Da), logits (N, K) -> (N, Da)."""
        probs = torch.softmax(logits, dim=-1)
        mode = torch.multinomial(probs, 1, generator=generator)  # (N, 1)
        idx = mode[..., None].expand(-1, 1, means.shape[-1])
        mean, std = means.gather(1, idx)[:, 0], stds.gather(1, idx)[:, 0]
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + std * noise

    # ------------------------------------------------------------------------------------------ training
    def compute_loss(self, batch: dict) -> dict[str, Tensor]:
        """batch {"obs": {key: (B, T, ...)}, "action": (B, T, Da)} raw, T = horizon -> {"loss": GMM NLL}."""
        cfg = self.config
        action = batch["action"]
        if action.shape[1:] != (cfg.horizon, cfg.action_dim):
            raise ValueError(f"action has shape {tuple(action.shape)}, expected (B, {cfg.horizon}, {cfg.action_dim})")
        self.check_obs_keys(batch["obs"])
        obs = {k: batch["obs"][k] for k in cfg.obs_shapes}
        steps = next(iter(obs.values())).shape[1]
        if steps != cfg.horizon:
            raise ValueError(f"LSTM-GMM trains on one observation per action step: obs have {steps} steps, "
                             f"actions {cfg.horizon} (build the windows with obs_horizon = horizon = {cfg.horizon})")
        means, stds, logits, _ = self.gmm_params(self.encode_obs(obs, flatten=False))
        target = self.normalizer.normalize("action", action).float()
        log_prob = self.gmm_log_prob(means, stds, logits, target)  # (B, T)
        return {"loss": -log_prob.mean()}

    # ----------------------------------------------------------------------------------------- inference
    def reset(self) -> None:
        """Forget the LSTM state (start of an episode)."""
        self._hidden = None
        self._steps_since_reset = 0

    @torch.no_grad()
    def predict_action(self, obs: dict[str, Tensor], generator: torch.Generator | None = None) -> Tensor:
        """obs {key: (B, >=1, ...)} raw -> the next action (B, 1, Da), un-normalized.

        Only the latest observation (obs[:, -1]) is used; the LSTM state carries over from the previous call
        until ``reset()``. Call ``.eval()`` first (center crops, low-noise GMM sampling).
        """
        self.check_obs_keys(obs)
        latest = {k: obs[k][:, -1:] for k in self.config.obs_shapes}
        features = self.encode_obs(latest, flatten=False)  # (B, 1, F)
        batch = features.shape[0]
        if self._hidden is not None and self._hidden[0].shape[1] != batch:
            raise ValueError(f"predict_action got a batch of {batch} but the LSTM state holds "
                             f"{self._hidden[0].shape[1]} episodes: call reset() at the start of every episode batch")
        if self._steps_since_reset % self.config.horizon == 0:
            self._hidden = None  # zero state, as at the start of a training sequence
        self._steps_since_reset += 1
        means, stds, logits, hidden = self.gmm_params(features, self._hidden)
        self._hidden = tuple(h.detach() for h in hidden)
        action = self.gmm_sample(means[:, 0], stds[:, 0], logits[:, 0], generator)  # (B, Da)
        return self.normalizer.unnormalize("action", action).unsqueeze(1)

