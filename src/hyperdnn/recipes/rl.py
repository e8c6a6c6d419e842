"""Hypernetwork policies that transfer zero-shot to unseen dynamics (``hyperdnn run rl``).

A hypernetwork reads an environment's physical parameters and generates all the weights of
its policy (and, for PPO, of its critic); every environment of a step runs its own generated
network in one per-sample pass. One model covers a family of environments, and is asked for
physics it never trained on (Rezaei-Shoshtari et al., AAAI 2023; Sarafian et al., ICML 2021).

Families (Gymnasium classic control, :mod:`hyperdnn.data.control`): Pendulum-v1 with gravity,
mass and length varied; CartPole-v1 with pole half-length, pole mass and push force varied,
both signs of the force (a negative one is a flipped actuator). Each parameter has three
training values, two interpolation values between them and two extrapolation values outside;
every combination is a task: training tasks (all training values), interpolation tasks (inside
the training range) and extrapolation tasks (any value outside).

Two routes train the same three policies (the same target MLP): ``distill`` imitates the
per-task experts (classical controllers, :mod:`hyperdnn.baselines.controllers`) on the same
noise-injected demonstrations; ``ppo`` is TorchRL's PPO on the training tasks
(:mod:`hyperdnn.methods.ppo`). Policies: ``hnet`` (the hypernetwork), ``concat`` (parameters
concatenated to the observation), ``plain`` (no parameters). Also measured: the expert of the
nearest training task, a random policy and each task's own expert, which set the normalised
return, ``(R - R_random) / (R_expert - R_random)``.

The story: the config; the tasks and the references (a unit per family); the policies (a unit
per family, route and method, through the engine's loop: progress, checkpoints, resume); the
report (a table per family, the normalised return over the parameter grid per policy, PPO's
learning curves).

The plan of a run (a unit per family's references, then per route and method)::

    >>> from hyperdnn.recipes.rl import RLConfig, plan
    >>> [u.key for u in plan(RLConfig(families=("cartpole",), routes=("distill",), methods=("hnet", "plain")))]
    ['cartpole/reference', 'cartpole/distill/hnet', 'cartpole/distill/plain']

Run::

    hyperdnn run rl                              # both families, both routes (4-5 minutes of CPU, one thread)
    hyperdnn run rl --quick                      # a smoke run in well under a minute
    hyperdnn run rl --families pendulum --routes distill
    hyperdnn run rl --out runs/rl --resume       # continue an interrupted run

Writes summary.md (normalised return per split, parameters, time), results.json (every
task's return per policy), grid_<family>.png (normalised return over two parameters per
policy), ppo_<family>.png (training return per PPO iteration) and the trained hypernetwork
policies as <family>_<route>_hnet.safetensors (hyperdnn.engine.load_model(out, name)).
Needs the ``rl`` extra (gymnasium, torchrl) and ``apps``.

Expected (seeds 0 and 1; docs/rl.md has the tables): every hypernetwork policy reaches the
experts on interpolation tasks (normalised return 0.98 to 1.00); on extrapolation tasks it is
ahead of the concatenated-parameter policy by 0.06 to 0.08 with PPO on the pendulum, by less
than 0.03 when distilled, and on the cart-pole with PPO between 0.11 behind and 0.02 ahead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

import torch

from hyperdnn.baselines.context_policy import ConcatPolicy, PlainPolicy
from hyperdnn.baselines.controllers import make_expert, nearest_tasks
from hyperdnn.data.control import SPLITS, Family, get_family
from hyperdnn.engine.config import apply_preset, option
from hyperdnn.engine.errors import CheckpointError
from hyperdnn.engine.loop import Unit, Work, resumable, run_units
from hyperdnn.engine.registry import Recipe, register_recipe
from hyperdnn.engine.run import Outcome, RunContext
from hyperdnn.methods.context_policy import ContextNet, HyperPolicy
from hyperdnn.methods.distillation import Demonstrations, collect_demonstrations, distillation_loss
from hyperdnn.methods.ppo import PPO, PPOSettings, Rollout
from hyperdnn.metrics.control import task_returns
from hyperdnn.optim import adam
from hyperdnn.recipes._rl_report import check_against_gymnasium, report

__all__ = ["RLConfig", "plan", "build_policy", "run_rl", "build_model", "RECIPE"]

FAMILY_NAMES = ("pendulum", "cartpole")
ROUTES = ("distill", "ppo")
METHODS = ("hnet", "concat", "plain")
#: PPO's discount, GAE lambda, reward scale and initial action noise per family (Pendulum's
#: short-sighted discount is the usual one for its dense, shaped reward)
PPO_FAMILY = {
    "pendulum": {"gamma": 0.95, "lmbda": 0.95, "reward_scale": 0.1, "init_std": 1.0},
    "cartpole": {"gamma": 0.99, "lmbda": 0.95, "reward_scale": 0.1, "init_std": 1.0},
}
#: the hypernetwork's form by default (see docs/rl.md: generating a change around a learned
#: shared network extrapolates better to the weakest cart-pole pushes)
RESIDUAL = True
QUICK = {
    "demo_transitions": 200,
    "distill_epochs": 2,
    "distill_batches": 10,
    "ppo_iterations": 2,
    "ppo_envs": 27,
    "ppo_steps": 64,
    "ppo_epochs": 2,
    "eval_episodes": 1,
}


# ====================================================================== the config
@dataclass
class RLConfig:
    """Options of ``hyperdnn run rl`` (see ``hyperdnn run rl --help``)."""

    families: tuple[str, ...] = option(FAMILY_NAMES, "environment families", choices=FAMILY_NAMES, nonempty=True, distinct=True)  # fmt: skip
    routes: tuple[str, ...] = option(ROUTES, "training routes: distill (experts), ppo (RL)", choices=ROUTES, nonempty=True, distinct=True)  # fmt: skip
    methods: tuple[str, ...] = option(METHODS, "policies: hnet, concat (parameters in the input), plain (none)", choices=METHODS, nonempty=True, distinct=True)  # fmt: skip
    hidden: tuple[int, ...] = option((32, 32), "hidden widths of every policy and critic (the generated MLP)", low=1)
    trunk: tuple[int, ...] = option((128,), "hidden widths of the hypernetwork's MLP trunk", low=1, nonempty=True)
    residual: bool = option(RESIDUAL, "the hypernetwork generates a change around a learned shared network (theta0 + delta(c))")  # fmt: skip
    # distillation
    demo_transitions: int = option(1600, "expert transitions per training task, in whole episodes (Pendulum 8 x 200, CartPole 4 x 500)", low=1)  # fmt: skip
    demo_noise: float = option(0.3, "injected noise: torque std / 2 (pendulum), random-action rate (cartpole)", low=0, high=1)  # fmt: skip
    distill_epochs: int = option(30, "epochs of distillation", low=1)
    distill_batches: int = option(80, "minibatches per epoch, drawn without replacement from the demonstrations", low=1)
    distill_batch: int = option(512, "minibatch size of distillation", low=1)
    distill_lr: float = option(1e-3, "Adam learning rate of distillation", above=0)
    # PPO
    ppo_iterations: int = option(40, "PPO iterations (a rollout of every environment, then updates)", low=1)
    ppo_envs: int = option(54, "environments in PPO, as many per training task as fit (at least one each)", low=1)
    ppo_steps: int = option(200, "rollout steps per environment and iteration", low=1)
    ppo_epochs: int = option(5, "passes over each rollout", low=1)
    ppo_minibatch: int = option(2048, "transitions per PPO gradient step", low=1)
    ppo_lr: float = option(1e-3, "Adam learning rate of PPO", above=0)
    # evaluation
    eval_episodes: int = option(4, "evaluation episodes per task (the same initial states for every policy)", low=1)
    checkpoint_every: int = option(0, "also checkpoint every N epochs inside a unit (0: between units)", low=0)
    quick: bool = option(False, f"a smoke run: {', '.join(f'{k} {v}' for k, v in QUICK.items())}")

    def __post_init__(self) -> None:
        if self.quick:  # the preset's values win over the command line
            apply_preset(self, QUICK, keep_given=False)


# ====================================================================== the tasks
class Tasks:
    """A family's task grid: every task's physics and split, and the training tasks."""

    def __init__(self, name: str):
        self.family: Family = get_family(name)
        self.physics, self.splits = self.family.grid()
        self.train = self.physics[[s == "train" for s in self.splits]]
        self.low, self.high = self.family.span()

    def evaluate(self, act, cfg: RLConfig, ctx: RunContext) -> list[float]:
        """The mean return of ``act`` on every task (the family's evaluation seed)."""
        seed = ctx.derive_seed("eval", self.family.name) % 2**63
        return task_returns(self.family, self.physics, act, cfg.eval_episodes, seed).tolist()


# ====================================================================== the policies
def build_policy(cfg: RLConfig, family: Family, method: str, out_dim: int) -> ContextNet:
    """The ``method`` network (``hnet``, ``concat`` or ``plain``) of ``family`` with
    ``out_dim`` outputs: the same MLP ``obs -> hidden -> out`` in each."""
    lo, hi = (t.tolist() for t in family.span())
    obs, P = family.batched.obs_dim, len(family.parameters)
    if method == "hnet":
        return HyperPolicy(obs, P, out_dim, cfg.hidden, cfg.trunk, lo, hi, residual=cfg.residual)
    return (ConcatPolicy if method == "concat" else PlainPolicy)(obs, P, out_dim, cfg.hidden, lo, hi)


def action_dim(family: Family) -> int:
    """The policy's output width: logits (discrete) or torques (continuous)."""
    return family.batched.num_actions if family.batched.discrete else family.batched.action_dim


def greedy(net: ContextNet, discrete: bool):
    """The deterministic action of ``net``: the most likely action, or the mean torque."""

    def act(obs: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = net(obs, context)
        return out.argmax(-1) if discrete else out

    return act


# ====================================================================== the loop
def plan(cfg: RLConfig) -> list[Unit]:
    """Per family: the references, then every route x method."""
    epochs = {"distill": cfg.distill_epochs, "ppo": cfg.ppo_iterations}
    units = []
    for f in cfg.families:
        units.append(Unit(f"{f}/reference", ("",), 1))
        units += [Unit(f"{f}/{r}/{m}", ("",), epochs[r]) for r in cfg.routes for m in cfg.methods]
    return units


class References(Work):
    """The random policy, each task's expert and the expert of the nearest training task on
    every task; the batched simulator checked against Gymnasium's own step."""

    def __init__(self, ctx: RunContext, cfg: RLConfig, tasks: Tasks):
        self.ctx, self.cfg, self.tasks = ctx, cfg, tasks

    def start_stage(self, stage: int, fresh: bool) -> None:
        return None

    def steps(self, stage: int) -> int:
        return 1

    def train_epoch(self, stage: int, epoch: int, tick) -> dict[str, float]:
        t, name, eps = self.tasks, self.tasks.family.name, self.cfg.eval_episodes
        task_of_row = torch.arange(len(t.physics)).repeat_interleave(eps)  # the evaluation's rows
        expert, teacher = make_expert(t.family, t.physics), make_expert(t.family, t.train)
        nearest = nearest_tasks(t.physics, t.train, t.low, t.high)[task_of_row]
        g, env = self.ctx.generator("random policy", name), t.family.batched

        def random(obs: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
            if env.discrete:
                return torch.randint(0, env.num_actions, (obs.shape[0],), generator=g)
            return (2 * torch.rand(obs.shape[0], 1, generator=g) - 1) * env.max_torque  # type: ignore[attr-defined]

        self.out = {
            "expert": t.evaluate(lambda obs, context: expert.act(obs, task_of_row), self.cfg, self.ctx),
            "nearest expert": t.evaluate(lambda obs, context: teacher.act(obs, nearest), self.cfg, self.ctx),
            "random": t.evaluate(random, self.cfg, self.ctx),
        }
        sample = t.physics[:: max(1, len(t.physics) // 4)]
        self.gym = check_against_gymnasium(t.family, sample, self.ctx.generator("gymnasium check", name))
        tick()
        return {}

    def end_stage(self, stage: int, results: dict[str, Any]) -> str:
        name = self.tasks.family.name
        results["returns"].setdefault(name, {}).update(self.out)
        results["gym_check"][name] = self.gym
        mean = {k: sum(v) / len(v) for k, v in self.out.items()}
        return f"mean return: expert {mean['expert']:.1f}, random {mean['random']:.1f}; Gymnasium check max |diff| {self.gym:g}"  # fmt: skip

    def end_unit(self, results: dict[str, Any]) -> None:
        pass

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {}, {}

    def load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        pass


class Trained(Work):
    """One policy of one route on one family: distillation (epochs over the demonstrations) or
    PPO (an iteration per epoch); evaluated on every task at the end."""

    def __init__(self, ctx: RunContext, cfg: RLConfig, tasks: Tasks, route: str, method: str):
        self.ctx, self.cfg, self.tasks, self.route, self.method = ctx, cfg, tasks, route, method
        family = tasks.family
        self.name, self.discrete = family.name, family.batched.discrete
        self.label = f"{route}/{method}"
        ctx.seed_everything("init", self.name, route)  # every method of a route from the same draws
        self.policy = build_policy(cfg, family, method, action_dim(family))
        self.curve: list[float] = []
        if route == "distill":
            expert = make_expert(family, tasks.train)
            gen = ctx.generator("demonstrations", self.name)
            episodes = -(-cfg.demo_transitions // family.batched.horizon)
            self.demos: Demonstrations = collect_demonstrations(family, tasks.train, expert, episodes, cfg.demo_noise, gen)  # fmt: skip
            self.optimizer = adam(self.policy.trainable_parameters(), lr=cfg.distill_lr)
        else:
            settings = PPOSettings(
                steps=cfg.ppo_steps, epochs=cfg.ppo_epochs, minibatch=cfg.ppo_minibatch, lr=cfg.ppo_lr, **PPO_FAMILY[self.name]
            )  # fmt: skip
            self.ppo = PPO(self.policy, build_policy(cfg, family, method, 1), self.discrete, settings)
            self.contexts = tasks.train.repeat_interleave(max(1, cfg.ppo_envs // len(tasks.train)), 0)
            self.env = family.make_env(self.contexts)
            self.rollout: Rollout | None = None  # the episodes under way between iterations
            self.optimizer = self.ppo.optimizer

    def start_stage(self, stage: int, fresh: bool) -> torch.optim.Optimizer:
        return self.optimizer

    def steps(self, stage: int) -> int:
        if self.route == "ppo":
            return 1
        return min(self.cfg.distill_batches, -(-len(self.demos) // self.cfg.distill_batch))

    def train_epoch(self, stage: int, epoch: int, tick) -> dict[str, float]:
        if self.route == "ppo":
            self.ctx.seed_everything("actions", self.label, self.name, epoch)
            gen = self.ctx.generator("rollout", self.name, epoch)
            batch, self.rollout = self.ppo.collect(self.env, self.contexts, self.rollout, gen)
            logs = self.ppo.update(batch, self.ctx.generator("minibatches", self.name, epoch))
            self.curve.append(self.rollout.progress())
            tick()
            return {"return": self.curve[-1], **logs}
        order = torch.randperm(len(self.demos), generator=self.ctx.generator("distill batches", self.name, epoch))
        total = 0.0
        for idx in order.split(self.cfg.distill_batch)[: self.steps(stage)]:
            loss = distillation_loss(self.policy, Demonstrations(*(t[idx] for t in self.demos)), self.discrete)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.item()
            tick()
        self.curve.append(total / self.steps(stage))
        return {"loss": self.curve[-1]}

    def end_stage(self, stage: int, results: dict[str, Any]) -> str:
        returns = self.tasks.evaluate(greedy(self.policy, self.discrete), self.cfg, self.ctx)
        results["returns"].setdefault(self.name, {})[self.label] = returns
        results["curves"].setdefault(self.name, {})[self.label] = list(self.curve)
        return f"mean return {sum(returns) / len(returns):.1f}"

    def end_unit(self, results: dict[str, Any]) -> None:
        counts = self.ppo.num_parameters() if self.route == "ppo" else {"policy": self.policy.num_parameters()}
        results["params"].setdefault(self.name, {})[self.label] = counts
        if self.method == "hnet":
            path = self.ctx.save_model(self.policy, f"{self.name}_{self.route}_hnet", {"family": self.name})
            self.ctx.log(f"saved the {self.route} hypernetwork policy: {path}")

    def _modules(self) -> dict[str, torch.nn.Module]:
        return {"policy": self.policy} if self.route == "distill" else {"head": self.ppo.head, "critic": self.ppo.critic_net}  # fmt: skip

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {f"{m}.{k}": v for m, mod in self._modules().items() for k, v in mod.state_dict().items()}
        if self.route == "ppo" and self.rollout is not None:  # the episodes under way
            tensors.update({"env.state": self.env.state, "env.steps": self.env.steps})
            tensors.update({"rollout.running": self.rollout.running, "rollout.last": self.rollout.last})
        return tensors, {"curve": list(self.curve)}

    def load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        for m, mod in self._modules().items():
            mod.load_state_dict({k[len(m) + 1 :]: v for k, v in tensors.items() if k.startswith(m + ".")})
        if "rollout.running" in tensors:
            self.env.state, self.env.steps = tensors["env.state"].clone(), tensors["env.steps"].clone()
            self.rollout = Rollout(tensors["rollout.running"].clone(), tensors["rollout.last"].clone())
        self.curve = [float(v) for v in meta["curve"]]


def run_rl(cfg: RLConfig, ctx: RunContext) -> Outcome:
    """The ``rl`` recipe: per family the references and every policy, then the report."""
    tasks = {f: Tasks(f) for f in cfg.families}
    for t in tasks.values():
        counts = {s: t.splits.count(s) for s in SPLITS}
        ctx.log(f"{t.family.gym_id}: {len(t.physics)} tasks over {', '.join(t.family.names)} ({counts})")

    def build(unit: Unit) -> Work:
        family, route, *method = unit.key.split("/")
        if route == "reference":
            return References(ctx, cfg, tasks[family])
        return Trained(ctx, cfg, tasks[family], route, method[0])

    results: dict[str, Any] = {"returns": {}, "curves": {}, "params": {}, "gym_check": {}}
    done = run_units(ctx, plan(cfg), build, results, checkpoint_every=cfg.checkpoint_every)
    return report(cfg, ctx, tasks, done)


# ====================================================================== the saved models and registration
def build_model(cfg: RLConfig, name: str, info: Mapping[str, Any]) -> HyperPolicy:
    """The untrained hypernetwork policy a run saves as ``<family>_<route>_hnet``.

    Use :func:`hyperdnn.engine.load_model` for the trained one::

        policy = load_model("runs/rl", "pendulum_distill_hnet")
        torque = policy(obs, physics)                  # (B, 1) for (B, 3) observations
    """
    family, route, method = (name.split("_") + ["", "", ""])[:3]
    if family not in FAMILY_NAMES or route not in ROUTES or method != "hnet" or info.get("family") != family:
        raise CheckpointError(f"the rl recipe saves <family>_<route>_hnet models, got {name!r} with info {dict(info)}")
    fam = get_family(family)
    return build_policy(cfg, fam, "hnet", action_dim(fam))  # type: ignore[return-value]


class RLResults(TypedDict):
    """What the ``rl`` recipe records: per family, every policy's mean return per task
    (``returns[family][label]``), training curves (distillation loss or PPO's episode return
    per epoch), trainable parameters, and the batched simulator's largest difference from
    Gymnasium's step."""

    returns: dict[str, dict[str, list[float]]]
    curves: dict[str, dict[str, list[float]]]
    params: dict[str, dict[str, dict[str, int]]]
    gym_check: dict[str, float]


class _WorkState(TypedDict, total=False):
    curve: list[float]


RECIPE = register_recipe(
    Recipe(
        "rl",
        "hypernetwork policies for families of environments, zero-shot on unseen physics",
        RLConfig,
        run_rl,
        **resumable(plan, RLResults, _WorkState),
        build_model=build_model,
        requires={"gymnasium": "rl", "torchrl": "rl", "matplotlib": "apps"},
        threads=1,
        data_parallel="its training is RL rollouts and policy updates, not minibatches of a data set",
    )
)
