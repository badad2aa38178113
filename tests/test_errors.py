"""Bad input ends in one line naming it and exit status 2, through the one error base class (common.StackError)."""

import importlib
import inspect
import json
import re

import numpy as np
import pytest
import torch

import compare
import eval as eval_script
import runlib
import train
from common import CheckpointError, ConfigError, DataError, StackError, TrainingError, run_cli
from datasets import ReplayBuffer


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("error", [StackError, ConfigError, DataError, CheckpointError, TrainingError])
def test_run_cli_prints_every_stack_error_on_one_line(error, capsys):
    def command(argv):
        raise error(f"file.zarr: key 'x' is bad ({argv})")

    assert run_cli(command, ["a=1"]) == 2
    assert one_error_line(capsys) == "error: file.zarr: key 'x' is bad (['a=1'])"


def test_run_cli_keeps_tracebacks_for_bugs_and_returns_the_commands_status():
    def bug(argv):
        raise ZeroDivisionError("a bug, not bad input")

    with pytest.raises(ZeroDivisionError):
        run_cli(bug, [])
    assert run_cli(lambda argv: 3, []) == 3 and run_cli(lambda argv: None, []) == 0


@pytest.mark.parametrize("module", ["common.errors", "datasets.replay_buffer", "datasets.download",
                                    "demos.robomimic_hdf5", "compare"])
def test_every_named_error_class_derives_from_stack_error(module):
    classes = [c for _, c in inspect.getmembers(importlib.import_module(module), inspect.isclass)
               if issubclass(c, Exception) and c.__module__ == module]
    assert classes
    for cls in classes:
        assert issubclass(cls, StackError), cls


def test_a_corrupt_dataset_is_one_line_through_train_py(tmp_path, capsys):
    """ReplayBufferError is a ValueError; before it derived from StackError, train.py printed its traceback."""
    path = tmp_path / "bad.zarr"
    with ReplayBuffer.create(path) as rb:
        rb.add_episode({"keypoint": np.zeros((20, 9, 2), np.float32), "state": np.zeros((20, 5), np.float32),
                        "action": np.zeros((20, 2), np.float32)})
    (path / "meta" / "episode_ends" / "zarr.json").write_text("{not json")
    assert train.main([f"dataset_path={path}", f"output_dir={tmp_path / 'out'}", "wandb.mode=disabled"]) == 2
    assert "bad.zarr" in one_error_line(capsys)


def test_a_text_file_named_zip_is_one_line(tmp_path, capsys):
    path = tmp_path / "notes.zip"
    path.write_text("not a zip")
    assert train.main([f"dataset_path={path}", "wandb.mode=disabled", f"output_dir={tmp_path / 'out'}"]) == 2
    assert "notes.zip: not a zip file" in one_error_line(capsys)


def test_eval_of_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert eval_script.main([f"checkpoint={tmp_path / 'none.pt'}"]) == 2
    assert "none.pt: no such checkpoint" in one_error_line(capsys)


