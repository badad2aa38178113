"""Policy speed on the CPU: training step time and inference latency, next to the reference implementation's.

    .venv/bin/python bench/bench_policy.py [--quick] [--threads N] [--no-baselines]
    .venv/bin/python bench/bench_policy.py --checkpoint outputs/<run>/checkpoints/last.pt [--quick]
    .venv/bin/python bench/bench_policy.py --quick --models unet_small --batches 8 --repeats 1   # seconds

(a) Training step = forward + backward + AdamW step (``policy.make_optimizer()``, no gradient clipping) at
    batch 256 and 64, Push-T keypoint observations (obs_shapes {"keypoints": (20,)}, action_dim 2, Tp=16,
    To=2, Ta=8), for the UNet [256,512,1024] (the paper's), the UNet [64,128,256] (small) and the
    transformer (8 layers); median of timed steps after a warm-up step.
(b) Inference latency per action chunk at batch 1 (``predict_action`` under ``torch.inference_mode``,
    median over calls after a warm-up call) for DDPM-100, DDIM-10 and DDIM-4. "net" is one noise-prediction
    forward pass; "overhead" is the share of the chunk spent outside the network (scheduler, Python).
The baselines (LSTM-GMM, IBC, paper sizes) are timed too: they act one step per call (Ta=1). IBC's
training step is timed at small batches only: with 1024 counter-examples every sample is 1025 MLP rows.

Reference figures: docs/design.md section 7.3 (the Diffusion Policy repository run unmodified on a 2-core machine;
they vary 20-30% between runs). "speedup" = reference / ours. Timings depend heavily on what else runs on
the machine: the header prints the load average, and compare like thread counts (the reference used 2).

--checkpoint PATH: time that checkpoint's policy (as written by train.py: "policy_name", "policy_config",
"policy", "ema") with synthetic inputs of its observation shapes, instead of the built-in set.

--models picks rows of the built-in set (default: all; names below), --batches the training-step batch
sizes (default 256 64; the reference has figures for those two only), --repeats the number of timed calls
per figure (default: 5 training steps, 10-200 inference calls; fewer with --quick).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import is_image_shape, run_cli  # noqa: E402
from datasets.normalizer import Normalizer  # noqa: E402
from policy import DiffusionPolicy, make_policy  # noqa: E402
from runlib import cpu_model, load_checkpoint, policy_from_checkpoint  # noqa: E402

OBS_SHAPES = {"keypoints": (20,)}  # Push-T keypoint observations: 9 keypoints of the T + the agent, (x, y) each
ACTION_DIM = 2
ACTION_RANGE = (0.0, 512.0)

# docs/design.md section 7.3: seconds per training step at batch 256 / 64, seconds per DDPM-100 chunk at batch 1.
REFERENCE = {
    "unet_paper": {"train": {256: 3.05, 64: 0.98}, "ddpm100": 2.4, "params": "65.8M"},
    "unet_small": {"train": {256: 0.27, 64: 0.10}, "ddpm100": 0.406, "params": "5.4M"},
    "transformer": {"train": {256: 1.47}, "ddpm100": 0.7, "params": "8.97M"},
}
MODELS = {  # name -> (label, policy name, config overrides)
    "unet_paper": ("UNet [256,512,1024]", "diffusion_unet", {"down_dims": (256, 512, 1024)}),
    "unet_small": ("UNet [64,128,256]", "diffusion_unet", {"down_dims": (64, 128, 256)}),
    "transformer": ("Transformer 8 layers", "diffusion_transformer", {}),
}
BASELINES = {
    "lstm_gmm": ("LSTM-GMM 2x400, 5 modes", "lstm_gmm", {}),
    "ibc": ("IBC 4x1024, DFO 1024x3", "ibc", {}),
}


# ------------------------------------------------------------------------------------------------ inputs
def make_normalizer(obs_shapes: dict, action_dim: int) -> Normalizer:
    """A fitted normalizer: low-dim keys and actions in [0, 512] (Push-T pixels), images the uint8 map."""
    rng = np.random.default_rng(0)
    data = {k: rng.uniform(*ACTION_RANGE, (64, *s)).astype(np.float32) for k, s in obs_shapes.items() if len(s) != 3}
    data["action"] = rng.uniform(*ACTION_RANGE, (64, action_dim)).astype(np.float32)
    return Normalizer.fit(data, image_keys=[k for k, s in obs_shapes.items() if is_image_shape(s)])


def synthetic_obs(obs_shapes: dict, batch: int, steps: int, normalizer, generator: torch.Generator) -> dict:
    """Raw observations (B, steps, ...): low-dim keys inside the normalizer's range, images random uint8."""
    obs = {}
    for key, shape in obs_shapes.items():
        if is_image_shape(shape):
            obs[key] = torch.randint(0, 256, (batch, steps, *shape), dtype=torch.uint8, generator=generator)
        else:
            y = torch.rand(batch, steps, *shape, generator=generator) * 2 - 1
            obs[key] = normalizer.unnormalize(key, y)
    return obs


