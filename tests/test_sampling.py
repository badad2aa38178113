"""policy/sampling.py: the precomputed-coefficient denoising loop against diffusers' ``scheduler.step``.

Every supported setting (DDPM fixed_small / DDIM eta=0, epsilon / sample, clip on / off, several step counts) is
checked step by step, over a whole loop with a fixed dummy model, and through DiffusionPolicy.predict_action,
each time against a loop written with diffusers' ``step`` and the same generator seed."""

import copy
import dataclasses

import pytest
import torch
from conftest import make_batch, make_normalizer, obs_shapes
from diffusers import DDIMScheduler, DDPMScheduler, EulerDiscreteScheduler

from policy import DiffusionConfig, DiffusionPolicy
from policy.sampling import Sampler, build_sampler

TOL = {"rtol": 1e-6, "atol": 1e-6}
SETTINGS = [(kind, steps, prediction, clip)
            for kind, step_counts in (("ddpm", (100, 10, 7)), ("ddim", (10, 4)))
            for steps in step_counts for prediction in ("epsilon", "sample") for clip in (True, False)]
SETTING_IDS = [f"{k}{n}-{p}-{'clip' if c else 'noclip'}" for k, n, p, c in SETTINGS]


def make_scheduler(kind, prediction, clip, **overrides):
    """The policy's inference scheduler (policy/diffusion.py) for that setting."""
    common = {"num_train_timesteps": 100, "beta_schedule": "squaredcos_cap_v2", "clip_sample": clip,
              "prediction_type": prediction}
    if kind == "ddpm":
        return DDPMScheduler(**{"variance_type": "fixed_small", **common, **overrides})
    return DDIMScheduler(**{"set_alpha_to_one": True, "steps_offset": 0, **common, **overrides})


def diffusers_loop(scheduler, steps, model, x, generator):
    """The reference: the loop DiffusionPolicy used to run, with diffusers' step (no generator: deterministic)."""
    scheduler = copy.deepcopy(scheduler)
    scheduler.set_timesteps(steps)
    extra = {} if generator is None else {"generator": generator}
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t.expand(x.shape[0])), t, x, **extra).prev_sample
    return x


def dummy_model(scheduler, prediction):
    """A fixed deterministic 'denoiser' of (x, t) whose predicted x0 = y(x, t) is bounded but often outside
    [-1, 1] (so clipping matters) and depends on t (so a wrong timestep shows)."""
    alphas_cumprod = scheduler.alphas_cumprod

    def model(x, t):
        tt = t.to(x.dtype)[:, None, None]
        y = 1.6 * torch.tanh(0.8 * x + torch.sin(0.37 * tt)) + 0.05 * torch.cos(3 * x)
        if prediction == "sample":
            return y
        a = alphas_cumprod[t].to(x.dtype)[:, None, None]
        return (x - a.sqrt() * y) / (1 - a).sqrt()

    return model


def assert_same_generator_state(a, b):
    assert torch.equal(a.get_state(), b.get_state()), "a different number of noise draws"


# ------------------------------------------------------------------------------------------- one step
@pytest.mark.parametrize("kind,steps,prediction,clip", SETTINGS, ids=SETTING_IDS)
def test_each_step_equals_diffusers_step(kind, steps, prediction, clip):
    scheduler = make_scheduler(kind, prediction, clip)
    sampler = build_sampler(scheduler, steps)
    scheduler.set_timesteps(steps)
    assert sampler.num_steps == steps and sampler.timesteps.tolist() == scheduler.timesteps.tolist()
    g = torch.Generator().manual_seed(0)
    clipped_somewhere = False
    for i, t in enumerate(scheduler.timesteps):
        x = 2 * torch.randn(4, 16, 2, generator=g)
        model_output = 1.5 * torch.randn(4, 16, 2, generator=g)
        ref_gen, our_gen = torch.Generator().manual_seed(100 + i), torch.Generator().manual_seed(100 + i)
        out = scheduler.step(model_output, t, x, generator=ref_gen)
        torch.testing.assert_close(sampler.step(i, model_output, x, our_gen), out.prev_sample, **TOL)
        assert_same_generator_state(our_gen, ref_gen)
        if kind == "ddpm":  # diffusers adds noise where t > 0 (every step but the last)
            assert sampler.add_noise[i] == (int(t) > 0) and (sampler.noise_std[i] > 0) == (int(t) > 0)
        clipped_somewhere |= bool((out.pred_original_sample.abs() == 1).any())
    assert clipped_somewhere == clip  # the inputs do exercise clipping


