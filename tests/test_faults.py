"""One fast test per family of bad input (the whole catalogue, run as a user would: bench/fault_catalogue.py): corrupt
chunks in every store layout, malformed buffers, data a task cannot use, impossible settings, unusable checkpoints,
failed writes, bad actions and reset states, and what `python -m datasets.inspect --verify` reports. Each ends in
one of the project's errors (common.StackError) whose message names the file, key or value, and what was expected."""

import json
import os
import resource
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import eval as eval_script
import runlib
import train
from common import CheckpointError, ConfigError, DataError, EnvError, StackError, TrainingError, run_cli
from config import parse_overrides
from datasets import ReplayBuffer, ReplayBufferError, WindowDataset
from datasets import inspect as rb_inspect
from envs.pusht import PushTEnv
from envs.tasks import get_task


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def episodes(n=3, T=40, seed=0, **extra) -> list[dict]:
    """Push-T keypoint-task episodes (keypoint (T, 9, 2), state (T, 5), action (T, 2)) plus `extra` {key: fn(T)}."""
    rng = np.random.default_rng(seed)
    return [{"keypoint": rng.uniform(0, 512, (T, 9, 2)).astype(np.float32),
             "state": rng.uniform(0, 512, (T, 5)).astype(np.float32),
             "action": rng.uniform(0, 512, (T, 2)).astype(np.float32),
             **{k: fn(T) for k, fn in extra.items()}} for _ in range(n)]


def write(path: Path, eps: list[dict], **create) -> Path:
    with ReplayBuffer.create(path, **create) as rb:
        for e in eps:
            rb.add_episode(e)
    return path


def chunk_file(path: Path, key: str) -> Path:
    return next(c for c in sorted((path / "data" / key).rglob("*"))
                if c.is_file() and c.name not in ("zarr.json", ".zarray", ".zattrs"))


def flip_member(path: Path, suffix: str) -> Path:
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(suffix))
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.compress_size // 2
    data[start:start + 8] = bytes(b ^ 0xFF for b in data[start:start + 8])
    path.write_bytes(bytes(data))
    return path


# ------------------------------------------------------------------------- corrupt chunks, every store layout
def _v3_flipped(p):
    c = chunk_file(write(p / "a.zarr", episodes()), "action")
    raw = bytearray(c.read_bytes())
    raw[20:28] = bytes(b ^ 0xFF for b in raw[20:28])
    c.write_bytes(bytes(raw))
    return p / "a.zarr", "checksum"


def _v3_truncated(p):
    c = chunk_file(write(p / "a.zarr", episodes()), "action")
    c.write_bytes(c.read_bytes()[:-30])
    return p / "a.zarr", ""


def _v2_zeroed_header(p):
    c = chunk_file(write(p / "a.zarr", episodes(), zarr_format=2), "action")
    c.write_bytes(bytes(16) + c.read_bytes()[16:])
    return p / "a.zarr", ""


def _v2_truncated(p):
    c = chunk_file(write(p / "a.zarr", episodes(), zarr_format=2), "action")
    c.write_bytes(c.read_bytes()[:-30])
    return p / "a.zarr", "Blosc header says"


def _zip(fmt):
    def make(p):
        suffix = "data/action/c/0/0" if fmt == 3 else "data/action/0.0"
        return flip_member(write(p / "a.zip", episodes(), zarr_format=fmt), suffix), "CRC"
    return make


@pytest.mark.parametrize("make", [_v3_flipped, _v3_truncated, _v2_zeroed_header, _v2_truncated, _zip(3), _zip(2)],
                         ids=["v3-dir-flipped", "v3-dir-truncated", "v2-dir-zeroed-header", "v2-dir-truncated",
                              "v3-zip-member", "v2-zip-member"])
def test_a_corrupt_chunk_is_named_in_every_store_layout(make, tmp_path):
    path, detail = make(tmp_path)
    with ReplayBuffer.open(path) as rb:
        np.testing.assert_array_equal(rb.read("state"), np.concatenate([e["state"] for e in episodes()]))  # others read
        with pytest.raises(ReplayBufferError, match=rf"a\.z\w+: cannot decode 'data/action' chunk 0 \(steps 0\.\.\d+, "
                                                    rf"store key '.*data/action/[^']*'\).*{detail}"):
            rb.read("action")


