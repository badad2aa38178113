"""The 1D temporal conditional UNet of Diffusion Policy (the "CNN" variant).

The network denoises an action window (B, T, Da): 1D convolutions run over time, with the actions'
dimensions as channels. Conditioning (the diffusion step and the flattened observation features)
enters every residual block through FiLM: a per-channel scale and bias.

Layout for down_dims = [d0, d1, d2] (T must be divisible by 2**(len(down_dims) - 1) = 4):

    encoder  level 0: Res(Da->d0), Res(d0->d0), down   T   -> T/2
             level 1: Res(d0->d1), Res(d1->d1), down   T/2 -> T/4
             level 2: Res(d1->d2), Res(d2->d2)          (no downsampling at the last level)
    middle   Res(d2->d2), Res(d2->d2)
    decoder  Res(2*d2->d1), Res(d1->d1), up            T/4 -> T/2   (skip from level 2)
             Res(2*d1->d0), Res(d0->d0), up            T/2 -> T     (skip from level 1)
    head     Conv1dBlock(d0->d0), Conv1d(d0->Da, kernel 1)

As in the published network, the level-0 skip is never used: the decoder has one level fewer than the
encoder. We keep that layout so parameter counts and results match the paper's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


def check_unet_shape(horizon: int, down_dims: Sequence[int], n_groups: int) -> None:
    """Raise ValueError if a UNet cannot be built with these down_dims and n_groups, or cannot take windows of
    ``horizon`` steps (DiffusionConfig checks this when a command line is parsed, the network when it is built)."""
    if not down_dims or min(down_dims) < 1:
        raise ValueError(f"down_dims must hold at least one positive channel count, got {list(down_dims)}")
    if n_groups < 1 or any(d % n_groups for d in down_dims):
        raise ValueError(f"every entry of down_dims {list(down_dims)} must be divisible by n_groups={n_groups}")
    check_unet_horizon(horizon, down_dims)


def check_unet_horizon(horizon: int, down_dims: Sequence[int]) -> None:
    """Raise ValueError if a UNet with these down_dims cannot take windows of ``horizon`` steps."""
    factor = 2 ** (len(down_dims) - 1)
    if horizon < 1 or horizon % factor != 0:
        below = (horizon // factor) * factor
        nearby = [h for h in (below, below + factor) if h >= factor]
        raise ValueError(
            f"UNet horizon {horizon} is not supported with down_dims {list(down_dims)}: it downsamples time "
            f"{len(down_dims) - 1} times by 2, so the horizon must be a multiple of {factor}; "
            f"valid nearby horizons: {nearby}"
        )


class SinusoidalPosEmb(nn.Module):
    """Diffusion step (B,) -> (B, dim) sinusoidal embedding, as in the Transformer / DDPM papers."""

    def __init__(self, dim: int):
        super().__init__()
        if dim % 2 or dim < 4:
            raise ValueError(f"sinusoidal embedding dim must be even and >= 4, got {dim}")
        self.dim = dim

    def forward(self, t: Tensor) -> Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device) * (-math.log(10000.0) / (half - 1)))
        angles = t.float()[:, None] * freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class Conv1dBlock(nn.Sequential):
    """Conv1d (same padding) -> GroupNorm -> Mish, on (B, C, T)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, n_groups: int = 8):
        super().__init__(
            nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, out_channels),
            nn.Mish(),
        )


