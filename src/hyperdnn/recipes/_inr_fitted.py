"""The ``inr`` recipe's images and its fitted baselines' unit of work.

* :class:`Images` and :func:`load_images` - the run's training and test images, checked
  against the options that need them.
* :class:`Fitted` - a SIREN per test image fitted by Adam from a random or a meta-learned
  (Reptile) initialisation, measured at each of ``--fit_steps``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from hyperdnn import Target
from hyperdnn.baselines.inr_fitting import INRFitter, stacked_inits
from hyperdnn.baselines.learned_init import Reptile
from hyperdnn.data import DATASETS, Split
from hyperdnn.engine.errors import UsageError
from hyperdnn.engine.loop import Work
from hyperdnn.methods.inr import coordinate_grid, image_values
from hyperdnn.metrics.reconstruction import count_flops, psnr
from hyperdnn.siren import siren

if TYPE_CHECKING:
    from hyperdnn.engine.run import RunContext
    from hyperdnn.recipes.inr import InrConfig

__all__ = ["Images", "load_images", "Fitted"]


@dataclass(frozen=True)
class Images:
    """The run's images: ``train`` ``(N, C*H*W)``, ``test`` ``(M, C*H*W)`` in [0, 1], their shape and grid."""

    train: torch.Tensor
    test: torch.Tensor
    shape: tuple[int, int, int]

    @property
    def grid(self) -> torch.Tensor:
        """``(H*W, 2)``: every pixel's coordinates."""
        return coordinate_grid(self.shape[1], self.shape[2])


