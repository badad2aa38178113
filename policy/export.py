"""Export a policy's action-chunk function to ONNX for robot computers, and check it against PyTorch.

    python export.py checkpoint=outputs/<run>/checkpoints/last.pt output=chunk.onnx [policy.num_inference_steps=N]

The exported graph is one call per action chunk: (observation window {key: (B, To, ...)}, initial noise
(B, Tp, Da)) -> actions to execute (B, Ta, Da), un-normalized: the observation encoder once, every network pass of
the sampler unrolled, the normalizer. Samplers that draw no noise after the first (a consistency student's one
step, flow matching's Euler / midpoint, DPM-Solver++, UniPC) give the same actions as `predict_action` from the
same noise; DDPM (noise at every step), chained consistency steps and DDIM (the exporter fails on its loop) are
refused, naming what exports instead. Why ONNX Runtime: measured on
2 CPU cores at batch 1 for a one-pass chunk of the UNet [32, 64, 128], one thread, eager PyTorch 4.0-4.4 ms,
torch.compile 2.4-2.7 ms (after a ~25 s compile), OpenVINO 1.3-1.4 ms, ONNX Runtime 1.0-1.5 ms, and ONNX Runtime
kept that next to a busy job (docs/sampling.md, "The batch-1 chunk near the hardware"). `<output>.json` beside it
names inputs, shapes and the sampler. export.py checks ONNX Runtime's actions against PyTorch's (1e-4) and prints
both latencies.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from common import ConfigError


class ChunkFunction(nn.Module):
    """(obs tensors in `keys` order, noise) -> actions (B, Ta, Da): one action chunk, deterministic given the noise."""

    def __init__(self, policy: nn.Module):
        super().__init__()
        config = policy.config
        scheduler = getattr(config, "inference_scheduler", None)
        if scheduler is None:
            raise ConfigError(f"{type(policy).__name__}: only diffusion, flow and consistency policies export")
        if scheduler == "ddpm":
            raise ConfigError("policy.inference_scheduler=ddpm draws noise at every step; export a deterministic "
                              "sampler (dpmsolver, unipc), a flow policy or a consistency student")
        if scheduler == "ddim":  # the TorchScript-based exporter fails on DDIM's loop (an aten::stack it cannot type)
            raise ConfigError("policy.inference_scheduler=ddim does not export yet; the same checkpoint exports with "
                              "policy.inference_scheduler=dpmsolver or unipc (3-10 steps)")
        if scheduler == "consistency" and config.num_inference_steps != 1:
            raise ConfigError("a chained consistency student draws noise between its steps; export it with "
                              "policy.num_inference_steps=1")
        self.policy, self.keys = policy.eval(), list(config.obs_shapes)

    def forward(self, *inputs: Tensor) -> Tensor:
        *obs, noise = inputs
        window = self.policy.sample_action_window(dict(zip(self.keys, obs)), noise=noise)
        start = self.policy.config.obs_horizon - 1
        return window[:, start:start + self.policy.config.action_horizon]

    def example(self, batch: int = 1, seed: int = 0) -> tuple[Tensor, ...]:
        cfg, g = self.policy.config, torch.Generator().manual_seed(seed)
        obs = [torch.rand((batch, cfg.obs_horizon, *cfg.obs_shapes[k]), generator=g) for k in self.keys]
        return (*obs, torch.randn((batch, cfg.horizon, cfg.action_dim), generator=g))


def export_onnx(policy: nn.Module, path: str | Path) -> Path:
    """Write the chunk function of `policy` to `path` (batch size dynamic) and its description to `<path>.json`."""
    fn = ChunkFunction(policy)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [*fn.keys, "noise"]
    with torch.no_grad():
        torch.onnx.export(fn, fn.example(), str(path), input_names=names, output_names=["actions"], dynamo=False,
                          opset_version=17, dynamic_axes={n: {0: "batch"} for n in [*names, "actions"]})
    cfg = policy.config
    Path(str(path) + ".json").write_text(json.dumps({
        "inputs": {**{k: [cfg.obs_horizon, *cfg.obs_shapes[k]] for k in fn.keys},
                   "noise": [cfg.horizon, cfg.action_dim]},
        "output": {"actions": [cfg.action_horizon, cfg.action_dim]},
        "sampler": {"name": cfg.inference_scheduler, "steps": cfg.num_inference_steps}}, indent=1))
    return path


def onnx_session(path: str | Path, threads: int = 1):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def call_times_ms(fn, calls: int = 200, warmup: int = 5) -> list[float]:
    """Milliseconds of each of `calls` calls of `fn()` after `warmup` untimed ones, sorted."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return sorted(times)


def median_ms(fn, calls: int = 200) -> float:
    return statistics.median(call_times_ms(fn, calls))
