"""Push-T, the reference simulation of Diffusion Policy's Push-T task.

    from envs.pusht import PushTEnv
    env = PushTEnv(obs_type="state")            # or "keypoints", "image"
    env = gymnasium.make("PushT-v0", obs_type="image")   # registered on import of envs.pusht
"""

import gymnasium as gym

from .env import OBS_TYPES, PushTEnv

__all__ = ["OBS_TYPES", "PushTEnv"]

if "PushT-v0" not in gym.registry:
    # The TimeLimit wrapper of gymnasium.make does the truncation (300 steps, `max_episode_steps=` to change
    # it); the environment's own limit is switched off there so that there is only one.
    gym.register(
        id="PushT-v0",
        entry_point="envs.pusht.env:PushTEnv",
        max_episode_steps=300,
        kwargs={"max_episode_steps": None},
    )
