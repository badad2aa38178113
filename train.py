"""Train a policy from demonstrations, evaluate it in closed loop, log to Weights & Biases.

    python train.py                                    # small Diffusion Policy on generated Push-T demos (CPU ok)
    python train.py task=pusht_image dataset_path=../shared/data/pusht.zip training.steps=200000
    python train.py policy=diffusion_transformer wandb.mode=online

Overrides are `key=value` (see config.py). The loop reads top to bottom: data -> normalizer -> policy ->
optimizer, EMA -> resume -> steps (loss, clip, step, EMA; periodic validation loss, closed-loop evaluation
and checkpoints) -> final evaluation. Everything lands in `output_dir`: checkpoints/last.pt and best.pt
(written atomically), eval.json, videos/, training_curve.png and the W&B run files (wandb/).
Killed runs continue exactly where their last checkpoint left off when started again with the same
output_dir (model, EMA, optimizer, LR schedule, step, data order and RNG states).

Several GPUs: `torchrun --nproc_per_node N train.py ...` (several machines: add --nnodes, --node_rank and
--rdzv_endpoint) trains with DistributedDataParallel, NCCL on GPUs and gloo on CPUs (runlib, "data parallel").
training.batch_size is the global batch: each rank trains on its 1/N share of the windows one process would use
at that step, and every per-sample random draw is the global batch's (policy/batch_share.py), so the weights are
those of a one-process run with the same batch, up to float rounding; the learning rate is used as configured
(never rescaled). Rank 0 alone prints, writes files (checkpoints, eval.json, videos, curve, W&B) and computes the
validation loss and the closed-loop evaluations, with the episodes one process would run, so its numbers do not
depend on the number of GPUs; the others wait for it, then take its random state. Every rank holds the whole
training set (on its GPU with training.data_on_device). A plain `python train.py` starts no process group.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from common import CheckpointError, ConfigError, DataError, TrainingError, run_cli  # noqa: E402
from config import SAMPLING_FIELDS, Config, check_policy_config, is_first_run, parse_overrides  # noqa: E402
from datasets import Normalizer, ReplayBuffer, StepBatches, WindowDataset, make_loader, split_episodes  # noqa: E402
from envs.tasks import Task, get_task  # noqa: E402
from policy import EMA, get_spec  # noqa: E402
from policy.batch_share import batch_share  # noqa: E402
from runlib import (REPO, NoRun, Ranks, ThreadGovernor, barrier, check_resumable, code_version,  # noqa: E402
                    cpu_share, data_parallel, first_over_ranks, from_rank0, load_checkpoint, log_video,
                    hardware, mean_over_ranks, prepare_output_dir, rng_state, run_evaluation, save_checkpoint, score_line,
                    seed_everything, set_rank_rng_state, set_torch_threads, share_rng_of_rank0, start_distributed,
                    start_wandb, threads_default, to_device)

# ---------------------------------------------------------------------------------------------- data


def default_dataset(cfg: Config, task: Task, ranks: Ranks = Ranks()) -> Path:
    """The embedded default: scripted Push-T demonstrations, generated once into outputs/data/ (under torchrun by
    the first process of each machine, the others waiting)."""
    from demos.pusht import generate

    if task.robomimic_env:
        raise ConfigError(
            f"task {cfg.task} needs dataset_path=<zarr>: convert a robomimic hdf5 with `python -m "
            "demos.robomimic_hdf5 convert IN.hdf5 OUT.zarr`, or make demonstrations with `python -m "
            "demos.robomimic lift --out lift.hdf5` first (README, robomimic tasks)")

    path = REPO / "outputs" / "data" / f"pusht_scripted_{cfg.default_demos}.zarr"
    if not path.exists() and ranks.local_rank == 0:
        print(f"generating {cfg.default_demos} scripted Push-T demonstrations into {path} (once)")
        tmp = path.with_name(path.name + ".tmp")
        generate(tmp, cfg.default_demos, first_seed=0, overwrite=True)
        os.replace(tmp, path)
    barrier(ranks)
    return path


def bind_dataset(cfg: Config, task: Task, ranks: Ranks = Ranks()) -> tuple[Path, Task]:
    """The dataset path, and the task bound to the dataset's metadata (robomimic: env_meta, action kind)."""
    path = Path(cfg.dataset_path) if cfg.dataset_path else default_dataset(cfg, task, ranks)
    with ReplayBuffer.open(path) as rb:
        task = task.for_dataset(rb.attrs, str(path))
        task.check_buffer(rb, str(path))  # keys, shapes, dtypes, at least one episode
    return path, task


