"""What every package of the project shares and nothing else: the error classes with the command-line wrapper
that prints them, and the rule that tells image observations from low-dim ones.

This package imports nothing from the project, so `envs/`, `datasets/`, `policy/` and the entry points can all
depend on it without depending on each other.
"""

from .errors import (ArgumentParser, CheckpointError, ConfigError, DataError, EnvError, StackError, Terminated,
                     TrainingError, on_interrupt, run_cli)
from .observations import is_image_shape

__all__ = ["ArgumentParser", "CheckpointError", "ConfigError", "DataError", "EnvError", "StackError", "Terminated",
           "TrainingError", "is_image_shape", "on_interrupt", "run_cli"]
