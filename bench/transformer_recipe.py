"""The Diffusion Policy transformer on Push-T keypoints: our policy under two recipes next to the reference's own
policy class, trained on the same batches, validation loss side by side.

    python bench/transformer_recipe.py --reference PATH [--steps 1000] [--batch-size 64] [--plot docs/x.png]

PATH is a local checkout of the Diffusion Policy repository (its `diffusion_policy` package is imported from
there, never copied into this repository; it needs `einops`). Without it only our two recipes run.

Runs, all from seed 0, each step on the same batch of real Push-T windows (the published demonstrations):
  - ours, "generic": the transformer settings of the paper's text (attention dropout 0.3, weight decay 1e-3,
    500 warmup steps): what `diffusion_transformer` on `pusht_keypoints` used before the Push-T preset existed.
  - ours, "preset": the preset of (pusht_keypoints, diffusion_transformer) in config.py, the reference's Push-T
    low-dim transformer configuration (attention dropout 0.01, weight decay 0.1, 1000 warmup steps).
  - reference: its DiffusionTransformerLowdimPolicy with TransformerForDiffusion, its normalizer, its optimizer
    groups, the same preset recipe.
Validation loss: the diffusion loss of the raw (non-EMA) weights on held-out episodes' windows, with fixed noise
and timesteps, identical for all runs; the train loss is the mean of the logged interval.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers.optimization import get_cosine_schedule_with_warmup  # noqa: E402
from tqdm import tqdm  # noqa: E402

from config import presets  # noqa: E402
from datasets import Normalizer, ReplayBuffer, WindowDataset, split_episodes  # noqa: E402
from envs.tasks import get_task  # noqa: E402
from policy import DiffusionConfig, make_policy  # noqa: E402

GENERIC = {"p_drop_attn": 0.3, "optimizer_weight_decay": 1e-3, "lr_warmup_steps": 500}


def preset_recipe() -> dict:
    """The policy.* values of the (pusht_keypoints, diffusion_transformer) presets, over DiffusionConfig's defaults
    for the fields the reference run needs."""
    defaults = {f.name: f.default for f in dataclasses.fields(DiffusionConfig)
                if f.name in ("horizon", "p_drop_attn", "optimizer_weight_decay", "lr_warmup_steps")}
    return {**defaults, **{k.split(".", 1)[1]: v for k, v in presets("pusht_keypoints", "diffusion_transformer")
                           if k.startswith("policy.")}}


def default_data() -> Path:
    for candidate in (Path(__file__).resolve().parents[2] / "shared/data/pusht.zip", Path("outputs/data/pusht.zip")):
        if candidate.exists():
            return candidate
    raise SystemExit("error: no Push-T dataset found; pass --data PATH (python -m datasets.download pusht)")


def load_windows(path: Path, recipe: dict):
    task = get_task("pusht_keypoints")
    with ReplayBuffer.open(path) as rb:
        arrays = rb.to_memory(list(task.dataset_keys))
        ends = rb.episode_ends
    train_idx, val_idx = split_episodes(len(ends), 0.02, 42)
    data = {**task.obs_from_dataset(arrays), "action": arrays[task.action_key]}
    windows = dict(horizon=recipe["horizon"], obs_horizon=2, action_horizon=8, episode_ends=ends)
    keys = list(task.obs_shapes)
    return task, WindowDataset(data, keys, episodes=train_idx, **windows), \
        WindowDataset(data, keys, episodes=val_idx, **windows)


class Ours:
    def __init__(self, name, task, normalizer, recipe: dict, steps: int):
        torch.manual_seed(0)
        self.name = name
        self.policy = make_policy("diffusion_transformer", normalizer, obs_shapes=task.obs_shapes,
                                  action_dim=task.action_dim, **recipe)
        self.optimizer = self.policy.make_optimizer()
        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, self.policy.config.lr_warmup_steps, steps)

    def loss(self, batch):
        return self.policy.compute_loss(batch)["loss"]

    def step(self, batch) -> float:
        self.policy.train()
        loss = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.policy.parameters(), 10.0)
        self.optimizer.step()
        self.scheduler.step()
        return loss.item()

    def eval_mode(self):
        self.policy.eval()


class Reference:
    """The reference's low-dim transformer policy on our batches: obs (B, To, 20) padded to the window length
    (its policy reads only the first To steps when obs_as_cond), its own normalizer fitted on the same data."""

    def __init__(self, path: Path, train_set: WindowDataset, recipe: dict, steps: int):
        sys.path.insert(0, str(path))
        from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
        from diffusion_policy.model.diffusion.transformer_for_diffusion import TransformerForDiffusion
        from diffusion_policy.policy.diffusion_transformer_lowdim_policy import DiffusionTransformerLowdimPolicy

        torch.manual_seed(0)
        self.name = "reference"
        horizon = recipe["horizon"]
        model = TransformerForDiffusion(input_dim=2, output_dim=2, horizon=horizon, n_obs_steps=2, cond_dim=20,
                                        n_layer=8, n_head=4, n_emb=256, p_drop_emb=0.0,
                                        p_drop_attn=recipe["p_drop_attn"], causal_attn=True, time_as_cond=True,
                                        obs_as_cond=True, n_cond_layers=0)
        scheduler = DDPMScheduler(num_train_timesteps=100, beta_start=1e-4, beta_end=0.02,
                                  beta_schedule="squaredcos_cap_v2", variance_type="fixed_small", clip_sample=True,
                                  prediction_type="epsilon")
        self.policy = DiffusionTransformerLowdimPolicy(model, scheduler, horizon=horizon, obs_dim=20, action_dim=2,
                                                       n_action_steps=8, n_obs_steps=2, obs_as_cond=True)
        arrays = train_set.step_arrays()
        self.policy.normalizer.fit({"obs": torch.as_tensor(arrays["keypoints"]),
                                    "action": torch.as_tensor(arrays["action"])}, last_n_dims=1, mode="limits")
        self.optimizer = self.policy.get_optimizer(weight_decay=recipe["optimizer_weight_decay"],
                                                   learning_rate=1e-4, betas=(0.9, 0.95))
        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, recipe["lr_warmup_steps"], steps)
        self.horizon = horizon

    def convert(self, batch):
        obs = batch["obs"]["keypoints"].float()
        pad = obs[:, -1:].expand(-1, self.horizon - obs.shape[1], -1)
        return {"obs": torch.cat([obs, pad], dim=1), "action": batch["action"].float()}

    def loss(self, batch):
        return self.policy.compute_loss(self.convert(batch))

    step = Ours.step

    def eval_mode(self):
        self.policy.eval()


def validation_loss(run, batches) -> float:
    run.eval_mode()
    state = torch.get_rng_state()
    losses = []
    with torch.no_grad():
        for i, batch in enumerate(batches):
            torch.manual_seed(1000 + i)  # the same noise and timesteps for every run
            losses.append(run.loss(batch).item())
    torch.set_rng_state(state)
    return float(np.mean(losses))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, default=None)
    parser.add_argument("--data", type=Path, default=None, help="Push-T zarr (default: ../shared/data/pusht.zip)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--every", type=int, default=100, help="validation interval")
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args(argv)

    recipe = preset_recipe()
    task, train_set, val_set = load_windows(args.data or default_data(), recipe)
    normalizer = Normalizer.fit(train_set.step_arrays())
    runs = [Ours("ours, generic", task, normalizer, {**recipe, **GENERIC}, args.steps),
            Ours("ours, preset", task, normalizer, recipe, args.steps)]
    if args.reference is not None:
        runs.append(Reference(args.reference, train_set, recipe, args.steps))
    print("recipes: generic", GENERIC, "| preset", recipe)

    val_batches = [val_set.__getitems__(list(range(i, min(i + 256, len(val_set)))))
                   for i in range(0, min(len(val_set), 1024), 256)]
    gen = torch.Generator().manual_seed(0)
    curves = {run.name: [] for run in runs}
    train_losses = {run.name: [] for run in runs}
    header = f"{'step':>6s}" + "".join(f"{r.name + ' train':>24s}{'val':>8s}" for r in runs)
    rows = [header]
    for step in tqdm(range(1, args.steps + 1), desc="transformer recipes"):
        idx = torch.randint(0, len(train_set), (args.batch_size,), generator=gen).tolist()
        batch = train_set.__getitems__(idx)
        for run in runs:
            torch.manual_seed(step)  # each run draws the same noise/timesteps/dropout stream per step
            train_losses[run.name].append(run.step(batch))
        if step % args.every == 0 or step == args.steps:
            line = f"{step:6d}"
            for run in runs:
                val = validation_loss(run, val_batches)
                curves[run.name].append((step, val))
                line += f"{np.mean(train_losses[run.name][-args.every:]):24.4f}{val:8.4f}"
            rows.append(line)
            tqdm.write(line)
    print("\n" + "\n".join(rows))
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, points in curves.items():
            ax.plot(*zip(*points), label=name, marker="o", markersize=3)
        ax.set_xlabel("step")
        ax.set_ylabel("validation loss")
        ax.set_yscale("log")
        ax.set_title(f"Push-T keypoints, transformer, batch {args.batch_size}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
