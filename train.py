"""Train a policy from demonstrations, evaluate it in closed loop, log to Weights & Biases.

    python train.py                                    # small Diffusion Policy on generated Push-T demos (CPU ok)
    python train.py task=pusht_image dataset_path=../shared/data/pusht.zip training.steps=200000
    python train.py policy=diffusion_transformer wandb.mode=online
    python train.py print_config=true ...              # the values a run would use and their sources, then exit

Overrides are `key=value`, resolved by `config.resolve` (the order of the layers: config.py). `train()` reads top
to bottom in named phases, sharing one `Run` object: setup (device, data, normalizer, policy, optimizer, EMA) ->
resume (last.pt) -> announce (the resolved values and their sources, config.json, W&B) -> the steps (train_step;
periodic work by name: log_training, validate, evaluate, checkpoint) -> finish (final evaluation, eval.json, the
summary). Everything lands in `output_dir`: config.json, history.jsonl (every logged entry, one JSON object per
line), checkpoints/last.pt and best.pt (written atomically), eval.json, videos/, training_curve.png and the W&B run
files (wandb/).
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

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from common import CheckpointError, ConfigError, DataError, TrainingError, on_interrupt, run_cli  # noqa: E402
from common.locks import DirLock  # noqa: E402
from config import (Config, Resolved, check_policy_config, flatten, renamed_values, resolve,  # noqa: E402
                    resume_differences)
from datasets import Normalizer, ReplayBuffer, StepBatches, WindowDataset, make_loader, split_episodes  # noqa: E402
from datasets.replay_buffer import IN_PROGRESS  # noqa: E402
from envs.tasks import Task, get_task, import_blockpush  # noqa: E402
from policy import EMA, get_spec  # noqa: E402
from policy.batch_share import batch_share  # noqa: E402
from runlib import (REPO, NoRun, Ranks, ThreadGovernor, barrier, check_resumable, check_wandb_online,  # noqa: E402
                    code_version, cpu_share, data_parallel, first_over_ranks, from_rank0, hardware, load_checkpoint,
                    log_video, mean_over_ranks, prepare_output_dir, rng_state, run_evaluation, save_checkpoint,
                    score_line, seed_everything, set_rank_rng_state, set_torch_threads, share_rng_of_rank0,
                    start_distributed, start_wandb, threads_default, to_device)

# ---------------------------------------------------------------------------------------------- data


def default_dataset(cfg: Config, task: Task, ranks: Ranks = Ranks()) -> Path:
    """The embedded default: scripted Push-T demonstrations, generated once into outputs/data/ (under torchrun by
    the first process of each machine, the others waiting)."""
    from demos.pusht import generate

    if task.robomimic_env:
        from envs.robomimic.demonstrator import TASK_ENV

        name = cfg.task.rsplit("_", 1)[0]  # lift_lowdim -> lift
        scripted = (f", or make scripted demonstrations first: `python -m demos.robomimic {name} --out "
                    f"outputs/data/{name}.hdf5`, then convert that file" if name in TASK_ENV else "")
        kind = "image" if cfg.task.endswith("_image") else "low_dim"
        raise ConfigError(
            f"task {cfg.task} needs dataset_path=<zarr>: convert a robomimic hdf5 with `python -m "
            f"demos.robomimic_hdf5 convert IN.hdf5 OUT.zarr` (robomimic's own: `python -m datasets.download "
            f"robomimic/{name}/ph/{kind}`){scripted} (docs/robomimic.md)")

    path = REPO / "outputs" / "data" / f"pusht_scripted_{cfg.default_demos}.zarr"
    if not path.exists() and ranks.local_rank == 0:
        print(f"generating {cfg.default_demos} scripted Push-T demonstrations into {path} (once)")
        tmp = path.with_name(path.name + ".tmp")
        # An interrupted generation is continued; a finished one that was not renamed yet is made again.
        generate(tmp, cfg.default_demos, first_seed=0, overwrite=ReplayBuffer.unfinished(tmp) is None)
        os.replace(tmp, path)
    barrier(ranks)
    return path


def bind_dataset(cfg: Config, task: Task, ranks: Ranks = Ranks()) -> tuple[Path, Task]:
    """The dataset path, and the task bound to the dataset's metadata (robomimic: env_meta, action kind)."""
    path = Path(cfg.dataset_path) if cfg.dataset_path else default_dataset(cfg, task, ranks)
    with ReplayBuffer.open(path) as rb:
        task = task.for_dataset(rb.attrs, str(path))
        task.check_buffer(rb, str(path))  # keys, shapes, dtypes, at least one episode
        if ranks.main:
            warn_about_store(rb, path, task)
    return path, task


