"""Compare policies over training seeds: train them (or collect finished runs) and write a report.

    # train every (policy, seed) pair in this process, one output dir each, one W&B group, then report
    python compare.py run policies=diffusion_unet,lstm_gmm seeds=0,1,2 task=pusht_keypoints \\
        group=pusht_state output_dir=outputs/compare/pusht_state training.steps=8000

    # report on finished runs: from their output dirs (checkpoints/last.pt history + eval.json) ...
    python compare.py report outputs/compare/pusht_state --out outputs/compare/pusht_state
    # ... or from the offline W&B run files (*.wandb) alone, no network
    python compare.py report outputs/compare/pusht_state --source wandb --out reports/pusht_state

`run`: `policies=` and `seeds=` are comma-separated; `group=` is the W&B group (default: the output dir's
name) and `output_dir=` the parent of the runs (default: outputs/compare/<group>); each run goes to
<output_dir>/<policy>_seed<seed>. Every other `key=value` goes to train.py for every run (config.py), and
`<policy>.key=value` only to that policy's runs (`lstm_gmm.policy.rnn_hidden_dim=32`: `policy.*` fields
differ between policies). A run whose dir already holds a finished eval.json is collected, not trained
again (its saved config must match the requested one); an unfinished one resumes where it stopped.
`parallel=N` trains N runs at a time, each a `python train.py ...` process of its own writing everything it
prints to <run dir>/train.log, with its share of the CPU cores as torch threads (unless training.threads= is
given) and, on a machine with GPUs, a GPU of its own (run slot i sees GPU i mod the GPU count). Default: one run
per GPU, or without GPUs one per 4 CPU cores; 1 (2-3 cores) trains the runs one after the other in this process.

`report`: each PATH is a run's output dir or any folder above run dirs (searched recursively), or with
`--source wandb` a .wandb file or any folder above them. Runs are grouped by W&B group and task, with one
row per policy. Unfinished runs (no eval.json; for W&B, no final summary) are listed and left out.

The numbers follow the paper (docs/design.md sections 6-7): for each seed, the max and the mean of the last 10
of its evaluations (`eval/mean_max_reward`, the coverage score, and `eval/success_rate`), then mean ± std
over seeds. Writes report.md (tables), report.json (every number, per seed too) and report.png (score and
success rate against training step: mean over seeds, shaded between the seeds' min and max).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

from common import StackError, TrainingError

SCORE, SUCCESS = "eval/mean_max_reward", "eval/success_rate"
LAST_N = 10  # the paper's "mean of the last 10 checkpoints"
REPO = Path(__file__).resolve().parent

# Config keys that may differ between a finished run and a new request without changing its results.
IGNORED_CONFIG_KEYS = {"wandb", "device", "resume", "checkpoint", "training.threads", "training.num_workers",
                       "training.data_on_device", "training.dist_timeout_s",
                       "eval.vector", "eval.n_envs", "eval.n_videos", "eval.video_size", "output_dir"}


class CompareError(StackError, ValueError):
    """A bad `compare.py` request: the message names the argument or run dir."""


def shown(path: str | Path) -> str:
    """A path as reports show it: relative to the current directory when it lies below it (no machine paths)."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@dataclasses.dataclass
class Run:
    """One finished training run, read from its output dir or from its W&B run files."""

    source: str  # where it was read from: the output dir or the .wandb files
    run_id: str
    group: str
    task: str
    policy: str
    seed: int
    steps: int
    evals: list[tuple[int, float, float]]  # (step, score, success rate), by step, one per step
    final: dict  # {"mean_max_reward", "success_rate"} of the final evaluation (eval.json / W&B summary)
    wall_s: float | None = None  # wall time of the whole run (all its processes), when the run recorded it
    hardware: str | None = None

    def stats(self) -> dict:
        scores = [e[1] for e in self.evals]
        successes = [e[2] for e in self.evals]
        return {"score_max": max(scores), "score_last10": float(np.mean(scores[-LAST_N:])),
                "success_max": max(successes), "success_last10": float(np.mean(successes[-LAST_N:])),
                "final_score": self.final["mean_max_reward"], "final_success": self.final["success_rate"]}


