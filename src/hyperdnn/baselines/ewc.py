"""Online elastic weight consolidation (EWC; Kirkpatrick et al., 2017; online form: Schwarz et
al., 2018).

After each task the diagonal Fisher information ``F_t`` of the network's parameters is
estimated on that task's training data and accumulated, ``F <- gamma F + F_t``, and the
parameters are remembered, ``theta* <- theta``. Training on later tasks adds the penalty
``lambda / 2 * sum F (theta - theta*)^2``, which holds the parameters that mattered for the
earlier tasks. See :class:`SharedNetworkLearner` for the output layer of each scenario.

Example::

    >>> import torch
    >>> from hyperdnn.baselines import EWC
    >>> from hyperdnn.data.streams import Task
    >>> from hyperdnn.networks import mlp
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> learner = EWC(mlp(4, (8,), 2), "CL2", classes_per_task=2, num_tasks=2, ewc_lambda=10.0, fisher_samples=16)
    >>> x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    >>> learner.begin_task(0)
    >>> learner.end_task(0, Task(0, "toy", (0, 1), x, y, x, y), torch.Generator().manual_seed(0))
    >>> sorted(learner.fisher) == sorted(n for n, _ in learner.model.named_parameters())
    True
    >>> float(learner.penalty().detach())  # right after the task: the parameters are at theta*
    0.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from hyperdnn.baselines.shared_network import SharedNetworkLearner
from hyperdnn.methods.continual import with_prefix, without_prefix

if TYPE_CHECKING:
    from hyperdnn.data.streams import Task

__all__ = ["EWC"]


def _number(value: object, low: float, high: float, open_high: bool, kind: type = float) -> bool:
    """Whether ``value`` is a number of ``kind`` (an int for ``float`` too, never a bool) in
    ``[low, high)`` (``[low, high]`` when not ``open_high``)."""
    kinds = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        return False
    return low <= value < high if open_high else low <= value <= high


class EWC(SharedNetworkLearner):
    """Online EWC on one network.

    Args:
        model, scenario, classes_per_task, num_tasks: as
            :class:`~hyperdnn.baselines.shared_network.SharedNetworkLearner`.
        ewc_lambda: the penalty's strength ``lambda >= 0``.
        gamma: the decay of the accumulated Fisher information, in ``[0, 1]``.
        fisher_samples: training samples used to estimate each task's Fisher information.

    Raises:
        ValueError: ``ewc_lambda`` negative or not finite, ``gamma`` outside ``[0, 1]``,
            ``fisher_samples < 1`` (every bad argument named in one message).
    """

    name = "ewc"

    def __init__(
        self,
        model: nn.Module,
        scenario: str,
        classes_per_task: int,
        num_tasks: int,
        ewc_lambda: float,
        gamma: float = 1.0,
        fisher_samples: int = 500,
    ):
        super().__init__(model, scenario, classes_per_task, num_tasks)
        checks = {
            "ewc_lambda": (_number(ewc_lambda, 0.0, math.inf, True), "a finite float >= 0", ewc_lambda),
            "gamma": (_number(gamma, 0.0, 1.0, False), "a float in [0, 1]", gamma),
            "fisher_samples": (_number(fisher_samples, 1, math.inf, True, int), "an int >= 1", fisher_samples),
        }
        bad = [f"{name} must be {expected}, got {value!r}" for name, (ok, expected, value) in checks.items() if not ok]
        if bad:
            raise ValueError(f"EWC: {'; '.join(bad)}")
        self.ewc_lambda = ewc_lambda
        self.gamma = gamma
        self.fisher_samples = fisher_samples
        #: parameter name -> accumulated diagonal Fisher information (``None`` before the first task ends)
        self.fisher: dict[str, torch.Tensor] | None = None
        #: parameter name -> the parameters at the end of the last task
        self.anchor: dict[str, torch.Tensor] | None = None

    def penalty(self) -> torch.Tensor:
        """``lambda/2 sum F (theta - theta*)^2``: a scalar (0 before the first task ends)."""
        device = next(self.model.parameters()).device
        if self.fisher is None or self.anchor is None or self.ewc_lambda == 0:
            return torch.zeros((), device=device)
        total = torch.zeros((), device=device)
        for n, p in self.model.named_parameters():
            total = total + (self.fisher[n] * (p - self.anchor[n]).pow(2)).sum()
        return 0.5 * self.ewc_lambda * total

    def train_step(self, t, x, y, task_ids, optimizer, generator) -> dict[str, float]:
        self.check_one_task(t, task_ids)
        loss = self.task_loss(x, y, task_ids)
        return self.optimise(optimizer, loss, penalty=self.penalty())

    def end_task(self, t: int, task: Task, generator: torch.Generator) -> None:
        if self.ewc_lambda == 0:
            return
        fisher = self.fisher_information(t, task, generator)
        if self.fisher is None:
            self.fisher = fisher
        else:
            self.fisher = {n: self.gamma * self.fisher[n] + fisher[n] for n in fisher}
        self.anchor = {n: p.detach().clone() for n, p in self.model.named_parameters()}

    def fisher_information(self, t: int, task: Task, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Diagonal Fisher information of task ``t``: the mean squared per-sample gradient of
        ``log p(y|x)``, ``y`` drawn from the model's own prediction (per-sample gradients with
        ``torch.func.vmap``), over ``fisher_samples`` training samples drawn with ``generator``.

        Returns:
            Parameter name -> a tensor of the parameter's shape.
        """
        device = next(self.model.parameters()).device
        n = min(self.fisher_samples, task.num_train)
        idx = torch.randperm(task.num_train, generator=generator)[:n]
        x, _ = task.train_batch(idx)
        x = x.to(device)
        params = {k: v.detach() for k, v in self.model.named_parameters()}
        tid = torch.full((n,), t, device=device)
        self.model.eval()
        with torch.no_grad():
            probs = self.outputs(self._logits(x), tid).softmax(-1)
        diverged = ~probs.isfinite().all(dim=-1)  # a diverged network (e.g. a huge lr): draw uniformly
        probs[diverged] = 1.0 / probs.shape[-1]
        y = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(device)

        def log_lik(p, xi, yi, ti):
            out = self.outputs(functional_call(self.model, p, (xi.unsqueeze(0),)), ti.unsqueeze(0))
            return out.log_softmax(-1)[0].gather(0, yi.view(1))[0]

        fisher = {k: torch.zeros_like(v) for k, v in params.items()}
        for start in range(0, n, 128):
            sl = slice(start, start + 128)
            grads = vmap(grad(log_lik), in_dims=(None, 0, 0, 0))(params, x[sl], y[sl], tid[sl])
            for k, g in grads.items():
                fisher[k] += g.pow(2).sum(0)
        return {k: v / n for k, v in fisher.items()}

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, meta = super().state()
        if self.fisher is not None and self.anchor is not None:
            tensors.update(with_prefix("fisher.", self.fisher))
            tensors.update(with_prefix("anchor.", self.anchor))
        return tensors, meta

    def load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        super().load_state(tensors, meta)
        device = next(self.model.parameters()).device
        fisher, anchor = without_prefix("fisher.", tensors), without_prefix("anchor.", tensors)
        names = {n for n, _ in self.model.named_parameters()}
        for what, part in (("Fisher information", fisher), ("anchor", anchor)):
            if part and set(part) != names:
                raise ValueError(
                    f"the saved EWC {what} does not fit the network: missing {sorted(names - set(part))}, "
                    f"unexpected {sorted(set(part) - names)}"
                )
        self.fisher = {k: v.to(device) for k, v in fisher.items()} or None
        self.anchor = {k: v.to(device) for k, v in anchor.items()} or None
