"""Continual learners: the contract a driver trains task by task, and the hypernetwork learner.

A :class:`ContinualLearner` is one continual-learning method. A driver (the ``continual``
recipe, or your own loop) calls, for each task ``t`` of a stream: :meth:`~ContinualLearner.begin_task`,
builds an optimizer over :meth:`~ContinualLearner.parameters_for`, calls
:meth:`~ContinualLearner.train_step` per minibatch, then :meth:`~ContinualLearner.end_task`,
and measures :meth:`~ContinualLearner.predict` on every task seen so far. The baselines
(:mod:`hyperdnn.baselines`) implement the same contract.

:class:`HypernetLearner` is the task-conditioned hypernetwork of von Oswald et al. (ICLR 2020):
one learned embedding per task, all target weights generated from it, the
:class:`~hyperdnn.methods.output_regularizer.OutputRegularizer` (optionally at the look-ahead
step) keeping the earlier tasks' weights, and task inference by entropy in CL2/CL3.

Example (two tasks of a toy problem)::

    >>> import torch, torch.nn as nn
    >>> from hyperdnn import MLP, HyperNetwork, Target, TaskEmbedding
    >>> from hyperdnn.methods import HypernetLearner
    >>> from hyperdnn.optim import adam
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> target = Target(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    >>> learner = HypernetLearner(HyperNetwork(target, TaskEmbedding(1, 4), MLP((16,))), target, 2, beta=0.1)
    >>> x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    >>> for t in range(2):
    ...     learner.begin_task(t)
    ...     opt = adam(learner.parameters_for(t), lr=1e-2)
    ...     logs = learner.train_step(t, x, y, torch.full_like(y, t), opt, torch.Generator())
    >>> sorted(logs), learner.predict(x, 1, 2, "CL1")[0].shape
    (['loss', 'reg'], torch.Size([32]))
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn import HyperModel, HyperNetwork, Target, TaskEmbedding
from hyperdnn.methods.lookahead import adam_candidate_step
from hyperdnn.methods.output_regularizer import OutputRegularizer
from hyperdnn.methods.task_inference import predict_with_task_inference

if TYPE_CHECKING:
    from hyperdnn.data.streams import Task

__all__ = ["ContinualLearner", "HypernetLearner", "load_module_state", "with_prefix", "without_prefix"]


class ContinualLearner(ABC):
    """A continual-learning method, trained task by task.

    ``name`` is the method's name in results (``"hnet"``, ``"finetune"`` ...). Labels are
    task-local (``0 .. classes_per_task - 1``) throughout; CL3 predictions are
    ``task * classes_per_task + local``.
    """

    name: str

    @abstractmethod
    def begin_task(self, t: int) -> None:
        """Prepare for task ``t`` (grow, snapshot, freeze); called once before training it."""

    @abstractmethod
    def parameters_for(self, t: int) -> list[nn.Parameter]:
        """The parameters trained on task ``t`` (no side effects)."""

    @abstractmethod
    def train_step(
        self,
        t: int,
        x: torch.Tensor,
        y: torch.Tensor,
        task_ids: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
    ) -> dict[str, float]:
        """One optimisation step on a minibatch; returns scalars to log (``loss`` ...).

        Args:
            t: the task being trained.
            x: ``(B, F)`` inputs.
            y: ``(B,)`` task-local labels.
            task_ids: ``(B,)`` the task of each sample (all ``t``, except in joint training).
            optimizer: built over :meth:`parameters_for` ``(t)``.
            generator: for any random choice of the step (e.g. which tasks to regularise).
        """

    @abstractmethod
    def end_task(self, t: int, task: Task, generator: torch.Generator) -> None:
        """Finish task ``t`` (e.g. estimate Fisher information on its training data)."""

    @abstractmethod
    def predict(self, x: torch.Tensor, task: int, seen: int, scenario: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Predicted labels ``(N,)`` for inputs ``x (N, F)`` of ``task`` after ``seen`` tasks, and
        the inferred task ``(N,)`` where the method infers one (else ``None``). Labels are
        task-local in CL1/CL2 and ``task * classes_per_task + local`` in CL3."""

    @abstractmethod
    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything needed to continue: tensors and a JSON-serialisable rest."""

    @abstractmethod
    def load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        """Restore what :meth:`state` returned, on a freshly built learner.

        Raises:
            ValueError: the tensors do not fit the learner (every mismatch named).
        """

    @abstractmethod
    def num_parameters(self) -> int:
        """Trainable parameters of the method after all tasks so far (embeddings included)."""


def with_prefix(prefix: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``tensors`` with ``prefix`` before every name."""
    return {prefix + k: v for k, v in tensors.items()}