def eval_points(rows) -> list[tuple[int, float, float]]:
    """(step, score, success) of every history row holding an evaluation, sorted by step.

    W&B keeps one history row per step, so a step logged twice (a resumed run repeating steps after its
    last checkpoint) keeps its last value; local histories are treated the same so both sources agree.
    """
    by_step = {}
    for row in rows:
        if SCORE in row:
            by_step[int(row["step"])] = (int(row["step"]), float(row[SCORE]), float(row.get(SUCCESS, math.nan)))
    return [by_step[s] for s in sorted(by_step)]


# ------------------------------------------------------------------------------------- local output dirs


def read_local_run(run_dir: Path) -> Run | None:
    """A finished run from its output dir: evaluations from checkpoints/last.pt's history, final from eval.json.

    None when unfinished: no eval.json, or an eval.json older than last.pt (the run was extended later).
    """
    from runlib import load_checkpoint  # imports torch: only when reading local runs

    eval_path, ckpt_path = run_dir / "eval.json", run_dir / "checkpoints" / "last.pt"
    if not eval_path.is_file() or not ckpt_path.is_file():
        return None
    final = json.loads(eval_path.read_text())
    ckpt = load_checkpoint(ckpt_path)
    if final.get("step") != ckpt["step"]:
        return None
    cfg = ckpt["config"]
    evals = eval_points(ckpt["history"])
    if not evals:
        return None
    return Run(source=shown(run_dir), run_id=ckpt.get("wandb_run_id") or run_dir.name,
               group=cfg["wandb"]["group"] or "", task=ckpt["task"], policy=ckpt["policy_name"],
               seed=int(cfg["seed"]), steps=int(ckpt["step"]), evals=evals,
               final={"mean_max_reward": float(final["mean_max_reward"]),
                      "success_rate": float(final["success_rate"])},
               wall_s=final.get("wall_s", ckpt.get("wall_s")), hardware=final.get("hardware", ckpt.get("hardware")))


def collect_local(paths: list[Path]) -> tuple[list[Run], list[str]]:
    """Finished runs under `paths` (run dirs are the folders holding checkpoints/last.pt), and the unfinished."""
    run_dirs = []
    for path in paths:
        if not path.exists():
            raise CompareError(f"{path}: no such file or directory")
        found = [path] if (path / "checkpoints" / "last.pt").is_file() else \
            sorted(p.parent.parent for p in path.rglob("checkpoints/last.pt"))
        run_dirs += [d.resolve() for d in found if d.resolve() not in run_dirs]
    runs, unfinished = [], []
    for d in run_dirs:
        run = read_local_run(d)
        runs.append(run) if run else unfinished.append(shown(d))
    return runs, unfinished


# ------------------------------------------------------------------------------------- W&B run files
#
# A .wandb file is W&B's transaction log: every record the run produced (run, config, history, summary, ...)
# as a serialized `wandb.proto.wandb_internal_pb2.Record`, framed in the LevelDB log format. wandb <= 0.17
# shipped a Python reader for it (wandb.sdk.internal.datastore); newer versions read it in the Go wandb-core
# only (`wandb leet inspect --json` prints the records), so the framing is read here: a 7-byte header
# (":W&B", magic 0xBEE1, version), then 32 KiB blocks of chunks [crc32 (4) | length (2) | type (1) | data],
# type FULL=1 or FIRST=2, MIDDLE=3..., LAST=4, the crc32 seeded with the type byte. The protobuf classes
# come with the installed wandb package.