def synthetic_batch(policy, batch: int, generator: torch.Generator) -> dict:
    cfg = policy.config
    action = policy.normalizer.unnormalize(
        "action", torch.rand(batch, cfg.horizon, cfg.action_dim, generator=generator) * 2 - 1)
    return {"obs": synthetic_obs(cfg.obs_shapes, batch, cfg.obs_horizon, policy.normalizer, generator),
            "action": action.float()}


def build(policy_name: str, overrides: dict):
    """Policy `policy_name` with its registry presets (e.g. the small UNet), then `overrides`."""
    return make_policy(policy_name, make_normalizer(OBS_SHAPES, ACTION_DIM), obs_shapes=OBS_SHAPES,
                       action_dim=ACTION_DIM, **overrides)


def n_params(policy) -> str:
    return f"{sum(p.numel() for p in policy.parameters()) / 1e6:.2f}M"


# ----------------------------------------------------------------------------------------------- timing
def median_time(fn, repeats: int, warmup: int = 1, budget_s: float | None = None) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls; stops early (after at least
    one timed call) once ``budget_s`` seconds of timed calls have passed."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if budget_s is not None and sum(times) >= budget_s:
            break
    return statistics.median(times)


def train_step_times(policy, batch_sizes, repeats: int, budget_s: float) -> dict[int, float]:
    """{batch: seconds per forward + backward + AdamW step}; one untimed step first (allocates the optimizer
    state), and one untimed step per batch size (first-call costs of new shapes)."""
    policy.train()
    optimizer = policy.make_optimizer()
    generator = torch.Generator().manual_seed(0)
    out = {}
    for b in batch_sizes:
        batch = synthetic_batch(policy, b, generator)

        def step():
            loss = policy.compute_loss(batch)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        out[b] = median_time(step, repeats, warmup=1, budget_s=budget_s)
    return out


def latency(policy, obs: dict, repeats: int, budget_s: float, **kwargs) -> float:
    policy.eval()

    def call():
        with torch.inference_mode():
            policy.predict_action(obs, **kwargs)

    policy.reset()
    return median_time(call, repeats, warmup=1, budget_s=budget_s)


def with_scheduler(policy: DiffusionPolicy, scheduler: str, steps: int) -> DiffusionPolicy:
    """The same network (shared weights) with another inference scheduler / number of steps."""
    if policy.config.inference_scheduler == scheduler and policy.config.num_inference_steps == steps:
        return policy
    cfg = dataclasses.replace(policy.config, inference_scheduler=scheduler, num_inference_steps=steps)
    other = DiffusionPolicy(cfg, policy.normalizer)
    other.obs_encoder, other.model = policy.obs_encoder, policy.model
    return other


def net_forward_time(policy: DiffusionPolicy, obs: dict, repeats: int) -> float:
    """Seconds of one noise-prediction forward pass at batch 1 (observations encoded outside)."""
    policy.eval()
    cfg = policy.config
    with torch.inference_mode():
        cond = policy.condition(policy.obs_window(obs, last=True))
        x = torch.randn(1, cfg.horizon, cfg.action_dim)
        t = torch.tensor([50])
        policy.model(x, t, cond)
        start = time.perf_counter()
        for _ in range(repeats):
            policy.model(x, t, cond)
    return (time.perf_counter() - start) / repeats


