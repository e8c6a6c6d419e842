"""Few-shot learning with a hypernetwork that reads a support set (``hyperdnn run fewshot``).

N-way K-shot classification of classes never seen in training: each test episode shows
``shots`` examples of ``ways`` new classes (the support set) and asks for the class of
``queries`` more of each. The hypernetwork method (:class:`~hyperdnn.methods.HypernetFewShot`,
after LGM-Net, Li et al. 2019, and HyperShot, Sendera et al. 2023) pools each class's support
embeddings with a :class:`~hyperdnn.SetEncoder` and writes that class's scorer (a centre offset
from the class mean, a weight per feature, a bias). The baselines, from the same backbone
initialisation, the same training episodes (fine-tuning: classification batches of the same
training classes) and the same test episodes (:mod:`hyperdnn.baselines`):
ProtoNet (Snell et al., 2017), first-order MAML (Finn et al., 2017) and fine-tuning a pretrained
feature extractor (Chen et al., 2019). The data: the glyphs (letters of five scripts drawn by
matplotlib's fonts, :mod:`hyperdnn.data.glyphs`), classes split at random into training and test
(Omniglot from local files with ``--data omniglot``: its evaluation alphabets are the test classes).

The story below: the config; the data (classes, split, episodes); the methods (one learner per
unit); the loop (each learner trained on its episodes, then tested on the same 600 episodes per
setting); the report (a table per setting with 95% intervals, a bar chart, training curves, a
test episode).

Example (the units of a plan: a method per setting, fine-tuning once)::

    >>> from hyperdnn.recipes.fewshot import FewShotConfig, plan
    >>> [u.key for u in plan(FewShotConfig(methods=("hnet", "protonet", "finetune")))]
    ['hnet/1-shot', 'protonet/1-shot', 'hnet/5-shot', 'protonet/5-shot', 'finetune']

Run::

    hyperdnn run fewshot                                  # glyphs, 5-way 1-shot and 5-shot
    hyperdnn run fewshot --quick                          # a smoke run in well under a minute
    hyperdnn run fewshot --shots 1 --methods hnet,protonet --pooling attention
    hyperdnn run fewshot --data omniglot --data-root ~/data  # Omniglot from local files

Each run writes summary.md (accuracy with 95% intervals over the test episodes), results.json,
accuracy.png, training_loss.png, episode.png and the trained hypernetworks (hnet-1shot, hnet-5shot
.safetensors; hyperdnn.engine.load_model(out, "hnet-1shot")).

Expected (docs/fewshot.md has the tables of two seeds): with one thread the default run (400
training episodes per method and setting, 800 steps of fine-tuning's one model) took 4.4-4.5
minutes of wall time on the current machine (8.0-8.5 minutes of CPU time on an earlier, slower
one); the hypernetwork is within 0.3 points below ProtoNet or above it (91.9-92.9% at 1-shot,
97.2-97.6% at 5-shot), 4.8-6.2 points above first-order MAML at 1-shot and level with it at
5-shot; fine-tuning a pretrained feature extractor is the best method (95.6-96.3%, 98.9%).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from hyperdnn.baselines import FirstOrderMAML, PretrainedFineTuning, ProtoNet
from hyperdnn.data import ClassData, EpisodeSampler, split_classes
from hyperdnn.data.glyphs import SCRIPTS
from hyperdnn.engine.config import option
from hyperdnn.engine.errors import CheckpointError, UsageError
from hyperdnn.engine.loop import LoopResult, Unit, resumable, run_units
from hyperdnn.engine.registry import Recipe, register_recipe
from hyperdnn.engine.report import Column, Report, Table, bar_chart_figure, image_grid_figure, learning_curves_figure
from hyperdnn.engine.run import Outcome, RunContext
from hyperdnn.methods import FewShotLearner, HypernetFewShot, evaluate_episodes
from hyperdnn.metrics import mean_interval
from hyperdnn.networks import embedding_net
from hyperdnn.recipes._class_data import (
    LearnerWork,
    check_class_data,
    glyph_classes,
    load_class_data,
    saved_shape,
    settle_config,
)

__all__ = ["FewShotConfig", "METHODS", "QUICK", "load_classes", "make_learner", "plan"]
__all__ += ["run_fewshot", "build_model", "check_config", "RECIPE"]

#: the methods of a run
METHODS = {
    "hnet": "hypernetwork (set encoder -> each class's scorer)",
    "protonet": "ProtoNet",
    "maml": "first-order MAML",
    "finetune": "fine-tuning a pretrained feature extractor",
}
#: the --quick preset (a smoke run in well under a minute)
QUICK = {"scripts": ("armenian", "georgian"), "samples": 8, "queries": 3, "shots": (1, 2), "channels": 8, "epochs": 2,
         "episodes": 4, "test_episodes": 10, "trunk": (16,), "maml_test_steps": 2, "finetune_steps": 5}  # fmt: skip


# ====================================================================== the config
@dataclass
class FewShotConfig:
    """Options of ``hyperdnn run fewshot`` (see ``hyperdnn run fewshot --help``)."""

    data: str = option("glyphs", "classes: glyphs (offline), omniglot or another data set with a class-level view")
    data_root: str = option("", "folder of the data set's files (omniglot)")
    scripts: tuple[str, ...] = option(SCRIPTS, "the glyphs' scripts", choices=SCRIPTS, nonempty=True, distinct=True)
    samples: int = option(20, "images per glyph class (fonts under random jitter)", low=2)
    test_classes: float = option(0.3, "share of classes held out for testing (a data set's own split wins)", above=0, below=1)  # fmt: skip
    ways: int = option(5, "classes per episode", low=2)
    shots: tuple[int, ...] = option((1, 5), "support examples per class: one setting each", low=1, nonempty=True, distinct=True)  # fmt: skip
    queries: int = option(15, "query examples per class and episode", low=1)
    methods: tuple[str, ...] = option(tuple(METHODS), "methods to run", choices=tuple(METHODS), nonempty=True, distinct=True)  # fmt: skip
    channels: int = option(32, "channels of the four-block CNN every method embeds images with", low=1)
    epochs: int = option(8, "training epochs of every method", low=1)
    episodes: int = option(50, "training episodes per epoch (every method the same)", low=1)
    lr: float = option(1e-3, "Adam learning rate of every method", above=0)
    pooling: str = option("mean", "the set encoder's pooling of a class's support set", choices=("mean", "attention"))
    heads: int = option(4, "attention heads of the set encoder (--pooling attention)", low=1)
    trunk: tuple[int, ...] = option((256,), "hidden widths of the hypernetwork's MLP trunk", low=1, nonempty=True)
    maml_lr: float = option(0.1, "first-order MAML's inner step size", above=0)
    maml_steps: int = option(5, "first-order MAML's inner steps in training", low=1)
    maml_test_steps: int = option(10, "first-order MAML's inner steps at test time", low=1)
    finetune_steps: int = option(100, "Adam steps that fit the fine-tuned classifier of a test episode", low=1)
    finetune_lr: float = option(0.01, "their learning rate", above=0)
    test_episodes: int = option(600, "test episodes per setting (the same for every method)", low=2)
    checkpoint_every: int = option(1, "also checkpoint every N epochs inside a unit (0: only between units)", low=0)
    quick: bool = option(False, f"a smoke run (options left at their defaults): {', '.join(f'{k} {v}' for k, v in QUICK.items())}")  # fmt: skip

    def __post_init__(self) -> None:
        settle_config(self, QUICK)
        if self.pooling == "attention" and self.channels % self.heads:
            raise ValueError(f"--heads: expected a divisor of --channels {self.channels}, got {self.heads}")
        self.shots = tuple(sorted(self.shots))


# ====================================================================== the data
def load_classes(cfg: FewShotConfig, seed: int) -> tuple[ClassData, list[int], list[int]]:
    """The run's classes and their split: ``(data, training classes, test classes)`` (a data
    set's own test classes, else ``--test_classes`` of them at random)."""
    data = load_class_data(cfg.data, cfg.data_root, cfg.samples, cfg.scripts, seed)
    if data.test_classes is not None:
        test = sorted(data.test_classes)
        return data, [c for c in range(data.num_classes) if c not in set(test)], test
    train, test = split_classes(data, cfg.test_classes, seed)
    return data, train, test


