"""Block Pushing (Implicit BC's benchmark, the reference's multimodal variant) in pybullet, as a gymnasium env.

A rod-shaped pusher, held upright at a fixed height, pushes two 4 cm cubes into two 12 cm target zones on a table.
Either block may go to either target: the task is multimodal (four block-to-target orders solve it).

    observation  (16,) float32: block xy, block yaw, block2 xy, block2 yaw, effector xy, effector target xy,
                 target xy, target yaw, target2 xy, target2 yaw (metres, radians; x forward, y left)
    action       (2,) float: a delta (dx, dy) added to the effector's *target* position, each clipped to
                 [-0.1, 0.1]; the target is clipped to the workspace x in [0.15, 0.7], y in [-0.5, 0.5]
    step         24 pybullet steps at 240 Hz (10 Hz control); the pusher follows its target through a
                 force-limited constraint whose pivot moves from the old target to the new one over the 24 steps,
                 so the pusher lags the target (by up to one step), as the original's arm does
    reward       0.49 the first time any block is within 0.05 m of any target's centre; 0.51 when the two
                 blocks are each within 0.05 m of a different target, which ends the episode (terminated)
    info         is_success (both blocks placed), blocks_in_targets (0..2), return (the episode's reward so far)
    scores       p1 = episode return > 0.4 (one block placed), p2 = > 0.9 (both); evaluation: 350 steps

Reset (seeded, reproducible): the effector target at (0.3, -0.4), the pusher settled there for 100 simulation
steps; two blocks at x = 0.4 +- 0.1, y = -0.2 +- 0.15, yaw in [0, pi), drawn again until 0.1 m apart; two
targets at x = 0.4 -+ 0.12 (which one is left is drawn at random), y = 0.2, jittered by up to 1 cm and 0.05 rad.
`options={"reset_to_state": {...}}` starts from given block and target poses (tests, replays).

Where this differs from the original on purpose: the pusher is a free rod moved by a constraint, not an xArm6
driven through inverse kinematics (the same action, observation and reward, ~10x cheaper to simulate, no arm links
that could touch the blocks); the frames of `render()` are drawn top-down in 2-D (no OpenGL needed).
NaN, infinite, boolean or wrongly shaped actions raise `common.EnvError`, naming the value and what was expected.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from common import EnvError

SIM_HZ, CONTROL_HZ = 240, 10
SUBSTEPS = SIM_HZ // CONTROL_HZ
WORKSPACE = ((0.15, 0.7), (-0.5, 0.5))  # x, y bounds of the effector target
MAX_DELTA = 0.1
EFFECTOR_START = (0.3, -0.4)
BLOCK_HALF = 0.02  # 4 cm cubes
BLOCK_MASS, BLOCK_FRICTION = 0.01, 1.0
TARGET_HALF = 0.06  # 12 cm zones (drawn only: no collision)
TARGET_RADIUS = 0.05  # a block within this distance of a target's centre is in it
BLOCK_MIN_SEPARATION = 0.1
PUSHER_RADIUS, PUSHER_HEIGHT = 0.01, 0.06  # the rod: its bottom 5 mm above the table, its top at 6.5 cm
PUSHER_Z = 0.005 + PUSHER_HEIGHT / 2
PUSHER_MASS, PUSHER_MAX_FORCE = 0.2, 20.0
FIRST_REWARD, BOTH_REWARD = 0.49, 0.51
P_THRESHOLDS = {"p1": 0.4, "p2": 0.9}  # on the episode return


@contextlib.contextmanager
def quiet_stdout():
    """File descriptors 1 and 2 pointed at /dev/null for the block (C code's printf, which sys.stdout cannot catch;
    Python exceptions still propagate and are printed after)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


def yaw_of(quaternion) -> float:
    x, y, z, w = quaternion
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


