"""Closed-loop evaluation: the one rollout loop for every task and policy (eval.py and train.py use it).

Episodes run in a gymnasium vector env, `n_envs` at a time, on seeds seed, seed+1, ... The policy sees
the last `obs_horizon` observations of every env as one batch (the first observation repeated at the
start of an episode, as Diffusion Policy's MultiStepWrapper does), returns an action chunk
(n_envs, action_horizon, action_dim), and the chunk is executed before the policy is asked again
(receding horizon). An episode's score is its maximum reward (Push-T: the coverage score).
"""

from __future__ import annotations

import math
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from common import TrainingError

from .tasks import Task
from .video import save_video


class FrameRecorder(gym.Wrapper):
    """Keeps `render()` frames of an env's first episode while `record` is on (set per env with set_attr).

    A reset with a seed (evaluate's) starts a new recording; a reset without one (the vector env's autoreset
    after the episode ended) keeps the finished episode in `episode_frames`.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.record = False
        self.frames: list[np.ndarray] = []
        self.finished: list[np.ndarray] | None = None

    @property
    def episode_frames(self) -> list[np.ndarray]:
        return self.finished if self.finished is not None else self.frames

    def reset(self, **kwargs):
        out = self.env.reset(**kwargs)
        if kwargs.get("seed") is not None:
            self.finished = None
        elif self.finished is None:
            self.finished = self.frames
        self.frames = [self.env.render()] if self.record else []
        return out

    def step(self, action):
        out = self.env.step(action)
        if self.record:
            self.frames.append(self.env.render())
        return out


@dataclass
class EpisodeResult:
    seed: int
    max_reward: float
    success: bool
    length: int


Z95 = 1.959964  # the standard normal's 97.5% quantile: two-sided 95% intervals


def wilson_interval(successes: int, n: int, z: float = Z95) -> list[float]:
    """Wilson score interval for a binomial proportion (successes of n): [lower, upper] inside [0, 1].

    Unlike the normal approximation p +- z * sqrt(p (1 - p) / n), it is not empty at p = 0 or 1 (0 of 50 gives
    0..0.071) and stays inside [0, 1]: center (p + z^2 / 2n) / (1 + z^2 / n), half-width
    z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2). [nan, nan] for n = 0.
    """
    if n <= 0:
        return [float("nan"), float("nan")]
    p = successes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # Exact at the edges (0 of n: lower 0; n of n: upper 1), which rounding would miss by 1e-16.
    lower = 0.0 if successes <= 0 else max(0.0, center - half)
    upper = 1.0 if successes >= n else min(1.0, center + half)
    return [lower, upper]


def bootstrap_mean_interval(x: np.ndarray, level: float = 0.95, resamples: int = 10_000, seed: int = 0
                            ) -> list[float]:
    """Percentile bootstrap interval for the mean of `x`: [lower, upper], always inside [min(x), max(x)].

    Why this one for the coverage score (the mean over episodes of a max reward in [0, 1]): the scores pile up at
    1.0 with a long tail below, and the normal approximation mean +- 1.96 s / sqrt(n) then reaches past 1 (and below
    0 for weak policies), promising values the score cannot take. The percentile bootstrap makes no normality
    assumption and stays in the score's range; a fixed `seed` makes eval.json reproducible. Its limits: it is a
    little narrow for small n (below ~20 episodes), and zero-width when every episode scored the same.
    [nan, nan] for fewer than 2 episodes.
    """
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        return [float("nan"), float("nan")]
    means = np.random.default_rng(seed).choice(x, size=(resamples, len(x)), replace=True).mean(axis=1)
    tail = (1 - level) / 2 * 100
    lower, upper = np.percentile(means, [tail, 100 - tail])
    return [float(max(lower, x.min())), float(min(upper, x.max()))]


def summarize(results: list[EpisodeResult], thresholds: dict | None = None) -> dict:
    """Success rate with its 95% Wilson score interval; mean max reward (the episode score: see Task.episode_score)
    with a 95% percentile-bootstrap interval (both stay inside [0, 1]: see wilson_interval and
    bootstrap_mean_interval); for each of `thresholds` ({name: value}), the fraction of episodes scoring above the
    value, with its Wilson interval (Block Pushing's p1, p2)."""
    max_rewards = np.array([r.max_reward for r in results], dtype=np.float64)
    successes = np.array([r.success for r in results], dtype=np.float64)
    above = {}
    for name, value in (thresholds or {}).items():
        hits = int((max_rewards > value).sum())
        above[name], above[f"{name}_ci95"] = hits / len(results), wilson_interval(hits, len(results))

    return {
        **above,
        "n_episodes": len(results),
        "success_rate": float(successes.mean()),
        "success_rate_ci95": wilson_interval(int(successes.sum()), len(results)),
        "mean_max_reward": float(max_rewards.mean()),
        "mean_max_reward_ci95": bootstrap_mean_interval(max_rewards),
        "mean_length": float(np.mean([r.length for r in results])),
        "episodes": [vars(r) for r in results],
    }


def _make_vector_env(task: Task, n_envs: int, render_size: int, max_steps: int | None, vector: str):
    def make():
        return FrameRecorder(task.make_env(render_size=render_size, max_episode_steps=max_steps))

    fns = [make] * n_envs
    # An env whose episode ended is reset by the vector env and stepped on; its results are ignored.
    mode = gym.vector.AutoresetMode.NEXT_STEP
    if vector == "async":
        # spawn, not fork: forked renderers (EGL, pygame) crash; each worker builds its own env.
        return gym.vector.AsyncVectorEnv(fns, context="spawn", autoreset_mode=mode)
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)


