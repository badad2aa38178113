"""Action conversions for robomimic's OSC_POSE controller: relative (delta) and absolute actions.

A robosuite arm action is 7 numbers: position (3), orientation as an axis-angle vector (3), gripper (1). With
`control_delta=True` (robomimic's datasets) the first six are a scaled delta; with `control_delta=False` they are
the absolute goal pose in the robot base frame.

The policy's absolute action per arm is 10 numbers: position (3), rotation in the 6D representation (6), gripper
(1), as in Diffusion Policy. The 6D representation is the first two rows of the rotation matrix (the convention of
pytorch3d's `matrix_to_rotation_6d`, which Diffusion Policy uses); it is continuous, unlike axis-angle, so a
network can regress it. Shapes: (..., 7 * n_arms) <-> (..., 10 * n_arms).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def matrix_to_rot6d(matrix: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (..., 6): the first two rows."""
    return np.asarray(matrix)[..., :2, :].reshape(*np.shape(matrix)[:-2], 6)


def rot6d_to_matrix(rot6d: np.ndarray) -> np.ndarray:
    """(..., 6) -> (..., 3, 3) by Gram-Schmidt (any two non-parallel rows give a rotation)."""
    a1, a2 = np.asarray(rot6d, dtype=np.float64)[..., :3], np.asarray(rot6d, dtype=np.float64)[..., 3:6]
    b1 = a1 / np.linalg.norm(a1, axis=-1, keepdims=True)
    a2 = a2 - np.sum(b1 * a2, axis=-1, keepdims=True) * b1
    b2 = a2 / np.linalg.norm(a2, axis=-1, keepdims=True)
    return np.stack([b1, b2, np.cross(b1, b2)], axis=-2)


def axis_angle_to_rot6d(axis_angle: np.ndarray) -> np.ndarray:
    """(..., 3) -> (..., 6)."""
    aa = np.asarray(axis_angle, dtype=np.float64)
    return matrix_to_rot6d(Rotation.from_rotvec(aa.reshape(-1, 3)).as_matrix()).reshape(*aa.shape[:-1], 6)


def rot6d_to_axis_angle(rot6d: np.ndarray) -> np.ndarray:
    """(..., 6) -> (..., 3)."""
    r = np.asarray(rot6d, dtype=np.float64)
    return Rotation.from_matrix(rot6d_to_matrix(r.reshape(-1, 6))).as_rotvec().reshape(*r.shape[:-1], 3)


def env_to_policy_action(action: np.ndarray) -> np.ndarray:
    """Absolute controller actions (..., 7 * n_arms) -> policy actions (..., 10 * n_arms)."""
    a = np.asarray(action, dtype=np.float64)
    if a.shape[-1] % 7:
        raise ValueError(f"absolute controller actions have 7 numbers per arm; got last dimension {a.shape[-1]}")
    arms = a.reshape(*a.shape[:-1], -1, 7)
    out = np.concatenate([arms[..., :3], axis_angle_to_rot6d(arms[..., 3:6]), arms[..., 6:]], axis=-1)
    return out.reshape(*a.shape[:-1], -1)


def policy_to_env_action(action: np.ndarray) -> np.ndarray:
    """Policy actions (..., 10 * n_arms) -> absolute controller actions (..., 7 * n_arms)."""
    a = np.asarray(action, dtype=np.float64)
    if a.shape[-1] % 10:
        raise ValueError(f"absolute policy actions have 10 numbers per arm (position 3, rotation 6D 6, gripper 1); "
                         f"got last dimension {a.shape[-1]}")
    arms = a.reshape(*a.shape[:-1], -1, 10)
    out = np.concatenate([arms[..., :3], rot6d_to_axis_angle(arms[..., 3:9]), arms[..., 9:]], axis=-1)
    return out.reshape(*a.shape[:-1], -1)
