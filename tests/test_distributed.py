"""Data-parallel training: train.py under torchrun on the CPU (gloo), 2 processes, the tiny UNet, 6 steps.

- 2 processes with the global batch 16 (8 each) give the weights of one process with batch 16, within 1e-5
  (the ranks draw the global batch's noise and timesteps and keep their rows: policy/batch_share.py);
- a run killed right after its step-3 checkpoint continues there when started again, under DDP or in one process
  (which prints what changes with the world size);
- rank 1 opens no file for writing (an audit hook watches every open, rename and mkdir of the test's files);
- a bad argument stops every rank with one error line, not a hang.

Every launch runs under a timeout, and so do the ranks' collectives (training.dist_timeout_s), so a bug fails a test
instead of hanging CI.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import runlib
import train
from common import ConfigError
from config import parse_overrides
from datasets import StepBatches
from policy.batch_share import batch_share, per_sample

from conftest import REPO, tiny_unet_overrides

STEPS = 6
COMMON = [*tiny_unet_overrides("policy.", num_inference_steps=2), "training.batch_size=16", "training.threads=1",
          f"training.steps={STEPS}", "training.checkpoint_every=3", "training.log_every=1", "training.val_every=3",
          "training.eval_every=0", "policy.lr_warmup_steps=2", "training.dist_timeout_s=60", "eval.n_episodes=1",
          "eval.max_steps=8", "eval.n_videos=1", "eval.video_size=64", "wandb.mode=offline"]

# What torchrun starts on each rank: train.py's main, with two test hooks set through the environment.
CHILD = """
import os, sys
sys.path.insert(0, {repo!r})
rank = int(os.environ["RANK"])
watched = os.environ.get("WATCH_WRITES")
if rank != 0 and watched:
    def audit(event, args):
        path = None
        if event == "open" and isinstance(args[2], int) and args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            path = args[0]
        elif event in ("os.rename", "os.mkdir", "os.remove", "os.rmdir", "os.truncate"):
            path = args[0]
        if isinstance(path, (str, bytes, os.PathLike)) and os.fsdecode(path).startswith(watched):
            print(f"rank {{rank}} writes {{os.fsdecode(path)}} ({{event}})", file=sys.stderr, flush=True)
    sys.addaudithook(audit)
import train
kill_after = os.environ.get("KILL_AFTER_CHECKPOINT")
if rank == 0 and kill_after:
    save = train.save_checkpoint
    def save_then_die(path, state):
        save(path, state)
        if state["step"] == int(kill_after):
            os._exit(9)  # killed: no clean-up, the other rank is stopped by torchrun
    train.save_checkpoint = save_then_die
