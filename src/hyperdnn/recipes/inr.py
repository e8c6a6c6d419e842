"""Implicit neural representations: a hypernetwork writes a SIREN for an image in one pass.

An image is represented by a coordinate network, a SIREN (Sitzmann et al. 2020) that maps a
pixel position to its intensity. The hypernetwork reads the image (an MLP encoder, a
:class:`~hyperdnn.DataEncoder`) and writes every weight of that SIREN in one forward pass, as
functa (Dupont et al. 2022) and Trans-INR (Chen and Wang 2022) do; it is trained on the training
images and asked to represent test images it never saw. Its weights are a learned base plus
generated deltas (the residual form, ``theta = theta0 + delta(image)``). The baselines, on the
same test images:

* a SIREN per image fitted by Adam from a random SIREN initialisation, measured after each of
  ``--fit_steps`` (10, 100, 1000) steps;
* the same fitting from a meta-learned initialisation (Reptile, as in Tancik et al. 2021);
* single-vector modulation (functa's shift modulations): one shared, wider SIREN whose hidden
  biases a linear map of one latent vector per image shifts, with the same encoder and as many
  trainable parameters as the hypernetwork (the width is chosen to match).

Every method reports the PSNR of its reconstructions against the compute spent per image
(FLOPs of its matrix products, and seconds): one forward pass for the two amortised methods,
``k`` forward and backward passes for fitting. The story: the config; the data; the methods;
the loop (each method a unit of :func:`~hyperdnn.engine.run_units`); the report.

Run::

    hyperdnn run inr                    # mnist5k, the default (about 3 minutes of CPU time, one thread)
    hyperdnn run inr --quick            # a smoke run in well under a minute
    hyperdnn run inr --data mnist --data_root ~/data   # full MNIST from local idx files

Writes summary.md (PSNR, FLOPs and seconds per image of every method), results.json,
psnr_vs_compute.png, reconstructions.png (test images and every method's reconstruction) and
hypernetwork.safetensors (load it with hyperdnn.engine.load_model(out, "hypernetwork")).

Expected (seeds 0 and 1, one thread; docs/inr.md has the tables): the hypernetwork reaches
about 16 dB in one pass, above 10 steps of fitting from a random initialisation (about 12 dB)
but far below 100 steps (35-36 dB) and 2.5-2.8 dB below shift modulation (18.5-19 dB); 10
steps from the meta-learned initialisation reach about 18.6 dB. With ``--hidden 128,128,128
--generate first`` (the hypernetwork writes the first layer and the biases, the other weights are
shared) it reaches 18.8 / 19.3 dB, level with the modulation matched to it (18.7 / 19.5 dB).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from hyperdnn import MLP, DataEncoder, HyperModel, HyperNetwork, Once, Target
from hyperdnn.baselines.modulation import shift_modulation
from hyperdnn.data import DATASETS
from hyperdnn.engine.config import apply_preset, option
from hyperdnn.engine.errors import CheckpointError, UsageError
from hyperdnn.engine.loop import LoopResult, Unit, Work, resumable, run_units
from hyperdnn.engine.registry import Recipe, register_recipe
from hyperdnn.engine.report import Column, Report, Table, image_grid_figure, line_chart_figure
from hyperdnn.engine.run import Outcome, RunContext
from hyperdnn.methods.inr import image_values, pixels_at
from hyperdnn.metrics.reconstruction import count_flops, psnr
from hyperdnn.networks import mlp, mlp_parameters
from hyperdnn.recipes._inr_fitted import Fitted, Images, _flat, load_images
from hyperdnn.siren import siren, siren_parameters

__all__ = ["InrConfig", "METHODS", "QUICK", "plan", "build_hypernetwork", "build_modulation", "modulation_width"]
__all__ += ["run_inr", "build_model", "RECIPE"]

#: the methods of a run: unit key -> what it is
METHODS = {
    "hypernetwork": "hypernetwork, one forward pass",
    "modulation": "shift modulation, one forward pass",
    "random init": "fitted from a random init",
    "meta init": "fitted from a meta-learned init",
}
#: the --quick preset (a smoke run in well under a minute)
QUICK = {"train_images": 256, "test_images": 8, "hidden": (16,), "encoder": (64,), "features": 32, "trunk": (32,),
         "epochs": 2, "pixels": 64, "fit_steps": (2, 5), "fit_epochs": 2, "meta_steps": 2, "show": 4}  # fmt: skip


# ====================================================================== the config
@dataclass
class InrConfig:
    """Options of ``hyperdnn run inr`` (see ``hyperdnn run inr --help``)."""

    data: str = option("mnist5k", "images, a data set of hyperdnn.data.list_datasets(): mnist5k, digits, mnist ...")
    data_root: str = option("", "folder of the MNIST idx files for --data mnist (a torchvision root works)")
    train_images: int = option(0, "training images of the amortised methods and Reptile (0: the whole split)", low=0)
    test_images: int = option(64, "test images every method represents (PSNR is their mean)", low=1)
    methods: tuple[str, ...] = option(tuple(METHODS), "methods to run", choices=tuple(METHODS), nonempty=True, distinct=True)  # fmt: skip
    # the SIREN every method represents an image with (the modulation's is wider: same parameters)
    hidden: tuple[int, ...] = option((32, 32), "hidden widths of the SIREN", low=1, nonempty=True)
    omega: float = option(30.0, "SIREN's frequency factor omega, every sine", above=0)
    # the amortised methods: an MLP encoder of the image, a trunk, one linear head
    encoder: tuple[int, ...] = option((512,), "hidden widths of the image encoder MLP", low=1)
    features: int = option(256, "the encoder's output width", low=1)
    trunk: tuple[int, ...] = option((128,), "trunk widths; the last is the modulation's latent width", low=1, nonempty=True)  # fmt: skip
    generate: str = option("all", "SIREN parameters the hypernetwork writes: all, or first (the first layer and every bias; the other weights shared)", choices=("all", "first"))  # fmt: skip
    residual_scale: float = option(0.1, "size of the generated part at initialisation (theta0 + delta)", above=0)
    epochs: int = option(10, "passes over the training images", low=1)
    batch_size: int = option(64, "images per step", low=1)
    lr: float = option(3e-4, "Adam learning rate of encoder, trunk and head (cosine decay to 0)", above=0)
    base_lr: float = option(3e-4, "Adam learning rate of the shared SIREN weights and theta0 (cosine decay)", above=0)
    pixels: int = option(196, "random pixels per image and training step (0: all)", low=0)
    # the fitted baselines
    fit_steps: tuple[int, ...] = option((10, 100, 1000), "Adam steps of per-image fitting at which PSNR is measured", low=1, nonempty=True, distinct=True)  # fmt: skip
    fit_lr: float = option(1e-3, "Adam learning rate of per-image fitting (and of Reptile's inner loop)", above=0)
    fit_epochs: int = option(10, "checkpointed chunks of the fitting (and of meta-learning)", low=1)
    meta_steps: int = option(300, "Reptile meta steps", low=1)
    meta_batch: int = option(16, "images per Reptile meta step", low=1)
    meta_inner: int = option(10, "Adam steps per image in a Reptile meta step", low=1)
    meta_lr: float = option(1e-4, "Reptile's outer Adam learning rate", above=0)
    show: int = option(8, "test images in the reconstruction grid", low=1)
    checkpoint_every: int = option(1, "also checkpoint every N epochs inside a unit (0: only between units)", low=0)
    quick: bool = option(False, f"a smoke run (options left at their defaults): {', '.join(f'{k} {v}' for k, v in QUICK.items())}")  # fmt: skip

    def __post_init__(self) -> None:
        if self.quick:  # the preset's values where the option keeps its default
            apply_preset(self, QUICK)
        if self.data not in DATASETS:
            raise ValueError(f"--data: expected a registered data set, one of {DATASETS.list()}, got {self.data!r}")
        if self.show > self.test_images:
            raise ValueError(f"--show: expected at most --test_images = {self.test_images} images, got {self.show}")
        self.fit_steps = tuple(sorted(self.fit_steps))


# ====================================================================== the methods
def _encoder(cfg: InrConfig, images: Images) -> DataEncoder:
    features = images.train.shape[1]
    return DataEncoder(mlp(features, cfg.encoder, cfg.features), cfg.features, images.train[:64])


def build_hypernetwork(cfg: InrConfig, images: Images) -> HyperModel:
    """The hypernetwork: image -> encoder -> trunk -> one linear head -> the SIREN's weights
    (every one; with ``generate="first"`` the first layer and every bias, the others shared)."""
    target = Target(siren(2, cfg.hidden, images.shape[0], cfg.omega, cfg.omega), _selection(cfg))
    hnet = HyperNetwork(
        target, _encoder(cfg, images), MLP(cfg.trunk), Once(),
        residual="target", learn_theta0=True, residual_scale=cfg.residual_scale,
    )  # fmt: skip
    return HyperModel(hnet, target)


def _selection(cfg: InrConfig) -> list[str] | None:
    """The SIREN parameters the hypernetwork writes: all, or the first layer and every bias."""
    return None if cfg.generate == "all" else ["0.*", "*.bias"]


def hypernetwork_parameters(cfg: InrConfig, features: int, channels: int) -> int:
    """Trainable parameters of :func:`build_hypernetwork`, counted without building it."""
    n = siren_parameters(2, cfg.hidden, channels)
    if cfg.generate == "all":
        generated = n
    else:  # the first layer's weight and every bias
        generated = 2 * cfg.hidden[0] + sum(cfg.hidden) + channels
    shared = mlp_parameters(features, cfg.encoder, cfg.features) + mlp_parameters(cfg.features, cfg.trunk[:-1], cfg.trunk[-1])  # fmt: skip
    return shared + (cfg.trunk[-1] + 1) * generated + n  # head, theta0 and the shared SIREN weights


def modulation_parameters(cfg: InrConfig, features: int, channels: int, width: int) -> int:
    """Trainable parameters of :func:`build_modulation` with SIREN hidden width ``width``."""
    hidden = (width,) * len(cfg.hidden)
    shifts = sum(hidden)
    shared = mlp_parameters(features, cfg.encoder, cfg.features) + mlp_parameters(cfg.features, cfg.trunk[:-1], cfg.trunk[-1])  # fmt: skip
    return shared + (cfg.trunk[-1] + 1) * shifts + siren_parameters(2, hidden, channels)


def modulation_width(cfg: InrConfig, features: int, channels: int) -> int:
    """The modulated SIREN's hidden width whose trainable parameters come closest to the hypernetwork's."""
    budget = hypernetwork_parameters(cfg, features, channels)
    lo, hi = 1, 1
    while modulation_parameters(cfg, features, channels, hi) < budget:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if modulation_parameters(cfg, features, channels, mid) < budget else (lo, mid)
    return min((lo, hi), key=lambda w: abs(modulation_parameters(cfg, features, channels, w) - budget))


def build_modulation(cfg: InrConfig, images: Images) -> HyperModel:
    """Single-vector modulation with as many trainable parameters as the hypernetwork."""
    width = modulation_width(cfg, images.train.shape[1], images.shape[0])
    net = siren(2, (width,) * len(cfg.hidden), images.shape[0], cfg.omega, cfg.omega)
    return shift_modulation(net, _encoder(cfg, images), cfg.trunk[-1], cfg.trunk[:-1], residual_scale=cfg.residual_scale)  # fmt: skip


# ====================================================================== the loop
def plan(cfg: InrConfig) -> list[Unit]:
    """A unit per method: the amortised ones train for ``epochs``; the fitted ones fit in
    ``fit_epochs`` chunks, the meta-learned one after a meta-learning stage."""
    stages = {"meta init": ("meta-learning", "fitting"), "random init": ("fitting",)}
    return [Unit(m, stages.get(m, ("",)), cfg.fit_epochs if m in stages else cfg.epochs) for m in cfg.methods]


class Amortised(Work):
    """The hypernetwork or the modulation, trained to reconstruct the training images, then
    measured on the test images in one forward pass."""

    def __init__(self, ctx: RunContext, cfg: InrConfig, images: Images, key: str):
        ctx.seed_everything("init", key)
        self.ctx, self.cfg, self.images, self.key = ctx, cfg, images, key
        self.model = (build_hypernetwork if key == "hypernetwork" else build_modulation)(cfg, images)
        self.steps_per_epoch = -(-len(images.train) // cfg.batch_size)

    def start_stage(self, stage: int, fresh: bool) -> torch.optim.Optimizer:
        names = {id(p): n for n, p in self.model.named_parameters()}
        base = [p for p in self.model.trainable_parameters() if names[id(p)].startswith(("target.", "hypernet.theta_mean"))]  # fmt: skip
        rest = [p for p in self.model.trainable_parameters() if all(p is not b for b in base)]
        self.optimizer = torch.optim.Adam([{"params": rest, "lr": self.cfg.lr}, {"params": base, "lr": self.cfg.base_lr}])  # fmt: skip
        return self.optimizer

    def steps(self, stage: int) -> int:
        return self.steps_per_epoch

    def train_epoch(self, stage: int, epoch: int, tick) -> dict[str, float]:
        cfg, x, grid = self.cfg, self.images.train, self.images.grid
        order = torch.randperm(len(x), generator=self.ctx.generator("batches", self.key, epoch))
        pick = self.ctx.generator("pixels", self.key, epoch)
        total, T = 0.0, cfg.epochs * self.steps_per_epoch
        for i, idx in enumerate(order.split(cfg.batch_size)):
            t = epoch * self.steps_per_epoch + i  # cosine decay of both learning rates, from the position alone
            for group, lr in zip(self.optimizer.param_groups, (cfg.lr, cfg.base_lr)):
                group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * t / T))
            batch = x[idx]
            if cfg.pixels and cfg.pixels < len(grid):
                coords = grid[torch.rand(len(idx), len(grid), generator=pick).argsort(1)[:, : cfg.pixels]]
            else:
                coords = grid.expand(len(idx), -1, -1)
            loss = (self.model(coords, batch) - pixels_at(batch, coords, self.images.shape)).pow(2).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.item()
            tick()
        return {"mse": total / self.steps_per_epoch}

    def end_stage(self, stage: int, results: dict[str, Any]) -> str:
        x, grid = self.images.test, self.images.grid.expand(len(self.images.test), -1, -1)
        self.model.eval()
        with torch.no_grad():
            start = time.perf_counter()
            pred = self.model(grid, x)
            seconds = time.perf_counter() - start
            flops = count_flops(lambda: self.model(grid, x))
        self.model.train()
        scores = psnr(pred, image_values(x, self.images.shape))
        point = {"steps": 0, "psnr": float(scores.mean()), "psnr_std": float(scores.std()), "flops": flops / len(x),
                 "seconds": seconds / len(x), "reconstruction": _flat(pred[: self.cfg.show])}  # fmt: skip
        results["methods"][self.key] = {"points": [point], "params": self.model.parameter_counts()["trainable"]}
        return f"test PSNR {point['psnr']:.2f} dB"

    def end_unit(self, results: dict[str, Any]) -> None:
        if self.key == "hypernetwork":
            info = {"features": self.images.train.shape[1], "shape": list(self.images.shape)}
            self.ctx.log(f"saved the hypernetwork and its SIREN: {self.ctx.save_model(self.model, 'hypernetwork', info)}")  # fmt: skip

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {k: v.detach() for k, v in self.model.state_dict().items()}, {}

    def load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        self.model.load_state_dict(dict(tensors), strict=True)


def run_inr(cfg: InrConfig, ctx: RunContext) -> Outcome:
    """The ``inr`` recipe: every method on the same test images, then the report."""
    images = load_images(cfg, ctx.seed)
    C, H, W = images.shape
    ctx.log(
        f"{cfg.data}: {len(images.train)} training and {len(images.test)} test images of {C}x{H}x{W}; SIREN "
        f"2-{'-'.join(map(str, cfg.hidden))}-{C} (omega {cfg.omega:g}); methods {', '.join(cfg.methods)}"
    )

    def build(unit: Unit) -> Work:
        return (Amortised if unit.key in ("hypernetwork", "modulation") else Fitted)(ctx, cfg, images, unit.key)

    done = run_units(ctx, plan(cfg), build, {"methods": {}}, checkpoint_every=cfg.checkpoint_every)
    return report(cfg, ctx, images, done)


# ====================================================================== the report
def report(cfg: InrConfig, ctx: RunContext, images: Images, done: LoopResult) -> Outcome:
    """summary.md (the table, the comparisons, PSNR against compute, reconstructions) and results.json."""
    res = done.results["methods"]
    table = Table([Column("method"), Column("steps per image", "steps", ","), Column("PSNR (dB)", "psnr", ".2f"),
                   Column("std over images", "psnr_std", ".2f"), Column("FLOPs per image", "flops", ".3g"),
                   Column("seconds per image", "seconds", ".2g"), Column("trainable parameters", "params", ",")])  # fmt: skip
    rows = []
    for key in cfg.methods:
        for p in res[key]["points"]:
            row = {"method": METHODS[key], "steps": p["steps"], "psnr": p["psnr"], "psnr_std": p["psnr_std"],
                   "flops": p["flops"], "seconds": p["seconds"], "params": res[key]["params"]}  # fmt: skip
            table.add(**row)
            rows.append({**row, "key": key})
    rep = Report(ctx, f"inr: a hypernetwork writes a SIREN per image ({cfg.data}, seed {ctx.seed})")
    width = modulation_width(cfg, images.train.shape[1], images.shape[0])
    rep.text(
        f"{len(images.test)} test images; SIREN 2-{'-'.join(map(str, cfg.hidden))}-{images.shape[0]}, omega {cfg.omega:g}. "
        f"Amortised methods: MLP encoder {'-'.join(map(str, (images.train.shape[1], *cfg.encoder, cfg.features)))}, "
        f"trunk {','.join(map(str, cfg.trunk))}, {cfg.epochs} epochs on {len(images.train)} images; the hypernetwork writes "
        f"{'every SIREN weight' if cfg.generate == 'all' else 'the first layer and every bias (the other weights shared)'}; the modulated "
        f"SIREN has hidden width {width} (as many trainable parameters as the hypernetwork). Fitting: Adam, lr "
        f"{cfg.fit_lr:g}; Reptile: {cfg.meta_steps} meta steps of {cfg.meta_batch} images x {cfg.meta_inner} inner "
        "steps. Fitted methods' parameters: one SIREN per test image. FLOPs: matrix products "
        "(torch.utils.flop_counter), forward and backward for fitting."
    )
    rep.table(table)
    comparisons = _comparisons(rows)
    if comparisons:
        rep.text("\n".join(f"- {c}" for c in comparisons))
    series = {METHODS[k]: ([p["flops"] for p in res[k]["points"]], [p["psnr"] for p in res[k]["points"]]) for k in cfg.methods}  # fmt: skip
    rep.figure(line_chart_figure(series, "PSNR against compute per test image", "FLOPs per image (log)", "PSNR (dB)", logx=True), "psnr_vs_compute.png", "PSNR against compute")  # fmt: skip
    shape = images.shape
    panels = {"test image": images.test[: cfg.show].reshape(-1, *shape)}
    for key in cfg.methods:
        for p in res[key]["points"]:
            label = METHODS[key].split(",")[0] + (f", {p['steps']} steps" if p["steps"] else "")
            panels[label] = torch.tensor(p["reconstruction"]).reshape(cfg.show, shape[1], shape[2], shape[0]).permute(0, 3, 1, 2)  # fmt: skip
    rep.figure(image_grid_figure(panels, "reconstructions of test images"), "reconstructions.png", "reconstructions")  # fmt: skip
    for c in comparisons:
        ctx.log(c)
    return rep.outcome({"rows": rows, "comparisons": comparisons, "modulation_width": width,
                        "time_s": {k: round(v, 2) for k, v in done.times.items()}})  # fmt: skip


def _comparisons(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's two questions, where the run has the methods to answer them."""
    by = {(r["key"], r["steps"]): r["psnr"] for r in rows}
    out = []
    if ("hypernetwork", 0) in by:
        h = by[("hypernetwork", 0)]
        for (key, steps), v in by.items():
            if key == "random init":
                out.append(f"hypernetwork (one pass) vs {steps} steps from a random init: {h - v:+.2f} dB")
        if ("modulation", 0) in by:
            out.append(f"hypernetwork vs shift modulation (same parameters): {h - by[('modulation', 0)]:+.2f} dB")
    return out


