"""Export a trained policy's action-chunk function to ONNX (for robot computers) and check it against PyTorch.

    python export.py checkpoint=outputs/<run>/checkpoints/last.pt output=chunk.onnx
    python export.py checkpoint=PATH output=chunk.onnx policy.inference_scheduler=dpmsolver policy.num_inference_steps=5
                                                             # a DDPM checkpoint, through a deterministic solver

What the graph holds, which samplers export and why ONNX Runtime: policy/export.py. Writes FILE.onnx and
FILE.onnx.json (inputs, shapes, sampler), checks ONNX Runtime's actions against PyTorch's on random inputs (to
1e-4) and prints both latencies for one chunk at batch 1 on one thread. Needs `onnx` and `onnxruntime`
(pip install -c constraints.txt -e '.[export]').
"""

from __future__ import annotations

import os
import sys

import torch

from common import CheckpointError, ConfigError, run_cli
from policy.export import ChunkFunction, export_onnx, median_ms, onnx_session


def command(argv: list[str]) -> None:
    from runlib import load_checkpoint, policy_from_checkpoint

    args = dict(a.split("=", 1) for a in argv if "=" in a)
    if "checkpoint" not in args or "output" not in args:
        raise ConfigError("checkpoint=PATH and output=FILE.onnx are required")
    unknown = sorted(k for k in args if k not in ("checkpoint", "output") and not k.startswith("policy."))
    if unknown or any("=" not in a for a in argv):
        raise ConfigError(f"unknown arguments {unknown or [a for a in argv if '=' not in a]}; expected checkpoint=, "
                          "output=, policy.inference_scheduler=, policy.num_inference_steps=")
    path = os.path.expanduser(args["checkpoint"])
    ckpt = load_checkpoint(path)
    overrides = {k.split(".", 1)[1]: (int(v) if k.endswith("num_inference_steps") else v)
                 for k, v in args.items() if k.startswith("policy.")}
    if not set(overrides) <= {"inference_scheduler", "num_inference_steps"}:
        raise ConfigError(f"only policy.inference_scheduler and policy.num_inference_steps may change, not "
                          f"{sorted(set(overrides) - {'inference_scheduler', 'num_inference_steps'})}")
    try:
        policy = policy_from_checkpoint(ckpt, path, config_overrides=overrides)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from e
    torch.set_num_threads(1)  # the robot computer's one core, as ONNX Runtime's session below
    out = export_onnx(policy, os.path.expanduser(args["output"]))
    fn, session = ChunkFunction(policy), onnx_session(out)
    inputs = fn.example(batch=3, seed=1)
    feeds = {name: x.numpy() for name, x in zip([*fn.keys, "noise"], inputs)}
    with torch.inference_mode():
        expected = fn(*inputs).numpy()
    got = session.run(None, feeds)[0]
    error = float(abs(got - expected).max())
    if error > 1e-4 * max(1.0, float(abs(expected).max())):
        raise CheckpointError(f"{out}: ONNX Runtime's actions differ from PyTorch's by {error:.2e}")
    one = {name: x[:1] for name, x in feeds.items()}
    example = fn.example()
    with torch.inference_mode():
        torch_ms = median_ms(lambda: fn(*example))
    onnx_ms = median_ms(lambda: session.run(None, one))
    print(f"{out} ({out.stat().st_size / 1e6:.1f} MB; {out}.json): {policy.config.inference_scheduler}-"
          f"{policy.config.num_inference_steps}; ONNX Runtime = PyTorch to {error:.1e}; one chunk at batch 1, one "
          f"thread: PyTorch {torch_ms:.2f} ms, ONNX Runtime {onnx_ms:.2f} ms ({torch_ms / onnx_ms:.1f}x)")




def main(argv: list[str] | None = None) -> int:
    return run_cli(command, argv, usage=__doc__)


if __name__ == "__main__":
    sys.exit(main())