def warn_about_store(rb: ReplayBuffer, path: Path, task: Task) -> None:
    """One line each for what a buffer cannot promise: an unfinished writer, chunks without a checksum."""
    from datasets.inspect import checksums

    if (unfinished := rb.attrs.get(IN_PROGRESS)) is not None:
        print(f"warning: {path}: an unfinished buffer ({rb.n_episodes} of {unfinished.get('episodes', '?')} "
              f"episodes; its writer, `{unfinished.get('writer', {}).get('command', '?')}`, did not finish): training "
              "on what it holds; the same command finishes it", file=sys.stderr)
    unchecked = [k for k in task.dataset_keys if checksums(rb, k) == "none"]
    if unchecked:
        print(f"warning: {path}: no checksum on the chunks of {', '.join(unchecked)} (zarr v{rb.zarr_format} "
              "directory): a chunk that fails to decode is named, changed bytes that still decode are not "
              f"detected; `python -m datasets.inspect --verify {path}` reads every chunk", file=sys.stderr)


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


# ---------------------------------------------------------------------------------------------- the run


@dataclass
class Run:
    """One training run: what `setup` builds, and the state the phases below share and update."""

    cfg: Config
    resolved: Resolved
    task: Task
    ranks: Ranks
    device: torch.device
    output_dir: Path
    policy_cfg: object
    train_set: WindowDataset
    val_set: WindowDataset | None
    data_info: dict
    policy: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    ema: EMA | None  # rank 0 only: its weights serve validation, evaluations and checkpoints
    governor: ThreadGovernor | None
    threads: int
    started: float  # perf_counter() when this process started the run
    machine: str
    run_id: str
    # What changes while training (saved in every checkpoint):
    step: int = 0
    best_score: float = -math.inf
    history: list = field(default_factory=list)
    wall_before: float = 0.0  # seconds of the earlier processes of this run (a resumed run)
    info: dict = field(default_factory=dict)  # what config.json, the checkpoints and W&B record about the run
    wandb: object = None  # the W&B run (rank 0), or NoRun

    @property
    def last_path(self) -> Path:
        return self.output_dir / "checkpoints" / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.output_dir / "checkpoints" / "best.pt"

    @property
    def say(self):
        """print on rank 0, nothing on the other ranks."""
        return print if self.ranks.main else (lambda *args, **kwargs: None)


def run_output_dir(cfg: Config) -> Path:
    """output_dir, or by default outputs/<task>_<policy>_seed<seed>."""
    return Path(cfg.output_dir or REPO / "outputs" / f"{cfg.task}_{cfg.policy}_seed{cfg.seed}")


