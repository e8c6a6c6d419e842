"""Distilling per-task experts into one context-conditioned policy.

The zero-shot-transfer route of Rezaei-Shoshtari et al. (AAAI 2023): near-optimal controllers
of the training tasks teach one policy of (observation, context), which is then asked for
tasks it never saw.

* :func:`collect_demonstrations` - the states the experts visit in their own environments,
  with noise injected into the executed actions so that states slightly off the expert's path
  are visited too (DART, Laskey et al., CoRL 2017), each labelled with the expert's clean
  action. Every method trained on the result sees the same data.
* :class:`Demonstrations` - those states, their contexts and the experts' actions.
* :func:`distillation_loss` - mean squared error to the expert's torque (continuous control)
  or cross-entropy to its action (discrete control).

Example::

    >>> import torch
    >>> from hyperdnn.baselines.controllers import make_expert
    >>> from hyperdnn.data.control import get_family
    >>> from hyperdnn.methods.distillation import collect_demonstrations
    >>> family = get_family("pendulum")
    >>> physics = torch.tensor([[10.0, 1.0, 1.0], [12.0, 0.8, 1.1]])
    >>> data = collect_demonstrations(family, physics, make_expert(family, physics), 3, 0.5, torch.Generator())
    >>> data.obs.shape, data.context.shape, data.action.shape   # 2 tasks x 3 episodes x 200 steps
    (torch.Size([1200, 3]), torch.Size([1200, 3]), torch.Size([1200, 1]))
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from hyperdnn.baselines.controllers import Expert
from hyperdnn.data.control import BatchedPendulum, Family
from hyperdnn.methods.context_policy import ContextNet

__all__ = ["Demonstrations", "collect_demonstrations", "distillation_loss"]


class Demonstrations(NamedTuple):
    """States visited by the experts, with the expert's action at each.

    Attributes:
        obs: ``(N, O)`` float32 observations.
        context: ``(N, P)`` float32 raw contexts (the task's physics).
        action: ``(N, A)`` float32 torques or ``(N,)`` int64 actions of the expert.
        task: ``(N,)`` int64 index of the task in the physics given.
    """

    obs: torch.Tensor
    context: torch.Tensor
    action: torch.Tensor
    task: torch.Tensor

    def __len__(self) -> int:
        return self.obs.shape[0]


@torch.no_grad()
def collect_demonstrations(
    family: Family,
    physics: torch.Tensor,
    expert: Expert,
    episodes: int,
    noise: float,
    generator: torch.Generator,
) -> Demonstrations:
    """Roll out ``expert`` on every task, ``episodes`` episodes each, with noisy execution.

    Continuous actions get Gaussian noise of standard deviation ``noise`` times the action
    range's half-width; discrete ones are replaced by a uniformly random action with
    probability ``noise``. The label is always the expert's own action at the visited state.
    An episode contributes its states up to its end (termination or the horizon).

    Args:
        family: the environment family.
        physics: ``(K, P)`` the tasks.
        expert: the experts of exactly these ``K`` tasks.
        episodes: episodes per task, ``>= 1``.
        noise: the injected noise, ``>= 0`` (``<= 1`` for discrete actions).
        generator: draws the initial states and the noise.

    Returns:
        :class:`Demonstrations` of every visited state, task by task.

    Raises:
        ValueError: ``episodes < 1``, a ``noise`` out of range, or an expert of other tasks.
    """
    discrete = family.batched.discrete
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"collect_demonstrations: episodes must be an int >= 1, got {episodes!r}")
    if not (noise >= 0 and (noise <= 1 or not discrete)):
        raise ValueError(f"collect_demonstrations: noise must be >= 0 (<= 1 for discrete actions), got {noise!r}")
    if expert.physics.shape != physics.shape or not torch.equal(expert.physics, physics.double()):
        raise ValueError(
            "collect_demonstrations: the expert must be the one of these physics (make_expert(family, physics))"
        )
    K = physics.shape[0]
    tasks = torch.arange(K).repeat_interleave(episodes)
    env = family.make_env(physics[tasks])
    obs = env.reset(generator)
    alive = torch.ones(len(tasks), dtype=torch.bool)
    keep: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for _ in range(env.horizon):
        label = expert.act(obs, tasks)
        if discrete:
            flip = torch.rand(len(tasks), generator=generator) < noise
            executed = torch.where(flip, torch.randint(0, env.num_actions, (len(tasks),), generator=generator), label)
        else:
            jitter = noise * BatchedPendulum.max_torque * torch.randn(label.shape, generator=generator)
            executed = label + jitter
        keep.append((obs[alive], label[alive], tasks[alive]))
        out = env.step(executed)
        alive &= ~(out.terminated | out.truncated)
        obs = out.obs
        if not bool(alive.any()):
            break
    o, a, t = (torch.cat(parts) for parts in zip(*keep))
    order = torch.sort(t, stable=True).indices  # task by task
    return Demonstrations(o[order], physics.float()[t[order]], a[order], t[order])


def distillation_loss(policy: ContextNet, batch: Demonstrations, discrete: bool) -> torch.Tensor:
    """The policy's imitation loss on ``batch``: cross-entropy to the expert's actions
    (discrete) or the mean squared error to its torques (continuous)."""
    out = policy(batch.obs, batch.context)
    return F.cross_entropy(out, batch.action) if discrete else F.mse_loss(out, batch.action)
