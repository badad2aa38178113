"""What the entry points (train.py, eval.py, compare.py, bench/) share about a run: its checkpoints, device,
random state, data-parallel ranks (torchrun), W&B run and closed-loop evaluation. (The error classes and the
command-line wrapper that prints them, `run_cli`, are in `common`, which the packages use too.)

    from runlib import load_checkpoint, policy_from_checkpoint
    ckpt = load_checkpoint("outputs/<run>/checkpoints/last.pt")
    policy = policy_from_checkpoint(ckpt, "outputs/<run>/checkpoints/last.pt")   # EMA weights, eval mode

A checkpoint is a dict written by train.py with torch.save: "config" (Config.to_dict()), "task", "task_spec",
"policy_name", "policy_config", "policy" (weights), "ema", "optimizer", "lr_scheduler", "step", "best_score",
"history", "rng" (rank 0's), "wandb_run_id", "dataset", "normalizer_stats", "code_version", "world_size" (processes
that trained it; absent: 1).
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import platform
import random
import subprocess
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from common import CheckpointError, ConfigError, TrainingError
from common.paths import broken_link
from datasets import Normalizer
from envs.rollout import evaluate
from policy import POLICIES, make_policy

REPO = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------------------------- device, version


def pick_device(name: str) -> torch.device:
    """"auto": CUDA, then Apple's MPS, then the CPU; any other name is a torch device ("cpu", "cuda:1")."""
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError as e:
            raise ConfigError(f"device={name!r} is not a torch device (e.g. auto, cpu, cuda, cuda:1): {e}") from e
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device={name!r}: CUDA is not available on this machine (use device=auto or cpu)")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def code_version() -> str:
    """`git describe` of the checkout, saved with every run ("unknown" outside git)."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def free_cores(sample_s: float = 0.2) -> int:
    """How many CPU cores are idle right now (at least 1): the busy share of all cores over `sample_s` seconds,
    read from /proc/stat (Linux); elsewhere the core count."""
    def read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return values[3] + values[4], sum(values[:8])  # idle + iowait, all but guest time

    n = os.cpu_count() or 1
    try:
        idle0, total0 = read()
        time.sleep(sample_s)
        idle1, total1 = read()
    except (OSError, ValueError, IndexError):
        return n
    if total1 <= total0:
        return n
    return max(1, min(n, round(n * (idle1 - idle0) / (total1 - total0))))


def _cpu_seconds() -> tuple[float, float] | None:
    """(busy CPU-seconds of the whole machine, wall-clock seconds of CPU time in all) from /proc/stat; None
    where it cannot be read (not Linux)."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    total = sum(values[:8])
    return (total - values[3] - values[4]) / ticks, total / ticks


class ThreadGovernor:
    """Keeps torch's threads at the cores other processes leave free, re-checked on every `update()` (train.py
    calls it at each log step): a training that started alone drops to 1 thread when another job starts on a
    2-core machine, and goes back up when it ends. Others' load = the machine's busy time minus this process's.
    """

    def __init__(self, maximum: int):
        self.maximum = maximum
        self._last = (_cpu_seconds(), time.process_time())

    def update(self) -> int:
        machine, own = _cpu_seconds(), time.process_time()
        (last_machine, last_own), self._last = self._last, (machine, own)
        if machine is None or last_machine is None or machine[1] <= last_machine[1]:
            return torch.get_num_threads()
        n = os.cpu_count() or 1
        elapsed = (machine[1] - last_machine[1]) / n  # wall seconds (the total counts every core)
        others = max(0.0, (machine[0] - last_machine[0]) - (own - last_own)) / elapsed  # cores busy with others
        threads = max(1, min(self.maximum, round(n - others)))
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        return threads


_initial_threads: int | None = None  # torch's thread count before this module first changed it


def threads_default() -> int:
    """torch's thread count before this module first changed it."""
    global _initial_threads
    if _initial_threads is None:
        _initial_threads = torch.get_num_threads()
    return _initial_threads


