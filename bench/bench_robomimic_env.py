"""robomimic environment speed: our RobomimicEnv against robomimic's own env (robosuite's defaults), same run.

Steps per second including resets (episodes of --steps steps, random actions), on Lift:
- low-dim observations;
- two 84x84 cameras (agentview, robot0_eye_in_hand) + low-dim.
The peer is what a robomimic / Diffusion Policy user gets: `EnvUtils.create_env_from_metadata(env_meta,
use_image_obs=...)` (robosuite's defaults: hard reset rebuilding the simulator and renderer on every reset,
shadows, skybox and reflections on). Ours: envs.robomimic.RobomimicEnv from the same env_meta, with and without
`fast_render` (reflections off: the only setting that changes pixels, measured here as mean |difference|).

    MUJOCO_GL=egl python bench/bench_robomimic_env.py [--episodes 3 --steps 100]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from envs.robomimic.env import RobomimicEnv, _robomimic, standard_env_meta  # noqa: E402

CAMERAS = ("agentview", "robot0_eye_in_hand")
LOW_DIM = ["object", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"]


def rate(reset, step, episodes: int, steps: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    reset(0)  # warm-up (first renders compile shaders)
    start = time.perf_counter()
    for e in range(episodes):
        reset(e + 1)
        for _ in range(steps):
            step(rng.uniform(-1, 1, 7))
    return episodes * steps / (time.perf_counter() - start)


def peer_env(env_meta: dict, images: bool):
    _, env_utils = _robomimic()
    with contextlib.redirect_stdout(io.StringIO()):
        return env_utils.create_env_from_metadata(env_meta, render=False, render_offscreen=images,
                                                  use_image_obs=images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    rows = []
    for images in (False, True):
        meta = standard_env_meta("Lift", cameras=CAMERAS if images else (), fast_render=False)
        keys = LOW_DIM + ([f"{c}_image" for c in CAMERAS] if images else [])
        peer = peer_env(meta, images)

        def peer_reset(seed):
            np.random.seed(seed)
            return peer.reset()

        peer_rate = rate(peer_reset, peer.step, args.episodes, args.steps)
        ours_rates, frames = {}, {}
        for fast in (False, True) if images else (False,):
            env = RobomimicEnv({**meta, "fast_render": fast}, keys)
            ours_rates[fast] = rate(lambda s: env.reset(seed=s), env.step, args.episodes, args.steps)
            frames[fast] = env.reset(seed=123)[0]
            env.close()
        kind = "2 cameras 84x84" if images else "low-dim"
        rows.append((kind, "robomimic env (robosuite defaults)", peer_rate, 1.0))
        rows.append((kind, "ours (robosuite render settings)", ours_rates[False], ours_rates[False] / peer_rate))
        if images:
            rows.append((kind, "ours, fast_render (no reflections)", ours_rates[True], ours_rates[True] / peer_rate))
            for c in CAMERAS:
                a, b = frames[False][f"{c}_image"].astype(int), frames[True][f"{c}_image"].astype(int)
                print(f"fast_render pixel change, {c}: mean |diff| {np.abs(a - b).mean():.3f} / 255, max "
                      f"{np.abs(a - b).max()}")
            np.random.seed(123)
            peer_obs = peer.reset()
            for c in CAMERAS:
                peer_image = np.round(np.moveaxis(peer_obs[f"{c}_image"], 0, -1) * 255)  # robomimic: CHW in [0, 1]
                diff = np.abs(frames[False][f"{c}_image"].astype(int) - peer_image.astype(int))
                print(f"ours vs robomimic env, same seed, {c}: mean |diff| {diff.mean():.3f} / 255")
    print(f"\nLift, {args.episodes} episodes x {args.steps} steps with resets, random actions")
    print(f"{'observations':<18} {'environment':<38} {'steps/s':>9} {'ratio':>7}")
    for kind, name, r, ratio in rows:
        print(f"{kind:<18} {name:<38} {r:9.1f} {ratio:6.2f}x")


if __name__ == "__main__":
    main()
