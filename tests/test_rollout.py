"""The rollout loop with episodes that end at different steps: the scripted demonstrator, seen through the
keypoint observations a learned policy gets, as the policy."""

import json
from types import SimpleNamespace

import numpy as np
import torch

from envs.pusht import PushTEnv
from envs.pusht.demonstrator import PushTDemonstrator
from envs.pusht.env import T_KEYPOINTS
from envs.rollout import evaluate
from envs.tasks import get_task


def state_from_keypoints(obs: np.ndarray) -> np.ndarray:
    """(20,) keypoints + agent position -> the 5-D state (rigid fit of the T's body keypoints)."""
    kp = obs[:18].reshape(9, 2).astype(np.float64)
    local = T_KEYPOINTS - T_KEYPOINTS.mean(0)
    world = kp - kp.mean(0)
    h = local.T @ world
    angle = np.arctan2(h[0, 1] - h[1, 0], h[0, 0] + h[1, 1])
    c, s = np.cos(angle), np.sin(angle)
    origin = kp.mean(0) - T_KEYPOINTS.mean(0) @ np.array([[c, s], [-s, c]])
    return np.array([obs[18], obs[19], origin[0], origin[1], angle])


class DemonstratorPolicy:
    """Acts like a learned keypoint policy: obs (B, To, 20) -> actions (B, 1, 2)."""

    def __init__(self, n):
        self.config = SimpleNamespace(obs_horizon=2)
        self.demos = [PushTDemonstrator() for _ in range(n)]
        self.scratch = PushTEnv(render_mode=None)
        self.resets = 0

    def eval(self):
        return self

    def reset(self):
        self.resets += 1
        for d in self.demos:
            d.reset()

    def predict_action(self, obs):
        actions = []
        for i, o in enumerate(obs["keypoints"][:, -1].numpy()):
            self.scratch.reset(options={"reset_to_state": state_from_keypoints(o)})
            actions.append(self.demos[i].act(self.scratch))
        return torch.tensor(np.array(actions), dtype=torch.float32)[:, None]


def test_episodes_ending_at_different_steps(tmp_path):
    policy = DemonstratorPolicy(2)
    result = evaluate(policy, get_task("pusht_keypoints"), n_episodes=3, n_envs=2, seed=100000,
                      video_dir=tmp_path, n_videos=3, video_size=64, progress=False)
    episodes = result["episodes"]
    assert [e["seed"] for e in episodes] == [100000, 100001, 100002]
    assert all(e["success"] and e["max_reward"] == 1.0 for e in episodes)
    lengths = [e["length"] for e in episodes]
    assert len(set(lengths)) == 3 and max(lengths) < 300  # each stopped counting at its own success
    assert result["success_rate"] == 1.0 and policy.resets == 2
    assert len(result["videos"]) == 3
    import imageio.v2 as imageio

    for path, length in zip(result["videos"], lengths):
        assert imageio.get_reader(path).count_frames() == length + 1  # reset frame + one per step
    json.dumps(result)  # eval.json material is plain JSON