SCHEDULES = [("DDPM-100", "ddpm", 100), ("DDIM-10", "ddim", 10), ("DDIM-4", "ddim", 4)]


def diffusion_latencies(policy: DiffusionPolicy, obs: dict, quick: bool, repeats: int | None = None) -> list[tuple]:
    """[(schedule label, steps, seconds per chunk)]; `repeats` timed calls each (default: by --quick and steps)."""
    rows = []
    for label, scheduler, steps in SCHEDULES:
        timed = with_scheduler(policy, scheduler, steps)
        n = repeats or ((3 if quick else 10) if steps >= 100 else (5 if quick else 30))
        rows.append((label, steps, latency(timed, obs, n, budget_s=4 if quick else 30)))
    return rows


# ---------------------------------------------------------------------------------------------- printing
def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def ratio(reference: float | None, ours: float | None) -> str:
    return "-" if reference is None or ours is None else f"{reference / ours:.2f}x"


def print_header(args) -> None:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    cpu = cpu_model()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s) of {os.cpu_count()} cores ({cpu}); "
          f"load average {load}{'; --quick' if args.quick else ''}")
    print("reference: Diffusion Policy repository on a 2-core machine (docs/design.md section 7.3); "
          "speedup = reference / ours\n")


def bench_builtin(args) -> None:
    quick = args.quick
    repeats, budget = (2, 8.0) if quick else (5, 30.0)
    repeats = args.repeats or repeats
    batches = args.batches  # printed in this order, timed smallest first
    models = {k: v for k, v in MODELS.items() if k in args.models}
    baselines = {} if args.no_baselines else {k: v for k, v in BASELINES.items() if k in args.models}

    print("(a) training step (forward + backward + AdamW), Push-T keypoints, Tp=16 To=2 Ta=8")
    print(f"{'model':24s}{'params':>8s}" + "".join(f"{f'b{b} ours':>12s}{'ref':>9s}{'speedup':>9s}" for b in batches))
    policies = {}
    for key, (label, name, overrides) in models.items():
        policy = build(name, overrides)
        policies[key] = policy
        times = train_step_times(policy, sorted(batches), repeats, budget)
        ref = REFERENCE[key]["train"]
        print(f"{label:24s}{n_params(policy):>8s}" + "".join(
            f"{fmt_s(times[b]):>12s}{fmt_s(ref.get(b)):>9s}{ratio(ref.get(b), times[b]):>9s}" for b in batches),
            flush=True)
    if "lstm_gmm" in baselines:
        lstm = build("lstm_gmm", {})
        times = train_step_times(lstm, sorted(batches), repeats, budget)
        print(f"{baselines['lstm_gmm'][0]:24s}{n_params(lstm):>8s}"
              + "".join(f"{fmt_s(times[b]):>12s}{'-':>9s}{'-':>9s}" for b in batches) + "   (Tp=To=10, Ta=1)",
              flush=True)
    if "ibc" in baselines:
        ibc = build("ibc", {})
        ibc_batch = 8
        times = train_step_times(ibc, [ibc_batch], repeats, budget)
        print(f"{'IBC 4x1024, 1024 neg.':24s}{n_params(ibc):>8s}" + f"{'-':>12s}{'-':>9s}{'-':>9s}" * len(batches)
              + f"   (Tp=To=2, Ta=1) batch {ibc_batch}: {fmt_s(times[ibc_batch])}, ~linear in the batch", flush=True)

    print("\n(b) inference latency per action chunk at batch 1 (median; net = one network forward)")
    print(f"{'model':24s}{'schedule':>10s}{'ours':>11s}{'per step':>11s}{'net':>10s}{'overhead':>10s}"
          f"{'ref':>9s}{'speedup':>9s}")
    generator = torch.Generator().manual_seed(1)
    for key, (label, _, _) in models.items():
        policy = policies[key]
        obs = synthetic_obs(OBS_SHAPES, 1, policy.config.obs_horizon, policy.normalizer, generator)
        net = net_forward_time(policy, obs, args.repeats or (5 if quick else 50))
        for sched, steps, seconds in diffusion_latencies(policy, obs, quick, args.repeats):
            ref = REFERENCE[key]["ddpm100"] if steps == 100 else None
            overhead = max(0.0, 1 - steps * net / seconds)
            print(f"{label:24s}{sched:>10s}{fmt_s(seconds):>11s}{fmt_s(seconds / steps):>11s}{fmt_s(net):>10s}"
                  f"{overhead:>10.0%}{fmt_s(ref):>9s}{ratio(ref, seconds):>9s}", flush=True)
    for key, (label, name, overrides) in baselines.items():
        policy = build(name, overrides)
        obs = synthetic_obs(OBS_SHAPES, 1, policy.config.obs_horizon, policy.normalizer, generator)
        seconds = latency(policy, obs, args.repeats or (20 if quick else 200), budget_s=4 if quick else 30)
        print(f"{label:24s}{'1 action':>10s}{fmt_s(seconds):>11s}", flush=True)


