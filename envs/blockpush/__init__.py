"""Block Pushing, Implicit BC's two-block benchmark (the reference's multimodal variant), in pybullet.

    from envs.blockpush import BlockPushEnv
    env = gymnasium.make("BlockPush-v0")        # registered on import of envs.blockpush; 350 steps per episode

pybullet is an optional extra: pip install -c constraints.txt -e '.[blockpush]'.
"""

import gymnasium as gym

from .env import P_THRESHOLDS, BlockPushEnv

__all__ = ["BlockPushEnv", "P_THRESHOLDS"]

if "BlockPush-v0" not in gym.registry:
    # gymnasium.make's TimeLimit truncates (350 steps, the reference's evaluation length); the env's own limit is
    # switched off there so that there is only one.
    gym.register(id="BlockPush-v0", entry_point="envs.blockpush.env:BlockPushEnv", max_episode_steps=350,
                 kwargs={"max_episode_steps": None})
