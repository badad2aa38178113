"""The time-series diffusion transformer of Diffusion Policy.

Tokens:
    condition tokens  [diffusion step, obs step 0, ..., obs step To-1]   (1 + To tokens)
    action tokens     one per step of the noisy action window             (T tokens)

The condition tokens go through an encoder (an MLP by default, as in the paper's configs, or
``n_cond_layers`` TransformerEncoder layers); the action tokens go through a TransformerDecoder with
causal self-attention and cross-attention to the encoded condition tokens. With causal attention, action
token t sees the step token and observation steps 0..t only (so later observations do not leak into
earlier actions).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .unet1d import SinusoidalPosEmb


class TransformerForDiffusion(nn.Module):
    """Noise-prediction network: (sample (B, T, Da), timestep (B,), cond (B, To, C)) -> (B, T, Da).

    Args:
        action_dim: Da.
        cond_dim: C, the per-step observation feature size.
        horizon: the longest action window T it will see (sizes the learned position embedding).
        obs_horizon: To, the number of observation tokens.
        n_layers, n_heads, embed_dim: decoder depth, attention heads, token size (8, 4, 256 in the paper).
        p_drop_emb: dropout on the token embeddings (0.0 in the paper's Push-T config).
        p_drop_attn: dropout inside the transformer layers (0.3 in the paper).
        causal_attn: causal masks over action tokens and from action tokens to observation tokens.
        n_cond_layers: 0 -> the condition tokens pass through an MLP; > 0 -> a TransformerEncoder.
    """

    def __init__(self, action_dim: int, cond_dim: int, horizon: int, obs_horizon: int, n_layers: int = 8,
                 n_heads: int = 4, embed_dim: int = 256, p_drop_emb: float = 0.0, p_drop_attn: float = 0.3,
                 causal_attn: bool = True, n_cond_layers: int = 0):
        super().__init__()
        if embed_dim % n_heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by n_heads {n_heads}")
        self.horizon = horizon
        self.obs_horizon = obs_horizon
        n_cond_tokens = 1 + obs_horizon

        self.input_emb = nn.Linear(action_dim, embed_dim)
        self.pos_emb = nn.Parameter(torch.zeros(1, horizon, embed_dim))
        self.time_emb = SinusoidalPosEmb(embed_dim)
        self.cond_obs_emb = nn.Linear(cond_dim, embed_dim)
        self.cond_pos_emb = nn.Parameter(torch.zeros(1, n_cond_tokens, embed_dim))
        self.drop = nn.Dropout(p_drop_emb)

        def layer_kwargs():
            return dict(d_model=embed_dim, nhead=n_heads, dim_feedforward=4 * embed_dim, dropout=p_drop_attn,
                        activation="gelu", batch_first=True, norm_first=True)

        if n_cond_layers > 0:
            self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(**layer_kwargs()), n_cond_layers,
                                                 enable_nested_tensor=False)
        else:
            self.encoder = nn.Sequential(
                nn.Linear(embed_dim, 4 * embed_dim), nn.Mish(), nn.Linear(4 * embed_dim, embed_dim)
            )
        self.decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(**layer_kwargs()), n_layers)
        self.ln_f = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, action_dim)

        # Boolean masks, True = may NOT attend (PyTorch's convention).
        if causal_attn:
            t = torch.arange(horizon)[:, None]
            self.register_buffer("self_attn_mask", torch.arange(horizon)[None, :] > t, persistent=False)
            # Condition token s is the step token (s = 0) or obs step s-1: visible to action t if s-1 <= t.
            s = torch.arange(n_cond_tokens)[None, :]
            self.register_buffer("cross_attn_mask", (s - 1) > t, persistent=False)
        else:
            self.self_attn_mask = None
            self.cross_attn_mask = None

        self.apply(self._init_weights)
        nn.init.normal_(self.pos_emb, std=0.02)
        nn.init.normal_(self.cond_pos_emb, std=0.02)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # GPT-style init: small normal weights, zero biases.
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):
            for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
                if getattr(module, name) is not None:
                    nn.init.normal_(getattr(module, name), std=0.02)
            for name in ("in_proj_bias", "bias_k", "bias_v"):
                if getattr(module, name) is not None:
                    nn.init.zeros_(getattr(module, name))
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def optim_groups(self, weight_decay: float = 1e-3) -> list[dict]:
        """AdamW parameter groups: weight decay on the weights of Linear layers (attention projections
        included), none on biases, LayerNorm and position embeddings."""
        decay, no_decay = set(), set()
        for module_name, module in self.named_modules():
            for param_name, _ in module.named_parameters(recurse=False):
                full = f"{module_name}.{param_name}" if module_name else param_name
                is_linear_weight = param_name.endswith("weight") and isinstance(
                    module, (nn.Linear, nn.MultiheadAttention))
                (decay if is_linear_weight else no_decay).add(full)
        params = dict(self.named_parameters())
        assert decay.isdisjoint(no_decay) and decay | no_decay == params.keys()
        return [
            {"params": [params[n] for n in sorted(decay)], "weight_decay": weight_decay},
            {"params": [params[n] for n in sorted(no_decay)], "weight_decay": 0.0},
        ]

    def forward(self, sample: Tensor, timestep: Tensor | int, cond: Tensor) -> Tensor:
        """sample (B, T, Da) with T <= horizon, timestep (B,) or scalar, cond (B, To, C) -> (B, T, Da)."""
        batch, horizon, _ = sample.shape
        if horizon > self.horizon:
            raise ValueError(f"action window of {horizon} steps exceeds the transformer's horizon {self.horizon}")
        if cond.shape[1] != self.obs_horizon:
            raise ValueError(f"expected {self.obs_horizon} observation steps, got cond of shape {tuple(cond.shape)}")
        timestep = torch.as_tensor(timestep, device=sample.device)
        timestep = timestep.expand(batch) if timestep.ndim == 0 else timestep

        cond_tokens = torch.cat([self.time_emb(timestep)[:, None], self.cond_obs_emb(cond)], dim=1)
        memory = self.encoder(self.drop(cond_tokens + self.cond_pos_emb))

        x = self.drop(self.input_emb(sample) + self.pos_emb[:, :horizon])
        self_mask = None if self.self_attn_mask is None else self.self_attn_mask[:horizon, :horizon]
        cross_mask = None if self.cross_attn_mask is None else self.cross_attn_mask[:horizon]
        x = self.decoder(tgt=x, memory=memory, tgt_mask=self_mask, memory_mask=cross_mask)
        return self.head(self.ln_f(x))
