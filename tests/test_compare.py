"""compare.py: run two policies over two seeds, report from the output dirs and from the W&B run files."""

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

import compare
import runlib
import train

from conftest import tiny_unet_overrides

POLICIES, SEEDS, GROUP = ["diffusion_unet", "lstm_gmm"], [0, 1], "tiny_compare"
TINY = [
    "task=pusht_keypoints", "training.batch_size=16", "training.threads=1", "training.steps=4",
    "training.eval_every=2", "training.val_every=100", "eval.n_episodes=2", "eval.max_steps=8", "eval.n_videos=0",
    "wandb.mode=offline",
    # policy.* fields differ between policies: scoped to the policy they belong to
    *tiny_unet_overrides("diffusion_unet.policy.", num_inference_steps=2),
    "lstm_gmm.policy.rnn_hidden_dim=16", "lstm_gmm.policy.rnn_num_layers=1",
]


@pytest.fixture(scope="module")
def compared(demos, tmp_path_factory) -> tuple[Path, list[str]]:
    """The four tiny runs, trained by `compare.py run`, which also writes the report into their parent dir."""
    out = tmp_path_factory.mktemp("compare") / GROUP
    argv = ["run", f"policies={','.join(POLICIES)}", f"seeds={','.join(map(str, SEEDS))}", f"group={GROUP}",
            f"output_dir={out}", f"dataset_path={demos}", *TINY]
    assert compare.main(argv) == 0
    return out, argv


def evaluations(run_dir: Path) -> tuple[list[int], list[float], list[float]]:
    """Steps, scores and success rates of a run's evaluations, straight from its checkpoint's history."""
    history = runlib.load_checkpoint(run_dir / "checkpoints" / "last.pt")["history"]
    evals = [h for h in history if "eval/mean_max_reward" in h]
    return [h["step"] for h in evals], [h["eval/mean_max_reward"] for h in evals], \
        [h["eval/success_rate"] for h in evals]


def test_report_matches_the_runs_histories_and_eval_json(compared):
    out, _ = compared
    report = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    [group] = report["groups"]
    assert (group["group"], group["task"]) == (GROUP, "pusht_keypoints")
    for run in report["runs"]:  # every run says how long it took and on what
        assert run["wall_s"] > 0 and run["hardware"].startswith("CPU ") and "cores" in run["hardware"]
    assert "| wall time | hardware |" in md and " min | CPU " in md
    rows = {row["policy"]: row for row in group["policies"]}
    assert set(rows) == set(POLICIES)
    for policy in POLICIES:
        per_seed = {k: [] for k in ("score_max", "score_last10", "success_max", "success_last10", "final_score")}
        for seed in SEEDS:
            run_dir = out / f"{policy}_seed{seed}"
            steps, scores, successes = evaluations(run_dir)
            assert steps == [2, 4]  # every eval_every steps, then the final evaluation
            final = json.loads((run_dir / "eval.json").read_text())
            assert scores[-1] == final["mean_max_reward"]
            per_seed["score_max"].append(max(scores))
            per_seed["score_last10"].append(sum(scores[-10:]) / len(scores[-10:]))
            per_seed["success_max"].append(max(successes))
            per_seed["success_last10"].append(sum(successes[-10:]) / len(successes[-10:]))
            per_seed["final_score"].append(final["mean_max_reward"])
        row = rows[policy]
        assert (row["n_seeds"], row["seeds"]) == (2, SEEDS)
        for key, values in per_seed.items():
            assert row[key]["per_seed"] == values, (policy, key)
            assert row[key]["mean"] == float(np.mean(values)), (policy, key)
            assert row[key]["std"] == float(np.std(values)), (policy, key)
        cells = " | ".join(f"{np.mean(per_seed[k]):.3f} ± {np.std(per_seed[k]):.3f}" for k in per_seed)
        assert f"| {policy} | 2 (0, 1) | {cells} | 2 | 4 |" in md
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


