"""robomimic hdf5 datasets: read, write (for our scripted demonstrations) and convert to the zarr replay buffer.

robomimic's format (https://robomimic.github.io/docs/datasets/overview.html):

    data                      attrs: env_args (JSON: env_name, type, env_kwargs, env_version), total (steps)
    data/demo_<i>             attrs: num_samples (T), model_file (MuJoCo XML)
        actions (T, 7 * arms)     relative OSC_POSE actions
        states  (T, S)            flattened MuJoCo state before each action
        rewards (T,), dones (T,)
        obs/<key> (T, ...)        low-dim float, images (T, H, W, 3) uint8
        next_obs/<key> (T, ...)
    mask/<filter>             optional: names of the demos in a subset (e.g. "train", "valid")

The zarr buffer written by `convert` has one array per observation key (same name), `action` and `state`,
episodes in demo order, and attributes `env_meta` (the env_args dict, used to build the evaluation environment),
`abs_action`, `source`. With `abs_action=True` the relative actions are turned into absolute ones by replaying
the recorded states: at each step the simulator is set to the recorded state and the controller is given the
recorded action; the goal pose it computes is the absolute action (position, rotation in 6D, gripper: 10 per
arm, envs/robomimic/rotation.py). `abs_action_replay_error` measures how closely those actions, executed
open-loop by the absolute controller, reproduce the recorded trajectory.

The reference's converted files (`robomimic/datasets/<task>/<ph|mh>/{low_dim,image}_abs.hdf5` in its
robomimic_lowdim.zip / robomimic_image.zip) already hold absolute actions, as axis-angle (7 per arm), under
robomimic's unchanged env_args: `--input-actions absolute` reads them (rotation turned to 6D, nothing replayed).
Which kind a file holds is checked: relative actions lie in [-1, 1], absolute positions do not (the arm's base
stands 0.9 m above the floor).

    python -m demos.robomimic_hdf5 convert lift/ph/low_dim_v141.hdf5 lift.zarr [--abs-action]
    python -m demos.robomimic_hdf5 convert datasets/lift/ph/low_dim_abs.hdf5 lift.zarr --input-actions absolute
    python -m demos.robomimic_hdf5 info lift/ph/low_dim_v141.hdf5
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common import ArgumentParser, DataError, run_cli
from common.paths import broken_link
from datasets import ReplayBuffer


class RobomimicFormatError(DataError):
    """The file is not a robomimic dataset, or lacks what is asked of it; the message names file and key."""


def _h5py():
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - h5py is a dependency
        raise ImportError("reading robomimic datasets needs h5py (pip install h5py)") from e
    return h5py


def _open(path: str | Path):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(broken_link(path) or f"{path}: no such file (a robomimic .hdf5 dataset)")
    h5py = _h5py()
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise RobomimicFormatError(f"{path}: not an HDF5 file ({e}); expected a robomimic dataset") from e
    if "data" not in f or not isinstance(f["data"], h5py.Group):
        keys = list(f.keys())
        f.close()
        raise RobomimicFormatError(f"{path}: not a robomimic dataset: no group 'data' (top-level keys: {keys}); "
                                   "robomimic files hold data/demo_0, data/demo_1, ...")
    return f


def demo_names(f, source: str, filter_key: str | None = None) -> list[str]:
    """Demo group names in robomimic's order (by index), optionally those listed in mask/<filter_key>."""
    names = [k for k in f["data"].keys() if re.fullmatch(r"demo_\d+", k)]
    if filter_key is not None:
        if f"mask/{filter_key}" not in f:
            masks = list(f["mask"].keys()) if "mask" in f else []
            raise RobomimicFormatError(f"{source}: no filter key mask/{filter_key}; the file has {masks}")
        wanted = {n.decode() if isinstance(n, bytes) else str(n) for n in f[f"mask/{filter_key}"][:]}
        names = [n for n in names if n in wanted]
    if not names:
        raise RobomimicFormatError(f"{source}: no demonstrations (groups data/demo_<i>) in 'data'")
    return sorted(names, key=lambda n: int(n[5:]))