@torch.no_grad()
def evaluate(
    policy,
    task: Task,
    n_episodes: int = 50,
    seed: int | None = None,
    n_envs: int | None = None,
    device: str | torch.device = "cpu",
    video_dir: str | Path | None = None,
    n_videos: int = 2,
    video_size: int = 256,
    max_steps: int | None = None,
    vector: str = "sync",
    progress: bool = True,
    predict_kwargs: dict | None = None,
) -> dict:
    """Roll `policy` out for `n_episodes` episodes; returns `summarize(...)` plus `videos` (paths).

    `policy.predict_action(obs)` takes {key: tensor (B, To, ...)} and returns (B, Ta, Da); `policy.reset()` is
    called before each batch of episodes; `predict_kwargs` go to predict_action (e.g. num_inference_steps).
    """
    seed = task.eval_seed if seed is None else seed
    n_envs = min(n_episodes, n_envs or task.eval_n_envs)
    obs_horizon = policy.config.obs_horizon
    policy.eval()
    results: list[EpisodeResult] = []
    videos: list[str] = []
    video_errors: list[str] = []  # videos that could not be written (not listed in `videos`)
    envs = None
    # Counted in environment steps, not episodes: the episodes of a batch run side by side and mostly end together
    # near the step limit, so a bar of finished episodes would sit at 0 with no time-left estimate until the end.
    # An episode that ends early is credited with the steps it did not need, so the bar ends exactly at its total.
    step_limit = max_steps or task.max_episode_steps
    bar = tqdm(total=n_episodes * step_limit, desc="eval", unit="step", disable=not progress, leave=False,
               bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} env steps{postfix} [{elapsed}<{remaining}]")
    bar.set_postfix_str(f"0/{n_episodes} episodes")
    finished = 0
    try:
        for first in range(0, n_episodes, n_envs):
            seeds = list(range(seed + first, seed + min(first + n_envs, n_episodes)))
            n = len(seeds)
            if envs is None or envs.num_envs != n:
                if envs is not None:
                    envs.close()
                envs = _make_vector_env(task, n, video_size, max_steps, vector)
            record = [first + i < n_videos and video_dir is not None for i in range(n)]
            envs.set_attr("record", record)
            obs, _ = envs.reset(seed=seeds)
            policy.reset()
            history = deque([task.obs_from_env(obs)] * obs_horizon, maxlen=obs_horizon)
            done = np.zeros(n, dtype=bool)
            max_reward, episode_return = np.zeros(n), np.zeros(n)
            success = np.zeros(n, dtype=bool)
            length = np.zeros(n, dtype=np.int64)
            while not done.all():
                batch = {
                    k: torch.from_numpy(np.stack([h[k] for h in history], axis=1)).to(device)
                    for k in history[0]
                }
                chunk = policy.predict_action(batch, **(predict_kwargs or {})).float().cpu().numpy()  # (n, Ta, Da)
                bad = ~np.isfinite(chunk.reshape(n, -1)).all(axis=1) & ~done
                if bad.any():
                    raise TrainingError(f"the policy returned NaN or inf actions for evaluation seed(s) "
                                        f"{[seeds[i] for i in np.flatnonzero(bad)][:5]} at step {int(length.max())}; "
                                        "expected finite actions (are its weights or normalizer statistics finite?)")
                for t in range(chunk.shape[1]):
                    obs, reward, terminated, truncated, info = envs.step(chunk[:, t])
                    active = ~done
                    if task.episode_score == "return":  # rewards are >= 0: the running return's max is the return
                        episode_return[active] += reward[active]
                        max_reward[active] = episode_return[active]
                    else:
                        max_reward[active] = np.maximum(max_reward[active], reward[active])
                    success[active] |= np.asarray(info["is_success"], dtype=bool)[active]
                    length[active] += 1
                    done |= terminated | truncated
                    ended = done & active
                    bar.update(int(active.sum()) + int((step_limit - length[ended]).clip(min=0).sum()))
                    if ended.any():
                        finished += int(ended.sum())
                        successes = sum(r.success for r in results) + int(success.sum())
                        bar.set_postfix_str(f"{finished}/{n_episodes} episodes, {successes} successes")
                    history.append(task.obs_from_env(obs))
                    if done.all():
                        break
            results += [EpisodeResult(s, float(m), bool(ok), int(le)) for s, m, ok, le in
                        zip(seeds, max_reward, success, length)]
            if any(record):
                for i, frames in enumerate(envs.get_attr("episode_frames")):
                    if record[i]:
                        frames = frames[: length[i] + 1]
                        try:
                            videos.append(str(save_video(frames, Path(video_dir) / f"episode_{seeds[i]}.mp4")))
                        except OSError as e:  # a full disk: the scores still count, the video is reported missing
                            video_errors.append(str(e))
                            tqdm.write(f"warning: {e}", file=sys.stderr)
    finally:
        bar.close()
        if envs is not None:
            envs.close()
    summary = summarize(results, task.score_thresholds)
    summary["videos"] = videos
    if video_errors:
        summary["video_errors"] = video_errors
    return summary
