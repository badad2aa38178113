"""Run one of robomimic's or robosuite's own scripts, unchanged, with the fixes of compat.py applied first.

    python -m envs.robomimic.run_script robomimic.scripts.dataset_states_to_obs --dataset demo.hdf5 \
        --output_name low_dim.hdf5 --done_mode 2
    python -m envs.robomimic.run_script robomimic.scripts.conversion.convert_robosuite --dataset demo.hdf5
    python -m envs.robomimic.run_script robomimic.scripts.get_dataset_info --dataset low_dim.hdf5

robomimic 0.3.0's scripts import mujoco_py and egl_probe, which robosuite 1.4.1 on mujoco 3.x does not need and
which do not install here; compat.py registers stand-ins for them. They also import torchvision without using it:
`robomimic.utils.file_utils` (which every script imports for its hdf5 helpers) imports robomimic's training
algorithms, whose vision networks import torchvision at module load. torchvision must not be installed here (its
only build for this torch is a CUDA one, and it breaks diffusers), so in this child process only a stand-in is
registered whose every name raises ImportError when used: the data scripts never use it, a vision network would say
so. The script then runs as `python -m MODULE ARGS` would run it (its `__main__` block, its own arguments).
"""

from __future__ import annotations

import importlib.util
import runpy
import sys
import types

from common.processes import run_module

from .compat import import_robomimic


def run_script(module: str, *args: str, progress_desc: str | None = None, total: int | None = None) -> str:
    """Run robosuite's / robomimic's script `module` through this launcher in a child process; its output."""
    return run_module("envs.robomimic.run_script", [module, *args], f"robomimic's {module}", progress_desc, total)


def _torchvision_stand_in() -> None:
    if importlib.util.find_spec("torchvision") is not None:
        return

    def unavailable(name):
        def fail(*args, **kwargs):
            raise ImportError(f"torchvision.{name}: torchvision is not installed (a stand-in registered by "
                              "envs.robomimic.run_script for robomimic's data scripts)")
        return fail

    class StandIn(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return unavailable(name)

    for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.models"):
        sys.modules[name] = StandIn(name)
    sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
    sys.modules["torchvision"].models = sys.modules["torchvision.models"]
    sys.modules["torchvision.transforms"].functional = sys.modules["torchvision.transforms.functional"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    module = argv[0]
    if not module.startswith(("robomimic.", "robosuite.")):
        print(f"{module}: expected a module of robomimic or robosuite (e.g. robomimic.scripts.dataset_states_to_obs)",
              file=sys.stderr)
        return 2
    import_robomimic()
    _torchvision_stand_in()
    sys.argv = [module, *argv[1:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
