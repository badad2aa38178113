"""Run configuration for train.py, eval.py and compare.py: dataclasses, presets, named recipes, `key=value`
overrides, and `resolve`, the one function that decides every value and says where it came from.

    python train.py task=pusht_image policy=diffusion_transformer training.steps=20000 policy.n_layers=4
    python train.py print_config=true            # the resolved values and their sources, then exit

A value is decided in this order, each layer over the one before:
  1. the dataclass default (TrainingConfig, EvalConfig, WandbConfig, Config; the policy's config, e.g. DiffusionConfig,
     whose __post_init__ fills network-dependent values such as the optimizer's betas: "derived")
  2. the task's presets (envs/tasks.py, `Task.presets`)
  3. the policy's presets (policy/__init__.py, `PolicySpec.presets`)
  4. the (task, policy) pair's presets (`PAIR_PRESETS` below)
  5. the named recipe (`RECIPES` below): `recipe=quickstart` for a bare `python train.py` (Push-T keypoints,
     diffusion_unet, the embedded scripted demonstrations), `recipe=presets` (nothing on top of the presets) otherwise
  6. the command line
`resolve` returns the Config, the built policy config and, for every value that differs from its dataclass default,
its source; train.py prints that table at the start and stores it in config.json, the checkpoint and the W&B config.
`policy.*` keys are the fields of the chosen policy's config dataclass. Values are Python literals (`[64,128,256]`,
`1e-4`, `None`, `true`) or bare strings; `~` and `$VARS` in paths are expanded. An unknown key, a value of the wrong
type or a policy setting its config rejects stops with a message naming it, when the command line is parsed.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from common import ConfigError, is_image_shape
from envs.tasks import TASKS, get_task
from policy import config_presets, get_spec


@dataclass
class TrainingConfig:
    steps: int = 2000  # (a bare `python train.py` takes recipe=quickstart's)
    batch_size: int = 256
    # The learning rate and its warmup are the policy's: policy.optimizer_lr, policy.lr_warmup_steps.
    grad_clip_norm: float = 10.0
    use_ema: bool = True
    ema_power: float = 0.75
    ema_max_decay: float = 0.9999
    val_ratio: float = 0.02
    max_train_episodes: int | None = None
    split_seed: int = 42
    # Periodic work, in steps; 0 = only at the last step.
    log_every: int = 50
    val_every: int = 500
    eval_every: int = 1000  # closed-loop evaluation during training (0: only at the end)
    checkpoint_every: int = 500
    num_workers: int = 0  # windows come from memory with batched indexing; workers only add IPC
    # bf16 autocast on CUDA. Off by default: on an H100 the paper UNet's step measured slower with it (58.9 ms vs
    # 40.2 ms in float32 at batch 256, launch-bound); use it where it measures faster.
    bf16: bool = False
    data_on_device: bool | None = None  # whole dataset on the GPU, batches gathered there (None: when it fits)
    compile: bool = False  # torch.compile the noise network for training (CUDA graphs on CUDA); slow to start
    threads: int | None = None  # torch CPU threads (None: torch's default, lowered to the cores free at the start)
    # torchrun only: how long a rank waits for the others at a collective (barrier, all-reduce) before the run
    # stops with an error, rank 0's closed-loop evaluations included (the others wait for them)
    dist_timeout_s: int = 1800


@dataclass
class EvalConfig:
    n_episodes: int = 50
    n_envs: int | None = None  # None: the task's (Push-T: all 50 episodes at once; robomimic: 10)
    seed: int | None = None  # None: the task's evaluation seeds (Push-T: 100000..)
    n_videos: int = 2
    video_size: int = 256
    max_steps: int | None = None  # None: the task's (Push-T: 300)
    vector: str = "sync"  # "sync" or "async" (subprocesses, spawned)


@dataclass
class WandbConfig:
    mode: str = "offline"  # "offline" (default: run files under output_dir/wandb), "online", "disabled"
    project: str = "diffusion-stack"
    entity: str | None = None
    group: str | None = None
    name: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class Config:
    task: str = "pusht_keypoints"
    policy: str = "diffusion_unet"
    dataset_path: str | None = None  # None: the embedded default (scripted demonstrations, generated once)
    output_dir: str | None = None  # None: outputs/<task>_<policy>_seed<seed>
    seed: int = 0
    recipe: str = "auto"  # a name in RECIPES; "auto": quickstart where it is defined and no dataset_path, else presets
    device: str = "auto"  # "auto" (cuda, mps, cpu), or any torch device
    resume: bool = True  # continue from output_dir/checkpoints/last.pt when it exists
    checkpoint: str | None = None  # eval.py: the checkpoint to evaluate
    default_demos: int = 100  # episodes of the embedded default dataset
    training: TrainingConfig = field(default_factory=TrainingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    policy_config: dict = field(default_factory=dict)  # `policy.*` overrides, checked against the policy's config

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Policy config fields that change how a diffusion policy samples, not its weights: eval.py may change them on a
# checkpoint, and a resumed run may differ in them.
SAMPLING_FIELDS = ("inference_scheduler", "num_inference_steps")

# Presets, applied before the command line's overrides, in this order: the task's (envs/tasks.py, each task's
# `presets`), the policy's (policy/__init__.py, each PolicySpec's `presets`), then the (task, policy) pair's below.
# Sources are the reference implementation's training configurations (its `train_*_workspace.yaml` files) for the
# same cell; the Presets table in docs/comparing.md lists each with its source and every deliberate difference.
PAIR_PRESETS: dict[tuple[str, str], dict] = {}
_IMAGE_UNET = {"policy.down_dims": [512, 1024, 2048], "policy.diffusion_step_embed_dim": 128}  # the paper's image UNet
# Push-T low-dim transformer (its own configuration in the reference): attention dropout 0.01 rather than the
# generic 0.3, weight decay 0.1 on the transformer's Linear weights. With 0.3 it learned several times slower here
# (bench/transformer_recipe.py).
_PUSHT_STATE_TRANSFORMER = {"policy.p_drop_attn": 0.01, "policy.optimizer_weight_decay": 0.1}
for _name, _task in TASKS.items():
    _image = any(is_image_shape(s) for s in _task.obs_shapes.values())
    if _image:
        PAIR_PRESETS[(_name, "diffusion_unet")] = _IMAGE_UNET
        PAIR_PRESETS[(_name, "ibc")] = {"training.batch_size": 128}  # the reference's image IBC batch
    if _name.startswith("pusht") and not _image:
        PAIR_PRESETS[(_name, "diffusion_transformer")] = _PUSHT_STATE_TRANSFORMER
    if _task.robomimic_env:
        PAIR_PRESETS[(_name, "diffusion_transformer")] = {"policy.horizon": 10}  # Tp 10 on robomimic, 16 on Push-T
    if _name == "blockpush_lowdim":  # the reference's block pushing transformer: Tp 5, To 3, Ta 1 (closed loop)
        PAIR_PRESETS[(_name, "diffusion_transformer")] = {"policy.horizon": 5, "policy.obs_horizon": 3,
                                                          "policy.action_horizon": 1}
    for _flow, _diffusion in (("flow_unet", "diffusion_unet"), ("flow_transformer", "diffusion_transformer")):
        if (_name, _diffusion) in PAIR_PRESETS:  # flow matching: the same networks, the same presets
            PAIR_PRESETS[(_name, _flow)] = PAIR_PRESETS[(_name, _diffusion)]


# Named recipes: training budgets measured for a (task, policy) pair, applied over the presets and under the command
# line. `recipe=presets` adds nothing. `quickstart` is the first command's: `python train.py` (Push-T keypoints,
# diffusion_unet, the embedded scripted demonstrations) measured to end with a working policy within 15 minutes on
# 2 CPU cores, install and demonstrations included (docs/getting_started.md): on this data the score grows with the
# number of updates, so it takes many small batches with a higher learning rate and a narrower UNet that steps
# faster. One recipe for every device: on a GPU, training.steps=12000 policy.optimizer_lr=3e-4 scored higher on the
# CPU (0.912 against 0.874) for 2,000 steps more.
RECIPES: dict[str, dict[tuple[str, str], dict]] = {
    "presets": {},
    "quickstart": {
        ("pusht_keypoints", "diffusion_unet"): {
            "training.steps": 10000, "training.batch_size": 64, "training.eval_every": 0,
            "policy.optimizer_lr": 5e-4, "policy.down_dims": [32, 64, 128], "policy.diffusion_step_embed_dim": 128},
    },
}
# What may differ between a run and the run it resumes (train.py applies the new value): a longer or shorter
# budget, when periodic work happens, the evaluation's settings, where and how fast it runs, W&B. Every other value
# (data, seed, recipe, batch, network, optimizer, EMA, ...) must be the checkpoint's: a resumed run is the same run.
RESUME_MAY_CHANGE = ("training.steps", "training.log_every", "training.val_every", "training.eval_every",
                     "training.checkpoint_every", "training.num_workers", "training.threads", "training.data_on_device",
                     "training.compile", "training.dist_timeout_s", "eval.*", "wandb.*", "device", "resume",
                     "checkpoint", "output_dir", *(f"policy.{name}" for name in SAMPLING_FIELDS))


def may_change_on_resume(key: str) -> bool:
    return key in RESUME_MAY_CHANGE or f"{key.split('.', 1)[0]}.*" in RESUME_MAY_CHANGE


def resume_differences(saved: dict, now: dict) -> list[tuple[str, object, object]]:
    """(key, saved value, new value) for every value of two flattened configurations (`section.field` and
    `policy.field` keys) that differs and may not change on resume."""
    return [(key, saved[key], now[key]) for key in sorted(set(saved) & set(now))  # keys both versions have
            if not may_change_on_resume(key) and plain(saved[key]) != plain(now[key])]


# Keys that an earlier version had, and the one key that replaced each (one key per knob).
RENAMED_KEYS = {"training.lr": "policy.optimizer_lr", "training.warmup_steps": "policy.lr_warmup_steps"}


def default_recipe(task: str, policy: str, dataset_path: str | None) -> str:
    """What `recipe=auto` means: quickstart where it is defined for (task, policy) and the data is the embedded
    default (it was measured there), else presets."""
    return "quickstart" if (task, policy) in RECIPES["quickstart"] and not dataset_path else "presets"


def recipe_values(recipe: str, task: str, policy: str) -> dict:
    """The `section.field` values of a named recipe for (task, policy); a recipe not defined for it stops here."""
    if recipe not in RECIPES:
        raise ConfigError(f"recipe={recipe!r}: unknown; known recipes: auto, {', '.join(RECIPES)}")
    if recipe == "presets":
        return {}
    if (task, policy) not in RECIPES[recipe]:
        pairs = ", ".join(f"task={t} policy={p}" for t, p in RECIPES[recipe])
        raise ConfigError(f"recipe={recipe} is defined for {pairs} only, not task={task} policy={policy}; use "
                          "recipe=presets (the presets alone)")
    return RECIPES[recipe][(task, policy)]


def presets(task: str, policy: str) -> list[tuple[str, str, object]]:
    """The (source, key, value) presets of a task and policy, in the order they apply."""
    return [*((f"task {task}", k, v) for k, v in get_task(task).presets.items()),
            *((f"policy {policy}", k, v) for k, v in get_spec(policy).presets.items()),
            *((f"pair {task}+{policy}", k, v) for k, v in PAIR_PRESETS.get((task, policy), {}).items())]


def _coerce(value, annotation, key: str):
    """Check/convert a parsed literal against a dataclass field's type annotation."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if annotation is typing.Any:
        return value
    if origin in (list, tuple) or annotation in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list like [1,2,3], got {value!r}")
        inner = args[0] if args else typing.Any
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} values, got {value!r}")
            return tuple(_coerce(v, a, key) for v, a in zip(value, args))
        items = [_coerce(v, inner, key) for v in value]
        return tuple(items) if (origin is tuple or annotation is tuple) else items
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a dict like {{'a': 1}}, got {value!r}")
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def _parse_value(text: str):
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _fields(obj) -> dict:
    return _fields_of_class(type(obj))