@pytest.mark.parametrize("kind,steps,prediction,clip", [s for s in SETTINGS if s[1] < 100],
                         ids=[i for s, i in zip(SETTINGS, SETTING_IDS) if s[1] < 100])
def test_a_wrong_coefficient_is_caught(kind, steps, prediction, clip):
    """Every coefficient the setting uses changes the result when it is off by 1e-3 (relative) at one step:
    the comparisons above would see it."""
    scheduler = make_scheduler(kind, prediction, clip)
    sampler = build_sampler(scheduler, steps)
    used = ["x0_coef", "second_coef"]
    used += ["noise_std"] if kind == "ddpm" else []
    used += ["x0_model_coef", "x0_denom"] if (prediction == "epsilon" or kind == "ddim") else []
    g = torch.Generator().manual_seed(1)
    x, model_output = 2 * torch.randn(4, 16, 2, generator=g), 1.5 * torch.randn(4, 16, 2, generator=g)
    for name in used:
        caught = False
        for i in range(steps):
            coefs = getattr(sampler, name).clone()
            coefs[i] *= 1 + 1e-3
            wrong = dataclasses.replace(sampler, **{name: coefs})
            right_out = sampler.step(i, model_output, x, torch.Generator().manual_seed(i))
            wrong_out = wrong.step(i, model_output, x, torch.Generator().manual_seed(i))
            caught |= not torch.allclose(wrong_out, right_out, **TOL)
        assert caught, name


# ------------------------------------------------------------------------------------------ whole loop
@pytest.mark.parametrize("kind,steps,prediction,clip", SETTINGS, ids=SETTING_IDS)
def test_whole_loop_equals_the_diffusers_loop(kind, steps, prediction, clip):
    scheduler = make_scheduler(kind, prediction, clip)
    model = dummy_model(scheduler, prediction)
    ref_gen, our_gen = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    x_ref = torch.randn(3, 16, 2, generator=ref_gen)
    x_ours = torch.randn(3, 16, 2, generator=our_gen)
    ref = diffusers_loop(scheduler, steps, model, x_ref, ref_gen)
    ours = build_sampler(scheduler, steps).denoise(model, x_ours, our_gen)
    assert torch.isfinite(ref).all() and ref.abs().max() > 0.5
    torch.testing.assert_close(ours, ref, **TOL)
    assert_same_generator_state(our_gen, ref_gen)


def test_ddpm_loop_with_another_generator_differs_and_ddim_is_deterministic():
    for kind, same in (("ddpm", False), ("ddim", True)):
        scheduler = make_scheduler(kind, "epsilon", True)
        sampler, model = build_sampler(scheduler, 10), dummy_model(scheduler, "epsilon")
        x = torch.randn(2, 16, 2)
        a = sampler.denoise(model, x, torch.Generator().manual_seed(0))
        b = sampler.denoise(model, x, torch.Generator().manual_seed(1))
        assert torch.equal(a, b) == same


def test_float64_samples_match_diffusers():
    scheduler = make_scheduler("ddpm", "epsilon", False)
    model = dummy_model(scheduler, "epsilon")
    x = torch.randn(2, 16, 2, dtype=torch.float64)
    ref = diffusers_loop(scheduler, 10, model, x, torch.Generator().manual_seed(3))
    ours = build_sampler(scheduler, 10).denoise(model, x, torch.Generator().manual_seed(3))
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_the_loop_is_one_graph_without_host_syncs():
    """torch.compile(fullgraph=True) refuses graph breaks (.item(), branches on tensor values): the whole loop
    traces as one graph, the property CUDA graph capture needs (noise from the default generator)."""
    for kind in ("ddpm", "ddim"):
        scheduler = make_scheduler(kind, "epsilon", True)
        sampler, model = build_sampler(scheduler, 5), dummy_model(scheduler, "epsilon")
        x = torch.randn(2, 16, 2)
        compiled = torch.compile(lambda x, sampler=sampler, model=model: sampler.denoise(model, x),
                                 backend="eager", fullgraph=True)
        torch.manual_seed(0)
        out = compiled(x)
        torch.manual_seed(0)
        torch.testing.assert_close(out, sampler.denoise(model, x), **TOL)


# ------------------------------------------------------------------------------------------ building
def test_build_leaves_the_scheduler_alone_and_rejects_what_it_does_not_reproduce():
    scheduler = make_scheduler("ddpm", "epsilon", True)
    scheduler.set_timesteps(5)
    build_sampler(scheduler, 10)
    assert scheduler.timesteps.tolist() == [80, 60, 40, 20, 0]
    for bad, match in ((make_scheduler("ddpm", "epsilon", True, variance_type="fixed_large"), "variance_type"),
                       (make_scheduler("ddim", "v_prediction", True), "prediction_type"),
                       (make_scheduler("ddim", "epsilon", True, thresholding=True), "thresholding")):
        with pytest.raises(ValueError, match=match):
            build_sampler(bad, 10)
    with pytest.raises(TypeError, match="EulerDiscreteScheduler"):
        build_sampler(EulerDiscreteScheduler(num_train_timesteps=100), 10)


