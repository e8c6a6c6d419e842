"""The ``uncertainty`` recipe's report: its tables, its criteria and its figures.

* :func:`classification_section` - calibration (accuracy, NLL, ECE, Brier) and OOD AUROC tables,
  the issue's held-out-classes criteria, reliability diagrams and entropy histograms.
* :func:`regression_section` - the regression toy's table, the band criterion and the bands.

Each adds its part to the :class:`~hyperdnn.engine.report.Report` and returns the metrics that
go into results.json.

Example::

    >>> best_hypernet({"implicit": 0.88, "bayes": 0.9, "single": 0.95})
    'bayes'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hyperdnn.data.toy import RegressionToy, toy_function
from hyperdnn.engine.loop import LoopResult
from hyperdnn.engine.report import Column, Report, Table, band_figure, histogram_figure, reliability_figure

if TYPE_CHECKING:
    from hyperdnn.recipes.uncertainty import UncertaintyConfig

__all__ = ["HYPERNETS", "best_hypernet", "classification_section", "regression_section"]

HYPERNETS = ("implicit", "bayes", "hnet_dropout")
LABELS = {
    "single": "single network",
    "mc_dropout": "MC dropout (target)",
    "ensemble": "deep ensemble",
    "implicit": "implicit hypernet (noise)",
    "bayes": "Bayesian hypernet (flow)",
    "hnet_dropout": "hypernet dropout",
}


def best_hypernet(scores: Mapping[str, float]) -> str | None:
    """The hypernetwork method with the highest score (``None``: none of them ran)."""
    ran = [m for m in HYPERNETS if m in scores and scores[m] is not None]
    return max(ran, key=lambda m: scores[m]) if ran else None


def _label(method: str, cfg: UncertaintyConfig) -> str:
    return f"deep ensemble ({cfg.members})" if method == "ensemble" else LABELS[method]


def classification_section(rep: Report, cfg: UncertaintyConfig, done: LoopResult) -> dict[str, Any]:
    """Tables, criteria and figures of the classification task; returns its metrics."""
    res, params, times = done.results["classification"], done.results["params"], done.times
    methods = [m for m in cfg.methods if m in res]
    ensemble_params = params.get("classification/ensemble")
    rep.section(f"Classification: {cfg.data}, classes 0-{cfg.classes - 1}")
    calib = Table(
        [
            Column("method"),
            Column("accuracy (%)", "accuracy", ".2f", scale=100),
            Column("NLL", "nll", ".4f"),
            Column("ECE", "ece", ".4f"),
            Column("Brier", "brier", ".4f"),
            Column("trainable parameters", "params", ","),
            Column("x ensemble", "ratio", ".2f"),
            Column("training time (s)", "time", ".1f"),
        ]
    )
    ood = Table(
        [Column("method")]
        + [
            Column(f"{name} AUROC ({score})", f"{name}/{score}", ".4f")
            for name in cfg.ood_sets
            for score in ("entropy", "MI")
        ]  # fmt: skip
    )
    out: dict[str, Any] = {}
    for m in methods:
        r, key = res[m], f"classification/{m}"
        ratio = params[key] / ensemble_params if ensemble_params else None
        row = {k: r[k] for k in ("accuracy", "nll", "ece", "brier")}
        calib.add(method=_label(m, cfg), **row, params=params[key], ratio=ratio, time=times[key])
        cells = {f"{n}/{s}": r["ood"][n][v] for n in cfg.ood_sets for s, v in (("entropy", "entropy"), ("MI", "mutual_information"))}  # fmt: skip
        ood.add(method=_label(m, cfg), **cells)
        out[m] = {**row, "ood": r["ood"], "reliability": r["reliability"], "params": params[key]}
    rep.table(calib)
    rep.text("Out-of-distribution detection: AUROC of the predictive entropy and of the mutual information "
             "(MI is zero for a single network: n/a).")  # fmt: skip
    rep.table(ood)
    criteria = _criteria(res, params, cfg)
    if criteria is not None:
        rep.text(criteria.pop("text"))
        out["criteria"] = criteria
    rep.figure(
        reliability_figure({_label(m, cfg): res[m]["reliability"] for m in methods}, "reliability diagrams"),
        "reliability.png",
        "reliability diagrams",
    )
    entropies = {_label(m, cfg): res[m]["entropy"] for m in methods}
    title = "predictive entropy in and out of distribution"
    rep.figure(histogram_figure(entropies, title, "predictive entropy (nats)"), "entropy.png", title)
    return out


def _criteria(res: Mapping[str, Any], params: Mapping[str, int], cfg: UncertaintyConfig) -> dict[str, Any] | None:
    """The issue's held-out-classes criteria for the best hypernetwork (by entropy AUROC)."""
    if "classes" not in cfg.ood_sets or not {"single", "mc_dropout", "ensemble"} <= set(res):
        return None
    auroc = {m: r["ood"]["classes"]["entropy"] for m, r in res.items()}
    best = best_hypernet(auroc)
    if best is None:
        return None
    ens = params["classification/ensemble"]
    checks = {
        "within 0.03 of the ensemble": auroc[best] >= auroc["ensemble"] - 0.03,
        "above the single network": auroc[best] > auroc["single"],
        "above MC dropout": auroc[best] > auroc["mc_dropout"],
        "at most half the ensemble's parameters": params[f"classification/{best}"] <= ens / 2,
        "ECE below the single network's": res[best]["ece"] < res["single"]["ece"],
    }
    text = (
        f"**Held-out classes, best hypernetwork: {LABELS[best]}**, entropy AUROC {auroc[best]:.4f} "
        f"(deep ensemble {auroc['ensemble']:.4f}, single {auroc['single']:.4f}, MC dropout {auroc['mc_dropout']:.4f}), "
        f"{params[f'classification/{best}']:,} parameters ({params[f'classification/{best}'] / ens:.2f}x the ensemble's), "
        f"ECE {res[best]['ece']:.4f} (single {res['single']['ece']:.4f}). "
        + "; ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in checks.items())
    )
    return {"best": best, "checks": checks, "text": text}


