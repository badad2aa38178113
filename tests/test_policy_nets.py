"""Networks of the policies: the 1D UNet, the diffusion transformer, the vision encoders (tiny sizes, CPU)."""

import pytest
import torch
from torch import nn

from policy.nets import ConditionalUnet1D, ImageEncoder, ObservationEncoder, TransformerForDiffusion
from policy.nets.unet1d import check_unet_horizon
from policy.nets.vision import ResNet18Trunk, SpatialSoftmax, crop_images


# --------------------------------------------------------------------------------------------- UNet
@pytest.mark.parametrize("horizon,down_dims", [
    (8, (16, 32, 64)), (12, (16, 32, 64)), (16, (16, 32, 64)), (32, (16, 32, 64, 64)), (6, (16, 32)), (5, (16,)),
])
def test_unet_output_shape(horizon, down_dims):
    net = ConditionalUnet1D(action_dim=3, global_cond_dim=10, horizon=horizon, down_dims=down_dims,
                            diffusion_step_embed_dim=16)
    sample = torch.randn(4, horizon, 3)
    out = net(sample, torch.randint(0, 100, (4,)), torch.randn(4, 10))
    assert out.shape == (4, horizon, 3)
    assert torch.isfinite(out).all()
    assert net(sample, 7, torch.randn(4, 10)).shape == (4, horizon, 3)  # a scalar step broadcasts


def test_unet_rejects_bad_horizon_with_clear_message():
    with pytest.raises(ValueError) as err:
        ConditionalUnet1D(action_dim=2, global_cond_dim=4, horizon=10, down_dims=(16, 32, 64))
    msg = str(err.value)
    assert "horizon 10" in msg and "[16, 32, 64]" in msg and "multiple of 4" in msg and "[8, 12]" in msg
    with pytest.raises(ValueError, match=r"horizon 7 .*\[8\]"):
        check_unet_horizon(7, (256, 512, 1024, 2048))
    with pytest.raises(ValueError, match="horizon 3"):
        check_unet_horizon(3, (256, 512, 1024))


def test_unet_forward_rejects_window_it_cannot_take():
    net = ConditionalUnet1D(action_dim=2, global_cond_dim=4, horizon=16, down_dims=(16, 32, 64),
                            diffusion_step_embed_dim=16)
    assert net(torch.randn(2, 8, 2), 3, torch.randn(2, 4)).shape == (2, 8, 2)  # divisible: fine
    with pytest.raises(ValueError, match="horizon 10"):
        net(torch.randn(2, 10, 2), 3, torch.randn(2, 4))


def test_unet_conditioning_changes_output():
    net = ConditionalUnet1D(action_dim=2, global_cond_dim=4, horizon=8, down_dims=(16, 32),
                            diffusion_step_embed_dim=16)
    x = torch.randn(2, 8, 2)
    cond = torch.randn(2, 4)
    base = net(x, 10, cond)
    assert not torch.allclose(base, net(x, 50, cond))
    assert not torch.allclose(base, net(x, 10, cond + 1))


# -------------------------------------------------------------------------------------- Transformer
def tiny_transformer(horizon, obs_horizon=2, **kw):
    return TransformerForDiffusion(action_dim=3, cond_dim=5, horizon=horizon, obs_horizon=obs_horizon, n_layers=2,
                                   n_heads=4, embed_dim=32, **kw)


@pytest.mark.parametrize("horizon,obs_horizon", [(8, 2), (10, 2), (16, 2), (16, 1), (12, 4)])
def test_transformer_output_shape(horizon, obs_horizon):
    net = tiny_transformer(horizon, obs_horizon)
    out = net(torch.randn(4, horizon, 3), torch.randint(0, 100, (4,)), torch.randn(4, obs_horizon, 5))
    assert out.shape == (4, horizon, 3)
    assert torch.isfinite(out).all()
    shorter = net(torch.randn(4, horizon - 2, 3), 5, torch.randn(4, obs_horizon, 5))
    assert shorter.shape == (4, horizon - 2, 3)


def test_transformer_attention_is_causal():
    net = tiny_transformer(8).eval()
    x, cond = torch.randn(1, 8, 3), torch.randn(1, 2, 5)
    base = net(x, 3, cond)
    later_actions = x.clone()
    later_actions[:, 5:] += 1.0
    out = net(later_actions, 3, cond)
    torch.testing.assert_close(out[:, :5], base[:, :5])  # earlier tokens do not see later actions
    assert not torch.allclose(out[:, 5:], base[:, 5:])
    later_obs = cond.clone()
    later_obs[:, 1] += 1.0
    out = net(x, 3, later_obs)
    torch.testing.assert_close(out[:, :1], base[:, :1])  # action 0 sees obs step 0 only
    assert not torch.allclose(out[:, 1:], base[:, 1:])


