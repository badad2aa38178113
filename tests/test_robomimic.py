"""robomimic layer: environments from a dataset's metadata, hdf5 <-> zarr, absolute actions, scripted demos, train -> eval.

Everything runs on real robosuite physics and real hdf5 files written by our scripted demonstrator (no robomimic
download is possible here).
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from datasets.replay_buffer import ReplayBuffer
from demos.robomimic_hdf5 import (RobomimicFormatError, abs_action_replay_error, convert, info,
                                     read_env_meta)
from demos.robomimic import generate
from envs.robomimic.env import RobomimicEnv, standard_env_meta
from envs.robomimic.rotation import (axis_angle_to_rot6d, env_to_policy_action, policy_to_env_action,
                                     rot6d_to_axis_angle)
from envs.tasks import get_task

LOW_DIM = ["object", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"]
# Absolute actions executed open-loop reproduce the recorded trajectory to within these (measured: ~1.5 mm, ~2 mm).
EEF_TOLERANCE_M, OBJECT_TOLERANCE_M = 0.005, 0.01


@pytest.fixture(scope="session")
def lift_hdf5(tmp_path_factory):
    """4 scripted Lift demonstrations with both cameras' images (84x84), in robomimic's hdf5 format."""
    path = tmp_path_factory.mktemp("robomimic") / "lift.hdf5"
    report = generate("lift", path, episodes=4, cameras=("agentview", "robot0_eye_in_hand"), seed=0, progress=False)
    assert report["demos"] == 4
    return path


@pytest.fixture(scope="session")
def lift_zarr(lift_hdf5, tmp_path_factory):
    out = tmp_path_factory.mktemp("robomimic") / "lift.zarr"
    convert(lift_hdf5, out, obs_keys=[*LOW_DIM, "agentview_image", "robot0_eye_in_hand_image"], progress=False)
    return out


def test_hdf5_has_robomimic_layout(lift_hdf5):
    with h5py.File(lift_hdf5) as f:
        meta = json.loads(f["data"].attrs["env_args"])
        assert meta["env_name"] == "Lift" and meta["type"] == 1
        assert meta["env_kwargs"]["controller_configs"]["type"] == "OSC_POSE"
        demo = f["data/demo_0"]
        T = demo.attrs["num_samples"]
        assert demo["actions"].shape == (T, 7) and demo["states"].shape[0] == T
        assert demo["obs/agentview_image"].shape == (T, 84, 84, 3) and demo["obs/agentview_image"].dtype == np.uint8
        assert demo["next_obs/object"].shape == (T, 10)
        assert demo["dones"][-1] == 1 and demo["rewards"][-1] == 1.0  # ends on the success step
        assert "<mujoco" in demo.attrs["model_file"]
        assert f["data"].attrs["total"] == sum(f[f"data/demo_{i}"].attrs["num_samples"] for i in range(4))
    assert info(lift_hdf5)["demos"] == 4


def test_env_from_dataset_metadata_and_reset_to_recorded_state(lift_hdf5):
    meta = read_env_meta(lift_hdf5)
    env = RobomimicEnv(meta, [*LOW_DIM, "agentview_image"])
    try:
        assert env.action_space.shape == (7,)
        obs, _ = env.reset(seed=3)
        assert obs["object"].shape == (10,) and obs["agentview_image"].shape == (84, 84, 3)
        with h5py.File(lift_hdf5) as f:
            demo = f["data/demo_1"]
            for t in (0, demo.attrs["num_samples"] // 2):
                obs, _ = env.reset(options={"state": demo["states"][t]})
                # An observation returned by a step is sampled by robosuite during the step's last physics
                # sub-step (2 ms before the stored state), as at rollout time: moving parts (arm, gripper-to-cube
                # vector) within 1 mm of the state's own values; at t = 0 and for resting objects exact.
                for key in LOW_DIM:
                    atol = 1e-5 if t == 0 else 1e-3
                    np.testing.assert_allclose(obs[key], demo[f"obs/{key}"][t], atol=atol, err_msg=key)
                np.testing.assert_allclose(obs["object"][:7], demo["obs/object"][t][:7], atol=1e-5)  # cube pose
                # The image is rendered from the same state: identical up to renderer rounding.
                diff = np.abs(obs["agentview_image"].astype(int) - demo["obs/agentview_image"][t].astype(int))
                assert diff.mean() < 0.5, diff.mean()
    finally:
        env.close()


def test_seeded_resets_repeat_and_differ():
    env = RobomimicEnv(standard_env_meta("Lift"), ["object"])
    try:
        a = env.reset(seed=100000)[0]["object"]
        b = env.reset(seed=100001)[0]["object"]
        a2 = env.reset(seed=100000)[0]["object"]
        np.testing.assert_array_equal(a, a2)
        assert not np.allclose(a[:3], b[:3])
    finally:
        env.close()


def test_converter_windows_match_hdf5(lift_hdf5, lift_zarr):
    rb = ReplayBuffer.open(lift_zarr)
    assert rb.n_episodes == 4
    assert rb.attrs["env_meta"]["env_name"] == "Lift" and rb.attrs["abs_action"] is False
    with h5py.File(lift_hdf5) as f:
        for i in range(4):
            ep = rb.get_episode(i)
            demo = f[f"data/demo_{i}"]
            np.testing.assert_allclose(ep["action"], demo["actions"][:], rtol=1e-6)
            np.testing.assert_array_equal(ep["state"], demo["states"][:])
            np.testing.assert_array_equal(ep["agentview_image"], demo["obs/agentview_image"][:])
            np.testing.assert_allclose(ep["object"], demo["obs/object"][:])
    # Windows as train.py builds them for task=lift_image: the window starting at step t holds steps t.. of demo 0.
    from datasets.windows import WindowDataset

    task = get_task("lift_image").for_dataset(rb.attrs, str(lift_zarr))
    data = {**task.obs_from_dataset(rb.to_memory(list(task.dataset_keys))), "action": rb.to_memory(["action"])["action"]}
    ds = WindowDataset(data, list(task.obs_shapes), horizon=16, obs_horizon=2, action_horizon=8,
                       episode_ends=rb.episode_ends)
    with h5py.File(lift_hdf5) as f:
        demo = f["data/demo_0"]
        sample = ds[5]
        start = 5 - 1  # window 0 starts obs_horizon - 1 = 1 step before the episode (padding, docs/design.md section 4)
        np.testing.assert_array_equal(sample["obs"]["agentview_image"][0], demo["obs/agentview_image"][start])
        np.testing.assert_allclose(sample["action"][:4], demo["actions"][start:start + 4], rtol=1e-6)


def test_absolute_actions_replay_recorded_states(lift_hdf5, tmp_path):
    out = tmp_path / "lift_abs.zarr"
    report = convert(lift_hdf5, out, obs_keys=LOW_DIM, abs_action=True, progress=False)
    assert report["abs_action"] and report["demos"] == 4
    rb = ReplayBuffer.open(out)
    assert rb.shape("action") == (rb.n_steps, 10) and rb.attrs["abs_action"] is True
    meta = read_env_meta(lift_hdf5)
    with h5py.File(lift_hdf5) as f:
        for i in (0, 3):
            err = abs_action_replay_error(meta, f[f"data/demo_{i}/states"][:], rb.get_episode(i)["action"])
            assert err["max_eef_pos_error"] < EEF_TOLERANCE_M, err
            assert err["max_object_pos_error"] < OBJECT_TOLERANCE_M, err
    task = get_task("lift_lowdim").for_dataset(rb.attrs, str(out))
    assert task.action_dim == 10 and task.env_kwargs["abs_action"] is True


def test_rotation_6d_round_trip():
    rng = np.random.default_rng(0)
    aa = rng.uniform(-1.5, 1.5, (100, 3))  # |angle| < pi: axis-angle is unique there
    np.testing.assert_allclose(rot6d_to_axis_angle(axis_angle_to_rot6d(aa)), aa, atol=1e-9)
    actions = np.concatenate([rng.normal(size=(5, 3)), aa[:5], rng.uniform(-1, 1, (5, 1))], axis=1)
    actions = np.concatenate([actions, actions], axis=1)  # two arms
    np.testing.assert_allclose(policy_to_env_action(env_to_policy_action(actions)), actions, atol=1e-9)
    with pytest.raises(ValueError, match="10 numbers per arm"):
        policy_to_env_action(np.zeros(7))


def test_scripted_demonstrators_succeed(tmp_path):
    for task, n in (("lift", 5), ("can", 2)):
        report = generate(task, tmp_path / f"{task}.hdf5", episodes=n, seed=1000, progress=False)
        assert report["attempts"] == n, f"{task}: {report}"  # every attempt succeeded


def test_image_envs_render_in_parallel_processes(lift_hdf5):
    """Two image envs in spawned worker processes (as eval.vector=async builds them) render their own cameras."""
    import gymnasium as gym

    task = get_task("lift_image").for_dataset({"env_meta": read_env_meta(lift_hdf5)}, str(lift_hdf5))
    make = task.make_env  # runs in the worker: imports and registers there
    envs = gym.vector.AsyncVectorEnv([make, make], context="spawn")
    try:
        obs, _ = envs.reset(seed=[0, 1])
        assert obs["agentview_image"].shape == (2, 84, 84, 3)
        for _ in range(3):
            obs, *_ = envs.step(np.zeros((2, 7)))
        assert obs["robot0_eye_in_hand_image"].std() > 1  # a real picture, not a blank buffer
        assert not np.array_equal(obs["agentview_image"][0], obs["agentview_image"][1])  # different seeds
    finally:
        envs.close()


def test_train_eval_round_trip_on_lift(lift_zarr, tmp_path):
    import eval as eval_script
    from config import parse_overrides
    from train import train

    out = tmp_path / "run"
    cfg = parse_overrides(["task=lift_lowdim", f"dataset_path={lift_zarr}", "policy=diffusion_unet",
                           "policy.down_dims=[16,32]", "policy.num_inference_steps=4", "training.steps=6",
                           "training.batch_size=16", "training.eval_every=0", "eval.n_episodes=2", "eval.n_envs=2",
                           "eval.max_steps=30", "eval.n_videos=1", f"output_dir={out}", "wandb.mode=disabled"])
    summary = train(cfg)
    assert summary["n_episodes"] == 2 and 0.0 <= summary["success_rate"] <= 1.0
    assert (out / "videos" / "final").exists() and list((out / "videos" / "final").glob("*.mp4"))
    result = eval_script.evaluate_checkpoint([f"checkpoint={out / 'checkpoints' / 'last.pt'}", "n_episodes=2",
                                              "eval.max_steps=20", "eval.n_videos=0", "wandb.mode=disabled",
                                              f"output_dir={tmp_path / 'eval'}"])
    assert result["task"] == "lift_lowdim" and result["n_episodes"] == 2
    assert all(ep["length"] <= 20 for ep in result["episodes"])


def test_clear_errors(tmp_path, lift_hdf5, lift_zarr):
    bad = tmp_path / "notes.hdf5"
    bad.write_text("not hdf5")
    with pytest.raises(RobomimicFormatError, match="not an HDF5 file"):
        convert(bad, tmp_path / "x.zarr")
    other = tmp_path / "other.hdf5"
    with h5py.File(other, "w") as f:
        f.create_dataset("images", data=np.zeros(3))
    with pytest.raises(RobomimicFormatError, match="no group 'data'"):
        read_env_meta(other)
    no_meta = tmp_path / "no_meta.hdf5"
    with h5py.File(no_meta, "w") as f:
        f.create_group("data/demo_0")
    with pytest.raises(RobomimicFormatError, match=r"env_args.*missing"):
        convert(no_meta, tmp_path / "y.zarr")
    with pytest.raises(RobomimicFormatError, match=r"demo_0: missing \['obs/sideview_image'\]"):
        convert(lift_hdf5, tmp_path / "z.zarr", obs_keys=["sideview_image"], progress=False)
    rb = ReplayBuffer.open(lift_zarr)
    with pytest.raises(ValueError, match="robosuite env 'Lift'; task 'can_lowdim' is 'PickPlaceCan'"):
        get_task("can_lowdim").for_dataset(rb.attrs, "lift.zarr")
    with pytest.raises(ValueError, match="no 'env_meta' attribute"):
        get_task("lift_lowdim").for_dataset({}, "pusht.zip")
    with pytest.raises(ValueError, match="builds its environment from the dataset"):
        get_task("lift_lowdim").make_env()
    with pytest.raises(ValueError, match=r"action shape \(3,\), expected \(7,\)"):
        env = RobomimicEnv(rb.attrs["env_meta"], ["object"])
        try:
            env.reset(seed=0)
            env.step(np.zeros(3))
        finally:
            env.close()
