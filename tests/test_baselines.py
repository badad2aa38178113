"""The paper's baselines: LSTM-GMM (robomimic BC-RNN with a GMM head) and IBC (tiny nets, CPU)."""

import numpy as np
import pytest
import torch

from datasets.normalizer import Normalizer
from datasets.windows import WindowDataset
from policy import (POLICIES, IBCConfig, IBCPolicy, LSTMGMMConfig, LSTMGMMPolicy, Policy, make_config,
                    make_policy)
from policy.ibc import derivative_free_optimize

from conftest import ACTION_HIGH, ACTION_LOW, TINY_VISION, make_batch, make_normalizer, obs_shapes

TINY_LSTM = dict(rnn_hidden_dim=32, rnn_num_layers=2)
TINY_IBC = dict(hidden_dim=64, n_hidden_layers=3, train_n_negatives=32, inference_n_samples=128, dropout=0.0)
LSTM_HORIZONS = dict(horizon=10, obs_horizon=10)  # LSTMGMMConfig's defaults (robomimic's BC-RNN)
IBC_HORIZONS = dict(horizon=2, obs_horizon=2)  # IBCConfig's defaults


def make_lstm(image=False, batch=None, **overrides):
    batch = batch or make_batch(**LSTM_HORIZONS, image=image)
    cfg = LSTMGMMConfig(obs_shapes=obs_shapes(image), action_dim=2, **{**TINY_LSTM, **(TINY_VISION if image else {}),
                                                                       **overrides})
    return LSTMGMMPolicy(cfg, make_normalizer(batch, image))


def make_ibc(image=False, batch=None, **overrides):
    batch = batch or make_batch(**IBC_HORIZONS, image=image)
    cfg = IBCConfig(obs_shapes=obs_shapes(image), action_dim=2, **{**TINY_IBC, **(TINY_VISION if image else {}),
                                                                   **overrides})
    return IBCPolicy(cfg, make_normalizer(batch, image))


def train(policy, batch, steps, lr=3e-3):
    policy.train()
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = policy.compute_loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


# --------------------------------------------------------------------------------------------- configs
def test_lstm_gmm_defaults_are_robomimics_bc_rnn():
    cfg = LSTMGMMConfig(obs_shapes={"state": [5]}, action_dim=2)
    assert (cfg.horizon, cfg.obs_horizon, cfg.action_horizon) == (10, 10, 1)
    assert (cfg.rnn_hidden_dim, cfg.rnn_num_layers, cfg.gmm_num_modes, cfg.gmm_min_std) == (400, 2, 5, 1e-4)
    assert cfg.gmm_std_activation == "softplus" and cfg.gmm_low_noise_eval and cfg.actor_layer_dims == ()
    assert (cfg.optimizer_lr, cfg.optimizer_weight_decay, cfg.lr_warmup_steps) == (1e-4, 0.0, 0)
    assert LSTMGMMConfig(obs_shapes={"img": (96, 96, 3)}, action_dim=2).rnn_hidden_dim == 1000  # image BC-RNN
    assert LSTMGMMConfig(**cfg.to_dict()) == cfg
    assert LSTMGMMConfig(obs_shapes={"s": (5,)}, action_dim=2, horizon=4).obs_horizon == 4
    with pytest.raises(ValueError, match="obs_horizon must equal horizon"):
        LSTMGMMConfig(obs_shapes={"s": (5,)}, action_dim=2, obs_horizon=2)
    with pytest.raises(ValueError, match="action_horizon must be 1"):
        LSTMGMMConfig(obs_shapes={"s": (5,)}, action_dim=2, action_horizon=8)


