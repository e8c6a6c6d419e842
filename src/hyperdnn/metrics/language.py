"""Language-model metrics: bits per character.

Example::

    >>> import torch
    >>> from hyperdnn.metrics.language import bits_per_character
    >>> ids = torch.tensor([[1, 5, 2, 0]])                  # <s> a </s> <pad>
    >>> logits = torch.zeros(1, 4, 8)                       # uniform over 8 ids
    >>> round(bits_per_character(logits, ids), 6)           # log2(8): 3 bits, padding ignored
    3.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["next_token_nll", "bits_per_character", "weight_set_nll"]


def next_token_nll(logits: torch.Tensor, ids: torch.Tensor, pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token negative log-likelihood (nats) per sequence and the number of predicted
    tokens per sequence.

    Position ``t`` of ``logits (B, T, V)`` predicts ``ids[:, t + 1]`` (``ids (B, T)``); padding
    targets (``pad``) are not counted. Every other target counts, the end marker included, so
    a word of ``n`` characters has ``n + 1`` predictions.

    Returns:
        ``(nll (B,), count (B,))``, float and int64.
    """
    if logits.dim() != 3 or ids.shape != logits.shape[:2]:
        raise ValueError(f"next_token_nll: expected logits (B, T, V) and ids (B, T), got {tuple(logits.shape)} and {tuple(ids.shape)}")  # fmt: skip
    target = ids[:, 1:]
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), target, reduction="none", ignore_index=pad)
    return nll.sum(1), (target != pad).sum(1)


def bits_per_character(logits: torch.Tensor, ids: torch.Tensor, pad: int = 0) -> float:
    """Bits per predicted character over a batch: total next-token NLL / (count * ln 2).

    Args:
        logits: ``(B, T, V)`` next-token logits.
        ids: ``(B, T)`` the sequences (``<s> ... </s>`` padded with ``pad``).
        pad: the padding id.
    """
    nll, count = next_token_nll(logits, ids, pad)
    return float(nll.detach().sum()) / (int(count.sum()) * math.log(2))


def weight_set_nll(target: Any, weights: Mapping[str, torch.Tensor], ids: torch.Tensor, batch_size: int = 512) -> float:
    """Mean next-token negative log-likelihood (nats per predicted token) of ``ids (B, T)`` when
    ``target`` (a :class:`~hyperdnn.target.Target` of a causal language model) runs the one
    weight set ``weights`` (each tensor ``(1, ...)``) on every sequence; ``/ ln 2`` gives bits
    per character. Rows go through in batches of ``batch_size``, each cut to its longest row."""
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in ids.split(batch_size):
            batch = batch[:, : int((batch != 0).sum(1).max())]
            sets = {n: w.expand(len(batch), *w.shape[1:]) for n, w in weights.items()}
            nll, n = next_token_nll(target.run(sets, batch, mode="per_sample"), batch)
            total, count = total + float(nll.sum()), count + int(n.sum())
    return total / count