def load_images(cfg: InrConfig, seed: int) -> Images:
    """The training and test images of ``cfg`` (``seed`` shuffles the data set's split)."""
    try:
        split: Split = DATASETS.get(cfg.data).load(seed, cfg.data_root)
    except (ValueError, LookupError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    n_train = cfg.train_images or len(split.x_train)
    problems = [f"--{k}: {v} > the {n} {w} images of {cfg.data}" for k, v, n, w in (
        ("train_images", n_train, len(split.x_train), "training"), ("test_images", cfg.test_images, len(split.x_test), "test"),
        ("meta_batch", cfg.meta_batch, n_train, "training"), ("batch_size", cfg.batch_size, n_train, "training")) if v > n]  # fmt: skip
    if problems:
        raise UsageError("; ".join(problems))
    return Images(split.x_train[:n_train], split.x_test[: cfg.test_images], split.shape)


def _flat(x: torch.Tensor) -> list[float]:
    return [round(float(v), 4) for v in x.reshape(-1)]


class Fitted(Work):
    """A SIREN per test image fitted by Adam from a random initialisation or from Reptile's
    meta-learned one (stage 0 of ``"meta init"`` learns it on the training images)."""

    def __init__(self, ctx: RunContext, cfg: InrConfig, images: Images, key: str):
        ctx.seed_everything("init", key)
        self.ctx, self.cfg, self.images, self.key = ctx, cfg, images, key
        make = lambda: siren(2, cfg.hidden, images.shape[0], cfg.omega, cfg.omega)  # noqa: E731
        self.target = Target(make())
        self.values = image_values(images.test, images.shape)
        self.meta = Reptile(self.target, self.target.default_weights(), cfg.meta_inner, cfg.fit_lr, cfg.meta_lr) if key == "meta init" else None  # fmt: skip
        self.init = None if self.meta else stacked_inits(make, len(images.test))
        self.fitting = 1 if self.meta else 0  # the fitting stage (after meta-learning)
        self.fitter: INRFitter | None = None
        self.points: list[dict[str, Any]] = []
        self.seconds = 0.0

    def _per_epoch(self, total: int, epoch: int) -> range:
        """Steps ``[epoch * total / E, (epoch + 1) * total / E)`` of ``total`` split in E epochs."""
        E = self.cfg.fit_epochs
        return range(epoch * total // E, (epoch + 1) * total // E)

    def start_stage(self, stage: int, fresh: bool) -> torch.optim.Optimizer:
        if stage < self.fitting:
            return self.meta.optimizer  # type: ignore[union-attr]
        if self.fitter is None:
            init = self.meta.initialisation() if self.meta else self.init
            self.fitter = INRFitter(self.target, init, self.images.grid, self.values, self.cfg.fit_lr)  # type: ignore[arg-type]
        return self.fitter.optimizer

    def steps(self, stage: int) -> int:
        total = self.cfg.meta_steps if stage < self.fitting else self.cfg.fit_steps[-1]
        return len(self._per_epoch(total, 0))

    def train_epoch(self, stage: int, epoch: int, tick) -> dict[str, float]:
        if stage < self.fitting:  # a Reptile meta step per tick, on images drawn for it
            losses = []
            for s in self._per_epoch(self.cfg.meta_steps, epoch):
                g = self.ctx.generator("meta", s)
                idx = torch.randperm(len(self.images.train), generator=g)[: self.cfg.meta_batch]
                losses.append(self.meta.step(self.images.grid, image_values(self.images.train[idx], self.images.shape)))  # type: ignore[union-attr]  # fmt: skip
                tick()
            return {"inner_mse": sum(losses) / max(len(losses), 1)}
        fitter, mse = self.fitter, torch.zeros(1)
        for _ in self._per_epoch(self.cfg.fit_steps[-1], epoch):
            start = time.perf_counter()
            mse = fitter.step()  # type: ignore[union-attr]
            self.seconds += time.perf_counter() - start
            tick()
            if fitter.steps in self.cfg.fit_steps:  # type: ignore[union-attr]
                self._measure()
        return {"mse": float(mse.mean())}

    def _measure(self) -> None:
        fitter, B = self.fitter, len(self.images.test)
        with torch.no_grad():
            pred = fitter.predict()  # type: ignore[union-attr]
        scores = psnr(pred, self.values)
        step_flops = count_flops(lambda: (fitter.predict() - self.values).pow(2).sum().backward()) / B  # type: ignore[union-attr]  # fmt: skip
        self.fitter.optimizer.zero_grad(set_to_none=True)  # type: ignore[union-attr]
        self.points.append({"steps": fitter.steps, "psnr": float(scores.mean()), "psnr_std": float(scores.std()),  # type: ignore[union-attr]
                            "flops": step_flops * fitter.steps, "seconds": self.seconds / B,  # type: ignore[union-attr]
                            "reconstruction": _flat(pred[: self.cfg.show])})  # fmt: skip

    def end_stage(self, stage: int, results: dict[str, Any]) -> str:
        if stage < self.fitting:
            return "meta-learned the initialisation"
        results["methods"][self.key] = {"points": self.points, "params": self.target.spec.numel * len(self.images.test)}  # fmt: skip
        return "  ".join(f"{p['steps']} steps {p['psnr']:.2f} dB" for p in self.points)

    def end_unit(self, results: dict[str, Any]) -> None:
        pass

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {f"theta0.{k}": v for k, v in (self.meta.initialisation().items() if self.meta else ())}
        if self.fitter is not None:
            tensors.update({f"fit.{k}": v for k, v in self.fitter.detached().items()})
        steps = self.fitter.steps if self.fitter is not None else 0
        return tensors, {"points": self.points, "seconds": self.seconds, "steps": steps}

    def load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        if self.meta:
            with torch.no_grad():
                for k, t in self.meta.theta0.items():
                    t.copy_(tensors[f"theta0.{k}"])
        fitted = {k[4:]: v for k, v in tensors.items() if k.startswith("fit.")}
        if fitted:
            init = self.meta.initialisation() if self.meta else self.init
            self.fitter = INRFitter(self.target, init, self.images.grid, self.values, self.cfg.fit_lr)  # type: ignore[arg-type]
            self.fitter.load(fitted, int(meta["steps"]))
        self.points, self.seconds = list(meta["points"]), float(meta["seconds"])
