"""compare.py: run two policies over two seeds, report from the run dirs' plain files and from W&B's API."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

import compare
import runlib
import train

from conftest import REPO, tiny_unet_overrides

POLICIES, SEEDS, GROUP = ["diffusion_unet", "lstm_gmm"], [0, 1], "tiny_compare"
TINY = [
    "task=pusht_keypoints", "training.batch_size=16", "training.threads=1", "training.steps=4",
    "training.eval_every=2", "training.val_every=100", "eval.n_episodes=2", "eval.max_steps=8", "eval.n_videos=0",
    "wandb.mode=offline",
    # policy.* fields differ between policies: scoped to the policy they belong to
    *tiny_unet_overrides("diffusion_unet.policy.", num_inference_steps=2),
    "lstm_gmm.policy.rnn_hidden_dim=16", "lstm_gmm.policy.rnn_num_layers=1",
]
RUN_FILES = ("config.json", "history.jsonl", "eval.json")  # all the report reads of a run dir


@pytest.fixture(scope="module")
def compared(demos, tmp_path_factory) -> tuple[Path, list[str]]:
    """The four tiny runs, trained by `compare.py run`, which also writes the report into their parent dir."""
    out = tmp_path_factory.mktemp("compare") / GROUP
    argv = ["run", f"policies={','.join(POLICIES)}", f"seeds={','.join(map(str, SEEDS))}", f"group={GROUP}",
            f"output_dir={out}", f"dataset_path={demos}", *TINY]
    assert compare.main(argv) == 0
    return out, argv


def history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def evaluations(run_dir: Path) -> tuple[list[int], list[float], list[float]]:
    """Steps, scores and success rates of a run's evaluations, straight from its history.jsonl."""
    evals = [h for h in history(run_dir) if "eval/mean_max_reward" in h]
    return [h["step"] for h in evals], [h["eval/mean_max_reward"] for h in evals], \
        [h["eval/success_rate"] for h in evals]


def copy_run_files(src: Path, dst: Path) -> Path:
    """A run dir holding only what the report reads (no checkpoints, no W&B files)."""
    dst.mkdir(parents=True)
    for name in RUN_FILES:
        shutil.copy(src / name, dst / name)
    return dst


def test_report_matches_the_runs_histories_and_eval_json(compared):
    out, _ = compared
    report = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    [group] = report["groups"]
    assert (group["group"], group["task"]) == (GROUP, "pusht_keypoints")
    # One recipe for every run (compare.py run passes recipe=; with dataset_path= it is presets): no warning.
    assert group["mixed_recipes"] is False and group["recipes"] == {p: ["presets"] for p in POLICIES}
    assert "different recipes" not in md
    for run in report["runs"]:  # every run says how long it took, on what, and with which recipe
        assert run["wall_s"] > 0 and run["hardware"].startswith("CPU ") and "cores" in run["hardware"]
        assert run["recipe"] == "presets"
    assert "| wall time | hardware |" in md and " min | CPU " in md
    assert "| policy | recipe | seeds |" in md and "| group | task | policy | recipe | seed |" in md
    rows = {row["policy"]: row for row in group["policies"]}
    assert set(rows) == set(POLICIES)
    for policy in POLICIES:
        per_seed = {k: [] for k in ("score_max", "score_last10", "success_max", "success_last10", "final_score")}
        for seed in SEEDS:
            run_dir = out / f"{policy}_seed{seed}"
            steps, scores, successes = evaluations(run_dir)
            assert steps == [2, 4]  # every eval_every steps, then the final evaluation
            # history.jsonl is faithful: its evaluations are those of the checkpoint's history (only the test loads it)
            ckpt_history = runlib.load_checkpoint(run_dir / "checkpoints" / "last.pt")["history"]
            assert [h for h in history(run_dir) if "eval/mean_max_reward" in h] == \
                   [h for h in ckpt_history if "eval/mean_max_reward" in h]
            final = json.loads((run_dir / "eval.json").read_text())
            assert final["step"] == 4 and scores[-1] == final["mean_max_reward"]
            per_seed["score_max"].append(max(scores))
            per_seed["score_last10"].append(sum(scores[-10:]) / len(scores[-10:]))
            per_seed["success_max"].append(max(successes))
            per_seed["success_last10"].append(sum(successes[-10:]) / len(successes[-10:]))
            per_seed["final_score"].append(final["mean_max_reward"])
            [run] = [r for r in report["runs"] if (r["policy"], r["seed"]) == (policy, seed)]
            assert run["evals"] == [list(e) for e in zip(steps, scores, successes)] and run["steps"] == 4
            assert (run["wall_s"], run["hardware"]) == (final["wall_s"], final["hardware"])
        row = rows[policy]
        assert (row["n_seeds"], row["seeds"], row["recipes"]) == (2, SEEDS, ["presets"])
        for key, values in per_seed.items():
            assert row[key]["per_seed"] == values, (policy, key)
            assert row[key]["mean"] == float(np.mean(values)), (policy, key)
            assert row[key]["std"] == float(np.std(values)), (policy, key)
        cells = " | ".join(f"{np.mean(per_seed[k]):.3f} ± {np.std(per_seed[k]):.3f}" for k in per_seed)
        assert f"| {policy} | presets | 2 (0, 1) | {cells} | 2 | 4 |" in md
        # The curve: mean, min and max over seeds at each evaluation step.
        scores = np.array([evaluations(out / f"{policy}_seed{s}")[1] for s in SEEDS])
        assert row["curve"]["step"] == [2, 4]
        assert row["curve"]["score"]["mean"] == [float(v) for v in scores.mean(axis=0)]
        assert row["curve"]["score"]["min"] == list(scores.min(axis=0))
        assert row["curve"]["score"]["max"] == list(scores.max(axis=0))


