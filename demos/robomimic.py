"""Scripted robomimic demonstrations (Lift, Can) written as robomimic hdf5 files: no download, no human.

    python -m demos.robomimic lift --episodes 200 --out data/lift_scripted.hdf5
    python -m demos.robomimic can --episodes 200 --cameras agentview robot0_eye_in_hand --out can.hdf5

The demonstrator is envs/robomimic/demonstrator.py (a waypoint controller on the true object poses, with a little
command noise). Episodes that do not succeed within the step limit are dropped (the file holds successful
demonstrations only, as robomimic's "ph" datasets do); the command reports the success rate over all attempts.
Convert the file to a replay buffer with `python -m demos.robomimic_hdf5 convert IN.hdf5 OUT.zarr`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common import ArgumentParser, ConfigError, on_interrupt, run_cli
from envs.robomimic.demonstrator import TASK_ENV, record_episode
from envs.robomimic.env import ROBOT_LOW_DIM_KEYS, RobomimicEnv, standard_env_meta

from .robomimic_hdf5 import write_robomimic_hdf5


def generate(task: str, out: str | Path, episodes: int, cameras: tuple[str, ...] = (), image_size: int = 84,
             seed: int = 0, max_steps: int = 400, noise: float = 0.05, progress: bool = True,
             overwrite: bool = False) -> dict:
    """Write `episodes` successful scripted demonstrations to a robomimic hdf5; returns counts and timing.

    Seeds seed, seed+1, ... are tried until `episodes` succeed (at most 2x as many attempts).
    """
    if task not in TASK_ENV:
        raise ConfigError(f"no scripted demonstrator for task {task!r}; available: {sorted(TASK_ENV)}")
    if episodes < 1:
        raise ConfigError(f"--episodes {episodes}: expected at least 1 demonstration to record")
    if Path(out).exists() and not overwrite:  # said now, not after minutes of recording
        raise ConfigError(f"--out {out}: already exists; expected a new path (or --overwrite to replace it)")
    env_meta = standard_env_meta(TASK_ENV[task], cameras=cameras, image_size=image_size)
    obs_keys = ["object", *ROBOT_LOW_DIM_KEYS, *[f"{c}_image" for c in cameras]]
    env = RobomimicEnv(env_meta, obs_keys, image_size=image_size)
    demos, attempts, start = [], 0, time.perf_counter()
    bar = tqdm(total=episodes, desc=f"{task} demos", unit="demo", disable=not progress)
    with on_interrupt(lambda again: f"nothing was saved: {out} is written once all {episodes} demonstrations are "
                                    f"recorded ({len(demos)} were); `{again}` starts again"):
        try:
            while len(demos) < episodes and attempts < 2 * episodes:
                demo = record_episode(env, task, seed + attempts, max_steps, noise)
                attempts += 1
                if demo is not None:
                    demos.append(demo)
                    bar.update(1)
                bar.set_postfix(success=f"{len(demos)}/{attempts}")
        finally:
            bar.close()
            env.close()
    write_robomimic_hdf5(out, demos, env_meta)
    return {"path": str(out), "demos": len(demos), "attempts": attempts, "success_rate": len(demos) / attempts,
            "mean_length": float(np.mean([len(d["actions"]) for d in demos])) if demos else 0.0,
            "seconds": time.perf_counter() - start}


def _main(argv: list[str]) -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=sorted(TASK_ENV))
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--out", required=True, help="robomimic hdf5 file to write")
    parser.add_argument("--cameras", nargs="*", default=[], help="also store <camera>_image observations")
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=400)
    parser.add_argument("--noise", type=float, default=0.05, help="std of the Gaussian noise on the commands")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    r = generate(args.task, args.out, args.episodes, tuple(args.cameras), args.image_size, args.seed,
                 args.max_steps, args.noise, overwrite=args.overwrite)
    print(f"{r['demos']} demonstrations ({r['attempts']} attempts, success rate {r['success_rate']:.3f}, "
          f"{r['mean_length']:.0f} steps on average) in {r['seconds']:.0f} s -> {r['path']}")


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
