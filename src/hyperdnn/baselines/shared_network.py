"""One network for every task, with the output layer each continual-learning scenario needs.

Fine-tuning, EWC and joint training (:mod:`~hyperdnn.baselines.finetune`,
:mod:`~hyperdnn.baselines.ewc`, :mod:`~hyperdnn.baselines.joint`) train a single network on
every task; they differ only in their loss and when they train. :class:`SharedNetworkLearner`
holds what they share. The output layer depends on the scenario (see
:func:`scenario_outputs`):

* CL1 (task given): one head per task, ``T * C`` units; a task uses its slice of ``C``.
* CL2 (no task, same classes): one shared head of ``C`` units.
* CL3 (no task, every class seen): ``T * C`` units, trained and evaluated on the classes seen
  so far (``active``).

Example::

    >>> from hyperdnn.baselines import scenario_outputs
    >>> [scenario_outputs(s, classes_per_task=2, num_tasks=5) for s in ("CL1", "CL2", "CL3")]
    [10, 2, 10]
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn.methods.continual import ContinualLearner, load_module_state, with_prefix, without_prefix
from hyperdnn.methods.task_inference import SCENARIOS

__all__ = ["SharedNetworkLearner", "scenario_outputs"]


def scenario_outputs(scenario: str, classes_per_task: int, num_tasks: int) -> int:
    """The output units of a shared network in ``scenario``: ``C`` in CL2, ``T * C`` otherwise.

    Raises:
        ValueError: an unknown scenario, or counts that are not ints ``>= 1``.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}, got {scenario!r}")
    for name, value in {"classes_per_task": classes_per_task, "num_tasks": num_tasks}.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return classes_per_task if scenario == "CL2" else classes_per_task * num_tasks


class SharedNetworkLearner(ContinualLearner):
    """A continual learner that trains one network on every task (abstract: the subclasses
    say what a step optimises and what happens at a task's end).

    Args:
        model: maps ``(N, F)`` inputs to ``(N, scenario_outputs(scenario, C, T))`` logits.
        scenario: ``"CL1"``, ``"CL2"`` or ``"CL3"``.
        classes_per_task: ``C``.
        num_tasks: ``T``, the tasks of the stream.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: an unknown scenario or bad counts; at the first step, a model whose output
            width is not the scenario's.
    """

    def __init__(self, model: nn.Module, scenario: str, classes_per_task: int, num_tasks: int):
        if not isinstance(model, nn.Module):
            raise TypeError(f"{type(self).__name__}: model must be an nn.Module, got {type(model).__name__}")
        self.units = scenario_outputs(scenario, classes_per_task, num_tasks)
        self.model = model
        self.scenario = scenario
        self.k = classes_per_task
        self.num_tasks = num_tasks
        self.active = classes_per_task

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        if logits.shape[-1] != self.units:
            raise ValueError(
                f"{type(self).__name__}: the model gives {logits.shape[-1]} outputs; scenario {self.scenario} with "
                f"{self.num_tasks} tasks of {self.k} classes needs {self.units}"
            )
        return logits

    def outputs(self, logits: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        """The logits the loss sees, ``(B, C)`` or ``(B, active)``: each sample's task head
        (CL1), all (CL2), the classes seen so far (CL3)."""
        if self.scenario == "CL1":
            heads = logits.view(logits.shape[0], -1, self.k)
            return heads.gather(1, task_ids.view(-1, 1, 1).expand(-1, 1, self.k)).squeeze(1)
        if self.scenario == "CL2":
            return logits
        return logits[:, : self.active]

    def labels(self, y: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        """The loss's labels ``(B,)``: task-local, or ``task * C + local`` in CL3."""
        return y + task_ids * self.k if self.scenario == "CL3" else y

    def task_loss(self, x: torch.Tensor, y: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the scenario's outputs (the model in training mode)."""
        self.model.train()
        return F.cross_entropy(self.outputs(self._logits(x), task_ids), self.labels(y, task_ids))

    def check_one_task(self, t: int, task_ids: torch.Tensor) -> None:
        """Refuse a batch of sequential training with samples of another task than ``t``.

        Raises:
            ValueError: naming the learner, ``t`` and the other task ids.
        """
        other = task_ids[task_ids != t]
        if other.numel():
            raise ValueError(
                f"{type(self).__name__} trains one task at a time: expected task ids {t}, "
                f"got {sorted(set(other.tolist()))} too"
            )

    @staticmethod
    def optimise(optimizer: torch.optim.Optimizer, loss: torch.Tensor, **logs: torch.Tensor) -> dict[str, float]:
        """``backward`` and ``step`` on ``loss`` (gradients zeroed first); returns ``{"loss": ...}``
        and ``logs`` as floats."""
        optimizer.zero_grad(set_to_none=True)
        (loss + sum(logs.values())).backward()
        optimizer.step()
        return {"loss": loss.detach().item(), **{k: v.detach().item() for k, v in logs.items()}}

    def begin_task(self, t: int) -> None:
        self.active = (t + 1) * self.k

    def parameters_for(self, t: int) -> list[nn.Parameter]:
        return list(self.model.parameters())

    @abstractmethod
    def train_step(self, t, x, y, task_ids, optimizer, generator) -> dict[str, float]: ...

    @abstractmethod
    def end_task(self, t, task, generator) -> None: ...

    @torch.no_grad()
    def predict(self, x, task, seen, scenario):
        self.model.eval()
        logits = self._logits(x)
        if self.scenario == "CL1":
            return logits[:, task * self.k : (task + 1) * self.k].argmax(-1), None
        if self.scenario == "CL2":
            return logits.argmax(-1), None
        return logits[:, : seen * self.k].argmax(-1), None

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return with_prefix("model.", self.model.state_dict()), {"active": self.active}

    def load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        load_module_state(self.model, without_prefix("model.", tensors), f"{self.name} network")
        self.active = int(meta["active"])

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())
