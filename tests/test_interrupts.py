"""Commands stopped from outside: Ctrl-C and SIGTERM end with one line (what was saved, the command that continues),
exit 130 / 143, no traceback; a closed pipe ends quietly; --help prints usage; an empty output_dir= stops."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import train
from common import ConfigError
from config import resolve

from conftest import tiny_unet_overrides

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "SDL_VIDEODRIVER": "dummy"}


def start_training(demos, out: Path) -> subprocess.Popen:
    argv = [f"dataset_path={demos}", "training.steps=100000", "training.checkpoint_every=2", "training.eval_every=0",
            "training.val_every=0", "training.batch_size=8", "training.threads=1", "wandb.mode=disabled",
            f"output_dir={out}", *tiny_unet_overrides("policy.", num_inference_steps=2)]
    return subprocess.Popen([sys.executable, "train.py", *argv], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, process: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


@pytest.mark.parametrize("sig, code, said", [(signal.SIGINT, 130, "interrupted (Ctrl-C)"),
                                             (signal.SIGTERM, 143, "stopped (SIGTERM)")])
def test_a_stopped_training_says_what_was_saved_and_how_to_continue(demos, tmp_path, sig, code, said):
    out = tmp_path / "run"
    process = start_training(demos, out)
    wait_for(out / "checkpoints" / "last.pt", process)
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    assert "Traceback" not in err, err
    [line] = [line for line in err.splitlines() if line.startswith(said)]
    assert f"{out / 'checkpoints' / 'last.pt'} is the last checkpoint" in line
    assert "`python train.py dataset_path=" in line and "continues from it" in line


def test_a_closed_pipe_ends_quietly(demos):
    reader = subprocess.Popen([sys.executable, "-m", "datasets.inspect", str(demos)], cwd=REPO, env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader.stdout.read(1)  # the first byte, then the pipe closes: `... | head -c 1`
    reader.stdout.close()
    err = reader.stderr.read().decode()
    assert reader.wait(timeout=60) == 0 and "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.parametrize("command", [["train.py"], ["eval.py"], ["compare.py"], ["compare.py", "run"]])
def test_help_prints_the_usage(command, capsys):
    import compare
    import eval as eval_script

    main = {"train.py": train.main, "eval.py": eval_script.main, "compare.py": compare.main}[command[0]]
    assert main([*command[1:], "--help"]) == 0
    out = capsys.readouterr().out
    assert "python " + command[0] in out and len(out.splitlines()) > 5


def test_an_empty_output_dir_stops_at_parse_time():
    with pytest.raises(ConfigError, match="output_dir='': expected a path \\(an unset shell variable\\?\\)"):
        resolve(["output_dir="])


# ------------------------------------------------------------------------------ a resumed run is the run it resumes


@pytest.fixture(scope="module")
def half_run(demos, tmp_path_factory):
    """A run stopped at its step-2 checkpoint (training.steps=2 then raised: unfinished for a longer request)."""
    out = tmp_path_factory.mktemp("resume") / "run"
    argv = [f"dataset_path={demos}", "training.steps=2", "training.eval_every=0", "training.val_every=0",
            "training.batch_size=8", "training.threads=1", "wandb.mode=disabled", "eval.n_episodes=1",
            "eval.max_steps=4", "eval.n_videos=0", f"output_dir={out}",
            *tiny_unet_overrides("policy.", num_inference_steps=2)]
    train.train(resolve(argv))
    return argv


@pytest.mark.parametrize("change, field", [
    (["seed=3"], "seed: 0 in the checkpoint, 3 now"),
    (["training.batch_size=4"], "training.batch_size: 8 in the checkpoint, 4 now"),
    (["policy.optimizer_lr=1e-3"], "policy.optimizer_lr: 0.0001 in the checkpoint, 0.001 now"),
    (["training.use_ema=false"], "training.use_ema: True in the checkpoint, False now"),
    (["recipe=quickstart"], "recipe: 'presets' in the checkpoint, 'quickstart' now"),
])
def test_resuming_with_other_settings_is_refused_naming_the_field(half_run, change, field):
    with pytest.raises(Exception, match="this run differs from the run it would resume") as error:
        train.train(resolve([*half_run, "training.steps=4", *change]))
    assert field in str(error.value) and "resume=false" in str(error.value)


def test_resuming_on_other_data_is_refused(half_run, tmp_path):
    from demos.pusht import generate

    other = tmp_path / "other.zarr"
    generate(other, n_episodes=3, first_seed=50, workers=1)
    with pytest.raises(Exception, match="dataset.path: .* in the checkpoint, .*other.zarr.* now"):
        train.train(resolve([*half_run, "training.steps=4", f"dataset_path={other}"]))


def test_what_may_change_on_resume_is_applied(half_run):
    summary = train.train(resolve([*half_run, "training.steps=3", "eval.max_steps=5", "training.log_every=1"]))
    assert summary["step"] == 3
