"""The rollout loop with episodes that end at different steps: the scripted demonstrator, seen through the
keypoint observations a learned policy gets, as the policy."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from envs.pusht import PushTEnv
from envs.pusht.demonstrator import PushTDemonstrator
from envs.pusht.env import T_KEYPOINTS
from envs.rollout import EpisodeResult, evaluate, summarize, wilson_interval
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


# ------------------------------------------------------------------------------- eval.json's intervals
def episodes(successes: int, n: int, rewards=None) -> list[EpisodeResult]:
    rewards = [1.0 if i < successes else 0.5 for i in range(n)] if rewards is None else rewards
    return [EpisodeResult(seed=i, max_reward=r, success=i < successes, length=10) for i, r in enumerate(rewards)]


# Wilson score intervals (95%, z = 1.959964), as scipy.stats.binomtest(k, n).proportion_ci(method="wilson").
WILSON_95 = [
    (0, 50, 0.0, 0.071348),
    (50, 50, 0.928652, 1.0),
    (25, 50, 0.366445, 0.633555),
    (1, 50, 0.003539, 0.104954),
    (3, 10, 0.107791, 0.603222),
    (0, 1, 0.0, 0.793451),
]


def test_the_progress_bar_moves_before_any_episode_ends(capsys, monkeypatch):
    """Episodes of a batch run side by side and end together; the bar counts environment steps, so it shows
    progress (and a time-left estimate) long before the first episode ends, and ends exactly at its total."""
    import functools

    from tqdm import tqdm

    import envs.rollout

    monkeypatch.setattr(envs.rollout, "tqdm", functools.partial(tqdm, mininterval=0, miniters=1))  # draw every update
    evaluate(DemonstratorPolicy(2), get_task("pusht_keypoints"), n_episodes=3, n_envs=2, seed=100000, max_steps=12,
             progress=True)
    frames = [f for f in capsys.readouterr().err.replace("\n", "\r").split("\r") if f.startswith("eval")]
    assert any("0/3 episodes" in f and "/36 env steps" in f and not f.split(":")[1].strip().startswith("0%")
               for f in frames), frames
    assert "36/36 env steps" in frames[-1] and "3/3 episodes" in frames[-1], frames[-1]


@pytest.mark.parametrize("k, n, lower, upper", WILSON_95)
def test_success_rate_interval_is_wilsons(k, n, lower, upper):
    result = summarize(episodes(k, n))
    assert result["success_rate"] == pytest.approx(k / n)
    lo, hi = result["success_rate_ci95"]
    assert lo == pytest.approx(lower, abs=5e-4) and hi == pytest.approx(upper, abs=5e-4)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    assert wilson_interval(k, n) == [lo, hi]
    json.dumps(result)


def test_success_rate_interval_at_the_edges():
    # 0 of 50 is not "certainly 0": the interval is 0..0.071, not the normal approximation's [0, 0].
    lo, hi = summarize(episodes(0, 50))["success_rate_ci95"]
    assert lo == 0.0 and round(hi, 3) == 0.071
    lo, hi = summarize(episodes(50, 50))["success_rate_ci95"]
    assert hi == 1.0 and round(lo, 3) == 0.929
    lo, hi = summarize(episodes(25, 50))["success_rate_ci95"]
    assert (round(lo, 3), round(hi, 3)) == (0.366, 0.634)
    assert 0.5 - lo == pytest.approx(hi - 0.5)  # symmetric around 1/2
    assert all(np.isnan(wilson_interval(0, 0)))


def test_mean_max_reward_interval_stays_inside_the_score_range():
    # Most episodes at 1.0, a few low: the normal approximation mean +- 1.96 s / sqrt(n) reaches past 1 here.
    rewards = [1.0] * 17 + [0.05, 0.1, 0.3]
    half = 1.96 * np.std(rewards, ddof=1) / np.sqrt(len(rewards))
    assert np.mean(rewards) + half > 1.0  # what the old interval promised
    lo, hi = summarize(episodes(17, 20, rewards))["mean_max_reward_ci95"]
    assert 0.0 <= lo < np.mean(rewards) < hi <= 1.0
    assert hi == 1.0 or hi < 1.0  # bounded by the largest score
    # weak policy: scores near 0 give no negative lower bound
    low = [0.0] * 18 + [0.6, 0.9]
    assert np.mean(low) - 1.96 * np.std(low, ddof=1) / np.sqrt(20) < 0
    lo, hi = summarize(episodes(0, 20, low))["mean_max_reward_ci95"]
    assert lo >= 0.0 and hi > np.mean(low)
    # in the middle it agrees with the normal approximation to within a few hundredths, and is reproducible
    mid = list(np.linspace(0.2, 0.9, 50))
    lo, hi = summarize(episodes(25, 50, mid))["mean_max_reward_ci95"]
    half = 1.96 * np.std(mid, ddof=1) / np.sqrt(50)
    assert (lo, hi) == pytest.approx((np.mean(mid) - half, np.mean(mid) + half), abs=0.01)
    assert summarize(episodes(25, 50, mid))["mean_max_reward_ci95"] == [lo, hi]
    assert all(np.isnan(summarize(episodes(1, 1))["mean_max_reward_ci95"]))  # one episode: no spread to go on
