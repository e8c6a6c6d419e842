"""Calibration of predicted class probabilities: NLL, Brier score, expected calibration error,
and the reliability diagram's bins.

Every function takes the predictive probabilities ``(N, C)`` (for an ensemble or a sampling
method, the mean over its ``K`` members: :func:`mean_probabilities`) and the labels ``(N,)``:

* :func:`negative_log_likelihood` - the mean of ``-log p(y | x)``;
* :func:`brier_score` - the mean over inputs of ``sum_c (p_c - [y = c])^2`` (Brier, 1950; in
  ``[0, 2]``);
* :func:`expected_calibration_error` - ECE with equal-width confidence bins (Guo et al.,
  2017), computed by torchmetrics (``multiclass_calibration_error``, L1 norm);
* :func:`reliability_bins` - per bin the mean confidence, the accuracy and the count: the
  reliability diagram (:func:`hyperdnn.engine.report.reliability_figure`) and, weighted by the
  counts, the ECE again.

torchmetrics (the ``uncertainty`` extra) is imported only by :func:`expected_calibration_error`.

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
    ([0, 3], [0.0, 0.7333], [0.0, 0.3333333432674408])
"""

from __future__ import annotations

import torch

from hyperdnn.extras import import_optional

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


def _check(where: str, probs: torch.Tensor, labels: torch.Tensor) -> None:
    if probs.dim() != 2 or probs.shape[1] < 2:
        raise ValueError(f"{where}: expected probabilities (N, C) with C >= 2, got shape {tuple(probs.shape)}")
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
    equal-width bins of the top-class confidence (torchmetrics' ``multiclass_calibration_error``
    with the L1 norm).

    Args:
        probs: ``(N, C)`` predictive probabilities.
        labels: ``(N,)`` int64 classes in ``[0, C)``.
        bins: the number of bins, ``>= 1``.

    Returns:
        A float in ``[0, 1]``.

    Raises:
        ValueError: shapes, dtype, label range or ``bins`` that do not fit.
        ImportError: torchmetrics is not installed (``pip install 'hyperdnn[uncertainty]'``).
    """
    _check("expected_calibration_error", probs, labels)
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"expected_calibration_error: bins must be an int >= 1, got {bins!r}")
    tm = import_optional("torchmetrics.functional.classification", "uncertainty", "expected_calibration_error")
    return float(tm.multiclass_calibration_error(probs.float(), labels, probs.shape[1], n_bins=bins, norm="l1"))


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
    _check("reliability_bins", probs, labels)
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"reliability_bins: bins must be an int >= 1, got {bins!r}")
    conf, pred = probs.float().max(1)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    index = (torch.bucketize(conf, edges, right=True) - 1).clamp(0, bins - 1)
    count = torch.zeros(bins).scatter_add_(0, index, torch.ones_like(conf))
    conf_sum = torch.zeros(bins).scatter_add_(0, index, conf)
    acc_sum = torch.zeros(bins).scatter_add_(0, index, correct)
    safe = count.clamp_min(1)
    return {
        "edges": edges.tolist(),
        "confidence": (conf_sum / safe).tolist(),
        "accuracy": (acc_sum / safe).tolist(),
        "count": [int(c) for c in count.tolist()],
    }
