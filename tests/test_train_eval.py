"""train.py and eval.py: overrides, the train -> checkpoint -> kill -> resume -> eval round trip, bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import eval as eval_script
import runlib
import train
from common import CheckpointError, ConfigError, DataError, TrainingError
from config import parse_overrides, policy_config_kwargs
from datasets import ReplayBuffer

from conftest import tiny_unet_overrides

TINY = [*tiny_unet_overrides("policy.", num_inference_steps=3), "training.batch_size=16", "training.threads=1",
        "eval.n_episodes=2", "eval.max_steps=16", "eval.n_videos=1", "eval.video_size=64"]


def run_train(argv):
    return train.train(parse_overrides(argv))


def test_overrides_set_fields_and_presets():
    cfg = parse_overrides(["task=pusht_image", "training.steps=7", "eval.n_envs=3", "wandb.mode=disabled",
                           "policy.down_dims=[32,64]", "seed=5", "dataset_path=/x/y.zip"])
    assert (cfg.task, cfg.training.steps, cfg.eval.n_envs, cfg.wandb.mode, cfg.seed) == \
           ("pusht_image", 7, 3, "disabled", 5)
    assert cfg.training.batch_size == 64  # the image task's preset
    assert policy_config_kwargs(cfg)["down_dims"] == (32, 64)
    assert parse_overrides(["dataset_path=/x/y.zip"]).policy_config["down_dims"] == [64, 128, 256]  # small UNet


@pytest.mark.parametrize("argv, message", [
    (["training.stepz=1"], "unknown config key 'training.stepz'"),
    (["training.steps=many"], "training.steps: expected an integer"),
    (["training.use_ema=3"], "training.use_ema: expected true or false"),
    (["nonsense=1"], "unknown config key 'nonsense'"),
    (["task=pusht_3d"], "unknown task 'pusht_3d'"),
    (["policy=diffusion_lstm"], "unknown policy 'diffusion_lstm'"),
    (["steps"], "expected key=value"),
])
def test_bad_overrides_name_the_key(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_overrides(argv)


@pytest.mark.parametrize("argv, message", [
    (["policy.down_dimz=[1]"], "unknown config key 'policy.down_dimz' for policy 'diffusion_unet'"),
    (["policy.down_dims=many"], "policy.down_dims: expected a list"),
    (["policy.inference_scheduler=euler"], r"policy 'diffusion_unet' on task 'pusht_keypoints' "
                                           r"\(.*policy.inference_scheduler='euler'\): inference_scheduler must be"),
    (["policy=lstm_gmm", "policy.obs_horizon=3"], "obs_horizon must equal horizon"),
    (["policy=ibc", "task=pusht_image", "policy.crop_shape=[100,100]"], "larger than image 'image'"),
    (["policy=diffusion_rnn"], "unknown policy 'diffusion_rnn'; known policies: diffusion_unet"),
    (["task=pusht_3d"], "unknown task 'pusht_3d'; known tasks: pusht_lowdim"),
])
def test_policy_settings_are_checked_when_the_command_line_is_parsed(argv, message):
    """Names, types and values of policy.* are checked by parse_overrides, before any data is read."""
    with pytest.raises(ConfigError, match=message):
        parse_overrides(argv)


def test_train_kill_resume_eval_round_trip(demos, tmp_path, monkeypatch):
    common = [f"dataset_path={demos}", "training.steps=6", "training.checkpoint_every=3", "training.eval_every=0",
              "training.val_every=3", "training.log_every=1", "policy.lr_warmup_steps=2", "wandb.mode=offline",
              *TINY]
    straight = tmp_path / "straight"
    summary = run_train([*common, f"output_dir={straight}"])
    assert summary["step"] == 6 and summary["n_episodes"] == 2

    # The same run killed right after its step-3 checkpoint, then started again.
    resumed = tmp_path / "resumed"
    real_save = train.save_checkpoint

    def save_then_die(path, state):
        real_save(path, state)
        if state["step"] == 3:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(train, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_train([*common, f"output_dir={resumed}"])
    monkeypatch.setattr(train, "save_checkpoint", real_save)
    assert runlib.load_checkpoint(resumed / "checkpoints" / "last.pt")["step"] == 3
    run_train([*common, f"output_dir={resumed}"])

    a = runlib.load_checkpoint(straight / "checkpoints" / "last.pt")
    b = runlib.load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 6
    for key in a["policy"]:
        torch.testing.assert_close(a["policy"][key], b["policy"][key], rtol=0, atol=0, msg=key)
    for key in a["ema"]["averaged"]:
        torch.testing.assert_close(a["ema"]["averaged"][key], b["ema"]["averaged"][key], rtol=0, atol=0, msg=key)
    assert a["lr_scheduler"] == b["lr_scheduler"]
    assert [h["train/loss"] for h in a["history"] if "train/loss" in h] == \
           [h["train/loss"] for h in b["history"] if "train/loss" in h]
    assert any((straight / "wandb").glob("offline-run-*/run-*.wandb"))  # a real offline W&B run file

    # eval.py on the checkpoint: eval.json contents and a video.
    out = tmp_path / "eval"
    assert eval_script.main([f"checkpoint={straight / 'checkpoints' / 'last.pt'}", "n_episodes=3", "n_envs=2",
                             "seed=100010", f"output_dir={out}", "wandb.mode=disabled"]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["n_episodes"] == 3 and [e["seed"] for e in result["episodes"]] == [100010, 100011, 100012]
    rewards = [e["max_reward"] for e in result["episodes"]]
    assert result["mean_max_reward"] == pytest.approx(np.mean(rewards))
    assert result["success_rate"] == pytest.approx(np.mean([e["success"] for e in result["episodes"]]))
    lo, hi = result["mean_max_reward_ci95"]
    assert lo <= result["mean_max_reward"] <= hi
    assert all(0 < e["length"] <= 16 for e in result["episodes"])
    assert len(result["videos"]) == 1 and Path(result["videos"][0]).stat().st_size > 0

    # Checkpoints from another task, truncated or incomplete are refused with their path named.
    ckpt = straight / "checkpoints" / "last.pt"
    assert eval_script.main([f"checkpoint={ckpt}", "task=pusht_image"]) == 2
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(ckpt.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="truncated.pt: not a readable checkpoint"):
        runlib.load_checkpoint(truncated)
    incomplete = tmp_path / "incomplete.pt"
    torch.save({"policy": {}}, incomplete)
    with pytest.raises(CheckpointError, match=r"incomplete.pt: checkpoint is missing keys \['config'"):
        runlib.load_checkpoint(incomplete)
    with pytest.raises(CheckpointError, match="belongs to task 'pusht_keypoints'"):
        run_train([*common, f"output_dir={straight}", "task=pusht_lowdim", "training.steps=8"])
    # Same task and policy, another network size: one line naming the file and what differs (was 160 lines).
    with pytest.raises(CheckpointError, match=r"last.pt: this run differs from the run it would resume "
                                              r"\(policy.down_dims: \(8, 16\) in the checkpoint, \(16, 32\) now\)"):
        run_train([*common, f"output_dir={straight}", "training.steps=8", "policy.down_dims=[16,32]"])


def test_dataset_without_the_task_keys_is_named(tmp_path):
    path = tmp_path / "state_only.zarr"
    with ReplayBuffer.create(path) as rb:
        rb.add_episode({"state": np.zeros((20, 5), np.float32), "action": np.zeros((20, 2), np.float32)})
    with pytest.raises(DataError, match=r"needs data keys \['keypoint', 'state', 'action'\]; missing \['keypoint'\]"):
        run_train([f"dataset_path={path}", "task=pusht_keypoints", f"output_dir={tmp_path / 'out'}", *TINY])
    assert train.main([f"dataset_path={path}", f"output_dir={tmp_path / 'out'}", "wandb.mode=disabled"]) == 2


def test_nan_loss_stops_with_the_step_and_last_checkpoint(demos, tmp_path, monkeypatch):
    from policy.diffusion import DiffusionPolicy

    real = DiffusionPolicy.compute_loss
    calls = {"n": 0}

    def nan_after_four(self, batch):
        calls["n"] += 1
        out = real(self, batch)
        return {"loss": out["loss"] * float("nan")} if calls["n"] > 4 else out

    monkeypatch.setattr(DiffusionPolicy, "compute_loss", nan_after_four)
    with pytest.raises(TrainingError, match=r"non-finite loss \(nan or inf\) at step 4, found at step 6 .*steps 4..5 "
                                            r"were unchecked\); stopping \(the last good checkpoint is .*last.pt"):
        run_train([f"dataset_path={demos}", "training.steps=10", "training.checkpoint_every=2",
                   "training.eval_every=0", "training.val_every=100", "wandb.mode=disabled",
                   f"output_dir={tmp_path}", *TINY])
    kept = runlib.load_checkpoint(tmp_path / "checkpoints" / "last.pt")  # nothing after the bad step was saved
    assert kept["step"] == 4 and all(torch.isfinite(w).all() for w in kept["policy"].values() if w.is_floating_point())


def test_data_on_device_gives_the_same_run_and_rng_states_load_to_the_cpu(demos, tmp_path):
    """The device-resident data path gathers the same batches as the loader (here on the CPU), so the losses
    are identical; checkpoints load to the CPU with CPU byte-tensor RNG states whatever device trained."""
    common = [f"dataset_path={demos}", "training.steps=6", "training.log_every=1", "training.eval_every=0",
              "training.val_every=0", "wandb.mode=disabled", "eval.n_episodes=1", *TINY]
    runs = {}
    for on_device in ("true", "false"):
        out = tmp_path / on_device
        run_train([*common, f"training.data_on_device={on_device}", f"output_dir={out}"])
        runs[on_device] = runlib.load_checkpoint(out / "checkpoints" / "last.pt")
    losses = {k: [h["train/loss"] for h in ckpt["history"] if "train/loss" in h] for k, ckpt in runs.items()}
    assert len(losses["true"]) == 6 and losses["true"] == losses["false"]
    rng = runs["true"]["rng"]["torch"]
    assert rng.device.type == "cpu" and rng.dtype == torch.uint8
    runlib.set_rng_state(runs["true"]["rng"])  # what a resume does


def test_loss_decreases_on_a_real_data_subset(pusht_zip, tmp_path):
    summary_dir = tmp_path / "run"
    run_train([f"dataset_path={pusht_zip}", "training.max_train_episodes=4", "training.steps=80",
               "training.log_every=1", "training.eval_every=0", "training.val_every=1000", "policy.optimizer_lr=1e-3",
               "policy.lr_warmup_steps=5", "wandb.mode=disabled", f"output_dir={summary_dir}",
               *TINY, "eval.n_episodes=1", "policy.down_dims=[32,64]", "policy.diffusion_step_embed_dim=32"])
    history = runlib.load_checkpoint(summary_dir / "checkpoints" / "last.pt")["history"]
    losses = [h["train/loss"] for h in history if "train/loss" in h]
    assert len(losses) == 80
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10]), losses


def test_image_policy_trains_and_evaluates(demos, tmp_path):
    summary = run_train([f"dataset_path={demos}", "task=pusht_image", "training.steps=2", "training.eval_every=0",
                         "training.val_every=100", "wandb.mode=disabled", f"output_dir={tmp_path}", *TINY,
                         "policy.down_dims=[8,16]", "policy.diffusion_step_embed_dim=16",
                         "policy.vision_base_channels=16", "policy.spatial_softmax_keypoints=8",
                         "policy.image_feature_dim=16", "eval.n_episodes=1", "eval.max_steps=8"])
    assert summary["n_episodes"] == 1 and summary["episodes"][0]["length"] == 8
    ckpt = runlib.load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ckpt["policy_config"]["obs_shapes"] == {"image": (96, 96, 3), "agent_pos": (2,)}
    assert any(k.startswith("obs_encoder") for k in ckpt["policy"])  # the ResNet went into the checkpoint


BASELINE_TINY = {
    "lstm_gmm": ["policy.rnn_hidden_dim=32", "policy.rnn_num_layers=1", "policy.optimizer_lr=3e-3"],
    "ibc": ["policy.hidden_dim=64", "policy.n_hidden_layers=2", "policy.train_n_negatives=32",
            "policy.inference_n_samples=64", "policy.optimizer_lr=1e-3"],
}


MIN_LOSS_DROP = {"lstm_gmm": 0.5, "ibc": 0.15}


@pytest.mark.parametrize("policy", sorted(BASELINE_TINY))
def test_baseline_loss_decreases_on_real_data_then_evaluates(policy, pusht_zip, tmp_path):
    """Each baseline through the same loop: its loss falls on 4 real Push-T episodes; eval.py rolls it out."""
    out = tmp_path / policy
    run_train([f"policy={policy}", f"dataset_path={pusht_zip}", "training.max_train_episodes=4",
               "training.steps=60", "training.batch_size=32", "training.log_every=1", "training.eval_every=0",
               "training.val_every=0", "policy.lr_warmup_steps=5", "training.threads=1", "wandb.mode=disabled",
               f"output_dir={out}", "eval.n_episodes=1", "eval.max_steps=4", "eval.n_videos=0",
               *BASELINE_TINY[policy]])
    losses = [h["train/loss"] for h in runlib.load_checkpoint(out / "checkpoints" / "last.pt")["history"]
              if "train/loss" in h]
    assert len(losses) == 60
    # GMM NLL (can go negative) / InfoNCE over 33 candidates (starts at ln 33 = 3.50): both fall clearly.
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - MIN_LOSS_DROP[policy], losses
    assert eval_script.main([f"checkpoint={out / 'checkpoints' / 'last.pt'}", "n_episodes=2", "n_envs=2",
                             "eval.max_steps=12", "eval.n_videos=0", "wandb.mode=disabled",
                             f"output_dir={tmp_path / 'eval'}"]) == 0
    result = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert result["policy"] == policy and result["n_episodes"] == 2
    assert {"mean_max_reward", "success_rate", "mean_max_reward_ci95"} <= set(result)
    assert all(ep["length"] == 12 for ep in result["episodes"])


def test_compiled_training_step_gives_the_eager_losses(demos, tmp_path):
    """training.compile=true runs the noise network through torch.compile; the losses (same batches, same noise:
    the draws stay outside the compiled graph) match the eager run's within float tolerance, and the checkpoint
    loads into an uncompiled policy."""
    common = [f"dataset_path={demos}", "training.steps=4", "training.log_every=1", "training.eval_every=0",
              "training.val_every=0", "training.checkpoint_every=0", "wandb.mode=disabled", "eval.n_episodes=1",
              *TINY]
    losses = {}
    for compiled in ("true", "false"):
        run_train([*common, f"training.compile={compiled}", f"output_dir={tmp_path / compiled}"])
        ckpt = runlib.load_checkpoint(tmp_path / compiled / "checkpoints" / "last.pt")
        losses[compiled] = [h["train/loss"] for h in ckpt["history"] if "train/loss" in h]
    assert len(losses["true"]) == 4
    np.testing.assert_allclose(losses["true"], losses["false"], rtol=1e-4)
    runlib.policy_from_checkpoint(runlib.load_checkpoint(tmp_path / "true" / "checkpoints" / "last.pt"), "last.pt")
    with pytest.raises(ConfigError, match="training.compile=true: policy 'lstm_gmm' has no noise network"):
        run_train([f"dataset_path={demos}", "policy=lstm_gmm", "policy.rnn_hidden_dim=8", "training.compile=true",
                   "wandb.mode=disabled", f"output_dir={tmp_path / 'lstm'}"])


def test_torch_threads_are_lowered_to_the_free_cores_when_another_process_is_busy():
    """With a busy process on one core, the default thread count drops below the core count (a loaded 2-core
    machine then runs 1 thread instead of 2 spinning against the other process); an explicit count is kept."""
    import os
    import subprocess
    import sys

    n = os.cpu_count()
    threads = torch.get_num_threads()
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(max(1, n - 1))]
    try:
        import time

        time.sleep(0.5)
        assert runlib.free_cores() <= max(1, n - len(busy))
        assert runlib.set_torch_threads(None, default=n) < n or n == 1
        assert runlib.set_torch_threads(3) == 3 and torch.get_num_threads() == 3
    finally:
        for p in busy:
            p.kill()
        torch.set_num_threads(threads)


def test_thread_governor_follows_other_jobs_while_training():
    """A training that started alone gives cores back when another job starts, and takes them again after."""
    import os
    import subprocess
    import sys
    import time

    n = os.cpu_count()
    if n < 2:
        pytest.skip("needs at least 2 cores")
    threads = torch.get_num_threads()
    governor = runlib.ThreadGovernor(maximum=n)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n - 1)]
    try:
        time.sleep(1.0)
        assert governor.update() == 1 and torch.get_num_threads() == 1
    finally:
        for p in busy:
            p.kill()
            p.wait()
    try:
        time.sleep(1.0)
        assert governor.update() >= 1
    finally:
        torch.set_num_threads(threads)


def test_the_run_ends_with_a_summary_a_person_reads(tmp_path):
    """Score with its interval, success, where video/curve/checkpoint/W&B are, and the next commands."""
    out = tmp_path / "run"
    summary = {"step": 2000, "wall_s": 540.0, "hardware": "CPU Test, 2 cores", "n_episodes": 50,
               "mean_max_reward": 0.853, "mean_max_reward_ci95": [0.8, 0.9], "success_rate": 0.3,
               "success_rate_ci95": [0.19, 0.44], "videos": ["a.mp4", "b.mp4"]}
    text = train.run_summary(parse_overrides([f"output_dir={out}"]), summary, out, out / "checkpoints/last.pt",
                             out / "checkpoints/best.pt")
    assert "2000 steps in 9.0 min on CPU Test, 2 cores (generated demonstrations)" in text
    assert "score (mean max coverage) 0.853 (95% CI 0.800..0.900), success 30% (95% CI 19%..44%) over 50" in text
    assert f"videos      {out / 'videos' / 'final'} (2 mp4)" in text
    assert f"wandb sync {out / 'wandb'}/offline-run-*" in text
    assert f"python eval.py checkpoint={out / 'checkpoints/last.pt'}" in text
    assert "python -m datasets.download pusht" in text and "python compare.py run" in text
    with_data = train.run_summary(parse_overrides(["dataset_path=/d/pusht.zip", "wandb.mode=disabled"]), summary,
                                  out, out / "last.pt", out / "best.pt")
    assert "datasets.download" not in with_data and "dataset_path=/d/pusht.zip recipe=presets   # compare" in with_data
    assert "W&B run     off" in with_data
