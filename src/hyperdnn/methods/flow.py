"""An invertible hypernetwork: a normalising flow from noise to weights, with its density.

A Bayesian hypernetwork (Krueger et al., 2017, "Bayesian Hypernetworks") maps noise
``eps ~ N(0, I)`` to weights ``theta = f(eps)`` through an invertible ``f``, so the density of
the weights it generates is known exactly (change of variables):

    log q(theta) = log N(eps; 0, I) - log |det df/deps|

and a variational posterior ``q`` can be trained on the evidence lower bound
(:class:`~hyperdnn.methods.BayesianHypernet`). :class:`FlowHypernetwork` is ``f``: ``layers``
RealNVP affine couplings (Dinh et al., 2017) on alternating halves of the numbers, then an
element-wise affine map to the weights' scale:

    coupling:  y = m * x + (1 - m) * (x * exp(s(m * x)) + t(m * x)),  log det = sum (1 - m) * s
    affine:    theta = mu + exp(rho) * y,                             log det = sum rho

with ``s = tanh(.)`` bounded and ``s, t`` small MLPs whose last layer starts at zero, so the
flow starts as ``N(mu, exp(rho)^2)``. The noise comes from a :class:`~hyperdnn.Noise`
conditioner (its ``sample``), so it follows the module's device and dtype.

Example::

    >>> import torch
    >>> from hyperdnn.methods.flow import FlowHypernetwork
    >>> flow = FlowHypernetwork(6, layers=2, hidden=8)
    >>> eps = flow.noise.sample(4)                      # (K, D) standard normal noise
    >>> theta, log_det = flow(eps)                      # (4, 6) weights, (4,) log |det J|
    >>> torch.allclose(flow.inverse(theta), eps, atol=1e-5)
    True
    >>> bool(torch.allclose(flow.log_prob(theta), flow.base_log_prob(eps) - log_det, atol=1e-5))
    True
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hyperdnn.conditioners import Noise
from hyperdnn.methods.uncertainty import check_samples

__all__ = ["AffineCoupling", "FlowHypernetwork"]


class AffineCoupling(nn.Module):
    """One RealNVP affine coupling: the numbers where ``mask`` is true pass unchanged and set the
    scale and shift of the others.

    Args:
        mask: ``(D,)`` bool: the numbers that condition.
        hidden: the width of the MLP ``m * x -> (s, t)``.

    ``forward(x) -> (y, log_det)`` and :meth:`inverse` act on ``(K, D)``; ``log_det`` is ``(K,)``.
    """

    def __init__(self, mask: torch.Tensor, hidden: int):
        super().__init__()
        if mask.dim() != 1 or mask.dtype != torch.bool or bool(mask.all()) or not bool(mask.any()):
            raise ValueError(f"AffineCoupling: mask must be a 1-D bool tensor with both values, got {mask!r}")
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"AffineCoupling: hidden must be an int >= 1, got {hidden!r}")
        D = mask.numel()
        self.register_buffer("mask", mask.float())
        self.net = nn.Sequential(nn.Linear(D, hidden), nn.Tanh(), nn.Linear(hidden, 2 * D))
        nn.init.zeros_(self.net[2].weight)  # the identity to start with
        nn.init.zeros_(self.net[2].bias)

    def _scale_shift(self, conditioning: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self.net(conditioning).chunk(2, dim=-1)
        free = 1.0 - self.mask
        return torch.tanh(s) * free, t * free

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self._scale_shift(x * self.mask)
        return x * torch.exp(s) + t, s.sum(-1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``x`` with ``forward(x)[0] == y``."""
        s, t = self._scale_shift(y * self.mask)  # the conditioning numbers are unchanged
        return (y - t) * torch.exp(-s)


