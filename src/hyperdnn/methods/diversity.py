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

:func:`function_diversity` measures the same entropy estimate on what the weight sets *compute*
at probe inputs instead of on the weights themselves (function space, as in functional
variational BNNs, Sun et al. 2019, and repulsive ensembles, D'Angelo and Fortuin 2021), and adds
a Gaussian prior's pull on the members' spread around their mean:

    function_diversity = mean_i log d_i - mean ||f_i - f_mean||^2 / (2 prior_std^2)

where the data pin the function the likelihood wins; where they leave it free (between
clusters of inputs, far from the data) the spread settles near ``prior_std``. Weight-space
spread does not do this: a weight set that only perturbs the learned network moves its
predictions little between clusters of data, the "in-between" failure of Foong et al. (2019).

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

__all__ = ["weight_diversity", "function_diversity"]


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


def function_diversity(outputs: torch.Tensor, prior_std: float = 1.0, eps: float = 1e-12) -> torch.Tensor:
    """The entropy estimate of :func:`weight_diversity` on the members' outputs at probe inputs,
    minus a Gaussian prior's energy on their spread around the members' mean.

    Args:
        outputs: ``(K, P, ...)``: ``K >= 2`` members' outputs at ``P`` probe inputs (flattened
            per member).
        prior_std: ``> 0``, the spread at which the two terms balance where the data are silent.
        eps: as in :func:`weight_diversity`.

    Returns:
        A scalar, differentiable in ``outputs``; larger is more diverse.

    Example::

        >>> import torch
        >>> f = torch.tensor([[0.0, 0.0], [3.0, 4.0]])  # two members, two probes
        >>> prior = ((f - f.mean(0)) ** 2).mean() / 2     # prior_std = 1
        >>> bool(torch.isclose(function_diversity(f), weight_diversity(f) - prior))
        True

    Raises:
        ValueError: fewer than two members, no probe outputs, or ``prior_std <= 0``.
    """
    if outputs.dim() < 2 or outputs.shape[0] < 2 or outputs[0].numel() == 0:
        raise ValueError(f"function_diversity: expected outputs (K, P, ...) with K >= 2 members and P >= 1 probes, got shape {tuple(outputs.shape)}")  # fmt: skip
    if isinstance(prior_std, bool) or not isinstance(prior_std, (int, float)) or not prior_std > 0:
        raise ValueError(f"function_diversity: prior_std must be a number > 0, got {prior_std!r}")
    f = outputs.flatten(1)
    spread = (f - f.mean(0, keepdim=True)).pow(2).mean()
    return weight_diversity(f, eps=eps) - spread / (2 * float(prior_std) ** 2)
