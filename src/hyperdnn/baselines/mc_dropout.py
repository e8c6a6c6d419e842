"""MC dropout: a network with dropout that keeps sampling masks at prediction.

Gal and Ghahramani (2016) read dropout as approximate Bayesian inference: with dropout on at
test time, ``K`` stochastic passes sample ``K`` networks, and their spread is the predictive
uncertainty. The ``K`` passes run as one: the batch is repeated ``K`` times (each row draws its
own masks) and the outputs are reshaped to ``(K, N, ...)``. Training is the network's ordinary
dropout training (``train_samples`` masks per step).

Example::

    >>> import torch
    >>> from hyperdnn.baselines import MCDropout
    >>> from hyperdnn.networks import mlp
    >>> model = MCDropout(mlp(4, (8,), 3, dropout=0.5), samples=10).eval()
    >>> out = model(torch.randn(7, 4))               # masks still sampled in eval mode
    >>> out.shape, bool((out[0] != out[1]).any())
    (torch.Size([10, 7, 3]), True)
"""

from __future__ import annotations

import torch
from torch import nn

from hyperdnn.methods.uncertainty import Likelihood, UncertaintyModel, check_samples, dropout_active

__all__ = ["MCDropout"]


class MCDropout(UncertaintyModel):
    """A network with dropout layers, sampled ``samples`` times per prediction.

    Args:
        network: maps ``(N, ...)`` to ``(N, ...)``, with at least one dropout layer of ``p > 0``;
            it must treat the rows of a batch independently (no BatchNorm in train mode).
        samples: ``K`` masks per prediction.
        train_samples: masks per training step (1: ordinary dropout training).

    Raises:
        ValueError: a network without dropout, or a sample count below 1.
    """

    def __init__(self, network: nn.Module, samples: int = 10, train_samples: int = 1):
        super().__init__()
        if not any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in network.modules()):
            raise ValueError(
                f"MCDropout: the network needs a dropout layer with p > 0 (each mask is a sample), "
                f"got {type(network).__name__} without one"
            )
        self.samples = check_samples("MCDropout", "samples", samples)
        self.train_samples = check_samples("MCDropout", "train_samples", train_samples)
        self.network = network

    def sample_outputs(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """``(k, N, ...)``: ``k`` masks on the batch ``x (N, ...)`` in one pass (masks from the
        global generator; dropout samples in eval mode too)."""
        check_samples("MCDropout.sample_outputs", "k", k)
        n = x.shape[0]
        with dropout_active(self.network):
            out = self.network(x.repeat(k, *([1] * (x.dim() - 1))))
        return out.view(k, n, *out.shape[1:])

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(K, N, ...)`` with ``K = samples`` (``generator`` is unused: masks come from the
        global generator)."""
        return self.sample_outputs(x, self.samples)

    def loss(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        likelihood: Likelihood,
        num_train: int,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The mean negative log-likelihood of ``train_samples`` masks."""
        nll = likelihood(self.sample_outputs(x, self.train_samples), y).mean()
        return nll, {"nll": float(nll.detach())}

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The network's parameters."""
        return [p for p in self.network.parameters() if p.requires_grad]
