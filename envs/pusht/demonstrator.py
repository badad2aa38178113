"""A scripted Push-T demonstrator: solves Push-T from any initial state without a human.

It repeats one primitive, a straight push: pick a point on the T's outline and push along the edge's
inward normal for a short distance. Which push comes next is decided by trying every candidate in a
scratch copy of the simulation (the same physics) and keeping the one that leaves the T closest to the goal
pose. The agent reaches the start of the chosen push by walking around the T at a safe distance, so it does
not disturb the block on the way. The result is a sequence of absolute target positions, the same actions
a person gives with the mouse.

    demo = PushTDemonstrator()
    obs, info = env.reset(seed=0)
    demo.reset()
    action = demo.act(env)          # reads the true state from env (state-based, privileged)
"""

from __future__ import annotations

import math

import numpy as np
from shapely.geometry import LineString, Point, Polygon

from .env import AGENT_RADIUS, GOAL_POSE, PushTEnv

# The T's outline in body coordinates (counter-clockwise in image coordinates), edges between them.
T_OUTLINE = np.array(
    [(-60.0, 0.0), (60.0, 0.0), (60.0, 30.0), (15.0, 30.0), (15.0, 120.0), (-15.0, 120.0), (-15.0, 30.0), (-60.0, 30.0)]
)
ANGLE_WEIGHT = 60.0  # pixels of position error worth one radian of angle error
PUSH_LENGTHS = (2.0, 6.0, 16.0, 40.0)
PUSH_SPEED = 8.0  # pixels the target advances per control step while pushing
WALK_SPEED = 18.0  # ... while walking around the T
CLEARANCE = AGENT_RADIUS + 14.0  # distance kept from the T while walking around it
WORKSPACE = (25.0, 487.0)


def _rotation(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def _contact_candidates(spacing: float = 12.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(point, outward normal) pairs along the T's outline, in body coordinates, away from corners."""
    candidates = []
    n = len(T_OUTLINE)
    for i in range(n):
        a, b = T_OUTLINE[i], T_OUTLINE[(i + 1) % n]
        edge = b - a
        length = float(np.linalg.norm(edge))
        direction = edge / length
        # Outward normal: the outline runs counter-clockwise in body axes (x right, y down in pixels).
        normal = np.array([direction[1], -direction[0]])
        k = max(1, int(length // spacing))
        for j in range(k):
            t = (j + 0.5) / k
            candidates.append((a + t * edge, normal))
    return candidates


def pose_cost(state: np.ndarray) -> float:
    """Distance of the block pose to the goal: pixels plus ANGLE_WEIGHT per radian."""
    dx, dy = state[2] - GOAL_POSE[0], state[3] - GOAL_POSE[1]
    dtheta = (state[4] - GOAL_POSE[2] + math.pi) % (2 * math.pi) - math.pi
    return math.hypot(dx, dy) + ANGLE_WEIGHT * abs(dtheta)


class PushTDemonstrator:
    """A privileged scripted policy: `act(env)` returns the next (2,) target position.

    Args:
        seed: for the small random tie-breaking between equally good pushes.
    """

    def __init__(self, seed: int = 0):
        self._scratch = PushTEnv(obs_type="state", render_mode=None, max_episode_steps=None)
        self._candidates = _contact_candidates()
        self._rng = np.random.default_rng(seed)
        self._plan: list[np.ndarray] = []

    def reset(self) -> None:
        self._plan = []

    def act(self, env: PushTEnv) -> np.ndarray:
        if not self._plan:
            self._plan = self._next_plan(env.get_state())
        return self._plan.pop(0)

    # ------------------------------------------------------------------ planning

    def _push_targets(self, start: np.ndarray, inward: np.ndarray, length: float) -> list[np.ndarray]:
        steps = max(1, int(math.ceil(length / PUSH_SPEED)))
        targets = [start + inward * length * (k + 1) / steps for k in range(steps)]
        return targets + [targets[-1]]  # let the agent settle on the last target

    def _simulate(self, state: np.ndarray, start: np.ndarray, targets: list[np.ndarray]) -> np.ndarray:
        sim = self._scratch
        sim.reset(options={"reset_to_state": [start[0], start[1], *state[2:]]})
        for target in targets:
            sim.step(target)
        return sim.get_state()

    def _next_plan(self, state: np.ndarray) -> list[np.ndarray]:
        block_xy, angle = state[2:4], state[4]
        rot = _rotation(angle)
        current = pose_cost(state)
        best, best_rate = None, 0.0
        agent = state[:2]
        for point, normal in self._candidates:
            world_point = block_xy + rot @ point
            world_normal = rot @ normal
            start = world_point + world_normal * (AGENT_RADIUS + 2.0)
            if not (WORKSPACE[0] <= start[0] <= WORKSPACE[1] and WORKSPACE[0] <= start[1] <= WORKSPACE[1]):
                continue
            # Steps to get there (a lower bound: the straight line), plus settling.
            walk_steps = float(np.linalg.norm(start - agent)) / WALK_SPEED + 2.0
            for length in PUSH_LENGTHS:
                targets = self._push_targets(start, -world_normal, length)
                result = self._simulate(state, start, targets)
                # Greedy on progress per control step, so that the episode fits in its 300 steps.
                rate = (current - pose_cost(result)) / (walk_steps + len(targets))
                rate += 1e-9 * self._rng.random()
                if rate > best_rate:
                    best, best_rate = (start, targets), rate
        if best is None:  # no push improves: nudge from a random candidate to get unstuck
            point, normal = self._candidates[self._rng.integers(len(self._candidates))]
            start = block_xy + rot @ point + rot @ normal * (AGENT_RADIUS + 2.0)
            start = np.clip(start, *WORKSPACE)
            best = (start, self._push_targets(start, -(rot @ normal), PUSH_LENGTHS[1]))
        start, targets = best
        return self._walk(agent, start, state) + targets

    def _walk(self, agent: np.ndarray, goal: np.ndarray, state: np.ndarray) -> list[np.ndarray]:
        """Targets from the agent to `goal` that go around the T (kept CLEARANCE away), ending at rest."""
        rot = _rotation(state[4])
        outline = Polygon(state[2:4] + T_OUTLINE @ rot.T)
        # Segments closer than the agent's radius would move the T (an agent resting on it is at the radius).
        keep_out = outline.buffer(AGENT_RADIUS - 1.0)
        route = outline.buffer(CLEARANCE, join_style="mitre").exterior
        waypoints = [agent]
        if LineString([agent, goal]).intersects(keep_out):
            # Walk along the clearance ring, the shorter way round, between the points nearest to each end.
            s0, s1 = route.project(Point(agent)), route.project(Point(goal))
            length = route.length
            forward = (s1 - s0) % length
            direction = 1.0 if forward <= length / 2 else -1.0
            distance = forward if direction > 0 else length - forward
            n = max(2, int(distance // 10.0))
            waypoints += [np.array(route.interpolate((s0 + direction * distance * k / n) % length).coords[0]) for k in range(n + 1)]
        waypoints.append(goal)
        waypoints = [np.clip(w, *WORKSPACE) for w in waypoints]
        targets = []
        for a, b in zip(waypoints[:-1], waypoints[1:]):
            seg = float(np.linalg.norm(b - a))
            steps = int(math.ceil(seg / WALK_SPEED))
            targets += [a + (b - a) * (k + 1) / steps for k in range(steps)]
        # Wait on the start point until the agent is there (the PD controller lags about one step).
        targets += [goal, goal]
        return targets
