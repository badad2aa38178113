"""Flow matching (Lipman et al., 2023; pi0's action head, Black et al., 2024) on Diffusion Policy's networks.

The same noise networks (1D conditional UNet or transformer), observation encoder, horizons, normalizer, EMA,
data parallelism and checkpoints as ``DiffusionPolicy``; only the objective and the sampler differ:

    path      x_t = (1 - t) * noise + t * x1         x1 the normalized action window (B, Tp, Da), t in [0, 1]
    target    v = x1 - noise                          the path's velocity; the network regresses it (MSE)
    sampling  x_0 ~ N(0, I), then N steps of dx/dt = v(x, t) from t = 0 to 1 (``num_inference_steps``):
              "euler" (one network pass per step) or "midpoint" (two per step, second order)

The network sees t * ``time_scale`` (100 = ``num_train_timesteps``) in its sinusoidal step embedding, the range the
embedding has for DDPM's step index. Time distribution (``time_distribution``): "beta", pi0's: t = s (1 - u),
u ~ Beta(1.5, 1), s = 0.999, which puts more training on the noisy end (small t), where a sampler with one or two
steps takes its largest step and decides which mode of a multimodal action distribution it goes to; "uniform" and
"logit_normal" (t = sigmoid(n), n ~ N(0, 1), Esser et al., 2024) are there to compare.

Batch and obs formats: see ``policy/base.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .batch_share import per_sample
from .diffusion import DiffusionConfig, DiffusionPolicy

INTEGRATORS = {"euler": 1, "midpoint": 2}  # network passes per step
TIME_DISTRIBUTIONS = ("beta", "uniform", "logit_normal")


def sample_time(n: int, distribution: str, device, generator: torch.Generator | None = None) -> Tensor:
    """(n,) flow times in [0, 1) drawn from `distribution` (module docstring)."""
    if distribution == "uniform":
        return torch.rand(n, device=device, generator=generator)
    if distribution == "logit_normal":
        return torch.sigmoid(torch.randn(n, device=device, generator=generator))
    # Beta(1.5, 1) by inversion: its CDF is u^1.5, so u = r^(1/1.5) for r uniform (no Beta sampler needs a generator)
    u = torch.rand(n, device=device, generator=generator) ** (1 / 1.5)
    return 0.999 * (1 - u)


def flow_loss(velocity: Callable[[Tensor, Tensor], Tensor], x1: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """MSE between velocity(x_t, t) and x1 - noise on the straight path; x1, noise (B, ...), t (B,)."""
    shape = (-1,) + (1,) * (x1.dim() - 1)
    x_t = (1 - t.view(shape)) * noise + t.view(shape) * x1
    return F.mse_loss(velocity(x_t, t), x1 - noise)


def integrate(velocity: Callable[[Tensor, Tensor], Tensor], x: Tensor, steps: int, method: str = "euler") -> Tensor:
    """x at t = 1 from x at t = 0 under dx/dt = velocity(x, t) (t given as (B,)), with `steps` equal steps."""
    if method not in INTEGRATORS:
        raise ValueError(f"integrator must be one of {sorted(INTEGRATORS)}, got {method!r}")
    dt = 1.0 / steps
    batch = x.shape[0]
    for i in range(steps):
        t = torch.full((batch,), i * dt, device=x.device, dtype=x.dtype)
        if method == "euler":
            x = x + dt * velocity(x, t)
        else:
            half = x + 0.5 * dt * velocity(x, t)
            x = x + dt * velocity(half, t + 0.5 * dt)
    return x


@dataclass
class FlowConfig(DiffusionConfig):
    """A DiffusionConfig whose sampler integrates a flow: `inference_scheduler` is the integrator ("euler" or
    "midpoint"), `num_inference_steps` its steps (default 10, as pi0). The DDPM fields (beta_schedule,
    prediction_type, clip_sample) are not used; num_train_timesteps scales the step embedding's input."""

    inference_scheduler: str = "euler"
    time_distribution: str = "beta"

    def check_sampling(self) -> None:
        if self.inference_scheduler not in INTEGRATORS:
            raise ValueError(f"inference_scheduler must be one of {sorted(INTEGRATORS)} for a flow policy, got "
                             f"{self.inference_scheduler!r} (ddpm/ddim sample diffusion policies)")
        if self.time_distribution not in TIME_DISTRIBUTIONS:
            raise ValueError(f"time_distribution must be one of {TIME_DISTRIBUTIONS}, got {self.time_distribution!r}")
        if self.num_inference_steps is None:
            self.num_inference_steps = 10
        if self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {self.num_inference_steps}")

    @property
    def passes_per_chunk(self) -> int:
        return self.num_inference_steps * INTEGRATORS[self.inference_scheduler]


class FlowPolicy(DiffusionPolicy):
    """Flow matching with DiffusionPolicy's networks (module docstring); built from a FlowConfig and a fitted
    normalizer. compute_loss / predict_action / sample_action_window take and return what DiffusionPolicy's do."""

    def build_schedulers(self) -> None:
        self.time_scale = float(self.config.num_train_timesteps)

    def velocity(self, cond: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
        return lambda x, t: self.model(x, t * self.time_scale, cond)

    def compute_loss(self, batch: dict) -> dict[str, Tensor]:
        """batch {"obs": {key: (B, To, ...)}, "action": (B, Tp, Da)} raw -> {"loss": scalar MSE on the velocity}."""
        cond, actions, noise = self.training_inputs(batch)
        b, device = actions.shape[0], actions.device
        t = per_sample(lambda n: sample_time(n, self.config.time_distribution, device), b)
        return {"loss": flow_loss(self.velocity(cond), actions, noise, t)}

    @torch.no_grad()
    def sample_action_window(self, obs: dict[str, Tensor], generator: torch.Generator | None = None,
                             num_inference_steps: int | None = None, noise: Tensor | None = None) -> Tensor:
        """The whole integrated window (B, Tp, Da), un-normalized; observations encoded once per chunk."""
        cond = self.condition(self.obs_window(obs, last=True))
        x = noise if noise is not None else torch.randn(  # noise: the start x_0 given (policy/export.py)
            (cond.shape[0], self.config.horizon, self.config.action_dim), generator=generator, device=cond.device,
            dtype=cond.dtype)
        x = integrate(self.velocity(cond), x, num_inference_steps or self.config.num_inference_steps,
                      self.config.inference_scheduler)
        return self.normalizer.unnormalize("action", x)
