"""Push-T demonstrations recorded into a replay buffer with the published data's keys.

    # N seeded demonstrations from the scripted demonstrator (no human, no download)
    python -m demos.pusht --episodes 200 --output data/pusht_scripted.zarr

    # a person pushes the T with the mouse (as Diffusion Policy's demo_pusht.py): demos/pusht_teleop.py
    python -m demos.pusht_teleop --output data/pusht_human.zarr

Each step stores what was observed before the action, as in the published `pusht_cchi_v7_replay.zarr`:
    img (T, 96, 96, 3) uint8   state (T, 5) f32   keypoint (T, 9, 2) f32   action (T, 2) f32   n_contacts (T, 1) f32
(images are stored as uint8, which every reader here accepts; the published file has float32 0..255).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from envs.pusht import PushTEnv
from envs.pusht.demonstrator import PushTDemonstrator

from common import ArgumentParser, ConfigError, on_interrupt, run_cli
from common.processes import worker_pool
from datasets import ReplayBuffer
from datasets.replay_buffer import IN_PROGRESS, ReplayBufferError


class EpisodeRecorder:
    """Collects (observation before the action, action) steps of one Push-T episode."""

    def __init__(self):
        self.steps: dict[str, list] = {k: [] for k in ("img", "state", "keypoint", "action", "n_contacts")}

    def __len__(self) -> int:
        return len(self.steps["action"])

    def record(self, env: PushTEnv, image: np.ndarray, action, n_contacts: int) -> None:
        """`image`: the 96x96 observation before `action`; `n_contacts`: from the step that led to it."""
        self.steps["img"].append(np.asarray(image, dtype=np.uint8))
        self.steps["state"].append(env.get_state().astype(np.float32))
        self.steps["keypoint"].append(env.get_keypoints().astype(np.float32))
        self.steps["action"].append(np.asarray(action, dtype=np.float32))
        self.steps["n_contacts"].append(np.float32([n_contacts]))

    def episode(self) -> dict[str, np.ndarray]:
        return {k: np.stack(v) for k, v in self.steps.items()}


def scripted_episode(seed: int, max_steps: int = 300) -> tuple[dict[str, np.ndarray], bool]:
    """One demonstration from the scripted demonstrator on `reset(seed=seed)`; returns (episode, success)."""
    env = PushTEnv(obs_type="image", max_episode_steps=max_steps)
    demonstrator = PushTDemonstrator(seed=seed)
    obs, info = env.reset(seed=seed)
    recorder = EpisodeRecorder()
    while True:
        action = demonstrator.act(env)
        recorder.record(env, obs["image"], action, info["n_contacts"])
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            return recorder.episode(), bool(info["is_success"])


def generate(output: str | Path, n_episodes: int, first_seed: int = 0, workers: int | None = None,
             overwrite: bool = False, keep_failures: bool = False) -> dict:
    """Record demonstrations on seeds first_seed, first_seed+1, ... until `n_episodes` are saved.

    Failed episodes (no success within 300 steps) are skipped unless `keep_failures`. Episodes are written in seed
    order as they finish. An interrupted run (Ctrl-C, SIGTERM, a kill) leaves a readable buffer of the finished
    episodes marked unfinished; the same call afterwards continues it from the next seed, and gives the same
    buffer as an uninterrupted run. The worker processes die with this one.
    """
    if n_episodes < 1:
        raise ConfigError(f"--episodes {n_episodes}: expected at least 1 episode to record")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers}: expected at least 1 process")
    workers = workers or max(1, min(os.cpu_count() or 1, n_episodes))  # one episode per core at a time
    plan = {"command": "demos.pusht", "episodes": n_episodes, "first_seed": first_seed,
            "keep_failures": keep_failures}
    with ReplayBuffer.create_or_continue(output, plan, overwrite=overwrite) as buffer:
        progress = buffer.attrs[IN_PROGRESS]
        seeds_saved, failed = list(progress.get("seeds", [])), list(progress.get("failed_seeds", []))
        pending = progress.get("pending")
        if pending is not None and buffer.n_episodes == len(seeds_saved) + 1:
            seeds_saved.append(pending)  # stopped after the episode was written, before its seed was noted
        if buffer.n_episodes != len(seeds_saved):
            raise ReplayBufferError(f"{output}: {buffer.n_episodes} episodes but {len(seeds_saved)} seeds noted; "
                                    "the buffer was changed by another program: --overwrite to record it again")
        saved = len(seeds_saved)
        seed = max([first_seed - 1, *seeds_saved, *failed]) + 1
        if saved:
            print(f"{output}: continuing an unfinished run at episode {saved + 1} of {n_episodes} (seed {seed})")

        def note(again: str) -> str:
            return (f"{buffer.n_episodes} of {n_episodes} episodes are saved in {buffer.source} (unfinished); "
                    f"`{again}` continues from the next one")

        with on_interrupt(note), worker_pool(workers) as pool, tqdm(
            total=n_episodes, initial=saved, desc="demonstrations", unit="episode"
        ) as bar:
            while saved < n_episodes:
                seeds = list(range(seed, seed + (n_episodes - saved)))
                seed += len(seeds)
                for s, (episode, success) in zip(seeds, pool.imap(scripted_episode, seeds)):
                    if (success or keep_failures) and saved < n_episodes:
                        buffer.update_attrs(**{IN_PROGRESS: {**buffer.attrs[IN_PROGRESS], "pending": s}})
                        buffer.add_episode(episode)
                        seeds_saved.append(s)
                        saved += 1
                        bar.update(1)
                    if not success:
                        failed.append(s)
                    buffer.update_attrs(**{IN_PROGRESS: {**buffer.attrs[IN_PROGRESS], "seeds": seeds_saved,
                                                         "failed_seeds": failed, "pending": None}})
                    if saved >= n_episodes:
                        break
                if len(failed) > n_episodes:  # the demonstrator is broken; do not loop forever
                    raise RuntimeError(f"{output}: {len(failed)} scripted episodes failed (seeds {failed[:10]}...)")
        buffer.finish_writing()
    return {"output": str(output), "episodes": saved, "failed_seeds": failed, "last_seed": seeds_saved[-1]}


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


def _main(argv: list[str]) -> None:
    g = ArgumentParser(description="Record scripted Push-T demonstrations into a replay buffer.")
    g.add_argument("--output", required=True, help="replay buffer to create (.zarr directory or .zip)")
    g.add_argument("--episodes", type=int, default=200)
    g.add_argument("--first-seed", type=int, default=0, help="seeds first..: keep them apart from 100000.. (eval)")
    g.add_argument("--workers", type=int, default=None)
    g.add_argument("--overwrite", action="store_true")
    g.add_argument("--keep-failures", action="store_true")
    args = g.parse_args(argv)
    result = generate(args.output, args.episodes, args.first_seed, args.workers, args.overwrite, args.keep_failures)
    print(f"saved {result['episodes']} episodes to {result['output']}; "
          f"failed seeds skipped: {result['failed_seeds'] or 'none'}")


if __name__ == "__main__":
    raise SystemExit(main())
