"""Evaluate a trained policy in closed loop.

    python eval.py checkpoint=outputs/pusht_keypoints_diffusion_unet_seed0/checkpoints/last.pt
    python eval.py checkpoint=PATH n_episodes=100 n_envs=25 seed=200000 output_dir=outputs/my_eval
    python eval.py checkpoint=PATH policy.inference_scheduler=ddim policy.num_inference_steps=10
    python eval.py checkpoint=PATH samplers=ddpm-100,ddim-10,dpmsolver-5,unipc-5

Rolls the checkpoint's policy (its EMA weights) out on the task's evaluation seeds (Push-T: 100000..100049)
in a gymnasium vector env, writes `eval.json` (n_episodes, success_rate, mean_max_reward with 95%
confidence intervals, per-episode seed / max reward / success / length) and mp4 videos of the first
episodes into `output_dir` (default: <run>/eval), and logs the same to W&B (offline unless wandb.mode=online).
Several samplers of one checkpoint side by side: `samplers=ddpm-100,ddim-10,dpmsolver-5` evaluates each (same
seeds) into <output_dir>/<sampler>-<steps>/ and writes samplers.json and samplers.md (score, success, network passes
and milliseconds per action chunk at batch 1).
Shorthands: `n_episodes=`, `n_envs=` and `seed=` mean `eval.n_episodes=`, `eval.n_envs=` and `eval.seed=`.
`print_config=true` prints the values the evaluation would use (the checkpoint's, then the command line's) and exits.
`policy.*` may change only how the policy samples (inference scheduler and steps), not its weights.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from common import CheckpointError, ConfigError, run_cli
from common.locks import DirLock
from config import SAMPLING_FIELDS, config_from_dict, resolve
from envs.tasks import get_task
from common.paths import is_run_dir
from runlib import (check_wandb_online, chunk_latency_ms, load_checkpoint, log_video, pick_device,
                    policy_from_checkpoint, prepare_output_dir, run_evaluation, score_line, seed_everything,
                    set_torch_threads, start_wandb)

ALIASES = {"n_episodes": "eval.n_episodes", "n_envs": "eval.n_envs", "seed": "eval.seed"}


def parse_samplers(text: str) -> list[tuple[str, int | None]]:
    """`samplers=ddpm-100,ddim-10,dpmsolver-5,euler-2` -> [(scheduler, steps or None: its default), ...]."""
    out = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        name, _, steps = item.partition("-")
        try:
            out.append((name, int(steps) if steps else None))
        except ValueError:
            raise ConfigError(f"samplers={text}: {item!r} is not <scheduler>[-<steps>] (e.g. ddim-10)") from None
    if not out:
        raise ConfigError(f"samplers={text!r}: expected <scheduler>[-<steps>] items separated by commas, "
                          "e.g. samplers=ddpm-100,ddim-10,dpmsolver-5")
    return out


def evaluate_samplers(argv: list[str], text: str) -> list[dict]:
    """One evaluation per sampler of `text` into <output_dir>/<sampler>-<steps>/, then samplers.json and samplers.md
    side by side in output_dir (the same checkpoint, seeds and episodes)."""
    samplers = parse_samplers(text)
    if any(a.startswith(("policy.inference_scheduler=", "policy.num_inference_steps=")) for a in argv):
        raise ConfigError("samplers= sets policy.inference_scheduler and policy.num_inference_steps; give one or the "
                          "other")
    checkpoint = next((a.split("=", 1)[1] for a in argv if a.startswith("checkpoint=")), None)
    if not checkpoint:
        raise ConfigError("checkpoint=PATH is required (e.g. outputs/<run>/checkpoints/last.pt)")
    given = next((a.split("=", 1)[1] for a in argv if a.startswith("output_dir=")), None)
    base = Path(os.path.expandvars(os.path.expanduser(given))) if given else \
        Path(os.path.expandvars(os.path.expanduser(checkpoint))).resolve().parent.parent / "eval"
    rest = [a for a in argv if not a.startswith("output_dir=")]
    results = []
    for name, steps in samplers:
        label = f"{name}-{steps}" if steps else name
        results.append(evaluate_checkpoint([*rest, f"policy.inference_scheduler={name}",
                                            f"policy.num_inference_steps={steps}", f"output_dir={base / label}"]))
    rows = [{"sampler": r["sampling"]["sampler"], "steps": r["sampling"]["steps"],
             "passes_per_chunk": r["sampling"]["passes_per_chunk"], "mean_max_reward": r["mean_max_reward"],
             "mean_max_reward_ci95": r["mean_max_reward_ci95"], "success_rate": r["success_rate"],
             "success_rate_ci95": r["success_rate_ci95"], "chunk_ms_batch1": r["chunk_ms_batch1"],
             "eval_json": r["eval_json"]} for r in results]
    (base / "samplers.json").write_text(json.dumps({"checkpoint": checkpoint, "rows": rows}, indent=1))
    seeds = f"seeds from {results[0]['seed']}" if results[0]["seed"] is not None else "the task's evaluation seeds"
    lines = [f"Samplers of {checkpoint}, {results[0]['n_episodes']} episodes each ({seeds})",
             "", "| sampler | passes / chunk | coverage (95% CI) | success (95% CI) | ms / chunk, batch 1 |",
             "|---|---|---|---|---|"]
    for r in rows:
        (lo, hi), (slo, shi) = r["mean_max_reward_ci95"], r["success_rate_ci95"]
        lines.append(f"| {r['sampler']}-{r['steps']} | {r['passes_per_chunk']} | {r['mean_max_reward']:.3f} "
                     f"({lo:.3f}..{hi:.3f}) | {r['success_rate']:.2f} ({slo:.2f}..{shi:.2f}) | "
                     f"{r['chunk_ms_batch1']:.1f} |")
    (base / "samplers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"samplers.json, samplers.md: {base}")
    return results


def evaluate_checkpoint(argv: list[str]) -> dict:
    samplers = [a.split("=", 1)[1] for a in argv if a.startswith("samplers=")]
    if samplers:
        return evaluate_samplers([a for a in argv if not a.startswith("samplers=")], samplers[-1])
    args = [ALIASES.get(a.split("=", 1)[0], a.split("=", 1)[0]) + "=" + a.split("=", 1)[1] if "=" in a else a
            for a in argv]
    checkpoint = next((a.split("=", 1)[1] for a in args if a.startswith("checkpoint=")), None)
    if not checkpoint:
        raise ConfigError("checkpoint=PATH is required (e.g. outputs/<run>/checkpoints/last.pt)")
    checkpoint = os.path.expandvars(os.path.expanduser(checkpoint))
    ckpt = load_checkpoint(checkpoint)
    base = config_from_dict(ckpt["config"])
    base.output_dir = None
    base.policy_config = {}
    sampling = {a.split("=", 1)[0] for a in args if a.startswith("policy.")}
    if "policy.inference_scheduler" in sampling and "policy.num_inference_steps" not in sampling:
        args.append("policy.num_inference_steps=None")  # the new scheduler's default
    changed = {key.split(".", 1)[1] for key in sampling} - set(SAMPLING_FIELDS)
    if changed:
        raise ConfigError(f"eval.py can change only {sorted(SAMPLING_FIELDS)} of the policy, not {sorted(changed)}")
    resolved = resolve(args, base, use_presets=False, base_source=f"checkpoint {checkpoint}",
                       policy_base=ckpt["policy_config"])
    cfg = resolved.config
    if resolved.print_only:
        print(resolved.table())
        return None
    if cfg.task != ckpt["task"]:
        raise CheckpointError(f"{checkpoint}: the checkpoint is for task {ckpt['task']!r}, not {cfg.task!r}")
    if cfg.policy != ckpt["policy_name"]:
        raise CheckpointError(f"{checkpoint}: the checkpoint holds policy {ckpt['policy_name']!r}, not {cfg.policy!r}")
    check_wandb_online(cfg.wandb.mode)  # before the rollouts, not after them
    task = get_task(cfg.task).with_spec(ckpt.get("task_spec"))
    device = pick_device(cfg.device)
    set_torch_threads(cfg.training.threads)  # a shared machine: only the cores that are free
    # The sampling noise comes from the global RNGs: seeded from the run's seed, two evaluations of the same
    # checkpoint and settings give the same numbers (on a GPU, nondeterministic kernels may still differ).
    seed_everything(cfg.seed)

    policy = policy_from_checkpoint(ckpt, checkpoint, config_overrides=cfg.policy_config).to(device)

    output_dir = Path(cfg.output_dir) if cfg.output_dir else Path(checkpoint).resolve().parent.parent / "eval"
    if is_run_dir(output_dir):  # a training run's own eval.json (wall time, hardware, best checkpoint) is kept
        print(f"note: output_dir={output_dir} is a training run's directory; this evaluation goes to "
              f"{output_dir / 'eval'} (the run's own eval.json is left as it is)")
        output_dir = output_dir / "eval"
    with DirLock(prepare_output_dir(output_dir)):  # one evaluation at a time writes there
        return evaluate_into(output_dir, checkpoint, ckpt, cfg, task, device, policy)


def evaluate_into(output_dir: Path, checkpoint: str, ckpt: dict, cfg, task, device, policy) -> dict:
    print(f"evaluating {checkpoint} (task {cfg.task}, policy {cfg.policy}, step {ckpt['step']}, "
          f"{policy.config.inference_scheduler if hasattr(policy.config, 'inference_scheduler') else ''}"
          f"{'-' + str(policy.config.num_inference_steps) if hasattr(policy.config, 'num_inference_steps') else ''})"
          f" on {cfg.eval.n_episodes} episodes, {device}")
    result = run_evaluation(policy, task, cfg, device, output_dir, "eval")
    result = {"checkpoint": str(checkpoint), "step": ckpt["step"], "task": cfg.task, "policy": cfg.policy,
              "seed": cfg.eval.seed, "policy_config": policy.config.to_dict(),
              "chunk_ms_batch1": chunk_latency_ms(policy, device), "eval_json": str(output_dir / "eval.json"),
              **result}
    tmp = output_dir / f".eval.json.{os.getpid()}.tmp"  # whole or not at all
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, output_dir / "eval.json")

    run = start_wandb(cfg, output_dir, {"checkpoint": str(checkpoint), "step": ckpt["step"]},
                      run_id=f"eval-{output_dir.name}-{ckpt.get('wandb_run_id', 'run')}")
    run.log({"eval/mean_max_reward": result["mean_max_reward"], "eval/success_rate": result["success_rate"],
             **{f"eval/{name}": result[name] for name in task.score_thresholds},
             "eval/chunk_ms_batch1": result["chunk_ms_batch1"],
             **{f"eval/{k}": v for k, v in (result["sampling"] or {}).items()}})
    if result["videos"]:
        log_video(run, result["videos"][0])
    run.finish()
    print(score_line(result))
    print(f"eval.json: {output_dir / 'eval.json'}; videos: {output_dir / 'videos' / 'eval'}")
    return result


def main(argv: list[str] | None = None) -> int:
    return run_cli(evaluate_checkpoint, argv, usage=__doc__)


if __name__ == "__main__":
    sys.exit(main())
