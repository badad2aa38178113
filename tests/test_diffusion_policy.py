"""DiffusionPolicy (UNet and transformer), its config, the policy registry and the EMA (tiny nets, CPU)."""

import numpy as np
import pytest
import torch
from torch import nn

from datasets.normalizer import Normalizer
from common import ConfigError
from policy import EMA, POLICIES, DiffusionConfig, DiffusionPolicy, Policy, make_config, make_policy

from conftest import ACTION_HIGH, ACTION_LOW, TINY_VISION, make_batch, make_normalizer, obs_shapes

TINY_UNET = dict(down_dims=(16, 32, 64), diffusion_step_embed_dim=16)
TINY_TRANSFORMER = dict(n_layers=2, n_heads=2, embed_dim=32)


def make_tiny_policy(network="unet", image=False, batch=None, **overrides):
    batch = batch or make_batch(image=image)
    kwargs = {**(TINY_UNET if network == "unet" else TINY_TRANSFORMER), **(TINY_VISION if image else {}), **overrides}
    config = DiffusionConfig(obs_shapes=obs_shapes(image), action_dim=2, network=network, **kwargs)
    return DiffusionPolicy(config, make_normalizer(batch, image))


# --------------------------------------------------------------------------------------------- config
def test_config_defaults_are_the_papers():
    cfg = DiffusionConfig(obs_shapes={"state": [5]}, action_dim=2)
    assert (cfg.horizon, cfg.obs_horizon, cfg.action_horizon) == (16, 2, 8)
    assert cfg.down_dims == (256, 512, 1024) and cfg.kernel_size == 5 and cfg.n_groups == 8
    assert cfg.num_train_timesteps == 100 and cfg.beta_schedule == "squaredcos_cap_v2" and cfg.clip_sample
    assert cfg.num_inference_steps == 100 and cfg.obs_shapes == {"state": (5,)}
    assert cfg.optimizer_betas == (0.95, 0.999) and cfg.optimizer_weight_decay == 1e-6
    tf = DiffusionConfig(obs_shapes={"state": (5,)}, action_dim=2, network="transformer")
    assert tf.optimizer_betas == (0.9, 0.95) and tf.optimizer_weight_decay == 1e-3
    assert (tf.n_layers, tf.n_heads, tf.embed_dim, tf.p_drop_attn) == (8, 4, 256, 0.3)
    assert DiffusionConfig(obs_shapes={"s": (5,)}, action_dim=2, inference_scheduler="ddim").num_inference_steps == 10
    assert DiffusionConfig(**cfg.to_dict()) == cfg


@pytest.mark.parametrize("bad,match", [
    (dict(horizon=10), "horizon 10 .* valid nearby horizons: \\[8, 12\\]"),
    (dict(horizon=8, action_horizon=8), "exceeds horizon 8"),
    (dict(network="cnn"), "network must be one of"),
    (dict(inference_scheduler="euler"), "inference_scheduler"),
    (dict(num_inference_steps=500), "num_inference_steps"),
    (dict(obs_shapes={"img": (32, 32, 3)}), "crop_shape .* larger than image 'img'"),
])
def test_config_rejects_bad_values(bad, match):
    kwargs = dict(obs_shapes={"state": (5,)}, action_dim=2) | bad
    with pytest.raises(ValueError, match=match):
        DiffusionConfig(**kwargs)


def test_transformer_takes_horizons_the_unet_cannot():
    cfg = DiffusionConfig(obs_shapes={"state": (5,)}, action_dim=2, network="transformer", horizon=10)
    assert cfg.horizon == 10


# ------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("network,image", [("unet", False), ("transformer", False), ("unet", True),
                                           ("transformer", True)])
