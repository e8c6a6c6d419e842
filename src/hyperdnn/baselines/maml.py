"""First-order MAML (Finn et al., 2017): learn an initialisation from which a few gradient steps
on a new task's support set give a good classifier for it.

:class:`FirstOrderMAML` fulfils :class:`~hyperdnn.methods.fewshot.FewShotLearner`. For each
episode it copies the network's weights, takes ``inner_steps`` plain gradient steps of size
``inner_lr`` on the support set's cross-entropy, and measures the query loss at the adapted
weights; the first-order update hands the gradient of that loss with respect to the adapted
weights to the optimizer as the gradient of the initial ones (no second derivatives). At test
time it adapts with ``test_steps`` steps. The adapted weights run through
:class:`~hyperdnn.target.Target` (the functional call of the network with other weights). As in
the MAML paper, BatchNorm normalises with the statistics of the batch at hand (the support set
while adapting, the queries when predicting), in training and at test.

Example::

    >>> import torch
    >>> from torch import nn
    >>> from hyperdnn.baselines.maml import FirstOrderMAML
    >>> from hyperdnn.networks import conv_net
    >>> learner = FirstOrderMAML(nn.Sequential(conv_net(1, 8), nn.Linear(8, 5)), shape=(1, 28, 28), ways=5)
    >>> learner.predict(torch.rand(5, 1, 1, 28, 28), torch.rand(7, 1, 28, 28)).shape
    torch.Size([7, 5])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn._checks import check_float, check_int
from hyperdnn.data.episodes import Episode
from hyperdnn.methods.fewshot import FewShotLearner, _check_shape
from hyperdnn.target import Target

__all__ = ["FirstOrderMAML"]


class FirstOrderMAML(FewShotLearner):
    """First-order MAML over ``network`` (its last layer has ``ways`` outputs).

    Args:
        network: the whole classifier, ``(M, *shape)`` -> ``(M, ways)``.
        shape: the shape of one example.
        ways: classes per episode.
        inner_lr: the step size of the inner (adaptation) steps.
        inner_steps: adaptation steps while training.
        test_steps: adaptation steps at test time.
    """

    def __init__(
        self,
        network: nn.Module,
        shape: Sequence[int],
        ways: int,
        inner_lr: float = 0.4,
        inner_steps: int = 1,
        test_steps: int = 3,
    ):
        super().__init__()
        if not isinstance(network, nn.Module):
            raise TypeError(f"FirstOrderMAML: network must be an nn.Module, got {type(network).__name__}")
        self.network = network
        self.target = Target(network)
        self.shape = _check_shape("FirstOrderMAML", shape)
        self.ways = check_int("FirstOrderMAML", "ways", ways, 2)
        self.inner_lr = check_float("FirstOrderMAML", "inner_lr", inner_lr, 0.0)
        self.inner_steps = check_int("FirstOrderMAML", "inner_steps", inner_steps, 0)
        self.test_steps = check_int("FirstOrderMAML", "test_steps", test_steps, 0)

    def adapt(self, support: torch.Tensor, steps: int) -> dict[str, torch.Tensor]:
        """The weights after ``steps`` gradient steps on ``support``'s cross-entropy: name ->
        tensor, detached (first order), with BatchNorm on the support set's statistics."""
        x = support.flatten(0, 1)
        y = torch.arange(support.shape[0], device=x.device).repeat_interleave(support.shape[1])
        fast = {name: p.detach() for name, p in self.network.named_parameters()}
        with torch.enable_grad(), _batch_statistics(self.network):
            for _ in range(steps):
                fast = {name: w.requires_grad_() for name, w in fast.items()}
                loss = F.cross_entropy(self.target.run(fast, x, mode="shared", validate=False), y)
                grads = torch.autograd.grad(loss, list(fast.values()))
                fast = {name: (w - self.inner_lr * g).detach() for (name, w), g in zip(fast.items(), grads)}
        return fast

    def predict(self, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        self.check("FirstOrderMAML.predict", support, query)
        fast = self.adapt(support, self.test_steps)
        with _batch_statistics(self.network):
            return self.target.run(fast, query, mode="shared", validate=False)

    def loss(self, episode: Episode) -> torch.Tensor:
        """The query loss at the weights adapted to the support set (its gradient reaches the
        adapted weights only: use :meth:`train_step` to train)."""
        self.check("FirstOrderMAML.loss", episode.support, episode.query)
        fast = {k: v.requires_grad_() for k, v in self.adapt(episode.support, self.inner_steps).items()}
        with _batch_statistics(self.network):
            return F.cross_entropy(
                self.target.run(fast, episode.query, mode="shared", validate=False), episode.query_labels
            )

    def train_step(self, episode: Episode, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        """The first-order update: the query loss's gradient at the adapted weights is applied
        to the initial weights."""
        self.check("FirstOrderMAML.train_step", episode.support, episode.query)
        fast = {k: v.requires_grad_() for k, v in self.adapt(episode.support, self.inner_steps).items()}
        with _batch_statistics(self.network):
            loss = F.cross_entropy(
                self.target.run(fast, episode.query, mode="shared", validate=False), episode.query_labels
            )
        grads = torch.autograd.grad(loss, list(fast.values()))
        optimizer.zero_grad()
        for p, g in zip(self.network.parameters(), grads):
            p.grad = g
        optimizer.step()
        return {"loss": loss.item()}


class _batch_statistics:
    """BatchNorm layers of ``module`` normalise with the batch's statistics for the duration
    (their training flag is set, and restored afterwards; running statistics are kept as they
    were)."""

    def __init__(self, module: nn.Module):
        self.norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def __enter__(self) -> None:
        self.saved = [(m, m.training, m.momentum) for m in self.norms]
        for m in self.norms:
            m.train()
            m.momentum = 0.0  # running statistics unchanged: MAML never reads them

    def __exit__(self, *exc: object) -> None:
        for m, training, momentum in self.saved:
            m.train(training)
            m.momentum = momentum
