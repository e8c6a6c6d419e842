"""A deep ensemble: ``M`` networks, each from its own initialisation, trained side by side.

Deep ensembles (Lakshminarayanan et al., 2017) are the standard way to pay for predictive
uncertainty: train ``M`` networks and average their predictions. Here the ``M`` members'
tensors are stacked (``(M, *shape)`` per tensor) and run as one
:meth:`~hyperdnn.Target.ensemble` pass, outputs ``(M, N, ...)``; the loss is the sum of the
members' losses, so each member receives exactly the gradient it would receive trained alone
(and Adam, element-wise, takes the same steps). Every member sees the same minibatches; their
diversity comes from their initialisations. ``members=1`` is one deterministic network.

Example::

    >>> import torch
    >>> from hyperdnn.baselines import DeepEnsemble
    >>> from hyperdnn.networks import mlp
    >>> ensemble = DeepEnsemble(lambda: mlp(4, (8,), 3), members=5)
    >>> ensemble(torch.randn(7, 4)).shape             # 5 networks on one batch of 7
    torch.Size([5, 7, 3])
    >>> ensemble.num_trainable() == 5 * sum(p.numel() for p in mlp(4, (8,), 3).parameters())
    True
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from hyperdnn.methods.uncertainty import Likelihood, UncertaintyModel, check_samples
from hyperdnn.target import Target

__all__ = ["DeepEnsemble"]


class DeepEnsemble(UncertaintyModel):
    """``members`` networks made by ``make_network`` (each call draws a new initialisation),
    stacked and run as one ensemble.

    Args:
        make_network: returns a freshly initialised network; called ``members`` times in a row
            (so under one seed the members are the first ``members`` networks it would make).
        members: ``M >= 1``; ``samples`` is ``M``.

    Raises:
        ValueError: ``members < 1``, or networks of different parameter names or shapes.
    """

    def __init__(self, make_network: Callable[[], nn.Module], members: int = 5):
        super().__init__()
        self.samples = check_samples("DeepEnsemble", "members", members)
        networks = [make_network() for _ in range(members)]
        self.target = Target(networks[0])
        names = list(self.target.spec.shapes)
        found = [{n: tuple(p.shape) for n, p in net.named_parameters()} for net in networks]
        if any(f != found[0] for f in found):
            raise ValueError("DeepEnsemble: make_network must return networks with the same parameter names and shapes")
        self.names = names
        self.stacked = nn.ParameterList(
            nn.Parameter(torch.stack([dict(net.named_parameters())[n].detach() for net in networks])) for n in names
        )
        for p in self.target.module.parameters():  # the module's own copies are never read
            p.requires_grad_(False)

    @property
    def members(self) -> int:
        """``M``, the number of networks."""
        return self.samples

    def weights(self) -> dict[str, torch.Tensor]:
        """The members' tensors: name -> ``(M, *shape)``."""
        return dict(zip(self.names, self.stacked))

    def network(self, index: int) -> nn.Module:
        """Member ``index`` as a plain module (a copy with its weights; no hyperdnn needed)."""
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < self.members:
            raise ValueError(f"DeepEnsemble.network: index must be an int in [0, {self.members}), got {index!r}")
        return self.target.materialize({n: w[index] for n, w in self.weights().items()})

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(M, N, ...)``: every member on the batch ``x (N, ...)``, one ensemble pass."""
        return self.target.ensemble(self.weights(), x)

    def loss(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        likelihood: Likelihood,
        num_train: int,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The sum of the members' negative log-likelihoods (each member its own gradient)."""
        nll = likelihood(self(x), y)
        return nll.sum(), {"nll": float(nll.detach().mean())}

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The stacked tensors of the members."""
        return list(self.stacked)
