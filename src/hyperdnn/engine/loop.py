"""The shared training loop: units of work in stages and epochs, with progress, checkpoints,
resume and log lines.

A recipe describes its work as a list of :class:`Unit` s (one thing to train: a method, a seed, a
width) and says what one unit does through a :class:`Work`; :func:`run_units` does the rest::

    for each unit (from where a resumed run stopped):
        work = build(unit)                    # the recipe seeds and builds its model here
        for each stage of the unit (a task of a continual stream; most units have one):
            optimizer = work.start_stage(stage, fresh)
            for each epoch:  work.train_epoch(stage, epoch, tick)      progress bar, TensorBoard
                             checkpoint every ``checkpoint_every`` epochs (inside the stage)
            line = work.end_stage(stage, results)                       evaluate; one log line
            checkpoint (between stages)
        work.end_unit(results)                # e.g. save the trained model
        checkpoint (between units)

``results`` is the recipe's JSON record of what it measured so far; it travels in every
checkpoint, so a resumed run continues with it. A checkpoint holds the position (unit, stage,
epoch), the seconds each unit took, ``results``, and inside a unit the work's state (tensors and
JSON, :meth:`Work.state`) and inside a stage the optimizer's. On ``--resume`` the loop rebuilds
the unit under way, loads the work's state (and the optimizer's), and continues at the saved
epoch: a recipe that draws every random number from generators named by unit, stage and epoch
(:meth:`~hyperdnn.engine.run.RunContext.generator`) or saves the generators it advances in its
work state ends with the same numbers as an uninterrupted run.

A recipe declares :class:`LoopState` as its ``state_schema`` and checks a resumed state against
its plan with :func:`check_loop_state` (in its ``check_state``); :func:`resumable` gives both
for a recipe whose plan follows from its config alone.

Example (a toy recipe's run, one unit of one stage)::

    import torch
    from hyperdnn.engine.loop import Unit, Work, run_units

    class Fit(Work):                                   # fits w to 3.0, one step per epoch
        def __init__(self):
            self.w = torch.zeros(1, requires_grad=True)
        def start_stage(self, stage, fresh):
            self.opt = torch.optim.SGD([self.w], lr=0.1)
            return self.opt
        def steps(self, stage):
            return 1
        def train_epoch(self, stage, epoch, tick):
            self.opt.zero_grad()
            loss = (self.w - 3.0).pow(2).sum()
            loss.backward()
            self.opt.step()
            tick()
            return {"loss": loss.item()}
        def end_stage(self, stage, results):
            results["w"] = self.w.item()
            return f"w {self.w.item():.2f}"
        def end_unit(self, results):
            pass
        def state(self):
            return {"w": self.w.detach()}, {}
        def load_state(self, tensors, meta):
            self.w.data.copy_(tensors["w"])

    outcome = run_units(ctx, [Unit("fit", ("",), epochs=20)], lambda unit: Fit(), {})
    outcome.results["w"]                              # about 3.0

``docs/recipes.md`` has a complete recipe built this way, which the tests run.
"""

from __future__ import annotations

import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import torch

from hyperdnn.engine.checkpoint import (
    OptimizerState,
    find_mismatches,
    load_optimizer_state,
    optimizer_state_tensors,
)
from hyperdnn.engine.errors import CheckpointError

if TYPE_CHECKING:
    from hyperdnn.engine.run import RunContext

__all__ = ["Unit", "Work", "LoopState", "LoopResult", "run_units", "check_loop_state", "resumable"]

