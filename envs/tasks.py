"""Tasks: an environment plus the observation keys a policy sees, read the same way from data and from the env.

A policy's observation is a dict {key: array (..., *shape)}. A task says which keys and shapes, how to
build them from a replay buffer's arrays (training) and from the environment's observations (rollouts), so
that the two always agree. `train.py` and `eval.py` pick a task by name (`task=pusht_image`).

    task = get_task("pusht_keypoints")
    arrays = task.obs_from_dataset(rb.to_memory(task.dataset_keys))   # {"keypoints": (N, 20)}
    env = task.make_env()
    obs = task.obs_from_env(env.reset(seed=0)[0])                       # {"keypoints": (20,)}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import gymnasium as gym
import numpy as np


@dataclass(frozen=True)
class Task:
    name: str
    obs_shapes: dict[str, tuple[int, ...]]  # per-step shape of each policy observation key
    action_dim: int
    dataset_keys: tuple[str, ...]  # replay-buffer keys the task reads (the action key included)
    obs_from_dataset: Callable[[dict], dict]  # {data key: (N, ...)} -> {obs key: (N, ...)}
    obs_from_env: Callable[[object], dict]  # env observation (single or batched) -> {obs key: ...}
    env_kwargs: dict = field(default_factory=dict)
    env_id: str = "PushT-v0"
    action_key: str = "action"
    max_episode_steps: int = 300
    eval_seed: int = 100000  # evaluation episodes use seeds eval_seed, eval_seed + 1, ...
    score_name: str = "mean_max_reward"  # Push-T's coverage score

    def make_env(self, render_size: int = 96, max_episode_steps: int | None = None) -> gym.Env:
        import envs.pusht  # noqa: F401  (registers PushT-v0)

        return gym.make(
            self.env_id,
            max_episode_steps=max_episode_steps or self.max_episode_steps,
            disable_env_checker=True,
            render_size=render_size,
            **self.env_kwargs,
        )

    def check_dataset(self, keys: list[str], source: str) -> None:
        missing = [k for k in self.dataset_keys if k not in keys]
        if missing:
            raise KeyError(
                f"{source}: task {self.name!r} needs data keys {list(self.dataset_keys)}; missing {missing} "
                f"(the file has {keys})"
            )


def _agent_pos(state: np.ndarray) -> np.ndarray:
    return state[..., :2]


TASKS: dict[str, Task] = {
    # The 5-D state: agent x, y, block x, y, angle (gym-pusht's "state").
    "pusht_lowdim": Task(
        name="pusht_lowdim",
        obs_shapes={"state": (5,)},
        action_dim=2,
        dataset_keys=("state", "action"),
        obs_from_dataset=lambda d: {"state": d["state"]},
        obs_from_env=lambda o: {"state": np.asarray(o, dtype=np.float32)},
        env_kwargs={"obs_type": "state"},
    ),
    # The paper's "state" setting: the T's 9 keypoints and the agent position, 20 numbers.
    "pusht_keypoints": Task(
        name="pusht_keypoints",
        obs_shapes={"keypoints": (20,)},
        action_dim=2,
        dataset_keys=("keypoint", "state", "action"),
        obs_from_dataset=lambda d: {
            "keypoints": np.concatenate(
                [d["keypoint"].reshape(len(d["keypoint"]), -1), _agent_pos(d["state"])], axis=-1
            ).astype(np.float32)
        },
        obs_from_env=lambda o: {"keypoints": np.asarray(o, dtype=np.float32)},
        env_kwargs={"obs_type": "keypoints"},
    ),
    # 96x96 RGB and the agent position.
    "pusht_image": Task(
        name="pusht_image",
        obs_shapes={"image": (96, 96, 3), "agent_pos": (2,)},
        action_dim=2,
        dataset_keys=("img", "state", "action"),
        obs_from_dataset=lambda d: {"image": d["img"], "agent_pos": _agent_pos(d["state"]).astype(np.float32)},
        obs_from_env=lambda o: {"image": o["image"], "agent_pos": np.asarray(o["agent_pos"], dtype=np.float32)},
        env_kwargs={"obs_type": "image"},
    ),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]