# ====================================================================== the methods
def make_learner(method: str, cfg: FewShotConfig, shape: tuple[int, ...], train: list[int]) -> FewShotLearner:
    """The learner of ``method`` on examples of ``shape`` (``train``: the training classes)."""
    net, features = embedding_net(shape, cfg.channels)
    if method == "hnet":
        return HypernetFewShot(net, features, shape, cfg.ways, cfg.pooling, cfg.trunk, cfg.heads)
    if method == "protonet":
        return ProtoNet(net, shape, cfg.ways)
    if method == "maml":
        classifier = nn.Sequential(net, nn.Linear(features, cfg.ways))
        return FirstOrderMAML(classifier, shape, cfg.ways, cfg.maml_lr, cfg.maml_steps, cfg.maml_test_steps)
    return PretrainedFineTuning(net, features, shape, cfg.ways, train, cfg.finetune_steps, cfg.finetune_lr)


# ====================================================================== the loop
def plan(cfg: FewShotConfig) -> list[Unit]:
    """A unit per method and setting (``"hnet/1-shot"``); fine-tuning once (its training does not
    depend on the shots), tested in every setting, on as many episodes as every other method
    trains on over the settings (``epochs`` per setting)."""
    keys = [f"{m}/{k}-shot" for k in cfg.shots for m in cfg.methods if m != "finetune"]
    units = [Unit(key, ("",), cfg.epochs) for key in keys]
    return units + ([Unit("finetune", ("",), cfg.epochs * len(cfg.shots))] if "finetune" in cfg.methods else [])


