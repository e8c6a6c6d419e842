"""Policies a hypernetwork policy is compared with: the context concatenated, or none.

Both fulfil :class:`~hyperdnn.methods.context_policy.ContextNet` (``net(obs, context) ->
(B, out)``), as :class:`~hyperdnn.methods.context_policy.HyperPolicy` does, and are the same
MLP as its target (the same hidden widths), so the three differ only in how the context
enters:

* :class:`ConcatPolicy` - an MLP of ``[obs, standardised context]`` (the usual way to give a
  policy the task's parameters);
* :class:`PlainPolicy` - an MLP of the observation alone (one policy for the whole family).

Example::

    >>> import torch
    >>> from hyperdnn.baselines.context_policy import ConcatPolicy, PlainPolicy
    >>> obs, context = torch.randn(5, 4), torch.tensor([[0.5, 0.1, 10.0]]).repeat(5, 1)
    >>> ConcatPolicy(4, 3, 2, hidden=(16,), low=[0.3, 0.05, -14], high=[0.7, 0.2, 14])(obs, context).shape
    torch.Size([5, 2])
    >>> PlainPolicy(4, 3, 2, hidden=(16,), low=[0.3, 0.05, -14], high=[0.7, 0.2, 14])(obs, context).shape
    torch.Size([5, 2])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hyperdnn.methods.context_policy import ContextNet, standardise
from hyperdnn.networks import mlp

__all__ = ["ConcatPolicy", "PlainPolicy"]


class ConcatPolicy(ContextNet):
    """An MLP ``O + P -> hidden -> out`` of the observation and the standardised context.

    Args:
        obs_dim, context_dim, out_dim, low, high: see
            :class:`~hyperdnn.methods.context_policy.ContextNet`.
        hidden: the hidden widths.
    """

    def __init__(
        self,
        obs_dim: int,
        context_dim: int,
        out_dim: int,
        hidden: Sequence[int] = (64, 64),
        low: Sequence[float] = (),
        high: Sequence[float] = (),
    ) -> None:
        super().__init__(obs_dim, context_dim, out_dim, low, high)
        self.net = mlp(obs_dim + context_dim, tuple(hidden), out_dim)

    def _forward(self, obs: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, standardise(context, self.low, self.high)], dim=-1))


class PlainPolicy(ContextNet):
    """An MLP ``O -> hidden -> out`` of the observation alone: it never reads the context.

    Args:
        obs_dim, context_dim, out_dim, low, high: see
            :class:`~hyperdnn.methods.context_policy.ContextNet` (the context is checked and
            ignored).
        hidden: the hidden widths.
    """

    def __init__(
        self,
        obs_dim: int,
        context_dim: int,
        out_dim: int,
        hidden: Sequence[int] = (64, 64),
        low: Sequence[float] = (),
        high: Sequence[float] = (),
    ) -> None:
        super().__init__(obs_dim, context_dim, out_dim, low, high)
        self.net = mlp(obs_dim, tuple(hidden), out_dim)

    def _forward(self, obs: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.net(obs)
