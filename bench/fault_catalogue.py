"""Bad input, tried as a careful user would: each case runs a real command in a subprocess and is classified.

    .venv/bin/python bench/fault_catalogue.py [--only NAME ...] [--data ../shared/data/pusht.zip]

Outcomes: "named" (exit 2 and one `error:` line), "ok" (exit 0, which is what the case expects), "silent" (exit 0
where an error was expected), "traceback" (any other exit, or a Python traceback). The goal is 0 silent and
0 traceback. Cases use tiny networks, a few steps and 3 scripted Push-T demonstrations made once in a temp dir.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TINY = ["policy.down_dims=[8,16]", "policy.diffusion_step_embed_dim=16", "policy.kernel_size=3", "policy.n_groups=4",
        "policy.inference_scheduler=ddim", "policy.num_inference_steps=2", "training.batch_size=8",
        "training.steps=2", "training.eval_every=0", "training.val_every=0", "eval.n_episodes=1",
        "eval.max_steps=4", "eval.n_videos=0", "wandb.mode=disabled", "training.threads=1"]


def make_demos(root: Path) -> Path:
    from demos.pusht import generate

    path = root / "demos.zarr"
    generate(path, 3, first_seed=10, workers=1)
    return path


def copy_of(src: Path, root: Path, name: str) -> Path:
    dst = root / name
    shutil.copytree(src, dst)
    return dst


def flip_chunk(path: Path, key: str) -> Path:
    chunk = next(c for c in sorted((path / "data" / key).rglob("*")) if c.is_file() and c.name != "zarr.json")
    raw = bytearray(chunk.read_bytes())
    for i in range(20, 28):
        raw[i] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    return path


def set_array(path: Path, key: str, fn) -> Path:
    import zarr

    arr = zarr.open_group(str(path), mode="a")[f"data/{key}"]
    arr[:] = fn(arr[:])
    return path


def cases(root: Path, demos: Path, ckpt: Path) -> list[tuple[str, list[str], bool]]:
    """(name, argv, an error is expected)."""
    import numpy as np

    text_zip = root / "notes.zip"
    text_zip.write_text("not a zip")
    half_zip = root / "half.zip"
    empty_dir = root / "empty.zarr"
    empty_dir.mkdir()
    a_file = root / "a_file.txt"
    a_file.write_text("x")
    truncated = root / "truncated.pt"
    truncated.write_bytes(ckpt.read_bytes()[:3000])
    not_hdf5 = root / "lift.hdf5"
    not_hdf5.write_text("text")
    from datasets import ReplayBuffer

    with ReplayBuffer.open(demos) as rb, ReplayBuffer.create(half_zip) as out:
        out.add_episode(rb.get_episode(0, rb.keys))
    half_zip.write_bytes(half_zip.read_bytes()[: half_zip.stat().st_size // 2])
    nan_val = set_array(copy_of(demos, root, "nan_action.zarr"), "action",
                        lambda a: np.where(np.arange(len(a))[:, None] == len(a) - 5, np.nan, a))
    flipped = flip_chunk(copy_of(demos, root, "flipped.zarr"), "action")
    flipped_kp = flip_chunk(copy_of(demos, root, "flipped_kp.zarr"), "keypoint")
    no_ends = copy_of(demos, root, "no_ends.zarr")
    shutil.rmtree(no_ends / "meta" / "episode_ends")
    state_only = root / "state_only.zarr"
    with ReplayBuffer.create(state_only) as rb:
        rb.add_episode({"state": np.zeros((20, 5), np.float32), "action": np.zeros((20, 2), np.float32)})
    train = ["train.py", f"dataset_path={demos}", *TINY]
    out = lambda name: f"output_dir={root / 'runs' / name}"  # noqa: E731
    return [
        ("dataset: zip cut in half", ["train.py", f"dataset_path={half_zip}", *TINY, out("a")], True),
        ("dataset: text file named .zip", ["train.py", f"dataset_path={text_zip}", *TINY, out("b")], True),
        ("dataset: empty directory", ["train.py", f"dataset_path={empty_dir}", *TINY, out("c")], True),
        ("dataset: missing path", ["train.py", f"dataset_path={root / 'nope.zarr'}", *TINY, out("d")], True),
        ("dataset: 8 flipped bytes in an action chunk", ["train.py", f"dataset_path={flipped}", *TINY, out("e")], True),
        ("dataset: flipped bytes in a keypoint chunk", ["train.py", f"dataset_path={flipped_kp}", *TINY, out("f")],
         True),
        ("dataset: NaN action in the last episode", ["train.py", f"dataset_path={nan_val}", *TINY, out("g")], True),
        ("dataset: no meta/episode_ends", ["train.py", f"dataset_path={no_ends}", *TINY, out("h")], True),
        ("dataset: without the task's keys", ["train.py", f"dataset_path={state_only}", *TINY, out("i")], True),
        ("config: training.steps=-5", [*train, "training.steps=-5", out("j")], True),
        ("config: training.batch_size=0", [*train, "training.batch_size=0", out("k")], True),
        ("config: eval.n_episodes=0", [*train, "eval.n_episodes=0", out("l")], True),
        ("config: training.checkpoint_every=-1", [*train, "training.checkpoint_every=-1", out("m")], True),
        ("config: device=cuda without CUDA", [*train, "device=cuda", out("n")], True),
        ("config: output_dir is a file", [*train, f"output_dir={a_file}"], True),
        ("config: unknown key", [*train, "training.stepz=3", out("o")], True),
        ("config: policy key typo", [*train, "policy.down_dimz=[8]", out("p")], True),
        ("config: bad policy value", [*train, "policy.inference_scheduler=euler", out("q")], True),
        ("config: unknown task", [*train, "task=pusht3d", out("r")], True),
        ("config: not key=value", [*train, "steps"], True),
        ("checkpoint: missing", ["eval.py", f"checkpoint={root / 'none.pt'}"], True),
        ("checkpoint: truncated", ["eval.py", f"checkpoint={truncated}"], True),
        ("checkpoint: another task", ["eval.py", f"checkpoint={ckpt}", "task=pusht_image"], True),
        ("checkpoint: eval.py changes the network", ["eval.py", f"checkpoint={ckpt}", "policy.down_dims=[4]"], True),
        ("checkpoint: resume with another network size",
         [*train, "policy.down_dims=[16,32]", f"output_dir={ckpt.parent.parent}"], True),
        ("robomimic: file is not HDF5", ["-m", "demos.robomimic_hdf5", "info", str(not_hdf5)], True),
        ("robomimic task without a dataset", ["train.py", "task=lift_lowdim", *TINY, out("s")], True),
        ("compare: bad policy key", ["compare.py", "run", "policies=ibc", f"output_dir={root / 'cmp'}",
                                     "ibc.policy.hiden_dim=8"], True),
        ("inspect: text file", ["-m", "datasets.inspect", str(text_zip)], True),
        ("finished run started again", [*train, f"output_dir={ckpt.parent.parent}"], False),
        ("eval.py on a good checkpoint", ["eval.py", f"checkpoint={ckpt}", "n_episodes=1", "eval.max_steps=4",
                                          "eval.n_videos=0", "wandb.mode=disabled"], False),
    ]


def classify(proc: subprocess.CompletedProcess, error_expected: bool) -> tuple[str, str]:
    err = proc.stderr.strip().splitlines()
    if "Traceback (most recent call last)" in proc.stderr or proc.returncode not in (0, 1, 2):
        return "traceback", (err[-1] if err else f"exit {proc.returncode}")[:110]
    error_lines = [line for line in err if line.startswith("error: ")]
    if proc.returncode in (1, 2) and error_lines:
        return "named", error_lines[-1][7:110]
    if proc.returncode == 0:
        last = proc.stdout.strip().splitlines()[-1:] or [""]
        return ("silent" if error_expected else "ok"), last[0][:110]
    return "traceback", (err[-1] if err else f"exit {proc.returncode}")[:110]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="run the cases whose name contains one of these")
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SDL_VIDEODRIVER": "dummy", "WANDB_MODE": "disabled",
           "MUJOCO_GL": "egl"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        demos = make_demos(root)
        good = root / "runs" / "good"
        subprocess.run([sys.executable, "train.py", f"dataset_path={demos}", *TINY, f"output_dir={good}"],
                       cwd=REPO, env=env, capture_output=True, check=True)
        for name, argv, error_expected in cases(root, demos, good / "checkpoints" / "last.pt"):
            if args.only and not any(o in name for o in args.only):
                continue
            proc = subprocess.run([sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True,
                                  timeout=600)
            outcome, message = classify(proc, error_expected)
            rows.append({"case": name, "outcome": outcome, "message": message})
            print(f"{name:48s} {outcome:10s} {message}", flush=True)
    counts = {k: sum(r["outcome"] == k for r in rows) for k in ("named", "ok", "silent", "traceback")}
    print(f"\n{len(rows)} cases: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "counts": counts}, indent=1))
    return 1 if counts["silent"] or counts["traceback"] else 0


if __name__ == "__main__":
    sys.exit(main())
