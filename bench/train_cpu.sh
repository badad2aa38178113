#!/usr/bin/env bash
# CPU training benchmark: Diffusion Policy and the baselines on real Push-T state data, within ~45 minutes on 2 cores.
# Usage: bash bench/train_cpu.sh unet|transformer|lstm_gmm|ibc [PUSHT_ZIP]
#        bash bench/train_cpu.sh lift [LIFT_ZARR]   (robomimic Lift, low-dim, scripted demonstrations: see docs/robomimic.md)
# Extra key=value arguments go to train.py after these (e.g. training.threads=1); PYTHON picks the interpreter.
# Real Push-T keypoint observations (the paper's "state" setting), evaluated on the 50 evaluation seeds
# periodically and at the end (DDPM, 100 steps). Results: outputs/bench_cpu_<network>/ (eval.json,
# training_curve.png, videos/, checkpoints/, wandb/).
set -euo pipefail
cd "$(dirname "$0")/.."
network=${1:-unet}
data=${2:-../shared/data/pusht.zip}
shift $(( $# < 2 ? $# : 2 ))
case "$network" in
  # Step counts chosen so that training plus the evaluations fit in about 45 minutes on 2 idle cores.
  unet)        args=(policy=diffusion_unet training.steps=8000 training.batch_size=256 training.eval_every=2000) ;;
  transformer) args=(policy=diffusion_transformer training.steps=4500 training.batch_size=64 training.eval_every=1500) ;;
  # Baselines (LSTM-GMM and IBC), same 45-minute budget. LSTM-GMM is cheap per step (~4 steps/s at batch 256) and acts
  # in ~ms, so it gets 10 evaluations (the paper's "mean of the last 10").
  lstm_gmm)    args=(policy=lstm_gmm training.steps=9000 training.batch_size=256 training.eval_every=900) ;;
  # IBC's energy MLP scores every counter-example: the paper's size (4x1024 units, 1024 negatives, batch 256) is
  # ~45 s per step here, and acting (derivative-free optimization over 1024 samples, every step) dominates the
  # evaluations. CPU size: 4x256 units, 256 negatives, batch 64. Measured on one core (taskset -c 0, training.threads=1):
  # 99 minutes with 3 evaluations, about the 90 core-minutes of the UNet run.
  ibc)         args=(policy=ibc policy.hidden_dim=256 policy.train_n_negatives=256 training.steps=9000
                     training.batch_size=64 training.eval_every=3000) ;;
  lift)
    # Diffusion Policy (small UNet) on 200 scripted Lift demonstrations (written by robosuite's and robomimic's own
    # scripts, demos.robomimic's default), success rate over 50 seeded episodes.
    lift=$data; [ "$lift" = ../shared/data/pusht.zip ] && lift=outputs/data/lift_scripted_200.zarr
    if [ ! -e "$lift" ]; then
      "${PYTHON:-.venv/bin/python}" -m demos.robomimic lift --episodes 200 --out "${lift%.zarr}.hdf5"
      "${PYTHON:-.venv/bin/python}" -m demos.robomimic_hdf5 convert "${lift%.zarr}.hdf5" "$lift" \
        --obs-keys object robot0_eef_pos robot0_eef_quat robot0_gripper_qpos
    fi
    exec "${PYTHON:-.venv/bin/python}" train.py task=lift_lowdim dataset_path="$lift" policy=diffusion_unet \
      training.steps=3000 training.batch_size=256 training.eval_every=1500 training.val_every=500 \
      eval.n_episodes=50 output_dir=outputs/bench_cpu_lift wandb.group=bench_cpu "$@" ;;
  *) echo "usage: $0 unet|transformer|lstm_gmm|ibc [PUSHT_ZIP] | lift [LIFT_ZARR]" >&2; exit 2 ;;
esac
exec "${PYTHON:-.venv/bin/python}" train.py task=pusht_keypoints dataset_path="$data" "${args[@]}" \
  training.val_every=1000 training.checkpoint_every=1000 \
  eval.n_episodes=50 output_dir=outputs/bench_cpu_"$network" wandb.group=bench_cpu "$@"
