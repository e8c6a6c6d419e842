"""Channel pruning with a PruningNet (MetaPruning, Liu et al., ICCV 2019).

A PruningNet is a hypernetwork that takes the width of every layer of a CNN (a *width vector*)
and generates the weights of the full-width network; the pruned network's weights are the
leading channels of those tensors (:func:`~hyperdnn.arch.crop_weights`). It is trained with a
random width vector per step. Then an evolutionary search (:class:`~hyperdnn.methods.search.
EvolutionarySearch`) looks for the width vector with the best validation accuracy under a FLOPs
budget, reading accuracy off generated weights only (after recalibrating the batch-norm
statistics on a few training batches), and the network it finds is retrained from scratch.

Baselines, from the same data, seeds and training budget: uniform width at the same FLOPs (every
layer narrowed by one factor), random search (as many candidates as the evolution evaluates,
:class:`~hyperdnn.baselines.RandomSearch`), and L1-norm filter pruning of the trained full
network followed by fine-tuning (:func:`~hyperdnn.baselines.l1_filter_prune`). The story: the
config; the data (the MNIST subset, downsampled); the PruningNet and its evaluation from
generated weights; the loop (the PruningNet, the searches, every network trained as a unit of
:func:`~hyperdnn.engine.run_units`); the report. The data, the training of the found networks and
the report are in ``recipes/_pruning_train.py`` and ``recipes/_pruning_report.py``.

Run::

    hyperdnn run pruning                          # budgets 12%, 25%, 50% of the full FLOPs
    hyperdnn run pruning --quick                  # a smoke run in well under a minute
    hyperdnn run pruning --budgets 0.1,0.3 --generations 12 --out runs/pruning
    hyperdnn run pruning --data mnist --data-root ~/data   # full MNIST from local idx files

Writes summary.md (accuracy against FLOPs per method and budget; the rank correlation between
accuracy read from generated weights and after retraining; search times), results.json,
accuracy_vs_flops.png, generated_vs_retrained.png, the PruningNet as pruningnet.safetensors and
the trained full network as full.safetensors (``hyperdnn.engine.load_model(out, name)``).

Expected (one thread on a 2-core machine; docs/pruning.md has the tables of seeds 0 and 1):
2.5 to 6 minutes (about 2.5-3 minutes of CPU time); a Spearman correlation of 0.85-0.95 between
accuracy from generated weights and after retraining; at 12% of the FLOPs, 92-94% test accuracy
for every method, the evolution's network within -0.2 to +1.5 points of uniform width.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn import MLP, Continuous, HyperNetwork, MultiHead, Target
from hyperdnn.arch import PrunableCNN, crop_weights
from hyperdnn.baselines import RandomSearch
from hyperdnn.data import DATASETS
from hyperdnn.engine.config import option
from hyperdnn.engine.errors import CheckpointError, UsageError
from hyperdnn.engine.loop import Unit, Work, resumable, run_units
from hyperdnn.engine.model import load_model
from hyperdnn.engine.registry import Recipe, register_recipe
from hyperdnn.engine.run import Outcome, RunContext
from hyperdnn.methods.search import CandidateSearch, EvolutionarySearch
from hyperdnn.metrics import accuracy
from hyperdnn.optim import adam
from hyperdnn.recipes._pruning_report import pct, report
from hyperdnn.recipes._pruning_train import Data, TrainWork, load_data

__all__ = ["PruningConfig", "build_pruningnet", "plan", "run_pruning", "build_model", "RECIPE"]

QUICK = {"data": "digits", "image_size": 8, "channels": (4, 8, 8, 16), "pruningnet_epochs": 1, "retrain_epochs": 1, "generations": 2, "population": 3,
         "parents": 2, "budgets": (0.3,), "train_size": 400, "val_size": 100, "test_size": 200}  # fmt: skip


# ====================================================================== the config
@dataclass
class PruningConfig:
    """Options of ``hyperdnn run pruning`` (see ``hyperdnn run pruning --help``)."""

    data: str = option("mnist5k", "images, a data set of hyperdnn.data.list_datasets(): mnist5k, digits, mnist ...")
    data_root: str = option("", "folder of the MNIST idx files for --data mnist")
    image_size: int = option(14, "images are average-pooled to this size (square)", low=4)
    train_size: int = option(0, "training images used (0: all but --val_size)", low=0)
    val_size: int = option(500, "training images held out for the search's validation", low=50)
    test_size: int = option(0, "test images used (0: all)", low=0)
    channels: tuple[int, ...] = option((16, 32, 32, 64), "full width of each convolution", low=1, nonempty=True)
    strides: tuple[int, ...] = option((1, 1, 2, 2), "stride of each convolution", low=1, nonempty=True)
    levels: int = option(16, "width levels per layer: layer i takes ceil(c_i * k / levels) channels, k = 1..levels", low=2)  # fmt: skip
    budgets: tuple[float, ...] = option((0.12, 0.25, 0.5), "FLOPs budgets, fractions of the full network's", above=0, high=1, nonempty=True, distinct=True)  # fmt: skip
    # the PruningNet
    trunk: tuple[int, ...] = option((64,), "hidden widths of the PruningNet's MLP trunk", low=1, nonempty=True)
    head_hidden: tuple[int, ...] = option((), "hidden widths of each layer's own output head", low=1)
    pruningnet_epochs: int = option(30, "PruningNet training epochs (a random width vector per step)", low=1)
    pruningnet_lr: float = option(1e-3, "Adam learning rate of the PruningNet", above=0)
    bn_batches: int = option(2, "training batches of 256 that recalibrate batch-norm statistics per candidate", low=1)  # fmt: skip
    # the searches
    population: int = option(20, "candidates evaluated per generation (random search: per round)", low=2)
    generations: int = option(8, "generations of the evolutionary search (rounds of random search)", low=1)
    parents: int = option(6, "fittest candidates that breed each generation", low=1)
    mutation: float = option(0.2, "probability that mutation redraws a gene", low=0, high=1)
    crossover: float = option(0.5, "share of children made by crossover", low=0, high=1)
    # training the found networks (every method the same)
    retrain_epochs: int = option(10, "epochs of retraining from scratch (and of L1 fine-tuning)", low=1)
    lr: float = option(0.05, "SGD learning rate (momentum 0.9, cosine to zero) of every trained network", above=0)
    finetune_lr: float = option(0.01, "SGD learning rate of fine-tuning after L1 pruning", above=0)
    weight_decay: float = option(5e-4, "SGD weight decay", low=0)
    batch_size: int = option(128, "minibatch size", low=1)
    checkpoint_every: int = option(0, "also checkpoint every N epochs or generations inside a unit (0: between units)", low=0)  # fmt: skip
    quick: bool = option(False, f"a smoke run: {', '.join(f'{k} {v}' for k, v in QUICK.items())}")

    def __post_init__(self) -> None:
        if self.quick:
            for k, v in QUICK.items():
                setattr(self, k, v)
        if self.data not in DATASETS:
            raise ValueError(f"--data: expected a registered data set, one of {DATASETS.list()}, got {self.data!r}")
        if len(self.strides) != len(self.channels):
            raise ValueError(f"--strides: expected {len(self.channels)} strides, one per --channels, got {len(self.strides)}")  # fmt: skip
        if self.parents > self.population:
            raise ValueError(f"--parents: expected at most --population ({self.population}), got {self.parents}")

    @property
    def cnn(self) -> PrunableCNN:
        """The full network."""
        return PrunableCNN(self.channels, self.strides, 1, self.image_size, 10)


# ====================================================================== the PruningNet
def build_pruningnet(cfg: PruningConfig) -> tuple[HyperNetwork, Target]:
    """The PruningNet: width fractions ``(layers,)`` -> the full network's weights (one head per layer)."""
    full = Target(cfg.cnn.build())
    head = MultiHead("layer", hidden=cfg.head_hidden)
    return HyperNetwork(full, Continuous(cfg.cnn.layers), MLP(cfg.trunk), head), full


