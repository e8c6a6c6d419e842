"""Continual learning with task-conditioned hypernetworks (von Oswald et al., ICLR 2020).

One hypernetwork learns tasks one after another. Each task has a learned embedding e_t; the
hypernetwork maps it to all the weights of a target MLP (by default chunk by chunk, from one
shared chunk generator: fewer trained parameters than one target network per task). While it learns task t, the output
regulariser keeps the weights it generates for the earlier embeddings where they were::

    L = L_task(t) + beta / |S| * sum_{k in S} || h(e_k; Theta + dTheta) - theta*_k ||^2

with theta*_k the weights generated for task k just before task t began, S all earlier tasks
(or a random subset of ``reg_tasks``), and dTheta the optional look-ahead. Task inference for
CL2/CL3 picks the task whose prediction has the lowest entropy (HNET+ENT); there, HNET+R and
DGR (:mod:`hyperdnn.methods.generative_replay`) train one classifier with inputs of the earlier
tasks replayed by a VAE whose decoder a hypernetwork generates per task, or by a plain VAE. The pieces live in
:mod:`hyperdnn.methods`; the baselines, from the same initialisation and the same batches, in
:mod:`hyperdnn.baselines`: fine-tuning (lower bound), online EWC, separate networks per task,
joint training on all tasks at once (upper bound).

Scenarios (van de Ven and Tolias, 2019): CL1 task-incremental (the task id is given; the
baselines use one output head per task), CL2 domain-incremental (no task id, one shared head
of the task's classes), CL3 class-incremental (no task id, a head over every class seen).

The story below: the config; the data (a task stream); the methods (one learner per unit);
the loop (each learner task by task through the engine's :func:`~hyperdnn.engine.run_units`:
progress, checkpoints, resume; its units from :mod:`hyperdnn.recipes._continual_units`); the
report (a table and a heat map per scenario) lives in :mod:`hyperdnn.recipes._continual_report`.

Run::

    hyperdnn run continual                                # PermutedMNIST-10 (mnist5k), CL1
    hyperdnn run continual --quick                        # a smoke run in well under a minute
    hyperdnn run continual --benchmark split              # SplitMNIST-5, CL1
    hyperdnn run continual --benchmark split --scenarios CL1,CL2,CL3
    hyperdnn run continual --data mnist --data-root ~/data  # full MNIST from local idx files

Each run writes the accuracy matrices as heat maps (accuracy_CL1.png ...), summary.md with
average accuracy and backward transfer per method, results.json, and the trained hypernetwork
with its target as model.safetensors (load it with hyperdnn.engine.load_model(out)).

Expected (measured with one thread on a shared 2-core machine, seeds 0 and 1; docs/continual.md
has the full tables): the default run takes 135 to 152 s of CPU time; the hypernetwork trains
693,526 parameters, 0.77 of the ten separate networks' 896,100, and ends at 91.8% average
accuracy on both seeds (backward transfer +0.0 and -0.4 points), separate networks at 92.4% and
92.6%, fine-tuning at 72.1% and 68.7% (-22.8 and -26.5 points). Every table gives each method's
trained parameters (from its optimizers) and their ratio to the separate networks'. SplitMNIST
CL3 (``--benchmark split --scenarios CL1,CL2,CL3``, 164 and 165 s of CPU time): HNET+R 85.8%
and 85.7% (its replay hypernetwork's own ``--replay_chunk_hidden``, ``--replay_lr`` and
``--replay_beta``), HNET+ENT 44.1% and 30.9%, DGR 87.4% and 87.1%: HNET+R is still below DGR.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from hyperdnn import MLP, Chunked, HyperModel, HyperNetwork, Once, Target, TaskEmbedding
from hyperdnn.baselines import EWC, FineTuning, JointTraining, SeparateNetworks, scenario_outputs
from hyperdnn.data import DATASETS
from hyperdnn.data.streams import BENCHMARKS, DEFAULT_TASKS, TaskStream, make_stream
from hyperdnn.engine.config import apply_preset, option
from hyperdnn.engine.errors import CheckpointError, UsageError
from hyperdnn.engine.loop import LoopState, Unit, Work, run_units
from hyperdnn.engine.model import info_sizes
from hyperdnn.engine.registry import Recipe, register_recipe
from hyperdnn.engine.run import Outcome, RunContext
from hyperdnn.methods import SCENARIOS, ContinualLearner, HypernetLearner
from hyperdnn.methods.generative_replay import HypernetReplay, ReplayLearner, VAEReplay
from hyperdnn.metrics import task_accuracies, trained_parameters
from hyperdnn.networks import mlp
from hyperdnn.optim import adam
from hyperdnn.recipes._continual_checks import check_config, check_state, count_parameters, estimate_memory
from hyperdnn.recipes._continual_report import empty_results, report
from hyperdnn.recipes._continual_units import REPLAY, plan, scenarios_of, unit_keys

__all__ = [
    "ContinualConfig",
    "unit_keys",
    "plan",
    "build_hypernet",
    "make_learner",
    "make_optimizer",
    "run_continual",
    "build_model",
    "RECIPE",
]
__all__ += ["count_parameters", "estimate_memory", "check_config", "check_state"]

METHODS = ("hnet", "finetune", "ewc", "separate", "joint", "hnet+r", "dgr")
#: epochs per task when --epochs is 0 (SplitMNIST tasks have a fifth of the images)
DEFAULT_EPOCHS = {"permuted": 10, "split": 20}
#: what --quick sets: a smoke run of every method in well under a minute (scikit-learn's digits)
QUICK = {"data": "digits", "num_tasks": 3, "epochs": 2, "hidden": (32,), "trunk": (32, 32), "chunk_size": 500,
         "chunk_hidden": (32,), "fisher_samples": 100, "vae_hidden": (64,), "vae_latent": 8,
         "replay_chunk_hidden": 32}  # fmt: skip


# ====================================================================== the config
@dataclass
class ContinualConfig:
    """Options of ``hyperdnn run continual`` (see ``hyperdnn run continual --help``)."""

    benchmark: str = option(
        "permuted", "task stream: permuted (PermutedMNIST) or split (SplitMNIST)", choices=BENCHMARKS
    )
    data: str = option("mnist5k", "images, a data set of hyperdnn.data.list_datasets(): mnist5k, digits, mnist ...")
    data_root: str = option("", "folder of the MNIST idx files for --data mnist (a torchvision root works)")
    num_tasks: int = option(0, "number of tasks (0: 10 for permuted, 5 for split)", low=0)
    scenarios: tuple[str, ...] = option(
        ("CL1",), "scenarios to evaluate", choices=SCENARIOS, nonempty=True, distinct=True
    )
    methods: tuple[str, ...] = option(METHODS, "methods to run", choices=METHODS, nonempty=True, distinct=True)
    hidden: tuple[int, ...] = option((100, 100), "hidden widths of the target MLP (every method)", low=1)
    dropout: float = option(0.2, "dropout after each hidden layer of the target MLP (every method)", low=0, below=1)
    epochs: int = option(0, "training epochs per task, every method (0: 10 for permuted, 20 for split)", low=0)
    batch_size: int = option(64, "minibatch size", low=1)
    lr: float = option(1e-3, "Adam learning rate of the baselines", above=0)
    hnet_lr: float = option(3e-3, "Adam learning rate of the hypernetwork and the task embeddings", above=0)
    head: str = option("chunked", "hypernetwork output: chunked or once (generate once)", choices=("once", "chunked"))
    chunk_size: int = option(4000, "numbers per chunk (head chunked)", low=1)
    chunk_embed_dim: int = option(32, "chunk embedding width (head chunked)", low=1)
    chunk_hidden: tuple[int, ...] = option(
        (150,), "hidden widths of the shared chunk generator (head chunked)", low=1, nonempty=True
    )
    task_embed_dim: int = option(64, "task embedding width", low=1)
    trunk: tuple[int, ...] = option(
        (200, 200), "hidden widths of the hypernetwork's MLP trunk (the last is the code width)", low=1, nonempty=True
    )
    beta: float = option(0.1, "weight of the output regulariser", low=0)
    lookahead: bool = option(False, "regularise at Theta + dTheta (the optimizer's candidate step on the task loss)")
    reg_tasks: int = option(0, "earlier tasks regularised per step, drawn at random (0: all of them)", low=0)
    ewc_lambda: float = option(10.0, "online EWC penalty strength", low=0)
    ewc_gamma: float = option(1.0, "online EWC decay of the accumulated Fisher information", low=0, high=1)
    fisher_samples: int = option(500, "training samples used to estimate each task's Fisher information", low=1)
    joint_epochs: int = option(0, "epochs of joint training over all tasks (0: --epochs)", low=0)
    checkpoint_every: int = option(0, "also checkpoint every N epochs inside a task (0: only at task ends)", low=0)
    vae_hidden: tuple[int, ...] = option(
        (400,),
        "hidden widths of the replay VAE's encoder (the decoder mirrors them; hnet+r, dgr)",
        low=1,
        nonempty=True,
    )
    vae_latent: int = option(20, "latent width of the replay VAE (hnet+r, dgr)", low=1)
    replay_beta: float = option(0.01, "weight of the output regulariser of HNET+R's decoder hypernetwork", low=0)
    replay_lr: float = option(
        3e-3, "Adam learning rate of HNET+R's VAE (encoder and decoder hypernetwork; 0: --lr)", low=0
    )
    replay_chunk_hidden: int = option(
        300, "hidden width of the chunk generator of HNET+R's decoder hypernetwork (0: --chunk_hidden)", low=0
    )
    quick: bool = option(False, f"a smoke run: {', '.join(f'{k} {v}' for k, v in QUICK.items())}")

    def __post_init__(self) -> None:
        if self.quick:  # the preset's values win over the command line
            apply_preset(self, QUICK, keep_given=False)
        if self.data not in DATASETS:
            raise ValueError(f"--data: expected a registered data set, one of {DATASETS.list()}, got {self.data!r}")

    @property
    def tasks(self) -> int:
        """The number of tasks, defaults resolved."""
        return self.num_tasks or DEFAULT_TASKS[self.benchmark]

    @property
    def replay_generator(self) -> tuple[int, ...]:
        """Hidden widths of the chunk generator of HNET+R's decoder hypernetwork, defaults resolved."""
        return (self.replay_chunk_hidden,) if self.replay_chunk_hidden else self.chunk_hidden

    @property
    def task_epochs(self) -> int:
        """Training epochs per task, defaults resolved."""
        return self.epochs or DEFAULT_EPOCHS[self.benchmark]


