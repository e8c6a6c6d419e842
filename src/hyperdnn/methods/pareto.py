"""Pareto hypernetworks (Navon et al., ICLR 2021): one model for every trade-off between objectives.

A preference ray ``r`` (a point of the simplex: ``r_j >= 0``, ``sum r_j = 1``) says how much each
of ``m`` objectives matters. A Pareto hypernetwork ``h(r; phi)`` generates the weights of a target
network whose loss vector ``l(theta)`` should be the Pareto-optimal point for ``r``. Training
draws rays from a Dirichlet distribution at every step and minimises one of two objectives:

* :class:`LinearScalarization` (PHN-LS): ``sum_j r_j l_j``. Cheap; it can only reach the convex
  parts of a front (on a concave front it ends at the ends).
* :class:`ExactParetoOptimal` (PHN-EPO): the descent direction of Exact Pareto Optimal search
  (Mahapatra and Rajan, ICML 2020), which first moves the loss vector onto the ray
  (``r_1 l_1 = r_2 l_2``: the ray's intersection with the front, convex or not) and then along
  it. Each step solves a small linear programme over the Gram matrix of the objectives'
  gradients; here it is solved exactly for one or two objectives (:func:`epo_coefficients`),
  with the gradients taken with respect to the generated weights ``theta`` of each ray.

:class:`ParetoHyperNetwork` runs ``K`` rays on one shared batch: a :class:`~hyperdnn.Continuous`
conditioner with ``execution="ensemble"`` gives ``(K, N, ...)`` outputs, so one step trains
``K`` trade-offs at once. :func:`sample_rays` draws training rays, :func:`spread_rays` the rays
a front is drawn at, :func:`check_rays` checks rays a user gives (every public entry point calls
it). :func:`toy_losses` and :func:`toy_front` are the standard two-objective toy problem with a
known, concave front (Lin et al., NeurIPS 2019).

Example::

    >>> import torch
    >>> from torch import nn
    >>> from hyperdnn import MLP, Target
    >>> from hyperdnn.methods.pareto import LinearScalarization, ParetoHyperNetwork, sample_rays, toy_losses
    >>> _ = torch.manual_seed(0)
    >>> phn = ParetoHyperNetwork(Target(nn.Linear(1, 2, bias=False)), 2, MLP((16,)))
    >>> rays = sample_rays(4, 2, alpha=1.0, generator=torch.Generator().manual_seed(0))
    >>> weights = phn.generate(rays)                     # K = 4 weight sets
    >>> points = phn.apply(weights, torch.ones(1, 1))    # (K, N, 2): the toy's x for each ray
    >>> losses = toy_losses(points[:, 0])                # (K, 2)
    >>> LinearScalarization().loss(losses, rays, weights).shape
    torch.Size([])
    >>> from hyperdnn.methods.pareto import check_rays
    >>> check_rays([[0.5, 0.6]])
    Traceback (most recent call last):
    ...
    ValueError: rays: each preference ray must have entries >= 0 that sum to 1; ray 0 sums to 1.1 ([0.5, 0.6])
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from hyperdnn.conditioners import Continuous
from hyperdnn.heads import Head, Once
from hyperdnn.hypernet import HyperModel, HyperNetwork
from hyperdnn.target import Target
from hyperdnn.trunks import MLP, Trunk

__all__ = [
    "check_rays",
    "sample_rays",
    "spread_rays",
    "ParetoSolver",
    "LinearScalarization",
    "ExactParetoOptimal",
    "epo_coefficients",
    "ParetoHyperNetwork",
    "toy_losses",
    "toy_front",
]

#: how far from 1 a ray's sum may be (float32 rounding of rays written with a few decimals)
RAY_SUM_TOLERANCE = 1e-4


# ====================================================================== rays
def check_rays(rays: Any, num_objectives: int | None = None, where: str = "rays") -> torch.Tensor:
    """Preference rays as a float tensor ``(K, m)``, or one ``ValueError`` naming every bad ray.

    Args:
        rays: ``(K, m)`` or one ray ``(m,)``: a tensor or nested sequences of numbers.
        num_objectives: the ``m`` expected (``None``: any ``m >= 1``).
        where: what the rays are called in the message (an option or argument name).

    Returns:
        The rays, ``(K, m)`` (float32 unless given as another floating dtype).

    Raises:
        ValueError: not a 1-D or 2-D array of finite numbers, ``m`` is not ``num_objectives``,
            no ray, a negative entry, or a ray whose sum is not 1 (within ``1e-4``).
    """
    try:
        r = rays if isinstance(rays, torch.Tensor) else torch.tensor(rays, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{where}: expected preference rays, a (K, m) array of numbers, got {rays!r}") from None
    if not r.dtype.is_floating_point:
        r = r.float()
    if r.dim() == 1:
        r = r.unsqueeze(0)
    if r.dim() != 2 or r.shape[0] == 0 or r.shape[1] == 0:
        raise ValueError(f"{where}: expected preference rays of shape (K, m) or (m,), got shape {tuple(r.shape)}")
    if num_objectives is not None and r.shape[1] != num_objectives:
        raise ValueError(
            f"{where}: expected rays of {num_objectives} objectives, shape (K, {num_objectives}); "
            f"got shape {tuple(r.shape)}"
        )
    values = r.detach().double().cpu()
    problems = []
    for k, ray in enumerate(values.tolist()):
        shown = [round(v, 6) for v in ray]
        if not all(math.isfinite(v) for v in ray):
            problems.append(f"ray {k} is not finite ({shown})")
        elif min(ray) < 0:
            problems.append(f"ray {k} has a negative entry ({shown})")
        elif abs(sum(ray) - 1.0) > RAY_SUM_TOLERANCE:
            problems.append(f"ray {k} sums to {sum(ray):.6g} ({shown})")
    if problems:
        raise ValueError(f"{where}: each preference ray must have entries >= 0 that sum to 1; {'; '.join(problems)}")
    return r


def sample_rays(k: int, num_objectives: int, alpha: float, generator: torch.Generator) -> torch.Tensor:
    """``k`` training rays from a symmetric Dirichlet distribution of concentration ``alpha``.

    Small ``alpha`` (PHN uses 0.2) puts more rays near the simplex's corners, ``alpha = 1`` is
    uniform on the simplex. Everything drawn comes from ``generator`` (the global random state
    is left as it was).

    Args:
        k: the number of rays, ``>= 1``.
        num_objectives: ``m >= 1`` (with one objective every ray is ``(1,)``).
        alpha: the concentration, ``> 0``.
        generator: a CPU ``torch.Generator``.

    Returns:
        Float32 rays ``(k, m)`` on the simplex.

    Raises:
        ValueError: ``k`` or ``num_objectives`` below 1, or ``alpha <= 0``.
    """
    for name, value in (("k", k), ("num_objectives", num_objectives)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"sample_rays: {name} must be an int >= 1, got {value!r}")
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"sample_rays: alpha must be a number > 0, got {alpha!r}")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        concentration = torch.full((num_objectives,), float(alpha), dtype=torch.float64)
        rays = torch.distributions.Dirichlet(concentration).sample((k,))
    rays = rays.clamp_min(0.0)
    return (rays / rays.sum(1, keepdim=True)).float()


def spread_rays(n: int, min_angle: float = 0.1) -> torch.Tensor:
    """``n`` two-objective rays evenly spread in angle, as a front is drawn and measured.

    The directions ``(cos a, sin a)`` for ``a`` from ``min_angle`` to ``pi/2 - min_angle``
    (PHN's test rays; one ray: ``a = pi/4``), each scaled to sum to 1.

    Args:
        n: the number of rays, ``>= 1``.
        min_angle: the angle kept from each axis, in ``[0, pi/4]`` radians (0: the corners
            ``(1, 0)`` and ``(0, 1)`` are included).

    Returns:
        Float32 rays ``(n, 2)``, the first weighting the first objective most.

    Example::

        >>> from hyperdnn.methods.pareto import spread_rays
        >>> spread_rays(3, 0.0)
        tensor([[1.0000, 0.0000],
                [0.5000, 0.5000],
                [0.0000, 1.0000]])
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"spread_rays: n must be an int >= 1, got {n!r}")
    if not (isinstance(min_angle, (int, float)) and 0.0 <= min_angle <= math.pi / 4):
        raise ValueError(f"spread_rays: min_angle must be in [0, pi/4], got {min_angle!r}")
    if n == 1:
        angles = torch.tensor([math.pi / 4], dtype=torch.float64)
    else:
        angles = torch.linspace(min_angle, math.pi / 2 - min_angle, n, dtype=torch.float64)
    rays = torch.stack([torch.cos(angles), torch.sin(angles)], 1).clamp_min(0.0)
    rays = torch.where(rays < 1e-12, torch.zeros_like(rays), rays)
    return (rays / rays.sum(1, keepdim=True)).float()


