"""Parameters for unseen architectures with a graph hypernetwork (GHN-2, Knyazev et al., NeurIPS 2021).

Architectures are drawn in code from a search space of small CNNs (depth, widths, kernel sizes,
skip connections, batch or group norm: :class:`~hyperdnn.arch.SearchSpace`). Each becomes a
graph of operations (:func:`~hyperdnn.arch.build_graph`); a message-passing network over the
graph embeds every node, and every parameter tensor is generated from its node's embedding
through the component-wise generation of :class:`~hyperdnn.DynamicHyperNetwork`
(:class:`~hyperdnn.arch.GraphHyperNetwork`). It is trained on a few hundred sampled
architectures at once (a few per step) and evaluated on held-out ones: unseen samples of the
space, and deeper and wider networks than any seen in training.

Baselines, on the same held-out architectures, data and seeds: the random initialisation, one
epoch of SGD from it, and an MLP hypernetwork over a flat encoding of the architecture
(:class:`~hyperdnn.baselines.FlatArchHyperNetwork`, trained like the GHN). Measured: accuracy of
the predicted parameters; Kendall's tau between predicted-parameter accuracy and the accuracy
after training from scratch (a cheap search signal); and the SGD steps that fine-tuning from
the predicted parameters needs to reach the from-scratch accuracy. The story: the config; the
data (digits) and the architectures; the hypernetworks; the loop (both hypernetworks, then each
held-out architecture from scratch and from the GHN's parameters, as units of
:func:`~hyperdnn.engine.run_units`); the report (``recipes/_nas_report.py``).

Run::

    hyperdnn run nas                                  # 300 training architectures, 16 held out
    hyperdnn run nas --quick                          # a smoke run in well under a minute
    hyperdnn run nas --train_archs 500 --hnet_epochs 60 --out runs/nas

Writes summary.md (per held-out architecture: accuracy from random init, the GHN, the MLP
hypernetwork, one epoch of SGD, training from scratch; steps to the from-scratch accuracy;
Kendall's tau), results.json, nas_accuracy.png, nas_finetune.png, and both hypernetworks as
ghn.safetensors and mlp.safetensors (``hyperdnn.engine.load_model(out, "ghn")``).

Expected (one thread on a 2-core machine; docs/nas.md has the tables of seeds 0 and 1): 2.5 to
7 minutes (2.5-3.5 minutes of CPU time); on the 16 held-out architectures, 46-55% mean accuracy
from the GHN's parameters (one epoch of SGD: 65-66%, the MLP hypernetwork: 36-46%, random init:
about 10%), a Kendall's tau of 0.08-0.35 with the from-scratch accuracy, and fine-tuning from the
GHN's parameters ahead only for the first few steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn import Target
from hyperdnn.arch import NORMS, Architecture, GraphHyperNetwork, SearchSpace
from hyperdnn.baselines import FlatArchHyperNetwork
from hyperdnn.data import DATASETS, load_dataset
from hyperdnn.engine.config import option
from hyperdnn.engine.errors import CheckpointError, UsageError
from hyperdnn.engine.loop import Unit, Work, resumable, run_units
from hyperdnn.engine.model import load_model
from hyperdnn.engine.registry import Recipe, register_recipe
from hyperdnn.engine.run import Outcome, RunContext
from hyperdnn.metrics import accuracy, steps_to_reach
from hyperdnn.optim import adam
from hyperdnn.recipes._nas_report import GROUPS, report

__all__ = ["NASConfig", "architectures", "build_hypernet", "plan", "run_nas", "build_model", "RECIPE"]

QUICK = {"train_archs": 8, "heldout": 2, "deeper": 1, "wider": 1, "hnet_epochs": 1, "train_epochs": 1,
         "hidden": 16, "embed_dim": 8, "train_size": 256}  # fmt: skip


# ====================================================================== the config
@dataclass
class NASConfig:
    """Options of ``hyperdnn run nas`` (see ``hyperdnn run nas --help``)."""

    data: str = option("digits", "images, a data set of hyperdnn.data.list_datasets(): digits, mnist5k ...")
    data_root: str = option("", "folder of the MNIST idx files for --data mnist")
    train_size: int = option(0, "training images used (0: all)", low=0)
    # the search space
    depths: tuple[int, ...] = option((2, 3, 4, 5), "numbers of cells of training architectures", low=1, nonempty=True, distinct=True)  # fmt: skip
    widths: tuple[int, ...] = option((8, 16, 24, 32), "cell widths of training architectures", low=1, nonempty=True, distinct=True)  # fmt: skip
    kernels: tuple[int, ...] = option((1, 3, 5), "kernel sizes (odd)", low=1, nonempty=True, distinct=True)
    norms: tuple[str, ...] = option(("bn", "gn"), "normalisations: bn (batch), gn (group), none", choices=NORMS, nonempty=True, distinct=True)  # fmt: skip
    skip_probability: float = option(0.5, "chance that a cell has a skip connection", low=0, high=1)
    train_archs: int = option(300, "architectures the hypernetworks are trained on", low=1)
    heldout: int = option(8, "held-out architectures drawn from the training space", low=0)
    deeper: int = option(4, "held-out architectures deeper than any in training (--deep_depths)", low=0)
    deep_depths: tuple[int, ...] = option((7, 8), "numbers of cells of the deeper ones", low=1, nonempty=True, distinct=True)  # fmt: skip
    wider: int = option(4, "held-out architectures wider than any in training (--wide_widths)", low=0)
    wide_widths: tuple[int, ...] = option((40, 48), "cell widths of the wider ones", low=1, nonempty=True, distinct=True)  # fmt: skip
    # the hypernetworks (the GHN and the MLP baseline share the decoder's sizes)
    hidden: int = option(64, "node embedding width (GHN) and trunk width (both)", low=1)
    rounds: int = option(2, "message-passing rounds of the GHN", low=0)
    embed_dim: int = option(32, "component embedding width", low=1)
    hnet_epochs: int = option(20, "hypernetwork training epochs (passes over the training images)", low=1)
    hnet_batch_size: int = option(32, "images per hypernetwork training step (each architecture sees them)", low=1)
    archs_per_step: int = option(4, "architectures per training step (their losses averaged)", low=1)
    hnet_lr: float = option(1e-3, "Adam learning rate of the hypernetworks", above=0)
    clip: float = option(5.0, "gradient-norm clipping of the hypernetworks", above=0)
    # training the held-out architectures
    train_epochs: int = option(5, "epochs of SGD from scratch, and of fine-tuning from predicted parameters", low=1)
    lr: float = option(0.05, "SGD learning rate (momentum 0.9)", above=0)
    eval_every: int = option(4, "steps between test-accuracy measurements while training", low=1)
    batch_size: int = option(64, "minibatch size", low=1)
    checkpoint_every: int = option(0, "also checkpoint every N epochs inside a unit (0: between stages)", low=0)
    quick: bool = option(False, f"a smoke run: {', '.join(f'{k} {v}' for k, v in QUICK.items())}")

    def __post_init__(self) -> None:
        if self.quick:
            for k, v in QUICK.items():
                setattr(self, k, v)
        if self.data not in DATASETS:
            raise ValueError(f"--data: expected a registered data set, one of {DATASETS.list()}, got {self.data!r}")
        even = [k for k in self.kernels if k % 2 == 0]
        if even:
            raise ValueError(f"--kernels: expected odd kernel sizes, got {list(self.kernels)} (even: {even})")

    @property
    def space(self) -> SearchSpace:
        """The training architectures' space."""
        return SearchSpace(self.depths, self.widths, self.kernels, self.norms, self.skip_probability)

    @property
    def slots(self) -> int:
        """Cell slots of the flat encoding: the deepest architecture of the run."""
        return max(*self.depths, *self.deep_depths)

    @property
    def max_component_size(self) -> int:
        """The widest fan-in of a row of any architecture of the run."""
        return max(*self.widths, *self.wide_widths) * max(self.kernels) ** 2


