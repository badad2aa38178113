"""Nothing silently wrong (issue families beyond tests/test_interrupts.py): interrupted generators that continue and
leave no process behind, one writer per place, degenerate values, the world outside, messages that name the cause."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import train
from common import ConfigError, run_cli
from common.locks import DirLock, this_writer
from common.paths import broken_link
from config import resolve
from datasets import ReplayBuffer
from datasets.replay_buffer import ReplayBufferError

from conftest import tiny_unet_overrides

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "SDL_VIDEODRIVER": "dummy"}


def dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# ------------------------------------------------------------------------------ interruptions


@pytest.mark.filterwarnings("ignore:.*an interrupted append")
def test_an_interrupted_generator_continues_to_the_same_buffer_and_its_workers_die(tmp_path):
    from demos.pusht import generate

    reference = Path(generate(tmp_path / "ref.zarr", 5, first_seed=20, workers=2)["output"])
    out = tmp_path / "demos.zip"
    argv = [sys.executable, "-m", "demos.pusht", "--episodes", "5", "--first-seed", "20", "--workers", "2",
            "--output", str(out)]
    process = subprocess.Popen(argv, cwd=REPO, env=ENV, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    partial = Path(str(out) + ".partial")
    deadline = time.monotonic() + 120
    while ReplayBuffer.unfinished(out) is None or ReplayBuffer.open(partial).n_episodes < 1:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.1)
    workers = [int(p.parent.name) for p in Path("/proc").glob("[0-9]*/stat")
               if p.read_text().rsplit(")", 1)[1].split()[1] == str(process.pid)]
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole process group
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in err, err
    [line] = [line for line in err.splitlines() if line.startswith("interrupted (Ctrl-C)")]
    assert f"saved in {partial} (unfinished)" in line and "continues from the next one" in line
    assert workers and not any(running(w) for w in workers)
    assert not out.exists() and partial.is_dir()  # not packed: an incomplete .zip would look finished
    again = subprocess.run(argv, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "continuing an unfinished run" in again.stdout
    with ReplayBuffer.open(out) as a, ReplayBuffer.open(reference) as b:
        assert "in_progress" not in a.attrs and a.n_episodes == 5
        assert np.array_equal(a.episode_ends, b.episode_ends)
        assert all(np.array_equal(a.read(k), b.read(k)) for k in b.keys)


def test_sighup_stops_a_command_with_one_line():
    def hang_up(argv):
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(5)

    assert run_cli(hang_up, []) == 129


def test_an_interrupted_checkpoint_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    import torch

    from runlib import save_checkpoint

    def interrupted(state, path):
        Path(path).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "last.pt", {})
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ one writer per place


def test_a_live_lock_is_refused_a_stale_one_taken_over_a_foreign_one_named(tmp_path, capsys):
    (tmp_path / ".lock").write_text(json.dumps(this_writer()))  # this very process: alive
    with pytest.raises(ConfigError, match=f"in use by pid {os.getpid()} on .*; wait for it to end, stop it"):
        DirLock(tmp_path).acquire()
    pid = dead_pid()
    (tmp_path / ".lock").write_text(json.dumps({"pid": pid, "host": os.uname().nodename, "command": "x"}))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / f".last.pt.{pid}.tmp").write_bytes(b"half")
    with DirLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
        assert "taking over the lock of pid" in capsys.readouterr().err
        assert not list((tmp_path / "checkpoints").iterdir())  # the dead writer's temporary file is gone
    assert not (tmp_path / ".lock").exists()
    (tmp_path / ".lock").write_text(json.dumps({"pid": 1, "host": "gpu-node-7"}))
    with pytest.raises(ConfigError, match=f"on gpu-node-7 .*another machine.*delete {tmp_path / '.lock'}"):
        DirLock(tmp_path).acquire()


def test_a_second_train_py_on_a_run_dir_in_use_is_refused(demos, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text(json.dumps(this_writer()))
    with pytest.raises(ConfigError, match="in use by pid"):
        train.train(resolve([f"dataset_path={demos}", f"output_dir={out}", "wandb.mode=disabled"]))
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing read, nothing written


@pytest.fixture(scope="module")
def finished_run(demos, tmp_path_factory):
    out = tmp_path_factory.mktemp("writers") / "run"
    train.train(resolve([f"dataset_path={demos}", "training.steps=2", "training.eval_every=0",
                         "training.val_every=0", "training.batch_size=8", "training.threads=1",
                         "wandb.mode=disabled", "eval.n_episodes=1", "eval.max_steps=4", "eval.n_videos=0",
                         f"output_dir={out}", *tiny_unet_overrides("policy.", num_inference_steps=2)]))
    return out


def test_eval_py_never_overwrites_a_runs_eval_json(finished_run, capsys):
    import eval as eval_script

    before = (finished_run / "eval.json").read_bytes()
    assert eval_script.main([f"checkpoint={finished_run / 'checkpoints' / 'last.pt'}", f"output_dir={finished_run}",
                             "n_episodes=1", "eval.max_steps=4", "eval.n_videos=0", "wandb.mode=disabled"]) == 0
    assert (finished_run / "eval.json").read_bytes() == before
    assert json.loads((finished_run / "eval" / "eval.json").read_text())["n_episodes"] == 1
    assert f"this evaluation goes to {finished_run / 'eval'}" in capsys.readouterr().out


def test_a_second_generator_on_a_buffer_being_written_is_refused(tmp_path):
    from demos.pusht import generate

    plan = {"command": "demos.pusht", "episodes": 3, "first_seed": 0, "keep_failures": False}
    with ReplayBuffer.create_or_continue(tmp_path / "d.zarr", plan):  # this process writes it
        with pytest.raises(ReplayBufferError, match="being written by pid"):
            generate(tmp_path / "d.zarr", 3, workers=1)


# ------------------------------------------------------------------------------ degenerate values


@pytest.mark.parametrize("episodes", [0, -3])
def test_zero_or_negative_episode_counts_stop(tmp_path, episodes):
    import demos.pusht
    import demos.robomimic

    assert demos.pusht.main(["--episodes", str(episodes), "--output", str(tmp_path / "d.zarr")]) == 2
    assert demos.robomimic.main(["lift", "--episodes", str(episodes), "--out", str(tmp_path / "d.hdf5")]) == 2
    assert not list(tmp_path.iterdir())


def test_a_bad_argument_of_a_python_m_tool_is_one_line(tmp_path, capsys):
    import demos.pusht

    assert demos.pusht.main(["--episodes", "abc", "--output", str(tmp_path / "d.zarr")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--episodes: invalid int value: 'abc'" in err[0]


def test_a_batch_larger_than_the_data_stops(demos, tmp_path):
    with pytest.raises(ConfigError, match=r"training.batch_size=100000 is larger than the \d+ training windows"):
        train.train(resolve([f"dataset_path={demos}", "training.batch_size=100000", "wandb.mode=disabled",
                             f"output_dir={tmp_path / 'run'}", *tiny_unet_overrides()]))


def test_a_folder_holding_two_datasets_is_refused(demos, tmp_path):
    import shutil

    shutil.copytree(demos, tmp_path / "a.zarr")
    shutil.copytree(demos, tmp_path / "b.zarr")
    with pytest.raises(ReplayBufferError, match=r"holds 2 replay buffers \('a.zarr', 'b.zarr'\)"):
        ReplayBuffer.open(tmp_path)


# ------------------------------------------------------------------------------ the world outside


def test_wandb_online_is_checked_before_any_data(tmp_path, monkeypatch):
    from runlib import check_wandb_online

    monkeypatch.setenv("WANDB_API_KEY", "")
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="no W&B API key .*wandb login.*wandb.mode=offline"):
        train.train(resolve([f"dataset_path={tmp_path / 'missing.zarr'}", "wandb.mode=online",
                             f"output_dir={tmp_path / 'run'}"]))  # about W&B, not the missing data
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(ConfigError, match="cannot reach the W&B server 127.0.0.1:9"):
        check_wandb_online("online", timeout_s=2)
    check_wandb_online("offline")  # nothing to check


def test_a_video_cut_short_is_reported_not_listed(tmp_path):
    script = ("import resource, sys, numpy as np\nsys.path.insert(0, '.')\nfrom envs.video import save_video\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, resource.RLIM_INFINITY))\n"
              "frames = list(np.random.default_rng(0).integers(0, 255, (60, 96, 96, 3), dtype=np.uint8))\n"
              f"save_video(frames, {str(tmp_path / 'v.mp4')!r})\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=ENV, capture_output=True, text=True)
    assert done.returncode == 1 and "VideoWriteError" in done.stderr and "is the disk full?" in done.stderr
    assert not list(tmp_path.iterdir())  # neither the cut file nor its temporary


def test_training_from_a_store_without_checksums_warns(demos, tmp_path, capsys):
    with ReplayBuffer.open(demos) as rb:
        episodes = [rb.get_episode(i, ["keypoint", "state", "action"]) for i in range(rb.n_episodes)]
    with ReplayBuffer.create(tmp_path / "v2.zarr", zarr_format=2) as rb:
        for e in episodes:
            rb.add_episode(e)
    train.train(resolve([f"dataset_path={tmp_path / 'v2.zarr'}", "training.steps=1", "training.eval_every=0",
                         "training.val_every=0", "training.batch_size=8", "wandb.mode=disabled", "eval.n_episodes=1",
                         "eval.max_steps=2", "eval.n_videos=0", f"output_dir={tmp_path / 'run'}",
                         *tiny_unet_overrides("policy.", num_inference_steps=2)]))
    [line] = [line for line in capsys.readouterr().err.splitlines() if "no checksum" in line]
    assert line.startswith("warning: ") and "python -m datasets.inspect --verify" in line


# ------------------------------------------------------------------------------ messages


def test_broken_links_are_named(tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert "is a symbolic link loop" in broken_link(tmp_path / "loop" / "run")
    assert broken_link(tmp_path / "dangling") == f"{tmp_path / 'dangling'} is a symbolic link to " \
                                                 f"{tmp_path / 'nowhere'}, which does not exist"
    assert broken_link(tmp_path) is None
    with pytest.raises(ConfigError, match="symbolic link loop"):
        train.train(resolve([f"output_dir={tmp_path / 'loop'}", "wandb.mode=disabled"]))


def test_no_finished_runs_names_where_and_what(tmp_path, capsys):
    import compare

    (tmp_path / "empty").mkdir()
    assert compare.main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert f"no finished runs in {tmp_path / 'empty'}: a finished run is a train.py output dir" in err


def test_an_episode_being_written_is_written_whole_before_ctrl_c_acts(tmp_path):
    from common.errors import signals_deferred

    with ReplayBuffer.create(tmp_path / "d.zarr") as rb:
        with pytest.raises(KeyboardInterrupt):
            with signals_deferred():
                os.kill(os.getpid(), signal.SIGINT)  # arrives mid-write
                rb.add_episode({"action": np.zeros((5, 2), np.float32)})
        assert rb.n_episodes == 1
    assert ReplayBuffer.open(tmp_path / "d.zarr").n_episodes == 1
