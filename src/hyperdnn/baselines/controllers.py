"""Classical controllers for the control families: the per-task experts and the expert of the
nearest training task.

Each expert knows its task's physics and computes its action in closed form, for ``K`` tasks
at once (row ``k`` of the observations is an environment of task ``k``, or any row of task
``tasks[b]`` with :meth:`Expert.act`):

* :class:`PendulumExpert` - energy-shaping swing-up (full torque along the angular velocity
  while the energy is below the upright one, proportional braking above it; Astrom and
  Furuta, Automatica 2000) and, within 0.8 rad of upright, the discrete-time LQR of the
  linearised dynamics with the reward's own quadratic cost (``Q = diag(1, 0.1)``, ``R =
  0.001``); the torque is clipped to ``[-2, 2]``.
* :class:`CartPoleExpert` - the discrete-time LQR of CartPole's linearised Euler dynamics
  (``Q = diag(1, 1, 10, 1)``, ``R = 0.1``), pushing the way the LQR force points: action 1
  when ``u * force_mag > 0`` (so a flipped actuator is handled).

On the grids of :mod:`hyperdnn.data.control` both are near-optimal: the cart-pole expert
balances for all 500 steps on every task; the pendulum expert averages about -165 per
episode (a random policy about -1,230; the best published Pendulum-v1 agents about -150 on the
default physics).

:func:`nearest_tasks` finds, for any task, the closest training task (parameters standardised
over the training range): the *expert of the nearest training task* baseline runs that task's
expert on the unseen physics.

Example::

    >>> import torch
    >>> from hyperdnn.baselines.controllers import make_expert
    >>> from hyperdnn.data.control import get_family
    >>> family = get_family("cartpole")
    >>> physics = torch.tensor([[0.5, 0.1, 10.0], [0.5, 0.1, -10.0]])   # the second is flipped
    >>> expert = make_expert(family, physics)
    >>> obs = torch.tensor([[0.0, 0.0, 0.05, 0.0]]).repeat(2, 1)         # the pole leans right
    >>> expert(obs).tolist()                                              # push right: 1, flipped: 0
    [1, 0]
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

from hyperdnn.data.control import BatchedCartPole, BatchedPendulum, Family, check_physics

__all__ = ["Expert", "PendulumExpert", "CartPoleExpert", "make_expert", "dlqr", "nearest_tasks"]


def dlqr(A: torch.Tensor, B: torch.Tensor, Q: torch.Tensor, R: torch.Tensor, iterations: int = 1000) -> torch.Tensor:
    """The gains ``K`` (``u = -K x``) of the infinite-horizon discrete-time LQR, for a batch of
    systems: the Riccati recursion iterated to its fixed point.

    Args:
        A: ``(K, n, n)`` dynamics; B: ``(K, n, m)`` inputs; Q: ``(n, n)``; R: ``(m, m)``.
        iterations: steps of the recursion (it converges geometrically for stabilisable
            systems).

    Returns:
        ``(K, m, n)`` gains.
    """
    P = Q.expand(A.shape[0], -1, -1).clone()
    for _ in range(iterations):
        BtP = B.transpose(1, 2) @ P
        gain = torch.linalg.solve(R + BtP @ B, BtP @ A)
        P = Q + A.transpose(1, 2) @ P @ (A - B @ gain)
    return gain


class Expert(ABC):
    """(Abstract) the closed-form controller of ``K`` tasks.

    Args:
        physics: ``(K, P)`` parameters of the family (checked against their valid ranges).
    """

    family_env: type = BatchedPendulum

    def __init__(self, physics: torch.Tensor):
        self.physics = check_physics(self.family_env.parameters, physics, type(self).__name__)

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        """Actions for ``(K, O)`` observations, row ``k`` an environment of task ``k``."""
        if obs.shape[0] != self.physics.shape[0]:
            raise ValueError(
                f"{type(self).__name__}: expected one observation per task ({self.physics.shape[0]}), "
                f"got {obs.shape[0]}"
            )
        return self.act(obs, torch.arange(obs.shape[0]))

    @abstractmethod
    def act(self, obs: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        """Actions for ``(B, O)`` observations of tasks ``tasks`` (``(B,)`` indices into the
        ``K`` tasks): float torques ``(B, 1)`` or int64 actions ``(B,)``."""


class PendulumExpert(Expert):
    """Energy-shaping swing-up and LQR balance for pendulums of physics ``(g, m, l)``."""

    family_env = BatchedPendulum
    #: below this angle from upright (rad) the LQR balances
    lqr_angle = 0.8

    def __init__(self, physics: torch.Tensor):
        super().__init__(physics)
        g, m, length = self.physics.unbind(1)
        dt = BatchedPendulum.dt
        self.a, self.b = 3 * g / (2 * length), 3 / (m * length**2)  # theta'' = a sin(theta) + b u
        one, step = torch.ones_like(g), torch.full_like(g, dt)
        # semi-implicit Euler as Gymnasium steps it, linearised at upright
        A = torch.stack([torch.stack([1 + self.a * dt * dt, step], 1), torch.stack([self.a * dt, one], 1)], 1)
        B = torch.stack([self.b * dt * dt, self.b * dt], 1).unsqueeze(2)
        Q = torch.diag(torch.tensor([1.0, 0.1], dtype=torch.float64))
        self.gain = dlqr(A, B, Q, torch.tensor([[0.001]], dtype=torch.float64))[:, 0, :]  # (K, 2)

    def act(self, obs: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        cos, sin, thdot = obs.double().unbind(1)
        theta = torch.atan2(sin, cos)
        a, b, gain = self.a[tasks], self.b[tasks], self.gain[tasks]
        energy = 0.5 * thdot**2 + a * (cos - 1)  # per unit inertia; 0 at rest upright
        pump = BatchedPendulum.max_torque * torch.where(thdot >= 0, 1.0, -1.0)
        swing = torch.where(energy < 0, pump, -energy * thdot / b)
        balance = -(gain[:, 0] * theta + gain[:, 1] * thdot)
        u = torch.where(cos > math.cos(self.lqr_angle), balance, swing)
        return u.clamp(-BatchedPendulum.max_torque, BatchedPendulum.max_torque).float().unsqueeze(1)


class CartPoleExpert(Expert):
    """LQR balance, pushed the way its force points, for cart-poles of physics ``(length,
    masspole, force_mag)``."""

    family_env = BatchedCartPole

    def __init__(self, physics: torch.Tensor):
        super().__init__(physics)
        length, mp, self.force = self.physics.unbind(1)
        total, tau, g = mp + BatchedCartPole.masscart, BatchedCartPole.tau, BatchedCartPole.gravity
        den = length * (4 / 3 - mp / total)  # theta'' = (g theta - F / M) / den at upright
        z, one = torch.zeros_like(length), torch.ones_like(length)
        Ac = torch.stack(
            [
                torch.stack([z, one, z, z], 1),
                torch.stack([z, z, -mp * length * g / (total * den), z], 1),
                torch.stack([z, z, z, one], 1),
                torch.stack([z, z, g / den, z], 1),
            ],
            1,
        )
        Bc = torch.stack([z, 1 / total + mp * length / (total * total * den), z, -1 / (total * den)], 1)
        A, B = torch.eye(4, dtype=torch.float64) + tau * Ac, tau * Bc.unsqueeze(2)
        Q = torch.diag(torch.tensor([1.0, 1.0, 10.0, 1.0], dtype=torch.float64))
        self.gain = dlqr(A, B, Q, torch.tensor([[0.1]], dtype=torch.float64))[:, 0, :]  # (K, 4)

    def act(self, obs: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        u = -(self.gain[tasks] * obs.double()).sum(1)
        return (u * self.force[tasks] > 0).long()


_EXPERTS: dict[type, type[Expert]] = {BatchedPendulum: PendulumExpert, BatchedCartPole: CartPoleExpert}


def make_expert(family: Family, physics: torch.Tensor) -> Expert:
    """The expert of ``family`` for ``(K, P)`` physics.

    Raises:
        ValueError: physics outside the valid ranges; a family without an expert here.
    """
    if family.batched not in _EXPERTS:
        raise ValueError(f"make_expert: no expert for the family {family.name!r}; experts exist for pendulum, cartpole")
    return _EXPERTS[family.batched](physics)


def nearest_tasks(
    physics: torch.Tensor, candidates: torch.Tensor, low: torch.Tensor, high: torch.Tensor
) -> torch.Tensor:
    """For each row of ``physics`` ``(N, P)``, the index of the nearest row of ``candidates``
    ``(K, P)`` (Euclidean, each parameter divided by its training span ``high - low``; ties go
    to the first candidate): ``(N,)`` int64."""
    span = (high - low).to(torch.float64)
    d = torch.cdist(physics.double() / span, candidates.double() / span)
    return d.argmin(1)
