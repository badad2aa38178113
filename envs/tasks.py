"""Tasks: an environment plus the observation keys a policy sees, read the same way from data and from the env.

A policy's observation is a dict {key: array (..., *shape)}. A task says which keys and shapes, how to
build them from a replay buffer's arrays (training) and from the environment's observations (rollouts), so
that the two always agree. `train.py` and `eval.py` pick a task by name (`task=pusht_image`, `task=lift_lowdim`).

The robomimic tasks are built from their dataset: `task.for_dataset(rb.attrs, path)` adds the dataset's
environment metadata (robomimic's env_args, stored by `demos.robomimic_hdf5.convert`) and its action kind
(relative: 7 per arm; absolute: 10 per arm); checkpoints keep that (`task.spec()`, `task.with_spec(spec)`).

    task = get_task("pusht_keypoints")
    arrays = task.obs_from_dataset(rb.to_memory(task.dataset_keys))   # {"keypoints": (N, 20)}
    env = task.make_env()
    obs = task.obs_from_env(env.reset(seed=0)[0])                       # {"keypoints": (20,)}
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import gymnasium as gym
import numpy as np

from common import ConfigError, DataError, is_image_shape


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
    # An episode's score: "max", its largest reward (Push-T's coverage); "return", the sum of its rewards (Block
    # Pushing: 0.49 for the first block placed, 0.51 more for both). `score_thresholds` name fractions of episodes
    # whose score exceeds a value (Block Pushing's p1 > 0.4, p2 > 0.9), reported next to the success rate.
    episode_score: str = "max"
    score_thresholds: dict = field(default_factory=dict)
    eval_n_envs: int = 50  # environments stepped together in an evaluation
    robomimic_env: str | None = None  # robosuite env name a robomimic task's dataset must be for
    # What the task implies for a run, as `section.field` overrides (config.py applies them before the command
    # line's): e.g. a smaller batch for image tasks and the crop that goes with the image size.
    presets: dict = field(default_factory=dict)

    def make_env(self, render_size: int = 96, max_episode_steps: int | None = None) -> gym.Env:
        import envs.pusht  # noqa: F401  (registers PushT-v0)
        import envs.robomimic  # noqa: F401  (registers Robomimic-v0)

        if self.env_id == "BlockPush-v0":
            import_blockpush()

        if self.robomimic_env and "env_meta" not in self.env_kwargs:
            raise DataError(f"task {self.name!r} builds its environment from the dataset's metadata: train with "
                             "dataset_path=<converted robomimic zarr>, or evaluate a checkpoint trained that way")
        return gym.make(
            self.env_id,
            max_episode_steps=max_episode_steps or self.max_episode_steps,
            disable_env_checker=True,
            render_size=render_size,
            **self.env_kwargs,
        )

    def check_dataset(self, keys: list[str], source: str, shapes: dict | None = None) -> None:
        """Every key the task reads is there; with `shapes` ({key: per-step shape}), the observations match."""
        missing = [k for k in self.dataset_keys if k not in keys]
        if missing:
            raise DataError(
                f"{source}: task {self.name!r} needs data keys {list(self.dataset_keys)}; missing {missing} "
                f"(the file has {keys})"
            )
        for key, expected in self.obs_shapes.items():
            if shapes is not None and key in shapes and tuple(shapes[key]) != tuple(expected):
                raise DataError(f"{source}: data key {key!r} has per-step shape {tuple(shapes[key])}; task "
                                 f"{self.name!r} expects {tuple(expected)} (a dataset of another task?)")
        action_shape = shapes.get(self.action_key) if shapes is not None else None
        if action_shape is not None and tuple(action_shape) != (self.action_dim,):
            raise DataError(f"{source}: data key {self.action_key!r} has per-step shape {tuple(action_shape)}; "
                             f"task {self.name!r} expects ({self.action_dim},)")

    def check_buffer(self, rb, source: str) -> None:
        """`check_dataset` on a replay buffer, and what only its arrays tell: it holds at least one episode, the
        task's arrays hold real numbers (not booleans, complex numbers or text), and the observations the task
        builds from them have its shapes (e.g. pusht_keypoints: 9 keypoints (9, 2) and the agent position of
        `state`, 20 numbers)."""
        if rb.n_episodes == 0:
            raise DataError(f"{source}: holds 0 episodes ('meta/episode_ends' is empty); task {self.name!r} needs at "
                            "least one")
        shapes = {k: tuple(rb.shape(k)[1:]) for k in rb.keys}
        self.check_dataset(rb.keys, source, shapes=shapes)
        for key in self.dataset_keys:
            dtype = rb.array(key).dtype
            if dtype == np.bool_ or not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
                raise DataError(f"{source}: data/{key} holds {dtype} values; task {self.name!r} expects numbers "
                                "(floats, or integers such as uint8 images)")
        keys = ", ".join(f"data/{k} {shapes[k]}" for k in self.dataset_keys)
        try:
            built = self.obs_from_dataset({k: np.zeros((1, *shapes[k]), rb.array(k).dtype) for k in self.dataset_keys})
        except (ValueError, IndexError) as e:
            raise DataError(f"{source}: task {self.name!r} cannot build its observations {dict(self.obs_shapes)} from "
                            f"{keys}: {e}") from e
        for key, expected in self.obs_shapes.items():
            got = tuple(np.shape(built[key])[1:])
            if got != tuple(expected):
                raise DataError(f"{source}: task {self.name!r} builds observation {key!r} of per-step shape {got} from "
                                f"{keys}; expected {tuple(expected)} (a dataset of another task?)")

    def for_dataset(self, attrs: dict, source: str) -> Task:
        """This task bound to a dataset's metadata (robomimic: env_meta and action kind; Push-T: unchanged)."""
        if not self.robomimic_env:
            return self
        meta = attrs.get("env_meta")
        if not isinstance(meta, dict) or not isinstance(meta.get("env_kwargs"), dict):
            raise DataError(f"{source}: no 'env_meta' attribute with env_name and env_kwargs; task {self.name!r} needs "
                            "a replay buffer written by `python -m demos.robomimic_hdf5 convert` (it stores the hdf5's "
                            "env_args)")
        if meta.get("env_name") != self.robomimic_env:
            raise DataError(f"{source}: the dataset is for robosuite env {meta.get('env_name')!r}; task "
                             f"{self.name!r} is {self.robomimic_env!r}")
        abs_action = bool(attrs.get("abs_action", False))
        n_arms = len(meta["env_kwargs"].get("robots", ["Panda"]))
        return self.with_spec({"env_kwargs": {**self.env_kwargs, "env_meta": meta, "abs_action": abs_action},
                               "action_dim": (10 if abs_action else 7) * n_arms})

    def spec(self) -> dict:
        """What a checkpoint keeps to rebuild this task (with_spec)."""
        return {"env_kwargs": self.env_kwargs, "action_dim": self.action_dim}

    def with_spec(self, spec: dict | None) -> Task:
        return self if spec is None else replace(self, env_kwargs=dict(spec["env_kwargs"]),
                                                 action_dim=int(spec["action_dim"]))


