"""Block Pushing demonstrations from the scripted oracle, recorded into a replay buffer (no download, no human).

    python -m demos.blockpush --episodes 1000 --output data/blockpush.zarr

The oracle (envs/blockpush/demonstrator.py) picks one of the four block-to-target orders per episode, so the data
is multimodal as the reference's 1,000 oracle episodes are. Each step stores what was observed before the action:
    obs (T, 16) f32 (envs/blockpush/env.py's observation)   action (T, 2) f32 (the effector target's delta)
    order (T, 2) int8: the episode's (first block, its target), the same at every step (which mode it shows)
Episodes run until both blocks are placed or 350 steps; episodes that do not place both are skipped unless
--keep-failures (the reference kept them). Parallel processes, a progress bar, and an interrupted run continues
where it stopped (demos/seeded.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common import run_cli

from .seeded import generate_seeded, seeded_cli

EPISODE_STEPS = 350


def oracle_episode(seed: int, max_steps: int = EPISODE_STEPS) -> tuple[dict[str, np.ndarray], bool]:
    """One oracle demonstration on `reset(seed=seed)`; returns (episode, both blocks placed)."""
    from envs.blockpush import BlockPushEnv
    from envs.blockpush.demonstrator import BlockPushOracle

    env = BlockPushEnv(render_mode=None, max_episode_steps=max_steps)
    oracle = BlockPushOracle(seed=seed)
    obs, _ = env.reset(seed=seed)
    steps = {"obs": [], "action": []}
    try:
        while True:
            action = oracle.act(env)
            steps["obs"].append(obs)
            steps["action"].append(np.asarray(action, dtype=np.float32))
            obs, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
    finally:
        env.close()
    episode = {k: np.stack(v).astype(np.float32) for k, v in steps.items()}
    episode["order"] = np.tile(np.array(oracle.order[0], dtype=np.int8), (len(episode["action"]), 1))
    return episode, bool(info["is_success"])


def generate(output: str | Path, n_episodes: int, first_seed: int = 0, workers: int | None = None,
             overwrite: bool = False, keep_failures: bool = False) -> dict:
    """Record `n_episodes` oracle demonstrations on seeds first_seed, first_seed+1, ... (demos/seeded.py)."""
    from envs.tasks import import_blockpush

    import_blockpush()  # pybullet is an optional extra: said here, not as a traceback from a worker process
    return generate_seeded(output, n_episodes, oracle_episode, "demos.blockpush", first_seed, workers, overwrite,
                           keep_failures)


def _main(argv: list[str]) -> None:
    seeded_cli(argv, "Record scripted Block Pushing demonstrations into a replay buffer.", 1000, generate,
               "keep episodes that did not place both blocks")


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