def read_env_meta(path: str | Path) -> dict:
    """The dataset's environment metadata: json.loads(data.attrs['env_args'])."""
    with _open(path) as f:
        return _env_meta(f, str(path))


def _env_meta(f, source: str) -> dict:
    if "env_args" not in f["data"].attrs:
        raise RobomimicFormatError(f"{source}: data.attrs['env_args'] is missing; robomimic datasets store the "
                                   "environment metadata there (env_name, type, env_kwargs)")
    try:
        meta = json.loads(f["data"].attrs["env_args"])
    except (TypeError, json.JSONDecodeError) as e:
        raise RobomimicFormatError(f"{source}: data.attrs['env_args'] is not valid JSON: {e}") from e
    from envs.robomimic.env import check_env_meta

    return check_env_meta(meta, f"{source}: data.attrs['env_args']")


def info(path: str | Path) -> dict:
    """Environment, number of demos and steps, and the shapes of the first demo's arrays."""
    with _open(path) as f:
        names = demo_names(f, str(path))
        first = f["data"][names[0]]
        return {"env_name": _env_meta(f, str(path))["env_name"], "demos": len(names),
                "steps": int(sum(f["data"][n]["actions"].shape[0] for n in names)),
                "actions": tuple(first["actions"].shape[1:]),
                "obs": {k: tuple(v.shape[1:]) for k, v in first["obs"].items()} if "obs" in first else {},
                "masks": list(f["mask"].keys()) if "mask" in f else []}


# ---------------------------------------------------------------- writing (our scripted demonstrations)


def write_robomimic_hdf5(path: str | Path, demos: Sequence[dict], env_meta: dict) -> Path:
    """Write demos (dicts of states, actions, rewards, dones, obs, next_obs, model_file) in robomimic's format.

    Written to a temporary file and renamed, so an interrupted run leaves no half file. Images are gzip-compressed.
    """
    h5py = _h5py()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            data = f.create_group("data")
            data.attrs["env_args"] = json.dumps(env_meta)
            data.attrs["total"] = int(sum(len(d["actions"]) for d in demos))
            for i, d in enumerate(demos):
                g = data.create_group(f"demo_{i}")
                g.attrs["num_samples"] = len(d["actions"])
                g.attrs["model_file"] = d["model_file"]
                for key in ("states", "actions", "rewards", "dones"):
                    g.create_dataset(key, data=d[key])
                for group in ("obs", "next_obs"):
                    for key, value in d[group].items():
                        gzip = {"compression": "gzip", "compression_opts": 4} if value.dtype == np.uint8 else {}
                        g.create_dataset(f"{group}/{key}", data=value, **gzip)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# ---------------------------------------------------------------- absolute actions