def test_what_inspect_says_about_checksums_per_layout(tmp_path):
    expected = {"v3.zarr": ("crc32c", "every chunk is checksummed"), "v3.zip": ("crc32c+zip", "every chunk"),
                "v2.zarr": ("none", "no checksum on ['action', 'keypoint', 'state']"), "v2.zip": ("zip", "every chunk")}
    for name, (column, summary) in expected.items():
        path = write(tmp_path / name, episodes(1), zarr_format=2 if name.startswith("v2") else 3)
        with ReplayBuffer.open(path) as rb:
            assert {rb_inspect.checksums(rb, k) for k in rb.keys} == {column}
            assert f"integrity: {summary}" in rb_inspect.describe(rb)


def test_inspect_verify_reports_chunks_nonfinite_values_and_corruption(tmp_path, capsys):
    eps = episodes(T=30)
    eps[1]["action"][7, 1] = np.nan
    eps[2]["state"][3, 0] = np.inf
    path = write(tmp_path / "n.zarr", eps)
    assert rb_inspect.main(["--verify", str(path)]) == 2
    out = capsys.readouterr()
    assert "  action         1 chunk read; NaN/inf in 1 step(s), first at episode 1 step 7 (row 37)" in out.out
    assert "  state          1 chunk read; NaN/inf in 1 step(s), first at episode 2 step 3 (row 63)" in out.out
    assert "verify: 2 problem(s)" in out.out
    assert out.err.strip() == (f"error: {path}: verify found 2 problem(s); the first: 'data/action' holds NaN or inf "
                               "in 1 step(s), first at episode 1 step 7 (row 37)")
    good = write(tmp_path / "good.zarr", episodes(T=30))
    assert rb_inspect.main(["--verify", str(good)]) == 0
    assert "verify: every chunk decodes, checksums match where stored, no NaN or inf" in capsys.readouterr().out
    (tmp_path / "x").mkdir()
    bad, _ = _v3_flipped(tmp_path / "x")
    assert rb_inspect.main(["--verify", str(bad)]) == 2
    out = capsys.readouterr()
    assert "action         1 chunk read; UNREADABLE chunks (below)" in out.out
    assert "the first: cannot decode 'data/action' chunk 0" in out.err
    assert rb_inspect.main([str(tmp_path / "none.zarr")]) == 2
    assert "none.zarr: no such replay buffer" in one_error_line(capsys)


# ------------------------------------------------------------------------- files that are not buffers, structure
def test_files_that_are_not_replay_buffers_are_named(tmp_path):
    (tmp_path / "lift.hdf5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(ReplayBufferError, match=r"lift\.hdf5: an HDF5 file, not a replay buffer; convert a robomimic "
                                                r"hdf5 first: python -m demos\.robomimic_hdf5 convert"):
        ReplayBuffer.open(tmp_path / "lift.hdf5")
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as zf:
        zf.writestr("readme.txt", "x")
    with pytest.raises(ReplayBufferError, match=r"photos\.zip: no 'meta/episode_ends' array found"):
        ReplayBuffer.open(tmp_path / "photos.zip")
    write(tmp_path / "e.zarr", episodes(1))
    with pytest.raises(FileExistsError, match=r"e\.zarr: already exists; expected a new path") as e:
        ReplayBuffer.create(tmp_path / "e.zarr")
    assert isinstance(e.value, StackError)


