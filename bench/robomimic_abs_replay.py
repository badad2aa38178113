"""Absolute-action conversion checked in simulation, on files robosuite's and robomimic's own scripts wrote.

For each demonstration of a robomimic hdf5 (default: a scripted Lift recording made with `python -m demos.robomimic
lift --out F`, i.e. robosuite's DataCollectionWrapper and robomimic's conversion and dataset_states_to_obs
scripts): convert the relative actions to absolute ones (demos.robomimic_hdf5.AbsoluteActionConverter), execute
them open-loop with the absolute controller from a recorded state, and report the largest distance to the
recorded trajectory (end effector and object position), next to the same open-loop replay of the recorded
relative actions (robomimic's own playback), from states[1] (the check) and from states[0] (robosuite's recorder
takes the first action relative to a pose it does not store; see abs_action_replay_error).

    python bench/robomimic_abs_replay.py outputs/data/lift_rm/low_dim.hdf5 [--demos 50]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demos.robomimic_hdf5 import AbsoluteActionConverter, demo_names, read_env_meta  # noqa: E402
from envs.robomimic.env import RobomimicEnv  # noqa: E402

KEYS = ["object", "robot0_eef_pos"]


def replay(env: RobomimicEnv, probe: RobomimicEnv, states: np.ndarray, actions: np.ndarray, start: int):
    """Largest end-effector and object position error (m) of an open-loop replay from states[start]."""
    env.reset(options={"state": states[start]})
    eef = obj = 0.0
    for t in range(start, len(actions) - 1):
        got, *_ = env.step(actions[t])
        ref, _ = probe.reset(options={"state": states[t + 1]})
        eef = max(eef, float(np.linalg.norm(got["robot0_eef_pos"] - ref["robot0_eef_pos"])))
        obj = max(obj, float(np.linalg.norm(got["object"][:3] - ref["object"][:3])))
    return eef, obj


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("hdf5")
    parser.add_argument("--demos", type=int, default=50)
    args = parser.parse_args()
    import h5py

    meta = read_env_meta(args.hdf5)
    converter = AbsoluteActionConverter(meta)
    absolute, relative, probe = (RobomimicEnv(meta, KEYS, abs_action=True), RobomimicEnv(meta, KEYS),
                                 RobomimicEnv(meta, KEYS))
    rows = {k: [] for k in ("abs_1", "rel_1", "abs_0", "rel_0")}
    with h5py.File(args.hdf5) as f:
        names = demo_names(f, args.hdf5)[: args.demos]
        for name in tqdm(names, desc="replay", unit="demo"):
            states, actions = f[f"data/{name}/states"][:], f[f"data/{name}/actions"][:]
            abs_actions = converter.convert(states, actions)
            for start in (1, 0):
                rows[f"abs_{start}"].append(replay(absolute, probe, states, abs_actions, start))
                rows[f"rel_{start}"].append(replay(relative, probe, states, actions, start))
    print(f"\n{meta['env_name']}, {len(names)} demonstrations of {args.hdf5}: largest position error over each "
          "episode, mm (median / max over episodes)")
    print("| actions replayed open-loop | from | end effector | object |")
    print("|---|---|---|---|")
    for key, label in (("abs_1", "absolute (converted)"), ("rel_1", "relative (recorded)"),
                       ("abs_0", "absolute (converted)"), ("rel_0", "relative (recorded)")):
        e = np.array(rows[key]) * 1000
        print(f"| {label} | states[{key[-1]}] | {np.median(e[:, 0]):.2f} / {e[:, 0].max():.2f} | "
              f"{np.median(e[:, 1]):.2f} / {e[:, 1].max():.2f} |")


if __name__ == "__main__":
    main()
