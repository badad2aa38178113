"""Numerical equivalence with the original implementations: our weights copied into the reference's modules,
outputs compared on the same random inputs.

    python bench/equivalence.py --reference PATH

PATH is a local checkout of the Diffusion Policy repository (github.com/real-stanford/diffusion_policy); its
`diffusion_policy` package is imported from there at run time, never copied into this repository, and needs
`einops` (`pip install einops`; not a dependency of this project). The LSTM-GMM and spatial-softmax rows compare
with robomimic 0.3.0 (installed for the robomimic tasks) and need no checkout. Without PATH, or with a wrong one,
every row that needs the checkout prints why it was not compared.

One row per comparison: component, what was compared, the largest absolute difference, the tolerance, and
PASS / FAIL; parameter-count rows compare counts (difference and tolerance 0). Exit status 1 if any row fails,
else 0 (rows that could not be compared here are not failures). Everything runs on the CPU in float32, in eval
mode unless a row says otherwise, from a fixed seed; our modules are built first and the reference's modules
receive our weights through an explicit key mapping (every reference entry must be filled, shapes equal).

  UNet         parameter counts at the paper's sizes (Push-T state [256,512,1024]; image [512,1024,2048] with a
               128-d step embedding); the paper's state UNet forward; a small one with the other FiLM branch
               (bias only) and kernel 3.
  Transformer  parameter count (the Push-T state config: 8 layers, 4 heads, 256-d, Tp 16, To 2); forward with
               the causal masks and the MLP condition encoder; forward without masks, with a 2-layer
               TransformerEncoder for the condition; the masks themselves; AdamW's weight-decay groups.
  IBC          the energy MLP (parameter count, logits); the InfoNCE loss with the same seed; the
               derivative-free optimizer in both of the reference's variants: its default path
               (`kevin_inference=False`, what its configs run; our default) and its `kevin_inference=True` path
               (IBC's original algorithm: ours with clip and argmax and the reference's constants), first
               driving the reference's own energy network so that only the optimizer differs, then end to end
               (ours against the reference's predict_action) with the same seed: the random draws (uniform
               samples, multinomial, Gaussian noise) come from the same stream.
  vision       GroupNorm layout against the reference's BatchNorm->GroupNorm rule; robomimic's SpatialSoftmax,
               and its VisualCore head (spatial softmax, flatten, linear), against ours; the ResNet-18 trunk
               itself only where torchvision is installed (robomimic's ResNet18Conv is torchvision's resnet18;
               this project does not install torchvision); the trunk's parameter count against torchvision's
               published resnet18 count less its classifier.
  LSTM-GMM     against robomimic's RNNGMMActorNetwork as robomimic's BC-RNN paper config builds it (low-dim,
               `ph`: 2x400 LSTM, 5 modes, min std 1e-4, softplus, low-noise eval): parameter count, the GMM
               (means, stds, mixture probabilities) on training sequences, their log-likelihood and the loss,
               the low-noise evaluation mixture, and the LSTM state over a 12-step rollout through
               robomimic's BC_RNN_GMM.get_action (its state restarts every 10 steps, as ours does).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.machinery
import importlib.util
import io
import re
import sys
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np
import torch
from torch import nn

from common import StackError
from datasets.normalizer import Normalizer
from policy import make_policy
from policy.ibc import derivative_free_optimize
from policy.nets import ConditionalUnet1D, ResNet18Trunk, SpatialSoftmax, TransformerForDiffusion

OBS_DIM, ACTION_DIM, TO, TP = 20, 2, 2, 16  # Push-T keypoints: 9 keypoints x 2 + agent position; (x, y) actions
# torchvision's published parameter count of resnet18 (ResNet18_Weights.IMAGENET1K_V1.meta["num_params"]), and its
# classifier (fc: 512 x 1000 + 1000), which robomimic's ResNet18Conv (and our trunk) leave out.
RESNET18_PUBLISHED, RESNET18_FC = 11_689_512, 512 * 1000 + 1000

# Tolerances (absolute). FP32: outputs of magnitude ~1 computed by the two sides with the same operations or
# with different kernels / summation orders (measured 0 to 5e-7 here, a few float32 ulps); 1e-5 leaves room for
# other CPUs and BLAS builds while a wrong weight, mask or formula shows up as 1e-3 and more. LOG_PROB: GMM
# log-likelihoods of magnitude ~10. PIXELS: IBC actions in Push-T pixels (0..512); one different random draw in
# the optimizer moves an action by far more. EXACT: counts, masks, groups.
FP32, LOG_PROB, PIXELS, EXACT = 1e-5, 1e-4, 1e-3, 0.0


class Unavailable(StackError):
    """A comparison that cannot run here (no reference checkout, robomimic or torchvision): the message says why."""


@dataclass
class Row:
    component: str
    compared: str
    diff: float | None = None
    tol: float | None = None
    reason: str = ""  # why it was not compared

    @property
    def result(self) -> str:
        if self.diff is None:
            return "n/a"
        return "PASS" if self.diff <= self.tol else "FAIL"


def max_abs(a, b) -> float:
    a, b = torch.as_tensor(a).detach().double(), torch.as_tensor(b).detach().double()
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: ours {tuple(a.shape)}, reference {tuple(b.shape)}")
    return float((a - b).abs().max()) if a.numel() else 0.0


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def copy_weights(ours: dict, ref: nn.Module, key: Callable[[str], str | list[str] | None],
                 ref_only: tuple[str, ...] = ()) -> None:
    """Load our state dict `ours` into `ref` under the names `key(name)` gives (None: not a reference entry; a
    list: the reference shares that module under several names). Every reference entry but `ref_only` must be
    filled and every shape must match, so a wrong mapping fails here, not as a small numerical difference."""
    target = ref.state_dict()
    new = {}
    for name, value in ours.items():
        names = key(name)
        for ref_name in [names] if isinstance(names, str) else (names or []):
            if ref_name not in target:
                raise KeyError(f"our {name} maps to {ref_name}, which the reference module does not have")
            if target[ref_name].shape != value.shape:
                raise ValueError(f"our {name} {tuple(value.shape)} vs reference {ref_name} "
                                 f"{tuple(target[ref_name].shape)}")
            new[ref_name] = value
    unfilled = sorted(set(target) - set(new) - set(ref_only))
    if unfilled:
        raise KeyError(f"reference entries without a counterpart in ours: {unfilled[:5]}")
    ref.load_state_dict(new, strict=False)


def fitted_normalizer(obs_key: str = "obs") -> Normalizer:
    """Ours, fitted on Push-T-like ranges (pixels in [0, 512])."""
    rng = np.random.default_rng(0)
    return Normalizer.fit({obs_key: rng.uniform(0, 512, (256, OBS_DIM)),
                           "action": rng.uniform(0, 512, (256, ACTION_DIM))})


# ------------------------------------------------------------------------------------------- the reference
class Reference:
    """The Diffusion Policy checkout's modules, imported on first use; a missing or broken checkout raises
    Unavailable with the reason (the same one for every row)."""

    MODULES: ClassVar[dict[str, str]] = {
        "unet": "diffusion_policy.model.diffusion.conditional_unet1d",
        "transformer": "diffusion_policy.model.diffusion.transformer_for_diffusion",
        "ibc": "diffusion_policy.policy.ibc_dfo_lowdim_policy",
        "normalizer": "diffusion_policy.model.common.normalizer",
        "pytorch_util": "diffusion_policy.common.pytorch_util",
    }
    # the file that holds the reference's BatchNorm -> GroupNorm replacement for the vision encoder
    HYBRID_POLICY = "diffusion_policy/policy/diffusion_unet_hybrid_image_policy.py"

    def __init__(self, path: Path | None):
        self.path = path
        self._modules: dict | None = None
        self._error: Unavailable | None = None

    def __getattr__(self, name: str):
        if name not in self.MODULES:
            raise AttributeError(name)
        if self._modules is None and self._error is None:
            try:
                self._modules = self._load()
            except Unavailable as e:
                self._error = e
        if self._error is not None:
            raise self._error
        return self._modules[name]

    def _load(self) -> dict:
        if self.path is None:
            raise Unavailable("no --reference PATH given (a checkout of real-stanford/diffusion_policy)")
        path = self.path.expanduser().resolve()
        marker = path / "diffusion_policy" / "model" / "diffusion" / "conditional_unet1d.py"
        if not marker.is_file():
            raise Unavailable(f"{path} is not a Diffusion Policy checkout (no "
                              f"{marker.relative_to(path)} there)")
        sys.path.insert(0, str(path))
        try:
            modules = {name: importlib.import_module(module) for name, module in self.MODULES.items()}
        except ModuleNotFoundError as e:
            if e.name == "einops":
                raise Unavailable("the reference's modules need einops: pip install einops (not a dependency of "
                                  "this project)") from None
            raise Unavailable(f"the reference at {path} does not import: {e}") from None
        for module in modules.values():
            if not Path(module.__file__).resolve().is_relative_to(path):
                raise Unavailable(f"{module.__name__} was imported from {module.__file__}, not from {path}")
        return modules

    def groupnorm_divisor(self) -> int:
        """channels // divisor = groups in the reference's BatchNorm -> GroupNorm replacement."""
        self.unet  # noqa: B018 (loads the checkout or raises its reason)
        source = (self.path.expanduser().resolve() / self.HYBRID_POLICY).read_text()
        match = re.search(r"num_groups\s*=\s*x\.num_features\s*//\s*(\d+)", source)
        if match is None:
            raise Unavailable(f"no BatchNorm -> GroupNorm rule (num_groups=x.num_features//N) in {self.HYBRID_POLICY}")
        return int(match[1])