_BLOCK, _CHUNK_HEADER = 32 * 1024, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def wandb_records(path: Path):
    """Yield the Records of a .wandb file. A torn tail (a run killed mid-write) ends the file with a warning."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    if len(data) < _CHUNK_HEADER or data[:4] != b":W&B" or struct.unpack("<H", data[4:6])[0] != 0xBEE1:
        raise CompareError(f"{path}: not a W&B run file (no ':W&B' header)")
    pos, pending = _CHUNK_HEADER, None
    while pos + _CHUNK_HEADER <= len(data):
        if _BLOCK - pos % _BLOCK < _CHUNK_HEADER:  # a block's tail too short for a chunk header is padding
            pos += _BLOCK - pos % _BLOCK
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + _CHUNK_HEADER])
        chunk = data[pos + _CHUNK_HEADER:pos + _CHUNK_HEADER + length]
        if kind == 0 and length == 0:  # zero padding
            pos += _CHUNK_HEADER
            continue
        if len(chunk) < length or zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            print(f"warning: {path}: unreadable record at byte {pos}; using the records before it", file=sys.stderr)
            return
        pos += _CHUNK_HEADER + length
        if kind in (_FULL, _FIRST):
            pending = chunk
        elif pending is not None:
            pending += chunk
        if kind in (_FULL, _LAST) and pending is not None:
            yield wandb_internal_pb2.Record.FromString(pending)
            pending = None


def _items(items) -> dict:
    """{key: value} of a repeated HistoryItem / SummaryItem / ConfigItem (values are JSON text)."""
    return {item.key or ".".join(item.nested_key): json.loads(item.value_json) for item in items}


def read_wandb_file(path: Path) -> dict:
    """One .wandb file: run id, group, project, start time, config, history {step: row}, summary."""
    out = {"path": str(path), "run_id": None, "group": "", "project": "", "start": 0.0, "config": {},
           "history": {}, "summary": {}}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            out.update(run_id=run.run_id, group=run.run_group, project=run.project,
                       start=run.start_time.seconds + run.start_time.nanos * 1e-9)
            out["config"].update(_items(run.config.update))
        elif kind == "config":
            out["config"].update(_items(record.config.update))
        elif kind == "history":
            step = record.history.step.num
            out["history"].setdefault(step, {}).update(_items(record.history.item))
        elif kind == "summary":
            out["summary"].update(_items(record.summary.update))
    return out


def collect_wandb(paths: list[Path]) -> tuple[list[Run], list[str]]:
    """Finished runs from the .wandb files under `paths`, and the unfinished.

    A resumed run writes one file per start under the same run id: the files are merged in start order, a
    later file's row for a step replacing an earlier one's. A run is finished when its summary holds the
    final evaluation (train.py writes `final/*` just before `run.finish()`).
    """
    files = []
    for path in paths:
        if not path.exists():
            raise CompareError(f"{path}: no such file or directory")
        found = [path] if path.is_file() else sorted(path.rglob("*.wandb"))
        files += [f.resolve() for f in found if f.resolve() not in files]
    by_id: dict[str, list[dict]] = {}
    for f in files:
        parsed = read_wandb_file(f)
        if parsed["run_id"]:
            by_id.setdefault(parsed["run_id"], []).append(parsed)
    runs, unfinished = [], []
    for run_id, parts in by_id.items():
        parts.sort(key=lambda p: (p["start"], p["path"]))
        config, history, summary = {}, {}, {}
        for p in parts:
            config.update(p["config"])
            summary.update(p["summary"])
            for step, row in p["history"].items():
                history[step] = {**row, "step": step}  # a later start trained this step again: its row wins
        sources = ", ".join(shown(p["path"]) for p in parts)
        evals = eval_points(history[s] for s in sorted(history))
        if "final/mean_max_reward" not in summary or not evals or not {"task", "policy", "seed"} <= set(config):
            unfinished.append(sources)
            continue
        runs.append(Run(source=sources, run_id=run_id, group=parts[-1]["group"], task=config["task"],
                        policy=config["policy"], seed=int(config["seed"]), steps=max(history), evals=evals,
                        final={"mean_max_reward": float(summary["final/mean_max_reward"]),
                               "success_rate": float(summary["final/success_rate"])},
                        wall_s=summary.get("run/wall_s"), hardware=summary.get("run/hardware")))
    return runs, unfinished


# ------------------------------------------------------------------------------------- report


def mean_std(values: list[float]) -> dict:
    # std over seeds with numpy's default ddof=0, so one seed gives 0 rather than NaN
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "per_seed": list(values)}


def summarize(runs: list[Run]) -> list[dict]:
    """One entry per (group, task), one row per policy in it: the paper's statistics over seeds."""
    groups: dict[tuple[str, str], dict[str, list[Run]]] = {}
    for run in sorted(runs, key=lambda r: (r.group, r.task, r.policy, r.seed)):
        groups.setdefault((run.group, run.task), {}).setdefault(run.policy, []).append(run)
    out = []
    for (group, task), policies in groups.items():
        rows = []
        for policy, seed_runs in policies.items():
            stats = [r.stats() for r in seed_runs]
            seeds = [r.seed for r in seed_runs]
            rows.append({"policy": policy, "n_seeds": len(seed_runs), "seeds": seeds,
                         "duplicate_seeds": sorted({s for s in seeds if seeds.count(s) > 1}),
                         "n_evaluations": [len(r.evals) for r in seed_runs], "steps": [r.steps for r in seed_runs],
                         **{k: mean_std([s[k] for s in stats]) for k in stats[0]},
                         "curve": curve(seed_runs)})
        out.append({"group": group, "task": task, "policies": rows})
    return out


