"""Control metrics: episode returns over batched environments and the normalised return.

* :func:`episode_returns` - one episode of every environment of a batched simulator under a
  policy, summed rewards (an episode stops counting when it terminates).
* :func:`task_returns` - the mean return of a policy on each of ``N`` tasks over ``episodes``
  episodes, with initial states drawn from ``seed`` alone: two policies evaluated with the
  same seed start from the same states (common random numbers), and an evaluation repeated
  with its seed gives the same returns.
* :func:`normalised_return` - ``(R - R_random) / (R_expert - R_random)`` per task: 0 is a
  random policy, 1 the task's expert.
* :func:`split_means` - the mean of a per-task value over each split of the tasks.

Example::

    >>> import torch
    >>> from hyperdnn.data.control import get_family
    >>> from hyperdnn.metrics.control import normalised_return, task_returns
    >>> family = get_family("pendulum")
    >>> physics = torch.tensor([[10.0, 1.0, 1.0]])
    >>> idle = lambda obs, context: torch.zeros(obs.shape[0], 1)  # never any torque
    >>> r = task_returns(family, physics, idle, episodes=4, seed=0)
    >>> r.shape, bool(torch.equal(r, task_returns(family, physics, idle, episodes=4, seed=0)))
    (torch.Size([1]), True)
    >>> normalised_return(torch.tensor([-600.0]), torch.tensor([-1200.0]), torch.tensor([-200.0]))
    tensor([0.6000])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from hyperdnn.data.control import BatchedEnv, Family

__all__ = ["Act", "episode_returns", "task_returns", "normalised_return", "split_means"]

#: a policy as the evaluation calls it: ``act(obs (B, O), context (B, P)) -> actions``
Act = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def episode_returns(env: BatchedEnv, act: Act, generator: torch.Generator) -> torch.Tensor:
    """One episode of every environment of ``env`` (reset from ``generator``) under ``act``,
    which sees each environment's physics as its context.

    Returns:
        ``(E,)`` float64 returns: rewards summed up to termination or the horizon.
    """
    obs = env.reset(generator)
    context = env.physics.float()
    total = torch.zeros(env.num_envs, dtype=torch.float64)
    alive = torch.ones(env.num_envs, dtype=torch.bool)
    for _ in range(env.horizon):
        out = env.step(act(obs, context))
        total += torch.where(alive, out.reward, 0.0)
        alive &= ~(out.terminated | out.truncated)
        if not bool(alive.any()):
            break
        obs = out.obs
    return total


def task_returns(family: Family, physics: torch.Tensor, act: Act, episodes: int, seed: int) -> torch.Tensor:
    """The mean return of ``act`` on each task of ``physics`` ``(N, P)`` over ``episodes``
    episodes, all ``N * episodes`` environments stepped at once.

    The initial states come from a generator seeded with ``seed`` alone (the same for every
    policy evaluated with that seed).

    Returns:
        ``(N,)`` float64 mean returns.

    Raises:
        ValueError: ``episodes < 1``, or physics outside the family's ranges.
    """
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"task_returns: episodes must be an int >= 1, got {episodes!r}")
    env = family.make_env(physics.repeat_interleave(episodes, 0))
    returns = episode_returns(env, act, torch.Generator().manual_seed(seed))
    return returns.view(-1, episodes).mean(1)


def normalised_return(returns: torch.Tensor, random: torch.Tensor, expert: torch.Tensor) -> torch.Tensor:
    """``(returns - random) / (expert - random)``, elementwise (tasks where the expert is no
    better than random give NaN). The three must have one shape (no broadcasting).

    Raises:
        ValueError: shapes that differ.
    """
    if not returns.shape == random.shape == expert.shape:
        raise ValueError(
            f"normalised_return: returns, random and expert must have one shape, got {tuple(returns.shape)}, "
            f"{tuple(random.shape)} and {tuple(expert.shape)}"
        )
    gap = expert - random
    return torch.where(gap > 0, (returns - random) / gap.clamp(min=1e-12), torch.nan)


def split_means(values: torch.Tensor, splits: Sequence[str], names: Sequence[str]) -> dict[str, float]:
    """The mean of ``values`` ``(N,)`` over the tasks of each split in ``names`` (NaNs left out;
    NaN for a split without values).

    Raises:
        ValueError: ``values`` not ``(N,)``, or ``splits`` not one name per value.
    """
    if values.dim() != 1 or len(splits) != values.shape[0]:
        raise ValueError(
            f"split_means: expected values (N,) and one split name per value, got values {tuple(values.shape)} "
            f"and {len(splits)} split names"
        )
    out = {}
    for name in names:
        mask = torch.tensor([s == name for s in splits]) & ~values.isnan()
        out[name] = float(values[mask].mean()) if bool(mask.any()) else float("nan")
    return out