# ------------------------------------------------------------------------------------------- robomimic
@contextlib.contextmanager
def torchvision_stand_in():
    """robomimic 0.3.0's model modules import torchvision when they are imported (`from torchvision import
    transforms, models`, `from torchvision.transforms import Lambda, Compose`, `torchvision.transforms.functional`)
    for its image backbones and randomizers. This project does not install torchvision. For the rows here,
    which use none of it (low-dim LSTM-GMM, SpatialSoftmax), empty stand-in modules sit in sys.modules while
    robomimic is imported and are removed afterwards. Only those import-time names are provided, and each one
    raises if it is ever called, so no comparison can run through a fake. With torchvision installed, nothing
    is stood in for."""
    if importlib.util.find_spec("torchvision") is not None:
        yield
        return

    def make_getattr(module_name: str):
        def __getattr__(attr: str):
            if attr.startswith("__"):
                raise AttributeError(attr)

            def missing(*args, **kwargs):
                raise RuntimeError(f"{module_name}.{attr} called: torchvision is not installed (import-time "
                                   f"stand-in of bench/equivalence.py)")
            return missing
        return __getattr__

    names = ["torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.models"]
    stand_ins = {}
    for name in names:
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        module.__getattr__ = make_getattr(name)
        stand_ins[name] = module
    stand_ins["torchvision"].transforms = stand_ins["torchvision.transforms"]
    stand_ins["torchvision"].models = stand_ins["torchvision.models"]
    stand_ins["torchvision.transforms"].functional = stand_ins["torchvision.transforms.functional"]
    sys.modules.update(stand_ins)
    try:
        yield
    finally:
        for name in names:
            if sys.modules.get(name) is stand_ins[name]:
                del sys.modules[name]


