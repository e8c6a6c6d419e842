"""Treatment effects from hypernetwork-generated outcome models (HyperITE, Chauhan et al., AISTATS
2024) against the meta-learners people use.

A T-learner fits one outcome network per treatment arm and shares nothing; an S-learner shares
everything. HyperITE lets one hypernetwork generate every arm's network from a learned arm
embedding (soft weight sharing, :mod:`hyperdnn.methods.hyperite`). This recipe runs the four
HyperITE learners (HyperS, HyperT, HyperTARNet, HyperDR) beside their plain PyTorch
counterparts with the same target architectures (:mod:`hyperdnn.baselines.meta_learners`),
EconML's S-, T-, X- and DR-learners with gradient boosting and a linear-regression T-learner
(:mod:`hyperdnn.baselines.econml_learners`), on the same splits of the same data:

* IHDP (Hill 2011, response surface B, :mod:`hyperdnn.data.ihdp`): ``--replications``
  replications, each split into train and test (``--test_fraction`` of each arm held out);
* a sample-size sweep on a Nie-Wager setup (:mod:`hyperdnn.data.nie_wager`): per replication
  one sample whose first ``n`` units train (``--sizes``) and whose last ``--test_units`` units
  test, so every size is scored on the same units.

It reports sqrt(PEHE) and the absolute ATE error on the test units (mean and standard error over
replications), the paired win rate of each hypernetwork learner against its plain counterpart,
sqrt(PEHE) against sample size per method, trainable parameters and time; it saves the
HyperT-learner of the last IHDP replication (``model.safetensors``, see :func:`build_model`).

The story below: the config; the data; the methods; the loop (a unit per method and setting,
a replication per epoch, so a resumed run continues after the last finished replication); the
report.

Example (the units of a small plan)::

    >>> from hyperdnn.recipes.causal import CausalConfig, plan
    >>> [u.key for u in plan(CausalConfig(methods=("hyper_t", "t_learner"), sizes=(250,), sweep_replications=2))]
    ['ihdp/hyper_t', 'ihdp/t_learner', 'n=250/hyper_t', 'n=250/t_learner']

Run::

    hyperdnn run causal                  # IHDP x 20 and the sweep on Nie-Wager A (n = 250 ... 2000)
    hyperdnn run causal --quick          # a smoke run in well under a minute
    hyperdnn run causal --sweep_data nw-d --methods hyper_t,t_learner,econml_t
    hyperdnn run causal --ihdp_file ihdp_npci_1-100.train.npz   # IHDP replications of Shalit et al.

Needs ``pip install 'hyperdnn[apps,causal]'`` (EconML). Expected (one thread on a 2-core
machine; docs/causal.md has the tables of seeds 0 and 1): the default run takes 9.5-10 minutes.
HyperT and HyperTARNet train with a prior that pulls the arms' generated networks to their
mean, weighted ``0.7 * s2 / n`` (``--arm_prior 0.7 --arm_prior_noise true``: ``s2`` a kernel
ridge estimate of the outcome noise, ``n`` the training units), and every hypernetwork learner
with hypernet dropout 0.15 and weight decay 1e-3 (``--hnet_dropout``, ``--hnet_weight_decay``).
On IHDP HyperT's sqrt(PEHE) is then 0.87 and 0.85 times the plain T-learner's (seeds 0 and 1;
1.138 against 1.310 on seed 0, 90% of the replications won), and on the Nie-Wager A sweep its
gain over the T-learner is larger at n = 250 than at 2000 (+28.3% against +26.9% on seed 0,
+32.4% against +24.7% on seed 1). ``--arm_prior 0 --hnet_dropout 0.05`` gives the earlier
default (IHDP 0.90 times, the sweep's order reversed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hyperdnn.baselines.econml_learners import ECONML_LEARNERS, EconMLLearner
from hyperdnn.baselines.meta_learners import DRLearner, SLearner, TARNet, TLearner
from hyperdnn.data.causal import CausalSample, get_benchmark, list_benchmarks, split_units
from hyperdnn.data.ihdp import IHDP, load_ihdp_npz
from hyperdnn.engine.config import apply_preset, option
from hyperdnn.engine.errors import CheckpointError, UsageError
from hyperdnn.engine.loop import LoopResult, Unit, Work, resumable, run_units
from hyperdnn.engine.model import info_sizes
from hyperdnn.engine.registry import Recipe, register_recipe
from hyperdnn.engine.report import Column, Report, Table, bar_chart_figure, line_chart_figure
from hyperdnn.engine.run import Outcome, RunContext
from hyperdnn.methods.hyperite import HEADS, HyperDRLearner, HypernetOptions, HyperSLearner, HyperTARNet, HyperTLearner
from hyperdnn.methods.treatment_effect import TrainOptions
from hyperdnn.metrics.causal import ate_error, mean_se, paired_win_rate, sqrt_pehe

__all__ = ["CausalConfig", "METHODS", "PAIRS", "plan", "make_estimator", "run_causal", "build_model", "RECIPE"]

#: every method: key -> what it is
METHODS = {
    "hyper_s": "HyperS-learner (hypernetwork, one embedding)",
    "hyper_t": "HyperT-learner (hypernetwork, an embedding per arm)",
    "hyper_tarnet": "HyperTARNet (generated heads)",
    "hyper_dr": "HyperDR-learner (hypernetwork first stage)",
    "s_learner": "S-learner (PyTorch MLP)",
    "t_learner": "T-learner (PyTorch MLP per arm)",
    "tarnet": "TARNet (PyTorch)",
    "dr_learner": "DR-learner (PyTorch first stage)",
    **{f"econml_{k}": v for k, v in ECONML_LEARNERS.items() if k != "linear_t"},
    "linear_t": ECONML_LEARNERS["linear_t"],
}
#: each hypernetwork learner's plain counterpart (same target architecture, same training)
PAIRS = {"hyper_s": "s_learner", "hyper_t": "t_learner", "hyper_tarnet": "tarnet", "hyper_dr": "dr_learner"}
QUICK = {"replications": 3, "sizes": (100, 400), "sweep_replications": 2, "test_units": 300, "max_epochs": 40,
         "methods": ("hyper_t", "t_learner", "hyper_dr", "econml_t", "linear_t")}  # fmt: skip


# ====================================================================== the config
@dataclass
class CausalConfig:
    """Options of ``hyperdnn run causal`` (see ``hyperdnn run causal --help``)."""

    replications: int = option(20, "IHDP replications (replication r of seed s is EconML's random_state s*R + r)", low=1)  # fmt: skip
    ihdp_file: str = option(
        "", "an IHDP .npz of Shalit et al. (x, t, yf, mu0, mu1): its first R replications instead of the rebuild"
    )
    test_fraction: float = option(0.2, "share of each arm held out as the IHDP test units", above=0, below=1)
    sweep_data: str = option("nw-a", "benchmark of the sample-size sweep: nw-a, nw-b, nw-c, nw-d (Nie-Wager setups)")
    sizes: tuple[int, ...] = option((250, 500, 1000, 2000), "training sizes of the sweep", low=20, distinct=True)
    sweep_replications: int = option(5, "replications per sweep size (0: no sweep)", low=0)
    test_units: int = option(1000, "test units of each sweep replication", low=10)
    methods: tuple[str, ...] = option(tuple(METHODS), "methods to run", choices=tuple(METHODS), nonempty=True, distinct=True)  # fmt: skip
    # the networks (a hypernetwork's target is its plain counterpart's network)
    hidden: tuple[int, ...] = option((64, 64), "hidden widths of the S-, T- and DR-learners' MLPs", low=1, nonempty=True)  # fmt: skip
    representation: tuple[int, ...] = option((64,), "TARNet's shared representation", low=1, nonempty=True)
    heads: tuple[int, ...] = option((64,), "hidden widths of TARNet's per-arm heads", low=1)
    embed_dim: int = option(8, "arm embedding width (HyperS: its one embedding)", low=1)
    hnet_hidden: tuple[int, ...] = option((64, 64), "hidden widths of the hypernetwork's trunk", low=1, nonempty=True)  # fmt: skip
    hnet_dropout: float = option(0.15, "hypernet dropout (after each trunk layer)", low=0, below=1)
    head: str = option("once", "output strategy: once (one linear head) or chunked", choices=HEADS)
    chunk_size: int = option(256, "numbers per chunk of the chunked head", low=1)
    shared_base: float = option(0.0, "0: weights fully generated; s > 0: a learned base shared by the arms + s * generated", low=0)  # fmt: skip
    spectral_norm: bool = option(False, "spectral normalisation in the hypernetwork's trunk")
    arm_prior: float = option(0.7, "HyperT, HyperTARNet: a Gaussian prior pulling the arms' generated networks to their mean, weight arm_prior / n (0: none)", low=0)  # fmt: skip
    arm_prior_noise: bool = option(True, "scale the arm prior's weight by the outcome noise s2 (the leave-one-out error of per-arm kernel ridge regressions on the standardised training outcome): arm_prior * s2 / n")  # fmt: skip
    # training (every neural learner the same)
    lr: float = option(3e-3, "Adam learning rate of the plain networks", above=0)
    hnet_lr: float = option(3e-3, "Adam learning rate of the hypernetwork learners", above=0)
    weight_decay: float = option(0.0, "Adam weight decay of the plain networks", low=0)
    hnet_weight_decay: float = option(1e-3, "Adam weight decay of the hypernetwork learners (every parameter they train)", low=0)  # fmt: skip
    max_epochs: int = option(1000, "most epochs (full-batch steps) per network", low=1)
    patience: int = option(100, "epochs without a better validation loss before stopping", low=1)
    val_fraction: float = option(0.2, "share of each arm's training units for early stopping", above=0, below=1)
    dr_folds: int = option(2, "cross-fitting folds of the DR-learners' first stage", low=1)
    dr_clip: float = option(0.05, "propensity clip of the DR-learners' pseudo-outcomes", low=0, below=0.5)
    quick: bool = option(False, f"a smoke run: {', '.join(f'{k} {v}' for k, v in QUICK.items())}")

    def __post_init__(self) -> None:
        if self.quick:  # the preset's values win over the command line
            apply_preset(self, QUICK, keep_given=False)
        if self.sweep_replications and self.sweep_data not in list_benchmarks():
            raise ValueError(f"--sweep_data: expected a benchmark, one of {list_benchmarks()}, got {self.sweep_data!r}")


def settings(cfg: CausalConfig) -> dict[str, int]:
    """The run's settings, key -> replications: ``"ihdp"``, then ``"n=250"`` ... of the sweep."""
    sweep = {f"n={n}": cfg.sweep_replications for n in cfg.sizes} if cfg.sweep_replications else {}
    return {"ihdp": cfg.replications, **sweep}


