"""Roll out the scripted demonstrator on Push-T and save a video.

    python -m envs.pusht [--seed 100000] [--episodes 1] [--video outputs/pusht_demo.mp4] [--size 256]
"""


import numpy as np
from tqdm import tqdm

from common import ArgumentParser, ConfigError, run_cli
from envs.video import save_video

from .demonstrator import PushTDemonstrator
from .env import PushTEnv


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


def _main(argv: list[str]) -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=100000, help="first seed (100000..100049: evaluation set)")
    parser.add_argument("--episodes", type=int, default=1)
    parser.add_argument("--video", default="outputs/pusht_demo.mp4")
    parser.add_argument("--size", type=int, default=256, help="video frame size in pixels")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        raise ConfigError(f"--episodes {args.episodes}: expected at least 1 episode")
    if args.size < 16:
        raise ConfigError(f"--size {args.size}: expected a frame size of at least 16 pixels")

    env = PushTEnv(obs_type="state", render_size=args.size)
    demonstrator = PushTDemonstrator(seed=args.seed)
    frames, results = [], []
    for seed in tqdm(range(args.seed, args.seed + args.episodes), desc="episodes", unit="episode"):
        env.reset(seed=seed)
        demonstrator.reset()
        frames.append(env.render())
        max_reward, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, info = env.step(demonstrator.act(env))
            frames.append(env.render())
            max_reward, done = max(max_reward, reward), terminated or truncated
        results.append((seed, max_reward, info["is_success"], env._elapsed_steps))
    for seed, max_reward, success, steps in results:
        print(f"seed {seed}: max reward {max_reward:.3f}, success {success}, {steps} steps")
    print(f"mean max reward {np.mean([r[1] for r in results]):.3f}")
    print(f"video: {save_video(frames, args.video)}")


if __name__ == "__main__":
    raise SystemExit(main())
