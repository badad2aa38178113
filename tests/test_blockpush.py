"""Block Pushing (envs/blockpush): seeded resets and trajectories, reward / termination / p1-p2 on constructed
states, bad input named, the oracle's four orders and its success, demos through the replay buffer into training
and an evaluation whose eval.json holds p1 and p2."""

import json

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("pybullet", reason="Block Pushing needs pybullet: pip install -c constraints.txt -e '.[test]'")

from common import EnvError  # noqa: E402
from envs.blockpush import BlockPushEnv  # noqa: E402
from envs.blockpush.demonstrator import BlockPushOracle  # noqa: E402
from envs.blockpush.env import FIRST_REWARD, BOTH_REWARD  # noqa: E402

from conftest import tiny_unet_overrides  # noqa: E402

TARGETS = [[0.28, 0.2, 0.0], [0.52, 0.2, 0.0]]


def rollout(seed, actions):
    env = BlockPushEnv(render_mode=None)
    obs = [env.reset(seed=seed)[0]]
    for a in actions:
        obs.append(env.step(a)[0])
    env.close()
    return np.stack(obs)


def test_the_same_seed_gives_the_same_reset_and_trajectory():
    actions = np.random.default_rng(0).uniform(-0.05, 0.05, (30, 2))
    a, b = rollout(7, actions), rollout(7, actions)
    assert a.shape == (31, 16) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(rollout(8, actions)[0], a[0])  # another seed, another reset
    # the layout: effector and its target start at (0.3, -0.4); targets at y 0.2, 0.24 m apart in x
    np.testing.assert_allclose(a[0, 8:10], [0.3, -0.4], atol=1e-6)
    assert abs(a[0, 11] - 0.2) <= 0.01 and abs(a[0, 14] - 0.2) <= 0.01
    assert 0.22 <= abs(a[0, 10] - a[0, 13]) <= 0.26
    assert np.linalg.norm(a[0, 0:2] - a[0, 3:5]) >= 0.1  # blocks drawn apart
    # the effector target moves by the (clipped) delta; the pusher follows it
    np.testing.assert_allclose(a[1, 8:10], a[0, 8:10] + actions[0], atol=1e-6)
    assert np.linalg.norm(a[-1, 6:8] - a[-1, 8:10]) < 0.02


def state(blocks, targets=TARGETS):
    return {"reset_to_state": {"blocks": blocks, "targets": targets}}


def test_reward_termination_and_scores_on_constructed_states():
    env = BlockPushEnv(render_mode=None)
    # one block in a target: 0.49 once, not done
    env.reset(options=state([[0.28, 0.2, 0.3], [0.45, -0.2, 0.0]]))
    rewards = [env.step([0.0, 0.0])[1] for _ in range(3)]
    assert rewards == [FIRST_REWARD, 0.0, 0.0]
    # both blocks in different targets: 0.49 + 0.51 at once, terminated, success
    env.reset(options=state([[0.28, 0.2, 0.0], [0.53, 0.21, 1.0]]))
    _, reward, terminated, truncated, info = env.step([0.0, 0.0])
    assert reward == pytest.approx(FIRST_REWARD + BOTH_REWARD) and terminated and not truncated
    assert info["is_success"] and info["blocks_in_targets"] == 2 and info["return"] == pytest.approx(1.0)
    # both blocks in the same target is not success
    env.reset(options=state([[0.26, 0.2, 0.0], [0.30, 0.2, 0.0]]))
    _, reward, terminated, _, info = env.step([0.0, 0.0])
    assert reward == FIRST_REWARD and not terminated and not info["is_success"]
    # 6 cm from the centre is out (the radius is 5 cm)
    env.reset(options=state([[0.34, 0.2, 0.0], [0.45, -0.2, 0.0]]))
    assert env.step([0.0, 0.0])[1] == 0.0
    env.close()


def test_p1_and_p2_count_episode_returns_above_their_thresholds():
    from envs.rollout import EpisodeResult, summarize
    from envs.tasks import get_task

    task = get_task("blockpush_lowdim")
    returns = [0.0, 0.49, 0.49, 1.0]
    s = summarize([EpisodeResult(i, r, r > 0.9, 100) for i, r in enumerate(returns)], task.score_thresholds)
    assert (s["p1"], s["p2"], s["mean_max_reward"]) == (0.75, 0.25, pytest.approx(np.mean(returns)))
    assert s["p1_ci95"][0] < 0.75 < s["p1_ci95"][1]


@pytest.mark.parametrize("action, message", [
    ([np.nan, 0.0], "action must be finite"),
    ([0.1], "action must have shape \\(2,\\)"),
    ([True, False], "action must be 2 numbers"),
    ("up", "action must be 2 numbers"),
])
def test_bad_actions_are_named(action, message):
    env = BlockPushEnv(render_mode=None)
    env.reset(seed=0)
    with pytest.raises(EnvError, match=message):
        env.step(action)