sys.exit(train.main(sys.argv[1:]))
"""


def torchrun(tmp_path: Path, args: list[str], timeout: float = 120, **env) -> subprocess.CompletedProcess:
    child = tmp_path / "child.py"
    child.write_text(CHILD.format(repo=str(REPO)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(child), *args]
    environ = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_SILENT": "true", **env}
    for name in ("RANK", "WANDB_SERVICE"):  # not this test process's W&B service: the ranks start their own
        environ.pop(name, None)
    return subprocess.run(cmd, cwd=REPO, env=environ, capture_output=True, text=True, timeout=timeout)


def max_difference(a: dict, b: dict) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def test_step_batches_split_the_global_batch_over_ranks():
    whole = list(StepBatches(100, 16, seed=3, start_step=0, total_steps=20))
    shares = [list(StepBatches(100, 16, seed=3, start_step=0, total_steps=20, rank=r, world_size=4)) for r in range(4)]
    assert all(len(batch) == 4 for share in shares for batch in share)
    for step in range(20):
        assert sum((share[step] for share in shares), []) == whole[step]
    assert list(StepBatches(100, 16, 3, 7, 20, rank=1, world_size=2)) == [b[8:] for b in whole[7:]]  # resume
    # A dataset smaller than the batch: all of it, in a multiple of the world size.
    assert [len(b) for b in StepBatches(15, 64, 0, 0, 2, rank=0, world_size=2)] == [7, 7]


def test_per_sample_draws_are_the_global_batch_rows():
    torch.manual_seed(1)
    whole = per_sample(lambda n: torch.randn(n, 3), 8)
    rows = []
    for rank in range(2):
        torch.manual_seed(1)
        with batch_share(rank, 2):
            rows.append(per_sample(lambda n: torch.randn(n, 3), 4))
    torch.testing.assert_close(torch.cat(rows), whole, rtol=0, atol=0)
    torch.manual_seed(1)
    torch.testing.assert_close(per_sample(lambda n: torch.randn(n, 3), 8), whole, rtol=0, atol=0)  # no share set


def test_global_batch_must_split_over_the_ranks(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ConfigError, match=r"training.batch_size=16 is the global batch and must split evenly over "
                                          r"the 3 processes .* e.g. training.batch_size=15"):
        runlib.start_distributed("cpu", 16, 60)


def test_two_processes_equal_one_and_resume_after_a_kill(demos, tmp_path, tmp_path_factory, capsys):
    common = [*COMMON, f"dataset_path={demos}"]
    # One process, batch 16: the reference.
    single = tmp_path / "single"
    train.train(parse_overrides([*common, f"output_dir={single}"]))
    reference = runlib.load_checkpoint(single / "checkpoints" / "last.pt")

    # Two processes, 8 windows each, rank 0 killed right after its step-3 checkpoint; rank 1 writes nothing.
    ddp = tmp_path / "ddp"
    watched = str(tmp_path_factory.getbasetemp())
    killed = torchrun(tmp_path, [*common, f"output_dir={ddp}"], KILL_AFTER_CHECKPOINT="3", WATCH_WRITES=watched)
    assert killed.returncode != 0, killed.stdout + killed.stderr
    assert "writes" not in killed.stderr, killed.stderr
    at3 = runlib.load_checkpoint(ddp / "checkpoints" / "last.pt")
    assert (at3["step"], at3["world_size"]) == (3, 2)
    shutil.copytree(ddp, tmp_path / "ddp_then_one")

    # Started again under torchrun: it continues at step 3 and ends where the one-process run did.
    resumed = torchrun(tmp_path, [*common, f"output_dir={ddp}"], WATCH_WRITES=watched)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "writes" not in resumed.stderr, resumed.stderr
    assert f"resumed from {ddp / 'checkpoints' / 'last.pt'} at step 3" in resumed.stdout
    assert resumed.stdout.count("final: mean max reward") == 1  # rank 0 alone prints
    final = runlib.load_checkpoint(ddp / "checkpoints" / "last.pt")
    assert final["step"] == STEPS
    weights, ema = max_difference(reference["policy"], final["policy"]), \
        max_difference(reference["ema"]["averaged"], final["ema"]["averaged"])
    with capsys.disabled():
        print(f"\n2 processes vs 1 after {STEPS} steps (killed and resumed at 3): max |weight difference| "
              f"{weights:.2e}, EMA {ema:.2e}")
    assert weights < 1e-5 and ema < 1e-5
    losses = [[h["train/loss"] for h in ckpt["history"] if "train/loss" in h] for ckpt in (reference, final)]
    np.testing.assert_allclose(losses[1], losses[0], rtol=0, atol=1e-5)  # the global batch's loss, logged by rank 0
    assert (ddp / "eval.json").is_file() and any((ddp / "videos" / "final").glob("*.mp4"))
    assert any((ddp / "wandb").glob("offline-run-*/run-*.wandb"))

    # The step-3 checkpoint continued by one process: a warning says what changes; the same weights at the end.
    capsys.readouterr()
    train.train(parse_overrides([*common, f"output_dir={tmp_path / 'ddp_then_one'}"]))
    err = capsys.readouterr().err
    assert "was trained by 2 process(es), this run has 1" in err and "from 8 to 16 windows" in err, err
    other = runlib.load_checkpoint(tmp_path / "ddp_then_one" / "checkpoints" / "last.pt")
    assert other["world_size"] == 1 and max_difference(reference["policy"], other["policy"]) < 1e-5


def test_a_bad_argument_stops_every_rank_with_one_line(tmp_path):
    """The dataset is missing: every rank meets it after the process group started; rank 0 prints it, torchrun
    stops the other rank (which would print it 3 s later, naming its rank, if it were the only one to meet it)."""
    missing = tmp_path / "no_such.zarr"
    result = torchrun(tmp_path, [*COMMON, f"dataset_path={missing}", f"output_dir={tmp_path / 'out'}"], timeout=90)
    assert result.returncode != 0
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(missing) in errors[0], result.stdout + result.stderr
    # No traceback from our code (torchrun adds its own failure report: which rank exited with what).
    assert 'train.py", line' not in result.stderr and 'child.py", line' not in result.stderr, result.stderr
