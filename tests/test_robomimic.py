"""robomimic layer: environments from a dataset's metadata, hdf5 <-> zarr, absolute actions, scripted demos, train -> eval.

Everything runs on real robosuite physics and real hdf5 files. Most tests read files made the way robomimic's
published datasets were made, by robosuite's and robomimic's own code (robosuite's DataCollectionWrapper and
gather_demonstrations_as_hdf5, robomimic's convert_robosuite.py and dataset_states_to_obs.py, run unchanged), with
our scripted demonstrator in the human's place; others read files from our one-pass writer.
"""

from __future__ import annotations

import json
import shutil

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
CAMERAS = ("agentview", "robot0_eye_in_hand")
# Absolute actions executed open-loop (from the recorded states[1]) reproduce the recorded trajectory to within
# these (measured on robomimic-written Lift files: 1.6 mm end effector, 2.1 mm cube).
EEF_TOLERANCE_M, OBJECT_TOLERANCE_M = 0.003, 0.005


@pytest.fixture(scope="session")
def robomimic_files(tmp_path_factory):
    """3 scripted Lift demonstrations made by robosuite's and robomimic's own scripts: the raw states-and-actions
    file, the low-dim file and the 84x84 image file of the same recording (robomimic's published layout)."""
    d = tmp_path_factory.mktemp("robomimic_written")
    files = {"raw": d / "demo.hdf5", "low_dim": d / "low_dim.hdf5", "image": d / "image.hdf5"}
    report = generate("lift", files["image"], episodes=3, cameras=CAMERAS, seed=0, progress=False,
                      low_dim_out=files["low_dim"], raw_out=files["raw"])
    assert report["demos"] == 3 and report["writer"] == "robomimic"
    return files


@pytest.fixture(scope="session")
def lift_hdf5(tmp_path_factory):
    """4 scripted Lift demonstrations with both cameras' images (84x84), from our one-pass writer (fast_render)."""
    path = tmp_path_factory.mktemp("robomimic") / "lift.hdf5"
    report = generate("lift", path, episodes=4, cameras=CAMERAS, seed=0, progress=False, writer="direct")
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


def test_robomimic_written_files_have_the_published_layout(robomimic_files):
    """What robomimic's own scripts wrote: env_args as dataset_states_to_obs serializes them, 1-based demo names
    (robosuite's gather step), masks train / valid (convert_robosuite's 90/10 split), dones at success and at the end
    (--done_mode 2), and the three files of one recording agree on states and actions."""
    with h5py.File(robomimic_files["image"]) as img, h5py.File(robomimic_files["low_dim"]) as low, \
            h5py.File(robomimic_files["raw"]) as raw:
        meta = json.loads(img["data"].attrs["env_args"])
        assert meta["env_name"] == "Lift" and meta["type"] == 1 and meta["env_version"] == "1.4.1"
        kwargs = meta["env_kwargs"]
        assert kwargs["camera_names"] == list(CAMERAS) and kwargs["camera_heights"] == 84
        assert kwargs["controller_configs"]["type"] == "OSC_POSE" and kwargs["reward_shaping"] is False
        assert json.loads(low["data"].attrs["env_args"])["env_kwargs"]["use_camera_obs"] is False
        assert _demos(robomimic_files["image"]) == ["demo_1", "demo_2", "demo_3"]
        masks = sorted(n.decode() for key in ("train", "valid") for n in img[f"mask/{key}"][:])
        assert masks == ["demo_1", "demo_2", "demo_3"]
        assert "obs" not in raw["data/demo_1"] and "env_args" in raw["data"].attrs  # states and actions only
        for name in _demos(robomimic_files["image"]):
            demo = img[f"data/{name}"]
            T = demo.attrs["num_samples"]
            np.testing.assert_array_equal(demo["states"][:], raw[f"data/{name}/states"][:])
            np.testing.assert_array_equal(demo["actions"][:], low[f"data/{name}/actions"][:])
            assert demo["obs/agentview_image"].shape == (T, 84, 84, 3)
            assert "agentview_image" not in low[f"data/{name}/obs"]
            assert demo["dones"][-1] == 1 and demo["rewards"][-1] == 1.0
            # robosuite's collection ran on for 10 steps once the task was solved: the last 11 steps are successes
            assert demo["rewards"][-11:].tolist() == [1.0] * 11 and demo["rewards"][0] == 0.0
            assert "<mujoco" in demo.attrs["model_file"]
    assert info(robomimic_files["image"])["masks"] == ["train", "valid"]


