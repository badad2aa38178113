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

from pathlib import Path

import numpy as np

from envs.pusht import PushTEnv
from envs.pusht.demonstrator import PushTDemonstrator

from common import run_cli

from .seeded import generate_seeded, seeded_cli


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
    """Record demonstrations on seeds first_seed, first_seed+1, ... until `n_episodes` are saved (failed episodes,
    no success within 300 steps, are skipped unless `keep_failures`); interrupted, the same call continues it
    (demos/seeded.py)."""
    return generate_seeded(output, n_episodes, scripted_episode, "demos.pusht", first_seed, workers, overwrite,
                           keep_failures)


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


def _main(argv: list[str]) -> None:
    seeded_cli(argv, "Record scripted Push-T demonstrations into a replay buffer.", 200, generate)


if __name__ == "__main__":
    raise SystemExit(main())
