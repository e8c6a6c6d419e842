"""The ``pruning`` recipe's data (the images, pooled, with the search's validation images held
out of the training set) and the training of every network a method found: from scratch at its
widths, or (L1 pruning) the pruned trained full network, fine-tuned."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn.baselines import l1_filter_prune
from hyperdnn.data import load_dataset
from hyperdnn.engine.errors import UsageError
from hyperdnn.engine.loop import Work
from hyperdnn.metrics import accuracy

if TYPE_CHECKING:
    from hyperdnn.recipes.pruning import PruningConfig, Run

__all__ = ["Data", "load_data", "sgd_epoch", "TrainWork"]


@dataclass(frozen=True)
class Data:
    """Images ``(N, 1, S, S)`` and labels: training, validation (the search's) and test."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_data(cfg: PruningConfig, seed: int) -> Data:
    """The data set of ``cfg``, pooled to ``image_size``, with ``val_size`` training images held out."""
    try:
        split = load_dataset(cfg.data, seed, cfg.data_root)
    except (ValueError, LookupError, FileNotFoundError, ImportError) as e:
        raise UsageError(str(e)) from None

    def images(x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, *split.shape)
        return F.adaptive_avg_pool2d(x.mean(1, keepdim=True), cfg.image_size)

    n_train = cfg.train_size or len(split.x_train) - cfg.val_size
    if n_train + cfg.val_size > len(split.x_train) or n_train < 1:
        raise UsageError(f"--train_size/--val_size: {cfg.data} has {len(split.x_train)} training images, asked {n_train} + {cfg.val_size}")  # fmt: skip
    x, y = images(split.x_train), split.y_train
    n_test = cfg.test_size or len(split.x_test)
    return Data(x[:n_train], y[:n_train], x[-cfg.val_size :], y[-cfg.val_size :],
                images(split.x_test)[:n_test], split.y_test[:n_test])  # fmt: skip


def sgd_epoch(net: nn.Module, opt: torch.optim.Optimizer, data: Data, cfg: PruningConfig, lr: float, epoch: int,
              batches: torch.Generator, tick=lambda: None) -> float:  # fmt: skip
    """One epoch of the recipe's training (the learning rate cosine from ``lr`` to 0 over
    ``cfg.retrain_epochs``, set per epoch; batches in ``batches``' order); the mean loss."""
    for group in opt.param_groups:
        group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.retrain_epochs))
    net.train()
    total, order = 0.0, torch.randperm(len(data.x_train), generator=batches).split(cfg.batch_size)
    for idx in order:
        loss = F.cross_entropy(net(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item()
        tick()
    return total / len(order)


class TrainWork(Work):
    """A network trained with SGD (momentum 0.9, cosine learning rate): from scratch at the
    widths a method found, or (L1) the pruned trained full network, fine-tuned."""

    def __init__(self, run: Run, key: str):
        self.run, self.cfg, self.key = run, run.cfg, key
        kind, _, budget = key.removeprefix("train ").partition(" ")
        run.ctx.seed_everything("init", key)
        if kind == "l1":
            b = float(budget.rstrip("%")) / 100
            self.net, self.lr = l1_filter_prune(self.cfg.cnn, run.model("full"), run.uniform(b)), self.cfg.finetune_lr
        else:
            self.net, self.lr = self.cfg.cnn.build(run.widths(key.removeprefix("train "))), self.cfg.lr
        self.widths = tuple(m.out_channels for m in self.net if isinstance(m, nn.Conv2d))

    def start_stage(self, stage: int, fresh: bool) -> torch.optim.Optimizer:
        self.opt = torch.optim.SGD(self.net.parameters(), self.lr, 0.9, weight_decay=self.cfg.weight_decay)
        return self.opt

    def steps(self, stage: int) -> int:
        return -(-len(self.run.data.x_train) // self.cfg.batch_size)

    def train_epoch(self, stage: int, epoch: int, tick) -> dict[str, float]:
        batches = self.run.ctx.generator("batches", "train", epoch)
        return {"loss": sgd_epoch(self.net, self.opt, self.run.data, self.cfg, self.lr, epoch, batches, tick)}

    def end_stage(self, stage: int, results: dict[str, Any]) -> str:
        self.net.eval()
        with torch.no_grad():
            acc = accuracy(self.net(self.run.data.x_test), self.run.data.y_test)
        name = self.key.removeprefix("train ")
        results["trained"][name] = {"widths": list(self.widths), "flops": self.cfg.cnn.flops(self.widths), "acc": acc}
        return f"{list(self.widths)}: test {100 * acc:.1f}%"

    def end_unit(self, results: dict[str, Any]) -> None:
        if self.key == "train full":
            self.run.models["full"] = self.net
            self.run.ctx.save_model(self.net, "full")

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return dict(self.net.state_dict()), {}

    def load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        self.net.load_state_dict(tensors)
