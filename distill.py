"""Distill a trained Diffusion Policy into a consistency student that acts in one network pass (policy/consistency.py).

    python distill.py checkpoint=outputs/<run>/checkpoints/last.pt output_dir=outputs/<run>_cd training.steps=5000
    python eval.py checkpoint=outputs/<run>_cd/checkpoints/last.pt                        # one pass per chunk
    python eval.py checkpoint=outputs/<run>_cd/checkpoints/last.pt policy.num_inference_steps=2   # two, chained

The student is the teacher's network and observation encoder, started from the teacher's EMA weights, trained by
train.py's loop on the teacher's dataset with the teacher's configuration (horizons, batch, learning rate, EMA,
evaluation), policy `consistency_unet` or `consistency_transformer`. Command-line `key=value` overrides apply on top
(`training.steps=`, `policy.optimizer_lr=`, `policy.skip=`, `policy.target_ema=`, `output_dir=`, ...). The output
dir is a run dir like any other: checkpoints/last.pt, eval.json, history.jsonl, config.json, resumable.
`print_config=true` prints the values and their sources and exits.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from common import CheckpointError, ConfigError, run_cli
from config import config_from_dict, resolve
from runlib import load_checkpoint, policy_from_checkpoint

TEACHERS = {"diffusion_unet": "consistency_unet", "diffusion_transformer": "consistency_transformer"}


def distill(argv: list[str]) -> dict | None:
    from train import train

    given = [a.split("=", 1)[1] for a in argv if a.startswith("checkpoint=")]
    if not given:
        raise ConfigError("checkpoint=PATH of a trained diffusion policy is required (e.g. "
                          "outputs/<run>/checkpoints/last.pt)")
    path = os.path.expandvars(os.path.expanduser(given[-1]))
    ckpt = load_checkpoint(path)
    if ckpt["policy_name"] not in TEACHERS:
        raise CheckpointError(f"{path}: holds policy {ckpt['policy_name']!r}; distill.py distills a diffusion policy "
                              f"({', '.join(TEACHERS)})")
    if any(a.startswith("policy=") for a in argv):
        raise ConfigError(f"policy= is set by distill.py: {TEACHERS[ckpt['policy_name']]} for a "
                          f"{ckpt['policy_name']} teacher")
    student = {**{k: v for k, v in ckpt["policy_config"].items() if k not in ("inference_scheduler",
                                                                              "num_inference_steps")},
               "inference_scheduler": "consistency", "teacher_checkpoint": str(Path(path).resolve())}
    base = config_from_dict(ckpt["config"])
    base.output_dir, base.policy, base.policy_config = None, TEACHERS[ckpt["policy_name"]], student
    resolved = resolve([a for a in argv if not a.startswith("checkpoint=")], base, use_presets=False,
                       base_source=f"teacher {path}", policy_base=student)
    if resolved.print_only:
        print(resolved.table())
        return None
    if not resolved.config.output_dir:
        raise ConfigError("output_dir= is required: where the student's run goes (e.g. output_dir=outputs/<run>_cd)")
    teacher = policy_from_checkpoint(ckpt, path)

    def start_from_teacher(run) -> None:
        from policy import EMA

        run.policy.load_state_dict(teacher.state_dict())  # the same modules: network, encoder, normalizer
        run.policy.attach_teacher(teacher.to(run.device))  # before the EMA copy, which shares it (validation loss)
        if run.ema is not None:  # the evaluation average starts from the teacher too
            run.ema = EMA(run.policy, power=run.cfg.training.ema_power, max_decay=run.cfg.training.ema_max_decay)
        run.say(f"student {run.cfg.policy} starts from the teacher {path} (step {ckpt['step']})")

    return train(resolved, prepare=start_from_teacher)


def main(argv: list[str] | None = None) -> int:
    return run_cli(distill, argv, usage=__doc__)


if __name__ == "__main__":
    sys.exit(main())
