"""Bad input ends in one line naming it and exit status 2, through the one error base class (common.StackError)."""

import importlib
import inspect

import numpy as np
import pytest

import compare
import eval as eval_script
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
