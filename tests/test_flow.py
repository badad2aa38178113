"""Flow matching (policy/flow.py): the loss and integrators on shapes, a bimodal toy problem that a collapsed model
fails, the policy through train.py and eval.py, and bad sampler settings named."""

import pytest
import torch
from torch import nn

import train
from config import resolve
from policy.flow import FlowConfig, flow_loss, integrate, sample_time

from conftest import make_batch, make_normalizer, tiny_unet_overrides


def test_loss_and_integrators_on_shapes():
    x1, noise, t = torch.randn(6, 16, 2), torch.randn(6, 16, 2), torch.rand(6)
    # the exact velocity of the straight path gives zero loss
    assert flow_loss(lambda x, tt: x1 - noise, x1, noise, t).item() == pytest.approx(0.0, abs=1e-12)
    assert flow_loss(lambda x, tt: torch.zeros_like(x), x1, noise, t).item() > 0
    # dx/dt = x: x(1) = e x(0); midpoint (second order) is closer than Euler with the same steps
    x0 = torch.ones(3, 4)
    euler, midpoint = (integrate(lambda x, tt: x, x0, 4, m) for m in ("euler", "midpoint"))
    assert euler.shape == midpoint.shape == (3, 4)
    assert (1.25 ** 4) == pytest.approx(euler[0, 0].item())
    assert abs(midpoint[0, 0].item() - torch.e) < abs(euler[0, 0].item() - torch.e)
    # a velocity that depends on t only: Euler integrates it at the left ends of the steps
    assert integrate(lambda x, tt: tt[:, None].expand_as(x), torch.zeros(2, 1), 2)[0, 0].item() == pytest.approx(0.25)
    for dist in ("beta", "uniform", "logit_normal"):
        s = sample_time(10000, dist, "cpu")
        assert s.shape == (10000,) and 0 <= s.min() and s.max() < 1
    assert sample_time(10000, "beta", "cpu").mean() < 0.45  # pi0's: more weight on the noisy end


def test_four_euler_steps_recover_both_modes_of_a_bimodal_toy_and_one_step_gives_the_mean():
    """Actions -1 or +1 with equal probability: a model that collapsed to the mean (0) or to one mode fails.

    One Euler step from t = 0 lands on the velocity's value there, E[x1] - x0 + x0 = E[x1]: the mean of the modes,
    the straight path's known limit with very few steps (measured on this toy: 2 steps put 34% of the samples
    within 0.3 of a mode, 4 steps 84%), and the reason one- and two-pass policies are distilled (issue 22)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 1))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 3000)

    def velocity(x, t):
        return net(torch.cat([x, t[:, None]], dim=1))

    for _ in range(3000):
        x1 = torch.randint(0, 2, (512, 1)).float() * 2 - 1
        loss = flow_loss(velocity, x1, torch.randn_like(x1), sample_time(512, "beta", "cpu"))
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    noise = torch.randn(4000, 1, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        samples = integrate(velocity, noise, 4)[:, 0]
        one_step = integrate(velocity, noise, 1)[:, 0]
    near_plus, near_minus = ((samples - 1).abs() < 0.3).float().mean(), ((samples + 1).abs() < 0.3).float().mean()
    assert near_plus > 0.35 and near_minus > 0.35, (near_plus, near_minus)
    assert abs(near_plus - near_minus) < 0.05  # both modes, in about equal shares
    assert samples.abs().mean() > 0.8  # not piled up at the mean
    assert one_step.abs().mean() < 0.2  # one step: the mean of the two modes


def test_the_flow_policy_has_diffusion_policys_interface():
    from policy import make_policy

    batch = make_batch(batch=4)
    policy = make_policy("flow_unet", make_normalizer(batch), obs_shapes={"state": (5,)}, action_dim=2,
                         down_dims=(8, 16), diffusion_step_embed_dim=16, n_groups=4, kernel_size=3)
    loss = policy.compute_loss(batch)["loss"]
    loss.backward()
    assert torch.isfinite(loss) and policy.model.final_conv[-1].weight.grad is not None
    policy.eval()
    assert policy.predict_action({"state": torch.randn(3, 2, 5)}, num_inference_steps=2).shape == (3, 8, 2)
    assert policy.config.passes_per_chunk == 10  # 10 Euler steps by default (pi0)


@pytest.mark.parametrize("change, said", [({"inference_scheduler": "ddpm"}, "for a flow policy"),
                                          ({"num_inference_steps": 0}, "at least 1"),
                                          ({"time_distribution": "normal"}, "time_distribution must be one of")])
def test_bad_sampler_settings_are_named(change, said):
    with pytest.raises(ValueError, match=said):
        FlowConfig(obs_shapes={"state": (5,)}, action_dim=2, **change)


def test_flow_unet_trains_and_evaluates_through_the_scripts(demos, tmp_path):
    import eval as eval_script

    out = tmp_path / "run"
    summary = train.train(resolve([f"dataset_path={demos}", "policy=flow_unet", "training.steps=3",
                                   "training.eval_every=0", "training.val_every=0", "training.batch_size=8",
                                   "wandb.mode=disabled", "eval.n_episodes=1", "eval.max_steps=8", "eval.n_videos=0",
                                   f"output_dir={out}",
                                   *[o for o in tiny_unet_overrides() if "inference" not in o],
                                   "policy.num_inference_steps=2"]))
    assert summary["step"] == 3 and 0 <= summary["mean_max_reward"] <= 1
    assert eval_script.main([f"checkpoint={out / 'checkpoints' / 'last.pt'}", "n_episodes=1", "eval.max_steps=8",
                             "eval.n_videos=0", "wandb.mode=disabled", "policy.inference_scheduler=midpoint",
                             "policy.num_inference_steps=1"]) == 0


def test_eval_py_puts_samplers_of_one_checkpoint_side_by_side(demos, tmp_path):
    import json

    import eval as eval_script

    out = tmp_path / "run"
    train.train(resolve([f"dataset_path={demos}", "training.steps=2", "training.eval_every=0", "training.val_every=0",
                         "training.batch_size=8", "wandb.mode=disabled", "eval.n_episodes=1", "eval.max_steps=4",
                         "eval.n_videos=0", f"output_dir={out}", *tiny_unet_overrides()]))
    assert eval_script.main([f"checkpoint={out / 'checkpoints' / 'last.pt'}", "samplers=ddim-4,dpmsolver-2,unipc",
                             "n_episodes=2", "eval.max_steps=8", "eval.n_videos=0", "wandb.mode=disabled"]) == 0
    table = json.loads((out / "eval" / "samplers.json").read_text())["rows"]
    assert [(r["sampler"], r["steps"], r["passes_per_chunk"]) for r in table] == [
        ("ddim", 4, 4), ("dpmsolver", 2, 2), ("unipc", 5, 5)]
    assert all(r["chunk_ms_batch1"] > 0 for r in table)
    one = json.loads((out / "eval" / "dpmsolver-2" / "eval.json").read_text())
    assert one["sampling"] == {"sampler": "dpmsolver", "steps": 2, "passes_per_chunk": 2}
    assert "| dpmsolver-2 | 2 |" in (out / "eval" / "samplers.md").read_text()
    assert eval_script.main([f"checkpoint={out / 'checkpoints' / 'last.pt'}", "samplers=ddim-x"]) == 2
    assert eval_script.main([f"checkpoint={out / 'checkpoints' / 'last.pt'}", "samplers=euler-2"]) == 2
