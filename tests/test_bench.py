"""Smoke tests of the bench/ scripts: each runs as a subprocess, as a person would run it, with tiny settings
(a fraction of a second per figure, the smallest models, a few environment steps) and must exit 0 and print
its table. The figures themselves are not checked (they depend on the machine's load), only that they are
there. bench/train_cpu.sh is not run: it is a set of 45-minute train.py runs."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

NUMBER = r"[\d,]+(?:\.\d+)?"  # 1,234 or 12.5
DURATION = r"\d+(?:\.\d+)? m?s"  # 12.3 ms or 1.20 s


def bench_env(**extra) -> dict:
    """The environment of a bench run: one thread, no screen (pygame), headless MuJoCo (EGL), no W&B."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "SDL_VIDEODRIVER": "dummy",
            "MUJOCO_GL": "egl", "WANDB_MODE": "disabled", "PYGAME_HIDE_SUPPORT_PROMPT": "1",
            **{k: str(v) for k, v in extra.items()}}


def run(argv: list, timeout: float = 120, **env) -> str:
    """Run `python argv...` in the repository root; returns stdout, failing with the output's tail on exit != 0."""
    proc = subprocess.run([sys.executable, *map(str, argv)], cwd=REPO, env=bench_env(**env), capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, (f"{' '.join(map(str, argv))} exited {proc.returncode}\n"
                                  f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc.stdout


def lines_matching(out: str, pattern: str) -> list[str]:
    return [line for line in out.splitlines() if re.fullmatch(pattern, line.rstrip())]


# ------------------------------------------------------------------------------------------ bench_env.py
def test_bench_env_without_gym_pusht(tmp_path):
    # gym-pusht may or may not be installed: a module of that name that fails to import stands for "absent".
    (tmp_path / "gym_pusht.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'gym_pusht'\", name='gym_pusht')\n")
    out = run(["bench/bench_env.py", "--seconds", "0.1", "--repeats", "1"], PYTHONPATH=tmp_path)
    assert "note: gym-pusht is not installed" in out and "measuring ours only" in out
    assert "pip install --no-deps gym-pusht==0.1.8" in out
    assert lines_matching(out, r"observation\s+ours \(steps/s\)\s+gym-pusht\s+ratio")
    assert len(lines_matching(out, rf"(state|image 96x96)\s+{NUMBER}\s+-\s+-")) == 2


def test_bench_env_against_a_peer(tmp_path):
    # A stand-in gym_pusht that registers our own environment as "gym_pusht/PushT-v0": the comparison path
    # (the peer's observation types, its time limit, the ratio column) without the peer installed.
    (tmp_path / "gym_pusht.py").write_text(
        "import gymnasium as gym\n"
        "from envs.pusht import PushTEnv\n"
        "def make(obs_type, **kwargs):\n"
        "    ours = {'state': 'state', 'pixels_agent_pos': 'image'}[obs_type]\n"
        "    return PushTEnv(obs_type=ours, max_episode_steps=None, **kwargs)\n"
        "gym.register(id='gym_pusht/PushT-v0', entry_point=make)\n")
    out = run(["bench/bench_env.py", "--seconds", "0.1", "--repeats", "1"], PYTHONPATH=tmp_path)
    assert "note:" not in out
    assert len(lines_matching(out, rf"(state|image 96x96)\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}x")) == 2


# --------------------------------------------------------------------------------------- bench_loader.py
@pytest.fixture(scope="module")
def small_pusht(tmp_path_factory) -> Path:
    """Six short episodes in the published Push-T layout (keys, shapes, float32 images of whole numbers 0..255,
    zarr v2, `state` in 161-step chunks), random contents."""
    from datasets import ReplayBuffer

    path = tmp_path_factory.mktemp("bench") / "pusht_small.zarr"
    rng = np.random.default_rng(0)
    with ReplayBuffer.create(path, zarr_format=2, chunk_bytes=161 * 5 * 4) as rb:
        for T in (30, 40, 25, 35, 20, 30):
            rb.add_episode({
                "img": rng.integers(0, 256, (T, 96, 96, 3)).astype(np.float32),
                "state": rng.uniform(0, 512, (T, 5)).astype(np.float32),
                "action": rng.uniform(0, 512, (T, 2)).astype(np.float32),
                "keypoint": rng.uniform(0, 512, (T, 9, 2)).astype(np.float32),
                "n_contacts": rng.integers(0, 3, (T, 1)).astype(np.float32),
            })
    return path


def test_bench_loader(small_pusht):
    out = run(["bench/bench_loader.py", "--data", small_pusht, "--seconds", "0.1", "--repeats", "1"])
    assert "loaded 6 episodes, 180 steps into memory" in out and "(img as uint8)" in out
    assert lines_matching(out, r"Push-T\s+batch\s+ours \(0 workers\)\s+reference\s+ratio\s+ref 0 workers\s+ratio")
    assert lines_matching(out, rf"state\s+256\s+{NUMBER}/s\s+37,500/s \(1 worker\)\s+{NUMBER}x\s+62,000/s\s+{NUMBER}x")
    assert lines_matching(out, rf"image\s+64\s+{NUMBER}/s\s+680/s \(8 workers\)\s+{NUMBER}x\s+736/s\s+{NUMBER}x")


def test_bench_loader_storage(small_pusht):
    out = run(["bench/bench_loader.py", "--data", small_pusht, "--storage", "--episodes", "2"])
    assert "first 2 episodes, 70 steps" in out
    assert lines_matching(out, r"\| layout\s+\| codec\s+\|\s+stored \|\s+ratio \| write s \| decode all \|"
                               r" 1 episode \|")
    rows = lines_matching(out, rf"\| .+ \| \w+ \d \w+\s+\|\s+{NUMBER}MB \|\s+{NUMBER}x \|\s+{NUMBER} \|\s+{NUMBER} s \|"
                               rf"\s+{NUMBER} ms \|")
    assert len(rows) == 17 and rows[0].startswith("| published layout: f32, 161 steps")


# ------------------------------------------------------------------------------- bench_robomimic_env.py
@pytest.mark.skipif(importlib.util.find_spec("robosuite") is None or importlib.util.find_spec("robomimic") is None,
                    reason="robosuite / robomimic not installed")
def test_bench_robomimic_env():
    out = run(["bench/bench_robomimic_env.py", "--episodes", "1", "--steps", "2"], timeout=180)
    assert "Lift, 1 episodes x 2 steps with resets, random actions" in out
    assert lines_matching(out, r"observations\s+environment\s+steps/s\s+ratio")
    rows = lines_matching(out, rf"(low-dim|2 cameras 84x84)\s+(robomimic env|ours).*\s{NUMBER}\s+{NUMBER}x")
    assert len(rows) == 5 and rows[0].endswith("1.00x")
    for camera in ("agentview", "robot0_eye_in_hand"):
        assert f"fast_render pixel change, {camera}: mean |diff|" in out
        assert f"ours vs robomimic env, same seed, {camera}: mean |diff|" in out


# ---------------------------------------------------------------------------------------- bench_policy.py
def test_bench_policy_builtin():
    out = run(["bench/bench_policy.py", "--quick", "--threads", "1", "--models", "unet_small", "lstm_gmm",
               "--batches", "8", "--repeats", "1"])
    assert "1 thread(s)" in out and "; --quick" in out
    assert lines_matching(out, r"model\s+params\s+b8 ours\s+ref\s+speedup")
    assert lines_matching(out, rf"UNet \[64,128,256\]\s+5\.41M\s+{DURATION}\s+-\s+-")
    assert lines_matching(out, rf"LSTM-GMM 2x400, 5 modes\s+{NUMBER}M\s+{DURATION}\s+-\s+-\s+\(Tp=To=10, Ta=1\)")
    assert lines_matching(out, r"model\s+schedule\s+ours\s+per step\s+net\s+overhead\s+ref\s+speedup")
    # DDPM-100 has the reference's figure (406 ms) and a speedup; the DDIM rows have none.
    assert lines_matching(out, rf"UNet \[64,128,256\]\s+DDPM-100(\s+{DURATION}){{3}}\s+\d+%\s+406\.0 ms\s+{NUMBER}x")
    for schedule in ("DDIM-10", "DDIM-4"):
        assert lines_matching(out, rf"UNet \[64,128,256\]\s+{schedule}(\s+{DURATION}){{3}}\s+\d+%\s+-\s+-")
    assert lines_matching(out, rf"LSTM-GMM 2x400, 5 modes\s+1 action\s+{DURATION}")
    assert "Transformer" not in out and "IBC" not in out and "[256,512,1024]" not in out


def test_bench_policy_checkpoint(pusht_zip, tmp_path):
    """A checkpoint of a tiny train.py run (2 steps on 4 real Push-T episodes, one 4-step evaluation episode)."""
    run_dir = tmp_path / "run"
    run(["train.py", "task=pusht_keypoints", f"dataset_path={pusht_zip}", "training.steps=2", "training.batch_size=8",
         "training.max_train_episodes=4", "training.threads=1", "eval.n_episodes=1", "eval.n_envs=1",
         "eval.max_steps=4", "eval.n_videos=0", "wandb.mode=disabled", "policy.down_dims=[16,32]",
         "policy.diffusion_step_embed_dim=16", f"output_dir={run_dir}"])
    checkpoint = run_dir / "checkpoints" / "last.pt"
    assert checkpoint.is_file()
    out = run(["bench/bench_policy.py", "--checkpoint", checkpoint, "--quick", "--threads", "1", "--batches", "8",
               "--repeats", "1"])
    assert f"checkpoint {checkpoint}: policy diffusion_unet" in out
    assert "obs {'keypoints': (20,)}, Tp=16 To=2 Ta=8" in out
    assert lines_matching(out, rf"training step: batch 8: {DURATION}")
    assert lines_matching(out, rf"inference \(its own ddpm-100\): {DURATION} per chunk")
    for schedule in ("DDPM-100", "DDIM-10", "DDIM-4"):
        assert lines_matching(out, rf"inference {schedule}: {DURATION} per chunk \({DURATION} per step\)")


# ------------------------------------------------------------------------------------------ bench_gpu.py
def test_bench_gpu_paths_with_tiny_networks_on_the_cpu():
    """The GPU table's code paths (train step, chunks, closed-loop evaluation) run; no reference checkout here."""
    out = run(["bench/bench_gpu.py", "--device", "cpu", "--tiny", "--eval-episodes", "2"], timeout=240)
    assert lines_matching(out, r"\s+ours\s+reference\s+ratio")
    assert lines_matching(out, rf"train step, state UNet \[16, 32\], batch 8\s+{DURATION}\s+-\s+-")
    assert lines_matching(out, rf"train step, image UNet \[16, 32\] \+ ResNet-18-GN, batch 4\s+{DURATION}\s+-\s+-")
    assert lines_matching(out, rf"DDPM-100 chunk, batch 1, state\s+{DURATION}\s+-\s+-")
    assert lines_matching(out, rf"closed-loop evaluation, 2 Push-T episodes \(state\)\s+{DURATION}\s+-\s+-")
    assert "reference: no --reference PATH given" in out


# ------------------------------------------------------------------------------------ fault_catalogue.py
def test_fault_catalogue_classifies_cases(tmp_path):
    """The catalogue's --quick subset, one case per family (the full run: `python bench/fault_catalogue.py`): each
    is a named one-line error or, for the interrupted training, one line and a run that the same command finishes;
    none silent, lost, orphaned, hung or a traceback."""
    table = tmp_path / "faults.json"
    run(["bench/fault_catalogue.py", "--quick", "--json", table], timeout=600)
    result = json.loads(table.read_text())
    assert [r["case"] for r in result["rows"]] == [
        "dataset: missing path", "dataset: 8 flipped bytes in an action chunk",
        "dataset: NaN action in a validation episode", "config: training.steps=-5", "checkpoint: missing",
        "env: reset_to_state='abcde'", "interrupt: Ctrl-C in train.py, then the same command", "resume: another seed",
        "collision: two train.py on one output_dir", "degenerate: demos.pusht --episodes 0",
        "outside: wandb.mode=online without a login", "message: output_dir is a symlink loop"]
    assert result["counts"] == {"named": 11, "ok": 1, "silent": 0, "loss": 0, "orphan": 0, "hang": 0,
                                "traceback": 0}, result["rows"]


# ------------------------------------------------------------------------------------------ gpu_check.sh
def test_gpu_check_runs_on_the_cpu_with_tiny_settings(tmp_path):
    """bench/gpu_check.sh --tiny: every step of the GPU check (bench_gpu.py rows, the first command with
    device=auto) on the CPU, its table and gpu_check.json; the real run needs CUDA and prints the same rows."""
    proc = subprocess.run(["bash", "bench/gpu_check.sh", "--tiny", str(tmp_path)], cwd=REPO, env=bench_env(
        PYTHON=sys.executable), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = json.loads((tmp_path / "gpu_check.json").read_text())["rows"]
    for label in ("DDPM-100 chunk, batch 1, state", "DDIM-10 chunk, batch 1, state",
                  "flow Euler-2 chunk, batch 1, state", "consistency-1 chunk, batch 1, state",
                  "closed-loop evaluation, 2 Push-T episodes (state)"):
        assert re.fullmatch(DURATION, rows[label]), (label, rows[label])
    assert re.fullmatch(rf"{NUMBER} steps/s", rows["train step rate, state transformer (2 layers), batch 8"])
    assert "| the first command (python train.py, device=auto)" in proc.stdout
    assert json.loads((tmp_path / "first_command" / "eval.json").read_text())["n_episodes"] == 2