def setup(resolved: Resolved) -> Run:
    """Phase 1: device and ranks, threads, output dir, data (the dataset can change the task: robomimic's
    environment metadata and action kind), normalizer, policy, optimizer and schedule, EMA."""
    cfg = resolved.config
    started = time.perf_counter()  # wall time of this process, added to the checkpoint's (reports show it)
    # Under torchrun: the process group, this rank's GPU (or the CPU); a plain run: one process (ranks.main).
    ranks, device = start_distributed(cfg.device, cfg.training.batch_size, cfg.training.dist_timeout_s)
    threads = set_torch_threads(cfg.training.threads, cpu_share(ranks))
    # Without an explicit training.threads, follow what other jobs leave free while training (checked at logs).
    governor = ThreadGovernor(cpu_share(ranks) or threads_default()) \
        if cfg.training.threads is None and device.type == "cpu" else None
    output_dir = run_output_dir(cfg)
    if ranks.main:
        prepare_output_dir(output_dir)  # created and writable, before any data is read
    seed_everything(cfg.seed)  # every rank the same: one random state for all ranks (policy/batch_share.py)

    data_path, task = bind_dataset(cfg, get_task(cfg.task), ranks)
    policy_cfg = check_policy_config(cfg, task)  # its horizons shape the data windows
    resolved.policy = policy_cfg  # bound to the dataset (robomimic: the action size of its action kind)
    train_set, val_set, data_info = load_data(data_path, cfg, task, policy_cfg)
    if cfg.training.batch_size > len(train_set):  # else every batch would be smaller than the one recorded
        raise ConfigError(f"training.batch_size={cfg.training.batch_size} is larger than the {len(train_set)} "
                          f"training windows of {data_path} ({len(data_info['train_episodes'])} episodes); expected "
                          f"at most {len(train_set)}, or more data")
    normalizer = Normalizer.fit(train_set.step_arrays(), image_keys=policy_cfg.image_keys)
    policy = get_spec(cfg.policy).policy_class(policy_cfg, normalizer).to(device)
    optimizer = policy.make_optimizer()  # policy.optimizer_lr and the policy's parameter groups
    from diffusers.optimization import get_cosine_schedule_with_warmup

    lr_scheduler = get_cosine_schedule_with_warmup(optimizer, policy_cfg.lr_warmup_steps, cfg.training.steps)
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
    machine = hardware(device) + (f" x {ranks.world_size} processes" if ranks.distributed else "")
    return Run(cfg, resolved, task, ranks, device, output_dir, policy_cfg, train_set, val_set, data_info, policy,
               optimizer, lr_scheduler, ema, governor, threads, started, machine,
               run_id=f"{output_dir.name}-{int(time.time())}")