# ====================================================================== the data
def ihdp_replication(cfg: CausalConfig, seed: int, r: int) -> tuple[CausalSample, CausalSample]:
    """Train and test units of IHDP replication ``r`` of the run's ``seed``."""
    rep = seed * cfg.replications + r
    sample = load_ihdp_npz(cfg.ihdp_file, r) if cfg.ihdp_file else IHDP.draw(rep)  # a file: its first R
    train, test = split_units(sample.t, cfg.test_fraction, seed=rep)
    return sample.take(train), sample.take(test)


def sweep_replication(cfg: CausalConfig, seed: int, r: int, n: int) -> tuple[CausalSample, CausalSample]:
    """The first ``n`` units (train) and the last ``test_units`` (test) of sweep replication ``r``."""
    sample = get_benchmark(cfg.sweep_data).draw(seed * cfg.sweep_replications + r, max(cfg.sizes) + cfg.test_units)
    return sample.take(np.arange(n)), sample.take(np.arange(sample.n - cfg.test_units, sample.n))


def replication(cfg: CausalConfig, seed: int, setting: str, r: int) -> tuple[CausalSample, CausalSample]:
    """Train and test units of replication ``r`` of ``setting`` (a key of :func:`settings`)."""
    if setting == "ihdp":
        return ihdp_replication(cfg, seed, r)
    return sweep_replication(cfg, seed, r, int(setting.removeprefix("n=")))