def test_bad_reset_states_and_settings_are_named():
    env = BlockPushEnv(render_mode=None)
    with pytest.raises(EnvError, match="reset_to_state'\\] must be .*'blocks'"):
        env.reset(options={"reset_to_state": {"blocks": [[0.4, 0.0]], "targets": TARGETS}})
    with pytest.raises(EnvError, match="reset_to_state"):
        env.reset(options={"reset_to_state": [1, 2, 3]})
    with pytest.raises(EnvError, match="render_size must be an integer >= 8"):
        BlockPushEnv(render_size=2)
    with pytest.raises(RuntimeError, match="call reset"):
        BlockPushEnv().step([0.0, 0.0])


def test_actions_beyond_the_limits_are_clipped_as_documented():
    env = BlockPushEnv(render_mode=None)
    env.reset(seed=0)
    env.step([5.0, -5.0])  # each component to [-0.1, 0.1]
    np.testing.assert_allclose(env.effector_target, [0.4, -0.5], atol=1e-9)  # then y to the workspace's -0.5
    env.close()


def test_registered_with_its_350_step_limit_and_renders_frames():
    import envs.blockpush  # noqa: F401

    env = gym.make("BlockPush-v0", render_size=64, disable_env_checker=True)
    env.reset(seed=1)
    frame = env.render()
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8 and frame.std() > 5
    steps = 0
    while True:
        steps += 1
        if any(env.step([0.0, 0.0])[2:4]):
            break
    assert steps == 350
    env.close()


def test_the_oracle_places_both_blocks_on_fixed_seeds_in_all_four_orders():
    orders = {BlockPushOracle(seed).order for seed in range(40)}
    assert len(orders) == 4  # block A or B first, into target 1 or 2
    for seed in (0, 1, 100000):
        env = BlockPushEnv(render_mode=None)
        env.reset(seed=seed)
        oracle = BlockPushOracle(seed)
        total = 0.0
        for _ in range(350):
            action = oracle.act(env)
            assert np.abs(action).max() <= 0.03 + 1e-9
            _, reward, terminated, _, info = env.step(action)
            total += reward
            if terminated:
                break
        assert info["is_success"] and total == pytest.approx(1.0), (seed, total)
        env.close()


def test_demos_round_trip_through_the_replay_buffer_and_train(tmp_path):
    import eval as eval_script
    import train
    from config import resolve
    from datasets import ReplayBuffer
    from demos.blockpush import generate, oracle_episode

    out = tmp_path / "bp.zarr"
    result = generate(out, 3, workers=1)
    assert result["episodes"] == 3 and not result["failed_seeds"]
    rb = ReplayBuffer.open(out)
    assert rb.n_episodes == 3 and rb.shape("obs")[1:] == (16,) and rb.shape("action")[1:] == (2,)
    first, success = oracle_episode(0)
    assert success
    np.testing.assert_array_equal(rb.get_episode(0)["obs"], first["obs"])  # what the oracle saw, step by step
    np.testing.assert_array_equal(rb.get_episode(0)["action"], first["action"])
    rb.close()
    run = tmp_path / "run"
    train.train(resolve(["task=blockpush_lowdim", f"dataset_path={out}", "training.steps=3", "training.eval_every=0",
                         "training.val_every=0", "training.batch_size=8", "wandb.mode=disabled", "eval.n_episodes=1",
                         "eval.max_steps=10", "eval.n_videos=1", "eval.video_size=64", f"output_dir={run}",
                         *tiny_unet_overrides()]))
    final = json.loads((run / "eval.json").read_text())
    assert {"p1", "p2", "p1_ci95", "p2_ci95"} <= set(final) and final["p2"] in (0.0, 1.0)
    assert (run / "videos" / "final").is_dir()
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert any("eval/p2" in h for h in history)
    assert eval_script.main([f"checkpoint={run / 'checkpoints' / 'last.pt'}", "n_episodes=2", "eval.max_steps=10",
                             "eval.n_videos=0", "wandb.mode=disabled"]) == 0
    assert "p1" in json.loads((run / "eval" / "eval.json").read_text())
    import compare

    assert compare.main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| final p1 | final p2 |" in text and f"| {final['p2']:.3f} ± 0.000 |" in text


def test_without_pybullet_the_error_says_how_to_install_it(monkeypatch):
    import importlib.util

    from common import ConfigError
    from envs.tasks import get_task

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pybullet" else real(name, *a))
    with pytest.raises(ConfigError, match="pip install -c constraints.txt -e '.\\[blockpush\\]'"):
        get_task("blockpush_lowdim").make_env()
    import train
    from config import resolve
    from demos.blockpush import generate

    with pytest.raises(ConfigError, match="needs pybullet"):  # before any training, not at its first evaluation
        train.train(resolve(["task=blockpush_lowdim", "dataset_path=unused.zarr", "wandb.mode=disabled"]))
    with pytest.raises(ConfigError, match="needs pybullet"):
        generate("unused.zarr", 1)
