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