class ConditionalResidualBlock1D(nn.Module):
    """Two Conv1dBlocks with FiLM after the first; (B, in, T), cond (B, cond_dim) -> (B, out, T)."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int, kernel_size: int = 5,
                 n_groups: int = 8, cond_predict_scale: bool = True):
        super().__init__()
        self.out_channels = out_channels
        self.cond_predict_scale = cond_predict_scale
        self.block1 = Conv1dBlock(in_channels, out_channels, kernel_size, n_groups)
        self.block2 = Conv1dBlock(out_channels, out_channels, kernel_size, n_groups)
        # FiLM: scale and bias per channel (bias only if cond_predict_scale is False).
        film_dim = 2 * out_channels if cond_predict_scale else out_channels
        self.cond_encoder = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, film_dim))
        self.residual_conv = (
            nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        out = self.block1(x)
        film = self.cond_encoder(cond).unsqueeze(-1)  # (B, film_dim, 1): same for every time step
        if self.cond_predict_scale:
            scale, bias = film.split(self.out_channels, dim=1)
            out = scale * out + bias
        else:
            out = out + film
        out = self.block2(out)
        return out + self.residual_conv(x)


class ConditionalUnet1D(nn.Module):
    """Noise-prediction network: (sample (B, T, Da), timestep (B,), global_cond (B, G)) -> (B, T, Da).

    Args:
        action_dim: Da, the channels of the denoised window.
        global_cond_dim: G, the flattened observation features (To * per-step feature dim).
        horizon: T, the window length; checked against down_dims here so a bad value fails at
            construction with a clear message instead of a shape error deep inside forward.
        down_dims: channels per resolution level ([256, 512, 1024] in the paper; [64, 128, 256] is small).
        kernel_size, n_groups: Conv1d kernel and GroupNorm groups (5 and 8 in the paper).
        diffusion_step_embed_dim: size of the sinusoidal step embedding (256 for state, 128 for image).
        cond_predict_scale: FiLM with scale and bias (True, the paper) or bias only.
    """

    def __init__(self, action_dim: int, global_cond_dim: int, horizon: int,
                 down_dims: Sequence[int] = (256, 512, 1024), kernel_size: int = 5, n_groups: int = 8,
                 diffusion_step_embed_dim: int = 256, cond_predict_scale: bool = True):
        super().__init__()
        down_dims = list(down_dims)
        check_unet_shape(horizon, down_dims, n_groups)
        self.horizon = horizon
        self.action_dim = action_dim
        self.down_dims = down_dims

        step_dim = diffusion_step_embed_dim
        self.diffusion_step_encoder = nn.Sequential(
            SinusoidalPosEmb(step_dim), nn.Linear(step_dim, 4 * step_dim), nn.Mish(), nn.Linear(4 * step_dim, step_dim)
        )
        cond_dim = step_dim + global_cond_dim

        def res(c_in: int, c_out: int) -> ConditionalResidualBlock1D:
            return ConditionalResidualBlock1D(c_in, c_out, cond_dim, kernel_size, n_groups, cond_predict_scale)

        levels = list(zip([action_dim] + down_dims[:-1], down_dims))  # (in, out) channels per encoder level
        self.down_modules = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(levels):
            is_last = i == len(levels) - 1
            downsample = nn.Identity() if is_last else nn.Conv1d(c_out, c_out, 3, stride=2, padding=1)
            self.down_modules.append(nn.ModuleList([res(c_in, c_out), res(c_out, c_out), downsample]))

        mid = down_dims[-1]
        self.mid_modules = nn.ModuleList([res(mid, mid), res(mid, mid)])

        self.up_modules = nn.ModuleList()
        for c_in, c_out in reversed(levels[1:]):
            # Input: the previous decoder output (c_out channels) concatenated with the skip (c_out).
            upsample = nn.ConvTranspose1d(c_in, c_in, 4, stride=2, padding=1)
            self.up_modules.append(nn.ModuleList([res(2 * c_out, c_in), res(c_in, c_in), upsample]))

        self.final_conv = nn.Sequential(
            Conv1dBlock(down_dims[0], down_dims[0], kernel_size, n_groups), nn.Conv1d(down_dims[0], action_dim, 1)
        )

    def forward(self, sample: Tensor, timestep: Tensor | int, global_cond: Tensor) -> Tensor:
        """sample (B, T, Da), timestep (B,) or scalar, global_cond (B, G) -> predicted noise (B, T, Da)."""
        batch, horizon, _ = sample.shape
        if horizon != self.horizon:
            check_unet_horizon(horizon, self.down_dims)  # other lengths work if they divide; else a clear error
        timestep = torch.as_tensor(timestep, device=sample.device)
        timestep = timestep.expand(batch) if timestep.ndim == 0 else timestep
        cond = torch.cat([self.diffusion_step_encoder(timestep), global_cond], dim=-1)

        x = sample.transpose(1, 2)  # (B, Da, T): channels first for Conv1d
        skips = []
        for res1, res2, downsample in self.down_modules:
            x = res2(res1(x, cond), cond)
            skips.append(x)
            x = downsample(x)
        for block in self.mid_modules:
            x = block(x, cond)
        for res1, res2, upsample in self.up_modules:
            x = torch.cat([x, skips.pop()], dim=1)
            x = upsample(res2(res1(x, cond), cond))
        x = self.final_conv(x)
        return x.transpose(1, 2)
