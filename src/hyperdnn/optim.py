"""Optimizers: Adam, fused where torch has a kernel for the parameters, with one fallback.

``torch.optim.Adam(..., fused=True)`` updates every tensor in one kernel (on CPU about twice as
fast as the default for a generate-once head of millions of numbers), but torch has no fused
kernel for some devices and dtypes and then refuses it. :func:`adam` asks for the fused kernel
and falls back to torch's default implementation where there is none: the one place in
hyperdnn that does so (the recipes, the baselines and the benchmarks call it).

Example::

    >>> import torch
    >>> from hyperdnn.optim import adam
    >>> opt = adam(torch.nn.Linear(3, 2).parameters(), lr=1e-2)
    >>> opt.defaults["fused"], opt.defaults["lr"]
    (True, 0.01)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["adam"]


def adam(
    params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], lr: float = 1e-3, **kwargs: Any
) -> torch.optim.Adam:
    """``torch.optim.Adam`` over ``params``, fused where torch can.

    Args:
        params: tensors to optimise (or parameter groups), as for ``torch.optim.Adam``.
        lr: the learning rate.
        **kwargs: any other ``torch.optim.Adam`` argument (``betas``, ``weight_decay``...).
            Passing ``fused`` or ``foreach`` chooses the implementation yourself (no fallback).

    Returns:
        ``Adam(params, lr, fused=True, **kwargs)`` when torch has a fused kernel for the
        parameters' device and dtype, else ``Adam(params, lr, **kwargs)``.

    Raises:
        ValueError, TypeError: what ``torch.optim.Adam`` raises for bad arguments (an empty
            parameter list, a negative learning rate...), from the unfused attempt.
    """
    params = list(params)
    if "fused" in kwargs or "foreach" in kwargs:
        return torch.optim.Adam(params, lr=lr, **kwargs)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True, **kwargs)
    except (RuntimeError, ValueError, TypeError):  # no fused kernel here, or bad input: the plain call decides
        return torch.optim.Adam(params, lr=lr, **kwargs)
