"""Push-T environment steps per second: ours against gym-pusht (LeRobot's package), in one run.

    .venv/bin/pip install --no-deps gym-pusht==0.1.8     # the peer (its opencv-python dep is not needed)
    .venv/bin/python bench/bench_env.py [--seconds 5] [--repeats 3]

Both environments step the same seeded random actions, resetting when an episode ends (300 steps or
success), for state observations and for 96x96 image observations (plus agent position). Each figure is
the median over `--repeats` timed runs; the last column is ours / gym-pusht. Without gym-pusht (or when
its environment cannot be built) the script says so and measures ours only ("-" in its columns).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import numpy as np  # noqa: E402


def steps_per_second(env, seconds: float, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    actions = rng.uniform(50, 450, size=(4096, 2))
    env.reset(seed=seed)
    n, start = 0, time.perf_counter()
    while True:
        _, _, terminated, truncated, _ = env.step(actions[n % len(actions)])
        n += 1
        if terminated or truncated:
            env.reset()
        if n % 64 == 0 and time.perf_counter() - start >= seconds:
            return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import gymnasium as gym

    import envs.pusht  # noqa: F401  (registers PushT-v0)

    try:
        import gym_pusht  # noqa: F401
    except ImportError as e:
        gym_pusht = None
        print(f"note: gym-pusht is not installed ({e}); measuring ours only. For the comparison: "
              "`.venv/bin/pip install --no-deps gym-pusht==0.1.8`")

    cases = [("state", "state", "state"), ("image 96x96", "image", "pixels_agent_pos")]
    print(f"{'observation':14s}{'ours (steps/s)':>16s}{'gym-pusht':>12s}{'ratio':>8s}")
    for label, ours_type, peer_type in cases:
        ours = gym.make("PushT-v0", obs_type=ours_type)  # same gymnasium wrappers as the peer
        ours_rate = statistics.median(steps_per_second(ours, args.seconds) for _ in range(args.repeats))
        peer = None
        if gym_pusht is not None:
            try:
                peer = gym.make("gym_pusht/PushT-v0", obs_type=peer_type, max_episode_steps=300)
            except (ImportError, gym.error.Error) as e:  # installed with --no-deps: a dependency may be missing
                print(f"note: gym-pusht is installed but its {peer_type!r} environment cannot be built "
                      f"({type(e).__name__}: {e}); measuring ours only")
        if peer is not None:
            peer_rate = statistics.median(steps_per_second(peer, args.seconds) for _ in range(args.repeats))
            print(f"{label:14s}{ours_rate:16.0f}{peer_rate:12.0f}{ours_rate / peer_rate:7.2f}x")
        else:
            print(f"{label:14s}{ours_rate:16.0f}{'-':>12s}{'-':>8s}")


if __name__ == "__main__":
    main()