# ====================================================================== the data and the architectures
def load_images(cfg: NASConfig, seed: int) -> tuple[torch.Tensor, ...]:
    """Training and test images ``(N, C, H, W)`` and labels."""
    try:
        s = load_dataset(cfg.data, seed, cfg.data_root)
    except (ValueError, LookupError, FileNotFoundError, ImportError) as e:
        raise UsageError(str(e)) from None
    n = cfg.train_size or len(s.x_train)
    return s.x_train[:n].view(-1, *s.shape), s.y_train[:n], s.x_test.view(-1, *s.shape), s.y_test


def architectures(cfg: NASConfig, seed: int, channels: int, classes: int) -> tuple[list[Architecture], list[tuple[str, Architecture]]]:  # fmt: skip
    """The training architectures and the held-out ones (group, architecture), none of them in
    the training set."""
    space = replace(cfg.space, in_channels=channels, classes=classes)
    g = torch.Generator().manual_seed(seed)
    train = [space.sample(g) for _ in range(cfg.train_archs)]
    seen, held = set(train), []
    for group, n, sub in (("seen space", cfg.heldout, space), ("deeper", cfg.deeper, replace(space, depths=cfg.deep_depths)),
                          ("wider", cfg.wider, replace(space, widths=cfg.wide_widths))):  # fmt: skip
        while sum(1 for gr, _ in held if gr == group) < n:
            arch = sub.sample(g)
            if arch not in seen:
                seen.add(arch)
                held.append((group, arch))
    return train, held


