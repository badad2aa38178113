"""Consistency distillation of a trained Diffusion Policy into a one-step (or few-step) student.

Consistency models (Song et al., 2023) as Consistency Policy (Prasad et al., RSS 2024) and Latent Consistency Models
(Luo et al., 2023) distill them: the student f(x_t, t) maps any point of the teacher's probability-flow ODE
trajectory straight to its end, the clean action window, so one network pass acts.

    f(x_t, t) = c_skip(t) x_t + c_out(t) F(x_t, t)       F: the student network's output, the clean window itself;
                c_skip = s_d^2 / ((10 t')^2 + s_d^2),   c_out = 10 t' / sqrt((10 t')^2 + s_d^2),  t' = t + 1, s_d = 0.5
                (LCM's boundary condition: f = x_t before the first noise step, t = -1)
    distillation, per batch: x_t = q(x_0, t) for t on a grid of every `skip`-th DDPM step; one DDIM step of the
                teacher from t to s = t - skip gives x_s; the loss is |f_student(x_t, t) - f_target(x_s, s)|^2 with
                f_target an exponential moving average (`target_ema`) of the student, f(x, -1) = x
    sampling:   k steps (`num_inference_steps`): x = f(x_T, t_1); then for the next t_i: x = f(q(x, t_i), t_i)
                (Song et al.'s multistep sampling), t_i evenly spaced from step T - 1 down

The student's output is the clean window (EDM's and Consistency Policy's parametrization), not epsilon as the
teacher's: x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t) multiplies an epsilon error by 1 / sqrt(a_99) = 2029 on the
100-step cosine schedule, so an epsilon student cannot act in one step from pure noise (measured: 0.17 coverage on
Push-T after distillation, against 0.96 for its teacher's DDPM-100).
The student has the teacher's network and observation encoder and starts from the teacher's weights (distill.py).
Teacher and target network are attached for training only (``attach_teacher``); checkpoints hold the student.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch import Tensor

from .batch_share import per_sample
from .diffusion import DiffusionConfig, DiffusionPolicy


@dataclass
class ConsistencyConfig(DiffusionConfig):
    """A DiffusionConfig for a consistency student: `inference_scheduler` is "consistency", `num_inference_steps`
    the chained steps (1: one pass). `teacher_checkpoint` records where the student was distilled from."""

    inference_scheduler: str = "consistency"
    skip: int = 10  # DDPM steps per distillation step (LCM's skipping step; 100 / 10 = 10 boundaries)
    target_ema: float = 0.95  # the target network's moving-average decay (consistency distillation's mu)
    sigma_data: float = 0.5
    teacher_checkpoint: str = ""

    def check_sampling(self) -> None:
        if self.inference_scheduler != "consistency":
            raise ValueError(f"inference_scheduler must be 'consistency' for a consistency student, got "
                             f"{self.inference_scheduler!r}: the student was not trained to denoise step by step "
                             "(evaluate its teacher for DDPM or DDIM)")
        if self.num_inference_steps is None:
            self.num_inference_steps = 1
        if not 1 <= self.num_inference_steps <= self.num_train_timesteps // self.skip:
            raise ValueError(f"num_inference_steps must be in 1..{self.num_train_timesteps // self.skip} for a "
                             f"consistency student (skip={self.skip}), got {self.num_inference_steps}")
        if not 1 <= self.skip < self.num_train_timesteps:
            raise ValueError(f"skip must be in 1..{self.num_train_timesteps - 1}, got {self.skip}")
        if not 0 <= self.target_ema < 1:
            raise ValueError(f"target_ema must be in [0, 1), got {self.target_ema}")


class _Attached:
    """Teacher and target network, kept out of the student's modules (state_dict, .to, the EMA's deepcopy)."""

    def __init__(self, teacher, target):
        self.teacher, self.target = teacher, target

    def __deepcopy__(self, memo):
        return self


class ConsistencyPolicy(DiffusionPolicy):
    """A consistency student (module docstring); the interface of DiffusionPolicy."""

    def build_schedulers(self) -> None:
        """The teacher's training noise schedule (its alphas_cumprod define the trajectory); no inference scheduler."""
        c = self.config
        self.noise_scheduler = DDPMScheduler(num_train_timesteps=c.num_train_timesteps, beta_schedule=c.beta_schedule,
                                             clip_sample=c.clip_sample, prediction_type=c.prediction_type,
                                             variance_type="fixed_small")
        self.__dict__["_attached"] = None

    def x0_and_eps(self, output: Tensor, x: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        """The clean window (clipped to [-1, 1]) and the noise a network's output means at x with alphas_cumprod a."""
        if self.config.prediction_type == "epsilon":
            return ((x - (1 - a).sqrt() * output) / a.sqrt()).clamp(-1.0, 1.0), output
        x0 = output.clamp(-1.0, 1.0)
        return x0, (x - a.sqrt() * x0) / (1 - a).sqrt()

    # ------------------------------------------------------------------------------------ the consistency function
    def boundary(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(c_skip, c_out) at DDPM steps t (B,), t = -1 before the first noise step (where f(x) = x)."""
        scaled = 10.0 * (t.float() + 1)
        sd2 = self.config.sigma_data ** 2
        return sd2 / (scaled ** 2 + sd2), scaled / (scaled ** 2 + sd2) ** 0.5

    def consistency(self, model, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """f(x_t, t) for a network `model` (the student's or the target's), whose output is the clean window."""
        c_skip, c_out = (c.view(-1, 1, 1).to(x.dtype) for c in self.boundary(t))
        return c_skip * x + c_out * model(x, t.clamp(min=0), cond)

    # ----------------------------------------------------------------------------------------------- training
    def attach_teacher(self, teacher: DiffusionPolicy) -> None:
        """The frozen teacher (a DiffusionPolicy on the same device) and a target copy of the student."""
        teacher = teacher.eval().requires_grad_(False)
        target = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.__dict__["_attached"] = _Attached(teacher, target)

    @torch.no_grad()
    def _update_target(self) -> None:
        mu = self.config.target_ema
        for t, s in zip(self._attached.target.parameters(), self.model.parameters()):
            t.lerp_(s.detach(), 1 - mu)

    def compute_loss(self, batch: dict) -> dict[str, Tensor]:
        """batch {"obs": ..., "action": (B, Tp, Da)} raw -> {"loss": consistency distillation MSE}."""
        if self.__dict__.get("_attached") is None:
            raise RuntimeError("a consistency student trains by distillation: python distill.py checkpoint=TEACHER "
                               "(attach_teacher before compute_loss)")
        attached, cfg = self._attached, self.config
        if self.training:
            self._update_target()  # the target trails the student's weights of the previous steps
        obs = self.obs_window(batch["obs"], last=False)
        cond = self.condition(obs)
        x0 = self.normalizer.normalize("action", batch["action"]).float()
        b, device = x0.shape[0], x0.device
        boundaries = cfg.num_train_timesteps // cfg.skip
        t = per_sample(lambda n: (torch.randint(1, boundaries + 1, (n,), device=device) * cfg.skip - 1), b)
        s = t - cfg.skip  # -1 at the first boundary: f(x, -1) = x
        noise = per_sample(lambda n: torch.randn((n, *x0.shape[1:]), device=device, dtype=x0.dtype), b)
        x_t = self.noise_scheduler.add_noise(x0, noise, t)
        with torch.no_grad():  # one DDIM step of the teacher from t to s, then the target's f at s
            teacher_cond = attached.teacher.condition(obs)
            alphas = self.noise_scheduler.alphas_cumprod.to(device)
            a_t = alphas[t].view(-1, 1, 1)
            a_s = torch.where(s >= 0, alphas[s.clamp(min=0)], torch.ones_like(alphas[0])).view(-1, 1, 1)
            x0_teacher, eps = self.x0_and_eps(attached.teacher.model(x_t, t, teacher_cond), x_t, a_t)
            x_s = a_s.sqrt() * x0_teacher + (1 - a_s).sqrt() * eps
            target = self.consistency(attached.target, x_s, s, cond.detach())
        prediction = self.consistency(self.model, x_t, t, cond)
        return {"loss": F.mse_loss(prediction, target)}

    # ---------------------------------------------------------------------------------------------- inference
    def sampling_timesteps(self, steps: int) -> list[int]:
        """The k DDPM steps the student is applied at: the last, then evenly spaced boundaries down."""
        boundaries = [b * self.config.skip - 1 for b in range(self.config.num_train_timesteps // self.config.skip,
                                                             0, -1)]
        picks = torch.linspace(0, len(boundaries) - 1, steps + 1)[:-1].round().long().tolist()
        return [boundaries[i] for i in picks]

    @torch.no_grad()
    def sample_action_window(self, obs: dict[str, Tensor], generator: torch.Generator | None = None,
                             num_inference_steps: int | None = None, noise: Tensor | None = None) -> Tensor:
        """The window (B, Tp, Da) un-normalized, in `num_inference_steps` passes (default the config's: 1)."""
        cond = self.condition(self.obs_window(obs, last=True))
        shape = (cond.shape[0], self.config.horizon, self.config.action_dim)
        x = noise if noise is not None else torch.randn(shape, generator=generator, device=cond.device,
                                                        dtype=cond.dtype)
        for i, step in enumerate(self.sampling_timesteps(num_inference_steps or self.config.num_inference_steps)):
            t = torch.full((shape[0],), step, device=cond.device, dtype=torch.long)
            if i:  # back onto the trajectory at t, then to its end again
                x = self.noise_scheduler.add_noise(x, torch.randn(shape, generator=generator, device=cond.device,
                                                                  dtype=cond.dtype), t)
            x = self.consistency(self.model, x, t, cond)
            if self.config.clip_sample:  # the normalized range, as the teacher's sampler clips its x0
                x = x.clamp(-1.0, 1.0)
        return self.normalizer.unnormalize("action", x)
