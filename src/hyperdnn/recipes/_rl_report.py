"""The ``rl`` recipe's report and its check of the batched simulators against Gymnasium.

:func:`report` turns the returns the run measured into the normalised return per policy and
split (a table per family), the done-when checks, the grid figures and PPO's learning curves;
:func:`check_against_gymnasium` steps Gymnasium's own environments beside the batched
simulator and returns the largest difference.

Example::

    >>> import torch
    >>> from hyperdnn.data.control import get_family
    >>> from hyperdnn.recipes._rl_report import check_against_gymnasium
    >>> physics = torch.tensor([[0.5, 0.1, 10.0], [1.0, 0.4, -3.0]])
    >>> check_against_gymnasium(get_family("cartpole"), physics, torch.Generator().manual_seed(0))
    0.0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from hyperdnn.data.control import SPLITS, Family
from hyperdnn.engine.loop import LoopResult
from hyperdnn.engine.report import Column, Report, Table, grid_figure, line_chart_figure
from hyperdnn.engine.run import Outcome, RunContext
from hyperdnn.metrics.control import normalised_return, split_means

if TYPE_CHECKING:
    from hyperdnn.recipes.rl import RLConfig, Tasks

__all__ = ["check_against_gymnasium", "report", "PLOT_AXES", "TARGETS"]

#: the two parameters of each family's grid figure (the third at its Gymnasium default)
PLOT_AXES = {"pendulum": ("g", "l"), "cartpole": ("length", "force_mag")}
#: the issue's targets: the hypernetwork's interpolation return, its extrapolation lead over concat
TARGETS = {"interpolation": 0.9, "extrapolation_lead": 0.05}
_NAMES = {"hnet": "hypernetwork", "concat": "parameters concatenated", "plain": "no parameters"}
_REFERENCES = {"nearest expert": "expert of the nearest training task"}


def check_against_gymnasium(
    family: Family, physics: torch.Tensor, generator: torch.Generator, steps: int = 100
) -> float:
    """The largest absolute difference of observations and rewards between the batched
    simulator and Gymnasium's own ``step`` (under :func:`~hyperdnn.data.control.PhysicsWrapper`),
    over ``steps`` random actions from the batched simulator's initial states (``inf`` when
    the two disagree on an episode's end)."""
    env = family.make_env(physics)
    env.reset(generator)
    gyms = [family.make_gym(row.tolist()) for row in physics]
    for k, g in enumerate(gyms):
        g.reset(seed=0)
        g.unwrapped.state = env.state[k].numpy().copy()
    alive, worst = torch.ones(len(gyms), dtype=torch.bool), 0.0
    for _ in range(steps):
        if env.discrete:
            action = torch.randint(0, env.num_actions, (len(gyms),), generator=generator)
        else:
            action = 2.5 * (2 * torch.rand(len(gyms), 1, generator=generator) - 1)
        out = env.step(action)
        for k, g in enumerate(gyms):
            if not alive[k]:
                continue
            obs, reward, terminated, _, _ = g.step(int(action[k]) if env.discrete else action[k].numpy())
            if terminated != bool(out.terminated[k]):
                return float("inf")
            worst = max(worst, float((torch.from_numpy(obs) - out.obs[k]).abs().max()), abs(reward - float(out.reward[k])))  # fmt: skip
            alive[k] = not terminated
    return worst


def _label(key: str) -> str:
    route, _, method = key.partition("/")
    return f"{_NAMES.get(method, method)} ({route})" if method else _REFERENCES.get(key, key)