def regression_section(rep: Report, cfg: UncertaintyConfig, done: LoopResult, toy: RegressionToy) -> dict[str, Any]:
    """Table, band criterion and figure of the regression toy; returns its metrics."""
    res, params, times = done.results["regression"], done.results["params"], done.times
    methods = [m for m in cfg.methods if m in res]
    rep.section("Regression toy: a gap in the inputs, input-dependent noise")
    rep.text(
        f"{cfg.reg_points} training points in [{toy.low:g}, -{toy.gap:g}] and [{toy.gap:g}, {toy.high:g}]; "
        "y = sin(x) + 0.1 x^2 + (0.03 + 0.05 |x|) e. Each member predicts a mean and a variance; the predictive "
        "band is the mixture's mean ± 2 standard deviations. Band ratio: its mean half-width inside the gap over "
        "that where the data are dense."
    )
    table = Table(
        [
            Column("method"),
            Column("test NLL", "nll", ".3f"),
            Column("RMSE", "rmse", ".3f"),
            Column("2-sd band in the gap", "band_gap", ".3f"),
            Column("2-sd band, dense", "band_dense", ".3f"),
            Column("ratio", "band_ratio", ".2f"),
            Column("trainable parameters", "params", ","),
            Column("training time (s)", "time", ".1f"),
        ]
    )
    out: dict[str, Any] = {}
    for m in methods:
        r, key = res[m], f"regression/{m}"
        row = {k: r[k] for k in ("nll", "rmse", "band_gap", "band_dense", "band_ratio")}
        table.add(method=_label(m, cfg), **row, params=params[key], time=times[key])
        out[m] = {**row, "params": params[key]}
    rep.table(table)
    hnets = [m for m in HYPERNETS if m in res]
    if hnets:
        mean_ratio = sum(res[m]["band_ratio"] for m in hnets) / len(hnets)
        wide = [LABELS[m] for m in hnets if res[m]["band_ratio"] >= 2]
        rep.text(
            f"Hypernetwork methods: mean band ratio {mean_ratio:.2f} (at least 2 for: {', '.join(wide) or 'none'})."
        )
        out["hypernet_mean_band_ratio"] = mean_ratio
    grid = toy.grid()[:, 0]
    bands = {_label(m, cfg): (res[m]["grid_mean"], res[m]["grid_band"]) for m in methods}
    data = (toy.x_train[:, 0].tolist(), toy.y_train.tolist())
    figure = band_figure(grid.tolist(), bands, "predictive mean ± 2 sd", data, toy_function(grid).tolist(), (-toy.gap, toy.gap))  # fmt: skip
    rep.figure(figure, "regression.png", "the regression toy's predictive bands")
    return out
