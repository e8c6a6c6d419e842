"""Calibration of predicted class probabilities: NLL, Brier score, expected calibration error,
and the reliability diagram's bins.

Every function takes the predictive probabilities ``(N, C)`` (for an ensemble or a sampling
method, the mean over its ``K`` members: :func:`mean_probabilities`) and the labels ``(N,)``:

* :func:`negative_log_likelihood` - the mean of ``-log p(y | x)``;
* :func:`brier_score` - the mean over inputs of ``sum_c (p_c - [y = c])^2`` (Brier, 1950; in
  ``[0, 2]``);
* :func:`expected_calibration_error` - ECE with equal-width confidence bins (Guo et al.,
  2017), from the bins of :func:`reliability_bins`;
* :func:`reliability_bins` - per bin the mean confidence, the accuracy and the count: the
  reliability diagram (:func:`hyperdnn.engine.report.reliability_figure`) and, weighted by the
  counts, the ECE again.

Bin ``b`` of ``B`` holds the confidences in ``[b / B, (b + 1) / B)``, and the last bin also
confidence 1 (a float32 softmax rounds to exactly 1 for a confident prediction; torchmetrics'
``multiclass_calibration_error`` puts those in a bin of their own, which changes the ECE).
The probabilities must be probabilities: finite, in ``[0, 1]``, each row summing to 1 (pass
``softmax(logits)``, or :func:`mean_probabilities` of an ensemble's logits).

Example::

    >>> import torch
    >>> from hyperdnn.metrics.calibration import brier_score, negative_log_likelihood, reliability_bins
    >>> p = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]])
    >>> y = torch.tensor([0, 0, 1])
    >>> round(negative_log_likelihood(p, y), 4)  # -(log 0.9 + log 0.4 + log 0.3) / 3
    0.7419
    >>> round(brier_score(p, y), 4)  # (0.02 + 0.72 + 0.98) / 3
    0.5733
    >>> bins = reliability_bins(p, y, 2)  # confidences 0.9, 0.6, 0.7: all in the upper bin
    >>> bins["count"], [round(c, 4) for c in bins["confidence"]], bins["accuracy"]
    ([0, 3], [0.0, 0.7333], [0.0, 0.3333333333333333])
"""

from __future__ import annotations

import torch

__all__ = [
    "mean_probabilities",
    "negative_log_likelihood",
    "brier_score",
    "expected_calibration_error",
    "reliability_bins",
]

#: probabilities are clamped to at least this before a logarithm (a certain, wrong prediction
#: costs ``-log(1e-12) = 27.6`` nats instead of infinity)
EPS = 1e-12


def mean_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """The predictive distribution of ``K`` sampled predictions: ``mean_k softmax(logits_k)``.

    Args:
        logits: ``(K, N, C)`` scores of ``K`` members (weight samples, dropout masks, networks).

    Returns:
        ``(N, C)`` probabilities.

    Raises:
        ValueError: ``logits`` is not 3-D or has no member.
    """
    if logits.dim() != 3 or logits.shape[0] < 1:
        raise ValueError(f"mean_probabilities: expected logits (K, N, C) with K >= 1, got shape {tuple(logits.shape)}")
    return logits.float().softmax(-1).mean(0)


#: how far a probability may lie outside [0, 1], and a row's sum from 1, by rounding
_PROB_TOL = 1e-3


def _check(where: str, probs: torch.Tensor, labels: torch.Tensor) -> None:
    if probs.dim() != 2 or probs.shape[1] < 2:
        raise ValueError(f"{where}: expected probabilities (N, C) with C >= 2, got shape {tuple(probs.shape)}")
    if not probs.is_floating_point():
        raise ValueError(f"{where}: expected floating-point probabilities, got {probs.dtype}")
    if probs.shape[0]:
        if not bool(torch.isfinite(probs).all()):
            raise ValueError(
                f"{where}: probabilities must be finite, got {int((~torch.isfinite(probs)).sum())} NaN or inf"
            )
        low, high = float(probs.min()), float(probs.max())
        sums = probs.double().sum(1)
        if low < -_PROB_TOL or high > 1 + _PROB_TOL or float((sums - 1).abs().max()) > _PROB_TOL:
            raise ValueError(
                f"{where}: expected probabilities (values in [0, 1], each row summing to 1), got values in "
                f"[{low:.4g}, {high:.4g}] and row sums in [{float(sums.min()):.4g}, {float(sums.max()):.4g}]; "
                f"pass softmax(logits) (mean_probabilities for an ensemble's logits)"
            )
    if labels.shape != probs.shape[:1] or labels.dtype != torch.int64:
        raise ValueError(
            f"{where}: expected int64 labels of shape ({probs.shape[0]},) for probabilities {tuple(probs.shape)}, "
            f"got {labels.dtype} {tuple(labels.shape)}"
        )
    if probs.shape[0] and (int(labels.min()) < 0 or int(labels.max()) >= probs.shape[1]):
        raise ValueError(
            f"{where}: labels must lie in [0, {probs.shape[1]}), got {int(labels.min())}..{int(labels.max())}"
        )