class Robomimic:
    """robomimic's modules, imported on first use (Unavailable if robomimic is not installed)."""

    def __init__(self):
        self._modules: dict | None = None

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if self._modules is None:
            if importlib.util.find_spec("robomimic") is None:
                raise Unavailable("robomimic is not installed (pip install --no-deps robomimic==0.3.0)")
            try:
                with torchvision_stand_in(), contextlib.redirect_stdout(io.StringIO()):
                    import robomimic
                    from robomimic.algo import algo_factory
                    from robomimic.config import config_factory
                    from robomimic.models import base_nets
                    from robomimic.scripts import generate_paper_configs
                    from robomimic.utils import obs_utils
            except ImportError as e:
                raise Unavailable(f"robomimic does not import here: {e}") from None
            self._modules = {"algo_factory": algo_factory, "config_factory": config_factory, "base_nets": base_nets,
                             "paper_configs": generate_paper_configs, "obs_utils": obs_utils,
                             "version": robomimic.__version__}
        return self._modules[name]

    def bc_rnn_gmm(self):
        """robomimic's BC-RNN-GMM algorithm as its paper configs build it for low-dim `ph` data (what the Diffusion
        Policy repository's RobomimicLowdimPolicy builds), on one 20-d low-dim key "obs" and 2-d actions."""
        pc = self.paper_configs
        config = self.config_factory(algo_name="bc")
        config = pc.modify_config_for_default_low_dim_exp(config)
        config = pc.modify_config_for_dataset(config=config, task_name="lift", dataset_type="ph",
                                              hdf5_type="low_dim", base_dataset_dir="/tmp/null", filter_key=None)
        config = pc.modify_bc_rnn_config_for_dataset(config=config, task_name="lift", dataset_type="ph",
                                                     hdf5_type="low_dim")
        with config.unlocked():
            config.observation.modalities.obs.low_dim = ["obs"]
        with contextlib.redirect_stdout(io.StringIO()):
            self.obs_utils.initialize_obs_utils_with_config(config)
            algo = self.algo_factory(algo_name=config.algo_name, config=config, obs_key_shapes={"obs": [OBS_DIM]},
                                     ac_dim=ACTION_DIM, device="cpu")
        return algo, config


# ------------------------------------------------------------------------------------------- the checks
CHECKS: list[tuple[str, str, Callable]] = []


def check(component: str, compared: str):
    """Register a comparison; the function returns (max abs difference, tolerance) or, for counts,
    ("count", ours, reference)."""
    def register(fn):
        CHECKS.append((component, compared, fn))
        return fn
    return register


class Context:
    def __init__(self, reference: Path | None):
        self.ref = Reference(reference)
        self.rm = Robomimic()
        self.cache: dict = {}

    def once(self, name: str, build: Callable):
        if name not in self.cache:
            self.cache[name] = build()
        return self.cache[name]


def seeded(seed: int):
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# ---- UNet
UNET_PAPER = {"down_dims": (256, 512, 1024), "kernel_size": 5, "n_groups": 8, "diffusion_step_embed_dim": 256,
              "cond_predict_scale": True}
UNET_IMAGE = {"down_dims": (512, 1024, 2048), "kernel_size": 5, "n_groups": 8, "diffusion_step_embed_dim": 128,
              "cond_predict_scale": True}
UNET_SMALL = {"down_dims": (64, 128, 256), "kernel_size": 3, "n_groups": 8, "diffusion_step_embed_dim": 64,
              "cond_predict_scale": False}
IMAGE_COND = TO * (64 + 2)  # Push-T image: a 64-d image feature and the 2-d agent position per step


