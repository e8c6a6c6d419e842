"""Trained models of a run: ``<out>/<name>.safetensors``, with the config that rebuilds them.

A recipe saves what it trained with :meth:`RunContext.save_model
<hyperdnn.engine.run.RunContext.save_model>` (which calls :func:`save_model`): the module's
``state_dict`` (tensors only, never pickled code) and, in the safetensors metadata, the
recipe's name, the run's resolved config (as in ``config.yaml``) and a small JSON ``info`` the
recipe chooses (sizes that come from the data, for instance). The file is self-contained: it
can be copied out of the run folder.

:func:`load_model` reads it back: it rebuilds the untrained module with the recipe's
``build_model(config, name, info)``, loads the weights (every key must fit) and returns the
module in eval mode, without touching the caller's random number generator.

Example::

    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from hyperdnn.engine.model import read_model_info, save_model
    >>> path = Path(tempfile.mkdtemp()) / "model.safetensors"
    >>> save_model(path, torch.nn.Linear(3, 2), "continual", {"seed": 0}, {"in_features": 3})
    >>> read_model_info(path)["info"]
    {'in_features': 3}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hyperdnn.engine.checkpoint import atomic_write_bytes
from hyperdnn.engine.errors import CheckpointError

__all__ = ["MODEL_FORMAT", "save_model", "read_model_info", "load_model", "info_sizes"]

#: the ``format`` entry of a model file's metadata
MODEL_FORMAT = "hyperdnn-model/1"


def save_model(
    path: str | Path,
    module: nn.Module,
    recipe: str,
    config: Mapping[str, Any],
    info: Mapping[str, Any] | None = None,
) -> None:
    """Write ``module``'s ``state_dict`` to ``path`` (safetensors, atomically).

    Args:
        path: the file (``<out>/<name>.safetensors`` in a run).
        module: the trained module; tensors are stored as contiguous CPU copies.
        recipe: the name of the recipe whose ``build_model`` rebuilds the module.
        config: the run's resolved config (recipe options, seed, device, threads).
        info: JSON-serialisable extras ``build_model`` needs (default: none).

    Raises:
        TypeError: ``module`` is not an ``nn.Module``, or ``config``/``info`` are not JSON.
    """
    from safetensors.torch import save as st_save

    if not isinstance(module, nn.Module):
        raise TypeError(f"save_model: expected an nn.Module, got {type(module).__name__}")
    try:  # a config field may allow inf/nan: Python's JSON writes and reads them back (Infinity, NaN)
        metadata = {
            "format": MODEL_FORMAT,
            "recipe": str(recipe),
            "config": json.dumps(dict(config)),
            "info": json.dumps(dict(info or {})),
        }
    except (TypeError, ValueError) as e:
        raise TypeError(f"save_model: config and info must be JSON-serialisable: {e}") from None
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
    atomic_write_bytes(path, st_save(tensors, metadata=metadata))


def _model_path(source: str | Path, name: str) -> Path:
    p = Path(source)
    if p.is_dir():
        p = p / f"{name}.safetensors"
        if not p.is_file():
            raise CheckpointError(f"no model {name!r} in {str(source)!r} (expected {str(p)!r})")
    elif not p.is_file():
        raise CheckpointError(f"no model at {str(p)!r}: expected a run folder or a .safetensors file")
    return p


def read_model_info(path: str | Path) -> dict[str, Any]:
    """The metadata of a model file: ``recipe`` (str), ``config`` and ``info`` (dicts).

    Raises:
        CheckpointError: the file is unreadable, not safetensors, or not a model file.
    """
    from safetensors import safe_open

    p = Path(path)
    try:
        with safe_open(str(p), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{str(p)!r} is not a readable safetensors file ({e})") from None
    if meta.get("format") != MODEL_FORMAT:
        raise CheckpointError(
            f"{str(p)!r} is not a model file of this version (format {meta.get('format')!r}, expected {MODEL_FORMAT!r})"
        )
    try:
        config, info = json.loads(meta["config"]), json.loads(meta["info"])
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{str(p)!r}: the model's config or info is unreadable ({e})") from None
    if not isinstance(config, dict) or not isinstance(info, dict):
        raise CheckpointError(f"{str(p)!r}: the model's config and info must be mappings")
    return {"recipe": meta.get("recipe", ""), "config": config, "info": info}


def info_sizes(info: Mapping[str, Any], *keys: str) -> dict[str, int]:
    """The sizes ``keys`` of a saved model's ``info`` (what a recipe's ``build_model`` reads), each
    an int >= 1.

    Raises:
        CheckpointError: a key missing or not an int >= 1 (naming the keys and what was given).

    Example::

        >>> info_sizes({"features": 3, "arms": 2}, "features", "arms")
        {'features': 3, 'arms': 2}
    """
    sizes = {k: info.get(k) for k in keys}
    bad = {k: v for k, v in sizes.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1}
    if bad:
        raise CheckpointError(f"the model's info needs {' and '.join(keys)} (ints >= 1), got {bad}")
    return sizes  # type: ignore[return-value]


def load_model(source: str | Path, name: str = "model", map_location: str | torch.device = "cpu") -> nn.Module:
    """The trained module a run saved, rebuilt from its config and loaded, in eval mode.

    Args:
        source: a run folder (then ``<source>/<name>.safetensors`` is read) or a model file.
        name: the model's name in the run folder.
        map_location: the device to put the module on.

    Returns:
        The module ``recipe.build_model`` builds, with the saved weights (every key matched).

    Raises:
        CheckpointError: no such model, an unreadable or foreign file, or weights that do
            not fit the rebuilt module.
        UsageError: the recipe is unknown, or its saved config no longer fits its options.

    Example (after ``hyperdnn run continual --out runs/continual``)::

        model = load_model("runs/continual")       # a HyperModel: model(x, task_id) -> logits
    """
    from safetensors.torch import load_file

    from hyperdnn.engine.config import build_config, describe
    from hyperdnn.engine.registry import get_recipe

    path = _model_path(source, name)
    meta = read_model_info(path)
    recipe = get_recipe(meta["recipe"])
    if recipe.build_model is None:
        raise CheckpointError(f"{str(path)!r}: recipe {recipe.name!r} does not rebuild saved models")
    fields = {f.name for f in describe(recipe.config)}
    config = build_config(recipe.config, {k: v for k, v in meta["config"].items() if k in fields})
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{str(path)!r} is not a readable safetensors file ({e})") from None
    with torch.random.fork_rng(devices=[]):  # building may draw (initialisation); the caller's RNG stays
        module = recipe.build_model(config, name, meta["info"])
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = " ".join(str(e).strip().splitlines()[:3])
        raise CheckpointError(f"{str(path)!r}: the saved weights do not fit the rebuilt model: {first}") from None
    return module.to(map_location).eval()