def test_built_under_inference_mode_it_still_backpropagates():
    scheduler = make_scheduler("ddim", "epsilon", False)
    with torch.inference_mode():
        sampler = build_sampler(scheduler, 4)
    model_output = torch.randn(1, 16, 2, requires_grad=True)
    sampler.step(0, model_output, torch.randn(1, 16, 2)).sum().backward()
    assert model_output.grad is not None


# ------------------------------------------------------------------------------------------ the policy
def make_policy(kind, steps, prediction, clip, network="unet"):
    batch = make_batch()
    nets = ({"down_dims": (16, 32, 64), "diffusion_step_embed_dim": 16} if network == "unet"
            else {"n_layers": 2, "n_heads": 2, "embed_dim": 32})
    config = DiffusionConfig(obs_shapes=obs_shapes(), action_dim=2, network=network, inference_scheduler=kind,
                             num_inference_steps=steps, prediction_type=prediction, clip_sample=clip, **nets)
    return DiffusionPolicy(config, make_normalizer(batch)).eval()


def reference_actions(policy, obs, generator, steps=None):
    """predict_action as it was: the diffusers step loop."""
    cfg = policy.config
    with torch.no_grad():
        cond = policy.condition(policy.obs_window(obs, last=True))
        x = torch.randn((cond.shape[0], cfg.horizon, cfg.action_dim), generator=generator)
        x = diffusers_loop(policy.inference_scheduler, steps or cfg.num_inference_steps,
                           lambda x, t: policy.model(x, t, cond), x, generator)
    window = policy.normalizer.unnormalize("action", x)
    return window[:, cfg.obs_horizon - 1:cfg.obs_horizon - 1 + cfg.action_horizon]


@pytest.mark.parametrize("kind,steps,prediction,clip", SETTINGS, ids=SETTING_IDS)
def test_predict_action_equals_the_diffusers_loop(kind, steps, prediction, clip):
    policy = make_policy(kind, steps, prediction, clip)
    obs = make_batch(batch=2)["obs"]
    ours = policy.predict_action(obs, generator=torch.Generator().manual_seed(5))
    ref = reference_actions(policy, obs, torch.Generator().manual_seed(5))
    assert ref.std() > 1.0  # un-normalized pixels, not a constant
    torch.testing.assert_close(ours, ref, **TOL)


@pytest.mark.parametrize("network", ["unet", "transformer"])
def test_predict_action_with_other_step_counts_and_the_sampler_cache(network):
    policy = make_policy("ddim", 10, "epsilon", True, network)
    obs = make_batch(batch=2)["obs"]
    for steps in (4, 10, 4):
        torch.testing.assert_close(policy.predict_action(obs, torch.Generator().manual_seed(2), steps),
                                   reference_actions(policy, obs, torch.Generator().manual_seed(2), steps), **TOL)
    assert isinstance(policy.sampler(), Sampler) and policy.sampler() is policy.sampler(10)
    assert policy.sampler(4).num_steps == 4 and policy.sampler(4) is policy.sampler(4, "cpu")
    # Another scheduler put in its place is used, not a stale cached loop.
    policy.inference_scheduler = make_scheduler("ddpm", "epsilon", True)
    torch.testing.assert_close(policy.predict_action(obs, torch.Generator().manual_seed(2), 7),
                               reference_actions(policy, obs, torch.Generator().manual_seed(2), 7), **TOL)
    assert policy.sampler(7).kind == "ddpm"


# ------------------------------------------------------------------ multistep solvers (DPM-Solver++, UniPC)
def eps_like_model(dtype=torch.float32):
    """A nonlinear stand-in for a trained epsilon network: the Bayes-optimal noise for N(0, 0.25) data plus a
    tanh term, so that x0 estimates stay bounded as a trained network's do."""
    a = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2").alphas_cumprod.to(dtype)
    w = torch.randn(2, 2, generator=torch.Generator().manual_seed(3), dtype=dtype) * 0.5

    def model(x, t):
        ab = a[t][:, None, None]
        return x * (1 - ab).sqrt() / (ab * 0.25 + 1 - ab) + 0.05 * torch.tanh(x @ w)
    return model