def unet_key(name: str) -> str:
    """Ours -> the reference's ConditionalUnet1D names: block1/block2 are its blocks[0]/blocks[1] (each a
    Conv1dBlock holding `.block`), its Downsample1d/Upsample1d hold the conv as `.conv`, and the head's
    Conv1dBlock holds `.block` too."""
    name = re.sub(r"\.block([12])\.(\d)\.", lambda m: f".blocks.{int(m[1]) - 1}.block.{m[2]}.", name)
    name = re.sub(r"^(down_modules|up_modules)\.(\d+)\.2\.", r"\1.\2.2.conv.", name)
    return re.sub(r"^final_conv\.0\.(\d)\.", r"final_conv.0.block.\1.", name)


def unet_pair(ctx: Context, settings: dict, cond_dim: int, device: str = "cpu"):
    torch.manual_seed(0)
    with torch.device(device):
        ours = ConditionalUnet1D(ACTION_DIM, cond_dim, TP, **settings)
        ref = ctx.ref.unet.ConditionalUnet1D(input_dim=ACTION_DIM, global_cond_dim=cond_dim,
                                             **{**settings, "down_dims": list(settings["down_dims"])})
    if device != "meta":
        copy_weights(ours.state_dict(), ref, unet_key)
    return ours.eval(), ref.eval()


def unet_forward(ours, ref, cond_dim: int) -> float:
    g = seeded(1)
    sample = torch.randn(4, TP, ACTION_DIM, generator=g)
    t = torch.randint(0, 100, (4,), generator=g)
    cond = torch.randn(4, cond_dim, generator=g)
    with torch.no_grad():
        return max_abs(ours(sample, t, cond), ref(sample, t, global_cond=cond))


@check("UNet", "params, paper state [256,512,1024], step emb 256, cond To*20")
def _(ctx):
    ours, ref = unet_pair(ctx, UNET_PAPER, TO * OBS_DIM, device="meta")
    return "count", n_params(ours), n_params(ref)


@check("UNet", "params, paper image [512,1024,2048], step emb 128, cond To*66")
def _(ctx):
    ours, ref = unet_pair(ctx, UNET_IMAGE, IMAGE_COND, device="meta")
    return "count", n_params(ours), n_params(ref)


@check("UNet", "forward, paper state UNet, batch 4, Tp 16")
def _(ctx):
    ours, ref = ctx.once("unet_paper", lambda: unet_pair(ctx, UNET_PAPER, TO * OBS_DIM))
    return unet_forward(ours, ref, TO * OBS_DIM), FP32


@check("UNet", "forward, [64,128,256], kernel 3, FiLM bias only")
def _(ctx):
    ours, ref = unet_pair(ctx, UNET_SMALL, TO * OBS_DIM)
    return unet_forward(ours, ref, TO * OBS_DIM), FP32


# ---- Transformer
TRANSFORMER_PAPER = {"n_layers": 8, "n_heads": 4, "embed_dim": 256, "p_drop_emb": 0.0, "p_drop_attn": 0.3,
                     "causal_attn": True, "n_cond_layers": 0}
TRANSFORMER_ENCODER = {"n_layers": 4, "n_heads": 4, "embed_dim": 128, "p_drop_emb": 0.1, "p_drop_attn": 0.1,
                       "causal_attn": False, "n_cond_layers": 2}
TRANSFORMER_REF_ONLY = ("_dummy_variable", "mask", "memory_mask")  # its device marker and its (saved) masks


def transformer_pair(ctx: Context, settings: dict, device: str = "cpu"):
    torch.manual_seed(0)
    with torch.device(device), warnings.catch_warnings():
        # torch warns that the reference's TransformerEncoder (norm_first) cannot use nested tensors; ours says
        # enable_nested_tensor=False. The same computation either way.
        warnings.filterwarnings("ignore", message="enable_nested_tensor is True")
        ours = TransformerForDiffusion(ACTION_DIM, OBS_DIM, TP, TO, **settings)
        ref = ctx.ref.transformer.TransformerForDiffusion(
            input_dim=ACTION_DIM, output_dim=ACTION_DIM, horizon=TP, n_obs_steps=TO, cond_dim=OBS_DIM,
            n_layer=settings["n_layers"], n_head=settings["n_heads"], n_emb=settings["embed_dim"],
            p_drop_emb=settings["p_drop_emb"], p_drop_attn=settings["p_drop_attn"],
            causal_attn=settings["causal_attn"], time_as_cond=True, obs_as_cond=True,
            n_cond_layers=settings["n_cond_layers"])
    if device != "meta":
        copy_weights(ours.state_dict(), ref, lambda name: name, TRANSFORMER_REF_ONLY)  # the same names
    return ours.eval(), ref.eval()


def transformer_forward(ours, ref) -> float:
    g = seeded(2)
    sample = torch.randn(4, TP, ACTION_DIM, generator=g)
    t = torch.randint(0, 100, (4,), generator=g)
    cond = torch.randn(4, TO, OBS_DIM, generator=g)
    with torch.no_grad():
        return max_abs(ours(sample, t, cond), ref(sample, t, cond))


@check("Transformer", "params, paper Push-T state: 8 layers, 4 heads, 256-d")
def _(ctx):
    ours, ref = transformer_pair(ctx, TRANSFORMER_PAPER, device="meta")
    return "count", n_params(ours), n_params(ref)


@check("Transformer", "forward, paper: causal masks, MLP cond encoder")
def _(ctx):
    ours, ref = ctx.once("transformer_paper", lambda: transformer_pair(ctx, TRANSFORMER_PAPER))
    return transformer_forward(ours, ref), FP32