@pytest.mark.parametrize("ends, message", [
    ([40, 30, 120], r"'meta/episode_ends' must be strictly increasing and positive .* episode 1 ends at 30 after 40"),
    ([40, 80, 170], r"'data/\w+' has 120 steps but meta/episode_ends\[-1\] is 170"),
    (np.array([40.0, 80.0, 120.0]), r"'meta/episode_ends' must be a 1-D integer array, got shape \(3,\) float64"),
])
def test_bad_episode_ends_are_named(ends, message, tmp_path):
    path = write(tmp_path / "b.zarr", episodes())
    g = zarr.open_group(str(path), mode="a")
    del g["meta/episode_ends"]
    g.create_array("meta/episode_ends", data=np.asarray(ends))
    with pytest.raises(ReplayBufferError, match=rf"b\.zarr: {message}"):
        ReplayBuffer.open(path)


@pytest.mark.parametrize("task, change, message", [
    ("pusht_keypoints", {"action": lambda a: np.concatenate([a, a[:, :1]], 1)},
     r"data key 'action' has per-step shape \(3,\); task 'pusht_keypoints' expects \(2,\)"),
    ("pusht_keypoints", {"keypoint": lambda a: np.concatenate([a, a[..., :1]], 2)},
     (r"task 'pusht_keypoints' builds observation 'keypoints' of per-step shape \(29,\) from data/keypoint \(9, 3\), "
      r"data/state \(5,\), data/action \(2,\); expected \(20,\)")),
    ("pusht_keypoints", {"action": lambda a: a > 256}, r"data/action holds bool values; task 'pusht_keypoints' expect"),
    ("pusht_keypoints", {"state": lambda a: a.astype(np.complex64)}, r"data/state holds complex64 values"),
    ("pusht_image", {"img": lambda a: np.zeros((len(a), 64, 64, 3), np.uint8)},
     r"builds observation 'image' of per-step shape \(64, 64, 3\) .*; expected \(96, 96, 3\)"),
    ("pusht_image", {"img": lambda a: np.zeros((len(a), 3, 96, 96), np.uint8)},
     r"builds observation 'image' of per-step shape \(3, 96, 96\)"),
    ("lift_lowdim", {}, r"no 'env_meta' attribute .* task 'lift_lowdim' needs a replay buffer written by"),
])
def test_data_a_task_cannot_use_is_named(task, change, message, tmp_path):
    eps = episodes(T=20, img=lambda T: np.zeros((T, 96, 96, 3), np.uint8))
    for e in eps:
        e.update({k: fn(e[k] if k in e else e["action"]) for k, fn in change.items()})
    path = write(tmp_path / "t.zarr", eps)
    with ReplayBuffer.open(path) as rb, pytest.raises(DataError, match=rf"t\.zarr: .*{message}"):
        get_task(task).for_dataset(rb.attrs, str(path)).check_buffer(rb, str(path))


@pytest.mark.filterwarnings("ignore:.*steps beyond meta/episode_ends")  # the 0-episode buffer's data arrays
def test_zero_episodes_short_episodes_and_unit_float_images_are_named(tmp_path):
    path = write(tmp_path / "z.zarr", episodes(1))
    g = zarr.open_group(str(path), mode="a")
    del g["meta/episode_ends"]
    g.create_array("meta/episode_ends", data=np.zeros(0, np.int64))
    with ReplayBuffer.open(path) as rb, pytest.raises(DataError, match=r"z\.zarr: holds 0 episodes"):
        get_task("pusht_keypoints").check_buffer(rb, str(path))
    data = {"state": np.zeros((10, 5), np.float32), "action": np.zeros((10, 2), np.float32),
            "image": np.full((10, 8, 8, 3), 0.5, np.float32)}
    with pytest.raises(ReplayBufferError, match=r"data\.zarr: horizon 16 is longer than every selected episode \(the "
                                                r"longest has 5 steps\); expected episodes of at least 16 steps"):
        WindowDataset(data, ["state"], episode_ends=[5, 10], name="data.zarr")
    with pytest.raises(ReplayBufferError, match=r"data\.zarr: image observation 'image' must be uint8 .* other values "
                                                r"\(they look scaled to 0\.\.1: store them times 255\)"):
        WindowDataset(data, ["image"], episode_ends=[10], horizon=4, action_horizon=2, name="data.zarr")