def test_ibc_defaults_are_the_papers():
    cfg = IBCConfig(obs_shapes={"state": [5]}, action_dim=2)
    assert (cfg.horizon, cfg.obs_horizon, cfg.action_horizon) == (2, 2, 1)
    assert (cfg.hidden_dim, cfg.n_hidden_layers, cfg.dropout, cfg.train_n_negatives) == (1024, 4, 0.1, 1024)
    assert (cfg.inference_n_iters, cfg.inference_noise_scale, cfg.inference_noise_shrink, cfg.inference_clip,
            cfg.inference_choice) == (4, 0.03, 1.0, False, "sample")  # the reference's default DFO
    assert (cfg.optimizer_lr, cfg.optimizer_betas, cfg.lr_warmup_steps) == (1e-4, (0.95, 0.999), 500)
    assert IBCConfig(**cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="exceeds horizon"):
        IBCConfig(obs_shapes={"s": (5,)}, action_dim=2, action_horizon=2)


def test_registry_and_interface():
    assert {"lstm_gmm", "ibc"} <= set(POLICIES)
    batch = make_batch(**LSTM_HORIZONS)
    norm = make_normalizer(batch)
    for name, cls in (("lstm_gmm", LSTMGMMPolicy), ("ibc", IBCPolicy)):
        policy = make_policy(name, norm, obs_shapes={"state": (5,)}, action_dim=2)
        assert isinstance(policy, cls) and isinstance(policy, Policy) and policy.normalizer is norm
        assert make_config(name, obs_shapes={"state": (5,)}, action_dim=2) == policy.config
        groups = policy.get_optimizer_groups()
        ids = [id(p) for g in groups for p in g["params"]]
        assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in policy.parameters() if p.requires_grad}
        opt = policy.make_optimizer()
        assert opt.defaults["lr"] == policy.config.optimizer_lr
        assert opt.defaults["betas"] == policy.config.optimizer_betas


@pytest.mark.parametrize("name", ["lstm_gmm", "ibc"])
def test_window_dataset_gives_what_the_policy_needs(name):
    """The trainer builds windows from the config's horizons; the batches must fit compute_loss as they are."""
    rng = np.random.default_rng(0)
    ends = np.array([30, 55, 80])
    data = {"state": rng.uniform(0, 512, (80, 5)).astype(np.float32),
            "action": rng.uniform(0, 512, (80, 2)).astype(np.float32)}
    cfg = make_config(name, obs_shapes={"state": (5,)}, action_dim=2,
                      **(TINY_LSTM if name == "lstm_gmm" else TINY_IBC))
    ds = WindowDataset(data, ["state"], horizon=cfg.horizon, obs_horizon=cfg.obs_horizon,
                       action_horizon=cfg.action_horizon, episode_ends=ends)
    policy = make_policy(name, Normalizer.fit(ds.step_arrays()), **cfg.to_dict())
    batch = ds.__getitems__(list(range(0, len(ds), 7)))
    loss = policy.compute_loss(batch)["loss"]
    assert torch.isfinite(loss)
    loss.backward()
    policy.eval()
    assert policy.predict_action(batch["obs"]).shape == (len(batch["action"]), cfg.action_horizon, 2)


# ------------------------------------------------------------------------------------------------ LSTM
def test_lstm_gmm_loss_decreases_on_a_fixed_batch():
    batch = make_batch(**LSTM_HORIZONS)
    policy = make_lstm(batch=batch)
    losses = train(policy, batch, 80)
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 1.0, (losses[:5], losses[-5:])


@pytest.mark.parametrize("image", [False, True])
def test_lstm_gmm_predict_action_shape_and_range(image):
    batch = make_batch(batch=3, **LSTM_HORIZONS, image=image)
    policy = make_lstm(image=image, batch=batch).eval()
    loss = policy.compute_loss(batch)["loss"]
    assert torch.isfinite(loss)
    policy.reset()
    for _ in range(3):  # a rollout: one action per call, history of any length (only the latest step is used)
        action = policy.predict_action({k: v[:, :2] for k, v in batch["obs"].items()})
        assert action.shape == (3, 1, 2)
        # tanh means and std 1e-4 in eval: inside the normalized range, i.e. the training actions' range
        assert (action >= ACTION_LOW - 0.1).all() and (action <= ACTION_HIGH + 0.1).all()


