"""The hyperparams recipe's report: validation loss and accuracy at the separate models' values,
the value each method picks and what it is worth, the training times, and the figure."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hyperdnn.engine.loop import LoopResult
from hyperdnn.engine.report import Column, Report, Table, curves_and_points_figure
from hyperdnn.engine.run import Outcome, RunContext

if TYPE_CHECKING:
    from hyperdnn.recipes.hyperparams import HyperparamsConfig

__all__ = ["PICK", "report"]

PICK = "separate at the pick"


def report(cfg: HyperparamsConfig, ctx: RunContext, done: LoopResult) -> Outcome:
    """summary.md (per value, the picks, the times, the plot) and the metrics."""
    from hyperdnn.recipes.hyperparams import separate_values  # the recipe imports this module

    res, grid = done.results, cfg.grid
    hn = res["hypernetwork"]
    sep = [res["separate"][key] for key in separate_values(cfg)]
    at = {v: hn["values"].index(v) for v in grid}
    table = Table(
        [
            Column("lambda", "value", ".3g"),
            Column("val loss, separate", "sep_loss", ".4f"),
            Column("val loss, hypernetwork", "hn_loss", ".4f"),
            Column("difference (%)", "diff", "+.1f", scale=100),
            Column("val acc, separate (%)", "sep_acc", ".1f", scale=100),
            Column("val acc, hypernetwork (%)", "hn_acc", ".1f", scale=100),
        ]
    )
    for v, s in zip(grid, sep):
        h_loss, h_acc = hn["val_loss"][at[v]], hn["val_acc"][at[v]]
        table.add(value=v, sep_loss=s["val_loss"], hn_loss=h_loss, diff=h_loss / s["val_loss"] - 1, sep_acc=s["val_acc"], hn_acc=h_acc)  # fmt: skip
    best_sep = min(sep, key=lambda s: s["val_loss"])
    at_pick = res["separate"][PICK]
    sweep_time = sum(s["train_seconds"] for s in sep)
    picks = Table(
        [
            Column("method"),
            Column("picks lambda", "pick", ".3g"),
            Column("separate model's test acc at the pick (%)", "test_acc", ".1f", scale=100),
            Column("its val acc (%)", "val_acc", ".1f", scale=100),
            Column("training time (CPU s)", "time", ".1f"),
            Column("wall (s)", "wall", ".1f"),
            Column("CPU time vs the sweep (%)", "share", ".0f", scale=100),
        ]
    )
    picks.add(method=f"sweep of {len(grid)} separate models", pick=best_sep["value"], test_acc=best_sep["test_acc"],
              val_acc=best_sep["val_acc"], time=sweep_time, wall=sum(s["wall_seconds"] for s in sep), share=1.0)  # fmt: skip
    picks.add(method="hypernetwork", pick=hn["pick"], test_acc=at_pick["test_acc"], val_acc=at_pick["val_acc"],
              time=hn["train_seconds"], wall=hn["wall_seconds"], share=hn["train_seconds"] / sweep_time)  # fmt: skip
    worst = max(r["diff"] for r in table.rows)
    rep = Report(ctx, f"hyperparams: one hypernetwork for an L2-penalty sweep, seed {ctx.seed}")
    rep.text(
        f"{cfg.data}, {cfg.train_size} training and {cfg.val_size} validation images; MLP "
        f"{'-'.join(map(str, cfg.hidden))}, loss = cross-entropy + lambda * (sum of squared weights, biases not "
        f"penalised); Adam, {cfg.steps} steps per separate model, {cfg.hnet_steps} hypernetwork steps of "
        f"{cfg.values_per_step} log-uniform values on one shared batch; batch "
        f"{cfg.batch_size or 'the whole training set'}. Hypernetwork: trunk {','.join(map(str, cfg.trunk))}, one linear "
        f"output layer, theta(lambda) = theta_0 + delta(lambda) with a learned theta_0, swept over "
        f"{len(hn['values'])} values. Times are training only, in CPU seconds of the run's process (on a quiet "
        "machine with one thread, its wall time) and in wall seconds."
    )
    rep.section("Validation loss and accuracy at the separate models' values")
    rep.table(table)
    rep.text(f"Largest excess of the hypernetwork's validation loss over the separate model's: {100 * worst:+.1f}%.")
    rep.section("The value each picks (lowest validation loss), and what it is worth")
    rep.table(picks)
    panels = {
        "validation loss": {"hypernetwork (swept)": (hn["values"], hn["val_loss"]),
                            "separate models": (grid, [s["val_loss"] for s in sep])},
        "validation accuracy (%)": {"hypernetwork (swept)": (hn["values"], [100 * a for a in hn["val_acc"]]),
                                    "separate models": (grid, [100 * s["val_acc"] for s in sep])},
    }  # fmt: skip
    figure = curves_and_points_figure(
        panels, f"L2 penalty on {cfg.data}: one hypernetwork vs {len(grid)} separate models", "lambda (L2 penalty)",
        ["cross-entropy", "accuracy (%)"], points=["separate models"], logx=True,
    )  # fmt: skip
    rep.figure(figure, "hyperparams.png", "validation loss and accuracy against lambda")
    metrics = {
        "per_value": table.records(),
        "picks": picks.records(),
        "hypernetwork": hn,
        "separate": res["separate"],
        "max_loss_excess": worst,
        "pick_accuracy_gap": best_sep["test_acc"] - at_pick["test_acc"],
        "time_share": hn["train_seconds"] / sweep_time,
        "time_s": {k: round(v, 2) for k, v in done.times.items()},
    }
    return rep.outcome(metrics)
