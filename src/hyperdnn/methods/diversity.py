"""A term that keeps the weight sets a noise-conditioned hypernetwork generates diverse.

Trained on the data likelihood alone, an implicit hypernetwork ``theta = h(z)`` learns to
ignore its noise: every ``z`` maps to the same good network and the "ensemble" collapses to one
member. HyperGAN (Ratzlaff and Li, ICML 2019) keeps the generated weights spread with a
regulariser on their distribution. :func:`weight_diversity` is such a regulariser that needs no
second network: the Kozachenko-Leonenko nearest-neighbour estimate of the entropy of the
generated weights (Kozachenko and Leonenko, 1987), up to its constant and its factor ``D``:

    diversity = mean_i log d_i,    d_i = min_{j != i} ||u_i - u_j|| / sqrt(D)

with ``u = theta / scale`` (each number measured in units of its layer's initialisation scale,
so that every layer counts alike) and ``D`` the number of generated numbers. Maximising it
(``loss = nll - lambda * diversity``) pushes each weight set away from its nearest neighbour,
with a logarithm's diminishing returns, until the likelihood pushes back. ``lambda = 0`` is
ordinary training of the hypernetwork.

Example::

    >>> import torch
    >>> from hyperdnn.methods.diversity import weight_diversity
    >>> w = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])  # nearest neighbours 5 apart
    >>> round(float(weight_diversity(w)), 4)  # log(5 / sqrt(2))
    1.2629
    >>> round(float(weight_diversity(2 * w) - weight_diversity(w)), 4)  # twice as spread: + log 2
    0.6931
"""

from __future__ import annotations

import torch

__all__ = ["weight_diversity"]


def weight_diversity(weights: torch.Tensor, scale: torch.Tensor | None = None, eps: float = 1e-12) -> torch.Tensor:
    """The mean log distance of each weight set to its nearest other one (RMS per number).

    Args:
        weights: ``(K, D)`` flat weight sets, ``K >= 2``.
        scale: ``(D,)`` positive per-number scales to measure in (e.g. a hypernetwork's
            ``theta_scale``: each layer's initialisation scale); ``None``: 1.
        eps: added to squared distances before the logarithm (two equal sets give
            ``0.5 * log(eps)`` instead of minus infinity).

    Returns:
        A scalar, differentiable in ``weights``; larger is more diverse.

    Raises:
        ValueError: ``weights`` is not ``(K, D)`` with ``K >= 2``, or ``scale`` is not ``(D,)``.
    """
    if weights.dim() != 2 or weights.shape[0] < 2:
        raise ValueError(f"weight_diversity: expected weights (K, D) with K >= 2 sets, got shape {tuple(weights.shape)}")  # fmt: skip
    K, D = weights.shape
    u = weights
    if scale is not None:
        if scale.shape != (D,):
            raise ValueError(f"weight_diversity: expected scale of shape ({D},), got {tuple(scale.shape)}")
        u = weights / scale
    sq = (u.unsqueeze(0) - u.unsqueeze(1)).pow(2).sum(-1) / D  # (K, K) squared RMS distances
    sq = sq + torch.diag(torch.full((K,), float("inf"), dtype=sq.dtype, device=sq.device))
    return 0.5 * torch.log(sq.min(1).values + eps).mean()