def resume(run: Run) -> dict | None:
    """Phase 2: continue from output_dir/checkpoints/last.pt when it exists (and resume=true): weights, EMA,
    optimizer, schedule, step, history and random states. Returns the results of a run that is already complete
    (nothing more to do), else None."""
    cfg, ranks = run.cfg, run.ranks
    # Rank 0 reads the checkpoint and sends it to the other ranks (their machines need not see output_dir); to the
    # CPU (RNG states must stay there), load_state_dict moves the rest.
    exists = cfg.resume and ranks.main and run.last_path.exists()
    ckpt = from_rank0(load_checkpoint(run.last_path) if exists else None, ranks)
    if ckpt is None:
        return None
    check_resumable(ckpt, run.last_path)
    if ckpt["task"] != cfg.task or ckpt["policy_name"] != cfg.policy:
        raise CheckpointError(f"{run.last_path}: belongs to task {ckpt['task']!r} / policy {ckpt['policy_name']!r}, "
                              f"not {cfg.task!r} / {cfg.policy!r}; use another output_dir or resume=false")
    changed = resume_differences(run_identity(ckpt["config"], {**ckpt["policy_config"],
                                                               **renamed_values(ckpt["config"])}, ckpt),
                                 run_identity(cfg.to_dict(), run.policy_cfg.to_dict(), None, run))
    if changed:  # another network, data, seed or recipe: the weights would mean something else, or not fit
        listed = "; ".join(f"{k}: {old!r} in the checkpoint, {new!r} now" for k, old, new in changed)
        raise CheckpointError(f"{run.last_path}: this run differs from the run it would resume ({listed}); a resumed "
                              f"run is the same run (what may change: config.RESUME_MAY_CHANGE). Use resume=false to "
                              "start it again there, or another output_dir")
    finished = from_rank0(finished_run(run.output_dir, ckpt, cfg) if ranks.main else None, ranks)
    if finished is not None:
        return finished
    run.policy.load_state_dict(ckpt["policy"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
    if run.ema is not None:
        run.ema.load_state_dict(ckpt["ema"])
    run.step, run.best_score, run.history, run.run_id = (ckpt["step"], ckpt["best_score"], ckpt["history"],
                                                         ckpt["wandb_run_id"])
    run.wall_before = float(ckpt.get("wall_s", 0.0))
    if ckpt.get("hardware") and ckpt["hardware"] != run.machine:
        run.machine = f"{ckpt['hardware']}; resumed on {run.machine}"
    set_rank_rng_state(ckpt["rng"], ranks, run.device)
    run.say(f"resumed from {run.last_path} at step {run.step}")
    if ckpt.get("world_size", 1) != ranks.world_size:
        was, now, batch = ckpt.get("world_size", 1), ranks.world_size, cfg.training.batch_size
        run.say(f"warning: {run.last_path} was trained by {was} process(es), this run has {now}: the global batch "
                f"(training.batch_size={batch}), the windows of every step, the per-sample random draws and the "
                f"learning rate stay the same; each process's share goes from {batch // was} to {batch // now} "
                "windows (memory and speed per GPU change) and gradients are summed in another order, so the run "
                "continues the same optimization up to float rounding, not bit for bit (dropout masks, where a "
                "policy has dropout, are drawn anew)", file=sys.stderr)
    return None


def normalizer_stats(policy) -> dict:
    """The fitted normalizer's statistics as lists ({key: {stat: values}}), as checkpoints and config.json hold them."""
    return {k: {s: v.tolist() for s, v in st.items()} for k, st in policy.normalizer.stats().items()}


def run_identity(config: dict, policy_config: dict, ckpt: dict | None, run: Run | None = None) -> dict:
    """What makes a run the run it is, flattened for config.resume_differences: every configuration value
    (`section.field`, `policy.field`) and the dataset's identity (path, size, normalizer statistics), from a
    checkpoint or from the run being set up."""
    flat = flatten(config)
    flat.update({f"policy.{k}": v for k, v in policy_config.items()})
    dataset = ckpt["dataset"] if ckpt is not None else run.data_info
    flat.update({"dataset.path": str(Path(dataset["path"]).resolve()), "dataset.n_episodes": dataset["n_episodes"],
                 "dataset.n_steps": dataset["n_steps"]})
    stats = ckpt.get("normalizer_stats") if ckpt is not None else normalizer_stats(run.policy)
    if stats is not None:
        flat["dataset.normalizer_stats"] = stats
    return flat


def announce(run: Run) -> None:
    """Phase 3: print what runs (every non-default value and its source, the classes, data and output), write
    config.json and start the W&B run (rank 0)."""
    cfg, spec = run.cfg, get_spec(run.cfg.policy)
    n_params = sum(p.numel() for p in run.policy.parameters())
    policy_class = f"{spec.policy_class.__module__}.{spec.policy_class.__name__}"
    run.say(run.resolved.table())
    run.say(f"task {cfg.task} ({run.task.env_id}, obs {run.task.obs_shapes}), policy {cfg.policy} ({policy_class}, "
            f"{n_params / 1e6:.2f}M parameters) on {run.device}"
            f"{f', {run.threads} CPU thread(s)' if run.device.type == 'cpu' else ''}; recipe {cfg.recipe}")
    run.say(f"data {run.data_info['path']}: {run.data_info['n_episodes']} episodes, {len(run.train_set)} training "
            f"windows; output {run.output_dir}")
    if run.ranks.distributed:
        run.say(f"data parallel: {run.ranks.world_size} process(es) ({torch.distributed.get_backend()}), global "
                f"batch {cfg.training.batch_size} = {run.ranks.world_size} x "
                f"{cfg.training.batch_size // run.ranks.world_size}, learning rate "
                f"{run.lr_scheduler.base_lrs[0]:g} as configured (not rescaled)")
    run.info = {"dataset": {k: v for k, v in run.data_info.items() if not k.endswith("_episodes")},
                "normalizer_stats": normalizer_stats(run.policy),
                "code_version": code_version(), "n_parameters": n_params,
                "classes": {"policy": policy_class, "task": cfg.task, "env": run.task.env_id},
                "resolved": run.resolved.to_dict()}
    if not run.ranks.main:
        run.wandb = NoRun()
        return
    # history.jsonl starts as the checkpoint's history (a resumed run trains the steps after its last checkpoint
    # again) or empty (a new run, also over the files of an earlier one with resume=false).
    write_history(run.output_dir / HISTORY_FILE, run.history)
    write_json(run.output_dir / "config.json", {
        "task": cfg.task, "policy": cfg.policy, "seed": cfg.seed, "recipe": cfg.recipe, "group": cfg.wandb.group,
        "config": cfg.to_dict(), "policy_config": run.policy_cfg.to_dict(), **run.info})
    run.wandb = start_wandb(cfg, run.output_dir, run.info, run.run_id)


def batches(run: Run):
    """This rank's batches from the current step on (its share of each step's global batch), on the device."""
    cfg = run.cfg
    sampler = StepBatches(len(run.train_set), cfg.training.batch_size, cfg.seed, run.step, cfg.training.steps,
                          run.ranks.rank, run.ranks.world_size)
    if data_on_device(cfg, run.train_set, run.device):
        # The whole dataset on the accelerator: a batch is one gather there (same windows as the loader's).
        device_set = run.train_set.to(run.device)
        run.say(f"data on {run.device}: {device_set.nbytes() / 2**20:.0f} MiB"
                f"{' per rank' if run.ranks.distributed else ''}")
        return (device_set.__getitems__(indices) for indices in sampler)
    loader = make_loader(run.train_set, cfg.training.batch_size, shuffle=True, num_workers=cfg.training.num_workers,
                         pin_memory=run.device.type == "cuda", batch_sampler=sampler)
    return (to_device(batch, run.device) for batch in loader)


class LossWatch:
    """Non-finite losses, recorded on the device (the first step that had one) and read only at logs, checkpoints
    and evaluations: a check per step would make the host wait for the GPU every step. Nothing computed after a
    bad step is ever saved, so the last checkpoint stays good."""

    def __init__(self, step: int, device: torch.device):
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)
        self.step = torch.full((), step, dtype=torch.int64, device=device)
        self.checked = step

    def record(self, loss: torch.Tensor) -> None:
        self.first_bad = torch.where((self.first_bad < 0) & ~torch.isfinite(loss.detach()), self.step, self.first_bad)
        self.step += 1

    def check(self, run: Run) -> None:
        bad = int(first_over_ranks(self.first_bad, run.ranks))  # the first on any rank: every rank stops
        if bad >= 0:
            good = f"the last good checkpoint is {run.last_path}" if run.last_path.exists() else \
                "no checkpoint was saved yet"
            raise TrainingError(f"non-finite loss (nan or inf) at step {bad}, found at step {run.step} (losses are "
                                f"checked at every log, checkpoint and evaluation; steps {self.checked}.."
                                f"{run.step - 1} were unchecked); stopping ({good})")
        self.checked = run.step


def train_step(run: Run, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss, backward, clip, optimizer and schedule step, EMA; returns the loss and the gradient norm."""
    use_bf16 = run.cfg.training.bf16 and run.device.type == "cuda"
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=use_bf16), \
            batch_share(run.ranks.rank, run.ranks.world_size):
        loss = model(batch)["loss"]  # compute_loss
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(run.policy.parameters(), run.cfg.training.grad_clip_norm)
    run.optimizer.step()
    run.lr_scheduler.step()
    if run.ema is not None:
        run.ema.step(run.policy)
    run.step += 1
    return loss, grad_norm


# ---------------------------------------------------------------------------------------------- periodic work


def due(run: Run, every: int) -> bool:
    """Every `every` steps (0: only at the last step), and always at the last step."""
    return run.step == run.cfg.training.steps or (every > 0 and run.step % every == 0)


def record(run: Run, entry: dict) -> None:
    """One history entry: in the run's history (checkpoints), history.jsonl and W&B."""
    run.history.append(entry)
    append_history(run.output_dir / HISTORY_FILE, entry)
    run.wandb.log({k: v for k, v in entry.items() if k != "step"}, step=entry["step"])


def log_training(run: Run, loss: torch.Tensor, grad_norm: torch.Tensor, since: tuple[float, int]) -> float:
    """The global batch's loss, gradient norm, learning rate and speed since the last log; returns the loss."""
    if run.governor is not None:
        run.governor.update()
    train_loss = mean_over_ranks(loss, run.ranks).item()
    if run.ranks.main:
        record(run, {"step": run.step, "train/loss": train_loss, "train/grad_norm": float(grad_norm),
                     "train/lr": run.lr_scheduler.get_last_lr()[0],
                     "train/steps_per_s": (run.step - since[1]) / (time.perf_counter() - since[0])})
    return train_loss


def validate(run: Run) -> None:
    record(run, {"step": run.step, "val/loss": validation_loss(run.ema.averaged if run.ema else run.policy,
                                                               run.val_set, run.cfg, run.device)})
    run.policy.train()


def evaluate(run: Run, tag: str) -> dict:
    """Closed-loop evaluation of the EMA weights; a new best score writes checkpoints/best.pt."""
    result = run_evaluation(run.ema.averaged if run.ema is not None else run.policy, run.task, run.cfg, run.device,
                            run.output_dir, tag)
    record(run, {"step": run.step, "eval/mean_max_reward": result["mean_max_reward"],
                 "eval/success_rate": result["success_rate"],
                 **{f"eval/{name}": result[name] for name in run.task.score_thresholds}})  # Block Pushing's p1, p2
    if tag != "final":  # the final score is in the closing summary
        tqdm.write(f"evaluation at step {run.step}: {score_line(result)}")
    if result["videos"]:
        log_video(run.wandb, result["videos"][0], step=run.step)
    if result["mean_max_reward"] > run.best_score:
        run.best_score = result["mean_max_reward"]
        save_checkpoint(run.best_path, checkpoint_state(run))
    run.policy.train()
    return result


def checkpoint_state(run: Run) -> dict:
    return {"config": run.cfg.to_dict(), "resolved": run.info["resolved"], "task": run.cfg.task,
            "task_spec": run.task.spec(), "policy_name": run.cfg.policy, "policy_config": run.policy_cfg.to_dict(),
            "policy": run.policy.state_dict(), "ema": run.ema.state_dict() if run.ema is not None else None,
            "optimizer": run.optimizer.state_dict(), "lr_scheduler": run.lr_scheduler.state_dict(),
            "step": run.step, "best_score": run.best_score, "history": run.history, "rng": rng_state(),
            "wandb_run_id": run.run_id, "dataset": run.data_info, "normalizer_stats": run.info["normalizer_stats"],
            "code_version": run.info["code_version"], "world_size": run.ranks.world_size,
            "wall_s": run.wall_before + time.perf_counter() - run.started, "hardware": run.machine}


def finish(run: Run) -> dict:
    """Phase 5: the final evaluation, last.pt, eval.json, the curve, the W&B summary and the closing summary."""
    result = evaluate(run, "final")
    save_checkpoint(run.last_path, checkpoint_state(run))
    summary = {**result, "checkpoint": str(run.last_path), "best_checkpoint": str(run.best_path), "step": run.step,
               "recipe": run.cfg.recipe, "wall_s": round(run.wall_before + time.perf_counter() - run.started, 1),
               "hardware": run.machine}
    write_json(run.output_dir / "eval.json", summary)
    plot_curves(run.history, run.output_dir / "training_curve.png")
    run.wandb.summary.update({"final/mean_max_reward": result["mean_max_reward"],
                              "final/success_rate": result["success_rate"],
                              **{f"final/{name}": result[name] for name in run.task.score_thresholds},
                              "run/wall_s": summary["wall_s"],
                              "run/hardware": run.machine, "run/recipe": run.cfg.recipe})
    run.wandb.finish()
    print(f"final: {score_line(result)}")
    print(f"eval.json: {run.output_dir / 'eval.json'}; videos: {run.output_dir / 'videos' / 'final'}; "
          f"curve: {run.output_dir / 'training_curve.png'}; checkpoints: {run.last_path.parent}")
    print(run_summary(run.cfg, summary, run.output_dir, run.last_path, run.best_path))
    return summary


# ---------------------------------------------------------------------------------------------- main


def train(run_config: Resolved | Config, prepare: Callable[[Run], None] | None = None) -> dict:
    """Train one run and return its eval.json summary. `run_config`: what `config.resolve` returns (a Config built
    in code is taken as it is: its values are labelled "given in code"). `prepare(run)` runs after setup, before a
    resume and the first step (distill.py: the student starts from its teacher's weights, the teacher attached)."""
    resolved = run_config if isinstance(run_config, Resolved) else resolve([], base=run_config, use_presets=False)
    output_dir = run_output_dir(resolved.config)
    # One writer per run directory (the first process of a torchrun launch holds it for all): a second train.py
    # there is refused while this one runs, and takes over a lock whose process died.
    main_process = int(os.environ.get("RANK") or 0) == 0
    if main_process:
        check_wandb_online(resolved.config.wandb.mode)  # a login or network missing: say so before any data is read
        if get_task(resolved.config.task).env_id == "BlockPush-v0":  # an optional extra: before, not after, training
            import_blockpush()
    with DirLock(prepare_output_dir(output_dir)) if main_process else contextlib.nullcontext():
        run = setup(resolved)
        if prepare is not None:
            prepare(run)
        # Ctrl-C or SIGTERM from here on: run_cli's line names the last checkpoint and the command that continues
        with on_interrupt(lambda again: (f"{run.last_path} is the last checkpoint (saved every "
                                         f"training.checkpoint_every={run.cfg.training.checkpoint_every} steps); "
                                         f"`{again}` continues from it") if run.last_path.exists()
                          else "no checkpoint was saved yet"):
            return train_run(run)


def train_run(run: Run) -> dict:
    """resume, announce, the steps and finish of a run that `setup` built."""
    finished = resume(run)
    if finished is not None:
        return finished
    announce(run)

    ranks, every = run.ranks, run.cfg.training
    model = data_parallel(run.policy, ranks, run.device)  # the policy, or the policy in DistributedDataParallel
    watch = LossWatch(run.step, run.device)
    run.policy.train()
    bar = tqdm(total=every.steps, initial=run.step, desc="train", unit="step", dynamic_ncols=True,
               disable=not ranks.main)
    since = (time.perf_counter(), run.step)
    for batch in batches(run):
        loss, grad_norm = train_step(run, model, batch)
        watch.record(loss)
        bar.update(1)
        log, val = due(run, every.log_every), run.val_set is not None and due(run, every.val_every)
        evaluate_now = bool(every.eval_every) and run.step % every.eval_every == 0 and run.step < every.steps
        save = due(run, every.checkpoint_every)
        if log or val or evaluate_now or save:
            watch.check(run)
        if log:
            bar.set_postfix(loss=f"{log_training(run, loss, grad_norm, since):.4f}")
            since = (time.perf_counter(), run.step)
        if val and ranks.main:
            validate(run)
        if evaluate_now and ranks.main:
            evaluate(run, f"step_{run.step}")
        if val or evaluate_now:
            share_rng_of_rank0(ranks, run.device)  # the other ranks wait for rank 0 and take its random state
        if save and ranks.main:
            save_checkpoint(run.last_path, checkpoint_state(run))
    bar.close()
    if not ranks.main:  # done: wait for rank 0's final evaluation and files, and return its summary
        return from_rank0(None, ranks)
    return from_rank0(finish(run), ranks)


# ---------------------------------------------------------------------------------------------- files


HISTORY_FILE = "history.jsonl"  # one JSON object per line: {"step", "train/loss", ...}, as logged


def write_json(path: Path, obj) -> None:
    """JSON written to a temporary name, then renamed: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def write_history(path: Path, history: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(json.dumps(entry) + "\n" for entry in history))
    os.replace(tmp, path)


def append_history(path: Path, entry: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")


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
    score_name = "mean max coverage" if cfg.task.startswith("pusht") else "mean max reward"  # robomimic: 0 or 1
    lines = [
        "",
        f"== {cfg.task} / {cfg.policy}: {summary['step']} steps in {summary['wall_s'] / 60:.1f} min on "
        f"{summary['hardware']}{data}",
        f"   score ({'mean episode return' if 'p2' in summary else score_name}) "
        f"{summary['mean_max_reward']:.3f} (95% CI {lo:.3f}..{hi:.3f}), "
        f"success {summary['success_rate']:.0%} (95% CI {slo:.0%}..{shi:.0%})"
        + (f", p1 {summary['p1']:.2f}, p2 {summary['p2']:.2f}" if "p2" in summary else "")
        + f" over {n} evaluation episodes",
        f"   videos      {output_dir / 'videos' / 'final'} ({len(videos)} mp4)",
        f"   curve       {output_dir / 'training_curve.png'}",
        f"   checkpoint  {last_path} (best evaluation: {best_path.name})",
        f"   W&B run     {wandb_line}",
        "next:",
        f"   python eval.py checkpoint={last_path} eval.n_episodes=100   # evaluate again",
    ]
    if cfg.task.startswith("pusht") and not cfg.dataset_path:
        from datasets.download import PUBLISHED, cache_dir

        lines.append(f"   python -m datasets.download pusht && python train.py dataset_path="
                     f"{cache_dir() / PUBLISHED['pusht'].filename} training.steps=8000   # the published human demos")
    lines.append(f"   python compare.py run policies=diffusion_unet,lstm_gmm,ibc seeds=0,1,2 task={cfg.task}"
                 + (f" dataset_path={cfg.dataset_path}" if cfg.dataset_path else "")
                 + " recipe=presets   # compare methods, one recipe for all")
    return "\n".join(lines)


@torch.no_grad()
def validation_loss(policy, val_set: WindowDataset, cfg: Config, device, max_batches: int = 8) -> float:
    """Mean loss on validation windows with the same noise at every call (seed 0), so values compare across steps.

    The noise comes from the global generators, CPU and (on a GPU) the device's: both are saved and restored
    around the pass (fork_rng) and only the device in use is seeded, so training's random stream continues as
    if no validation had run (torch.manual_seed would reseed every GPU and rewind training's CUDA noise).
    """
    device = torch.device(device)
    gpus = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=gpus, device_type="cuda"):
        torch.random.default_generator.manual_seed(0)
        for gpu in gpus:
            torch.cuda.default_generators[gpu.index if gpu.index is not None else torch.cuda.current_device()] \
                .manual_seed(0)
        losses = []
        n = len(val_set)
        for i in range(0, min(n, max_batches * cfg.training.batch_size), cfg.training.batch_size):
            batch = to_device(val_set.__getitems__(list(range(i, min(i + cfg.training.batch_size, n)))), device)
            losses.append(policy.compute_loss(batch)["loss"].item())
    return float(np.mean(losses))


def command(argv: list[str]) -> dict | None:
    resolved = resolve(argv)
    if resolved.print_only:  # print_config=true: the values and their sources, no data read
        print(resolved.table())
        return None
    return train(resolved)


def main(argv: list[str] | None = None) -> int:
    return run_cli(command, argv, usage=__doc__)


if __name__ == "__main__":
    sys.exit(main())
