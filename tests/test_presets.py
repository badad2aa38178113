"""The published recipes carried by the (task, policy) presets (sources: the README's "Presets" table)."""

import pytest

from config import FIRST_RUN_RECIPE, FIRST_RUN_RECIPE_CUDA, parse_overrides, policy_config_kwargs
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
    cfg, unet = resolved("task=pusht_keypoints", "dataset_path=data/pusht.zip")
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


def test_the_first_run_takes_its_recipe_only_on_the_embedded_demonstrations():
    first, unet = resolved("device=cpu")  # `python train.py` on a machine without a GPU
    assert (first.training.steps, first.training.batch_size, first.training.lr, first.training.eval_every) == \
           (FIRST_RUN_RECIPE["training.steps"], 64, FIRST_RUN_RECIPE["training.lr"], 0)
    assert list(unet.down_dims) == FIRST_RUN_RECIPE["policy.down_dims"]
    assert unet.diffusion_step_embed_dim == FIRST_RUN_RECIPE["policy.diffusion_step_embed_dim"]
    # explicitly the embedded default: the same recipe; the command line still wins over it
    assert resolved("dataset_path=None")[0].training.batch_size == 64
    cfg, unet = resolved("training.steps=50", "policy.down_dims=[16,32]")
    assert (cfg.training.steps, cfg.training.batch_size, unet.down_dims) == (50, 64, (16, 32))
    # published data, or another policy or task: the paper's recipes, untouched
    paper, unet = resolved("dataset_path=data/pusht.zip")
    assert (paper.training.batch_size, paper.training.lr, paper.training.steps) == (256, None, 2000)
    assert unet.down_dims == (64, 128, 256) and unet.diffusion_step_embed_dim == 256
    assert resolved("policy=ibc")[0].training.batch_size == 256
    assert resolved("task=pusht_lowdim")[0].training.batch_size == 256


def test_the_first_run_on_a_gpu_takes_the_longer_recipe(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # device=auto on a machine with a GPU
    for argv, recipe in [((), FIRST_RUN_RECIPE_CUDA), (("device=cuda:0",), FIRST_RUN_RECIPE_CUDA),
                         (("device=cpu",), FIRST_RUN_RECIPE)]:
        cfg, _ = resolved(*argv)
        assert (cfg.training.steps, cfg.training.lr) == (recipe["training.steps"], recipe["training.lr"]), argv
    assert FIRST_RUN_RECIPE_CUDA["training.steps"] > FIRST_RUN_RECIPE["training.steps"]