def test_nonfinite_data_names_key_episode_split_and_step(tmp_path, capsys):
    from datasets import split_episodes

    train_idx, _ = split_episodes(3, 0.34, 42)
    episode = int(train_idx[0])
    eps = episodes(T=30)
    eps[episode]["state"][4, 2] = np.inf
    path = write(tmp_path / "inf.zarr", eps)
    assert train.main([f"dataset_path={path}", "training.val_ratio=0.34", f"output_dir={tmp_path / 'out'}",
                       "wandb.mode=disabled", "training.threads=1"]) == 2
    assert f"inf.zarr: data/state holds NaN or inf in 1 step(s), first in episode {episode} (a training episode) at " \
           "its step 4" in one_error_line(capsys)


# ------------------------------------------------------------------------- settings
@pytest.mark.parametrize("arg, message", [
    ("seed=-1", r"seed=-1: expected an integer in 0\.\.2\*\*32-1"),
    (f"seed={2 ** 40}", r"seed=1099511627776: expected an integer in 0\.\.2\*\*32-1"),
    ("eval.seed=-3", r"eval\.seed=-3: expected None"),
    ("dataset_path=", r"dataset_path='': expected a path \(an unset shell variable\?\)"),
    ("training.steps=2.5", r"training\.steps: expected an integer, got 2\.5"),
    ("policy.down_dims=[]", r"down_dims must hold at least one positive channel count, got \[\]"),
    ("policy.horizon=9", r"UNet horizon 9 is not supported with down_dims \[32, 64, 128\]"),
    ("policy.n_groups=7", r"every entry of down_dims \[32, 64, 128\] must be divisible by n_groups=7"),
])
def test_settings_that_cannot_work_stop_when_parsed(arg, message):
    with pytest.raises(ConfigError, match=message):
        parse_overrides([arg])


def test_output_dirs_that_cannot_hold_results(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match=r"notes\.txt/run' lies inside '.*notes\.txt', which is a file"):
        parse_overrides([f"output_dir={a_file / 'run'}"])
    if not os.path.isdir("/sys"):
        pytest.skip("no /sys (not Linux)")
    # Root may write almost anywhere: /sys refuses even root. Stopped before any data is read.
    assert train.main(["output_dir=/sys/diffusion_stack_test", "wandb.mode=disabled", "training.threads=1",
                       f"dataset_path={tmp_path / 'never_read.zarr'}"]) == 2
    line = one_error_line(capsys)
    assert "output_dir='/sys/diffusion_stack_test': cannot write there (" in line
    assert line.endswith("); expected a writable directory")


# ------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> dict:
    """A checkpoint dict as train.py writes it, of a tiny UNet (no training)."""
    from datasets import Normalizer
    from policy import make_policy

    cfg = parse_overrides(["policy.down_dims=[8,16]", "policy.diffusion_step_embed_dim=16", "policy.n_groups=4"])
    policy = make_policy("diffusion_unet", Normalizer.fit({"keypoints": np.random.rand(10, 20),
                                                           "action": np.random.rand(10, 2)}),
                         obs_shapes={"keypoints": (20,)}, action_dim=2, down_dims=(8, 16),
                         diffusion_step_embed_dim=16, n_groups=4)
    weights = policy.state_dict()
    return {"config": cfg.to_dict(), "task": "pusht_keypoints", "policy_name": "diffusion_unet",
            "policy_config": policy.config.to_dict(), "policy": weights, "ema": {"averaged": weights}, "step": 3,
            "optimizer": {}, "lr_scheduler": {}, "best_score": 0.0, "history": [], "rng": runlib.rng_state(),
            "wandb_run_id": "x"}


