"""The recipe engine shared by every application.

* :mod:`~hyperdnn.engine.config` - typed dataclass configs (:func:`option`), ``--key value``
  and YAML overrides, ``--help``.
* :mod:`~hyperdnn.engine.registry` - :class:`Recipe`, :data:`RECIPES`, :func:`register_recipe`,
  :func:`get_recipe`, :func:`list_recipes` (built-in recipes, installed packages' through the
  entry-point group ``hyperdnn.recipes``).
* :mod:`~hyperdnn.engine.run` - :class:`RunOptions`, :class:`RunContext`, :class:`Outcome`,
  :func:`execute` (output folder, results.json, summary.md).
* :mod:`~hyperdnn.engine.loop` - the shared training loop: :class:`Unit`, :class:`Work`,
  :func:`run_units` (progress, checkpoints, resume, log lines), :class:`LoopState`,
  :func:`check_loop_state`, :func:`resumable`.
* :mod:`~hyperdnn.engine.report` - the shared report: :class:`Table`, :class:`Column`,
  :class:`Report` and the standard figures (learning curves, heat maps, bar and line charts).
* :mod:`~hyperdnn.engine.checkpoint` - atomic safetensors + JSON checkpoints, state schemas
  (:func:`validate_state`), resume.
* :mod:`~hyperdnn.engine.model` - trained models saved by a run, :func:`load_model`.
* :mod:`~hyperdnn.engine.progress` - progress bars, log lines, optional TensorBoard.
* :mod:`~hyperdnn.engine.seeding` - derived seeds, devices, threads, memory.
* :mod:`~hyperdnn.engine.distributed` - data-parallel runs under torchrun (:class:`World`,
  each process's share of a minibatch, DistributedDataParallel around the trained modules).
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
from hyperdnn.engine.loop import LoopResult, LoopState, Unit, Work, check_loop_state, resumable, run_units
from hyperdnn.engine.model import load_model
from hyperdnn.engine.registry import RECIPES, Recipe, get_recipe, list_recipes, register_recipe
from hyperdnn.engine.report import Column, Report, Table
from hyperdnn.engine.run import Outcome, RunContext, RunOptions, execute
from hyperdnn.engine.seeding import derive_seed, make_generator, memory_limit

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "Checkpointer",
    "Column",
    "ConfigError",
    "LoopResult",
    "LoopState",
    "OptimizerState",
    "Outcome",
    "RECIPES",
    "Recipe",
    "Report",
    "RunContext",
    "RunOptions",
    "Table",
    "Unit",
    "UsageError",
    "Work",
    "build_config",
    "check_loop_state",
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
    "resumable",
    "run_command",
    "run_units",
    "validate_state",
]
