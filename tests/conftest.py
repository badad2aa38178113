"""Shared fixtures and helpers. Test files import the helpers and constants with `from conftest import ...`
(pytest puts tests/ on sys.path: there is no tests/__init__.py).

The real Push-T demonstrations are never part of the repository: tests that need them read
../shared/data/pusht.zip (or the file named by $PUSHT_ZIP) and are skipped when it is absent."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame without a screen
os.environ.setdefault("WANDB_MODE", "offline")

REPO = Path(__file__).resolve().parents[1]


def pusht_zip_path() -> Path | None:
    candidates = [os.environ.get("PUSHT_ZIP"), REPO.parent / "shared" / "data" / "pusht.zip"]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    return None


@pytest.fixture(scope="session")
def pusht_zip() -> Path:
    path = pusht_zip_path()
    if path is None:
        pytest.skip("real Push-T data not found: put pusht.zip at ../shared/data/pusht.zip or set PUSHT_ZIP")
    return path


@pytest.fixture(autouse=True)
def _one_torch_thread_and_seed():
    """Tiny networks: on a 2-core machine intra-op threads mostly wait on each other (10-100x slower); and a
    fixed seed so that every test is reproducible on its own."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------ real Push-T data
@pytest.fixture(scope="session")
def pusht_lowdim(pusht_zip):
    """The published Push-T state/action/keypoint arrays in memory (images left out: they take seconds).
    Shared by the whole session: tests only read it."""
    from datasets import ReplayBuffer

    rb = ReplayBuffer.open(pusht_zip)
    mem = ReplayBuffer.from_arrays(rb.to_memory(["state", "action", "keypoint"]), rb.episode_ends, str(pusht_zip))
    rb.close()
    return mem


# ------------------------------------------------------------------------------ scripted demonstrations
@pytest.fixture(scope="session")
def demos(tmp_path_factory) -> Path:
    """Three scripted Push-T demonstrations (real physics, a real zarr file) for train.py and compare.py runs."""
    from demos.pusht import generate

    path = tmp_path_factory.mktemp("data") / "demos.zarr"
    generate(path, n_episodes=3, first_seed=10, workers=1)
    return path


# -------------------------------------------------------------------- synthetic Push-T batches (policies)
ACTION_LOW, ACTION_HIGH = 0.0, 512.0  # Push-T actions are pixel targets
# A tiny ResNet for the image tests (48x48 images).
TINY_VISION = dict(crop_shape=(40, 40), image_feature_dim=16, spatial_softmax_keypoints=8, vision_base_channels=16)


def obs_shapes(image=False) -> dict:
    """The observation shapes of make_batch's batches."""
    return {"state": (5,), **({"img": (48, 48, 3)} if image else {})}


def make_batch(batch=8, horizon=16, obs_horizon=2, image=False, seed=0) -> dict:
    """A synthetic Push-T-like batch: state (5,) per step, actions in [0, 512] on a straight line from the agent
    to the block (as seen at the last observation step); 48x48 uint8 images when `image`."""
    import numpy as np
    import torch

    g = torch.Generator().manual_seed(seed)
    state = torch.rand(batch, obs_horizon, 5, generator=g) * torch.tensor([512, 512, 512, 512, 2 * np.pi])
    steps = torch.linspace(0, 1, horizon)[None, :, None]
    start, goal = state[:, -1:, 0:2], state[:, -1:, 2:4]
    action = start + (goal - start) * steps
    obs = {"state": state}
    if image:
        obs["img"] = torch.randint(0, 256, (batch, obs_horizon, 48, 48, 3), generator=g, dtype=torch.uint8)
    return {"obs": obs, "action": action.float()}


def make_normalizer(batch, image=False):
    """A normalizer fitted on make_batch's batch; the action range is the environment's, [0, 512], so that
    "within the action range" checks are meaningful. Images get the fixed uint8 map."""
    import numpy as np

    from datasets.normalizer import Normalizer

    data = {"state": batch["obs"]["state"].reshape(-1, 5).numpy(),
            "action": np.concatenate([batch["action"].reshape(-1, 2).numpy(),
                                      [[ACTION_LOW, ACTION_LOW], [ACTION_HIGH, ACTION_HIGH]]])}
    return Normalizer.fit(data, image_keys=("img",) if image else ())


# ------------------------------------------------------------------ tiny train.py / compare.py runs
# The tiny diffusion UNet as policy.* command-line settings, without their prefix.
TINY_UNET_SETTINGS = ["down_dims=[8,16]", "diffusion_step_embed_dim=16", "kernel_size=3", "n_groups=4",
                      "inference_scheduler=ddim"]


def tiny_unet_overrides(prefix="policy.", num_inference_steps=3) -> list[str]:
    """The tiny UNet's overrides: `policy.x=...` for train.py, `diffusion_unet.policy.x=...` for compare.py."""
    return [f"{prefix}{s}" for s in [*TINY_UNET_SETTINGS, f"num_inference_steps={num_inference_steps}"]]
