"""Episode windows: the padding rules of docs/design.md section 4 checked window by window on real episodes
against a slow, obviously-correct reference; the split; the loader; errors; throughput floor."""


import numpy as np
import pytest
import torch

from datasets import MissingKeyError, ReplayBuffer, ReplayBufferError, WindowDataset, make_loader, split_episodes


def reference_windows(episode, obs_keys, horizon, obs_horizon, action_horizon):
    """Every window of one episode, one position at a time: starts -(To-1) .. L-Tp+(Ta-1), positions clamped
    to the episode (edge padding)."""
    L = len(episode["action"])
    windows = []
    for start in range(-(obs_horizon - 1), L - horizon + (action_horizon - 1) + 1):
        positions = [min(max(start + j, 0), L - 1) for j in range(horizon)]
        windows.append({
            "obs": {k: np.stack([episode[k][p] for p in positions[:obs_horizon]]) for k in obs_keys},
            "action": np.stack([episode["action"][p] for p in positions]),
        })
    return windows


def assert_matches_reference(ds, rb, obs_keys, episodes, horizon, obs_horizon, action_horizon):
    expected = []
    for e in episodes:
        ep = rb.get_episode(int(e))
        if "img" in ep:
            ep["img"] = ep["img"].astype(np.uint8)
        expected += reference_windows(ep, obs_keys, horizon, obs_horizon, action_horizon)
    assert len(ds) == len(expected)
    batch = ds.__getitems__(np.arange(len(ds)))
    for i, want in enumerate(expected):
        np.testing.assert_array_equal(batch["action"][i].numpy(), want["action"])
        for k in obs_keys:
            np.testing.assert_array_equal(batch["obs"][k][i].numpy(), want["obs"][k])


@pytest.fixture(scope="module")
def pusht_images(pusht_zip):
    """The first 6 Push-T episodes with images (uint8) and states, as a dict of arrays and episode_ends."""
    rb = ReplayBuffer.open(pusht_zip)
    ends = rb.episode_ends[:6]
    arrays = {k: rb.read(k, 0, int(ends[-1])) for k in ("img", "state", "action")}
    rb.close()
    arrays["img"] = arrays["img"].astype(np.uint8)
    return arrays, ends


@pytest.mark.parametrize("horizon,obs_horizon,action_horizon", [(16, 2, 8), (10, 2, 8), (16, 1, 1), (8, 3, 4)])
def test_state_windows_match_reference_on_every_episode(pusht_lowdim, horizon, obs_horizon, action_horizon):
    episodes = np.arange(pusht_lowdim.n_episodes) if horizon == 16 and obs_horizon == 2 else np.arange(0, 206, 7)
    ds = WindowDataset(pusht_lowdim, ["state", "keypoint"], horizon=horizon, obs_horizon=obs_horizon,
                       action_horizon=action_horizon, episodes=episodes)
    assert_matches_reference(ds, pusht_lowdim, ["state", "keypoint"], episodes, horizon, obs_horizon, action_horizon)


def test_image_windows_match_reference(pusht_images):
    arrays, ends = pusht_images
    ds = WindowDataset(arrays, ["img", "state"], episode_ends=ends)
    rb = ReplayBuffer.from_arrays(arrays, ends)
    assert_matches_reference(ds, rb, ["img", "state"], range(6), 16, 2, 8)
    sample = ds[0]
    assert sample["obs"]["img"].shape == (2, 96, 96, 3) and sample["obs"]["img"].dtype == torch.uint8
    assert sample["obs"]["state"].dtype == torch.float32 and sample["action"].shape == (16, 2)
    assert ds.image_keys == ["img"]


def test_padding_at_episode_edges(pusht_lowdim):
    """The rules spelled out on one real episode: L - 7 windows for (16, 2, 8); the first repeats step 0 once,
    the last holds Ta = 8 real actions from index To - 1 and then repeats the last step."""
    e, L = 3, int(pusht_lowdim.episode_lengths[3])
    ep = pusht_lowdim.get_episode(e)
    ds = WindowDataset(pusht_lowdim, ["state"], episodes=[e])
    assert len(ds) == L - 16 + 8 + 2 - 1 == L - 7
    assert ds.windows[0].tolist() == [e, -1] and ds.windows[-1].tolist() == [e, L - 16 + 7]
    first, last = ds[0], ds[len(ds) - 1]
    np.testing.assert_array_equal(first["obs"]["state"].numpy(), ep["state"][[0, 0]])
    np.testing.assert_array_equal(first["action"].numpy(), ep["action"][[0] + list(range(15))])
    np.testing.assert_array_equal(last["action"][1:9].numpy(), ep["action"][L - 8:])  # executed: real steps
    np.testing.assert_array_equal(last["action"][9:].numpy(), np.repeat(ep["action"][-1:], 7, axis=0))


def test_windows_never_cross_episodes(pusht_lowdim):
    ds = WindowDataset(pusht_lowdim, ["state"])
    steps = ds._index
    episode_of_step = np.searchsorted(pusht_lowdim.episode_ends, steps, side="right")
    assert np.all(episode_of_step == ds.windows[:, :1])
    assert len(ds) == int((pusht_lowdim.episode_lengths - 7).sum())