class BlockPushEnv(gym.Env):
    """Two blocks, two targets, one pusher (module docstring). `render()` gives (render_size, render_size, 3) uint8.

    Args:
        render_mode: "rgb_array" (or None).
        render_size: side of the frames `render()` returns.
        max_episode_steps: truncate after this many steps (None: never; gymnasium.make's TimeLimit does it, 350).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}

    def __init__(self, render_mode: str | None = "rgb_array", render_size: int = 96,
                 max_episode_steps: int | None = 350):
        super().__init__()
        if render_mode not in (None, "rgb_array"):
            raise EnvError(f"unknown render_mode {render_mode!r}; valid: 'rgb_array' or None")
        if not isinstance(render_size, (int, np.integer)) or render_size < 8:
            raise EnvError(f"render_size must be an integer >= 8, got {render_size!r}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise EnvError(f"max_episode_steps must be a positive integer or None, got {max_episode_steps!r}")
        self.render_mode, self.render_size, self.max_episode_steps = render_mode, int(render_size), max_episode_steps
        self.action_space = spaces.Box(-MAX_DELTA, MAX_DELTA, shape=(2,), dtype=np.float64)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(16,), dtype=np.float32)
        self._client = None
        self._targets = np.zeros((2, 3))  # (x, y, yaw) of each target

    # ------------------------------------------------------------------------------------------ simulation
    def _build(self) -> None:
        if self._client is not None:
            self._client.resetSimulation()
        else:
            with quiet_stdout():  # pybullet's C code prints its build time and "argv[0]=" on import and connect
                import pybullet
                from pybullet_utils.bullet_client import BulletClient

                self._client = BulletClient(connection_mode=pybullet.DIRECT)
        import pybullet_data

        p = self._client
        p.setAdditionalSearchPath(pybullet_data.getDataPath())
        p.setTimeStep(1.0 / SIM_HZ)
        p.setGravity(0, 0, -9.8)
        p.loadURDF("plane.urdf")
        box = p.createCollisionShape(p.GEOM_BOX, halfExtents=[BLOCK_HALF] * 3)
        self._blocks = [p.createMultiBody(BLOCK_MASS, box, basePosition=[0.4, 0.1 * i, BLOCK_HALF]) for i in range(2)]
        for block in self._blocks:
            p.changeDynamics(block, -1, lateralFriction=BLOCK_FRICTION)
        rod = p.createCollisionShape(p.GEOM_CYLINDER, radius=PUSHER_RADIUS, height=PUSHER_HEIGHT)
        self._pusher = p.createMultiBody(PUSHER_MASS, rod, basePosition=[*EFFECTOR_START, PUSHER_Z])
        # Held upright at its height, pulled towards the effector target with at most PUSHER_MAX_FORCE.
        self._hold = p.createConstraint(self._pusher, -1, -1, -1, p.JOINT_FIXED, [0, 0, 0], [0, 0, 0],
                                        [*EFFECTOR_START, PUSHER_Z])
        p.changeConstraint(self._hold, maxForce=PUSHER_MAX_FORCE)

    def _place(self, block: int, x: float, y: float, yaw: float) -> None:
        self._client.resetBasePositionAndOrientation(self._blocks[block], [x, y, BLOCK_HALF],
                                                     self._client.getQuaternionFromEuler([0, 0, yaw]))

    def _simulate(self, steps: int, start: tuple[float, float] | None = None) -> None:
        """`steps` simulation steps, the constraint's pivot moved in a straight line from `start` (default: the
        effector target) to the effector target: the pusher moves at a steady speed, as an arm following an
        interpolated path does, instead of jumping (a jump launches a 10 g block like a bat)."""
        p = self._client
        start = np.array(start if start is not None else self._effector_target)
        end = np.array(self._effector_target)
        for i in range(steps):
            x, y = start + (end - start) * (i + 1) / steps
            p.changeConstraint(self._hold, [x, y, PUSHER_Z], maxForce=PUSHER_MAX_FORCE)
            p.stepSimulation()

    def block_poses(self) -> np.ndarray:
        """(2, 3): x, y, yaw of each block."""
        out = []
        for block in self._blocks:
            pos, quat = self._client.getBasePositionAndOrientation(block)
            out.append((pos[0], pos[1], yaw_of(quat)))
        return np.array(out)

    def effector(self) -> np.ndarray:
        return np.array(self._client.getBasePositionAndOrientation(self._pusher)[0][:2])

    @property
    def targets(self) -> np.ndarray:
        """(2, 3): x, y, yaw of each target."""
        return self._targets.copy()

    @property
    def effector_target(self) -> np.ndarray:
        return np.array(self._effector_target)

    # ---------------------------------------------------------------------------------------------- reset
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode (module docstring). `options={"reset_to_state": {"blocks": [[x, y, yaw], [x, y, yaw]],
        "targets": [[x, y, yaw], [x, y, yaw]]}}` (optional "effector": [x, y]) starts from that state."""
        super().reset(seed=seed)
        self._build()
        rng = self.np_random
        state = (options or {}).get("reset_to_state")
        if state is not None:
            blocks, targets, effector = self._check_state(state)
        else:
            while True:
                blocks = np.column_stack([0.4 + rng.uniform(-0.1, 0.1, 2), -0.2 + rng.uniform(-0.15, 0.15, 2),
                                          rng.uniform(0, np.pi, 2)])
                if np.linalg.norm(blocks[0, :2] - blocks[1, :2]) >= BLOCK_MIN_SEPARATION:
                    break
            side = 1.0 if rng.uniform() < 0.5 else -1.0
            targets = np.array([[0.4 - side * 0.12, 0.2, 0.0], [0.4 + side * 0.12, 0.2, 0.0]])
            targets[:, :2] += rng.uniform(-0.01, 0.01, (2, 2))
            targets[:, 2] += rng.uniform(-0.05, 0.05, 2)
            effector = np.array(EFFECTOR_START)
        self._targets = targets
        self._effector_target = tuple(float(v) for v in effector)
        self._client.resetBasePositionAndOrientation(self._pusher, [*self._effector_target, PUSHER_Z], [0, 0, 0, 1])
        for i in range(2):
            self._place(i, *blocks[i])
        self._simulate(100)  # settle
        self._first_rewarded, self._return, self._steps = False, 0.0, 0
        return self._obs(), self._info(self._placed())

    def _check_state(self, state) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        expected = ("options['reset_to_state'] must be {'blocks': [[x, y, yaw], [x, y, yaw]], 'targets': [[x, y, yaw], "
                    f"[x, y, yaw]], optional 'effector': [x, y]}} with finite numbers; got {state!r}")
        try:
            blocks = np.asarray(state["blocks"], dtype=np.float64)
            targets = np.asarray(state["targets"], dtype=np.float64)
            effector = np.asarray(state.get("effector", EFFECTOR_START), dtype=np.float64)
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise EnvError(expected) from e
        if blocks.shape != (2, 3) or targets.shape != (2, 3) or effector.shape != (2,) or not all(
                np.isfinite(a).all() for a in (blocks, targets, effector)):
            raise EnvError(expected)
        return blocks, targets, effector

    # ----------------------------------------------------------------------------------------------- step
    def _check_action(self, action) -> np.ndarray:
        try:
            if np.asarray(action).dtype == bool:
                raise EnvError("booleans")
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise EnvError(f"action must be 2 numbers (effector target delta dx, dy in metres), got {action!r}") from e
        if a.shape != (2,):
            raise EnvError(f"action must have shape (2,) (effector target delta dx, dy in metres), got shape "
                           f"{a.shape}")
        if not np.all(np.isfinite(a)):
            raise EnvError(f"action must be finite, got {a.tolist()}")
        return np.clip(a, -MAX_DELTA, MAX_DELTA)  # as the action space: documented behaviour

    def _placed(self) -> list[int | None]:
        """For each block, the target it is in (None: none)."""
        blocks = self.block_poses()[:, :2]
        out = []
        for b in blocks:
            d = np.linalg.norm(self._targets[:, :2] - b, axis=1)
            out.append(int(d.argmin()) if d.min() <= TARGET_RADIUS else None)
        return out

    def step(self, action):
        if self._client is None:
            raise RuntimeError("call reset() before step()")
        delta = self._check_action(action)
        (x0, x1), (y0, y1) = WORKSPACE
        previous = tx, ty = self._effector_target
        self._effector_target = (float(np.clip(tx + delta[0], x0, x1)), float(np.clip(ty + delta[1], y0, y1)))
        self._simulate(SUBSTEPS, start=previous)
        placed = self._placed()
        reward = 0.0
        if not self._first_rewarded and any(p is not None for p in placed):
            self._first_rewarded, reward = True, FIRST_REWARD
        both = None not in placed and placed[0] != placed[1]
        if both:
            reward += BOTH_REWARD
        self._return += reward
        self._steps += 1
        truncated = self.max_episode_steps is not None and self._steps >= self.max_episode_steps
        return self._obs(), reward, both, truncated and not both, self._info(placed)

    def _obs(self) -> np.ndarray:
        blocks, targets = self.block_poses(), self._targets
        return np.concatenate([blocks[0], blocks[1], self.effector(), self._effector_target, targets[0],
                               targets[1]]).astype(np.float32)

    def _info(self, placed) -> dict:
        n = sum(p is not None for p in placed)
        return {"is_success": n == 2 and placed[0] != placed[1], "blocks_in_targets": n, "return": self._return}

    # ------------------------------------------------------------------------------------------ rendering
    def render(self) -> np.ndarray | None:
        """Top-down (render_size, render_size, 3) uint8: targets green, blocks red and blue, pusher black, its
        target a grey cross; the workspace x (forward) is drawn upwards, y (left) to the left."""
        if self.render_mode is None:
            return None
        if self._client is None:
            raise RuntimeError("call reset() before render()")
        from PIL import Image, ImageDraw

        size = self.render_size
        scale = 2  # drawn larger, then downsampled: smoother edges
        canvas = size * scale
        (x0, x1), (y0, y1) = (0.1, 0.75), (-0.55, 0.55)
        metres = max(x1 - x0, y1 - y0)

        pad = (metres - (x1 - x0)) / 2  # the shorter x range centred vertically

        def px(x, y):  # x up, y left
            return ((y1 - y) / metres * canvas, (x1 + pad - x) / metres * canvas)

        def square(cx, cy, yaw, half):
            c, s = math.cos(yaw), math.sin(yaw)
            return [px(cx + c * dx - s * dy, cy + s * dx + c * dy) for dx, dy in
                    ((-half, -half), (half, -half), (half, half), (-half, half))]

        image = Image.new("RGB", (canvas, canvas), (235, 235, 230))
        draw = ImageDraw.Draw(image)
        (wx0, wx1), (wy0, wy1) = WORKSPACE
        draw.rectangle([*px(wx1, wy1), *px(wx0, wy0)], outline=(180, 180, 175), width=scale)
        for tx, ty, tyaw in self._targets:
            draw.polygon(square(tx, ty, tyaw, TARGET_HALF), fill=(170, 220, 170), outline=(60, 150, 60))
        for (bx, by, byaw), colour in zip(self.block_poses(), ((210, 60, 60), (60, 90, 210))):
            draw.polygon(square(bx, by, byaw, BLOCK_HALF), fill=colour)
        r = PUSHER_RADIUS / metres * canvas
        ex, ey = px(*self.effector())
        draw.ellipse([ex - r, ey - r, ex + r, ey + r], fill=(20, 20, 20))
        gx, gy = px(*self._effector_target)
        draw.line([gx - r, gy, gx + r, gy], fill=(120, 120, 120), width=scale)
        draw.line([gx, gy - r, gx, gy + r], fill=(120, 120, 120), width=scale)
        return np.asarray(image.resize((size, size), Image.BILINEAR))

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.disconnect()
            except Exception:  # already gone (interpreter shutdown)
                pass
            self._client = None
