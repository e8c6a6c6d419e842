"""The engine's shared loop: call order, checkpoints where it says, resume at any checkpoint ends
with the numbers of an uninterrupted run, and resumed states that do not fit are refused."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

from hyperdnn.engine import (
    Checkpointer,
    CheckpointError,
    LoopState,
    Outcome,
    Recipe,
    RunOptions,
    Unit,
    Work,
    check_loop_state,
    execute,
    option,
    run_units,
)
from hyperdnn.engine.cli import parse_run_args

CALLS: list[tuple] = []


@dataclass
class ToyConfig:
    units: int = option(2, "units", low=1)
    stages: int = option(2, "stages per unit", low=1)
    epochs: int = option(3, "epochs per stage", low=1)
    every: int = option(1, "checkpoint every N epochs", low=0)
    broken: bool = option(False, "a work whose saved state never fits")


def plan(cfg: ToyConfig) -> list[Unit]:
    return [Unit(f"u{i}", tuple(f"s{j}" for j in range(cfg.stages)), cfg.epochs) for i in range(cfg.units)]


class Toy(Work):
    """A linear model trained with SGD on batches drawn from generators named by the work."""

    def __init__(self, ctx, cfg: ToyConfig, unit: Unit):
        ctx.seed_everything("init", unit.key)
        self.ctx, self.cfg, self.key = ctx, cfg, unit.key
        self.w = torch.nn.Parameter(torch.randn(3))
        self.seen: list[float] = []
        CALLS.append(("build", unit.key))

    def start_stage(self, stage, fresh):
        CALLS.append(("start", self.key, stage, fresh))
        self.opt = torch.optim.SGD([self.w], lr=0.1, momentum=0.9)  # momentum: state to restore
        return self.opt

    def steps(self, stage):
        return 2

    def train_epoch(self, stage, epoch, tick):
        g = self.ctx.generator(self.key, stage, epoch)
        for _ in range(2):
            x = torch.randn(8, 3, generator=g)
            loss = (x @ self.w - x.sum(1)).pow(2).mean()
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            tick()
        # draws from the global generators (dropout masks, np.random, random): a resumed run
        # must make the same ones
        self.seen.append(loss.item() + float(torch.rand(())) + np.random.rand() + random.random())
        return {"loss": loss.item()}

    def end_stage(self, stage, results):
        results.setdefault(self.key, []).append(self.w.tolist())
        return f"w {self.w[0].item():.3f}"

    def end_unit(self, results):
        results[self.key + "/seen"] = list(self.seen)

    def state(self):
        return {"w": self.w.detach()}, {"seen": self.seen}

    def load_state(self, tensors, meta):
        if self.cfg.broken:
            raise ValueError("the saved w has another shape")
        self.w.data.copy_(tensors["w"])
        self.seen = list(meta["seen"])


def _run(cfg: ToyConfig, ctx) -> Outcome:
    done = run_units(ctx, plan(cfg), lambda unit: Toy(ctx, cfg, unit), {}, checkpoint_every=cfg.every)
    return Outcome({"results": done.results, "units": sorted(done.times)}, "")


def _check_state(cfg: ToyConfig, checkpoint) -> None:
    problems = check_loop_state(plan(cfg), checkpoint.state, work=dict[str, Any])
    if problems:
        raise CheckpointError("; ".join(problems))


TOY = Recipe("toyloop", "the loop on a toy", ToyConfig, _run, state_schema=LoopState, check_state=_check_state)


def _execute(argv: list[str]) -> dict:
    cfg, opts = parse_run_args(TOY, [*argv, "--progress", "false"])
    return execute(TOY, cfg, opts, stream=None)


def test_the_loop_calls_the_work_in_order_and_checkpoints_where_it_says(tmp_path, monkeypatch) -> None:
    saved = []
    original = Checkpointer.save
    monkeypatch.setattr(Checkpointer, "save", lambda self, t, s: (saved.append(dict(s)), original(self, t, s)))
    CALLS.clear()
    results = _execute(["--units", "1", "--out", str(tmp_path / "a")])
    assert CALLS == [("build", "u0"), ("start", "u0", 0, True), ("start", "u0", 1, True)]
    # inside each stage after epochs 1 and 2, between the stages, after the unit
    where = [(s["unit"], s["stage"], s["epoch"], s["mid_stage"], "work" in s, "optimizer" in s) for s in saved]
    assert where == [
        (0, 0, 1, True, True, True),
        (0, 0, 2, True, True, True),
        (0, 1, 0, False, True, False),
        (0, 1, 1, True, True, True),
        (0, 1, 2, True, True, True),
        (1, 0, 0, False, False, False),
    ]
    assert len(results["metrics"]["results"]["u0"]) == 2 and results["metrics"]["units"] == ["u0"]
    log = (tmp_path / "a" / "log.txt").read_text()
    assert "u0            s0  loss " in log and "  w " in log


@pytest.mark.parametrize("stop_after", range(1, 13))
def test_resume_at_any_checkpoint_ends_with_the_uninterrupted_numbers(tmp_path, monkeypatch, stop_after) -> None:
    full = _execute(["--out", str(tmp_path / "full")])["metrics"]["results"]
    original, count = Checkpointer.save, [0]

    def save_then_stop(self, tensors, state):
        original(self, tensors, state)
        count[0] += 1
        if count[0] == stop_after:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpointer, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        _execute(["--out", str(tmp_path / "cut")])
    monkeypatch.setattr(Checkpointer, "save", original)
    resumed = _execute(["--out", str(tmp_path / "cut"), "--resume"])
    assert resumed["resumed"] is True and resumed["metrics"]["results"] == full


def _interrupted(tmp_path, monkeypatch, stop_after: int, argv=()) -> Any:
    original, count = Checkpointer.save, [0]

    def save_then_stop(self, tensors, state):
        original(self, tensors, state)
        count[0] += 1
        if count[0] == stop_after:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Checkpointer, "save", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            _execute([*argv, "--out", str(tmp_path / "run")])
    return Checkpointer(tmp_path / "run" / "checkpoints").load()


def test_check_loop_state_names_what_does_not_fit(tmp_path, monkeypatch) -> None:
    state = _interrupted(tmp_path, monkeypatch, 4).state  # inside u0's second stage
    units = plan(ToyConfig())
    assert check_loop_state(units, state) == []
    cases = [
        ({"unit": 5}, "unit 5 is not in [0, 2] (this run trains 2 units: u0, u1)"),
        ({"stage": 3}, "stage 3 is not a stage of u0 (0 to 1)"),
        ({"epoch": 3}, "epoch 3 is not inside a stage of 3 epochs"),
        ({"mid_stage": False}, "epoch 1 between stages (expected 0)"),
        ({"times": {"u0": -1.0, "u1": 0.0}}, "times['u0'] is negative"),
        ({"times": {"u0": 1.0}}, "times for ['u0'], expected ['u0', 'u1']"),
        (
            {"unit": 2, "stage": 0, "epoch": 0, "mid_stage": False},
            "after the last unit expected stage 0, epoch 0 and no work",
        ),
    ]
    for change, message in cases:
        assert message in "; ".join(check_loop_state(units, {**state, **change})), change
    between = {k: v for k, v in state.items() if k != "optimizer"} | {"mid_stage": False, "epoch": 0}
    assert check_loop_state(units, between) == []  # at the start of stage 1, with the work's state
    assert "an optimizer state between stages" in check_loop_state(units, {**between, "optimizer": state["optimizer"]})
    no_work = {k: v for k, v in between.items() if k != "work"}
    assert "no work state at stage 1 of u0" in check_loop_state(units, no_work)
    assert check_loop_state(units, state, work=dict[str, int]) == ["state['work']['seen']: expected int, got a list"]
    assert check_loop_state(units, state, results=dict[str, str]) == [
        "state['results']['u0']: expected str, got a list"
    ]
    with pytest.raises(CheckpointError, match=r"it is for units \['u0'\], this run has \['u0', 'u1'\]"):
        check_loop_state(units, {**state, "units": ["u0"]})


def test_a_saved_work_state_that_does_not_fit_is_refused_naming_the_unit(tmp_path, monkeypatch) -> None:
    _interrupted(tmp_path, monkeypatch, 2, ["--broken"])
    with pytest.raises(CheckpointError, match="the checkpoint does not fit u0: the saved w has another shape"):
        _execute(["--out", str(tmp_path / "run"), "--resume"])


def test_units_and_run_units_check_their_arguments() -> None:
    with pytest.raises(ValueError, match="key must be a non-empty string"):
        Unit("", ("",), 1)
    with pytest.raises(ValueError, match=r"Unit 'a': stages must be a non-empty tuple of labels, got \[\]"):
        Unit("a", [], 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Unit 'a': epochs must be an int >= 1, got 0"):
        Unit("a", ("",), 0)
    with pytest.raises(ValueError, match=r"unit keys must be unique, got \['a', 'a'\]"):
        run_units(None, [Unit("a", ("",), 1), Unit("a", ("",), 1)], lambda u: None, {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="checkpoint_every must be an int >= 0, got -1"):
        run_units(None, [], lambda u: None, {}, checkpoint_every=-1)  # type: ignore[arg-type]


def test_execute_restores_the_callers_threads_and_uses_the_recipes(tmp_path) -> None:
    before = torch.get_num_threads()
    one = Recipe("toyloop", "the loop on a toy", ToyConfig, _run, state_schema=LoopState, threads=1)
    results = execute(one, ToyConfig(units=1, stages=1, epochs=1), RunOptions(out=str(tmp_path / "t")), stream=None)
    assert results["threads"] == 1 and torch.get_num_threads() == before


def test_a_resume_refuses_a_config_yaml_edited_after_the_run_started(tmp_path, monkeypatch) -> None:
    # the edited values were used for the rest of the run and reported as the run's config
    _interrupted(tmp_path, monkeypatch, 3)
    config = tmp_path / "run" / "config.yaml"
    original = config.read_text()
    config.write_text(original.replace("epochs: 3", "epochs: 5"))
    with pytest.raises(CheckpointError, match="differs from the config the checkpoint was written with"):
        _execute(["--out", str(tmp_path / "run"), "--resume"])
    config.write_text(original)
    resumed = _execute(["--out", str(tmp_path / "run"), "--resume", "--threads", "2"])  # threads may change
    assert resumed["resumed"] is True
    assert resumed["metrics"]["results"] == _execute(["--out", str(tmp_path / "full")])["metrics"]["results"]
