"""The application kit documents itself: every module of methods/, baselines/, metrics/, data/,
the engine's loop and report, the networks, optimizers and recipes has a docstring; every public
name is documented; the runnable examples in the docstrings run."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import hyperdnn.baselines
import hyperdnn.data
import hyperdnn.methods
import hyperdnn.metrics
import hyperdnn.recipes
from tests.helpers import run_doctests

PACKAGES = [hyperdnn.methods, hyperdnn.baselines, hyperdnn.metrics, hyperdnn.data, hyperdnn.recipes]
MODULES = sorted(
    {m.name for p in PACKAGES for m in pkgutil.iter_modules(p.__path__, p.__name__ + ".")}
    | {p.__name__ for p in PACKAGES}
    | {"hyperdnn.engine.loop", "hyperdnn.engine.report", "hyperdnn.networks", "hyperdnn.optim", "hyperdnn.cli"}
)
#: modules without a runnable example: they are run end to end instead (every recipe by its own
#: tests/test_<name>.py, the demo by tests/test_cli_demo.py) or only gather names
NO_EXAMPLE = {m for m in MODULES if m.startswith("hyperdnn.recipes.")} | {
    "hyperdnn.baselines",
    "hyperdnn.data",
    "hyperdnn.data.mnist",
    "hyperdnn.data.offline",
    "hyperdnn.engine.loop",
    "hyperdnn.methods",
    "hyperdnn.metrics",
    "hyperdnn.recipes",
    "hyperdnn.recipes.continual",
    "hyperdnn.recipes.demo",
    "hyperdnn.recipes.dynamic",
}


@pytest.mark.parametrize("module", MODULES)
def test_every_public_name_is_documented(module) -> None:
    mod = importlib.import_module(module)
    assert (mod.__doc__ or "").strip(), module
    for name in getattr(mod, "__all__", []):
        obj = getattr(mod, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert (obj.__doc__ or "").strip(), f"{module}.{name}"


@pytest.mark.parametrize("module", sorted(set(MODULES) - NO_EXAMPLE))
def test_docstring_examples_run(module) -> None:
    run_doctests(module)
