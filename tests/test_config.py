"""config.resolve: one function decides every value and says where it came from; print_config=true on every entry
point; one key per knob; comparisons take one recipe for every policy; advice printed by a run runs as printed;
the run's files (config.json, history.jsonl); validation leaves training's random stream alone."""

import json
import re
import shlex
import shutil

import pytest
import torch

import compare
import eval as eval_script
import train
from common import ConfigError
from config import Config, config_from_dict, resolve

from conftest import pusht_zip_path, tiny_unet_overrides

TINY = [*tiny_unet_overrides("policy.", num_inference_steps=2), "training.batch_size=16", "training.threads=1",
        "eval.n_episodes=2", "eval.max_steps=8", "eval.n_videos=0", "wandb.mode=disabled"]


def source(resolved, key):
    return resolved.values()[key][1]


# ------------------------------------------------------------------------------ resolution and sources


def test_every_layer_is_named_as_the_source_of_its_values():
    r = resolve(["task=pusht_image", "policy=diffusion_transformer", "policy.n_layers=4", "training.steps=30"])
    assert source(r, "training.batch_size") == "task pusht_image"
    assert source(r, "policy.lr_warmup_steps") == "policy diffusion_transformer"
    assert source(r, "policy.n_layers") == source(r, "training.steps") == "command line"
    assert source(r, "policy.optimizer_betas").startswith("derived by DiffusionConfig")
    assert source(r, "recipe") == "auto (task pusht_image, policy diffusion_transformer, the embedded demonstrations)"
    pair = resolve(["policy=diffusion_transformer"])  # Push-T keypoints: the pair's attention dropout
    assert source(pair, "policy.p_drop_attn") == "pair pusht_keypoints+diffusion_transformer"
    # values equal to their defaults that no layer set are not listed
    assert "training.grad_clip_norm" not in r.values() and "policy.kernel_size" not in r.values()


def test_a_bare_run_shows_the_quickstart_recipe_over_the_policy_preset():
    r = resolve([])
    value, where, earlier = r.values()["policy.down_dims"]
    assert (list(value), where) == ([32, 64, 128], "recipe quickstart")
    assert earlier == [("policy diffusion_unet", [64, 128, 256])]
    table = r.table()
    assert "policy.down_dims" in table and "recipe quickstart; over policy diffusion_unet: [64, 128, 256]" in table
    assert json.loads(json.dumps(r.to_dict()))["training.steps"] == {"value": 10000, "source": "recipe quickstart",
                                                                    "over": []}


def test_the_command_line_wins_and_says_what_it_replaced():
    r = resolve(["policy.down_dims=[256,512,1024]"])  # the dataclass default, over the recipe's: still listed
    value, where, earlier = r.values()["policy.down_dims"]
    assert (tuple(value), where) == ((256, 512, 1024), "command line")
    assert [s for s, _ in earlier] == ["policy diffusion_unet", "recipe quickstart"]


@pytest.mark.parametrize("old, new", [("training.lr", "policy.optimizer_lr"),
                                      ("training.warmup_steps", "policy.lr_warmup_steps")])
def test_one_key_per_knob_the_old_keys_say_their_new_name(old, new):
    with pytest.raises(ConfigError, match=f"{old} is now {new} \\(one key per knob\\): use {new}=3"):
        resolve([f"{old}=3"])
    with pytest.raises(ConfigError, match="optimizer_lr must be a positive learning rate"):
        resolve(["policy.optimizer_lr=0"])


def test_a_saved_config_of_the_earlier_version_maps_its_learning_rate():
    old = Config().to_dict()
    old["training"].update(lr=5e-4, warmup_steps=7)
    cfg = config_from_dict(old)
    assert cfg.policy_config == {"optimizer_lr": 5e-4, "lr_warmup_steps": 7}


def test_paths_expand_home_and_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("RUNS", str(tmp_path / "runs"))
    cfg = resolve(["dataset_path=~/pusht.zip", "output_dir=$RUNS/a"]).config
    assert (cfg.dataset_path, cfg.output_dir) == (str(tmp_path / "pusht.zip"), str(tmp_path / "runs" / "a"))