def set_torch_threads(requested: int | None, default: int | None = None) -> int:
    """torch's intra-op threads: `requested`, or else `default` (torch's count before the first call here, so
    several runs in one process, e.g. `compare.py run`, each start from it) lowered to the cores that are free.

    Two torch processes whose OpenMP threads outnumber the cores slow each other down many times over (their
    threads spin waiting for each other): measured on 2 cores next to another training, a small train -> eval
    round trip took 103 s with 2 threads and 30 s with 1, against 19-21 s on an idle machine with either.
    """
    threads = requested or min(default or threads_default(), free_cores())
    torch.set_num_threads(threads)
    return threads


def to_device(batch: dict, device: torch.device) -> dict:
    """A (nested) dict of tensors moved to `device` (a no-op for tensors already there)."""
    return {k: to_device(v, device) if isinstance(v, dict) else v.to(device, non_blocking=True)
            for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------- checkpoints


CHECKPOINT_KEYS = ("config", "task", "policy_name", "policy_config", "policy", "step")
# What train.py needs to continue a run from a checkpoint, besides CHECKPOINT_KEYS.
RESUME_KEYS = ("ema", "optimizer", "lr_scheduler", "best_score", "history", "rng", "wandb_run_id")


def prepare_output_dir(path: Path, key: str = "output_dir") -> Path:
    """Create `path` (and its parents) and check that files can be written in it, so that a directory that cannot
    hold the results stops a run before any work rather than at its first checkpoint."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write_test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        if link := broken_link(path):
            raise ConfigError(f"{key}={str(path)!r}: cannot write there: {link}; expected a writable directory") from e
        raise ConfigError(f"{key}={str(path)!r}: cannot write there ({e.strerror or e}"
                          f"{': ' + str(e.filename) if e.filename and str(e.filename) != str(path) else ''}); "
                          "expected a writable directory") from e
    return path


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temporary file, then rename: a kill never leaves a half-written checkpoint, and a write that
    fails (a full disk, a file size limit) leaves the previous checkpoint in place and stops with a TrainingError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one per writer: two writers never share it
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)  # also on Ctrl-C mid-write: no half-written file is left behind
        if not isinstance(e, (OSError, RuntimeError)):  # torch's writer reports a failed write as a RuntimeError
            raise
        kept = f"the previous {path.name} is unchanged" if path.exists() else f"no {path.name} was written"
        reason = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        raise TrainingError(f"{path}: could not write the checkpoint ({reason}; is the disk full or the file size "
                            f"limited?); {kept}; stopping") from e


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Read a checkpoint, stopping with a message naming the file if it is missing, truncated or incomplete."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: a directory; expected a checkpoint file (e.g. {path}/checkpoints/last.pt)")
    if not path.is_file():
        raise CheckpointError(broken_link(path) or f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # truncated zip, unpickling garbage, ...
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): {type(e).__name__}: {e}") \
            from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a checkpoint of this project (got a {type(ckpt).__name__})")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint is missing keys {missing}; expected a checkpoint written by "
                              "train.py")
    return ckpt


def check_resumable(ckpt: dict, path: str | Path) -> None:
    """A checkpoint that train.py can continue: it has RESUME_KEYS (optimizer, schedule, EMA, random state, ...)."""
    missing = [k for k in RESUME_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: cannot resume from it: missing {missing} (a checkpoint of an older version of "
                              "the code?); use another output_dir or resume=false, or evaluate it with eval.py")


def policy_from_checkpoint(ckpt: dict, path: str | Path, use_ema: bool = True, config_overrides: dict | None = None):
    """The policy a checkpoint holds (its EMA weights when it has them), in eval mode, on the CPU.

    `config_overrides` change policy config fields that hold no weights (e.g. the inference scheduler).
    """
    if ckpt["policy_name"] not in POLICIES:
        raise CheckpointError(f"{path}: unknown policy {ckpt['policy_name']!r}; known policies: {', '.join(POLICIES)}")
    try:
        policy = make_policy(ckpt["policy_name"], Normalizer(), **{**ckpt["policy_config"], **(config_overrides or {})})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot build policy {ckpt['policy_name']!r} from its saved config"
                              f"{' with ' + str(config_overrides) if config_overrides else ''}: {e}") from e
    weights = ckpt["ema"]["averaged"] if use_ema and ckpt.get("ema") else ckpt["policy"]
    bad = [k for k, v in weights.items()
           if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} weight tensor(s) hold NaN or inf (first: {bad[0]!r}); expected "
                              "finite weights (train.py never saves after a non-finite loss)")
    try:
        policy.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit policy {ckpt['policy_name']!r}: {e}") from e
    return policy.eval()


# ---------------------------------------------------------------------------------------------- random state


def rng_state() -> dict:
    """Python's, NumPy's and torch's random states (CUDA's too when there is one), for exact resumes."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    # A checkpoint loaded with map_location=<cuda> carries its CPU state on the GPU; torch wants it on the CPU.
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------- data parallel
#
# `torchrun --nproc_per_node N train.py ...` starts N copies of train.py with RANK, WORLD_SIZE, LOCAL_RANK, ...
# in their environment; train.py then trains with DistributedDataParallel (see train.py's docstring for what each
# rank does). A plain `python train.py` has none of these variables: no process group, nothing below does anything.