def load_data(path: Path, cfg: Config, task: Task, policy_cfg) -> tuple[WindowDataset, WindowDataset | None, dict]:
    """Train/validation windows of the task's observation keys, split by episode."""
    rb = ReplayBuffer.open(path)
    arrays = rb.to_memory(list(task.dataset_keys))
    ends = rb.episode_ends
    rb.close()
    train_idx, val_idx = split_episodes(len(ends), cfg.training.val_ratio, cfg.training.split_seed,
                                        cfg.training.max_train_episodes)
    check_finite_data(arrays, ends, path, val_idx)
    data = {**task.obs_from_dataset(arrays), "action": arrays[task.action_key]}
    windows = dict(horizon=policy_cfg.horizon, obs_horizon=policy_cfg.obs_horizon,
                   action_horizon=policy_cfg.action_horizon, episode_ends=ends, name=str(path))
    obs_keys = list(task.obs_shapes)
    train = WindowDataset(data, obs_keys, episodes=train_idx, **windows)
    val = WindowDataset(data, obs_keys, episodes=val_idx, **windows) if len(val_idx) else None
    info = {"path": str(path), "n_episodes": len(ends), "n_steps": int(ends[-1]),
            "train_episodes": train_idx.tolist(), "val_episodes": val_idx.tolist(), "train_windows": len(train)}
    return train, val, info


def finished_run(output_dir: Path, ckpt: dict, cfg: Config) -> dict | None:
    """The results of a run that already reached training.steps and wrote its final evaluation, or None.

    Running the same command again then changes nothing (no second evaluation, no new history entry); a larger
    training.steps continues it, and eval.py evaluates its checkpoint again into <run>/eval/.
    """
    eval_path = output_dir / "eval.json"
    if ckpt["step"] < cfg.training.steps or not eval_path.is_file():
        return None
    try:
        summary = json.loads(eval_path.read_text())
    except ValueError:
        return None  # an unreadable eval.json: evaluate again
    if summary.get("step") != ckpt["step"]:
        return None
    print(f"{output_dir}: the run is complete (step {ckpt['step']} of training.steps={cfg.training.steps}); "
          f"nothing to do. Results: {eval_path}, checkpoints in {output_dir / 'checkpoints'}. To train further, "
          f"raise training.steps; to evaluate again, python eval.py checkpoint={output_dir / 'checkpoints' / 'last.pt'}")
    return summary


def data_on_device(cfg: Config, train_set: WindowDataset, device: torch.device) -> bool:
    """training.data_on_device, or by default: on CUDA when the training data takes under a quarter of the free
    GPU memory (Push-T images: ~0.7 GB as uint8)."""
    if cfg.training.data_on_device is not None:
        return cfg.training.data_on_device
    return device.type == "cuda" and train_set.nbytes() < torch.cuda.mem_get_info(device)[0] / 4


