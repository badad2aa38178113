#!/usr/bin/env bash
# CPU training benchmark (issue: Diffusion Policy on real Push-T state data, at most 45 minutes on 2 cores).
# Usage: bash bench/train_cpu.sh unet|transformer [PUSHT_ZIP]
# Real Push-T keypoint observations (the paper's "state" setting), evaluated on the 50 evaluation seeds
# periodically and at the end (DDPM, 100 steps). Results: outputs/bench_cpu_<network>/ (eval.json,
# training_curve.png, videos/, checkpoints/, wandb/).
set -euo pipefail
cd "$(dirname "$0")/.."
network=${1:-unet}
data=${2:-../shared/data/pusht.zip}
case "$network" in
  # Step counts chosen so that training plus the evaluations fit in about 45 minutes on 2 idle cores.
  unet)        args=(policy=diffusion_unet training.steps=8000 training.batch_size=256 training.eval_every=2000) ;;
  transformer) args=(policy=diffusion_transformer training.steps=4500 training.batch_size=64 training.eval_every=1500) ;;
  *) echo "usage: $0 unet|transformer [PUSHT_ZIP]" >&2; exit 2 ;;
esac
exec .venv/bin/python train.py task=pusht_keypoints dataset_path="$data" "${args[@]}" \
  training.val_every=1000 training.checkpoint_every=1000 \
  eval.n_episodes=50 output_dir=outputs/bench_cpu_"$network" wandb.group=bench_cpu