@dataclasses.dataclass(frozen=True)
class Ranks:
    """This process's place in a torchrun launch; the defaults are a plain one-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # its index on this machine: its GPU is cuda:<local_rank>
    local_world_size: int = 1  # processes on this machine
    distributed: bool = False  # started by torchrun: a process group exists (at world size 1 too)

    @property
    def main(self) -> bool:
        """Rank 0: the one process that prints, writes files, logs to W&B and evaluates."""
        return self.rank == 0


def start_distributed(device_name: str, batch_size: int, timeout_s: float) -> tuple[Ranks, torch.device]:
    """This process's ranks and device; under torchrun also the process group (NCCL on GPUs, gloo on CPUs), each
    rank on the GPU of its local rank. `batch_size` (the global batch) must split evenly over the ranks;
    `timeout_s` is how long a rank waits for the others at a collective (rank 0's evaluation included)."""
    env = os.environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return Ranks(), pick_device(device_name)
    ranks = Ranks(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
                  int(env.get("LOCAL_WORLD_SIZE", 1)), distributed=True)
    if batch_size % ranks.world_size:
        lower = batch_size - batch_size % ranks.world_size
        raise ConfigError(f"training.batch_size={batch_size} is the global batch and must split evenly over the "
                          f"{ranks.world_size} processes of this torchrun launch; use e.g. training.batch_size="
                          f"{lower or ranks.world_size}")
    device = pick_device(device_name)
    if device.type == "cuda":
        if device.index is not None:
            raise ConfigError(f"device={device_name!r}: under torchrun each process uses the GPU of its local rank "
                              "(cuda:<LOCAL_RANK>); use device=auto or cuda, and CUDA_VISIBLE_DEVICES to choose GPUs")
        if ranks.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"torchrun started {ranks.local_world_size} processes on this machine, which has "
                              f"{torch.cuda.device_count()} GPU(s): use --nproc_per_node {torch.cuda.device_count()}")
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ConfigError(f"device={device.type}: data-parallel training runs on CUDA GPUs (NCCL) or CPUs (gloo); "
                          "use device=cpu or one process")
    import torch.distributed as dist
    from datetime import timedelta

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s),
                                device_id=device if device.type == "cuda" else None)
        atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    return ranks, device


