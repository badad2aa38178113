#!/usr/bin/env bash
# The GPU figures the docs list as still to measure, in one run from a fresh checkout (at most ~8 minutes on a
# modern GPU): paper-size UNet and transformer training steps per second, DDPM-100 / DDIM-10 / DPM-Solver++-5 /
# flow Euler-2 / consistency-1 action-chunk latency at batch 1, a 50-episode closed-loop evaluation, and the first
# command (`python train.py`, device=auto) with its wall time and score. Prints one markdown table and writes
# gpu_check.json.
#
#   bash bench/gpu_check.sh [OUT_DIR]            # on a machine with CUDA
#   bash bench/gpu_check.sh --tiny [OUT_DIR]     # the same steps on the CPU with tiny settings (tests/test_bench.py)
#
# PYTHON (default: .venv/bin/python if present, else python3) must have this project's dependencies; WHEELS=DIR
# installs them first from a folder of wheels, without an index (a machine without network).
set -euo pipefail
cd "$(dirname "$0")/.."
tiny=0
if [[ "${1:-}" == "--tiny" ]]; then tiny=1; shift; fi
out="${1:-outputs/gpu_check}"
mkdir -p "$out"
py="${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}"
if [[ -n "${WHEELS:-}" ]]; then
  "$py" -m pip install -q --no-index --find-links "$WHEELS" diffusers zarr numcodecs gymnasium pymunk shapely pygame \
    imageio imageio-ffmpeg tqdm matplotlib h5py
fi
export SDL_VIDEODRIVER=dummy WANDB_MODE=disabled
if (( tiny )); then
  bench=(--device cpu --tiny --eval-episodes 2 --no-image)
  first=(training.steps=20 default_demos=3 policy.down_dims=[8,16] policy.diffusion_step_embed_dim=16
         policy.n_groups=4 policy.kernel_size=3 eval.n_episodes=2 eval.max_steps=20 eval.n_videos=0)
else
  bench=(--quick)
  first=()
fi
echo "== bench/bench_gpu.py ${bench[*]}"
"$py" bench/bench_gpu.py "${bench[@]}" --json "$out/bench_gpu.json" | tee "$out/bench_gpu.txt"
echo "== the first command: python train.py device=auto ${first[*]}"
start=$(date +%s)
"$py" train.py device=auto wandb.mode=disabled "output_dir=$out/first_command" "${first[@]}" > "$out/first_command.log" 2>&1
seconds=$(( $(date +%s) - start ))
"$py" - "$out" "$seconds" <<'EOF'
import json, sys
from pathlib import Path
out, seconds = Path(sys.argv[1]), int(sys.argv[2])
bench = json.loads((out / "bench_gpu.json").read_text())
first = json.loads((out / "first_command" / "eval.json").read_text())
rows = [(r["row"], f"{r['ours_s'] * 1e3:.1f} ms" if r["ours_s"] < 1 else f"{r['ours_s']:.2f} s") for r in bench["rows"]]
rows += [(f"train step rate, {r['row'].split(', ', 1)[1]}", f"{1 / r['ours_s']:.1f} steps/s")
         for r in bench["rows"] if r["row"].startswith("train step")]
rows.append(("the first command (python train.py, device=auto): wall time, data and evaluation included",
             f"{seconds / 60:.1f} min"))
rows.append(("the first command: coverage / success on the evaluation seeds",
             f"{first['mean_max_reward']:.3f} / {first['success_rate']:.2f} ({first['n_episodes']} episodes)"))
print(f"\n| {bench['device']}, torch {bench['torch']}{' (tiny settings)' if bench['tiny'] else ''} | |\n|---|---|")
for label, value in rows:
    print(f"| {label} | {value} |")
(out / "gpu_check.json").write_text(json.dumps({"device": bench["device"], "rows": dict(rows)}, indent=1))
print(f"\n{out / 'gpu_check.json'}")
EOF
