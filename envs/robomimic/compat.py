"""Compatibility fixes that let robomimic 0.3.0 run on robosuite 1.4.1 + mujoco 3.x. Everything of the kind is here.

Why each one:
- robomimic 0.3.0's `robomimic/envs/env_robosuite.py` does `import mujoco_py` at module load, but uses it only
  for `EnvRobosuite.rollout_exceptions` (`mujoco_py.builder.MujocoException`). robosuite >= 1.3 runs on the
  `mujoco` bindings and never needs mujoco_py (which needs MuJoCo 2.1 binaries and a compiler, and no longer
  builds). We register a tiny stand-in module whose `builder.MujocoException` is an ordinary exception class,
  only when the real mujoco_py is not importable.
- The same file imports `egl_probe` whenever an offscreen renderer is asked for, to pick a GPU for EGL. Its
  PyPI package compiles a CMake project at install time; on a machine without a GPU it would find no device
  anyway. The stand-in reports no GPU, so robosuite keeps its default device (Mesa's EGL on a CPU).
- robomimic 0.3.0 declares torchvision, which must not be installed here (see README): install robomimic with
  `pip install --no-deps robomimic==0.3.0`; the few modules we use need only numpy, h5py, torch and termcolor
  (pyproject.toml names them).
- Rendering: `MUJOCO_GL=egl` (headless, works on a CPU through Mesa) unless the user set MUJOCO_GL, and
  PyOpenGL told the same; this must happen before mujoco / robosuite are imported.
- robosuite's collection script (`robosuite.scripts.collect_human_demonstrations`, whose
  `gather_demonstrations_as_hdf5` builds robomimic's raw files) imports its keyboard device, i.e. pynput, which
  fails without an X display; `PYNPUT_BACKEND=dummy` (when there is no DISPLAY) lets it import.

Call `import_robomimic()` instead of importing robomimic's env modules directly.
"""

from __future__ import annotations

import importlib
import os
import sys
import types


def _set_headless_rendering() -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("PYNPUT_BACKEND", "dummy")


def _install_stand_ins() -> None:
    try:
        importlib.import_module("mujoco_py")
    except Exception:  # not installed, or installed without its MuJoCo 2.1 binaries
        mujoco_py = types.ModuleType("mujoco_py")
        mujoco_py.__doc__ = "Stand-in registered by envs.robomimic.compat (robomimic 0.3.0 imports mujoco_py)."
        builder = types.ModuleType("mujoco_py.builder")

        class MujocoException(Exception):
            """Never raised: robosuite >= 1.3 simulates with the `mujoco` bindings."""

        builder.MujocoException = MujocoException
        mujoco_py.builder = builder
        sys.modules["mujoco_py"] = mujoco_py
        sys.modules["mujoco_py.builder"] = builder
    try:
        importlib.import_module("egl_probe")
    except Exception:
        egl_probe = types.ModuleType("egl_probe")
        egl_probe.__doc__ = "Stand-in registered by envs.robomimic.compat: reports no GPU (robosuite's default)."
        egl_probe.get_available_devices = lambda: []
        sys.modules["egl_probe"] = egl_probe


def import_robomimic():
    """(robosuite, robomimic env_utils, robomimic obs_utils) after the fixes above; a clear error if missing."""
    _set_headless_rendering()
    _install_stand_ins()
    try:
        import robosuite
        import robomimic.utils.env_utils as env_utils
        import robomimic.utils.obs_utils as obs_utils
    except ImportError as e:
        raise ImportError(
            f"the robomimic tasks need robosuite 1.4.1, mujoco 3.x and robomimic 0.3.0 ({e}); install with "
            "`pip install -c constraints.txt -e . && pip install --no-deps robomimic==0.3.0` (see README)"
        ) from e
    return robosuite, env_utils, obs_utils
