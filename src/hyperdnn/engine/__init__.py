"""The recipe engine shared by every application.

* :mod:`~hyperdnn.engine.config` - typed dataclass configs (:func:`option`), ``--key value``
  and YAML overrides, ``--help``.
* :mod:`~hyperdnn.engine.registry` - :class:`Recipe`, :func:`register_recipe`, :func:`list_recipes`.
* :mod:`~hyperdnn.engine.run` - :class:`RunOptions`, :class:`RunContext`, :class:`Outcome`,
  :func:`execute` (output folder, results.json, summary.md).
* :mod:`~hyperdnn.engine.checkpoint` - atomic safetensors + JSON checkpoints, resume.
* :mod:`~hyperdnn.engine.progress` - progress bars, log lines, optional TensorBoard.
* :mod:`~hyperdnn.engine.seeding` - derived seeds, devices, threads.
* :mod:`~hyperdnn.engine.cli` - ``hyperdnn run`` (:func:`run_command`).
"""

from hyperdnn.engine.checkpoint import Checkpoint, Checkpointer, load_optimizer_state, optimizer_state_tensors
from hyperdnn.engine.cli import run_command
from hyperdnn.engine.config import build_config, config_to_dict, describe, option
from hyperdnn.engine.errors import CheckpointError, ConfigError, UsageError
from hyperdnn.engine.registry import Recipe, get_recipe, list_recipes, register_recipe
from hyperdnn.engine.run import Outcome, RunContext, RunOptions, execute
from hyperdnn.engine.seeding import derive_seed, make_generator

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "Checkpointer",
    "ConfigError",
    "Outcome",
    "Recipe",
    "RunContext",
    "RunOptions",
    "UsageError",
    "build_config",
    "config_to_dict",
    "derive_seed",
    "describe",
    "execute",
    "get_recipe",
    "list_recipes",
    "load_optimizer_state",
    "make_generator",
    "option",
    "optimizer_state_tensors",
    "register_recipe",
    "run_command",
]