@check("Transformer", "forward, no masks, 2-layer cond encoder, 4x128-d")
def _(ctx):
    ours, ref = transformer_pair(ctx, TRANSFORMER_ENCODER)
    return transformer_forward(ours, ref), FP32


@check("Transformer", "causal + memory masks: entries that differ")
def _(ctx):
    ours, ref = ctx.once("transformer_paper", lambda: transformer_pair(ctx, TRANSFORMER_PAPER))
    # ours: True = may not attend; the reference's additive masks: -inf = may not attend
    differ = ((ours.self_attn_mask != torch.isneginf(ref.mask)).sum()
              + (ours.cross_attn_mask != torch.isneginf(ref.memory_mask)).sum())
    return float(differ), EXACT


@check("Transformer", "AdamW weight-decay groups: params placed differently")
def _(ctx):
    ours, ref = ctx.once("transformer_paper", lambda: transformer_pair(ctx, TRANSFORMER_PAPER))
    names = {id(p): n for n, p in ours.named_parameters()}
    ours_decay = {names[id(p)] for p in ours.optim_groups()[0]["params"]}
    ref_names = {id(p): n for n, p in ref.named_parameters()}
    ref_decay = {ref_names[id(p)] for p in ref.get_optim_groups()[0]["params"]}
    return float(len(ours_decay ^ ref_decay)), EXACT


# ---- IBC
# Our settings for each of the reference's two DFO paths: its default (kevin_inference=False, what its configs run)
# is our default; its kevin_inference=True path is IBC's original algorithm run with the reference's constants.
IBC_DFO = {False: {"inference_n_samples": 1024},
           True: {"inference_n_samples": 1024, "inference_n_iters": 5, "inference_noise_scale": 3e-2,
                  "inference_noise_shrink": 1.0, "inference_clip": True, "inference_choice": "argmax"}}


def ibc_key(ours: dict) -> dict:
    """Ours -> the reference's IbcDfoLowdimPolicy: its dense0 acts on concat(obs, action); ours splits it into
    obs_in (with the bias) and action_in (no bias); hidden.k is dense{k+1}, out is dense4."""
    mapped = {"dense0.weight": torch.cat([ours["energy.obs_in.weight"], ours["energy.action_in.weight"]], dim=1),
              "dense0.bias": ours["energy.obs_in.bias"]}
    for name, value in ours.items():
        m = re.fullmatch(r"energy\.hidden\.(\d+)\.(weight|bias)", name)
        if m:
            mapped[f"dense{int(m[1]) + 1}.{m[2]}"] = value
        m = re.fullmatch(r"energy\.out\.(weight|bias)", name)
        if m:
            mapped[f"dense4.{m[1]}"] = value
    return mapped


def ibc_pair(ctx: Context, kevin_inference: bool = False):
    """Our IBC policy (Push-T state, the paper's energy MLP, DFO with the reference's constants) and the
    reference's IbcDfoLowdimPolicy with our energy weights and our normalizer's statistics."""
    normalizer = fitted_normalizer()
    torch.manual_seed(0)
    ours = make_policy("ibc", normalizer, obs_shapes={"obs": (OBS_DIM,)}, action_dim=ACTION_DIM,
                       **IBC_DFO[kevin_inference]).eval()
    ref = ctx.ref.ibc.IbcDfoLowdimPolicy(horizon=2, obs_dim=OBS_DIM, action_dim=ACTION_DIM, n_action_steps=1,
                                         n_obs_steps=TO, dropout=0.1, train_n_neg=1024, pred_n_iter=5,
                                         pred_n_samples=1024, kevin_inference=kevin_inference)
    copy_weights(ibc_key(ours.state_dict()), ref, lambda name: name, ("_dummy_variable",))
    field = ctx.ref.normalizer.SingleFieldLinearNormalizer
    for key, ours_key in (("obs", "obs"), ("action", "action")):
        f = normalizer.fields[ours_key]
        ref.normalizer[key] = field.create_manual(
            f.scale.clone(), f.offset.clone(),
            {"min": f.min.clone(), "max": f.max.clone(), "mean": torch.zeros_like(f.min),
             "std": torch.ones_like(f.min)})
    return ours, ref.eval()


