"""Zero-shot learning with a hypernetwork that reads class descriptions (``hyperdnn run zeroshot``).

Recognise classes never seen in training from their descriptions alone. The hypernetwork method
(:class:`~hyperdnn.methods.HypernetZeroShot`, after Text2Model, Amosy et al.) embeds a class's
description with a :class:`~hyperdnn.DescriptionEncoder` and writes that class's linear scorer
on the features of a CNN trained with it. The baselines, from the same backbone initialisation
and the same batches (:mod:`hyperdnn.baselines`): a DeViSE-style compatibility model (Frome et
al., 2013), whose classifier is a fixed linear function of the description, and direct attribute
prediction (DAP, Lampert et al., 2009). The data: the glyphs (:mod:`hyperdnn.data.glyphs`), each
class described by its Unicode name as ``script:``, ``case:``, ``letter:`` and ``mark:`` words;
the unseen classes are drawn at random among those whose every word some seen class has (an
unseen "capital E with acute" is described by words seen in "capital A with acute", "small e"
...). AwA2's features and attributes from local files with ``--data awa2`` (its 10 test classes
are the unseen ones).

The story below: the config; the data (seen and unseen classes, the seen classes' images split
into training and test); the methods; the loop (each method trained on the seen classes,
then tested on the unseen classes among themselves and on held-out images of the seen classes);
the report (a table, a bar chart, training curves).

Example (a per-class accuracy: each class counts the same)::

    >>> import torch
    >>> from hyperdnn.recipes.zeroshot import class_accuracy
    >>> class_accuracy(torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 1, 1]))
    0.75

Run::

    hyperdnn run zeroshot                                 # glyphs: hypernetwork, DeViSE, DAP
    hyperdnn run zeroshot --quick                         # a smoke run in well under a minute
    hyperdnn run zeroshot --unseen 0.2
    hyperdnn run zeroshot --pooling mean --embed_dim 64 --dropout 0   # the first defaults: 14-16 points lower
    hyperdnn run zeroshot --data awa2 --data-root ~/data/Animals_with_Attributes2

Each run writes summary.md (top-1 accuracy on the unseen and on the seen classes), results.json,
accuracy.png, training_loss.png, unseen.png and the trained hypernetwork (hnet.safetensors;
hyperdnn.engine.load_model(out, "hnet")).

Expected (docs/zeroshot.md has the tables of two seeds): with one thread the default run takes
about 8 minutes (7.7 minutes of CPU time, 5.4 of them the hypernetwork's); on the 222 unseen
classes the hypernetwork is best (66.5-67.4%), 7 to 10 points above the DeViSE-style model
(56.6-60.1%), direct attribute prediction last (29.2-30.9%).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from hyperdnn.baselines import DeViSE, DirectAttributePrediction
from hyperdnn.data import ClassData, split_classes
from hyperdnn.data.glyphs import SCRIPTS
from hyperdnn.engine.config import option
from hyperdnn.engine.errors import CheckpointError, UsageError
from hyperdnn.engine.loop import LoopResult, Unit, resumable, run_units
from hyperdnn.engine.registry import Recipe, register_recipe
from hyperdnn.engine.report import Column, Report, Table, bar_chart_figure, image_grid_figure, learning_curves_figure
from hyperdnn.engine.run import Outcome, RunContext
from hyperdnn.methods import HypernetZeroShot, ZeroShotLearner
from hyperdnn.networks import embedding_net
from hyperdnn.recipes._class_data import (
    LearnerWork,
    check_class_data,
    glyph_classes,
    load_class_data,
    saved_shape,
    settle_config,
)

__all__ = ["ZeroShotConfig", "METHODS", "QUICK", "Split", "load_split", "make_learner", "plan", "class_accuracy"]
__all__ += ["run_zeroshot", "build_model", "check_config", "RECIPE"]

#: the methods of a run
METHODS = {
    "hnet": "hypernetwork (description -> classifier)",
    "devise": "DeViSE-style compatibility",
    "dap": "direct attribute prediction",
}
#: the --quick preset (a smoke run in well under a minute)
QUICK = {"scripts": ("armenian", "georgian"), "samples": 6, "channels": 8, "epochs": 2, "batch_size": 64,
         "embed_dim": 8, "trunk": (16,), "unseen": 0.25}  # fmt: skip


# ====================================================================== the config
@dataclass
class ZeroShotConfig:
    """Options of ``hyperdnn run zeroshot`` (see ``hyperdnn run zeroshot --help``)."""

    data: str = option("glyphs", "classes with descriptions: glyphs (offline) or awa2 (local files)")
    data_root: str = option("", "folder of the data set's files (awa2)")
    scripts: tuple[str, ...] = option(SCRIPTS, "the glyphs' scripts", choices=SCRIPTS, nonempty=True, distinct=True)
    samples: int = option(20, "images per glyph class (fonts under random jitter)", low=2)
    unseen: float = option(0.15, "share of classes held out as unseen (a data set's own split wins)", above=0, below=1)  # fmt: skip
    seen_test: float = option(0.2, "share of each seen class's images held out to test the seen classes", above=0, below=1)  # fmt: skip
    methods: tuple[str, ...] = option(tuple(METHODS), "methods to run", choices=tuple(METHODS), nonempty=True, distinct=True)  # fmt: skip
    channels: int = option(32, "channels of the four-block CNN every method embeds images with", low=1)
    epochs: int = option(8, "passes over the seen classes' training images", low=1)
    batch_size: int = option(128, "images per step", low=1)
    lr: float = option(1e-3, "Adam learning rate of every method", above=0)
    embed_dim: int = option(384, "width of the hypernetwork's description encoder", low=1)
    pooling: str = option("attention", "how the description encoder pools a description's words", choices=("mean", "attention"))  # fmt: skip
    heads: int = option(4, "attention heads of the description encoder (--pooling attention)", low=1)
    trunk: tuple[int, ...] = option((256,), "hidden widths of the hypernetwork's MLP trunk", low=1, nonempty=True)
    dropout: float = option(0.2, "dropout after each hidden layer of the hypernetwork's trunk, in training", low=0, below=1)  # fmt: skip
    checkpoint_every: int = option(1, "also checkpoint every N epochs inside a unit (0: only between units)", low=0)
    quick: bool = option(False, f"a smoke run (options left at their defaults): {', '.join(f'{k} {v}' for k, v in QUICK.items())}")  # fmt: skip

    def __post_init__(self) -> None:
        settle_config(self, QUICK)
        if self.pooling == "attention" and self.embed_dim % self.heads:
            raise ValueError(f"--heads: expected a divisor of --embed_dim {self.embed_dim}, got {self.heads}")


# ====================================================================== the data
@dataclass(frozen=True)
class Split:
    """The run's classes: ``seen`` and ``unseen`` (indices of the data set), the seen classes'
    training and test examples (``train``, ``seen_test``: indices of examples) and the unseen
    classes' examples (``unseen_test``)."""

    seen: list[int]
    unseen: list[int]
    train: torch.Tensor
    seen_test: torch.Tensor
    unseen_test: torch.Tensor


