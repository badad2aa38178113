"""Training and sampling speed on an accelerator, ours next to the reference implementation's modules.

    python bench/bench_gpu.py --reference PATH [--device cuda] [--quick]
    python bench/bench_gpu.py --device cpu --tiny            # the same code paths with tiny networks (smoke test)

PATH is a local checkout of the Diffusion Policy repository (its `diffusion_policy` package is imported from
there, never copied into this repository); it needs `einops`. Without it the reference columns say why.
Rows:
  - training step, Push-T keypoints (20-D, Tp 16, To 2), paper UNet [256,512,1024], batch 256: ours is the
    whole step of train.py (loss, backward, gradient clipping, fused AdamW, foreach EMA; the batch already on
    the device, as with the device-resident dataset); the reference is its ConditionalUnet1D with diffusers'
    DDPM noise, backward, torch's default AdamW and a per-tensor EMA update (what its workspace runs).
  - the image UNet [512,1024,2048] + ResNet-18-GN at batch 64 (ours; the reference's vision encoder needs
    torchvision, which this project does not install).
  - one DDPM-100 action chunk at batch 1 (state, image): ours `predict_action`; the reference its UNet in a
    loop over diffusers' `DDPMScheduler.step`.
  - a closed-loop evaluation of 50 Push-T episodes (state, DDPM-100, untrained weights: every episode runs the
    full 300 steps, so this is the upper bound of the evaluation time).
Times are medians over timed repeats after warm-up, with the device synchronized around each; ratio = the
reference's time / ours (higher is better for us).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import torch  # noqa: E402

from bench_policy import make_normalizer, synthetic_batch, synthetic_obs  # noqa: E402
from envs.rollout import evaluate  # noqa: E402
from envs.tasks import get_task  # noqa: E402
from policy import EMA, make_policy  # noqa: E402
from runlib import to_device  # noqa: E402

STATE = {"keypoints": (20,)}
IMAGE = {"image": (96, 96, 3), "agent_pos": (2,)}


def timed(fn, device: torch.device, repeats: int, warmup: int = 3) -> float:
    """Median seconds of fn() with the device synchronized before and after each call."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def our_policy(obs_shapes: dict, device, name: str = "diffusion_unet", **config):
    return make_policy(name, make_normalizer(obs_shapes, 2), obs_shapes=obs_shapes, action_dim=2,
                       **config).to(device)


def our_train_step(policy, batch_size: int, device) -> callable:
    """train.py's step on a batch already on the device."""
    policy.train()
    optimizer = policy.make_optimizer()
    ema = EMA(policy)
    batch = to_device(synthetic_batch(policy, batch_size, torch.Generator().manual_seed(0)), device)

    def step():
        loss = policy.compute_loss(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 10.0)
        optimizer.step()
        ema.step(policy)

    return step


def our_chunk(policy, device) -> callable:
    policy.eval()
    obs = to_device(synthetic_obs(policy.config.obs_shapes, 1, policy.config.obs_horizon, policy.normalizer,
                           torch.Generator().manual_seed(1)), device)

    def chunk():
        with torch.inference_mode():
            policy.predict_action(obs)

    return chunk


# ----------------------------------------------------------------------------------------------- reference
def reference_unet(path: Path | None, down_dims, global_cond_dim: int, device):
    """The reference's ConditionalUnet1D with the paper's Push-T settings, or (None, why not)."""
    if path is None:
        return None, "no --reference PATH given"
    sys.path.insert(0, str(path))
    try:
        from diffusion_policy.model.diffusion.conditional_unet1d import ConditionalUnet1D
    except ImportError as e:
        return None, f"not importable from {path}: {e}"
    net = ConditionalUnet1D(input_dim=2, global_cond_dim=global_cond_dim, diffusion_step_embed_dim=256,
                            down_dims=list(down_dims), kernel_size=5, n_groups=8, cond_predict_scale=True)
    return net.to(device), ""


def reference_train_step(net, batch_size: int, horizon: int, cond_dim: int, device) -> callable:
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6)
    averaged = [p.detach().clone() for p in net.parameters()]
    actions = torch.randn(batch_size, horizon, 2, device=device)
    cond = torch.randn(batch_size, cond_dim, device=device)

    def step():
        noise = torch.randn_like(actions)
        t = torch.randint(0, 100, (batch_size,), device=device)
        loss = torch.nn.functional.mse_loss(net(scheduler.add_noise(actions, noise, t), t, global_cond=cond), noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # an EMA update per parameter tensor, as the reference's EMA model does
            for avg, p in zip(averaged, net.parameters()):
                avg.mul_(0.999).add_(p, alpha=0.001)

    return step


def reference_chunk(net, horizon: int, cond_dim: int, device) -> callable:
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True)
    cond = torch.randn(1, cond_dim, device=device)

    def chunk():
        with torch.inference_mode():
            x = torch.randn(1, horizon, 2, device=device)
            scheduler.set_timesteps(100)
            for t in scheduler.timesteps:
                x = scheduler.step(net(x, t, global_cond=cond), t, x).prev_sample

    return chunk