def negative_log_likelihood(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """The mean negative log-likelihood ``-log p_y`` of the labels, in nats.

    Args:
        probs: ``(N, C)`` predictive probabilities.
        labels: ``(N,)`` int64 classes in ``[0, C)``.

    Returns:
        A float ``>= 0``; probabilities are clamped to at least :data:`EPS` first.

    Raises:
        ValueError: shapes, dtype or label range that do not fit (naming what was given).
    """
    _check("negative_log_likelihood", probs, labels)
    p = probs.double().gather(1, labels.unsqueeze(1)).squeeze(1)
    return float(-p.clamp_min(EPS).log().mean())


def brier_score(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """The multi-class Brier score: ``mean_n sum_c (p_nc - [y_n = c])^2``, in ``[0, 2]``.

    Args:
        probs: ``(N, C)`` predictive probabilities.
        labels: ``(N,)`` int64 classes in ``[0, C)``.

    Raises:
        ValueError: shapes, dtype or label range that do not fit.
    """
    _check("brier_score", probs, labels)
    onehot = torch.nn.functional.one_hot(labels, probs.shape[1]).double()
    return float((probs.double() - onehot).pow(2).sum(1).mean())


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """Expected calibration error: ``sum_b (n_b / N) |accuracy_b - confidence_b|`` over ``bins``
    equal-width bins of the top-class confidence (Guo et al., 2017), the bins of
    :func:`reliability_bins` (confidence 1 in the last bin).

    Args:
        probs: ``(N, C)`` predictive probabilities.
        labels: ``(N,)`` int64 classes in ``[0, C)``.
        bins: the number of bins, ``>= 1``.

    Returns:
        A float in ``[0, 1]``.

    Raises:
        ValueError: shapes, dtype, label range, values that are not probabilities, or
            ``bins`` that do not fit.
    """
    count, conf_sum, acc_sum = _binned("expected_calibration_error", probs, labels, bins)
    n = float(count.sum())
    return float((conf_sum - acc_sum).abs().sum()) / n if n else 0.0


def _binned(where: str, probs: torch.Tensor, labels: torch.Tensor, bins: int) -> tuple[torch.Tensor, ...]:
    """Per bin: the count, the sum of confidences and the number correct (float64)."""
    _check(where, probs, labels)
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"{where}: bins must be an int >= 1, got {bins!r}")
    conf, pred = probs.double().max(1)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    index = (torch.bucketize(conf, edges, right=True) - 1).clamp(0, bins - 1)
    zeros = torch.zeros(bins, dtype=torch.float64)
    count = zeros.scatter_add(0, index, torch.ones_like(conf))
    return count, zeros.scatter_add(0, index, conf), zeros.scatter_add(0, index, correct)


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> dict[str, list]:
    """The reliability diagram's numbers: per equal-width bin of the top-class confidence, the
    mean confidence, the accuracy and the number of inputs (the binning of
    :func:`expected_calibration_error`: bin ``b`` holds ``b / bins <= confidence < (b + 1) /
    bins``, the last bin also confidence 1).

    Args:
        probs: ``(N, C)`` predictive probabilities.
        labels: ``(N,)`` int64 classes in ``[0, C)``.
        bins: the number of bins, ``>= 1``.

    Returns:
        ``{"edges": bins + 1 floats, "confidence": bins floats, "accuracy": bins floats,
        "count": bins ints}`` (an empty bin has confidence and accuracy 0); JSON-ready.

    Raises:
        ValueError: shapes, dtype, label range or ``bins`` that do not fit.
    """
    count, conf_sum, acc_sum = _binned("reliability_bins", probs, labels, bins)
    safe = count.clamp_min(1)
    return {
        "edges": torch.linspace(0, 1, bins + 1).tolist(),
        "confidence": (conf_sum / safe).tolist(),
        "accuracy": (acc_sum / safe).tolist(),
        "count": [int(c) for c in count.tolist()],
    }
