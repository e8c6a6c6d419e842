"""Out-of-distribution detection from the spread of sampled predictions.

A model that yields ``K`` predictive distributions per input (weight samples, dropout masks,
ensemble members: probabilities ``(K, N, C)``) scores each input by

* :func:`predictive_entropy` - ``H[mean_k p_k]``: total uncertainty;
* :func:`expected_entropy` - ``mean_k H[p_k]``: the aleatoric part;
* :func:`mutual_information` - their difference, ``H[mean_k p_k] - mean_k H[p_k]`` (the
  information the label would give about the weights; BALD, Houlsby et al. 2011): the
  epistemic part, zero when all ``K`` members agree (a single deterministic network);

and :func:`ood_auroc` is the area under the ROC curve of telling out-of-distribution inputs
(positives) from in-distribution ones by that score (torchmetrics' ``binary_auroc``): 0.5 is
chance, 1.0 separates them completely. Entropies are in nats.

torchmetrics (the ``uncertainty`` extra) is imported only by :func:`ood_auroc`.

Example::

    >>> import torch
    >>> from hyperdnn.metrics.ood import mutual_information, ood_auroc, predictive_entropy
    >>> agree = torch.tensor([[[0.5, 0.5]], [[0.5, 0.5]]])  # K = 2 members, one input
    >>> differ = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    >>> round(float(predictive_entropy(agree)), 4), round(float(mutual_information(agree)), 4)  # log 2, 0
    (0.6931, 0.0)
    >>> round(float(mutual_information(differ)), 4)  # log 2: all of it epistemic
    0.6931
    >>> ood_auroc(torch.tensor([0.1, 0.4]), torch.tensor([0.3, 0.9]))  # 3 of 4 pairs ranked right
    0.75
"""

from __future__ import annotations

import torch

from hyperdnn.extras import import_optional

__all__ = ["entropy", "predictive_entropy", "expected_entropy", "mutual_information", "ood_auroc"]


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """``-sum_c p_c log p_c`` over the last dim (``0 log 0 = 0``), in nats, float64.

    Args:
        probs: ``(..., C)`` probabilities.

    Returns:
        ``(...)``: one entropy per distribution.
    """
    p = probs.double()
    return -torch.special.xlogy(p, p).sum(-1)


def _members(where: str, probs: torch.Tensor) -> torch.Tensor:
    if probs.dim() != 3 or probs.shape[0] < 1:
        raise ValueError(f"{where}: expected probabilities (K, N, C) with K >= 1, got shape {tuple(probs.shape)}")
    return probs


def predictive_entropy(probs: torch.Tensor) -> torch.Tensor:
    """The entropy of the mean prediction, ``H[mean_k p_k]``.

    Args:
        probs: ``(K, N, C)`` probabilities of ``K`` members.

    Returns:
        ``(N,)`` float64.

    Raises:
        ValueError: ``probs`` is not ``(K, N, C)``.
    """
    return entropy(_members("predictive_entropy", probs).double().mean(0))


def expected_entropy(probs: torch.Tensor) -> torch.Tensor:
    """The mean entropy of the members, ``mean_k H[p_k]``.

    Args:
        probs: ``(K, N, C)`` probabilities of ``K`` members.

    Returns:
        ``(N,)`` float64.

    Raises:
        ValueError: ``probs`` is not ``(K, N, C)``.
    """
    return entropy(_members("expected_entropy", probs)).mean(0)


def mutual_information(probs: torch.Tensor) -> torch.Tensor:
    """``H[mean_k p_k] - mean_k H[p_k]``: the members' disagreement (``>= 0``, at most
    ``log K`` and ``log C``), clamped at 0 against rounding.

    Args:
        probs: ``(K, N, C)`` probabilities of ``K`` members.

    Returns:
        ``(N,)`` float64.

    Raises:
        ValueError: ``probs`` is not ``(K, N, C)``.
    """
    _members("mutual_information", probs)
    return (predictive_entropy(probs) - expected_entropy(probs)).clamp_min(0.0)


def ood_auroc(in_scores: torch.Tensor, out_scores: torch.Tensor) -> float:
    """The AUROC of telling ``out_scores`` (positives) from ``in_scores`` by a higher score.

    Ties count half (the Mann-Whitney statistic); computed by torchmetrics'
    ``binary_auroc``.

    Args:
        in_scores: ``(N_in,)`` scores of in-distribution inputs (e.g. predictive entropy).
        out_scores: ``(N_out,)`` scores of out-of-distribution inputs.

    Returns:
        A float in ``[0, 1]``.

    Raises:
        ValueError: a score tensor that is not 1-D, is empty or is not finite.
        ImportError: torchmetrics is not installed (``pip install 'hyperdnn[uncertainty]'``).
    """
    for name, s in (("in_scores", in_scores), ("out_scores", out_scores)):
        if s.dim() != 1 or s.numel() == 0 or not bool(torch.isfinite(s).all()):
            raise ValueError(f"ood_auroc: {name} must be a non-empty 1-D tensor of finite scores, got shape {tuple(s.shape)}")  # fmt: skip
    tm = import_optional("torchmetrics.functional.classification", "uncertainty", "ood_auroc")
    scores = torch.cat([in_scores.double(), out_scores.double()])
    labels = torch.cat([torch.zeros(len(in_scores), dtype=torch.long), torch.ones(len(out_scores), dtype=torch.long)])
    # torchmetrics reads scores outside [0, 1] as logits (a sigmoid, which can round large
    # scores into ties): pass the dense ranks scaled to [0, 1] instead, the same order and ties
    distinct, rank = torch.unique(scores, return_inverse=True)
    return float(tm.binary_auroc(rank.double() / max(len(distinct) - 1, 1), labels, thresholds=None))