def test_unusable_checkpoints_are_named(checkpoint, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    with pytest.raises(CheckpointError, match=r"run: a directory; expected a checkpoint file \(e\.g\. .*run/checkpoints"
                                              r"/last\.pt\)"):
        runlib.load_checkpoint(tmp_path / "run")
    torch.save(checkpoint["policy"], tmp_path / "bare.pt")
    assert eval_script.main([f"checkpoint={tmp_path / 'bare.pt'}"]) == 2
    assert "bare.pt: checkpoint is missing keys ['config', 'task', 'policy_name', 'policy_config', 'policy', " \
           "'step']; expected a checkpoint written by train.py" in one_error_line(capsys)
    old = {k: v for k, v in checkpoint.items() if k not in ("optimizer", "rng")}
    with pytest.raises(CheckpointError, match=r"old\.pt: cannot resume from it: missing \['optimizer', 'rng'\] \(a "
                                              r"checkpoint of an older version of the code\?\)"):
        runlib.check_resumable(old, "old.pt")
    runlib.check_resumable(checkpoint, "good.pt")
    diverged = {k: v.clone().fill_(float("nan")) if k.startswith("model.") else v
                for k, v in checkpoint["policy"].items()}
    with pytest.raises(CheckpointError, match=r"nan\.pt: \d+ weight tensor\(s\) hold NaN or inf \(first: 'model\."):
        runlib.policy_from_checkpoint({**checkpoint, "ema": {"averaged": diverged}}, "nan.pt")
    with pytest.raises(CheckpointError, match=r"extra\.pt: cannot build policy 'diffusion_unet' from its saved config"):
        runlib.policy_from_checkpoint({**checkpoint, "policy_config": {**checkpoint["policy_config"], "gone": 1}},
                                      "extra.pt")


def test_a_failed_checkpoint_write_keeps_the_previous_one(checkpoint, tmp_path):
    """A full disk, simulated with a file size limit (RLIMIT_FSIZE: writes past it fail with EFBIG, as ENOSPC would)."""
    path = tmp_path / "checkpoints" / "last.pt"
    runlib.save_checkpoint(path, checkpoint)
    before = path.read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) // 2, hard))
    try:
        with pytest.raises(TrainingError, match=r"last\.pt: could not write the checkpoint \(.*is the disk full or the "
                                                r"file size limited\?\); the previous last\.pt is unchanged; stopping"):
            runlib.save_checkpoint(path, {**checkpoint, "step": 4})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]


# ------------------------------------------------------------------------- environment, rollouts, the CLI wrapper
@pytest.mark.parametrize("call, message", [
    (lambda env: env.reset(options={"reset_to_state": "abcde"}), r"reset_to_state'\] must be 5 finite numbers"),
    (lambda env: env.reset(options={"reset_to_state": [600, 100, 256, 256, 0]}), r"inside the 512x512 workspace; got"),
    (lambda env: (env.reset(seed=0), env.step([True, False])), r"action must be 2 numbers .* got \[True, False\]"),
])
def test_bad_env_input_is_one_line_through_run_cli(call, message, capsys):
    env = PushTEnv()
    with pytest.raises(EnvError, match=message):
        call(env)
    assert run_cli(lambda argv: call(env), []) == 2
    assert one_error_line(capsys)


def test_a_policy_that_returns_nan_actions_is_named():
    from envs.rollout import evaluate

    class NanPolicy(torch.nn.Module):
        config = type("C", (), {"obs_horizon": 1})()

        def reset(self):
            pass

        def predict_action(self, obs):
            return torch.full((len(obs["keypoints"]), 4, 2), float("nan"))

    with pytest.raises(TrainingError, match=r"the policy returned NaN or inf actions for evaluation seed\(s\) "
                                            r"\[100000, 100001\] at step 0"):
        evaluate(NanPolicy(), get_task("pusht_keypoints"), n_episodes=2, max_steps=4, n_videos=0, progress=False)


def test_run_cli_names_os_errors_about_files_and_closes_progress_bars(tmp_path, capsys):
    from tqdm import tqdm

    def command(argv):
        tqdm(total=3, desc="train").update(1)
        (tmp_path / "missing_dir" / "x.json").write_text(json.dumps({}))

    assert run_cli(command, []) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"error: {tmp_path / 'missing_dir' / 'x.json'}: No such file or directory"
    assert err.endswith("\n") and "\rerror" not in err and "|error" not in err

    def bug(argv):
        raise OSError("no file named: a bug")

    with pytest.raises(OSError):
        run_cli(bug, [])
