"""The built-in recipes: each public module here is the recipe of its name.

* :mod:`~hyperdnn.recipes.demo` - ``hyperdnn run demo`` (``hyperdnn demo``): the review's
  HyperDNN example on scikit-learn digits.
* :mod:`~hyperdnn.recipes.dynamic` - ``hyperdnn run dynamic`` (``hyperdnn demo --dynamic``):
  one hypernetwork for MLPs of several widths.
* :mod:`~hyperdnn.recipes.continual` - ``hyperdnn run continual``: continual learning with a
  task-conditioned hypernetwork against the baselines.

A module is imported only when its recipe is asked for (``hyperdnn run <name>``,
``hyperdnn run --list``); it registers its :class:`~hyperdnn.engine.Recipe` on import. A new
recipe is one new file (``docs/recipes.md`` shows how); modules whose name starts with ``_``
hold a recipe's helpers and are not recipes.
"""