#: prefixes of the work's, the optimizer's and the global generators' tensors in a checkpoint
_WORK, _OPTIM, _RNG = "work.", "optim.", "rng."


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The global generators (torch's CPU and CUDA, NumPy's, Python's) as checkpoint tensors
    and JSON."""
    tensors = {_RNG + "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, t in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"{_RNG}cuda.{i}"] = t
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    meta = {
        "numpy": [kind, [int(k) for k in keys], int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(internal), gauss_next],
    }
    return tensors, meta


def _set_rng_state(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    """Restore what :func:`_rng_state` saved (a CUDA state only where CUDA is in use)."""
    torch.set_rng_state(tensors[_RNG + "torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith(_RNG + "cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    kind, keys, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


@dataclass(frozen=True)
class Unit:
    """One thing a recipe trains, in stages of ``epochs`` epochs.

    Args:
        key: names the unit in log lines, results, TensorBoard and checkpoints (``"hnet"``,
            ``"finetune/CL1"``, ``"standard DNN, seed 0"``); unique within a run.
        stages: one label per stage, for log lines and progress bars (``("task 1/5", ...)``);
            a unit of one stage may label it ``""``.
        epochs: epochs per stage, ``>= 1``.

    Raises:
        ValueError: an empty key, no stages, a label that is not a string, ``epochs < 1``.
    """

    key: str
    stages: tuple[str, ...]
    epochs: int

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key.strip():
            raise ValueError(f"Unit: key must be a non-empty string, got {self.key!r}")
        if not isinstance(self.stages, tuple) or not self.stages or not all(isinstance(s, str) for s in self.stages):
            raise ValueError(f"Unit {self.key!r}: stages must be a non-empty tuple of labels, got {self.stages!r}")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"Unit {self.key!r}: epochs must be an int >= 1, got {self.epochs!r}")


class Work(ABC):
    """What one :class:`Unit` does; :func:`run_units` calls it in this order, per stage:
    :meth:`start_stage`, :meth:`steps`, :meth:`train_epoch` per epoch, :meth:`end_stage`; after
    the last stage :meth:`end_unit`. :meth:`state` is saved at checkpoints inside the unit and
    :meth:`load_state` restores it on a freshly built work when a run resumes."""

    @abstractmethod
    def start_stage(self, stage: int, fresh: bool) -> torch.optim.Optimizer | None:
        """Prepare stage ``stage`` and return its optimizer (``None``: none to checkpoint).

        ``fresh`` is false when a resumed run continues inside this stage: the work's state is
        already loaded, so only the optimizer is built (the loop loads its state).
        """

    @abstractmethod
    def steps(self, stage: int) -> int:
        """Minibatches per epoch of ``stage`` (the progress bar's unit)."""

    @abstractmethod
    def train_epoch(self, stage: int, epoch: int, tick: Callable[[], None]) -> Mapping[str, float]:
        """Train one epoch; call ``tick()`` after each minibatch. Returns the epoch's mean
        scalars to log (``{"loss": 0.31}``)."""

    @abstractmethod
    def end_stage(self, stage: int, results: dict[str, Any]) -> str:
        """Finish ``stage``: evaluate, record what was measured in ``results`` (JSON values);
        returns the text of the stage's log line (``"acc 97.1%"``)."""

    @abstractmethod
    def end_unit(self, results: dict[str, Any]) -> None:
        """Finish the unit after its last stage (record sizes, save the trained model)."""

    @abstractmethod
    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything needed to continue the unit: tensors and a JSON-serialisable rest."""

    @abstractmethod
    def load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        """Restore what :meth:`state` returned (``ValueError`` for state that does not fit)."""


class _LoopRequired(TypedDict):
    units: list[str]
    unit: int
    stage: int
    epoch: int
    mid_stage: bool
    times: dict[str, float]
    results: dict[str, Any]


class LoopState(_LoopRequired, total=False):
    """The JSON state of every checkpoint :func:`run_units` saves (a recipe's ``state_schema``).

    ``units``: the keys of the run's units in order; ``unit``, ``stage``, ``epoch``: where to
    continue (``unit == len(units)``: every unit is done); ``mid_stage``: the checkpoint was
    taken inside a stage (then ``epoch >= 1``); ``times``: seconds per unit so far;
    ``results``: the recipe's measurements so far; ``work``: the JSON part of the unit's
    :meth:`Work.state`, present inside a unit (after its first stage, or inside a stage);
    ``optimizer``: the stage's optimizer, present inside a stage; ``rng``: the global
    generators (torch's, NumPy's, Python's; torch's as a tensor), restored where the run
    continues, so draws from them (dropout masks) follow as in an uninterrupted run.
    """

    work: dict[str, Any]
    optimizer: OptimizerState
    rng: dict[str, Any]


@dataclass(frozen=True)
class LoopResult:
    """What :func:`run_units` returns: the recipe's ``results`` and the seconds each unit took
    (over every run that worked on it, resumed ones included)."""

    results: dict[str, Any]
    times: dict[str, float]


def _format(logs: Mapping[str, float]) -> str:
    return " ".join(f"{k} {v:.3f}" for k, v in logs.items())


class _Loop:
    """The position and record of a run of units, and its checkpoints."""

    def __init__(self, ctx: RunContext, units: Sequence[Unit], results: dict[str, Any], every: int):
        self.ctx, self.units, self.every = ctx, list(units), every
        self.keys = [u.key for u in self.units]
        self.results = results
        self.times = dict.fromkeys(self.keys, 0.0)

    def save(self, unit: int, stage: int, epoch: int, work: Work | None, optimizer=None, mid: bool = False) -> None:
        state: dict[str, Any] = {
            "units": self.keys,
            "unit": unit,
            "stage": stage,
            "epoch": epoch,
            "mid_stage": mid,
            "times": self.times,
            "results": self.results,
        }
        tensors: dict[str, torch.Tensor] = {}
        if work is not None:
            wt, meta = work.state()
            tensors.update({_WORK + k: v for k, v in wt.items()})
            state["work"] = dict(meta)
        if optimizer is not None:
            ot, ometa = optimizer_state_tensors(optimizer, _OPTIM)
            tensors.update(ot)
            state["optimizer"] = ometa
        rt, state["rng"] = _rng_state()
        tensors.update(rt)
        self.ctx.save_checkpoint(tensors, state)

    def run_stage(self, ui: int, work: Work, stage: int, first_epoch: int, optimizer) -> str:
        """Train ``stage`` from ``first_epoch`` to its end; returns the last epoch's log text."""
        unit = self.units[ui]
        label = unit.stages[stage]
        logs: Mapping[str, float] = {}
        desc = f"{unit.key} {label}".strip()
        with self.ctx.progress(work.steps(stage) * (unit.epochs - first_epoch), desc) as bar:
            for epoch in range(first_epoch, unit.epochs):
                logs = work.train_epoch(stage, epoch, bar.update)
                bar.note(_format(logs))
                for name, value in logs.items():
                    self.ctx.scalar(f"{unit.key}/{name}", value, stage * unit.epochs + epoch)
                if self.every and (epoch + 1) % self.every == 0 and epoch + 1 < unit.epochs:
                    self.save(ui, stage, epoch + 1, work, optimizer, mid=True)
        return _format(logs)


def run_units(
    ctx: RunContext,
    units: Sequence[Unit],
    build: Callable[[Unit], Work],
    results: dict[str, Any],
    *,
    checkpoint_every: int = 0,
) -> LoopResult:
    """Run ``units`` in order (from where ``ctx.resumed`` stopped), checkpointing as it goes.

    Args:
        ctx: the run's context (progress, logs, seeds, checkpoints, ``resumed``).
        units: the plan; the same list, in the same order, on every resume (the checkpoint
            records the keys and :func:`check_loop_state` compares them).
        build: ``build(unit) -> Work``, called once per unit (also on resume, before the saved
            state is loaded): seed and build the unit's model here.
        results: the recipe's (empty or default) record, filled by :meth:`Work.end_stage` and
            :meth:`Work.end_unit`; a resumed run continues with the checkpoint's instead.
        checkpoint_every: also checkpoint every this many epochs inside a stage (0: only
            between stages and units).

    Returns:
        The :class:`LoopResult`: ``results`` and the seconds per unit.

    Raises:
        CheckpointError: the work's or the optimizer's saved state does not fit what
            ``build`` made.
        ValueError: ``checkpoint_every`` is negative, or two units share a key.
    """
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 0:
        raise ValueError(f"run_units: checkpoint_every must be an int >= 0, got {checkpoint_every!r}")
    keys = [u.key for u in units]
    if len(set(keys)) != len(keys):
        raise ValueError(f"run_units: unit keys must be unique, got {keys}")
    loop = _Loop(ctx, units, results, checkpoint_every)
    resumed = ctx.resumed
    first_unit, state = 0, None
    if resumed is not None:
        state = resumed.state
        loop.results = state["results"]
        loop.times = {k: float(v) for k, v in state["times"].items()}
        first_unit = state["unit"]

    def restore_rng() -> None:
        # the global generators as they were at the save, at the point the run continues from
        # (older checkpoints have none: the generators stay as the recipe left them)
        if "rng" in state:  # type: ignore[operator]
            _set_rng_state(resumed.tensors, state["rng"])  # type: ignore[index,union-attr]

    for ui in range(first_unit, len(loop.units)):
        unit = loop.units[ui]
        here = state is not None and ui == first_unit
        if here and "work" not in state:  # saved between units: the next unit's build came next
            restore_rng()
        work = build(unit)
        if here and "work" in state:  # type: ignore[operator]
            _load(work, resumed.tensors, state["work"], unit)  # type: ignore[index,union-attr]
        first_stage = state["stage"] if here else 0  # type: ignore[index]
        for stage in range(first_stage, len(unit.stages)):
            continuing = here and stage == first_stage and state["mid_stage"]  # type: ignore[index]
            if here and stage == first_stage and "work" in state and not continuing:  # type: ignore[operator]
                restore_rng()  # saved between stages: the next stage's start came next
            start = time.perf_counter()
            optimizer = work.start_stage(stage, fresh=not continuing)
            if continuing and optimizer is not None:
                if "optimizer" not in state:  # type: ignore[operator]
                    raise CheckpointError(f"the checkpoint inside {unit.key} has no optimizer state to continue with")
                load_optimizer_state(optimizer, resumed.tensors, state["optimizer"], _OPTIM)  # type: ignore[index,union-attr]
            if continuing:
                restore_rng()  # saved inside the stage: the next epoch came next
            first_epoch = state["epoch"] if continuing else 0  # type: ignore[index]
            logs = loop.run_stage(ui, work, stage, first_epoch, optimizer)
            summary = work.end_stage(stage, loop.results)
            loop.times[unit.key] += time.perf_counter() - start
            parts = [f"{unit.key:<12}", unit.stages[stage], logs, summary, f"({loop.times[unit.key]:.0f}s)"]
            ctx.log("  ".join(p for p in parts if p))
            if stage + 1 < len(unit.stages):
                loop.save(ui, stage + 1, 0, work)
        work.end_unit(loop.results)
        loop.save(ui + 1, 0, 0, None)
    return LoopResult(loop.results, loop.times)


def _load(work: Work, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any], unit: Unit) -> None:
    mine = {k[len(_WORK) :]: v for k, v in tensors.items() if k.startswith(_WORK)}
    try:
        work.load_state(mine, meta)
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"the checkpoint does not fit {unit.key}: {e}") from None


def check_loop_state(
    units: Sequence[Unit],
    state: Mapping[str, Any],
    results: Any = None,
    work: Any = None,
) -> list[str]:
    """What does not fit in a resumed :class:`LoopState` (already checked against the schema),
    against the run's plan.

    Args:
        units: the plan the run would follow now.
        state: the checkpoint's state.
        results: a schema for ``state["results"]`` (a ``TypedDict``..., see
            :func:`~hyperdnn.engine.checkpoint.validate_state`); ``None``: any mapping.
        work: a schema for ``state["work"]`` where present; ``None``: any mapping.

    Returns:
        One line per problem (empty: it fits): the same units in the same order, a position
        inside the plan, a work and optimizer state exactly where the loop saves them, a time
        for every unit, and ``results``/``work`` of their schemas.

    Raises:
        CheckpointError: the checkpoint is for other units (then nothing else is compared).
    """
    keys = [u.key for u in units]
    if state["units"] != keys:
        raise CheckpointError(f"it is for units {state['units']}, this run has {keys}")
    problems = _position(units, state)
    if sorted(state["times"]) != sorted(keys):
        problems.append(f"times for {sorted(state['times'])}, expected {sorted(keys)}")
    problems += [f"times[{k!r}] is negative" for k, v in state["times"].items() if v < 0]
    if results is not None:
        problems += find_mismatches(state["results"], results, "state['results']")
    if work is not None and "work" in state:
        problems += find_mismatches(state["work"], work, "state['work']")
    return problems


def _position(units: Sequence[Unit], state: Mapping[str, Any]) -> list[str]:
    n = len(units)
    unit, stage, epoch, mid = state["unit"], state["stage"], state["epoch"], state["mid_stage"]
    has_work, has_optimizer = "work" in state, "optimizer" in state
    if not 0 <= unit <= n:
        return [f"unit {unit} is not in [0, {n}] (this run trains {n} units: {', '.join(u.key for u in units)})"]
    if unit == n:  # every unit done: only the report is left
        if stage or epoch or mid or has_work or has_optimizer:
            return [f"after the last unit expected stage 0, epoch 0 and no work, got stage {stage}, epoch {epoch}"]
        return []
    current = units[unit]
    last, epochs = len(current.stages) - 1, current.epochs
    problems = []
    if mid:
        if not 0 <= stage <= last:
            problems.append(f"stage {stage} is not a stage of {current.key} (0 to {last})")
        if not 1 <= epoch < epochs:
            problems.append(f"epoch {epoch} is not inside a stage of {epochs} epochs")
        if not has_work:
            problems.append("a checkpoint inside a stage needs 'work'")
    else:
        if not 0 <= stage <= last:
            problems.append(f"stage {stage} of {current.key} is not in [0, {last}]")
        if epoch != 0:
            problems.append(f"epoch {epoch} between stages (expected 0)")
        if has_optimizer:
            problems.append("an optimizer state between stages")
        if has_work != (stage > 0):
            problems.append(f"{'a' if has_work else 'no'} work state at stage {stage} of {current.key}")
    return problems


def resumable(plan: Callable[[Any], Sequence[Unit]], results: Any = None, work: Any = None) -> dict[str, Any]:
    """The ``state_schema`` and ``check_state`` of a recipe that runs :func:`run_units` over
    ``plan(config)``: ``Recipe(..., **resumable(plan, Results, WorkState))``.

    Args:
        plan: ``plan(config)`` -> the run's units.
        results, work: schemas of the loop's ``results`` and of the work's JSON state (see
            :func:`check_loop_state`).

    Returns:
        ``{"state_schema": LoopState, "check_state": check}``, where ``check(config,
        checkpoint)`` raises :class:`~hyperdnn.engine.errors.CheckpointError` listing every
        problem :func:`check_loop_state` finds.
    """

    def check_state(config: Any, checkpoint: Any) -> None:
        problems = check_loop_state(plan(config), checkpoint.state, results, work)
        if problems:
            raise CheckpointError("; ".join(problems))

    return {"state_schema": LoopState, "check_state": check_state}
