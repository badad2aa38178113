"""The scripted Block Pushing oracle, of the kind that produced the reference's 1,000 demonstrations.

Per episode it picks one of the four block-to-target orders uniformly (block A or B first, into target 1 or 2; the
other block into the other target): the multimodality of the data. For each block in turn:

    approach  to a point 5 cm behind the block on the line from the target through the block; from in front of or
              beside the block it goes round it (a waypoint 7 cm to the side) rather than through it
    push      along that line towards the target, steering back onto the line; off the line by more than 1.5 cm,
              or no longer behind the block, it approaches again. When the block's yaw is far (> 30 degrees,
              modulo 90) from the target's, it pushes 1 cm off the block's centre, turning it while it moves
    back off  once the block is within 2 cm of the target's centre: 8 cm straight back, then the next block; a
              block found knocked out of its target (> 4 cm) after both is pushed again

It acts on the true state (block and target poses, the effector target) and moves the effector target at most
3 cm per step, so its actions are deltas of at most 0.03 (the action limit is 0.1).
"""

from __future__ import annotations

import numpy as np

from .env import BlockPushEnv

MAX_STEP = 0.03  # metres per 10 Hz step
BEHIND = 0.05  # the approach point: this far behind the block's centre
AROUND = 0.07  # the side waypoint's distance from the block's line
PLACED = 0.02  # a block this close to its target's centre is done
OFF_LINE = 0.015  # lateral error that ends a push
BACK_OFF, BACK_OFF_STEPS = 0.08, 8  # metres, and at most this many steps (the workspace edge may stop it)
REDO = 0.04  # after both: a block this far from its target is pushed again
TURN_ABOVE = np.deg2rad(30)


def _wrap_quarter(angle: float) -> float:
    """An angle modulo 90 degrees, in [-45, 45) degrees (a cube looks the same every quarter turn)."""
    return (angle + np.pi / 4) % (np.pi / 2) - np.pi / 4


class BlockPushOracle:
    """`act(env)` -> action (2,): the oracle's delta for a BlockPushEnv (module docstring); one per episode."""

    def __init__(self, seed: int | None = None):
        rng = np.random.default_rng(seed)
        first_block, first_target = int(rng.integers(2)), int(rng.integers(2))
        self.plan = [(first_block, first_target), (1 - first_block, 1 - first_target)]
        self.stage, self.phase = 0, "approach"
        self._back_from, self._back_dir, self._back_steps = None, None, 0

    @property
    def order(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """((block, target), (block, target)) in the order the oracle places them."""
        return tuple(self.plan)

    def _move(self, env: BlockPushEnv, goal: np.ndarray) -> np.ndarray:
        delta = np.asarray(goal, dtype=np.float64) - env.effector_target
        norm = np.linalg.norm(delta)
        return delta if norm <= MAX_STEP else delta * (MAX_STEP / norm)

    def act(self, env: BlockPushEnv) -> np.ndarray:
        blocks, targets, effector = env.block_poses(), env.targets, env.effector_target
        if self.stage >= len(self.plan):  # both placed, but one may have been knocked out: go back for it
            left = [i for i, (b, t) in enumerate(self.plan) if np.linalg.norm(blocks[b, :2] - targets[t, :2]) > REDO]
            if not left:
                return np.zeros(2)
            self.stage = left[0]
        block, target = self.plan[self.stage]
        b, t = blocks[block, :2], targets[target, :2]
        to_target = t - b
        distance = float(np.linalg.norm(to_target))
        if self.phase == "back_off":
            self._back_steps += 1
            if np.linalg.norm(env.effector() - self._back_from) < BACK_OFF and self._back_steps < BACK_OFF_STEPS:
                return self._move(env, self._back_from + self._back_dir * BACK_OFF)
            self.phase = "approach"
        if distance <= PLACED:
            # Straight back from where the pusher *is* (its target runs ahead of it while pushing).
            self.stage += 1
            self.phase, self._back_from, self._back_steps = "back_off", env.effector(), 0
            self._back_dir = -to_target / distance if distance > 1e-4 else np.array([-1.0, 0.0])
            return self._move(env, self._back_from + self._back_dir * BACK_OFF)
        u = to_target / distance
        n = np.array([-u[1], u[0]])
        along, lateral = float(np.dot(effector - b, u)), float(np.dot(effector - b, n))
        if self.phase == "push":
            if along > -0.015 or abs(lateral) > OFF_LINE or along < -BEHIND - 0.03:
                self.phase = "approach"
            else:
                yaw_error = _wrap_quarter(blocks[block, 2] - targets[target, 2])
                offset = 0.01 * np.sign(yaw_error) if abs(yaw_error) > TURN_ABOVE and distance > 0.1 else 0.0
                aim = b - u * 0.025 + n * offset  # the block's back face, off centre when it must turn
                push = min(MAX_STEP, 0.5 * distance)  # slower near the target: the block must not overshoot
                return self._move(env, aim + u * push + n * (offset - lateral) * 0.5)
        # approach
        pre = b - u * BEHIND
        if along > -BEHIND + 0.01:  # not behind the block: go round it, on the side the effector is on
            side = 1.0 if lateral >= 0 else -1.0
            if abs(lateral) < AROUND - 0.01:
                return self._move(env, b + u * max(along, -BEHIND) + n * side * AROUND)
            return self._move(env, b - u * BEHIND + n * side * AROUND)
        if np.linalg.norm(effector - pre) <= 0.01:
            self.phase = "push"
        return self._move(env, pre)