def ibc_obs(ours, batch: int = 4, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return ours.normalizer.unnormalize("obs", torch.rand(batch, TO, OBS_DIM, generator=g) * 2 - 1)


@check("IBC", "params, energy MLP 4x1024 (obs To*20 + action 2)")
def _(ctx):
    ours, ref = ctx.once("ibcFalse", lambda: ibc_pair(ctx, False))
    # the reference's energy network is its dense0..dense4; its normalizer holds our statistics as parameters
    ref_count = sum(p.numel() for name, p in ref.named_parameters() if name.startswith("dense"))
    return "count", n_params(ours.energy), ref_count


@check("IBC", "energy logits, batch 4 x 256 candidates")
def _(ctx):
    ours, ref = ctx.once("ibcFalse", lambda: ibc_pair(ctx, False))
    g = seeded(4)
    nobs = torch.randn(4, TO, OBS_DIM, generator=g)
    candidates = torch.rand(4, 256, 1, ACTION_DIM, generator=g) * 2 - 1
    with torch.no_grad():
        return max_abs(ours.logits(nobs.flatten(1), candidates), ref(nobs, candidates)), FP32


@check("IBC", "InfoNCE loss, 1024 negatives, same seed")
def _(ctx):
    ours, ref = ctx.once("ibcFalse", lambda: ibc_pair(ctx, False))
    obs = ibc_obs(ours)
    g = torch.Generator().manual_seed(5)
    action = ours.normalizer.unnormalize("action", torch.rand(4, 2, ACTION_DIM, generator=g) * 2 - 1)
    with torch.no_grad():
        torch.manual_seed(6)
        loss = ours.compute_loss({"obs": {"obs": obs}, "action": action})["loss"]
        torch.manual_seed(6)
        ref_loss = ref.compute_loss({"obs": obs, "action": action})
    return max_abs(loss, ref_loss), FP32


def dfo_on_reference_energy(ctx, kevin_inference: bool):
    ours, ref = ctx.once(f"ibc{kevin_inference}", lambda: ibc_pair(ctx, kevin_inference))
    obs = ibc_obs(ours)
    stats = ref.get_naction_stats()
    low, high = stats["min"].expand(1, -1), stats["max"].expand(1, -1)
    nobs = ref.normalizer["obs"].normalize(obs)
    cfg = ours.config
    with torch.no_grad():
        torch.manual_seed(7)
        best = derivative_free_optimize(lambda c: ref(nobs, c), low, high, obs.shape[0], 1024, cfg.inference_n_iters,
                                        cfg.inference_noise_scale, cfg.inference_noise_shrink, None,
                                        cfg.inference_clip, cfg.inference_choice)
        torch.manual_seed(7)
        expected = ref.predict_action({"obs": obs})["action"]
    return max_abs(ref.normalizer["action"].unnormalize(best), expected), PIXELS


def predict_action_end_to_end(ctx, kevin_inference: bool):
    ours, ref = ctx.once(f"ibc{kevin_inference}", lambda: ibc_pair(ctx, kevin_inference))
    obs = ibc_obs(ours)
    with torch.no_grad():
        torch.manual_seed(8)
        action = ours.predict_action({"obs": obs})
        torch.manual_seed(8)
        expected = ref.predict_action({"obs": obs})["action"]
    return max_abs(action, expected), PIXELS


@check("IBC", "DFO (our defaults) on the reference's energy vs its default path, same seed")
def _(ctx):
    return dfo_on_reference_energy(ctx, kevin_inference=False)


@check("IBC", "predict_action (our defaults) vs its default path, same seed")
def _(ctx):
    return predict_action_end_to_end(ctx, kevin_inference=False)


@check("IBC", "DFO (IBC's original variant) vs its kevin path, same seed")
def _(ctx):
    return dfo_on_reference_energy(ctx, kevin_inference=True)


@check("IBC", "predict_action (IBC's original variant) vs its kevin path, same seed")
def _(ctx):
    return predict_action_end_to_end(ctx, kevin_inference=True)


# ---- vision
def trunk_norms(trunk: nn.Module) -> list[nn.GroupNorm]:
    return [m for m in trunk.modules() if isinstance(m, nn.GroupNorm)]


@check("vision", "GroupNorm groups of the 20 norms vs the reference's C//16")
def _(ctx):
    divisor = ctx.ref.groupnorm_divisor()
    norms = trunk_norms(ResNet18Trunk(3, 64))
    if len(norms) != 20:
        return float("inf"), EXACT
    return float(max(abs(m.num_groups - m.num_channels // divisor) for m in norms)), EXACT


def spatial_softmax_pair(ctx: Context):
    """Ours and robomimic's SpatialSoftmax (32 keypoints, temperature 1, not learned, no noise, no variance: the
    settings of robomimic's image configs that the reference uses) on the 512 x 3 x 3 map of an 84 x 84 crop,
    and VisualCore's projection to 64 features."""
    torch.manual_seed(0)
    ours = SpatialSoftmax(512, 32)
    ours_out = nn.Linear(64, 64)
    ref = ctx.rm.base_nets.SpatialSoftmax(input_shape=[512, 3, 3], num_kp=32, temperature=1.0,
                                          learnable_temperature=False, output_variance=False, noise_std=0.0)
    copy_weights({"nets." + k.removeprefix("keypoint_conv."): v for k, v in ours.state_dict().items()}, ref,
                 lambda name: name, ("temperature", "pos_x", "pos_y"))
    ref_out = nn.Linear(64, 64)
    ref_out.load_state_dict(ours_out.state_dict())
    # VisualCore's layers after the backbone: pool, Flatten, Linear
    ref_head = nn.Sequential(ref, nn.Flatten(start_dim=1), ref_out)
    features = torch.randn(8, 512, 3, 3, generator=torch.Generator().manual_seed(9)) * 3
    return ours.eval(), ours_out.eval(), ref.eval(), ref_head.eval(), features


@check("vision", "SpatialSoftmax keypoints vs robomimic's, 32 kp, 512x3x3")
def _(ctx):
    ours, _, ref, _, features = ctx.once("spatial_softmax", lambda: spatial_softmax_pair(ctx))
    with torch.no_grad():
        return max_abs(ours(features), ref(features).flatten(1)), FP32


@check("vision", "SpatialSoftmax + Linear vs robomimic VisualCore's head")
def _(ctx):
    ours, ours_out, _, ref_head, features = ctx.once("spatial_softmax", lambda: spatial_softmax_pair(ctx))
    with torch.no_grad():
        return max_abs(ours_out(ours(features)), ref_head(features)), FP32


def resnet_key(name: str) -> str:
    """Our ResNet18Trunk -> torchvision's resnet18 children[:-2] in a Sequential (robomimic's ResNet18Conv.nets):
    0 conv1, 1 bn1 (a GroupNorm after the replacement), 4..7 layer1..4 with bn1/bn2/downsample."""
    name = re.sub(r"^stem\.([01])\.", r"\1.", name)
    m = re.fullmatch(r"layers\.(\d)\.(\d)\.(.+)", name)
    if m:
        rest = m[3].replace("norm1", "bn1").replace("norm2", "bn2").replace("shortcut.", "downsample.")
        return f"{4 + int(m[1])}.{m[2]}.{rest}"
    return name


@check("vision", "ResNet-18-GN trunk forward vs torchvision resnet18 + GN")
def _(ctx):
    if importlib.util.find_spec("torchvision") is None:
        raise Unavailable("not checkable here: needs torchvision (robomimic's ResNet18Conv is "
                          "torchvision.models.resnet18), which this project does not install")
    import torchvision

    divisor = ctx.ref.groupnorm_divisor()
    torch.manual_seed(0)
    ours = ResNet18Trunk(3, 64).eval()
    ref = nn.Sequential(*list(torchvision.models.resnet18().children())[:-2])  # what ResNet18Conv keeps
    ref = ctx.ref.pytorch_util.replace_submodules(
        ref, lambda m: isinstance(m, nn.BatchNorm2d),
        lambda m: nn.GroupNorm(num_groups=m.num_features // divisor, num_channels=m.num_features))
    copy_weights(ours.state_dict(), ref, resnet_key)
    images = torch.rand(2, 3, 84, 84, generator=torch.Generator().manual_seed(10)) * 2 - 1
    with torch.no_grad():
        return max_abs(ours(images), ref.eval()(images)), FP32


@check("vision", "ResNet-18 trunk params vs torchvision's published - fc")
def _(ctx):
    with torch.device("meta"):
        ours = ResNet18Trunk(3, 64)
    return "count", n_params(ours), RESNET18_PUBLISHED - RESNET18_FC


# ---- LSTM-GMM
def lstm_key(name: str) -> list[str] | None:
    """Ours -> robomimic's RNNGMMActorNetwork: the LSTM is nets.rnn.nets; the GMM heads are the ObservationDecoder's
    mean / scale / logits linears, which robomimic registers twice (nets.decoder and the RNN's per_step_net)."""
    if name.startswith("rnn."):
        return ["nets.rnn.nets." + name.removeprefix("rnn.")]
    m = re.fullmatch(r"(mean|scale|logits)_head\.(weight|bias)", name)
    if m:
        return [f"nets.decoder.nets.{m[1]}.{m[2]}", f"nets.rnn.per_step_net.nets.{m[1]}.{m[2]}"]
    return None  # the normalizer's statistics: not part of robomimic's network


def lstm_pair(ctx: Context):
    algo, config = ctx.rm.bc_rnn_gmm()
    gmm, rnn = config.algo.gmm, config.algo.rnn
    normalizer = fitted_normalizer()
    torch.manual_seed(0)
    ours = make_policy("lstm_gmm", normalizer, obs_shapes={"obs": (OBS_DIM,)}, action_dim=ACTION_DIM,
                       horizon=rnn.horizon, rnn_hidden_dim=rnn.hidden_dim, rnn_num_layers=rnn.num_layers,
                       actor_layer_dims=tuple(config.algo.actor_layer_dims), gmm_num_modes=gmm.num_modes,
                       gmm_min_std=gmm.min_std, gmm_std_activation=gmm.std_activation,
                       gmm_low_noise_eval=gmm.low_noise_eval)
    net = algo.nets["policy"]
    copy_weights(ours.state_dict(), net, lstm_key)
    return ours, algo, net


def lstm_sequences(ours, batch: int = 4, steps: int = 10, seed: int = 11):
    g = torch.Generator().manual_seed(seed)
    obs = ours.normalizer.unnormalize("obs", torch.rand(batch, steps, OBS_DIM, generator=g) * 2 - 1)
    action = ours.normalizer.unnormalize("action", torch.rand(batch, steps, ACTION_DIM, generator=g) * 1.8 - 0.9)
    return obs, action


def lstm_gmm_outputs(ctx: Context, train: bool):
    ours, _, net = ctx.once("lstm", lambda: lstm_pair(ctx))
    ours.train(train)
    net.train(train)
    obs, action = lstm_sequences(ours)
    nobs, naction = ours.normalizer.normalize("obs", obs), ours.normalizer.normalize("action", action)
    with torch.no_grad():
        means, stds, logits, _ = ours.gmm_params(ours.encode_obs({"obs": obs}, flatten=False))
        dist = net.forward_train(obs_dict={"obs": nobs})
        ours_log_prob = ours.gmm_log_prob(means, stds, logits, naction)
        ours_loss = ours.compute_loss({"obs": {"obs": obs}, "action": action})["loss"]
    components = dist.component_distribution.base_dist
    return {"means": (means, components.loc), "stds": (stds, components.scale),
            "probs": (torch.softmax(logits, -1), dist.mixture_distribution.probs),
            "log_prob": (ours_log_prob, dist.log_prob(naction)), "loss": (ours_loss, -dist.log_prob(naction).mean())}


@check("LSTM-GMM", "params vs robomimic BC-RNN-GMM (paper config, 2x400)")
def _(ctx):
    ours, _, net = ctx.once("lstm", lambda: lstm_pair(ctx))
    return "count", n_params(ours), n_params(net)


@check("LSTM-GMM", "train: GMM means, stds, mixture probs, 4 x 10 steps")
def _(ctx):
    out = lstm_gmm_outputs(ctx, train=True)
    return max(max_abs(*out[k]) for k in ("means", "stds", "probs")), FP32


@check("LSTM-GMM", "train: per-step log-likelihood and the NLL loss")
def _(ctx):
    out = lstm_gmm_outputs(ctx, train=True)
    return max(max_abs(*out["log_prob"]), max_abs(*out["loss"])), LOG_PROB


@check("LSTM-GMM", "eval (low-noise): means, stds 1e-4, mixture probs")
def _(ctx):
    out = lstm_gmm_outputs(ctx, train=False)
    return max(max_abs(*out[k]) for k in ("means", "stds", "probs")), FP32


@check("LSTM-GMM", "rollout: LSTM (h, c) over 12 steps vs get_action")
def _(ctx):
    ours, algo, _ = ctx.once("lstm", lambda: lstm_pair(ctx))
    ours.eval()
    algo.set_eval()
    obs, _ = lstm_sequences(ours, steps=12, seed=12)
    nobs = ours.normalizer.normalize("obs", obs)
    ours.reset()
    algo.reset()
    worst = 0.0
    with torch.no_grad():
        for t in range(obs.shape[1]):
            ours.predict_action({"obs": obs[:, : t + 1]})
            algo.get_action({"obs": nobs[:, t]})
            for mine, theirs in zip(ours._hidden, algo._rnn_hidden_state):
                worst = max(worst, max_abs(mine, theirs))
    return worst, FP32


# ------------------------------------------------------------------------------------------- main
NOTES = (  # (component, note printed under the table when that component has rows)
    ("IBC", ("IBC: our default derivative-free optimizer is the reference's default path (kevin_inference=False, "
             "what its configs run: 4 resample rounds with constant noise 0.03, no clipping, the action drawn from the "
             "last softmax); IBC's original variant (policy.inference_clip=true policy.inference_choice=argmax, "
             "shrinking noise) is compared with its kevin_inference=True path given the same constants.")),
)


def run_checks(ctx: Context, only: str | None = None) -> list[Row]:
    rows = []
    for component, compared, fn in CHECKS:
        if only and only.lower() not in f"{component} {compared}".lower():
            continue
        row = Row(component, compared)
        try:
            result = fn(ctx)
        except Unavailable as e:
            row.reason = str(e)
        else:
            if result[0] == "count":
                _, ours, ref = result
                row.compared = f"{compared}: {ours:,} vs {ref:,}"
                row.diff, row.tol = float(abs(ours - ref)), EXACT
            else:
                row.diff, row.tol = result
        rows.append(row)
    return rows


def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0 or x >= 1:
        return f"{x:g}"
    return f"{x:.1e}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, default=None,
                        help="a checkout of the Diffusion Policy repository (its diffusion_policy package is imported)")
    parser.add_argument("--only", default=None, help="run the rows whose component or description contains this")
    args = parser.parse_args(argv)
    ctx = Context(args.reference)
    rows = run_checks(ctx, args.only)
    try:
        rm = f"robomimic {ctx.rm.version}"
    except Unavailable as e:
        rm = str(e)
    print(f"torch {torch.__version__}, {rm}; reference: {args.reference or '-'}; float32, CPU")
    width = max(len(r.compared) for r in rows) if rows else 0
    print(f"\n{'component':12s} {'compared':{width}s} {'max |diff|':>10s} {'tolerance':>9s}  result")
    for r in rows:
        tail = r.result if not r.reason else f"n/a: {r.reason}"
        print(f"{r.component:12s} {r.compared:{width}s} {fmt(r.diff):>10s} {fmt(r.tol):>9s}  {tail}")
    counts = {k: sum(r.result == k for r in rows) for k in ("PASS", "FAIL", "n/a")}
    print(f"\n{counts['PASS']} passed, {counts['FAIL']} failed, {counts['n/a']} not compared here")
    for component, note in NOTES:
        if any(r.component == component for r in rows):
            print(f"note: {note}")
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
