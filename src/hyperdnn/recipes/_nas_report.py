"""The ``nas`` recipe's report: per held-out architecture and per group (seen space, deeper,
wider) the accuracy of every method, Kendall's tau with the from-scratch accuracy, the steps
fine-tuning from the GHN's parameters needs, the accuracy bar chart and the fine-tuning curves."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hyperdnn.engine.loop import LoopResult
from hyperdnn.engine.report import Column, Report, Table, bar_chart_figure, learning_curves_figure
from hyperdnn.engine.run import Outcome, RunContext
from hyperdnn.metrics import kendall_tau

if TYPE_CHECKING:
    from hyperdnn.recipes.nas import NASConfig

__all__ = ["GROUPS", "report"]

#: the held-out architectures' groups
GROUPS = ("seen space", "deeper", "wider")


def report(cfg: NASConfig, ctx: RunContext, done: LoopResult) -> Outcome:
    """summary.md: per held-out architecture and per group, the correlations, the curves."""
    held = done.results["heldout"]
    pcol = lambda h, k: Column(h, k, ".1f", scale=100)  # noqa: E731
    table = Table([Column("arch"), Column("group"), Column("architecture", "desc"), pcol("random init (%)", "random_init"),
                   pcol("GHN (%)", "ghn"), pcol("MLP hypernet (%)", "mlp"), pcol("1 epoch SGD (%)", "one_epoch_sgd"),
                   pcol(f"{cfg.train_epochs} epochs SGD (%)", "scratch"), Column("steps, scratch", "steps_scratch"),
                   Column("steps, from GHN", "steps_finetune")])  # fmt: skip
    for key, r in held.items():
        table.add(arch=key, group=r["group"], desc=r["arch"], random_init=r["random_init"], ghn=r["ghn"], mlp=r["mlp"],
                  one_epoch_sgd=r["one_epoch_sgd"], scratch=r["scratch"], steps_scratch=r["steps_scratch"],
                  steps_finetune=r["steps_finetune"])  # fmt: skip
    mean = lambda k, rs: sum(r[k] for r in rs) / len(rs)  # noqa: E731
    groups = {g: [r for r in held.values() if r["group"] == g] for g in GROUPS}
    groups = {"all held out": list(held.values())} | {g: rs for g, rs in groups.items() if rs}
    summary = Table([Column("held out"), Column("n"), pcol("random init (%)", "random_init"), pcol("GHN (%)", "ghn"),
                     pcol("MLP hypernet (%)", "mlp"), pcol("1 epoch SGD (%)", "one_epoch_sgd"),
                     pcol("from scratch (%)", "scratch")])  # fmt: skip
    for g, rs in groups.items():
        summary.add(**{"held out": g, "n": len(rs)}, **{k: mean(k, rs) for k in ("random_init", "ghn", "mlp", "one_epoch_sgd", "scratch")})  # fmt: skip
    rs = list(held.values())
    tau = {k: kendall_tau([r[k] for r in rs], [r["scratch"] for r in rs]) if len(rs) > 1 else None for k in ("ghn", "mlp")}  # fmt: skip
    reached = [r for r in rs if r["steps_finetune"] is not None and r["steps_scratch"]]
    ratio = sum(r["steps_finetune"] / r["steps_scratch"] for r in reached) / len(reached) if reached else None
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [
        f"GHN / one epoch of SGD: {mean('ghn', rs) / mean('one_epoch_sgd', rs):.2f}; GHN - MLP hypernetwork: "
        f"{100 * (mean('ghn', rs) - mean('mlp', rs)):+.1f} points (mean over {len(rs)} held-out architectures)",
        f"Kendall's tau with the from-scratch accuracy: GHN {fmt(tau['ghn'])}, MLP hypernetwork {fmt(tau['mlp'])}",
        f"fine-tuning from the GHN reached the from-scratch accuracy in {len(reached)} of {len(rs)} architectures, "
        f"in {fmt(ratio)} of the steps training from scratch took (mean ratio)",
        f"hypernetwork training: GHN {done.times['ghn']:.0f} s, MLP {done.times['mlp']:.0f} s",
    ]
    for line in lines:
        ctx.log(line)
    rep = Report(ctx, f"nas: a graph hypernetwork on {cfg.data}, seed {ctx.seed}")
    rep.text(
        f"{cfg.train_archs} training architectures (depths {list(cfg.depths)}, widths {list(cfg.widths)}, kernels "
        f"{list(cfg.kernels)}, norms {list(cfg.norms)}, skips with probability {cfg.skip_probability}); held out: "
        f"{cfg.heldout} from that space, {cfg.deeper} deeper ({list(cfg.deep_depths)} cells), {cfg.wider} wider "
        f"(widths {list(cfg.wide_widths)}). Hypernetworks: {cfg.hnet_epochs} epochs, {cfg.archs_per_step} "
        f"architectures per step. SGD: lr {cfg.lr}, momentum 0.9, batch {cfg.batch_size}, {cfg.train_epochs} epochs."
    )
    rep.table(summary)
    rep.text("\n".join(f"- {line}" for line in lines))
    rep.section("Every held-out architecture")
    rep.table(table)
    bars = {g: {"GHN": mean("ghn", v), "MLP hypernet": mean("mlp", v), "1 epoch SGD": mean("one_epoch_sgd", v),
                "from scratch": mean("scratch", v)} for g, v in groups.items()}  # fmt: skip
    rep.figure(bar_chart_figure({g: {k: 100 * v for k, v in b.items()} for g, b in bars.items()},
                                "held-out architectures: test accuracy", "test accuracy (%)", fmt=".1f"),
               "nas_accuracy.png", "accuracy per group")  # fmt: skip
    curves = {"from scratch": [[a for _, a in r["scratch_curve"]] for r in rs], "from GHN": [[a for _, a in r["finetune_curve"]] for r in rs]}  # fmt: skip
    fig = learning_curves_figure(curves, f"held-out architectures (measured every {cfg.eval_every} steps)")
    for ax in fig.axes:  # a point per measurement, not per epoch: 1 before training, then every eval_every steps
        ax.set_xlabel(f"measurement (1: before training, then every {cfg.eval_every} SGD steps)")
        ax.set_title(ax.get_title().replace("every epoch", "every measurement").replace("epochs", "measurements"))
    rep.figure(fig, "nas_finetune.png", "fine-tuning from predicted parameters")
    metrics = {"heldout": held, "groups": summary.records(), "kendall_tau": tau, "steps_ratio": ratio,
               "train_archs_acc": done.results["train_archs_acc"], "hnet_s": {k: done.times[k] for k in ("ghn", "mlp")}}  # fmt: skip
    return rep.outcome(metrics)