# ====================================================================== the hypernetworks
def build_hypernet(cfg: NASConfig, kind: str, example: list[Target] | None = None) -> nn.Module:
    """The GHN (``"ghn"``) or the MLP hypernetwork over the flat encoding (``"mlp"``)."""
    sizes = {"max_component_size": cfg.max_component_size, "embed_dim": cfg.embed_dim,
             "trunk_hidden": (cfg.hidden,), "descriptor_hidden": (cfg.hidden,), "example": example,
             "max_rows": max(*cfg.widths, *cfg.wide_widths, 10)}  # fmt: skip
    if kind == "ghn":
        return GraphHyperNetwork(hidden=cfg.hidden, rounds=cfg.rounds, **sizes)
    return FlatArchHyperNetwork(6 * cfg.slots, **sizes)


class Predictor:
    """Predicts an architecture's parameters with either hypernetwork (prepared once per
    architecture: the GHN's graph, the MLP's flat encoding)."""

    def __init__(self, cfg: NASConfig, kind: str, hnet: nn.Module):
        self.cfg, self.kind, self.hnet, self.prepared = cfg, kind, hnet, {}

    def __call__(self, arch: Architecture, target: Target) -> dict[str, torch.Tensor]:
        if arch not in self.prepared:
            self.prepared[arch] = (
                self.hnet.prepare(target) if self.kind == "ghn" else self.cfg.space.encode(arch, self.cfg.slots)
            )
        if self.kind == "ghn":
            return self.hnet(self.prepared[arch])
        return self.hnet(self.prepared[arch], target)


# ====================================================================== the loop
def plan(cfg: NASConfig) -> list[Unit]:
    """Both hypernetworks, then each held-out architecture: from scratch, then from the GHN."""
    n = cfg.heldout + cfg.deeper + cfg.wider
    units = [Unit("ghn", ("",), cfg.hnet_epochs), Unit("mlp", ("",), cfg.hnet_epochs)]
    return units + [Unit(f"arch {i + 1:02d}", ("scratch", "from GHN"), cfg.train_epochs) for i in range(n)]


class HypernetWork(Work):
    """A hypernetwork trained on the training architectures: per step, ``archs_per_step`` of
    them on one minibatch (the same draws for both hypernetworks)."""

    def __init__(self, run: Run, kind: str):
        run.ctx.seed_everything("init", kind)
        self.run, self.cfg, self.kind = run, run.cfg, kind
        self.hnet = build_hypernet(run.cfg, kind, [t for _, t in run.train[:8]])
        self.predict = Predictor(run.cfg, kind, self.hnet)

    def start_stage(self, stage: int, fresh: bool) -> torch.optim.Optimizer:
        self.opt = adam(self.hnet.parameters(), lr=self.cfg.hnet_lr)
        return self.opt

    def steps(self, stage: int) -> int:
        return -(-len(self.run.x_train) // self.cfg.hnet_batch_size)

    def train_epoch(self, stage: int, epoch: int, tick) -> dict[str, float]:
        r, total = self.run, 0.0
        order = torch.randperm(len(r.x_train), generator=r.ctx.generator("batches", "hnet", epoch))
        draws = r.ctx.generator("archs", epoch)
        for idx in order.split(self.cfg.hnet_batch_size):
            picks = torch.randint(len(r.train), (self.cfg.archs_per_step,), generator=draws).tolist()
            losses = [F.cross_entropy(t(self.predict(a, t), r.x_train[idx]), r.y_train[idx]) for a, t in (r.train[i] for i in picks)]  # fmt: skip
            loss = torch.stack(losses).mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.hnet.parameters(), self.cfg.clip)
            self.opt.step()
            total += loss.item()
            tick()
        return {"loss": total / self.steps(stage)}

    @torch.no_grad()
    def end_stage(self, stage: int, results: dict[str, Any]) -> str:
        r = self.run
        accs = [accuracy(t(self.predict(a, t), r.x_test), r.y_test) for a, t in r.train[:16]]
        results["train_archs_acc"][self.kind] = sum(accs) / len(accs)
        return f"mean test acc on 16 training architectures: {100 * sum(accs) / len(accs):.1f}%"

    def end_unit(self, results: dict[str, Any]) -> None:
        self.run.models[self.kind] = self.hnet
        self.run.ctx.save_model(self.hnet, self.kind)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return dict(self.hnet.state_dict()), {}

    def load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        self.hnet.load_state_dict(tensors)


