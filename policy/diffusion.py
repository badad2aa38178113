"""Diffusion Policy (Chi et al., RSS 2023): a denoising diffusion model over action windows.

Training: normalize the action window x0 (B, Tp, Da), draw noise eps and a step t per sample,
``x_t = scheduler.add_noise(x0, eps, t)``, and regress the network's output on eps (MSE).
Inference: encode the last To observations once, start from Gaussian noise, and denoise (DDPM with 100
steps as published, or DDIM with ~10 steps for speed) with ``policy.sampling.Sampler``: diffusers' ``step``
as precomputed per-step coefficients (same results, no host work per step); return the Ta actions starting
at index To-1 of the window, un-normalized.

Batch and obs formats: see ``policy/base.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from torch import Tensor, nn

from .base import Policy, PolicyConfigBase
from .batch_share import per_sample
from .nets.transformer import TransformerForDiffusion
from .nets.unet1d import ConditionalUnet1D, check_unet_shape
from .sampling import (MULTISTEP_SOLVERS, LinearSampler, Sampler, build_linear_sampler, build_sampler,
                       multistep_scheduler)

NETWORKS = ("unet", "transformer")
# DDPM as published, DDIM (eta 0), and diffusers' multistep ODE solvers DPM-Solver++ (2M) and UniPC (bh2), which
# sample the same trained network in a few steps (policy/sampling.py); steps by default: 100, 10, 5, 5.
INFERENCE_SCHEDULERS = ("ddpm", "ddim", *MULTISTEP_SOLVERS)


@dataclass
class DiffusionConfig(PolicyConfigBase):
    """Everything needed to build a DiffusionPolicy. Defaults are the paper's Push-T (state) settings.

    Optimizer fields left as None take the network's published values.
    """

    network: str = "unet"  # "unet" (CNN) or "transformer"

    # Horizons (Tp, To, Ta): predict Tp actions from To observations, execute Ta, replan.
    horizon: int = 16
    obs_horizon: int = 2
    action_horizon: int = 8

    # UNet
    down_dims: tuple[int, ...] = (256, 512, 1024)
    kernel_size: int = 5
    n_groups: int = 8
    diffusion_step_embed_dim: int = 256
    cond_predict_scale: bool = True

    # Transformer
    n_layers: int = 8
    n_heads: int = 4
    embed_dim: int = 256
    p_drop_emb: float = 0.0
    p_drop_attn: float = 0.3
    causal_attn: bool = True
    n_cond_layers: int = 0

    # Diffusion. Training always uses DDPM with num_train_timesteps steps.
    num_train_timesteps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "epsilon"  # "epsilon" (published) or "sample"
    clip_sample: bool = True
    inference_scheduler: str = "ddpm"  # "ddpm" or "ddim"
    num_inference_steps: int | None = None  # None: 100 for DDPM, 10 for DDIM

    # Optimizer (read by the trainer through DiffusionPolicy.get_optimizer_groups / make_optimizer)
    optimizer_lr: float = 1e-4
    optimizer_betas: tuple[float, float] | None = None  # unet (0.95, 0.999), transformer (0.9, 0.95)
    optimizer_weight_decay: float | None = None  # unet 1e-6 (all params), transformer 1e-3 (Linear weights)
    obs_encoder_weight_decay: float = 1e-6  # the vision encoder's group when the network is a transformer
    optimizer_eps: float = 1e-8
    lr_warmup_steps: int = 500  # cosine schedule with warmup, built by the trainer

    def __post_init__(self):
        self.down_dims = tuple(self.down_dims)  # lists from JSON / the command line
        if self.network not in NETWORKS:
            raise ValueError(f"network must be one of {NETWORKS}, got {self.network!r}")
        self.check_common()
        if self.network == "unet":
            check_unet_shape(self.horizon, self.down_dims, self.n_groups)
        self.check_sampling()
        if self.optimizer_betas is None:
            self.optimizer_betas = (0.95, 0.999) if self.network == "unet" else (0.9, 0.95)
        if self.optimizer_weight_decay is None:
            self.optimizer_weight_decay = 1e-6 if self.network == "unet" else 1e-3


    @property
    def passes_per_chunk(self) -> int:
        """Network passes to sample one action chunk (the solvers here take one per step)."""
        return self.num_inference_steps

    def check_sampling(self) -> None:
        """The objective's and sampler's fields (policy/flow.py has its own)."""
        if self.prediction_type not in ("epsilon", "sample"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'sample', got {self.prediction_type!r}")
        if self.inference_scheduler not in INFERENCE_SCHEDULERS:
            raise ValueError(f"inference_scheduler must be one of {', '.join(INFERENCE_SCHEDULERS)}, got "
                             f"{self.inference_scheduler!r}")
        if self.num_inference_steps is None:
            self.num_inference_steps = {"ddpm": self.num_train_timesteps, "ddim": 10}.get(self.inference_scheduler, 5)
        if not 1 <= self.num_inference_steps <= self.num_train_timesteps:
            raise ValueError(f"num_inference_steps must be in 1..{self.num_train_timesteps}, "
                             f"got {self.num_inference_steps}")


class DiffusionPolicy(Policy):
    """Diffusion Policy with a 1D UNet or a transformer as the noise-prediction network.

    Built from a DiffusionConfig and a fitted normalizer (see ``Policy.__init__``).
    """

    def __init__(self, config: DiffusionConfig, normalizer: nn.Module):
        super().__init__(config, normalizer)
        if config.network == "unet":
            self.model = ConditionalUnet1D(
                config.action_dim, config.obs_horizon * self.obs_encoder.feature_dim, config.horizon,
                config.down_dims, config.kernel_size, config.n_groups, config.diffusion_step_embed_dim,
                config.cond_predict_scale,
            )
        else:
            self.model = TransformerForDiffusion(
                config.action_dim, self.obs_encoder.feature_dim, config.horizon, config.obs_horizon,
                config.n_layers, config.n_heads, config.embed_dim, config.p_drop_emb, config.p_drop_attn,
                config.causal_attn, config.n_cond_layers,
            )
        self.build_schedulers()

    def build_schedulers(self) -> None:
        """The training noise schedule and the inference scheduler (diffusers); policy/flow.py needs neither."""
        config = self.config
        scheduler_kwargs = dict(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule,
                                clip_sample=config.clip_sample, prediction_type=config.prediction_type)
        self.noise_scheduler = DDPMScheduler(variance_type="fixed_small", **scheduler_kwargs)
        if config.inference_scheduler == "ddpm":
            self.inference_scheduler = DDPMScheduler(variance_type="fixed_small", **scheduler_kwargs)
        elif config.inference_scheduler == "ddim":
            self.inference_scheduler = DDIMScheduler(set_alpha_to_one=True, steps_offset=0, **scheduler_kwargs)
        else:
            self.inference_scheduler = multistep_scheduler(config.inference_scheduler, self.noise_scheduler)
        # (id(scheduler), num_inference_steps, device) -> (scheduler, Sampler); not module state.
        self._samplers: dict[tuple, tuple] = {}

    # ----------------------------------------------------------------------------------------- helpers
    def condition(self, obs: dict[str, Tensor]) -> Tensor:
        """Raw obs window {key: (B, To, ...)} -> conditioning: (B, To*F) for the UNet, (B, To, F) for the transformer."""
        return self.encode_obs(obs, flatten=self.config.network == "unet")

    # ------------------------------------------------------------------------------------------ training
    def training_inputs(self, batch: dict) -> tuple[Tensor, Tensor, Tensor]:
        """(conditioning, normalized action window (B, Tp, Da), Gaussian noise like it) of a raw training batch;
        shared by the objectives (flow matching: policy/flow.py)."""
        if batch["action"].shape[1:] != (self.config.horizon, self.config.action_dim):
            raise ValueError(f"action has shape {tuple(batch['action'].shape)}, expected "
                             f"(B, {self.config.horizon}, {self.config.action_dim})")
        cond = self.condition(self.obs_window(batch["obs"], last=False))
        actions = self.normalizer.normalize("action", batch["action"]).float()
        # Drawn per sample of the global batch (policy/batch_share.py): the same values whatever the world size.
        b, device = actions.shape[0], actions.device
        noise = per_sample(lambda n: torch.randn((n, *actions.shape[1:]), device=device, dtype=actions.dtype), b)
        return cond, actions, noise

    def compute_loss(self, batch: dict) -> dict[str, Tensor]:
        """batch {"obs": {key: (B, To, ...)}, "action": (B, Tp, Da)} raw -> {"loss": scalar MSE}."""
        cond, actions, noise = self.training_inputs(batch)
        b, device = actions.shape[0], actions.device
        timesteps = per_sample(lambda n: torch.randint(0, self.config.num_train_timesteps, (n,), device=device), b)
        noisy_actions = self.noise_scheduler.add_noise(actions, noise, timesteps)
        prediction = self.model(noisy_actions, timesteps, cond)
        target = noise if self.config.prediction_type == "epsilon" else actions
        return {"loss": F.mse_loss(prediction, target)}

    # ----------------------------------------------------------------------------------------- inference
    def sampler(self, num_inference_steps: int | None = None,
                device: torch.device | str = "cpu") -> Sampler | LinearSampler:
        """The denoising loop of ``inference_scheduler`` with that many steps on ``device`` (built once, cached)."""
        steps = num_inference_steps or self.config.num_inference_steps
        key = (id(self.inference_scheduler), steps, torch.device(device))
        if key not in self._samplers:  # the entry keeps its scheduler alive, so that id is not reused
            kind = self.config.inference_scheduler
            built = build_linear_sampler(self.inference_scheduler, steps, kind, device) if kind in MULTISTEP_SOLVERS \
                else build_sampler(self.inference_scheduler, steps, device)
            self._samplers[key] = (self.inference_scheduler, built)
        return self._samplers[key][1]

    @torch.no_grad()
    def sample_action_window(self, obs: dict[str, Tensor], generator: torch.Generator | None = None,
                             num_inference_steps: int | None = None, noise: Tensor | None = None) -> Tensor:
        """The whole denoised window (B, Tp, Da), un-normalized. Observations are encoded once here, not
        once per denoising step. ``generator`` (on the policy's device) makes the sampling reproducible: the
        window equals diffusers' ``scheduler.step`` loop run from the same generator state."""
        cond = self.condition(self.obs_window(obs, last=True))
        batch = cond.shape[0]
        sampler = self.sampler(num_inference_steps, cond.device)
        x = noise if noise is not None else torch.randn(  # noise: x_T given (policy/export.py)
            (batch, self.config.horizon, self.config.action_dim), generator=generator, device=cond.device,
            dtype=cond.dtype)
        x = sampler.denoise(lambda sample, timesteps: self.model(sample, timesteps, cond), x, generator)
        if isinstance(sampler, LinearSampler) and self.config.clip_sample:
            # The solvers clip each x0 estimate, but their last step extrapolates from two of them (UniPC), which can
            # leave [-1, 1]; DDPM's and DDIM's last step returns the clipped x0 itself.
            x = x.clamp(-1.0, 1.0)
        return self.normalizer.unnormalize("action", x)

    @torch.no_grad()
    def predict_action(self, obs: dict[str, Tensor], generator: torch.Generator | None = None,
                       num_inference_steps: int | None = None) -> Tensor:
        """obs {key: (B, >=To, ...)} raw (the last To steps are used) -> actions to execute (B, Ta, Da).

        Call ``.eval()`` first: in training mode image crops are random and dropout is active.
        """
        window = self.sample_action_window(obs, generator, num_inference_steps)
        start = self.config.obs_horizon - 1
        return window[:, start:start + self.config.action_horizon]

    # ------------------------------------------------------------------------------------------ optimizer
    def get_optimizer_groups(self) -> list[dict]:
        """AdamW parameter groups with their weight decay (the trainable parameters only).

        UNet: one group, all parameters, weight decay ``optimizer_weight_decay`` (1e-6).
        Transformer: its own decay / no-decay groups (1e-3 on Linear weights) plus the observation encoder
        with ``obs_encoder_weight_decay`` (1e-6), as in the reference.
        """
        def trainable(params):
            return [p for p in params if p.requires_grad]

        cfg = self.config
        if cfg.network == "unet":
            groups = [{"params": trainable(self.model.parameters()) + trainable(self.obs_encoder.parameters()),
                       "weight_decay": cfg.optimizer_weight_decay}]
        else:
            groups = self.model.optim_groups(cfg.optimizer_weight_decay)
            groups.append({"params": trainable(self.obs_encoder.parameters()),
                           "weight_decay": cfg.obs_encoder_weight_decay})
            for group in groups:
                group["params"] = trainable(group["params"])
        return [g for g in groups if g["params"]]

