"""The denoising loop as tensor arithmetic on precomputed per-step coefficients.

diffusers' ``scheduler.step(model_output, t, sample)`` looks the timestep up on the host every step (indexing
``alphas_cumprod`` with ``t``, ``previous_timestep`` searching ``timesteps``, ``if t > 0``), builds its scalars as
new tensors and goes through Python branches. That costs Python time per step and, on a GPU, host work between
kernels, so the loop cannot be captured into one CUDA graph. ``Sampler`` computes the same numbers once per
(scheduler, number of steps, device): step ``i`` of the loop then only indexes device tensors with the Python int
``i`` and does elementwise arithmetic (no ``.item()``, no host sync, no allocation besides the model call, the
results and the noise draw), and every branch depends only on ``i`` and the configuration, never on tensor values.
For a CUDA graph, draw the noise on the device (generator None or a CUDA generator registered with the graph): a
CPU generator makes diffusers' ``randn_tensor`` draw on the host and copy, as it does in diffusers.

The schedule still comes from the diffusers scheduler (``alphas_cumprod``, ``set_timesteps``, the previous
timestep), and the coefficients are computed with the scheduler's own float32 expressions, so a step gives
``scheduler.step(...).prev_sample`` to the last bit. Supported: ``DDPMScheduler`` with ``variance_type="fixed_small"``
and ``DDIMScheduler`` with eta = 0 (the ``step`` default), ``prediction_type`` "epsilon" or "sample",
``clip_sample`` on or off, no dynamic thresholding.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor


@dataclass(frozen=True, eq=False)
class Sampler:
    """Per-step coefficients of one diffusers schedule; ``S`` = number of denoising steps.

    Every tensor field is (S,) on the sampling device; the float ones are float32, the exact values diffusers
    computes (0-dim tensors do not take part in type promotion, so they serve float16/bfloat16/float64 samples
    just as diffusers' float32 scalars do). Step ``i`` (``t = timesteps[i]``, ``a`` = alphas_cumprod):

        x0   = (x - x0_model_coef[i] * m) / x0_denom[i]                  epsilon: sqrt(1 - a_t), sqrt(a_t)
             = m                                                         sample
        x0   = clamp(x0, -clip_range, clip_range)                        if clip_sample
        DDPM: prev = x0_coef[i] * x0 + second_coef[i] * x  + noise_std[i] * randn   (randn only where add_noise[i])
        DDIM: prev = x0_coef[i] * x0 + second_coef[i] * eps, eps = m (epsilon) or (x - sqrt(a_t) m) / sqrt(1 - a_t)
                                                                       from the *unclipped* x0 (sample)
    """

    kind: str  # "ddpm" or "ddim"
    prediction_type: str  # "epsilon" or "sample"
    clip_range: float | None  # None: no clipping of the predicted x0
    timesteps: Tensor  # (S,) int64: the model's timestep input at each step
    x0_model_coef: Tensor  # sqrt(1 - a_t)
    x0_denom: Tensor  # sqrt(a_t)
    x0_coef: Tensor  # DDPM: sqrt(a_prev) (1 - a_t / a_prev) / (1 - a_t); DDIM: sqrt(a_prev)
    second_coef: Tensor  # DDPM: of x_t, sqrt(a_t / a_prev) (1 - a_prev) / (1 - a_t); DDIM: of eps, sqrt(1 - a_prev)
    noise_std: Tensor  # DDPM: sqrt of the fixed_small variance where noise is added, else 0; DDIM: 0
    add_noise: tuple[bool, ...]  # where diffusers draws noise (DDPM: t > 0; DDIM with eta = 0: never)

    @property
    def num_steps(self) -> int:
        return len(self.add_noise)

    def step(self, i: int, model_output: Tensor, sample: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Step ``i`` of the loop: model output and current sample x_t (B, T, D) -> previous sample (B, T, D).

        Noise (DDPM) is drawn as diffusers draws it: ``randn_tensor(model_output.shape, generator,
        model_output.device, model_output.dtype)``, at the same steps, so one generator gives the same window."""
        if self.prediction_type == "epsilon":
            x0 = (sample - self.x0_model_coef[i] * model_output) / self.x0_denom[i]
        else:
            x0 = model_output
        clipped = x0 if self.clip_range is None else x0.clamp(-self.clip_range, self.clip_range)
        if self.kind == "ddpm":
            prev = self.x0_coef[i] * clipped + self.second_coef[i] * sample
            if self.add_noise[i]:
                noise = randn_tensor(model_output.shape, generator=generator, device=model_output.device,
                                     dtype=model_output.dtype)
                prev = prev + self.noise_std[i] * noise
            return prev
        if self.prediction_type == "epsilon":
            eps = model_output
        else:
            eps = (sample - self.x0_denom[i] * model_output) / self.x0_model_coef[i]
        return self.x0_coef[i] * clipped + self.second_coef[i] * eps

    def denoise(self, model: Callable[[Tensor, Tensor], Tensor], sample: Tensor,
                generator: torch.Generator | None = None) -> Tensor:
        """The whole loop: ``model(x (B, T, D), timesteps (B,) int64) -> (B, T, D)``, x_T (B, T, D) -> x_0 (B, T, D)."""
        batch = sample.shape[0]
        for i in range(self.num_steps):
            sample = self.step(i, model(sample, self.timesteps[i].expand(batch)), sample, generator)
        return sample


def build_sampler(scheduler: DDPMScheduler | DDIMScheduler, num_inference_steps: int,
                  device: torch.device | str = "cpu") -> Sampler:
    """The Sampler of ``scheduler`` (left unchanged: a copy gets ``set_timesteps``) run with ``num_inference_steps``."""
    cfg = scheduler.config
    if isinstance(scheduler, DDPMScheduler):
        kind = "ddpm"
        if cfg.variance_type != "fixed_small":
            raise ValueError(f"DDPM variance_type {cfg.variance_type!r} is not supported (only 'fixed_small')")
    elif isinstance(scheduler, DDIMScheduler):
        kind = "ddim"
    else:
        raise TypeError(f"unsupported scheduler {type(scheduler).__name__} (DDPMScheduler or DDIMScheduler)")
    if cfg.prediction_type not in ("epsilon", "sample"):
        raise ValueError(f"prediction_type {cfg.prediction_type!r} is not supported ('epsilon' or 'sample')")
    if cfg.thresholding:
        raise ValueError("dynamic thresholding is not supported")

    scheduler = copy.deepcopy(scheduler)
    scheduler.set_timesteps(num_inference_steps)
    alphas_cumprod = scheduler.alphas_cumprod  # float32, as step() uses it
    columns = {name: [] for name in ("x0_model_coef", "x0_denom", "x0_coef", "second_coef", "noise_std")}
    add_noise = []
    with torch.inference_mode(False), torch.no_grad():  # plain tensors even when built under inference_mode
        for t in scheduler.timesteps.tolist():
            # The previous timestep and the coefficients: the expressions of diffusers' step(), in its float32.
            if kind == "ddpm":
                prev_t = int(scheduler.previous_timestep(t))  # the next entry of `timesteps`, -1 after the last
                alpha_prod_t_prev = alphas_cumprod[prev_t] if prev_t >= 0 else scheduler.one
            else:
                prev_t = t - cfg.num_train_timesteps // scheduler.num_inference_steps
                alpha_prod_t_prev = alphas_cumprod[prev_t] if prev_t >= 0 else scheduler.final_alpha_cumprod
            alpha_prod_t = alphas_cumprod[t]
            beta_prod_t = 1 - alpha_prod_t
            beta_prod_t_prev = 1 - alpha_prod_t_prev
            columns["x0_model_coef"].append(beta_prod_t ** 0.5)
            columns["x0_denom"].append(alpha_prod_t ** 0.5)
            if kind == "ddpm":
                current_alpha_t = alpha_prod_t / alpha_prod_t_prev
                current_beta_t = 1 - current_alpha_t
                columns["x0_coef"].append((alpha_prod_t_prev ** 0.5 * current_beta_t) / beta_prod_t)
                columns["second_coef"].append(current_alpha_t ** 0.5 * beta_prod_t_prev / beta_prod_t)
                variance = torch.clamp((1 - alpha_prod_t_prev) / (1 - alpha_prod_t) * current_beta_t, min=1e-20)
                add_noise.append(t > 0)
                columns["noise_std"].append(variance ** 0.5 if t > 0 else torch.zeros(()))
            else:  # eta = 0: std_dev_t = 0, no noise, direction coefficient sqrt(1 - a_prev - 0)
                columns["x0_coef"].append(alpha_prod_t_prev ** 0.5)
                columns["second_coef"].append((1 - alpha_prod_t_prev) ** 0.5)
                add_noise.append(False)
                columns["noise_std"].append(torch.zeros(()))
        tensors = {name: torch.stack(values).to(device=device, dtype=torch.float32)
                   for name, values in columns.items()}
        timesteps = scheduler.timesteps.to(device=device, dtype=torch.int64)
    return Sampler(kind=kind, prediction_type=cfg.prediction_type,
                   clip_range=float(cfg.clip_sample_range) if cfg.clip_sample else None,
                   timesteps=timesteps, add_noise=tuple(add_noise), **tensors)


# ---------------------------------------------------------------------------------------- multistep solvers


@dataclass(frozen=True, eq=False)
class LinearSampler:
    """A deterministic multistep solver (DPM-Solver++, UniPC) as one matrix of coefficients.

    These diffusers schedulers (data-prediction form) first turn each model output into an x0 estimate, then every
    step is a linear map with scalar coefficients of the initial noise x_T and the x0 estimates so far (the
    multistep extrapolation and UniPC's corrector are such combinations). So x after step i is

        x_{i+1} = coefficients[i, 0] * x_T + sum_{j <= i} coefficients[i, j + 1] * x0_j,
        x0_j = clamp((x_j - sigma[j] * m_j) / alpha[j], -clip_range, clip_range),  m_j = model(x_j, timesteps[j])

    (x0_j = clamp(m_j) for a network predicting the sample; no clamp when ``clip_range`` is None). The clamp is
    diffusers' thresholding with ``sample_max_value`` 1, which is exactly clipping to [-1, 1]; a network trained
    with DDPM's ``clip_sample`` needs it, as DDPM and DDIM clip x0 at every step. The coefficients are found once by
    running the scheduler's own ``step`` on probe vectors (x_T = e_0, x0_j = e_{j+1}, in float64, the scheduler set
    to predict the sample): its output after step i *is* row i. The loop then does no host work per step.
    """

    kind: str  # "dpmsolver" or "unipc"
    prediction_type: str  # "epsilon" or "sample": what the model outputs
    clip_range: float | None  # None: x0 estimates are not clipped
    timesteps: Tensor  # (S,) int64
    alpha: Tensor  # (S,) float32: the scheduler's alpha_t, sigma_t at each step (x0 from epsilon)
    sigma: Tensor
    coefficients: Tensor  # (S, S + 1) float32, zero above the diagonal (+1)

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    def x0(self, i: int, model_output: Tensor, sample: Tensor) -> Tensor:
        """Step i's x0 estimate (as the scheduler's ``convert_model_output``)."""
        x0 = model_output if self.prediction_type == "sample" else \
            (sample - self.sigma[i] * model_output) / self.alpha[i]
        return x0 if self.clip_range is None else x0.clamp(-self.clip_range, self.clip_range)

    def denoise(self, model: Callable[[Tensor, Tensor], Tensor], sample: Tensor,
                generator: torch.Generator | None = None) -> Tensor:
        """``model(x (B, T, D), timesteps (B,) int64) -> (B, T, D)``, x_T (B, T, D) -> x_0 (B, T, D); no noise drawn."""
        batch, terms = sample.shape[0], [sample]
        for i in range(self.num_steps):
            terms.append(self.x0(i, model(sample, self.timesteps[i].expand(batch)), sample))
            row = self.coefficients[i]
            sample = row[0] * terms[0]
            for j in range(1, i + 2):
                sample = sample + row[j] * terms[j]
        return sample


MULTISTEP_SOLVERS = ("dpmsolver", "unipc")


def multistep_scheduler(kind: str, train_scheduler: DDPMScheduler):
    """diffusers' DPM-Solver++ (2nd order, multistep) or UniPC (bh2) on the training schedule of `train_scheduler`."""
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

    if kind not in MULTISTEP_SOLVERS:
        raise ValueError(f"multistep solver must be one of {MULTISTEP_SOLVERS}, got {kind!r}")
    cfg = train_scheduler.config
    # clip_sample (DDPM's per-step clipping of x0 to [-1, 1]) becomes thresholding with sample_max_value 1: the same
    # clipping (diffusers' _threshold_sample clamps its percentile s to [1, sample_max_value]).
    common = dict(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                  prediction_type=cfg.prediction_type, thresholding=bool(cfg.clip_sample),
                  sample_max_value=float(cfg.clip_sample_range))
    if kind == "dpmsolver":
        return DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, **common)
    return UniPCMultistepScheduler(solver_order=2, **common)