def cpu_share(ranks: Ranks) -> int | None:
    """Default torch threads of a rank: the machine's cores shared out over its ranks (None: one process, torch's
    default). torchrun itself sets OMP_NUM_THREADS=1 when it starts several processes, too few on a large CPU."""
    return max(1, (os.cpu_count() or 1) // ranks.local_world_size) if ranks.distributed else None


def data_parallel(policy: torch.nn.Module, ranks: Ranks, device: torch.device) -> torch.nn.Module:
    """What the training step calls, `model(batch)["loss"]`: the policy itself (its forward is compute_loss), or
    under torchrun the policy in DistributedDataParallel, which averages the gradients over the ranks during the
    backward pass (bucketed all-reduces that overlap it). The parameters stay the policy's: the optimizer, EMA and
    checkpoints see the same tensors. Buffers (normalizer statistics, masks) never change while training, so they
    are sent once, not at every step."""
    if not ranks.distributed:
        return policy
    from torch.nn.parallel import DistributedDataParallel

    # A 1x1 convolution's weight gradient (the ResNet's downsampling) comes with other strides on its size-1 dims
    # than the bucket's view of it: the same memory layout, and DDP copies it; its warning says nothing else.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return DistributedDataParallel(policy, device_ids=[device.index] if device.type == "cuda" else None,
                                   forward_sync_buffers=False, gradient_as_bucket_view=True)


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        torch.distributed.barrier()


def from_rank0(obj, ranks: Ranks):
    """Rank 0's `obj` (any picklable value) on every rank: what only rank 0 can read (checkpoints and eval.json
    in its output_dir, which other machines need not see) or decide."""
    if not ranks.distributed:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def set_rank_rng_state(state: dict, ranks: Ranks, device: torch.device) -> None:
    """set_rng_state; under torchrun with rank 0's state (from a checkpoint, or sent after work that rank 0 did
    alone: validation and evaluation draw random numbers too). The ranks of a run hold one and the same random
    state, which is what makes their per-sample draws the global batch's (policy/batch_share.py); each draws on its
    own GPU, which takes the state of rank 0's GPU (cuda:0)."""
    set_rng_state(state)
    if ranks.distributed and device.type == "cuda" and state.get("cuda"):
        torch.cuda.set_rng_state(state["cuda"][0].cpu(), device)


def share_rng_of_rank0(ranks: Ranks, device: torch.device) -> None:
    """Every rank takes rank 0's random state (after work rank 0 did alone); a no-op in one process."""
    if ranks.distributed:
        state = from_rank0(rng_state() if ranks.main else None, ranks)
        if not ranks.main:
            set_rank_rng_state(state, ranks, device)


