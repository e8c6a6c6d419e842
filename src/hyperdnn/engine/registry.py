"""The recipe registry: named, runnable applications with a typed config.

A :class:`Recipe` bundles a name, a one-line summary, a config dataclass, an optional cheap
``check`` (run before anything is written) and the ``run`` function; a recipe that resumes
declares the schema of its checkpoint state (and may check it against the config), and a
recipe that saves a model tells the engine how to rebuild it.

Recipes live in :data:`RECIPES`, a :class:`~hyperdnn.registry.Registry` filled three ways:

* built in: every public module of :mod:`hyperdnn.recipes` is a recipe of its file's name
  (``recipes/continual.py`` is ``continual``), imported on first use, where it calls
  :func:`register_recipe`; a new built-in recipe is one new file, no list to edit;
* from another installed package, through the entry-point group ``hyperdnn.recipes`` (in its
  ``pyproject.toml``: ``[project.entry-points."hyperdnn.recipes"] myrecipe =
  "mypackage.recipe:RECIPE"``, a :class:`Recipe` whose name is the entry point's);
* in code, with :func:`register_recipe`.

The command line, the tests and the docs all enumerate :func:`list_recipes`.
"""

from __future__ import annotations

import dataclasses
import pkgutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from hyperdnn.engine.errors import UsageError
from hyperdnn.extras import check_requires
from hyperdnn.registry import Registry, RegistryError

if TYPE_CHECKING:
    from torch import nn

    from hyperdnn.engine.checkpoint import Checkpoint
    from hyperdnn.engine.run import Outcome, RunContext

__all__ = ["Recipe", "RECIPES", "register_recipe", "get_recipe", "list_recipes"]


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
        description: longer text shown by ``--help`` (invocation, runtime, expected result);
            default: the part after ``Run::`` of the docstring of ``run``'s module.
        threads: CPU threads for torch when ``--threads`` is 0 (0: torch's default); a recipe
            whose matrices are tiny declares 1, where more threads only add overhead.
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
        data_parallel: ``True`` for a recipe that passes its trained modules through
            :meth:`~hyperdnn.engine.run.RunContext.prepare` (or its optimizers through
            :meth:`~hyperdnn.engine.run.RunContext.prepare_optimizer`) and its minibatches through
            :meth:`~hyperdnn.engine.run.RunContext.shard`: it trains data-parallel under
            ``torchrun`` (and, through ``prepare``, compiled with ``--compile``). Otherwise ``False`` or one line
            saying why not (``"its training is RL rollouts, not minibatches of a data set"``),
            which the refusal of ``torchrun`` with several processes and of ``--compile`` shows.
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
    threads: int = 0
    requires: Mapping[str, str] = dataclasses.field(default_factory=dict)
    data_parallel: bool | str = False

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"Recipe: name must be a non-empty identifier-like string, got {self.name!r}")
        if not (isinstance(self.config, type) and dataclasses.is_dataclass(self.config)):
            raise TypeError(f"Recipe {self.name!r}: config must be a dataclass type, got {self.config!r}")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 0:
            raise ValueError(f"Recipe {self.name!r}: threads must be an int >= 0, got {self.threads!r}")
        if not isinstance(self.data_parallel, (bool, str)) or self.data_parallel == "":
            raise TypeError(
                f"Recipe {self.name!r}: data_parallel must be a bool or a non-empty reason, got {self.data_parallel!r}"
            )
        if not self.description:
            doc = getattr(sys.modules.get(getattr(self.run, "__module__", "")), "__doc__", None) or ""
            object.__setattr__(self, "description", doc.split("Run::")[-1].strip("\n") if "Run::" in doc else "")
        requires = check_requires(self.requires, f"Recipe {self.name!r}")
        object.__setattr__(self, "requires", MappingProxyType(requires))


def _check_recipe(value: object) -> None:
    if not isinstance(value, Recipe):
        raise TypeError(f"a recipe must be a hyperdnn.engine.Recipe, got {type(value).__name__}")


def _builtin_recipes() -> dict[str, str]:
    """Recipe name -> module for every public module of :mod:`hyperdnn.recipes`."""
    import hyperdnn.recipes

    found = pkgutil.iter_modules(hyperdnn.recipes.__path__)
    return {m.name: f"hyperdnn.recipes.{m.name}" for m in found if not m.name.startswith("_") and not m.ispkg}


#: every recipe by name (built-in ones imported on first use, installed packages' through the
#: entry-point group ``hyperdnn.recipes``)
RECIPES: Registry[Recipe] = Registry(
    "recipe", builtin=_builtin_recipes(), entry_point_group="hyperdnn.recipes", check=_check_recipe
)


def register_recipe(recipe: Recipe) -> Recipe:
    """Register ``recipe`` under its name (a second recipe of the same name warns and wins).

    Raises:
        TypeError: ``recipe`` is not a :class:`Recipe`.
    """
    _check_recipe(recipe)
    return RECIPES.register(recipe.name, recipe)


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name`` (importing a built-in or installed one on first use).

    Raises:
        UsageError: no recipe has that name (naming close matches and every recipe), or the
            entry point of that name holds a recipe of another name.
    """
    try:
        recipe = RECIPES.get(name)
    except RegistryError as e:
        raise UsageError(f"{e} (see hyperdnn run --list)") from None
    if recipe.name != name:
        raise UsageError(f"the recipe registered as {name!r} is named {recipe.name!r}; the two must agree")
    return recipe


def list_recipes(pattern: str | None = None) -> list[str]:
    """Names of every recipe (built-in and installed ones included), sorted, optionally only
    those matching the glob ``pattern``."""
    return RECIPES.list(pattern)
