"""Rankings and convergence: does a cheap signal order candidates as the expensive one does?

* :func:`spearman` and :func:`kendall_tau` - rank correlations of two scores of the same
  candidates (:func:`scipy.stats.spearmanr`, :func:`scipy.stats.kendalltau`: ties averaged,
  tau-b); the accuracy read from generated weights against the accuracy after training.
* :func:`steps_to_reach` - the first step at which a measured curve reaches a level.

The correlations need scipy (the ``arch`` extra: ``pip install 'hyperdnn[arch]'``).

Example::

    >>> from hyperdnn.metrics import kendall_tau, spearman, steps_to_reach
    >>> spearman([0.1, 0.5, 0.3], [0.2, 0.9, 0.4]), kendall_tau([1, 2, 3, 4], [1, 3, 2, 4])
    (1.0, 0.6666666666666669)
    >>> steps_to_reach([10, 20, 30], [0.5, 0.8, 0.9], 0.8), steps_to_reach([10, 20], [0.5, 0.6], 0.8)
    (20, None)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from hyperdnn.extras import import_optional

__all__ = ["spearman", "kendall_tau", "steps_to_reach"]


def _check(where: str, x: Sequence[float], y: Sequence[float]) -> tuple[list[float], list[float]]:
    xs, ys = [float(v) for v in x], [float(v) for v in y]
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError(
            f"{where}: expected two sequences of the same length >= 2, got lengths {len(xs)} and {len(ys)}"
        )
    bad = [i for i, (a, b) in enumerate(zip(xs, ys)) if not (math.isfinite(a) and math.isfinite(b))]
    if bad:
        raise ValueError(f"{where}: values must be finite; not at positions {bad}")
    return xs, ys


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation of ``x`` and ``y`` (``N >= 2`` finite values each), in
    ``[-1, 1]``; NaN when either is constant.

    Raises:
        ValueError: different lengths, fewer than two values, a value that is not finite.
    """
    xs, ys = _check("spearman", x, y)
    stats = import_optional("scipy.stats", "arch", "spearman")
    return float(stats.spearmanr(xs, ys).statistic)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of ``x`` and ``y`` (``N >= 2`` finite values each), in ``[-1, 1]``;
    NaN when either is constant.

    Raises:
        ValueError: different lengths, fewer than two values, a value that is not finite.
    """
    xs, ys = _check("kendall_tau", x, y)
    stats = import_optional("scipy.stats", "arch", "kendall_tau")
    return float(stats.kendalltau(xs, ys).statistic)


def steps_to_reach(steps: Sequence[int], values: Sequence[float], level: float) -> int | None:
    """The first of ``steps`` whose value is at least ``level``, or ``None`` if none is.

    Args:
        steps: increasing step counts at which the curve was measured.
        values: the measured values (accuracy), one per step.
        level: the level to reach.

    Raises:
        ValueError: ``steps`` and ``values`` of different lengths, or steps not increasing.
    """
    if len(steps) != len(values):
        raise ValueError(f"steps_to_reach: {len(steps)} steps but {len(values)} values")
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"steps_to_reach: steps must increase, got {list(steps)}")
    return next((int(s) for s, v in zip(steps, values) if v >= level), None)