class EpisodeWork(LearnerWork):
    """One learner trained on its episodes, then tested on the run's test episodes."""

    def __init__(self, ctx: RunContext, cfg: FewShotConfig, data: ClassData, split: tuple[list[int], list[int]], unit: Unit):  # fmt: skip
        self.ctx, self.cfg, self.data, self.key = ctx, cfg, data, unit.key
        method, _, setting = unit.key.partition("/")
        self.shots = [int(setting.split("-")[0])] if setting else list(cfg.shots)
        ctx.seed_everything("init")  # every method's backbone starts from the same weights
        self.learner = make_learner(method, cfg, data.shape, split[0]).to(ctx.device)
        if method == "finetune":  # the same images per step, two of each of many classes: classification batches
            spread = min(len(split[0]), cfg.ways * (max(self.shots) + cfg.queries) // 2)
            self.train_sampler = EpisodeSampler(data, split[0], max(2, spread), 1, 1)
        else:
            self.train_sampler = EpisodeSampler(data, split[0], cfg.ways, max(self.shots), cfg.queries)
        self.test, self.curve = split[1], []

    def steps(self, stage: int) -> int:
        return self.cfg.episodes

    def train_epoch(self, stage: int, epoch: int, tick) -> dict[str, float]:
        # the same training episodes for every episodic method of a setting (paired comparisons);
        # fine-tuning's classification batches are drawn from its own stream
        g = self.ctx.generator("episodes", self.key.split("/")[-1], epoch)
        self.learner.train()
        total = 0.0
        for _ in range(self.cfg.episodes):
            episode = self.train_sampler.sample(g).to(self.ctx.device)
            total += self.learner.train_step(episode, self.optimizer)["loss"]
            tick()
        self.curve.append(total / self.cfg.episodes)
        return {"loss": self.curve[-1]}

    def end_stage(self, stage: int, results: dict[str, Any]) -> str:
        method, texts = self.key.split("/")[0], []
        for k in self.shots:
            sampler = EpisodeSampler(self.data, self.test, self.cfg.ways, k, self.cfg.queries)
            g = self.ctx.generator("test episodes", k)  # the same episodes for every method
            accs = evaluate_episodes(self.learner, sampler, self.cfg.test_episodes, g, self.ctx.device)
            mean, half = mean_interval(accs)
            results["accuracy"].setdefault(method, {})[f"{k}-shot"] = {"mean": mean, "ci95": half, "episodes": accs.tolist()}  # fmt: skip
            texts.append(f"{k}-shot {100 * mean:.1f} +- {100 * half:.1f}%")
        results["curves"][self.key] = list(self.curve)
        return "  ".join(texts)

    def end_unit(self, results: dict[str, Any]) -> None:
        results["parameters"][self.key] = sum(p.numel() for p in self.learner.parameters())
        if isinstance(self.learner, HypernetFewShot):
            info = {"shape": list(self.data.shape)}
            name = f"hnet-{self.shots[0]}shot"
            self.ctx.log(f"saved the hypernetwork: {self.ctx.save_model(self.learner, name, info)}")


def run_fewshot(cfg: FewShotConfig, ctx: RunContext) -> Outcome:
    """The ``fewshot`` recipe: every method on its episodes, tested on the same episodes."""
    data, train, test = load_classes(cfg, ctx.derive_seed("classes"))
    check_sizes(cfg, len(train), len(test))
    ctx.log(
        f"{data.name}: {data.num_classes} classes ({len(train)} training, {len(test)} test), {len(data.y)} examples "
        f"of shape {data.shape}; {cfg.ways}-way {', '.join(map(str, cfg.shots))}-shot; units {', '.join(u.key for u in plan(cfg))}"  # fmt: skip
    )
    results: dict[str, Any] = {"accuracy": {}, "curves": {}, "parameters": {}}
    done = run_units(ctx, plan(cfg), lambda u: EpisodeWork(ctx, cfg, data, (train, test), u), results, checkpoint_every=cfg.checkpoint_every)  # fmt: skip
    return report(cfg, ctx, data, (train, test), done)


# ====================================================================== the report
def report(cfg: FewShotConfig, ctx: RunContext, data: ClassData, split: tuple[list[int], list[int]], done: LoopResult) -> Outcome:  # fmt: skip
    """summary.md (a table per setting, the bar chart, training curves, a test episode) and the metrics."""
    res, methods = done.results, [m for m in METHODS if m in cfg.methods]
    rep = Report(ctx, f"fewshot: {data.name}, {cfg.ways}-way, seed {ctx.seed}")
    rep.text(
        f"{data.name}: {len(split[0])} training and {len(split[1])} test classes. Every method embeds with a "
        f"four-block CNN of {cfg.channels} channels from the same initialisation, trains {cfg.epochs} x {cfg.episodes} "
        f"episodes per setting ({cfg.ways}-way, {cfg.queries} queries per class; fine-tuning, one model for every setting, "
        f"{cfg.epochs * len(cfg.shots)} x {cfg.episodes} steps that classify as many images, two of each of many classes, among all training classes) with Adam at lr {cfg.lr}, and is tested on the same {cfg.test_episodes} episodes of test "
        f"classes per setting. Hypernetwork: {cfg.pooling} pooling, trunk {','.join(map(str, cfg.trunk))}. First-order "
        f"MAML: {cfg.maml_steps} inner steps of {cfg.maml_lr} ({cfg.maml_test_steps} at test). Fine-tuning: "
        f"{cfg.finetune_steps} Adam steps of lr {cfg.finetune_lr} on a new linear classifier.\n"
        "Accuracy: mean over the test episodes, with the half-width of its 95% interval."
    )
    bars: dict[str, dict[str, float]] = {}
    errors: dict[str, dict[str, float]] = {}
    for k in cfg.shots:
        table = Table([Column("method"), Column("accuracy (%)", "mean", ".1f", scale=100), Column("95% interval (+-)", "ci95", ".1f", scale=100),  # fmt: skip
                       Column("parameters", "params", ","), Column("time (s)", "time", ".0f")])  # fmt: skip
        for m in methods:
            got = res["accuracy"][m][f"{k}-shot"]
            key = "finetune" if m == "finetune" else f"{m}/{k}-shot"
            table.add(method=METHODS[m], mean=got["mean"], ci95=got["ci95"], params=res["parameters"][key], time=done.times[key])  # fmt: skip
            bars.setdefault(f"{k}-shot", {})[m] = 100 * got["mean"]
            errors.setdefault(f"{k}-shot", {})[m] = 100 * got["ci95"]
        rep.section(f"{cfg.ways}-way {k}-shot")
        rep.table(table)
    title = f"{data.name}: {cfg.ways}-way accuracy on test classes (95% intervals)"
    rep.figure(bar_chart_figure(bars, title, "accuracy (%)", errors, zoom=True, fmt=".1f"), "accuracy.png", "accuracy")
    curves = {key: [c] for key, c in res["curves"].items()}
    figure = learning_curves_figure(curves, "training loss per epoch", ylabel="training loss", scale=1.0, limits=None)
    rep.figure(figure, "training_loss.png", "training loss")
    sampler = EpisodeSampler(data, split[1], cfg.ways, max(cfg.shots), 1)
    episode = sampler.sample(ctx.generator("test episodes", max(cfg.shots)))
    if len(data.shape) == 3 and data.shape[0] in (1, 3):
        rows = {_short(data.classes[int(c)]): s for c, s in zip(episode.classes, episode.support)}
        rep.figure(image_grid_figure(rows, "a test episode's support set"), "episode.png", "a test episode")
    summary = {m: {s: {"mean": v["mean"], "ci95": v["ci95"]} for s, v in res["accuracy"][m].items()} for m in methods}
    metrics = {"data": data.name, "classes": {"train": len(split[0]), "test": len(split[1])}, "accuracy": summary,
               "episodes": {m: {s: v["episodes"] for s, v in res["accuracy"][m].items()} for m in methods},
               "parameters": res["parameters"], "time_s": {k: round(v, 2) for k, v in done.times.items()}}  # fmt: skip
    return rep.outcome(metrics)


def _short(name: str, width: int = 26) -> str:
    return name if len(name) <= width else "..." + name[3 - width :]


# ====================================================================== checks, the saved model and registration
def check_config(cfg: FewShotConfig) -> None:
    """Refuse, before anything is written, a data set without a class-level view or whose files
    or packages are missing, and glyph sizes the episodes cannot hold."""
    check_class_data(cfg.data, cfg.data_root, descriptions=False)
    if cfg.data == "glyphs":
        if cfg.samples < max(cfg.shots) + cfg.queries:
            raise UsageError(f"--samples: an episode needs shots + queries = {max(cfg.shots) + cfg.queries} images per class, got {cfg.samples}")  # fmt: skip
        classes = glyph_classes(cfg.scripts)
        held = int(round(classes * cfg.test_classes))
        check_sizes(cfg, classes - held, held)


def check_sizes(cfg: FewShotConfig, train: int, test: int) -> None:
    """``--ways`` must fit the training and the test classes."""
    if min(train, test) < cfg.ways:
        raise UsageError(f"--ways: expected at most the classes of each side ({train} training, {test} test), got {cfg.ways}")  # fmt: skip


def build_model(cfg: FewShotConfig, name: str, info: Mapping[str, Any]) -> HypernetFewShot:
    """The untrained hypernetwork a ``fewshot`` run saves as ``hnet-<K>shot.safetensors``.

    Args:
        cfg: the run's config.
        name: ``"hnet-1shot"``, ``"hnet-5shot"`` ...
        info: ``shape``, one example's shape.

    Use :func:`hyperdnn.engine.load_model`: ``learner = load_model("runs/fewshot", "hnet-1shot")``,
    then ``learner.predict(support, query)`` gives ``(Q, ways)`` logits.
    """
    if not (name.startswith("hnet-") and name.endswith("shot")):
        raise CheckpointError(f"the fewshot recipe saves models 'hnet-<K>shot'; got {name!r}")
    learner = make_learner("hnet", cfg, tuple(saved_shape(info)), [])
    assert isinstance(learner, HypernetFewShot)
    return learner


RECIPE = register_recipe(
    Recipe(
        name="fewshot",
        summary="few-shot learning: a hypernetwork reads the support set vs ProtoNet, first-order MAML, fine-tuning",
        config=FewShotConfig,
        run=run_fewshot,
        check=check_config,
        build_model=build_model,
        requires={"matplotlib": "apps", "PIL": "apps"},
        **resumable(plan),
        data_parallel="its training is episodes of meta-learning, not minibatches of a data set",
    )
)
