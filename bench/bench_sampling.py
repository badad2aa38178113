"""Every sampler side by side on real Push-T keypoint data: one network size, one training budget.

    .venv/bin/python bench/bench_sampling.py [--out outputs/bench_sampling] [--steps 10000] [--distill-steps 6000]
                                             [--phases train eval latency runtimes table]
                                             [--quick]

train    python train.py for a DDPM teacher (diffusion_unet) and a flow-matching policy (flow_unet) with the same UNet
         [32, 64, 128] (step embedding 128), batch 64, learning rate 5e-4, `--steps` steps on ../shared/data/pusht.zip
         (or $PUSHT_ZIP); then python distill.py on the teacher's checkpoint (`--distill-steps`). Each is a run dir
         under --out; a finished one is not trained again (train.py's resume rules), so the phases can be rerun.
eval     python eval.py samplers=... on each checkpoint, 50 episodes on the 50 evaluation seeds (100000..) and on 50
         other seeds (200000..): coverage and success with 95% intervals.
latency  one action chunk (predict_action) at batch 1 and 50: median and 99th percentile over 200 calls (50 for
         DDPM-100 at batch 50), idle and next to a busy torch job (a matmul loop on every core in another process);
         torch threads as eval.py chooses them (the cores free when the measurement starts).
runtimes one-pass and two-pass chunks (consistency-1, euler-1, euler-2) at batch 1 through eager PyTorch,
         torch.compile, ONNX Runtime and OpenVINO (the same exported .onnx), on 1 and 2 threads, idle and next to a
         busy job: median and 99th percentile; OpenVINO only when it is installed (pip install openvino)
table    the table (markdown and JSON) in --out: passes per chunk, scores, latencies, ratios to DDPM-100, and the
         training wall time of each network (distillation: its own time plus the teacher's).
--quick: 300 training steps, 100 distillation steps, 4 episodes, 20 latency calls (a smoke run, tests/test_bench.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

NETWORK = ["policy.down_dims=[32,64,128]", "policy.diffusion_step_embed_dim=128", "training.batch_size=64",
           "policy.optimizer_lr=5e-4", "task=pusht_keypoints", "training.eval_every=0", "wandb.mode=disabled"]
SAMPLERS = {  # model -> samplers evaluated on its checkpoint
    "ddpm": ["ddpm-100", "ddim-10", "ddim-4", "dpmsolver-5", "dpmsolver-3", "unipc-5", "unipc-3", "dpmsolver-2"],
    "flow": ["euler-10", "euler-4", "euler-2", "midpoint-1", "euler-1"],
    "consistency": ["consistency-1", "consistency-2"],
}
SEED_SETS = {"eval seeds": None, "other seeds": 200000}


def pusht_data() -> Path:
    path = Path(os.environ.get("PUSHT_ZIP") or REPO.parent / "shared" / "data" / "pusht.zip")
    if not path.is_file():
        sys.exit(f"error: {path}: the real Push-T data is needed (set PUSHT_ZIP)")
    return path


def run(argv: list[str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"$ python {' '.join(argv)}   (log: {log})", flush=True)
    with open(log, "a") as f:
        done = subprocess.run([sys.executable, *argv], cwd=REPO, stdout=f, stderr=subprocess.STDOUT, check=False)
    if done.returncode:
        sys.exit(f"error: exit {done.returncode}; see {log}")


def train_phase(out: Path, steps: int, distill_steps: int, episodes: int) -> None:
    data = pusht_data()
    for name, policy in (("ddpm", "diffusion_unet"), ("flow", "flow_unet")):
        run(["train.py", f"policy={policy}", f"dataset_path={data}", f"training.steps={steps}",
             f"eval.n_episodes={episodes}", *NETWORK, f"output_dir={out / name}"], out / f"{name}.log")
    run(["distill.py", f"checkpoint={out / 'ddpm' / 'checkpoints' / 'last.pt'}", f"training.steps={distill_steps}",
         "policy.optimizer_lr=2e-4", f"eval.n_episodes={episodes}", f"output_dir={out / 'consistency'}"],
        out / "consistency.log")


def eval_phase(out: Path, episodes: int) -> None:
    for model, samplers in SAMPLERS.items():
        for label, seed in SEED_SETS.items():
            where = out / "eval" / label.replace(" ", "_") / model
            if (where / "samplers.json").is_file():
                continue
            run(["eval.py", f"checkpoint={out / model / 'checkpoints' / 'last.pt'}", f"samplers={','.join(samplers)}",
                 f"n_episodes={episodes}", "eval.n_videos=0", "wandb.mode=disabled", f"output_dir={where}",
                 *([f"seed={seed}"] if seed is not None else [])], out / "eval.log")


def busy_job() -> subprocess.Popen:
    """Another torch process keeping every core busy (its own default threads), as a second job on the machine."""
    code = ("import torch\nx = torch.randn(1024, 1024)\nwhile True:\n    x = torch.tanh(x @ x / 32)\n")
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def chunk_times(policy, batch: int, calls: int) -> list[float]:
    """Milliseconds of `calls` predict_action calls at `batch` (3 untimed first)."""
    import torch

    from policy.export import call_times_ms

    cfg = policy.config
    obs = {k: torch.zeros((batch, cfg.obs_horizon, *shape)) for k, shape in cfg.obs_shapes.items()}
    with torch.inference_mode():
        return call_times_ms(lambda: policy.predict_action(obs), calls, warmup=3)


def latency_phase(out: Path, calls: int) -> dict:
    from runlib import load_checkpoint, set_torch_threads

    rows = {}
    for condition in ("idle", "busy"):
        job = busy_job() if condition == "busy" else None
        try:
            if job:
                time.sleep(3)  # let it take the cores
            threads = set_torch_threads(None)  # what eval.py does: the cores free now
            for model, samplers in SAMPLERS.items():
                path = out / model / "checkpoints" / "last.pt"
                ckpt = load_checkpoint(path)
                for sampler in samplers:
                    name, steps = sampler.split("-")
                    policy = sampler_policy(ckpt, path, sampler)
                    for batch in (1, 50):
                        n = calls if not (batch == 50 and int(steps) * (2 if name == "midpoint" else 1) >= 50) \
                            else max(10, calls // 4)
                        rows.setdefault(sampler, {})[f"{condition} b{batch}"] = {
                            **percentiles(chunk_times(policy, batch, n)), "calls": n, "threads": threads}
                    print(f"latency {condition} {sampler}: {rows[sampler][f'{condition} b1']['median_ms']:.2f} ms "
                          f"(batch 1), {rows[sampler][f'{condition} b50']['median_ms']:.1f} ms (batch 50)",
                          flush=True)
        finally:
            if job:
                job.kill()
                job.wait()
    (out / "latency.json").write_text(json.dumps(rows, indent=1))
    return rows


RUNTIME_SAMPLERS = {"consistency": ["consistency-1"], "flow": ["euler-1", "euler-2"]}


def percentiles(times: list[float]) -> dict:
    times = sorted(times)
    return {"median_ms": statistics.median(times), "p99_ms": times[min(len(times) - 1, int(0.99 * len(times)))]}


def sampler_policy(ckpt: dict, path: Path, sampler: str):
    """The checkpoint's policy sampling with `sampler` ("<scheduler>-<steps>", e.g. "ddim-10")."""
    from runlib import policy_from_checkpoint

    name, steps = sampler.split("-")
    return policy_from_checkpoint(ckpt, path, config_overrides={"inference_scheduler": name,
                                                                 "num_inference_steps": int(steps)}).eval()