def mean_over_ranks(value: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """The mean of a scalar over the ranks (the global batch's loss from the ranks' losses); one all-reduce."""
    if not ranks.distributed:
        return value
    value = value.detach().float().clone()
    torch.distributed.all_reduce(value)  # sum: gloo has no average
    return value / ranks.world_size


def first_over_ranks(step: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """The smallest of the ranks' step numbers, -1 meaning none (the first non-finite loss on any rank), so that
    every rank stops at the same check; one all-reduce."""
    if not ranks.distributed:
        return step
    never = torch.iinfo(torch.int64).max
    first = torch.where(step < 0, never, step)
    torch.distributed.all_reduce(first, op=torch.distributed.ReduceOp.MIN)
    return torch.where(first == never, -1, first)


# ---------------------------------------------------------------------------------------------- W&B


def start_wandb(cfg, output_dir: Path, run_info: dict, run_id: str):
    """A W&B run for `cfg` (config.Config, its wandb.mode checked when parsed) in `output_dir`/wandb: offline by
    default, online on request."""
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    return wandb.init(
        mode=cfg.wandb.mode, project=cfg.wandb.project, entity=cfg.wandb.entity, group=cfg.wandb.group,
        name=cfg.wandb.name or output_dir.name, tags=cfg.wandb.tags, dir=str(output_dir), id=run_id,
        resume="allow", config={**cfg.to_dict(), **run_info},
    )


def check_wandb_online(mode: str, timeout_s: float = 5.0) -> None:
    """wandb.mode=online needs an API key and the W&B server: both are checked before any data is read, so that a
    missing login or network stops a run at once, in one line, rather than in wandb's traceback after the setup."""
    if mode != "online":
        return
    import netrc
    import socket
    from urllib.parse import urlparse

    base = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    host = urlparse(base).hostname or base
    way_out = "log in with `wandb login` (or set WANDB_API_KEY), or use wandb.mode=offline (and `wandb sync` later)"
    key = os.environ.get("WANDB_API_KEY")
    if not key:
        try:
            auth = netrc.netrc().authenticators(host)
            key = auth[2] if auth else None
        except (OSError, netrc.NetrcParseError):
            key = None
    if not key:
        raise ConfigError(f"wandb.mode=online: no W&B API key for {host} (WANDB_API_KEY unset, none in ~/.netrc); "
                          f"{way_out}")
    port = urlparse(base).port or (80 if base.startswith("http://") else 443)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as e:
        raise ConfigError(f"wandb.mode=online: cannot reach the W&B server {host}:{port} ({e.strerror or e}); "
                          f"check the network, or use wandb.mode=offline (and `wandb sync` later)") from e


class NoRun:
    """What ranks other than 0 hold in place of a W&B run: they log nothing."""

    def __init__(self):
        self.summary = {}

    def log(self, *args, **kwargs) -> None:
        pass

    def finish(self) -> None:
        pass


def log_video(run, path: str | Path, step: int | None = None) -> None:
    """An evaluation video into the W&B run."""
    import wandb

    run.log({"eval/video": wandb.Video(str(path), format="mp4")}, step=step)


# ---------------------------------------------------------------------------------------------- evaluation


def run_evaluation(policy, task, cfg, device, output_dir: Path, tag: str) -> dict:
    """Closed-loop evaluation with the `eval.*` settings of `cfg` (train.py during training, eval.py on a
    checkpoint); videos go to output_dir/videos/<tag>. Returns envs.rollout.evaluate's summary, with `sampling`:
    the sampler and its network passes per chunk (policy.sampling_of)."""
    from policy import sampling_of

    return {"sampling": sampling_of(policy), **evaluate(
        policy, task, n_episodes=cfg.eval.n_episodes, seed=cfg.eval.seed, n_envs=cfg.eval.n_envs, device=device,
        video_dir=output_dir / "videos" / tag, n_videos=cfg.eval.n_videos, video_size=cfg.eval.video_size,
        max_steps=cfg.eval.max_steps, vector=cfg.eval.vector)}


def chunk_latency_ms(policy, device: torch.device, calls: int = 5) -> float | None:
    """Median milliseconds for one action chunk at batch 1 (`predict_action` on an observation window of zeros,
    after 1 warm-up call), with this process's torch threads; None for a policy without obs_shapes. A few calls:
    eval.json's figure is an indication (bench/bench_sampling.py measures 200 calls, idle and under load)."""
    shapes = getattr(policy.config, "obs_shapes", None)
    if not shapes:
        return None
    steps = getattr(policy.config, "obs_horizon", None) or getattr(policy.config, "horizon", 1)
    obs = {k: torch.zeros((1, steps, *shape), device=device) for k, shape in shapes.items()}
    times = []
    policy.reset()  # a recurrent policy's state belongs to the episodes just evaluated
    with torch.no_grad():
        for i in range(calls + 1):
            start = time.perf_counter()
            policy.predict_action(obs)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= 1:
                times.append((time.perf_counter() - start) * 1000)
    policy.reset()
    return float(np.median(times))


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: torch.device) -> str:
    """What a run runs on, for reports: the GPU's name, or the CPU's model and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {cpu_model()}, {os.cpu_count()} cores"


def score_line(result: dict) -> str:
    """One line a person reads: the score and success rate with their 95% intervals."""
    lo, hi = result["mean_max_reward_ci95"]
    slo, shi = result["success_rate_ci95"]
    extra = "".join(f", {name} {result[name]:.2f}" for name in ("p1", "p2") if name in result)  # Block Pushing
    return (f"mean max reward {result['mean_max_reward']:.3f} (95% CI {lo:.3f}..{hi:.3f}), success rate "
            f"{result['success_rate']:.2f} (95% CI {slo:.2f}..{shi:.2f}){extra} over {result['n_episodes']} episodes")