def test_compute_loss_is_finite_and_backprops(network, image):
    batch = make_batch(image=image)
    policy = make_tiny_policy(network, image, batch)
    assert isinstance(policy, Policy)
    out = policy.compute_loss(batch)
    loss = out["loss"]
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in policy.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    if image:
        assert policy.obs_encoder.image_encoders["img"].backbone.stem[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("network", ["unet", "transformer"])
def test_loss_decreases_on_a_fixed_batch(network):
    batch = make_batch(batch=16)
    policy = make_tiny_policy(network, batch=batch, p_drop_attn=0.0)
    optimizer = torch.optim.AdamW(policy.get_optimizer_groups(), lr=3e-3)
    losses = []
    for _ in range(80):
        loss = policy.compute_loss(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < 0.6 * first, (first, last)


def test_compute_loss_uses_first_obs_steps_of_longer_window():
    batch = make_batch()
    long_obs = {"state": torch.cat([batch["obs"]["state"], torch.full((8, 3, 5), 1e6)], dim=1)}
    policy = make_tiny_policy(batch=batch)
    torch.manual_seed(1)
    ref = policy.compute_loss(batch)["loss"]
    torch.manual_seed(1)
    torch.testing.assert_close(policy.compute_loss({"obs": long_obs, "action": batch["action"]})["loss"], ref)


# ------------------------------------------------------------------------------------------ inference
@pytest.mark.parametrize("network", ["unet", "transformer"])
@pytest.mark.parametrize("scheduler,steps", [("ddpm", 5), ("ddim", 4), ("ddpm", None)])
def test_predict_action_shape_and_range(network, scheduler, steps):
    policy = make_tiny_policy(network, inference_scheduler=scheduler, num_inference_steps=steps).eval()
    obs = make_batch(batch=3)["obs"]
    actions = policy.predict_action(obs)
    assert actions.shape == (3, 8, 2) and actions.dtype == torch.float32
    assert torch.isfinite(actions).all()
    # clip_sample keeps the final normalized sample in [-1, 1]: un-normalized, inside the action range.
    assert actions.min() >= ACTION_LOW - 1e-3 and actions.max() <= ACTION_HIGH + 1e-3
    assert actions.std() > 1.0  # un-normalized pixels, not [-1, 1] values


def test_predict_action_with_images():
    policy = make_tiny_policy("unet", image=True, inference_scheduler="ddim", num_inference_steps=3).eval()
    actions = policy.predict_action(make_batch(batch=2, image=True)["obs"])
    assert actions.shape == (2, 8, 2)


def test_predict_action_is_the_receding_horizon_slice_and_reproducible():
    policy = make_tiny_policy(inference_scheduler="ddpm", num_inference_steps=4, action_horizon=6).eval()
    obs = make_batch(batch=2)["obs"]
    window = policy.sample_action_window(obs, generator=torch.Generator().manual_seed(3))
    actions = policy.predict_action(obs, generator=torch.Generator().manual_seed(3))
    assert window.shape == (2, 16, 2)
    torch.testing.assert_close(actions, window[:, 1:7])  # indices To-1 .. To-1+Ta-1
    other = policy.predict_action(obs, generator=torch.Generator().manual_seed(4))
    assert not torch.allclose(actions, other)
    # A longer history: only the last To observations count.
    longer = {"state": torch.cat([torch.full((2, 3, 5), -1e6), obs["state"]], dim=1)}
    torch.testing.assert_close(policy.predict_action(longer, generator=torch.Generator().manual_seed(3)), actions)
    with pytest.raises(ValueError, match="obs_horizon=2"):
        policy.predict_action({"state": obs["state"][:, :1]})


@pytest.mark.parametrize("network", ["unet", "transformer"])
def test_observations_are_encoded_once_per_chunk(network):
    policy = make_tiny_policy(network, inference_scheduler="ddpm", num_inference_steps=7).eval()
    encoder_calls, model_calls = [], []
    policy.obs_encoder.register_forward_hook(lambda *a: encoder_calls.append(1))
    policy.model.register_forward_hook(lambda *a: model_calls.append(1))
    policy.predict_action(make_batch(batch=2)["obs"])
    assert len(encoder_calls) == 1 and len(model_calls) == 7


def test_normalizer_is_saved_with_the_policy():
    policy = make_tiny_policy(inference_scheduler="ddim", num_inference_steps=3).eval()
    state = policy.state_dict()
    assert "normalizer.fields.action.scale" in state and "normalizer.fields.state.offset" in state
    # A checkpoint loads into a policy built with an empty (unfitted) normalizer.
    restored = DiffusionPolicy(policy.config, Normalizer()).eval()
    restored.load_state_dict(state)
    obs = make_batch(batch=2)["obs"]
    torch.testing.assert_close(restored.predict_action(obs, generator=torch.Generator().manual_seed(0)),
                               policy.predict_action(obs, generator=torch.Generator().manual_seed(0)))


# ------------------------------------------------------------------------------------------ optimizer
def test_optimizer_groups():
    unet = make_tiny_policy("unet")
    groups = unet.get_optimizer_groups()
    assert len(groups) == 1 and groups[0]["weight_decay"] == 1e-6
    assert sum(p.numel() for p in groups[0]["params"]) == sum(p.numel() for p in unet.parameters() if p.requires_grad)
    opt = unet.make_optimizer()
    assert opt.defaults["lr"] == 1e-4 and opt.defaults["betas"] == (0.95, 0.999)

    tf = make_tiny_policy("transformer", image=True)
    groups = tf.get_optimizer_groups()
    assert [g["weight_decay"] for g in groups] == [1e-3, 0.0, 1e-6]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in tf.parameters() if p.requires_grad}
    assert tf.make_optimizer().defaults["betas"] == (0.9, 0.95)


# ------------------------------------------------------------------------------------------- registry
def test_registry_builds_policies_by_name():
    assert {"diffusion_unet", "diffusion_transformer"} <= set(POLICIES)
    batch = make_batch()
    normalizer = make_normalizer(batch)
    policy = make_policy("diffusion_transformer", normalizer, obs_shapes={"state": (5,)}, action_dim=2,
                         **TINY_TRANSFORMER)
    assert isinstance(policy, DiffusionPolicy) and policy.config.network == "transformer"
    assert policy.normalizer is normalizer
    unet = make_config("diffusion_unet", obs_shapes={"state": (5,)}, action_dim=2)
    assert unet.network == "unet" and unet.down_dims == (64, 128, 256)  # the name's presets
    with pytest.raises(ConfigError, match="unknown policy 'diffusion_rnn'; known policies: diffusion_unet"):
        make_policy("diffusion_rnn", normalizer, obs_shapes={"state": (5,)}, action_dim=2)


# ------------------------------------------------------------------------------------------------ EMA
def test_ema_decay_schedule_matches_the_reference():
    ema = EMA(nn.Linear(2, 2), power=0.75, max_decay=0.9999)
    assert [ema.get_decay(k) for k in range(3)] == [0.0, 0.0, 1 - 2 ** -0.75]
    assert ema.get_decay(10_001) == pytest.approx(1 - 10_001 ** -0.75)
    assert ema.get_decay(10**7) == 0.9999


def test_ema_averages_and_copies():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = EMA(model)
    for value in (1.0, 2.0, 3.0):
        with torch.no_grad():
            model[0].weight.fill_(value)
            model[1].running_mean.fill_(value)
        ema.step(model)
    decay = 1 - 2 ** -0.75  # steps 1 and 2 copy, step 3 averages
    torch.testing.assert_close(ema.averaged[0].weight, torch.full((2, 2), decay * 2.0 + (1 - decay) * 3.0))
    torch.testing.assert_close(ema.averaged[1].running_mean, torch.full((2,), 3.0))  # buffers are copied
    assert not ema.averaged.training and not any(p.requires_grad for p in ema.averaged.parameters())
    target = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema.copy_to(target)
    torch.testing.assert_close(target[0].weight, ema.averaged[0].weight)


def test_ema_state_dict_round_trip_resumes_exactly(tmp_path):
    batch = make_batch()
    policy = make_tiny_policy(batch=batch)
    optimizer = torch.optim.AdamW(policy.get_optimizer_groups(), lr=1e-3)
    ema = EMA(policy)

    def train(n):
        for _ in range(n):
            loss = policy.compute_loss(batch)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            ema.step(policy)

    train(3)
    torch.save({"ema": ema.state_dict()}, tmp_path / "ckpt.pt")
    resumed = EMA(make_tiny_policy(batch=make_batch(seed=9)))
    resumed.load_state_dict(torch.load(tmp_path / "ckpt.pt")["ema"])
    assert resumed.optimization_step == 3 and resumed.decay == ema.decay
    for (name, a), b in zip(ema.averaged.state_dict().items(), resumed.averaged.state_dict().values()):
        assert torch.equal(a, b), name
    # Both continue identically from the same live weights.
    before = {k: v.clone() for k, v in ema.averaged.state_dict().items()}
    for _ in range(2):
        loss = policy.compute_loss(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ema.step(policy)
        resumed.step(policy)
    for (name, a), b in zip(ema.averaged.state_dict().items(), resumed.averaged.state_dict().values()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(before[k], v) for k, v in ema.averaged.state_dict().items())
