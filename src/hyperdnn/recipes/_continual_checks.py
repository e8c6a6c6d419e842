"""What the ``continual`` recipe checks before it writes anything: sizes and resumed states.

* :func:`count_parameters` - each model's trainable parameters, from the config alone.
* :func:`estimate_memory` - the run's peak memory by part, from the config alone (the recipe's
  ``check`` compares it with :func:`~hyperdnn.engine.seeding.memory_limit`).
* :func:`check_config` - the recipe's ``check``: task count, memory, data, in one line.
* :func:`check_state` - the recipe's ``check_state``: a resumed checkpoint against the config
  (:func:`~hyperdnn.engine.check_loop_state`, then :class:`ContinualResults` and the learner
  sizes, :func:`check_results` and :func:`check_work`).

Example::

    >>> from hyperdnn.recipes.continual import ContinualConfig
    >>> count_parameters(ContinualConfig(methods=("separate",)))
    {'separate': 896100}
    >>> parts = estimate_memory(ContinualConfig())
    >>> 10**7 < sum(parts.values()) < 10**9
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

from hyperdnn.data import get_dataset
from hyperdnn.data.streams import max_tasks
from hyperdnn.engine import Checkpoint, CheckpointError, UsageError, check_loop_state
from hyperdnn.engine.seeding import format_bytes, memory_limit
from hyperdnn.networks import mlp_parameters
from hyperdnn.recipes._continual_units import plan, unit_keys

if TYPE_CHECKING:
    from hyperdnn.engine.loop import Unit
    from hyperdnn.recipes.continual import ContinualConfig

__all__ = [
    "ContinualResults",
    "count_parameters",
    "estimate_memory",
    "check_config",
    "check_state",
    "check_results",
    "check_work",
]


class ContinualResults(TypedDict):
    """What the ``continual`` recipe records while it runs (``results`` of its checkpoints).

    ``matrices``: unit key -> scenario -> the ``(T, T)`` accuracy matrix so far (``null``: not
    measured); ``inference``: unit key -> CL2/CL3 -> the share of test inputs whose task the
    entropy rule found, after each task; ``params``: unit key -> trainable parameters, for
    every finished unit.
    """

    matrices: dict[str, dict[str, list[list[float | None]]]]
    inference: dict[str, dict[str, list[float | None]]]
    params: dict[str, int]


def _classes_per_task(cfg: ContinualConfig) -> int:
    return get_dataset(cfg.data).num_classes if cfg.benchmark == "permuted" else 2


def _method(key: str) -> str:
    return key.split("/")[0]


def _scenario(key: str) -> str | None:
    return key.split("/")[1] if "/" in key else None


def _hnet_parameters(cfg: ContinualConfig, target: int, generator: tuple[int, ...] | None = None) -> int:
    """A task-conditioned hypernetwork of ``cfg`` generating ``target`` numbers, after all tasks
    (its chunk generator's hidden widths ``generator``, default ``cfg.chunk_hidden``)."""
    hidden = cfg.chunk_hidden if generator is None else generator
    n = cfg.tasks * cfg.task_embed_dim + mlp_parameters(cfg.task_embed_dim, cfg.trunk[:-1], cfg.trunk[-1])
    code = cfg.trunk[-1]
    if cfg.head == "once":
        return n + code * target + target
    chunks = -(-target // cfg.chunk_size)
    n += chunks * cfg.chunk_embed_dim + cfg.chunk_embed_dim * hidden[0]
    return n + mlp_parameters(code, hidden, cfg.chunk_size)


def _decoder_parameters(cfg: ContinualConfig, features: int) -> int:
    return mlp_parameters(cfg.vae_latent, cfg.vae_hidden[::-1], features)


def count_parameters(cfg: ContinualConfig) -> dict[str, int]:
    """The trainable parameters of each model the run trains, after all tasks, computed from the
    config alone (what results.json reports under ``parameters`` at the end).

    Returns:
        Unit key (``hnet``, ``separate``, ``finetune/CL1`` ...) -> parameter count.
    """
    F, k, T = get_dataset(cfg.data).features, _classes_per_task(cfg), cfg.tasks
    target = mlp_parameters(F, cfg.hidden, k)
    counts = {}
    for key in unit_keys(cfg):
        method = _method(key)
        if method == "hnet":
            counts[key] = _hnet_parameters(cfg, target)
        elif method == "separate":
            counts[key] = T * target
        else:
            counts[key] = mlp_parameters(F, cfg.hidden, k if _scenario(key) == "CL2" else T * k)
        if method in ("hnet+r", "dgr"):  # the classifier, the VAE's encoder and its decoder or hypernetwork
            counts[key] += mlp_parameters(F, cfg.vae_hidden, 2 * cfg.vae_latent)
            decoder = _decoder_parameters(cfg, F)
            counts[key] += decoder if method == "dgr" else _hnet_parameters(cfg, decoder, cfg.replay_generator)
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
    """
    data = get_dataset(cfg.data)
    F, k, T = data.features, _classes_per_task(cfg), cfg.tasks
    target = mlp_parameters(F, cfg.hidden, k)
    parts = {f"the images (--data {cfg.data})": 2 * 4 * data.num_images * F}
    if cfg.benchmark == "permuted":
        parts[f"the task stream (--num_tasks {T})"] = T * (8 * F + 1024)
    matrices = sum(1 if _scenario(key) else len(cfg.scenarios) for key in unit_keys(cfg))
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
        elif method in ("hnet+r", "dgr"):
            # parameters, gradients, Adam's moments; every earlier decoder at once (snapshot, replay)
            decoder = _decoder_parameters(cfg, F)
            what = f"the {key} classifier and replay VAE (--vae_hidden, --vae_latent, --num_tasks {T})"
            models[what] = 4 * (4 * n + 5 * T * decoder)
        else:
            models[f"the {key} network (--hidden, --num_tasks {T})"] = 4 * n * (6 if method == "ewc" else 4)
    if models:
        largest = max(models, key=models.__getitem__)
        parts[largest] = models[largest]
    return parts


def check_results(units: Sequence[Unit], scenarios: Sequence[str], T: int, results: Mapping[str, Any]) -> list[str]:
    """The accuracies and sizes a resumed state carries (already a :class:`ContinualResults`),
    against the run's units, scenarios and task count: one line per problem."""
    keys = [u.key for u in units]
    problems = []
    for name in ("matrices", "inference"):
        if sorted(results[name]) != sorted(keys):
            problems.append(f"{name} for {sorted(results[name])}, expected {sorted(keys)}")
    if not set(results["params"]) <= set(keys):
        problems.append(f"params for {sorted(set(results['params']) - set(keys))}, which this run does not train")
    if problems:
        return problems

    def accuracy(v: float | None) -> bool:
        return v is None or 0.0 <= v <= 1.0

    for u in units:
        own = (_scenario(u.key),) if _scenario(u.key) else tuple(scenarios)
        mats, inf = results["matrices"][u.key], results["inference"][u.key]
        if sorted(mats) != sorted(own) or sorted(inf) != sorted(s for s in own if s != "CL1"):
            problems.append(f"{u.key}: results for scenarios {sorted(mats)}, expected {sorted(own)}")
            continue
        for s, m in mats.items():
            if len(m) != T or any(len(row) != T or not all(map(accuracy, row)) for row in m):
                problems.append(f"matrices[{u.key!r}][{s!r}] is not a {T} x {T} matrix of accuracies in [0, 1]")
        for s, row in inf.items():
            if len(row) != T or not all(map(accuracy, row)):
                problems.append(f"inference[{u.key!r}][{s!r}] is not {T} accuracies in [0, 1]")
    problems += [f"params[{key!r}] is negative" for key, v in results["params"].items() if v < 0]
    return problems


#: the size a learner's state records: hypernetwork task embeddings, separate networks, active classes
_LEARNER_SIZE = {"hnet": "embeddings", "separate": "nets"}


def check_work(units: Sequence[Unit], T: int, k: int, state: Mapping[str, Any]) -> list[str]:
    """The learner size a checkpoint inside a unit records, against where it was taken: the
    tasks begun so far (``T`` for joint training, which begins them all at once)."""
    if "work" not in state or not 0 <= state["unit"] < len(units):
        return []
    unit = units[state["unit"]]
    method = _method(unit.key)
    key = _LEARNER_SIZE.get(method, "active")
    size = T if method == "joint" else state["stage"] + (1 if state["mid_stage"] else 0)
    expected = {key: size * k if key == "active" else size}
    if state["work"] != expected:
        return [f"work {state['work']} at stage {state['stage']} of {unit.key} (expected {expected})"]
    return []


def check_config(cfg: ContinualConfig) -> None:
    """Input the run cannot use, found before anything is written (a one-line error): more tasks
    than the data supplies, a memory estimate (:func:`estimate_memory`) above what this machine
    has (:func:`~hyperdnn.engine.seeding.memory_limit`), missing data or packages.

    Raises:
        UsageError: naming the option, what was expected and what was given.
    """
    if not unit_keys(cfg):
        raise UsageError(
            f"--methods {','.join(cfg.methods)} train in CL2 and CL3 only (replay needs no task identity); "
            f"got --scenarios {','.join(cfg.scenarios)}"
        )
    data = get_dataset(cfg.data)
    most = max_tasks(cfg.benchmark, data.num_classes)
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
    problem = data.problem(cfg.data_root)
    if problem is not None:
        raise UsageError(f"--data {cfg.data}: {problem}")


def check_state(cfg: ContinualConfig, checkpoint: Checkpoint) -> None:
    """Check a resumed checkpoint's state (already a :class:`~hyperdnn.engine.LoopState`)
    against the config: the same units, a position inside the run, learner and optimizer states
    exactly where the run saves them, results of the run's shape.

    Raises:
        CheckpointError: listing what does not fit.
    """
    units, state = plan(cfg, cfg.tasks), checkpoint.state
    problems = check_loop_state(units, state, results=ContinualResults, work=dict[str, int])
    if not problems:
        problems = check_work(units, cfg.tasks, _classes_per_task(cfg), state)
        problems += check_results(units, cfg.scenarios, cfg.tasks, state["results"])
    if problems:
        raise CheckpointError("; ".join(problems))
