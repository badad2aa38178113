"""A robomimic task (robosuite through robomimic's env utilities) with the gymnasium API.

The environment is built from a dataset's own metadata, `env_meta` = the JSON in a robomimic hdf5's
`data.attrs["env_args"]` ({"env_name", "type", "env_kwargs", "env_version"}), exactly as robomimic does, so the
robot, controller and task match the demonstrations. What we change, and why:
- `hard_reset=False`: robosuite otherwise re-parses the model XML and rebuilds the simulator and renderer on
  every reset (seconds with a renderer); the initial states are drawn the same way.
- Cameras: only those whose images are observation keys are rendered on a step (`<camera>_image`, at
  `image_size` x `image_size`, 84 by default). Shadows and the skybox are switched off: they change no pixel
  of Lift's agentview and eye-in-hand images (measured: mean |difference| 0.000). Table reflections do (mean
  0.5 / 255 on agentview) and cost most of the render time (bench/bench_robomimic_env.py): they are switched
  off only when `env_meta["fast_render"]` is true, which our scripted demonstrations record; an environment
  for a published dataset renders as the dataset was rendered.
- The renderer is created on the first `render()` when no camera is observed (low-dim tasks), so 50 low-dim
  environments in one process do not hold 50 GL contexts unless videos are recorded.

Observations: {key: array} for `obs_keys` (low-dim float32; images (H, W, 3) uint8, upright). Actions: 7 per arm
(robomimic's relative OSC_POSE action), or 10 per arm with `abs_action=True` (position, 6D rotation, gripper;
see rotation.py), the controller then switched to absolute goals. Reward: 1.0 on a success step, else 0;
an episode terminates on success (as robomimic's rollouts stop there); `info["is_success"]`.
Seeding: robosuite draws initial object placements from numpy's global generator; `reset(seed=s)` seeds it.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Sequence

import gymnasium as gym
import numpy as np

from common import DataError, EnvError, is_image_shape

from .compat import import_robomimic
from .rotation import policy_to_env_action

# Every camera of the robomimic tasks, registered with robomimic's ObsUtils as image ("rgb") keys once per process:
# its observation getter flips image keys upright only for registered keys.
CAMERAS = ("agentview", "robot0_eye_in_hand", "robot1_eye_in_hand", "sideview", "shouldercamera0",
           "shouldercamera1", "frontview", "birdview")
_obs_utils_ready = False
# The robot's low-dimensional observations in robomimic's datasets (one arm; Transport adds robot1_*).
ROBOT_LOW_DIM_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "robot0_gripper_qvel",
                      "robot0_joint_pos", "robot0_joint_pos_cos", "robot0_joint_pos_sin", "robot0_joint_vel",
                      "robot0_eef_vel_lin", "robot0_eef_vel_ang")


def _robomimic():
    global _obs_utils_ready
    robosuite, env_utils, obs_utils = import_robomimic()
    if not _obs_utils_ready:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints a banner
            obs_utils.initialize_obs_utils_with_obs_specs(
                {"obs": {"low_dim": [], "rgb": [f"{c}_image" for c in CAMERAS]}})
        _obs_utils_ready = True
    return robosuite, env_utils


def check_env_meta(env_meta, source: str = "env_meta") -> dict:
    """Validate a robomimic env_meta dict (a clear error naming what is missing)."""
    if not isinstance(env_meta, dict):
        raise DataError(f"{source}: expected robomimic's env metadata (a dict), got {type(env_meta).__name__}")
    missing = [k for k in ("env_name", "type", "env_kwargs") if k not in env_meta]
    if missing:
        raise DataError(f"{source}: robomimic env metadata needs keys env_name, type, env_kwargs; missing {missing}")
    if env_meta["type"] != 1:
        raise DataError(f"{source}: env type {env_meta['type']!r} is not robosuite (1); only robosuite tasks are "
                        "supported")
    return env_meta


def standard_env_meta(env_name: str, cameras: Sequence[str] = (), image_size: int = 84, fast_render: bool = True,
                      robots: Sequence[str] = ("Panda",)) -> dict:
    """env_meta as robomimic's v1.4.1 datasets store it (OSC_POSE, 20 Hz, sparse reward), for our own demonstrations.

    `fast_render` (our key, ignored by robomimic's tools) records that the images were rendered without
    reflections, so environments made from this metadata render the same way.
    """
    robosuite, _ = _robomimic()
    from robosuite.controllers import load_controller_config

    env_kwargs = {
        "has_renderer": False, "has_offscreen_renderer": bool(cameras), "ignore_done": True,
        "use_object_obs": True, "use_camera_obs": bool(cameras), "control_freq": 20,
        "controller_configs": load_controller_config(default_controller="OSC_POSE"), "robots": list(robots),
        "camera_depths": False, "camera_heights": image_size, "camera_widths": image_size,
        "reward_shaping": False, "camera_names": list(cameras),
    }
    return {"env_name": env_name, "env_version": robosuite.__version__, "type": 1, "env_kwargs": env_kwargs,
            "fast_render": fast_render}


class RobomimicEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, env_meta: dict, obs_keys: Sequence[str], image_size: int = 84, abs_action: bool = False,
                 render_size: int = 256, render_camera: str = "agentview", max_episode_steps: int | None = None):
        """max_episode_steps is accepted for gymnasium.make's TimeLimit (it does the truncation), not used here."""
        check_env_meta(env_meta)
        self.env_meta = copy.deepcopy(env_meta)
        self.obs_keys = list(obs_keys)
        # robomimic names a camera's observation `<camera>_image`: the name says which cameras to render.
        self.cameras = [k[: -len("_image")] for k in self.obs_keys if k.endswith("_image")]
        self.abs_action = abs_action
        self.render_size, self.render_camera = render_size, render_camera
        self.render_mode = "rgb_array"

        robosuite, env_utils = _robomimic()
        kwargs = copy.deepcopy(self.env_meta["env_kwargs"])
        kwargs["hard_reset"] = False
        if self.cameras:
            kwargs.update(camera_names=self.cameras, camera_heights=image_size, camera_widths=image_size)
        if abs_action:
            kwargs["controller_configs"]["control_delta"] = False
        env_class = env_utils.get_env_class(env_meta=self.env_meta)
        with contextlib.redirect_stdout(io.StringIO()):
            self._env = env_class(env_name=self.env_meta["env_name"], render=False,
                                  render_offscreen=bool(self.cameras), use_image_obs=bool(self.cameras),
                                  postprocess_visual_obs=False, **kwargs)
        self.fast_render = bool(self.env_meta.get("fast_render", False))
        self._robosuite = robosuite
        self.n_arms = len(self.robosuite_env.robots)
        self._configure_renderer()

        obs = self._select(self._env.get_observation())
        missing = [k for k in self.obs_keys if k not in obs]
        if missing:
            raise DataError(f"{self.env_meta['env_name']}: observation keys {missing} do not exist; the environment "
                            f"has {sorted(self._env.get_observation())}")
        self.observation_space = gym.spaces.Dict({
            k: gym.spaces.Box(0, 255, v.shape, np.uint8) if is_image_shape(v.shape)
            else gym.spaces.Box(-np.inf, np.inf, v.shape, np.float32) for k, v in obs.items()})
        dim = (10 if abs_action else 7) * self.n_arms
        low = -np.inf if abs_action else -1.0
        self.action_space = gym.spaces.Box(low, -low, (dim,), np.float32)

    @property
    def robosuite_env(self):
        """The robosuite environment inside robomimic's wrapper."""
        return self._env.env

    @property
    def sim(self):
        return self.robosuite_env.sim

    # ---------------------------------------------------------------- rendering

    def _configure_renderer(self) -> None:
        ctx = self.sim._render_context_offscreen
        if ctx is None:
            return
        import mujoco

        ctx.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        ctx.scn.flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0
        if self.fast_render:
            ctx.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0

    def render(self) -> np.ndarray:
        """(render_size, render_size, 3) uint8 from `render_camera`, upright."""
        if self.sim._render_context_offscreen is None:
            from robosuite.utils.binding_utils import MjRenderContextOffscreen

            MjRenderContextOffscreen(self.sim, device_id=-1)  # registers itself with the sim
            self._configure_renderer()
        return self._env.render(mode="rgb_array", height=self.render_size, width=self.render_size,
                                camera_name=self.render_camera)

    # ---------------------------------------------------------------- gymnasium API

    def _select(self, obs: dict) -> dict:
        return {k: (obs[k] if is_image_shape(np.shape(obs[k])) else np.asarray(obs[k], np.float32))
                for k in self.obs_keys if k in obs}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """options={"state": flattened MuJoCo state} starts from a recorded state (robomimic's `states`);
        with "model": the demo's `model_file` XML too, the simulator is first rebuilt from it, as robomimic's
        playback and dataset_states_to_obs do (the images then match the file's exactly; without it, within
        1/255 on average: the model built from env_args renders a hair differently)."""
        super().reset(seed=seed)
        if seed is not None:
            np.random.seed(seed)  # robosuite's placement samplers use numpy's global generator
        obs = self._env.reset()
        if options and options.get("state") is not None:
            target = {"states": np.asarray(options["state"])}
            if options.get("model") is not None:
                target["model"] = options["model"]
            obs = self._env.reset_to(target)
            if "model" in target:
                self._configure_renderer()  # the rebuilt simulator has a new render context
            # robosuite's controllers cache the end-effector pose of the last reset; without this the first action
            # after jumping to a recorded state would be taken relative to the pose before the jump.
            for robot in self.robosuite_env.robots:
                robot.controller.update(force=True)
        return self._select(obs), {"is_success": False}

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise EnvError(f"{self.env_meta['env_name']}: action shape {action.shape}, expected "
                           f"{self.action_space.shape} ({'absolute' if self.abs_action else 'relative'} actions, "
                           f"{self.n_arms} arm(s))")
        if not np.all(np.isfinite(action)):
            raise EnvError(f"{self.env_meta['env_name']}: action has non-finite values: {action}")
        if self.abs_action:
            action = policy_to_env_action(action)
        obs, _, _, _ = self._env.step(action)
        success = bool(self._env.is_success()["task"])
        return self._select(obs), float(success), success, False, {"is_success": success}

    def get_state(self) -> np.ndarray:
        """The flattened MuJoCo state (what robomimic stores as `states`)."""
        return np.array(self.sim.get_state().flatten())

    def close(self) -> None:
        # Free the GL context now, while EGL is alive; at interpreter exit its finalizer fails noisily.
        if getattr(self, "_env", None) is not None:
            self.sim._render_context_offscreen = None
            self._env = None