PATH_KEYS = ("dataset_path", "output_dir", "checkpoint")  # `~` and $VARS expanded, as a shell would


def _set(cfg: Config, key: str, raw) -> None:
    if key in RENAMED_KEYS:
        raise ConfigError(f"{key} is now {RENAMED_KEYS[key]} (one key per knob): use {RENAMED_KEYS[key]}={raw!r}")
    parts = key.split(".")
    if parts[0] == "policy" and len(parts) == 2:
        cfg.policy_config[parts[1]] = raw  # checked against the policy's config class by check_policy_config
        return
    target = cfg
    for part in parts[:-1]:
        fields = _fields(target)
        if part not in fields or not dataclasses.is_dataclass(getattr(target, part)):
            raise ConfigError(f"unknown config key {key!r}: {part!r} is not a section ({_sections()})")
        target = getattr(target, part)
    fields = _fields(target)
    name = parts[-1]
    if name not in fields or name == "policy_config" or dataclasses.is_dataclass(getattr(target, name)):
        valid = ", ".join(f for f in fields if f != "policy_config" and not dataclasses.is_dataclass(getattr(target, f)))
        where = ".".join(parts[:-1]) or "top level"
        raise ConfigError(f"unknown config key {key!r}; valid keys at {where}: {valid}")
    value = _coerce(raw, fields[name], key)
    if key in PATH_KEYS and value:
        value = os.path.expandvars(os.path.expanduser(value))
    setattr(target, name, value)


