"""The report of ``hyperdnn run adapters``: bits per character per method and language, the new
language, the comparisons the recipe is measured by, and the bar chart.

Example::

    >>> from hyperdnn.recipes._adapters_report import LABELS, UNITS
    >>> [LABELS[k] for k in UNITS[:2]]
    ['shared model alone', 'shared model + language token']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hyperdnn.engine.report import Column, Report, Table, bar_chart_figure
from hyperdnn.engine.run import Outcome, RunContext

if TYPE_CHECKING:
    from hyperdnn.recipes.adapters import AdaptersConfig

__all__ = ["UNITS", "LABELS", "report"]

UNITS = ("shared", "token", "adapters", "hnet", "separate", "new/adapter", "new/hnet")
LABELS = {
    "shared": "shared model alone",
    "token": "shared model + language token",
    "adapters": "one adapter per language",
    "hnet": "hypernetwork adapters",
    "separate": "separate model per language",
    "new/adapter": "ordinary adapter, fine-tuned",
    "new/hnet": "hypernetwork, new embedding only",
}


def report(cfg: AdaptersConfig, ctx: RunContext, res: dict[str, Any], times: Mapping[str, float]) -> Outcome:
    """summary.md: bits per character per method and language, the new language, the checks."""
    langs, bpc, params = cfg.languages, res["bpc"], res["params"]
    mean = {k: sum(bpc[k][x] for x in langs) / len(langs) for k in UNITS[:5]}
    rep = Report(ctx, f"adapters: {len(langs)} languages, new language {cfg.new_language}, seed {ctx.seed}")
    rep.text(
        f"A character transformer (width {cfg.width}, {cfg.layers} blocks, {cfg.heads} heads, feed-forward "
        f"{cfg.hidden}) trained from scratch on {cfg.train_words} words per language ({cfg.pretrain_epochs} "
        f"epochs), then frozen. Adapters (bottleneck {cfg.bottleneck}) in {', '.join(cfg.adapt)}; every method "
        f"on top of the shared model trains {cfg.adapt_epochs} epochs. Hypernetwork: language embedding "
        f"{cfg.lang_dim}, trunk {cfg.trunk}, LowRank head (rank {cfg.rank or 'full'}, layer embedding "
        f"{cfg.layer_dim}, hidden {cfg.gen_hidden}). Bits per character on {cfg.test_words} held-out words per "
        "language (the end of the word counts as a character). Adam learning rates: shared and separate models "
        f"{cfg.lr}, language tokens and adapters {cfg.adapt_lr}, hypernetwork {cfg.hnet_lr}, new language {cfg.new_lr}."
    )
    cols = [Column("method"), Column("mean bpc", "mean", ".3f")]
    cols += [Column(x, f"bpc_{x}", ".3f") for x in langs]
    cols += [Column("parameters per language", "per_language", ","), Column("trained parameters", "trained", ","),
             Column("time (s)", "time", ".0f")]  # fmt: skip
    table = Table(cols)
    for k in UNITS[:5]:
        table.add(method=LABELS[k], mean=mean[k], **{f"bpc_{x}": bpc[k][x] for x in langs}, **params[k], time=times[k])
    rep.section("Bits per character on held-out words")
    rep.table(table)
    new = Table([Column("method"), Column(f"bpc ({cfg.new_language})", "bpc", ".3f"), Column("started from", "start"),
                 Column("trained parameters", "trained", ","), Column("time (s)", "time", ".1f")])  # fmt: skip
    new.add(method="shared model alone (no adaptation)", bpc=bpc["shared"][cfg.new_language], start="n/a", trained=0, time=0.0)  # fmt: skip
    for k in ("new/adapter", "new/hnet"):
        new.add(method=LABELS[k], bpc=bpc[k][cfg.new_language], start=f"{res['new_start'][k]}'s adapters",
                trained=params[k]["trained"], time=times[k])  # fmt: skip
    rep.section(f"A new language ({cfg.new_language}) from {cfg.new_words} words")
    rep.table(new)
    checks = {
        "hnet_vs_adapters": mean["hnet"] / mean["adapters"] - 1,
        "hnet_params_vs_adapters": params["hnet"]["trained"] / params["adapters"]["trained"],
        "hnet_vs_token": mean["hnet"] - mean["token"],
        "new_hnet_vs_adapter": bpc["new/hnet"][cfg.new_language] - bpc["new/adapter"][cfg.new_language],
    }
    rep.section("Against the targets")
    rep.text(
        f"- hypernetwork vs one adapter per language: {100 * checks['hnet_vs_adapters']:+.2f}% bits per character "
        f"(target: within 1%) with {100 * checks['hnet_params_vs_adapters']:.1f}% of their trained parameters "
        "(target: at most 25%)",
        f"- hypernetwork vs the language token: {checks['hnet_vs_token']:+.4f} bits per character (target: below 0)",
        f"- new language, hypernetwork embedding vs fine-tuned adapter: {checks['new_hnet_vs_adapter']:+.4f} bits "
        "per character (target: below 0)",
    )
    values = {x: {LABELS[k]: bpc[k][x] for k in UNITS[:5]} for x in langs}
    rep.figure(bar_chart_figure(values, "bits per character on held-out words", "bits per character", zoom=True),
               "bpc.png", "bits per character per language")  # fmt: skip
    metrics = {"bpc": bpc, "mean_bpc": mean, "parameters": params, "new_start": res["new_start"], "checks": checks,
               "time_s": dict(times)}  # fmt: skip
    return rep.outcome(metrics)
