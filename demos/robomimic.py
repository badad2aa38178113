"""Scripted robomimic demonstrations (Lift, Can, Square) written as robomimic hdf5 files: no download, no human.

    python -m demos.robomimic lift --episodes 200 --out data/lift/low_dim.hdf5
    python -m demos.robomimic can --episodes 200 --cameras agentview robot0_eye_in_hand --out data/can/image.hdf5
    python -m demos.robomimic lift --episodes 200 --cameras agentview robot0_eye_in_hand \
        --out data/lift/image.hdf5 --low-dim-out data/lift/low_dim.hdf5          # both, from one recording
    python -m demos.robomimic lift --episodes 200 --out lift.hdf5 --writer direct   # our one-pass writer

The demonstrator is envs/robomimic/demonstrator.py (a waypoint controller on the true object poses, with a little
command noise). Two writers, one file format:
- `robomimic` (default): the files are made the way robomimic's published datasets were made, by robosuite's and
  robomimic's own code. robosuite's `DataCollectionWrapper` records the MuJoCo states and actions while the
  demonstrator acts (an episode runs until the task has stayed solved for 10 steps, as in robosuite's
  collect_human_demonstrations.py); that script's `gather_demonstrations_as_hdf5` keeps the successful episodes;
  robomimic's `scripts/conversion/convert_robosuite.py` adds env_args and the 90/10 train/valid masks; robomimic's
  `scripts/dataset_states_to_obs.py` replays the states into obs / next_obs / rewards / dones (`--done_mode 2`),
  with 84x84 images of `--cameras` (gzip-compressed) if asked. The robomimic scripts run unchanged in a child
  process through `python -m envs.robomimic.run_script` (it registers robomimic 0.3.0's missing imports first).
  Images are rendered as robomimic renders them (with reflections).
- `direct`: the same episodes written by our own writer in one pass, ending at the first success step, and with
  images rendered without reflections (`fast_render`: 3x faster image rollouts, docs/robomimic.md).
Episodes that do not succeed within --max-steps are dropped either way (robomimic's "ph" files hold successful
demonstrations only); the command reports the success rate over all attempts.
Convert a file to a replay buffer with `python -m demos.robomimic_hdf5 convert IN.hdf5 OUT.zarr`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from tqdm import tqdm

from common import ArgumentParser, ConfigError, DataError, on_interrupt, run_cli
from envs.robomimic.demonstrator import TASK_ENV, WaypointDemonstrator, record_episode
from envs.robomimic.env import ROBOT_LOW_DIM_KEYS, RobomimicEnv, standard_env_meta
from envs.robomimic.run_script import run_script

from .robomimic_hdf5 import write_robomimic_hdf5

WRITERS = ("robomimic", "direct")
SUCCESS_HOLD_STEPS = 10  # robosuite's collect_human_demonstrations.py stops 10 steps after the task is solved


def generate(task: str, out: str | Path, episodes: int, cameras: tuple[str, ...] = (), image_size: int = 84,
             seed: int = 0, max_steps: int = 400, noise: float = 0.05, progress: bool = True,
             overwrite: bool = False, writer: str = "robomimic", low_dim_out: str | Path | None = None,
             raw_out: str | Path | None = None) -> dict:
    """Write `episodes` successful scripted demonstrations to a robomimic hdf5; returns counts and timing.

    Seeds seed, seed+1, ... are tried until `episodes` succeed (at most 2x as many attempts). low_dim_out (robomimic
    writer): also write a file without images from the same recording, as robomimic publishes low_dim and image
    files of the same demonstrations. raw_out (robomimic writer): also keep the states-and-actions file that the
    observations were extracted from (robomimic's demo_v141.hdf5: env_args, masks, no obs).
    """
    if task not in TASK_ENV:
        raise ConfigError(f"no scripted demonstrator for task {task!r}; available: {sorted(TASK_ENV)}")
    if episodes < 1:
        raise ConfigError(f"--episodes {episodes}: expected at least 1 demonstration to record")
    if writer not in WRITERS:
        raise ConfigError(f"--writer {writer!r}: expected one of {list(WRITERS)}")
    out = Path(out)
    outputs = {out: tuple(cameras)}
    if low_dim_out is not None:
        if writer == "direct":
            raise ConfigError("--low-dim-out is for the robomimic writer; with --writer direct, run it twice")
        if Path(low_dim_out).resolve() == out.resolve():
            raise ConfigError(f"--low-dim-out {low_dim_out}: the same file as --out; expected another path")
        outputs[Path(low_dim_out)] = ()
    extra = {}
    if raw_out is not None:
        if writer == "direct":
            raise ConfigError("--raw-out is for the robomimic writer (the direct writer has no raw file)")
        extra["raw"] = Path(raw_out)
    for path, flag in [*zip(outputs, ("--out", "--low-dim-out")), *[(p, "--raw-out") for p in extra.values()]]:
        if path.exists() and not overwrite:  # said now, not after minutes of recording
            raise ConfigError(f"{flag} {path}: already exists; expected a new path (or --overwrite to replace it)")
    start = time.perf_counter()
    if writer == "direct":
        counts = _generate_direct(task, out, episodes, cameras, image_size, seed, max_steps, noise, progress)
    else:
        counts = _generate_with_robomimic(task, outputs, episodes, image_size, seed, max_steps, noise, progress,
                                          raw_out=extra.get("raw"))
    return {"path": str(out), "paths": [str(p) for p in [*outputs, *extra.values()]], "writer": writer, **counts,
            "success_rate": counts["demos"] / counts["attempts"],
            "seconds": time.perf_counter() - start}


def _try_seeds(task: str, episodes: int, progress: bool, attempt) -> int:
    """Call attempt(i) -> succeeded? for i = 0, 1, ... until `episodes` succeeded (at most 2x as many tries), with a
    progress bar; returns the number of attempts."""
    done = attempts = 0
    with tqdm(total=episodes, desc=f"{task} demos", unit="demo", disable=not progress) as bar:
        while done < episodes and attempts < 2 * episodes:
            success = bool(attempt(attempts))
            attempts += 1
            done += success
            bar.update(success)
            bar.set_postfix(success=f"{done}/{attempts}")
    return attempts


def _generate_direct(task, out, episodes, cameras, image_size, seed, max_steps, noise, progress) -> dict:
    env_meta = standard_env_meta(TASK_ENV[task], cameras=cameras, image_size=image_size)
    obs_keys = ["object", *ROBOT_LOW_DIM_KEYS, *[f"{c}_image" for c in cameras]]
    env = RobomimicEnv(env_meta, obs_keys, image_size=image_size)
    demos = []

    def attempt(i: int) -> bool:
        demo = record_episode(env, task, seed + i, max_steps, noise)
        if demo is not None:
            demos.append(demo)
        return demo is not None

    with on_interrupt(lambda again: f"nothing was saved: {out} is written once all {episodes} demonstrations are "
                                    f"recorded ({len(demos)} were); `{again}` starts again"):
        try:
            attempts = _try_seeds(task, episodes, progress, attempt)
        finally:
            env.close()
    write_robomimic_hdf5(out, demos, env_meta)
    return {"demos": len(demos), "attempts": attempts,
            "mean_length": float(np.mean([len(d["actions"]) for d in demos])) if demos else 0.0}


# ---------------------------------------------------------------- robosuite's and robomimic's own pipeline


def _robosuite_env_info(task: str) -> dict:
    """What robosuite's collection script stores as env_info (robots, controller; plus the control rate)."""
    from envs.robomimic.compat import import_robomimic

    import_robomimic()
    from robosuite.controllers import load_controller_config

    return {"env_name": TASK_ENV[task], "robots": ["Panda"], "control_freq": 20,
            "controller_configs": load_controller_config(default_controller="OSC_POSE")}


def record_with_robosuite(task: str, directory: Path, episodes: int, seed: int = 0, max_steps: int = 400,
                          noise: float = 0.05, progress: bool = True) -> dict:
    """Record scripted episodes with robosuite's DataCollectionWrapper into `directory` (ep_*/state_*.npz, model.xml).

    Every attempt is recorded; robosuite's gather step keeps the successful ones. Returns counts and env_info.
    """
    from envs.robomimic.compat import import_robomimic

    robosuite, _, _ = import_robomimic()
    from robosuite.wrappers import DataCollectionWrapper

    env_info = _robosuite_env_info(task)
    kwargs = {k: v for k, v in env_info.items() if k != "env_name"}
    env = robosuite.make(env_info["env_name"], **kwargs, has_renderer=False, has_offscreen_renderer=False,
                         ignore_done=True, use_camera_obs=False, reward_shaping=True)
    env = DataCollectionWrapper(env, str(directory))
    # The demonstrator reads the simulator through `.robosuite_env`; the wrapper forwards attributes to robosuite's env.
    view = SimpleNamespace(robosuite_env=env)
    lengths = []
    quiet = contextlib.redirect_stdout(io.StringIO())  # the wrapper prints a line per episode folder

    def attempt(i: int) -> bool:
        np.random.seed(seed + i)  # robosuite's placement samplers draw from numpy's global generator
        with quiet:
            env.reset()
        demo = WaypointDemonstrator(view, task, np.random.default_rng(seed + i), noise)
        hold, success = -1, False
        for t in range(max_steps):
            with quiet:
                env.step(demo.act())
            if env._check_success():
                hold = SUCCESS_HOLD_STEPS if hold < 0 else hold - 1
                success = True
                if hold == 0:
                    break
            else:
                hold = -1
        if success:
            lengths.append(t + 1)
        return success

    try:
        attempts = _try_seeds(task, episodes, progress, attempt)
    except BaseException:
        # An interrupt inside robosuite's hard reset leaves the simulator half torn down, and closing it then fails:
        # the interrupt is what must reach the user.
        with contextlib.suppress(Exception), quiet:
            env.close()
        raise
    with quiet:
        env.close()  # flushes the last episode
    successes = len(lengths)
    return {"demos": successes, "attempts": attempts, "mean_length": float(np.mean(lengths)) if lengths else 0.0,
            "env_info": env_info}


def _pid_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _generate_with_robomimic(task, outputs: dict[Path, tuple[str, ...]], episodes, image_size, seed, max_steps,
                             noise, progress, raw_out: Path | None = None) -> dict:
    """outputs: {hdf5 path: cameras} to extract from one recording (robomimic's dataset_states_to_obs each)."""
    out = next(iter(outputs))
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name}.{os.getpid()}.work"  # beside `out`, so the final rename is atomic
    for stale in out.parent.glob(f".{out.name}.*.work"):  # left by a run that was killed (kill -9)
        if stale == work or not _pid_alive(stale.name.rsplit(".", 2)[-2]):
            shutil.rmtree(stale, ignore_errors=True)
    (work / "raw").mkdir(parents=True)
    try:
        with on_interrupt(lambda again: f"nothing was saved: {out} is written once every demonstration is recorded "
                                        f"and converted; `{again}` starts again"):
            counts = record_with_robosuite(task, work / "raw", episodes, seed, max_steps, noise, progress)
            if counts["demos"] == 0:
                raise DataError(f"{task}: none of {counts['attempts']} scripted attempts succeeded; nothing to write")
            from envs.robomimic.compat import import_robomimic

            import_robomimic()
            from robosuite.scripts.collect_human_demonstrations import gather_demonstrations_as_hdf5

            with contextlib.redirect_stdout(io.StringIO()):  # a line per demonstration
                gather_demonstrations_as_hdf5(str(work / "raw"), str(work), json.dumps(counts.pop("env_info")))
            run_script("robomimic.scripts.conversion.convert_robosuite", "--dataset", str(work / "demo.hdf5"))
            for i, (path, cameras) in enumerate(outputs.items()):
                camera_args = (["--camera_names", *cameras, "--camera_height", str(image_size), "--camera_width",
                                str(image_size), "--compress"] if cameras else [])
                run_script("robomimic.scripts.dataset_states_to_obs", "--dataset", str(work / "demo.hdf5"),
                           "--output_name", f"out_{i}.hdf5", "--done_mode", "2", *camera_args,
                           progress_desc=f"dataset_states_to_obs -> {path.name}" if progress else None,
                           total=counts["demos"])
            moves = {work / f"out_{i}.hdf5": path for i, path in enumerate(outputs)}
            if raw_out is not None:
                moves[work / "demo.hdf5"] = raw_out
            for src, path in moves.items():
                path.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(src, path.with_name(f".{path.name}.tmp"))  # on another disk: copied, then renamed
                os.replace(path.with_name(f".{path.name}.tmp"), path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return counts


def _main(argv: list[str]) -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=sorted(TASK_ENV))
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--out", required=True, help="robomimic hdf5 file to write")
    parser.add_argument("--cameras", nargs="*", default=[], help="also store <camera>_image observations")
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=400)
    parser.add_argument("--noise", type=float, default=0.05, help="std of the Gaussian noise on the commands")
    parser.add_argument("--writer", choices=WRITERS, default="robomimic",
                        help="robomimic: robosuite's and robomimic's own scripts (default); direct: ours, one pass")
    parser.add_argument("--low-dim-out", default=None,
                        help="also write the file without images from the same recording (robomimic writer)")
    parser.add_argument("--raw-out", default=None,
                        help="also keep the states-and-actions file (robomimic's demo_v141.hdf5 layout)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    r = generate(args.task, args.out, args.episodes, tuple(args.cameras), args.image_size, args.seed,
                 args.max_steps, args.noise, overwrite=args.overwrite, writer=args.writer,
                 low_dim_out=args.low_dim_out, raw_out=args.raw_out)
    print(f"{r['demos']} demonstrations ({r['attempts']} attempts, success rate {r['success_rate']:.3f}, "
          f"{r['mean_length']:.0f} steps on average, {r['writer']} writer) in {r['seconds']:.0f} s -> "
          f"{', '.join(r['paths'])}")


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