def test_lstm_gmm_hidden_state_carries_over_until_reset():
    batch = make_batch(batch=4, **LSTM_HORIZONS)
    policy = make_lstm(batch=batch)
    train(policy, batch, 5)  # not at initialization: make the LSTM state matter
    policy.eval()
    obs = {"state": batch["obs"]["state"][:, :1]}

    def act():
        return policy.predict_action(obs, generator=torch.Generator().manual_seed(0))

    policy.reset()
    first = act()
    carried = act()  # same observation, same sampling seed, but the LSTM has seen one step already
    assert not torch.allclose(first, carried)
    policy.reset()
    assert torch.equal(act(), first)  # after reset: exactly the first call again
    with pytest.raises(ValueError, match="call reset"):
        policy.predict_action({"state": batch["obs"]["state"][:2, :1]})  # a new batch size without reset
    policy.reset()
    assert policy.predict_action({"state": batch["obs"]["state"][:2, :1]}).shape == (2, 1, 2)


def test_lstm_gmm_state_restarts_every_horizon_steps():
    """robomimic's rollout: the LSTM state restarts from zeros every `horizon` (10) steps, as in training."""
    batch = make_batch(batch=2, **LSTM_HORIZONS)
    policy = make_lstm(batch=batch)
    train(policy, batch, 5)
    policy.eval()
    obs = {"state": batch["obs"]["state"][:, :1]}
    act = lambda: policy.predict_action(obs, generator=torch.Generator().manual_seed(0))  # noqa: E731
    policy.reset()
    calls = [act() for _ in range(policy.config.horizon + 2)]
    assert not torch.allclose(calls[1], calls[0])  # carried within a sequence
    assert torch.equal(calls[policy.config.horizon], calls[0])  # step 10 starts a new sequence from zeros
    assert torch.equal(calls[policy.config.horizon + 1], calls[1])