def check_finite_data(arrays: dict, ends: np.ndarray, path: Path, val_idx: np.ndarray) -> None:
    """NaN or inf in any array the task reads stops the run before training, naming file, key, episode and step
    (a NaN action would make the loss, or only the validation loss, NaN)."""
    for key, values in arrays.items():
        if not np.issubdtype(values.dtype, np.floating):
            continue  # uint8 images, integer counters: always finite
        bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
        if bad.any():
            row = int(np.argmax(bad))
            episode = int(np.searchsorted(ends, row, side="right"))
            start = int(ends[episode - 1]) if episode else 0
            split = "validation" if episode in set(val_idx.tolist()) else "training"
            raise DataError(f"{path}: data/{key} holds NaN or inf in {int(bad.sum())} step(s), first in episode "
                            f"{episode} (a {split} episode) at its step {row - start} (row {row}); "
                            "expected finite values")


# ---------------------------------------------------------------------------------------------- plots


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    train = [(h["step"], h["train/loss"]) for h in history if "train/loss" in h]
    val = [(h["step"], h["val/loss"]) for h in history if "val/loss" in h]
    score = [(h["step"], h["eval/mean_max_reward"]) for h in history if "eval/mean_max_reward" in h]
    if train:
        ax1.plot(*zip(*train), label="train")
    if val:
        ax1.plot(*zip(*val), "o-", label="validation")
    positive = all(v > 0 for _, v in train + val)  # LSTM-GMM's negative log-likelihood can go below 0
    ax1.set(xlabel="step", ylabel="loss", yscale="log" if positive else "linear", title="training loss")
    ax1.legend()
    if score:
        ax2.plot(*zip(*score), "o-")
    ax2.set(xlabel="step", ylabel="mean max reward", ylim=(0, 1), title="closed-loop score")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- main


