"""Scripted demonstrators for Lift, Can and Square: episodes recorded in robomimic's layout (no download needed).

A waypoint controller on the true object poses drives robomimic's relative OSC_POSE action (7 numbers: position
delta, axis-angle delta, gripper -1 open / +1 closed): move above the object, descend, close the gripper, lift
(Lift ends there), carry it above its bin compartment, lower it and open (Can). Square (NutAssemblySquare): grasp
the nut by its handle, fingers across it; lift it above the square peg (top at 13 cm over the table), turn it to
the peg's axes while carrying (the nut's 4.6 cm hole leaves 6.8 mm round the 3.2 cm peg), steer so that the nut's
centre, not the hand, is over the peg (the hand holds it 5.4 cm off centre), lower it down the peg and let go.
Position commands are the error to
the waypoint (capped at one controller step, 5 cm), orientation commands keep the gripper pointing down with its
fingers across the cube's faces. A little Gaussian noise on the commands and a random hover height make the
demonstrations differ from one another like human ones do, so a policy sees recoveries.

    demo = record_episode(env, "lift", seed=0)   # arrays of one successful episode, or None

Writing them to robomimic hdf5 files is `demos/robomimic.py` (`python -m demos.robomimic lift --out lift.hdf5`).
"""

from __future__ import annotations


import numpy as np
from scipy.spatial.transform import Rotation

from .env import RobomimicEnv

POS_STEP = 0.05  # metres per unit of the position command (robomimic's OSC_POSE output_max)
ROT_STEP = 0.5  # radians per unit of the orientation command