def test_short_episodes_are_padded_and_horizon_longer_than_all_is_an_error():
    lengths = [3, 12, 20]
    ends = np.cumsum(lengths)
    arrays = {"state": np.arange(35, dtype=np.float64)[:, None], "action": np.arange(35, dtype=np.float32)[:, None]}
    ds = WindowDataset(arrays, ["state"], horizon=16, obs_horizon=2, action_horizon=8, episode_ends=ends)
    # starts -1 .. L-9: L=3 gives none (empty range), L=12 gives 5, L=20 gives 13
    assert np.bincount(ds.windows[:, 0], minlength=3).tolist() == [0, 5, 13]
    assert ds[0]["obs"]["state"].dtype == torch.float32  # low-dim obs converted to float32
    with pytest.raises(ValueError, match=r"<arrays>: horizon 21 is longer than every selected episode "
                                         r"\(the longest has 20 steps\)"):
        WindowDataset(arrays, ["state"], horizon=21, obs_horizon=2, action_horizon=8, episode_ends=ends)
    with pytest.raises(ValueError, match="longest has 12 steps"):
        WindowDataset(arrays, ["state"], horizon=16, episodes=[0, 1], episode_ends=ends)


def test_constructor_errors_name_the_problem(pusht_lowdim, pusht_images):
    with pytest.raises(MissingKeyError, match=r"pusht\.zip: missing data keys \['img'\]"):
        WindowDataset(pusht_lowdim, ["img"])
    with pytest.raises(ValueError, match="obs_horizon - 1 \\+ action_horizon <= horizon"):
        WindowDataset(pusht_lowdim, ["state"], horizon=8, obs_horizon=2, action_horizon=8)
    with pytest.raises(IndexError, match="0..205"):
        WindowDataset(pusht_lowdim, ["state"], episodes=[0, 206])
    with pytest.raises(ValueError, match="needs episode_ends"):
        WindowDataset({"state": np.zeros((3, 2))}, ["state"])
    arrays, ends = pusht_images
    with pytest.raises(ReplayBufferError, match=r"image observation 'img' must be uint8 .* \(they look scaled to 0\.\.1"):
        WindowDataset({**arrays, "img": arrays["img"] / 255.0}, ["img"], episode_ends=ends)


def test_step_arrays_are_the_episodes_steps(pusht_lowdim):
    ds = WindowDataset(pusht_lowdim, ["state"], episodes=[2, 5])
    got = ds.step_arrays()
    assert sorted(got) == ["action", "state"]
    for k in got:
        want = np.concatenate([pusht_lowdim.get_episode(e)[k] for e in (2, 5)])
        np.testing.assert_array_equal(got[k], want)


def test_split_episodes():
    train, val = split_episodes(206)
    assert len(val) == 4 and len(train) == 202  # round(206 * 0.02)
    assert np.intersect1d(train, val).size == 0 and sorted(np.concatenate([train, val])) == list(range(206))
    assert all(np.all(np.diff(x) > 0) for x in (train, val))
    again = split_episodes(206)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], val)
    assert not np.array_equal(split_episodes(206, seed=1)[1], val)
    for n in (2, 3, 10):  # at least one episode each
        t, v = split_episodes(n)
        assert len(t) >= 1 and len(v) >= 1 and len(t) + len(v) == n
    assert [len(x) for x in split_episodes(1)] == [1, 0]
    assert [len(x) for x in split_episodes(50, val_ratio=0)] == [50, 0]
    assert [len(x) for x in split_episodes(10, val_ratio=0.9)] == [1, 9]
    capped, capped_val = split_episodes(206, max_train_episodes=50)
    assert len(capped) == 50 and set(capped) <= set(train) and np.array_equal(capped_val, val)
    assert set(split_episodes(206, max_train_episodes=20)[0]) <= set(capped)  # nested caps
    with pytest.raises(ValueError):
        split_episodes(0)


def test_make_loader_covers_every_window_once_per_epoch(pusht_lowdim):
    ds = WindowDataset(pusht_lowdim, ["state"], episodes=range(10))
    loader = make_loader(ds, batch_size=64, shuffle=True, seed=3)
    first = [b["action"] for b in loader]
    assert all(b.shape[1:] == (16, 2) and b.dtype == torch.float32 for b in first)
    actions = torch.cat(first)
    everything = ds.__getitems__(range(len(ds)))["action"]
    assert len(actions) == len(ds)
    key = lambda a: sorted(map(tuple, a.reshape(len(a), -1).tolist()))  # noqa: E731
    assert key(actions) == key(everything)
    second = torch.cat([b["action"] for b in loader])
    assert not torch.equal(actions, second)  # reshuffled each epoch
    replay = torch.cat([b["action"] for b in make_loader(ds, batch_size=64, shuffle=True, seed=3)])
    assert torch.equal(actions, replay)  # ... reproducibly from the seed
    ordered = next(iter(make_loader(ds, batch_size=8, shuffle=False)))
    assert torch.equal(ordered["action"], everything[:8]) and ordered["obs"]["state"].shape == (8, 2, 5)
    chosen = [[5, 1, 2], [7]]
    batches = list(make_loader(ds, batch_size=None, shuffle=False, batch_sampler=chosen))
    assert [len(b["action"]) for b in batches] == [3, 1] and torch.equal(batches[1]["action"][0], everything[7])

