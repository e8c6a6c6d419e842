"""The ``pruning`` recipe's report: accuracy and FLOPs per method and budget, the rank
correlation between accuracy from generated weights and after retraining, the search times, and
the figures accuracy_vs_flops.png and generated_vs_retrained.png."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hyperdnn.engine.loop import LoopResult
from hyperdnn.engine.report import Column, Report, Table, line_chart_figure
from hyperdnn.engine.run import Outcome, RunContext
from hyperdnn.metrics import spearman

if TYPE_CHECKING:
    from hyperdnn.recipes.pruning import PruningConfig, Run

__all__ = ["pct", "report"]


def pct(budget: float) -> str:
    """``0.12`` -> ``"12%"``."""
    return f"{100 * budget:g}%"


def report(cfg: PruningConfig, ctx: RunContext, run: Run, done: LoopResult) -> Outcome:
    """summary.md: accuracy and FLOPs per method and budget, the correlation, search times."""
    res, full = done.results, run.full_flops
    methods = {"evolution": "PruningNet + evolution", "random": "PruningNet + random search",
               "uniform": "uniform width", "l1": "L1 filter pruning + fine-tuning"}  # fmt: skip
    table = Table([
        Column("budget"), Column("method"), Column("widths"), Column("FLOPs (% of full)", "flops", ".1f", scale=100),
        Column("acc. from generated weights (%)", "generated", ".1f", scale=100),
        Column("test acc. after training (%)", "acc", ".2f", scale=100), Column("search time (s)", "search_s", ".1f"),
    ])  # fmt: skip
    rows = [("full", "full", "full network")] + [(pct(b), f"{k} {pct(b)}", label) for b in cfg.budgets for k, label in methods.items()]  # fmt: skip
    for budget, name, label in rows:
        t, search = res["trained"][name], name.split()[0] in ("evolution", "random")
        table.add(budget=budget, method=label, widths=" ".join(map(str, t["widths"])), flops=t["flops"] / full,
                  generated=res["generated"].get(name) if not name.startswith("l1") else None,
                  acc=t["acc"], search_s=done.times[name] if search else None)  # fmt: skip
    ranked = [n for _, n, _ in rows if not n.startswith("l1")]
    rho = spearman([res["generated"][n] for n in ranked], [res["trained"][n]["acc"] for n in ranked])
    small = f"{pct(min(cfg.budgets))}"
    gain = res["trained"][f"evolution {small}"]["acc"] - res["trained"][f"uniform {small}"]["acc"]
    lines = [
        f"Spearman correlation between accuracy from generated weights and after retraining, over the "
        f"{len(ranked)} retrained networks: {rho:.3f}",
        f"at the smallest budget ({small}), evolution minus uniform width: {100 * gain:+.2f} points",
        f"PruningNet training: {done.times['pruningnet']:.0f} s; each search evaluated "
        f"{cfg.generations * cfg.population} candidates at most",
    ]
    for line in lines:
        ctx.log(line)
    rep = Report(ctx, f"pruning: PruningNet on {cfg.data} {cfg.image_size}x{cfg.image_size}, seed {ctx.seed}")
    rep.text(
        f"Full CNN: convolutions {list(cfg.channels)} (strides {list(cfg.strides)}), {full:,} FLOPs (multiply-"
        f"accumulates) per image. Every network is trained {cfg.retrain_epochs} epochs with SGD (lr {cfg.lr}, "
        f"L1 fine-tuning lr {cfg.finetune_lr}) on the same batches; the PruningNet {cfg.pruningnet_epochs} epochs. "
        "Accuracy from generated weights: the PruningNet's weights, batch norms recalibrated, no training."
    )
    rep.table(table)
    rep.text("\n".join(f"- {line}" for line in lines))
    curves = {label: ([100 * res["trained"][f"{k} {pct(b)}"]["flops"] / full for b in cfg.budgets],
                      [100 * res["trained"][f"{k} {pct(b)}"]["acc"] for b in cfg.budgets]) for k, label in methods.items()}  # fmt: skip
    curves["full network"] = ([100.0], [100 * res["trained"]["full"]["acc"]])
    rep.figure(line_chart_figure(curves, "test accuracy against FLOPs", "FLOPs (% of the full network)",
                                 "test accuracy (%)"), "accuracy_vs_flops.png", "accuracy against FLOPs")  # fmt: skip
    pairs = sorted((100 * res["generated"][n], 100 * res["trained"][n]["acc"]) for n in ranked)
    scatter = {f"retrained networks (Spearman {rho:.2f})": ([p[0] for p in pairs], [p[1] for p in pairs])}
    rep.figure(line_chart_figure(scatter, "accuracy from generated weights vs after retraining",
                                 "from generated weights (%)", "after retraining (%)"),
               "generated_vs_retrained.png", "generated vs retrained accuracy")  # fmt: skip
    metrics = {"full_flops": full, "networks": table.records(), "spearman": rho, "smallest_budget_gain": gain,
               "search_s": {k: done.times[k] for k in done.times if k.split()[0] in ("evolution", "random")},
               "pruningnet_s": done.times["pruningnet"], "search": res["search"]}  # fmt: skip
    return rep.outcome(metrics)
