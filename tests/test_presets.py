"""The published recipes carried by the (task, policy) presets (sources: the README's "Presets" table)."""

import pytest

from config import parse_overrides, policy_config_kwargs
from policy import make_config


def resolved(*argv):
    """The config and the policy config a command line builds, presets applied."""
    cfg = parse_overrides(list(argv))
    return cfg, make_config(cfg.policy, obs_shapes={"x": (3,)}, action_dim=2, **policy_config_kwargs(cfg))


@pytest.mark.parametrize("task", ["pusht_keypoints", "pusht_lowdim"])
def test_pusht_state_transformer_takes_the_reference_pusht_recipe(task):
    cfg, policy = resolved(f"task={task}", "policy=diffusion_transformer")
    assert (policy.horizon, policy.obs_horizon, policy.action_horizon) == (16, 2, 8)
    assert (policy.p_drop_attn, policy.optimizer_weight_decay, policy.lr_warmup_steps) == (0.01, 0.1, 1000)
    assert policy.optimizer_betas == (0.9, 0.95) and cfg.training.batch_size == 256


def test_image_and_robomimic_transformers_keep_the_generic_recipe():
    cfg, image = resolved("task=pusht_image", "policy=diffusion_transformer")
    assert (image.horizon, image.p_drop_attn, image.optimizer_weight_decay, image.lr_warmup_steps) == \
           (16, 0.3, 1e-3, 1000)
    assert image.obs_encoder_weight_decay == 1e-6 and cfg.training.batch_size == 64
    _, lift = resolved("task=lift_lowdim", "policy=diffusion_transformer")
    assert lift.horizon == 10  # Tp 10 on robomimic


def test_unet_ibc_and_lstm_gmm_recipes():
    cfg, unet = resolved("task=pusht_keypoints")
    assert (unet.lr_warmup_steps, unet.optimizer_weight_decay, unet.optimizer_betas) == (500, 1e-6, (0.95, 0.999))
    assert unet.down_dims == (64, 128, 256)  # the small UNet is the product default; the paper's is one override
    _, image_unet = resolved("task=pusht_image")
    assert image_unet.down_dims == (512, 1024, 2048) and image_unet.diffusion_step_embed_dim == 128
    cfg, _ = resolved("task=pusht_image", "policy=ibc")
    assert cfg.training.batch_size == 128
    cfg, lstm = resolved("task=pusht_keypoints", "policy=lstm_gmm")
    assert cfg.training.use_ema is False and lstm.horizon == 10


def test_command_line_overrides_a_preset():
    _, policy = resolved("policy=diffusion_transformer", "policy.p_drop_attn=0.2")
    assert policy.p_drop_attn == 0.2
