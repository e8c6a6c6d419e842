"""One model for a whole hyper-parameter sweep: a hypernetwork conditioned on an L2 penalty.

A hypernetwork reads the strength ``lambda`` of an L2 weight penalty (on a log scale, four
decades by default) and generates the weights of an MLP trained with that penalty; each step
draws a few values log-uniformly and runs them on one shared batch
(:class:`~hyperdnn.methods.hyperparameter.HyperparameterNetwork`: a
:class:`~hyperdnn.Continuous` conditioner with ``execution="ensemble"`` and the residual
parametrisation ``theta(lambda) = theta_0 + delta(lambda)``; Lorraine and Duvenaud 2018,
MacKay et al. 2019, Hoopes et al. 2021, Ortiz et al. 2024). The task is small-data
classification, where the penalty matters: 300 training images of scikit-learn's digits.
The baseline is the sweep: a separate MLP trained at each of 7 fixed values, from the same
initialisation, with the same batches and the same number of steps. The hypernetwork is then
swept densely over the range; each method picks the value of lowest validation loss, and one
more separate model is trained at the hypernetwork's pick to see what that pick is worth. The
story: the config; the data; the models; the loop (the hypernetwork, the sweep, the model at
the pick, as units of :func:`~hyperdnn.engine.run_units`); the report.

The plan of a run (the hypernetwork, the sweep, the model at the hypernetwork's pick)::

    >>> from hyperdnn.recipes.hyperparams import HyperparamsConfig, plan
    >>> [u.key for u in plan(HyperparamsConfig(values=3))]
    ['hypernetwork', 'separate 1/3 (lambda 1e-06)', 'separate 2/3 (lambda 0.0001)', 'separate 3/3 (lambda 0.01)', 'separate at the pick']

Run::

    hyperdnn run hyperparams                         # digits, 300 training images, lambda in [1e-6, 1e-2]
    hyperdnn run hyperparams --quick                 # a smoke run in well under a minute
    hyperdnn run hyperparams --low 1e-5 --high 1e-1 --train_size 500

Writes summary.md (validation loss and accuracy of the hypernetwork and of the separate model at
each of the 7 values; the value each picks and what it is worth; the training times),
results.json, hyperparams.png (validation loss and accuracy against the value: the hypernetwork
swept densely, the separate models as points) and the hypernetwork as model.safetensors
(``hyperdnn.engine.load_model(out)``; asking it for a value outside the trained range warns).

Expected (the default run with one thread on a 2-core machine; docs/hyperparams.md has the
tables of seeds 0 and 1): under 2 minutes (50 s and 64 s wall, 24 s and 28 s of CPU). The
hypernetwork picks lambda 1.32e-4 and 9.12e-5; the separate model at its pick is within 0.2
points of the sweep's best on test (94.7% against 94.9% on seed 0, 95.3% and 95.3% on seed 1),
for 27-28% of the sweep's training time (one value per step, 800 steps, a trunk of one
16-unit layer). The hypernetwork's validation loss is within 3% of the separate models' only
around 1e-4; elsewhere it is up to +14.2% above (seed 0, 1e-6) and up to 22.7% below (1e-2).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn import MLP, Target
from hyperdnn.data import DATASETS, load_dataset
from hyperdnn.engine.config import apply_preset, option
from hyperdnn.engine.errors import CheckpointError, UsageError
from hyperdnn.engine.loop import Unit, resumable, run_units
from hyperdnn.engine.registry import Recipe, register_recipe
from hyperdnn.engine.run import Outcome, RunContext
from hyperdnn.methods.hyperparameter import HyperparameterNetwork, l2_penalty
from hyperdnn.networks import mlp
from hyperdnn.optim import adam
from hyperdnn.recipes._hyperparams_report import PICK, report
from hyperdnn.recipes._timed_work import TimedWork

__all__ = [
    "HyperparamsConfig",
    "plan",
    "sweep_values",
    "separate_values",
    "build_hypernet",
    "run_hyperparams",
    "build_model",
    "RECIPE",
]

QUICK = {"steps": 200, "hnet_steps": 200, "sweep": 21}


# ====================================================================== the config
@dataclass
class HyperparamsConfig:
    """Options of ``hyperdnn run hyperparams`` (see ``hyperdnn run hyperparams --help``)."""

    data: str = option("digits", "the data set (a registered one: digits, mnist5k ...)")
    data_root: str = option("", "folder of the data set's files, for data sets read from the user's files")
    train_size: int = option(300, "training images (small data: the penalty matters)", low=1)
    val_size: int = option(500, "validation images (taken from the rest of the training split)", low=1)
    hidden: tuple[int, ...] = option((512,), "hidden widths of the MLP", low=1, nonempty=True)
    low: float = option(1e-6, "smallest L2 penalty strength trained on", above=0)
    high: float = option(1e-2, "largest L2 penalty strength trained on", above=0)
    values: int = option(7, "separate models, at values evenly spaced on a log scale from --low to --high", low=2)
    sweep: int = option(101, "values the hypernetwork is swept over (log-spaced; the separate models' included)", low=2)  # fmt: skip
    steps: int = option(1000, "training steps of each separate model", low=1)
    hnet_steps: int = option(800, "training steps of the hypernetwork (of --values_per_step values each)", low=1)
    batch_size: int = option(0, "minibatch size (0: the whole training set)", low=0)
    lr: float = option(1e-3, "Adam learning rate of the separate models", above=0)
    hnet_lr: float = option(1e-3, "Adam learning rate of the hypernetwork", above=0)
    values_per_step: int = option(1, "penalty values per hypernetwork step, on one shared batch", low=1)
    trunk: tuple[int, ...] = option((16,), "hidden widths of the hypernetwork's MLP trunk", low=1, nonempty=True)
    encoding: str = option("identity", "encoding of log10(lambda): identity or fourier", choices=("identity", "fourier"))  # fmt: skip
    steps_per_epoch: int = option(100, "steps between progress notes and checkpoints", low=1)
    checkpoint_every: int = option(0, "also checkpoint every N epochs inside a unit (0: only between units)", low=0)
    quick: bool = option(False, f"a smoke run: {', '.join(f'{k} {v}' for k, v in QUICK.items())}")

    def __post_init__(self) -> None:
        if self.quick:  # the preset's values win over the command line
            apply_preset(self, QUICK, keep_given=False)
        if self.data not in DATASETS:
            raise ValueError(f"--data: expected a registered data set, one of {DATASETS.list()}, got {self.data!r}")
        if not self.low < self.high:
            raise ValueError(f"--low/--high: expected low < high, got low={self.low}, high={self.high}")

    @property
    def grid(self) -> list[float]:
        """The separate models' values."""
        return sweep_values(self.low, self.high, self.values)