def train(cfg: Config) -> dict:
    started = time.perf_counter()  # wall time of this process, added to the checkpoint's (reports show it)
    task = get_task(cfg.task)
    # Under torchrun: the process group, this rank's GPU (or the CPU); a plain run: one process (ranks.main).
    ranks, device = start_distributed(cfg.device, cfg.training.batch_size, cfg.training.dist_timeout_s)
    say = print if ranks.main else lambda *args, **kwargs: None  # rank 0 alone prints
    threads = set_torch_threads(cfg.training.threads, cpu_share(ranks))
    # Without an explicit training.threads, follow what other jobs leave free while training (checked at logs).
    governor = ThreadGovernor(cpu_share(ranks) or threads_default()) \
        if cfg.training.threads is None and device.type == "cpu" else None
    output_dir = Path(cfg.output_dir or REPO / "outputs" / f"{cfg.task}_{cfg.policy}_seed{cfg.seed}")
    if ranks.main:
        prepare_output_dir(output_dir)  # created and writable, before any data is read
    last_path, best_path = output_dir / "checkpoints" / "last.pt", output_dir / "checkpoints" / "best.pt"
    seed_everything(cfg.seed)  # every rank the same: one random state for all ranks (policy/batch_share.py)

    # The dataset can change the task (robomimic: environment metadata, absolute or relative actions).
    data_path, task = bind_dataset(cfg, task, ranks)
    # Policy config next: its horizons shape the data windows.
    spec = get_spec(cfg.policy)
    policy_cfg = check_policy_config(cfg, task)

    train_set, val_set, data_info = load_data(data_path, cfg, task, policy_cfg)
    normalizer = Normalizer.fit(train_set.step_arrays(), image_keys=policy_cfg.image_keys)
    policy = spec.policy_class(policy_cfg, normalizer).to(device)
    optimizer = policy.make_optimizer()
    if cfg.training.lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = cfg.training.lr
    from diffusers.optimization import get_cosine_schedule_with_warmup

    warmup = cfg.training.warmup_steps if cfg.training.warmup_steps is not None else policy_cfg.lr_warmup_steps
    lr_scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, cfg.training.steps)
    # The EMA weights serve rank 0's validation, evaluations and checkpoints: the other ranks keep none.
    ema = EMA(policy, power=cfg.training.ema_power, max_decay=cfg.training.ema_max_decay) \
        if cfg.training.use_ema and ranks.main else None
    if cfg.training.compile:
        # The noise network's forward through torch.compile (CUDA graphs on CUDA): the parameters stay the same
        # objects, so checkpoints, the optimizer and the EMA copy (made above, uncompiled: it evaluates) are
        # unchanged; the loss's random draws stay outside the compiled graph, so the loss means the same.
        if not isinstance(getattr(policy, "model", None), torch.nn.Module):
            raise ConfigError(f"training.compile=true: policy {cfg.policy!r} has no noise network to compile "
                              "(diffusion policies only)")
        policy.model.forward = torch.compile(policy.model.forward,
                                             mode="reduce-overhead" if device.type == "cuda" else None)
    n_params = sum(p.numel() for p in policy.parameters())

    step, best_score, history = 0, -math.inf, []
    wall_before = 0.0  # seconds of the earlier processes of this run (resumed runs)
    machine = hardware(device) + (f" x {ranks.world_size} processes" if ranks.distributed else "")
    run_id = f"{output_dir.name}-{int(time.time())}"
    # Rank 0 reads the checkpoint and sends it to the other ranks (their machines need not see output_dir); to the
    # CPU (RNG states must stay there), load_state_dict moves the rest.
    ckpt = from_rank0(load_checkpoint(last_path) if cfg.resume and ranks.main and last_path.exists() else None, ranks)
    if ckpt is not None:
        check_resumable(ckpt, last_path)
        if ckpt["task"] != cfg.task or ckpt["policy_name"] != cfg.policy:
            raise CheckpointError(f"{last_path}: belongs to task {ckpt['task']!r} / policy {ckpt['policy_name']!r}, "
                                  f"not {cfg.task!r} / {cfg.policy!r}; use another output_dir or resume=false")
        now = policy_cfg.to_dict()
        changed = {k: (v, now.get(k)) for k, v in ckpt["policy_config"].items()
                   if now.get(k) != v and k not in SAMPLING_FIELDS}
        if changed:  # e.g. another network size: the weights would not fit, or would mean something else
            raise CheckpointError(f"{last_path}: its {cfg.policy} has another configuration than this run's "
                                  f"(saved vs now: {changed}); use another output_dir or resume=false")
        finished = from_rank0(finished_run(output_dir, ckpt, cfg) if ranks.main else None, ranks)
        if finished is not None:
            return finished
        policy.load_state_dict(ckpt["policy"])
        wall_before = float(ckpt.get("wall_s", 0.0))
        if ckpt.get("hardware") and ckpt["hardware"] != machine:
            machine = f"{ckpt['hardware']}; resumed on {machine}"
        optimizer.load_state_dict(ckpt["optimizer"])
        lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
        if ema is not None:
            ema.load_state_dict(ckpt["ema"])
        step, best_score, history, run_id = ckpt["step"], ckpt["best_score"], ckpt["history"], ckpt["wandb_run_id"]
        set_rank_rng_state(ckpt["rng"], ranks, device)
        say(f"resumed from {last_path} at step {step}")
        if ckpt.get("world_size", 1) != ranks.world_size:
            was, now, batch = ckpt.get("world_size", 1), ranks.world_size, cfg.training.batch_size
            say(f"warning: {last_path} was trained by {was} process(es), this run has {now}: the global batch "
                f"(training.batch_size={batch}), the windows of every step, the per-sample random draws and the "
                f"learning rate stay the same; each process's share goes from {batch // was} to {batch // now} "
                "windows (memory and speed per GPU change) and gradients are summed in another order, so the run "
                "continues the same optimization up to float rounding, not bit for bit (dropout masks, where a "
                "policy has dropout, are drawn anew)", file=sys.stderr)

    run_info = {"dataset": {k: v for k, v in data_info.items() if not k.endswith("_episodes")},
                "normalizer_stats": {k: {s: v.tolist() for s, v in st.items()} for k, st in normalizer.stats().items()},
                "code_version": code_version(), "n_parameters": n_params,
                "classes": {"policy": f"{spec.policy_class.__module__}.{spec.policy_class.__name__}",
                            "task": cfg.task, "env": task.env_id}}
    say(f"task {cfg.task} ({task.env_id}, obs {task.obs_shapes}), policy {cfg.policy} "
        f"({run_info['classes']['policy']}, {n_params / 1e6:.2f}M parameters) on {device}"
        f"{f', {threads} CPU thread(s)' if device.type == 'cpu' else ''}")
    say(f"data {data_info['path']}: {data_info['n_episodes']} episodes, {len(train_set)} training windows; "
        f"output {output_dir}")
    if is_first_run(cfg.task, cfg.policy, cfg.dataset_path):
        lr = cfg.training.lr or policy_cfg.optimizer_lr
        say(f"the first run's recipe (config.first_run_recipe, under any key given on the command line): "
            f"{cfg.training.steps} steps x {cfg.training.batch_size}, lr {lr:g}, UNet {list(policy_cfg.down_dims)}; "
            "with dataset_path= the paper's recipe applies")
    if ranks.distributed:
        say(f"data parallel: {ranks.world_size} process(es) ({torch.distributed.get_backend()}), global batch "
            f"{cfg.training.batch_size} = {ranks.world_size} x {cfg.training.batch_size // ranks.world_size}, "
            f"learning rate {lr_scheduler.base_lrs[0]:g} as configured (not rescaled)")
    run = start_wandb(cfg, output_dir, run_info, run_id) if ranks.main else NoRun()

    def checkpoint_state() -> dict:
        return {"config": cfg.to_dict(), "task": cfg.task, "task_spec": task.spec(), "policy_name": cfg.policy,
                "policy_config": policy_cfg.to_dict(), "policy": policy.state_dict(),
                "ema": ema.state_dict() if ema is not None else None, "optimizer": optimizer.state_dict(),
                "lr_scheduler": lr_scheduler.state_dict(), "step": step, "best_score": best_score,
                "history": history, "rng": rng_state(), "wandb_run_id": run_id, "dataset": data_info,
                "normalizer_stats": run_info["normalizer_stats"], "code_version": run_info["code_version"],
                "world_size": ranks.world_size, "wall_s": wall_before + time.perf_counter() - started,
                "hardware": machine}

    def log(entry: dict) -> None:
        history.append(entry)
        run.log({k: v for k, v in entry.items() if k != "step"}, step=entry["step"])

    def evaluate_now(tag: str) -> dict:
        nonlocal best_score
        eval_policy = ema.averaged if ema is not None else policy
        result = run_evaluation(eval_policy, task, cfg, device, output_dir, tag)
        entry = {"step": step, "eval/mean_max_reward": result["mean_max_reward"],
                 "eval/success_rate": result["success_rate"]}
        log(entry)
        if tag != "final":  # the final score is in the closing summary
            tqdm.write(f"evaluation at step {step}: {score_line(result)}")
        if result["videos"]:
            log_video(run, result["videos"][0], step=step)
        if result["mean_max_reward"] > best_score:
            best_score = result["mean_max_reward"]
            save_checkpoint(best_path, checkpoint_state())
        policy.train()
        return result

    use_bf16 = cfg.training.bf16 and device.type == "cuda"
    sampler = StepBatches(len(train_set), cfg.training.batch_size, cfg.seed, step, cfg.training.steps, ranks.rank,
                          ranks.world_size)  # this rank's share of each step's global batch
    if data_on_device(cfg, train_set, device):
        # The whole dataset on the accelerator: a batch is one gather there (same windows as the loader's).
        device_set = train_set.to(device)
        batches = (device_set.__getitems__(indices) for indices in sampler)
        say(f"data on {device}: {device_set.nbytes() / 2**20:.0f} MiB{' per rank' if ranks.distributed else ''}")
    else:
        batches = make_loader(train_set, cfg.training.batch_size, shuffle=True, num_workers=cfg.training.num_workers,
                              pin_memory=device.type == "cuda", batch_sampler=sampler)
    model = data_parallel(policy, ranks, device)  # the policy, or the policy in DistributedDataParallel
    policy.train()
    result = None

    def due(step: int, every: int) -> bool:
        """Periodic work: every `every` steps (0: only at the last step) and always at the last step."""
        return step == cfg.training.steps or (every > 0 and step % every == 0)

    # Non-finite losses are recorded on the device (the first step that had one) and read only at logs,
    # checkpoints and evaluations: a check per step would make the host wait for the GPU every step. Nothing
    # computed after a bad step is ever saved, so the last checkpoint stays good.
    first_bad_step = torch.full((), -1, dtype=torch.int64, device=device)
    step_on_device = torch.full((), step, dtype=torch.int64, device=device)
    checked_step = step

    def check_finite() -> None:
        nonlocal checked_step
        bad = int(first_over_ranks(first_bad_step, ranks))  # the first on any rank: every rank stops
        if bad >= 0:
            good = f"the last good checkpoint is {last_path}" if last_path.exists() else "no checkpoint was saved yet"
            raise TrainingError(f"non-finite loss (nan or inf) at step {bad}, found at step {step} (losses are checked "
                                f"at every log, checkpoint and evaluation; steps {checked_step}..{step - 1} were "
                                f"unchecked); stopping ({good})")
        checked_step = step

    bar = tqdm(total=cfg.training.steps, initial=step, desc="train", unit="step", dynamic_ncols=True,
               disable=not ranks.main)
    last_time, last_step = time.perf_counter(), step
    for batch in batches:
        batch = to_device(batch, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16), \
                batch_share(ranks.rank, ranks.world_size):
            loss = model(batch)["loss"]  # compute_loss
        first_bad_step = torch.where((first_bad_step < 0) & ~torch.isfinite(loss.detach()), step_on_device,
                                     first_bad_step)
        step_on_device += 1
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.training.grad_clip_norm)
        optimizer.step()
        lr_scheduler.step()
        if ema is not None:
            ema.step(policy)
        step += 1
        bar.update(1)

        periodic = [due(step, cfg.training.log_every), val_set is not None and due(step, cfg.training.val_every),
                    bool(cfg.training.eval_every) and step % cfg.training.eval_every == 0 and step < cfg.training.steps,
                    due(step, cfg.training.checkpoint_every)]
        if any(periodic):
            check_finite()
        if periodic[0]:
            if governor is not None:
                governor.update()
            now = time.perf_counter()
            train_loss = mean_over_ranks(loss, ranks).item()  # the global batch's loss
            log({"step": step, "train/loss": train_loss, "train/grad_norm": float(grad_norm),
                 "train/lr": lr_scheduler.get_last_lr()[0], "train/steps_per_s": (step - last_step) / (now - last_time)})
            last_time, last_step = now, step
            bar.set_postfix(loss=f"{train_loss:.4f}")
        if periodic[1] and ranks.main:
            log({"step": step, "val/loss": validation_loss(ema.averaged if ema else policy, val_set, cfg, device)})
            policy.train()
        if periodic[2] and ranks.main:
            evaluate_now(f"step_{step}")
        if periodic[1] or periodic[2]:
            share_rng_of_rank0(ranks, device)  # the other ranks wait for rank 0 and take its random state
        if periodic[3] and ranks.main:
            save_checkpoint(last_path, checkpoint_state())
    bar.close()
    if not ranks.main:  # done: wait for rank 0's final evaluation and files, and return its summary
        return from_rank0(None, ranks)

    result = evaluate_now("final")
    save_checkpoint(last_path, checkpoint_state())
    summary = {**{k: v for k, v in result.items()}, "checkpoint": str(last_path), "best_checkpoint": str(best_path),
               "step": step, "wall_s": round(wall_before + time.perf_counter() - started, 1), "hardware": machine}
    (output_dir / "eval.json").write_text(json.dumps(summary, indent=1))
    plot_curves(history, output_dir / "training_curve.png")
    run.summary.update({"final/mean_max_reward": result["mean_max_reward"],
                        "final/success_rate": result["success_rate"], "run/wall_s": summary["wall_s"],
                        "run/hardware": machine})
    run.finish()
    print(f"final: {score_line(result)}")
    print(f"eval.json: {output_dir / 'eval.json'}; videos: {output_dir / 'videos' / 'final'}; "
          f"curve: {output_dir / 'training_curve.png'}; checkpoints: {last_path.parent}")
    print(run_summary(cfg, summary, output_dir, last_path, best_path))
    return from_rank0(summary, ranks)