def test_lstm_gmm_stateful_rollout_equals_the_sequence_forward():
    """Step-by-step calls with a carried state give the same GMM as running the whole sequence at once."""
    batch = make_batch(batch=2, **LSTM_HORIZONS)
    policy = make_lstm(batch=batch, gmm_low_noise_eval=False).eval()
    features = policy.encode_obs(batch["obs"], flatten=False)
    means, stds, logits, _ = policy.gmm_params(features)
    hidden = None
    for t in range(features.shape[1]):
        m, s, lg, hidden = policy.gmm_params(features[:, t:t + 1], hidden)
        torch.testing.assert_close(m[:, 0], means[:, t], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(lg[:, 0], logits[:, t], rtol=1e-5, atol=1e-5)


def test_lstm_gmm_log_prob_matches_torch_distributions():
    means, stds, logits = torch.randn(4, 5, 2), torch.rand(4, 5, 2) + 0.1, torch.randn(4, 5)
    x = torch.randn(4, 2)
    D = torch.distributions
    dist = D.MixtureSameFamily(D.Categorical(logits=logits), D.Independent(D.Normal(means, stds), 1))
    torch.testing.assert_close(LSTMGMMPolicy.gmm_log_prob(means, stds, logits, x), dist.log_prob(x))


# ------------------------------------------------------------------------------------------------- IBC
def test_ibc_loss_decreases_on_a_fixed_batch():
    batch = make_batch(batch=16, **IBC_HORIZONS)
    policy = make_ibc(batch=batch)
    losses = train(policy, batch, 80)
    assert np.isfinite(losses).all()
    # chance level is log(1 + 32) = 3.5
    assert np.mean(losses[:3]) > 3.0 and np.mean(losses[-5:]) < np.mean(losses[:3]) - 1.0, (losses[:3], losses[-5:])


@pytest.mark.parametrize("image", [False, True])
def test_ibc_predict_action_shape_and_bounds(image):
    batch = make_batch(batch=3, **IBC_HORIZONS, image=image)
    policy = make_ibc(image=image, batch=batch).eval()
    assert torch.isfinite(policy.compute_loss(batch)["loss"])
    action = policy.predict_action(batch["obs"])
    assert action.shape == (3, 1, 2)
    assert (action >= ACTION_LOW - 1e-3).all() and (action <= ACTION_HIGH + 1e-3).all()
    g = torch.Generator().manual_seed(3)
    again = policy.predict_action(batch["obs"], generator=torch.Generator().manual_seed(3))
    assert torch.equal(policy.predict_action(batch["obs"], generator=g), again)  # reproducible with a generator


def test_ibc_longer_action_horizon():
    batch = make_batch(batch=2, horizon=4, obs_horizon=2)
    policy = make_ibc(batch=batch, horizon=4, action_horizon=3)
    assert torch.isfinite(policy.compute_loss(batch)["loss"])
    assert policy.eval().predict_action(batch["obs"]).shape == (2, 3, 2)


def test_derivative_free_optimizer_finds_the_low_energy_region():
    target = torch.tensor([[0.3, -0.6], [-0.9, 0.8]])  # (batch 2, Da 2)

    def logits(c):  # c (2, N, 1, 2): energy = 500 * squared distance to the target (sharp: "sample" draws near it)
        return -500 * ((c[:, :, 0] - target[:, None]) ** 2).sum(-1)

    low, high = -torch.ones(1, 2), torch.ones(1, 2)
    ibc_original = dict(n_iters=3, noise_scale=0.33, noise_shrink=0.5, clip=True, choice="argmax")
    for settings in (ibc_original, {}):  # IBC's own variant, then the reference's (the defaults)
        best = derivative_free_optimize(logits, low, high, batch=2, n_samples=256,
                                        generator=torch.Generator().manual_seed(0), **settings)
        assert best.shape == (2, 1, 2)
        assert (best[:, 0] - target).abs().max() < 0.1, settings
    # a minimum outside the bounds: with clipping the answer is clipped to the nearest corner
    target = torch.tensor([[2.0, -3.0], [0.0, 5.0]])
    best = derivative_free_optimize(logits, low, high, batch=2, n_samples=256,
                                    generator=torch.Generator().manual_seed(0), **ibc_original)
    assert (best >= -1).all() and (best <= 1).all()
    assert (best[0, 0] - torch.tensor([1.0, -1.0])).abs().max() < 0.1 and (best[1, 0, 1] - 1).abs() < 0.1


def test_ibc_energy_splits_first_layer_exactly():
    """The MLP's first layer on concat(obs, action) equals obs_in(obs) + action_in(action)."""
    policy = make_ibc()
    net = policy.energy
    obs, cand = torch.randn(3, net.obs_in.in_features), torch.randn(3, 7, net.action_in.in_features)
    weight = torch.cat([net.obs_in.weight, net.action_in.weight], dim=1)
    joint = torch.cat([obs[:, None].expand(-1, 7, -1), cand], dim=-1) @ weight.T + net.obs_in.bias
    x = torch.relu(joint)
    for layer in net.hidden:
        x = torch.relu(layer(x))
    torch.testing.assert_close(net.eval()(obs, cand), net.out(x).squeeze(-1))


# --------------------------------------------------------------------------------------- state dicts
@pytest.mark.parametrize("name", ["lstm_gmm", "ibc"])
def test_state_dict_round_trip(name, tmp_path):
    make = make_lstm if name == "lstm_gmm" else make_ibc
    batch = make_batch(**LSTM_HORIZONS) if name == "lstm_gmm" else make_batch(**IBC_HORIZONS)
    policy = make(batch=batch)
    train(policy, batch, 3)
    torch.save({"config": policy.config.to_dict(), "policy": policy.state_dict()}, tmp_path / "ckpt.pt")
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    spec = POLICIES[name]
    restored = spec.policy_class(spec.config_class(**ckpt["config"]), Normalizer())  # empty normalizer: loaded
    restored.load_state_dict(ckpt["policy"])
    policy.eval().reset()
    restored.eval().reset()
    obs = {k: v[:2] for k, v in batch["obs"].items()}
    for _ in range(2):
        a = policy.predict_action(obs, generator=torch.Generator().manual_seed(1))
        b = restored.predict_action(obs, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(a, b)
    assert not any("_hidden" in k for k in policy.state_dict())  # the run-time LSTM state is not saved
