"""The limits normalizer: real-data round trip, constant dimensions, images, and the statistics travelling
inside a policy's state_dict."""

import io

import numpy as np
import pytest
import torch
from torch import nn

from datasets import Normalizer, WindowDataset, split_episodes


@pytest.fixture(scope="module")
def pusht_train(pusht_lowdim):
    """Training-split steps of the published Push-T data (low-dim keys) and its window dataset."""
    train, _ = split_episodes(pusht_lowdim.n_episodes)
    return WindowDataset(pusht_lowdim, ["state", "keypoint"], episodes=train)


def test_round_trip_on_real_data(pusht_train):
    data = pusht_train.step_arrays()
    assert sorted(data) == ["action", "keypoint", "state"]
    norm = Normalizer.fit(data, image_keys=("img",))
    for key, x in data.items():
        y = norm.normalize(key, torch.from_numpy(x))
        # the training data spans exactly [-1, 1] per feature
        torch.testing.assert_close(y.amin(0), -torch.ones(x.shape[1:]), atol=1e-5, rtol=0)
        torch.testing.assert_close(y.amax(0), torch.ones(x.shape[1:]), atol=1e-5, rtol=0)
        back = norm.unnormalize(key, y).numpy()
        np.testing.assert_allclose(back, x, rtol=1e-6, atol=1e-4)  # float32 arithmetic on values up to 512
    assert norm.stats()["keypoint"]["min"].shape == (9, 2)  # per element of the trailing shape
    assert norm.stats()["state"]["max"].shape == (5,)
    # windows (B, Tp, Da) and obs (B, To, 5) normalize with the same per-feature statistics
    batch = pusht_train.__getitems__(range(32))
    y = norm.normalize("action", batch["action"])
    assert y.shape == (32, 16, 2) and y.abs().max() <= 1 + 1e-5
    assert norm.normalize("state", batch["obs"]["state"]).shape == (32, 2, 5)


def test_constant_dimension_is_only_shifted():
    x = np.stack([np.linspace(-3, 5, 100), np.full(100, 7.25), 7.25 + np.linspace(0, 5e-5, 100)], axis=1)
    norm = Normalizer.fit({"a": x.astype(np.float32)})
    s = norm.stats()["a"]
    np.testing.assert_allclose(s["scale"], [2 / 8, 1, 1], rtol=1e-6)
    y = norm.normalize("a", torch.from_numpy(x.astype(np.float32)))
    assert torch.allclose(y[:, 0].min(), torch.tensor(-1.0)) and torch.allclose(y[:, 0].max(), torch.tensor(1.0))
    assert torch.all(y[:, 1] == 0)  # the constant value maps to 0
    assert y[:, 2].abs().max() < 1e-4  # range below 1e-4: shifted, not stretched to [-1, 1]
    back = norm.unnormalize("a", y).numpy()
    np.testing.assert_array_equal(back[:, 1], x[:, 1].astype(np.float32))
    np.testing.assert_allclose(back, x, atol=1e-5)


def test_images_map_uint8_to_minus_one_one():
    norm = Normalizer.fit({}, image_keys=("img",))
    img = torch.tensor([0, 255, 51], dtype=torch.uint8).reshape(1, 1, 1, 3).expand(4, 2, 96, 3)
    y = norm.normalize("img", img)
    assert y.dtype == torch.float32 and y.shape == img.shape
    torch.testing.assert_close(y[0, 0, 0], torch.tensor([-1.0, 1.0, 51 / 127.5 - 1]))
    torch.testing.assert_close(norm.unnormalize("img", y), img.float(), atol=1e-4, rtol=0)
    # channels-first works the same (a scalar map)
    assert norm.normalize("img", img.permute(0, 1, 3, 2)).shape == (4, 2, 3, 96)


class TinyPolicy(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(5, 2)
        self.normalizer = Normalizer()


def test_stats_travel_in_the_policy_state_dict():
    rng = np.random.default_rng(0)
    data = {"state": rng.normal(size=(50, 5)).astype(np.float32), "action": rng.uniform(0, 512, (50, 2))}
    policy = TinyPolicy()
    policy.normalizer = Normalizer.fit(data, image_keys=("img",))
    state = policy.state_dict()
    assert {"normalizer.fields.state.scale", "normalizer.fields.action.offset", "normalizer.fields.img.scale"} <= set(
        state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    fresh = TinyPolicy()  # an empty Normalizer: the fields come from the checkpoint
    fresh.load_state_dict(torch.load(buffer))
    x = torch.from_numpy(data["state"])
    assert torch.equal(fresh.normalizer.normalize("state", x), policy.normalizer.normalize("state", x))
    assert fresh.normalizer.keys == ["action", "img", "state"]
    img = torch.zeros(1, 96, 96, 3, dtype=torch.uint8)
    assert torch.all(fresh.normalizer.normalize("img", img) == -1)
    # statistics follow the module to a device / dtype like any buffer, and follow the input's device
    double = fresh.normalizer.to(torch.float64)
    assert double.fields["state"].scale.dtype == torch.float64
    assert double.normalize("state", torch.zeros(3, 5, device="meta")).device.type == "meta"


def test_errors_name_the_key():
    norm = Normalizer.fit({"state": np.zeros((4, 5)), "kp": np.zeros((4, 9, 2))})
    with pytest.raises(KeyError, match=r"no statistics for 'action'"):
        norm.normalize("action", torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"'state' expects tensors of shape \(\.\.\., 5\), got \(3, 4\)"):
        norm.normalize("state", torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"'kp' expects tensors of shape \(\.\.\., 9, 2\)"):
        norm.unnormalize("kp", torch.zeros(2, 18))
    with pytest.raises(ValueError, match="'bad' contains NaN"):
        Normalizer.fit({"bad": np.array([[0.0], [np.nan]])})
    with pytest.raises(ValueError, match="cannot name a module"):
        Normalizer.fit({"a.b": np.zeros((2, 1))})
