"""Pareto fronts: which points are non-dominated, and the hypervolume they dominate.

Every objective is minimised (losses). The hypervolume of a set of points is the area (volume
for ``m > 2``) of the region between the points and a reference point that some point of the
set dominates: larger is better, and it rewards both being close to the true front and
covering it. It is computed by pymoo's ``Hypervolume`` indicator (``pymoo.indicators.hv``,
which runs moocore's exact algorithm), installed by the ``pareto`` extra
(``pip install 'hyperdnn[pareto]'``). Points that do not dominate the reference point add
nothing; the reference point must be stated with every number reported (PHN uses ``(2, 2)``
for two cross-entropy losses).

Example::

    >>> import torch
    >>> from hyperdnn.metrics.pareto import hypervolume, non_dominated
    >>> front = torch.tensor([[0.2, 0.6], [0.6, 0.2], [0.5, 0.5]])
    >>> round(hypervolume(front, (1.0, 1.0)), 6)   # strips: 0.3 * 0.4 + 0.1 * 0.5 + 0.4 * 0.8
    0.49
    >>> non_dominated(torch.tensor([[0.2, 0.6], [0.3, 0.7], [0.6, 0.2]])).tolist()
    [True, False, True]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hyperdnn.extras import import_optional

__all__ = ["hypervolume", "non_dominated"]


def _points(where: str, points: Any) -> torch.Tensor:
    try:
        p = torch.as_tensor(points, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{where}: points must be an (n, m) array of numbers, got {points!r}") from None
    if p.dim() != 2 or p.shape[1] == 0:
        raise ValueError(f"{where}: points must have shape (n, m) with m >= 1, got shape {tuple(p.shape)}")
    if not bool(torch.isfinite(p).all()):
        rows = sorted({int(i) for i in (~torch.isfinite(p)).nonzero()[:, 0]})
        raise ValueError(f"{where}: every point must be finite; rows {rows} are not")
    return p


def hypervolume(points: Any, reference: Sequence[float] | torch.Tensor) -> float:
    """The hypervolume that ``points`` dominate up to ``reference`` (minimisation).

    Args:
        points: ``(n, m)`` objective values (a tensor, array or nested sequence); ``n`` may be 0.
        reference: ``(m,)``, the reference point (worse than every point of interest).

    Returns:
        The hypervolume, ``>= 0`` (0 for no point, or none that dominates ``reference``).

    Raises:
        ValueError: points that are not ``(n, m)`` and finite, or a reference that is not ``m``
            finite numbers.
        ImportError: pymoo is not installed (naming ``pip install 'hyperdnn[pareto]'``).
    """
    p = _points("hypervolume", points)
    ref = torch.as_tensor(reference, dtype=torch.float64).flatten()
    if ref.numel() != p.shape[1] or not all(math.isfinite(v) for v in ref.tolist()):
        raise ValueError(
            f"hypervolume: reference must be {p.shape[1]} finite numbers (one per objective), got {list(ref.tolist())}"
        )
    hv = import_optional("pymoo.indicators.hv", "pareto", "hypervolume")
    inside = p[(p < ref).all(1)]
    if inside.shape[0] == 0:
        return 0.0
    return float(hv.HV(ref_point=ref.numpy())(np.ascontiguousarray(inside.numpy())))


def non_dominated(points: Any) -> torch.Tensor:
    """Which points no other point dominates (minimisation: ``q`` dominates ``p`` when it is no
    worse in every objective and better in one); equal points keep each other.

    Args:
        points: ``(n, m)``.

    Returns:
        A bool tensor ``(n,)``.
    """
    p = _points("non_dominated", points)
    no_worse = (p.unsqueeze(0) <= p.unsqueeze(1)).all(-1)  # [i, j]: j is no worse than i everywhere
    better = (p.unsqueeze(0) < p.unsqueeze(1)).any(-1)  # [i, j]: j is better than i somewhere
    return ~(no_worse & better).any(1)
