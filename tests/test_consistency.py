"""Consistency distillation (policy/consistency.py, distill.py): a bimodal toy problem the one-step student must solve
where the teacher's weights in one step fail, the student through distill.py and eval.py, and bad input named."""

import numpy as np
import pytest
import torch

import distill
import train
from config import resolve
from datasets import Normalizer
from policy import ConsistencyConfig, ConsistencyPolicy, DiffusionConfig, DiffusionPolicy

from conftest import tiny_unet_overrides

TOY = dict(obs_shapes={"state": (2,)}, action_dim=1, horizon=8, obs_horizon=2, action_horizon=4, down_dims=(16, 32),
           diffusion_step_embed_dim=16, n_groups=4, kernel_size=3)


def toy_batch(n=128):
    """Windows whose 8 actions are all -1 or all +1, equally often, from one observation: two modes."""
    sign = torch.randint(0, 2, (n, 1, 1)).float() * 2 - 1
    return {"obs": {"state": torch.zeros(n, 2, 2)}, "action": sign.expand(n, 8, 1).clone()}


def mode_shares(window):
    mean = window[:, :, 0].mean(1)
    return ((mean - 1).abs() < 0.3).float().mean().item(), ((mean + 1).abs() < 0.3).float().mean().item()


def fit(policy, steps, lr):
    opt = torch.optim.AdamW(policy.parameters(), lr=lr)
    policy.train()
    for _ in range(steps):
        loss = policy.compute_loss(toy_batch())["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return policy.eval()


def test_the_one_step_student_recovers_both_modes_of_a_bimodal_toy():
    torch.manual_seed(0)
    normalizer = Normalizer.fit({"state": np.random.default_rng(0).normal(size=(100, 2)).astype("f4"),
                                 "action": np.array([[-1.0], [1.0]] * 50, "f4")})
    teacher = fit(DiffusionPolicy(DiffusionConfig(**TOY, inference_scheduler="ddim", num_inference_steps=10),
                                  normalizer), 800, 1e-3)
    obs = {"state": torch.zeros(2000, 2, 2)}
    assert min(mode_shares(teacher.sample_action_window(obs))) > 0.4  # the teacher (DDIM-10) has both modes
    student = ConsistencyPolicy(ConsistencyConfig(**TOY), normalizer)
    student.load_state_dict(teacher.state_dict())
    undistilled = mode_shares(student.sample_action_window(obs))  # the teacher's weights in one step
    student.attach_teacher(teacher)
    fit(student, 500, 2e-4)
    one_step = mode_shares(student.sample_action_window(obs))
    assert min(one_step) > 0.3, one_step  # both modes in one network pass
    assert min(one_step) > min(undistilled) + 0.1, (undistilled, one_step)
    assert min(mode_shares(student.sample_action_window(obs, num_inference_steps=2))) > 0.3  # chained: two passes
    assert not any("teacher" in k for k in student.state_dict())  # checkpoints hold the student alone


def test_a_student_without_a_teacher_does_not_train():
    student = ConsistencyPolicy(ConsistencyConfig(**TOY), Normalizer.fit({
        "state": np.zeros((4, 2), "f4"), "action": np.array([[-1.0], [1.0]] * 2, "f4")}))
    with pytest.raises(RuntimeError, match="python distill.py checkpoint=TEACHER"):
        student.compute_loss(toy_batch(4))


@pytest.fixture(scope="module")
def teacher_run(demos, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "run"
    train.train(resolve([f"dataset_path={demos}", "training.steps=3", "training.eval_every=0", "training.val_every=0",
                         "training.batch_size=8", "wandb.mode=disabled", "eval.n_episodes=1", "eval.max_steps=4",
                         "eval.n_videos=0", f"output_dir={out}", *tiny_unet_overrides()]))
    return out


def test_distill_py_writes_a_checkpoint_eval_py_and_compare_treat_like_any_other(teacher_run, tmp_path):
    import json

    import eval as eval_script

    out = tmp_path / "student"
    assert distill.main([f"checkpoint={teacher_run / 'checkpoints' / 'last.pt'}", f"output_dir={out}",
                         "training.steps=3", "training.val_every=2", "eval.max_steps=4"]) == 0
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["policy_name"] == "consistency_unet" and ckpt["step"] == 3
    assert list(ckpt["policy_config"]["down_dims"]) == [8, 16]  # the teacher's network
    assert ckpt["policy_config"]["teacher_checkpoint"] == str((teacher_run / "checkpoints" / "last.pt").resolve())
    assert json.loads((out / "eval.json").read_text())["sampling"] == {"sampler": "consistency", "steps": 1,
                                                                      "passes_per_chunk": 1}
    assert eval_script.main([f"checkpoint={out / 'checkpoints' / 'last.pt'}", "policy.num_inference_steps=2",
                             "n_episodes=1", "eval.max_steps=4", "eval.n_videos=0", "wandb.mode=disabled"]) == 0
    assert json.loads((out / "eval" / "eval.json").read_text())["sampling"]["passes_per_chunk"] == 2
    # a student evaluated with DDPM settings, a pass count it cannot do: one line each
    assert eval_script.main([f"checkpoint={out / 'checkpoints' / 'last.pt'}", "policy.inference_scheduler=ddpm"]) == 2
    assert eval_script.main([f"checkpoint={out / 'checkpoints' / 'last.pt'}", "policy.num_inference_steps=50"]) == 2
    # distilling a student (not a diffusion policy) is refused
    assert distill.main([f"checkpoint={out / 'checkpoints' / 'last.pt'}", f"output_dir={tmp_path / 'x'}"]) == 2


def test_distill_py_needs_its_arguments(teacher_run, capsys):
    assert distill.main([]) == 2
    assert distill.main([f"checkpoint={teacher_run / 'checkpoints' / 'last.pt'}"]) == 2
    assert "output_dir= is required" in capsys.readouterr().err
    assert distill.main([f"checkpoint={teacher_run / 'checkpoints' / 'last.pt'}", "policy=flow_unet",
                         "output_dir=x"]) == 2