def load_split(cfg: ZeroShotConfig, data: ClassData, seed: int) -> Split:
    """Unseen classes (the data set's own, else ``--unseen`` of those described by seen words),
    and ``--seen_test`` of every seen class's examples held out."""
    if data.test_classes is not None:
        unseen = sorted(data.test_classes)
        seen = [c for c in range(data.num_classes) if c not in set(unseen)]
    else:
        try:
            seen, unseen = split_classes(data, cfg.unseen, seed, seen_words=True)
        except ValueError as e:
            raise UsageError(f"--unseen: {e}") from None
    g = torch.Generator().manual_seed(seed % 2**63)
    train, held = [], []
    for c in seen:
        rows = (data.y == c).nonzero()[:, 0]
        rows = rows[torch.randperm(len(rows), generator=g)]
        cut = min(len(rows) - 1, max(1, round(len(rows) * cfg.seen_test)))
        held.append(rows[:cut])
        train.append(rows[cut:])
    unseen_rows = torch.isin(data.y, torch.tensor(unseen)).nonzero()[:, 0]
    return Split(seen, unseen, torch.cat(train), torch.cat(held), unseen_rows)


# ====================================================================== the methods
def make_learner(method: str, cfg: ZeroShotConfig, shape: tuple[int, ...], vocabulary: tuple[str, ...]) -> ZeroShotLearner:  # fmt: skip
    """The learner of ``method`` on examples of ``shape``, describing classes in ``vocabulary``."""
    net, features = embedding_net(shape, cfg.channels)
    if method == "hnet":
        return HypernetZeroShot(
            net, features, shape, vocabulary, cfg.embed_dim, cfg.pooling, cfg.trunk, cfg.heads, cfg.dropout
        )
    if method == "devise":
        return DeViSE(net, features, shape, vocabulary)
    return DirectAttributePrediction(net, features, shape, vocabulary)


