"""Treatment-effect metrics: the error of estimated effects against the true ones, and how to
summarise them over replications.

* :func:`sqrt_pehe` - the square root of the precision in estimating heterogeneous effects,
  ``sqrt(mean_i (tau_hat_i - tau_i)^2)`` (Hill, 2011).
* :func:`ate_error` - the absolute error of the average effect, ``|mean(tau_hat) - mean(tau)|``.
* :func:`mean_se` - the mean over replications and its standard error (``sd / sqrt(R)``).
* :func:`paired_win_rate` - the share of replications where one method's error is below
  another's on the same data (ties count half).

Example::

    >>> import numpy as np
    >>> from hyperdnn.metrics.causal import ate_error, mean_se, paired_win_rate, sqrt_pehe
    >>> tau = np.array([1.0, 2.0, 3.0])
    >>> sqrt_pehe(tau + 1.0, tau), ate_error(tau + 1.0, tau)
    (1.0, 1.0)
    >>> mean_se([1.0, 2.0, 3.0])
    (2.0, 0.5773502691896258)
    >>> paired_win_rate([1.0, 2.0, 3.0], [2.0, 2.0, 1.0])
    0.5
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["sqrt_pehe", "ate_error", "mean_se", "paired_win_rate"]


def _pair(estimate: Sequence[float] | np.ndarray, truth: Sequence[float] | np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    est, tru = np.asarray(estimate, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if est.ndim != 1 or est.shape != tru.shape or not len(est):
        raise ValueError(
            f"{where}: estimate and truth must be (N,) of one length N >= 1, got {est.shape} and {tru.shape}"
        )
    return est, tru


def sqrt_pehe(estimate: Sequence[float] | np.ndarray, truth: Sequence[float] | np.ndarray) -> float:
    """``sqrt(mean((estimate - truth)^2))`` over units: estimated and true effects ``(N,)``."""
    est, tru = _pair(estimate, truth, "sqrt_pehe")
    return float(np.sqrt(np.mean((est - tru) ** 2)))


def ate_error(estimate: Sequence[float] | np.ndarray, truth: Sequence[float] | np.ndarray) -> float:
    """``|mean(estimate) - mean(truth)|``: estimated and true effects ``(N,)``."""
    est, tru = _pair(estimate, truth, "ate_error")
    return float(abs(est.mean() - tru.mean()))


def mean_se(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """The mean of ``values (R,)`` and its standard error ``std(ddof=1) / sqrt(R)`` (``nan`` for
    one value)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or not len(v):
        raise ValueError(f"mean_se: expected values (R,) with R >= 1, got shape {v.shape}")
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan
    return float(v.mean()), se


def paired_win_rate(errors: Sequence[float] | np.ndarray, others: Sequence[float] | np.ndarray) -> float:
    """The share of replications where ``errors[r] < others[r]`` (a tie counts half): how often
    a method beats another on the same data. Both ``(R,)``."""
    a, b = _pair(errors, others, "paired_win_rate")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(
            f"paired_win_rate: errors must be finite, got {int((~np.isfinite(a)).sum())} and "
            f"{int((~np.isfinite(b)).sum())} NaN or inf (a failed replication cannot be ranked)"
        )
    return float(np.mean((a < b) + 0.5 * (a == b)))
