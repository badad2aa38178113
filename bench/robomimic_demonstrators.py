"""Success rate of the scripted robomimic demonstrators (envs/robomimic/demonstrator.py) on given seeds.

Each seed is one episode from `reset(seed=s)` (the evaluation seeds are 100000..), ended at the first success or
at --max-steps; printed: successes / episodes with the 95% Wilson interval, mean steps of the successful ones.

    python bench/robomimic_demonstrators.py square --seeds 100000 100100 [--noise 0.05]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from envs.robomimic.demonstrator import TASK_ENV, record_episode  # noqa: E402
from envs.robomimic.env import RobomimicEnv, standard_env_meta  # noqa: E402
from envs.rollout import wilson_interval  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=sorted(TASK_ENV))
    parser.add_argument("--seeds", type=int, nargs=2, default=(100000, 100100), metavar=("FIRST", "END"))
    parser.add_argument("--max-steps", type=int, default=400)
    parser.add_argument("--noise", type=float, default=0.05)
    args = parser.parse_args()
    env = RobomimicEnv(standard_env_meta(TASK_ENV[args.task]), ["object"])
    lengths, failed, start = [], [], time.perf_counter()
    seeds = range(*args.seeds)
    for seed in tqdm(seeds, desc=f"{args.task} demonstrator", unit="episode"):
        demo = record_episode(env, args.task, seed, args.max_steps, args.noise)
        if demo is None:
            failed.append(seed)
        else:
            lengths.append(len(demo["actions"]))
    env.close()
    n, k = len(seeds), len(lengths)
    lo, hi = wilson_interval(k, n)
    print(f"{args.task} ({TASK_ENV[args.task]}), seeds {args.seeds[0]}..{args.seeds[1] - 1}: {k} / {n} succeed "
          f"({k / n:.2f}, 95% CI {lo:.2f}..{hi:.2f}), {np.mean(lengths):.0f} steps on average, "
          f"{time.perf_counter() - start:.0f} s; failed seeds: {failed}")


if __name__ == "__main__":
    main()
