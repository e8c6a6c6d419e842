"""Predictive uncertainty from one model: the contract every such model fulfils, and the
likelihoods it is trained on.

A model of predictive uncertainty yields ``K`` predictions per input in one batched pass (weight
sets drawn from a hypernetwork, dropout masks, the members of an ensemble):

* :class:`UncertaintyModel` - the contract: ``model(x)`` returns ``(K, N, ...)``,
  ``model.loss(x, y, likelihood, num_train)`` the training objective of one minibatch,
  ``model.trainable_parameters()`` what an optimizer trains. The hypernetwork methods
  (:class:`~hyperdnn.methods.ImplicitHypernet`, :class:`~hyperdnn.methods.BayesianHypernet`,
  :class:`~hyperdnn.methods.HypernetDropout`) and the baselines
  (:class:`~hyperdnn.baselines.DeepEnsemble`, :class:`~hyperdnn.baselines.MCDropout`) implement
  it, so one loop trains and evaluates them all.
* Likelihoods, ``(K, N, ...)`` outputs and targets -> the mean negative log-likelihood of each
  of the ``K`` members, ``(K,)``: :func:`categorical_nll` (logits) and :func:`gaussian_nll`
  (a mean and a variance per input: heteroscedastic regression).
* :func:`gaussian_mixture` - the predictive mean and variance of ``K`` Gaussian predictions
  (the mixture's moments); :func:`gaussian_outputs` - one member's mean and variance.
* :func:`dropout_active` - a context in which a module's dropout layers sample (MC dropout),
  whatever its train/eval mode; restored on exit.

Example::

    >>> import torch
    >>> from hyperdnn.methods.uncertainty import categorical_nll, gaussian_mixture
    >>> logits = torch.zeros(3, 4, 2)  # K = 3 members, N = 4 inputs, C = 2 classes
    >>> categorical_nll(logits, torch.tensor([0, 1, 1, 0]))  # log 2 per member
    tensor([0.6931, 0.6931, 0.6931])
    >>> out = torch.tensor([[[0.0, 0.0]], [[2.0, 0.0]]])  # two members: means 0 and 2, one input
    >>> mean, var = gaussian_mixture(out)  # variance: the members' own plus their spread (1)
    >>> mean, round(float(var - gaussian_outputs(out)[1][0]), 4)
    (tensor([1.]), 1.0)
"""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Likelihood",
    "UncertaintyModel",
    "categorical_nll",
    "gaussian_nll",
    "gaussian_outputs",
    "gaussian_mixture",
    "dropout_active",
    "check_samples",
]

#: outputs ``(K, N, ...)`` and targets ``(N, ...)`` -> each member's mean negative log-likelihood ``(K,)``
Likelihood = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: the smallest variance :func:`gaussian_outputs` returns (keeps the likelihood finite)
MIN_VARIANCE = 1e-6


