"""The recipe engine shared by every application.

* :mod:`~hyperdnn.engine.config` - typed dataclass configs (:func:`option`), ``--key value``
  and YAML overrides, ``--help``.
* :mod:`~hyperdnn.engine.registry` - :class:`Recipe`, :func:`register_recipe`, :func:`list_recipes`.
* :mod:`~hyperdnn.engine.run` - :class:`RunOptions`, :class:`RunContext`, :class:`Outcome`,
  :func:`execute` (output folder, results.json, summary.md).
* :mod:`~hyperdnn.engine.checkpoint` - atomic safetensors + JSON checkpoints, state schemas
  (:func:`validate_state`), resume.
* :mod:`~hyperdnn.engine.model` - trained models saved by a run, :func:`load_model`.
* :mod:`~hyperdnn.engine.progress` - progress bars, log lines, optional TensorBoard.
* :mod:`~hyperdnn.engine.seeding` - derived seeds, devices, threads, memory.
* :mod:`~hyperdnn.engine.cli` - ``hyperdnn run`` (:func:`run_command`).
"""

from hyperdnn.engine.checkpoint import (
    Checkpoint,
    Checkpointer,
    OptimizerState,
    load_optimizer_state,
    optimizer_state_tensors,
    validate_state,
)
from hyperdnn.engine.cli import run_command
from hyperdnn.engine.config import build_config, config_to_dict, describe, option
from hyperdnn.engine.errors import CheckpointError, ConfigError, UsageError
from hyperdnn.engine.model import load_model
from hyperdnn.engine.registry import Recipe, get_recipe, list_recipes, register_recipe
from hyperdnn.engine.run import Outcome, RunContext, RunOptions, execute
from hyperdnn.engine.seeding import derive_seed, make_generator, memory_limit

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "Checkpointer",
    "ConfigError",
    "OptimizerState",
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
    "load_model",
    "load_optimizer_state",
    "make_generator",
    "memory_limit",
    "option",
    "optimizer_state_tensors",
    "register_recipe",
    "run_command",
    "validate_state",
]