# ----------------------------------------------------------------------------------------------- main
def fmt(seconds: float | None) -> str:
    return "-" if seconds is None else (f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, default=None, help="a checkout of the Diffusion Policy repository")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--tiny", action="store_true", help="tiny networks and batches (a smoke test of the paths)")
    parser.add_argument("--eval-episodes", type=int, default=50, help="0: no evaluation row")
    parser.add_argument("--state-dims", type=int, nargs="+", default=None,
                        help="down_dims of the state UNet (default: the paper's 256 512 1024)")
    parser.add_argument("--no-image", action="store_true", help="leave out the image rows (slow on a CPU)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here (seconds)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    repeats = 3 if args.tiny else (10 if args.quick else 30)
    state_dims, image_dims = ((16, 32), (16, 32)) if args.tiny else ((256, 512, 1024), (512, 1024, 2048))
    state_dims = tuple(args.state_dims or state_dims)
    batch_state, batch_image = (8, 4) if args.tiny else (256, 64)
    vision = dict(vision_base_channels=16, image_feature_dim=16, spatial_softmax_keypoints=8) if args.tiny else {}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {name}; repeats {repeats}{' (tiny networks)' if args.tiny else ''}")

    rows = []
    state = our_policy(STATE, device, down_dims=state_dims)
    image = None if args.no_image else our_policy(IMAGE, device, down_dims=image_dims, diffusion_step_embed_dim=128,
                                                  **vision)
    cond_dim = state.config.obs_horizon * 20
    ref, why = reference_unet(args.reference, state_dims, cond_dim, device)
    ref_train = timed(reference_train_step(ref, batch_state, 16, cond_dim, device), device, repeats) if ref else None
    ref_chunk = timed(reference_chunk(ref, 16, cond_dim, device), device, max(3, repeats // 3)) if ref else None
    rows.append((f"train step, state UNet {list(state_dims)}, batch {batch_state}",
                 timed(our_train_step(state, batch_state, device), device, repeats), ref_train))
    if image is not None:
        rows.append((f"train step, image UNet {list(image_dims)} + ResNet-18-GN, batch {batch_image}",
                     timed(our_train_step(image, batch_image, device), device, repeats), None))
    transformer = our_policy(STATE, device, "diffusion_transformer",
                             **(dict(n_layers=2, embed_dim=32) if args.tiny else {}))
    rows.append((f"train step, state transformer ({transformer.config.n_layers} layers), batch {batch_state}",
                 timed(our_train_step(transformer, batch_state, device), device, repeats), None))
    rows.append(("DDPM-100 chunk, batch 1, state", timed(our_chunk(state, device), device, max(3, repeats // 3)),
                 ref_chunk))
    # The few-pass samplers on the same UNet (sampling speed does not depend on the weights)
    few = [("DDIM-10", "diffusion_unet", {"inference_scheduler": "ddim", "num_inference_steps": 10}),
           ("DPM-Solver++-5", "diffusion_unet", {"inference_scheduler": "dpmsolver", "num_inference_steps": 5}),
           ("flow Euler-2", "flow_unet", {"num_inference_steps": 2}),
           ("consistency-1", "consistency_unet", {})]
    for label, policy_name, sampler in few:
        policy = our_policy(STATE, device, policy_name, down_dims=state_dims, **sampler)
        rows.append((f"{label} chunk, batch 1, state", timed(our_chunk(policy, device), device, repeats), None))
    if image is not None:
        rows.append(("DDPM-100 chunk, batch 1, image",
                     timed(our_chunk(image, device), device, max(3, repeats // 3)), None))
    n = args.eval_episodes
    if n:
        start = time.perf_counter()
        evaluate(state.eval(), get_task("pusht_keypoints"), n_episodes=n, n_envs=n, device=device, n_videos=0,
                 max_steps=16 if args.tiny else None, progress=False)
        rows.append((f"closed-loop evaluation, {n} Push-T episodes (state)", time.perf_counter() - start, None))

    print(f"\n{'':64s}{'ours':>12s}{'reference':>12s}{'ratio':>8s}")
    for label, ours, reference in rows:
        ratio = f"{reference / ours:.2f}x" if reference else "-"
        print(f"{label:64s}{fmt(ours):>12s}{fmt(reference):>12s}{ratio:>8s}")
    if why:
        print(f"reference: {why}")
    if args.json:
        args.json.write_text(json.dumps({"device": name, "torch": torch.__version__, "tiny": args.tiny,
                                         "rows": [{"row": label, "ours_s": ours, "reference_s": reference}
                                                  for label, ours, reference in rows]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
