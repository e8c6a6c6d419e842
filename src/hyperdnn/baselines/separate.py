"""Separate networks: a fresh network per task.

Nothing is forgotten by construction (each task keeps its own network), at ``T`` times the
parameters; the reference a task-conditioned hypernetwork is measured against. Without a task
identity (CL2/CL3) every task's network runs on the input and the task is inferred by
predictive entropy (:func:`~hyperdnn.methods.task_inference.predict_with_task_inference`).

Example::

    >>> import torch
    >>> from hyperdnn.baselines import SeparateNetworks
    >>> from hyperdnn.networks import mlp
    >>> learner = SeparateNetworks(lambda: mlp(4, (8,), 2), classes_per_task=2)
    >>> for t in range(3):
    ...     learner.begin_task(t)
    >>> len(learner.nets), learner.predict(torch.randn(5, 4), 0, 3, "CL3")[0].shape
    (3, torch.Size([5]))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn.methods.continual import ContinualLearner, load_module_state, with_prefix, without_prefix
from hyperdnn.methods.task_inference import predict_with_task_inference

__all__ = ["SeparateNetworks"]


class SeparateNetworks(ContinualLearner):
    """One network per task, trained on its task alone.

    Args:
        make_network: builds the network of a new task, ``(N, F) -> (N, C)`` logits, on the
            device to compute on; called in :meth:`begin_task` (under whatever seed the
            driver set).
        classes_per_task: ``C``.

    Raises:
        TypeError: ``make_network`` is not callable, or returns something else than an
            ``nn.Module``.
        ValueError: ``classes_per_task < 1``.
    """

    name = "separate"

    def __init__(self, make_network: Callable[[], nn.Module], classes_per_task: int):
        if not callable(make_network):
            raise TypeError(f"SeparateNetworks: make_network must be callable, got {type(make_network).__name__}")
        if isinstance(classes_per_task, bool) or not isinstance(classes_per_task, int) or classes_per_task < 1:
            raise ValueError(f"SeparateNetworks: classes_per_task must be an int >= 1, got {classes_per_task!r}")
        self.make_network = make_network
        self.k = classes_per_task
        self.nets = nn.ModuleList()

    def begin_task(self, t: int) -> None:
        while len(self.nets) <= t:
            net = self.make_network()
            if not isinstance(net, nn.Module):
                raise TypeError(f"SeparateNetworks: make_network returned {type(net).__name__}, not an nn.Module")
            self.nets.append(net)

    def parameters_for(self, t: int) -> list[nn.Parameter]:
        return list(self.nets[t].parameters())

    def train_step(self, t, x, y, task_ids, optimizer, generator) -> dict[str, float]:
        self.nets[t].train()
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.nets[t](x), y)
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach().item()}

    def end_task(self, t, task, generator) -> None:
        pass  # the task's network is done; the next task gets a new one

    @torch.no_grad()
    def task_logits(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """``(K, N, C)``: the networks of tasks ``ids (K,)`` on ``x (N, F)``."""
        return torch.stack([self.nets[int(i)](x) for i in ids])

    def predict(self, x, task, seen, scenario):
        self.nets.eval()
        return predict_with_task_inference(self.task_logits, x, task, seen, scenario, self.k)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return with_prefix("nets.", self.nets.state_dict()), {"nets": len(self.nets)}

    def load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        self.begin_task(int(meta["nets"]) - 1)
        load_module_state(self.nets, without_prefix("nets.", tensors), "separate networks")

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.nets.parameters())
