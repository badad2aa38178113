"""Bad input, tried as a careful user would: each case runs a real command in a subprocess and is classified.

    .venv/bin/python bench/fault_catalogue.py [--only TEXT ...] [--quick] [--full] [--json table.json]

Outcomes: "named" (exit 2 and one `error:` line), "ok" (exit 0, which is what the case expects, and the files it
leaves are right; for an interrupted command: exit 130 / 143 / 129 with one line saying what was saved), "silent"
(exit 0 where an error was expected, files left wrong, or a message that does not name the real cause), "loss"
(files that were saved are gone or changed: a run's eval.json overwritten, a checkpoint half-written), "orphan"
(a child process outlived the command), "hang" (no end within the case's time), "traceback" (any other exit, or a
Python traceback). The goal is 0 silent, 0 loss, 0 orphan, 0 hang and 0 traceback.

Interruption cases start the command in its own session, wait for a sign of progress (a file, a line), send the
signal (Ctrl-C as a terminal does: SIGINT to the process group; SIGTERM, SIGHUP, SIGKILL to the process) and then,
where a user would, run the same command again, which must continue and finish. Collision cases start a first
command, wait until it holds its place, and run the case while it is still running.
Cases use tiny networks, a few steps and 3 scripted Push-T demonstrations made once in a temp dir; every other
dataset is derived from them (low-dim keys only, unless the case is about images). `--quick` runs one case per
family (the smoke test in tests/test_bench.py); `--only` the cases whose name contains one of the texts.

The environment cases run a two-line script that calls Push-T the way user code does, through `common.run_cli`
(the wrapper every entry point uses), so that they, too, end in one line when the error is one of the project's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TINY = ["policy.down_dims=[8,16]", "policy.diffusion_step_embed_dim=16", "policy.kernel_size=3", "policy.n_groups=4",
        "policy.inference_scheduler=ddim", "policy.num_inference_steps=2", "training.batch_size=8",
        "training.steps=2", "training.eval_every=0", "training.val_every=0", "eval.n_episodes=1",
        "eval.max_steps=4", "eval.n_videos=0", "wandb.mode=disabled", "training.threads=1"]
LOWDIM_KEYS = ("keypoint", "state", "action")  # what task pusht_keypoints reads
LIFT_META = {"env_name": "Lift", "type": 1, "env_kwargs": {"robots": ["Panda"]}}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "SDL_VIDEODRIVER": "dummy",
       "WANDB_MODE": "disabled", "MUJOCO_GL": "egl", "PYTHONDONTWRITEBYTECODE": "1"}


OUTCOMES = ("named", "ok", "silent", "loss", "orphan", "hang", "traceback")


@dataclass
class Case:
    name: str
    argv: list[str]  # after `python`
    error: bool = True  # an error is expected (else a correct run)
    check: Callable[[], str | None] | None = None  # after the run: what is wrong with the files it left, or None
    fsize: int | None = None  # RLIMIT_FSIZE (bytes) of the run: a file write past it fails (EFBIG), as on a full disk
    quick: bool = False  # in the --quick subset
    signal: int | None = None  # sent once `ready()` is true (SIGINT to the process group, others to the process)
    ready: Callable[[], bool] | None = None  # the moment to signal, or (with `first`) to start the case
    then: list[str] | None = None  # after the signal: the same command again, which must end with exit 0
    first: list[str] | None = None  # a command running while the case runs (collisions); it must end with exit 0
    says: tuple[str, ...] = ()  # what the error line must name (its real cause)
    env: dict | None = None  # environment changes for the case
    shell: bool = False  # argv[0] is a shell command line (pipes)
    timeout: float = 600


# ---------------------------------------------------------------------------------------------- datasets


def make_demos(root: Path) -> Path:
    from demos.pusht import generate

    path = root / "demos.zarr"
    generate(path, 3, first_seed=10, workers=1)
    return path


def write(path: Path, episodes: list[dict], **create) -> Path:
    from datasets import ReplayBuffer

    with ReplayBuffer.create(path, **create) as rb:
        for episode in episodes:
            rb.add_episode(episode)
    return path


def edited(episodes: list[dict], key: str, fn) -> list[dict]:
    """A copy of the episodes with `fn(i, array)` applied to `key` of episode i (None drops the key)."""
    out = []
    for i, e in enumerate(episodes):
        e = dict(e)
        value = fn(i, e[key].copy())
        if value is None:
            del e[key]
        else:
            e[key] = value
        out.append(e)
    return out


def chunk_file(path: Path, key: str) -> Path:
    """The first stored chunk file of data/<key> in a directory store (v2 or v3)."""
    skip = {"zarr.json", ".zarray", ".zattrs"}
    return next(c for c in sorted((path / "data" / key).rglob("*")) if c.is_file() and c.name not in skip)


def change_bytes(file: Path, start: int, stop: int, value: int | None = None) -> None:
    raw = bytearray(file.read_bytes())
    for i in range(start, stop):
        raw[i] = raw[i] ^ 0xFF if value is None else value
    file.write_bytes(bytes(raw))


def flip_zip_member(path: Path, suffix: str) -> Path:
    """Flip 8 bytes in the middle of the first member whose name ends with `suffix` (members are stored)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(suffix))
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.compress_size // 2
    for i in range(start, start + 8):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def set_meta(path: Path, name: str, values) -> Path:
    """Overwrite meta/<name> of a directory store with `values` (shape and dtype as given)."""
    import zarr

    g = zarr.open_group(str(path), mode="a")
    del g[f"meta/{name}"]
    g.create_array(f"meta/{name}", data=values)
    return path


def robomimic_hdf5(path: Path, env_args: str | None, n_demos: int = 2) -> Path:
    import h5py
    import numpy as np

    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        if env_args is not None:
            data.attrs["env_args"] = env_args
        for i in range(n_demos):
            g = data.create_group(f"demo_{i}")
            g.create_dataset("actions", data=np.zeros((10, 7), np.float32))
            g.create_dataset("states", data=np.zeros((10, 32)))
            g.create_dataset("obs/object", data=np.zeros((10, 10)))
    return path


# ---------------------------------------------------------------------------------------------- checks


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def unchanged(files: dict[Path, str], absent: list[Path] = (), no_tmp_in: list[Path] = ()) -> Callable[[], str | None]:
    """A check: the files still have these hashes (else "loss: ..."), the `absent` paths do not exist and no
    temporary file (`.*.tmp`) is left in the `no_tmp_in` folders."""
    def check():
        for f, digest in files.items():
            if not f.is_file():
                return f"loss: {f} is gone"
            if sha(f) != digest:
                return f"loss: {f} was changed"
        left = [str(p) for p in absent if p.exists()] + [str(t) for d in no_tmp_in for t in d.glob(".*.tmp")]
        return f"left behind: {left}" if left else None
    return check