def class_accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy averaged over classes (each class counts the same, as zero-shot papers
    report): ``scores (N, C)``, ``labels (N,)`` in ``[0, C)``."""
    hits = (scores.argmax(1) == labels).double()
    per_class = [hits[labels == c].mean() for c in labels.unique()]
    return float(torch.stack(per_class).mean())


# ====================================================================== the loop
def plan(cfg: ZeroShotConfig) -> list[Unit]:
    """One unit per method, trained for ``--epochs`` on the seen classes."""
    return [Unit(m, ("",), cfg.epochs) for m in METHODS if m in cfg.methods]


class SeenClassesWork(LearnerWork):
    """One learner trained on the seen classes, then tested on the unseen and the seen ones."""

    def __init__(self, ctx: RunContext, cfg: ZeroShotConfig, data: ClassData, split: Split, unit: Unit):
        self.ctx, self.cfg, self.data, self.split, self.key = ctx, cfg, data, split, unit.key
        ctx.seed_everything("init")  # every method's backbone starts from the same weights
        self.learner = make_learner(unit.key, cfg, data.shape, data.vocabulary).to(ctx.device)
        self.seen_descriptions = [data.descriptions[c] for c in split.seen]  # type: ignore[index]
        self.label = torch.full((data.num_classes,), -1, dtype=torch.long)
        self.label[torch.tensor(split.seen)] = torch.arange(len(split.seen))
        self.label[torch.tensor(split.unseen)] = torch.arange(len(split.unseen))
        self.curve: list[float] = []

    def start_stage(self, stage: int, fresh: bool) -> torch.optim.Optimizer:
        return self.ctx.prepare_optimizer(super().start_stage(stage, fresh))  # data-parallel under torchrun

    def steps(self, stage: int) -> int:
        return -(-len(self.split.train) // self.cfg.batch_size)

    def train_epoch(self, stage: int, epoch: int, tick) -> dict[str, float]:
        order = self.split.train[torch.randperm(len(self.split.train), generator=self.ctx.generator("batches", epoch))]
        self.learner.train()
        total = 0.0
        for rows in map(self.ctx.shard, order.split(self.cfg.batch_size)):  # this process's rows
            x, y = self.data.x[rows].to(self.ctx.device), self.label[self.data.y[rows]].to(self.ctx.device)
            total += self.learner.train_step(x, y, self.seen_descriptions, self.optimizer)["loss"]
            tick()
        self.curve.append(total / self.steps(stage))
        return {"loss": self.curve[-1]}

    @torch.no_grad()
    def accuracy(self, rows: torch.Tensor, classes: list[int]) -> float:
        """Top-1 accuracy (averaged over classes) of examples ``rows`` among ``classes``."""
        self.learner.eval()
        descriptions = [self.data.descriptions[c] for c in classes]  # type: ignore[index]
        scores = torch.cat([self.learner.scores(self.data.x[r].to(self.ctx.device), descriptions).cpu() for r in rows.split(512)])  # fmt: skip
        return class_accuracy(scores, self.label[self.data.y[rows]])

    def end_stage(self, stage: int, results: dict[str, Any]) -> str:
        unseen = self.accuracy(self.split.unseen_test, self.split.unseen)
        seen = self.accuracy(self.split.seen_test, self.split.seen)
        results["accuracy"][self.key] = {"unseen": unseen, "seen": seen}
        results["curves"][self.key] = list(self.curve)
        return f"unseen {100 * unseen:.1f}%  seen {100 * seen:.1f}%"

    def end_unit(self, results: dict[str, Any]) -> None:
        results["parameters"][self.key] = sum(p.numel() for p in self.learner.parameters())
        if self.key == "hnet":
            info = {"shape": list(self.data.shape), "vocabulary": list(self.data.vocabulary)}
            self.ctx.log(f"saved the hypernetwork: {self.ctx.save_model(self.learner, 'hnet', info)}")


def run_zeroshot(cfg: ZeroShotConfig, ctx: RunContext) -> Outcome:
    """The ``zeroshot`` recipe: every method on the seen classes, tested on the unseen ones."""
    data = load_class_data(cfg.data, cfg.data_root, cfg.samples, cfg.scripts, ctx.derive_seed("classes"))
    if data.descriptions is None:
        raise UsageError(f"--data: {cfg.data!r} describes no class; zero-shot learning needs descriptions")
    split = load_split(cfg, data, ctx.derive_seed("classes"))
    ctx.log(
        f"{data.name}: {len(split.seen)} seen classes ({len(split.train)} training, {len(split.seen_test)} test "
        f"images), {len(split.unseen)} unseen ({len(split.unseen_test)} images); {len(data.vocabulary)} description words"
    )
    results: dict[str, Any] = {"accuracy": {}, "curves": {}, "parameters": {}}
    done = run_units(ctx, plan(cfg), lambda u: SeenClassesWork(ctx, cfg, data, split, u), results, checkpoint_every=cfg.checkpoint_every)  # fmt: skip
    return report(cfg, ctx, data, split, done)


# ====================================================================== the report
def report(cfg: ZeroShotConfig, ctx: RunContext, data: ClassData, split: Split, done: LoopResult) -> Outcome:
    """summary.md (the table, the bar chart, training curves, unseen classes) and the metrics."""
    res, methods = done.results, [m for m in METHODS if m in cfg.methods]
    rep = Report(ctx, f"zeroshot: {data.name}, seed {ctx.seed}")
    rep.text(
        f"{data.name}: {len(split.seen)} seen and {len(split.unseen)} unseen classes, described by "
        f"{len(data.vocabulary)} words. Every method embeds with the same initial backbone ({cfg.channels} channels) "
        f"and trains {cfg.epochs} epochs on the seen classes' images (batch {cfg.batch_size}, Adam lr {cfg.lr}). "
        f"Hypernetwork: description encoder of width {cfg.embed_dim} ({cfg.pooling} pooling), trunk "
        f"{','.join(map(str, cfg.trunk))}{f', dropout {cfg.dropout}' if cfg.dropout else ''}.\n"
        "Unseen: top-1 accuracy on the unseen classes' images, among the unseen classes; seen: on held-out images "
        "of the seen classes, among the seen classes; both averaged over classes."
    )
    table = Table([Column("method"), Column("unseen (%)", "unseen", ".1f", scale=100), Column("seen (%)", "seen", ".1f", scale=100),  # fmt: skip
                   Column("parameters", "params", ","), Column("time (s)", "time", ".0f")])  # fmt: skip
    for m in methods:
        table.add(method=METHODS[m], **res["accuracy"][m], params=res["parameters"][m], time=done.times[m])
    rep.table(table)
    bars = {side: {m: 100 * res["accuracy"][m][side] for m in methods} for side in ("unseen", "seen")}
    rep.figure(bar_chart_figure(bars, f"{data.name}: top-1 accuracy", "accuracy (%)", fmt=".1f"), "accuracy.png", "accuracy")  # fmt: skip
    curves = {m: [res["curves"][m]] for m in methods}
    figure = learning_curves_figure(curves, "training loss per epoch", ylabel="training loss", scale=1.0, limits=None)
    rep.figure(figure, "training_loss.png", "training loss")
    if len(data.shape) == 3 and data.shape[0] in (1, 3):
        show = split.unseen[:6]
        rows = {data.descriptions[c].replace("script:", "")[:30]: data.x[data.y == c][:6] for c in show}  # type: ignore[index]
        if len({tuple(v.shape) for v in rows.values()}) == 1:
            rep.figure(image_grid_figure(rows, "unseen classes and their descriptions"), "unseen.png", "unseen classes")
    metrics = {"data": data.name, "classes": {"seen": len(split.seen), "unseen": len(split.unseen)},
               "unseen_classes": [data.classes[c] for c in split.unseen], "accuracy": res["accuracy"],
               "parameters": res["parameters"], "time_s": {k: round(v, 2) for k, v in done.times.items()}}  # fmt: skip
    return rep.outcome(metrics)


# ====================================================================== checks, the saved model and registration
def check_config(cfg: ZeroShotConfig) -> None:
    """Refuse, before anything is written, a data set without descriptions or whose files or
    packages are missing, and glyph scripts with too few classes to hold any out."""
    check_class_data(cfg.data, cfg.data_root, descriptions=True)
    if cfg.data == "glyphs" and int(round(glyph_classes(cfg.scripts) * cfg.unseen)) < 2:
        raise UsageError(f"--unseen: {cfg.unseen} of the {glyph_classes(cfg.scripts)} classes of {', '.join(cfg.scripts)} holds out fewer than 2")  # fmt: skip


def build_model(cfg: ZeroShotConfig, name: str, info: Mapping[str, Any]) -> HypernetZeroShot:
    """The untrained hypernetwork a ``zeroshot`` run saves as ``hnet.safetensors``.

    Args:
        cfg: the run's config.
        name: ``"hnet"``.
        info: ``shape`` (one example's) and ``vocabulary`` (the description words).

    Use :func:`hyperdnn.engine.load_model`: ``learner = load_model("runs/zeroshot", "hnet")``, then
    ``learner.scores(x, descriptions)`` gives ``(N, C)`` scores for any classes described in
    that vocabulary.
    """
    if name != "hnet":
        raise CheckpointError(f"the zeroshot recipe saves one model, 'hnet'; got {name!r}")
    shape, vocabulary = saved_shape(info), info.get("vocabulary")
    if not isinstance(vocabulary, list) or not vocabulary or not all(isinstance(w, str) for w in vocabulary):
        raise CheckpointError("the model's info needs vocabulary, a list of words")
    learner = make_learner("hnet", cfg, tuple(shape), tuple(vocabulary))
    assert isinstance(learner, HypernetZeroShot)
    return learner


RECIPE = register_recipe(
    Recipe(
        name="zeroshot",
        summary="zero-shot learning: a hypernetwork writes classifiers from descriptions vs DeViSE-style, DAP",
        config=ZeroShotConfig,
        run=run_zeroshot,
        check=check_config,
        build_model=build_model,
        requires={"matplotlib": "apps", "PIL": "apps"},
        **resumable(plan),
        data_parallel=True,  # through RunContext.prepare_optimizer and RunContext.shard
    )
)