def import_blockpush():
    """envs.blockpush (registers BlockPush-v0), or an error saying how to install its optional pybullet."""
    import importlib.util

    if importlib.util.find_spec("pybullet") is None:  # found, not imported: its import prints to stdout
        raise ConfigError("Block Pushing needs pybullet, an optional extra: pip install -c constraints.txt -e "
                          "'.[blockpush]'")
    import envs.blockpush

    return envs.blockpush


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
        presets={"training.batch_size": 64},
    ),
}


def _robomimic_task(name: str, env_name: str, object_dim: int, cameras: tuple[str, ...], image: bool,
                    n_arms: int = 1, max_episode_steps: int = 400, image_size: int = 84) -> Task:
    """A robomimic task as Diffusion Policy runs it: low-dim = object + end-effector pose + gripper of each arm;
    image = the cameras + the same robot keys (no object state). Image policies train at batch 64 and crop
    90% of the image (76 of 84, 216 of 240), as in the paper."""
    robot = {f"robot{i}_{k}": (d,) for i in range(n_arms) for k, d in
             (("eef_pos", 3), ("eef_quat", 4), ("gripper_qpos", 2))}
    shapes = ({f"{c}_image": (image_size, image_size, 3) for c in cameras} if image else {"object": (object_dim,)})
    shapes.update(robot)

    def select(d):
        return {k: d[k] if is_image_shape(shape) else np.asarray(d[k], dtype=np.float32) for k, shape in shapes.items()}

    crop = round(0.9 * image_size)
    return Task(name=name, obs_shapes=shapes, action_dim=7 * n_arms, dataset_keys=(*shapes, "action"),
                obs_from_dataset=select, obs_from_env=select, env_id="Robomimic-v0",
                env_kwargs={"obs_keys": list(shapes), "image_size": image_size},
                max_episode_steps=max_episode_steps, score_name="success_rate", eval_n_envs=10,
                robomimic_env=env_name,
                presets={"training.batch_size": 64, "policy.crop_shape": [crop, crop]} if image else {})


# name, robosuite env, object-state size, cameras, arms, step limit (the paper's limits: 400, 700 for the two long tasks)
_ROBOMIMIC = [
    ("lift", "Lift", 10, ("agentview", "robot0_eye_in_hand"), 1, 400),
    ("can", "PickPlaceCan", 14, ("agentview", "robot0_eye_in_hand"), 1, 400),
    ("square", "NutAssemblySquare", 14, ("agentview", "robot0_eye_in_hand"), 1, 400),
    ("transport", "TwoArmTransport", 41,
     ("shouldercamera0", "robot0_eye_in_hand", "shouldercamera1", "robot1_eye_in_hand"), 2, 700),
    ("tool_hang", "ToolHang", 44, ("sideview", "robot0_eye_in_hand"), 1, 700),
]
for _name, _env, _obj, _cams, _arms, _steps in _ROBOMIMIC:
    for _kind in ("lowdim", "image"):
        TASKS[f"{_name}_{_kind}"] = _robomimic_task(f"{_name}_{_kind}", _env, _obj, _cams, _kind == "image", _arms,
                                                    _steps, image_size=240 if _name == "tool_hang" else 84)


# Block Pushing (envs/blockpush): the 16-D state of the reference's multimodal variant, delta actions, 350 steps;
# scored by the episode return (p1: one block in a target, p2: both).
TASKS["blockpush_lowdim"] = Task(
    name="blockpush_lowdim",
    obs_shapes={"state": (16,)},
    action_dim=2,
    dataset_keys=("obs", "action"),
    obs_from_dataset=lambda d: {"state": np.asarray(d["obs"], dtype=np.float32)},
    obs_from_env=lambda o: {"state": np.asarray(o, dtype=np.float32)},
    env_id="BlockPush-v0",
    max_episode_steps=350,
    score_name="p2",
    episode_score="return",
    score_thresholds={"p1": 0.4, "p2": 0.9},
)

ROBOMIMIC_TASKS = {name: task for name, task in TASKS.items() if task.robomimic_env}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]
