"""The robomimic tasks (Lift, Can, Square, Transport, ToolHang) through robosuite and robomimic's env utilities.

    from envs.robomimic import RobomimicEnv
    env = RobomimicEnv(env_meta, obs_keys=["object", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"])
    env = gymnasium.make("Robomimic-v0", env_meta=env_meta, obs_keys=[...])   # registered on import

`env_meta` is a robomimic dataset's `data.attrs["env_args"]` (demos.robomimic_hdf5.read_env_meta). robosuite
and robomimic are imported when an environment is created, not on import of this package.
"""

import gymnasium as gym

if "Robomimic-v0" not in gym.registry:
    gym.register(id="Robomimic-v0", entry_point="envs.robomimic.env:RobomimicEnv", max_episode_steps=400)


def __getattr__(name):
    if name == "RobomimicEnv":
        from .env import RobomimicEnv

        return RobomimicEnv
    raise AttributeError(name)