def report(cfg: RLConfig, ctx: RunContext, tasks: Mapping[str, Tasks], done: LoopResult) -> Outcome:
    """summary.md (per family: normalised return per policy and split, parameters, time; the
    targets), the figures, and results.json's metrics."""
    res = done.results
    rep = Report(ctx, f"rl: hypernetwork policies over physics, seed {ctx.seed}")
    rep.text(
        f"Every policy is the MLP obs-{'-'.join(map(str, cfg.hidden))}-out; the hypernetwork (trunk "
        f"{','.join(map(str, cfg.trunk))}{'; a change around a learned shared network' if cfg.residual else ''}) generates it per task. Distillation: {cfg.demo_transitions} expert transitions "
        f"per training task (noise {cfg.demo_noise}), {cfg.distill_epochs} epochs of {cfg.distill_batches} minibatches "
        f"of {cfg.distill_batch}. PPO (TorchRL): "
        f"{cfg.ppo_iterations} iterations of {cfg.ppo_envs} environments (at least one per training task) x {cfg.ppo_steps} steps. "
        f"Evaluation: {cfg.eval_episodes} episodes per task, the same initial states for every policy. Normalised "
        "return: (R - R_random) / (R_expert - R_random) per task, averaged over a split (0: random, 1: the task's expert)."
    )
    metrics: dict[str, Any] = {}
    for name, t in tasks.items():
        returns = {k: torch.tensor(v, dtype=torch.float64) for k, v in res["returns"][name].items()}
        rand, expert = returns["random"], returns["expert"]
        policies = [k for k in returns if "/" in k] + ["nearest expert"]  # the trained ones, then the reference
        nr = {k: normalised_return(returns[k], rand, expert) for k in policies}
        flipped = (t.physics[:, -1] < 0) if name == "cartpole" else None
        columns = [Column("policy"), *(Column(f"{s} (n={t.splits.count(s)})", s, ".3f") for s in SPLITS)]
        if flipped is not None:
            columns.append(Column(f"flipped actuator (n={int(flipped.sum())})", "flipped", ".3f"))
        columns += [Column("trainable parameters", "params", ","), Column("time (s)", "time", ".1f")]
        table, summary = Table(columns), {}
        for k in policies:
            means = split_means(nr[k], t.splits, SPLITS)
            if flipped is not None:
                means["flipped"] = float(nr[k][flipped].nanmean())
            counts = res["params"].get(name, {}).get(k, {})
            key = f"{name}/{k}"
            table.add(
                policy=_label(k), **means, params=sum(counts.values()) if counts else None, time=done.times.get(key)
            )
            summary[k] = {**means, "parameters": counts, "time_s": done.times.get(key)}
        targets = _targets(summary, cfg)
        rep.section(f"{t.family.gym_id}: {', '.join(f'{p.name} ({p.doc})' for p in t.family.parameters)}")
        rep.text(
            "Values: "
            + "; ".join(
                f"{p.name} train {list(p.train)}, interpolation {list(p.interpolation)}, extrapolation "
                f"{list(p.extrapolation)}{' (each with both signs)' if p.signed else ''}"
                for p in t.family.parameters
            )
            + f". Mean return over all tasks: expert {float(expert.mean()):.1f}, random {float(rand.mean()):.1f}; "
            f"the batched simulator's largest difference from Gymnasium's step: {res['gym_check'][name]:g}."
        )
        rep.table(table)
        rep.text("\n".join(f"- {line}" for line in targets["lines"]))
        _figures(rep, cfg, name, t, nr, res["curves"].get(name, {}))
        metrics[name] = {
            "tasks": {s: t.splits.count(s) for s in SPLITS},
            "normalised_return": summary,
            "targets": {k: v for k, v in targets.items() if k != "lines"},
            "mean_return": {k: split_means(v, t.splits, SPLITS) for k, v in returns.items()},
            "physics": t.physics.tolist(),
            "splits": t.splits,
            "returns": res["returns"][name],
            "curves": res["curves"].get(name, {}),
            "gym_check_max_difference": res["gym_check"][name],
        }
        for line in targets["lines"]:
            ctx.log(f"{name}: {line}")
    return rep.outcome(metrics)


def _targets(summary: Mapping[str, Mapping[str, Any]], cfg: RLConfig) -> dict[str, Any]:
    """The issue's done-when checks per route, where the run has the policies they compare."""
    out: dict[str, Any] = {"lines": []}
    for route in cfg.routes:
        h, c = summary.get(f"{route}/hnet"), summary.get(f"{route}/concat")
        if h is None:
            continue
        entry: dict[str, Any] = {"interpolation": h["interpolation"], "interpolation_met": h["interpolation"] >= TARGETS["interpolation"]}  # fmt: skip
        line = f"{route}: hypernetwork interpolation {h['interpolation']:.3f} (target >= {TARGETS['interpolation']}: {'met' if entry['interpolation_met'] else 'not met'})"  # fmt: skip
        if c is not None:
            lead = h["extrapolation"] - c["extrapolation"]
            entry.update(extrapolation_lead=lead, extrapolation_met=lead >= TARGETS["extrapolation_lead"])
            line += f"; extrapolation lead over concatenation {lead:+.3f} (target >= +{TARGETS['extrapolation_lead']}: {'met' if entry['extrapolation_met'] else 'not met'})"  # fmt: skip
        out[route] = entry
        out["lines"].append(line)
    return out


def _figures(rep: Report, cfg: RLConfig, name: str, t: Tasks, nr: Mapping[str, torch.Tensor], curves: Mapping[str, list[float]]) -> None:  # fmt: skip
    """The normalised return over the grid figure's two parameters per policy (the third at its
    default), training tasks outlined; PPO's training return per iteration."""
    xname, yname = PLOT_AXES[name]
    names = t.family.names
    xi, yi = names.index(xname), names.index(yname)
    (other,) = [i for i in range(len(names)) if i not in (xi, yi)]
    params = t.family.parameters
    xs, ys = params[xi].values(), params[yi].values()
    at = t.physics[:, other] == params[other].default
    index = {(float(t.physics[i, xi]), float(t.physics[i, yi])): i for i in at.nonzero().flatten().tolist()}
    cell = torch.tensor([[index[(x, y)] for x in xs] for y in ys])  # (rows: y, columns: x)
    marked = torch.tensor([[t.splits[i] == "train" for i in row] for row in cell.tolist()])
    panels = {_label(k): v[cell] for k, v in nr.items()}
    title = f"{t.family.gym_id}: normalised return ({params[other].name} = {params[other].default:g}; outlined: training tasks)"  # fmt: skip
    figure = grid_figure(panels, [f"{x:g}" for x in xs], [f"{y:g}" for y in ys], title, xname, yname, "normalised return", marked, (0.0, 1.0))  # fmt: skip
    rep.figure(figure, f"grid_{name}.png", f"normalised return over {xname} and {yname}")
    ppo = {_label(k): (list(range(1, len(v) + 1)), v) for k, v in curves.items() if k.startswith("ppo/") and len(v) > 1}
    ppo = {k: v for k, v in ppo.items() if all(x == x for x in v[1])}  # every iteration ended an episode
    if ppo:
        fig = line_chart_figure(
            ppo, f"{t.family.gym_id}: PPO on the training tasks", "iteration", "mean episode return"
        )
        rep.figure(fig, f"ppo_{name}.png", "PPO training return per iteration")
