"""The look-ahead step: the change ``torch.optim.Adam`` would apply, without applying it.

The continual-learning regulariser can be evaluated where the task loss alone would move the
hypernetwork (``Theta + dTheta``, von Oswald et al., 2020): :func:`adam_candidate_step` computes
that ``dTheta`` from the optimizer's current moments and a gradient, with Adam's bias
correction, and changes nothing.

Example::

    >>> import torch
    >>> from hyperdnn.methods import adam_candidate_step
    >>> w = torch.nn.Parameter(torch.zeros(3))
    >>> opt = torch.optim.Adam([w], lr=0.1)
    >>> (step,) = adam_candidate_step(opt, [w], [torch.tensor([1.0, -2.0, 0.0])])
    >>> [round(v, 4) for v in step.tolist()]  # Adam's first step: -lr * sign(grad)
    [-0.1, 0.1, -0.0]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["adam_candidate_step"]


def adam_candidate_step(
    optimizer: torch.optim.Adam, params: Sequence[nn.Parameter], grads: Sequence[torch.Tensor | None]
) -> list[torch.Tensor]:
    """The change ``optimizer.step()`` would apply to ``params`` for ``grads`` (no side effects).

    Args:
        optimizer: a ``torch.optim.Adam`` holding ``params`` (without weight decay, amsgrad or
            maximize).
        params: the parameters, in any order.
        grads: one gradient per parameter, of its shape (``None``: no gradient).

    Returns:
        One detached tensor per parameter, of its shape (zeros where the gradient is ``None``).

    Raises:
        TypeError: the optimizer is not an ``Adam`` (or ``AdamW``).
        ValueError: ``params`` and ``grads`` differ in length, a parameter is not in the
            optimizer, or its group uses weight decay, amsgrad or maximize.
    """
    if not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        # NAdam, RAdam, Adamax... keep Adam-like state but step otherwise: a prediction with
        # Adam's formula would be silently wrong
        raise TypeError(
            f"adam_candidate_step: expected a torch.optim.Adam (or AdamW without weight decay), "
            f"got {type(optimizer).__name__}"
        )
    if len(params) != len(grads):
        raise ValueError(
            f"adam_candidate_step: expected one gradient per parameter, got {len(grads)} for {len(params)}"
        )
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    missing = [i for i, p in enumerate(params) if id(p) not in group_of]
    if missing:
        raise ValueError(f"adam_candidate_step: parameters {missing} (by position) are not in the optimizer")
    out = []
    for p, g in zip(params, grads):
        if g is None:
            out.append(torch.zeros_like(p))
            continue
        group = group_of[id(p)]
        if group.get("weight_decay", 0) or group.get("amsgrad", False) or group.get("maximize", False):
            raise ValueError("adam_candidate_step: supports Adam without weight_decay, amsgrad or maximize")
        b1, b2 = group["betas"]
        lr, eps = group["lr"], group["eps"]
        state = optimizer.state.get(p, {})
        step = float(state["step"]) if "step" in state else 0.0
        m = state.get("exp_avg", torch.zeros_like(p))
        v = state.get("exp_avg_sq", torch.zeros_like(p))
        s = step + 1
        m1 = m * b1 + g.detach() * (1 - b1)
        v1 = v * b2 + g.detach().pow(2) * (1 - b2)
        denom = v1.sqrt() / math.sqrt(1 - b2**s) + eps
        out.append(-(lr / (1 - b1**s)) * m1 / denom)
    return out
