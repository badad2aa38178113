"""Replay recorded Push-T demonstrations in the simulation and measure how closely it reproduces them.

    python -m demos.pusht_replay --dataset ../shared/data/pusht.zip [--episodes 20] [--no-images]

Each episode starts from its first recorded state (`reset_to_state`), then its recorded actions are applied
one by one; after every step the simulated state is compared with the next recorded state, and the
rendered 96x96 observation with the recorded `img`. Printed: the distribution over all steps of agent and
block position error (pixels), block angle error (degrees), image mean absolute error (0..255), and how many
episodes end with the recorded coverage within 0.02.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

from common import ArgumentParser, DataError, run_cli
from datasets import ReplayBuffer
from envs.pusht import PushTEnv


@dataclass
class EpisodeReplay:
    """Per-step errors of one replayed episode (arrays over the T-1 simulated steps)."""

    episode: int
    agent_error: np.ndarray  # pixels
    block_error: np.ndarray  # pixels
    angle_error: np.ndarray  # degrees, wrapped to [0, 180]
    image_mae: np.ndarray | None  # 0..255, over the T recorded frames
    final_coverage_sim: float
    final_coverage_recorded: float


def _angle_diff_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.abs((a - b + np.pi) % (2 * np.pi) - np.pi)
    return np.degrees(d)


def coverage_of_state(env: PushTEnv, state: np.ndarray) -> float:
    """Coverage of the goal by a T placed at `state` (a 5-D recorded state)."""
    env.reset(options={"reset_to_state": state})
    return env._coverage()


def replay_episode(env: PushTEnv, episode: dict[str, np.ndarray], index: int, images: bool = True) -> EpisodeReplay:
    """Replay one recorded episode ({"state": (T, 5), "action": (T, 2), "img": (T, 96, 96, 3)})."""
    states, actions = episode["state"].astype(np.float64), episode["action"]
    recorded_coverage = coverage_of_state(env, states[-1])
    obs, info = env.reset(options={"reset_to_state": states[0]})
    sim = [env.get_state()]
    maes = []
    if images:
        maes.append(np.abs(obs["image"].astype(np.float32) - episode["img"][0]).mean())
    for t in range(len(states) - 1):
        obs, _, _, _, info = env.step(actions[t])
        sim.append(env.get_state())
        if images:
            maes.append(np.abs(obs["image"].astype(np.float32) - episode["img"][t + 1]).mean())
    sim = np.array(sim)[1:]
    rec = states[1:]
    return EpisodeReplay(
        episode=index,
        agent_error=np.linalg.norm(sim[:, :2] - rec[:, :2], axis=1),
        block_error=np.linalg.norm(sim[:, 2:4] - rec[:, 2:4], axis=1),
        angle_error=_angle_diff_deg(sim[:, 4], rec[:, 4]),
        image_mae=np.array(maes) if images else None,
        final_coverage_sim=float(info["coverage"]),
        final_coverage_recorded=recorded_coverage,
    )


def summarize(results: list[EpisodeReplay], coverage_tolerance: float = 0.02) -> dict:
    """Median and 95th percentile over all steps of all episodes, and the final-coverage agreement."""

    def dist(name):
        values = np.concatenate([getattr(r, name) for r in results])
        return {"median": float(np.median(values)), "p95": float(np.percentile(values, 95)), "max": float(values.max())}

    summary = {
        "episodes": len(results),
        "steps": int(sum(len(r.agent_error) for r in results)),
        "agent_error_px": dist("agent_error"),
        "block_error_px": dist("block_error"),
        "block_angle_error_deg": dist("angle_error"),
        "coverage_within_tolerance": int(
            sum(abs(r.final_coverage_sim - r.final_coverage_recorded) <= coverage_tolerance for r in results)
        ),
        "coverage_tolerance": coverage_tolerance,
    }
    if results and results[0].image_mae is not None:
        summary["image_mae"] = dist("image_mae")
    return summary


def format_summary(s: dict) -> str:
    rows = [f"replayed {s['episodes']} episodes, {s['steps']} steps"]
    rows.append(f"{'':24s}{'median':>10s}{'p95':>10s}{'max':>10s}")
    for key, label in (
        ("agent_error_px", "agent position (px)"),
        ("block_error_px", "block position (px)"),
        ("block_angle_error_deg", "block angle (deg)"),
        ("image_mae", "image MAE (0..255)"),
    ):
        if key in s:
            d = s[key]
            rows.append(f"{label:24s}{d['median']:10.3f}{d['p95']:10.3f}{d['max']:10.3f}")
    rows.append(
        f"final coverage within {s['coverage_tolerance']}: {s['coverage_within_tolerance']}/{s['episodes']} episodes"
    )
    return "\n".join(rows)


def replay_dataset(path: str, episodes: int | None = None, images: bool = True, progress: bool = True):
    """Replay the first `episodes` (all by default) episodes of a Push-T replay buffer."""
    rb = ReplayBuffer.open(path)
    keys = ["state", "action"] + (["img"] if images else [])
    missing = [k for k in keys if k not in rb.keys]
    if missing:
        raise DataError(f"{path}: replay needs data keys {keys}; missing {missing} (has {rb.keys})")
    n = rb.n_episodes if episodes is None else min(episodes, rb.n_episodes)
    env = PushTEnv(obs_type="image" if images else "state", max_episode_steps=None)
    results = [
        replay_episode(env, rb.get_episode(i, keys), i, images=images)
        for i in tqdm(range(n), desc="replay", unit="episode", disable=not progress)
    ]
    return results


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


def _main(argv: list[str]) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="Push-T replay buffer (.zip or .zarr directory)")
    parser.add_argument("--episodes", type=int, default=None, help="replay only the first N episodes")
    parser.add_argument("--no-images", action="store_true", help="skip rendering and image comparison")
    parser.add_argument("--json", default=None, help="also write the summary and per-episode figures here")
    args = parser.parse_args(argv)

    import pymunk

    results = replay_dataset(args.dataset, args.episodes, images=not args.no_images)
    summary = summarize(results)
    summary["pymunk"] = pymunk.version
    print(f"pymunk {pymunk.version}")
    print(format_summary(summary))
    if args.json:
        per_episode = []
        for r in results:
            d = asdict(r)
            for k in ("agent_error", "block_error", "angle_error", "image_mae"):
                d[k] = None if d[k] is None else float(np.max(d[k]))
            per_episode.append(d)
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "per_episode_max": per_episode}, f, indent=1)
    return 0 if math.isfinite(summary["block_error_px"]["median"]) else 1


if __name__ == "__main__":
    sys.exit(main())
