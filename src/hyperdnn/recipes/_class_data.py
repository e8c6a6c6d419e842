"""What the few- and zero-shot recipes share: their data, a data set's classes (glyphs rendered
with the run's options, another data set through its class-level view), checked before a run.

Example::

    >>> from hyperdnn.recipes._class_data import glyph_classes
    >>> glyph_classes(("armenian", "georgian"))
    194
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

from hyperdnn.data import DATASETS, ClassData, get_dataset
from hyperdnn.data.glyphs import GLYPH_CLASSES, load_glyphs, script_of
from hyperdnn.engine.errors import CheckpointError, UsageError
from hyperdnn.engine.loop import Work
from hyperdnn.optim import adam

__all__ = ["load_class_data", "check_class_data", "glyph_classes", "settle_config", "saved_shape", "LearnerWork"]


def settle_config(cfg: Any, preset: Mapping[str, Any]) -> None:
    """With ``cfg.quick``, the ``preset``'s values where an option keeps its default; then refuse a
    ``cfg.data`` that is not a registered data set (a :class:`ValueError`)."""
    if cfg.quick:  # the preset's values where the option keeps its default
        defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
        for k, v in preset.items():
            if getattr(cfg, k) == defaults[k]:
                setattr(cfg, k, v)
    if cfg.data not in DATASETS:
        raise ValueError(f"--data: expected a registered data set, one of {DATASETS.list()}, got {cfg.data!r}")


def saved_shape(info: Mapping[str, Any]) -> list[int]:
    """The example shape a saved model's ``info`` holds (a :class:`CheckpointError` if it has none)."""
    shape = info.get("shape")
    if not isinstance(shape, list) or not shape or not all(isinstance(s, int) and s >= 1 for s in shape):
        raise CheckpointError(f"the model's info needs shape (ints >= 1), got {shape!r}")
    return shape


class LearnerWork(Work):
    """What the few- and zero-shot units share: ``self.learner`` trained with Adam at ``self.cfg.lr``,
    its training curve ``self.curve`` kept in the checkpoints."""

    learner: torch.nn.Module
    cfg: Any
    curve: list[float]

    def start_stage(self, stage: int, fresh: bool) -> torch.optim.Optimizer:
        self.optimizer = adam(self.learner.parameters(), lr=self.cfg.lr)
        return self.optimizer

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return dict(self.learner.state_dict()), {"curve": list(self.curve)}

    def load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        self.learner.load_state_dict(dict(tensors))
        self.curve = [float(v) for v in meta["curve"]]


def load_class_data(data: str, root: str, samples: int, scripts: tuple[str, ...], seed: int) -> ClassData:
    """The examples of data set ``data`` by class (``samples`` and ``scripts`` apply to glyphs;
    ``seed`` draws their jitter); a problem is a :class:`UsageError` naming it."""
    try:
        if data == "glyphs":
            return load_glyphs(samples=samples, seed=seed % 2**63, scripts=scripts)
        return get_dataset(data).classes(seed, root)  # type: ignore[misc]
    except (ValueError, LookupError, FileNotFoundError, ImportError) as e:
        raise UsageError(f"--data {data}: {e}") from None


def check_class_data(data: str, root: str, descriptions: bool) -> None:
    """Refuse a data set without a class-level view, one whose files or packages are missing,
    and (``descriptions``) the data sets known to describe no class."""
    dataset = get_dataset(data)
    if dataset.classes is None:
        with_view = [n for n in DATASETS.list() if DATASETS.get(n).classes is not None]
        raise UsageError(f"--data: {data!r} has no class-level view (classes with names); use one of {with_view}")
    if descriptions and data == "omniglot":
        raise UsageError("--data: omniglot describes no class; zero-shot learning needs descriptions (glyphs, awa2)")
    problem = dataset.problem(root)
    if problem is not None:
        raise UsageError(f"--data {data}: {problem}")


def glyph_classes(scripts: tuple[str, ...]) -> int:
    """How many glyph classes the ``scripts`` have (without rendering them)."""
    return sum(script_of(ch) in scripts for ch in GLYPH_CLASSES)