class Generated:
    """Networks at any width vector with the PruningNet's weights: training loss, and accuracy
    after batch-norm recalibration (MetaPruning's evaluation without retraining)."""

    def __init__(self, cfg: PruningConfig, hnet: HyperNetwork, data: Data, bn_images: torch.Tensor):
        self.cfg, self.cnn, self.hnet, self.data, self.bn_images = cfg, cfg.cnn, hnet, data, bn_images
        self.targets: dict[tuple[int, ...], Target] = {}

    def target(self, widths: tuple[int, ...]) -> Target:
        if widths not in self.targets:
            with torch.random.fork_rng(devices=[]):  # its own initial weights are never used
                self.targets[widths] = Target(self.cnn.build(widths))
        return self.targets[widths]

    def weights(self, widths: tuple[int, ...]) -> dict[str, torch.Tensor]:
        context = torch.tensor([w / c for w, c in zip(widths, self.cnn.channels)])
        return crop_weights(self.hnet(context), self.target(widths).spec)

    def loss(self, widths: tuple[int, ...], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = self.target(widths)
        target.module.train()
        return F.cross_entropy(target(self.weights(widths), x), y)

    @torch.no_grad()
    def accuracy(self, widths: tuple[int, ...], x: torch.Tensor, y: torch.Tensor) -> float:
        target, weights = self.target(widths), self.weights(widths)
        for m in target.module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # a cumulative average over the recalibration batches
        target.module.train()
        for batch in self.bn_images.split(256):
            target(weights, batch)
        target.module.eval()
        return accuracy(target(weights, x), y)


# ====================================================================== the loop
def plan(cfg: PruningConfig) -> list[Unit]:
    """The PruningNet; a search per kind and budget; the full network; per budget the
    networks the searches and uniform width found (retrained) and L1 pruning (fine-tuned)."""
    units = [Unit("pruningnet", ("",), cfg.pruningnet_epochs)]
    units += [Unit(f"{k} {pct(b)}", ("",), cfg.generations) for k in ("evolution", "random") for b in cfg.budgets]
    units.append(Unit("train full", ("",), cfg.retrain_epochs))
    kinds = ("evolution", "random", "uniform", "l1")
    units += [Unit(f"train {k} {pct(b)}", ("",), cfg.retrain_epochs) for b in cfg.budgets for k in kinds]
    return units


class PruningNetWork(Work):
    """The PruningNet trained with a random width vector per step (MetaPruning's stage 1)."""

    def __init__(self, run: Run):
        run.ctx.seed_everything("init", "pruningnet")
        self.run, self.cfg = run, run.cfg
        self.hnet, _ = build_pruningnet(run.cfg)
        self.gen = Generated(run.cfg, self.hnet, run.data, run.bn_images)

    def start_stage(self, stage: int, fresh: bool) -> torch.optim.Optimizer:
        self.opt = adam(self.hnet.parameters(), lr=self.cfg.pruningnet_lr)
        return self.opt

    def steps(self, stage: int) -> int:
        return -(-len(self.run.data.x_train) // self.cfg.batch_size)

    def train_epoch(self, stage: int, epoch: int, tick) -> dict[str, float]:
        d, cnn, total = self.run.data, self.cfg.cnn, 0.0
        order = torch.randperm(len(d.x_train), generator=self.run.ctx.generator("batches", "pruningnet", epoch))
        draws = self.run.ctx.generator("widths", epoch)
        for idx in order.split(self.cfg.batch_size):
            levels = (torch.randint(self.cfg.levels, (cnn.layers,), generator=draws) + 1).tolist()
            loss = self.gen.loss(cnn.level_widths(levels, self.cfg.levels), d.x_train[idx], d.y_train[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total += loss.item()
            tick()
        return {"loss": total / self.steps(stage)}

    def end_stage(self, stage: int, results: dict[str, Any]) -> str:
        d, cnn = self.run.data, self.cfg.cnn
        nets = {"full": cnn.channels} | {f"uniform {pct(b)}": self.run.uniform(b) for b in self.cfg.budgets}
        for key, widths in nets.items():
            results["generated"][key] = self.gen.accuracy(widths, d.x_test, d.y_test)
        return f"full network from generated weights: {100 * results['generated']['full']:.1f}%"

    def end_unit(self, results: dict[str, Any]) -> None:
        self.run.models["pruningnet"] = self.hnet
        self.run.ctx.save_model(self.hnet, "pruningnet")

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return dict(self.hnet.state_dict()), {}

    def load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        self.hnet.load_state_dict(tensors)


class SearchWork(Work):
    """One search for one budget: a generation (or round) per epoch, fitness = validation
    accuracy from generated weights; the best candidate's test accuracy is read the same way."""

    def __init__(self, run: Run, kind: str, budget: float):
        cfg, cnn = run.cfg, run.cfg.cnn
        self.run, self.key, self.budget = run, f"{kind} {pct(budget)}", budget
        self.gen = Generated(cfg, run.model("pruningnet"), run.data, run.bn_images)
        limit = budget * run.full_flops

        def fitness(levels: tuple[int, ...]) -> float:
            return self.gen.accuracy(cnn.level_widths(levels, cfg.levels), run.data.x_val, run.data.y_val)

        def feasible(levels: tuple[int, ...]) -> bool:
            return cnn.flops(cnn.level_widths(levels, cfg.levels)) <= limit

        g, n = run.ctx.generator("search", kind, budget), cfg.population
        self.search: CandidateSearch = (
            EvolutionarySearch(
                cnn.layers,
                cfg.levels,
                fitness,
                feasible,
                g,
                population=n,
                parents=cfg.parents,
                mutation=cfg.mutation,
                crossover=cfg.crossover,
            )  # fmt: skip
            if kind == "evolution"
            else RandomSearch(cnn.layers, cfg.levels, fitness, feasible, g, population=n)
        )

    def start_stage(self, stage: int, fresh: bool) -> None:
        return None

    def steps(self, stage: int) -> int:
        return self.run.cfg.population

    def train_epoch(self, stage: int, epoch: int, tick) -> dict[str, float]:
        return {"best_val_acc": self.search.step(tick)}

    def end_stage(self, stage: int, results: dict[str, Any]) -> str:
        levels, val = self.search.best
        widths = self.run.cfg.cnn.level_widths(levels, self.run.cfg.levels)
        test = self.gen.accuracy(widths, self.run.data.x_test, self.run.data.y_test)
        results["search"][self.key] = {"widths": list(widths), "val_acc": val, "evaluated": len(self.search.history)}
        results["generated"][self.key] = test
        return f"best {list(widths)}: val {100 * val:.1f}%, test {100 * test:.1f}% from generated weights"

    def end_unit(self, results: dict[str, Any]) -> None:
        pass

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return self.search.state()

    def load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        self.search.load_state(tensors, meta)


class Run:
    """What every unit of a run shares: config, data, the trained models (loaded from the run
    folder on resume), the results so far."""

    def __init__(self, cfg: PruningConfig, ctx: RunContext):
        self.cfg, self.ctx = cfg, ctx
        self.data = load_data(cfg, ctx.seed)
        order = torch.randperm(len(self.data.x_train), generator=ctx.generator("bn"))
        self.bn_images = self.data.x_train[order[: 256 * cfg.bn_batches]]
        self.full_flops = cfg.cnn.flops()
        self.models: dict[str, nn.Module] = {}
        self.results: dict[str, Any] = {"generated": {}, "search": {}, "trained": {}}

    def model(self, name: str) -> nn.Module:
        if name not in self.models:
            self.models[name] = load_model(self.ctx.out, name)
        return self.models[name]

    def uniform(self, budget: float) -> tuple[int, ...]:
        return self.cfg.cnn.uniform_for_budget(budget * self.full_flops)

    def widths(self, name: str) -> tuple[int, ...]:
        kind, _, budget = name.partition(" ")
        if kind == "full":
            return self.cfg.cnn.channels
        if kind == "uniform":
            return self.uniform(float(budget.rstrip("%")) / 100)
        return tuple(self.results["search"][name]["widths"])

    def build(self, unit: Unit) -> Work:
        if unit.key == "pruningnet":
            return PruningNetWork(self)
        if unit.key.startswith("train "):
            return TrainWork(self, unit.key)
        kind, _, budget = unit.key.partition(" ")
        return SearchWork(self, kind, next(b for b in self.cfg.budgets if pct(b) == budget))


def run_pruning(cfg: PruningConfig, ctx: RunContext) -> Outcome:
    """The ``pruning`` recipe: PruningNet, searches, training, report."""
    run = Run(cfg, ctx)
    d = run.data
    ctx.log(
        f"{cfg.data} at {cfg.image_size}x{cfg.image_size}: {len(d.x_train)} train / {len(d.x_val)} validation / "
        f"{len(d.x_test)} test images; full CNN {list(cfg.channels)}, {run.full_flops:,} FLOPs; budgets "
        f"{', '.join(pct(b) for b in cfg.budgets)}"
    )
    if ctx.resumed is not None:  # the loop continues with the checkpoint's results: widths found so far
        run.results = ctx.resumed.state["results"]
    done = run_units(ctx, plan(cfg), run.build, run.results, checkpoint_every=cfg.checkpoint_every)
    return report(cfg, ctx, run, done)


# ====================================================================== checks, saved models, registration
def check_config(cfg: PruningConfig) -> None:
    """Refuse budgets the width grid cannot meet, before anything is written."""
    cnn = cfg.cnn
    full, smallest = cnn.flops(), cnn.flops(cnn.level_widths((1,) * cnn.layers, cfg.levels))
    bad = [pct(b) for b in cfg.budgets if b * full < smallest]
    if bad:
        raise UsageError(
            f"--budgets: no network of the width grid meets {', '.join(bad)} of the full {full:,} FLOPs; "
            f"the smallest (every layer at 1/{cfg.levels} of its width) needs {smallest / full:.1%}"
        )
    data = DATASETS.get(cfg.data)
    if cfg.image_size > min(data.shape[1:]):
        raise UsageError(f"--image_size: expected at most {min(data.shape[1:])}, the size of {cfg.data}'s images, got {cfg.image_size}")  # fmt: skip
    problem = data.problem(cfg.data_root)
    if problem is not None:
        raise UsageError(f"--data {cfg.data}: {problem}")


def build_model(cfg: PruningConfig, name: str, info: Mapping[str, Any]) -> nn.Module:
    """The untrained module a ``pruning`` run saved: ``"pruningnet"`` (the hypernetwork; its
    generated weights, cropped, run ``cfg.cnn.build(widths)``) or ``"full"`` (the full CNN)."""
    if name == "pruningnet":
        return build_pruningnet(cfg)[0]
    if name == "full":
        return cfg.cnn.build()
    raise CheckpointError(f"the pruning recipe saves 'pruningnet' and 'full'; got {name!r}")


RECIPE = register_recipe(
    Recipe(
        name="pruning",
        summary="MetaPruning: a PruningNet generates any width's weights; evolution vs uniform, random, L1",
        config=PruningConfig,
        run=run_pruning,
        check=check_config,
        build_model=build_model,
        threads=1,
        requires={"matplotlib": "apps", "scipy": "arch"},
        **resumable(plan),
        data_parallel="its networks normalise with BatchNorm over each minibatch",
    )
)