class ArchWork(Work):
    """A held-out architecture: the accuracy of its random initialisation and of both
    hypernetworks' parameters; then SGD from scratch (stage 0) and from the GHN's parameters
    (stage 1), on the same batches, measuring test accuracy every ``eval_every`` steps."""

    def __init__(self, run: Run, index: int):
        self.run, self.cfg, self.key = run, run.cfg, f"arch {index + 1:02d}"
        self.group, self.arch = run.heldout[index]
        run.ctx.seed_everything("init", self.key)
        self.net = self.arch.build()
        self.curve: list[list[float]] = []

    def _acc(self, weights: Mapping[str, torch.Tensor] | None = None) -> float:
        with torch.no_grad():
            if weights is None:
                return accuracy(self.net(self.run.x_test), self.run.y_test)
            return accuracy(Target(self.net)(weights, self.run.x_test), self.run.y_test)

    def start_stage(self, stage: int, fresh: bool) -> torch.optim.Optimizer:
        if fresh and stage == 0:
            target, rec = Target(self.net), self.run.record(self.key)
            rec.update(
                group=self.group, arch=self.arch.describe(), params=sum(p.numel() for p in self.net.parameters())
            )
            rec["random_init"] = self._acc()
            for kind in ("ghn", "mlp"):
                rec[kind] = self._acc(self.run.predictor(kind)(self.arch, target))
        if fresh:
            if stage == 1:  # start from the GHN's parameters
                target = Target(self.net)
                with torch.no_grad():
                    weights = self.run.predictor("ghn")(self.arch, target)
                self.net.load_state_dict({k: v.detach() for k, v in weights.items()}, strict=False)
            self.curve = [[0, self._acc()]]
        self.opt = torch.optim.SGD(self.net.parameters(), self.cfg.lr, momentum=0.9)
        return self.opt

    def steps(self, stage: int) -> int:
        return -(-len(self.run.x_train) // self.cfg.batch_size)

    def train_epoch(self, stage: int, epoch: int, tick) -> dict[str, float]:
        r, total = self.run, 0.0
        self.net.train()
        for i, idx in enumerate(torch.randperm(len(r.x_train), generator=r.ctx.generator("batches", self.key, epoch)).split(self.cfg.batch_size)):  # fmt: skip
            loss = F.cross_entropy(self.net(r.x_train[idx]), r.y_train[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total += loss.item()
            step = epoch * self.steps(stage) + i + 1
            if step % self.cfg.eval_every == 0 or (epoch + 1 == self.cfg.train_epochs and i + 1 == self.steps(stage)):
                self.curve.append([step, self._acc()])
            tick()
        if stage == 0 and epoch == 0:
            self.run.record(self.key)["one_epoch_sgd"] = self._acc()
        return {"loss": total / self.steps(stage)}

    def end_stage(self, stage: int, results: dict[str, Any]) -> str:
        rec = self.run.record(self.key)
        rec["scratch_curve" if stage == 0 else "finetune_curve"] = [list(p) for p in self.curve]
        if stage == 0:
            rec["scratch"] = self.curve[-1][1]
            return f"{self.arch.describe()}: from scratch {100 * rec['scratch']:.1f}%"
        steps, accs = zip(*self.curve)
        rec["steps_scratch"] = steps_to_reach(*map(list, zip(*rec["scratch_curve"])), rec["scratch"])
        rec["steps_finetune"] = steps_to_reach(list(steps), list(accs), rec["scratch"])
        return f"GHN {100 * rec['ghn']:.1f}%, fine-tuned {100 * accs[-1]:.1f}%, steps to {100 * rec['scratch']:.1f}%: {rec['steps_finetune']} vs {rec['steps_scratch']}"  # fmt: skip

    def end_unit(self, results: dict[str, Any]) -> None:
        pass

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return dict(self.net.state_dict()), {"curve": self.curve}

    def load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        self.net.load_state_dict(tensors)
        self.curve = [list(p) for p in meta["curve"]]


class Run:
    """What every unit shares: config, images, architectures (with their targets), the trained
    hypernetworks (loaded from the run folder on resume) and the results."""

    def __init__(self, cfg: NASConfig, ctx: RunContext):
        self.cfg, self.ctx = cfg, ctx
        self.x_train, self.y_train, self.x_test, self.y_test = load_images(cfg, ctx.seed)
        train, self.heldout = architectures(cfg, ctx.derive_seed("architectures"), self.x_train.shape[1], 10)
        with torch.random.fork_rng(devices=[]):  # the targets' own weights are never used
            self.train = [(a, Target(a.build())) for a in train]
        self.models: dict[str, nn.Module] = {}
        self.predictors: dict[str, Predictor] = {}
        self.results: dict[str, Any] = {"train_archs_acc": {}, "heldout": {}}

    def record(self, key: str) -> dict[str, Any]:
        return self.results["heldout"].setdefault(key, {})

    def predictor(self, kind: str) -> Predictor:
        if kind not in self.predictors:
            hnet = self.models.get(kind) or load_model(self.ctx.out, kind)
            self.predictors[kind] = Predictor(self.cfg, kind, hnet.eval())
        return self.predictors[kind]

    def build(self, unit: Unit) -> Work:
        if unit.key in ("ghn", "mlp"):
            return HypernetWork(self, unit.key)
        return ArchWork(self, int(unit.key.split()[1]) - 1)


def run_nas(cfg: NASConfig, ctx: RunContext) -> Outcome:
    """The ``nas`` recipe: both hypernetworks, the held-out architectures, the report."""
    run = Run(cfg, ctx)
    ctx.log(
        f"{cfg.data}: {len(run.x_train)} train / {len(run.x_test)} test images; {len(run.train)} training "
        f"architectures, {len(run.heldout)} held out ({', '.join(f'{sum(g == x for x, _ in run.heldout)} {g}' for g in GROUPS)})"  # fmt: skip
    )
    if ctx.resumed is not None:  # the loop continues with the checkpoint's results
        run.results = ctx.resumed.state["results"]
    done = run_units(ctx, plan(cfg), run.build, run.results, checkpoint_every=cfg.checkpoint_every)
    return report(cfg, ctx, done)


# ====================================================================== checks, saved models, registration
def check_config(cfg: NASConfig) -> None:
    """Refuse what the data cannot hold, before anything is written."""
    problem = DATASETS.get(cfg.data).problem(cfg.data_root)
    if problem is not None:
        raise UsageError(f"--data {cfg.data}: {problem}")
    if cfg.heldout + cfg.deeper + cfg.wider < 2:
        raise UsageError("--heldout/--deeper/--wider: expected at least 2 held-out architectures (for Kendall's tau)")


def build_model(cfg: NASConfig, name: str, info: Mapping[str, Any]) -> nn.Module:
    """The untrained hypernetwork a ``nas`` run saved: ``"ghn"`` or ``"mlp"``."""
    if name not in ("ghn", "mlp"):
        raise CheckpointError(f"the nas recipe saves 'ghn' and 'mlp'; got {name!r}")
    return build_hypernet(cfg, name)


RECIPE = register_recipe(
    Recipe(
        name="nas",
        summary="graph hypernetwork: parameters for unseen architectures vs random init, 1 epoch SGD, MLP hypernet",
        config=NASConfig,
        run=run_nas,
        check=check_config,
        build_model=build_model,
        threads=1,
        requires={"matplotlib": "apps", "scipy": "arch"},
        **resumable(plan),
        data_parallel="it clips the gradient between the backward pass and the step",
    )
)