# ====================================================================== the methods
def make_estimator(cfg: CausalConfig, method: str, seed: int) -> Any:
    """The estimator ``method`` (a key of :data:`METHODS`), seeded: ``fit(X, T, Y).effect(X)``."""
    if method.startswith("econml_") or method == "linear_t":
        return EconMLLearner(method.removeprefix("econml_"), seed)
    plain = TrainOptions(cfg.lr, cfg.weight_decay, cfg.max_epochs, 0, cfg.val_fraction, cfg.patience, seed)
    hyper = replace(plain, lr=cfg.hnet_lr, weight_decay=cfg.hnet_weight_decay)
    hnet = HypernetOptions(
        embed_dim=cfg.embed_dim, hidden=cfg.hnet_hidden, dropout=cfg.hnet_dropout, head=cfg.head,
        chunk_size=cfg.chunk_size, shared_base=cfg.shared_base, spectral_norm=cfg.spectral_norm,
    )  # fmt: skip
    hidden, tarnet = cfg.hidden, (cfg.representation, cfg.heads)
    return {
        "hyper_s": lambda: HyperSLearner(hidden, hnet, hyper),
        "hyper_t": lambda: HyperTLearner(hidden, hnet, hyper, cfg.arm_prior, cfg.arm_prior_noise),
        "hyper_tarnet": lambda: HyperTARNet(*tarnet, hnet, hyper, cfg.arm_prior, cfg.arm_prior_noise),
        "hyper_dr": lambda: HyperDRLearner(hidden, hnet, cfg.dr_folds, cfg.dr_clip, hyper),
        "s_learner": lambda: SLearner(hidden, plain),
        "t_learner": lambda: TLearner(hidden, plain),
        "tarnet": lambda: TARNet(*tarnet, plain),
        "dr_learner": lambda: DRLearner(hidden, cfg.dr_folds, cfg.dr_clip, plain),
    }[method]()