def _sections() -> str:
    return "training, eval, wandb, policy"


def plain(value):
    """A value as JSON has it (tuples become lists), so that values from different layers compare."""
    return json.loads(json.dumps(value, default=str))


def flatten(d: dict, prefix: str = "") -> dict:
    """{"training.steps": ..., "seed": ...} from a nested Config.to_dict() (its policy_config left out)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "policy_config":
            out.update(flatten(v, f"{prefix}{k}."))
        elif k != "policy_config":
            out[f"{prefix}{k}"] = v
    return out


@dataclass
class Resolved:
    """A run's configuration as `resolve` decided it.

    config: the Config (its `policy_config` holds the policy.* values the layers set);
    policy: the policy's config dataclass built from it with the task's observation shapes and action size;
    sources: {key: [(source, value), ...]} every layer that set the key, in order (the last one wins);
    print_only: `print_config=true` was given (print `table()` and exit).
    """

    config: Config
    policy: object
    sources: dict[str, list[tuple[str, object]]]
    print_only: bool = False

    def values(self) -> dict[str, tuple[object, str, list[tuple[str, object]]]]:
        """{key: (value, source, earlier (source, value) layers)} for every value that differs from its dataclass
        default or that a layer set: `policy.*` keys for the policy's config, `section.field` for the rest."""
        out = {}
        defaults = flatten(Config().to_dict())
        for key, value in flatten(self.config.to_dict()).items():
            if key in self.sources or plain(value) != plain(defaults.get(key)):
                layers = self.sources.get(key) or [("given in code", value)]
                out[key] = (value, layers[-1][0], layers[:-1])
        config_class = type(self.policy)
        task = self.config.task
        for f in dataclasses.fields(config_class):
            key, value = f"policy.{f.name}", getattr(self.policy, f.name)
            if f.name in ("obs_shapes", "action_dim"):
                out[key] = (value, f"task {task} (its observations and actions)", [])
                continue
            default = f.default if f.default is not dataclasses.MISSING else \
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None
            layers = self.sources.get(key, [])
            if layers and plain(layers[-1][1]) == plain(value):
                out[key] = (value, layers[-1][0], layers[:-1])
            elif plain(value) != plain(default):  # filled in by the config class from other fields
                out[key] = (value, f"derived by {config_class.__name__}.__post_init__ (from its other fields)", layers)
        return out

    def table(self) -> str:
        """What a person reads at the start of a run: every non-default value and where it came from."""
        rows = [(key, plain(value), source + "".join(f"; over {s}: {plain(v)}" for s, v in reversed(earlier)))
                for key, (value, source, earlier) in self.values().items()]
        width = max(len(k) for k, _, _ in rows)
        shown = [(k, json.dumps(v) if not isinstance(v, str) else v, s) for k, v, s in rows]
        vwidth = min(40, max(len(v) for _, v, _ in shown))
        lines = [f"configuration: {len(rows)} values differ from the defaults or were set (key, value, source):"]
        lines += [f"  {k:<{width}}  {v:<{vwidth}}  {s}" for k, v, s in shown]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-able: {key: {"value", "source", "over": [{"source", "value"}...]}} (config.json, checkpoints, W&B)."""
        return {key: {"value": plain(value), "source": source,
                      "over": [{"source": s, "value": plain(v)} for s, v in earlier]}
                for key, (value, source, earlier) in self.values().items()}


def resolve(argv: list[str], base: Config | None = None, use_presets: bool = True, base_source: str = "given in code",
            policy_base: dict | None = None) -> Resolved:
    """Decide every value of a run from `key=value` arguments, in the order of this module's docstring.

    `base`: start from this Config instead of the defaults (its values labelled `base_source`); `use_presets=False`
    applies the arguments alone (eval.py, on a checkpoint's config, with `policy_base` its saved policy config).
    `print_config=true` is taken here (Resolved.print_only), by every entry point. Unknown tasks, policies, recipes
    and keys, renamed keys, wrongly typed values and policy settings the policy's config rejects raise ConfigError
    naming them.
    """
    cfg = copy.deepcopy(base) if base else Config()
    sources: dict[str, list[tuple[str, object]]] = {}
    if base is not None:
        defaults = flatten(Config().to_dict())
        for key, value in flatten(base.to_dict()).items():
            if plain(value) != plain(defaults.get(key)):
                sources[key] = [(base_source, value)]
        for key, value in (policy_base or {}).items():
            sources[f"policy.{key}"] = [(base_source, value)]
    pairs, print_only = [], False
    for arg in argv:
        if "=" not in arg or arg.startswith("="):
            raise ConfigError(f"bad argument {arg!r}: expected key=value (e.g. training.steps=1000)")
        key, text = arg.split("=", 1)
        key, value = key.strip(), _parse_value(text)
        if key == "print_config":
            print_only = _coerce(value, bool, key)
        else:
            pairs.append((key, value))

    def apply(source: str, key: str, value) -> None:
        _set(cfg, key, value)
        sources.setdefault(key, []).append((source, value))

    for key, value in pairs:
        if key in ("task", "policy"):
            apply("command line", key, value)
    get_task(cfg.task), get_spec(cfg.policy)  # unknown names stop here, listing the known ones
    given = dict(pairs)
    if use_presets:
        for source, key, value in presets(cfg.task, cfg.policy):
            apply(source, key, value)
        if "recipe" in given:
            apply("command line", "recipe", given["recipe"])
        if cfg.recipe == "auto":
            dataset_path = given.get("dataset_path", cfg.dataset_path)
            data = "dataset_path given" if dataset_path else "the embedded demonstrations"
            apply(f"auto (task {cfg.task}, policy {cfg.policy}, {data})", "recipe",
                  default_recipe(cfg.task, cfg.policy, dataset_path))
        for key, value in recipe_values(cfg.recipe, cfg.task, cfg.policy).items():
            apply(f"recipe {cfg.recipe}", key, value)
    for key, value in pairs:
        if key not in ("task", "policy") and not (use_presets and key == "recipe"):
            apply("command line", key, value)
    check_values(cfg)
    if policy_base is not None:
        policy = build_policy_config(cfg, {**policy_base, **cfg.policy_config})
    else:
        policy = check_policy_config(cfg)
    return Resolved(cfg, policy, sources, print_only)


def parse_overrides(argv: list[str], cfg: Config | None = None, use_presets: bool = True) -> Config:
    """`resolve(argv, cfg, use_presets).config`: the Config alone, for code that needs no sources."""
    return resolve(argv, cfg, use_presets).config


def check_values(cfg: Config) -> None:
    """Values that parse but cannot work (a negative step count, a batch of 0, ...): stopped here, before any data
    is read or any training runs, with the key and what it takes."""
    t, e = cfg.training, cfg.eval
    rules = [
        ("training.steps", t.steps, t.steps >= 1, "a positive number of steps"),
        ("training.batch_size", t.batch_size, t.batch_size >= 1, "a positive batch size"),
        ("training.grad_clip_norm", t.grad_clip_norm, t.grad_clip_norm > 0, "a positive norm"),
        ("training.ema_power", t.ema_power, t.ema_power > 0, "a positive power"),
        ("training.ema_max_decay", t.ema_max_decay, 0 <= t.ema_max_decay < 1, "a decay in [0, 1)"),
        ("training.val_ratio", t.val_ratio, 0 <= t.val_ratio < 1, "a fraction in [0, 1)"),
        ("training.max_train_episodes", t.max_train_episodes,
         t.max_train_episodes is None or t.max_train_episodes >= 1, "a positive count (or None: all)"),
        *[(f"training.{k}", getattr(t, k), getattr(t, k) >= 0, "0 (only at the end) or a positive interval")
          for k in ("log_every", "val_every", "eval_every", "checkpoint_every")],
        ("training.num_workers", t.num_workers, t.num_workers >= 0, ">= 0"),
        ("training.threads", t.threads, t.threads is None or t.threads >= 1, "a positive count (or None)"),
        ("training.dist_timeout_s", t.dist_timeout_s, t.dist_timeout_s >= 1, "a positive number of seconds"),
        ("eval.n_episodes", e.n_episodes, e.n_episodes >= 1, "at least 1 episode"),
        ("eval.n_envs", e.n_envs, e.n_envs is None or e.n_envs >= 1, "a positive count (or None: the task's)"),
        ("eval.n_videos", e.n_videos, e.n_videos >= 0, ">= 0"),
        ("eval.video_size", e.video_size, e.video_size >= 16, "at least 16 pixels"),
        ("eval.max_steps", e.max_steps, e.max_steps is None or e.max_steps >= 1, "a positive count (or None)"),
        ("eval.vector", e.vector, e.vector in ("sync", "async"), "sync or async"),
        ("wandb.mode", cfg.wandb.mode, cfg.wandb.mode in ("offline", "online", "disabled"),
         "offline, online or disabled"),
        ("default_demos", cfg.default_demos, cfg.default_demos >= 1, "a positive number of episodes"),
        ("seed", cfg.seed, 0 <= cfg.seed < 2**32, "an integer in 0..2**32-1 (NumPy's seed range)"),
        ("training.split_seed", t.split_seed, t.split_seed >= 0, "an integer >= 0"),
        ("eval.seed", e.seed, e.seed is None or 0 <= e.seed <= 2**32 - e.n_episodes,
         "None (the task's evaluation seeds) or a first seed in 0..2**32-1-n_episodes"),
        ("dataset_path", cfg.dataset_path, cfg.dataset_path != "",
         "a path (an unset shell variable?), or no dataset_path= for the embedded default"),
        ("output_dir", cfg.output_dir, cfg.output_dir != "",
         "a path (an unset shell variable?), or no output_dir= for the default outputs/<task>_<policy>_seed<seed>"),
    ]
    for key, value, ok, expected in rules:
        if not ok:
            raise ConfigError(f"{key}={value!r}: expected {expected}")
    if cfg.output_dir and Path(cfg.output_dir).exists() and not Path(cfg.output_dir).is_dir():
        raise ConfigError(f"output_dir={cfg.output_dir!r} is a file; expected a directory (or a path to create)")
    if cfg.output_dir:
        above = next(p for p in Path(cfg.output_dir).absolute().parents if p.exists())
        if not above.is_dir():
            raise ConfigError(f"output_dir={cfg.output_dir!r} lies inside {str(above)!r}, which is a file; expected "
                              "a directory (or a path to create)")


def check_policy_config(cfg: Config, task=None):
    """The policy config that `cfg` asks for, built with the task's observation shapes and action size (`task`:
    the task bound to its dataset; default: `cfg.task`'s). parse_overrides calls it, so every `policy.*` key,
    type and value is checked when the command line is parsed, not hours later when a run reaches it."""
    spec = get_spec(cfg.policy)
    task = task or get_task(cfg.task)
    try:
        return spec.config_class(**{"obs_shapes": task.obs_shapes, "action_dim": task.action_dim,
                                    **policy_config_kwargs(cfg)})
    except (ValueError, TypeError) as e:
        if isinstance(e, ConfigError):
            raise
        given = ", ".join(f"policy.{k}={v!r}" for k, v in cfg.policy_config.items()) or "no policy.* overrides"
        raise ConfigError(f"policy {cfg.policy!r} on task {cfg.task!r} ({given}): {e}") from e


def build_policy_config(cfg: Config, values: dict):
    """The policy config from a saved dict of its fields (a checkpoint's) and `policy.*` overrides."""
    spec = get_spec(cfg.policy)
    try:
        return spec.config_class(**values)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"policy {cfg.policy!r} with {sorted(cfg.policy_config.items()) or 'its saved config'}: "
                          f"{e}") from e


def policy_config_kwargs(cfg: Config) -> dict:
    """The policy's presets and `policy.*` overrides as config keyword arguments, checked against the policy's
    config dataclass (names and types)."""
    config_class = get_spec(cfg.policy).config_class
    fields = _fields_of_class(config_class)
    out = {}
    # The policy's presets again, under the overrides: a Config built in code without parse_overrides gets them too.
    for name, value in {**config_presets(cfg.policy), **cfg.policy_config}.items():
        if name not in fields:
            raise ConfigError(
                f"unknown config key 'policy.{name}' for policy {cfg.policy!r} ({config_class.__name__}); "
                f"valid: {', '.join(sorted(fields))}"
            )
        out[name] = _coerce(value, fields[name], f"policy.{name}")
    return out


def _fields_of_class(cls) -> dict:
    """{field name: resolved type} (annotations are strings under `from __future__ import annotations`)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(cls)}


def renamed_values(d: dict) -> dict:
    """The policy config fields that an earlier version's saved config set through RENAMED_KEYS (training.lr,
    training.warmup_steps), e.g. {"optimizer_lr": 5e-4}; {} for configs of this version."""
    out = {}
    for old, new in RENAMED_KEYS.items():
        section, name = old.split(".")
        value = (d.get(section) or {}).get(name)
        if value is not None:
            out[new.split(".", 1)[1]] = value
    return out


def config_from_dict(d: dict) -> Config:
    """Rebuild a Config saved with `to_dict()` (in a checkpoint)."""
    def known(cls, values: dict) -> dict:  # keys that a newer version dropped are ignored
        names = {f.name for f in dataclasses.fields(cls)}
        return {k: v for k, v in values.items() if k in names}

    policy_config = {**renamed_values(d), **d.get("policy_config", {})}
    return Config(
        **known(Config, {k: v for k, v in d.items() if k not in ("training", "eval", "wandb", "policy_config")}),
        policy_config=policy_config,
        training=TrainingConfig(**known(TrainingConfig, d.get("training", {}))),
        eval=EvalConfig(**known(EvalConfig, d.get("eval", {}))),
        wandb=WandbConfig(**known(WandbConfig, d.get("wandb", {}))),
    )
