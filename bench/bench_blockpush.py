"""Block Pushing figures: the oracle's p1 / p2, the environment's speed, and DP-C, DP-T and LSTM-GMM trained on the
oracle's demonstrations for the same CPU budget, next to the Diffusion Policy paper's Table 4.

    .venv/bin/python bench/bench_blockpush.py [--out outputs/bench_blockpush] [--episodes 1000] [--budget-min 10]
                                              [--threads 1] [--phases oracle speed demos train table] [--quick]

oracle  the scripted oracle on 100 seeds (the evaluation seeds 100000..100099): p1, p2, mean episode length
speed   environment steps per second, one env, no rendering (reset included separately), and a 256 px frame;
        the ratio to real time (10 Hz control) and to this stack's Push-T env on the same machine
demos   python -m demos.blockpush --episodes N (parallel processes) into <out>/blockpush.zarr
train   for each policy: a 150-step probe of its training speed on these cores, then python train.py for
        budget x speed steps (the same CPU minutes for every policy, evaluation not counted) at batch 64, then the
        final evaluation: 50 episodes on the evaluation seeds, DDIM-10 for the diffusion policies (DDPM-100, as
        published, would take DP-T, which replans every step, ~25 min per evaluation on one core)
table   <out>/table.md and table.json: ours next to the paper's Table 4 (state, p1 / p2)
--quick: 20 demos, 10 oracle seeds, a 0.3-minute budget, 4 evaluation episodes (a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

POLICIES = {"diffusion_unet": "DP-C", "diffusion_transformer": "DP-T", "lstm_gmm": "LSTM-GMM"}
PAPER = {"LSTM-GMM": (0.03, 0.01), "IBC": (0.01, 0.00), "BET": (0.96, 0.71), "DP-C": (0.36, 0.11),
         "DP-T": (0.99, 0.94)}  # Chi et al., Diffusion Policy, Table 4 (state; 1,000 oracle episodes)


def run(argv: list[str], log: Path, threads: int | None) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    print(f"$ python {' '.join(argv)}   (log: {log})", flush=True)
    with open(log, "a") as f:
        done = subprocess.run([sys.executable, *argv], cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env)
    if done.returncode:
        sys.exit(f"error: exit {done.returncode}; see {log}")


def oracle_phase(out: Path, seeds: int) -> dict:
    import numpy as np

    from envs.blockpush import BlockPushEnv
    from envs.blockpush.demonstrator import BlockPushOracle

    returns, lengths, orders = [], [], {}
    env = BlockPushEnv(render_mode=None)
    for seed in range(100000, 100000 + seeds):
        env.reset(seed=seed)
        oracle = BlockPushOracle(seed)
        total, steps = 0.0, 0
        while True:
            _, reward, terminated, truncated, _ = env.step(oracle.act(env))
            total, steps = total + reward, steps + 1
            if terminated or truncated or steps >= 350:
                break
        returns.append(total)
        lengths.append(steps)
        orders[str(oracle.order)] = orders.get(str(oracle.order), 0) + 1
    env.close()
    r = np.array(returns)
    result = {"seeds": seeds, "p1": float((r > 0.4).mean()), "p2": float((r > 0.9).mean()),
              "mean_length": float(np.mean(lengths)), "orders": orders}
    print(f"oracle on {seeds} seeds: p1 {result['p1']:.2f}, p2 {result['p2']:.2f}, "
          f"{result['mean_length']:.0f} steps on average; orders {orders}", flush=True)
    (out / "oracle.json").write_text(json.dumps(result, indent=1))
    return result


def speed_phase(out: Path) -> dict:
    import numpy as np

    from envs.blockpush import BlockPushEnv
    from envs.pusht import PushTEnv

    def per_call(fn, n):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - start) / n

    rng = np.random.default_rng(0)
    env = BlockPushEnv(render_mode="rgb_array", render_size=256)
    env.reset(seed=0)
    actions = iter(rng.uniform(-0.02, 0.02, (100000, 2)))
    step_s = per_call(lambda: env.step(next(actions)), 1000)
    reset_s = per_call(lambda: env.reset(seed=1), 50)
    render_s = per_call(env.render, 100)
    env.close()
    pusht = PushTEnv(obs_type="keypoints")
    pusht.reset(seed=0)
    targets = iter(rng.uniform(100, 400, (100000, 2)))
    pusht_s = per_call(lambda: pusht.step(next(targets)), 1000)
    result = {"steps_per_s": 1 / step_s, "reset_ms": reset_s * 1000, "render_256_ms": render_s * 1000,
              "real_time_factor": (1 / step_s) / 10, "pusht_steps_per_s": 1 / pusht_s}
    print(f"speed: {result['steps_per_s']:.0f} steps/s ({result['real_time_factor']:.0f}x real time at 10 Hz; "
          f"Push-T env {result['pusht_steps_per_s']:.0f} steps/s, ratio {step_s and pusht_s / step_s:.2f}); reset "
          f"{result['reset_ms']:.1f} ms, 256 px frame {result['render_256_ms']:.1f} ms", flush=True)
    (out / "speed.json").write_text(json.dumps(result, indent=1))
    return result


def demos_phase(out: Path, episodes: int) -> None:
    from datasets import ReplayBuffer

    data = out / "blockpush.zarr"
    if data.exists() and ReplayBuffer.unfinished(data) is None:  # an unfinished one is continued below
        print(f"{data}: exists, not recorded again")
        return
    start = time.perf_counter()
    run(["-m", "demos.blockpush", "--episodes", str(episodes), "--output", str(data)], out / "demos.log", None)
    (out / "demos.json").write_text(json.dumps({"episodes": episodes, "wall_s": time.perf_counter() - start}))


BATCH = 64  # a quarter of the reference's 256: four times the updates in the same CPU minutes
SAMPLER = ["policy.inference_scheduler=ddim", "policy.num_inference_steps=10"]  # diffusion policies' evaluation


def common_args(out: Path, threads: int, policy: str) -> list[str]:
    """train.py's settings for `policy`: DDIM-10 for the diffusion policies' evaluation (DP-T acts every step:
    DDPM-100 would take ~25 minutes of transformer passes per 50 episodes on one core)."""
    return ["task=blockpush_lowdim", f"policy={policy}", f"dataset_path={out / 'blockpush.zarr'}",
            "training.eval_every=0", "wandb.mode=disabled", f"training.threads={threads}",
            f"training.batch_size={BATCH}", *(SAMPLER if policy.startswith("diffusion") else [])]


def probe_steps_per_s(out: Path, policy: str, threads: int) -> float:
    probe = out / "probe" / policy
    if not (probe / "history.jsonl").is_file():
        run(["train.py", *common_args(out, threads, policy), "training.steps=150", "training.log_every=50",
             "training.val_every=0", "eval.n_episodes=1", "eval.max_steps=4", "eval.n_videos=0",
             f"output_dir={probe}"], out / "probe.log", threads)
    rows = [json.loads(line) for line in (probe / "history.jsonl").read_text().splitlines()]
    rates = [r["train/steps_per_s"] for r in rows if "train/steps_per_s" in r][1:]  # the first includes start-up
    return statistics.median(rates)


def train_phase(out: Path, budget_min: float, threads: int, episodes: int) -> dict:
    plan = {}
    for policy, label in POLICIES.items():
        rate = probe_steps_per_s(out, policy, threads)
        steps = max(50, int(rate * budget_min * 60))
        plan[policy] = {"label": label, "probe_steps_per_s": rate, "steps": steps}
        print(f"{label} ({policy}): {rate:.2f} steps/s on {threads} thread(s) -> {steps} steps for "
              f"{budget_min} min", flush=True)
        run(["train.py", *common_args(out, threads, policy), f"training.steps={steps}",
             f"eval.n_episodes={episodes}", f"output_dir={out / policy}"], out / f"{policy}.log", threads)
    (out / "plan.json").write_text(json.dumps(plan, indent=1))
    return plan


def table_phase(out: Path, budget_min: float, threads: int) -> str:
    plan = json.loads((out / "plan.json").read_text())
    oracle = json.loads((out / "oracle.json").read_text())
    lines = ["| policy | ours p1 (95% CI) | ours p2 (95% CI) | paper p1 | paper p2 | training steps "
             "| training wall time |",
             "|---|---|---|---|---|---|---|",
             f"| scripted oracle ({oracle['seeds']} seeds) | {oracle['p1']:.2f} | {oracle['p2']:.2f} | - | - | - | - |"]
    results = {}
    for policy, row in plan.items():
        result = json.loads((out / policy / "eval.json").read_text())
        results[policy] = result
        paper = PAPER[row["label"]]
        (a, b), (c, d) = result["p1_ci95"], result["p2_ci95"]
        lines.append(f"| {row['label']} (`{policy}`) | {result['p1']:.2f} ({a:.2f}..{b:.2f}) | {result['p2']:.2f} "
                     f"({c:.2f}..{d:.2f}) | {paper[0]:.2f} | {paper[1]:.2f} | {row['steps']} | "
                     f"{result['wall_s'] / 60:.1f} min |")
    for label in ("BET", "IBC"):
        lines.append(f"| {label} (not here) | - | - | {PAPER[label][0]:.2f} | {PAPER[label][1]:.2f} | - | - |")
    text = (f"Budget: {budget_min} CPU minutes of training per policy on {threads} thread(s), batch {BATCH} (the wall "
            f"time includes the final evaluation: 50 episodes on the evaluation seeds, DDIM-10 for the diffusion "
            f"policies).\n\n" + "\n".join(lines) + "\n")
    (out / "table.md").write_text(text)
    (out / "table.json").write_text(json.dumps({"plan": plan, "oracle": oracle, "results": {
        p: {k: r[k] for k in ("p1", "p1_ci95", "p2", "p2_ci95", "mean_max_reward", "wall_s", "step")}
        for p, r in results.items()}}, indent=1))
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_blockpush")
    parser.add_argument("--episodes", type=int, default=1000, help="oracle demonstrations to train on")
    parser.add_argument("--budget-min", type=float, default=10.0, help="training minutes per policy")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each training")
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--phases", nargs="*", default=["oracle", "speed", "demos", "train", "table"])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    oracle_seeds = 100
    if args.quick:
        args.episodes, args.budget_min, args.eval_episodes, oracle_seeds = 20, 0.3, 4, 10
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"bench_blockpush: {args.episodes} demos, {args.budget_min} min per policy, {args.threads} thread(s); "
          f"{os.cpu_count()} cores, load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    if "oracle" in args.phases:
        oracle_phase(args.out, oracle_seeds)
    if "speed" in args.phases:
        speed_phase(args.out)
    if "demos" in args.phases:
        demos_phase(args.out, args.episodes)
    if "train" in args.phases:
        train_phase(args.out, args.budget_min, args.threads, args.eval_episodes)
    if "table" in args.phases:
        print(table_phase(args.out, args.budget_min, args.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
