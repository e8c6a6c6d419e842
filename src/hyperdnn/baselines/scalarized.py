"""One network per trade-off: the baseline a Pareto hypernetwork is compared with.

:class:`ScalarizedNetwork` is an ordinary network trained for one fixed preference ray ``r``
by linear scalarisation, ``sum_j r_j l_j``; a front takes one such model per point (PHN's
comparison: separate models at 5 rays). Its outputs carry a leading ray dim of 1, the shape
a :class:`~hyperdnn.methods.pareto.ParetoHyperNetwork` gives for one ray, so a recipe
measures both the same way.

Example::

    >>> import torch
    >>> from torch import nn
    >>> from hyperdnn.baselines.scalarized import ScalarizedNetwork
    >>> net = ScalarizedNetwork(nn.Linear(3, 2), [0.7, 0.3])
    >>> out = net(torch.randn(5, 3))                     # (1, N, 2): one ray
    >>> losses = out.pow(2).mean(1)                      # (1, m): one loss per objective
    >>> torch.allclose(net.loss(losses), 0.7 * losses[0, 0] + 0.3 * losses[0, 1])
    True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hyperdnn.methods.pareto import LinearScalarization, check_rays

__all__ = ["ScalarizedNetwork"]


class ScalarizedNetwork(nn.Module):
    """A network trained at one preference ray by linear scalarisation.

    Args:
        module: the network (its own parameters are trained).
        ray: the preference ray, ``m`` numbers ``>= 0`` summing to 1 (checked; a bad ray is a
            ``ValueError`` naming it).

    Attributes:
        ray: the ray, a buffer ``(m,)``.
    """

    def __init__(self, module: nn.Module, ray: Any):
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"ScalarizedNetwork: module must be an nn.Module, got {type(module).__name__}")
        r = check_rays(ray, where="ScalarizedNetwork: ray")
        if r.shape[0] != 1:
            raise ValueError(f"ScalarizedNetwork: expected one ray, got {r.shape[0]}")
        self.module = module
        self.register_buffer("ray", r[0])
        self._solver = LinearScalarization()

    def forward(self, *inputs: Any) -> torch.Tensor:
        """The module's output with a leading ray dim: ``(1, N, ...)``."""
        return self.module(*inputs).unsqueeze(0)

    def loss(self, losses: torch.Tensor) -> torch.Tensor:
        """``sum_j r_j l_j`` of ``losses`` ``(1, m)`` (with one objective: the loss itself)."""
        return self._solver.loss(losses, self.ray.unsqueeze(0).to(losses))
