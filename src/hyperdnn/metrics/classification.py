"""Classification metrics: the share of inputs whose highest logit is the label.

Example::

    >>> import torch
    >>> from hyperdnn.metrics import accuracy
    >>> accuracy(torch.tensor([[2.0, 0.1], [0.3, 0.9], [1.0, 0.0]]), torch.tensor([0, 1, 1]))
    0.6666666865348816
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["accuracy", "model_accuracy"]


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of rows of ``logits`` whose arg-max is the label.

    Args:
        logits: ``(N, C)`` scores.
        labels: ``(N,)`` int64 classes in ``[0, C)``.

    Returns:
        A float in ``[0, 1]``: the float32 mean of the correct predictions (as
        ``(logits.argmax(1) == labels).float().mean()``), so results compare bit for bit with
        that expression.

    Raises:
        ValueError: ``logits`` is not 2-D, ``labels`` is not ``(N,)`` for its ``N`` rows, or
            a label lies outside ``[0, C)``.
    """
    if logits.dim() != 2:
        raise ValueError(f"accuracy: expected logits (N, C), got shape {tuple(logits.shape)}")
    if labels.shape != logits.shape[:1]:
        raise ValueError(
            f"accuracy: expected labels of shape ({logits.shape[0]},) for logits {tuple(logits.shape)}, "
            f"got {tuple(labels.shape)}"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]):
        raise ValueError(
            f"accuracy: labels must lie in [0, {logits.shape[1]}) for logits of {logits.shape[1]} classes, got "
            f"{int(labels.min())}..{int(labels.max())}"
        )
    return float((logits.argmax(1) == labels).float().mean())


@torch.no_grad()
def model_accuracy(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> float:
    """:func:`accuracy` of ``model(x)``, computed in eval mode without gradients.

    Args:
        model: maps ``x`` to logits ``(N, C)``.
        x: the inputs, batch first.
        labels: ``(N,)`` int64.

    The model's training mode is restored afterwards (also when it raises).
    """
    was_training = model.training
    model.eval()
    try:
        return accuracy(model(x), labels)
    finally:
        model.train(was_training)
