"""What the pareto and hyperparams recipes' units share: a model trained with its CPU and wall
seconds counted, both kept in the unit's checkpoint.

"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from hyperdnn.engine.loop import Work

__all__ = ["TimedWork"]


class TimedWork(Work):
    """A :class:`~hyperdnn.engine.loop.Work` whose state is ``self.model``'s weights and its
    training time: ``train_seconds`` (CPU) and ``wall_seconds`` (wall clock)."""

    model: nn.Module
    train_seconds: float
    wall_seconds: float

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return dict(self.model.state_dict()), {"train_seconds": self.train_seconds, "wall_seconds": self.wall_seconds}

    def load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        self.model.load_state_dict(tensors)
        self.train_seconds, self.wall_seconds = float(meta["train_seconds"]), float(meta["wall_seconds"])