# ====================================================================== the loop
def plan(cfg: CausalConfig) -> list[Unit]:
    """A unit per setting and method (``"ihdp/hyper_t"``, ``"n=250/t_learner"``), one stage whose
    epochs are the setting's replications."""
    return [Unit(f"{s}/{m}", ("",), reps) for s, reps in settings(cfg).items() for m in cfg.methods]


class ReplicationWork(Work):
    """One method on one setting: each epoch fits replication ``epoch`` and scores it on its
    test units. Every method of a replication gets the same data and the same seed."""

    def __init__(self, ctx: RunContext, cfg: CausalConfig, unit: Unit):
        self.ctx, self.cfg, self.key = ctx, cfg, unit.key
        self.setting, self.method = unit.key.split("/")
        self.scores: dict[str, list[float]] = {"sqrt_pehe": [], "ate_error": []}
        self.params: int | None = None

    def start_stage(self, stage: int, fresh: bool) -> None:
        return None  # each fit builds its own optimizer

    def steps(self, stage: int) -> int:
        return 1

    def train_epoch(self, stage: int, epoch: int, tick) -> dict[str, float]:
        train, test = replication(self.cfg, self.ctx.seed, self.setting, epoch)
        seed = self.ctx.derive_seed("fit", self.setting, epoch) % 2**31
        self.estimator = make_estimator(self.cfg, self.method, seed).fit(train.x, train.t, train.y)
        tau = self.estimator.effect(test.x)
        self.scores["sqrt_pehe"].append(sqrt_pehe(tau, test.tau))
        self.scores["ate_error"].append(ate_error(tau, test.tau))
        self.params = self.estimator.num_parameters()
        tick()
        return {"sqrt_pehe": self.scores["sqrt_pehe"][-1]}

    def end_stage(self, stage: int, results: dict[str, Any]) -> str:
        results.setdefault(self.setting, {})[self.method] = {**self.scores, "params": self.params}
        mean, se = mean_se(self.scores["sqrt_pehe"])
        return f"sqrt(PEHE) {mean:.3f} +- {se:.3f}"

    def end_unit(self, results: dict[str, Any]) -> None:
        if self.key == "ihdp/hyper_t":  # the last replication's HyperT-learner
            est = self.estimator
            info = {"features": est.features_, "arms": est.arms_, **{k: np.asarray(v).tolist() for k, v in est.scaling_.items()}}  # fmt: skip
            path = self.ctx.save_model(est.model_, "model", info)
            self.ctx.log(f"saved the HyperT-learner of the last IHDP replication: {path}")

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {}, {"scores": self.scores, "params": self.params}

    def load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        scores = meta["scores"]
        if sorted(scores) != sorted(self.scores) or len(set(map(len, scores.values()))) != 1:
            raise ValueError(f"expected scores {sorted(self.scores)} of one length, got {scores}")
        self.scores, self.params = {k: list(v) for k, v in scores.items()}, meta["params"]


