"""Plain networks the recipes, baselines and benchmarks build: one MLP builder.

:func:`mlp` is the multilayer perceptron every target, baseline and demo network of hyperdnn
is made of: ``Linear -> ReLU (-> Dropout)`` per hidden width, then a ``Linear`` to the output.
Its layers draw their initial weights from the global generator in order, so two MLPs that
differ only in the output width start with the same hidden layers under the same seed (the
continual recipe's baselines rely on this). :func:`mlp_parameters` counts an MLP's parameters
without building it.

Example::

    >>> import torch
    >>> from hyperdnn.networks import mlp, mlp_parameters
    >>> net = mlp(64, (32,), 10, dropout=0.1)
    >>> net
    Sequential(
      (0): Linear(in_features=64, out_features=32, bias=True)
      (1): ReLU()
      (2): Dropout(p=0.1, inplace=False)
      (3): Linear(in_features=32, out_features=10, bias=True)
    )
    >>> net(torch.zeros(5, 64)).shape, mlp_parameters(64, (32,), 10)
    (torch.Size([5, 10]), 2410)
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = ["mlp", "mlp_parameters"]


def _check_widths(in_features: int, hidden: Sequence[int], out_features: int, where: str) -> tuple[int, ...]:
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise TypeError(f"{where}: hidden must be a sequence of ints, got {type(hidden).__name__}")
    widths = {"in_features": in_features, "out_features": out_features}
    widths.update({f"hidden[{i}]": h for i, h in enumerate(hidden)})
    bad = {k: v for k, v in widths.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1}
    if bad:
        raise ValueError(f"{where}: widths must be ints >= 1, got {', '.join(f'{k}={v!r}' for k, v in bad.items())}")
    return tuple(hidden)


def mlp(in_features: int, hidden: Sequence[int], out_features: int, dropout: float = 0.0) -> nn.Sequential:
    """``Linear -> ReLU (-> Dropout)`` per hidden width, then a ``Linear`` to ``out_features``.

    Args:
        in_features: the input width ``F``.
        hidden: the hidden widths, in order (empty: one linear layer).
        out_features: the output width ``C``.
        dropout: the probability of an ``nn.Dropout`` after each hidden ReLU (0: no dropout
            layers, so the module names are ``0, 2, 4 ...`` for the linear layers).

    Returns:
        An ``nn.Sequential`` mapping ``(N, F)`` to ``(N, C)``.

    Raises:
        TypeError, ValueError: a width that is not an int >= 1 (all of them named), a dropout
            outside ``[0, 1)``.
    """
    hidden = _check_widths(in_features, hidden, out_features, "mlp")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"mlp: dropout must be a float in [0, 1), got {dropout!r}")
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def mlp_parameters(in_features: int, hidden: Sequence[int], out_features: int) -> int:
    """The parameters of ``mlp(in_features, hidden, out_features)`` (weights and biases), counted
    without building it."""
    widths = (in_features, *_check_widths(in_features, hidden, out_features, "mlp_parameters"), out_features)
    return sum(a * b + b for a, b in zip(widths, widths[1:]))
