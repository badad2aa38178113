"""Push-T: push a T-shaped block onto a fixed goal pose with a circular agent.

The simulation reproduces the environment that Diffusion Policy's published demonstrations and numbers
come from (Chi et al. 2023, `diffusion_policy/env/pusht/pusht_env.py`): a 512x512 walled workspace, a
kinematic circular agent (radius 15) driven towards the action by a PD controller (kp 100, kv 20) at
100 Hz physics / 10 Hz control, the reference T (including its quirks: centre of gravity at (0, 45) in
body coordinates, both boxes' inertia computed from the top bar, zero shape friction) and the goal pose
(256, 256, pi/4). `reset(seed=s)` draws the initial state from a legacy `numpy.random.RandomState(s)`
exactly as the reference does, so seeds 100000..100049 are the paper's evaluation set.

Observations (`obs_type`):
    "state":     (5,) float64  agent x, agent y, block x, block y, block angle in [0, 2*pi)
    "keypoints": (20,) float64 the T's 9 keypoints (x, y) then the agent position, the reference layout
    "image":     {"image": (S, S, 3) uint8 RGB, "agent_pos": (2,) float64}, S = image_size (96)

Action: (2,) absolute target position of the agent in pixels. Values outside [0, 512] are clipped to the
workspace; NaN, infinite, boolean or wrongly shaped actions raise `common.EnvError` (a ValueError, and the
project's error for bad input, so entry points print it on one line), as do bad `reset_to_state` options and
constructor arguments.

Reward: clip(coverage / 0.95, 0, 1), coverage = area(T intersect goal) / area(goal).
`terminated` when coverage > 0.95 (`info["is_success"]`); `truncated` after `max_episode_steps` (300).
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pymunk
import shapely
from gymnasium import spaces

from common import EnvError

from .render import WINDOW_SIZE, PushTRenderer

OBS_TYPES = ("state", "keypoints", "image")

SIM_HZ = 100
CONTROL_HZ = 10
SUBSTEPS = SIM_HZ // CONTROL_HZ
K_P, K_V = 100.0, 20.0
AGENT_RADIUS = 15.0
GOAL_POSE = (256.0, 256.0, math.pi / 4)
SUCCESS_THRESHOLD = 0.95

# The T: a 120x30 bar and a 30x90 stem, in body coordinates (scale 30, length 4), as the reference.
T_BAR = ((-60.0, 30.0), (60.0, 30.0), (60.0, 0.0), (-60.0, 0.0))
T_STEM = ((-15.0, 30.0), (-15.0, 120.0), (15.0, 120.0), (15.0, 30.0))
T_BOXES = (np.array(T_BAR), np.array(T_STEM))
WALLS = (((5, 506), (5, 5), 2), ((5, 5), (506, 5), 2), ((506, 5), (506, 506), 2), ((5, 506), (506, 506), 2))

# The reference's 9 keypoints of the T in body coordinates (furthest-point samples of the rendered T,
# seed 0, plus a small random shift). Recovered from the published data, where every recorded keypoint
# equals R(angle) @ local + block position to float32 precision.
T_KEYPOINTS = np.array(
    [
        [9.2698, 90.0410],
        [-60.9835, -1.1867],
        [60.9128, -1.3934],
        [-0.2705, 25.5436],
        [-14.0649, 122.8159],
        [39.0027, 32.8574],
        [-39.9664, 32.7297],
        [-16.8243, 62.8632],
        [23.5415, -1.7003],
    ]
)


def _world(local: np.ndarray, x: float, y: float, angle: float) -> np.ndarray:
    """Body-frame points (N, 2) to world coordinates for a body at (x, y, angle)."""
    c, s = math.cos(angle), math.sin(angle)
    return local @ np.array([[c, s], [-s, c]]) + (x, y)


class _ContactSegments(pymunk.SpaceDebugDrawOptions):
    """Collects the contact-point segments pymunk's debug draw would paint (the reference shows them)."""

    def __init__(self):
        super().__init__()
        self.flags = pymunk.SpaceDebugDrawOptions.DRAW_COLLISION_POINTS
        self.segments: list[tuple[tuple, tuple]] = []

    def draw_segment(self, a, b, color) -> None:
        self.segments.append((a, b))