def test_wandb_run_files_give_the_same_numbers(compared, tmp_path):
    out, _ = compared
    assert compare.main(["report", str(out), "--source", "wandb", "--out", str(tmp_path)]) == 0
    from_wandb = json.loads((tmp_path / "report.json").read_text())
    local = json.loads((out / "report.json").read_text())
    assert from_wandb["source"] == "W&B run files (.wandb)" and not from_wandb["unfinished"]
    assert all(".wandb" in r["source"] for r in from_wandb["runs"])
    assert from_wandb["groups"] == local["groups"]  # every number, per seed and per step, exactly
    key = lambda r: (r["policy"], r["seed"])  # noqa: E731
    for a, b in zip(sorted(from_wandb["runs"], key=key), sorted(local["runs"], key=key)):
        assert {k: v for k, v in a.items() if k != "source"} == {k: v for k, v in b.items() if k != "source"}
    # the same report from the local dirs through the report command
    assert compare.main(["report", str(out), "--out", str(tmp_path / "local")]) == 0
    assert json.loads((tmp_path / "local" / "report.json").read_text())["groups"] == local["groups"]


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


def test_wandb_reader_merges_resumed_runs_and_spans_blocks(tmp_path, capsys):
    """Records larger than a 32 KiB block, a run resumed into a second file, and a torn tail."""
    import wandb

    config = {"task": "pusht_keypoints", "policy": "ibc", "seed": 7}
    logged = {}
    for start, stop in ((1, 30), (20, 41)):  # killed after step 29, resumed from a checkpoint at step 20
        run = wandb.init(mode="offline", dir=str(tmp_path), project="p", group="g", id="synthetic-1",
                         resume="allow", config=config)
        for step in range(start, stop):
            row = {"train/loss": 1.0 / step, "blob": "x" * 40_000 if step == 5 else "y"}
            if step % 2 == 0:
                row |= {"eval/mean_max_reward": step / 100 + start / 1000, "eval/success_rate": step % 3 / 2}
                logged[step] = (step, row["eval/mean_max_reward"], row["eval/success_rate"])
            run.log(row, step=step)
        if stop == 41:  # train.py writes the final evaluation into the summary when it finishes
            run.summary.update({"final/mean_max_reward": logged[40][1], "final/success_rate": logged[40][2]})
        run.finish()
    files = sorted(tmp_path.rglob("*.wandb"))
    assert len(files) == 2 and max(f.stat().st_size for f in files) > 32 * 1024
    runs, unfinished = compare.collect_wandb([tmp_path])
    assert not unfinished
    [run] = runs
    assert (run.run_id, run.group, run.task, run.policy, run.seed, run.steps) == \
           ("synthetic-1", "g", "pusht_keypoints", "ibc", 7, 40)
    assert run.evals == [logged[s] for s in sorted(logged)]  # steps 20..29 from the resumed file
    last10 = [logged[s][1] for s in sorted(logged)][-10:]
    assert run.stats()["score_last10"] == float(np.mean(last10)) and run.stats()["score_max"] == logged[40][1]
    # A file cut mid-record keeps the records before the cut.
    torn = tmp_path / "torn.wandb"
    data = files[0].read_bytes()
    torn.write_bytes(data[:len(data) // 2])
    history = compare.read_wandb_file(torn)["history"]
    assert 0 < len(history) < 29 and "unreadable record" in capsys.readouterr().err
    (tmp_path / "other.wandb").write_bytes(b"nope" + data[4:])
    with pytest.raises(compare.CompareError, match="not a W&B run file"):
        compare.read_wandb_file(tmp_path / "other.wandb")


@pytest.mark.parametrize("argv, message", [
    (["seeds=0"], "policies= is required"),
    (["policies=diffusion_unet,bc", "group=x"], "unknown policies \\['bc'\\]"),
    (["policies=diffusion_unet", "policy=ibc", "group=x"], "policy= is set per run"),
    (["policies=diffusion_unet", "lstm_gmm.policy.rnn_hidden_dim=8", "group=x"], "not in policies="),
    (["policies=diffusion_unet", "seeds=a", "group=x"], "seeds= must be integers"),
    (["policies=diffusion_unet"], "group=NAME"),
])
def test_bad_run_arguments_say_what_is_wrong(argv, message):
    with pytest.raises(compare.CompareError, match=message):
        compare.plan_runs(argv)


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