def all_of(*checks: Callable[[], str | None]) -> Callable[[], str | None]:
    def check():
        return next((problem for c in checks if (problem := c())), None)
    return check


def exists(*paths: Path) -> Callable[[], str | None]:
    def check():
        missing = [str(p) for p in paths if not p.exists()]
        return f"not written: {missing}" if missing else None
    return check


def episodes_like(path: Path, reference: Path) -> Callable[[], str | None]:
    """A check: the buffer at `path` equals `reference` (an uninterrupted run of the same command), and is finished."""
    def check():
        import numpy as np

        from datasets import ReplayBuffer

        if not path.exists():
            return f"loss: {path} is gone"
        with ReplayBuffer.open(path) as a, ReplayBuffer.open(reference) as b:
            if "in_progress" in a.attrs:
                return f"{path}: still marked unfinished"
            if a.n_episodes != b.n_episodes or not np.array_equal(a.episode_ends, b.episode_ends) or any(
                    not np.array_equal(a.read(k), b.read(k)) for k in b.keys):
                return f"{path}: {a.n_episodes} episodes, not those of an uninterrupted run ({b.n_episodes})"
        return None
    return check


def json_field(path: Path, test: Callable[[dict], bool], what: str) -> Callable[[], str | None]:
    def check():
        if not path.is_file():
            return f"not written: {path}"
        return None if test(json.loads(path.read_text())) else f"{path}: {what}"
    return check


def file_exists(path: Path) -> Callable[[], bool]:
    return lambda: path.exists()


def same_eval(a: Path, b: Path, first: Callable[[], object]) -> Callable[[], str | None]:
    """A check: the eval.json files a and b hold the same numbers (`first()` makes a when it is missing)."""
    def check():
        if not a.is_file():
            first()
        ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
        keys = ("mean_max_reward", "success_rate")
        if [ra[k] for k in keys] != [rb[k] for k in keys] or ra["episodes"] != rb["episodes"]:
            return f"two evaluations differ: {[ra[k] for k in keys]} vs {[rb[k] for k in keys]}"
        return None
    return check


# ---------------------------------------------------------------------------------------------- the cases


def env_script(body: str) -> list[str]:
    """`python -c` of user code that drives Push-T through run_cli (see the module docstring)."""
    return ["-c", ("import sys\nfrom common import run_cli\nfrom envs.pusht import PushTEnv\n"
                   f"def main(argv):\n    env = PushTEnv(obs_type='state')\n    {body}\n"
                   "sys.exit(run_cli(main))")]