def run_causal(cfg: CausalConfig, ctx: RunContext) -> Outcome:
    """The ``causal`` recipe: every method on every replication of every setting, then the report."""
    units = plan(cfg)
    ctx.log(
        f"IHDP: {cfg.replications} replications ({Path(cfg.ihdp_file).name if cfg.ihdp_file else 'rebuilt'}); "
        f"sweep on {cfg.sweep_data}: sizes {list(cfg.sizes)} x {cfg.sweep_replications} replications; "
        f"methods {', '.join(cfg.methods)}"
    )
    done = run_units(ctx, units, lambda u: ReplicationWork(ctx, cfg, u), {}, checkpoint_every=1)
    return report(cfg, ctx, done)


# ====================================================================== the report
def _pm(value: Any) -> str:
    return "n/a" if value is None else f"{value[0]:.3f} ± {value[1]:.3f}"


def report(cfg: CausalConfig, ctx: RunContext, done: LoopResult) -> Outcome:
    """summary.md (tables and two figures) and results.json's metrics."""
    res, reps = done.results, settings(cfg)
    rep = Report(ctx, f"causal: HyperITE against the meta-learners, seed {ctx.seed}")
    rep.text(
        f"Outcome networks: MLP {'-'.join(map(str, cfg.hidden))} (S-, T-, DR-learners), TARNet representation "
        f"{'-'.join(map(str, cfg.representation))}, heads {'-'.join(map(str, cfg.heads)) or 'linear'}; the hypernetwork "
        f"learners generate exactly these networks from arm embeddings of {cfg.embed_dim} (trunk "
        f"{'-'.join(map(str, cfg.hnet_hidden))}, dropout {cfg.hnet_dropout}, {cfg.head} head, shared base "
        f"{cfg.shared_base}, spectral norm {'on' if cfg.spectral_norm else 'off'}, arm prior {cfg.arm_prior}{' x noise' if cfg.arm_prior_noise else ''}). Full-batch Adam (lr {cfg.lr}, "
        f"hypernetworks {cfg.hnet_lr}; weight decay {cfg.weight_decay}, hypernetworks {cfg.hnet_weight_decay}), early stopping on {cfg.val_fraction:.0%} of "
        f"each arm's training units (patience {cfg.patience}, at most {cfg.max_epochs} epochs); DR-learners "
        f"{cfg.dr_folds}-fold cross-fitted, propensities clipped at {cfg.dr_clip}. EconML learners: scikit-learn "
        "gradient boosting (100 trees, depth 3) for outcomes and effects, EconML's logistic propensity models.",
        "sqrt(PEHE) and the absolute error of the ATE on the test units: mean ± standard error over replications. "
        "Win rate: share of replications where the hypernetwork learner's sqrt(PEHE) is below its plain "
        "counterpart's on the same data.",
    )
    metrics: dict[str, Any] = {"settings": {}, "time_s": {k: round(v, 2) for k, v in done.times.items()}}
    for setting, n_reps in reps.items():
        scores = res.get(setting, {})
        title = f"IHDP: {n_reps} replications, test {cfg.test_fraction:.0%} of each arm" if setting == "ihdp" else (
            f"{cfg.sweep_data}, {setting} training units: {n_reps} replications, {cfg.test_units} test units")  # fmt: skip
        table = Table([
            Column("method"), Column("what"), Column("sqrt(PEHE)", "pehe", _pm), Column("abs. ATE error", "ate", _pm),
            Column("win rate vs plain", "win", ".0%"), Column("parameters", "params", ","), Column("time per fit (s)", "time", ".2f"),
        ])  # fmt: skip
        summary = {}
        for m in cfg.methods:
            s = scores[m]
            pair = PAIRS.get(m)
            win = paired_win_rate(s["sqrt_pehe"], scores[pair]["sqrt_pehe"]) if pair in scores else None
            row = {"pehe": mean_se(s["sqrt_pehe"]), "ate": mean_se(s["ate_error"]), "win": win, "params": s["params"]}
            row["time"] = done.times[f"{setting}/{m}"] / n_reps
            table.add(method=m, what=METHODS[m], **row)
            summary[m] = {**row, "sqrt_pehe": s["sqrt_pehe"], "ate_error": s["ate_error"]}
        rep.section(title)
        rep.table(table)
        metrics["settings"][setting] = summary
    ihdp = metrics["settings"]["ihdp"]
    if "hyper_t" in ihdp and "t_learner" in ihdp:
        ratio = ihdp["hyper_t"]["pehe"][0] / ihdp["t_learner"]["pehe"][0]
        metrics["hyper_t_vs_t_learner"] = {"ihdp_ratio": ratio, "ihdp_win_rate": ihdp["hyper_t"]["win"]}
        rep.text(f"IHDP: HyperT's mean sqrt(PEHE) is {ratio:.2f} times the plain T-learner's; it wins "
                 f"{ihdp['hyper_t']['win']:.0%} of the paired replications.")  # fmt: skip
    bars = {m: {"sqrt(PEHE)": ihdp[m]["pehe"][0]} for m in cfg.methods}
    se = {m: float(np.nan_to_num(ihdp[m]["pehe"][1])) for m in cfg.methods}  # one replication: no s.e., 0
    errs = {m: {"sqrt(PEHE)": v} for m, v in se.items()}
    rep.figure(bar_chart_figure(bars, "IHDP: sqrt(PEHE) per method (± s.e.)", "sqrt(PEHE)", errs), "ihdp.png", "IHDP")
    sweep = [s for s in reps if s != "ihdp"]
    if sweep:
        sizes = [int(s.removeprefix("n=")) for s in sweep]
        lines = {m: (sizes, [metrics["settings"][s][m]["pehe"][0] for s in sweep]) for m in cfg.methods}
        fig = line_chart_figure(lines, f"{cfg.sweep_data}: sqrt(PEHE) against sample size", "training units",
                                "sqrt(PEHE)", logx=True, dashed=[m for m in cfg.methods if not m.startswith("hyper")])  # fmt: skip
        rep.figure(fig, "sweep.png", "sqrt(PEHE) against sample size")
        if "hyper_t" in cfg.methods and "t_learner" in cfg.methods:
            gains = {s: 1 - metrics["settings"][s]["hyper_t"]["pehe"][0] / metrics["settings"][s]["t_learner"]["pehe"][0] for s in sweep}  # fmt: skip
            metrics["hyper_t_vs_t_learner"] = {**metrics.get("hyper_t_vs_t_learner", {}), "sweep_gain": gains}
            rep.text("Sweep: HyperT's gain over the plain T-learner (1 - ratio of mean sqrt(PEHE)): "
                     + ", ".join(f"{s}: {g:+.1%}" for s, g in gains.items()) + ".")  # fmt: skip
    return rep.outcome(metrics)