def test_report_png_is_a_valid_image(compared):
    out, _ = compared
    png = out / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0  # something was drawn


def test_report_reads_the_three_plain_files_without_torch(compared, tmp_path):
    """`compare.py report` on run dirs holding only config.json, history.jsonl and eval.json, in a fresh process:
    the same numbers as the report `run` wrote, and torch is never imported."""
    out, _ = compared
    for run_dir in sorted(out.glob("*_seed*")):
        copy_run_files(run_dir, tmp_path / "runs" / run_dir.name)
    script = ("import sys, compare\n"
              f"rc = compare.main(['report', {str(tmp_path / 'runs')!r}, '--out', {str(tmp_path / 'report')!r}])\n"
              "assert 'torch' not in sys.modules, 'the report imported torch'\n"
              "sys.exit(rc)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    from_files = json.loads((tmp_path / "report" / "report.json").read_text())
    local = json.loads((out / "report.json").read_text())
    assert from_files["groups"] == local["groups"] and not from_files["unfinished"]
    assert "history.jsonl" in from_files["source"]
    key = lambda r: (r["policy"], r["seed"])  # noqa: E731
    for a, b in zip(sorted(from_files["runs"], key=key), sorted(local["runs"], key=key), strict=True):
        assert {k: v for k, v in a.items() if k != "source"} == {k: v for k, v in b.items() if k != "source"}


def test_finished_runs_are_collected_not_trained_again(compared, monkeypatch, capsys):
    out, argv = compared
    before = (out / "report.json").read_text()

    def no_training(cfg):
        raise AssertionError(f"trained {cfg.output_dir} again")

    monkeypatch.setattr(train, "train", no_training)
    assert compare.main(argv) == 0
    assert json.loads((out / "report.json").read_text())["groups"] == json.loads(before)["groups"]
    # A finished run with another config is not silently reused.
    assert compare.main([*argv, "training.steps=6"]) == 2
    assert "training.steps: 4 (saved) vs 6 (requested)" in capsys.readouterr().err


def test_runs_that_are_not_finished_are_listed_with_the_reason(compared, tmp_path, capsys):
    out, _ = compared
    runs = tmp_path / "runs"
    copy_run_files(out / "diffusion_unet_seed0", runs / "finished")
    old = copy_run_files(out / "diffusion_unet_seed1", runs / "old")  # as an earlier train.py left it
    (old / "history.jsonl").unlink()
    (old / "checkpoints").mkdir()
    (old / "checkpoints" / "last.pt").write_bytes(b"not read by the report")
    extended = copy_run_files(out / "lstm_gmm_seed0", runs / "extended")  # trained on after its eval.json
    with open(extended / "history.jsonl", "a") as f:
        f.write(json.dumps({"step": 6, "train/loss": 0.5}) + "\n")
    (copy_run_files(out / "lstm_gmm_seed1", runs / "stopped") / "eval.json").unlink()
    assert compare.main(["report", str(runs), "--out", str(tmp_path / "report")]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert [r["source"] for r in report["runs"]] == [compare.shown(runs / "finished")]
    why = {Path(u.split(": ", 1)[0]).name: u.split(": ", 1)[1] for u in report["unfinished"]}
    assert set(why) == {"old", "extended", "stopped"}
    assert why["old"].startswith("no history.jsonl: written before") and "re-run" in why["old"]
    assert why["extended"].startswith("eval.json is from step 4 but history.jsonl goes to step 6")
    assert why["stopped"] == "no eval.json: not finished (history.jsonl goes to step 4)"
    md = (tmp_path / "report" / "report.md").read_text()
    assert all(f"- {u}" in md for u in report["unfinished"])
    assert compare.read_local_run(old) is None and compare.read_local_run(runs / "finished") is not None


def test_a_malformed_history_line_names_the_file_and_line(compared, tmp_path, capsys):
    out, _ = compared
    run_dir = copy_run_files(out / "lstm_gmm_seed0", tmp_path / "run")
    lines = (run_dir / "history.jsonl").read_text().splitlines()
    lines.insert(2, '{"step": 3, "train/loss": ')
    (run_dir / "history.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(compare.CompareError, match=r"history\.jsonl, line 3: not valid JSON"):
        compare.collect_local([run_dir])
    assert compare.main(["report", str(run_dir), "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "run/history.jsonl, line 3" in err and len(err.splitlines()) == 1


def test_runs_of_one_group_with_different_recipes_are_flagged(compared, tmp_path, capsys):
    """A group whose policies took different recipes is not a comparison on equal terms: report.md, report.json
    and stderr say so."""
    out, _ = compared
    for run_dir in sorted(out.glob("*_seed*")):
        copy = copy_run_files(run_dir, tmp_path / "runs" / run_dir.name)
        if run_dir.name.startswith("diffusion_unet"):
            saved = json.loads((copy / "config.json").read_text())
            (copy / "config.json").write_text(json.dumps({**saved, "recipe": "quickstart"}))
    assert compare.main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 0
    warning = (f"warning: runs of group {GROUP}, task pusht_keypoints use different recipes "
               "(diffusion_unet: quickstart; lstm_gmm: presets): not a comparison on equal terms")
    assert warning in capsys.readouterr().err
    md = (tmp_path / "report" / "report.md").read_text().splitlines()
    heading = md.index(f"## group `{GROUP}`, task `pusht_keypoints`")
    assert md[heading + 2] == warning and md[heading + 4].startswith("| policy | recipe |")  # atop the table
    assert any(line.startswith("| diffusion_unet | quickstart | 2 (0, 1) |") for line in md)
    [group] = json.loads((tmp_path / "report" / "report.json").read_text())["groups"]
    assert group["mixed_recipes"] is True
    assert group["recipes"] == {"diffusion_unet": ["quickstart"], "lstm_gmm": ["presets"]}


# ------------------------------------------------------------------------------------- W&B's public API


class StandInRun:
    """What compare.py reads of a `wandb.apis.public.Run`, built from a run dir's files as train.py logs them to W&B:
    .id, .group, .config (the Config fields plus the run's info), .summary (final/*, run/*) and
    .scan_history(keys=...) (W&B keeps one history row per `_step`, and returns only rows holding every key)."""

    def __init__(self, run_dir: Path, run_id: str, finished: bool = True):
        saved, final = (json.loads((run_dir / name).read_text()) for name in ("config.json", "eval.json"))
        self.id, self.group = run_id, saved["group"]
        self.config = {**saved["config"], "resolved": saved["resolved"]}
        self.summary = {"_step": final["step"]}
        if finished:
            self.summary |= {"final/mean_max_reward": final["mean_max_reward"],
                             "final/success_rate": final["success_rate"], "run/wall_s": final["wall_s"],
                             "run/hardware": final["hardware"], "run/recipe": final["recipe"]}
        self.rows = {}
        for entry in history(run_dir):
            self.rows.setdefault(entry["step"], {"_step": entry["step"]}).update(
                {k: v for k, v in entry.items() if k != "step"})
        self.scanned = []

    def scan_history(self, keys=None):
        self.scanned.append(keys)
        return [{k: row[k] for k in keys} if keys else dict(row) for _, row in sorted(self.rows.items())
                if not keys or all(k in row for k in keys)]


class StandInApi:
    """Stands in for `wandb.Api` (W&B's network service, which tests cannot reach): `runs(path, filters=...)` over a
    fixed set of runs, applying the one filter compare.py sends (`{"group": {"$in": [...]}}`) as the server would."""

    projects: dict[str, list[StandInRun]] = {}
    calls: list[tuple[str, dict]] = []

    def runs(self, path, filters=None):
        StandInApi.calls.append((path, filters))
        if path not in self.projects:
            raise ValueError(f"Could not find project {path}")
        wanted = (filters or {}).get("group", {}).get("$in")
        return [r for r in self.projects[path] if wanted is None or r.group in wanted]


@pytest.fixture
def wandb_project(compared, monkeypatch, tmp_path):
    """The four runs as W&B holds them in project `ent/proj`, plus an unfinished run of another group."""
    import wandb

    out, _ = compared
    runs = [StandInRun(out / f"{p}_seed{s}", f"{p}-{s}-abc123") for p in POLICIES for s in SEEDS]
    other = copy_run_files(out / "lstm_gmm_seed0", tmp_path / "other")
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "group": "other"}))
    runs.append(StandInRun(other, "killed-1", finished=False))
    monkeypatch.setattr(StandInApi, "projects", {"ent/proj": runs})
    monkeypatch.setattr(StandInApi, "calls", [])
    monkeypatch.setattr(wandb, "Api", StandInApi)
    return runs


def test_wandb_api_gives_the_same_numbers_as_the_run_dirs(compared, wandb_project, tmp_path):
    out, _ = compared
    assert compare.main(["report", "--wandb", "ent/proj", "--group", GROUP, "--out", str(tmp_path)]) == 0
    assert StandInApi.calls == [("ent/proj", {"group": {"$in": [GROUP]}})]
    # the evaluations come from the history rows holding them, W&B's step key included
    assert all(r.scanned == [["_step", "eval/mean_max_reward", "eval/success_rate"]] for r in wandb_project[:4])
    from_wandb = json.loads((tmp_path / "report.json").read_text())
    local = json.loads((out / "report.json").read_text())
    assert from_wandb["source"] == "W&B project `ent/proj` (W&B's public API)" and not from_wandb["unfinished"]
    assert from_wandb["groups"] == local["groups"]  # every number, per seed and per step, and the recipes
    assert sorted(r["source"] for r in from_wandb["runs"]) == sorted(f"ent/proj/{r.id}" for r in wandb_project[:4])
    key = lambda r: (r["policy"], r["seed"])  # noqa: E731
    for a, b in zip(sorted(from_wandb["runs"], key=key), sorted(local["runs"], key=key), strict=True):
        assert {k: v for k, v in a.items() if k not in ("source", "run_id")} == \
               {k: v for k, v in b.items() if k not in ("source", "run_id")}
    # Without --group: every run of the project; the one without a final summary is listed, not reported.
    runs, unfinished = compare.collect_wandb_api("ent/proj", None)
    assert StandInApi.calls[-1] == ("ent/proj", {})
    assert len(runs) == 4 and unfinished == ["ent/proj/killed-1: no final evaluation in its summary"]


@pytest.mark.parametrize("where, kind, message", [
    ("init", "UsageError", "No API key configured. Use `wandb login` to log in."),  # what wandb 0.31 says
    ("runs", "CommError", "Failed to verify credentials with https://api.wandb.ai:\n connection refused"),
    ("runs", "ValueError", "Invalid project path: ent/proj/extra"),
])
def test_a_failing_wandb_api_is_one_line_naming_the_project(monkeypatch, tmp_path, capsys, where, kind, message):
    import wandb

    exception = (ValueError if kind == "ValueError" else getattr(wandb.errors, kind))(message)

    class FailingApi:
        def __init__(self):
            if where == "init":
                raise exception

        def runs(self, path, filters=None):
            raise exception

    monkeypatch.setattr(wandb, "Api", FailingApi)
    assert compare.main(["report", "--wandb", "ent/proj", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: W&B project ent/proj: cannot read it through W&B's API (")
    assert " ".join(message.split()) in err and "`wandb login`" in err and "report DIR" in err
    assert not (tmp_path / "report.json").exists()


@pytest.mark.parametrize("argv, message", [
    (["--out", "x"], "give run dirs .or folders above them., or --wandb ENTITY/PROJECT"),
    (["runs", "--wandb", "ent/proj", "--out", "x"], "not both"),
])
def test_report_needs_run_dirs_or_a_wandb_project(argv, message, capsys):
    with pytest.raises(compare.CompareError, match=message):
        compare.command_report(argv)
    assert compare.main(["report", *argv]) == 2 and "error: report: give run dirs" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- run's arguments


@pytest.mark.parametrize("argv, message", [
    (["seeds=0"], "policies= is required"),
    (["policies=diffusion_unet,bc", "group=x"], "unknown policies \\['bc'\\]"),
    (["policies=diffusion_unet", "policy=ibc", "group=x"], "policy= is set per run"),
    (["policies=diffusion_unet", "lstm_gmm.policy.rnn_hidden_dim=8", "group=x"], "not in policies="),
    (["policies=diffusion_unet", "seeds=a", "group=x"], "seeds= must be integers"),
    (["policies=diffusion_unet", "recipe=nope", "group=x"], "recipe=nope: unknown"),
    (["policies=diffusion_unet,lstm_gmm", "samplers=ddim-4", "group=x"],
     "samplers= applies to diffusion-type .*lstm_gmm"),
    (["policies=diffusion_unet", "samplers=ddim-x", "group=x"], "'ddim-x' is not <scheduler>"),
    (["policies=diffusion_unet", "samplers=ddim-4,euler-2", "group=x"],
     "euler-2 is not a sampler of diffusion_unet: inference_scheduler must be one of ddpm, ddim"),
    (["policies=flow_unet", "samplers=euler-0", "group=x"], "euler-0 is not a sampler of flow_unet"),
])
def test_bad_run_arguments_say_what_is_wrong(argv, message):
    with pytest.raises(compare.CompareError, match=message):
        compare.plan_runs(argv)


def test_the_default_group_names_task_data_and_recipe(tmp_path):
    out, plan = compare.plan_runs(["policies=diffusion_unet,lstm_gmm", f"dataset_path={tmp_path / 'demos.zarr'}"])
    assert out == REPO / "outputs" / "compare" / "pusht_keypoints_demos_presets"
    assert all("recipe=presets" in o and "wandb.group=pusht_keypoints_demos_presets" in o for _, _, o in plan)


def test_policy_scoped_overrides_reach_only_their_policy(tmp_path):
    out, plan = compare.plan_runs(["policies=diffusion_unet,lstm_gmm", "seeds=3", f"output_dir={tmp_path}",
                                   "training.steps=9", "lstm_gmm.policy.rnn_hidden_dim=8"])
    assert [(p, s) for p, s, _ in plan] == [("diffusion_unet", 3), ("lstm_gmm", 3)]
    unet, lstm = (o for _, _, o in plan)
    assert "policy.rnn_hidden_dim=8" in lstm and "policy.rnn_hidden_dim=8" not in unet
    assert f"output_dir={tmp_path / 'lstm_gmm_seed3'}" in lstm and "wandb.group=" + tmp_path.name in lstm


def test_parallel_runs_are_the_same_runs_with_a_log_each(compared, demos, tmp_path, capsys):
    """parallel=2: each run a train.py process of its own (one CPU thread each here) printing into its train.log;
    the runs (weights, evaluations) are those trained one after the other in this process, and so is the report."""
    import torch

    out, _ = compared
    argv = ["run", "policies=lstm_gmm", f"seeds={','.join(map(str, SEEDS))}", f"group={GROUP}",
            f"output_dir={tmp_path}", f"dataset_path={demos}", "parallel=2",
            *[a for a in TINY if not a.startswith("diffusion_unet.")]]
    assert compare.main(argv) == 0
    printed = capsys.readouterr().out
    assert "training 2 runs, 2 at a time" in printed
    for seed in SEEDS:
        run_dir, alone = tmp_path / f"lstm_gmm_seed{seed}", out / f"lstm_gmm_seed{seed}"
        assert f"log: {run_dir / 'train.log'}" in printed and f"done: {run_dir}" in printed
        log = (run_dir / "train.log").read_text()
        assert "# compare.py: python train.py" in log and "final: mean max reward" in log
        a, b = (runlib.load_checkpoint(d / "checkpoints" / "last.pt")["policy"] for d in (run_dir, alone))
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert evaluations(run_dir) == evaluations(alone)
    report = json.loads((tmp_path / "report.json").read_text())
    rows = {row["policy"]: row for row in json.loads((out / "report.json").read_text())["groups"][0]["policies"]}
    assert report["groups"][0]["policies"] == [rows["lstm_gmm"]]


# ------------------------------------------------------------------------------------- samplers side by side


def test_samplers_of_one_checkpoint_go_side_by_side_in_report_and_plot(demos, tmp_path, capsys):
    """`run ... samplers=`: each run's checkpoint evaluated under those samplers; the report's table holds the same
    numbers as eval.py's samplers.json, against the most-passes sampler, and samplers.png is drawn."""
    out = tmp_path / "sampled"
    tiny = [a for a in TINY if not a.startswith(("lstm_gmm.", "diffusion_unet."))] + \
        tiny_unet_overrides("diffusion_unet.policy.", num_inference_steps=2)
    assert compare.main(["run", "policies=diffusion_unet", "seeds=0", f"output_dir={out}", f"dataset_path={demos}",
                         "samplers=ddim-4,dpmsolver-2,ddpm-8", *tiny]) == 0
    table = json.loads((out / "diffusion_unet_seed0" / "eval" / "samplers" / "samplers.json").read_text())
    assert [(r["sampler"], r["steps"]) for r in table["rows"]] == [("ddim", 4), ("dpmsolver", 2), ("ddpm", 8)]
    report = json.loads((out / "report.json").read_text())
    assert report["samplers"][0]["rows"] == table["rows"]
    text = (out / "report.md").read_text()
    ddim = table["rows"][0]
    vs = ddim["mean_max_reward"] - table["rows"][2]["mean_max_reward"]
    assert "## samplers of one checkpoint" in text and "vs ddpm-8" in text
    assert f"| ddim-4 | 4 | {ddim['mean_max_reward']:.3f}" in text and f"| {vs:+.3f} |" in text
    image = matplotlib.image.imread(out / "samplers.png")
    assert image.ndim == 3 and image.shape[0] > 100 and np.ptp(image[..., :3]) > 0.5
    # report alone on the eval folder: a sampler table is enough for a report; a broken one is named
    capsys.readouterr()
    assert compare.main(["report", str(out / "diffusion_unet_seed0" / "eval"), "--out", str(tmp_path / "r")]) == 0
    assert "| dpmsolver-2 | 2 |" in (tmp_path / "r" / "report.md").read_text()
    bad = tmp_path / "bad" / "samplers.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps({"rows": [{"sampler": "ddim"}]}))
    assert compare.main(["report", str(bad.parent), "--out", str(tmp_path / "r2")]) == 2
    assert f"{bad.resolve()}: expected eval.py's sampler table" in capsys.readouterr().err