def without_prefix(prefix: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries of ``tensors`` whose name starts with ``prefix``, without it."""
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_module_state(module: nn.Module, tensors: Mapping[str, torch.Tensor], what: str) -> None:
    """``module.load_state_dict(tensors, strict=True)``, with a one-line error.

    Raises:
        ValueError: ``"the saved state does not fit the <what>: Missing key(s) ..."``.
    """
    try:
        module.load_state_dict(dict(tensors), strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise ValueError(f"the saved state does not fit the {what}: {' '.join(first[:3])}") from None


class HypernetLearner(ContinualLearner):
    """The task-conditioned hypernetwork with the output regulariser (HNET; HNET+ENT in CL2/CL3).

    Args:
        hnet: a hypernetwork whose conditioner is a :class:`~hyperdnn.TaskEmbedding` (it grows
            by one embedding per new task).
        target: the target it generates for; ``target(weights, x)`` gives ``(N, C)`` logits.
        classes_per_task: ``C``.
        beta: the regulariser's weight (see :class:`OutputRegularizer`).
        lookahead: regularise at ``Theta + dTheta``, the optimizer's candidate step on the task
            loss alone (the optimizer must be ``torch.optim.Adam``).
        reg_tasks: earlier tasks regularised per step, drawn at random (0: all of them).

    While task ``t`` trains, the hypernetwork and embedding ``t`` are trained; the earlier
    embeddings are frozen. Both modules stay on the device they are on. The pair runs as one
    :class:`~hyperdnn.HyperModel` (``learner.model``), so a target's BatchNorm running
    statistics are kept per task.

    Raises:
        TypeError: ``hnet``'s conditioner is not a ``TaskEmbedding``, or ``target`` is not a
            ``Target``.
        ValueError: ``classes_per_task < 1``, or bad ``beta``/``reg_tasks``.
    """

    name = "hnet"

    def __init__(
        self,
        hnet: HyperNetwork,
        target: Target,
        classes_per_task: int,
        beta: float,
        lookahead: bool = False,
        reg_tasks: int = 0,
    ):
        if not isinstance(hnet.conditioner, TaskEmbedding):
            raise TypeError(
                f"HypernetLearner: hnet needs a TaskEmbedding conditioner, got {type(hnet.conditioner).__name__}"
            )
        if not isinstance(target, Target):
            raise TypeError(f"HypernetLearner: target must be a Target, got {type(target).__name__}")
        if isinstance(classes_per_task, bool) or not isinstance(classes_per_task, int) or classes_per_task < 1:
            raise ValueError(f"HypernetLearner: classes_per_task must be an int >= 1, got {classes_per_task!r}")
        self.hnet = hnet
        self.target = target
        # the pair as one model: a target with BatchNorm running statistics keeps them per
        # task ("auto" statistics for a TaskEmbedding), as HyperModel does
        self.model = HyperModel(hnet, target)
        self.k = classes_per_task
        self.lookahead = bool(lookahead)
        self.regularizer = OutputRegularizer(beta, reg_tasks)
        self._checked: set[int] = set()  # tasks whose optimizer was looked at for their embedding

    @property
    def embeddings(self) -> nn.ParameterList:
        """The task embeddings, one parameter per task begun."""
        return self.hnet.conditioner.embeddings  # type: ignore[union-attr,return-value]

    def _shared_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.hnet.named_parameters() if not n.startswith("conditioner.")]

    def _freeze_old_embeddings(self, t: int) -> None:
        for i, e in enumerate(self.embeddings):
            e.requires_grad_(i == t)

    def begin_task(self, t: int) -> None:
        while len(self.embeddings) <= t:
            self.hnet.conditioner.add_tasks(1)  # type: ignore[operator]
        self._freeze_old_embeddings(t)
        self.regularizer.snapshot(self.hnet, t)

    def parameters_for(self, t: int) -> list[nn.Parameter]:
        return [p for _, p in self._shared_parameters()] + [self.embeddings[t]]

    def train_step(self, t, x, y, task_ids, optimizer, generator) -> dict[str, float]:
        embedding = self.embeddings[t]
        if t not in self._checked:  # once per task, not on every step
            self._checked.add(t)
            if not any(p is embedding for g in optimizer.param_groups for p in g["params"]):
                # an optimizer built before the task began leaves the task's embedding fixed
                warnings.warn(
                    f"HypernetLearner.train_step: the optimizer does not hold task {t}'s embedding, which stays "
                    f"fixed (an optimizer built before begin_task({t})? parameters_for({t}) holds it)",
                    stacklevel=2,
                )
        self.hnet.train()
        self.target.train()
        optimizer.zero_grad(set_to_none=True)
        task_loss = F.cross_entropy(self.model(x, t), y)
        if self.regularizer.num_tasks == 0 or self.regularizer.beta == 0:
            task_loss.backward()
            optimizer.step()
            return {"loss": task_loss.detach().item(), "reg": 0.0}
        delta = None
        if self.lookahead:
            named = self._shared_parameters()
            grads = torch.autograd.grad(task_loss, [p for _, p in named], retain_graph=True, allow_unused=True)
            steps = adam_candidate_step(optimizer, [p for _, p in named], grads)  # type: ignore[arg-type]
            delta = {n: d for (n, _), d in zip(named, steps)}
        reg = self.regularizer(self.hnet, delta, generator)
        (task_loss + reg).backward()
        optimizer.step()
        return {"loss": task_loss.detach().item(), "reg": reg.detach().item()}

    def end_task(self, t: int, task: Task, generator: torch.Generator) -> None:
        pass  # nothing to do: the next task's snapshot is taken when it begins

    @torch.no_grad()
    def task_logits(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """``(K, N, C)``: the target run with the weights of tasks ``ids (K,)`` on ``x (N, F)``,
        in one batched pass."""
        return self.model(x, ids.to(self.hnet.theta_scale.device), mode="ensemble")

    def predict(self, x, task, seen, scenario):
        self.hnet.eval()
        self.target.eval()
        return predict_with_task_inference(self.task_logits, x, task, seen, scenario, self.k)

    def state(self):
        tensors = with_prefix("hnet.", self.hnet.state_dict())
        tensors.update(with_prefix("norm.", self.model.norm_stats.state_dict()))  # per-task statistics
        if self.regularizer.targets is not None:
            tensors["reg.targets"] = self.regularizer.targets
        return tensors, {"embeddings": len(self.embeddings)}

    def load_state(self, tensors, meta) -> None:
        n = int(meta["embeddings"])
        if n > len(self.embeddings):
            self.hnet.conditioner.add_tasks(n - len(self.embeddings))  # type: ignore[operator]
        load_module_state(self.hnet, without_prefix("hnet.", tensors), "hypernetwork")
        load_module_state(self.model.norm_stats, without_prefix("norm.", tensors), "per-task statistics")
        targets = tensors.get("reg.targets")
        self.regularizer.targets = None if targets is None else targets.to(self.hnet.theta_scale.device)
        self._freeze_old_embeddings(n - 1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.hnet.parameters())