def test_env_from_robomimic_written_metadata_reproduces_its_observations(robomimic_files):
    """An environment built from the file's own env_args, set to a recorded state, observes what robomimic's
    dataset_states_to_obs stored for it: low-dim values to float precision; images within 2/255 on average
    (measured up to 1.0: robomimic's extraction rebuilt the simulator from each demo's model_file), and exactly
    once the demo's model_file is loaded too, as robomimic's extraction did."""
    meta = read_env_meta(robomimic_files["image"])
    env = RobomimicEnv(meta, [*LOW_DIM, "agentview_image", "robot0_eye_in_hand_image"])
    try:
        assert env.fast_render is False  # rendered as robomimic renders, with reflections
        with h5py.File(robomimic_files["image"]) as f:
            demo = f["data/demo_2"]
            for with_model in (False, True):
                for t in (0, demo.attrs["num_samples"] // 2, demo.attrs["num_samples"] - 1):
                    model = demo.attrs["model_file"] if with_model else None
                    obs, _ = env.reset(options={"state": demo["states"][t], "model": model})
                    for key in LOW_DIM:
                        np.testing.assert_allclose(obs[key], demo[f"obs/{key}"][t], atol=1e-6, err_msg=f"{key} {t}")
                    for key in ("agentview_image", "robot0_eye_in_hand_image"):
                        diff = np.abs(obs[key].astype(int) - demo[f"obs/{key}"][t].astype(int))
                        if with_model:
                            assert diff.max() == 0, (key, t, diff.mean())
                        else:
                            assert diff.mean() < 2.0, (key, t, diff.mean())
    finally:
        env.close()


def test_converter_reads_robomimic_written_image_file(robomimic_files, tmp_path):
    out = tmp_path / "lift_image.zarr"
    report = convert(robomimic_files["image"], out, obs_keys=[*LOW_DIM, "agentview_image", "robot0_eye_in_hand_image"],
                     filter_key="train", progress=False)
    rb = ReplayBuffer.open(out)
    with h5py.File(robomimic_files["image"]) as f:
        train = sorted((n.decode() for n in f["mask/train"][:]), key=lambda n: int(n[5:]))
        assert report["demos"] == rb.n_episodes == len(train)
        for i, name in enumerate(train):
            ep = rb.get_episode(i)
            np.testing.assert_array_equal(ep["robot0_eye_in_hand_image"],
                                          f[f"data/{name}/obs/robot0_eye_in_hand_image"][:])
            np.testing.assert_allclose(ep["action"], f[f"data/{name}/actions"][:], rtol=1e-6)
    task = get_task("lift_image").for_dataset(rb.attrs, str(out))
    assert task.env_kwargs["env_meta"]["env_kwargs"]["camera_names"] == list(CAMERAS)


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


def _demos(path):
    with h5py.File(path) as f:
        return sorted(f["data"].keys(), key=lambda n: int(n[5:]))


@pytest.mark.parametrize("which", ["robomimic-written", "direct"])
def test_absolute_actions_replay_recorded_states(which, robomimic_files, lift_hdf5, tmp_path):
    src = robomimic_files["low_dim"] if which == "robomimic-written" else lift_hdf5
    out = tmp_path / "lift_abs.zarr"
    report = convert(src, out, obs_keys=LOW_DIM, abs_action=True, progress=False)
    assert report["abs_action"] and report["demos"] == len(_demos(src))
    rb = ReplayBuffer.open(out)
    assert rb.shape("action") == (rb.n_steps, 10) and rb.attrs["abs_action"] is True
    meta = read_env_meta(src)
    with h5py.File(src) as f:
        for i, name in enumerate(_demos(src)):
            states = f[f"data/{name}/states"][:]
            err = abs_action_replay_error(meta, states, rb.get_episode(i)["action"])
            assert err["max_eef_pos_error"] < EEF_TOLERANCE_M, (name, err)
            assert err["max_object_pos_error"] < OBJECT_TOLERANCE_M, (name, err)
    task = get_task("lift_lowdim").for_dataset(rb.attrs, str(out))
    assert task.action_dim == 10 and task.env_kwargs["abs_action"] is True


def test_reference_absolute_action_files(robomimic_files, tmp_path):
    """The reference's *_abs.hdf5: robomimic's file with each demo's actions replaced by absolute axis-angle ones
    (its conversion script does exactly that). Read with --input-actions absolute, they give the same policy
    actions as converting the relative file here; either kind read as the other is refused by name."""
    rel_zarr, abs_zarr = tmp_path / "from_relative.zarr", tmp_path / "from_abs_file.zarr"
    convert(robomimic_files["low_dim"], rel_zarr, obs_keys=LOW_DIM, abs_action=True, progress=False)
    reference_style = tmp_path / "low_dim_abs.hdf5"
    shutil.copyfile(robomimic_files["low_dim"], reference_style)
    rel = ReplayBuffer.open(rel_zarr)
    with h5py.File(reference_style, "r+") as f:
        for i, name in enumerate(_demos(reference_style)):
            f[f"data/{name}/actions"][:] = policy_to_env_action(rel.get_episode(i)["action"])
    convert(reference_style, abs_zarr, obs_keys=LOW_DIM, input_actions="absolute", progress=False)
    got = ReplayBuffer.open(abs_zarr)
    assert got.attrs["abs_action"] is True and got.attrs["input_actions"] == "absolute"
    np.testing.assert_allclose(got.to_memory(["action"])["action"], rel.to_memory(["action"])["action"], atol=1e-5)
    with pytest.raises(RobomimicFormatError, match=r"low_dim_abs\.hdf5: data/demo_1/actions: values up to .* "
                                                   r"outside robomimic's relative range.*--input-actions absolute"):
        convert(reference_style, tmp_path / "x.zarr", obs_keys=LOW_DIM, progress=False)
    with pytest.raises(RobomimicFormatError, match=r"inside \[-1, 1\] like relative actions.*drop --input-actions"):
        convert(robomimic_files["low_dim"], tmp_path / "y.zarr", obs_keys=LOW_DIM, input_actions="absolute",
                progress=False)


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
    # Lift and Can succeed on every seed measured; Square on 88% (docs/robomimic.md): 3 of these 4 seeds.
    for task, n, attempts in (("lift", 5, 5), ("can", 2, 2), ("square", 3, 4)):
        report = generate(task, tmp_path / f"{task}.hdf5", episodes=n, seed=1000, progress=False, writer="direct")
        assert report["demos"] == n and report["attempts"] <= attempts, f"{task}: {report}"


def test_download_robomimic_files_from_a_local_copy(robomimic_files, tmp_path, monkeypatch):
    """`python -m datasets.download robomimic/...` with --source: robomimic publishes no checksum, so the file is
    checked by what it holds (env, number of demos, kind); the image file is made from the raw one by robomimic's
    own dataset_states_to_obs.py. The published files hold 200 demos: here the 3-demo recording is registered."""
    import dataclasses

    from datasets import download

    for kind in ("raw", "low_dim", "image"):
        spec = download.PUBLISHED[f"robomimic/lift/ph/{kind}"]
        quick = {"cameras": ("agentview",), "image_size": 32} if kind == "image" else {}
        monkeypatch.setitem(download.PUBLISHED, f"robomimic/lift/ph/{kind}",
                            dataclasses.replace(spec, demos=3, **quick))
    cache = tmp_path / "cache"
    path = download.fetch("robomimic/lift/ph/low_dim", cache=cache, source=robomimic_files["low_dim"], progress=False)
    assert path == cache / "robomimic" / "lift" / "ph" / "low_dim_v141.hdf5"
    assert (path.parent / "low_dim_v141.hdf5.sha256").read_text().split()[0] == download.sha256_of(path)
    assert download.fetch("robomimic/lift/ph/low_dim", cache=cache) == path  # in the cache: no source, no network
    # Another local copy given: checked and taken instead of the cached file, not silently ignored.
    other = robomimic_files["image"]  # a Lift file of the same 3 demos with obs/object: passes as low_dim
    assert download.fetch("robomimic/lift/ph/low_dim", cache=cache, source=other) == path
    assert download.sha256_of(path) == download.sha256_of(other)
    shutil.copyfile(robomimic_files["low_dim"], tmp_path / "low_dim.hdf5")
    download.fetch("robomimic/lift/ph/low_dim", cache=cache, source=tmp_path / "low_dim.hdf5")
    image = download.fetch("robomimic/lift/ph/image", cache=cache, source=robomimic_files["raw"], progress=False)
    assert (cache / "robomimic" / "lift" / "ph" / "demo_v141.hdf5").is_file()  # the raw file it was made from
    with h5py.File(image) as f, h5py.File(robomimic_files["raw"]) as raw:
        assert f["data/demo_1/obs/agentview_image"].shape[1:] == (32, 32, 3)
        np.testing.assert_array_equal(f["data/demo_1/states"][:], raw["data/demo_1/states"][:])
    assert download.verify(image, "robomimic/lift/ph/image")
    with pytest.raises(download.DownloadError,
                       match=r"robosuite env 'Lift'; robomimic/can/ph/low_dim is 'PickPlaceCan'"):
        download.fetch("robomimic/can/ph/low_dim", cache=cache, source=robomimic_files["low_dim"])
    with pytest.raises(download.DownloadError,
                       match=r"3 demonstrations; the published robomimic/lift/mh/low_dim has 300"):
        download.fetch("robomimic/lift/mh/low_dim", cache=cache, source=robomimic_files["low_dim"])
    with pytest.raises(download.DownloadError, match=r"holds no observations \(a raw states-and-actions file\)"):
        download.fetch("robomimic/lift/ph/raw", cache=tmp_path / "other", source=robomimic_files["low_dim"])
    with pytest.raises(download.DownloadError, match="does not match the given robomimic/lift/ph/low_dim"):
        download.fetch("robomimic/lift/ph/low_dim", cache=tmp_path / "pinned", source=robomimic_files["low_dim"],
                       sha256="0" * 64)
    refused = [p for p in cache.rglob("*") if p.is_file() and ("can" in p.parts or "mh" in p.parts)]
    assert refused == []  # refused files leave nothing behind


def test_download_reference_zip_is_checked_and_extracted(robomimic_files, tmp_path, monkeypatch):
    import zipfile

    from datasets import download

    archive = tmp_path / "robomimic_lowdim.zip"
    with zipfile.ZipFile(archive, "w") as z:  # the reference's layout
        z.write(robomimic_files["low_dim"], "robomimic/datasets/lift/ph/low_dim.hdf5")
    tree = download.fetch("robomimic_lowdim", cache=tmp_path / "cache", source=archive)
    assert tree == tmp_path / "cache" / "robomimic_lowdim"
    assert info(tree / "robomimic" / "datasets" / "lift" / "ph" / "low_dim.hdf5")["env_name"] == "Lift"
    assert download.fetch("robomimic_lowdim", cache=tmp_path / "cache") == tree  # cached
    broken = tmp_path / "broken.zip"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the member
    broken.write_bytes(bytes(data))
    with pytest.raises(download.DownloadError, match=r"broken\.zip: (member .* fails its CRC|not a readable zip)"):
        download.fetch("robomimic_lowdim", cache=tmp_path / "cache2", source=broken)
    assert not (tmp_path / "cache2" / "robomimic_lowdim").exists()


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
