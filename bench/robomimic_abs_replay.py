"""Absolute-action conversion checked in simulation, on files robosuite's and robomimic's own scripts wrote.

For each demonstration of a robomimic hdf5 (default: a scripted Lift recording made with `python -m demos.robomimic
lift --out F`, i.e. robosuite's DataCollectionWrapper and robomimic's conversion and dataset_states_to_obs
scripts): convert the relative actions to absolute ones (demos.robomimic_hdf5.AbsoluteActionConverter), execute
them open-loop with the absolute controller from a recorded state, and report the largest distance to the
recorded trajectory (end effector and object position), next to the same open-loop replay of the recorded
relative actions (robomimic's own playback), from states[1] (the check) and from states[0] (robosuite's recorder
takes the first action relative to a pose it does not store; see abs_action_replay_error).

    python bench/robomimic_abs_replay.py outputs/data/lift_rm/low_dim.hdf5 [--demos 50] [--reference PATH]

With --reference PATH (a checkout of github.com/real-stanford/diffusion_policy, imported from there at run time,
never copied), the same relative actions also go through the reference's RobomimicAbsoluteActionConverter
(`convert_actions`; robomimic's env utilities with a torchvision stand-in, as envs/robomimic/run_script.py) and
the two absolute action sequences are compared: largest position difference and largest rotation angle between
them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demos.robomimic_hdf5 import AbsoluteActionConverter, demo_names, read_env_meta, replay_error  # noqa: E402
from envs.robomimic.env import RobomimicEnv  # noqa: E402

KEYS = ["object", "robot0_eef_pos"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("hdf5")
    parser.add_argument("--demos", type=int, default=50)
    parser.add_argument("--reference", default=None, help="checkout of real-stanford/diffusion_policy")
    args = parser.parse_args()
    import h5py

    meta = read_env_meta(args.hdf5)
    converter = AbsoluteActionConverter(meta)
    absolute, relative, probe = (RobomimicEnv(meta, KEYS, abs_action=True), RobomimicEnv(meta, KEYS),
                                 RobomimicEnv(meta, KEYS))
    rows = {k: [] for k in ("abs_1", "rel_1", "abs_0", "rel_0")}
    reference = _reference_converter(args.reference, args.hdf5) if args.reference else None
    versus = []
    with h5py.File(args.hdf5) as f:
        names = demo_names(f, args.hdf5)[: args.demos]
        for name in tqdm(names, desc="replay", unit="demo"):
            states, actions = f[f"data/{name}/states"][:], f[f"data/{name}/actions"][:]
            abs_actions = converter.convert(states, actions)
            if reference is not None:
                theirs = reference.convert_actions(states, actions)
                versus.append((*_compare(abs_actions, theirs), *_compare(abs_actions[1:], theirs[1:])))
            for start in (1, 0):
                for key, env, acts in (("abs", absolute, abs_actions), ("rel", relative, actions)):
                    err = replay_error(env, probe, states, acts, start)
                    rows[f"{key}_{start}"].append((err["max_eef_pos_error"], err["max_object_pos_error"]))
    print(f"\n{meta['env_name']}, {len(names)} demonstrations of {args.hdf5}: largest position error over each "
          "episode, mm (median / max over episodes)")
    print("| actions replayed open-loop | from | end effector | object |")
    print("|---|---|---|---|")
    for key, label in (("abs_1", "absolute (converted)"), ("rel_1", "relative (recorded)"),
                       ("abs_0", "absolute (converted)"), ("rel_0", "relative (recorded)")):
        e = np.array(rows[key]) * 1000
        print(f"| {label} | states[{key[-1]}] | {np.median(e[:, 0]):.2f} / {e[:, 0].max():.2f} | "
              f"{np.median(e[:, 1]):.2f} / {e[:, 1].max():.2f} |")
    if versus:
        v = np.array(versus)
        print(f"\nours vs the reference's RobomimicAbsoluteActionConverter, {len(v)} demonstrations, largest "
              "difference in position / rotation / gripper:")
        print(f"  all steps: {v[:, 0].max() * 1000:.3g} mm / {np.degrees(v[:, 1].max()):.3g} deg / {v[:, 2].max():.1g}"
              f" (in {int((v[:, 0] > 1e-6).sum())} demos)")
        print(f"  from step 1: {v[:, 3].max() * 1000:.3g} mm / {np.degrees(v[:, 4].max()):.3g} deg / "
              f"{v[:, 5].max():.1g}")


def _reference_converter(path: str, hdf5: str):
    """The reference's converter, imported from its checkout (robomimic's vision modules get the stand-in)."""
    from envs.robomimic.compat import import_robomimic
    from envs.robomimic.run_script import _torchvision_stand_in

    import_robomimic()
    _torchvision_stand_in()  # this process never imports diffusers
    sys.path.insert(0, str(Path(path).expanduser().resolve()))
    from diffusion_policy.common.robomimic_util import RobomimicAbsoluteActionConverter

    return RobomimicAbsoluteActionConverter(hdf5)


def _compare(ours_policy: np.ndarray, reference_env: np.ndarray) -> tuple[float, float, float]:
    """ours (T, 10 per arm, 6D) against the reference's (T, 7 per arm, axis-angle): position, angle, gripper."""
    from scipy.spatial.transform import Rotation

    from envs.robomimic.rotation import policy_to_env_action

    ours = policy_to_env_action(ours_policy).reshape(len(ours_policy), -1, 7)
    ref = np.asarray(reference_env).reshape(len(reference_env), -1, 7)
    pos = float(np.abs(ours[..., :3] - ref[..., :3]).max())
    rel = Rotation.from_rotvec(ours[..., 3:6].reshape(-1, 3)) * Rotation.from_rotvec(ref[..., 3:6].reshape(-1, 3)).inv()
    return pos, float(rel.magnitude().max()), float(np.abs(ours[..., 6] - ref[..., 6]).max())


if __name__ == "__main__":
    main()
