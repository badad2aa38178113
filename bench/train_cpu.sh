#!/usr/bin/env bash
# CPU training benchmark (issue: Diffusion Policy on real Push-T state data, at most 45 minutes on 2 cores).
# Usage: bash bench/train_cpu.sh unet|transformer [PUSHT_ZIP]
# Real Push-T keypoint observations (the paper's "state" setting), evaluated on the 50 evaluation seeds
# every 2000 steps and at the end (DDPM, 100 steps). Results: outputs/bench_cpu_<network>/ (eval.json,
# training_curve.png, videos/, checkpoints/, wandb/).
set -euo pipefail
cd "$(dirname "$0")/.."
network=${1:-unet}
data=${2:-../shared/data/pusht.zip}
case "$network" in
  unet)        args=(policy=diffusion_unet training.steps=8000 training.batch_size=256) ;;
  transformer) args=(policy=diffusion_transformer training.steps=3200 training.batch_size=64) ;;
  *) echo "usage: $0 unet|transformer [PUSHT_ZIP]" >&2; exit 2 ;;
esac
exec .venv/bin/python train.py task=pusht_keypoints dataset_path="$data" "${args[@]}" \
  training.eval_every=2000 training.val_every=1000 training.checkpoint_every=1000 \
  eval.n_episodes=50 output_dir=outputs/bench_cpu_"$network" wandb.group=bench_cpu