def sweep_values(low: float, high: float, n: int) -> list[float]:
    """``n`` values from ``low`` to ``high``, evenly spaced on a log scale (the ends exact)."""
    lo, hi = math.log10(low), math.log10(high)
    inner = [10 ** (lo + (hi - lo) * i / (n - 1)) for i in range(1, n - 1)]
    return [low, *inner, high]


# ====================================================================== the data
def load_splits(cfg: HyperparamsConfig, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Train, validation and test inputs and labels: the first ``train_size`` and the next
    ``val_size`` images of the data set's (seeded) training split, and its test split."""
    try:
        s = load_dataset(cfg.data, seed, cfg.data_root)
    except (ValueError, LookupError, FileNotFoundError, ImportError) as e:
        raise UsageError(f"--data {cfg.data}: {e}") from None
    n, v = cfg.train_size, cfg.val_size
    if n + v > len(s.x_train):
        raise UsageError(
            f"--train_size/--val_size: {cfg.data} has {len(s.x_train)} training images, asked for {n} + {v} = {n + v}"
        )
    return {
        "train": (s.x_train[:n], s.y_train[:n]),
        "val": (s.x_train[n : n + v], s.y_train[n : n + v]),
        "test": (s.x_test, s.y_test),
    }


# ====================================================================== the models
def make_net(cfg: HyperparamsConfig, in_features: int, classes: int) -> nn.Module:
    """The target MLP (the same for the hypernetwork and every separate model)."""
    return mlp(in_features, cfg.hidden, classes)


def build_hypernet(cfg: HyperparamsConfig, in_features: int, classes: int) -> HyperparameterNetwork:
    """The hypernetwork over ``[low, high]`` (log scale) with the residual parametrisation."""
    target = Target(make_net(cfg, in_features, classes))
    return HyperparameterNetwork(target, cfg.low, cfg.high, MLP(cfg.trunk), encoding=cfg.encoding)


def separate_values(cfg: HyperparamsConfig) -> dict[str, float]:
    """The separate models of the sweep: unit key -> its value."""
    return {f"separate {i + 1}/{cfg.values} (lambda {v:.3g})": v for i, v in enumerate(cfg.grid)}


def plan(cfg: HyperparamsConfig) -> list[Unit]:
    """The hypernetwork, the separate models of the sweep, the separate model at the pick."""
    epochs = lambda steps: -(-steps // cfg.steps_per_epoch)  # noqa: E731
    return (
        [Unit("hypernetwork", ("",), epochs(cfg.hnet_steps))]
        + [Unit(key, ("",), epochs(cfg.steps)) for key in separate_values(cfg)]
        + [Unit(PICK, ("",), epochs(cfg.steps))]
    )


class FitWork(TimedWork):
    """One unit: the hypernetwork (``values_per_step`` values per step) or a separate MLP at one
    value. Every unit starts from the same MLP weights and sees the same batches."""

    def __init__(self, ctx: RunContext, cfg: HyperparamsConfig, data: dict, unit: Unit, results: dict[str, Any]):
        self.ctx, self.cfg, self.data, self.unit = ctx, cfg, data, unit
        x, y = data["train"]
        classes = int(max(int(t[1].max()) for t in data.values())) + 1
        ctx.seed_everything("init")  # the target's (and so theta_0's) weights: the same for every unit
        if unit.key == "hypernetwork":
            self.model: nn.Module = build_hypernet(cfg, x.shape[1], classes)
            self.value = None
        else:
            self.model = make_net(cfg, x.shape[1], classes)
            self.value = results["hypernetwork"]["pick"] if unit.key == PICK else separate_values(cfg)[unit.key]
        self.train_seconds = self.wall_seconds = 0.0  # CPU and wall-clock seconds of training

    def start_stage(self, stage: int, fresh: bool) -> torch.optim.Optimizer:
        lr = self.cfg.hnet_lr if self.value is None else self.cfg.lr
        self.optimizer = adam(self.model.parameters(), lr=lr)
        return self.optimizer

    def steps(self, stage: int) -> int:
        return self.cfg.steps_per_epoch

    def _step_count(self, epoch: int) -> int:
        total = self.cfg.hnet_steps if self.value is None else self.cfg.steps
        return min(self.cfg.steps_per_epoch, total - epoch * self.cfg.steps_per_epoch)

    def train_epoch(self, stage: int, epoch: int, tick) -> dict[str, float]:
        x, y = self.data["train"]
        batches = self.ctx.generator("batches", epoch)
        values = self.ctx.generator("values", epoch)
        b = self.cfg.batch_size or len(x)
        start, cpu, total = time.perf_counter(), time.process_time(), 0.0
        for _ in range(self._step_count(epoch)):
            idx = torch.randperm(len(x), generator=batches)[:b] if b < len(x) else slice(None)
            if isinstance(self.model, HyperparameterNetwork):
                lam = self.model.sample(self.cfg.values_per_step, values)
                weights = self.model.generate(lam)
                out = self.model.apply(weights, x[idx])  # (K, B, classes)
                K = out.shape[0]
                ce = F.cross_entropy(out.flatten(0, 1), y[idx].repeat(K), reduction="none").view(K, -1).mean(1)
                loss = (ce + lam.to(ce) * l2_penalty(weights)).mean()
            else:
                penalty = l2_penalty(dict(self.model.named_parameters()), batched=False)
                loss = F.cross_entropy(self.model(x[idx]), y[idx]) + self.value * penalty
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.item()
            tick()
        self.train_seconds += time.process_time() - cpu
        self.wall_seconds += time.perf_counter() - start
        return {"loss": total / max(self._step_count(epoch), 1)}

    @torch.no_grad()
    def _measure(self, values: list[float]) -> dict[str, list[float]]:
        """Validation loss and accuracy, test accuracy, for each value (the hypernetwork) or the one model."""
        out: dict[str, list[float]] = {"val_loss": [], "val_acc": [], "test_acc": []}
        if isinstance(self.model, HyperparameterNetwork):
            weights = self.model.generate(values)
            run = lambda x: self.model.apply(weights, x)  # noqa: E731
        else:
            run = lambda x: self.model(x).unsqueeze(0)  # noqa: E731
        for split, keys in (("val", ("val_loss", "val_acc")), ("test", (None, "test_acc"))):
            x, y = self.data[split]
            logits = run(x)  # (K, N, classes)
            if keys[0]:
                out[keys[0]] = [F.cross_entropy(lg, y).item() for lg in logits]
            out[keys[1]] = (logits.argmax(-1) == y).double().mean(1).tolist()
        return out

    def end_stage(self, stage: int, results: dict[str, Any]) -> str:
        self.model.eval()
        if self.value is None:
            dense = sorted({*sweep_values(self.cfg.low, self.cfg.high, self.cfg.sweep), *self.cfg.grid})
            entry = {"values": dense, **self._measure(dense)}
            best = min(range(len(dense)), key=lambda i: entry["val_loss"][i])
            entry.update(pick=dense[best], train_seconds=self.train_seconds, wall_seconds=self.wall_seconds)
            results["hypernetwork"] = entry
            return f"picks {dense[best]:.3g} (validation loss {entry['val_loss'][best]:.4f})"
        m = {k: v[0] for k, v in self._measure([self.value]).items()}
        results["separate"][self.unit.key] = {
            "value": self.value,
            **m,
            "train_seconds": self.train_seconds,
            "wall_seconds": self.wall_seconds,
        }
        return f"lambda {self.value:.3g}: validation loss {m['val_loss']:.4f}, accuracy {100 * m['val_acc']:.1f}%"

    def end_unit(self, results: dict[str, Any]) -> None:
        if isinstance(self.model, HyperparameterNetwork):
            x, _ = self.data["train"]
            info = {"in_features": x.shape[1], "classes": self.model.target.module[-1].out_features}
            self.ctx.log(f"saved the hypernetwork: {self.ctx.save_model(self.model, 'model', info)}")


def run_hyperparams(cfg: HyperparamsConfig, ctx: RunContext) -> Outcome:
    """The ``hyperparams`` recipe: the hypernetwork, the sweep, the model at its pick, the report."""
    data = load_splits(cfg, ctx.seed)
    ctx.log(
        f"{cfg.data}: {cfg.train_size} train / {cfg.val_size} validation / {len(data['test'][0])} test images; "
        f"L2 penalty in [{cfg.low:g}, {cfg.high:g}], separate models at {[float(f'{v:.3g}') for v in cfg.grid]}"
    )
    # the loop's record: the model at the pick reads the hypernetwork's pick from it (a resumed
    # run continues with the checkpoint's record, the same object the loop updates)
    results: dict[str, Any] = ctx.resumed.state["results"] if ctx.resumed else {"hypernetwork": {}, "separate": {}}
    done = run_units(
        ctx, plan(cfg), lambda u: FitWork(ctx, cfg, data, u, results), results, checkpoint_every=cfg.checkpoint_every
    )
    return report(cfg, ctx, done)


# ====================================================================== checks, the saved model and registration
def check_config(cfg: HyperparamsConfig) -> None:
    """Refuse what the run cannot do, before anything is written: data that is missing or too small."""
    d = DATASETS.get(cfg.data)
    problem = d.problem(cfg.data_root)
    if problem is not None:
        raise UsageError(f"--data {cfg.data}: {problem}")
    if cfg.train_size + cfg.val_size >= d.num_images:
        raise UsageError(
            f"--train_size/--val_size: {cfg.data} has {d.num_images:,} images, asked for {cfg.train_size} + "
            f"{cfg.val_size} training and validation images"
        )


def build_model(cfg: HyperparamsConfig, name: str, info: Mapping[str, Any]) -> nn.Module:
    """The untrained hypernetwork a ``hyperparams`` run saved as ``model``."""
    if name != "model":
        raise CheckpointError(f"the hyperparams recipe saves one model, 'model'; got {name!r}")
    return build_hypernet(cfg, int(info["in_features"]), int(info["classes"]))


RECIPE = register_recipe(
    Recipe(
        name="hyperparams",
        summary="a hypernetwork conditioned on an L2-penalty strength vs a sweep of 7 separately trained models",
        config=HyperparamsConfig,
        run=run_hyperparams,
        check=check_config,
        build_model=build_model,
        threads=1,
        requires={"matplotlib": "apps", "sklearn": "apps"},
        **resumable(plan),
    )
)