def test_transformer_optim_groups():
    net = tiny_transformer(8)
    decay, no_decay = net.optim_groups(weight_decay=1e-3)
    assert decay["weight_decay"] == 1e-3 and no_decay["weight_decay"] == 0.0
    ids = lambda group: {id(p) for p in group["params"]}  # noqa: E731
    assert ids(decay).isdisjoint(ids(no_decay))
    assert ids(decay) | ids(no_decay) == {id(p) for p in net.parameters()}
    assert id(net.head.weight) in ids(decay) and id(net.input_emb.weight) in ids(decay)
    assert id(net.decoder.layers[0].self_attn.in_proj_weight) in ids(decay)
    for p in (net.pos_emb, net.cond_pos_emb, net.head.bias, net.ln_f.weight, net.decoder.layers[0].norm1.weight):
        assert id(p) in ids(no_decay)


def test_transformer_paper_size_defaults():
    net = TransformerForDiffusion(action_dim=2, cond_dim=20, horizon=16, obs_horizon=2)
    assert len(net.decoder.layers) == 8
    layer = net.decoder.layers[0]
    assert layer.self_attn.num_heads == 4 and layer.self_attn.embed_dim == 256 and layer.dropout.p == 0.3


# ------------------------------------------------------------------------------------------- Vision
def test_resnet_trunk_has_group_norm_only():
    trunk = ResNet18Trunk(base_channels=16)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in trunk.modules())
    norms = [m for m in trunk.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_groups == m.num_channels // 16 for m in norms)
    blocks = sum(len(layer) for layer in trunk.layers)
    assert blocks == 8  # [2, 2, 2, 2] BasicBlocks
    assert trunk(torch.randn(2, 3, 32, 32)).shape == (2, 128, 1, 1)


def test_spatial_softmax_finds_the_hot_pixel():
    pool = SpatialSoftmax(in_channels=1, num_keypoints=1)
    with torch.no_grad():
        pool.keypoint_conv.weight.fill_(1.0)
        pool.keypoint_conv.bias.zero_()
    features = torch.zeros(1, 1, 5, 9)
    features[0, 0, 4, 0] = 100.0  # bottom-left
    torch.testing.assert_close(pool(features), torch.tensor([[-1.0, 1.0]]), atol=1e-4, rtol=0)


def test_crop_images_center_and_random():
    images = torch.arange(2 * 6 * 8 * 3).reshape(2, 6, 8, 3)
    center = crop_images(images, (4, 4), random=False)
    assert torch.equal(center, images[:, 1:5, 2:6])
    crops = crop_images(images.repeat(50, 1, 1, 1), (4, 4), random=True)
    assert crops.shape == (100, 4, 4, 3)
    seen = set()
    for i, crop in enumerate(crops):
        src = images[i % 2]
        matches = [(r, c) for r in range(3) for c in range(5) if torch.equal(src[r:r + 4, c:c + 4], crop)]
        assert len(matches) == 1  # every crop is a window of its own image
        seen.add(matches[0])
    assert len(seen) > 5  # and the windows vary between images


def test_image_encoder_shapes_and_train_vs_eval_crop():
    enc = ImageEncoder((48, 48, 3), crop_shape=(40, 40), feature_dim=16, num_keypoints=8, base_channels=16)
    images = torch.randint(0, 256, (6, 48, 48, 3), dtype=torch.uint8)
    enc.train()
    assert enc(images).shape == (6, 16)
    assert not torch.allclose(enc(images), enc(images))  # random crops differ between calls
    enc.eval()
    torch.testing.assert_close(enc(images), enc(images))  # center crop: deterministic
    # uint8 input and input already normalized to [-1, 1] give the same features
    torch.testing.assert_close(enc(images), enc(images.float() / 127.5 - 1.0))
    with pytest.raises(ValueError, match="larger than the image"):
        ImageEncoder((32, 32, 3), crop_shape=(40, 40), base_channels=16)
    with pytest.raises(ValueError, match="too small"):
        ImageEncoder((32, 32, 3), crop_shape=None, base_channels=16)


def test_observation_encoder_flattens_steps_and_batches_images():
    shapes = {"img": (48, 48, 3), "agent_pos": (2,), "keypoint": (9, 2)}
    enc = ObservationEncoder(shapes, crop_shape=(40, 40), image_feature_dim=16, num_keypoints=8, base_channels=16)
    assert enc.feature_dim == 16 + 2 + 18
    calls = []
    enc.image_encoders["img"].register_forward_hook(lambda m, args, out: calls.append(args[0].shape))
    obs = {"img": torch.rand(3, 2, 48, 48, 3) * 2 - 1, "agent_pos": torch.randn(3, 2, 2),
           "keypoint": torch.randn(3, 2, 9, 2)}
    flat = enc(obs)
    assert flat.shape == (3, 2 * 36)
    assert calls == [(6, 48, 48, 3)]  # one ResNet call over B * To images
    per_step = enc.eval()(obs, flatten=False)
    assert per_step.shape == (3, 2, 36)
    torch.testing.assert_close(per_step[:, 1, 16:18], obs["agent_pos"][:, 1])
    torch.testing.assert_close(per_step.reshape(3, -1), enc(obs))
    with pytest.raises(ValueError, match="keypoint"):
        enc({**obs, "keypoint": torch.randn(3, 2, 18)})
