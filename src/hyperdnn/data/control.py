"""Control-task families: Gymnasium's classic control with the physics varied per task.

A *family* is one Gymnasium environment whose physical constants change from task to task
(a task is one vector of them):

* ``pendulum`` - ``Pendulum-v1`` with gravity ``g``, mass ``m`` and length ``l``;
* ``cartpole`` - ``CartPole-v1`` with the pole's half-length ``length``, its mass
  ``masspole`` and the push ``force_mag``; a negative ``force_mag`` is a flipped actuator
  (action 1 pushes left), the stress case.

The pieces:

* :class:`Parameter` - one varied constant: the environment attribute it sets, its valid
  range, and the values of the family's task grid, split into training, interpolation and
  extrapolation values.
* :class:`Family` - the parameters of a family, its task grid (:meth:`Family.grid`: every
  combination of the values; a task is a *training* task when all its values are training
  values, an *extrapolation* task when any value lies outside the training range, an
  *interpolation* task otherwise), the batched simulator and the Gymnasium environment.
* :class:`PhysicsWrapper` - a ``gymnasium.Wrapper`` that sets the environment's own
  attributes (range-checked) and keeps the quantities the environment derives from them
  (CartPole's ``total_mass`` and ``polemass_length``) consistent.
* :class:`BatchedPendulum`, :class:`BatchedCartPole` - the same dynamics equations as
  Gymnasium's ``step``, in float64 torch, for ``E`` environments of different physics at once
  (one tensor operation per step instead of a loop over environments;
  ``tests/test_rl.py`` checks them against Gymnasium's own ``step`` step by step).
* :data:`FAMILIES`, :func:`get_family`, :func:`list_families` - the families by name.

The batched simulators need only torch; :class:`PhysicsWrapper` and :meth:`Family.make_gym`
need the ``rl`` extra (``pip install 'hyperdnn[rl]'``: gymnasium).

Example::

    >>> import torch
    >>> from hyperdnn.data.control import get_family
    >>> pendulum = get_family("pendulum")
    >>> physics, split = pendulum.grid()
    >>> physics.shape, sorted(set(split))
    (torch.Size([343, 3]), ['extrapolation', 'interpolation', 'train'])
    >>> env = pendulum.make_env(physics[:4])                  # 4 pendulums of different physics
    >>> obs = env.reset(torch.Generator().manual_seed(0))     # (4, 3): cos, sin, angular velocity
    >>> step = env.step(torch.zeros(4, 1))                    # no torque: they fall as physics says
    >>> step.obs.shape, step.reward.shape
    (torch.Size([4, 3]), torch.Size([4]))
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from hyperdnn.extras import import_optional
from hyperdnn.registry import Registry

__all__ = [
    "Parameter",
    "Family",
    "Step",
    "BatchedEnv",
    "BatchedPendulum",
    "BatchedCartPole",
    "PhysicsWrapper",
    "SPLITS",
    "FAMILIES",
    "get_family",
    "list_families",
    "check_physics",
]

#: the three kinds of task of a family's grid
SPLITS = ("train", "interpolation", "extrapolation")


@dataclass(frozen=True)
class Parameter:
    """One physical constant a family varies.

    Args:
        name: the environment's attribute (``"g"``, ``"length"``).
        low, high: the valid range (inclusive) of the value, or of its magnitude when
            ``signed``.
        default: Gymnasium's own value.
        train: the values of the training tasks (at least one).
        interpolation: values between the training values.
        extrapolation: values outside the training range.
        signed: the value may be negative (``force_mag``: a flipped actuator); ranges and
            splits then apply to the magnitude, and the grid holds both signs of each value.
        doc: what it is, for messages and tables.

    Raises:
        ValueError: a value outside the valid range, an interpolation value outside the
            training range, an extrapolation value inside it, or no training value.
    """

    name: str
    low: float
    high: float
    default: float
    train: tuple[float, ...]
    interpolation: tuple[float, ...]
    extrapolation: tuple[float, ...]
    signed: bool = False
    doc: str = ""

    def __post_init__(self) -> None:
        if not self.train:
            raise ValueError(f"Parameter {self.name!r}: expected at least one training value, got none")
        lo, hi = min(self.train), max(self.train)
        bad = [v for v in (*self.train, *self.interpolation, *self.extrapolation) if not self.low <= v <= self.high]
        bad += [v for v in self.interpolation if not lo < v < hi]
        bad += [v for v in self.extrapolation if lo <= v <= hi]
        if bad:
            raise ValueError(
                f"Parameter {self.name!r}: values {bad} break the rules: valid range [{self.low}, {self.high}], "
                f"interpolation values inside the training range ({lo}, {hi}), extrapolation values outside it"
            )

    def valid(self, value: float) -> bool:
        """Whether ``value`` lies in the valid range (its magnitude, for a signed parameter)."""
        v = abs(value) if self.signed else value
        return math.isfinite(value) and self.low <= v <= self.high

    def range_text(self) -> str:
        """The valid range, as messages state it (``"in [0.5, 30]"``, ``"with |value| in [0.5, 50]"``)."""
        return f"{'with |value| ' if self.signed else ''}in [{self.low:g}, {self.high:g}]"

    def split_of(self, value: float) -> str:
        """``"train"``, ``"interpolation"`` or ``"extrapolation"`` for one value (its magnitude,
        for a signed parameter): a training value, inside the training range, or outside it."""
        v = abs(value) if self.signed else value
        if v in self.train:
            return "train"
        return "interpolation" if min(self.train) < v < max(self.train) else "extrapolation"

    def values(self) -> list[float]:
        """Every value of the grid, sorted (both signs of each, for a signed parameter)."""
        magnitudes = sorted({*self.train, *self.interpolation, *self.extrapolation})
        return sorted([-v for v in magnitudes] + magnitudes) if self.signed else magnitudes


def check_physics(parameters: Sequence[Parameter], physics: torch.Tensor, where: str) -> torch.Tensor:
    """``physics`` as a float64 ``(E, P)`` tensor, every value checked against its valid range.

    Args:
        parameters: the family's parameters (``P`` of them), in column order.
        physics: ``(E, P)`` values (or ``(P,)`` for one task).
        where: who asks, for the message.

    Raises:
        ValueError: another shape, or values outside their valid ranges (every one named with
            its row, the parameter and the range).
    """
    t = torch.as_tensor(physics, dtype=torch.float64)
    if t.dim() == 1:
        t = t.unsqueeze(0)
    names = [p.name for p in parameters]
    if t.dim() != 2 or t.shape[1] != len(parameters) or t.shape[0] < 1:
        raise ValueError(f"{where}: expected physics of shape (E, {len(parameters)}) for {names}, got {tuple(t.shape)}")
    bad = [
        f"row {i}: {p.name}={float(t[i, j]):g} (expected {p.range_text()})"
        for j, p in enumerate(parameters)
        for i in range(t.shape[0])
        if not p.valid(float(t[i, j]))
    ]
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise ValueError(f"{where}: physics outside the valid range: {'; '.join(bad[:5])}{more}")
    return t


# ====================================================================== batched simulators
class Step(NamedTuple):
    """What :meth:`BatchedEnv.step` returns, one entry per environment.

    Attributes:
        obs: ``(E, O)`` float32 observations after the step (as Gymnasium's).
        reward: ``(E,)`` float64 rewards of the step.
        terminated: ``(E,)`` bool: the episode ended (CartPole's pole fell or the cart left).
        truncated: ``(E,)`` bool: the episode reached the family's horizon.
    """

    obs: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor


class BatchedEnv(ABC):
    """(Abstract) ``E`` environments of one family, each with its own physics, stepped at once.

    The state is float64, as in Gymnasium; observations are float32. :meth:`reset` draws the
    initial states from Gymnasium's distribution with a torch generator (so a seed gives the
    same episodes on every machine). After ``terminated`` or ``truncated`` an environment must
    be reset (:meth:`reset` with a mask) before it is stepped again.

    Args:
        physics: ``(E, P)`` values of the family's parameters, checked against their ranges.
    """

    #: the family's parameters, in column order
    parameters: tuple[Parameter, ...] = ()
    #: the observation width
    obs_dim: int = 0
    #: the episode length of the Gymnasium environment (``TimeLimit``)
    horizon: int = 0
    #: discrete actions (``(E,)`` int64 in ``[0, num_actions)``) or continuous ``(E, action_dim)``
    discrete: bool = False
    action_dim: int = 1
    num_actions: int = 0

    def __init__(self, physics: torch.Tensor):
        self.physics = check_physics(self.parameters, physics, type(self).__name__)
        self.num_envs = self.physics.shape[0]
        self.state = torch.zeros(self.num_envs, self.state_dim, dtype=torch.float64)
        self.steps = torch.zeros(self.num_envs, dtype=torch.int64)

    @property
    @abstractmethod
    def state_dim(self) -> int:
        """The width of the float64 state."""

    @abstractmethod
    def initial_states(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``(n, state_dim)`` float64 initial states, as Gymnasium's ``reset`` draws them."""

    @abstractmethod
    def observe(self) -> torch.Tensor:
        """``(E, O)`` float32 observations of the current state."""

    @abstractmethod
    def _step(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Advance ``self.state`` by one step; returns rewards ``(E,)`` and terminations ``(E,)``."""

    @abstractmethod
    def check_action(self, action: Any) -> torch.Tensor:
        """``action`` as the tensor :meth:`step` uses (``ValueError``/``TypeError`` otherwise)."""

    def reset(self, generator: torch.Generator, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Draw new initial states for the environments in ``mask`` (all when ``None``) from
        ``generator``; returns the observations of every environment ``(E, O)``."""
        idx = torch.arange(self.num_envs) if mask is None else mask.nonzero().flatten()
        if len(idx):
            self.state[idx] = self.initial_states(len(idx), generator)
            self.steps[idx] = 0
        return self.observe()

    def step(self, action: Any) -> Step:
        """One step of every environment with ``action`` (see :attr:`discrete`).

        Raises:
            ValueError, TypeError: an action of another shape, dtype or range.
        """
        reward, terminated = self._step(self.check_action(action))
        self.steps += 1
        return Step(self.observe(), reward, terminated, (self.steps >= self.horizon) & ~terminated)


def _angle_normalize(x: torch.Tensor) -> torch.Tensor:
    """``((x + pi) % (2 pi)) - pi`` with numpy's floating-point ``%`` (``fmod``, then the
    divisor's sign), which Gymnasium uses; ``torch.remainder`` can differ in the last bits."""
    mod = torch.fmod(x + math.pi, 2 * math.pi)
    return torch.where((mod != 0) & (mod < 0), mod + 2 * math.pi, mod) - math.pi


class BatchedPendulum(BatchedEnv):
    """``Pendulum-v1`` (a rod on a pivot, swung up and held with a torque in ``[-2, 2]``) for
    ``E`` physics ``(g, m, l)`` at once: Gymnasium's equations, ``dt = 0.05``, 200 steps.

    State ``(theta, theta_dot)``; observation ``(cos theta, sin theta, theta_dot)``; action
    ``(E, 1)`` torques (clipped to ``[-2, 2]``); reward ``-(theta^2 + 0.1 theta_dot^2 +
    0.001 u^2)`` with ``theta`` normalised to ``[-pi, pi)``.
    """

    parameters = (
        Parameter("g", 0.5, 30.0, 10.0, (8.0, 10.0, 12.0), (9.0, 11.0), (6.0, 13.5), doc="gravity"),
        Parameter("m", 0.1, 5.0, 1.0, (0.8, 1.0, 1.2), (0.9, 1.1), (0.6, 1.4), doc="mass"),
        Parameter("l", 0.1, 5.0, 1.0, (0.9, 1.1, 1.3), (1.0, 1.2), (0.8, 1.5), doc="length"),
    )
    obs_dim, horizon, action_dim = 3, 200, 1
    max_speed, max_torque, dt = 8.0, 2.0, 0.05

    @property
    def state_dim(self) -> int:
        return 2

    def initial_states(self, n: int, generator: torch.Generator) -> torch.Tensor:
        high = torch.tensor([math.pi, 1.0], dtype=torch.float64)
        return (2 * torch.rand(n, 2, generator=generator, dtype=torch.float64) - 1) * high

    def observe(self) -> torch.Tensor:
        th, thdot = self.state.unbind(1)
        return torch.stack([th.cos(), th.sin(), thdot], 1).float()

    def check_action(self, action: Any) -> torch.Tensor:
        a = torch.as_tensor(action)
        if not a.dtype.is_floating_point or a.shape not in ((self.num_envs, 1), (self.num_envs,)):
            raise ValueError(
                f"BatchedPendulum.step: expected float torques of shape ({self.num_envs}, 1), "
                f"got {a.dtype} of shape {tuple(a.shape)}"
            )
        return a.reshape(self.num_envs).float()

    def _step(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # the torque is float32 (the action space's dtype) and its terms are float32 products,
        # as numpy computes them in Gymnasium's step: the results agree bit for bit
        g, m, length = self.physics.unbind(1)
        th, thdot = self.state.unbind(1)
        u = u.clamp(-self.max_torque, self.max_torque)
        costs = _angle_normalize(th) ** 2 + 0.1 * thdot**2 + (0.001 * u**2).double()
        push = (3.0 / (m * length**2)).float() * u
        newthdot = thdot + (3 * g / (2 * length) * torch.sin(th) + push.double()) * self.dt
        newthdot = newthdot.clamp(-self.max_speed, self.max_speed)
        self.state = torch.stack([th + newthdot * self.dt, newthdot], 1)
        return -costs, torch.zeros(self.num_envs, dtype=torch.bool)


class BatchedCartPole(BatchedEnv):
    """``CartPole-v1`` (balance a pole on a cart pushed left or right) for ``E`` physics
    ``(length, masspole, force_mag)`` at once: Gymnasium's equations (Euler, ``tau = 0.02``),
    500 steps, reward 1 per step, the episode ends when the pole leans past 12 degrees or the
    cart leaves ``[-2.4, 2.4]``.

    State and observation ``(x, x_dot, theta, theta_dot)``; action ``(E,)`` int64: 1 applies
    ``+force_mag`` (a push to the left when ``force_mag < 0``: the flipped actuator), 0
    applies ``-force_mag``.
    """

    parameters = (
        Parameter("length", 0.05, 3.0, 0.5, (0.3, 0.5, 0.7), (0.4, 0.6), (0.15, 1.0), doc="pole half-length"),
        Parameter("masspole", 0.01, 2.0, 0.1, (0.05, 0.1, 0.2), (0.075, 0.15), (0.025, 0.4), doc="pole mass"),
        Parameter(
            "force_mag", 0.5, 50.0, 10.0, (6.0, 10.0, 14.0), (8.0, 12.0), (3.0, 20.0), signed=True,
            doc="push force (negative: flipped actuator)",
        ),
    )  # fmt: skip
    obs_dim, horizon, discrete, num_actions = 4, 500, True, 2
    gravity, masscart, tau = 9.8, 1.0, 0.02
    theta_threshold, x_threshold = 12 * 2 * math.pi / 360, 2.4

    @property
    def state_dim(self) -> int:
        return 4

    def initial_states(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return (2 * torch.rand(n, 4, generator=generator, dtype=torch.float64) - 1) * 0.05

    def observe(self) -> torch.Tensor:
        return self.state.float()

    def check_action(self, action: Any) -> torch.Tensor:
        a = torch.as_tensor(action)
        if a.dtype.is_floating_point or a.dtype == torch.bool or a.shape != (self.num_envs,):
            raise ValueError(
                f"BatchedCartPole.step: expected integer actions of shape ({self.num_envs},), "
                f"got {a.dtype} of shape {tuple(a.shape)}"
            )
        if bool(((a < 0) | (a > 1)).any()):
            raise ValueError(f"BatchedCartPole.step: actions must be 0 or 1, got {sorted(set(a.tolist()))}")
        return a

    def _step(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        length, masspole, force_mag = self.physics.unbind(1)
        total_mass = masspole + self.masscart
        polemass_length = masspole * length
        x, x_dot, theta, theta_dot = self.state.unbind(1)
        force = torch.where(action == 1, force_mag, -force_mag)
        costheta, sintheta = torch.cos(theta), torch.sin(theta)
        temp = (force + polemass_length * theta_dot**2 * sintheta) / total_mass
        thetaacc = (self.gravity * sintheta - costheta * temp) / (
            length * (4.0 / 3.0 - masspole * costheta**2 / total_mass)
        )
        xacc = temp - polemass_length * thetaacc * costheta / total_mass
        x, x_dot = x + self.tau * x_dot, x_dot + self.tau * xacc
        theta, theta_dot = theta + self.tau * theta_dot, theta_dot + self.tau * thetaacc
        self.state = torch.stack([x, x_dot, theta, theta_dot], 1)
        terminated = (x.abs() > self.x_threshold) | (theta.abs() > self.theta_threshold)
        return torch.ones(self.num_envs, dtype=torch.float64), terminated


# ====================================================================== Gymnasium
def PhysicsWrapper(env: Any, physics: Mapping[str, float]) -> Any:  # noqa: N802 - a wrapper class, built lazily
    """Wrap a Gymnasium ``Pendulum-v1`` or ``CartPole-v1`` so that its physics is ``physics``.

    The wrapper sets the environment's own attributes (``env.unwrapped.g`` ...), so its own
    ``step`` runs with them; CartPole's derived ``total_mass`` and ``polemass_length`` are
    recomputed. Returns an instance of a ``gymnasium.Wrapper`` subclass (the class is built on
    first use, so importing this module needs no gymnasium).

    Args:
        env: a Gymnasium environment whose unwrapped class is ``PendulumEnv`` or
            ``CartPoleEnv``.
        physics: parameter name -> value (any subset of the family's parameters).

    Raises:
        ValueError: an environment of another kind, an unknown parameter name (naming the
            known ones), or a value outside its valid range; nothing is changed then.
        ImportError: gymnasium is not installed (``pip install 'hyperdnn[rl]'``).

    Example::

        >>> import gymnasium as gym
        >>> from hyperdnn.data.control import PhysicsWrapper
        >>> env = PhysicsWrapper(gym.make("Pendulum-v1"), {"g": 5.0, "l": 1.5})
        >>> env.unwrapped.g, env.unwrapped.l, env.unwrapped.m
        (5.0, 1.5, 1.0)
    """
    return _wrapper_class()(env, physics)


_WRAPPER: type | None = None


def _wrapper_class() -> type:
    global _WRAPPER
    if _WRAPPER is None:
        gym = import_optional("gymnasium", "rl", "PhysicsWrapper")

        class _PhysicsWrapper(gym.Wrapper):
            """A Gymnasium classic-control environment with its physics set (see :func:`PhysicsWrapper`)."""

            def __init__(self, env: Any, physics: Mapping[str, float]):
                super().__init__(env)
                family = _family_of(env.unwrapped)
                known = {p.name: p for p in family.parameters}
                unknown = sorted(set(physics) - set(known))
                if unknown:
                    raise ValueError(
                        f"PhysicsWrapper: unknown parameters {unknown} for {family.gym_id}; known: {sorted(known)}"
                    )
                values = {k: float(v) for k, v in physics.items()}
                bad = [
                    f"{k}={v:g} (expected {known[k].range_text()})" for k, v in values.items() if not known[k].valid(v)
                ]
                if bad:
                    raise ValueError(
                        f"PhysicsWrapper: {family.gym_id} physics outside the valid range: {'; '.join(bad)}"
                    )
                raw = env.unwrapped
                for k, v in values.items():
                    setattr(raw, k, v)
                if family.name == "cartpole":  # quantities CartPoleEnv derives in __init__
                    raw.total_mass = raw.masspole + raw.masscart
                    raw.polemass_length = raw.masspole * raw.length
                self.physics = {p.name: float(getattr(raw, p.name)) for p in family.parameters}

        _WRAPPER = _PhysicsWrapper
    return _WRAPPER


def _family_of(raw: Any) -> Family:
    for name in FAMILIES.list():
        family = FAMILIES.get(name)
        if type(raw).__name__ == family.gym_class:
            return family
    known = [f"{n} ({FAMILIES.get(n).gym_class})" for n in FAMILIES.list()]
    raise ValueError(f"PhysicsWrapper: expected one of {known}, got {type(raw).__name__}")


# ====================================================================== families
@dataclass(frozen=True)
class Family:
    """A Gymnasium environment whose physics varies per task.

    Args:
        name: what recipes call it (``"pendulum"``).
        gym_id: the Gymnasium id (``"Pendulum-v1"``).
        gym_class: the unwrapped environment's class name (``"PendulumEnv"``).
        batched: the batched simulator class (its ``parameters`` are the family's).
    """

    name: str
    gym_id: str
    gym_class: str
    batched: type[BatchedEnv]

    @property
    def parameters(self) -> tuple[Parameter, ...]:
        """The varied parameters, in column order."""
        return self.batched.parameters

    @property
    def names(self) -> list[str]:
        """The parameter names, in column order."""
        return [p.name for p in self.parameters]

    def grid(self) -> tuple[torch.Tensor, list[str]]:
        """Every combination of the parameters' values: ``(N, P)`` float64 physics and the split
        of each task (``"train"``, ``"interpolation"`` or ``"extrapolation"``)."""
        rows = list(itertools.product(*(p.values() for p in self.parameters)))
        return torch.tensor(rows, dtype=torch.float64), [self.split_of(r) for r in rows]

    def split_of(self, values: Sequence[float]) -> str:
        """The split of one task: training when every value is a training value, extrapolation
        when any value is outside the training range, interpolation otherwise."""
        kinds = [p.split_of(float(v)) for p, v in zip(self.parameters, values)]
        if "extrapolation" in kinds:
            return "extrapolation"
        return "train" if all(k == "train" for k in kinds) else "interpolation"

    def span(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(P,)`` lows and highs of the training range of each parameter (a signed parameter:
        ``-max`` to ``max``): where a context is standardised and distances are measured."""
        lo = [-max(p.train) if p.signed else min(p.train) for p in self.parameters]
        hi = [max(p.train) for p in self.parameters]
        return torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64)

    def make_env(self, physics: torch.Tensor) -> BatchedEnv:
        """The batched simulator for ``(E, P)`` physics (``ValueError`` outside the ranges)."""
        return self.batched(physics)

    def make_gym(self, physics: Mapping[str, float] | Sequence[float]) -> Any:
        """Gymnasium's own environment (with its ``TimeLimit``) under :func:`PhysicsWrapper`.

        Args:
            physics: name -> value, or one value per parameter in column order.
        """
        gym = import_optional("gymnasium", "rl", f"the {self.name} family's Gymnasium environment")
        if not isinstance(physics, Mapping):
            values = list(physics)
            if len(values) != len(self.parameters):
                raise ValueError(f"{self.name}: expected {len(self.parameters)} values for {self.names}, got {values}")
            physics = dict(zip(self.names, values))
        return PhysicsWrapper(gym.make(self.gym_id), physics)


#: every control family by name
FAMILIES: Registry[Family] = Registry("environment family")


def _register(family: Family) -> Family:
    return FAMILIES.register(family.name, family)


_register(Family("pendulum", "Pendulum-v1", "PendulumEnv", BatchedPendulum))
_register(Family("cartpole", "CartPole-v1", "CartPoleEnv", BatchedCartPole))


def get_family(name: str) -> Family:
    """The family called ``name`` (``LookupError`` naming close matches and every family)."""
    return FAMILIES.get(name)


def list_families() -> list[str]:
    """The names of every family, sorted."""
    return FAMILIES.list()