# ====================================================================== checks, the saved model, registration
def check(cfg: InrConfig) -> None:
    """Input the run cannot use, found before anything is written (one line): a data set whose
    extra or files are missing, or with fewer images than the run asks for.

    Raises:
        UsageError: naming the option, what was expected and what was given.
    """
    data = DATASETS.get(cfg.data)
    problem = data.problem(cfg.data_root)
    if problem is not None:
        raise UsageError(f"--data {cfg.data}: {problem}")
    wanted = cfg.test_images + max(cfg.train_images, cfg.meta_batch, cfg.batch_size)
    if wanted > data.num_images:
        raise UsageError(
            f"--test_images and --train_images: {cfg.test_images} test and at least {wanted - cfg.test_images} "
            f"training images asked for, {data.num_images} in {cfg.data}"
        )


# ====================================================================== the saved model and registration
def build_model(cfg: InrConfig, name: str, info: Mapping[str, Any]) -> HyperModel:
    """The untrained hypernetwork an ``inr`` run saves as ``hypernetwork.safetensors``.

    Args:
        cfg: the run's config.
        name: ``"hypernetwork"``.
        info: ``features`` (values per image) and ``shape`` (``[C, H, W]``) of the run's images.

    Use :func:`hyperdnn.engine.load_model` to get the trained one::

        model = load_model("runs/inr", "hypernetwork")
        grid = coordinate_grid(28, 28).expand(len(x), -1, -1)
        pixels = model(grid, x)                 # (B, 784, 1): each image's SIREN on the grid
    """
    if name != "hypernetwork":
        raise CheckpointError(f"the inr recipe saves one model, 'hypernetwork'; got {name!r}")
    shape, features = info.get("shape"), info.get("features")
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(s, int) and s >= 1 for s in shape)) or not (isinstance(features, int) and features >= 1):  # fmt: skip
        raise CheckpointError(f"the model's info needs features (an int >= 1) and shape ([C, H, W]), got {dict(info)}")
    images = Images(torch.zeros(64, features), torch.zeros(1, features), tuple(shape))  # type: ignore[arg-type]
    return build_hypernetwork(cfg, images)


RECIPE = register_recipe(
    Recipe(
        name="inr",
        summary="implicit neural representations: a hypernetwork writes a SIREN per image vs fitting and modulation",
        config=InrConfig,
        run=run_inr,
        build_model=build_model,
        threads=1,  # small matrices: one thread is fastest (and far faster on a busy machine)
        requires={"matplotlib": "apps"},  # the plots; the data's own extra is checked by check
        check=check,
        **resumable(plan),
        data_parallel="it fits one image at a time, not minibatches of a data set",
    )
)