def test_print_config_prints_the_values_and_reads_no_data(capsys, tmp_path):
    missing, run_dir = tmp_path / "no_such.zarr", tmp_path / "run"
    assert train.main([f"dataset_path={missing}", f"output_dir={run_dir}", "training.steps=5",
                       "print_config=true"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("configuration:") and re.search(rf"dataset_path +{re.escape(str(missing))} +command line", out)
    assert re.search(r"training.steps +5 +command line", out)
    assert not run_dir.exists()  # nothing created, no data read (the dataset does not even exist)
    with pytest.raises(ConfigError, match="print_config: expected true or false"):
        resolve(["print_config=maybe"])


# ------------------------------------------------------------------------------ comparisons: one recipe


@pytest.mark.parametrize("data", [[], ["dataset_path=data/pusht.zip"]])
def test_a_comparison_applies_one_recipe_to_every_policy(data, capsys, tmp_path):
    argv = ["policies=diffusion_unet,lstm_gmm,ibc", "seeds=0,1", f"output_dir={tmp_path}", *data]
    _, plan = compare.plan_runs(argv)
    recipes = {resolve(overrides).config.recipe for _, _, overrides in plan}
    assert recipes == {"presets"}  # with and without dataset_path: the same rule for every policy
    said = capsys.readouterr().err
    assert ("recipe: presets for every policy" in said) == (not data)  # said where diffusion_unet alone differs
    # the unet alone: its recipe, the same rule as train.py's
    _, alone = compare.plan_runs(["policies=diffusion_unet", f"output_dir={tmp_path}", *data])
    assert resolve(alone[0][2]).config.recipe == ("presets" if data else "quickstart")


def test_a_comparison_refuses_a_recipe_that_some_policy_lacks(tmp_path):
    with pytest.raises(compare.CompareError, match="recipe=quickstart is defined for task pusht_keypoints and "
                                                   "diffusion_unet but not lstm_gmm: a comparison applies one recipe"):
        compare.plan_runs(["policies=diffusion_unet,lstm_gmm", "recipe=quickstart", f"output_dir={tmp_path}"])


# ------------------------------------------------------------------------------ advice runs as printed


def advice(text: str) -> list[list[str]]:
    """The commands after `next:` in a run summary, each split at `&&`, comments dropped."""
    commands = []
    for line in text.split("next:", 1)[1].splitlines():
        line = line.split("#", 1)[0].strip()
        commands += [shlex.split(part) for part in line.split("&&") if part.strip()]
    return commands


def run_at_parse_level(command: list[str]) -> None:
    """A printed command with print_config=true (train, eval, compare: every value resolved, nothing trained) or,
    for datasets.download, for real."""
    from datasets import download

    assert command[0] == "python", command
    if command[1:3] == ["-m", "datasets.download"]:
        assert download.main(command[3:]) == 0, command
    elif command[1] == "train.py":
        assert train.main([*command[2:], "print_config=true"]) == 0, command
    elif command[1] == "eval.py":
        assert eval_script.main([*command[2:], "print_config=true"]) == 0, command
    elif command[1] == "compare.py":
        assert compare.main([*command[2:], "print_config=true"]) == 0, command
    else:
        raise AssertionError(f"no parse-level check for {command}")


@pytest.mark.skipif(pusht_zip_path() is None, reason="needs the real Push-T demonstrations (../shared/data/pusht.zip)")
def test_every_command_a_finished_run_suggests_runs_as_printed(demos, tmp_path, monkeypatch, capsys):
    # The published data already in the cache: `python -m datasets.download pusht` finds it there, no network.
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(pusht_zip_path(), cache / "pusht.zip")
    monkeypatch.setenv("DIFFUSION_STACK_CACHE", str(cache))
    out = tmp_path / "run"
    summary = train.train(resolve([f"dataset_path={demos}", "training.steps=2", "training.eval_every=0",
                                   f"output_dir={out}", *TINY]))
    for cfg_argv in ([f"output_dir={out}"], [f"output_dir={out}", f"dataset_path={demos}"]):  # both kinds of run
        text = train.run_summary(resolve(cfg_argv).config, summary, out, out / "checkpoints" / "last.pt",
                                 out / "checkpoints" / "best.pt")
        commands = advice(text)
        assert {c[1] for c in commands} >= {"eval.py", "compare.py"}
        for command in commands:
            run_at_parse_level(command)
    # the finished run's message: the same command again changes nothing, and says how to evaluate again
    capsys.readouterr()
    train.main([f"dataset_path={demos}", "training.steps=2", "training.eval_every=0", f"output_dir={out}", *TINY])
    said = capsys.readouterr().out
    assert "the run is complete" in said
    run_at_parse_level(shlex.split(said.split("to evaluate again, ", 1)[1].strip()))


# ------------------------------------------------------------------------------ the run's own files


def test_a_run_writes_its_config_and_history_next_to_its_checkpoints(demos, tmp_path, capsys, monkeypatch):
    import wandb

    given = []  # the config the real (offline) W&B run is started with
    real_init = wandb.init
    monkeypatch.setattr(wandb, "init", lambda **kwargs: given.append(kwargs["config"]) or real_init(**kwargs))
    out = tmp_path / "run"
    train.main([f"dataset_path={demos}", "training.steps=4", "training.log_every=1", "training.val_every=2",
                "training.eval_every=0", f"output_dir={out}", *TINY, "wandb.mode=offline"])
    printed = capsys.readouterr().out
    assert "configuration:" in printed and "training.steps" in printed  # the table, at the start of the run
    saved = json.loads((out / "config.json").read_text())
    assert (saved["task"], saved["policy"], saved["recipe"], saved["seed"]) == ("pusht_keypoints", "diffusion_unet",
                                                                                "presets", 0)
    assert saved["resolved"]["training.steps"] == {"value": 4, "source": "command line", "over": []}
    assert saved["policy_config"]["down_dims"] == [8, 16]
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert history == ckpt["history"] and ckpt["resolved"] == saved["resolved"] == given[0]["resolved"]
    assert given[0]["recipe"] == "presets" and any((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert [h["step"] for h in history if "train/loss" in h] == [1, 2, 3, 4]
    assert [h["step"] for h in history if "val/loss" in h] == [2, 4]
    assert [h["step"] for h in history if "eval/mean_max_reward" in h] == [4]
    assert json.loads((out / "eval.json").read_text())["recipe"] == "presets"


# ------------------------------------------------------------------------------ validation and random state


def test_validation_leaves_the_training_random_stream_where_it_was(demos, monkeypatch):
    """The global torch RNG (CPU, and CUDA where present) is the same before and after a validation pass, and no
    GPU's generator is reseeded (torch.manual_seed would reseed every GPU: on a GPU each validation pass would
    rewind training's noise stream)."""
    reseeded = []
    real = torch.cuda.manual_seed_all
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: (reseeded.append(seed), real(seed)))
    resolved = resolve([f"dataset_path={demos}", *TINY])
    run = train.setup(resolved)
    torch.manual_seed(123)
    reseeded.clear()
    before = torch.get_rng_state()
    cuda_before = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    first = train.validation_loss(run.policy, run.val_set or run.train_set, run.cfg, run.device)
    assert torch.equal(torch.get_rng_state(), before)
    if torch.cuda.is_available():
        assert all(torch.equal(a, b) for a, b in zip(torch.cuda.get_rng_state_all(), cuda_before))
    assert reseeded == [], "validation reseeded every GPU's generator"
    torch.rand(5)  # the training stream moves on; validation draws the same noise again
    assert train.validation_loss(run.policy, run.val_set or run.train_set, run.cfg, run.device) == first


# ------------------------------------------------------------------------------ checkpoints of the earlier version


def test_a_checkpoint_of_the_earlier_version_still_evaluates_and_resumes(demos, tmp_path):
    """Before one key per knob, a run's learning rate was training.lr (rewriting the optimizer's groups) and its
    checkpoint had no recipe and no resolved values: such a checkpoint evaluates, and resumes with the new key."""
    run_dir = tmp_path / "old"
    common = [f"dataset_path={demos}", "training.eval_every=0", "training.checkpoint_every=2", f"output_dir={run_dir}",
              *TINY]
    train.train(resolve([*common, "training.steps=2", "policy.optimizer_lr=5e-4"]))
    last = run_dir / "checkpoints" / "last.pt"
    ckpt = torch.load(last, weights_only=False)
    ckpt["config"]["training"].update(lr=5e-4, warmup_steps=None)
    ckpt["config"].pop("recipe")
    ckpt["config"]["policy_config"] = {k: v for k, v in ckpt["config"]["policy_config"].items() if k != "optimizer_lr"}
    ckpt["policy_config"]["optimizer_lr"] = 1e-4  # what the earlier version saved: the policy's default
    ckpt.pop("resolved")
    torch.save(ckpt, last)
    (run_dir / "eval.json").unlink()  # not finished: it can resume
    assert eval_script.main([f"checkpoint={last}", "n_episodes=1", "eval.max_steps=4",
                             f"output_dir={tmp_path / 'eval'}"]) == 0
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["n_episodes"] == 1
    with pytest.raises(Exception, match="optimizer_lr"):  # another learning rate than the one it trained with
        train.train(resolve([*common, "training.steps=4"]))
    summary = train.train(resolve([*common, "training.steps=4", "policy.optimizer_lr=5e-4"]))
    assert summary["step"] == 4


def test_the_advice_for_a_robomimic_task_without_data_runs_as_printed(monkeypatch, tmp_path, capsys):
    """`python train.py task=lift_lowdim` names the commands that make its data; the scripted-demonstration command
    parses as printed (its generator is replaced, after parsing, by a recorder: 200 episodes take minutes)."""
    import demos.robomimic as scripted

    monkeypatch.chdir(tmp_path)
    assert train.main(["task=lift_lowdim", "wandb.mode=disabled", f"output_dir={tmp_path / 'run'}"]) == 2
    said = capsys.readouterr().err
    commands = [shlex.split(c) for c in re.findall(r"`(python [^`]+)`", said)]
    assert [c[2] for c in commands] == ["demos.robomimic_hdf5", "datasets.download", "demos.robomimic"], said
    from datasets.download import PUBLISHED

    assert commands[1][3:] == ["robomimic/lift/ph/low_dim"] and commands[1][3] in PUBLISHED
    calls = []
    monkeypatch.setattr(scripted, "generate", lambda *args, **kwargs: calls.append(args) or {
        "demos": 0, "attempts": 0, "success_rate": 0.0, "mean_length": 0.0, "seconds": 0.0, "path": args[1],
        "paths": [args[1]], "writer": kwargs["writer"]})
    assert scripted.main(commands[2][3:]) == 0
    assert calls[0][:3] == ("lift", "outputs/data/lift.hdf5", 200)
    assert train.main(["task=transport_lowdim", "wandb.mode=disabled", f"output_dir={tmp_path / 'run2'}"]) == 2
    said = capsys.readouterr().err
    assert "demos.robomimic " not in said  # no scripted demonstrator for Transport: not advised
    assert "python -m datasets.download robomimic/transport/ph/low_dim" in said