def build_linear_sampler(scheduler, num_inference_steps: int, kind: str, device: torch.device | str = "cpu",
                         dtype: torch.dtype = torch.float32) -> LinearSampler:
    """The LinearSampler of a deterministic diffusers scheduler (left unchanged: a copy is probed); coefficients in
    `dtype` (float64 for checks: at few steps they reach ~1e3 with opposite signs, 1/sqrt(a_T) at the first step)."""
    cfg = scheduler.config
    if cfg.prediction_type not in ("epsilon", "sample"):
        raise ValueError(f"prediction_type {cfg.prediction_type!r} is not supported ('epsilon' or 'sample')")
    if getattr(cfg, "algorithm_type", "dpmsolver++") != "dpmsolver++" or not getattr(cfg, "predict_x0", True):
        raise ValueError("only the data-prediction solvers are supported (DPM-Solver++, UniPC with predict_x0)")
    clip_range = None
    if cfg.thresholding:
        if cfg.sample_max_value != 1.0:  # s is then a per-sample percentile: not a fixed clamp
            raise ValueError(f"dynamic thresholding (sample_max_value {cfg.sample_max_value}) is not supported; "
                             "only sample_max_value 1, i.e. clipping x0 to [-1, 1]")
        clip_range = 1.0
    timed = copy.deepcopy(scheduler)
    timed.set_timesteps(num_inference_steps)
    alpha, sigma = timed._sigma_to_alpha_sigma_t(timed.sigmas[:len(timed.timesteps)].to(torch.float32))
    # The probe: the same scheduler predicting the sample, unclipped, so that its model outputs *are* the x0 terms.
    probe = type(scheduler).from_config(cfg, prediction_type="sample", thresholding=False)
    probe.set_timesteps(num_inference_steps)
    steps = len(probe.timesteps)
    # Probe k is "batch" row k, shaped (B, T, D) = (steps + 1, 1, 1): the schedulers' einsums expect that rank.
    basis = torch.eye(steps + 1, dtype=torch.float64)[:, :, None, None]
    rows = []
    with torch.inference_mode(False), torch.no_grad():
        sample = basis[0]
        for i, t in enumerate(probe.timesteps):
            sample = probe.step(basis[i + 1], t, sample).prev_sample
            rows.append(sample.reshape(-1).clone())
    return LinearSampler(kind=kind, prediction_type=cfg.prediction_type, clip_range=clip_range,
                         timesteps=probe.timesteps.to(device=device, dtype=torch.int64),
                         alpha=alpha.to(device=device, dtype=torch.float32),
                         sigma=sigma.to(device=device, dtype=torch.float32),
                         coefficients=torch.stack(rows).to(device=device, dtype=dtype))