@pytest.mark.parametrize("kind", ["dpmsolver", "unipc"])
@pytest.mark.parametrize("steps", [1, 2, 3, 5, 10])
@pytest.mark.parametrize("prediction", ["epsilon", "sample"])
@pytest.mark.parametrize("clip", [False, True])
def test_multistep_solvers_equal_diffusers_step(kind, steps, prediction, clip):
    """The coefficient loop equals diffusers' step loop to 1e-6 of the size of the terms it sums.

    Both run in float32 (diffusers' solvers upcast every step to float32, whatever the sample's dtype). At few steps
    the first step turns epsilon into x0 with 1/sqrt(a_T) ~ 1e2, so terms of ~1e3 cancel: the two orders of
    summation then differ by float32 rounding of those terms (~1e-7 of them), not of the result."""
    from policy.sampling import build_linear_sampler, multistep_scheduler

    reference = multistep_scheduler(kind, make_scheduler("ddpm", prediction, clip))
    assert reference.config.thresholding == clip  # clip_sample -> x0 clipped at every step (sample_max_value 1)
    ours = build_linear_sampler(reference, steps, kind)
    assert ours.clip_range == (1.0 if clip else None)
    assert ours.coefficients.shape == (steps, steps + 1)
    assert torch.all(ours.coefficients[torch.triu(torch.ones(steps, steps + 1), diagonal=2).bool()] == 0)
    model, calls = eps_like_model(), []
    x_t = torch.randn(4, 16, 2, generator=torch.Generator().manual_seed(0))

    def recording(x, t):
        calls.append((x, model(x, t)))
        return calls[-1][1]

    got = ours.denoise(recording, x_t.clone())
    expected = diffusers_loop(reference, steps, model, x_t.clone(), None)
    x0s = [ours.x0(i, m, x) for i, (x, m) in enumerate(calls)]
    if clip:  # the clamp took part: some unclipped estimate lies outside [-1, 1]
        assert any((dataclasses.replace(ours, clip_range=None).x0(i, m, x).abs() > 1).any()
                   for i, (x, m) in enumerate(calls))
    sizes = torch.stack([x_t.abs().max(), *[x0.abs().max() for x0 in x0s]])
    scale = (ours.coefficients[-1].abs() * sizes).sum()
    assert (got - expected).abs().max() <= 1e-6 * scale, ((got - expected).abs().max(), scale)
    # the last step's largest coefficient off by 1e-4 of its value is seen
    bump = torch.zeros_like(ours.coefficients)
    bump[-1, ours.coefficients[-1].abs().argmax()] = 1e-4
    wrong = dataclasses.replace(ours, coefficients=ours.coefficients * (1 + bump))
    assert (wrong.denoise(model, x_t.clone()) - expected).abs().max() > 1e-6 * scale


def test_the_policy_samples_with_a_multistep_solver_and_clips_the_window():
    batch = make_batch(batch=3)
    config = DiffusionConfig(obs_shapes=obs_shapes(), action_dim=2, down_dims=(16, 32), diffusion_step_embed_dim=16,
                             n_groups=4, kernel_size=3, inference_scheduler="dpmsolver")
    assert config.num_inference_steps == 5
    policy = DiffusionPolicy(config, make_normalizer(batch)).eval()
    window = policy.sample_action_window(batch["obs"], generator=torch.Generator().manual_seed(0))
    low, high = policy.normalizer.unnormalize("action", torch.full((1, 1, 2), -1.0)), \
        policy.normalizer.unnormalize("action", torch.full((1, 1, 2), 1.0))
    assert window.shape == (3, 16, 2) and (window >= low - 1e-4).all() and (window <= high + 1e-4).all()
    with pytest.raises(ValueError, match="inference_scheduler must be one of ddpm, ddim, dpmsolver, unipc"):
        DiffusionConfig(obs_shapes=obs_shapes(), action_dim=2, inference_scheduler="euler")


def test_multistep_solvers_refuse_dynamic_thresholding():
    from diffusers import DPMSolverMultistepScheduler

    from policy.sampling import build_linear_sampler

    dynamic = DPMSolverMultistepScheduler(num_train_timesteps=100, thresholding=True, sample_max_value=2.0)
    with pytest.raises(ValueError, match="dynamic thresholding .*sample_max_value 2.0.* only sample_max_value 1"):
        build_linear_sampler(dynamic, 5, "dpmsolver")
    with pytest.raises(ValueError, match="only the data-prediction solvers"):
        build_linear_sampler(DPMSolverMultistepScheduler(num_train_timesteps=100, algorithm_type="dpmsolver",
                                                             final_sigmas_type="sigma_min"), 5,
                             "dpmsolver")