class AbsoluteActionConverter:
    """Relative -> absolute actions by replaying recorded states through the robot's controller (module docstring)."""

    def __init__(self, env_meta: dict):
        from envs.robomimic.env import RobomimicEnv

        self.env = RobomimicEnv(env_meta, obs_keys=["robot0_eef_pos"])
        self.env_meta = env_meta

    def convert(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """states (T, S), relative actions (T, 7 * arms) -> absolute policy actions (T, 10 * arms)."""
        from envs.robomimic.rotation import env_to_policy_action
        from scipy.spatial.transform import Rotation

        robots = self.env.robosuite_env.robots
        per_arm = actions.reshape(len(actions), len(robots), -1)
        out = np.empty((len(actions), len(robots), 7))
        for t in range(len(actions)):
            self.env.reset(options={"state": states[t]})
            for r, robot in enumerate(robots):  # reset() made each controller read this state's pose
                robot.control(per_arm[t, r], policy_step=True)  # sets the controller's goal from this state
                out[t, r, :3] = robot.controller.goal_pos
                out[t, r, 3:6] = Rotation.from_matrix(robot.controller.goal_ori).as_rotvec()
                out[t, r, 6] = per_arm[t, r, -1]
        return env_to_policy_action(out.reshape(len(actions), -1)).astype(np.float32)

    def close(self) -> None:
        self.env.close()


def replay_error(env, probe, states: np.ndarray, actions: np.ndarray, start: int = 1) -> dict:
    """Execute `actions` open-loop in `env` from states[start]; the largest end-effector and object position error
    (m) against the recorded trajectory, comparing the simulator after action t with states[t+1] (set in `probe`).
    Both environments observe "object" and "robot0_eef_pos"."""
    start = min(start, max(len(actions) - 2, 0))  # a 1- or 2-step demo: from its first state
    env.reset(options={"state": states[start]})
    eef_err, obj_err = 0.0, 0.0
    for t in range(start, len(actions) - 1):
        obs, *_ = env.step(actions[t])
        ref, _ = probe.reset(options={"state": states[t + 1]})
        eef_err = max(eef_err, float(np.linalg.norm(obs["robot0_eef_pos"] - ref["robot0_eef_pos"])))
        obj_err = max(obj_err, float(np.linalg.norm(obs["object"][:3] - ref["object"][:3])))
    return {"max_eef_pos_error": eef_err, "max_object_pos_error": obj_err}


def abs_action_replay_error(env_meta: dict, states: np.ndarray, abs_actions: np.ndarray, start: int = 1) -> dict:
    """Execute absolute actions open-loop from states[start] with the absolute controller: `replay_error`.

    Why start at 1: robosuite's DataCollectionWrapper (which recorded robomimic's datasets) restores the episode's
    first state after a second reset, and robosuite's controller then takes the first action relative to the pose
    of that second reset, which is not stored; from states[1] on every action was taken from its recorded state.
    Measured from states[0], the first step alone is off by 5-7 mm (the relative actions replayed the same way
    drift as much).
    """
    from envs.robomimic.env import RobomimicEnv

    env = RobomimicEnv(env_meta, obs_keys=["object", "robot0_eef_pos"], abs_action=True)
    probe = RobomimicEnv(env_meta, obs_keys=["object", "robot0_eef_pos"])
    try:
        return replay_error(env, probe, states, abs_actions, start)
    finally:
        env.close()
        probe.close()


# ---------------------------------------------------------------- conversion to zarr


INPUT_ACTIONS = ("relative", "absolute")


def check_action_kind(actions: np.ndarray, input_actions: str, where: str) -> None:
    """Relative OSC_POSE actions lie in [-1, 1]; absolute ones hold positions in metres (z about 0.8-1.3)."""
    if actions.ndim != 2 or actions.shape[1] % 7:
        raise RobomimicFormatError(f"{where}/actions: shape {actions.shape}, expected (T, 7 * arms) (position, "
                                   "axis-angle, gripper per arm)")
    if input_actions == "relative" and np.abs(actions).max() > 1 + 1e-6:
        raise RobomimicFormatError(
            f"{where}/actions: values up to {np.abs(actions).max():.3f}, outside robomimic's relative range [-1, 1]; "
            "the file holds absolute actions (the reference's *_abs.hdf5): convert with --input-actions absolute")
    if input_actions == "absolute":
        heights = actions[:, 2::7]
        if np.abs(actions).max() <= 1 and heights.min() < 0.5:
            raise RobomimicFormatError(
                f"{where}/actions: end-effector heights from {heights.min():.3f} m, inside [-1, 1] like relative "
                "actions; absolute positions stand above the table (z > 0.5 m): drop --input-actions absolute")


def convert(src: str | Path, out: str | Path, obs_keys: Sequence[str] | None = None, abs_action: bool = False,
            filter_key: str | None = None, overwrite: bool = False, progress: bool = True,
            input_actions: str = "relative") -> dict:
    """Convert a robomimic hdf5 to a zarr replay buffer (module docstring); returns a report.

    obs_keys: which data/demo_i/obs/<key> to keep (default: all of the first demo's). input_actions: what the file
    holds, "relative" (robomimic's datasets) or "absolute" (axis-angle; the reference's *_abs.hdf5, which implies
    absolute output actions).
    """
    if input_actions not in INPUT_ACTIONS:
        raise ValueError(f"input_actions={input_actions!r}: expected one of {list(INPUT_ACTIONS)}")
    absolute_input = input_actions == "absolute"
    abs_action = abs_action or absolute_input
    src = Path(src)
    with _open(src) as f:
        source = str(src)
        env_meta = _env_meta(f, source)
        names = demo_names(f, source, filter_key)
        first = f["data"][names[0]]
        available = sorted(first["obs"].keys()) if "obs" in first else []
        keys = list(obs_keys) if obs_keys is not None else available
        converter = AbsoluteActionConverter(env_meta) if abs_action and not absolute_input else None
        steps = 0
        try:
            # An interrupted conversion leaves its buffer marked unfinished: the same command restarts it cleanly.
            plan = {"command": "demos.robomimic_hdf5 convert", "src": str(src.resolve()), "obs_keys": keys,
                    "abs_action": abs_action, "filter_key": filter_key, "input_actions": input_actions}
            with ReplayBuffer.create_or_continue(out, plan, overwrite=overwrite, continue_=False) as rb:
                for name in tqdm(names, desc="convert", unit="demo", disable=not progress):
                    demo = f["data"][name]
                    where = f"{source}: data/{name}"
                    needed = ["actions", "states", *[f"obs/{k}" for k in keys]]
                    missing = [k for k in needed if k not in demo]
                    if missing:
                        have = sorted(demo.keys()) + [f"obs/{k}" for k in (demo["obs"].keys() if "obs" in demo else [])]
                        raise RobomimicFormatError(f"{where}: missing {missing}; it has {have}")
                    actions = np.asarray(demo["actions"][:], dtype=np.float32)
                    states = np.asarray(demo["states"][:])
                    episode = {k: demo[f"obs/{k}"][:] for k in keys}
                    lengths = {k: len(v) for k, v in {"actions": actions, "states": states, **episode}.items()}
                    if len(set(lengths.values())) != 1:
                        raise RobomimicFormatError(f"{where}: arrays have different lengths {lengths}")
                    check_action_kind(actions, input_actions, where)
                    if converter is not None:
                        actions = converter.convert(states, actions)
                    elif absolute_input:
                        from envs.robomimic.rotation import env_to_policy_action

                        actions = env_to_policy_action(actions).astype(np.float32)
                    rb.add_episode({**episode, "action": actions, "state": states})
                    steps += len(actions)
                rb.update_attrs(env_meta=env_meta, abs_action=abs_action, source=src.name,
                                filter_key=filter_key, input_actions=input_actions)
                rb.finish_writing()
        finally:
            if converter is not None:
                converter.close()
    return {"demos": len(names), "steps": steps, "obs_keys": keys, "abs_action": abs_action, "out": str(out),
            "env_name": env_meta["env_name"]}


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


def _main(argv: list[str]) -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="robomimic hdf5 -> zarr replay buffer")
    c.add_argument("src")
    c.add_argument("out", help="zarr directory, or a .zip")
    c.add_argument("--obs-keys", nargs="*", default=None, help="observation keys to keep (default: all)")
    c.add_argument("--abs-action", action="store_true", help="convert relative actions to absolute (6D rotation)")
    c.add_argument("--input-actions", choices=INPUT_ACTIONS, default="relative",
                   help="what the file holds: relative (robomimic's) or absolute (the reference's *_abs.hdf5)")
    c.add_argument("--filter-key", default=None, help="only the demos listed in mask/<key>")
    c.add_argument("--overwrite", action="store_true")
    i = sub.add_parser("info", help="what a robomimic hdf5 holds")
    i.add_argument("src")
    args = parser.parse_args(argv)
    if args.command == "info":
        print(json.dumps(info(args.src), indent=1))
        return
    r = convert(args.src, args.out, args.obs_keys, args.abs_action, args.filter_key, args.overwrite,
                input_actions=args.input_actions)
    print(f"converted {r['demos']} demos ({r['steps']} steps, {r['env_name']}, "
          f"{'absolute' if r['abs_action'] else 'relative'} actions, obs {r['obs_keys']}) -> {r['out']}")


if __name__ == "__main__":
    raise SystemExit(main())
