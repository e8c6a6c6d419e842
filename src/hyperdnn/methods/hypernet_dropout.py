"""Hypernetwork dropout: MC dropout inside the hypernetwork, so every mask is a weight set.

A hypernetwork with dropout in its trunk generates a different target network for every
dropout mask. Kept on at prediction (MC dropout, Gal and Ghahramani, 2016), ``K`` masks give
``K`` weight sets of the target and so a predictive distribution from one model, as the
review's authors do in HyperITE (Chauhan et al., 2023). The hypernetwork reads one learned code
``c``; ``K`` copies of it go through the trunk in one batch (each row its own mask), and the
``K`` weight sets run as one :class:`~hyperdnn.HyperModel` ensemble pass:

    theta_k = head(dropout_k(trunk(c))),    outputs (K, N, ...)

Training draws ``train_samples`` masks per step and minimises the members' mean negative
log-likelihood (the MC-dropout objective).

Example::

    >>> import torch
    >>> from hyperdnn import MLP, Chunked, Target
    >>> from hyperdnn.methods import HypernetDropout
    >>> from hyperdnn.networks import mlp
    >>> model = HypernetDropout(Target(mlp(4, (8,), 3)), code_dim=6, trunk=MLP((16,), dropout=0.3),
    ...                         head=Chunked(16, 4), samples=10).eval()
    >>> out = model(torch.randn(7, 4))               # dropout still samples in eval mode
    >>> out.shape, bool((out[0] != out[1]).any())
    (torch.Size([10, 7, 3]), True)
"""

from __future__ import annotations

import torch
from torch import nn

from hyperdnn.conditioners import Continuous
from hyperdnn.heads import Head
from hyperdnn.hypernet import HyperModel, HyperNetwork
from hyperdnn.methods.uncertainty import Likelihood, UncertaintyModel, check_samples, dropout_active
from hyperdnn.target import Target
from hyperdnn.trunks import MLP

__all__ = ["HypernetDropout"]


class HypernetDropout(UncertaintyModel):
    """A hypernetwork with MC dropout in its trunk: one learned code, a weight set per mask.

    Args:
        target: the :class:`~hyperdnn.Target` it generates for.
        code_dim: the width of the learned code.
        trunk: an :class:`~hyperdnn.MLP` trunk description with ``dropout > 0``.
        head: the head description.
        samples: ``K`` masks (weight sets) per prediction.
        train_samples: masks per training step.

    ``model.model`` is the :class:`~hyperdnn.HyperModel`; its conditioner is a
    ``Continuous(code_dim, execution="ensemble")`` that reads ``K`` copies of the code.

    Raises:
        ValueError: a trunk without dropout (every mask would give the same network) or a
            sample count below 1.
        TypeError: a trunk that is not an ``MLP``.
    """

    def __init__(
        self, target: Target, code_dim: int, trunk: MLP, head: Head, samples: int = 10, train_samples: int = 1
    ):
        super().__init__()
        if not isinstance(trunk, MLP):
            raise TypeError(f"HypernetDropout: trunk must be an MLP description with dropout, got {type(trunk).__name__}")  # fmt: skip
        if not trunk.dropout > 0 or not trunk.hidden:
            raise ValueError(
                f"HypernetDropout: the trunk needs hidden layers and dropout > 0 (each mask is a weight set), "
                f"got hidden={tuple(trunk.hidden)}, dropout={trunk.dropout}"
            )
        self.samples = check_samples("HypernetDropout", "samples", samples)
        self.train_samples = check_samples("HypernetDropout", "train_samples", train_samples)
        conditioner = Continuous(code_dim, low=-1.0, high=1.0, execution="ensemble")  # standardised: the code as is
        self.model = HyperModel(HyperNetwork(target, conditioner, trunk, head), target)
        self.code = nn.Parameter(torch.randn(code_dim) / code_dim**0.5)

    def sample_outputs(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """``(k, N, ...)``: the target on ``x`` with the weights of ``k`` dropout masks (masks
        drawn from the global generator; dropout samples in eval mode too)."""
        check_samples("HypernetDropout.sample_outputs", "k", k)
        with dropout_active(self.model.hypernet):
            return self.model(x, self.code.expand(k, -1), mode="ensemble")

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(K, N, ...)`` with ``K = samples`` masks (``generator`` is unused: masks come from
        the global generator)."""
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
        """The code, the hypernetwork's parameters and the target's own ones."""
        return [self.code, *self.model.trainable_parameters()]