def test_compare_run_with_a_bad_policy_key_stops_before_the_first_run(tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["run", "policies=diffusion_unet,ibc", "seeds=0,1", f"output_dir={out}", "ibc.policy.hiden_dim=8"]
    assert compare.main(argv) == 2
    assert "unknown config key 'policy.hiden_dim' for policy 'ibc'" in one_error_line(capsys)
    assert not out.exists()  # nothing was trained or written


def test_demos_converter_names_a_file_that_is_not_hdf5(tmp_path, capsys):
    from demos.robomimic_hdf5 import main

    path = tmp_path / "lift.hdf5"
    path.write_text("text")
    assert main(["info", str(path)]) == 2
    assert "lift.hdf5: not an HDF5 file" in one_error_line(capsys)


# ------------------------------------------------------------------------- values, data, reruns, reproducibility
@pytest.mark.parametrize("arg, message", [
    ("training.steps=-5", "training.steps=-5: expected a positive number of steps"),
    ("training.batch_size=0", "training.batch_size=0: expected a positive batch size"),
    ("eval.n_episodes=0", "eval.n_episodes=0: expected at least 1 episode"),
    ("training.checkpoint_every=-1", "training.checkpoint_every=-1: expected 0 .only at the end. or a positive"),
    ("eval.vector=threads", "eval.vector='threads': expected sync or async"),
    ("training.val_ratio=1.5", "training.val_ratio=1.5: expected a fraction in"),
])
def test_values_that_cannot_work_stop_before_anything_runs(arg, message, tmp_path, capsys):
    out = tmp_path / "never"
    assert train.main([arg, f"output_dir={out}", "wandb.mode=disabled"]) == 2
    assert re.search(message, one_error_line(capsys))
    assert not out.exists()


def test_output_dir_that_is_a_file_is_named(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("x")
    assert train.main([f"output_dir={path}", "wandb.mode=disabled"]) == 2
    assert "notes.txt' is a file; expected a directory" in one_error_line(capsys)


def test_nan_in_a_validation_episode_names_file_key_episode_and_step(tmp_path, capsys):
    """Before, the run trained and ended with val/loss = nan and exit 0."""
    path = tmp_path / "nan.zarr"
    rng = np.random.default_rng(0)
    with ReplayBuffer.create(path) as rb:
        for _ in range(3):
            rb.add_episode({"keypoint": rng.uniform(0, 512, (30, 9, 2)).astype(np.float32),
                            "state": rng.uniform(0, 512, (30, 5)).astype(np.float32),
                            "action": rng.uniform(0, 512, (30, 2)).astype(np.float32)})
    with ReplayBuffer.open(path, mode="a") as rb:
        actions = rb.to_memory(["action"])["action"]
    from common import DataError
    from datasets.windows import split_episodes

    _, val_idx = split_episodes(3, 0.34, 42)
    episode = int(val_idx[0])
    actions[episode * 30 + 7, 1] = np.nan
    import zarr

    zarr.open_group(str(path), mode="a")["data/action"][:] = actions
    assert train.main([f"dataset_path={path}", "training.val_ratio=0.34", f"output_dir={tmp_path / 'out'}",
                       "wandb.mode=disabled"]) == 2
    line = one_error_line(capsys)
    assert f"nan.zarr: data/action holds NaN or inf in 1 step(s), first in episode {episode} (a validation episode) " \
           f"at its step 7" in line
    assert issubclass(DataError, StackError)


TINY_RUN = ["policy.down_dims=[8,16]", "policy.diffusion_step_embed_dim=16", "policy.kernel_size=3",
            "policy.n_groups=4", "policy.inference_scheduler=ddim", "policy.num_inference_steps=3",
            "training.batch_size=16", "training.threads=1", "eval.n_episodes=3", "eval.max_steps=24", "eval.n_videos=0",
            "wandb.mode=disabled", "training.steps=3", "training.eval_every=0", "training.val_every=0"]


def test_finished_run_is_not_evaluated_again_and_eval_is_reproducible(demos, tmp_path, capsys):
    out = tmp_path / "run"
    args = [f"dataset_path={demos}", f"output_dir={out}", *TINY_RUN]
    assert train.main(args) == 0
    eval_json = (out / "eval.json").read_text()
    history = runlib.load_checkpoint(out / "checkpoints" / "last.pt")["history"]
    capsys.readouterr()
    assert train.main(args) == 0  # the same command again
    assert "the run is complete (step 3 of training.steps=3); nothing to do" in capsys.readouterr().out
    assert (out / "eval.json").read_text() == eval_json
    assert runlib.load_checkpoint(out / "checkpoints" / "last.pt")["history"] == history

    # eval.py twice on the same checkpoint (the sampling noise is seeded from the run's seed): identical numbers.
    results = []
    for name in ("a", "b"):
        torch.manual_seed(len(name) * 1000 + ord(name))  # whatever state the process was in before
        assert eval_script.main([f"checkpoint={out / 'checkpoints' / 'last.pt'}", f"output_dir={tmp_path / name}",
                                 "n_episodes=3", "eval.max_steps=24", "eval.n_videos=0", "wandb.mode=disabled"]) == 0
        results.append(json.loads((tmp_path / name / "eval.json").read_text()))
    assert [e["max_reward"] for e in results[0]["episodes"]] == [e["max_reward"] for e in results[1]["episodes"]]
    assert results[0]["mean_max_reward"] == results[1]["mean_max_reward"]
