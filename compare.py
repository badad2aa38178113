"""Compare policies over training seeds: train them (or collect finished runs) and write a report.

    # train every (policy, seed) pair in this process, one output dir each, one W&B group, then report
    python compare.py run policies=diffusion_unet,lstm_gmm seeds=0,1,2 task=pusht_keypoints \\
        group=pusht_state output_dir=outputs/compare/pusht_state training.steps=8000

    # report on finished runs: from their output dirs (config.json, history.jsonl, eval.json) ...
    python compare.py report outputs/compare/pusht_state --out outputs/compare/pusht_state
    # ... or from an online W&B project, through W&B's public API (wandb login first)
    python compare.py report --wandb ENTITY/PROJECT --group pusht_state --out reports/pusht_state

`run`: `policies=` and `seeds=` are comma-separated; `group=` is the W&B group (default: the output dir's name,
else `<task>[_<dataset stem>]_<recipe>`) and `output_dir=` the parent of the runs (default:
outputs/compare/<group>); each run goes to <output_dir>/<policy>_seed<seed>. Every run takes the same recipe
(`recipe=`, config.RECIPES; default: the one each policy would take alone when they agree, else presets). Every
other `key=value` goes to train.py for every run (config.py), and `<policy>.key=value` only to that policy's
runs (`lstm_gmm.policy.rnn_hidden_dim=32`: `policy.*` fields differ between policies). A run whose dir already
holds a finished eval.json is collected, not trained again (its saved config.json must match the requested
config); an unfinished one resumes where it stopped.
`parallel=N` trains N runs at a time, each a `python train.py ...` process of its own writing everything it
prints to <run dir>/train.log, with its share of the CPU cores as torch threads (unless training.threads= is
given) and, on a machine with GPUs, a GPU of its own (run slot i sees GPU i mod the GPU count). Default: one run
per GPU, or without GPUs one per 4 CPU cores; 1 (2-3 cores) trains the runs one after the other in this process.

`samplers=ddpm-100,ddim-10,dpmsolver-5` (diffusion-type policies): after training, each run's last checkpoint is
also evaluated under those samplers (eval.py samplers=..., into <run>/eval/samplers), and the report puts them side
by side.

`report`: each PATH is a run's output dir or any folder above run dirs (searched recursively: a run dir is a
folder holding history.jsonl or checkpoints/last.pt). A run dir is read from three plain files train.py writes:
config.json (task, policy, seed, recipe, W&B group), history.jsonl (one JSON object per logged step: losses and
evaluations) and eval.json (the final evaluation); a run is finished when eval.json's step is the last step of
history.jsonl. `--wandb ENTITY/PROJECT` reads an online W&B project instead, through W&B's public API
(`wandb.Api().runs`, `--group NAME` filtering by W&B group; a run is finished when its summary holds
`final/mean_max_reward`). Offline W&B runs (wandb.mode=offline, the default): point `report` at the local run
dirs, or upload them first (`wandb sync <run dir>/wandb/offline-run-*`) and then use `--wandb`. Runs are
grouped by W&B group and task, with one row per policy; unfinished runs are listed with the reason and left out.
Every row names its recipe; a group whose runs do not all share one recipe is not a comparison on equal terms,
and the report says so (a warning atop its table, `mixed_recipes` in report.json, a line on stderr).

The numbers follow the paper (docs/design.md sections 6-7): for each seed, the max and the mean of the last 10
of its evaluations (`eval/mean_max_reward`, the coverage score, and `eval/success_rate`), then mean ± std
over seeds. Writes report.md (tables), report.json (every number, per seed too) and report.png (score and
success rate against training step: mean over seeds, shaded between the seeds' min and max). Sampler tables
(samplers.json, written by `eval.py samplers=...`) found under the paths get a section of report.md, one table per
checkpoint, and samplers.png (coverage against milliseconds per chunk).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

from common import ArgumentParser, StackError, TrainingError, on_interrupt, run_cli

SCORE, SUCCESS = "eval/mean_max_reward", "eval/success_rate"
FINAL_EXTRAS = ("p1", "p2")  # Block Pushing's scores of the final evaluation (one block / both in a target)
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
    """One finished training run, read from its output dir or from W&B's API."""

    source: str  # where it was read from: the output dir, or ENTITY/PROJECT/RUN_ID on W&B
    run_id: str
    group: str
    task: str
    policy: str
    seed: int
    recipe: str | None  # the named recipe the run took (config.RECIPES); None: the run did not record it
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
                "final_score": self.final["mean_max_reward"], "final_success": self.final["success_rate"],
                **{f"final_{k}": self.final[k] for k in FINAL_EXTRAS if k in self.final}}


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
#
# train.py writes, next to its checkpoints: config.json (at the start), history.jsonl (one JSON object per logged
# entry, appended as it trains; rewritten from the checkpoint's history when a run resumes) and eval.json (the
# final evaluation, at the end). The report reads these three files only: no checkpoint is loaded.

