"""Record Push-T demonstrations by hand: push the T with the mouse in a pygame window.

    python -m demos.pusht_teleop --output data/pusht_human.zarr [--first-seed N]

As Diffusion Policy's `demo_pusht.py`: move the mouse onto the blue agent to take control, then push the T
onto the green goal. An episode ends, and is appended to the replay buffer, when the T covers the goal
(coverage > 0.95). Keys: R retries the episode (discarded), Space pauses, Q or closing the window quits.
Episode i starts from `reset(seed=first_seed + i)`; by default the seeds continue after the buffer's
episodes, so a session can be resumed. Control runs at 10 Hz.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import numpy as np  # noqa: E402
import pygame  # noqa: E402

from common import ArgumentParser, run_cli  # noqa: E402
from datasets import ReplayBuffer  # noqa: E402
from envs.pusht import PushTEnv  # noqa: E402

from .pusht import EpisodeRecorder  # noqa: E402

TAKE_CONTROL_RADIUS = 30.0  # the mouse must come this close to the agent to start pushing


class TeleopSession:
    """The recording loop, driven by pygame events; `step(events)` is one 10 Hz control tick.

    Tests drive it headless (SDL_VIDEODRIVER=dummy) by passing synthetic events.
    """

    def __init__(self, output: str | Path, first_seed: int | None = None, window: bool = True):
        output = Path(output)
        if output.exists():
            self.buffer = ReplayBuffer.open(output, mode="a")
        else:
            self.buffer = ReplayBuffer.create(output)
        self.seed = self.buffer.n_episodes if first_seed is None else first_seed
        self.env = PushTEnv(obs_type="image", render_size=512, max_episode_steps=None)
        self.screen = pygame.display.set_mode((512, 512)) if window else None
        if window:
            pygame.display.set_caption("Push-T teleop: mouse onto the agent to push; R retry, Space pause, Q quit")
        self.mouse: tuple[int, int] | None = None
        self.running, self.paused = True, False
        self.saved_episodes = 0
        self._start_episode()

    def _start_episode(self) -> None:
        self.obs, self.info = self.env.reset(seed=self.seed)
        self.recorder = EpisodeRecorder()
        self.in_control = False

    def _handle(self, event) -> None:
        if event.type == pygame.QUIT:
            self.running = False
        elif event.type == pygame.MOUSEMOTION:
            self.mouse = tuple(event.pos)
        elif event.type == pygame.KEYDOWN:
            if event.key == pygame.K_q:
                self.running = False
            elif event.key == pygame.K_r:
                self._start_episode()  # discard this attempt, same seed
            elif event.key == pygame.K_SPACE:
                self.paused = not self.paused

    def step(self, events) -> None:
        """One control tick: apply the events, then (unless paused) move the agent to the mouse and record."""
        for event in events:
            self._handle(event)
        if not self.running or self.paused or self.mouse is None:
            self._show()
            return
        target = np.asarray(self.mouse, dtype=np.float64)
        if not self.in_control:
            self.in_control = np.linalg.norm(target - self.env.get_state()[:2]) < TAKE_CONTROL_RADIUS
        if self.in_control:
            self.recorder.record(self.env, self.obs["image"], target, self.info["n_contacts"])
            self.obs, _, terminated, _, self.info = self.env.step(target)
            if terminated:
                self.buffer.add_episode(self.recorder.episode())
                self.saved_episodes += 1
                print(f"saved episode {self.buffer.n_episodes - 1} (seed {self.seed}, {len(self.recorder)} steps)")
                self.seed += 1
                self._start_episode()
        self._show()

    def _show(self) -> None:
        if self.screen is not None:
            frame = self.env.render()
            self.screen.blit(pygame.surfarray.make_surface(frame.swapaxes(0, 1)), (0, 0))
            pygame.display.flip()

    def close(self) -> None:
        self.buffer.close()


def run_teleop(output: str | Path, first_seed: int | None = None) -> int:
    """The interactive loop; returns the number of episodes saved."""
    pygame.init()
    session = TeleopSession(output, first_seed)
    clock = pygame.time.Clock()
    try:
        while session.running:
            session.step(pygame.event.get())
            clock.tick(10)
    finally:
        session.close()
        pygame.quit()
    print(f"{session.saved_episodes} episodes saved to {output} ({session.buffer.n_episodes} in total)")
    return session.saved_episodes


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


def _main(argv: list[str]) -> None:
    parser = ArgumentParser(description="Record Push-T demonstrations with the mouse (pygame window).")
    parser.add_argument("--output", required=True, help="replay buffer to create or append to (.zarr directory)")
    parser.add_argument("--first-seed", type=int, default=None, help="default: continue after the buffer's episodes")
    args = parser.parse_args(argv)
    run_teleop(args.output, first_seed=args.first_seed)


if __name__ == "__main__":
    raise SystemExit(main())