class FlowHypernetwork(nn.Module):
    """Noise ``(K, D)`` -> weights ``(K, D)`` through an invertible map, with ``log |det J|``.

    Args:
        dim: ``D``, the number of generated numbers (e.g. ``WeightSpec.numel``).
        layers: affine couplings (``>= 0``; 0 leaves the element-wise affine map: a diagonal
            Gaussian).
        hidden: the width of each coupling's MLP.
        mean: ``(D,)`` the initial mean ``mu`` of the weights (default 0).
        std: the initial standard deviation ``exp(rho)`` of every number, ``> 0``.

    ``flow(eps)`` returns ``(theta, log_det)``; :meth:`sample` draws the noise itself;
    :meth:`log_prob` is the density of given weights (through :meth:`inverse`).

    Raises:
        ValueError: a size that is not an int in range, a mean of another shape, ``std <= 0``.
    """

    def __init__(self, dim: int, layers: int = 4, hidden: int = 32, mean: torch.Tensor | None = None, std: float = 0.1):
        super().__init__()
        for name, value, low in (("dim", dim, 2), ("layers", layers, 0), ("hidden", hidden, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"FlowHypernetwork: {name} must be an int >= {low}, got {value!r}")
        if isinstance(std, bool) or not isinstance(std, (int, float)) or not math.isfinite(std) or std <= 0:
            raise ValueError(f"FlowHypernetwork: std must be a finite number > 0, got {std!r}")
        mean = torch.zeros(dim) if mean is None else mean.detach().reshape(-1).float()
        if mean.numel() != dim:
            raise ValueError(f"FlowHypernetwork: mean must have {dim} numbers (dim), got {mean.numel()}")
        self.dim = dim
        self.noise = Noise(dim)
        index = torch.arange(dim)
        self.couplings = nn.ModuleList(AffineCoupling(index % 2 == layer % 2, hidden) for layer in range(layers))
        self.mu = nn.Parameter(mean.clone())
        self.rho = nn.Parameter(torch.full((dim,), math.log(std)))

    def _check(self, where: str, name: str, value: torch.Tensor) -> None:
        if not isinstance(value, torch.Tensor) or value.dim() != 2 or value.shape[1] != self.dim:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"FlowHypernetwork.{where}: expected {name} of shape (K, {self.dim}), got {shape}")

    def forward(self, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights and ``log |det d theta / d noise|``.

        Args:
            noise: ``(K, D)``.

        Returns:
            ``theta (K, D)`` and ``log_det (K,)``.

        Raises:
            ValueError: ``noise`` is not ``(K, D)`` (naming both shapes).
        """
        self._check("forward", "noise", noise)
        x, log_det = noise, noise.new_zeros(noise.shape[0])
        for coupling in self.couplings:
            x, ld = coupling(x)
            log_det = log_det + ld
        return self.mu + torch.exp(self.rho) * x, log_det + self.rho.sum()

    def inverse(self, theta: torch.Tensor) -> torch.Tensor:
        """The noise ``(K, D)`` that generates ``theta (K, D)``."""
        self._check("inverse", "theta", theta)
        x = (theta - self.mu) * torch.exp(-self.rho)
        for coupling in reversed(self.couplings):
            x = coupling.inverse(x)
        return x

    @staticmethod
    def base_log_prob(noise: torch.Tensor) -> torch.Tensor:
        """``log N(noise; 0, I)`` per row: ``(K, D)`` -> ``(K,)``."""
        return -0.5 * (noise.pow(2).sum(-1) + noise.shape[-1] * math.log(2 * math.pi))

    def log_prob(self, theta: torch.Tensor) -> torch.Tensor:
        """``log q(theta)`` per row of ``theta (K, D)``: ``(K,)``."""
        noise = self.inverse(theta)
        return self.base_log_prob(noise) - self.forward(noise)[1]

    def sample(self, k: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``k`` weight sets and their log-density.

        Args:
            k: ``K >= 1``.
            generator: draws the noise (default: the global generator).

        Returns:
            ``theta (K, D)`` and ``log q(theta) (K,)``.

        Raises:
            ValueError: ``k < 1``.
        """
        check_samples("FlowHypernetwork.sample", "k", k)
        noise = self.noise.sample(k, generator).to(self.mu.dtype)
        theta, log_det = self(noise)
        return theta, self.base_log_prob(noise) - log_det