def curve(seed_runs: list[Run]) -> dict:
    """Score and success rate against step: mean, min and max over the seeds evaluated at that step."""
    steps = sorted({e[0] for r in seed_runs for e in r.evals})
    out = {"step": steps}
    for name, index in (("score", 1), ("success", 2)):
        at = [[e[index] for r in seed_runs for e in r.evals if e[0] == s] for s in steps]
        out[name] = {"mean": [float(np.mean(v)) for v in at], "min": [min(v) for v in at],
                     "max": [max(v) for v in at]}
    return out


def fmt(stat: dict) -> str:
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def markdown(summary: list[dict], runs: list[Run], unfinished: list[str], source: str) -> str:
    lines = ["# Policy comparison", "",
             f"Coverage score = `{SCORE}` (mean over evaluation episodes of the max reward), success rate = "
             f"`{SUCCESS}`. For each seed: **max** over its evaluations and **mean of its last {LAST_N}** "
             f"(all of them if fewer), then mean ± std over seeds (std with ddof=0), as the paper reports "
             f"(docs/design.md sections 6-7). final = the run's last evaluation (eval.json). Read from {source}.", ""]
    for g in summary:
        lines += [f"## group `{g['group'] or '(none)'}`, task `{g['task']}`", "",
                  "| policy | seeds | score max | score last 10 | success max | success last 10 | final score "
                  "| evaluations per seed | steps |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for row in g["policies"]:
            seeds = f"{row['n_seeds']} ({', '.join(map(str, row['seeds']))})"
            lines.append(f"| {row['policy']} | {seeds} | {fmt(row['score_max'])} | {fmt(row['score_last10'])} | "
                         f"{fmt(row['success_max'])} | {fmt(row['success_last10'])} | {fmt(row['final_score'])} | "
                         f"{', '.join(map(str, sorted(set(row['n_evaluations']))))} | "
                         f"{', '.join(map(str, sorted(set(row['steps']))))} |")
            if row["duplicate_seeds"]:
                lines.append(f"\nwarning: {row['policy']} has more than one run for seeds {row['duplicate_seeds']}\n")
        lines.append("")
    lines += ["## runs", "", "| group | task | policy | seed | score max | score last 10 | final score | steps | "
              "wall time | hardware | run |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(runs, key=lambda r: (r.group, r.task, r.policy, r.seed)):
        s = r.stats()
        wall = f"{r.wall_s / 60:.1f} min" if r.wall_s is not None else "not recorded"
        lines.append(f"| {r.group or '(none)'} | {r.task} | {r.policy} | {r.seed} | {s['score_max']:.3f} | "
                     f"{s['score_last10']:.3f} | {s['final_score']:.3f} | {r.steps} | {wall} | "
                     f"{r.hardware or 'not recorded'} | `{r.source}` |")
    if unfinished:
        lines += ["", "Left out, unfinished (no final evaluation):", *[f"- `{u}`" for u in unfinished]]
    return "\n".join(lines) + "\n"


def plot(summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(len(summary), 2, figsize=(11, 3.8 * len(summary)), squeeze=False)
    for (ax_score, ax_success), g in zip(axes, summary):
        for row in g["policies"]:
            c = row["curve"]
            for ax, name in ((ax_score, "score"), (ax_success, "success")):
                label = f"{row['policy']} ({row['n_seeds']} seeds)"
                line, = ax.plot(c["step"], c[name]["mean"], "o-", ms=3, label=label)
                ax.fill_between(c["step"], c[name]["min"], c[name]["max"], color=line.get_color(), alpha=0.2)
        title = f"{g['group'] or '(no group)'}, {g['task']}"
        ax_score.set(xlabel="training step", ylabel="mean max reward (coverage score)", ylim=(-0.02, 1.02),
                     title=f"{title}: score")
        ax_success.set(xlabel="training step", ylabel="success rate", ylim=(-0.02, 1.02), title=f"{title}: success")
        ax_score.legend(fontsize=8)
        for ax in (ax_score, ax_success):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(runs: list[Run], unfinished: list[str], out_dir: Path, source: str) -> dict:
    """report.md, report.json and report.png in `out_dir`; returns what report.json holds."""
    if not runs:
        raise CompareError("no finished runs found" + (f" ({len(unfinished)} unfinished)" if unfinished else ""))
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(runs)
    report = {"source": source, "groups": summary, "runs": [dataclasses.asdict(r) for r in runs],
              "unfinished": unfinished}
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    text = markdown(summary, runs, unfinished, source)
    (out_dir / "report.md").write_text(text)
    plot(summary, out_dir / "report.png")
    print(text)
    print(f"report: {out_dir / 'report.md'}, {out_dir / 'report.json'}, {out_dir / 'report.png'}")
    return report


# ------------------------------------------------------------------------------------- commands


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "policy_config":
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(saved: dict, wanted: dict) -> list[str]:
    """Keys whose values differ between a finished run's config and the requested one (results-relevant only)."""
    a, b = _flatten(saved), _flatten(wanted)
    keys = sorted(set(a) | set(b))
    ignored = lambda k: k in IGNORED_CONFIG_KEYS or k.split(".")[0] in IGNORED_CONFIG_KEYS  # noqa: E731
    # policy_config values went through a literal round trip (lists may come back as tuples)
    norm = lambda v: json.loads(json.dumps(v))  # noqa: E731
    return [f"{k}: {a.get(k)!r} (saved) vs {b.get(k)!r} (requested)" for k in keys
            if not ignored(k) and norm(a.get(k)) != norm(b.get(k))]


def plan_runs(argv: list[str]) -> tuple[Path, list[tuple[str, int, list[str]]]]:
    """Parse `run`'s arguments into the output dir and one (policy, seed, train.py overrides) per run."""
    from config import parse_overrides
    from policy import POLICIES

    special, common, scoped = {}, [], {}
    for arg in argv:
        if "=" not in arg:
            raise CompareError(f"bad argument {arg!r}: expected key=value (e.g. seeds=0,1,2)")
        key, value = arg.split("=", 1)
        head = key.split(".", 1)[0]
        if key in ("policies", "seeds", "group", "output_dir", "parallel"):
            special[key] = value
        elif key in ("policy", "seed", "wandb.group"):
            raise CompareError(f"{key}= is set per run by compare.py; use policies=, seeds= or group=")
        elif head in POLICIES and "." in key:
            scoped.setdefault(head, []).append(arg.split(".", 1)[1])
        else:
            common.append(arg)
    policies = [p for p in special.get("policies", "").split(",") if p]
    if not policies:
        raise CompareError(f"policies= is required, e.g. policies=diffusion_unet,lstm_gmm "
                           f"(known: {', '.join(POLICIES)})")
    if unknown := [p for p in [*policies, *scoped] if p not in POLICIES]:
        raise CompareError(f"unknown policies {unknown}; known: {', '.join(POLICIES)}")
    if unused := [p for p in scoped if p not in policies]:
        raise CompareError(f"overrides for {unused}, which are not in policies={','.join(policies)}")
    try:
        seeds = [int(s) for s in special.get("seeds", "0").split(",") if s]
    except ValueError:
        raise CompareError(f"seeds= must be integers separated by commas, got {special['seeds']!r}") from None
    if "output_dir" not in special and "group" not in special:
        raise CompareError("give group=NAME (runs go to outputs/compare/NAME) or output_dir=DIR")
    out_dir = Path(special.get("output_dir") or REPO / "outputs" / "compare" / special["group"])
    group = special.get("group") or out_dir.name
    plan = []
    for policy in policies:
        for seed in seeds:
            overrides = [*common, f"policy={policy}", f"seed={seed}", f"output_dir={out_dir / f'{policy}_seed{seed}'}",
                         f"wandb.group={group}", *scoped.get(policy, [])]
            parse_overrides(overrides)  # a typo stops here, before hours of training
            plan.append((policy, seed, overrides))
    return out_dir, plan


CORES_PER_RUN = 4  # CPU cores per run when compare.py runs them in parallel without GPUs


def parallel_runs(argv: list[str]) -> int:
    """`parallel=N` of `run`'s arguments, or the default: one run per GPU, else one per CORES_PER_RUN cores."""
    given = [a.split("=", 1)[1] for a in argv if a.startswith("parallel=")]
    if given:
        try:
            n = int(given[-1])
        except ValueError:
            n = 0
        if n < 1:
            raise CompareError(f"parallel={given[-1]}: expected a positive number of runs at a time")
        return n
    import torch

    return torch.cuda.device_count() or max(1, (os.cpu_count() or 1) // CORES_PER_RUN)


def train_in_parallel(todo: list[tuple[object, list[str]]], parallel: int) -> list[str]:
    """Train the (config, train.py overrides) runs in `parallel` processes at a time; the output dirs that failed.

    Each run prints into <run dir>/train.log (appended, so a resumed run keeps the log of its first start). Several
    torch processes whose threads outnumber the cores slow each other down many times over (runlib.set_torch_threads):
    each gets cores / parallel threads; each slot gets its own GPU when there are GPUs.
    """
    import subprocess
    import time

    import torch

    gpus = torch.cuda.device_count()
    threads = max(1, (os.cpu_count() or 1) // parallel)
    waiting, running, failed = list(enumerate(todo)), {}, []  # running: slot -> (process, config, log path, start)
    try:
        while waiting or running:
            for slot in [s for s in range(parallel) if s not in running][:len(waiting)]:
                i, (cfg, overrides) = waiting.pop(0)
                env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
                env.pop("WANDB_SERVICE", None)  # each run its own W&B service
                extra = [] if cfg.training.threads else [f"training.threads={threads}"]
                where = f"{threads} CPU thread(s)"
                if gpus and cfg.device in ("auto", "cuda"):
                    env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
                    where = f"GPU {slot % gpus}, " + where
                log_path = Path(cfg.output_dir) / "train.log"
                log_path.parent.mkdir(parents=True, exist_ok=True)
                with open(log_path, "a") as log:
                    log.write(f"# compare.py: python train.py {' '.join([*overrides, *extra])}\n")
                    log.flush()
                    process = subprocess.Popen([sys.executable, str(REPO / "train.py"), *overrides, *extra],
                                               cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
                running[slot] = (process, cfg, log_path, time.monotonic())
                print(f"[{i + 1}/{len(todo)}] training {cfg.policy} seed {cfg.seed} -> {cfg.output_dir} ({where}; "
                      f"log: {log_path})")
            time.sleep(0.5)
            for slot, (process, cfg, log_path, start) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[slot]
                minutes = (time.monotonic() - start) / 60
                if process.returncode == 0:
                    print(f"done: {cfg.output_dir} ({minutes:.1f} min)")
                    continue
                lines = log_path.read_text(errors="replace").splitlines()
                said = [line for line in lines if line.startswith("error:")] or lines[-1:] or [""]
                print(f"error: {cfg.output_dir}: train.py exited with status {process.returncode} after "
                      f"{minutes:.1f} min: {said[-1]} (log: {log_path})", file=sys.stderr)
                failed.append(cfg.output_dir)
    finally:  # interrupted: stop the runs this process started (each resumes from its last checkpoint later)
        for process, *_ in running.values():
            process.terminate()
        for process, *_ in running.values():
            process.wait()
    return failed


def command_run(argv: list[str]) -> int:
    from config import parse_overrides
    from runlib import load_checkpoint
    from train import train

    out_dir, plan = plan_runs(argv)
    parallel = parallel_runs(argv)
    # A finished run is reused only if it is the run asked for: check them all before training any.
    todo = []
    for policy, seed, overrides in plan:
        cfg = parse_overrides(overrides)
        run_dir = Path(cfg.output_dir)
        if read_local_run(run_dir) is not None:
            diff = config_differences(load_checkpoint(run_dir / "checkpoints" / "last.pt")["config"], cfg.to_dict())
            if diff:
                raise CompareError(f"{run_dir} holds a finished run with another config ({'; '.join(diff)}); "
                                   "delete it or choose another output_dir")
            print(f"{run_dir}: finished, collected (not trained again)")
        else:
            todo.append((cfg, overrides))
    failed = []
    if parallel > 1 and len(todo) > 1:
        print(f"training {len(todo)} runs, {min(parallel, len(todo))} at a time")
        failed = train_in_parallel(todo, parallel)
    else:  # one after the other, in this process
        for i, (cfg, _) in enumerate(todo):
            print(f"[{i + 1}/{len(todo)}] training {cfg.policy} seed {cfg.seed} -> {cfg.output_dir}")
            try:
                train(cfg)
            except TrainingError as e:  # one diverged seed should not throw away the others
                print(f"error: {cfg.output_dir}: {e}", file=sys.stderr)
                failed.append(cfg.output_dir)
    run_dirs = [Path(parse_overrides(o).output_dir) for _, _, o in plan]
    runs, unfinished = collect_local([d for d in run_dirs if d.exists()])
    unfinished += [str(d) for d in run_dirs if not d.exists()]
    write_report(runs, unfinished, out_dir, f"the output dirs under `{out_dir}`")
    return 1 if failed or unfinished else 0


def command_report(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="compare.py report", description="Report on finished runs.")
    parser.add_argument("paths", nargs="+", type=Path, help="run output dirs, folders above them, or .wandb files")
    parser.add_argument("--out", type=Path, required=True, help="folder for report.md, report.json, report.png")
    parser.add_argument("--source", choices=("local", "wandb"), default="local",
                        help="local: checkpoints/last.pt history + eval.json (default); wandb: the .wandb run files")
    parser.add_argument("--group", action="append", help="only runs of this W&B group (repeatable)")
    args = parser.parse_args(argv)
    runs, unfinished = (collect_local if args.source == "local" else collect_wandb)(args.paths)
    if args.group:
        runs = [r for r in runs if r.group in args.group]
    source = "checkpoints/last.pt + eval.json" if args.source == "local" else "W&B run files (.wandb)"
    write_report(runs, unfinished, args.out, source)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("run", "report"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        return command_run(argv[1:]) if argv[0] == "run" else command_report(argv[1:])
    except (StackError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