def load_policy(path: Path):
    """(policy name, the policy a train.py checkpoint holds: its EMA weights when present, on the CPU)."""
    ckpt = load_checkpoint(path)
    return ckpt["policy_name"], policy_from_checkpoint(ckpt, path)


def bench_checkpoint(args) -> None:
    quick = args.quick
    name, policy = load_policy(Path(args.checkpoint))
    cfg = policy.config
    images = bool(cfg.image_keys)
    print(f"checkpoint {args.checkpoint}: policy {name}, {n_params(policy)} parameters, obs {cfg.obs_shapes}, "
          f"Tp={cfg.horizon} To={cfg.obs_horizon} Ta={cfg.action_horizon}")
    batches = args.batches or ([64] if images else [256, 64])
    repeats, budget = (2, 8.0) if quick else (5, 30.0)
    times = train_step_times(policy, batches, args.repeats or repeats, budget)
    print("training step: " + ", ".join(f"batch {b}: {fmt_s(s)}" for b, s in times.items()))
    generator = torch.Generator().manual_seed(1)
    obs = synthetic_obs(cfg.obs_shapes, 1, cfg.obs_horizon, policy.normalizer, generator)
    if isinstance(policy, DiffusionPolicy):
        own = latency(policy, obs, args.repeats or (3 if quick else 10), budget_s=4 if quick else 30)
        print(f"inference (its own {cfg.inference_scheduler}-{cfg.num_inference_steps}): {fmt_s(own)} per chunk")
        for sched, steps, seconds in diffusion_latencies(policy, obs, quick, args.repeats):
            print(f"inference {sched}: {fmt_s(seconds)} per chunk ({fmt_s(seconds / steps)} per step)")
    else:
        seconds = latency(policy, obs, args.repeats or (20 if quick else 200), budget_s=4 if quick else 30)
        print(f"inference: {fmt_s(seconds)} per call ({cfg.action_horizon} action(s))")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (about 1-2 minutes on 2 cores)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads (default: all cores)")
    parser.add_argument("--checkpoint", help="time this train.py checkpoint's policy instead of the built-in set")
    parser.add_argument("--no-baselines", action="store_true", help="skip the LSTM-GMM and IBC rows")
    names = [*MODELS, *BASELINES]
    parser.add_argument("--models", nargs="+", choices=names, default=names, metavar="NAME",
                        help=f"rows of the built-in set (default: all of {', '.join(names)})")
    parser.add_argument("--batches", nargs="+", type=int, metavar="N",
                        help="training-step batch sizes (default: 256 64; a checkpoint with images: 64)")
    parser.add_argument("--repeats", type=int, metavar="N",
                        help="timed calls per figure (default: 5 training steps and 10-200 inference calls, "
                             "fewer with --quick)")
    args = parser.parse_args(argv)
    if args.checkpoint is None:
        args.batches = args.batches or [256, 64]
    if any(b < 1 for b in args.batches or []) or (args.repeats is not None and args.repeats < 1):
        parser.error("--batches and --repeats must be positive")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print_header(args)
    # A bad checkpoint is one line naming it (common.run_cli), not a traceback.
    return run_cli(lambda _: bench_checkpoint(args) if args.checkpoint else bench_builtin(args), [])


if __name__ == "__main__":
    sys.exit(main())
