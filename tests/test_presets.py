"""The published recipes carried by the (task, policy) presets (sources: the Presets table in docs/comparing.md),
and the named recipes over them (config.RECIPES)."""

import pytest

from config import RECIPES, resolve


def resolved(*argv):
    """The config and the built policy config a command line resolves to."""
    r = resolve(list(argv))
    return r.config, r.policy


QUICKSTART = RECIPES["quickstart"][("pusht_keypoints", "diffusion_unet")]


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


def test_quickstart_applies_to_a_bare_run_on_the_embedded_demonstrations_only():
    first, unet = resolved()  # `python train.py`
    assert first.recipe == "quickstart"
    assert (first.training.steps, first.training.batch_size, first.training.eval_every, unet.optimizer_lr) == \
           (QUICKSTART["training.steps"], 64, 0, QUICKSTART["policy.optimizer_lr"])
    assert list(unet.down_dims) == QUICKSTART["policy.down_dims"]
    assert unet.diffusion_step_embed_dim == QUICKSTART["policy.diffusion_step_embed_dim"]
    # one recipe for every device: a GPU machine resolves the same values
    assert resolved("device=cpu")[0].to_dict() == {**first.to_dict(), "device": "cpu"}
    # explicitly the embedded default: the same recipe; the command line still wins over it
    assert resolved("dataset_path=None")[0].training.batch_size == 64
    cfg, unet = resolved("training.steps=50", "policy.down_dims=[16,32]")
    assert (cfg.training.steps, cfg.training.batch_size, unet.down_dims) == (50, 64, (16, 32))
    # published data, or another policy or task: the presets alone
    paper, unet = resolved("dataset_path=data/pusht.zip")
    assert paper.recipe == "presets"
    assert (paper.training.batch_size, unet.optimizer_lr, paper.training.steps) == (256, 1e-4, 2000)
    assert unet.down_dims == (64, 128, 256) and unet.diffusion_step_embed_dim == 256
    assert resolved("policy=ibc")[0].training.batch_size == 256
    assert resolved("task=pusht_lowdim")[0].training.batch_size == 256
    # the recipe asked for by name: on the published data too; presets on the embedded data
    assert resolved("recipe=quickstart", "dataset_path=data/pusht.zip")[0].training.steps == 10000
    assert resolved("recipe=presets")[0].training.batch_size == 256


def test_a_recipe_not_defined_for_the_pair_is_refused_by_name():
    with pytest.raises(ValueError, match="recipe=quickstart is defined for task=pusht_keypoints policy=diffusion_unet "
                                         "only, not task=pusht_keypoints policy=ibc; use recipe=presets"):
        resolve(["policy=ibc", "recipe=quickstart"])
    with pytest.raises(ValueError, match="recipe='fast': unknown; known recipes: auto, presets, quickstart"):
        resolve(["recipe=fast"])