# ====================================================================== solvers
def _check_losses(where: str, losses: Any, rays: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(losses, torch.Tensor) or losses.dim() != 2 or not losses.dtype.is_floating_point:
        shape = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
        raise ValueError(f"{where}: losses must be a float tensor (K, m), one loss per ray and objective; got {shape}")
    r = check_rays(rays, losses.shape[1], f"{where}: rays")
    if r.shape[0] != losses.shape[0]:
        raise ValueError(
            f"{where}: expected one ray per row of losses, {losses.shape[0]} rays; got {r.shape[0]} "
            f"(losses {tuple(losses.shape)}, rays {tuple(r.shape)})"
        )
    return losses, r.to(losses)


class ParetoSolver(ABC):
    """How a Pareto hypernetwork turns the losses of ``K`` rays into one training loss."""

    #: a short name for tables ("LS", "EPO")
    name: str = ""

    @abstractmethod
    def loss(self, losses: torch.Tensor, rays: Any, weights: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The training loss of one step.

        Args:
            losses: ``(K, m)``: ray ``k``'s loss on objective ``j`` (connected to the weights).
            rays: the ``K`` preference rays, ``(K, m)`` on the simplex (checked).
            weights: the weights generated for the rays, name -> ``(K, ...)`` (needed by
                solvers that look at gradients).

        Returns:
            A scalar: its value is the mean over rays of the weighted losses, and
            ``loss.backward()`` gives the hypernetwork this solver's descent direction.
        """


class LinearScalarization(ParetoSolver):
    """PHN-LS: the mean over rays of ``sum_j r_j l_j`` (``weights`` is not needed).

    With one objective every ray is ``(1,)`` and the loss is the mean loss: ordinary training.
    """

    name = "LS"

    def loss(self, losses: torch.Tensor, rays: Any, weights: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        losses, r = _check_losses("LinearScalarization.loss", losses, rays)
        return (r * losses).sum(1).mean()


def epo_coefficients(losses: torch.Tensor, gram: torch.Tensor, ray: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """The EPO search direction's weights ``beta`` (the step is ``-sum_j beta_j grad l_j``), exactly,
    for one or two objectives.

    Following Mahapatra and Rajan (2020): with ``u = r * l / sum(r * l)`` and the non-uniformity
    ``mu = sum_j u_j log(m u_j)`` (zero exactly on the ray), the adjustment
    ``a_j = r_j (log(m u_j) - mu)`` points from ``l`` towards the ray. ``C = G G^T`` is the Gram
    matrix of the gradients, so ``(C beta)_j`` is how fast ``l_j`` falls along the step.

    * Off the ray (``mu > eps``, *balance*): maximise ``beta . C a`` (move towards the ray), with
      ``(C beta)_j >= (C a)_j`` for the objectives that the adjustment does not ask to fall
      (``(C a)_j <= 0``), and ``(C beta)_j >= 0`` for the objective of the largest ``r_j l_j``
      (it must not rise); when no objective is asked to fall, every ``(C beta)_j >= 0``.
    * On the ray (*descent*): maximise ``sum_j (C beta)_j`` with every ``(C beta)_j >= 0`` and
      ``beta . C a >= min(0, max_j (C a)_j)``; without a solution, without the last condition.

    ``beta`` lies on the simplex; with two objectives it is ``(t, 1 - t)`` and each condition is
    an interval of ``t``, so the linear programme is solved exactly: the end of the feasible
    interval that the objective prefers (its middle when the objective is flat there). When no
    ``beta`` fits, the ray itself is returned (linear scalarisation). A ray with a single
    positive entry is that objective alone.

    Args:
        losses: ``(m,)`` losses, ``>= 0``.
        gram: ``(m, m)`` Gram matrix of their gradients.
        ray: ``(m,)`` preference ray on the simplex.
        eps: the non-uniformity below which the losses count as on the ray.

    Returns:
        ``beta``, float64 ``(m,)`` on the simplex.

    Raises:
        ValueError: ``m`` is not 1 or 2, the shapes disagree, or a loss is negative.

    Example::

        >>> import torch
        >>> from hyperdnn.methods.pareto import epo_coefficients
        >>> g = torch.tensor([[1.0, 0.0], [0.0, 1.0]])            # orthogonal gradients
        >>> epo_coefficients(torch.tensor([2.0, 1.0]), g @ g.T, torch.tensor([0.5, 0.5]))
        tensor([1., 0.], dtype=torch.float64)
    """
    m = losses.shape[-1] if isinstance(losses, torch.Tensor) and losses.dim() == 1 else None
    if m not in (1, 2) or tuple(gram.shape) != (m, m) or tuple(ray.shape) != (m,):
        raise ValueError(
            "epo_coefficients: expected losses (m,), gram (m, m) and ray (m,) with m = 1 or 2; got "
            f"losses {tuple(getattr(losses, 'shape', ()))}, gram {tuple(gram.shape)}, ray {tuple(ray.shape)}"
        )
    loss, C, r = losses.double(), gram.double(), ray.double()
    if bool((loss < 0).any()):
        raise ValueError(f"epo_coefficients: expected losses >= 0, got {loss.tolist()}")
    if m == 1:
        return torch.ones(1, dtype=torch.float64)
    positive = (r > 0).nonzero().flatten()
    if len(positive) == 1:  # a corner of the simplex: that objective alone
        return torch.nn.functional.one_hot(positive[0], m).double()
    rl = (r * loss).clamp_min(1e-300)
    u = (rl / rl.sum()).clamp_min(1e-12)
    mu = float((u * torch.log(m * u)).sum())
    a = r * (torch.log(m * u) - mu)
    Ca = C @ a
    rows: list[tuple[torch.Tensor, float]] = []  # (C beta)_j >= bound, as (row of C, bound)
    if mu > eps:
        objective = Ca
        falling = Ca > 0
        worst = int(torch.argmax(rl))
        if bool(falling.any()):
            rows += [(C[j], float(Ca[j])) for j in range(m) if not bool(falling[j]) and j != worst]
            rows.append((C[worst], 0.0))
        else:
            rows += [(C[j], 0.0) for j in range(m)]
        beta = _solve_two(objective, rows, [])
    else:
        objective = C.sum(0)
        rows += [(C[j], 0.0) for j in range(m)]
        beta = _solve_two(objective, rows, [(Ca, min(0.0, float(Ca.max())))])
        if beta is None:
            beta = _solve_two(objective, rows, [])
    return beta if beta is not None else (r / r.sum())


def _solve_two(
    objective: torch.Tensor, rows: Sequence[tuple[torch.Tensor, float]], extra: Sequence[tuple[torch.Tensor, float]]
) -> torch.Tensor | None:
    """max ``beta . objective`` over ``beta = (t, 1 - t)``, ``t`` in [0, 1], with ``beta . row >= bound``
    for every ``(row, bound)`` of ``rows`` and ``extra``; ``None`` when nothing fits."""
    lo, hi = 0.0, 1.0
    for row, bound in [*rows, *extra]:
        slope, base = float(row[0] - row[1]), float(row[1])  # beta . row = base + t * slope
        need = bound - base
        tol = 1e-12 * (abs(float(row[0])) + abs(float(row[1])) + abs(bound) + 1.0)
        if abs(slope) <= tol:
            if need > tol:
                return None
        elif slope > 0:
            lo = max(lo, need / slope)
        else:
            hi = min(hi, need / slope)
    if lo > hi + 1e-12:
        return None
    lo, hi = min(lo, hi), max(lo, hi)
    gain = float(objective[0] - objective[1])
    scale = 1e-12 * (abs(float(objective[0])) + abs(float(objective[1])) + 1.0)
    t = hi if gain > scale else lo if gain < -scale else (lo + hi) / 2
    return torch.tensor([t, 1.0 - t], dtype=torch.float64)


class ExactParetoOptimal(ParetoSolver):
    """PHN-EPO: each ray's losses weighted by its EPO coefficients (:func:`epo_coefficients`).

    For each ray ``k`` the gradients of its ``m`` losses with respect to its generated weights
    ``theta_k`` give the Gram matrix (``m`` backward passes through the target, none through the
    hypernetwork); the step then follows ``sum_j beta_kj grad l_kj``, scaled by ``m`` as in
    PHN (``beta`` sums to 1). The returned loss's value is ``mean_k sum_j m beta_kj l_kj``; its
    backward sends that direction through ``theta`` into the hypernetwork without another pass
    through the target. Up to two objectives (the exact solver); with one it is ordinary training.

    Args:
        eps: the non-uniformity below which a ray's losses count as on the ray.
    """

    name = "EPO"

    def __init__(self, eps: float = 1e-4):
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
            raise ValueError(f"ExactParetoOptimal: eps must be a number >= 0, got {eps!r}")
        self.eps = float(eps)

    def loss(self, losses: torch.Tensor, rays: Any, weights: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        losses, r = _check_losses("ExactParetoOptimal.loss", losses, rays)
        K, m = losses.shape
        if m > 2:
            raise ValueError(f"ExactParetoOptimal: the exact solver handles 1 or 2 objectives, got {m}")
        if m == 1:
            return losses[:, 0].mean()
        if bool((losses.detach() < 0).any()):
            raise ValueError(
                "ExactParetoOptimal.loss: the exact solver needs losses >= 0 (it balances r_j * L_j), got "
                f"{losses.detach().min().item():.4g}; shift a loss that can be negative (a Gaussian NLL)"
            )
        if not weights:
            raise ValueError("ExactParetoOptimal.loss: needs the generated weights (name -> (K, ...)), got none")
        tensors = list(weights.values())
        bad = [n for n, w in weights.items() if w.dim() == 0 or w.shape[0] != K or not w.requires_grad]
        if bad:
            raise ValueError(
                f"ExactParetoOptimal.loss: every generated weight needs a leading dim of K = {K} rays and a "
                f"gradient; not so for {bad}"
            )
        grads = []
        for j in range(m):  # ray k's loss depends on theta_k only: one pass gives every ray's gradient
            g = torch.autograd.grad(losses[:, j].sum(), tensors, retain_graph=True, allow_unused=True)
            grads.append(torch.cat([(z if z is not None else torch.zeros_like(w)).reshape(K, -1)
                                    for z, w in zip(g, tensors)], 1))  # fmt: skip
        G = torch.stack(grads, 1).detach()  # (K, m, P)
        gram = G @ G.transpose(1, 2)  # (K, m, m)
        with torch.no_grad():
            beta = torch.stack(
                [epo_coefficients(losses[k].detach(), gram[k], r[k].detach(), self.eps) for k in range(K)]
            ).to(losses)
        beta = m * beta  # (K, m), fixed: the LP's weights are not differentiated
        # its gradient for theta_k is the EPO direction sum_j beta_kj dL_kj/dtheta_k / K, and the
        # target's own (not generated) tensors get the same beta-weighted gradient
        return (beta * losses).sum(1).mean()


# ====================================================================== the model
class ParetoHyperNetwork(nn.Module):
    """A preference-conditioned hypernetwork and its target: ``model(x, rays) -> (K, N, ...)``.

    The hypernetwork reads the ray through a :class:`~hyperdnn.Continuous` conditioner with
    ``execution="ensemble"``, so ``K`` rays run on one shared batch of ``N`` inputs.

    Args:
        target: the :class:`~hyperdnn.Target` whose weights are generated (e.g. a network with
            one output head per objective).
        num_objectives: ``m``, the length of a ray.
        trunk: the hypernetwork's trunk (PHN: ``MLP((100, 100))``).
        head: its head (PHN: one linear layer per target tensor, i.e. :class:`~hyperdnn.Once`).
        **hypernet: further :class:`~hyperdnn.HyperNetwork` arguments (``residual="target"``,
            ``learn_theta0=True``, ``residual_scale`` ...).

    Example::

        >>> import torch
        >>> from torch import nn
        >>> from hyperdnn import MLP, Target
        >>> from hyperdnn.methods.pareto import ParetoHyperNetwork
        >>> phn = ParetoHyperNetwork(Target(nn.Linear(4, 6)), 2, MLP((8,)))
        >>> phn(torch.randn(5, 4), [[0.2, 0.8], [0.7, 0.3], [1.0, 0.0]]).shape
        torch.Size([3, 5, 6])
        >>> phn(torch.randn(5, 4), [[-0.2, 1.2]])
        Traceback (most recent call last):
        ...
        ValueError: ParetoHyperNetwork: rays: each preference ray must have entries >= 0 that sum to 1; ray 0 has a negative entry ([-0.2, 1.2])
    """

    def __init__(
        self, target: Target, num_objectives: int, trunk: Trunk | None = None, head: Head | None = None, **hypernet: Any
    ):
        super().__init__()
        if not isinstance(target, Target):
            raise TypeError(f"ParetoHyperNetwork: target must be a Target, got {type(target).__name__}")
        if isinstance(num_objectives, bool) or not isinstance(num_objectives, int) or num_objectives < 1:
            raise ValueError(f"ParetoHyperNetwork: num_objectives must be an int >= 1, got {num_objectives!r}")
        self.num_objectives = num_objectives
        conditioner = Continuous(num_objectives, execution="ensemble")
        self.hypernet = HyperNetwork(target, conditioner, trunk or MLP((100, 100)), head or Once(), **hypernet)
        self.target = target
        self.model = HyperModel(self.hypernet, target)

    def generate(self, rays: Any) -> dict[str, torch.Tensor]:
        """The weights for ``rays`` ``(K, m)`` (checked): name -> ``(K, *shape)``."""
        r = check_rays(rays, self.num_objectives, "ParetoHyperNetwork: rays")
        ref = self.hypernet.theta_scale
        return self.hypernet(r.to(device=ref.device, dtype=ref.dtype))

    def apply(self, weights: Mapping[str, torch.Tensor], *inputs: Any) -> Any:
        """The target with ``K`` generated weight sets on one batch: ``(K, N, ...)``."""
        return self.target.run(weights, *inputs, mode="ensemble", validate=False)

    def forward(self, x: Any, rays: Any) -> Any:
        """The target's outputs for every ray on the batch ``x``: ``(K, N, ...)``."""
        return self.apply(self.generate(rays), x)


# ====================================================================== the toy problem
def toy_losses(x: torch.Tensor) -> torch.Tensor:
    """The two-objective toy problem of Lin et al. (2019) on points ``x`` ``(..., d)``.

    ``f_1 = 1 - exp(-|x - c|^2)`` and ``f_2 = 1 - exp(-|x + c|^2)`` with ``c = (1, ..., 1)/sqrt(d)``:
    each objective's optimum is ``+c`` or ``-c``, the Pareto set is the segment between them, and
    the front is concave (:func:`toy_front`), so linear scalarisation reaches only its ends.

    Returns:
        ``(..., 2)``: both losses, in ``[0, 1)``.

    Example::

        >>> import torch
        >>> from hyperdnn.methods.pareto import toy_losses
        >>> toy_losses(torch.tensor([[1.0, 1.0], [0.0, 0.0]]) / 2 ** 0.5)   # +c, and the middle
        tensor([[0.0000, 0.9817],
                [0.6321, 0.6321]])
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[-1] < 1 or not x.dtype.is_floating_point:
        raise ValueError(f"toy_losses: x must be a float tensor (..., d) with d >= 1, got {getattr(x, 'shape', x)!r}")
    c = 1.0 / math.sqrt(x.shape[-1])
    f1 = 1 - torch.exp(-(x - c).pow(2).sum(-1))
    f2 = 1 - torch.exp(-(x + c).pow(2).sum(-1))
    return torch.stack([f1, f2], -1)


def toy_front(n: int) -> torch.Tensor:
    """``n`` points of the toy problem's known Pareto front, from ``f_1``'s optimum to ``f_2``'s.

    The Pareto set is ``x = s c`` for ``s`` in ``[-1, 1]``, where ``|x - c|^2 = (1 - s)^2`` and
    ``|x + c|^2 = (1 + s)^2``: the front is ``(1 - exp(-(1 - s)^2), 1 - exp(-(1 + s)^2))``,
    here at ``n`` evenly spaced ``s`` (float64).

    Returns:
        ``(n, 2)``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"toy_front: n must be an int >= 2, got {n!r}")
    s = torch.linspace(1.0, -1.0, n, dtype=torch.float64)
    return torch.stack([1 - torch.exp(-((1 - s) ** 2)), 1 - torch.exp(-((1 + s) ** 2))], 1)
