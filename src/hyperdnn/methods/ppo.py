"""PPO over a batch of environments of different physics, with any context-conditioned
policy and critic (hypernetwork-generated ones included).

Proximal policy optimisation (Schulman et al., 2017) from TorchRL (the ``rl`` extra): the
clipped objective, the critic's loss and the entropy bonus are ``torchrl.objectives.ClipPPOLoss``
and the advantages ``torchrl.objectives.value.GAE`` (generalised advantage estimation). TorchRL
takes any ``TensorDictModule`` as actor and critic, so the policy's weights can come from a
hypernetwork: :class:`PPO` wraps two :class:`~hyperdnn.methods.context_policy.ContextNet` s
(reading ``"observation"`` and ``"context"``), and every step of every environment runs
through them in one batched call (a :class:`~hyperdnn.methods.context_policy.HyperPolicy` runs
each environment's generated network per sample).

The rollout loop is here rather than TorchRL's collectors: the environments are the batched
torch simulators of :mod:`hyperdnn.data.control` (``E`` physics in one tensor step), each
environment keeps its task, and an episode that ends is reset in place (truncated episodes
bootstrap from the critic, terminated ones do not).

Actions: a Gaussian with a learned state-independent standard deviation around the policy's
output for continuous control (the environment clips), a categorical over the policy's logits
for discrete control. Sampling draws from torch's global generator: seed it before
:meth:`PPO.collect` for reproducible rollouts; :meth:`PPO.update` takes its own generator for
the minibatch order.

Example (two CartPole physics, a few updates)::

    >>> import torch
    >>> from hyperdnn.baselines.context_policy import PlainPolicy
    >>> from hyperdnn.data.control import get_family
    >>> from hyperdnn.methods.ppo import PPO, PPOSettings
    >>> family = get_family("cartpole")
    >>> physics = torch.tensor([[0.5, 0.1, 10.0], [0.6, 0.1, 12.0]])
    >>> lo, hi = family.span()
    >>> def net(out):
    ...     return PlainPolicy(4, 3, out, hidden=(16,), low=lo.tolist(), high=hi.tolist())
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> ppo = PPO(net(2), net(1), discrete=True, settings=PPOSettings(steps=32, minibatch=32, epochs=2))
    >>> env = family.make_env(physics)
    >>> batch, rollout = ppo.collect(env, physics, None, torch.Generator().manual_seed(0))
    >>> batch.batch_size                                     # environments x steps
    torch.Size([2, 32])
    >>> sorted(ppo.update(batch, torch.Generator().manual_seed(0)))
    ['critic', 'entropy', 'objective']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from hyperdnn.data.control import BatchedEnv
from hyperdnn.extras import import_optional
from hyperdnn.methods.context_policy import ContextNet
from hyperdnn.optim import adam

__all__ = ["PPO", "PPOSettings", "GaussianHead", "Rollout"]


@dataclass(frozen=True)
class PPOSettings:
    """PPO's hyper-parameters.

    Args:
        steps: rollout steps per environment per update.
        epochs: passes over a rollout per update.
        minibatch: transitions per gradient step.
        lr: Adam's learning rate (policy, critic and the log standard deviation).
        gamma: the discount; lmbda: GAE's lambda.
        clip: the clipping range of the probability ratio.
        entropy: the weight of the entropy bonus; critic: the weight of the critic's loss.
        max_grad_norm: gradient-norm clipping.
        reward_scale: rewards are multiplied by this for learning (returns are reported
            unscaled).
        init_std: the initial standard deviation of continuous actions.
    """

    steps: int = 200
    epochs: int = 5
    minibatch: int = 1024
    lr: float = 1e-3
    gamma: float = 0.99
    lmbda: float = 0.95
    clip: float = 0.2
    entropy: float = 0.0
    critic: float = 0.5
    max_grad_norm: float = 0.5
    reward_scale: float = 1.0
    init_std: float = 1.0

    def __post_init__(self) -> None:
        ints = {k: getattr(self, k) for k in ("steps", "epochs", "minibatch")}
        bad = [f"{k}={v!r} (an int >= 1)" for k, v in ints.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1]  # fmt: skip
        positive = ("lr", "clip", "max_grad_norm", "reward_scale", "init_std")
        bad += [f"{k}={getattr(self, k)!r} (> 0)" for k in positive if not getattr(self, k) > 0]
        bad += [f"{k}={getattr(self, k)!r} (in [0, 1])" for k in ("gamma", "lmbda") if not 0 <= getattr(self, k) <= 1]
        bad += [f"{k}={getattr(self, k)!r} (>= 0)" for k in ("entropy", "critic") if not getattr(self, k) >= 0]
        if bad:
            raise ValueError(f"PPOSettings: {', '.join(bad)}")


class Rollout(NamedTuple):
    """Where the episodes of a batch of environments stand between two :meth:`PPO.collect` s.

    Attributes:
        running: ``(E,)`` float64 unscaled return of each environment's current episode so far.
        last: ``(E,)`` float64 unscaled return of each environment's last finished episode
            (NaN until one has finished).
    """

    running: torch.Tensor
    last: torch.Tensor

    def progress(self) -> float:
        """The mean over environments of the last finished episode's return (the current
        episode's return so far where none has finished yet): PPO's training curve."""
        return float(torch.where(self.last.isnan(), self.running, self.last).mean())


class GaussianHead(nn.Module):
    """A continuous policy's distribution parameters: ``loc`` from the context network and
    one learned, state-independent ``scale`` per action dimension.

    Args:
        net: the policy network (``out_dim`` = the action width).
        init_std: the initial standard deviation.
    """

    def __init__(self, net: ContextNet, init_std: float = 1.0):
        super().__init__()
        self.net = net
        self.log_std = nn.Parameter(torch.full((net.out_dim,), float(init_std)).log())

    def forward(self, obs: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc = self.net(obs, context)
        return loc, self.log_std.exp().expand_as(loc)


class _Logits(nn.Module):
    def __init__(self, net: ContextNet):
        super().__init__()
        self.net = net

    def forward(self, obs: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.net(obs, context)


class PPO:
    """PPO for a policy and a critic of (observation, context).

    Args:
        policy: the policy network: action means (continuous) or logits (discrete).
        critic: the value network (``out_dim`` 1).
        discrete: categorical actions over the policy's logits, else Gaussian ones.
        settings: the :class:`PPOSettings`.

    Raises:
        ValueError: a critic whose ``out_dim`` is not 1, or networks of different widths.
        ImportError: torchrl is missing (``pip install 'hyperdnn[rl]'``).
    """

    def __init__(self, policy: ContextNet, critic: ContextNet, discrete: bool, settings: PPOSettings | None = None):
        tdnn = import_optional("tensordict.nn", "rl", "PPO")
        modules = import_optional("torchrl.modules", "rl", "PPO")
        objectives = import_optional("torchrl.objectives", "rl", "PPO")
        value = import_optional("torchrl.objectives.value", "rl", "PPO")
        if critic.out_dim != 1 or (policy.obs_dim, policy.context_dim) != (critic.obs_dim, critic.context_dim):
            raise ValueError(
                f"PPO: expected a critic with out_dim 1 reading what the policy reads, got policy "
                f"(obs {policy.obs_dim}, context {policy.context_dim}) and critic (obs {critic.obs_dim}, "
                f"context {critic.context_dim}, out {critic.out_dim})"
            )
        self.settings = s = settings or PPOSettings()
        self.policy, self.critic_net, self.discrete = policy, critic, discrete
        keys = ["observation", "context"]
        if discrete:
            self.head: nn.Module = _Logits(policy)
            module = tdnn.TensorDictModule(self.head, in_keys=keys, out_keys=["logits"])
            dist: dict[str, Any] = {"in_keys": ["logits"], "distribution_class": torch.distributions.Categorical}
        else:
            self.head = GaussianHead(policy, s.init_std)
            module = tdnn.TensorDictModule(self.head, in_keys=keys, out_keys=["loc", "scale"])
            dist = {"in_keys": ["loc", "scale"], "distribution_class": modules.IndependentNormal}
        self.actor = modules.ProbabilisticActor(module, return_log_prob=True, **dist)  # what the loss evaluates
        self.critic = modules.ValueOperator(critic, in_keys=keys)
        self.loss = objectives.ClipPPOLoss(
            self.actor,
            self.critic,
            clip_epsilon=s.clip,
            entropy_coeff=s.entropy,
            critic_coeff=s.critic,
            loss_critic_type="l2",
            normalize_advantage=True,
        )
        self.advantage = value.GAE(gamma=s.gamma, lmbda=s.lmbda, value_network=None)
        self._tensordict = import_optional("tensordict", "rl", "PPO").TensorDict
        self.optimizer = adam(self.parameters(), lr=s.lr)

    def parameters(self) -> list[nn.Parameter]:
        """What PPO trains: the policy's and the critic's trainable parameters and, for
        continuous actions, the log standard deviation."""
        extra = [self.head.log_std] if isinstance(self.head, GaussianHead) else []
        return self.policy.trainable_parameters() + self.critic_net.trainable_parameters() + extra

    def num_parameters(self) -> dict[str, int]:
        """Trainable parameters of the policy (with the log standard deviation) and the critic."""
        extra = self.head.log_std.numel() if isinstance(self.head, GaussianHead) else 0
        return {"policy": self.policy.num_parameters() + extra, "critic": self.critic_net.num_parameters()}

    @torch.no_grad()
    def collect(
        self, env: BatchedEnv, context: torch.Tensor, rollout: Rollout | None, generator: torch.Generator
    ) -> tuple[Any, Rollout]:
        """Run :attr:`PPOSettings.steps` steps of every environment of ``env`` with the current
        policy (actions sampled from torch's global generator).

        Episodes run across calls: with ``rollout=None`` every environment is reset first (from
        ``generator``), otherwise ``env`` continues where the previous call left it. An episode
        that ends is reset from ``generator``; one still running at the last step is
        bootstrapped from the critic.

        Args:
            env: the batched environments (``E`` of them).
            context: ``(E, P)`` each environment's raw context (its physics).
            rollout: what the previous call returned (``None``: start afresh).
            generator: draws the initial states of new episodes.

        Returns:
            A ``TensorDict`` of batch ``[E, steps]`` with ``observation``, ``context``,
            ``action``, ``action_log_prob``, ``state_value``, the ``next`` observation, scaled
            ``reward``, ``done``, ``terminated`` and ``state_value``, ``advantage`` and
            ``value_target``; and the :class:`Rollout` to continue from.
        """
        s = self.settings
        if rollout is None:
            env.reset(generator)
            nothing = torch.full((env.num_envs,), torch.nan, dtype=torch.float64)
            rollout = Rollout(torch.zeros(env.num_envs, dtype=torch.float64), nothing)
        ctx, obs, (running, last) = context.float(), env.observe(), rollout
        keys = ("observation", "action", "action_log_prob", "reward", "done", "terminated", "next_observation")
        record: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
        for _ in range(s.steps):
            dist = self.distribution(obs, ctx)
            action = dist.sample()
            out = env.step(action)
            done = out.terminated | out.truncated
            running = running + out.reward
            values = (obs, action, dist.log_prob(action), (out.reward * s.reward_scale).float(), done, out.terminated, out.obs)  # fmt: skip
            for k, v in zip(keys, values):
                record[k].append(v)
            last = torch.where(done, running, last)
            running = torch.where(done, 0.0, running)
            obs = env.reset(generator, done) if bool(done.any()) else out.obs
        rollout = Rollout(running, last)
        t = {k: torch.stack(v, dim=1) for k, v in record.items()}  # (E, steps, ...)
        batch_ctx = ctx.unsqueeze(1).expand(-1, s.steps, -1)
        TensorDict = self._tensordict
        nxt = TensorDict(
            {
                "observation": t["next_observation"],
                "context": batch_ctx,
                "reward": t["reward"].unsqueeze(-1),
                "done": t["done"].unsqueeze(-1),
                "terminated": t["terminated"].unsqueeze(-1),
            },
            [env.num_envs, s.steps],
        )
        batch = TensorDict(
            {
                "observation": t["observation"],
                "context": batch_ctx,
                "action": t["action"],
                "action_log_prob": t["action_log_prob"],
                "next": nxt,
            },
            [env.num_envs, s.steps],
        )
        self.critic(batch)
        self.critic(nxt)
        self.advantage(batch)
        return batch, rollout

    def distribution(self, obs: torch.Tensor, context: torch.Tensor) -> torch.distributions.Distribution:
        """The policy's action distribution for ``(B, O)`` observations and ``(B, P)`` contexts:
        the one TorchRL's actor builds (``Categorical`` over the logits, or a diagonal Gaussian)."""
        if self.discrete:
            return torch.distributions.Categorical(logits=self.head(obs, context))
        loc, scale = self.head(obs, context)
        return torch.distributions.Independent(torch.distributions.Normal(loc, scale), 1)

    def update(self, batch: Any, generator: torch.Generator) -> dict[str, float]:
        """:attr:`PPOSettings.epochs` passes of clipped PPO over ``batch`` (from
        :meth:`collect`), in minibatches drawn from ``generator``.

        Returns:
            The mean ``objective``, ``critic`` and ``entropy`` losses of the last pass.
        """
        s = self.settings
        flat = batch.reshape(-1)
        n = flat.batch_size[0]
        sums: dict[str, float] = {}
        for _ in range(s.epochs):
            sums = {"objective": 0.0, "critic": 0.0, "entropy": 0.0}
            order = torch.randperm(n, generator=generator)
            parts = order.split(s.minibatch)
            for idx in parts:
                losses = self.loss(flat[idx])
                total = losses["loss_objective"] + losses["loss_critic"] + losses["loss_entropy"]
                self.optimizer.zero_grad(set_to_none=True)
                total.backward()
                nn.utils.clip_grad_norm_(self.parameters(), s.max_grad_norm)
                self.optimizer.step()
                for key, name in (("objective", "loss_objective"), ("critic", "loss_critic"), ("entropy", "loss_entropy")):  # fmt: skip
                    sums[key] += float(losses[name].detach()) / len(parts)
        return sums

    @torch.no_grad()
    def act(self, obs: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The deterministic action (the mean, or the most likely action) for ``(B, O)``
        observations with ``(B, P)`` contexts."""
        out = self.policy(obs, context)
        return out.argmax(-1) if self.discrete else out