CONFIG_FILE, HISTORY_FILE, EVAL_FILE = "config.json", "history.jsonl", "eval.json"


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CompareError(f"{shown(path)}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CompareError(f"{shown(path)}: expected a JSON object, got {type(data).__name__}")
    return data


def read_history(path: Path) -> list[dict]:
    """history.jsonl's entries, in file order; a line that is not a JSON object with a step is an error."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise CompareError(f"{shown(path)}, line {number}: not valid JSON ({e.msg}): {line[:80]!r}") from None
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            raise CompareError(f"{shown(path)}, line {number}: expected a JSON object with an integer \"step\": "
                               f"{line[:80]!r}")
        rows.append(row)
    return rows


def local_run(run_dir: Path) -> tuple[Run | None, str]:
    """(the run, "") when `run_dir` holds a finished run, else (None, why it is left out)."""
    config_path, history_path, eval_path = (run_dir / name for name in (CONFIG_FILE, HISTORY_FILE, EVAL_FILE))
    if not history_path.is_file() or not config_path.is_file():
        missing = " and ".join(p.name for p in (history_path, config_path) if not p.is_file())
        if (run_dir / "checkpoints" / "last.pt").is_file():
            return None, (f"no {missing}: written before train.py kept a run's history in plain files; re-run it "
                          "(resume=false, or another output_dir) or report it with the compare.py of its version")
        return None, f"no {missing}"
    history = read_history(history_path)
    if not history:
        return None, f"{HISTORY_FILE} is empty: the run has not logged a step"
    last = max(row["step"] for row in history)
    if not eval_path.is_file():
        return None, f"no {EVAL_FILE}: not finished (history.jsonl goes to step {last})"
    final = read_json(eval_path)
    if final.get("step") != last:
        return None, (f"{EVAL_FILE} is from step {final.get('step')} but {HISTORY_FILE} goes to step {last}: the run "
                      "was extended later and has not finished")
    evals = eval_points(history)
    if not evals:
        return None, f"no evaluations in {HISTORY_FILE}"
    saved = read_json(config_path)
    if missing := [k for k in ("task", "policy", "seed") if k not in saved]:
        raise CompareError(f"{shown(config_path)}: no {', '.join(missing)}")
    return Run(source=shown(run_dir), run_id=run_dir.name, group=saved.get("group") or "", task=saved["task"],
               policy=saved["policy"], seed=int(saved["seed"]), recipe=saved.get("recipe") or final.get("recipe"),
               steps=int(last), evals=evals,
               final={"mean_max_reward": float(final["mean_max_reward"]),
                      "success_rate": float(final["success_rate"]),
                      **{k: float(final[k]) for k in FINAL_EXTRAS if k in final}},
               wall_s=final.get("wall_s"), hardware=final.get("hardware")), ""


def read_local_run(run_dir: Path) -> Run | None:
    """A finished run from its output dir (config.json, history.jsonl, eval.json); None when it is not finished."""
    return local_run(run_dir)[0]


def collect_local(paths: list[Path]) -> tuple[list[Run], list[str]]:
    """Finished runs under `paths` (run dirs: folders holding history.jsonl or checkpoints/last.pt), and the
    unfinished ("dir: why")."""
    from common.paths import is_run_dir  # the one rule for a training run's dir (eval.py keeps out of one)

    run_dirs = []
    for path in paths:
        if not path.exists():
            raise CompareError(f"{path}: no such file or directory")
        found = [path] if is_run_dir(path) else sorted({p.parent for p in path.rglob(HISTORY_FILE)}
                                                       | {p.parent.parent for p in path.rglob("checkpoints/last.pt")})
        run_dirs += [d.resolve() for d in found if d.resolve() not in run_dirs]
    runs, unfinished = [], []
    for d in run_dirs:
        run, why = local_run(d)
        runs.append(run) if run else unfinished.append(f"{shown(d)}: {why}")
    return runs, unfinished


SAMPLERS_FILE = "samplers.json"  # eval.py samplers=...: one checkpoint under several samplers
SAMPLER_KEYS = ("sampler", "steps", "passes_per_chunk", "mean_max_reward", "mean_max_reward_ci95", "success_rate",
                "chunk_ms_batch1")


def collect_samplers(paths: list[Path]) -> list[dict]:
    """The sampler tables (eval.py's samplers.json) under `paths`: [{"checkpoint", "source", "rows"}, ...], rows in
    the file's order. A file without its keys is named with what was expected."""
    files = []
    for path in paths:
        found = [path] if path.is_file() and path.name == SAMPLERS_FILE else sorted(path.rglob(SAMPLERS_FILE)) \
            if path.is_dir() else []
        files += [f.resolve() for f in found if f.resolve() not in files]
    tables = []
    for f in files:
        data = read_json(f)
        rows = data.get("rows") if isinstance(data, dict) else None
        if not isinstance(rows, list) or not rows or any(
                not isinstance(r, dict) or any(k not in r for k in SAMPLER_KEYS) for r in rows):
            raise CompareError(f"{f}: expected eval.py's sampler table, {{\"checkpoint\": ..., \"rows\": [{{"
                               f"{', '.join(SAMPLER_KEYS)}}}, ...]}}")
        tables.append({"checkpoint": str(data.get("checkpoint", "")), "source": shown(f), "rows": rows})
    return tables


def samplers_markdown(tables: list[dict]) -> list[str]:
    """One table per checkpoint: every sampler's passes, score, success and latency, against its most-passes one."""
    lines = ["## samplers of one checkpoint", "",
             "Each table is one checkpoint evaluated under several samplers on the same seeds (`eval.py samplers=`). "
             "vs = coverage minus that of the sampler with the most passes (DDPM-100 for a diffusion checkpoint); "
             "ms / chunk = one action chunk at batch 1 on the machine that evaluated.", ""]
    for t in tables:
        ref = max(t["rows"], key=lambda r: r["passes_per_chunk"])
        lines += [f"### `{shown(t['checkpoint'])}`", "", f"from `{t['source']}`", "",
                  f"| sampler | passes / chunk | coverage (95% CI) | success | vs {ref['sampler']}-{ref['steps']} | "
                  "ms / chunk | speed-up |", "|---|---|---|---|---|---|---|"]
        for r in t["rows"]:
            lo, hi = r["mean_max_reward_ci95"]
            lines.append(f"| {r['sampler']}-{r['steps']} | {r['passes_per_chunk']} | {r['mean_max_reward']:.3f} "
                         f"({lo:.3f}..{hi:.3f}) | {r['success_rate']:.2f} | "
                         f"{r['mean_max_reward'] - ref['mean_max_reward']:+.3f} | {r['chunk_ms_batch1']:.2f} | "
                         f"{ref['chunk_ms_batch1'] / r['chunk_ms_batch1']:.0f}x |")
        lines.append("")
    return lines


def plot_samplers(tables: list[dict], path: Path) -> None:
    """Coverage (with its 95% interval) against milliseconds per chunk (log scale), one series per checkpoint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for t in tables:
        rows = sorted(t["rows"], key=lambda r: r["chunk_ms_batch1"])
        x = [r["chunk_ms_batch1"] for r in rows]
        y = [r["mean_max_reward"] for r in rows]
        err = [[r["mean_max_reward"] - r["mean_max_reward_ci95"][0] for r in rows],
               [r["mean_max_reward_ci95"][1] - r["mean_max_reward"] for r in rows]]
        ax.errorbar(x, y, yerr=err, fmt="o-", ms=4, capsize=3, label=Path(t["checkpoint"]).parent.parent.name
                    or t["source"])
        for r, xi, yi in zip(rows, x, y):
            ax.annotate(f"{r['sampler']}-{r['steps']}", (xi, yi), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
    ax.set(xscale="log", xlabel="ms per action chunk, batch 1 (log scale)", ylabel="mean max reward (coverage)",
           ylim=(-0.02, 1.02), title="samplers: score against latency")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------- W&B, online


def collect_wandb_api(project_path: str, groups: list[str] | None = None) -> tuple[list[Run], list[str]]:
    """Finished runs of the W&B project ENTITY/PROJECT (only those of `groups` when given), through W&B's public API,
    and the unfinished. A run is finished when its summary holds the final evaluation (train.py writes `final/*`
    just before `run.finish()`); its evaluations come from its history (W&B's step key is `_step`)."""
    import wandb

    filters = {"group": {"$in": list(groups)}} if groups else {}
    fetched = []
    try:
        for run in wandb.Api().runs(project_path, filters=filters):
            summary = {k: run.summary.get(k) for k in ("final/mean_max_reward", "final/success_rate", "run/wall_s",
                                                       "run/hardware", "run/recipe") if k in run.summary}
            rows = [] if "final/mean_max_reward" not in summary else \
                list(run.scan_history(keys=["_step", SCORE, SUCCESS]))
            fetched.append((run.id, run.group or "", dict(run.config), summary, rows))
    except (wandb.errors.Error, ValueError, OSError) as e:  # no login, no network, no such project, a bad path
        said = " ".join(str(e).split()) or type(e).__name__
        raise CompareError(f"W&B project {project_path}: cannot read it through W&B's API ({said}); run "
                           "`wandb login` (with a network), or report from the local run dirs: "
                           "python compare.py report DIR --out OUT") from None
    runs, unfinished = [], []
    for run_id, group, config, summary, rows in fetched:
        source = f"{project_path}/{run_id}"
        evals = eval_points({**row, "step": row["_step"]} for row in rows)
        if "final/mean_max_reward" not in summary:
            unfinished.append(f"{source}: no final evaluation in its summary")
        elif not evals:
            unfinished.append(f"{source}: no evaluations in its history")
        elif missing := [k for k in ("task", "policy", "seed") if k not in config]:
            unfinished.append(f"{source}: no {', '.join(missing)} in its config (not a train.py run?)")
        else:
            runs.append(Run(source=source, run_id=run_id, group=group, task=config["task"], policy=config["policy"],
                            seed=int(config["seed"]), recipe=config.get("recipe") or summary.get("run/recipe"),
                            steps=evals[-1][0], evals=evals,
                            final={"mean_max_reward": float(summary["final/mean_max_reward"]),
                                   "success_rate": float(summary.get("final/success_rate", math.nan))},
                            wall_s=summary.get("run/wall_s"), hardware=summary.get("run/hardware")))
    return runs, unfinished


# ------------------------------------------------------------------------------------- report


def mean_std(values: list[float]) -> dict:
    # std over seeds with numpy's default ddof=0, so one seed gives 0 rather than NaN
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "per_seed": list(values)}


NOT_RECORDED = "not recorded"


def recipe_of(run: Run) -> str:
    return run.recipe or NOT_RECORDED


def summarize(runs: list[Run]) -> list[dict]:
    """One entry per (group, task), one row per policy in it: the paper's statistics over seeds, and the recipes.

    `mixed_recipes`: the group's runs do not all share one recipe (a run that did not record its recipe counts as
    another one), so its rows are not a comparison on equal terms; `recipe_warning` says why."""
    groups: dict[tuple[str, str], dict[str, list[Run]]] = {}
    for run in sorted(runs, key=lambda r: (r.group, r.task, r.policy, r.seed)):
        groups.setdefault((run.group, run.task), {}).setdefault(run.policy, []).append(run)
    out = []
    for (group, task), policies in groups.items():
        rows = []
        for policy, seed_runs in policies.items():
            stats = [r.stats() for r in seed_runs]
            seeds = [r.seed for r in seed_runs]
            rows.append({"policy": policy, "recipes": sorted({recipe_of(r) for r in seed_runs}),
                         "n_seeds": len(seed_runs), "seeds": seeds,
                         "duplicate_seeds": sorted({s for s in seeds if seeds.count(s) > 1}),
                         "n_evaluations": [len(r.evals) for r in seed_runs], "steps": [r.steps for r in seed_runs],
                         **{k: mean_std([s[k] for s in stats]) for k in stats[0] if all(k in s for s in stats)},
                         "curve": curve(seed_runs)})
        recipes = {row["policy"]: row["recipes"] for row in rows}
        out.append({"group": group, "task": task, "recipes": recipes,
                    "mixed_recipes": len({r for rs in recipes.values() for r in rs}) > 1, "policies": rows})
    return out


def recipe_warning(g: dict) -> str | None:
    """The line that says a group is not a comparison on equal terms (different recipes), or None."""
    if not g["mixed_recipes"]:
        return None
    per_policy = "; ".join(f"{policy}: {', '.join(recipes)}" for policy, recipes in g["recipes"].items())
    return (f"warning: runs of group {g['group'] or '(none)'}, task {g['task']} use different recipes ({per_policy}): "
            "not a comparison on equal terms")


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
             f"(docs/design.md sections 6-7). final = the run's last evaluation (eval.json). recipe = the named "
             f"recipe each run took (config.RECIPES): a comparison is on equal terms when all its runs share one. "
             f"Read from {source}.", ""]
    for g in summary:
        lines += [f"## group `{g['group'] or '(none)'}`, task `{g['task']}`", ""]
        if warning := recipe_warning(g):
            lines += [warning, ""]
        extras = [k for k in FINAL_EXTRAS if any(f"final_{k}" in row for row in g["policies"])]
        lines += ["| policy | recipe | seeds | score max | score last 10 | success max | success last 10 | final score "
                  + "".join(f"| final {k} " for k in extras) + "| evaluations per seed | steps |",
                  "|---|---|---|---|---|---|---|---|" + "---|" * len(extras) + "---|---|"]
        for row in g["policies"]:
            seeds = f"{row['n_seeds']} ({', '.join(map(str, row['seeds']))})"
            extra = "".join(f"{fmt(row[f'final_{k}']) if f'final_{k}' in row else '-'} | " for k in extras)
            lines.append(f"| {row['policy']} | {', '.join(row['recipes'])} | {seeds} | {fmt(row['score_max'])} | "
                         f"{fmt(row['score_last10'])} | {fmt(row['success_max'])} | {fmt(row['success_last10'])} | "
                         f"{fmt(row['final_score'])} | {extra}"
                         f"{', '.join(map(str, sorted(set(row['n_evaluations']))))} | "
                         f"{', '.join(map(str, sorted(set(row['steps']))))} |")
            if row["duplicate_seeds"]:
                lines.append(f"\nwarning: {row['policy']} has more than one run for seeds {row['duplicate_seeds']}\n")
        lines.append("")
    lines += ["## runs", "", "| group | task | policy | recipe | seed | score max | score last 10 | final score | "
              "steps | wall time | hardware | run |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(runs, key=lambda r: (r.group, r.task, r.policy, r.seed)):
        s = r.stats()
        wall = f"{r.wall_s / 60:.1f} min" if r.wall_s is not None else NOT_RECORDED
        lines.append(f"| {r.group or '(none)'} | {r.task} | {r.policy} | {recipe_of(r)} | {r.seed} | "
                     f"{s['score_max']:.3f} | {s['score_last10']:.3f} | {s['final_score']:.3f} | {r.steps} | {wall} | "
                     f"{r.hardware or NOT_RECORDED} | `{r.source}` |")
    if unfinished:
        lines += ["", "Left out, not finished or not readable:", *[f"- {u}" for u in unfinished]]
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


def write_report(runs: list[Run], unfinished: list[str], out_dir: Path, source: str, searched: str = "",
                 samplers: list[dict] | None = None) -> dict:
    """report.md, report.json and report.png in `out_dir` (and samplers.png for sampler tables); returns what
    report.json holds. `searched`: where the runs were looked for (said when none is finished)."""
    samplers = samplers or []
    if not runs and not samplers:
        left = (f"; {len(unfinished)} left out: " + "; ".join(unfinished[:3]) + ("; ..." if len(unfinished) > 3
                                                                               else "")) if unfinished else ""
        raise CompareError(f"no finished runs in {searched or source}: a finished run is a train.py output dir "
                           f"whose {EVAL_FILE} is from the last step of its {HISTORY_FILE} (with its {CONFIG_FILE})"
                           f", or an eval.py {SAMPLERS_FILE}{left}")
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(runs)
    report = {"source": source, "groups": summary, "runs": [dataclasses.asdict(r) for r in runs],
              "unfinished": unfinished, "samplers": samplers}
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    text = markdown(summary, runs, unfinished, source) if runs else "# Samplers\n\n"
    written = [out_dir / "report.md", out_dir / "report.json"]
    if samplers:
        text += "\n" + "\n".join(samplers_markdown(samplers))
        plot_samplers(samplers, out_dir / "samplers.png")
        written.append(out_dir / "samplers.png")
    (out_dir / "report.md").write_text(text)
    if runs:
        plot(summary, out_dir / "report.png")
        written.insert(2, out_dir / "report.png")
    print(text)
    for g in summary:  # said loudly: also on stderr, where a pipeline's stdout does not hide it
        if warning := recipe_warning(g):
            print(warning, file=sys.stderr)
    print(f"report: {', '.join(map(str, written))}")
    return report


# ------------------------------------------------------------------------------------- commands


def config_differences(saved: dict, wanted: dict) -> list[str]:
    """Keys whose values differ between a finished run's config and the requested one (results-relevant only)."""
    from config import flatten, plain

    a, b = ({**flatten(d), "policy_config": d.get("policy_config")} for d in (saved, wanted))
    ignored = lambda k: k in IGNORED_CONFIG_KEYS or k.split(".")[0] in IGNORED_CONFIG_KEYS  # noqa: E731
    return [f"{k}: {a.get(k)!r} (saved) vs {b.get(k)!r} (requested)" for k in sorted(set(a) | set(b))
            if not ignored(k) and plain(a.get(k)) != plain(b.get(k))]


def comparison_recipe(recipe: str | None, task: str, policies: list[str],
                      dataset_path: str | None) -> tuple[str, str | None]:
    """The one recipe every run of a comparison takes (config.RECIPES), and a note for the terminal when the choice
    overrules a policy's own: `recipe` when given (every policy must have it for the task), else the recipe each
    policy would take alone (config.default_recipe) when they all agree, else `presets` for all (with the note).
    A comparison is on equal terms or it does not run."""
    from config import RECIPES, default_recipe

    if recipe is not None and recipe != "auto":
        if recipe not in RECIPES:
            raise CompareError(f"recipe={recipe}: unknown; known recipes: {', '.join(RECIPES)}")
        lacking = [p for p in policies if recipe != "presets" and (task, p) not in RECIPES[recipe]]
        if lacking:
            having = [p for p in policies if p not in lacking]
            raise CompareError(f"recipe={recipe} is defined for task {task} and {', '.join(having) or 'none of'} "
                               f"{'' if having else 'these policies '}but not {', '.join(lacking)}: a comparison "
                               "applies one recipe to every policy; use recipe=presets (each policy's presets alone)")
        return recipe, None
    alone = {p: default_recipe(task, p, dataset_path) for p in policies}
    if len(set(alone.values())) == 1:
        return next(iter(alone.values())), None
    special = ", ".join(f"{p} ({r})" for p, r in alone.items() if r != "presets")
    return "presets", (f"recipe: presets for every policy. Alone, {special} would take another recipe on this data; "
                       "a comparison applies one recipe to all, and the others have none (config.RECIPES)")


def plan_runs(argv: list[str]) -> tuple[Path, list[tuple[str, int, list[str]]]]:
    """Parse `run`'s arguments into the output dir and one (policy, seed, train.py overrides) per run."""
    from config import Config, resolve
    from policy import POLICIES

    special, common, scoped = {}, [], {}
    for arg in argv:
        if "=" not in arg:
            raise CompareError(f"bad argument {arg!r}: expected key=value (e.g. seeds=0,1,2)")
        key, value = arg.split("=", 1)
        head = key.split(".", 1)[0]
        if key in ("policies", "seeds", "group", "output_dir", "parallel", "recipe", "print_config", "samplers"):
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
    if not seeds:
        raise CompareError("seeds= is empty (an unset shell variable?): expected training seeds separated by commas, "
                           "e.g. seeds=0,1,2 (or no seeds= for seed 0)")
    if "samplers" in special:
        if no_sampler := [p for p in policies if not has_samplers(p)]:
            raise CompareError(f"samplers= applies to diffusion-type policies; {', '.join(no_sampler)} "
                               "sample(s) no denoising loop (leave them out, or drop samplers=)")
        check_samplers(special["samplers"], policies)  # a typo stops here, before the training
    given = dict(a.split("=", 1) for a in common)
    task, dataset_path = given.get("task", Config().task), given.get("dataset_path") or None
    recipe, note = comparison_recipe(special.get("recipe"), task, policies, dataset_path)
    # Default group: the task, the data and the recipe, so that different comparisons never share a folder.
    data = f"_{Path(dataset_path).stem}" if dataset_path else ""
    group = special.get("group") or (Path(special["output_dir"]).name if "output_dir" in special
                                     else f"{task}{data}_{recipe}")
    out_dir = Path(special.get("output_dir") or REPO / "outputs" / "compare" / group)
    plan = []
    for policy in policies:
        for seed in seeds:
            overrides = [*common, f"policy={policy}", f"seed={seed}", f"recipe={recipe}",
                         f"output_dir={out_dir / f'{policy}_seed{seed}'}", f"wandb.group={group}",
                         *scoped.get(policy, [])]
            resolve(overrides)  # a typo stops here, before hours of training
            plan.append((policy, seed, overrides))
    if note:  # said once the plan stands, so that a bad argument's error is the only line
        print(note, file=sys.stderr)
    return out_dir, plan


def has_samplers(policy: str) -> bool:
    """Whether a policy samples with a denoising loop (inference_scheduler / num_inference_steps)."""
    from policy import get_spec

    return any(f.name == "inference_scheduler" for f in dataclasses.fields(get_spec(policy).config_class))


def check_samplers(text: str, policies: list[str]) -> None:
    """Each sampler of `samplers=` is one every policy can run (its config accepts the scheduler and steps)."""
    from common import ConfigError
    from eval import parse_samplers
    from policy import make_config

    try:
        samplers = parse_samplers(text)
    except ConfigError as e:
        raise CompareError(str(e)) from None
    for policy in policies:
        for name, steps in samplers:
            try:
                make_config(policy, obs_shapes={"state": (2,)}, action_dim=2, inference_scheduler=name,
                            num_inference_steps=steps)
            except ValueError as e:
                label = name if steps is None else f"{name}-{steps}"
                raise CompareError(f"samplers={text}: {label} is not a sampler of {policy}: {e}") from None


def evaluate_samplers_of(run_dirs: list[Path], samplers: str) -> None:
    """eval.py samplers=... on each finished run's last checkpoint, into <run>/eval/samplers (once: a run whose
    samplers.json exists is left as it is)."""
    import eval as eval_script

    for run_dir in run_dirs:
        where = run_dir / "eval" / "samplers"
        if (where / SAMPLERS_FILE).is_file() or read_local_run(run_dir) is None:
            continue
        print(f"{run_dir}: evaluating samplers {samplers}")
        eval_script.evaluate_samplers([f"checkpoint={run_dir / 'checkpoints' / 'last.pt'}",
                                       f"output_dir={where}"], samplers)


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

    from common.processes import die_with_parent

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
                    # die_with_parent: a compare.py killed outright (SIGKILL, the OOM killer) leaves no run behind
                    process = subprocess.Popen([sys.executable, str(REPO / "train.py"), *overrides, *extra],
                                               cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                               preexec_fn=die_with_parent)
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
    from config import resolve
    from runlib import check_wandb_online
    from train import train

    out_dir, plan = plan_runs(argv)
    if any(a == "print_config=true" for a in argv):  # each policy's values and sources, then exit
        for policy, seed, overrides in plan:
            print(f"{policy} seed {seed}: python train.py {' '.join(overrides)}")
        for policy in dict.fromkeys(p for p, _, _ in plan):
            overrides = next(o for p, _, o in plan if p == policy)
            print(f"\n{policy}:\n{resolve(overrides).table()}")
        return 0
    parallel = parallel_runs(argv)
    check_wandb_online(resolve(plan[0][2]).config.wandb.mode)  # before any run starts, not in each run's log
    # A finished run is reused only if it is the run asked for: check them all before training any.
    todo = []
    for policy, seed, overrides in plan:
        resolved = resolve(overrides)
        cfg = resolved.config
        run_dir = Path(cfg.output_dir)
        if read_local_run(run_dir) is not None:
            saved = json.loads((run_dir / "config.json").read_text())["config"]
            diff = config_differences(saved, cfg.to_dict())
            if diff:
                raise CompareError(f"{run_dir} holds a finished run with another config ({'; '.join(diff)}); "
                                   "delete it or choose another output_dir")
            print(f"{run_dir}: finished, collected (not trained again)")
        else:
            todo.append((resolved, overrides))
    failed = []
    if parallel > 1 and len(todo) > 1:
        print(f"training {len(todo)} runs, {min(parallel, len(todo))} at a time")
        with on_interrupt(lambda again: f"the runs under {out_dir} were stopped and keep their last checkpoints "
                                        f"(each run's train.log says where it stopped); `{again}` continues them"):
            failed = train_in_parallel([(r.config, o) for r, o in todo], parallel)
    else:  # one after the other, in this process
        for i, (resolved, _) in enumerate(todo):
            cfg = resolved.config
            print(f"[{i + 1}/{len(todo)}] training {cfg.policy} seed {cfg.seed} -> {cfg.output_dir}")
            try:
                train(resolved)
            except TrainingError as e:  # one diverged seed should not throw away the others
                print(f"error: {cfg.output_dir}: {e}", file=sys.stderr)
                failed.append(cfg.output_dir)
    run_dirs = [Path(resolve(o).config.output_dir) for _, _, o in plan]
    sampler_list = next((a.split("=", 1)[1] for a in argv if a.startswith("samplers=")), None)
    if sampler_list:
        evaluate_samplers_of([d for d in run_dirs if d.exists()], sampler_list)
    runs, unfinished = collect_local([d for d in run_dirs if d.exists()])
    unfinished += [str(d) for d in run_dirs if not d.exists()]
    samplers = collect_samplers([d / "eval" / "samplers" for d in run_dirs if (d / "eval" / "samplers").is_dir()])
    write_report(runs, unfinished, out_dir, f"the output dirs under `{out_dir}`", str(out_dir), samplers)
    return 1 if failed or unfinished else 0


def command_report(argv: list[str]) -> int:
    parser = ArgumentParser(prog="compare.py report", description="Report on finished runs.")
    parser.add_argument("paths", nargs="*", type=Path, help="run output dirs or folders above them")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT",
                        help="read the runs of this online W&B project through W&B's API instead of run dirs")
    parser.add_argument("--out", type=Path, required=True, help="folder for report.md, report.json, report.png")
    parser.add_argument("--group", action="append", help="only runs of this W&B group (repeatable)")
    args = parser.parse_args(argv)
    if not args.paths and not args.wandb:
        raise CompareError("report: give run dirs (or folders above them), or --wandb ENTITY/PROJECT for an online "
                           "W&B project")
    if args.paths and args.wandb:
        raise CompareError("report: give run dirs or --wandb ENTITY/PROJECT, not both (a run synced to W&B would "
                           "count twice)")
    samplers = []
    if args.wandb:
        runs, unfinished = collect_wandb_api(args.wandb, args.group)
        source = f"W&B project `{args.wandb}` (W&B's public API)"
        searched = f"W&B project {args.wandb}"
    else:
        runs, unfinished = collect_local(args.paths)
        samplers = collect_samplers(args.paths)
        source = f"the run dirs' {CONFIG_FILE}, {HISTORY_FILE} and {EVAL_FILE}"
        searched = ", ".join(str(p) for p in args.paths)
    if args.group:
        other = sorted({r.group for r in runs} - set(args.group))
        runs = [r for r in runs if r.group in args.group]
        searched += f" (group {', '.join(args.group)}" + (f"; finished runs of other groups: {', '.join(other)})"
                                                           if other else ")")
    write_report(runs, unfinished, args.out, source, searched, samplers)
    return 0


def command(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "report"):
        print(__doc__, file=sys.stderr)
        return 2
    return command_run(argv[1:]) if argv[0] == "run" else command_report(argv[1:])


def main(argv: list[str] | None = None) -> int:
    # `report --help` is argparse's; `--help` alone (or `run --help`) prints this module's usage
    args = sys.argv[1:] if argv is None else argv
    usage = None if args[:1] == ["report"] else __doc__
    return run_cli(command, args, usage=usage)


if __name__ == "__main__":
    sys.exit(main())