class WaypointDemonstrator:
    """Computes the next relative action from the robosuite env's true state. One instance per episode."""

    def __init__(self, env: RobomimicEnv, task: str, rng: np.random.Generator, noise: float = 0.05):
        self.env, self.task, self.rng, self.noise = env, task, rng, noise
        self.rs = env.robosuite_env
        self.phase, self.phase_steps = "above", 0
        self.hover = rng.uniform(0.06, 0.12)
        self.down = self._eef_rotation()  # the start orientation points the gripper down

    # ---------------------------------------------------------------- state

    def _eef_pos(self) -> np.ndarray:
        return np.array(self.rs.sim.data.site_xpos[self.rs.robots[0].eef_site_id])

    def _eef_rotation(self) -> Rotation:
        return Rotation.from_matrix(np.array(self.rs.sim.data.site_xmat[self.rs.robots[0].eef_site_id]).reshape(3, 3))

    def _object(self) -> tuple[np.ndarray, float]:
        """Object position (Square: its handle's) and yaw (rad)."""
        if self.task == "square":
            nut = self.rs.nuts[0]
            yaw = self._yaw(self.rs.obj_body_id[nut.name])
            return np.array(self.rs.sim.data.site_xpos[self.rs.object_site_ids[0]]), yaw
        body = self.rs.cube_body_id if self.task == "lift" else self.rs.obj_body_id["Can"]
        return np.array(self.rs.sim.data.body_xpos[body]), self._yaw(body)

    def _yaw(self, body: int) -> float:
        quat_wxyz = np.array(self.rs.sim.data.body_xquat[body])
        return float(Rotation.from_quat(quat_wxyz[[1, 2, 3, 0]]).as_euler("xyz")[2])

    def _nut_center(self) -> np.ndarray:
        return np.array(self.rs.sim.data.body_xpos[self.rs.obj_body_id[self.rs.nuts[0].name]])

    def _target_rotation(self, yaw: float) -> Rotation:
        if self.task == "can":
            return self.down  # a can is round
        gripper_yaw = self.down.as_euler("xyz")[2]  # the fingers close along this direction (measured: world y)
        if self.task == "square":
            # Fingers across the handle, i.e. along the nut's y axis (the handle sticks out along its x); 180-degree
            # symmetric.
            turn = (yaw + np.pi / 2 - gripper_yaw + np.pi / 2) % np.pi - np.pi / 2
            return Rotation.from_euler("z", turn) * self.down
        # Turn about the vertical so the fingers close across two faces of the cube (90-degree symmetric).
        turn = (yaw - gripper_yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4
        return Rotation.from_euler("z", turn) * self.down

    # ---------------------------------------------------------------- control

    def _command(self, target: np.ndarray, rotation: Rotation, gripper: float) -> np.ndarray:
        pos = np.clip((target - self._eef_pos()) / POS_STEP, -1, 1)
        rot = np.clip((rotation * self._eef_rotation().inv()).as_rotvec() / ROT_STEP, -1, 1)
        action = np.concatenate([pos, rot, [gripper]])
        action[:6] += self.noise * self.rng.standard_normal(6)
        return np.clip(action, -1, 1)

    def _next(self, phase: str) -> None:
        self.phase, self.phase_steps = phase, 0

    def act(self) -> np.ndarray:
        if self.task == "square" and self.phase not in ("above", "descend", "grasp"):
            return self._act_square_carry()
        obj, yaw = self._object()
        rot = self._target_rotation(yaw)
        eef = self._eef_pos()
        self.phase_steps += 1
        close = lambda target, tol=0.01: np.linalg.norm(target - eef) < tol  # noqa: E731
        if self.phase == "above":
            target = obj + [0, 0, self.hover]
            if close(target, 0.015) or self.phase_steps > 60:
                self._next("descend")
            return self._command(target, rot, -1)
        if self.phase == "descend":
            target = obj + [0, 0, {"lift": 0.0, "can": 0.01, "square": 0.0}[self.task]]
            if close(target, 0.008) or self.phase_steps > 40:
                self._next("grasp")
            if self.task == "square" and np.linalg.norm((target - eef)[:2]) > 0.005:
                # The handle is 3.2 cm wide and flush with the nut's ring: a finger coming down 1 cm off lands on
                # the ring and stays there. Go down only once centred, holding (up to) 3 cm above until then.
                target = target + [0, 0, min(0.03, max(eef[2] - target[2], 0.0))]
            return self._command(target, rot, -1)
        if self.phase == "grasp":
            if self.phase_steps > 12:
                self._next("lift")
            return self._command(eef, rot, 1)
        if self.phase == "lift":
            height = 0.15 if self.task == "lift" else 0.25
            target = np.array([eef[0], eef[1], self.rs.table_offset[2] + height] if self.task == "lift" else
                              [eef[0], eef[1], self.rs.bin2_pos[2] + height])
            if self.task != "lift" and close(target, 0.03):
                self._next("carry")
            return self._command(target, rot, 1)
        goal = np.array(self.rs.target_bin_placements[self.rs.object_to_id["can"]])
        if self.phase == "carry":
            target = np.array([goal[0], goal[1], self.rs.bin2_pos[2] + 0.25])
            if close(target, 0.02) or self.phase_steps > 80:
                self._next("lower")
            return self._command(target, rot, 1)
        if self.phase == "lower":
            target = np.array([goal[0], goal[1], self.rs.bin2_pos[2] + 0.12])
            if close(target, 0.02) or self.phase_steps > 40:
                self._next("release")
            return self._command(target, rot, 1)
        if self.phase == "release":
            if self.phase_steps > 8:
                self._next("retreat")
            return self._command(eef, rot, -1)
        # retreat: move up so the gripper leaves the can (robosuite's success wants the gripper away)
        return self._command(np.array([eef[0], eef[1], self.rs.bin2_pos[2] + 0.3]), rot, -1)

    def _act_square_carry(self) -> np.ndarray:
        """Square after the grasp: the waypoints are for the nut's centre; the hand follows at the held offset."""
        eef, center = self._eef_pos(), self._nut_center()
        peg = np.array(self.rs.sim.data.body_xpos[self.rs.peg1_body_id])
        table = self.rs.table_offset[2]
        # Turn the nut to the peg's axes (90-degree symmetric): the rest of the turn, added to the held orientation.
        nut_yaw = self._yaw(self.rs.obj_body_id[self.rs.nuts[0].name])
        rest = (-nut_yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4
        rot = Rotation.from_euler("z", rest) * self._eef_rotation()
        # Where the hand must be for the nut's centre to be at `goal`, once the turn is done.
        offset = Rotation.from_euler("z", rest).apply(center - eef)
        hand = lambda goal: goal - offset  # noqa: E731
        self.phase_steps += 1
        above = np.array([peg[0], peg[1], table + 0.19])  # nut 6 cm over the peg's top (table + 0.13)
        if self.phase == "lift":
            if center[2] > table + 0.16 or self.phase_steps > 40:
                self._next("carry")
            return self._command(np.array([eef[0], eef[1], eef[2] + 0.05]), rot, 1)
        if self.phase == "carry":
            if np.linalg.norm((center - above)[:2]) < 0.004 and abs(rest) < 0.05 or self.phase_steps > 100:
                self._next("lower")
            return self._command(hand(above), rot, 1)
        if self.phase == "lower":
            down = np.array([peg[0], peg[1], table + 0.02])
            if center[2] < table + 0.045 or self.phase_steps > 80:
                self._next("release")
            return self._command(hand(down), rot, 1)
        if self.phase == "release":
            if self.phase_steps > 8:
                self._next("retreat")
            return self._command(eef, rot, -1)
        return self._command(np.array([eef[0], eef[1], table + 0.25]), rot, -1)


def record_episode(env: RobomimicEnv, task: str, seed: int, max_steps: int, noise: float) -> dict | None:
    """One scripted episode from `env.reset(seed=seed)`; robomimic's per-demo arrays, or None if it failed.

    Arrays: states (T, S) before each action, actions (T, 7), rewards (T,), dones (T,) (1 at the last step),
    obs/next_obs {key: (T, ...)}; model_file: the MuJoCo XML. The episode ends 1 step after the first success.
    """
    obs, _ = env.reset(seed=seed)
    demo = WaypointDemonstrator(env, task, np.random.default_rng(seed), noise)
    states, actions, observations, rewards = [], [], [obs], []
    for _ in range(max_steps):
        states.append(env.get_state())
        action = demo.act()
        obs, reward, success, _, _ = env.step(action)
        actions.append(action)
        observations.append(obs)
        rewards.append(reward)
        if success:
            break
    else:
        return None
    stack = lambda rows: {k: np.stack([o[k] for o in rows]) for k in rows[0]}  # noqa: E731
    dones = np.zeros(len(actions), dtype=np.int64)
    dones[-1] = 1
    return {"states": np.stack(states), "actions": np.stack(actions), "rewards": np.array(rewards),
            "dones": dones, "obs": stack(observations[:-1]), "next_obs": stack(observations[1:]),
            "model_file": env.sim.model.get_xml()}


TASK_ENV = {"lift": "Lift", "can": "PickPlaceCan", "square": "NutAssemblySquare"}