def check_samples(where: str, name: str, k: object) -> int:
    """``k`` if it is an int ``>= 1`` (a number of samples ``K``), else a ``ValueError`` naming
    ``where`` and ``name``."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{where}: {name} must be an int >= 1 (the number of samples K), got {k!r}")
    return k


class UncertaintyModel(nn.Module, ABC):
    """A model that yields ``K`` predictions per input in one batched pass.

    Subclasses set ``samples`` (``K`` at prediction) and implement :meth:`forward`,
    :meth:`loss` and :meth:`trainable_parameters`. Randomness: :meth:`forward` and :meth:`loss`
    draw noise from ``generator`` (default: the global generator) and dropout masks from the
    global generator, so a caller that seeds both gets the same numbers again.
    """

    samples: int

    @abstractmethod
    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``K = self.samples`` predictions of the batch ``x (N, ...)``: ``(K, N, ...)``, in one
        batched pass (never a loop over ``K``)."""

    @abstractmethod
    def loss(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        likelihood: Likelihood,
        num_train: int,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The training objective of one minibatch, per training example.

        Args:
            x: ``(N, ...)`` inputs.
            y: ``(N, ...)`` targets.
            likelihood: ``(K, N, ...)`` outputs and ``y`` -> ``(K,)`` mean negative
                log-likelihoods (:func:`categorical_nll`, :func:`gaussian_nll`).
            num_train: the size of the training set (weighs a KL term per example).
            generator: draws the noise of this step.

        Returns:
            The scalar loss to minimise and the scalars to log (``{"nll": ..., ...}``).
        """

    @abstractmethod
    def trainable_parameters(self) -> list[nn.Parameter]:
        """What an optimizer trains (each parameter once)."""

    def num_trainable(self) -> int:
        """The number of trainable numbers (:meth:`trainable_parameters`)."""
        return sum(p.numel() for p in self.trainable_parameters())


# ---------------------------------------------------------------------- likelihoods
def _check_outputs(where: str, outputs: torch.Tensor, targets: torch.Tensor, trailing: int) -> None:
    if outputs.dim() < 2 or outputs.shape[1] != targets.shape[0]:
        raise ValueError(
            f"{where}: expected outputs (K, N, ...) for {targets.shape[0]} targets, got outputs of shape "
            f"{tuple(outputs.shape)} and targets of shape {tuple(targets.shape)}"
        )
    if outputs.shape[-1] != trailing and trailing:
        raise ValueError(f"{where}: expected outputs (K, N, {trailing}), got shape {tuple(outputs.shape)}")


def categorical_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each member's mean cross-entropy.

    Args:
        logits: ``(K, N, C)`` scores.
        labels: ``(N,)`` int64 classes in ``[0, C)``.

    Returns:
        ``(K,)``: ``mean_n -log softmax(logits[k, n])[labels[n]]``.

    Raises:
        ValueError: shapes that do not fit.
    """
    _check_outputs("categorical_nll", logits, labels, 0)
    if logits.dim() != 3 or labels.dim() != 1:
        raise ValueError(
            f"categorical_nll: expected logits (K, N, C) and labels (N,), got {tuple(logits.shape)} and {tuple(labels.shape)}"  # fmt: skip
        )
    K, N, C = logits.shape
    nll = F.cross_entropy(logits.reshape(K * N, C), labels.repeat(K), reduction="none")
    return nll.view(K, N).mean(1)


def gaussian_outputs(outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A heteroscedastic regressor's mean and variance: ``outputs[..., 0]`` is the mean,
    ``softplus(outputs[..., 1]) + 1e-6`` the variance.

    Args:
        outputs: ``(..., 2)``.

    Returns:
        ``mean, variance``, each ``(...)``.

    Raises:
        ValueError: the last dim is not 2.
    """
    if outputs.shape[-1] != 2:
        raise ValueError(f"gaussian_outputs: expected outputs (..., 2): a mean and a variance, got {tuple(outputs.shape)}")  # fmt: skip
    return outputs[..., 0], F.softplus(outputs[..., 1]) + MIN_VARIANCE


def gaussian_nll(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each member's mean Gaussian negative log-likelihood, ``0.5 log(2 pi v) + (y - m)^2 / (2 v)``.

    Args:
        outputs: ``(K, N, 2)``: mean and raw variance (:func:`gaussian_outputs`).
        targets: ``(N,)`` or ``(N, 1)`` real values.

    Returns:
        ``(K,)``.

    Raises:
        ValueError: shapes that do not fit.
    """
    _check_outputs("gaussian_nll", outputs, targets, 2)
    y = targets.reshape(targets.shape[0])
    mean, var = gaussian_outputs(outputs)
    return (0.5 * (torch.log(2 * math.pi * var) + (y - mean).pow(2) / var)).mean(1)


def gaussian_mixture(outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The predictive mean and variance of ``K`` Gaussian predictions with equal weights:
    ``mean_k m_k`` and ``mean_k (v_k + m_k^2) - (mean_k m_k)^2`` (the members' variance plus
    their spread).

    Args:
        outputs: ``(K, N, 2)`` (:func:`gaussian_outputs` per member).

    Returns:
        ``mean, variance``, each ``(N,)``.
    """
    mean_k, var_k = gaussian_outputs(outputs)
    mean = mean_k.mean(0)
    return mean, var_k.mean(0) + mean_k.var(0, correction=0)  # = mean_k (v_k + m_k^2) - mean^2, without cancellation


@contextlib.contextmanager
def dropout_active(module: nn.Module) -> Iterator[None]:
    """Let every dropout layer of ``module`` sample (training mode) inside the block, whatever
    the module's own mode; each layer's mode is restored on exit (also after an error).

    Example::

        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)).eval()
        >>> with dropout_active(net):
        ...     net[1].training
        True
        >>> net[1].training
        False
    """
    layers = [m for m in module.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    modes = [m.training for m in layers]
    try:
        for m in layers:
            m.train(True)
        yield
    finally:
        for m, mode in zip(layers, modes):
            m.train(mode)
