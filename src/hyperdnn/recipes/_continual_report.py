"""The report of ``hyperdnn run continual``: a table and a heat map per scenario, and
results.json's metrics (accuracy matrices, backward transfer, task inference, parameters and
their ratio to separate networks'); also the empty results the recipe's loop fills.

Example::

    >>> from hyperdnn.recipes._continual_report import matrix
    >>> matrix([[0.5, None], [0.25, 1.0]]).isnan().tolist()
    [[False, True], [False, False]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from hyperdnn.data.streams import TaskStream
from hyperdnn.engine.loop import LoopResult, Unit
from hyperdnn.engine.report import Column, Report, Table, heatmap_figure
from hyperdnn.engine.run import Outcome, RunContext
from hyperdnn.metrics import accuracy_summary
from hyperdnn.networks import mlp_parameters
from hyperdnn.recipes._continual_units import REPLAY, scenarios_of

if TYPE_CHECKING:
    from hyperdnn.recipes.continual import ContinualConfig

__all__ = ["SCENARIO_NAMES", "empty_results", "matrix", "separate_parameters", "report"]

SCENARIO_NAMES = {
    "CL1": "task-incremental, task identity given",
    "CL2": "domain-incremental, no task identity",
    "CL3": "class-incremental, task inferred",
}


def empty_results(cfg: ContinualConfig, units: Sequence[Unit], T: int) -> dict[str, Any]:
    """The results the loop fills for ``T`` tasks: per unit and scenario an accuracy matrix and
    the task inference per stage (``None``: not measured yet), and the trained parameters."""
    nothing = [[None] * T for _ in range(T)]
    results: dict[str, Any] = {"matrices": {}, "inference": {}, "params": {}}
    for u in units:
        results["matrices"][u.key] = {s: [list(r) for r in nothing] for s in scenarios_of(u.key, cfg)}
        results["inference"][u.key] = {s: [None] * T for s in scenarios_of(u.key, cfg) if s != "CL1"}
    return results


def matrix(rows: Sequence[Sequence[float | None]]) -> torch.Tensor:
    """An accuracy matrix as results.json holds it (``None``: not measured) -> float64, NaN."""
    return torch.tensor([[float("nan") if v is None else v for v in r] for r in rows], dtype=torch.float64)


def separate_parameters(cfg: ContinualConfig, stream: TaskStream) -> int:
    """The parameters of separate networks, one target MLP per task of ``stream``: the
    denominator of the compression ratio in every table."""
    return len(stream) * mlp_parameters(stream.in_features, cfg.hidden, stream.classes_per_task)


def report(
    cfg: ContinualConfig, ctx: RunContext, stream: TaskStream, units: Sequence[Unit], done: LoopResult
) -> Outcome:
    """summary.md (a table and a heat map per scenario) and results.json's metrics."""
    T, res = len(stream), done.results
    separate = separate_parameters(cfg, stream)
    rep = Report(ctx, f"continual: {stream.name}, {T} tasks, seed {ctx.seed}")
    replay = ""
    if any(m in REPLAY for m in cfg.methods) and set(cfg.scenarios) - {"CL1"}:
        replay = (
            f" Replay (hnet+r, dgr): VAE encoder {','.join(map(str, cfg.vae_hidden))}, latent {cfg.vae_latent}, "
            f"Adam lr {cfg.lr}; HNET+R's decoder hypernetwork: the options above, beta {cfg.replay_beta}"
            + (f", chunk generator {cfg.replay_chunk_hidden}" if cfg.replay_chunk_hidden else "")
            + (f", Adam lr {cfg.replay_lr} for its VAE" if cfg.replay_lr else "")
            + "."
        )
    head = (
        "generate-once"
        if cfg.head == "once"
        else (
            f"chunked (chunks of {cfg.chunk_size}, chunk embedding {cfg.chunk_embed_dim}, "
            f"generator {','.join(map(str, cfg.chunk_hidden))})"
        )
    )
    rep.text(
        f"Target MLP {stream.in_features}-{'-'.join(map(str, cfg.hidden))}-{stream.classes_per_task} "
        f"(dropout {cfg.dropout}); {cfg.task_epochs} epochs per task, batch {cfg.batch_size}, Adam lr {cfg.lr}. "
        f"Hypernetwork: task embedding {cfg.task_embed_dim}, trunk {','.join(map(str, cfg.trunk))}, "
        f"{head} head, lr {cfg.hnet_lr}, beta {cfg.beta}, look-ahead {'on' if cfg.lookahead else 'off'}, "
        f"regularised tasks per step: {cfg.reg_tasks or 'all'}. Online EWC: lambda {cfg.ewc_lambda}, "
        f"gamma {cfg.ewc_gamma}.{replay}\n"
        "BWT: backward transfer in points (mean of final minus just-trained accuracy over tasks 1..T-1; "
        "negative = forgetting). Forgetting: average forgetting in points (mean over tasks 1..T-1 of the "
        "task's best accuracy before the last task minus its final accuracy). "
        "Task inference: share of test inputs whose task the entropy rule finds. "
        f"Parameters: what the method's optimizers trained over all tasks; params / separate: that over the "
        f"{separate:,} parameters of separate networks per task (the compression ratio, below 1: compressive)."
    )
    methods: dict[str, dict[str, Any]] = {}
    for s in cfg.scenarios:
        table = Table(
            [
                Column("method"),
                Column("final avg acc (%)", "final_avg", ".1f", scale=100),
                Column("BWT (points)", "bwt", "+.1f", scale=100),
                Column("forgetting (points)", "forgetting", ".1f", scale=100),
                Column("just-trained acc (%)", "just_trained", ".1f", scale=100),
                Column("task inference (%)", "task_inference", ".1f", scale=100),
                Column("parameters", "params", ","),
                Column("params / separate", "compression", ".2f"),
                Column("time (s)", "time", ".0f"),
            ]
        )
        mats = {}
        for u in units:
            if s in res["matrices"][u.key]:
                method = u.key.split("/")[0]
                mats[method] = matrix(res["matrices"][u.key][s])
                per_stage = res["inference"][u.key].get(s)
                entry = {**accuracy_summary(mats[method]), "task_inference": per_stage[-1] if per_stage else None}
                label = f"{method}+ENT" if method in ("hnet", "separate") and s != "CL1" else method
                params = res["params"].get(u.key, 0)
                table.add(method=label, **entry, params=params, compression=params / separate, time=done.times[u.key])
                entry.update(matrix=mats[method].tolist(), task_inference_per_stage=per_stage)
                methods.setdefault(method, {})[s] = entry
        rep.section(f"{s} ({SCENARIO_NAMES[s]})")
        rep.table(table)
        title = f"{stream.name} {s}: accuracy after each task"
        rep.figure(heatmap_figure(mats, title), f"accuracy_{s}.png", "accuracy matrices")
    metrics = {
        "stream": stream.name,
        "num_tasks": T,
        "scenarios": list(cfg.scenarios),
        "methods": methods,
        "parameters": res["params"],
        "separate_parameters": separate,
        "compression": {k: v / separate for k, v in res["params"].items()},
        "time_s": {k: round(v, 2) for k, v in done.times.items()},
    }
    return rep.outcome(metrics)