# ====================================================================== the data
def load_stream(cfg: ContinualConfig, seed: int) -> TaskStream:
    """The task stream of ``cfg`` (``seed`` splits the small data sets and draws permutations)."""
    try:
        return make_stream(cfg.benchmark, cfg.data, cfg.tasks, seed=seed, data_root=cfg.data_root)
    except (ValueError, LookupError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None


# ====================================================================== the methods
def _task_hypernet(cfg: ContinualConfig, target: Target, generator: tuple[int, ...]) -> HyperNetwork:
    """A task-conditioned hypernetwork of ``cfg`` for ``target`` (one task embedding to start),
    its chunk generator of hidden widths ``generator``."""
    head = Chunked(cfg.chunk_size, cfg.chunk_embed_dim, hidden=generator) if cfg.head == "chunked" else Once()
    return HyperNetwork(target, TaskEmbedding(1, cfg.task_embed_dim), MLP(cfg.trunk), head)


def build_hypernet(cfg: ContinualConfig, in_features: int, classes_per_task: int) -> tuple[HyperNetwork, Target]:
    """The task-conditioned hypernetwork of ``cfg`` and its target MLP (one task embedding to start)."""
    target = Target(mlp(in_features, cfg.hidden, classes_per_task, cfg.dropout))
    return _task_hypernet(cfg, target, cfg.chunk_hidden), target


def build_replay(cfg: ContinualConfig, method: str, in_features: int) -> HypernetReplay | VAEReplay:
    """The replay VAE of ``method``: its decoder generated by a task-conditioned hypernetwork
    (``hnet+r``: the hypernetwork options of ``cfg``, trunk, head ..., with its own ``replay_beta``
    and chunk generator, ``replay_chunk_hidden``) or a plain one (``dgr``)."""
    encoder = mlp(in_features, cfg.vae_hidden, 2 * cfg.vae_latent)
    decoder = mlp(cfg.vae_latent, cfg.vae_hidden[::-1], in_features)
    if method == "dgr":
        return VAEReplay(encoder, decoder, cfg.vae_latent)
    target = Target(decoder)
    hnet = _task_hypernet(cfg, target, cfg.replay_generator)
    return HypernetReplay(encoder, hnet, target, cfg.vae_latent, cfg.replay_beta)


def make_learner(unit: Unit, cfg: ContinualConfig, stream: TaskStream, device: torch.device) -> ContinualLearner:
    """The learner of ``unit`` (``hnet``, ``separate``, ``<baseline>/<scenario>``), on ``device``."""
    method, _, scenario = unit.key.partition("/")
    F, k, T = stream.in_features, stream.classes_per_task, len(stream)
    if method == "hnet":
        hnet, target = build_hypernet(cfg, F, k)
        return HypernetLearner(hnet.to(device), target.to(device), k, cfg.beta, cfg.lookahead, cfg.reg_tasks)
    if method == "separate":
        return SeparateNetworks(lambda: mlp(F, cfg.hidden, k, cfg.dropout).to(device), k)
    net = mlp(F, cfg.hidden, scenario_outputs(scenario, k, T), cfg.dropout).to(device)
    if method in REPLAY:
        return ReplayLearner(net, scenario, k, T, build_replay(cfg, method, F).to(device))
    if method == "ewc":
        return EWC(net, scenario, k, T, cfg.ewc_lambda, cfg.ewc_gamma, cfg.fisher_samples)
    return (JointTraining if method == "joint" else FineTuning)(net, scenario, k, T)


def make_optimizer(cfg: ContinualConfig, key: str, learner: ContinualLearner, t: int) -> torch.optim.Optimizer:
    """The optimizer of unit ``key`` on task ``t``: Adam over what ``learner`` trains on it, at
    ``--hnet_lr`` for the hypernetwork and ``--lr`` for the rest; with ``--replay_lr`` set, HNET+R's
    VAE (its encoder, decoder hypernetwork and task embedding) is a parameter group of its own at
    that rate."""
    lr = cfg.hnet_lr if key == "hnet" else cfg.lr
    if isinstance(learner, ReplayLearner) and isinstance(learner.replay, HypernetReplay):
        return adam(learner.param_groups(t, lr, cfg.replay_lr), lr=lr)
    return adam(learner.parameters_for(t), lr=lr)


# ====================================================================== the loop
class TaskWork(Work):
    """One learner through the stream: a task per stage (all tasks at once for joint training).

    Every method starts from the generator state of task 0 and sees the same batches and dropout
    masks, drawn per task and epoch (common random numbers across methods and resumes).
    """

    def __init__(self, ctx: RunContext, cfg: ContinualConfig, stream: TaskStream, unit: Unit):
        ctx.seed_everything("init", "task", 0)  # the baselines' hidden layers start identical
        self.learner = make_learner(unit, cfg, stream, ctx.device)
        self.ctx, self.cfg, self.stream, self.key = ctx, cfg, stream, unit.key
        self.joint = unit.key.startswith("joint/")
        self.scenarios = scenarios_of(unit.key, cfg)
        self.num_stages = len(unit.stages)

    def _task(self, stage: int) -> int:
        return len(self.stream) - 1 if self.joint else stage

    def start_stage(self, stage: int, fresh: bool) -> torch.optim.Optimizer:
        t = self._task(stage)
        if fresh:
            self.ctx.seed_everything("init", "task", "joint" if self.joint else t)
            self.learner.begin_task(t)
        self.optimizer = self.ctx.prepare_optimizer(self._optimizer(t))  # data-parallel under torchrun
        return self.optimizer

    def _optimizer(self, t: int) -> torch.optim.Optimizer:
        return make_optimizer(self.cfg, self.key, self.learner, t)

    def _rows(self, stage: int) -> int:
        return self.stream.num_train if self.joint else self.stream[stage].num_train

    def steps(self, stage: int) -> int:
        return -(-self._rows(stage) // self.cfg.batch_size)

    def _batch(self, t: int, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inputs, task-local labels and task ids of rows ``idx`` (of all tasks' rows, joint)."""
        if self.joint:
            return self.stream.joint_batch(idx)
        x, y = self.stream[t].train_batch(idx)
        return x, y, torch.full_like(y, t)

    def train_epoch(self, stage: int, epoch: int, tick) -> dict[str, float]:
        t, name = self._task(stage), "joint" if self.joint else self._task(stage)
        order = torch.randperm(self._rows(stage), generator=self.ctx.generator("batches", name, epoch))
        self.ctx.seed_everything("dropout", name, epoch)
        step_gen = self.ctx.generator(self.key, "steps", t, epoch)
        sums: dict[str, float] = {}
        for idx in map(self.ctx.shard, order.split(self.cfg.batch_size)):  # this process's rows
            x, y, ids = (v.to(self.ctx.device) for v in self._batch(t, idx))
            for k, v in self.learner.train_step(t, x, y, ids, self.optimizer, step_gen).items():
                sums[k] = sums.get(k, 0.0) + v
            tick()
        return {k: v / self.steps(stage) for k, v in sums.items()}

    def end_stage(self, stage: int, results: dict[str, Any]) -> str:
        t = self._task(stage)
        if not self.joint:
            self.learner.end_task(t, self.stream[t], self.ctx.generator(self.key, "end", t))
        texts = []
        for s in self.scenarios:
            row, inferred = task_accuracies(
                self.learner.predict, self.stream.tasks[: t + 1], s, self.stream.classes_per_task, self.ctx.device
            )
            results["matrices"][self.key][s][t][: t + 1] = row
            if inferred is not None:
                results["inference"][self.key][s][t] = inferred
            self.ctx.scalar(f"{self.key}/{s}/avg_acc", sum(row) / len(row), t)
            new = "" if self.joint else f"{100 * row[t]:.1f}/"
            texts.append(f"{s} {'avg ' if self.joint else ''}{new}{100 * sum(row) / len(row):.1f}")
        return ("" if self.joint else "acc new/avg ") + "  ".join(texts)

    def end_unit(self, results: dict[str, Any]) -> None:
        # what the unit's optimizers trained, over all its tasks (each tensor once)
        optimizers = (self._optimizer(self._task(stage)) for stage in range(self.num_stages))
        results["params"][self.key] = trained_parameters(optimizers)
        if isinstance(self.learner, HypernetLearner):
            s = self.stream
            info = {"in_features": s.in_features, "classes_per_task": s.classes_per_task, "num_tasks": len(s)}
            path = self.ctx.save_model(self.learner.model, "model", info)  # with its per-task statistics
            self.ctx.log(f"saved the hypernetwork and its target: {path}")

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return self.learner.state()

    def load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        self.learner.load_state(tensors, meta)


def run_continual(cfg: ContinualConfig, ctx: RunContext) -> Outcome:
    """The ``continual`` recipe: every method through the stream, then the report.

    When the hypernetwork has learned its last task it is saved with its target as
    ``<out>/model.safetensors`` (:func:`build_model`, :func:`hyperdnn.engine.load_model`)."""
    stream = load_stream(cfg, ctx.seed)
    T, units = len(stream), plan(cfg, len(stream))
    ctx.log(
        f"{stream.name}: {T} tasks, {stream[0].num_train} train / {stream[0].num_test} test images per task; "
        f"methods {', '.join(u.key for u in units)}; scenarios {', '.join(cfg.scenarios)}"
    )
    results = empty_results(cfg, units, T)
    done = run_units(
        ctx, units, lambda u: TaskWork(ctx, cfg, stream, u), results, checkpoint_every=cfg.checkpoint_every
    )
    return report(cfg, ctx, stream, units, done)


# ====================================================================== the saved model and registration
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
    sizes = info_sizes(info, "in_features", "classes_per_task", "num_tasks")
    hnet, target = build_hypernet(cfg, sizes["in_features"], sizes["classes_per_task"])
    if sizes["num_tasks"] > 1:
        hnet.conditioner.add_tasks(sizes["num_tasks"] - 1)  # type: ignore[operator]
    return HyperModel(hnet, target)


RECIPE = register_recipe(
    Recipe(
        name="continual",
        summary="continual learning with a task-conditioned hypernetwork vs fine-tuning, EWC, separate, joint",
        config=ContinualConfig,
        run=run_continual,
        check=check_config,
        state_schema=LoopState,
        check_state=check_state,
        build_model=build_model,
        requires={"matplotlib": "apps"},  # the heat maps; the data's own extra is checked by check_config
        data_parallel=True,  # through RunContext.prepare_optimizer and RunContext.shard
    )
)