def runtimes_phase(out: Path, calls: int) -> dict:
    """One chunk at batch 1 through each runtime; the graph is policy/export.py's (what export.py writes)."""
    import torch

    from policy.export import ChunkFunction, call_times_ms, export_onnx, onnx_session
    from runlib import load_checkpoint

    try:
        import openvino
    except ImportError:
        openvino = None
    rows = {}
    for model, samplers in RUNTIME_SAMPLERS.items():
        path = out / model / "checkpoints" / "last.pt"
        ckpt = load_checkpoint(path)
        for sampler in samplers:
            policy = sampler_policy(ckpt, path, sampler)
            fn = ChunkFunction(policy)
            example = fn.example()
            onnx_path = export_onnx(policy, out / "onnx" / f"{sampler}.onnx")
            feeds = {k: x.numpy() for k, x in zip([*fn.keys, "noise"], example)}
            with torch.inference_mode():
                expected = fn(*example).numpy()
            compiled = torch.compile(fn)
            with torch.inference_mode():
                start = time.perf_counter()
                compiled(*example)
                compile_s = time.perf_counter() - start
            for threads in (1, 2):
                torch.set_num_threads(threads)
                session = onnx_session(onnx_path, threads)
                runners = {"eager PyTorch": lambda: fn(*example), "torch.compile": lambda: compiled(*example),
                           "ONNX Runtime": lambda: session.run(None, feeds)}
                if openvino is not None:
                    # f32 as the others: on a CPU with bf16 units OpenVINO otherwise runs in bf16 (seen here: the
                    # chunk off by 1.6 Push-T pixels)
                    ov_model = openvino.Core().compile_model(str(onnx_path), "CPU", {
                        "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                        "INFERENCE_PRECISION_HINT": "f32"})
                    ov_request = ov_model.create_infer_request()
                    got = ov_request.infer(feeds)[ov_model.output(0)]
                    error = float(abs(got - expected).max())
                    if error > 1e-3 * max(1.0, float(abs(expected).max())):
                        sys.exit(f"error: OpenVINO's {sampler} chunk differs from PyTorch's by {error:.2e}")
                    runners["OpenVINO"] = lambda: ov_request.infer(feeds)
                for condition in ("idle", "busy"):
                    job = busy_job() if condition == "busy" else None
                    try:
                        if job:
                            time.sleep(3)
                        for runtime, run_once in runners.items():
                            with torch.inference_mode():
                                result = percentiles(call_times_ms(run_once, calls))
                            rows.setdefault(sampler, {}).setdefault(runtime, {})[
                                f"{condition} {threads} thread{'s' if threads > 1 else ''}"] = result
                            print(f"runtimes {sampler} {runtime} {threads} thread(s) {condition}: "
                                  f"{result['median_ms']:.2f} ms (p99 {result['p99_ms']:.2f})", flush=True)
                    finally:
                        if job:
                            job.kill()
                            job.wait()
            rows[sampler]["torch.compile"]["compile_s"] = compile_s
    (out / "runtimes.json").write_text(json.dumps(rows, indent=1))
    conditions = ["idle 1 thread", "idle 2 threads", "busy 1 thread", "busy 2 threads"]
    lines = ["| chunk | runtime | " + " | ".join(f"b1 {c} (p99)" for c in conditions) + " | vs eager, idle 1 thread |",
             "|" + "---|" * (3 + len(conditions))]
    for sampler, by_runtime in rows.items():
        eager = by_runtime["eager PyTorch"]["idle 1 thread"]["median_ms"]
        for runtime, r in by_runtime.items():
            cells = " | ".join(f"{r[c]['median_ms']:.2f} ({r[c]['p99_ms']:.2f})" for c in conditions)
            lines.append(f"| {sampler} | {runtime} | {cells} | {eager / r['idle 1 thread']['median_ms']:.1f}x |")
    text = "\n".join(lines) + "\n"
    (out / "runtimes.md").write_text(text)
    print(text)
    return rows


def table_phase(out: Path) -> str:
    latency = json.loads((out / "latency.json").read_text())
    wall = {m: json.loads((out / m / "eval.json").read_text()).get("wall_s") for m in SAMPLERS}
    scores = {}
    for label in SEED_SETS:
        for model in SAMPLERS:
            table = out / "eval" / label.replace(" ", "_") / model / "samplers.json"
            for row in json.loads(table.read_text())["rows"]:
                scores.setdefault(f"{row['sampler']}-{row['steps']}", {})[label] = row
    base = scores["ddpm-100"]["eval seeds"]["mean_max_reward"]
    base_ms = latency["ddpm-100"]["idle b1"]["median_ms"]
    lines = ["| model | sampler | passes | coverage, eval seeds (95% CI) | success | coverage, other seeds | success |"
             " vs DDPM-100 | ms / chunk b1 idle (p99) | b1 next to a busy job (p99) | b50 idle | speed-up b1 |"
             " training |", "|" + "---|" * 13]
    for model, samplers in SAMPLERS.items():
        train_min = (wall[model] + (wall["ddpm"] if model == "consistency" else 0)) / 60 if wall[model] else None
        for sampler in samplers:
            s, o, lat = scores[sampler]["eval seeds"], scores[sampler]["other seeds"], latency[sampler]
            lo, hi = s["mean_max_reward_ci95"]
            lines.append(
                f"| {model} | {sampler} | {s['passes_per_chunk']} | {s['mean_max_reward']:.3f} ({lo:.3f}..{hi:.3f}) "
                f"| "
                f"{s['success_rate']:.2f} | {o['mean_max_reward']:.3f} | {o['success_rate']:.2f} | "
                f"{s['mean_max_reward'] - base:+.3f} | {lat['idle b1']['median_ms']:.2f} "
                f"({lat['idle b1']['p99_ms']:.2f}) | {lat['busy b1']['median_ms']:.2f} "
                f"({lat['busy b1']['p99_ms']:.2f}) | "
                f"{lat['idle b50']['median_ms']:.1f} | {base_ms / lat['idle b1']['median_ms']:.0f}x | "
                f"{'%.0f min' % train_min if train_min else '-'}"
                f"{' (teacher + distillation)' if model == 'consistency' else ''} |")
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    (out / "table.json").write_text(json.dumps({"scores": scores, "latency": latency, "wall_s": wall}, indent=1))
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_sampling")
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--distill-steps", type=int, default=6000)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--phases", nargs="*", default=["train", "eval", "latency", "runtimes", "table"])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.distill_steps, args.episodes, args.calls = 300, 100, 4, 20
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"bench_sampling: {args.steps} steps, distillation {args.distill_steps}, {args.episodes} episodes, "
          f"{args.calls} latency calls; {os.cpu_count()} cores, load average {load}; out {args.out}", flush=True)
    if "train" in args.phases:
        train_phase(args.out, args.steps, args.distill_steps, args.episodes)
    if "eval" in args.phases:
        eval_phase(args.out, args.episodes)
    if "latency" in args.phases:
        latency_phase(args.out, args.calls)
    if "runtimes" in args.phases:
        runtimes_phase(args.out, args.calls)
    if "table" in args.phases:
        print(table_phase(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