# ====================================================================== checks, the saved model and registration
def check_config(cfg: CausalConfig) -> None:
    """Refuse, before anything is written, what the run cannot do: a missing IHDP file, one with
    fewer replications than asked, a sweep larger than its benchmark."""
    try:
        if cfg.ihdp_file:  # readable, with every replication the run asks for
            load_ihdp_npz(cfg.ihdp_file, 0)
            with np.load(cfg.ihdp_file) as f:
                have = f["x"].shape[-1]
            if cfg.replications > have:
                raise ValueError(f"--replications: {cfg.ihdp_file} has {have} replications, got {cfg.replications}")
        if cfg.sweep_replications:
            get_benchmark(cfg.sweep_data).check_size(max(cfg.sizes) + cfg.test_units)
    except (ValueError, FileNotFoundError, ImportError) as e:
        raise UsageError(str(e)) from None


def build_model(cfg: CausalConfig, name: str, info: Mapping[str, Any]) -> torch.nn.Module:
    """The untrained HyperT-learner network a ``causal`` run saves as ``model.safetensors``: a
    :class:`~hyperdnn.HyperModel` whose ``model(x, torch.arange(K), mode="ensemble")`` gives
    every arm's standardised outcome; ``info`` holds ``features``, ``arms`` and the scaling
    (``x_mean``, ``x_std``, ``y_mean``, ``y_std``) that maps covariates and outcomes."""
    if name != "model":
        raise CheckpointError(f"the causal recipe saves one model, 'model'; got {name!r}")
    sizes = info_sizes(info, "features", "arms")
    est = make_estimator(cfg, "hyper_t", 0)
    return est._build(sizes["features"], sizes["arms"])


RECIPE = register_recipe(
    Recipe(
        name="causal",
        summary="treatment effects: HyperITE learners vs plain PyTorch and EconML meta-learners (IHDP, Nie-Wager)",
        config=CausalConfig,
        run=run_causal,
        check=check_config,
        build_model=build_model,
        threads=1,
        requires={"matplotlib": "apps", "econml": "causal", "sklearn": "causal"},
        **resumable(plan),
    )
)