def run_summary(cfg: Config, summary: dict, output_dir: Path, last_path: Path, best_path: Path) -> str:
    """What a person reads at the end of a run: the score, where everything is, and what to try next."""
    lo, hi = summary["mean_max_reward_ci95"]
    slo, shi = summary["success_rate_ci95"]
    n = summary["n_episodes"]
    videos = summary.get("videos") or []
    if cfg.wandb.mode == "disabled":
        wandb_line = "off (wandb.mode=disabled)"
    elif cfg.wandb.mode == "offline":
        wandb_line = f"{output_dir / 'wandb'} (offline; upload: wandb sync {output_dir / 'wandb'}/offline-run-*)"
    else:
        wandb_line = f"online, project {cfg.wandb.project} (files in {output_dir / 'wandb'})"
    data = "" if cfg.dataset_path else " (generated demonstrations)"
    lines = [
        "",
        f"== {cfg.task} / {cfg.policy}: {summary['step']} steps in {summary['wall_s'] / 60:.1f} min on "
        f"{summary['hardware']}{data}",
        f"   score (mean max coverage) {summary['mean_max_reward']:.3f} (95% CI {lo:.3f}..{hi:.3f}), "
        f"success {summary['success_rate']:.0%} (95% CI {slo:.0%}..{shi:.0%}) over {n} evaluation episodes",
        f"   videos      {output_dir / 'videos' / 'final'} ({len(videos)} mp4)",
        f"   curve       {output_dir / 'training_curve.png'}",
        f"   checkpoint  {last_path} (best evaluation: {best_path.name})",
        f"   W&B run     {wandb_line}",
        "next:",
        f"   python eval.py checkpoint={last_path} eval.n_episodes=100   # evaluate again",
    ]
    if cfg.task.startswith("pusht") and not cfg.dataset_path:
        lines.append("   python -m datasets.download pusht && python train.py "
                     "dataset_path=~/.cache/diffusion-stack/pusht.zip training.steps=8000   # the published human demos")
    lines.append(f"   python compare.py run policies=diffusion_unet,lstm_gmm,ibc seeds=0,1,2 task={cfg.task}"
                 + (f" dataset_path={cfg.dataset_path}" if cfg.dataset_path else "") + "   # compare methods")
    return "\n".join(lines)


@torch.no_grad()
def validation_loss(policy, val_set: WindowDataset, cfg: Config, device, max_batches: int = 8) -> float:
    """Mean diffusion loss on validation windows, with a fixed noise seed so values compare across steps."""
    state = torch.get_rng_state()
    torch.manual_seed(0)
    losses = []
    n = len(val_set)
    for i in range(0, min(n, max_batches * cfg.training.batch_size), cfg.training.batch_size):
        batch = to_device(val_set.__getitems__(list(range(i, min(i + cfg.training.batch_size, n)))), device)
        losses.append(policy.compute_loss(batch)["loss"].item())
    torch.set_rng_state(state)
    return float(np.mean(losses))


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda args: train(parse_overrides(args)), argv)


if __name__ == "__main__":
    sys.exit(main())
