"""Means with confidence intervals: how few-shot results are reported (the mean accuracy over
test episodes, plus or minus the half-width of its 95% interval).

:func:`mean_interval` uses the normal approximation of the sample mean, ``mean +- z *
std / sqrt(n)`` with ``z`` the standard normal quantile of the level (1.96 for 95%), as
few-shot papers do for 600 episodes.

Example::

    >>> import torch
    >>> from hyperdnn.metrics.intervals import mean_interval
    >>> mean, half = mean_interval(torch.tensor([0.8, 0.9, 1.0, 0.9]))
    >>> round(mean, 4), round(half, 4)
    (0.9, 0.08)
"""

from __future__ import annotations

import math
import statistics

import torch

__all__ = ["mean_interval"]


def mean_interval(values: torch.Tensor, level: float = 0.95) -> tuple[float, float]:
    """The mean of ``values (n,)`` and the half-width of its ``level`` confidence interval.

    Args:
        values: one number per trial (per test episode), ``n >= 2``.
        level: the interval's coverage, in ``(0, 1)``.

    Returns:
        ``(mean, z * std / sqrt(n))`` with the sample standard deviation (``n - 1``).

    Raises:
        ValueError: fewer than two values, a value that is not finite, or a level outside ``(0, 1)``.
    """
    if not isinstance(values, torch.Tensor) or values.dim() != 1 or values.numel() < 2:
        got = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise ValueError(f"mean_interval: expected values of shape (n,) with n >= 2, got {got}")
    if not bool(torch.isfinite(values).all()):
        raise ValueError("mean_interval: every value must be finite")
    if not 0.0 < level < 1.0:
        raise ValueError(f"mean_interval: level must be in (0, 1), got {level!r}")
    v = values.double()
    z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
    return float(v.mean()), float(z * v.std() / math.sqrt(v.numel()))
