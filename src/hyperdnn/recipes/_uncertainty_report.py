"""The ``uncertainty`` recipe's measurements and report: its tables, its criteria and its figures.

* :func:`measure_classification`, :func:`measure_regression` - what a trained method's
  predictions score, the numbers the sections below report.
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

import torch

from hyperdnn.data.toy import RegressionToy, toy_function
from hyperdnn.engine.loop import LoopResult
from hyperdnn.engine.report import Column, Report, Table, band_figure, histogram_figure, reliability_figure
from hyperdnn.methods.uncertainty import gaussian_mixture, gaussian_outputs
from hyperdnn.metrics import (
    accuracy,
    brier_score,
    expected_calibration_error,
    mutual_information,
    negative_log_likelihood,
    ood_auroc,
    predictive_entropy,
    reliability_bins,
)

if TYPE_CHECKING:
    from hyperdnn.recipes.uncertainty import MethodWork, UncertaintyConfig

__all__ = ["HYPERNETS", "OOD_SETS", "best_hypernet", "measure_classification", "measure_regression"]
__all__ += ["classification_section", "regression_section"]

HYPERNETS = ("implicit", "bayes", "hnet_dropout")
OOD_SETS = {"classes": "held-out classes", "rotated": "rotated digits", "noise": "noise images"}
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


def _rounded(t: torch.Tensor) -> list[float]:
    return [round(v, 5) for v in t.double().tolist()]


def measure_classification(work: MethodWork, cfg: UncertaintyConfig) -> dict[str, Any]:
    """Accuracy, NLL, ECE, Brier, reliability bins and, per OOD set, the AUROC of predictive
    entropy and of mutual information (``None`` for a single network: it is zero everywhere)."""
    probs = work.predict(work.data.x_test).softmax(-1)
    p, y = probs.mean(0), work.data.y_test
    entropy_in, mi_in = predictive_entropy(probs), mutual_information(probs)
    out: dict[str, Any] = {
        "accuracy": accuracy(p.log(), y),
        "nll": negative_log_likelihood(p, y),
        "ece": expected_calibration_error(p, y, cfg.ece_bins),
        "brier": brier_score(p, y),
        "reliability": reliability_bins(p, y, cfg.ece_bins),
        "entropy": {"in distribution": _rounded(entropy_in)},
        "ood": {},
    }
    for name, x in work.ood.items():
        q = work.predict(x).softmax(-1)
        entropy_out = predictive_entropy(q)
        out["entropy"][OOD_SETS[name]] = _rounded(entropy_out)
        mi = ood_auroc(mi_in, mutual_information(q)) if len(probs) > 1 else None
        out["ood"][name] = {"entropy": ood_auroc(entropy_in, entropy_out), "mutual_information": mi}
    return out


def measure_regression(work: MethodWork, cfg: UncertaintyConfig) -> dict[str, Any]:
    """Test NLL (of the predictive mixture) and RMSE; the 2-sigma band on a grid and its mean
    half-width inside the gap over that where the data are dense."""
    toy: RegressionToy = work.data
    out = work.predict(toy.x_test)
    mean_k, var_k = gaussian_outputs(out)
    y = toy.y_test
    log_pk = -0.5 * (torch.log(2 * torch.pi * var_k) + (y - mean_k).pow(2) / var_k)
    nll = -(torch.logsumexp(log_pk, 0) - torch.log(torch.tensor(float(len(out))))).mean()
    mean, _ = gaussian_mixture(out)
    grid = toy.grid()
    g_mean, g_var = gaussian_mixture(work.predict(grid))
    half = 2 * g_var.sqrt()
    inside = grid[:, 0].abs() < toy.gap
    return {
        "nll": float(nll),
        "rmse": float((mean - y).pow(2).mean().sqrt()),
        "band_gap": float(half[inside].mean()),
        "band_dense": float(half[~inside].mean()),
        "band_ratio": float(half[inside].mean() / half[~inside].mean()),
        "grid_mean": _rounded(g_mean),
        "grid_band": _rounded(half),
    }


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