class PushTEnv(gym.Env):
    """The reference Push-T as a gymnasium environment (see the module docstring for spaces and rules).

    Args:
        obs_type: "state", "keypoints" or "image".
        render_mode: "rgb_array" (or None); `render()` returns (render_size, render_size, 3) uint8 with the
            latest action target drawn as a red cross.
        render_size: side of the frames `render()` returns (96 = the observation size; 256 or 512 for videos).
        image_size: side of the image observation.
        max_episode_steps: truncate after this many steps (None: never).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}

    def __init__(
        self,
        obs_type: str = "state",
        render_mode: str | None = "rgb_array",
        render_size: int = 96,
        image_size: int = 96,
        max_episode_steps: int | None = 300,
    ):
        super().__init__()
        if obs_type not in OBS_TYPES:
            raise EnvError(f"unknown obs_type {obs_type!r}; valid obs_type values are {', '.join(OBS_TYPES)}")
        if render_mode not in (None, "rgb_array"):
            raise EnvError(f"unknown render_mode {render_mode!r}; valid: 'rgb_array' or None")
        for name, value in (("render_size", render_size), ("image_size", image_size)):
            if not isinstance(value, (int, np.integer)) or value < 8:
                raise EnvError(f"{name} must be an integer >= 8, got {value!r}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise EnvError(f"max_episode_steps must be a positive integer or None, got {max_episode_steps!r}")
        self.obs_type = obs_type
        self.render_mode = render_mode
        self.render_size = int(render_size)
        self.image_size = int(image_size)
        self.max_episode_steps = max_episode_steps

        ws = float(WINDOW_SIZE)
        self.action_space = spaces.Box(low=0.0, high=ws, shape=(2,), dtype=np.float64)
        pos = spaces.Box(low=0.0, high=ws, shape=(2,), dtype=np.float64)
        if obs_type == "state":
            self.observation_space = spaces.Box(
                low=np.zeros(5), high=np.array([ws, ws, ws, ws, 2 * np.pi]), dtype=np.float64
            )
        elif obs_type == "keypoints":
            # Keypoints of a T pushed against a wall can lie slightly outside the workspace.
            self.observation_space = spaces.Box(low=-ws, high=2 * ws, shape=(20,), dtype=np.float64)
        else:
            self.observation_space = spaces.Dict(
                {
                    "image": spaces.Box(0, 255, shape=(self.image_size, self.image_size, 3), dtype=np.uint8),
                    "agent_pos": pos,
                }
            )

        goal_boxes = [_world(box, *GOAL_POSE) for box in T_BOXES]
        self._goal = shapely.union_all(shapely.polygons(goal_boxes))
        shapely.prepare(self._goal)
        self._goal_area = self._goal.area
        self._renderer: PushTRenderer | None = None
        self._contacts = _ContactSegments()
        self._goal_boxes = goal_boxes
        self._legacy_rng: np.random.RandomState | None = None
        self._space: pymunk.Space | None = None
        self._latest_action: tuple[float, float] | None = None
        self._n_contact_points = 0
        self._elapsed_steps = 0

    # ---------------------------------------------------------------- simulation

    def _build_space(self) -> None:
        """A fresh pymunk space, bodies added in the reference's order (the solver's order depends on it)."""
        space = pymunk.Space()
        space.gravity = (0, 0)
        space.damping = 0.0
        space.add(*[pymunk.Segment(space.static_body, a, b, r) for a, b, r in WALLS])

        agent = pymunk.Body(body_type=pymunk.Body.KINEMATIC)
        agent.position = (256, 400)
        space.add(agent, pymunk.Circle(agent, AGENT_RADIUS))

        # The reference computes both boxes' inertia from the bar: kept, it changes how the T spins.
        inertia = 2 * pymunk.moment_for_poly(1, vertices=T_BAR)
        block = pymunk.Body(1, inertia)
        bar, stem = pymunk.Poly(block, T_BAR), pymunk.Poly(block, T_STEM)
        block.center_of_gravity = (bar.center_of_gravity + stem.center_of_gravity) / 2
        block.position = (256, 300)
        space.add(block, bar, stem)

        if hasattr(space, "on_collision"):  # pymunk 7
            space.on_collision(post_solve=self._count_contacts)
        else:  # pymunk 6
            space.add_collision_handler(0, 0).post_solve = self._count_contacts
        self._space, self._agent, self._block = space, agent, block

    def _count_contacts(self, arbiter, space, data) -> None:
        self._n_contact_points += len(arbiter.contact_point_set.points)

    def _set_state(self, state) -> None:
        self._agent.position = (float(state[0]), float(state[1]))
        # Angle first: pymunk rotates a body about its centre of gravity, which is not the T's origin, so
        # setting the angle after the position (as the reference does) would move the block.
        self._block.angle = float(state[4])
        self._block.position = (float(state[2]), float(state[3]))
        self._space.step(1.0 / SIM_HZ)  # one physics step lets contacts take effect, as the reference

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode. `options={"reset_to_state": [ax, ay, bx, by, angle]}` starts from that state;
        otherwise the state is drawn as the reference draws it from a legacy RandomState(seed)."""
        super().reset(seed=seed)
        if seed is not None or self._legacy_rng is None:
            self._legacy_rng = np.random.RandomState(
                seed if seed is not None else int(self.np_random.integers(2**31))
            )
        options = options or {}
        state = options.get("reset_to_state")
        if state is not None:
            expected = ("options['reset_to_state'] must be 5 finite numbers (agent x, agent y, block x, block y, "
                        f"block angle), positions inside the {WINDOW_SIZE}x{WINDOW_SIZE} workspace; got {state!r}")
            try:
                state = np.asarray(state, dtype=np.float64)
            except (TypeError, ValueError) as e:
                raise EnvError(expected) from e
            if state.shape != (5,) or not np.all(np.isfinite(state)):
                raise EnvError(expected)
            if not np.all((state[:4] >= 0) & (state[:4] <= WINDOW_SIZE)):
                raise EnvError(expected)
        else:
            rs = self._legacy_rng
            state = np.array(
                [
                    rs.randint(50, 450),
                    rs.randint(50, 450),
                    rs.randint(100, 400),
                    rs.randint(100, 400),
                    rs.randn() * 2 * np.pi - np.pi,
                ],
                dtype=np.float64,
            )
        self._build_space()
        self._n_contact_points = 0
        self._latest_action = None
        self._elapsed_steps = 0
        self._set_state(state)
        coverage = self._coverage()
        info = self._info(coverage)
        return self._obs(), info

    def _check_action(self, action) -> tuple[float, float]:
        try:
            if np.asarray(action).dtype == bool:  # True/False would silently become pixel 1/0
                raise EnvError("booleans")
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise EnvError(f"action must be 2 numbers (target x, y in pixels), got {action!r}") from e
        if a.shape != (2,):
            raise EnvError(f"action must have shape (2,) (target x, y in pixels), got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise EnvError(f"action must be finite, got {a.tolist()}")
        # Targets outside the workspace are clipped to it (documented behaviour).
        return min(max(float(a[0]), 0.0), float(WINDOW_SIZE)), min(max(float(a[1]), 0.0), float(WINDOW_SIZE))

    def step(self, action):
        if self._space is None:
            raise RuntimeError("call reset() before step()")
        ax, ay = self._check_action(action)
        self._latest_action = (ax, ay)
        self._n_contact_points = 0
        agent, space, dt = self._agent, self._space, 1.0 / SIM_HZ
        vx, vy = agent.velocity
        for _ in range(SUBSTEPS):
            # PD control towards the target, in the reference's float order.
            px, py = agent.position
            vx = vx + (K_P * (ax - px) + K_V * (0.0 - vx)) * dt
            vy = vy + (K_P * (ay - py) + K_V * (0.0 - vy)) * dt
            agent.velocity = (vx, vy)
            space.step(dt)
        self._elapsed_steps += 1

        coverage = self._coverage()
        reward = float(np.clip(coverage / SUCCESS_THRESHOLD, 0.0, 1.0))
        terminated = coverage > SUCCESS_THRESHOLD
        truncated = self.max_episode_steps is not None and self._elapsed_steps >= self.max_episode_steps
        return self._obs(), reward, bool(terminated), bool(truncated), self._info(coverage)

    # ---------------------------------------------------------------- observations

    def _block_boxes(self) -> list[np.ndarray]:
        x, y = self._block.position
        angle = self._block.angle
        return [_world(box, x, y, angle) for box in T_BOXES]

    def _coverage(self) -> float:
        # The T's two boxes do not overlap, so the covered area is the sum of each box's overlap.
        boxes = shapely.polygons(np.stack(self._block_boxes()))
        return float(shapely.area(shapely.intersection(self._goal, boxes)).sum() / self._goal_area)

    def get_state(self) -> np.ndarray:
        """(5,) agent x, agent y, block x, block y, block angle in [0, 2*pi)."""
        ax, ay = self._agent.position
        bx, by = self._block.position
        return np.array([ax, ay, bx, by, self._block.angle % (2 * np.pi)])

    def get_keypoints(self) -> np.ndarray:
        """(9, 2) world positions of the T's keypoints."""
        x, y = self._block.position
        return _world(T_KEYPOINTS, x, y, self._block.angle)

    def _obs(self):
        if self.obs_type == "state":
            return self.get_state()
        agent_pos = np.array(tuple(self._agent.position))
        if self.obs_type == "keypoints":
            return np.concatenate([self.get_keypoints().ravel(), agent_pos])
        self._draw()
        return {"image": self._renderer.frame(self.image_size), "agent_pos": agent_pos}

    def _info(self, coverage: float) -> dict:
        return {
            "coverage": coverage,
            "is_success": coverage > SUCCESS_THRESHOLD,
            "pos_agent": np.array(tuple(self._agent.position)),
            "vel_agent": np.array(tuple(self._agent.velocity)),
            "block_pose": np.array([*self._block.position, self._block.angle]),
            "goal_pose": np.array(GOAL_POSE),
            "n_contacts": int(math.ceil(self._n_contact_points / SUBSTEPS)),
        }

    # ---------------------------------------------------------------- rendering

    def _draw(self) -> None:
        if self._renderer is None:
            self._renderer = PushTRenderer(self._goal_boxes, WALLS)
        self._contacts.segments.clear()
        self._space.debug_draw(self._contacts)  # contact points only, in pymunk's own order
        self._renderer.draw(self._agent.position, AGENT_RADIUS, self._block_boxes(), self._contacts.segments)

    def render(self) -> np.ndarray | None:
        """(render_size, render_size, 3) uint8 RGB: goal, T, agent and the latest action target."""
        if self.render_mode is None:
            return None
        if self._space is None:
            raise RuntimeError("call reset() before render()")
        self._draw()
        return self._renderer.frame(self.render_size, action=self._latest_action)

    def close(self) -> None:
        self._renderer = None
        self._space = None