def cases(root: Path, demos: Path, good: Path) -> list[Case]:
    import numpy as np
    import torch

    from datasets import ReplayBuffer

    ckpt = good / "checkpoints" / "last.pt"
    with ReplayBuffer.open(demos) as rb:
        full = [rb.get_episode(i) for i in range(rb.n_episodes)]
    low = [{k: e[k] for k in LOWDIM_KEYS} for e in full]
    n_last = len(low[-1]["action"])

    def data(name: str, episodes=None, **create) -> Path:
        return write(root / name, low if episodes is None else episodes, **create)

    def train(path, *extra, run: str) -> list[str]:
        return ["train.py", f"dataset_path={path}", *TINY, f"output_dir={root / 'runs' / run}", *extra]

    # -------- files that are not replay buffers
    text_zip = root / "notes.zip"
    text_zip.write_text("not a zip")
    text_file = root / "notes.txt"
    text_file.write_text("x")
    empty_dir = root / "empty.zarr"
    empty_dir.mkdir()
    half_zip = write(root / "half.zip", low[:1])
    half_zip.write_bytes(half_zip.read_bytes()[: half_zip.stat().st_size // 2])
    other_zip = root / "photos.zip"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("readme.txt", "holiday photos")
        zf.writestr("img/0.png", b"\x89PNG....")
    hdf5_data = robomimic_hdf5(root / "lift_demos.hdf5", json.dumps(LIFT_META))

    # -------- corrupt stores: v3 directory (CRC-32C per chunk), v3 zip, v2 directory (no checksum), v2 zip
    flipped = data("flipped.zarr")
    change_bytes(chunk_file(flipped, "action"), 20, 28)
    flipped_kp = data("flipped_kp.zarr")
    change_bytes(chunk_file(flipped_kp, "keypoint"), 20, 28)
    blosc_header = data("blosc_header.zarr")
    change_bytes(chunk_file(blosc_header, "state"), 0, 16)
    truncated_chunk = data("truncated_chunk.zarr")
    c = chunk_file(truncated_chunk, "state")
    c.write_bytes(c.read_bytes()[: c.stat().st_size // 2])
    zip_v3 = flip_zip_member(data("member.zip"), "data/state/c/0/0")
    v2 = data("v2.zarr", zarr_format=2)
    v2_header = data("v2_header.zarr", zarr_format=2)
    change_bytes(chunk_file(v2_header, "action"), 0, 16, value=0)
    v2_truncated = data("v2_truncated.zarr", zarr_format=2)
    c = chunk_file(v2_truncated, "action")
    c.write_bytes(c.read_bytes()[:-40])
    zip_v2 = flip_zip_member(data("member_v2.zip", zarr_format=2), "data/keypoint/0.0.0")

    # -------- structure: episode_ends, lengths, shapes, dtypes, values
    no_ends = data("no_ends.zarr")
    shutil.rmtree(no_ends / "meta" / "episode_ends")
    lengths = np.cumsum([len(e["action"]) for e in low])
    decreasing = set_meta(data("decreasing.zarr"), "episode_ends", np.array([lengths[1], lengths[0], lengths[2]]))
    past_end = set_meta(data("past_end.zarr"), "episode_ends", np.array([*lengths[:2], lengths[2] + 50]))
    float_ends = set_meta(data("float_ends.zarr"), "episode_ends", lengths.astype(np.float64))
    zero_episodes = set_meta(data("zero_episodes.zarr"), "episode_ends", np.zeros(0, np.int64))
    state_only = data("state_only.zarr", [{"state": e["state"], "action": e["action"]} for e in low])
    action3 = data("action3.zarr", edited(low, "action", lambda i, a: np.concatenate([a, a[:, :1]], axis=1)))
    kp_shape = data("kp_shape.zarr", edited(low, "keypoint", lambda i, a: np.concatenate([a, a[..., :1]], axis=2)))
    bool_action = data("bool_action.zarr", edited(low, "action", lambda i, a: a > 256))
    complex_state = data("complex_state.zarr", edited(low, "state", lambda i, a: a.astype(np.complex64)))
    short = data("short.zarr", [{k: v[:5] for k, v in e.items()} for e in low])

    def with_value(i_episode, row, value, key, col=0):
        def fn(i, a):
            if i == i_episode:
                a[row, col] = value
            return a
        return edited(low, key, fn)

    nan_val = data("nan_val.zarr", with_value(2, n_last - 5, np.nan, "action"))
    nan_train = data("nan_train.zarr", with_value(0, 17, np.nan, "action", 1))
    inf_state = data("inf_state.zarr", with_value(1, 3, np.inf, "state"))

    # -------- image datasets (task pusht_image): 3 short synthetic episodes
    rng = np.random.default_rng(0)

    def images(name, shape, dtype=np.uint8, scale=255):
        eps = [{"img": (rng.random((20, *shape)) * scale).astype(dtype), "state": e["state"][:20],
                "action": e["action"][:20]} for e in low]
        return data(name, eps)

    img64 = images("img64.zarr", (64, 64, 3))
    img_chw = images("img_chw.zarr", (3, 96, 96))
    img_unit = images("img_unit.zarr", (96, 96, 3), np.float32, 1.0)

    # -------- a robomimic-style buffer (env_meta of Lift)
    lift = root / "lift.zarr"
    with ReplayBuffer.create(lift) as rb:
        rb.add_episode({"object": np.zeros((20, 10), np.float32), "robot0_eef_pos": np.zeros((20, 3), np.float32),
                        "action": np.zeros((20, 7), np.float32)})
        rb.update_attrs(env_meta=LIFT_META, abs_action=False)

    # -------- checkpoints
    truncated_pt = root / "truncated.pt"
    truncated_pt.write_bytes(ckpt.read_bytes()[:3000])
    saved = torch.load(ckpt, weights_only=False)
    bare = root / "state_dict.pt"
    torch.save(saved["policy"], bare)
    older = root / "older.pt"  # an older version of the code: no task_spec, no eval/wandb sections, an extra key
    torch.save({**{k: v for k, v in saved.items() if k != "task_spec"},
                "config": {k: v for k, v in saved["config"].items() if k not in ("eval", "wandb")} | {"amp": True}},
               older)
    removed_field = root / "removed_field.pt"
    torch.save({**saved, "policy_config": {**saved["policy_config"], "obs_as_global_cond": True}}, removed_field)
    nan_weights = root / "nan_weights.pt"
    diverged = {k: v.clone().fill_(float("nan")) if k.startswith("model.") and v.is_floating_point() else v
                for k, v in saved["ema"]["averaged"].items()}  # a network that diverged, its normalizer intact
    torch.save({**saved, "ema": {**saved["ema"], "averaged": diverged}}, nan_weights)
    old_resume = root / "runs" / "old_resume"  # a run of an older version: no optimizer/rng state saved
    shutil.copytree(good, old_resume)
    torch.save({k: v for k, v in saved.items() if k not in ("optimizer", "lr_scheduler", "rng")},
               old_resume / "checkpoints" / "last.pt")
    full_disk = root / "runs" / "full_disk"
    shutil.copytree(good, full_disk)
    full_last = full_disk / "checkpoints" / "last.pt"
    keep = {full_last: sha(full_last), full_disk / "eval.json": sha(full_disk / "eval.json")}

    base = ["train.py", f"dataset_path={demos}", *TINY]

    def out(name: str) -> str:
        return f"output_dir={root / 'runs' / name}"

    def eval_(path: Path, *extra: str) -> list[str]:
        return ["eval.py", f"checkpoint={path}", "n_episodes=1", "eval.max_steps=4", "eval.n_videos=0",
                "wandb.mode=disabled", "training.threads=1", *extra]

    def eval_first() -> None:
        subprocess.run([sys.executable, *eval_(ckpt, f"output_dir={root / 'ev1'}")], cwd=REPO, env=ENV,
                       capture_output=True, check=False)

    return [
        # ---- datasets: files that are not replay buffers
        Case("dataset: zip cut in half", train(half_zip, run="a")),
        Case("dataset: text file named .zip", train(text_zip, run="b")),
        Case("dataset: path is a text file", train(text_file, run="b2")),
        Case("dataset: a robomimic .hdf5 given directly", train(hdf5_data, "task=lift_lowdim", run="b3")),
        Case("dataset: .zip without a zarr inside", train(other_zip, run="b4")),
        Case("dataset: empty directory", train(empty_dir, run="c")),
        Case("dataset: missing path", train(root / "nope.zarr", run="d"), quick=True),
        Case("dataset: dataset_path= (empty)", [*base[:1], "dataset_path=", *TINY, out("d2")]),
        # ---- datasets: corrupt chunks, every store layout
        Case("dataset: 8 flipped bytes in an action chunk", train(flipped, run="e"), quick=True),
        Case("dataset: flipped bytes in a keypoint chunk", train(flipped_kp, run="f")),
        Case("dataset: corrupted Blosc header (v3 dir)", train(blosc_header, run="f2")),
        Case("dataset: truncated chunk (v3 dir)", train(truncated_chunk, run="f3")),
        Case("dataset: corrupt zip member (v3 zip, CRC)", train(zip_v3, run="f4")),
        Case("dataset: zeroed Blosc header (v2 dir)", train(v2_header, run="f5")),
        Case("dataset: truncated chunk (v2 dir)", train(v2_truncated, run="f6")),
        Case("dataset: corrupt zip member (v2 zip, CRC)", train(zip_v2, run="f7")),
        Case("dataset: zarr v2 directory trains", train(v2, run="f8"), error=False),
        # ---- datasets: structure and values
        Case("dataset: no meta/episode_ends", train(no_ends, run="h")),
        Case("dataset: decreasing episode_ends", train(decreasing, run="h2")),
        Case("dataset: episode_ends past the data", train(past_end, run="h3")),
        Case("dataset: float episode_ends", train(float_ends, run="h4")),
        Case("dataset: 0 episodes", train(zero_episodes, run="h5")),
        Case("dataset: without the task's keys", train(state_only, run="i")),
        Case("dataset: action of dimension 3 (2-D task)", train(action3, run="i2")),
        Case("dataset: keypoint of shape (9, 3)", train(kp_shape, run="i3")),
        Case("dataset: boolean actions", train(bool_action, run="i4")),
        Case("dataset: complex-valued state", train(complex_state, run="i5")),
        Case("dataset: episodes shorter than the horizon", train(short, run="i6")),
        Case("dataset: NaN action in a validation episode", train(nan_val, run="g"), quick=True),
        Case("dataset: NaN action in a training episode", train(nan_train, run="g2")),
        Case("dataset: inf in state", train(inf_state, run="g3")),
        Case("dataset: images 64x64 for pusht_image", train(img64, "task=pusht_image", run="j1")),
        Case("dataset: images channel-first", train(img_chw, "task=pusht_image", run="j2")),
        Case("dataset: float images in 0..1", train(img_unit, "task=pusht_image", run="j3")),
        Case("dataset: Push-T data for task lift_lowdim", [*base, "task=lift_lowdim", out("j4")]),
        Case("dataset: Lift data for task can_lowdim", train(lift, "task=can_lowdim", run="j5")),
        Case("dataset: Lift data for task pusht_keypoints", train(lift, run="j6")),
        # ---- config
        Case("config: training.steps=-5", [*base, "training.steps=-5", out("k1")], quick=True),
        Case("config: training.batch_size=0", [*base, "training.batch_size=0", out("k2")]),
        Case("config: training.batch_size=-8", [*base, "training.batch_size=-8", out("k3")]),
        Case("config: eval.n_episodes=0", [*base, "eval.n_episodes=0", out("k4")]),
        Case("config: training.checkpoint_every=-1", [*base, "training.checkpoint_every=-1", out("k5")]),
        Case("config: training.steps=abc", [*base, "training.steps=abc", out("k6")]),
        Case("config: training.steps=2.5", [*base, "training.steps=2.5", out("k7")]),
        Case("config: seed=-1", [*base, "seed=-1", out("k8")]),
        Case("config: seed=2**40", [*base, f"seed={2 ** 40}", out("k9")]),
        Case("config: device=cuda without CUDA", [*base, "device=cuda", out("l1")]),
        Case("config: device=tpu", [*base, "device=tpu", out("l2")]),
        Case("config: wandb.mode=onlin", [*base, "wandb.mode=onlin", out("l3")]),
        Case("config: output_dir is a file", [*base, f"output_dir={text_file}"]),
        Case("config: output_dir inside a file", [*base, f"output_dir={text_file / 'run'}"]),
        Case("config: output_dir not writable", [*base, "output_dir=/sys/diffusion_stack_run"]),
        Case("config: unknown key", [*base, "training.stepz=3", out("m1")]),
        Case("config: unknown section", [*base, "trainig.steps=3", out("m2")]),
        Case("config: policy key typo", [*base, "policy.down_dimz=[8]", out("m3")]),
        Case("config: bad policy value", [*base, "policy.inference_scheduler=euler", out("m4")]),
        Case("config: policy.down_dims=[]", [*base, "policy.down_dims=[]", out("m5")]),
        Case("config: policy.horizon=9 (this UNet needs 2k)", [*base, "policy.horizon=9", out("m6")]),
        Case("config: unknown task", [*base, "task=pusht3d", out("m7")]),
        Case("config: unknown policy", [*base, "policy=diffusion_unet3", out("m8")]),
        Case("config: not key=value", [*base, "steps"]),
        # ---- checkpoints
        Case("checkpoint: missing", ["eval.py", f"checkpoint={root / 'none.pt'}"], quick=True),
        Case("checkpoint: eval.py without checkpoint=", ["eval.py", "n_episodes=1"]),
        Case("checkpoint: a run directory, not the .pt", ["eval.py", f"checkpoint={good}"]),
        Case("checkpoint: a dataset zip", ["eval.py", f"checkpoint={zip_v3}"]),
        Case("checkpoint: truncated", ["eval.py", f"checkpoint={truncated_pt}"]),
        Case("checkpoint: a bare state_dict", ["eval.py", f"checkpoint={bare}"]),
        Case("checkpoint: older version (no task_spec/eval)", eval_(older, f"output_dir={root / 'ev_old'}"),
             error=False),
        Case("checkpoint: a policy field this code lacks", eval_(removed_field)),
        Case("checkpoint: NaN weights", eval_(nan_weights, f"output_dir={root / 'ev_nan'}")),
        Case("checkpoint: another task", ["eval.py", f"checkpoint={ckpt}", "task=pusht_image"]),
        Case("checkpoint: another policy", ["eval.py", f"checkpoint={ckpt}", "policy=ibc"]),
        Case("checkpoint: eval.py changes the network", ["eval.py", f"checkpoint={ckpt}", "policy.down_dims=[4]"]),
        Case("checkpoint: eval.py n_episodes=0", ["eval.py", f"checkpoint={ckpt}", "n_episodes=0"]),
        Case("checkpoint: eval.py output_dir is a file", eval_(ckpt, f"output_dir={text_file}")),
        Case("checkpoint: resume with another network size",
             [*base, "policy.down_dims=[16,32]", f"output_dir={good}"]),
        Case("checkpoint: resume into another task's run", [*base, "task=pusht_lowdim", f"output_dir={good}"]),
        Case("checkpoint: resume an older run without optimizer",
             [*base, "training.steps=3", f"output_dir={old_resume}"]),
        Case("checkpoint: disk full while writing last.pt", [*base, "training.steps=4", f"output_dir={full_disk}"],
             check=unchanged(keep, no_tmp_in=[full_disk / "checkpoints"]), fsize=full_last.stat().st_size // 2),
        # ---- robomimic files
        Case("robomimic: file is not HDF5", ["-m", "demos.robomimic_hdf5", "info", str(text_file)]),
        Case("robomimic: hdf5 without env_args",
             ["-m", "demos.robomimic_hdf5", "convert", str(robomimic_hdf5(root / "no_env.hdf5", None)),
              str(root / "no_env.zarr")]),
        Case("robomimic: env_args not JSON",
             ["-m", "demos.robomimic_hdf5", "info", str(robomimic_hdf5(root / "bad_env.hdf5", "{Lift"))]),
        Case("robomimic: hdf5 with no demos",
             ["-m", "demos.robomimic_hdf5", "info", str(robomimic_hdf5(root / "no_demos.hdf5", json.dumps(LIFT_META),
                                                                       n_demos=0))]),
        Case("robomimic: convert onto an existing output",
             ["-m", "demos.robomimic_hdf5", "convert", str(hdf5_data), str(lift)]),
        Case("robomimic task without a dataset", ["train.py", "task=lift_lowdim", *TINY, out("r1")]),
        # ---- the environment, from user code
        Case("env: reset_to_state='abcde'", env_script("env.reset(options={'reset_to_state': 'abcde'})"), quick=True),
        Case("env: reset_to_state outside the walls",
             env_script("env.reset(options={'reset_to_state': [600, 100, 256, 256, 0]})")),
        Case("env: reset_to_state of 4 numbers", env_script("env.reset(options={'reset_to_state': [1, 2, 3, 4]})")),
        Case("env: boolean action", env_script("env.reset(seed=0); env.step([True, False])")),
        Case("env: action of 3 numbers", env_script("env.reset(seed=0); env.step([1.0, 2.0, 3.0])")),
        Case("env: NaN action", env_script("env.reset(seed=0); env.step([float('nan'), 0.0])")),
        Case("env: unknown obs_type", env_script("PushTEnv(obs_type='pixels')")),
        # ---- other entry points
        Case("compare: bad policy key", ["compare.py", "run", "policies=ibc", f"output_dir={root / 'cmp'}",
                                         "ibc.policy.hiden_dim=8"]),
        Case("compare: unknown policy", ["compare.py", "run", "policies=diffusion,ibc", f"output_dir={root / 'cmp'}"]),
        Case("inspect: text file", ["-m", "datasets.inspect", str(text_zip)]),
        Case("inspect --verify: flipped action chunk", ["-m", "datasets.inspect", "--verify", str(flipped)]),
        Case("inspect --verify: NaN action", ["-m", "datasets.inspect", "--verify", str(nan_train)]),
        Case("inspect --verify: a good v2 directory", ["-m", "datasets.inspect", "--verify", str(v2)], error=False),
        # ---- correct runs
        Case("finished run started again", [*base, f"output_dir={good}"], error=False,
             check=unchanged({good / "eval.json": sha(good / "eval.json"), ckpt: sha(ckpt)})),
        Case("eval.py on a good checkpoint", eval_(ckpt, f"output_dir={root / 'ev1'}"), error=False),
        Case("eval.py again: the same numbers", eval_(ckpt, f"output_dir={root / 'ev2'}"), error=False,
             check=same_eval(root / "ev1" / "eval.json", root / "ev2" / "eval.json", eval_first)),
    ]


def writer_cases(root: Path, demos: Path, good: Path) -> list[Case]:
    """The families of interruptions, resumed runs, collisions, degenerate values, the world outside and messages."""
    from datasets import ReplayBuffer
    from demos.pusht import generate

    runs = root / "runs"
    ckpt = good / "checkpoints" / "last.pt"
    tiny = [a for a in TINY if not a.startswith("training.steps")]

    def train(name: str, *extra: str, steps: int = 2, data: Path = demos) -> list[str]:
        return ["train.py", f"dataset_path={data}", *tiny, f"training.steps={steps}", f"output_dir={runs / name}",
                *extra]

    def eval_(*extra: str) -> list[str]:
        return ["eval.py", f"checkpoint={ckpt}", "n_episodes=1", "eval.max_steps=4", "eval.n_videos=0",
                "wandb.mode=disabled", "training.threads=1", *extra]

    def checkpoint_of(name: str) -> Callable[[], bool]:
        return file_exists(runs / name / "checkpoints" / "last.pt")

    def finished(name: str, steps: int) -> Callable[[], str | None]:
        run = runs / name
        return all_of(json_field(run / "eval.json", lambda r: r.get("step") == steps, f"not finished at {steps}"),
                      unchanged({}, no_tmp_in=[run, run / "checkpoints"]),
                      lambda: f"lock left: {run / '.lock'}" if (run / ".lock").exists() else None)

    long_train = ["training.checkpoint_every=25"]
    ref = generate(root / "ref12.zarr", 12, first_seed=40, workers=2)["output"]
    ref = Path(ref)

    def demos_cmd(out: Path, n: int = 12) -> list[str]:
        return ["-m", "demos.pusht", "--episodes", str(n), "--first-seed", "40", "--output", str(out), "--workers", "2"]

    def has_episodes(path: Path, n: int = 1) -> Callable[[], bool]:
        def ready():
            try:
                with warnings.catch_warnings():  # the tail of an episode being written
                    warnings.simplefilter("ignore")
                    with ReplayBuffer.open(ReplayBuffer._write_target(path)) as rb:
                        return rb.n_episodes >= n
            except Exception:
                return False
        return ready

    # a stale lock (a process that is gone) and a lock from another machine, in copies of the finished run
    stale = runs / "stale_lock"
    shutil.copytree(good, stale)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (stale / ".lock").write_text(json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename,
                                             "command": "python train.py (killed)", "since": "earlier"}))
    (stale / "checkpoints" / f".last.pt.{int(dead.stdout)}.tmp").write_bytes(b"half a checkpoint")
    foreign = runs / "foreign_lock"
    shutil.copytree(good, foreign)
    (foreign / ".lock").write_text(json.dumps({"pid": 1, "host": "gpu-node-7", "command": "python train.py",
                                               "since": "earlier"}))
    # a run dir whose eval.json eval.py must not overwrite
    target = runs / "eval_into_run"
    shutil.copytree(good, target)
    keep_eval = {target / "eval.json": sha(target / "eval.json")}
    # a folder with two datasets, one with ~ and $VARS, links that loop or point nowhere
    two = root / "two_datasets"
    two.mkdir()
    shutil.copytree(demos, two / "a.zarr")
    shutil.copytree(demos, two / "b.zarr")
    (root / "loop").symlink_to(root / "loop")
    (root / "dangling").symlink_to(root / "nowhere")
    home = root / "home"
    (home / "data").mkdir(parents=True)
    shutil.copytree(demos, home / "data" / "demos.zarr")
    v2 = write(root / "v2_warn.zarr", [ReplayBuffer.open(demos).get_episode(i, list(LOWDIM_KEYS)) for i in range(3)],
               zarr_format=2)
    compare_args = [f"dataset_path={demos}", "training.steps=100000", "training.checkpoint_every=25",
                    *[f"diffusion_unet.{a}" for a in TINY[:4]], "lstm_gmm.policy.rnn_hidden_dim=16",
                    "training.batch_size=8", "training.eval_every=0", "training.val_every=0", "eval.n_episodes=1",
                    "wandb.mode=disabled"]
    # an unfinished buffer of 12 episodes (its writer gone): asked for 13, the generator must not continue it
    other_plan = root / "other_plan.zarr"
    with ReplayBuffer.create_or_continue(other_plan, {"command": "demos.pusht", "episodes": 12, "first_seed": 40,
                                                      "keep_failures": False}) as rb:
        rb.add_episode(ReplayBuffer.open(ref).get_episode(0))
        rb.update_attrs(in_progress={**rb.attrs["in_progress"], "seeds": [40],
                                     "writer": {"pid": int(dead.stdout), "host": os.uname().nodename}})
    no_key = {"WANDB_API_KEY": "", "HOME": str(home), "NETRC": str(home / ".netrc")}
    # a run on data that is then replaced at the same path by other demonstrations (same number of episodes)
    replaced = root / "replaced.zarr"
    shutil.copytree(demos, replaced)
    subprocess.run([sys.executable, *train("replaced", data=replaced)], cwd=REPO, env=ENV, capture_output=True,
                   check=True)
    shutil.rmtree(replaced)
    generate(replaced, 3, first_seed=60, workers=1)
    sig = signal

    return [
        # ---- interruptions: every command, every signal; the same command afterwards continues
        Case("interrupt: Ctrl-C in train.py, then the same command", train("int_a", *long_train, steps=1500),
             signal=sig.SIGINT, ready=checkpoint_of("int_a"), then=train("int_a", *long_train, steps=1500),
             check=finished("int_a", 1500), quick=True),
        Case("interrupt: SIGTERM in train.py, then the same command", train("int_b", *long_train, steps=1500),
             signal=sig.SIGTERM, ready=checkpoint_of("int_b"), then=train("int_b", *long_train, steps=1500),
             check=finished("int_b", 1500)),
        Case("interrupt: SIGHUP (terminal closed) in train.py", train("int_c", *long_train, steps=1500),
             signal=sig.SIGHUP, ready=checkpoint_of("int_c"), then=train("int_c", *long_train, steps=1500),
             check=finished("int_c", 1500)),
        Case("interrupt: SIGKILL in train.py, then the same command", train("int_d", *long_train, steps=1500),
             signal=sig.SIGKILL, ready=checkpoint_of("int_d"), then=train("int_d", *long_train, steps=1500),
             check=finished("int_d", 1500)),
        Case("interrupt: Ctrl-C before the first checkpoint", train("int_e", "training.checkpoint_every=100000",
                                                                    steps=100000),
             signal=sig.SIGINT, ready=file_exists(runs / "int_e" / "config.json")),
        Case("interrupt: Ctrl-C in eval.py", eval_(f"output_dir={root / 'ev_int'}", "n_episodes=50",
                                                  "eval.max_steps=300", "n_envs=1"),
             signal=sig.SIGINT, ready=lambda: time.sleep(6) or True,
             check=lambda: f"{root / 'ev_int' / 'eval.json'} written" if (root / "ev_int" / "eval.json").exists()
             else None),
        Case("interrupt: Ctrl-C in demos.pusht, then the same command", demos_cmd(root / "int_demos.zarr"),
             signal=sig.SIGINT, ready=has_episodes(root / "int_demos.zarr", 2), then=demos_cmd(root / "int_demos.zarr"),
             check=episodes_like(root / "int_demos.zarr", ref)),
        Case("interrupt: SIGTERM in demos.pusht (.zip), then again", demos_cmd(root / "int_demos.zip"),
             signal=sig.SIGTERM, ready=has_episodes(root / "int_demos.zip", 2), then=demos_cmd(root / "int_demos.zip"),
             check=episodes_like(root / "int_demos.zip", ref)),
        Case("interrupt: SIGKILL in demos.pusht, workers die, then again", demos_cmd(root / "kill_demos.zarr"),
             signal=sig.SIGKILL, ready=has_episodes(root / "kill_demos.zarr", 2),
             then=demos_cmd(root / "kill_demos.zarr"), check=episodes_like(root / "kill_demos.zarr", ref)),
        Case("interrupt: SIGHUP in demos.pusht, then again", demos_cmd(root / "hup_demos.zarr"),
             signal=sig.SIGHUP, ready=has_episodes(root / "hup_demos.zarr", 2), then=demos_cmd(root / "hup_demos.zarr"),
             check=episodes_like(root / "hup_demos.zarr", ref)),
        Case("interrupt: Ctrl-C in demos.robomimic (robosuite)",
             ["-m", "demos.robomimic", "lift", "--episodes", "5000", "--out", str(root / "int_lift.hdf5")],
             signal=sig.SIGINT, ready=lambda: time.sleep(15) or True,
             check=lambda: f"{root / 'int_lift.hdf5'} written" if (root / "int_lift.hdf5").exists() or list(
                 root.glob(".int_lift.hdf5.*")) else None),
        Case("interrupt: SIGTERM in compare.py run (its train.py stop)",
             ["compare.py", "run", "policies=diffusion_unet,lstm_gmm", "parallel=2", f"output_dir={root / 'cmp_int'}",
              *compare_args],
             signal=sig.SIGTERM,
             ready=lambda: all((root / "cmp_int" / f"{p}_seed0" / "checkpoints" / "last.pt").exists()
                               for p in ("diffusion_unet", "lstm_gmm"))),
        Case("interrupt: SIGKILL in compare.py run (its train.py die too)",
             ["compare.py", "run", "policies=diffusion_unet,lstm_gmm", "parallel=2", f"output_dir={root / 'cmp_kill'}",
              *compare_args],
             signal=sig.SIGKILL,
             ready=lambda: all((root / "cmp_kill" / f"{p}_seed0" / "checkpoints" / "last.pt").exists()
                               for p in ("diffusion_unet", "lstm_gmm"))),
        # ---- a resumed run must be the run it resumes
        Case("resume: another dataset", [*train("x", data=root / "two_datasets" / "a.zarr")[:-1],
                                         f"output_dir={good}"], says=("dataset",)),
        Case("resume: another seed", [*train("x")[:-1], "seed=7", f"output_dir={good}"], says=("seed",), quick=True),
        Case("resume: another learning rate", [*train("x")[:-1], "policy.optimizer_lr=0.01", f"output_dir={good}"],
             says=("optimizer_lr",)),
        Case("resume: another horizon", [*train("x")[:-1], "policy.horizon=8", f"output_dir={good}"],
             says=("horizon",)),
        Case("resume: another recipe", [*train("x")[:-1], "recipe=quickstart", f"output_dir={good}"],
             says=("optimizer_lr",)),
        Case("resume: the same path holding other data", train("replaced", data=replaced), says=("dataset.",)),
        Case("resume: more steps continue (allowed)", train("more", steps=2), error=False,
             then=train("more", steps=4), check=finished("more", 4)),
        # ---- two writers, one place
        Case("collision: two train.py on one output_dir", train("busy", *long_train, steps=600),
             first=train("busy", *long_train, steps=600), ready=file_exists(runs / "busy" / ".lock"),
             says=("in use by pid",), quick=True),
        Case("collision: a stale lock (its process is gone)", [*train("x")[:-1], "training.steps=3",
                                                                f"output_dir={stale}"], error=False,
             check=all_of(json_field(stale / "eval.json", lambda r: r.get("step") == 3, "not resumed to step 3"),
                          unchanged({}, no_tmp_in=[stale / "checkpoints"]))),
        Case("collision: a lock held on another machine", [*train("x")[:-1], f"output_dir={foreign}"],
             says=("gpu-node-7", ".lock")),
        Case("collision: eval.py output_dir=<a run dir>", eval_(f"output_dir={target}"), error=False,
             check=all_of(unchanged(keep_eval), exists(target / "eval" / "eval.json"))),
        Case("collision: two eval.py into one output_dir", eval_(f"output_dir={root / 'ev_busy'}"),
             first=eval_(f"output_dir={root / 'ev_busy'}", "n_episodes=20", "eval.max_steps=300", "n_envs=1"),
             ready=file_exists(root / "ev_busy" / ".lock"), says=("in use by pid",)),
        Case("collision: two demos.pusht into one output", demos_cmd(root / "busy_demos.zarr"),
             first=demos_cmd(root / "busy_demos.zarr"), ready=has_episodes(root / "busy_demos.zarr", 1),
             says=("being written by",)),
        Case("collision: demos.pusht onto a finished buffer", demos_cmd(ref), says=("already exists",)),
        Case("collision: an unfinished buffer of other settings", demos_cmd(other_plan, 13), says=("another run",)),
        # ---- degenerate values
        Case("degenerate: demos.pusht --episodes 0", ["-m", "demos.pusht", "--episodes", "0", "--output",
                                                      str(root / "zero.zarr")], quick=True),
        Case("degenerate: demos.pusht --episodes -3", ["-m", "demos.pusht", "--episodes", "-3", "--output",
                                                       str(root / "neg.zarr")]),
        Case("degenerate: demos.pusht --workers 0", ["-m", "demos.pusht", "--episodes", "2", "--workers", "0",
                                                     "--output", str(root / "w0.zarr")]),
        Case("degenerate: demos.pusht --episodes abc", ["-m", "demos.pusht", "--episodes", "abc", "--output",
                                                        str(root / "abc.zarr")], says=("--episodes",)),
        Case("degenerate: demos.robomimic --episodes 0", ["-m", "demos.robomimic", "lift", "--episodes", "0", "--out",
                                                          str(root / "zero.hdf5")]),
        Case("degenerate: batch larger than the data", train("big_batch", "training.batch_size=100000"),
             says=("training.batch_size=100000", "training windows")),
        Case("degenerate: a folder holding two datasets", train("two", data=two), says=("2 replay buffers",)),
        Case("degenerate: ~ in dataset_path", ["train.py", "dataset_path=~/data/demos.zarr", *tiny,
                                               "training.steps=2", f"output_dir={runs / 'tilde'}"],
             env={"HOME": str(home)}, error=False, check=exists(runs / "tilde" / "eval.json")),
        Case("degenerate: $VAR in output_dir", ["train.py", f"dataset_path={demos}", *tiny, "training.steps=2",
                                                "output_dir=$RUNS/var"],
             env={"RUNS": str(runs)}, error=False, check=exists(runs / "var" / "eval.json")),
        Case("degenerate: output_dir=$UNSET (empty)", ["train.py", f"dataset_path={demos}", *tiny, "output_dir="],
             says=("output_dir",)),
        Case("degenerate: eval.py n_envs=0", eval_("n_envs=0")),
        Case("degenerate: python -m envs.pusht --episodes 0", ["-m", "envs.pusht", "--episodes", "0", "--video",
                                                               str(root / "v.mp4")]),
        Case("degenerate: datasets.download --source of a missing file",
             ["-m", "datasets.download", "pusht", "--source", str(root / "nope.zip"), "--cache", str(root / "c")]),
        Case("degenerate: datasets.download of an unknown name", ["-m", "datasets.download", "pusht3"],
             says=("pusht3",)),
        Case("degenerate: compare.py seeds= (none)", ["compare.py", "run", "policies=ibc", "seeds=",
                                                      f"output_dir={root / 'cmp_none'}"]),
        Case("degenerate: compare.py parallel=0", ["compare.py", "run", "policies=ibc", "parallel=0",
                                                   f"output_dir={root / 'cmp_p0'}"]),
        # ---- the world outside
        Case("outside: wandb.mode=online without a login", [*train("wb"), "wandb.mode=online",
                                                            f"dataset_path={root / 'nope.zarr'}"],
             env=no_key, says=("wandb", "wandb.mode=offline"), quick=True),
        Case("outside: eval.py wandb.mode=online without a login", eval_("wandb.mode=online"), env=no_key,
             says=("wandb.mode=offline",)),
        Case("outside: inspect | head (a closed pipe)",
             [f"{sys.executable} -m datasets.inspect {demos} | head -1"], shell=True, error=False),
        Case("outside: a video cut short by a full disk", [*eval_(f"output_dir={root / 'ev_video'}"), "eval.n_videos=1",
                                                           "eval.max_steps=60"],
             fsize=40_000, error=False,
             check=json_field(root / "ev_video" / "eval.json",
                              lambda r: not r["videos"] and r.get("video_errors"), "a cut video is listed")),
        Case("outside: disk full while writing demonstrations", demos_cmd(root / "full_demos.zarr"), fsize=20_000),
        Case("outside: a zarr v2 store warns at training start", train("v2warn", data=v2), error=False,
             says=("no checksum",)),
        Case("outside: --help on demos.pusht", ["-m", "demos.pusht", "--help"], error=False),
        Case("outside: --help on datasets.inspect", ["-m", "datasets.inspect", "--help"], error=False),
        Case("outside: --help on compare.py report", ["compare.py", "report", "--help"], error=False),
        # ---- messages that name the real cause
        Case("message: output_dir is a symlink loop", [*train("x")[:-1], f"output_dir={root / 'loop'}"],
             says=("symbolic link loop",), quick=True),
        Case("message: dataset_path is a symlink loop", train("sl", data=root / "loop"), says=("symbolic link loop",)),
        Case("message: dataset_path is a dangling link", train("dl", data=root / "dangling"),
             says=("symbolic link", "does not exist")),
        Case("message: compare.py report on a folder without runs", ["compare.py", "report", str(home), "--out",
                                                                     str(root / "rep")],
             says=(str(home), "a finished run is")),
        Case("message: eval.py on a symlink loop", ["eval.py", f"checkpoint={root / 'loop'}"],
             says=("symbolic link loop",)),
    ]


def classify(proc: subprocess.CompletedProcess, case: Case) -> tuple[str, str]:
    """(outcome, message): the error line without its `error: `, or the last line printed."""
    err = proc.stderr.strip().splitlines()
    last = (proc.stdout.strip().splitlines()[-1:] or [""])[0]

    def checked(outcome: str, message: str) -> tuple[str, str]:
        problem = case.check() if case.check else None
        if problem:
            return ("loss", problem[6:]) if problem.startswith("loss: ") else ("silent", problem)
        return outcome, message

    if "Traceback (most recent call last)" in proc.stderr:
        return "traceback", err[-1] if err else f"exit {proc.returncode}"
    if case.signal is not None:
        said = [line for line in err if line.startswith(("interrupted (Ctrl-C)", "stopped (SIG"))]
        expected = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129, signal.SIGKILL: -9}[case.signal]
        if proc.returncode != expected or (case.signal != signal.SIGKILL and len(said) != 1):
            return "traceback", f"exit {proc.returncode}, {len(said)} interruption lines: {err[-1:]}"
        return checked("ok", said[0] if said else "killed")
    if proc.returncode not in (0, 2):
        return "traceback", err[-1] if err else f"exit {proc.returncode}"
    error_lines = [line for line in err if line.startswith("error: ")]
    if proc.returncode == 2 and len(error_lines) == 1:
        missing = [w for w in case.says if w not in error_lines[0]]
        if missing:
            return "silent", f"the message does not name {missing}: {error_lines[0][7:]}"
        return checked("named", error_lines[0][7:])
    if proc.returncode == 0:
        if not case.error and (missing := [w for w in case.says if w not in proc.stderr]):
            return "silent", f"stderr does not say {missing}"
        outcome, message = checked("ok", last)
        return ("silent", last) if case.error and outcome == "ok" else (outcome, message)
    return "traceback", f"exit {proc.returncode} with {len(error_lines)} error lines: {err[-1:]}"


def descendants(pid: int) -> list[int]:
    """The processes below `pid` (children, their children, ...), from /proc."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    out, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def running(pid: int) -> bool:
    """Alive and not a zombie (a dead child that no one has reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(ready: Callable[[], bool], process: subprocess.Popen, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ready():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.1)
    return False


def run_case(case: Case) -> tuple[str, str]:
    """Run one case (module docstring) and classify it."""
    env = {**ENV, **(case.env or {})}

    def limit(fsize=case.fsize):
        if fsize:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # as from a terminal (a background job would ignore it)

    def start(argv):
        cmd = argv[0] if case.shell else [sys.executable, *argv]
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=limit, start_new_session=True, shell=case.shell)

    first = None
    try:
        if case.first is not None:
            first = start(case.first)
            if not wait_for(case.ready, first, 300):
                out, err = first.communicate(timeout=60)
                return "hang", f"the first command never got ready (exit {first.returncode}): {err.strip()[-200:]}"
        process = start(case.argv)
        kids = []
        if case.signal is not None:
            if not wait_for(case.ready, process, 300):
                process.kill()
                out, err = process.communicate()
                return "hang", f"never got to the moment to signal (exit {process.returncode}): {err.strip()[-200:]}"
            kids = descendants(process.pid)
            if case.signal == signal.SIGINT:
                os.killpg(process.pid, signal.SIGINT)
            else:
                os.kill(process.pid, case.signal)
        try:
            out, err = process.communicate(timeout=case.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            return "hang", f"still running after {case.timeout:.0f} s"
        proc = subprocess.CompletedProcess(case.argv, process.returncode, out, err)
        deadline = time.monotonic() + 5  # PR_SET_PDEATHSIG and pool shutdown take a moment
        while any(running(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.1)
        if orphans := [k for k in kids if running(k)]:
            for k in orphans:
                os.kill(k, signal.SIGKILL)
            return "orphan", f"{len(orphans)} child process(es) still running after the command ended"
        if case.first is not None:
            first_out, first_err = first.communicate(timeout=600)
            if first.returncode != 0:
                return "loss", f"the first command failed (exit {first.returncode}): {first_err.strip()[-200:]}"
        if case.then is not None:
            again = subprocess.run([sys.executable, *case.then], cwd=REPO, env=env, capture_output=True, text=True,
                                   timeout=600, check=False)
            if again.returncode != 0 or "Traceback" in again.stderr:
                return "loss", f"the same command again failed (exit {again.returncode}): {again.stderr.strip()[-200:]}"
        return classify(proc, case)
    finally:
        if first is not None and first.poll() is None:
            first.kill()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="run the cases whose name contains one of these")
    parser.add_argument("--quick", action="store_true", help="one case per family")
    parser.add_argument("--json", type=Path, help="also write the table here (whole messages)")
    parser.add_argument("--full", action="store_true", help="print whole messages (default: the first 110 characters)")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        demos = make_demos(root)
        good = root / "runs" / "good"
        subprocess.run([sys.executable, "train.py", f"dataset_path={demos}", *TINY, f"output_dir={good}"],
                       cwd=REPO, env=ENV, capture_output=True, check=True)
        for case in [*cases(root, demos, good), *writer_cases(root, demos, good)]:
            if args.only and not any(o in case.name for o in args.only) or args.quick and not case.quick:
                continue

            outcome, message = run_case(case)
            rows.append({"case": case.name, "outcome": outcome, "message": message})
            print(f"{case.name:48s} {outcome:10s} {message if args.full else message[:110]}", flush=True)
    counts = {k: sum(r["outcome"] == k for r in rows) for k in OUTCOMES}
    print(f"\n{len(rows)} cases: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "counts": counts}, indent=1))
    return 1 if any(counts[k] for k in OUTCOMES[2:]) else 0


if __name__ == "__main__":
    sys.exit(main())
