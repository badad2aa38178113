"""export.py / policy/export.py: a policy's action chunk as an ONNX graph that ONNX Runtime runs to the same
actions as PyTorch, and the samplers that cannot export refused."""

import json

import numpy as np
import pytest
import torch

import export
from conftest import make_batch, make_normalizer, obs_shapes
from policy import make_policy
from policy.export import ChunkFunction, export_onnx, onnx_session

TINY = dict(down_dims=(8, 16), diffusion_step_embed_dim=16, n_groups=4, kernel_size=3)


@pytest.mark.parametrize("name, sampler", [("consistency_unet", {}), ("flow_unet", {"num_inference_steps": 2}),
                                           ("diffusion_unet", {"inference_scheduler": "dpmsolver",
                                                               "num_inference_steps": 3})])
def test_onnx_runtime_gives_pytorchs_actions(name, sampler, tmp_path):
    policy = make_policy(name, make_normalizer(make_batch()), obs_shapes=obs_shapes(), action_dim=2, **TINY,
                         **sampler).eval()
    path = export_onnx(policy, tmp_path / "chunk.onnx")
    meta = json.loads((tmp_path / "chunk.onnx.json").read_text())
    assert meta["inputs"] == {"state": [2, 5], "noise": [16, 2]} and meta["output"] == {"actions": [8, 2]}
    fn = ChunkFunction(policy)
    inputs = fn.example(batch=4, seed=3)  # another batch size than the export's: the batch axis is dynamic
    got = onnx_session(path).run(None, {"state": inputs[0].numpy(), "noise": inputs[1].numpy()})[0]
    with torch.inference_mode():
        expected = fn(*inputs).numpy()
        # the same as the policy's own sampling from the same initial noise
        window = policy.sample_action_window({"state": inputs[0]}, noise=inputs[1])[:, 1:9].numpy()
    assert got.shape == (4, 8, 2)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(expected, window, rtol=0, atol=0)


def test_samplers_that_draw_noise_are_refused():
    ddpm = make_policy("diffusion_unet", make_normalizer(make_batch()), obs_shapes=obs_shapes(), action_dim=2, **TINY)
    with pytest.raises(ValueError, match="ddpm draws noise at every step"):
        ChunkFunction(ddpm)
    chained = make_policy("consistency_unet", make_normalizer(make_batch()), obs_shapes=obs_shapes(), action_dim=2,
                          num_inference_steps=2, **TINY)
    with pytest.raises(ValueError, match="policy.num_inference_steps=1"):
        ChunkFunction(chained)


def test_export_py_checks_and_times_a_checkpoint(demos, tmp_path, capsys):
    import train
    from config import resolve

    from conftest import tiny_unet_overrides

    run = tmp_path / "run"
    train.train(resolve([f"dataset_path={demos}", "training.steps=2", "training.eval_every=0", "training.val_every=0",
                         "training.batch_size=8", "wandb.mode=disabled", "eval.n_episodes=1", "eval.max_steps=4",
                         "eval.n_videos=0", f"output_dir={run}", *tiny_unet_overrides()]))
    ckpt = run / "checkpoints" / "last.pt"
    assert export.main([f"checkpoint={ckpt}", f"output={tmp_path / 'c.onnx'}", "policy.inference_scheduler=unipc",
                        "policy.num_inference_steps=4"]) == 0
    assert "ONNX Runtime = PyTorch to" in capsys.readouterr().out and (tmp_path / "c.onnx").is_file()
    assert export.main([f"checkpoint={ckpt}", f"output={tmp_path / 'd.onnx'}", "policy.inference_scheduler=ddpm",
                        "policy.num_inference_steps=10"]) == 2
    assert "ddpm draws noise at every step" in capsys.readouterr().err
    assert export.main([f"checkpoint={ckpt}", f"output={tmp_path / 'e.onnx'}", "policy.down_dims=[4]"]) == 2
