"""The recipe registry: named, runnable applications with a typed config.

A :class:`Recipe` bundles a name, a one-line summary, a config dataclass, an optional cheap
``check`` (run before anything is written) and the ``run`` function; a recipe that resumes
declares the schema of its checkpoint state (and may check it against the config), and a
recipe that saves a model tells the engine how to rebuild it. Built-in recipes are imported
lazily by name; other code adds its own with :func:`register_recipe`. The command line, the
tests and the docs all enumerate :func:`list_recipes`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from hyperdnn.engine.errors import UsageError
from hyperdnn.extras import check_requires

if TYPE_CHECKING:
    from torch import nn

    from hyperdnn.engine.checkpoint import Checkpoint
    from hyperdnn.engine.run import Outcome, RunContext

__all__ = ["Recipe", "register_recipe", "get_recipe", "list_recipes"]

#: built-in recipe name -> module that registers it on import
_BUILTIN: dict[str, str] = {
    "continual": "hyperdnn.apps.continual",
}

_RECIPES: dict[str, Recipe] = {}


@dataclass(frozen=True)
class Recipe:
    """A runnable application.

    Args:
        name: what ``hyperdnn run <name>`` calls it.
        summary: one line for ``hyperdnn run --list``.
        config: the config dataclass (fields declared with :func:`~hyperdnn.engine.config.option`).
        run: ``run(config, ctx) -> Outcome``: does the work, logging and checkpointing through
            the :class:`~hyperdnn.engine.run.RunContext`.
        check: ``check(config)`` raises :class:`~hyperdnn.engine.errors.UsageError` for input
            the run cannot use (e.g. more tasks than the data has); called before any file
            is written. Keep it cheap.
        description: longer text shown by ``--help`` (invocation, runtime, expected result).
        requires: optional modules the run needs -> the extra that installs them, e.g.
            ``{"matplotlib": "apps"}`` (see :mod:`hyperdnn.extras`). ``execute`` checks them,
            with the engine's own, before anything is written; a missing one is a
            :class:`~hyperdnn.engine.errors.UsageError` naming what to ``pip install``.
        state_schema: the schema of the JSON state the recipe saves in its checkpoints (a
            ``TypedDict``, see :func:`~hyperdnn.engine.checkpoint.validate_state`); on
            ``--resume`` the engine refuses a state that does not fit it before anything is
            written. ``None``: any mapping.
        check_state: ``check_state(config, checkpoint)`` raises
            :class:`~hyperdnn.engine.errors.CheckpointError` for a checkpoint (already checked
            against ``state_schema``) whose values do not fit the config (e.g. a position past
            the end of the run); called before anything is written.
        build_model: ``build_model(config, name, info) -> nn.Module``: the untrained module
            that the recipe saved under ``name`` with
            :meth:`~hyperdnn.engine.run.RunContext.save_model` (``info``: what it saved
            alongside); :func:`~hyperdnn.engine.model.load_model` loads the weights into it.
    """

    name: str
    summary: str
    config: type
    run: Callable[[Any, RunContext], Outcome]
    check: Callable[[Any], None] | None = None
    description: str = ""
    state_schema: Any = None
    check_state: Callable[[Any, Checkpoint], None] | None = None
    build_model: Callable[[Any, str, dict[str, Any]], nn.Module] | None = None
    requires: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"Recipe: name must be a non-empty identifier-like string, got {self.name!r}")
        if not (isinstance(self.config, type) and dataclasses.is_dataclass(self.config)):
            raise TypeError(f"Recipe {self.name!r}: config must be a dataclass type, got {self.config!r}")
        requires = check_requires(self.requires, f"Recipe {self.name!r}")
        object.__setattr__(self, "requires", MappingProxyType(requires))


def register_recipe(recipe: Recipe) -> Recipe:
    """Register ``recipe``; a second recipe under the same name is an error."""
    if not isinstance(recipe, Recipe):
        raise TypeError(f"register_recipe: expected a Recipe, got {type(recipe).__name__}")
    if recipe.name in _RECIPES:
        raise ValueError(f"recipe {recipe.name!r} is already registered")
    _RECIPES[recipe.name] = recipe
    return recipe


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name`` (importing a built-in one on first use).

    Raises:
        UsageError: no recipe has that name.
    """
    if name not in _RECIPES and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    if name not in _RECIPES:
        raise UsageError(f"unknown recipe {name!r}; expected one of {list_recipes()} (see hyperdnn run --list)")
    return _RECIPES[name]


def list_recipes() -> list[str]:
    """Names of every recipe, built-in ones included, sorted."""
    for name, module in _BUILTIN.items():
        if name not in _RECIPES:
            importlib.import_module(module)
    return sorted(_RECIPES)
